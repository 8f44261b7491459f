//! The metrics endpoint and the inbound log lines, on a relay started in
//! process: a session with STARTTLS and one refused, over loopback; the
//! endpoint scraped over HTTP; `/health` and `/ready` answer 200; the
//! `NOQUEUE: reject:` and `disconnect from` lines read as Postfix's.

mod capture;
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Hop, Submit, ca, give_relay_ca_cert, message, start_hop, start_relay, transport};
use lettre::AsyncTransport;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// `GET path` over HTTP/1.1: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    };
    let text = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("scrape timed out");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample named exactly `sample` (name and labels).
fn value(metrics: &str, sample: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A plaintext session refused at MAIL (no EHLO first), then QUIT.
async fn refused_session(addr: SocketAddr) {
    let session = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = tcp.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = lines.next_line().await.unwrap().unwrap();
        assert!(greeting.starts_with("220 "), "{greeting}");
        write
            .write_all(b"MAIL FROM:<a@client.test>\r\n")
            .await
            .unwrap();
        let refused = lines.next_line().await.unwrap().unwrap();
        assert!(refused.starts_with("503 5.5.1"), "{refused}");
        write.write_all(b"QUIT\r\n").await.unwrap();
        let bye = lines.next_line().await.unwrap().unwrap();
        assert!(bye.starts_with("221 "), "{bye}");
    };
    tokio::time::timeout(WAIT, session)
        .await
        .expect("session timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_move_the_counters_and_read_like_postfix() {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    give_relay_ca_cert(dir.path());
    std::fs::write(dir.path().join("ca.pem"), &ca().cert_pem).unwrap();
    let toml = format!(
        "accepted_domains = [\"relay.test\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [routes]\n\"dest.test\" = \"127.0.0.1:{}\"\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\n",
        sink.addr.port(),
    );
    let relay = start_relay(dir.path(), &toml).await;
    let addr = relay.local_addrs()[0];
    let metrics = relay.metrics_addr().expect("metrics configured");
    assert!(metrics.ip().is_loopback() && metrics.port() != 0);

    assert_eq!(get(metrics, "/health").await, (200, "ok\n".to_owned()));
    assert_eq!(get(metrics, "/ready").await.0, 200);
    assert_eq!(get(metrics, "/nothing").await.0, 404);

    tokio::time::timeout(
        WAIT,
        transport(addr, Submit::StartTls(None)).send(message("tls@dest.test", "tls")),
    )
    .await
    .expect("submission timed out")
    .unwrap();
    refused_session(addr).await;

    // Sessions are counted when they end, just after the client left.
    let start = Instant::now();
    let body = loop {
        let (status, body) = get(metrics, "/metrics").await;
        assert_eq!(status, 200);
        let tls = body.lines().any(|l| {
            l.starts_with("postern_inbound_sessions_total{tls_version=\"TLSv1.3\"")
                && l.ends_with(" 1")
        });
        let plain = value(
            &body,
            "postern_inbound_sessions_total{tls_version=\"none\",cipher=\"none\",client_certificate=\"none\"}",
        ) >= 1.0;
        if tls && plain {
            break body;
        }
        assert!(start.elapsed() < WAIT, "sessions not counted:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        value(&body, "postern_inbound_starttls_total{event=\"offered\"}"),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(&body, "postern_inbound_starttls_total{event=\"taken\"}"),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "postern_inbound_refusals_total{stage=\"mail\",code=\"503\"}"
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "postern_tls_handshake_duration_seconds_count{direction=\"inbound\"}"
        ),
        1.0,
        "{body}"
    );
    assert!(
        body.contains("postern_certificate_expiry_timestamp_seconds{name=\""),
        "{body}"
    );
    assert!(body.contains("postern_queue_messages "), "{body}");

    // The refusal and the session summaries, as Postfix writes them.
    let reject = capture::lines_with("NOQUEUE: reject: MAIL from unknown[127.0.0.1]: ");
    assert_eq!(reject.len(), 1, "{reject:#?}");
    assert!(
        reject[0]
            .contains("503 5.5.1 Error: send HELO/EHLO first; from=<a@client.test> proto=ESMTP"),
        "{}",
        reject[0]
    );
    let refused =
        capture::lines_with("disconnect from unknown[127.0.0.1] mail=0/1 quit=1 commands=1/2");
    assert_eq!(
        refused.len(),
        1,
        "{:#?}",
        capture::lines_with("disconnect from")
    );
    let tls = capture::lines_with(
        "disconnect from unknown[127.0.0.1] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
    );
    assert_eq!(
        tls.len(),
        1,
        "{:#?}",
        capture::lines_with("disconnect from")
    );

    // The delivery to the sink is attempted and counted once.
    let start = Instant::now();
    loop {
        let (_, body) = get(metrics, "/metrics").await;
        if value(
            &body,
            "postern_outbound_attempts_total{tls_mode=\"opportunistic\",result=\"success\"}",
        ) >= 1.0
        {
            assert!(
                value(&body, "postern_delivery_duration_seconds_count") >= 1.0,
                "{body}"
            );
            break;
        }
        assert!(start.elapsed() < WAIT, "delivery not counted:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.shutdown().await;
}
