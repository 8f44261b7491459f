//! A next hop's own refusals end to end: a `550` to RCPT bounces and a `451`
//! defers, each recorded as the server's reply verbatim (not as a
//! description of ours), and the bounce gives the `550` as an RFC 3464
//! `smtp` diagnostic with the remote MTA.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Hop, Submit, start_hop, start_relay, transport, wait_for};
use lettre::{AsyncTransport, Message};
use postern_relay::envelope::{FailureSource, RecipientState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A plaintext next hop (no STARTTLS, no PIPELINING) that refuses
/// `unknown@…` with a 550 and `later@…` with a 451, and accepts the rest.
async fn refusing_hop() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut io = BufReader::new(tcp);
                let _ = io.get_mut().write_all(b"220 refuser.test ESMTP\r\n").await;
                let mut accepted = 0;
                loop {
                    let mut line = String::new();
                    if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let upper = line.to_ascii_uppercase();
                    let reply = if upper.starts_with("EHLO") {
                        "250-refuser.test\r\n250 8BITMIME\r\n".to_owned()
                    } else if upper.starts_with("RCPT") {
                        let addr = line.split(['<', '>']).nth(1).unwrap_or("").to_owned();
                        if addr.starts_with("unknown@") {
                            format!(
                                "550 5.1.1 <{addr}>: Recipient address rejected: User unknown\r\n"
                            )
                        } else if addr.starts_with("later@") {
                            format!("451 4.3.0 <{addr}>: try again later\r\n")
                        } else {
                            accepted += 1;
                            "250 2.1.5 Ok\r\n".to_owned()
                        }
                    } else if upper.starts_with("DATA") {
                        if accepted == 0 {
                            "554 5.5.1 Error: no valid recipients\r\n".to_owned()
                        } else {
                            let _ = io.get_mut().write_all(b"354 go ahead\r\n").await;
                            loop {
                                let mut l = String::new();
                                if io.read_line(&mut l).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if l == ".\r\n" {
                                    break;
                                }
                            }
                            "250 2.0.0 Ok: queued\r\n".to_owned()
                        }
                    } else if upper.starts_with("QUIT") {
                        let _ = io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await;
                        return;
                    } else {
                        // MAIL, RSET, NOOP.
                        "250 2.0.0 Ok\r\n".to_owned()
                    };
                    if io.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn server_refusals_are_recorded_verbatim_and_bounced_as_smtp_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let hop = refusing_hop().await;
    let sink = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    let toml = format!(
        "[queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\nscan_interval = \"1s\"\n\
         [routes]\n\"dest.test\" = \"127.0.0.1:{}\"\n\"client.test\" = \"127.0.0.1:{}\"\n",
        hop.port(),
        sink.addr.port()
    );
    let relay = start_relay(dir.path(), &toml).await;
    let message = Message::builder()
        .from("alice@client.test".parse().unwrap())
        .to("unknown@dest.test".parse().unwrap())
        .to("later@dest.test".parse().unwrap())
        .to("ok@dest.test".parse().unwrap())
        .subject("three recipients")
        .body("Body.\r\n".to_owned())
        .unwrap();
    transport(relay.local_addrs()[0], Submit::Plain)
        .send(message)
        .await
        .unwrap();

    let remote = format!("127.0.0.1[127.0.0.1]:{}", hop.port());
    let scan = wait_for(
        dir.path(),
        Duration::from_secs(30),
        "the 550 returned and the 451 deferred",
        |s| {
            s.messages.len() == 1
                && s.messages[0].envelope.recipients[0].state == RecipientState::Returned
        },
    )
    .await;
    let env = &scan.messages[0].envelope;
    let unknown = &env.recipients[0];
    let f = unknown.last_failure.as_ref().unwrap();
    assert_eq!(f.source, FailureSource::Remote, "{f:?}");
    assert_eq!(
        f.text,
        "550 5.1.1 <unknown@dest.test>: Recipient address rejected: User unknown"
    );
    assert_eq!(f.code.to_string(), "5.1.1");
    assert_eq!(f.remote_mta.as_deref(), Some(remote.as_str()));

    let later = &env.recipients[1];
    assert_eq!(later.state, RecipientState::Deferred);
    let f = later.last_failure.as_ref().unwrap();
    assert_eq!(f.source, FailureSource::Remote, "{f:?}");
    assert_eq!(f.text, "451 4.3.0 <later@dest.test>: try again later");
    assert_eq!(f.code.to_string(), "4.3.0");
    assert_eq!(
        f.to_string(),
        format!("host {remote} said: 451 4.3.0 <later@dest.test>: try again later")
    );
    assert_eq!(env.recipients[2].state, RecipientState::Delivered);

    // `queue list` says whose words these are.
    let text = postern_relay::cli::queue_text(&scan);
    assert!(
        text.contains(&format!(
            "    last failure: 4.3.0 451 4.3.0 <later@dest.test>: try again later \
             (reply from {remote}) [policy: default: opportunistic → continue in plaintext"
        )),
        "{text}"
    );

    // The bounce (for unknown@ only) carries the 550 as the server's reply.
    let mut bounces = Vec::new();
    for _ in 0..200 {
        bounces = sink.delivered_to("alice@client.test");
        if !bounces.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bounces.len(), 1);
    let bounce = String::from_utf8_lossy(&bounces[0].content);
    assert!(
        bounce.contains(
            "Final-Recipient: rfc822; unknown@dest.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Remote-MTA: dns; 127.0.0.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 <unknown@dest.test>: Recipient address rejected: User unknown\r\n"
        ),
        "{bounce}"
    );
    assert!(
        bounce.contains(&format!(
            "<unknown@dest.test>: host {remote} said: 550 5.1.1 <unknown@dest.test>: \
             Recipient address rejected: User unknown [policy: "
        )),
        "{bounce}"
    );
    assert!(!bounce.contains("X-Postern"), "{bounce}");
    assert!(
        !bounce.contains("Final-Recipient: rfc822; later@"),
        "{bounce}"
    );
    relay.shutdown().await;
}
