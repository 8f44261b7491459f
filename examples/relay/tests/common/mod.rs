//! Test fixtures: certificates (rcgen, P-256), a relay started in process,
//! a scripted next hop that misbehaves on demand, lettre transports, and a
//! helper that waits for the spool to reach a state.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::{
    Certificate, CertificateStore, Identity, Tls, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, Message, Tokio1Executor};
use postern_relay::config::Config;
use postern_relay::queue::spool::{Scan, Spool};
use postern_relay::relay::Relay;
#[allow(unused_imports)] // each test binary uses its own part of them
pub use postern_test_support::{Ca, Pem, self_signed};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The relay's host name in tests.
pub const RELAY: &str = "relay.test";

/// The shared test CA.
pub fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::new("Postern Test CA"))
}

/// A rustls server configuration serving `pem`.
pub fn rustls_server(pem: &Pem) -> Arc<rustls::ServerConfig> {
    let chain = vec![CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(postern_certs::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

// ---- the relay in process ----

/// Starts a relay on a free loopback port with `toml` (state dir inside
/// `dir`; the Default Cert is RSA 2048 unless the text sets it).
pub async fn start_relay(dir: &Path, toml: &str) -> Relay {
    Relay::start(relay_config(dir, toml)).await.unwrap()
}

/// The configuration [`start_relay`] starts with.
pub fn relay_config(dir: &Path, toml: &str) -> Config {
    let mut text = format!(
        "hostname = \"{RELAY}\"\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n",
        dir.join("state").display()
    );
    text.push_str(toml);
    if !toml.contains("[certificates]") {
        text.push_str("\n[certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\n");
    }
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The spool of a relay started with [`start_relay`] in `dir`.
pub fn scan(dir: &Path) -> Scan {
    Spool::scan(&dir.join("state/spool")).unwrap()
}

/// Waits until `done(scan)` holds, or panics after `limit`.
pub async fn wait_for(
    dir: &Path,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&Scan) -> bool,
) -> Scan {
    let start = Instant::now();
    loop {
        let s = scan(dir);
        if done(&s) {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}; queue: {:#?}",
            s.messages.iter().map(|m| &m.envelope).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- lettre ----

/// How lettre connects.
#[derive(Clone, Copy, Debug)]
pub enum Submit<'a> {
    /// No TLS.
    Plain,
    /// STARTTLS required (server certificate checked against the test CA for `relay.test`), with this client
    /// certificate if any.
    StartTls(Option<&'a Pem>),
}

pub fn transport(addr: SocketAddr, mode: Submit<'_>) -> AsyncSmtpTransport<Tokio1Executor> {
    let tls = match mode {
        Submit::Plain => Tls::None,
        Submit::StartTls(identity) => {
            let mut b = TlsParameters::builder(RELAY.into())
                .certificate_store(CertificateStore::None)
                .add_root_certificate(Certificate::from_pem(ca().cert_pem.as_bytes()).unwrap());
            if let Some(p) = identity {
                // lettre 0.11 with rustls takes the certificate of `Identity::from_pem` as DER.
                let der = CertificateDer::from_pem_slice(p.cert.as_bytes()).unwrap();
                b = b.identify_with(Identity::from_pem(&der, p.key.as_bytes()).unwrap());
            }
            Tls::Required(b.build_rustls().unwrap())
        }
    };
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .hello_name(ClientId::Domain("client.test".into()))
        .timeout(Some(Duration::from_secs(10)))
        .tls(tls)
        .build()
}

/// A message from alice@client.test to `to`, with `subject`.
pub fn message(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("alice@client.test".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(format!("Body of {subject}\r\n"))
        .unwrap()
}

/// Imports a CA-signed certificate for `relay.test` into the relay's state
/// dir before it starts, so lettre can verify it.
pub fn give_relay_ca_cert(dir: &Path) {
    let pem = ca().leaf(&[RELAY], false, -1, 90);
    postern_relay::tls::certs::CertDir::new(dir.join("state/certs"))
        .import(
            "relay",
            pem.cert.as_bytes(),
            pem.key.as_bytes(),
            rustls::pki_types::UnixTime::now(),
            false,
        )
        .unwrap();
}

// ---- a scripted next hop ----

/// What the next hop does about STARTTLS.
#[derive(Clone)]
pub enum Hop {
    /// Does not offer STARTTLS.
    NoStartTls,
    /// Offers it and answers STARTTLS with this reply line.
    Refuse(&'static str),
    /// Answers 220, then sends garbage instead of a handshake.
    BreakHandshake,
    /// Offers STARTTLS with this certificate.
    Tls(Arc<rustls::ServerConfig>),
    /// Offers STARTTLS, sends a forged reply right after its `220` (in the same segment), then handshakes.
    Inject(Arc<rustls::ServerConfig>),
}

/// One message a next hop accepted.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub recipients: Vec<String>,
    pub tls: bool,
    pub content: Vec<u8>,
}

/// What a next hop saw.
#[derive(Debug, Default)]
pub struct HopLog {
    pub connections: usize,
    /// MAIL commands received before TLS.
    pub plaintext_mail: usize,
    /// MAIL commands received, before or after TLS.
    pub mail: usize,
    /// STARTTLS commands received.
    pub starttls: usize,
    /// The names given in EHLO, in order.
    pub ehlo: Vec<String>,
    pub delivered: Vec<Delivered>,
}

/// A running next hop.
#[derive(Clone)]
pub struct NextHop {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<HopLog>>,
}

impl NextHop {
    pub fn delivered_to(&self, rcpt: &str) -> Vec<Delivered> {
        self.log
            .lock()
            .unwrap()
            .delivered
            .iter()
            .filter(|d| d.recipients.iter().any(|r| r == rcpt))
            .cloned()
            .collect()
    }
}

/// Starts a next hop behaving as `hop`; `delay` is waited before the reply to the final dot.
pub async fn start_hop(hop: Hop, delay: Duration) -> NextHop {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(HopLog::default()));
    let l = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let hop = hop.clone();
            let log = Arc::clone(&l);
            tokio::spawn(async move {
                let _ = serve_hop(tcp, hop, log, delay).await;
            });
        }
    });
    NextHop { addr, log }
}

enum After<S> {
    Closed,
    StartTls(BufReader<S>),
}

async fn serve_hop(
    tcp: tokio::net::TcpStream,
    hop: Hop,
    log: Arc<Mutex<HopLog>>,
    delay: Duration,
) -> std::io::Result<()> {
    log.lock().unwrap().connections += 1;
    let mut io = BufReader::new(tcp);
    io.get_mut().write_all(b"220 hop.test ESMTP\r\n").await?;
    let After::StartTls(io) = session(io, false, &hop, &log, delay).await? else {
        return Ok(());
    };
    let mut tcp = io.into_inner();
    let config = match &hop {
        Hop::Tls(c) => Arc::clone(c),
        Hop::Inject(c) => {
            tcp.write_all(b"220 2.0.0 Ready to start TLS\r\n250-hop.test\r\n250 PIPELINING\r\n")
                .await?;
            Arc::clone(c)
        }
        Hop::BreakHandshake => {
            tcp.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
            tcp.write_all(b"this is not a TLS server hello\r\n").await?;
            tcp.shutdown().await?;
            return Ok(());
        }
        _ => return Ok(()),
    };
    if let Hop::Tls(_) = &hop {
        tcp.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
    }
    let tls = TlsAcceptor::from(config).accept(tcp).await?;
    let _ = session(BufReader::new(tls), true, &hop, &log, delay).await?;
    Ok(())
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: BufReader<S>,
    tls: bool,
    hop: &Hop,
    log: &Mutex<HopLog>,
    delay: Duration,
) -> std::io::Result<After<S>> {
    let mut rcpts = Vec::new();
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Ok(After::Closed);
        }
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            log.lock()
                .unwrap()
                .ehlo
                .push(line.get(5..).unwrap_or("").trim().to_owned());
            let starttls = !tls && !matches!(hop, Hop::NoStartTls);
            format!(
                "250-hop.test\r\n250-PIPELINING\r\n{}250 8BITMIME\r\n",
                if starttls { "250-STARTTLS\r\n" } else { "" }
            )
        } else if upper.starts_with("HELO") {
            "250 hop.test\r\n".into()
        } else if upper.starts_with("STARTTLS") {
            log.lock().unwrap().starttls += 1;
            match hop {
                Hop::Refuse(r) => format!("{r}\r\n"),
                Hop::NoStartTls => "502 5.5.1 Error: command not implemented\r\n".into(),
                // The reply and the handshake are the caller's.
                _ => return Ok(After::StartTls(io)),
            }
        } else if upper.starts_with("MAIL") {
            let mut log = log.lock().unwrap();
            log.mail += 1;
            if !tls {
                log.plaintext_mail += 1;
            }
            drop(log);
            rcpts.clear();
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT") {
            let addr = line
                .split('<')
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or("")
                .to_owned();
            rcpts.push(addr);
            "250 2.1.5 Ok\r\n".into()
        } else if upper.starts_with("DATA") {
            io.get_mut()
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut content = Vec::new();
            loop {
                let mut l = Vec::new();
                if io.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(After::Closed);
                }
                if l == b".\r\n" {
                    break;
                }
                content.extend_from_slice(&l);
            }
            tokio::time::sleep(delay).await;
            log.lock().unwrap().delivered.push(Delivered {
                recipients: std::mem::take(&mut rcpts),
                tls,
                content,
            });
            "250 2.0.0 Ok: queued\r\n".into()
        } else if upper.starts_with("QUIT") {
            io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(After::Closed);
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            "250 2.0.0 Ok\r\n".into()
        } else {
            "500 5.5.2 Error: command not recognized\r\n".into()
        };
        io.get_mut().write_all(reply.as_bytes()).await?;
    }
}

