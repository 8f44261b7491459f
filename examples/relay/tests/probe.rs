//! `probe` and `policy explain` on loopback: the certificate chain and the
//! pin a `fingerprint` rule takes, `--servername`, `--ehlo`, the configured
//! policy's verdict and rule, the route of a domain, and a cached MTA-STS
//! policy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::{Hop, ca, rustls_server, start_hop};
use postern_policy::mta_sts::{CachedPolicy, StsCache, StsPolicy};

/// Every run of the binary is bounded by this (the probe's own timeouts are
/// shorter).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the relay with `relay.toml` in `dir`, off the runtime's threads,
/// killed if it outlives [`RUN_LIMIT`].
async fn relay(dir: &Path, args: &[&str]) -> Output {
    let dir: PathBuf = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_postern-relay"))
            .args(["--config", "relay.toml"])
            .args(&args)
            .current_dir(&dir)
            .env_remove("RUST_LOG")
            .output()
            .expect("the binary runs")
    });
    tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("the relay answers in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A configuration trusting only the test CA, with `extra` at the end.
fn write_config(dir: &Path, extra: &str) {
    std::fs::write(dir.join("ca.pem"), &ca().cert_pem).unwrap();
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            "state_dir = \"state\"\nhostname = \"relay.test\"\n\
             [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nca_bundle = \"ca.pem\"\n{extra}\n"
        ),
    )
    .unwrap();
}

/// The value after `prefix` on the first line (trimmed) that starts with it.
fn field<'a>(report: &'a str, prefix: &str) -> &'a str {
    report
        .lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{report}"))
}

