//! The client side: deliver one message to a next hop over TCP, following postern-policy decisions at every
//! step (after EHLO, after the reply to STARTTLS, after the handshake, after the EHLO inside TLS), with the
//! handshake done by tokio-rustls and the certificate judged by a postern-certs verifier.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postern_certs::{ClientTlsContext, ClientTlsSpec, DaneHook, TrustRoots};
use postern_policy::{
    Action, Authentication, CertificateCheck, ClientTlsMode, Close, ConnectionPolicy, Decision,
    DomainName, EnhancedStatus, Failure, HandshakeOutcome, NamePattern, NextHop, OutboundPolicy,
    ResultType, TlsRequirement, TlsVersion,
};
use postern_smtp::{
    ClientCloseReason, ClientConfig, ClientEvent, ClientSession, Command, DeliveryStatus, Envelope,
    RecipientResult, Reply, SendError, TransactionReport,
};
use rustls::RootCertStore;
use rustls::pki_types::UnixTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::stream::{Stream, negotiated};

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
    /// after the `220` to STARTTLS ([`postern_smtp::AfterStartTls`]).
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

    /// The TLS server name: the MX host, else the next hop's host or domain.
    fn server_name(&self, policy: &ConnectionPolicy) -> String {
        if let Some(name) = policy.server_name() {
            return name.to_string();
        }
        match &self.next_hop {
            NextHop::HostPort { host, .. } => match host {
                postern_policy::Host::Name(name) => name.to_string(),
                postern_policy::Host::Address(ip) => ip.to_string(),
            },
            other => other
                .domain()
                .map_or_else(|| "localhost".to_owned(), ToString::to_string),
        }
    }
}

/// The TLS of the connection that carried (or refused) the message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSummary {
    /// The name sent as SNI and checked.
    pub server_name: String,
    /// The negotiated protocol version.
    pub version: TlsVersion,
    /// The negotiated cipher suite (e.g. `TLS13_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// How far the server certificate was trusted, and why not further.
    pub certificate: CertificateCheck,
    /// The policy's explanation of the decision after the handshake (rule, mode, action).
    pub explanation: String,
    /// Octets received after the `220` to STARTTLS and discarded before the handshake (never read as a
    /// reply; anything but 0 means a broken or malicious server or path).
    pub discarded_before_handshake: u64,
}

/// Why delivery to a next hop did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryFailure {
    /// The enhanced status code to record (our own 4.7.x for TLS policy failures).
    pub status: EnhancedStatus,
    /// The RFC 8460 result type, for TLS failures.
    pub result_type: Option<ResultType>,
    /// What happened, in a few words (with the policy rule when the policy decided).
    pub explanation: String,
    /// Whether the message must be returned (REQUIRETLS, message refused by size or extension) rather than
    /// retried.
    pub permanent: bool,
    /// The server's reply, when one decided.
    pub reply: Option<Reply>,
}

/// Keeps, across the addresses of one destination, the failure that tells the
/// operator most: a TLS policy failure (it has an RFC 8460 result type) over a
/// server's refusal, and either over an address that could not be reached. A
/// later failure of equal weight replaces an earlier one.
fn keep_most_telling(last: &mut Option<DeliveryResult>, next: DeliveryResult) {
    fn weight(r: &DeliveryResult) -> u8 {
        match &r.failure {
            Some(f) if f.result_type.is_some() => 2,
            Some(f) if f.reply.is_some() => 1,
            _ => 0,
        }
    }
    if last.as_ref().is_none_or(|l| weight(&next) >= weight(l)) {
        *last = Some(next);
    }
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(rt) = self.result_type {
            write!(f, " {rt}")?;
        }
        write!(f, ": {}", self.explanation)?;
        if let Some(r) = &self.reply {
            write!(f, " (server said: {r})")?;
        }
        Ok(())
    }
}

/// The outcome of [`Client::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryResult {
    /// Per recipient, in envelope order: delivered, deferred (retry) or failed (bounce), with the deciding reply.
    pub recipients: Vec<RecipientResult>,
    /// The address that produced this outcome (the last one tried).
    pub server: Option<SocketAddr>,
    /// TLS of that connection, if TLS was established.
    pub tls: Option<TlsSummary>,
    /// The last policy decision taken on that connection (its `Display` names the rule that applied).
    pub decision: Option<Decision>,
    /// Why the message was not handed over, when it was not.
    pub failure: Option<DeliveryFailure>,
    /// The message went over a new plaintext connection after a failed handshake (opportunistic TLS).
    pub plaintext_retry: bool,
}

