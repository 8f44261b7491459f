//! The `postern-relay` binary: configuration checks (the example "trusted agents" configuration included), the
//! certificate table and import, policy explanation, probe, queue listing and flush, exit statuses.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Hop, ca, rsa_key_pem, rustls_server, self_signed, start_hop};

fn relay(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A configuration with a quick (2048-bit) Default Cert and the state in `state`.
fn write_config(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("relay.toml"),
        format!("state_dir = \"state\"\nhostname = \"relay.test\"\n{extra}\n[certificates]\ndefault_rsa_bits = 2048\n"),
    )
    .unwrap();
}

const CFG: [&str; 2] = ["--config", "relay.toml"];

fn with_cfg<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [&CFG[..], args].concat()
}

#[test]
fn check_config_accepts_defaults_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = relay(dir.path(), &["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("listen = [\"127.0.0.1:2525\"]"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("inbound TLS: offer"),
        "{}",
        text(&out.stderr)
    );

    for (toml, key) in [
        (
            "[queue]\nmax_lifetime = \"forever\"\n",
            "queue.max_lifetime",
        ),
        (
            "[tls.inbound]\nclient_certificates = \"require\"\n",
            "tls.inbound.client_certificates",
        ),
        (
            "[tls.outbound.domains.\"example.com\"]\ntls = \"verify\"\npins = [\"sha256:00\"]\n",
            "tls.outbound.domains",
        ),
        (
            "[certificates]\nca_bundle = \"missing.pem\"\n",
            "certificates.ca_bundle",
        ),
    ] {
        std::fs::write(dir.path().join("bad.toml"), toml).unwrap();
        let out = relay(dir.path(), &["--config", "bad.toml", "check-config"]);
        assert_eq!(out.status.code(), Some(1), "{toml}");
        let err = text(&out.stderr);
        assert!(
            err.contains("bad.toml") && err.contains(key),
            "{toml}: {err}"
        );
    }
    let out = relay(dir.path(), &["--config", "missing.toml", "check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read"));
}

#[test]
fn check_config_prints_the_dkim_record_of_tls_reports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dkim.pem"), rsa_key_pem()).unwrap();
    write_config(
        dir.path(),
        "[tls_reporting]\nenabled = true\ndkim_domain = \"example.org\"\n\
         dkim_selector = \"rpt2026\"\ndkim_key = \"dkim.pem\"",
    );
    let out = relay(dir.path(), &with_cfg(&["check-config"]));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("tls reports signed with DKIM: "))
        .unwrap_or_else(|| panic!("no DKIM line: {err}"));
    assert!(
        line.starts_with(
            "tls reports signed with DKIM: publish TXT rpt2026._domainkey.example.org \"v=DKIM1; k=rsa; p=MII"
        ),
        "{line}"
    );
    // Without the keys, nothing is said about DKIM.
    write_config(dir.path(), "[tls_reporting]\nenabled = true");
    let out = relay(dir.path(), &with_cfg(&["check-config"]));
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("DKIM"), "{}", text(&out.stderr));
}