/// Reads everything a stream sends until EOF (for raw protocol checks).
pub async fn read_all<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

/// One whole SMTP reply (every line up to the one with a space after the code); panics if the server
/// closes first.
async fn reply<S: AsyncRead + Unpin>(io: &mut BufReader<S>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        assert!(
            io.read_line(&mut line).await.unwrap() > 0,
            "closed after {all:?}"
        );
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

/// Connects to an SMTP server, does STARTTLS with SNI `sni` (no certificate check) and returns the SHA-256
/// fingerprint of the certificate it served.
pub async fn served_fingerprint(addr: SocketAddr, sni: &str) -> String {
    use postern_certs::{ClientTlsContext, ClientTlsSpec, TrustRoots};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut io = BufReader::new(tcp);
    assert!(reply(&mut io).await.starts_with("220 "));
    io.get_mut()
        .write_all(b"EHLO probe.test\r\n")
        .await
        .unwrap();
    assert!(reply(&mut io).await.contains("STARTTLS"));
    io.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert!(reply(&mut io).await.starts_with("220 "));
    let ctx = ClientTlsContext::new(TrustRoots::empty().into_store());
    let conn = ctx
        .connection(&ClientTlsSpec::new(
            postern_policy::ClientTlsMode::Encrypt,
            sni,
        ))
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&conn.config))
        .connect(conn.server_name.clone(), io.into_inner())
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    postern_certs::Fingerprint::of(&leaf).to_string()
}

