//! A full spool loses nothing (RFC 5321 §6.1: once accepted, deliver or
//! notify). On a small tmpfs, filled up: a message that fails permanently
//! stays queued while its bounce cannot be written, new mail gets `451`, and
//! once space is back the bounce is queued and delivered and the message
//! removed.
//!
//! The tmpfs is mounted in a private mount namespace: the test runs itself
//! again under `unshare -m` (root, as the test machines are), so nothing is
//! mounted outside it.

mod capture;
mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{Submit, message, scan, start_postern_hop, transport, wait_for};
use lettre::AsyncTransport;
use postern_relay::config::Config;
use postern_relay::envelope::{Envelope, MailParams, Mailbox, Recipient};
use postern_relay::net::dns::FixedResolver;
use postern_relay::net::dns::SystemResolver;
use postern_relay::queue::spool::Spool;
use postern_relay::relay::Relay;

/// Set in the environment of the run inside the namespace.
const INSIDE: &str = "POSTERN_TEST_PRIVATE_MOUNTS";

#[test]
fn a_full_spool_loses_nothing() {
    if std::env::var_os(INSIDE).is_none() {
        let status = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "a_full_spool_loses_nothing", "--test-threads=1"])
            .env(INSIDE, "1")
            .status()
            .expect("unshare (util-linux) runs this test in a private mount namespace");
        assert!(status.success(), "the run inside the namespace failed");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(full_spool());
}

/// Mounts a tmpfs of `size` over `dir`.
fn mount_tmpfs(dir: &Path, size: &str) {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs on {}", dir.display());
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> usize {
    let mut file = std::fs::File::create(path).unwrap();
    let block = [0u8; 4096];
    let mut written = 0;
    // Bounded: the tmpfs is a few hundred KiB.
    for _ in 0..100_000 {
        match file.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n,
        }
    }
    let _ = file.sync_all();
    assert!(file.write(&block).is_err(), "the file system is not full");
    written
}

async fn full_spool() {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    mount_tmpfs(&state, "512k");
    let sink = start_postern_hop(None).await;
    let toml = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n\
         [queue]\nmin_backoff = \"1s\"\nmax_backoff = \"1s\"\nscan_interval = \"1s\"\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\n\
         [routes]\n\"client.test\" = \"127.0.0.1:{}\"\n",
        state.display(),
        sink.addr.port()
    );
    let config = Config::from_toml_str(&toml).unwrap();
    let dns = || SystemResolver::fixed(FixedResolver::new().with_mx("null-mx.test", 0, "."));
    // A first start creates the certificates; then, relay stopped, a message
    // for a domain that accepts no mail (it will bounce) is queued and the
    // file system filled.
    Relay::start_with_resolver(config.clone(), dns(), 25)
        .await
        .unwrap()
        .shutdown()
        .await;
    let (spool, _) = Spool::open(state.join("spool")).unwrap();
    let envelope = Envelope::new(
        Mailbox::parse("alice@client.test").unwrap(),
        [Recipient::new(Mailbox::parse("bob@null-mx.test").unwrap())],
        MailParams::default(),
        SystemTime::now(),
    );
    let mut incoming = spool.begin(envelope, None).unwrap();
    incoming
        .write_chunk(b"Subject: kept\r\n\r\nNot lost.\r\n")
        .unwrap();
    let id = incoming.commit().unwrap().id;
    drop(spool);
    let filler = state.join("filler");
    assert!(fill(&filler) > 0);

    let relay = Relay::start_with_resolver(config, dns(), 25).await.unwrap();
    let addr = relay.local_addrs()[0];
    // The delivery fails for good; the bounce cannot be written.
    let start = Instant::now();
    while capture::lines_with("bounce not queued: message kept").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no failed bounce"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New mail is refused for now (4xx: the client keeps it and retries).
    let refused = transport(addr, Submit::Plain)
        .send(message("carol@client.test", "while full"))
        .await
        .unwrap_err();
    assert!(refused.is_transient(), "{refused}");
    // The message is still queued, with its failure.
    let queued = scan(dir.path());
    assert_eq!(queued.messages.len(), 1, "{queued:#?}");
    assert_eq!(queued.messages[0].envelope.id, id);
    assert!(sink.delivered_to("alice@client.test").is_empty());

    // Space comes back: the bounce is queued and delivered, the message removed.
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "the bounce delivered",
        |s| s.messages.is_empty() && !sink.delivered_to("alice@client.test").is_empty(),
    )
    .await;
    let bounces = sink.delivered_to("alice@client.test");
    assert_eq!(bounces.len(), 1);
    let text = String::from_utf8_lossy(&bounces[0].content);
    assert!(text.contains("Status: 5.1.10"), "{text}");
    assert!(text.contains("Not lost."), "{text}");
    // And new mail is accepted again.
    transport(addr, Submit::Plain)
        .send(message("carol@client.test", "after"))
        .await
        .unwrap();
    relay.shutdown().await;
    let _ = Command::new("umount").arg(&state).status();
}