impl DeliveryResult {
    /// Whether every recipient was delivered.
    pub fn all_delivered(&self) -> bool {
        !self.recipients.is_empty()
            && self
                .recipients
                .iter()
                .all(|r| r.status == DeliveryStatus::Delivered)
    }

    /// Whether no recipient was delivered and at least one is to be retried.
    pub fn is_deferred(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.status != DeliveryStatus::Delivered)
            && self
                .recipients
                .iter()
                .any(|r| r.status == DeliveryStatus::Deferred)
    }

    fn undelivered(
        envelope: &Envelope,
        status: DeliveryStatus,
        failure: DeliveryFailure,
        server: Option<SocketAddr>,
    ) -> Self {
        let recipients = envelope
            .recipients
            .iter()
            .map(|(r, _)| RecipientResult {
                recipient: r.clone(),
                status,
                reply: failure.reply.clone(),
            })
            .collect();
        Self {
            recipients,
            server,
            tls: None,
            decision: None,
            failure: Some(failure),
            plaintext_retry: false,
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

/// How one connection attempt ended.
enum Outcome {
    /// The transaction ran: recipients were decided by the server's replies.
    Done(TransactionReport),
    /// The policy asks for a new plaintext connection (opportunistic TLS after a failed handshake).
    Retry,
    /// This host failed.
    Failed(DeliveryFailure),
}

/// What one connection attempt learnt.
struct Attempt {
    outcome: Outcome,
    tls: Option<TlsSummary>,
    decision: Option<Decision>,
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
    /// or the message's REQUIRETLS to it).
    pub async fn deliver_with(
        &self,
        destination: &Destination,
        policy: &ConnectionPolicy,
        envelope: &Envelope,
        message: &[u8],
    ) -> DeliveryResult {
        let before = policy.before_connect();
        if let Some(f) = before.action.failure() {
            let status = if matches!(before.action, Action::Bounce(_)) {
                DeliveryStatus::Failed
            } else {
                DeliveryStatus::Deferred
            };
            let mut r =
                DeliveryResult::undelivered(envelope, status, policy_failure(f, &before), None);
            r.decision = Some(before);
            return r;
        }
        let mut last: Option<DeliveryResult> = None;
        for &addr in &destination.addresses {
            let mut attempt = self
                .attempt(addr, destination, policy, envelope, message, false)
                .await;
            let mut retried = false;
            if matches!(attempt.outcome, Outcome::Retry) {
                tracing::info!(server = %addr, "retrying on a new plaintext connection");
                attempt = self
                    .attempt(addr, destination, policy, envelope, message, true)
                    .await;
                retried = true;
            }
            let Attempt {
                outcome,
                tls,
                decision,
            } = attempt;
            match outcome {
                Outcome::Done(report) => {
                    let failure = report
                        .data_reply
                        .as_ref()
                        .or(report.mail_reply.as_ref())
                        .filter(|r| !r.code().is_positive())
                        .map(|r| reply_failure(r, "message refused"));
                    return DeliveryResult {
                        recipients: report.recipients,
                        server: Some(addr),
                        tls,
                        decision,
                        failure,
                        plaintext_retry: retried,
                    };
                }
                Outcome::Failed(f) => {
                    tracing::info!(server = %addr, failure = %f, "delivery attempt failed");
                    let status = if f.permanent {
                        DeliveryStatus::Failed
                    } else {
                        DeliveryStatus::Deferred
                    };
                    let permanent = f.permanent;
                    let mut r = DeliveryResult::undelivered(envelope, status, f, Some(addr));
                    r.tls = tls;
                    r.decision = decision;
                    r.plaintext_retry = retried;
                    if permanent {
                        return r;
                    }
                    keep_most_telling(&mut last, r);
                }
                // Only a plaintext-only attempt follows a retry, and it never asks for another.
                Outcome::Retry => {
                    let f = local_failure((4, 4, 2), "plaintext retry asked twice");
                    keep_most_telling(
                        &mut last,
                        DeliveryResult::undelivered(
                            envelope,
                            DeliveryStatus::Deferred,
                            f,
                            Some(addr),
                        ),
                    );
                }
            }
        }
        last.unwrap_or_else(|| {
            DeliveryResult::undelivered(
                envelope,
                DeliveryStatus::Deferred,
                local_failure((4, 4, 1), "no address to connect to"),
                None,
            )
        })
    }

    /// One connection to `addr`. `plaintext_only`: the retry after a failed handshake, where STARTTLS is not
    /// tried again.
    async fn attempt(
        &self,
        addr: SocketAddr,
        destination: &Destination,
        policy: &ConnectionPolicy,
        envelope: &Envelope,
        message: &[u8],
        plaintext_only: bool,
    ) -> Attempt {
        let mut att = Attempt {
            outcome: Outcome::Retry,
            tls: None,
            decision: None,
        };
        let tcp =
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    att.outcome = Outcome::Failed(local_failure(
                        (4, 4, 1),
                        &format!("connect to {addr}: {e}"),
                    ));
                    return att;
                }
                Err(_) => {
                    att.outcome = Outcome::Failed(local_failure(
                        (4, 4, 1),
                        &format!("connect to {addr}: timed out"),
                    ));
                    return att;
                }
            };
        let _ = tcp.set_nodelay(true);
        let server_name = destination.server_name(policy);
        let mut conn = Conn {
            session: ClientSession::new(self.settings.smtp.clone(), Instant::now()),
            stream: Stream::Plain(tcp),
            pending: Vec::new(),
            write_limit: self.settings.smtp.timeouts.data,
        };
        let mut report: Option<TransactionReport> = None;
        let mut failure: Option<DeliveryFailure> = None;
        loop {
            match conn.next_event().await {
                ClientEvent::Ready {
                    capabilities,
                    tls_active,
                    ..
                } => {
                    let decision = if tls_active {
                        policy.on_tls_ehlo(capabilities.requiretls)
                    } else if plaintext_only {
                        // The policy already chose this plaintext connection (RetryPlaintextNewConnection).
                        let mut d = policy.on_ehlo(false);
                        d.action = Action::ContinuePlaintext;
                        d.reason = "retry without TLS after a failed handshake".into();
                        d
                    } else {
                        policy.on_ehlo(capabilities.starttls)
                    };
                    tracing::debug!(server = %addr, decision = %decision, "after EHLO");
                    let action = decision.action.clone();
                    att.decision = Some(decision);
                    match action {
                        Action::StartTls => {
                            if conn.session.start_tls().is_err() {
                                failure = Some(local_failure((4, 7, 4), "STARTTLS not possible"));
                                let _ = conn.session.quit();
                            }
                        }
                        Action::ContinuePlaintext | Action::ContinueTls => {
                            if let Err(f) = send(&mut conn, policy, envelope, message) {
                                failure = Some(f);
                                let _ = conn.session.quit();
                            }
                        }
                        other => {
                            failure = Some(self.stop(&mut conn, &other, att.decision.as_ref()))
                        }
                    }
                }
                ClientEvent::StartTlsRefused(reply) => {
                    let decision = policy.on_starttls_reply(reply.code().value());
                    tracing::info!(server = %addr, reply = %reply, decision = %decision, "STARTTLS refused");
                    let action = decision.action.clone();
                    att.decision = Some(decision);
                    match action {
                        Action::ContinuePlaintext => {
                            if let Err(f) = send(&mut conn, policy, envelope, message) {
                                failure = Some(f);
                                let _ = conn.session.quit();
                            }
                        }
                        other => {
                            let mut f = self.stop(&mut conn, &other, att.decision.as_ref());
                            f.reply = Some(reply);
                            failure = Some(f);
                        }
                    }
                }
                ClientEvent::StartTls { discarded } => {
                    if discarded > 0 {
                        tracing::warn!(server = %addr, discarded, "bytes after the 220 to STARTTLS discarded, never read as a reply");
                    }
                    match self
                        .handshake(&mut conn, policy, &destination.next_hop, &server_name)
                        .await
                    {
                        Handshake::Aborted => {}
                        Handshake::Local(f) => {
                            att.outcome = Outcome::Failed(f);
                            return att;
                        }
                        Handshake::Failed(outcome, error) => {
                            let decision = policy.on_handshake(outcome);
                            tracing::info!(server = %addr, error = %error, decision = %decision, "TLS handshake failed with {server_name}[{}]:{}", addr.ip(), addr.port());
                            att.outcome = match decision.action.failure() {
                                Some(f) => Outcome::Failed(policy_failure(f, &decision)),
                                None => Outcome::Retry,
                            };
                            att.decision = Some(decision);
                            return att;
                        }
                        Handshake::Up {
                            version,
                            cipher,
                            certificate,
                        } => {
                            let decision = policy.on_handshake(HandshakeOutcome::Established {
                                version,
                                certificate,
                            });
                            // Postfix's summary line (smtp_tls_loglevel = 1).
                            tracing::info!(
                                "{} TLS connection established to {server_name}[{}]:{}: {version} with cipher {cipher}",
                                certificate.trust,
                                addr.ip(),
                                addr.port()
                            );
                            att.tls = Some(TlsSummary {
                                server_name: server_name.clone(),
                                version,
                                cipher,
                                certificate,
                                explanation: decision.to_string(),
                                discarded_before_handshake: conn.session.discarded_bytes(),
                            });
                            match decision.action.failure() {
                                None => {
                                    // RFC 3207 4.2: the session forgets everything and sends EHLO again.
                                    if conn.session.handle_tls_established().is_err() {
                                        failure = Some(local_failure(
                                            (4, 4, 2),
                                            "session not waiting for TLS",
                                        ));
                                    }
                                }
                                Some(f) => {
                                    failure = Some(policy_failure(f, &decision));
                                    if f.close == Close::Quit {
                                        // Inside TLS, outside the session (which waits for the handshake): QUIT.
                                        let _ = tokio::time::timeout(
                                            Duration::from_secs(5),
                                            conn.stream.write_all(&Command::Quit.to_bytes()),
                                        )
                                        .await;
                                    }
                                }
                            }
                            att.decision = Some(decision);
                            if let Some(f) = failure {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(1),
                                    conn.stream.shutdown(),
                                )
                                .await;
                                att.outcome = Outcome::Failed(f);
                                return att;
                            }
                        }
                    }
                }
                ClientEvent::TransactionDone(r) => {
                    report = Some(r);
                    let _ = conn.session.quit();
                }
                ClientEvent::Closed(reason) => {
                    att.outcome = if let Some(r) = report {
                        Outcome::Done(r)
                    } else if let Some(f) = failure {
                        Outcome::Failed(f)
                    } else if let ClientCloseReason::StartTlsInjection { discarded } = reason {
                        let decision = policy.on_bytes_after_starttls_reply();
                        tracing::warn!(server = %addr, discarded, decision = %decision, "bytes after the 220 to STARTTLS: connection aborted");
                        let outcome = match decision.action.failure() {
                            Some(f) => Outcome::Failed(policy_failure(f, &decision)),
                            None => Outcome::Retry,
                        };
                        att.decision = Some(decision);
                        outcome
                    } else {
                        Outcome::Failed(close_failure(&reason))
                    };
                    return att;
                }
                _ => {}
            }
        }
    }

    /// A policy `Defer` / `Bounce` before the transaction: end the session as the failure says.
    fn stop(
        &self,
        conn: &mut Conn,
        action: &Action,
        decision: Option<&Decision>,
    ) -> DeliveryFailure {
        let Some(f) = action.failure() else {
            let _ = conn.session.quit();
            return local_failure((4, 3, 0), &format!("unexpected policy action: {action}"));
        };
        match f.close {
            // The loop sees the session close after the 221.
            Close::Quit => {
                let _ = conn.session.quit();
            }
            Close::Drop | Close::NotConnected => conn.session.handle_eof(),
        }
        match decision {
            Some(d) => policy_failure(f, d),
            None => DeliveryFailure {
                status: f.status,
                result_type: Some(f.result_type),
                explanation: f.reason.clone(),
                permanent: f.status.is_permanent(),
                reply: None,
            },
        }
    }

    /// The TLS settings for this connection, from the policy's requirement.
    async fn tls_spec(
        &self,
        policy: &ConnectionPolicy,
        next_hop: &NextHop,
        server_name: &str,
    ) -> Result<ClientTlsSpec, DeliveryFailure> {
        let mut spec = ClientTlsSpec::new(ClientTlsMode::Opportunistic, server_name);
        spec.min_version = policy.min_tls_version();
        spec.dangerous_report_only = !policy.enforced();
        match policy.requirement() {
            TlsRequirement::Encrypt => spec.mode = ClientTlsMode::Encrypt,
            TlsRequirement::Authenticated(Authentication::Pkix { names }) => {
                spec.mode = match policy.settings().tls {
                    mode @ (ClientTlsMode::Secure | ClientTlsMode::MtaSts) => mode,
                    _ => ClientTlsMode::Verify,
                };
                spec.match_names = names
                    .iter()
                    .map(|n| match n {
                        NamePattern::Exact(name) => name.to_string(),
                        NamePattern::Subdomains(name) => format!(".{name}"),
                    })
                    .collect();
            }
            TlsRequirement::Authenticated(Authentication::Pins(pins)) => {
                spec.mode = ClientTlsMode::Fingerprint;
                spec.pins = pins;
            }
            TlsRequirement::Authenticated(Authentication::Dane(records)) => {
                spec.mode = match policy.settings().tls {
                    ClientTlsMode::DaneOnly => ClientTlsMode::DaneOnly,
                    _ => ClientTlsMode::Dane,
                };
                // RFC 7672 section 8.1: the SNI (`server_name`) is the TLSA base domain, the MX host. RFC 7671
                // section 10.2: it is the primary reference identifier of DANE-TA(2) name checks, and with SMTP
                // the destination domain is acceptable too (Postfix's "nexthop, hostname").
                let mut names = vec![server_name.to_owned()];
                if let Some(domain) = next_hop.domain().map(ToString::to_string)
                    && !names.contains(&domain)
                {
                    names.push(domain);
                }
                spec.hook = Some(Arc::new(DaneHook::new(records, names)));
            }
            TlsRequirement::Authenticated(_) => {
                return Err(DeliveryFailure {
                    status: EnhancedStatus::CRYPTO_FAILURE,
                    result_type: Some(ResultType::ValidationFailure),
                    explanation: "authentication method not available in this client".into(),
                    permanent: false,
                    reply: None,
                });
            }
            _ => {}
        }
        if let Some(path) = policy.trust_anchors() {
            spec.roots = Some(self.anchors(path).await?);
        }
        Ok(spec)
    }

    /// The trust anchors of a PEM file, loaded once.
    async fn anchors(&self, path: &str) -> Result<Arc<RootCertStore>, DeliveryFailure> {
        if let Some(r) = self
            .anchors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return Ok(Arc::clone(r));
        }
        let fail = |e: String| local_failure((4, 7, 5), &format!("trust anchors {path}: {e}"));
        let pem = tokio::fs::read(path)
            .await
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

    /// After the `220` to STARTTLS: drop held plaintext, handshake, judge the certificate.
    async fn handshake(
        &self,
        conn: &mut Conn,
        policy: &ConnectionPolicy,
        next_hop: &NextHop,
        server_name: &str,
    ) -> Handshake {
        // RFC 3207 section 4: nothing received before the handshake is read as a reply; the session discards
        // (or, with `AfterStartTls::Close`, aborts on) what the adapter still holds.
        let held = std::mem::take(&mut conn.pending);
        let _ = conn.session.handle_input(&held);
        if conn.session.is_closed() {
            return Handshake::Aborted;
        }
        let spec = match self.tls_spec(policy, next_hop, server_name).await {
            Ok(s) => s,
            Err(f) => return Handshake::Local(f),
        };
        let tls_conn = match self.tls.connection(&spec) {
            Ok(c) => c,
            Err(e) => {
                return Handshake::Local(local_failure(
                    (4, 7, 5),
                    &format!("TLS configuration: {e}"),
                ));
            }
        };
        let Some(tcp) = conn.stream.take_plain() else {
            return Handshake::Local(local_failure((4, 4, 2), "connection not in plaintext"));
        };
        let connect = TlsConnector::from(Arc::clone(&tls_conn.config))
            .connect(tls_conn.server_name.clone(), tcp);
        match tokio::time::timeout(self.settings.handshake_timeout, connect).await {
            Ok(Ok(tls)) => {
                let (_, c) = tls.get_ref();
                let (version, cipher) = negotiated(c);
                let certificate =
                    tls_conn.certificate_check(c.peer_certificates(), UnixTime::now());
                conn.stream = Stream::Tls(Box::new(tls));
                Handshake::Up {
                    version,
                    cipher,
                    certificate,
                }
            }
            Ok(Err(e)) => {
                let certificate = postern_certs::refused_check(&e).and_then(|c| c.failure);
                Handshake::Failed(
                    HandshakeOutcome::Failed { certificate },
                    postern_certs::describe_tls_error(&e),
                )
            }
            Err(_) => Handshake::Failed(
                HandshakeOutcome::Failed { certificate: None },
                "timed out".into(),
            ),
        }
    }
}

