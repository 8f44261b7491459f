//! The generator against its own sink on loopback: plaintext, STARTTLS with full and resumed handshakes,
//! and idle sessions. The sink counts what it received, so both ends are checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::net::TcpListener;

use crate::options::{Cli, Mode};
use crate::send::{Job, make_message, worker};
use crate::sink::{SinkCounters, serve};
use crate::stats::Tally;

/// A sink on an ephemeral loopback port, with STARTTLS when `tls`; the temporary directory holds its
/// certificate.
async fn sink(tls: bool) -> (SocketAddr, Arc<SinkCounters>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["sink.localhost".to_owned()]).unwrap();
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    }
    let endpoint = crate::sink::endpoint(
        "sink.localhost",
        tls.then_some((cert.as_path(), key.as_path())),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(SinkCounters::default());
    tokio::spawn(serve(listener, endpoint, counters.clone()));
    (addr, counters, dir)
}

/// Send 25 messages over 3 concurrent connections, `per_connection` a connection, within `duration`.
/// Returns the tally and the messages never sent.
async fn send(
    addr: SocketAddr,
    per_connection: &str,
    duration: &str,
    extra: &[&str],
) -> (Tally, u64) {
    let target = addr.to_string();
    let mut argv = vec![
        "postern-loadgen",
        "send",
        "--target",
        &target,
        "-c",
        "3",
        "-n",
        "25",
    ];
    argv.extend_from_slice(&["-p", per_connection, "-d", duration]);
    argv.extend_from_slice(extra);
    let Mode::Send(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not send")
    };
    let addr = args.validate().unwrap();
    let job = Arc::new(Job {
        target: crate::target(&args.client, addr).unwrap(),
        remaining: AtomicU64::new(args.messages),
        per_connection: args.per_connection,
        envelope: Job::envelope(&args.from, &args.to).unwrap(),
        message: make_message(args.size, &args.from, &args.to),
        record_after: Instant::now(),
    });
    let workers: Vec<_> = (0..args.client.connections)
        .map(|_| tokio::spawn(worker(job.clone())))
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.unwrap());
    }
    (tally, job.remaining.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_messages_reach_the_sink() {
    let (addr, counters, _dir) = sink(false).await;
    let (t, unsent) = send(addr, "10", "20s", &[]).await;
    assert_eq!(unsent, 0);
    assert_eq!(
        (t.delivered, t.failed, t.connections),
        (25, 0, 3),
        "{:?}",
        t.errors
    );
    assert_eq!((t.message_us.len(), t.setup_us.len()), (25, 3));
    assert_eq!(counters.messages.load(Ordering::Relaxed), 25);
    assert_eq!(counters.octets.load(Ordering::Relaxed), 25 * 4096);
    assert_eq!(counters.tls.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_full_and_resumed_handshakes() {
    let (addr, counters, _dir) = sink(true).await;
    let (t, unsent) = send(addr, "1", "20s", &["--starttls"]).await;
    assert_eq!(unsent, 0);
    assert_eq!(
        (t.delivered, t.connections, t.full, t.resumed),
        (25, 25, 25, 0),
        "{:?}",
        t.errors
    );
    assert_eq!(counters.tls.load(Ordering::Relaxed), 25);
    for version in ["1.2", "1.3"] {
        let (t, unsent) = send(
            addr,
            "1",
            "20s",
            &["--starttls", "--resume", "--tls-version", version],
        )
        .await;
        assert_eq!(unsent, 0);
        assert_eq!(
            (t.delivered, t.full + t.resumed),
            (25, 25),
            "{version}: {:?}",
            t.errors
        );
        // Concurrent first connections may all be full; later ones must resume.
        assert!(
            t.resumed >= 20,
            "TLS {version}: only {} of 25 resumed",
            t.resumed
        );
    }
    assert_eq!(counters.messages.load(Ordering::Relaxed), 75);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_starttls_is_counted_not_sent() {
    // A sink without a certificate does not offer STARTTLS: every connection fails, nothing is sent.
    let (addr, counters, _dir) = sink(false).await;
    let started = Instant::now();
    let (t, unsent) = send(addr, "10", "1s", &["--starttls"]).await;
    // The duration cap ends the run with every message still unsent.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((t.delivered, unsent), (0, 25));
    assert!(t.connection_failures > 0);
    assert!(
        t.errors.contains_key("starttls not offered"),
        "{:?}",
        t.errors
    );
    assert_eq!(counters.messages.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_held_then_closed() {
    let (addr, counters, _dir) = sink(true).await;
    let argv = [
        "postern-loadgen",
        "idle",
        "--target",
        &addr.to_string(),
        "-c",
        "8",
        "--starttls",
        "-d",
        "20s",
    ];
    let Mode::Idle(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not idle")
    };
    let target = crate::target(&args.client, addr).unwrap();
    let started = Instant::now();
    let t = crate::idle::run(target, 8, 3, Duration::from_millis(300)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (t.connections, t.connection_failures, t.full),
        (8, 0, 8),
        "{:?}",
        t.errors
    );
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(counters.connections.load(Ordering::Relaxed), 8);
    assert_eq!(counters.messages.load(Ordering::Relaxed), 0);
}
