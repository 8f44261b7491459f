//! The client side: a thin tokio driver over [`postern_attempt::Attempt`], which makes every decision of a
//! delivery attempt. Here: the TCP connections, the timers, and the TLS handshake by tokio-rustls with a
//! postern-certs verifier built from the attempt's [`TlsParams`].

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use postern_attempt::{Attempt, Event, HandshakeResult, Step};
use postern_certs::{ClientTlsContext, ClientTlsSpec, DaneHook, TrustRoots};
use postern_policy::{
    ClientTlsMode, ConnectionPolicy, Decision, DomainName, EnhancedStatus, NextHop, OutboundPolicy,
    PeerTrust,
};
use postern_smtp::{ClientConfig, Envelope, ForwardPath};
use rustls::RootCertStore;
use rustls::pki_types::{ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use postern_attempt::{DeliveryFailure, DeliveryResult, TlsParams, TlsSummary};

use crate::stream::{Stream, negotiated, postfix_cipher};

mod connection;

pub use connection::{ClientConnection, ClientConnectionError};

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;

/// Client settings.
///
/// Default: the engine's default [`ClientConfig`] (EHLO name `localhost`, RFC 5321 section 4.5.3.2 reply
/// deadlines: 300 s per reply, 600 s after the content), a 30 s connect timeout (Postfix
/// `smtp_connect_timeout`) and a 60 s TLS handshake timeout.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientSettings {
    /// Engine settings: EHLO name, pipelining, reply deadlines (the per-phase timeouts), what to do with bytes
    /// after the `220` to STARTTLS ([`postern_smtp::AfterStartTls`]). `require_tls` is set from the policy.
    pub smtp: ClientConfig,
    /// Time allowed to open the TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            smtp: ClientConfig::default(),
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(60),
        }
    }
}

impl ClientSettings {
    /// Settings with this EHLO name, defaults otherwise.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            smtp: ClientConfig::new(hostname),
            ..Self::default()
        }
    }
}

/// Where a message goes: the next hop's addresses, tried in order, and the names that policy and certificate
/// checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Destination {
    /// The addresses to try, in order (the A/AAAA records of the MX host, or a static route).
    pub addresses: Vec<SocketAddr>,
    /// The next hop: the destination domain (per-domain policy, `secure` matching), or `[host]:port`.
    pub next_hop: NextHop,
    /// The MX host name: sent as SNI and matched by `verify`. `None` for a static route.
    pub mx_host: Option<DomainName>,
}

impl Destination {
    /// A destination.
    pub fn new(addresses: Vec<SocketAddr>, next_hop: NextHop, mx_host: Option<DomainName>) -> Self {
        Self {
            addresses,
            next_hop,
            mx_host,
        }
    }
}

/// Delivers messages to next hops. Cheap to share: wrap in an `Arc` or clone the TLS context's `Arc`.
pub struct Client {
    settings: ClientSettings,
    tls: Arc<ClientTlsContext>,
    anchors: Mutex<HashMap<String, Arc<RootCertStore>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.settings)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// How the last handshake went, for its log line: the trust reached and what follows `established to
/// host[ip]:port: ` (version, cipher, key exchange, the server certificate), or the error.
type Handshaken = Result<(PeerTrust, String), String>;

/// When the parts of one attempt at one address ended, for [`DeliveryResult::connection_setup`] and
/// [`DeliveryResult::tls_handshake`].
#[derive(Debug, Clone)]
struct Timing {
    started: Instant,
    setup: Option<Duration>,
    handshake: Option<Duration>,
    /// Why the last handshake failed, in the TLS library's words.
    tls_error: Option<String>,
}