/// How a handshake ended.
enum Handshake {
    Up {
        version: TlsVersion,
        cipher: String,
        certificate: CertificateCheck,
    },
    Failed(HandshakeOutcome, String),
    /// The session closed instead (bytes after the `220` with `AfterStartTls::Close`).
    Aborted,
    /// A local problem (configuration).
    Local(DeliveryFailure),
}

/// Hand the message to the session, unless TLS is required and not active (never a plaintext MAIL then).
fn send(
    conn: &mut Conn,
    policy: &ConnectionPolicy,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), DeliveryFailure> {
    let requires_tls = policy.enforced()
        && !matches!(
            policy.requirement(),
            TlsRequirement::Plaintext | TlsRequirement::Opportunistic
        );
    if requires_tls && !conn.session.is_tls_active() {
        return Err(DeliveryFailure {
            status: EnhancedStatus::TLS_NOT_AVAILABLE,
            result_type: Some(ResultType::StarttlsNotSupported),
            explanation: "TLS required: no mail in plaintext".into(),
            permanent: false,
            reply: None,
        });
    }
    conn.session
        .send_mail(envelope.clone(), message.to_vec())
        .map_err(|e| {
            let (status, permanent) = match &e {
                SendError::MessageTooLarge => (EnhancedStatus::new(5, 3, 4), true),
                SendError::ExtensionNotOffered("SMTPUTF8") => (EnhancedStatus::new(5, 6, 7), true),
                SendError::ExtensionNotOffered("REQUIRETLS") => {
                    (EnhancedStatus::REQUIRETLS_REQUIRED, true)
                }
                SendError::ExtensionNotOffered(_) => (EnhancedStatus::new(5, 5, 4), true),
                _ => (EnhancedStatus::new(4, 3, 0), false),
            };
            DeliveryFailure {
                status,
                result_type: None,
                explanation: format!("message not sent: {e}"),
                permanent,
                reply: None,
            }
        })
}

