//! The connection drivers stepped by `next()`: our server driver against our client driver and against
//! lettre, and the callback server passing the message start and the connection's facts to its handler.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{MX, fixtures, settings};
use postern_policy::{ClientCertMode, ServerTlsMode};
use postern_smtp::{
    ClientCloseReason, ClientEvent, CloseReason, DataSummary, EnhancedStatus, Envelope,
    ForwardPath, RcptParams, ReversePath, ServerEvent,
};
use postern_tokio::client::{ClientConnection, ClientConnectionError, ClientSettings};
use postern_tokio::server::{
    ConnectionError, ConnectionInfo, Endpoint, Event, Server, ServerConnection, ServerHandler,
    ServerSettings, SessionHandler, Verdict,
};
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;

/// Every test ends within this time.
const LIMIT: Duration = Duration::from_secs(20);

fn client_tls() -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(postern_certs::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(fixtures().ca.roots())
        .with_no_client_auth();
    Arc::new(config)
}

fn server_settings() -> ServerSettings {
    let mut s = settings(ServerTlsMode::Offer, ClientCertMode::None);
    s.smtp.greet_pause = Duration::ZERO;
    s
}

fn envelope(to: &[&str]) -> Envelope {
    Envelope::new(
        ReversePath::parse("<alice@example.net>").unwrap(),
        to.iter().map(|t| ForwardPath::parse(t).unwrap()),
    )
}

