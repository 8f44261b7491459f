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

const SYNC: &str = "554 5.5.0 Error: SMTP protocol synchronization\r\n";

/// When a client talks first, relative to the session.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Talk {
    /// Its bytes are in the socket when the session starts.
    BeforeStart,
    /// Its bytes arrive once the session waits, in the greet pause.
    InPause,
    /// It waits for the greeting.
    AfterGreeting,
}

/// RFC 5321 3.1 / 4.3.1, DESIGN.md section 4: a client that talks before the greeting is answered `554 5.5.0`
/// and disconnected without ever seeing a `220`, whether its bytes were there when the session started or
/// arrived while the session held the greeting back (the greet pause, sendmail's `greet_pause`); one that
/// waits is served. The order is fixed, not left to timing: on this single-threaded runtime the spawned
/// session runs until it waits for input before the client writes.
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
    for talk in [Talk::BeforeStart, Talk::InPause, Talk::AfterGreeting] {
        let mut client = TcpStream::connect(addr).await.unwrap();
        if talk == Talk::BeforeStart {
            client
                .write_all(b"EHLO eager.example.net\r\n")
                .await
                .unwrap();
        }
        let (tcp, peer) = listener.accept().await.unwrap();
        let (server, rx) = (Arc::clone(&server), rx.clone());
        let serve = tokio::spawn(async move { server.serve_connection(tcp, peer, rx).await });
        // The session starts and waits for input (no sleeping: the runtime runs the spawned task now).
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        if talk == Talk::InPause {
            client
                .write_all(b"EHLO eager.example.net\r\n")
                .await
                .unwrap();
        }
        let mut rd = BufReader::new(client);
        if talk == Talk::AfterGreeting {
            assert!(line(&mut rd).await.starts_with("220 "));
            rd.get_mut()
                .write_all(b"EHLO patient.example.net\r\n")
                .await
                .unwrap();
            assert!(line(&mut rd).await.starts_with("250-"));
            rd.get_mut().write_all(b"QUIT\r\n").await.unwrap();
        } else {
            assert_eq!(line(&mut rd).await, SYNC, "{talk:?}: no 220 first");
            let mut rest = String::new();
            rd.read_to_string(&mut rest).await.unwrap();
            assert_eq!(rest, "", "{talk:?}: connection closed after the 554");
        }
        tokio::time::timeout(Duration::from_secs(5), serve)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The early talker of issue 12, through the real accept loop on a multi-threaded runtime where the server
/// runs alongside the clients: each writes EHLO as soon as it is connected, without waiting, and each gets
/// `554 5.5.0` and no `220`, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_talkers_always_get_554() {
    let server = start_server(settings(ServerTlsMode::Offer, ClientCertMode::None)).await;
    for i in 0..40 {
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client
            .write_all(b"EHLO eager.example.net\r\n")
            .await
            .unwrap();
        let mut rd = BufReader::new(client);
        assert_eq!(line(&mut rd).await, SYNC, "connection {i}");
        assert_eq!(line(&mut rd).await, "", "connection {i} closed");
    }
    assert!(server.inbox.messages().is_empty());
    server.shutdown().await;
}