fn policy_failure(f: &Failure, decision: &Decision) -> DeliveryFailure {
    DeliveryFailure {
        status: f.status,
        result_type: Some(f.result_type),
        explanation: decision.to_string(),
        permanent: matches!(decision.action, Action::Bounce(_)),
        reply: None,
    }
}

fn local_failure(status: (u8, u16, u16), explanation: &str) -> DeliveryFailure {
    DeliveryFailure {
        status: EnhancedStatus::new(status.0, status.1, status.2),
        result_type: None,
        explanation: explanation.to_owned(),
        permanent: false,
        reply: None,
    }
}

fn reply_failure(reply: &Reply, what: &str) -> DeliveryFailure {
    let class = u8::try_from(reply.code().value() / 100).unwrap_or(4);
    let status = reply
        .enhanced()
        .map_or(EnhancedStatus::new(class, 0, 0), |e| {
            EnhancedStatus::new(e.class(), e.subject(), e.detail())
        });
    DeliveryFailure {
        status,
        result_type: None,
        explanation: what.to_owned(),
        permanent: false,
        reply: Some(reply.clone()),
    }
}

/// A session that ended before any transaction: this host failed for now (RFC 5321 section 4.5.4.1: try the
/// next address, else retry later).
fn close_failure(reason: &ClientCloseReason) -> DeliveryFailure {
    match reason {
        ClientCloseReason::GreetingRefused(r) => reply_failure(r, "greeting refused"),
        ClientCloseReason::HelloRefused(r) => reply_failure(r, "EHLO and HELO refused"),
        ClientCloseReason::ServiceClosing(r) => reply_failure(r, "service closing"),
        ClientCloseReason::Timeout => local_failure((4, 4, 2), "timeout waiting for a reply"),
        ClientCloseReason::ProtocolError(e) => {
            local_failure((4, 4, 2), &format!("protocol error: {e}"))
        }
        ClientCloseReason::UnexpectedReply(r) => reply_failure(r, "unexpected reply"),
        _ => local_failure((4, 4, 2), "connection lost"),
    }
}