/// What the server loop saw, in order, by name.
async fn serve_one(mut conn: ServerConnection) -> (Vec<String>, Vec<u8>) {
    let mut seen = Vec::new();
    let mut content = Vec::new();
    // Bounded: a session of this test has far fewer events.
    for _ in 0..1000 {
        let event = conn.next().await.expect("driver used correctly");
        match event {
            Event::Session(ServerEvent::Hello { .. }) => {
                seen.push("hello".to_owned());
                // Asking for more before answering is refused, not a hang.
                assert_eq!(conn.next().await, Err(ConnectionError::Unanswered));
                conn.answer(Verdict::Accept).unwrap();
                assert_eq!(
                    conn.answer(Verdict::Accept),
                    Err(ConnectionError::NoDecision)
                );
            }
            Event::Session(ServerEvent::Rcpt { to, .. }) => {
                seen.push("rcpt".to_owned());
                let verdict = if to.to_string() == "<nobody@example.org>" {
                    Verdict::reject(550, EnhancedStatus::new(5, 1, 1).unwrap(), "No such user")
                } else {
                    Verdict::Accept
                };
                conn.answer(verdict).unwrap();
            }
            Event::Session(ServerEvent::MessageStart { .. }) => seen.push("start".to_owned()),
            Event::Session(ServerEvent::MessageChunk(chunk)) => content.extend(chunk),
            Event::Session(ServerEvent::MessageEnd { .. }) => {
                seen.push("end".to_owned());
                let reply = postern_smtp::Reply::new(
                    250,
                    Some(EnhancedStatus::new(2, 0, 0).unwrap()),
                    ["Ok: queued as T1"],
                )
                .unwrap();
                conn.answer(Verdict::AcceptWith(reply)).unwrap();
            }
            Event::Session(ServerEvent::Mail { .. }) => {
                seen.push("mail".to_owned());
                conn.answer(Verdict::Accept).unwrap();
            }
            Event::Session(ServerEvent::Vrfy(_)) => conn.answer(Verdict::Accept).unwrap(),
            Event::Session(_) => {}
            Event::TlsEstablished => {
                assert!(conn.info().tls.is_some());
                seen.push("tls".to_owned());
            }
            Event::Closed(reason) => {
                seen.push(format!("closed {reason:?}"));
                assert_eq!(conn.next().await, Err(ConnectionError::Closed));
                return (seen, content);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("session did not end: {seen:?}");
}

#[tokio::test]
async fn server_driver_against_client_driver_with_starttls() {
    tokio::time::timeout(LIMIT, async {
        let endpoint = Endpoint::new(server_settings()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            serve_one(endpoint.connection(tcp, peer)).await
        });

        let settings = ClientSettings::new("client.example.net");
        let mut client = ClientConnection::connect(addr, &settings).await.unwrap();
        let ClientEvent::Ready {
            capabilities,
            tls_active: false,
            ..
        } = client.next().await.unwrap()
        else {
            panic!("not ready in plaintext")
        };
        assert!(capabilities.starttls);
        // No handshake to run yet.
        assert!(matches!(
            client
                .handshake(client_tls(), ServerName::try_from(MX).unwrap())
                .await,
            Err(ClientConnectionError::NoHandshake)
        ));
        client.start_tls().unwrap();
        assert!(matches!(
            client.next().await.unwrap(),
            ClientEvent::StartTls { discarded: 0 }
        ));
        assert!(matches!(
            client.next().await,
            Err(ClientConnectionError::HandshakePending)
        ));
        client
            .handshake(client_tls(), ServerName::try_from(MX).unwrap())
            .await
            .unwrap();
        assert!(client.tls().is_some());
        assert!(matches!(
            client.next().await.unwrap(),
            ClientEvent::Ready {
                tls_active: true,
                ..
            }
        ));
        client
            .send_mail(
                envelope(&["<bob@example.org>", "<nobody@example.org>"]),
                b"Subject: t\r\n\r\nHello\r\n".to_vec(),
            )
            .unwrap();
        let ClientEvent::TransactionDone(report) = client.next().await.unwrap() else {
            panic!("no transaction report")
        };
        let data = report.data_reply.expect("final reply");
        assert_eq!(data.to_bytes(), b"250 2.0.0 Ok: queued as T1\r\n");
        assert_eq!(
            report.recipients[1].reply.as_ref().unwrap().code().value(),
            550
        );
        client.quit().unwrap();
        assert_eq!(
            client.next().await.unwrap(),
            ClientEvent::Closed(ClientCloseReason::Quit)
        );
        assert!(matches!(
            client.next().await,
            Err(ClientConnectionError::Closed)
        ));

        let (seen, content) = server.await.unwrap();
        assert_eq!(
            seen,
            [
                "hello",
                "tls",
                "hello",
                "mail",
                "rcpt",
                "rcpt",
                "start",
                "end",
                "closed Quit"
            ]
        );
        assert_eq!(content, b"Subject: t\r\n\r\nHello\r\n");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn client_driver_handshake_failure_closes() {
    tokio::time::timeout(LIMIT, async {
        let endpoint = Endpoint::new(server_settings()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            serve_one(endpoint.connection(tcp, peer)).await
        });
        let mut client =
            ClientConnection::connect(addr, &ClientSettings::new("client.example.net"))
                .await
                .unwrap();
        assert!(matches!(
            client.next().await.unwrap(),
            ClientEvent::Ready { .. }
        ));
        client.start_tls().unwrap();
        assert!(matches!(
            client.next().await.unwrap(),
            ClientEvent::StartTls { .. }
        ));
        // The certificate is for mx.example.org: another name fails verification.
        let wrong = ServerName::try_from("other.example.org").unwrap();
        assert!(matches!(
            client.handshake(client_tls(), wrong).await,
            Err(ClientConnectionError::Handshake(_))
        ));
        assert!(matches!(
            client.next().await,
            Err(ClientConnectionError::Closed)
        ));
        let (seen, _) = server.await.unwrap();
        assert_eq!(seen, ["hello", "closed PeerClosed"]);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn server_driver_against_lettre() {
    use lettre::transport::smtp::extension::ClientId;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    tokio::time::timeout(LIMIT, async {
        let endpoint = Endpoint::new(server_settings()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            serve_one(endpoint.connection(tcp, peer)).await
        });
        let message = Message::builder()
            .from("alice@example.net".parse().unwrap())
            .to("bob@example.org".parse().unwrap())
            .subject("hello")
            .body(String::from("Hello over SMTP"))
            .unwrap();
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(addr.port())
            .hello_name(ClientId::Domain("client.example.net".into()))
            .timeout(Some(Duration::from_secs(10)))
            .build()
            .send(message)
            .await
            .expect("accepted");
        let (seen, content) = server.await.unwrap();
        assert_eq!(
            seen,
            ["hello", "mail", "rcpt", "start", "end", "closed Quit"]
        );
        assert!(String::from_utf8_lossy(&content).contains("Hello over SMTP"));
    })
    .await
    .expect("bounded");
}

/// Records what the callbacks were given.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl ServerHandler for Recorder {
    type Session = Self;
    fn open(&self, _: &ConnectionInfo) -> Self {
        self.clone()
    }
}

impl SessionHandler for Recorder {
    async fn rcpt(&mut self, _: &ConnectionInfo, _: &ForwardPath, _: &RcptParams) -> Verdict {
        Verdict::Accept
    }
    async fn message_start(&mut self, info: &ConnectionInfo, chunked: bool) {
        let tls = info.tls_active();
        self.0
            .lock()
            .unwrap()
            .push(format!("start chunked={chunked} tls={tls}"));
    }
    async fn message_chunk(&mut self, info: &ConnectionInfo, _: Vec<u8>) {
        let tls = info.tls_active();
        self.0.lock().unwrap().push(format!("chunk tls={tls}"));
    }
    async fn message_end(&mut self, _: &ConnectionInfo, _: &DataSummary) -> Verdict {
        self.0.lock().unwrap().push("end".into());
        Verdict::Accept
    }
    fn closed(&mut self, _: &ConnectionInfo, reason: CloseReason) {
        self.0.lock().unwrap().push(format!("closed {reason:?}"));
    }
}

#[tokio::test]
async fn callbacks_get_the_message_start_and_the_connection() {
    tokio::time::timeout(LIMIT, async {
        let recorder = Recorder::default();
        let server = Server::new(server_settings(), recorder.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        let mut settings = ClientSettings::new("client.example.net");
        settings.smtp.pipelining = true;
        let mut client = ClientConnection::connect(addr, &settings).await.unwrap();
        assert!(matches!(
            client.next().await.unwrap(),
            ClientEvent::Ready { .. }
        ));
        client.start_tls().unwrap();
        assert!(matches!(
            client.next().await.unwrap(),
            ClientEvent::StartTls { .. }
        ));
        client
            .handshake(client_tls(), ServerName::try_from(MX).unwrap())
            .await
            .unwrap();
        assert!(matches!(
            client.next().await.unwrap(),
            ClientEvent::Ready {
                tls_active: true,
                ..
            }
        ));
        client
            .send_mail(
                envelope(&["<bob@example.org>"]),
                b"Subject: t\r\n\r\nHi\r\n".to_vec(),
            )
            .unwrap();
        assert!(matches!(
            client.next().await.unwrap(),
            ClientEvent::TransactionDone(_)
        ));
        client.quit().unwrap();
        assert_eq!(
            client.next().await.unwrap(),
            ClientEvent::Closed(ClientCloseReason::Quit)
        );
        let _ = stop.send(());
        serving.await.unwrap();
        let seen = recorder.0.lock().unwrap().clone();
        let start = seen
            .iter()
            .find(|s| s.starts_with("start"))
            .expect("message start passed on");
        assert!(start.ends_with("tls=true"), "{seen:?}");
        assert!(seen.iter().any(|s| s == "chunk tls=true"), "{seen:?}");
        assert_eq!(
            seen.last().map(String::as_str),
            Some("closed Quit"),
            "{seen:?}"
        );
    })
    .await
    .expect("bounded");
}

/// A raw SMTP client: sends `line` (unless empty) and returns the whole reply (every line of a multiline one).
async fn say(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>, line: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !line.is_empty() {
        stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }
    let mut reply = String::new();
    // Bounded: no reply of this test has that many lines.
    for _ in 0..50 {
        let mut l = String::new();
        if stream.read_line(&mut l).await.unwrap() == 0 {
            break;
        }
        reply.push_str(&l);
        if l.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    reply
}

async fn open_session(addr: std::net::SocketAddr) -> tokio::io::BufReader<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::BufReader::new(tcp)
}

#[tokio::test]
async fn reconfigure_applies_to_new_sessions_only() {
    tokio::time::timeout(LIMIT, async {
        let server = Server::new(server_settings(), Recorder::default()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn({
            let server = server.clone();
            async move {
                server
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await;
            }
        });
        // Session A starts under "offer".
        let mut a = open_session(addr).await;
        assert!(say(&mut a, "").await.starts_with("220 "));
        assert!(say(&mut a, "EHLO a.example").await.contains("STARTTLS"));

        // A policy the TLS context does not match is refused and changes nothing.
        let mut wrong = settings(ServerTlsMode::Require, ClientCertMode::Require);
        wrong.smtp.greet_pause = Duration::ZERO;
        wrong.tls = server_settings().tls;
        assert!(server.reconfigure(wrong).is_err());
        assert_eq!(server.settings().policy.tls, ServerTlsMode::Offer);

        let mut require = settings(ServerTlsMode::Require, ClientCertMode::None);
        require.smtp.greet_pause = Duration::ZERO;
        server.reconfigure(require).unwrap();
        assert_eq!(server.settings().policy.tls, ServerTlsMode::Require);

        // Session B, opened after: TLS required.
        let mut b = open_session(addr).await;
        assert!(say(&mut b, "").await.starts_with("220 "));
        say(&mut b, "EHLO b.example").await;
        let refused = say(&mut b, "MAIL FROM:<b@example.net>").await;
        assert!(refused.starts_with("530 5.7.0"), "{refused}");
        assert!(say(&mut b, "QUIT").await.starts_with("221"));

        // Session A finishes under the settings it started with.
        let accepted = say(&mut a, "MAIL FROM:<a@example.net>").await;
        assert!(accepted.starts_with("250"), "{accepted}");

        // The connection limit lowered to 1 while A holds a slot: the next client is told to come back.
        let mut one = settings(ServerTlsMode::Offer, ClientCertMode::None);
        one.smtp.greet_pause = Duration::ZERO;
        one.max_connections = 1;
        server.reconfigure(one).unwrap();
        let mut c = open_session(addr).await;
        let busy = say(&mut c, "").await;
        assert!(busy.starts_with("421 4.3.2"), "{busy}");
        assert!(say(&mut a, "QUIT").await.starts_with("221"));
        // A's slot was taken back, not given again: once A is gone, one client at a time gets in.
        let mut served = None;
        for _ in 0..50 {
            let mut d = open_session(addr).await;
            let greeting = say(&mut d, "").await;
            if greeting.starts_with("220 ") {
                served = Some(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut d = served.expect("a slot frees when A quits");
        let mut e = open_session(addr).await;
        let busy = say(&mut e, "").await;
        assert!(busy.starts_with("421 4.3.2"), "{busy}");
        assert!(say(&mut d, "QUIT").await.starts_with("221"));
        let _ = stop.send(());
        serving.await.unwrap();
    })
    .await
    .expect("bounded");
}