// ---- an MTA-STS policy host ----

/// What the policy host answers for one `mta-sts.<domain>`.
#[derive(Clone)]
pub enum Serve {
    Policy(&'static str),
    Status(&'static str),
    Redirect(&'static str),
}

/// Requests seen by the policy host, per Host header.
pub type Requests = Arc<Mutex<HashMap<String, usize>>>;

/// An HTTPS policy host on 127.0.0.1 answering by Host header (each
/// connection serves one request and closes).
pub async fn start_policy_host(pem: &Pem, serve: HashMap<String, Serve>) -> (u16, Requests) {
    let acceptor = TlsAcceptor::from(rustls_server(pem));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests: Requests = Arc::default();
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let serve = serve.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 512];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(
                    head.starts_with("get /.well-known/mta-sts.txt http/1.1\r\n"),
                    "{head}"
                );
                let host = head
                    .lines()
                    .find_map(|l| l.strip_prefix("host: "))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                *seen.lock().unwrap().entry(host.clone()).or_default() += 1;
                let response = match serve.get(&host) {
                    Some(Serve::Policy(body)) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ),
                    Some(Serve::Status(status)) => {
                        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n")
                    }
                    Some(Serve::Redirect(to)) => format!(
                        "HTTP/1.1 301 Moved Permanently\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n"
                    ),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
                };
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, requests)
}