#[test]
fn check_config_says_where_dnssec_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    // Trusting the AD bit of a resolver off this host: a warning, louder
    // with DANE destinations; accepted.
    for (extra, dane) in [
        ("", false),
        (
            "[tls.outbound.domains.\"example.org\"]\ntls = \"dane-only\"\n",
            true,
        ),
    ] {
        write_config(
            dir.path(),
            &format!("{extra}[dns]\nnameservers = [\"192.0.2.53\"]\n"),
        );
        let out = relay(dir.path(), &with_cfg(&["check-config"]));
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("dns: dnssec trust-ad, name servers 192.0.2.53:53"),
            "{err}"
        );
        let warning = err
            .lines()
            .find(|l| {
                l.starts_with(
                    "warning: dns.dnssec = \"trust-ad\" trusts the AD bit of 192.0.2.53:53",
                )
            })
            .unwrap_or_else(|| panic!("no warning: {err}"));
        assert_eq!(warning.contains("dane-only"), dane, "{warning}");
    }
    // On loopback: no warning.
    write_config(dir.path(), "[dns]\nnameservers = [\"127.0.0.1\"]\n");
    let out = relay(dir.path(), &with_cfg(&["check-config"]));
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    // Validation in the relay reads the trust anchor file now, not at the
    // first delivery.
    write_config(
        dir.path(),
        "[dns]\ndnssec = \"validate\"\nnameservers = [\"127.0.0.1\"]\ntrust_anchor = \"none.key\"\n",
    );
    let out = relay(dir.path(), &with_cfg(&["check-config"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("trust anchor file"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(dir.path().join("none.key"), "; nothing\n").unwrap();
    let out = relay(dir.path(), &with_cfg(&["check-config"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no DNSKEY"),
        "{}",
        text(&out.stderr)
    );
    // dane without DNSSEC is refused, naming the key.
    write_config(
        dir.path(),
        "[tls.outbound]\ntls = \"dane\"\n[dns]\ndnssec = \"off\"\n",
    );
    let out = relay(dir.path(), &with_cfg(&["check-config"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tls.outbound.tls"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn trusted_agents_example_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("trusted-agents.toml");
    std::fs::copy(&example, dir.path().join("trusted-agents.toml")).unwrap();
    std::fs::create_dir(dir.path().join("trust")).unwrap();
    std::fs::write(dir.path().join("trust/agents-ca.pem"), &ca().cert_pem).unwrap();
    std::fs::write(dir.path().join("trust/partners-ca.pem"), &ca().cert_pem).unwrap();
    let cfg = ["--config", "trusted-agents.toml"];
    // The outbound certificate must exist: import it as the comment says.
    let gw1 = ca().leaf(&["gw1.corp.example"], false, -1, 90);
    let (c, k) = gw1.write(dir.path(), "gw1");
    let out = relay(dir.path(), &[&cfg[..], &["check-config"]].concat());
    assert_eq!(out.status.code(), Some(1), "not imported yet");
    assert!(text(&out.stderr).contains("gw1"), "{}", text(&out.stderr));
    let out = relay(
        dir.path(),
        &[
            &cfg[..],
            &[
                "cert",
                "import",
                "--name",
                "gw1",
                "--cert",
                c.to_str().unwrap(),
                "--key",
                k.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = relay(dir.path(), &[&cfg[..], &["check-config"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("inbound TLS: require, client certificates: require, trusted agents: 2; outbound default: verify, 1 per-domain rule(s)"),
        "{err}"
    );
    let out = relay(
        dir.path(),
        &[&cfg[..], &["policy", "explain", "gw2.corp.example"]].concat(),
    );
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with("domain .corp.example (override): secure\n"),
        "{}",
        text(&out.stdout)
    );
    // Without the CA files, the configuration is refused.
    std::fs::remove_file(dir.path().join("trust/agents-ca.pem")).unwrap();
    let out = relay(dir.path(), &[&cfg[..], &["check-config"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("certificates.client_cert_roots"),
        "{}",
        text(&out.stderr)
    );
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `cert list` is read-only: on a new state directory it writes nothing
/// (no Default Cert, no directory) and says that none exists yet and what
/// creates it.
#[test]
fn cert_list_writes_nothing_and_says_no_default_cert_exists_yet() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let before = tree(dir.path());
    let out = relay(dir.path(), &with_cfg(&["cert", "list"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("no Default Cert exists yet") && said.contains("first start"),
        "{said}"
    );
    let out = relay(dir.path(), &with_cfg(&["cert", "list", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
    assert!(
        text(&out.stderr).contains("no Default Cert exists yet"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tree(dir.path()), before, "cert list wrote to the disk");
    assert!(!dir.path().join("state").exists());
}

#[test]
fn cert_list_shows_the_default_cert_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    // The relay's first start generates the Default Cert.
    postern_relay::tls::certs::CertDir::new(dir.path().join("state/certs"))
        .default_cert(
            "relay.test",
            postern_certs::RsaBits::B2048,
            rustls::pki_types::UnixTime::now(),
        )
        .unwrap();
    let out = relay(dir.path(), &with_cfg(&["cert", "list"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(!table.contains("no Default Cert"), "{table}");
    for want in [
        "Default Cert\n",
        "subject:      CN=Default Cert",
        "names (SAN):  relay.test",
        "key:          RSA 2048 bits",
        "signature:    sha256WithRSAEncryption",
        "self-signed:  yes",
        "status:       valid",
        "key:          ECDSA 256 bits",
    ] {
        assert!(table.contains(want), "{want:?} in\n{table}");
    }
    // Listing again shows the same certificates.
    let again = relay(dir.path(), &with_cfg(&["cert", "list"]));
    assert_eq!(text(&again.stdout), table);

    let pem = ca().leaf(&["mx.relay.test"], false, -1, 90);
    let (c, k) = pem.write(dir.path(), "mx");
    let other = self_signed(&["x.test"], false);
    let (_, wrong_key) = other.write(dir.path(), "other");
    let out = relay(
        dir.path(),
        &with_cfg(&[
            "cert",
            "import",
            "--name",
            "mx",
            "--cert",
            c.to_str().unwrap(),
            "--key",
            wrong_key.to_str().unwrap(),
        ]),
    );
    assert_eq!(out.status.code(), Some(1), "mismatched key refused");
    assert!(text(&out.stderr).contains("postern-relay: error:"));
    let out = relay(
        dir.path(),
        &with_cfg(&[
            "cert",
            "import",
            "--name",
            "mx",
            "--cert",
            c.to_str().unwrap(),
            "--key",
            k.to_str().unwrap(),
        ]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = relay(dir.path(), &with_cfg(&["cert", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mx = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "mx")
        .expect("imported row");
    assert_eq!(mx["sans"][0], "mx.relay.test");
    assert_eq!(mx["self_signed"], false);
    assert_eq!(mx["issuer"], "CN=Postern Test CA");
    assert_eq!(mx["sha256"], pem.fingerprint().to_string());
}

/// `cert inspect` shows the table rows of a chain file and its problems (order, missing issuer, key), writing
/// nothing; exit status 1 when it found one.
#[test]
fn cert_inspect_checks_a_chain_without_importing_it() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let intermediate = ca().intermediate("Postern Test Intermediate");
    let leaf = intermediate.leaf(&["relay.test"], false, -1, 90);
    let (_, key) = leaf.write(dir.path(), "leaf");
    let (_, other_key) = self_signed(&["x.test"], false).write(dir.path(), "other");
    let chain = |name: &str, parts: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, parts.concat()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let good = chain(
        "good.pem",
        &[&leaf.cert, &intermediate.cert_pem, &ca().cert_pem],
    );
    let swapped = chain(
        "swapped.pem",
        &[&leaf.cert, &ca().cert_pem, &intermediate.cert_pem],
    );
    let gap = chain("gap.pem", &[&leaf.cert, &ca().cert_pem]);
    let empty = chain("empty.pem", &["not a certificate\n"]);
    let before = tree(dir.path());

    let out = relay(
        dir.path(),
        &with_cfg(&["cert", "inspect", &good, "--key", key.to_str().unwrap()]),
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    for want in [
        "#1 (leaf)\n",
        "names (SAN):  relay.test",
        "issuer:       CN=Postern Test Intermediate",
        "#2\n",
        "subject:      CN=Postern Test Intermediate",
        "#3\n",
        "matches the leaf",
        "note: the chain includes its root (CN=Postern Test CA)",
        "chain: 3 certificate(s), in order",
    ] {
        assert!(said.contains(want), "{want:?} in\n{said}");
    }
    assert!(!said.contains("problem"), "{said}");

    let out = relay(
        dir.path(),
        &with_cfg(&[
            "cert",
            "inspect",
            &good,
            "--key",
            other_key.to_str().unwrap(),
        ]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("problem: key"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("1 problem(s) found"),
        "{}",
        text(&out.stderr)
    );

    let out = relay(dir.path(), &with_cfg(&["cert", "inspect", &swapped]));
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(
        said.contains("problem: out of order: certificate #1 is issued by #3"),
        "{said}"
    );

    let out = relay(dir.path(), &with_cfg(&["cert", "inspect", &gap]));
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(said.contains("which is not in the file"), "{said}");

    let out = relay(dir.path(), &with_cfg(&["cert", "inspect", &empty]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no certificate"),
        "{}",
        text(&out.stderr)
    );

    assert_eq!(tree(dir.path()), before, "cert inspect wrote to the disk");
}

/// `cert use` marks the certificate served first, `cert remove` removes an import (and the preference for it)
/// but never the Default Cert, and `cert regenerate-default` replaces the Default Cert.
#[test]
fn cert_use_remove_and_regenerate_default() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let rows = |dir: &Path| {
        let out = relay(dir, &with_cfg(&["cert", "list", "--json"]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let default_fingerprints = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter()
            .filter(|r| r["name"] == "Default Cert")
            .map(|r| r["sha256"].as_str().unwrap().to_owned())
            .collect()
    };
    let out = relay(dir.path(), &with_cfg(&["cert", "regenerate-default"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("key:          RSA 2048 bits"),
        "{}",
        text(&out.stdout)
    );
    let first = default_fingerprints(&rows(dir.path()));
    assert_eq!(first.len(), 2);
    let out = relay(dir.path(), &with_cfg(&["cert", "regenerate-default"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = default_fingerprints(&rows(dir.path()));
    assert_eq!(second.len(), 2);
    assert!(
        second.iter().all(|f| !first.contains(f)),
        "{first:?} {second:?}"
    );

    let out = relay(dir.path(), &with_cfg(&["cert", "remove", "Default Cert"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("regenerate-default"),
        "{}",
        text(&out.stderr)
    );
    let out = relay(dir.path(), &with_cfg(&["cert", "remove", "../certs"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid certificate name"),
        "{}",
        text(&out.stderr)
    );
    let out = relay(dir.path(), &with_cfg(&["cert", "use", "nope"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no certificate named \"nope\""),
        "{}",
        text(&out.stderr)
    );

    assert!(
        import(
            dir.path(),
            "mx",
            &ca().leaf(&["relay.test"], false, -1, 90),
            false
        )
        .status
        .success()
    );
    let out = relay(dir.path(), &with_cfg(&["cert", "use", "mx"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = rows(dir.path());
    let preferred: Vec<&serde_json::Value> =
        listed.iter().filter(|r| r["preferred"] == true).collect();
    assert_eq!(preferred.len(), 1, "{listed:?}");
    assert_eq!(preferred[0]["name"], "mx");
    let out = relay(dir.path(), &with_cfg(&["cert", "list"]));
    assert!(
        text(&out.stdout).contains("served first for its names (cert use): mx"),
        "{}",
        text(&out.stdout)
    );

    let out = relay(dir.path(), &with_cfg(&["cert", "remove", "mx"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = rows(dir.path());
    assert!(
        listed
            .iter()
            .all(|r| r["name"] != "mx" && r["preferred"] == false),
        "{listed:?}"
    );
    let out = relay(dir.path(), &with_cfg(&["cert", "remove", "mx"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no certificate named \"mx\""),
        "{}",
        text(&out.stderr)
    );
    let out = relay(dir.path(), &with_cfg(&["cert", "use", "--clear"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn import(dir: &Path, name: &str, pem: &common::Pem, force: bool) -> Output {
    let (c, k) = pem.write(dir, name);
    let mut args = vec![
        "cert",
        "import",
        "--name",
        name,
        "--cert",
        c.to_str().unwrap(),
        "--key",
        k.to_str().unwrap(),
    ];
    if force {
        args.push("--force");
    }
    relay(dir, &with_cfg(&args))
}

/// An expired or not yet valid certificate is refused, with the date and the
/// way out; `--force` imports it anyway, with a warning.
#[test]
fn cert_import_refuses_a_certificate_outside_its_validity_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let expired = ca().leaf(&["old.relay.test"], false, -400, -10);
    let future = ca().leaf(&["new.relay.test"], false, 5, 90);
    for (name, pem, says) in [
        ("old", &expired, "expired at"),
        ("new", &future, "not valid before"),
    ] {
        let out = import(dir.path(), name, pem, false);
        assert_eq!(out.status.code(), Some(1), "{name} refused");
        let err = text(&out.stderr);
        assert!(err.contains(says) && err.contains("--force"), "{err}");
        assert!(!dir.path().join("state/certs/imported").join(name).exists());

        let out = import(dir.path(), name, pem, true);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("outside its validity period"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = relay(dir.path(), &with_cfg(&["cert", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status("old"), Some("expired".into()));
    assert_eq!(status("new"), Some("not yet valid".into()));
}

/// IP-address subjectAltNames are listed with the DNS names, in the table
/// and in the JSON `sans`.
#[test]
fn cert_list_shows_ip_address_sans() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let pem = ca().leaf(&["relay.test", "127.0.0.1", "::1"], false, -1, 90);
    let out = import(dir.path(), "ip", &pem, false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("names (SAN):  relay.test, 127.0.0.1, ::1\n"),
        "{}",
        text(&out.stdout)
    );
    let out = relay(dir.path(), &with_cfg(&["cert", "list"]));
    assert!(
        text(&out.stdout).contains("names (SAN):  relay.test, 127.0.0.1, ::1\n"),
        "{}",
        text(&out.stdout)
    );
    let out = relay(dir.path(), &with_cfg(&["cert", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v[0]["sans"],
        serde_json::json!(["relay.test", "127.0.0.1", "::1"])
    );
}

#[test]
fn policy_explain_names_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "[tls.outbound]\ntls = \"encrypt\"\n[tls.outbound.domains.\"example.com\"]\ntls = \"verify\"\n\
         [tls.outbound.domains.\".example.org\"]\ntls = \"secure\"\n",
    );
    let explain = |d: &str| {
        let out = relay(dir.path(), &with_cfg(&["policy", "explain", d]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let exact = explain("EXAMPLE.com.");
    assert!(
        exact.starts_with("domain example.com (override): verify\n"),
        "{exact}"
    );
    assert!(
        exact.contains("smtp_tls_security_level = verify"),
        "{exact}"
    );
    assert!(exact.contains("never sent in plaintext"), "{exact}");
    assert!(explain("mail.example.org").starts_with("domain .example.org (override): secure\n"));
    let default = explain("elsewhere.net");
    assert!(default.starts_with("default: encrypt\n"), "{default}");
    let out = relay(
        dir.path(),
        &with_cfg(&["policy", "explain", "not a domain"]),
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_what_each_mode_would_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();
    write_config(dir.path(), "");
    let mut cfg = std::fs::read_to_string(dir.path().join("relay.toml")).unwrap();
    cfg.push_str("system_roots = false\nca_bundle = \"ca.pem\"\n");
    std::fs::write(dir.path().join("relay.toml"), cfg).unwrap();

    let good = start_hop(
        Hop::Tls(rustls_server(&ca().leaf(&["localhost"], false, -1, 90))),
        Duration::ZERO,
    )
    .await;
    let selfsigned = start_hop(
        Hop::Tls(rustls_server(&self_signed(&["localhost"], false))),
        Duration::ZERO,
    )
    .await;
    let plain = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    let run = |port: u16| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            relay(&dir, &with_cfg(&["probe", &format!("localhost:{port}")]))
        })
    };
    let out = run(good.addr.port()).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("STARTTLS: offered, reply 220"), "{report}");
    assert!(
        report.contains("Verified TLS connection established: TLSv1.3"),
        "{report}"
    );
    for mode in ["opportunistic", "encrypt", "verify", "secure"] {
        assert!(
            report
                .lines()
                .any(|l| l.trim_start().starts_with(mode) && l.contains(" deliver ")),
            "{mode}: {report}"
        );
    }

    let report = text(&run(selfsigned.addr.port()).await.unwrap().stdout);
    assert!(
        report.contains("Untrusted TLS connection established"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.trim_start().starts_with("encrypt") && l.contains(" deliver ")),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.trim_start().starts_with("verify")
            && l.contains("no delivery")
            && l.contains("4.7.5")),
        "{report}"
    );

    let report = text(&run(plain.addr.port()).await.unwrap().stdout);
    assert!(report.contains("STARTTLS: not offered"), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.trim_start().starts_with("opportunistic") && l.contains(" deliver ")),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.trim_start().starts_with("encrypt")
            && l.contains("no delivery")
            && l.contains("4.7.4")),
        "{report}"
    );
    // No MAIL was ever sent by the probe.
    for hop in [&good, &selfsigned, &plain] {
        assert_eq!(hop.log.lock().unwrap().plaintext_mail, 0);
        assert!(hop.log.lock().unwrap().delivered.is_empty());
    }

    let out = relay(dir.path(), &with_cfg(&["probe", "127.0.0.1:1"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("connect to 127.0.0.1:1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_recovers_the_spool_and_queue_commands_read_it() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "listen = [\"127.0.0.1:0\"]\nallow_root = true");
    let out = relay(dir.path(), &with_cfg(&["queue", "list"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Mail queue is empty\n");

    // Running creates and recovers the spool; a leftover partial message is removed.
    std::fs::create_dir_all(dir.path().join("state/spool/tmp/PARTIAL")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(CFG)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("relay started") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains("removed incomplete messages"), "{seen}");
    assert!(seen.contains("listening"), "{seen}");
    assert!(!dir.path().join("state/spool/tmp/PARTIAL").exists());

    let out = relay(dir.path(), &with_cfg(&["queue", "list", "--json"]));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(0));

    // No relay runs: the flush waits in the requests directory for the next start.
    let out = relay(dir.path(), &with_cfg(&["queue", "flush"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "no relay is running: the flush is applied when it starts\n"
    );
    let requests: Vec<_> = std::fs::read_dir(dir.path().join("state/spool/requests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        requests.len() == 1 && requests[0].ends_with(".req"),
        "{requests:?}"
    );
}

#[test]
fn queue_flush_without_a_spool_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = relay(dir.path(), &["queue", "flush"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("postern-relay: error:"));
}
