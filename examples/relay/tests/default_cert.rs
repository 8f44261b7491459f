//! The Default Cert: with no configuration at all the relay generates the seed's self-signed RSA-4096 / SHA-256
//! "Default Cert" (and its ECDSA companion) into the state directory, serves it on 127.0.0.1:2525 and reuses it
//! after a restart; a certificate imported while the relay runs is served without restart.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ca, served_fingerprint, start_relay};

fn start_without_config(dir: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern-relay"))
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

fn stop(mut child: Child) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    postern_relay::certs::CertDir::new(dir.path().join("state/certs"))
        .import("fresh", pem.cert.as_bytes(), pem.key.as_bytes())
        .unwrap();
    let want = pem.fingerprint();
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
