//! Test fixtures: certificates generated with rcgen, an in-memory mail handler for our server, and a
//! misbehaving-on-demand next hop built on our own server session.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use postern_certs::{CertResolver, ServedCertificates, ServerTlsContext, ServerTlsSpec};
use postern_policy::{ClientCertMode, ServerPolicy, ServerTlsMode, TlsVersion};
use postern_smtp::{
    DataSummary, ForwardPath, RcptParams, ServerConfig, ServerEvent, ServerSession, StartTlsPolicy,
};
#[allow(unused_imports)] // each test binary uses its own part of them
pub use postern_test_support::{Ca, Pem, self_signed};
use postern_tokio::server::{
    ConnectionInfo, Server, ServerHandler, ServerSettings, SessionHandler, TlsInfo, Verdict,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const MX: &str = "mx.example.org";

pub struct Fixtures {
    pub ca: Ca,
    /// mx.example.org signed by the CA.
    pub good: Pem,
    pub self_signed: Pem,
    pub expired: Pem,
    pub wrong_name: Pem,
    pub client_trusted: Pem,
    pub client_untrusted: Pem,
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let ca = Ca::new("Postern Test CA");
        Fixtures {
            good: ca.leaf(&[MX], false, -1, 90),
            self_signed: self_signed(&[MX], false),
            expired: ca.leaf(&[MX], false, -30, -1),
            wrong_name: ca.leaf(&["other.example.net"], false, -1, 90),
            client_trusted: ca.leaf(&["client.example.net"], true, -1, 90),
            client_untrusted: self_signed(&["client.example.net"], true),
            ca,
        }
    })
}

/// A server TLS context serving `cert`.
pub fn server_tls(
    cert: &Pem,
    mode: ServerTlsMode,
    client_cert: ClientCertMode,
) -> ServerTlsContext {
    let mut spec = ServerTlsSpec::default();
    spec.mode = mode;
    spec.client_cert = client_cert;
    if client_cert != ClientCertMode::None {
        spec.client_roots = Some(fixtures().ca.roots());
    }
    let set = ServedCertificates::from_certs([&cert.cert_key()]);
    ServerTlsContext::new(&spec, Arc::new(CertResolver::new(set))).expect("server tls context")
}

// ---- our server with an in-memory handler ----

/// One accepted message and the connection facts at its end.
#[derive(Debug, Clone)]
pub struct Received {
    pub content: Vec<u8>,
    pub tls: Option<TlsInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct Inbox(pub Arc<Mutex<Vec<Received>>>);

impl Inbox {
    pub fn messages(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Debug)]
pub struct InboxSession {
    inbox: Inbox,
    content: Vec<u8>,
}

impl ServerHandler for Inbox {
    type Session = InboxSession;
    fn open(&self, _: &ConnectionInfo) -> InboxSession {
        InboxSession {
            inbox: self.clone(),
            content: Vec::new(),
        }
    }
}

impl SessionHandler for InboxSession {
    async fn rcpt(&mut self, _: &ConnectionInfo, _: &ForwardPath, _: &RcptParams) -> Verdict {
        Verdict::Accept
    }
    async fn message_chunk(&mut self, _: &ConnectionInfo, chunk: Vec<u8>) {
        self.content.extend(chunk);
    }
    async fn message_end(&mut self, info: &ConnectionInfo, _: &DataSummary) -> Verdict {
        let content = std::mem::take(&mut self.content);
        self.inbox.0.lock().unwrap().push(Received {
            content,
            tls: info.tls.clone(),
        });
        Verdict::Accept
    }
    fn reset(&mut self) {
        self.content.clear();
    }
}

/// A running server; dropping `stop` shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    pub inbox: Inbox,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .expect("server task");
    }
}

/// Our server with `settings` on a loopback port.
pub async fn start_server(settings: ServerSettings) -> Running {
    let inbox = Inbox::default();
    let server = Server::new(settings, inbox.clone()).expect("valid settings");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        addr,
        inbox,
        stop: Some(stop),
        task,
    }
}

/// Settings for our server in `mode` with client certificates `client_cert`, serving the CA-signed certificate.
pub fn settings(mode: ServerTlsMode, client_cert: ClientCertMode) -> ServerSettings {
    let policy =
        ServerPolicy::new(mode, client_cert, TlsVersion::Tls12, Vec::new()).expect("valid policy");
    let tls =
        (mode != ServerTlsMode::None).then(|| server_tls(&fixtures().good, mode, client_cert));
    ServerSettings::new(MX, policy, tls)
}

// ---- a next hop with knobs, built on the server session ----

/// What the next hop does after its `220` to STARTTLS.
#[derive(Clone)]
pub enum AfterReady {
    /// A TLS handshake with this certificate.
    Handshake(Pem),
    /// Read the ClientHello, answer with bytes that are not TLS, close.
    Garbage,
}