/// The configured-policy line.
fn configured(report: &str) -> &str {
    report
        .lines()
        .find(|l| l.starts_with("Configured policy"))
        .unwrap_or_else(|| panic!("no configured policy in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_the_chain_and_its_pin_satisfies_a_fingerprint_rule() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let hop = start_hop(
        Hop::Tls(rustls_server(&ca().leaf(&["localhost"], false, -1, 90))),
        Duration::ZERO,
    )
    .await;
    let target = format!("localhost:{}", hop.addr.port());

    let out = relay(dir.path(), &["probe", &target]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("Certificate 0:"), "{report}");
    assert!(field(&report, "subject:").contains("localhost"), "{report}");
    assert_eq!(field(&report, "names:"), "localhost", "{report}");
    let issuer = field(&report, "issuer:");
    assert!(
        !issuer.is_empty() && issuer != field(&report, "subject:"),
        "{report}"
    );
    assert!(field(&report, "not before:").starts_with("20"), "{report}");
    assert!(field(&report, "not after:").contains("(valid)"), "{report}");
    assert!(field(&report, "key:").contains("bits"), "{report}");
    let pin = field(
        &report,
        "pin (SHA-256 of the certificate, as `pins` takes it):",
    )
    .to_owned();
    let spki = field(&report, "SHA-256 of the public key (SPKI):");
    for digest in [pin.as_str(), spki] {
        assert_eq!(digest.len(), 95, "{report}");
        assert_eq!(digest.matches(':').count(), 31, "{report}");
    }
    assert_ne!(pin, spki);
    assert!(
        configured(&report).contains("(rule default, mode opportunistic): deliver"),
        "{report}"
    );

    // The printed pin, put into a `fingerprint` rule, is what delivery accepts.
    write_config(
        dir.path(),
        &format!(
            "[tls.outbound.domains.\"localhost\"]\ntls = \"fingerprint\"\npins = [\"{pin}\"]\n"
        ),
    );
    let out = relay(dir.path(), &["probe", &target]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let line = configured(&report);
    assert!(line.contains("mode fingerprint): deliver"), "{report}");
    assert!(line.contains("localhost"), "{report}");

    // Another pin: no delivery.
    let other = ["00"; 32].join(":");
    write_config(
        dir.path(),
        &format!(
            "[tls.outbound.domains.\"localhost\"]\ntls = \"fingerprint\"\npins = [\"{other}\"]\n"
        ),
    );
    let report = text(&relay(dir.path(), &["probe", &target]).await.stdout);
    assert!(
        configured(&report).contains("mode fingerprint): no delivery"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servername_is_the_verified_name_and_ehlo_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let hop = start_hop(
        Hop::Tls(rustls_server(&ca().leaf(&["mx.good.test"], false, -1, 90))),
        Duration::ZERO,
    )
    .await;
    let target = format!("127.0.0.1:{}", hop.addr.port());
    let verify = |report: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with("verify "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no verify line in:\n{report}"))
    };

    let out = relay(
        dir.path(),
        &["probe", "--servername", "mx.good.test", &target],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert_eq!(
        field(&report, "Server name (SNI, verified name):"),
        "mx.good.test"
    );
    assert!(
        report.contains("Verified TLS connection established"),
        "{report}"
    );
    assert!(verify(&report).contains(" deliver "), "{report}");

    let out = relay(
        dir.path(),
        &[
            "probe",
            "--servername",
            "wrong.test",
            "--ehlo",
            "finger.example",
            &target,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("Trusted TLS connection established"),
        "{report}"
    );
    assert!(verify(&report).contains("no delivery"), "{report}");

    // The EHLO names: the configured host name, then the one asked for.
    let ehlo = hop.log.lock().unwrap().ehlo.clone();
    assert_eq!(
        ehlo.first().map(String::as_str),
        Some("relay.test"),
        "{ehlo:?}"
    );
    assert!(ehlo.iter().any(|n| n == "finger.example"), "{ehlo:?}");
    assert!(hop.log.lock().unwrap().delivered.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_is_probed_through_its_route_under_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    let hop = start_hop(
        Hop::Tls(rustls_server(&ca().leaf(&["loose.test"], false, -1, 90))),
        Duration::ZERO,
    )
    .await;
    let port = hop.addr.port();
    let other = ["00"; 32].join(":");
    write_config(
        dir.path(),
        &format!(
            "[routes]\n\"loose.test\" = \"127.0.0.1:{port}\"\n\"strict.test\" = \"127.0.0.1:{port}\"\n\
             [tls.outbound.domains.\"loose.test\"]\ntls = \"encrypt\"\n\
             [tls.outbound.domains.\"strict.test\"]\ntls = \"fingerprint\"\npins = [\"{other}\"]\n\
             [tls.outbound.domains.\"[127.0.0.1]:{port}\"]\ntls = \"verify\"\n"
        ),
    );
    let out = relay(dir.path(), &["probe", "loose.test"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!(
            "Route for loose.test: static route \"loose.test\": 127.0.0.1:{port}\n"
        )),
        "{report}"
    );
    let line = configured(&report);
    assert!(
        line.contains("loose.test") && line.contains("mode encrypt): deliver"),
        "{report}"
    );
    // The host is judged under the domain, as delivery judges it: the
    // domain is the name sent and checked, and `secure` matches it.
    assert_eq!(
        field(&report, "Server name (SNI, verified name):"),
        "loose.test"
    );
    assert!(
        report
            .lines()
            .any(|l| l.trim_start().starts_with("secure ") && l.contains(" deliver ")),
        "{report}"
    );

    let report = text(&relay(dir.path(), &["probe", "strict.test"]).await.stdout);
    let line = configured(&report);
    assert!(
        line.contains("strict.test") && line.contains("mode fingerprint): no delivery"),
        "{report}"
    );

    // A bracketed next hop: no route, its own `[host]:port` rule.
    let report = text(
        &relay(dir.path(), &["probe", &format!("[127.0.0.1]:{port}")])
            .await
            .stdout,
    );
    let line = configured(&report);
    assert!(
        line.contains(&format!("[127.0.0.1]:{port}")) && line.contains("mode verify): no delivery"),
        "{report}"
    );
    assert!(!report.contains("Route for"), "{report}");
    assert!(hop.log.lock().unwrap().delivered.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_explain_names_the_route_and_the_cached_mta_sts_policy() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "[routes]\n\"sts.test\" = \"127.0.0.1:2599\"\n\
         [tls.outbound.domains.\"sts.test\"]\ntls = \"mta-sts\"\n",
    );
    let now = postern_relay::reporting::tlsrpt::unix_time(SystemTime::now());
    let mut cache = StsCache::new();
    cache.cached = Some(CachedPolicy::new(
        "id20261206",
        StsPolicy::parse(
            "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmx: *.backup.test\nmax_age: 86400\n",
        )
        .unwrap(),
        now - 60,
    ));
    let sts_dir = dir.path().join("state/mta-sts");
    std::fs::create_dir_all(&sts_dir).unwrap();
    std::fs::write(
        sts_dir.join("sts.test.json"),
        serde_json::to_vec(&cache).unwrap(),
    )
    .unwrap();

    let out = relay(dir.path(), &["policy", "explain", "sts.test"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        field(&report, "next hop:").contains("2599 (static route"),
        "{report}"
    );
    assert!(
        field(&report, "certificate match:").contains("MTA-STS"),
        "{report}"
    );
    assert_eq!(
        field(&report, "mta-sts cache:"),
        "id id20261206, valid",
        "{report}"
    );
    assert!(report.contains("    mode:             enforce"), "{report}");
    assert_eq!(
        field(&report, "mx:"),
        "mx.sts.test, *.backup.test",
        "{report}"
    );
    assert_eq!(field(&report, "max_age:"), "86400", "{report}");
    assert!(field(&report, "expires:").starts_with("20"), "{report}");
    // The cache is read, never written.
    assert_eq!(
        std::fs::read(sts_dir.join("sts.test.json")).unwrap(),
        serde_json::to_vec(&cache).unwrap()
    );

    let out = relay(dir.path(), &["policy", "explain", "other.test"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        field(&report, "next hop:").starts_with("MX lookup"),
        "{report}"
    );
    assert_eq!(field(&report, "mta-sts cache:"), "none", "{report}");
}
