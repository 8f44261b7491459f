//! Outbound connection reuse (`[connection_cache]`): a burst of mail to one next hop goes over far fewer
//! connections than messages, every message inside TLS; switched off, one connection per message.

mod common;

use std::time::Duration;

use common::{Hop, rustls_server, start_hop, start_relay, submit_raw, wait_for};
use postern_test_support::self_signed;

/// Every test ends within this time.
const LIMIT: Duration = Duration::from_secs(60);
const MESSAGES: usize = 30;

/// Sends a burst of [`MESSAGES`] to a next hop (which takes 30 ms per message) through a relay configured
/// with `cache`; returns the connections the next hop saw.
async fn burst(cache: &str) -> usize {
    let hop = start_hop(
        Hop::Tls(rustls_server(&self_signed(&["hop.test"], false))),
        Duration::from_millis(30),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(
        dir.path(),
        &format!(
            "delivery_workers = 4\n{cache}\n[routes]\n\"burst.test\" = \"[127.0.0.1]:{}\"\n\
             [tls.outbound]\ntls = \"encrypt\"\n",
            hop.addr.port()
        ),
    )
    .await;
    let addr = relay.local_addrs()[0];
    for i in 0..MESSAGES {
        let r = submit_raw(
            addr,
            "alice@client.test",
            "bob@burst.test",
            &format!("Subject: {i}\r\n\r\nmessage {i}\r\n"),
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
    wait_for(
        dir.path(),
        Duration::from_secs(40),
        "the burst delivered",
        |s| s.messages.is_empty(),
    )
    .await;
    relay.shutdown().await;
    let log = hop.log.lock().unwrap();
    assert_eq!(log.delivered.len(), MESSAGES);
    assert!(
        log.delivered.iter().all(|d| d.tls),
        "every message inside TLS"
    );
    assert_eq!(log.plaintext_mail, 0);
    log.connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_one_next_hop_shares_connections() {
    tokio::time::timeout(LIMIT, async {
        let reused = burst("").await;
        eprintln!("connection reuse: {reused} connections for {MESSAGES} messages");
        // 4 workers: at least 4 connections may open at once; far fewer than one per message.
        assert!(
            reused <= MESSAGES / 3,
            "{reused} connections for {MESSAGES} messages"
        );
        let one_each = burst("[connection_cache]\nenabled = false\n").await;
        assert_eq!(one_each, MESSAGES);
    })
    .await
    .expect("bounded");
}
