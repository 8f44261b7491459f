//! Connection reuse: several messages for one next hop over one connection, only under the policy the
//! connection was opened and judged under, and a connection the next hop closed while idle is never used.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{HopConfig, fixtures, start_hop};
use postern_certs::ClientTlsContext;
use postern_policy::{ClientTlsMode, DestinationPolicy, NextHop, OutboundPolicy};
use postern_smtp::{Envelope, ForwardPath, ReversePath};
use postern_tokio::client::{Client, ClientSettings, Destination};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Every test ends within this time.
const LIMIT: Duration = Duration::from_secs(30);

fn client() -> Client {
    let mut settings = ClientSettings::new("client.example.net");
    settings.smtp.timeouts.command = Duration::from_secs(5);
    settings.smtp.timeouts.data = Duration::from_secs(5);
    settings.connect_timeout = Duration::from_secs(5);
    Client::new(
        settings,
        Arc::new(ClientTlsContext::new(fixtures().ca.roots())),
    )
}

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::parse("<alice@example.net>").unwrap(),
        [ForwardPath::parse("<bob@example.org>").unwrap()],
    )
}

fn connection_policy(mode: ClientTlsMode, d: &Destination) -> postern_policy::ConnectionPolicy {
    OutboundPolicy::new(DestinationPolicy::new(mode)).connection(&d.next_hop, d.mx_host.as_ref())
}

#[tokio::test]
async fn messages_share_one_tls_connection_under_one_policy() {
    tokio::time::timeout(LIMIT, async {
        let hop = start_hop(HopConfig::tls(&fixtures().good)).await;
        let client = client();
        let destination = Destination::new(
            vec![hop.addr],
            NextHop::parse("example.org").unwrap(),
            Some(common::MX.parse().unwrap()),
        );
        let verify = connection_policy(ClientTlsMode::Verify, &destination);
        let mut idle = None;
        for n in 1..=3u32 {
            let message = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
            let (result, kept) = client
                .deliver_reusing(
                    &destination,
                    &verify,
                    &envelope(),
                    message.as_bytes(),
                    idle.take(),
                    true,
                )
                .await;
            assert!(result.all_delivered(), "message {n}: {result:?}");
            assert_eq!(result.connection_use, n);
            assert!(result.tls.is_some(), "message {n} over TLS");
            let kept = kept.expect("kept open");
            assert_eq!(kept.uses(), n);
            idle = Some(kept);
        }
        assert_eq!(hop.connections(), 1);
        let messages = hop.messages();
        assert_eq!(messages.len(), 3);
        assert!(
            messages.iter().all(|(tls, _)| *tls),
            "every message inside TLS"
        );

        // Another policy (encrypt only): not this connection's; a new one carries the message.
        let encrypt = connection_policy(ClientTlsMode::Encrypt, &destination);
        let idle = idle.expect("kept");
        assert!(!idle.serves(&destination, &encrypt));
        let (result, kept) = client
            .deliver_reusing(
                &destination,
                &encrypt,
                &envelope(),
                b"Subject: e\r\n\r\nx\r\n",
                Some(idle),
                false,
            )
            .await;
        assert!(result.all_delivered(), "{result:?}");
        assert_eq!(result.connection_use, 1);
        assert!(kept.is_none(), "not kept without keep_open");
        assert_eq!(hop.connections(), 2);
    })
    .await
    .expect("bounded");
}

/// A next hop that takes one message per connection and then closes it without a word.
async fn one_message_hop() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut io = BufReader::new(tcp);
                let _ = io
                    .get_mut()
                    .write_all(b"220 hop.example.org ESMTP\r\n")
                    .await;
                let mut in_data = false;
                // Bounded: a session of this test has a handful of lines.
                for _ in 0..100 {
                    let mut line = String::new();
                    if !matches!(io.read_line(&mut line).await, Ok(1..)) {
                        return;
                    }
                    let reply: &[u8] = if in_data {
                        if line != ".\r\n" {
                            continue;
                        }
                        in_data = false;
                        b"250 2.0.0 Ok: queued\r\n"
                    } else if line.starts_with("EHLO") {
                        b"250 hop.example.org\r\n"
                    } else if line.starts_with("DATA") {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else {
                        b"250 2.1.0 Ok\r\n"
                    };
                    let _ = io.get_mut().write_all(reply).await;
                    if reply.starts_with(b"250 2.0.0") {
                        // Closed at once after the message, as a next hop may when idle.
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_not_used() {
    tokio::time::timeout(LIMIT, async {
        let (addr, connections) = one_message_hop().await;
        let client = client();
        let destination =
            Destination::new(vec![addr], NextHop::parse("[127.0.0.1]").unwrap(), None);
        let policy = connection_policy(ClientTlsMode::Opportunistic, &destination);
        let (first, kept) = client
            .deliver_reusing(
                &destination,
                &policy,
                &envelope(),
                b"Subject: 1\r\n\r\nx\r\n",
                None,
                true,
            )
            .await;
        assert!(first.all_delivered(), "{first:?}");
        let kept = kept.expect("kept open after the transaction");
        // Let the next hop's close arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (second, _) = client
            .deliver_reusing(
                &destination,
                &policy,
                &envelope(),
                b"Subject: 2\r\n\r\ny\r\n",
                Some(kept),
                true,
            )
            .await;
        assert!(second.all_delivered(), "{second:?}");
        assert_eq!(second.connection_use, 1, "a new connection");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    })
    .await
    .expect("bounded");
}