impl Client {
    /// A client with these settings, using `tls` (trust anchors, client certificate, session caches).
    pub fn new(settings: ClientSettings, tls: Arc<ClientTlsContext>) -> Self {
        Self {
            settings,
            tls,
            anchors: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Deliver `message` for `envelope` to `destination` under `policy` (its per-domain override or default
    /// applies).
    pub async fn deliver(
        &self,
        destination: &Destination,
        envelope: &Envelope,
        message: &[u8],
        policy: &OutboundPolicy,
    ) -> DeliveryResult {
        let conn_policy = policy.connection(&destination.next_hop, destination.mx_host.as_ref());
        self.deliver_with(destination, &conn_policy, envelope, message)
            .await
    }

    /// As [`deliver`](Self::deliver), with a connection policy already built (for callers adding DANE, MTA-STS
    /// or the message's REQUIRETLS to it). Each address gets one [`Attempt`] until one hands the message
    /// over or fails permanently; else the most telling failure is kept.
    pub async fn deliver_with(
        &self,
        destination: &Destination,
        policy: &ConnectionPolicy,
        envelope: &Envelope,
        message: &[u8],
    ) -> DeliveryResult {
        self.deliver_reusing(destination, policy, envelope, message, None, false)
            .await
            .0
    }

    /// As [`deliver_with`](Self::deliver_with), with connection reuse (Postfix's connection cache). `idle`, a
    /// connection kept from an earlier delivery, carries the message if it [serves](IdleConnection::serves)
    /// this destination under this very policy and is still open; else (or if it dies before the message is
    /// handed over) a new connection is opened, as without it. With `keep_open`, the connection is kept after
    /// a completed transaction and returned for the next message; the caller ends it with
    /// [`IdleConnection::quit`] when it has no more.
    pub async fn deliver_reusing(
        &self,
        destination: &Destination,
        policy: &ConnectionPolicy,
        envelope: &Envelope,
        message: &[u8],
        idle: Option<IdleConnection>,
        keep_open: bool,
    ) -> (DeliveryResult, Option<IdleConnection>) {
        if let Some(done) = Attempt::before_connect(policy, envelope) {
            if let Some(idle) = idle {
                idle.quit().await;
            }
            return (DeliveryResult::from_done(done, None), None);
        }
        let recipients: Vec<ForwardPath> =
            envelope.recipients.iter().map(|(r, _)| r.clone()).collect();
        if let Some(mut idle) = idle {
            if idle.serves(destination, policy)
                && idle.is_open().await
                && idle
                    .attempt
                    .next_message(policy, envelope.clone(), message.to_vec())
                    .is_ok()
            {
                let IdleConnection {
                    attempt,
                    conn,
                    addr,
                    opened,
                    ..
                } = idle;
                let (result, handed_over, kept) = self
                    .drive(addr, attempt, Some(conn), &recipients, false)
                    .await;
                if handed_over {
                    return (result, kept.map(|k| k.opened_at(opened)));
                }
                // Closed by the next hop while idle: the message goes on a new connection.
                tracing::debug!(server = %addr, "reused connection lost before the message was handed over");
            } else {
                idle.quit().await;
            }
        }
        let mut last: Option<DeliveryResult> = None;
        for &addr in &destination.addresses {
            let mut attempt = Attempt::new(
                policy.clone(),
                self.settings.smtp.clone(),
                envelope.clone(),
                message.to_vec(),
                Instant::now(),
            );
            if keep_open {
                attempt = attempt.keep_open();
            }
            let (result, handed_over, kept) =
                self.drive(addr, attempt, None, &recipients, false).await;
            let Some(f) = result.failure.as_ref().filter(|_| !handed_over) else {
                return (result, kept);
            };
            // The caller logs the outcome: one line per failed attempt.
            tracing::debug!(server = %addr, failure = %f, "delivery attempt failed");
            if f.permanent {
                return (result, None);
            }
            DeliveryResult::keep_most_telling(&mut last, result);
        }
        let result = last.unwrap_or_else(|| {
            DeliveryResult::undelivered(
                &recipients,
                DeliveryFailure::local(EnhancedStatus::NO_ANSWER, "no address to connect to"),
                None,
            )
        });
        (result, None)
    }

    /// Probe `addr`: drive [`Attempt::probe`] under `policy` until TLS is up or refused, then QUIT; no MAIL is
    /// sent. The certificate is checked as `verify` would check it against the server name, recorded and never
    /// refused. The result's `facts` and `tls` say what the next hop offered.
    pub async fn probe(&self, addr: SocketAddr, policy: ConnectionPolicy) -> DeliveryResult {
        let attempt = Attempt::probe(policy, self.settings.smtp.clone(), Instant::now());
        self.drive(addr, attempt, None, &[], true).await.0
    }

    /// Drive one attempt at `addr`: on `conn` (a reused connection) or a new one (and the new plaintext one
    /// it may ask for) until Done. Returns the result, with its timings, whether the message was handed over,
    /// and the connection if the attempt keeps it open.
    async fn drive(
        &self,
        addr: SocketAddr,
        attempt: Attempt,
        conn: Option<Conn>,
        recipients: &[ForwardPath],
        probe: bool,
    ) -> (DeliveryResult, bool, Option<IdleConnection>) {
        let mut timing = Timing {
            started: Instant::now(),
            setup: None,
            handshake: None,
            tls_error: None,
        };
        let (mut result, handed_over, kept) = self
            .drive_timed(addr, attempt, conn, recipients, probe, &mut timing)
            .await;
        result.connection_setup = timing.setup;
        result.tls_handshake = timing.handshake;
        result.tls_error = timing.tls_error.take();
        (result, handed_over, kept)
    }

    async fn drive_timed(
        &self,
        addr: SocketAddr,
        mut attempt: Attempt,
        conn: Option<Conn>,
        recipients: &[ForwardPath],
        probe: bool,
        timing: &mut Timing,
    ) -> (DeliveryResult, bool, Option<IdleConnection>) {
        let undelivered = |f, decision, plaintext_retry| {
            let mut r = DeliveryResult::undelivered(recipients, f, Some(addr));
            (r.decision, r.plaintext_retry) = (decision, plaintext_retry);
            (r, false, None)
        };
        let mut conn = match conn {
            Some(conn) => conn,
            None => match self.connect(addr).await {
                Ok(conn) => conn,
                Err(f) => return undelivered(f, None, false),
            },
        };
        let server_name = attempt.server_name().to_owned();
        let mut handshaken = None;
        let mut last_decision: Option<Decision> = None;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            while let Some(event) = attempt.poll_event(Instant::now()) {
                match event {
                    Event::Transmit(bytes) if !conn.write(&bytes).await => attempt.handle_eof(),
                    Event::StartTls(params) => {
                        // RFC 3207 section 4: nothing received before the handshake is read as a reply; the
                        // attempt discards (or, with `AfterStartTls::Close`, aborts on) what is still held.
                        let held = std::mem::take(&mut conn.pending);
                        let _ = attempt.handle_input(&held);
                        if params.discarded > 0 {
                            tracing::warn!(server = %addr, discarded = params.discarded, "bytes after the 220 to STARTTLS discarded, never read as a reply");
                        }
                        let began = Instant::now();
                        let result = match self.handshake(&mut conn, &params, probe).await {
                            Ok((result, note)) => {
                                match &note {
                                    Ok(_) => timing.handshake = Some(began.elapsed()),
                                    Err(e) => timing.tls_error = Some(e.clone()),
                                }
                                handshaken = Some(note);
                                result
                            }
                            Err(f) => return undelivered(f, last_decision, false),
                        };
                        if attempt.handle_tls(result).is_err() {
                            attempt.handle_eof();
                        }
                    }
                    Event::Decided { step, decision } => {
                        timing.setup = Some(timing.started.elapsed());
                        log_decision(addr, &server_name, &step, &decision, handshaken.take());
                        last_decision = Some(decision);
                    }
                    Event::RetryPlaintext(_) => {
                        tracing::info!(server = %addr, "retrying on a new plaintext connection");
                        // The failed handshake is not why a later failure happened.
                        timing.tls_error = None;
                        conn.shutdown().await;
                        conn = match self.connect(addr).await {
                            Ok(conn) => conn,
                            Err(f) => return undelivered(f, None, true),
                        };
                        attempt.handle_reconnected(Instant::now());
                    }
                    Event::Done(done) => {
                        let handed_over = done.handed_over;
                        let kept = if done.connection_open && conn.pending.is_empty() {
                            Some(IdleConnection {
                                attempt,
                                conn,
                                addr,
                                opened: Instant::now(),
                                idle_since: Instant::now(),
                            })
                        } else {
                            // Bytes the next hop sent unasked after the transaction: not a connection to reuse.
                            if let Some(quit) = attempt.quit() {
                                let _ = conn.write(&quit).await;
                            }
                            conn.shutdown().await;
                            None
                        };
                        return (
                            DeliveryResult::from_done(*done, Some(addr)),
                            handed_over,
                            kept,
                        );
                    }
                    _ => {}
                }
            }
            if !conn.pending.is_empty() {
                let taken = attempt.handle_input(&conn.pending);
                conn.pending.drain(..taken);
                if taken == 0 {
                    // After its events are drained the session has room for at least a reply line; should it
                    // not, give up rather than buffer without bound.
                    tracing::error!(held = conn.pending.len(), "session takes no input");
                    attempt.handle_eof();
                }
                continue;
            }
            match conn.wait(&mut buf, attempt.poll_timeout()).await {
                Input::Data(n) => {
                    let taken = attempt.handle_input(&buf[..n]);
                    conn.pending.extend_from_slice(&buf[taken..n]);
                }
                Input::Eof => attempt.handle_eof(),
                Input::Timeout => attempt.handle_timeout(Instant::now()),
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, DeliveryFailure> {
        Conn::open(addr, &self.settings).await.map_err(|e| {
            let e = match e.kind() {
                std::io::ErrorKind::TimedOut => "timed out".to_owned(),
                _ => e.to_string(),
            };
            DeliveryFailure::local(
                EnhancedStatus::NO_ANSWER,
                &format!("connect to {addr}: {e}"),
            )
        })
    }

    /// The TLS settings of the attempt's parameters (a field-by-field copy), and the trust anchors file.
    async fn tls_spec(
        &self,
        params: &TlsParams,
        probe: bool,
    ) -> Result<ClientTlsSpec, DeliveryFailure> {
        if probe {
            let mut spec = ClientTlsSpec::new(ClientTlsMode::Verify, params.server_name.clone());
            spec.dangerous_report_only = true;
            return Ok(spec);
        }
        self.handshake_spec(params).await
    }

    /// The TLS settings of a handshake with these parameters (a field-by-field copy; the trust anchors file
    /// read once and kept): what [`deliver`](Self::deliver) builds its verifier from, for callers that judge a
    /// chain as a policy would (a probe).
    pub async fn handshake_spec(
        &self,
        params: &TlsParams,
    ) -> Result<ClientTlsSpec, DeliveryFailure> {
        let mut spec = ClientTlsSpec::new(params.mode, params.server_name.clone());
        spec.match_names.clone_from(&params.match_names);
        spec.pins.clone_from(&params.pins);
        spec.min_version = params.min_version;
        spec.dangerous_report_only = params.dangerous_report_only;
        if let Some((records, names)) = &params.dane {
            spec.hook = Some(Arc::new(DaneHook::new(records.clone(), names.clone())));
        }
        if let Some(path) = &params.trust_anchors {
            spec.roots = Some(self.anchors(path).await?);
        }
        Ok(spec)
    }

    /// The trust anchors of a PEM file, loaded once.
    async fn anchors(&self, path: &str) -> Result<Arc<RootCertStore>, DeliveryFailure> {
        let cached = self
            .anchors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned();
        if let Some(r) = cached {
            return Ok(r);
        }
        let fail = |e: String| {
            DeliveryFailure::local(
                EnhancedStatus::CRYPTO_FAILURE,
                &format!("trust anchors {path}: {e}"),
            )
        };
        // Off the runtime's threads, as `tokio::fs` would do (without needing its `fs` feature).
        let owned = path.to_owned();
        let pem = tokio::task::spawn_blocking(move || std::fs::read(owned))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let mut roots = TrustRoots::empty();
        roots.add_pem(&pem).map_err(|e| fail(e.to_string()))?;
        let store = roots.into_store();
        self.anchors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// The handshake the attempt asked for, and a note for its log line. `Err`: a local problem
    /// (configuration), which ends the attempt at this address.
    async fn handshake(
        &self,
        conn: &mut Conn,
        params: &TlsParams,
        probe: bool,
    ) -> Result<(HandshakeResult, Handshaken), DeliveryFailure> {
        let spec = self.tls_spec(params, probe).await?;
        let tls_conn = self.tls.connection(&spec).map_err(|e| {
            DeliveryFailure::local(
                EnhancedStatus::CRYPTO_FAILURE,
                &format!("TLS configuration: {e}"),
            )
        })?;
        if !matches!(conn.stream, Stream::Plain(_)) {
            return Err(DeliveryFailure::local(
                EnhancedStatus::BAD_CONNECTION,
                "connection not in plaintext",
            ));
        }
        let connect = conn.tls_connect(
            Arc::clone(&tls_conn.config),
            tls_conn.server_name.clone(),
            self.settings.handshake_timeout,
        );
        Ok(match connect.await {
            Ok(c) => {
                let (version, cipher) = negotiated(c);
                let certificate =
                    tls_conn.certificate_check(c.peer_certificates(), UnixTime::now());
                let mut details = format!("{version} with cipher {}", postfix_cipher(c));
                if let Some(leaf) = c.peer_certificates().and_then(|chain| chain.first()) {
                    details.push_str(&peer_certificate(leaf, params, certificate.failure));
                }
                let note = Ok((certificate.trust, details));
                (
                    HandshakeResult::Established {
                        version,
                        cipher,
                        certificate,
                        peer_certificates: c
                            .peer_certificates()
                            .map(|chain| chain.iter().map(|d| d.clone().into_owned()).collect())
                            .unwrap_or_default(),
                    },
                    note,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && e.get_ref().is_none() => (
                HandshakeResult::Failed { certificate: None },
                Err("timed out".into()),
            ),
            Err(e) => {
                let certificate = postern_certs::refused_check(&e).and_then(|c| c.failure);
                (
                    HandshakeResult::Failed { certificate },
                    Err(postern_certs::describe_tls_error(&e)),
                )
            }
        })
    }
}

/// What the TLS line says of the server certificate: its subject, DNS names and SHA-256 fingerprint; on a
/// name mismatch, the names that were expected.
fn peer_certificate(
    leaf: &rustls::pki_types::CertificateDer<'_>,
    params: &TlsParams,
    failure: Option<postern_policy::CertificateFailure>,
) -> String {
    let Ok(row) = postern_certs::inspect("peer", leaf, UnixTime::now()) else {
        return "; server certificate unreadable".to_owned();
    };
    let names: Vec<&str> = row
        .sans
        .iter()
        .map(|n| n.strip_prefix("DNS:").unwrap_or(n))
        .collect();
    let mut out = format!(
        "; server certificate subject=\"{}\", names={}, sha256={}",
        row.subject.replace('"', "'"),
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(",")
        },
        row.fingerprint
    );
    if failure == Some(postern_policy::CertificateFailure::HostMismatch) {
        let mut expected = vec![params.server_name.as_str()];
        expected.extend(params.match_names.iter().map(String::as_str));
        out.push_str(&format!(
            "; name mismatch: expected {}, the certificate has {}",
            expected.join(" or "),
            if names.is_empty() {
                "no DNS name".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    out
}

/// The log line of a policy decision, as the relay's operators know them.
fn log_decision(
    addr: SocketAddr,
    server_name: &str,
    step: &Step,
    decision: &Decision,
    handshaken: Option<Handshaken>,
) {
    let (ip, port) = (addr.ip(), addr.port());
    match (step, handshaken) {
        (Step::StartTlsRefused(reply), _) => {
            // In the failure or the plaintext delivery the caller logs.
            tracing::debug!(server = %addr, reply = %reply, decision = %decision, "STARTTLS refused");
        }
        (Step::BytesAfterStartTls { discarded }, _) => {
            tracing::warn!(server = %addr, discarded, decision = %decision, "bytes after the 220 to STARTTLS: connection aborted");
        }
        (Step::Handshake, Some(Ok((trust, details)))) => {
            // Postfix's summary line (smtp_tls_loglevel = 1), with the server certificate.
            tracing::info!(
                "{trust} TLS connection established to {server_name}[{ip}]:{port}: {details}"
            );
        }
        (Step::Handshake, Some(Err(error))) => {
            // The error goes into the failure the caller logs (one line per failed attempt).
            tracing::debug!(server = %addr, error = %error, decision = %decision, "TLS handshake failed with {server_name}[{ip}]:{port}");
        }
        _ => tracing::debug!(server = %addr, decision = %decision, "after EHLO"),
    }
}

/// One outbound connection: the socket, and bytes read but not yet taken. Both drivers (the attempt's and
/// [`ClientConnection`]) move their bytes through it.
struct Conn {
    stream: Stream<TlsStream<TcpStream>>,
    pending: Vec<u8>,
    /// Writes may block on a server that does not read: bounded by the data-phase deadline.
    write_limit: Duration,
}

/// A connection kept open after a delivery, idle at the decision point, for the next message to the same next
/// hop under the same policy (connection reuse, Postfix's connection cache). Hand it to
/// [`Client::deliver_reusing`], or end it with [`quit`](Self::quit); dropping it closes the socket without
/// `QUIT`.
pub struct IdleConnection {
    attempt: Attempt,
    conn: Conn,
    addr: SocketAddr,
    opened: Instant,
    idle_since: Instant,
}

impl fmt::Debug for IdleConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleConnection")
            .field("server", &self.addr)
            .field("server_name", &self.attempt.server_name())
            .field("uses", &self.attempt.connection_use())
            .finish_non_exhaustive()
    }
}

impl IdleConnection {
    /// The address it is connected to.
    pub fn server(&self) -> SocketAddr {
        self.addr
    }

    /// The connection policy it was opened and judged under.
    pub fn policy(&self) -> &ConnectionPolicy {
        self.attempt.policy()
    }

    /// The messages it has carried.
    pub fn uses(&self) -> u32 {
        self.attempt.connection_use()
    }

    /// When it was opened (before its first message).
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Since when it has been idle.
    pub fn idle_since(&self) -> Instant {
        self.idle_since
    }

    /// Whether it can carry a message for `destination` under `policy`: connected to one of its addresses,
    /// and opened under this very policy.
    pub fn serves(&self, destination: &Destination, policy: &ConnectionPolicy) -> bool {
        destination.addresses.contains(&self.addr) && self.attempt.policy() == policy
    }

    /// Sends `QUIT` and closes the connection, giving it a second.
    pub async fn quit(mut self) {
        if let Some(quit) = self.attempt.quit() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.conn.write(&quit)).await;
        }
        self.conn.shutdown().await;
    }

    /// A connection kept again after another message keeps its first opening time.
    fn opened_at(mut self, opened: Instant) -> Self {
        self.opened = opened;
        self
    }

    /// Whether the next hop has said nothing since (an idle server that closes, or sends `421`, is not used
    /// again). Looks without waiting.
    async fn is_open(&mut self) -> bool {
        let mut byte = [0u8; 1];
        // Polled once: ready means the next hop closed or spoke unasked; pending means quiet and open.
        tokio::time::timeout(Duration::ZERO, self.conn.stream.read(&mut byte))
            .await
            .is_err()
            && self.attempt.is_idle()
    }
}

/// What a wait for input brought.
enum Input {
    /// This many bytes in the read buffer.
    Data(usize),
    /// The peer closed, or the read failed.
    Eof,
    /// The deadline passed.
    Timeout,
}

impl Conn {
    fn new(tcp: TcpStream, settings: &ClientSettings) -> Self {
        Self {
            stream: Stream::Plain(tcp),
            pending: Vec::new(),
            write_limit: settings.smtp.timeouts.data,
        }
    }

    /// Connect within the settings' connect timeout (`TimedOut` past it).
    async fn open(addr: SocketAddr, settings: &ClientSettings) -> std::io::Result<Self> {
        let tcp = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let _ = tcp.set_nodelay(true);
        Ok(Self::new(tcp, settings))
    }

    /// Write and flush `bytes` within the write limit; false when that failed.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        matches!(
            tokio::time::timeout(self.write_limit, write).await,
            Ok(Ok(()))
        )
    }

    /// Read into `buf` until data, the end of the connection or `deadline`.
    async fn wait(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> Input {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        // The socket first: a reply already there costs no timer. (No `tokio::select!`: it needs tokio's
        // `macros` feature.)
        let mut sleep = pin!(sleep);
        let mut read = pin!(self.stream.read(buf));
        poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(match r {
                    Ok(0) | Err(_) => Input::Eof,
                    Ok(n) => Input::Data(n),
                });
            }
            sleep.as_mut().poll(cx).map(|()| Input::Timeout)
        })
        .await
    }

    /// Run the TLS handshake on the plaintext socket within `limit` (a bare `TimedOut` past it); the socket is
    /// gone if it fails.
    async fn tls_connect(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        limit: Duration,
    ) -> std::io::Result<&rustls::ClientConnection> {
        let tcp = self
            .stream
            .take_plain()
            .ok_or_else(|| std::io::Error::other("connection not in plaintext"))?;
        let connect = TlsConnector::from(config).connect(server_name, tcp);
        let tls = tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        self.stream = Stream::Tls(Box::new(tls));
        match &self.stream {
            Stream::Tls(tls) => Ok(tls.get_ref().1),
            _ => Err(std::io::Error::other("connection not in tls")),
        }
    }

    /// Shut the socket down, giving it a second.
    async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}
