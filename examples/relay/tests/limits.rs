//! Operator limits, end to end on the relay: the connection limit, the per-phase deadline against a trickling
//! client, and the bare-LF policy (SMTP smuggling).

mod common;

use std::io::Read as _;
use std::time::{Duration, Instant};

use common::start_relay;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn line(io: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_line(&mut l)).await;
    l
}

/// Reads one (possibly multi-line) reply.
async fn reply(io: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let l = line(io).await;
        all.push_str(&l);
        if l.is_empty() || l.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

async fn connect(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

#[tokio::test]
async fn connection_limit_answers_421() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), "max_connections = 1\n").await;
    let addr = relay.local_addrs()[0];
    let mut first = connect(addr).await;
    assert!(reply(&mut first).await.starts_with("220 "));
    let mut second = connect(addr).await;
    let r = reply(&mut second).await;
    assert!(r.starts_with("421 4.3.2 "), "{r}");
    drop(first);
    drop(second);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_trickling_client_is_cut_off_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), "[timeouts]\nserver_command = \"2s\"\n").await;
    let mut c = connect(relay.local_addrs()[0]).await;
    assert!(reply(&mut c).await.starts_with("220 "));
    let start = Instant::now();
    // One byte every 300 ms: each read arrives well within any per-read timeout, the command never ends.
    let mut answer = String::new();
    for b in b"EHLO a-very-slow-client.test".iter().cycle().take(40) {
        if c.get_mut().write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), c.read_line(&mut answer)).await
            && n > 0
        {
            break;
        }
    }
    if answer.is_empty() {
        answer = reply(&mut c).await;
    }
    assert!(answer.starts_with("421 4.4.2 "), "{answer:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    relay.shutdown().await;
}

async fn send_bare_lf(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), toml).await;
    let mut c = connect(relay.local_addrs()[0]).await;
    reply(&mut c).await;
    for cmd in [
        "EHLO client.test\r\n",
        "MAIL FROM:<a@client.test>\r\n",
        "RCPT TO:<b@localhost>\r\n",
        "DATA\r\n",
    ] {
        c.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        let r = reply(&mut c).await;
        assert!(r.starts_with('2') || r.starts_with("354"), "{cmd}: {r}");
    }
    // A bare LF, and a smuggling attempt (`\n.\n`) that must not end the data.
    c.get_mut()
        .write_all(
            b"Subject: x\r\n\r\nline one\nline two\n.\nMAIL FROM:<smuggled@evil.test>\r\n.\r\n",
        )
        .await
        .unwrap();
    let r = reply(&mut c).await;
    drop(c);
    relay.shutdown().await;
    let (spool, recovery) =
        postern_relay::queue::spool::Spool::open(dir.path().join("state/spool")).unwrap();
    let content = recovery
        .messages
        .first()
        .map(|m| {
            let mut content = Vec::new();
            spool
                .open_content(&m.id)
                .unwrap()
                .read_to_end(&mut content)
                .unwrap();
            content
        })
        .unwrap_or_default();
    format!("{r}--\n{}", String::from_utf8_lossy(&content))
}

#[tokio::test]
async fn bare_newlines_are_normalized_or_rejected() {
    // Delivery would try to route `localhost`'s mail by DNS: keep it queued with a long first delay.
    let keep = "[queue]\nmin_backoff = \"1h\"\nmax_backoff = \"1h\"\n[routes]\n\"localhost\" = \"127.0.0.1:9\"\n";
    let normalized = send_bare_lf(keep).await;
    assert!(
        normalized.starts_with("250 2.0.0 Ok: queued as "),
        "{normalized}"
    );
    assert!(
        normalized.contains("\r\nline one\r\nline two\r\n"),
        "{normalized}"
    );
    // The smuggled command stayed content: one message, ending after it.
    assert!(
        normalized.contains("MAIL FROM:<smuggled@evil.test>\r\n"),
        "{normalized}"
    );

    let rejected = send_bare_lf(&format!("bare_newlines = \"reject\"\n{keep}")).await;
    assert!(rejected.starts_with("550 5.5.2 "), "{rejected}");
    assert!(rejected.ends_with("--\n"), "nothing queued: {rejected}");
}