/// One outbound connection: the session, the socket, and bytes read but not yet taken.
struct Conn {
    session: ClientSession,
    stream: Stream<TlsStream<TcpStream>>,
    pending: Vec<u8>,
    /// Writes may block on a server that does not read: bounded by the data-phase deadline.
    write_limit: Duration,
}

impl Conn {
    /// Drive the session until its next event: transmit, read with the session's deadline.
    async fn next_event(&mut self) -> ClientEvent {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if let Some(event) = self.session.poll_event(Instant::now()) {
                if matches!(event, ClientEvent::Closed(_)) {
                    // Send the QUIT the session may have queued, then close.
                    let _ = tokio::time::timeout(Duration::from_secs(5), self.transmit()).await;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
                }
                return event;
            }
            if self.session.is_closed() {
                return ClientEvent::Closed(ClientCloseReason::ConnectionLost);
            }
            match tokio::time::timeout(self.write_limit, self.transmit()).await {
                Ok(Ok(())) => {}
                _ => {
                    self.session.handle_eof();
                    continue;
                }
            }
            if !self.pending.is_empty() {
                let taken = self.session.handle_input(&self.pending);
                self.pending.drain(..taken);
                if taken == 0 {
                    // After its events are drained the session has room for at least a reply line; should it
                    // not, give up rather than buffer without bound.
                    tracing::error!(held = self.pending.len(), "session takes no input");
                    self.session.handle_eof();
                }
                continue;
            }
            let deadline = self.session.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.stream.read(&mut buf) => match r {
                    Ok(0) | Err(_) => self.session.handle_eof(),
                    Ok(n) => {
                        let taken = self.session.handle_input(&buf[..n]);
                        self.pending.extend_from_slice(&buf[taken..n]);
                    }
                },
                () = sleep => self.session.handle_timeout(Instant::now()),
            }
        }
    }

    async fn transmit(&mut self) -> std::io::Result<()> {
        while let Some(bytes) = self.session.poll_transmit() {
            self.stream.write_all(&bytes).await?;
        }
        self.stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_smtp::{ForwardPath, ReversePath};

    fn envelope(n: usize) -> Envelope {
        let rcpts = (0..n).map(|i| ForwardPath::parse(&format!("<r{i}@example.org>")).unwrap());
        Envelope::new(ReversePath::parse("<a@example.net>").unwrap(), rcpts)
    }

    #[test]
    fn failures_from_replies_and_closes() {
        let r = Reply::new(
            554,
            Some(postern_smtp::EnhancedStatus::new(5, 7, 1).unwrap()),
            ["go away"],
        )
        .unwrap();
        let f = close_failure(&ClientCloseReason::GreetingRefused(r.clone()));
        assert_eq!(f.status, EnhancedStatus::new(5, 7, 1));
        assert_eq!(f.reply, Some(r));
        // A host that refuses to talk is retried later (next address, next attempt), never bounced.
        assert!(!f.permanent);
        let t = close_failure(&ClientCloseReason::Timeout);
        assert_eq!(
            (t.status, t.result_type),
            (EnhancedStatus::new(4, 4, 2), None)
        );
        let plain = Reply::new(421, None, ["bye"]).unwrap();
        assert_eq!(
            close_failure(&ClientCloseReason::ServiceClosing(plain)).status,
            EnhancedStatus::new(4, 0, 0)
        );
    }

    #[test]
    fn result_summaries() {
        let f = local_failure((4, 4, 1), "no route");
        let deferred =
            DeliveryResult::undelivered(&envelope(2), DeliveryStatus::Deferred, f.clone(), None);
        assert!(deferred.is_deferred() && !deferred.all_delivered());
        assert_eq!(deferred.recipients.len(), 2);
        assert_eq!(f.to_string(), "4.4.1: no route");
        let mut mixed = deferred.clone();
        mixed.recipients[0].status = DeliveryStatus::Delivered;
        assert!(!mixed.is_deferred() && !mixed.all_delivered());
        mixed.recipients[1].status = DeliveryStatus::Delivered;
        assert!(mixed.all_delivered());
        let failed = DeliveryResult::undelivered(&envelope(1), DeliveryStatus::Failed, f, None);
        assert!(!failed.is_deferred() && !failed.all_delivered());
    }
}