/// An `enforce` policy listing `mx`, cached for a day.
pub fn enforce(mx: &str) -> String {
    format!("version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n")
}

// ---- a well-behaved next hop: postern-tokio's server ----

/// Records into a [`HopLog`].
#[derive(Clone)]
struct Recorder(Arc<Mutex<HopLog>>);

struct RecorderSession {
    log: Arc<Mutex<HopLog>>,
    rcpts: Vec<String>,
    content: Vec<u8>,
}

impl postern_tokio::server::ServerHandler for Recorder {
    type Session = RecorderSession;
    fn open(&self, _: &postern_tokio::server::ConnectionInfo) -> RecorderSession {
        self.0.lock().unwrap().connections += 1;
        RecorderSession {
            log: Arc::clone(&self.0),
            rcpts: Vec::new(),
            content: Vec::new(),
        }
    }
}

impl postern_tokio::server::SessionHandler for RecorderSession {
    async fn mail(
        &mut self,
        info: &postern_tokio::server::ConnectionInfo,
        _: &postern_smtp::ReversePath,
        _: &postern_smtp::MailParams,
    ) -> postern_tokio::server::Verdict {
        let mut log = self.log.lock().unwrap();
        log.mail += 1;
        if !info.tls_active() {
            log.plaintext_mail += 1;
        }
        postern_tokio::server::Verdict::Accept
    }
    async fn rcpt(
        &mut self,
        _: &postern_tokio::server::ConnectionInfo,
        to: &postern_smtp::ForwardPath,
        _: &postern_smtp::RcptParams,
    ) -> postern_tokio::server::Verdict {
        self.rcpts
            .push(to.to_string().trim_matches(['<', '>']).to_owned());
        postern_tokio::server::Verdict::Accept
    }
    async fn message_chunk(&mut self, _: &postern_tokio::server::ConnectionInfo, chunk: Vec<u8>) {
        self.content.extend(chunk);
    }
    async fn message_end(
        &mut self,
        info: &postern_tokio::server::ConnectionInfo,
        _: &postern_smtp::DataSummary,
    ) -> postern_tokio::server::Verdict {
        self.log.lock().unwrap().delivered.push(Delivered {
            recipients: std::mem::take(&mut self.rcpts),
            tls: info.tls_active(),
            content: std::mem::take(&mut self.content),
        });
        postern_tokio::server::Verdict::Accept
    }
    fn reset(&mut self) {
        self.rcpts.clear();
        self.content.clear();
    }
}

/// Starts a next hop on postern-tokio's server: STARTTLS offered with `cert` (and its chain), or not offered at
/// all (`None`).
pub async fn start_postern_hop(cert: Option<&Pem>) -> NextHop {
    start_postern_hop_at(cert, "127.0.0.1:0").await
}

