//! The Default Cert: with no configuration at all the relay generates the seed's self-signed RSA-4096 / SHA-256
//! "Default Cert" (and its ECDSA companion) into the state directory, serves it on 127.0.0.1:2525 and reuses it
//! after a restart; a certificate imported while the relay runs is served without restart.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ca, served_fingerprint, start_relay, stop};

fn start_without_config(dir: &Path) -> Child {
    // `--allow-root`: as root (CI), the relay refuses to start without `user`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .arg("--allow-root")
        .current_dir(dir)
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
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the relay did not start (is 127.0.0.1:2525 in use?):\n{seen}");
}

fn cert_rows(dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(["cert", "list", "--json"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_config_generates_serves_and_reuses_the_rsa_4096_default_cert() {
    let dir = tempfile::tempdir().unwrap();
    let child = tokio::task::spawn_blocking({
        let d = dir.path().to_owned();
        move || start_without_config(&d)
    })
    .await
    .unwrap();
    let state = dir.path().join("postern-state");
    assert!(
        state.join("spool").is_dir(),
        "the spool is in the state directory"
    );
    assert!(state.join("certs/default-rsa.crt.pem").is_file());

    let rows = cert_rows(dir.path());
    let rsa = rows
        .iter()
        .find(|r| r["key_type"] == "RSA")
        .expect("an RSA row");
    assert_eq!(rsa["name"], "Default Cert");
    assert_eq!(rsa["subject"], "CN=Default Cert");
    assert_eq!(rsa["key_bits"], 4096);
    assert_eq!(rsa["signature_algorithm"], "sha256WithRSAEncryption");
    assert_eq!(rsa["self_signed"], true);
    assert_eq!(rsa["status"], "valid");
    let fingerprints: Vec<String> = rows
        .iter()
        .map(|r| r["sha256"].as_str().unwrap().to_owned())
        .collect();

    // Offer TLS on 127.0.0.1:2525 with the Default Cert (ECDSA or RSA per the client's schemes).
    let served = served_fingerprint("127.0.0.1:2525".parse().unwrap(), "localhost").await;
    assert!(
        fingerprints.contains(&served),
        "{served} not in {fingerprints:?}"
    );
    tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();

    // Restart: the same certificates, not new ones.
    let child = tokio::task::spawn_blocking({
        let d = dir.path().to_owned();
        move || start_without_config(&d)
    })
    .await
    .unwrap();
    let again: Vec<String> = cert_rows(dir.path())
        .iter()
        .map(|r| r["sha256"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again, fingerprints);
    assert_eq!(
        served_fingerprint("127.0.0.1:2525".parse().unwrap(), "localhost").await,
        served
    );
    tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();
}

#[tokio::test]
async fn imported_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(
        dir.path(),
        "[certificates]\ndefault_rsa_bits = 2048\nreload_interval = \"1s\"\n",
    )
    .await;
    let addr = relay.local_addrs()[0];
    let before = served_fingerprint(addr, "fresh.test").await;
    let pem = ca().leaf(&["fresh.test"], false, -1, 90);
    postern_relay::tls::certs::CertDir::new(dir.path().join("state/certs"))
        .import(
            "fresh",
            pem.cert.as_bytes(),
            pem.key.as_bytes(),
            rustls::pki_types::UnixTime::now(),
            false,
        )
        .unwrap();
    let want = pem.fingerprint().to_string();
    assert_ne!(before, want);
    let start = Instant::now();
    loop {
        let now = served_fingerprint(addr, "fresh.test").await;
        if now == want {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still serving {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Other names still get the Default Cert.
    assert_eq!(served_fingerprint(addr, "other.test").await, before);
    relay.shutdown().await;
}

/// Waits (at most 10 s) until `sni` gets a certificate `accept` approves; returns its fingerprint.
async fn served_when(
    addr: std::net::SocketAddr,
    sni: &str,
    accept: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let now = served_fingerprint(addr, sni).await;
        if accept(&now) {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still serving {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `cert regenerate-default` and `cert use` while the relay runs: its certificate check serves the new Default
/// Cert, then the preferred certificate for the host name, without restart.
#[tokio::test]
async fn a_regenerated_default_cert_and_a_preference_are_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(
        dir.path(),
        "[certificates]\ndefault_rsa_bits = 2048\nreload_interval = \"1s\"\n",
    )
    .await;
    let addr = relay.local_addrs()[0];
    let certs = postern_relay::tls::certs::CertDir::new(dir.path().join("state/certs"));
    let now = rustls::pki_types::UnixTime::now();
    let before = served_fingerprint(addr, common::RELAY).await;
    let new: Vec<String> = certs
        .regenerate_default(common::RELAY, postern_certs::RsaBits::B2048, now)
        .unwrap()
        .iter()
        .map(|c| c.fingerprint().to_string())
        .collect();
    assert!(!new.contains(&before));
    served_when(addr, common::RELAY, |f| new.iter().any(|n| n == f)).await;

    // An imported certificate for the host name takes the Default Cert's place...
    let own = ca().leaf(&[common::RELAY], false, -1, 90);
    certs
        .import("own", own.cert.as_bytes(), own.key.as_bytes(), now, false)
        .unwrap();
    let own = own.fingerprint().to_string();
    served_when(addr, common::RELAY, |f| f == own).await;
    // ...until the operator puts the Default Cert back in service.
    certs
        .set_preferred(Some(postern_certs::DEFAULT_CERT_NAME))
        .unwrap();
    served_when(addr, common::RELAY, |f| new.iter().any(|n| n == f)).await;
    relay.shutdown().await;
}

/// Starts the relay binary with `relay.toml` in `dir`; waits (at most 60 s)
/// for "relay started". `Err` with the log if it exits or does not start.
fn start_with_config(dir: &Path) -> Result<Child, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
        .args(["--config", "relay.toml"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("relay started") {
                    return Ok(child);
                }
            }
            // The process exited (its stderr closed) or the deadline passed.
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(seen)
}

/// A first start killed with SIGKILL at any moment (before, during or after
/// the Default Cert's files are written) never leaves a state directory the
/// relay cannot start from, and the pairs it starts with match.
#[test]
fn a_first_start_killed_at_any_moment_never_prevents_the_next_start() {
    let base = tempfile::tempdir().unwrap();
    let config = "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"state\"\nallow_root = true\n\
                  [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\n";
    let prepare = |round: usize| {
        let dir = base.path().join(format!("round-{round}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("relay.toml"), config).unwrap();
        dir
    };
    let check_pairs = |dir: &Path| {
        let certs = dir.join("state/certs");
        for (cert, key) in [
            (postern_certs::RSA_CERT_FILE, postern_certs::RSA_KEY_FILE),
            (
                postern_certs::ECDSA_CERT_FILE,
                postern_certs::ECDSA_KEY_FILE,
            ),
        ] {
            postern_certs::CertKey::from_pem_files(certs.join(cert), certs.join(key))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
    };

    // How long a whole first start takes here: the kills land within it.
    let dir = prepare(0);
    let began = Instant::now();
    let child = start_with_config(&dir).unwrap_or_else(|log| panic!("{log}"));
    let first_start = began.elapsed();
    stop(child);
    check_pairs(&dir);

    // A fixed pseudo-random sequence (xorshift) of kill moments over the
    // first start, bounded in number.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let span = u64::try_from(first_start.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    for round in 1..=16 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = Duration::from_micros(state % (span + span / 5));
        let dir = prepare(round);
        let mut child = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
            .args(["--config", "relay.toml"])
            .current_dir(&dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let child = start_with_config(&dir).unwrap_or_else(|log| {
            panic!("round {round}: killed after {at:?}, the next start failed:\n{log}")
        });
        stop(child);
        check_pairs(&dir);
    }

    // The exact state a kill between the two writes leaves: a lone key.
    let dir = prepare(99);
    stop(start_with_config(&dir).unwrap_or_else(|log| panic!("{log}")));
    let certs = dir.join("state/certs");
    let key_before = std::fs::read(certs.join(postern_certs::RSA_KEY_FILE)).unwrap();
    std::fs::remove_file(certs.join(postern_certs::RSA_CERT_FILE)).unwrap();
    let child = start_with_config(&dir).unwrap_or_else(|log| panic!("lone key: {log}"));
    stop(child);
    check_pairs(&dir);
    assert_eq!(
        std::fs::read(certs.join(postern_certs::RSA_KEY_FILE)).unwrap(),
        key_before,
        "the key is kept"
    );
}