#[derive(Clone)]
pub struct HopConfig {
    /// Advertise STARTTLS in EHLO.
    pub advertise_starttls: bool,
    /// Answer STARTTLS with this reply instead of `220`.
    pub starttls_reply: Option<&'static str>,
    pub after_ready: AfterReady,
    /// Bytes written in the same segment as the `220` to STARTTLS.
    pub inject_after_ready: Option<&'static [u8]>,
}

impl HopConfig {
    pub fn tls(cert: &Pem) -> Self {
        Self {
            advertise_starttls: true,
            starttls_reply: None,
            after_ready: AfterReady::Handshake(cert.clone()),
            inject_after_ready: None,
        }
    }
}

/// What the next hop saw.
#[derive(Debug, Default)]
pub struct HopLog {
    pub connections: usize,
    /// Every byte received before TLS, over all connections.
    pub plaintext: Vec<u8>,
    /// Messages accepted: (over TLS, content).
    pub messages: Vec<(bool, Vec<u8>)>,
}

pub struct Hop {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<HopLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hop {
    pub fn plaintext(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap().plaintext).into_owned()
    }
    pub fn messages(&self) -> Vec<(bool, Vec<u8>)> {
        self.log.lock().unwrap().messages.clone()
    }
    pub fn connections(&self) -> usize {
        self.log.lock().unwrap().connections
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub async fn start_hop(config: HopConfig) -> Hop {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(HopLog::default()));
    let shared = Arc::clone(&log);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            shared.lock().unwrap().connections += 1;
            let (config, log) = (config.clone(), Arc::clone(&shared));
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), hop_connection(tcp, config, log))
                        .await;
            });
        }
    });
    Hop { addr, log, task }
}

async fn hop_connection(tcp: tokio::net::TcpStream, config: HopConfig, log: Arc<Mutex<HopLog>>) {
    let mut cfg = ServerConfig::new("hop.example.org");
    cfg.starttls = if config.advertise_starttls {
        StartTlsPolicy::Offer
    } else {
        StartTlsPolicy::Disabled
    };
    // A next hop greets at once.
    cfg.greet_pause = Duration::ZERO;
    let mut session = ServerSession::new(cfg, Instant::now());
    let mut stream: Box<dyn Io> = Box::new(tcp);
    let mut tls = false;
    let mut content = Vec::new();
    let mut buf = vec![0u8; 16384];
    let mut held: Vec<u8> = Vec::new();
    loop {
        let mut starttls = false;
        while let Some(ev) = session.poll_event(Instant::now()) {
            match ev {
                ServerEvent::Hello { .. }
                | ServerEvent::Mail { .. }
                | ServerEvent::Rcpt { .. }
                | ServerEvent::Vrfy(_) => {
                    session.accept().unwrap();
                }
                ServerEvent::MessageChunk(c) => content.extend(c),
                ServerEvent::MessageEnd { .. } => {
                    log.lock()
                        .unwrap()
                        .messages
                        .push((tls, std::mem::take(&mut content)));
                    session.accept().unwrap();
                }
                ServerEvent::StartTls { .. } => starttls = true,
                _ => {}
            }
        }
        let mut out = Vec::new();
        while let Some(b) = session.poll_transmit() {
            out.extend(b);
        }
        if starttls && let Some(extra) = config.inject_after_ready {
            out.extend_from_slice(extra);
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        if session.is_closed() {
            let _ = stream.shutdown().await;
            return;
        }
        if starttls {
            match &config.after_ready {
                AfterReady::Garbage => {
                    // Wait for the ClientHello, answer with something that is not TLS.
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(b"this is not a TLS record\r\n").await;
                    let _ = stream.shutdown().await;
                    return;
                }
                AfterReady::Handshake(pem) => {
                    let ctx = server_tls(pem, ServerTlsMode::Offer, ClientCertMode::None);
                    // The stream is the bare TcpStream here: nothing read ahead is carried into TLS.
                    let acceptor = tokio_rustls::TlsAcceptor::from(ctx.config());
                    match acceptor.accept(stream).await {
                        Ok(s) => {
                            stream = Box::new(s);
                            tls = true;
                            session.handle_tls_established().unwrap();
                        }
                        Err(_) => return,
                    }
                    continue;
                }
            }
        }
        if !held.is_empty() {
            let n = session.handle_input(&held);
            held.drain(..n);
            if n > 0 {
                continue;
            }
        }
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                session.handle_eof();
                continue;
            }
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        if !tls {
            log.lock().unwrap().plaintext.extend_from_slice(input);
            if let Some(reply) = config.starttls_reply
                && input.len() >= 10
                && input[..10].eq_ignore_ascii_case(b"STARTTLS\r\n")
            {
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                input = &input[10..];
            }
        }
        let taken = session.handle_input(input);
        held.extend_from_slice(&input[taken..]);
    }
}