/// [`start_postern_hop`] listening on `bind`.
pub async fn start_postern_hop_at(cert: Option<&Pem>, bind: &str) -> NextHop {
    use postern_certs::{
        CertKey, CertResolver, ServedCertificates, ServerTlsContext, ServerTlsSpec,
    };
    use postern_policy::{ClientCertMode, ServerPolicy, ServerTlsMode, TlsVersion};
    let (policy, tls) = match cert {
        Some(pem) => {
            let key = CertKey::from_pem(pem.chain_pem().as_bytes(), pem.key.as_bytes()).unwrap();
            let resolver = Arc::new(CertResolver::new(ServedCertificates::from_certs([&key])));
            (
                ServerPolicy::default(),
                Some(ServerTlsContext::new(&ServerTlsSpec::default(), resolver).unwrap()),
            )
        }
        None => (
            ServerPolicy::new(
                ServerTlsMode::None,
                ClientCertMode::None,
                TlsVersion::Tls12,
                Vec::new(),
            )
            .unwrap(),
            None,
        ),
    };
    let settings = postern_tokio::server::ServerSettings::new("hop.test", policy, tls);
    let log = Arc::new(Mutex::new(HopLog::default()));
    let server = postern_tokio::server::Server::new(settings, Recorder(Arc::clone(&log))).unwrap();
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    NextHop { addr, log }
}

/// Submits one message over STARTTLS with `MAIL FROM:<from> REQUIRETLS` (RFC 8689; lettre cannot send the
/// parameter). Returns the reply to the final dot.
pub async fn submit_requiretls(addr: SocketAddr, from: &str, to: &str, body: &str) -> String {
    use postern_certs::{ClientTlsContext, ClientTlsSpec, TrustRoots};
    let mut io = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    reply(&mut io).await;
    io.get_mut()
        .write_all(b"EHLO client.test\r\n")
        .await
        .unwrap();
    reply(&mut io).await;
    io.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert!(reply(&mut io).await.starts_with("220 "));
    let ctx = ClientTlsContext::new(TrustRoots::empty().into_store());
    let conn = ctx
        .connection(&ClientTlsSpec::new(
            postern_policy::ClientTlsMode::Encrypt,
            RELAY,
        ))
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&conn.config))
        .connect(conn.server_name.clone(), io.into_inner())
        .await
        .unwrap();
    let mut io = BufReader::new(tls);
    for cmd in [
        "EHLO client.test\r\n".to_owned(),
        format!("MAIL FROM:<{from}> REQUIRETLS\r\n"),
        format!("RCPT TO:<{to}>\r\n"),
        "DATA\r\n".to_owned(),
    ] {
        io.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        let r = reply(&mut io).await;
        assert!(r.starts_with('2') || r.starts_with("354"), "{r}");
    }
    io.get_mut()
        .write_all(format!("Subject: requiretls\r\n\r\n{body}\r\n.\r\n").as_bytes())
        .await
        .unwrap();
    let done = reply(&mut io).await;
    let _ = io.get_mut().write_all(b"QUIT\r\n").await;
    done
}

/// A PEM RSA private key (PKCS#8) of 2048 bits, for DKIM signing.
pub fn rsa_key_pem() -> String {
    use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
    use base64::Engine as _;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der: Pkcs8V1Der<'_> = key.as_der().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

/// Submits `content` (header and body, CRLF lines, no final dot) from `from` to `to` in plaintext, dot-stuffed
/// (for headers lettre cannot write, such as `TLS-Required` or many `Received` fields). Returns the reply to
/// the final dot.
pub async fn submit_raw(addr: SocketAddr, from: &str, to: &str, content: &str) -> String {
    let mut io = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    reply(&mut io).await;
    for cmd in [
        "EHLO client.test\r\n".to_owned(),
        format!("MAIL FROM:<{from}>\r\n"),
        format!("RCPT TO:<{to}>\r\n"),
        "DATA\r\n".to_owned(),
    ] {
        io.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        let r = reply(&mut io).await;
        assert!(r.starts_with('2') || r.starts_with("354"), "{r}");
    }
    let mut data = String::new();
    for line in content.split_inclusive("\r\n") {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
    }
    data.push_str(".\r\n");
    io.get_mut().write_all(data.as_bytes()).await.unwrap();
    let done = reply(&mut io).await;
    let _ = io.get_mut().write_all(b"QUIT\r\n").await;
    done
}

/// Stops a relay process with SIGTERM and waits (at most 40 s) for it to exit.
pub fn stop(mut child: std::process::Child) {
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
