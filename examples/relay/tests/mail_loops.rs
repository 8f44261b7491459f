//! Mail loops (DESIGN.md §4): a next hop that is the relay itself ends in a
//! `5.4.6` bounce ("mail for X loops back to myself") without the message
//! going round, and a message that went round too many relays (Postfix
//! `hopcount_limit`, 50 `Received:` fields) is refused `554 5.4.6`, never
//! relayed again.

mod capture;
mod common;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::{NextHop, Submit, message, start_postern_hop, submit_raw, transport, wait_for};
use lettre::AsyncTransport;
use postern_relay::config::Config;
use postern_relay::net::dns::FixedResolver;
use postern_relay::net::dns::SystemResolver;
use postern_relay::relay::Relay;

/// A port free on 127.0.0.1 now (for a relay that must know its own port
/// before it starts: its routes lead back to it).
async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Starts a relay on 127.0.0.1:`port` with its state in `dir`, the
/// top-level keys `toml`, the `routes` lines, DNS from `dns` and MX hosts on
/// `mx_port`; bounces to `alice@client.test` go to `sink`.
async fn relay_on(
    dir: &Path,
    port: u16,
    mx_port: u16,
    dns: FixedResolver,
    sink: &NextHop,
    toml: &str,
    routes: &str,
) -> Relay {
    let text = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:{port}\"]\nstate_dir = \"{}\"\n{toml}\n\
         [queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\nscan_interval = \"1s\"\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\n\
         [routes]\n\"client.test\" = \"127.0.0.1:{}\"\n{routes}\n",
        dir.join("state").display(),
        sink.addr.port()
    );
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Relay::start_with_resolver(config, SystemResolver::fixed(dns), mx_port)
        .await
        .unwrap()
}

/// The `Received:` fields in `text`.
fn received_count(text: &str) -> usize {
    text.matches("\r\nReceived: ").count() + usize::from(text.starts_with("Received: "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_hops_that_are_the_relay_itself_bounce_5_4_6() {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = start_postern_hop(None).await;
    let port = free_port().await;
    // A static route to the relay's own address, an MX host that resolves to
    // it, and the default accepted domain `localhost`, whose implicit MX is
    // the loopback host (the MX port is the relay's own port here).
    let dns = FixedResolver::new()
        .with_mx("mx-loop.test", 10, "mx.mx-loop.test")
        .with_address("mx.mx-loop.test", IpAddr::from([127, 0, 0, 1]));
    let relay = relay_on(
        dir.path(),
        port,
        port,
        dns,
        &sink,
        "",
        &format!("\"route-loop.test\" = \"127.0.0.1:{port}\""),
    )
    .await;
    let addr = relay.local_addrs()[0];
    let rcpts = [
        ("bob@route-loop.test", "route-loop.test"),
        ("bob@mx-loop.test", "mx-loop.test"),
        ("postmaster@localhost", "localhost"),
    ];
    for (rcpt, _) in rcpts {
        transport(addr, Submit::Plain)
            .send(message(rcpt, rcpt))
            .await
            .unwrap();
    }
    wait_for(
        dir.path(),
        Duration::from_secs(60),
        "the loops bounced and the bounces delivered",
        |s| s.messages.is_empty() && sink.delivered_to("alice@client.test").len() == rcpts.len(),
    )
    .await;
    let bounces = sink.delivered_to("alice@client.test");
    for (rcpt, domain) in rcpts {
        let text = bounces
            .iter()
            .map(|b| String::from_utf8_lossy(&b.content).into_owned())
            .find(|t| t.contains(&format!("Final-Recipient: rfc822; {rcpt}")))
            .unwrap_or_else(|| panic!("no bounce for {rcpt}: {bounces:#?}"));
        assert!(text.contains("Status: 5.4.6"), "{text}");
        assert!(
            text.contains(&format!("mail for {domain} loops back to myself")),
            "{text}"
        );
        // The returned message crossed the relay once: only its own trace.
        assert_eq!(received_count(&text), 1, "{text}");
        let logged = capture::lines_with(&format!("to=<{rcpt}>"));
        assert_eq!(logged.len(), 1, "{logged:#?}");
        assert!(
            logged[0].contains("relay=none") && logged[0].contains("dsn=5.4.6, status=bounced"),
            "{logged:#?}"
        );
        assert!(
            !capture::lines_with(&format!("mail for {domain} loops back to myself: next hop"))
                .is_empty()
        );
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_count_limit_refuses_at_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start_postern_hop(None).await;
    let port = free_port().await;
    let relay = relay_on(
        dir.path(),
        port,
        25,
        FixedResolver::new(),
        &sink,
        "hopcount_limit = 10",
        "",
    )
    .await;
    let addr = relay.local_addrs()[0];
    let with_hops = |n: usize| {
        let mut m = String::new();
        for i in 0..n {
            let _ = write!(
                m,
                "Received: from hop{i}.test by hop{}.test; now\r\n",
                i + 1
            );
        }
        m.push_str("Subject: hops\r\n\r\nReceived: in the body does not count\r\n");
        m
    };
    // With the relay's own, 9 fields pass and 10 are refused (Postfix
    // counts the same way).
    let r = submit_raw(
        addr,
        "alice@client.test",
        "alice@client.test",
        &with_hops(8),
    )
    .await;
    assert!(r.starts_with("250 "), "{r}");
    let r = submit_raw(
        addr,
        "alice@client.test",
        "alice@client.test",
        &with_hops(9),
    )
    .await;
    assert_eq!(r, "554 5.4.6 Error: too many hops\r\n");
    wait_for(dir.path(), Duration::from_secs(30), "delivery", |s| {
        s.messages.is_empty()
    })
    .await;
    let delivered = sink.delivered_to("alice@client.test");
    assert_eq!(delivered.len(), 1, "only the message under the limit");
    let content = String::from_utf8_lossy(&delivered[0].content);
    let header = content.split("\r\n\r\n").next().unwrap();
    assert_eq!(received_count(header), 9, "{content}");
    relay.shutdown().await;
}

/// Two relays that route a domain to each other (the loop of the report:
/// thousands of hops in seconds) stop at the default hop count: the relay
/// that would receive the 50th `Received:` field refuses it, and the sender
/// gets one bounce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_routing_to_each_other_stop_at_the_hop_count() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let sink = start_postern_hop(None).await;
    let ports = [free_port().await, free_port().await];
    let mut relays = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let other = ports[1 - i];
        relays.push(
            relay_on(
                dir.path(),
                ports[i],
                25,
                FixedResolver::new(),
                &sink,
                "",
                &format!("\"ping-pong.test\" = \"127.0.0.1:{other}\""),
            )
            .await,
        );
    }
    transport(relays[0].local_addrs()[0], Submit::Plain)
        .send(message("bob@ping-pong.test", "ping-pong"))
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while sink.delivered_to("alice@client.test").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no bounce: the loop goes on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for dir in &dirs {
        wait_for(dir.path(), Duration::from_secs(30), "empty queues", |s| {
            s.messages.is_empty()
        })
        .await;
    }
    let bounces = sink.delivered_to("alice@client.test");
    assert_eq!(bounces.len(), 1, "{bounces:#?}");
    let text = String::from_utf8_lossy(&bounces[0].content);
    assert!(text.contains("Status: 5.4.6"), "{text}");
    assert!(text.contains("too many hops"), "{text}");
    // The copy returned is the sender's: 49 fields; the 50th was refused.
    assert_eq!(received_count(&text), 49, "{text}");
    assert!(sink.delivered_to("bob@ping-pong.test").is_empty());
    for relay in relays {
        relay.shutdown().await;
    }
}