/// Issue 12 item 22: with every slot held by idle clients, the server goes under stress (Postfix's `stress`):
/// the idle sessions' command deadline drops from 300 s to the stress timeout, the longest idle one is told
/// `421 4.4.2`, and an honest client, refused `421 4.3.2` while the slots are full, takes the freed slot and
/// delivers within seconds. (Once a slot is free the server is no longer under stress and the other idle
/// sessions have their 300 s again.)
#[tokio::test]
async fn honest_client_gets_through_while_idle_clients_hold_the_slots() {
    const SLOTS: usize = 4;
    let mut s = settings(ServerTlsMode::Offer, ClientCertMode::None);
    s.max_connections = SLOTS;
    s.smtp.stress.command_timeout = Duration::from_secs(1);
    // Fills the slots quickly; the pause plays no part here.
    s.smtp.greet_pause = Duration::ZERO;
    assert_eq!(s.smtp.timeouts.command, Duration::from_secs(300));
    let server = start_server(s).await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..SLOTS {
        let mut c = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
        assert!(line(&mut c).await.starts_with("220 "), "idle client {i}");
        c.get_mut()
            .write_all(b"EHLO idle.example.net\r\n")
            .await
            .unwrap();
        while line(&mut c).await.starts_with("250-") {}
        idle.push(c);
    }
    // Every slot is held: an honest client is refused for now, then retries as an MTA does.
    let mut refused = 0;
    let mut delivered = false;
    for _ in 0..100 {
        let mut c = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
        let first = line(&mut c).await;
        if first.starts_with("421 4.3.2 ") {
            refused += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert!(first.starts_with("220 "), "{first}");
        for (cmd, reply) in [
            ("EHLO honest.example.net\r\n", "250 "),
            ("MAIL FROM:<a@example.net>\r\n", "250 "),
            ("RCPT TO:<b@example.org>\r\n", "250 "),
            ("DATA\r\n", "354 "),
            ("Subject: honest\r\n\r\nhello\r\n.\r\n", "250 "),
            ("QUIT\r\n", "221 "),
        ] {
            c.get_mut().write_all(cmd.as_bytes()).await.unwrap();
            let mut got = line(&mut c).await;
            while got.starts_with("250-") {
                got = line(&mut c).await;
            }
            assert!(got.starts_with(reply), "{cmd:?}: {got}");
        }
        delivered = true;
        break;
    }
    let elapsed = started.elapsed();
    assert!(refused > 0, "the slots were not all held");
    assert!(delivered, "the honest client never got through");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(server.inbox.messages().len(), 1);
    // The longest idle client was told why it was cut off, long before 300 s.
    let mut first = idle.swap_remove(0);
    assert_eq!(
        line(&mut first).await,
        format!("421 4.4.2 {MX} Error: timeout exceeded\r\n")
    );
    assert_eq!(line(&mut first).await, "");
    drop(idle);
    server.shutdown().await;
}

/// A client that kept quiet through a whole greet pause is spared it on its next connections for
/// `greet_pass_ttl` (Postfix's `postscreen_greet_ttl`): there its session greets at once, so a client that
/// writes once the session waits is served; with `greet_pass_ttl = 0` the same client is refused again.
#[tokio::test]
async fn clients_that_passed_the_greet_pause_are_remembered() {
    for ttl in [Duration::from_secs(60), Duration::ZERO] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = settings(ServerTlsMode::Offer, ClientCertMode::None);
        s.greet_pass_ttl = ttl;
        let server = Arc::new(Server::new(s, Inbox::default()).unwrap());
        let (_force, rx) = watch::channel(false);
        for patient in [true, false] {
            let client = TcpStream::connect(addr).await.unwrap();
            let (tcp, peer) = listener.accept().await.unwrap();
            let (server, rx) = (Arc::clone(&server), rx.clone());
            let serve = tokio::spawn(async move { server.serve_connection(tcp, peer, rx).await });
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let mut rd = BufReader::new(client);
            if patient {
                assert!(line(&mut rd).await.starts_with("220 "));
            }
            rd.get_mut()
                .write_all(b"EHLO client.example.net\r\n")
                .await
                .unwrap();
            let mut first = line(&mut rd).await;
            if !patient && !ttl.is_zero() {
                // Greeted at once: the 220 came before the EHLO was sent.
                assert!(first.starts_with("220 "), "{first}");
                first = line(&mut rd).await;
            }
            if patient || !ttl.is_zero() {
                assert!(first.starts_with("250-"), "{ttl:?} {patient}: {first}");
                while line(&mut rd).await.starts_with("250-") {}
                rd.get_mut().write_all(b"QUIT\r\n").await.unwrap();
            } else {
                assert_eq!(first, SYNC, "no pass remembered: refused again");
            }
            tokio::time::timeout(Duration::from_secs(5), serve)
                .await
                .unwrap()
                .unwrap();
        }
    }
}
