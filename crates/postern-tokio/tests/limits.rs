//! Deadlines, the connection limit and graceful shutdown of our server, over real loopback sockets.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Inbox, MX, settings, start_server};
use postern_policy::{ClientCertMode, ServerTlsMode};
use postern_tokio::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

async fn line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> String {
    let mut s = String::new();
    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut s))
        .await
        .expect("line in time")
        .unwrap();
    s
}

#[tokio::test]
async fn trickling_client_is_cut_off_with_421() {
    let mut s = settings(ServerTlsMode::Offer, ClientCertMode::None);
    s.smtp.timeouts.command = Duration::from_secs(1);
    let server = start_server(s).await;
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut rd = BufReader::new(rd);
    assert!(line(&mut rd).await.starts_with("220 "));
    let started = Instant::now();
    // One byte every 150 ms: each read is "progress", but the command as a whole is late.
    let trickle = tokio::spawn(async move {
        for b in b"EHLO trickle.example.net\r\n" {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let reply = line(&mut rd).await;
    let elapsed = started.elapsed();
    assert_eq!(reply, format!("421 4.4.2 {MX} Error: timeout exceeded\r\n"));
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(line(&mut rd).await, "", "connection closed after the 421");
    trickle.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_421() {
    let mut s = settings(ServerTlsMode::Offer, ClientCertMode::None);
    s.max_connections = 1;
    let server = start_server(s).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let mut first = BufReader::new(first);
    assert!(line(&mut first).await.starts_with("220 "));

    let mut second = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(
        line(&mut second).await,
        format!("421 4.3.2 {MX} Too many connections, try again later\r\n")
    );
    assert_eq!(line(&mut second).await, "");

    // The slot comes back when the first session ends.
    first.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    assert!(line(&mut first).await.starts_with("221 "));
    assert_eq!(line(&mut first).await, "");
    let mut greeted = false;
    for _ in 0..50 {
        let mut third = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
        if line(&mut third).await.starts_with("220 ") {
            greeted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(greeted, "slot not released");
    server.shutdown().await;
}

/// The log lines written while `f` runs (this thread's tasks: a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A connection flood over the limit writes one line, then a count, not one line per refused connection.
#[tokio::test]
async fn refused_connections_are_summarised_in_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut s = settings(ServerTlsMode::Offer, ClientCertMode::None);
    s.max_connections = 1;
    let server = start_server(s).await;
    let mut first = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    assert!(line(&mut first).await.starts_with("220 "));
    for _ in 0..20 {
        let mut refused = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
        assert!(line(&mut refused).await.starts_with("421 4.3.2 "));
        assert_eq!(line(&mut refused).await, "");
    }
    first.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    assert!(line(&mut first).await.starts_with("221 "));
    server.shutdown().await;

    let lines = captured.lines();
    let each: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("too many connections") && l.contains("peer="))
        .collect();
    assert_eq!(each.len(), 1, "{lines:#?}");
    let summary: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("too many connections: 19 more refused in the last "))
        .collect();
    assert_eq!(summary.len(), 1, "{lines:#?}");
    assert!(
        summary[0].contains("WARN") && summary[0].contains("limit=1"),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_sessions_finish_then_closes_idle_ones() {
    let mut s = settings(ServerTlsMode::Offer, ClientCertMode::None);
    s.shutdown_grace = Duration::from_millis(500);
    let mut server = start_server(s).await;
    let addr = server.addr;
    let mut idle = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert!(line(&mut idle).await.starts_with("220 "));
    let mut busy = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert!(line(&mut busy).await.starts_with("220 "));

    drop(server.stop.take());
    // No new connections once shutdown began.
    let mut refused = false;
    for _ in 0..50 {
        match TcpStream::connect(addr).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "still accepting after shutdown");

    // A session in progress finishes its transaction within the grace period.
    let w = busy.get_mut();
    w.write_all(b"HELO busy.example.net\r\n").await.unwrap();
    assert!(line(&mut busy).await.starts_with("250 "));
    busy.get_mut()
        .write_all(b"MAIL FROM:<a@example.net>\r\n")
        .await
        .unwrap();
    assert!(line(&mut busy).await.starts_with("250 "));
    busy.get_mut()
        .write_all(b"RCPT TO:<b@example.org>\r\n")
        .await
        .unwrap();
    assert!(line(&mut busy).await.starts_with("250 "));
    busy.get_mut().write_all(b"DATA\r\n").await.unwrap();
    assert!(line(&mut busy).await.starts_with("354 "));
    busy.get_mut()
        .write_all(b"Subject: late\r\n\r\nx\r\n.\r\n")
        .await
        .unwrap();
    assert!(line(&mut busy).await.starts_with("250 "));
    assert_eq!(server.inbox.messages().len(), 1);

    // After the grace period, waiting sessions are told 421 and closed; the server returns.
    assert_eq!(
        line(&mut idle).await,
        format!("421 4.3.2 {MX} Service shutting down\r\n")
    );
    assert_eq!(line(&mut idle).await, "");
    assert!(line(&mut busy).await.starts_with("421 4.3.2"));
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("server returned")
        .unwrap();
}

#[tokio::test]
async fn stalled_tls_handshake_is_closed() {
    let mut s = settings(ServerTlsMode::Offer, ClientCertMode::None);
    s.handshake_timeout = Duration::from_millis(300);
    let server = start_server(s).await;
    let mut c = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    assert!(line(&mut c).await.starts_with("220 "));
    c.get_mut()
        .write_all(b"HELO stall.example.net\r\n")
        .await
        .unwrap();
    assert!(line(&mut c).await.starts_with("250 "));
    c.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert_eq!(line(&mut c).await, "220 2.0.0 Ready to start TLS\r\n");
    // No ClientHello: the server gives up after the handshake timeout and closes.
    let started = Instant::now();
    assert_eq!(line(&mut c).await, "");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    server.shutdown().await;
}

/// RFC 5321 3.1 / 4.3.1, DESIGN.md section 4: a client that sends before the greeting (its bytes are there when
/// the session starts) is answered `554 5.5.0` and disconnected, as Postfix 3.9 does
/// (`smtpd_forbid_unauth_pipelining`); one that waits is served.
#[tokio::test]
async fn client_talking_before_the_greeting_gets_554() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(
        Server::new(
            settings(ServerTlsMode::Offer, ClientCertMode::None),
            Inbox::default(),
        )
        .unwrap(),
    );
    let (_force, rx) = watch::channel(false);
    for eager in [true, false] {
        let mut client = TcpStream::connect(addr).await.unwrap();
        if eager {
            client
                .write_all(b"EHLO eager.example.net\r\n")
                .await
                .unwrap();
        }
        let (tcp, peer) = listener.accept().await.unwrap();
        // The eager client's bytes are in the socket before the session starts.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (server, rx) = (Arc::clone(&server), rx.clone());
        let serve = tokio::spawn(async move { server.serve_connection(tcp, peer, rx).await });
        let mut rd = BufReader::new(client);
        assert!(line(&mut rd).await.starts_with("220 "));
        if eager {
            assert_eq!(
                line(&mut rd).await,
                "554 5.5.0 Error: SMTP protocol synchronization\r\n"
            );
            let mut rest = String::new();
            rd.read_to_string(&mut rest).await.unwrap();
            assert_eq!(rest, "", "connection closed after the 554");
        } else {
            rd.get_mut()
                .write_all(b"EHLO patient.example.net\r\n")
                .await
                .unwrap();
            assert!(line(&mut rd).await.starts_with("250-"));
            rd.get_mut().write_all(b"QUIT\r\n").await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), serve)
            .await
            .unwrap()
            .unwrap();
    }
}
