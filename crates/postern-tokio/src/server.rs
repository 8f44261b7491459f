//! The server side: a TCP listener whose connections are driven by [`postern_smtp::ServerSession`]s, upgraded
//! to TLS with tokio-rustls when the client issues STARTTLS, with decisions delegated to a [`ServerHandler`].

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use postern_certs::ServerTlsContext;
use postern_policy::{
    CertificateCheck, ClientCertMode, ClientCertificate, ServerPolicy, ServerPolicyError,
    ServerTlsMode, TlsVersion,
};
use postern_smtp::{
    CloseReason, Command, CommandCounts, DataSummary, EnhancedStatus, ForwardPath, Host,
    MailParams, RcptParams, Reply, ReversePath, ServerConfig, ServerEvent, Verb,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::repeats::{Logged, Repeats, SUMMARY_INTERVAL};

mod connection;

pub use connection::{ConnectionError, Endpoint, Event, ServerConnection};

/// First pause after a failed `accept`. Out of file descriptors, the pending connection stays in the backlog
/// and `accept` fails again at once: the pause doubles while it keeps failing, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest pause after failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The application's answer to a decision (EHLO, MAIL, RCPT, end of message).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Accept with the engine's standard reply (`250 2.1.0 Ok`, `250 2.0.0 Ok: queued`, …).
    Accept,
    /// Accept with this 2xx reply (e.g. `250 2.0.0 Ok: queued as 4F2A`). Not for EHLO / HELO, whose reply the
    /// engine builds: there it counts as [`Verdict::Accept`].
    AcceptWith(Reply),
    /// Refuse with this 4xx / 5xx reply (a `421` also closes the connection, RFC 5321 section 3.8).
    Reject(Reply),
}

impl Verdict {
    /// A refusal built from its parts; a reply that cannot be built (bad code or text) becomes
    /// `451 4.3.0 Error: internal error`, so that a mistake never turns into an acceptance.
    pub fn reject(code: u16, status: EnhancedStatus, text: &str) -> Self {
        Self::Reject(negative_reply(code, status, text))
    }
}

/// A 4xx / 5xx reply built from its parts; one that cannot be built (bad code or text) becomes `451 4.3.0
/// Error: internal error`.
fn negative_reply(code: u16, status: EnhancedStatus, text: &str) -> Reply {
    let built = Reply::new(code, Some(status), [text])
        .ok()
        .filter(|r| r.code().is_transient() || r.code().is_permanent());
    built.unwrap_or_else(internal_error)
}

/// `451 4.3.0 Error: internal error`.
fn internal_error() -> Reply {
    fixed(451, (4, 3, 0), "Error: internal error")
}

/// A reply from constant parts.
fn fixed(code: u16, enhanced: (u8, u16, u16), text: &str) -> Reply {
    let status = EnhancedStatus::new(enhanced.0, enhanced.1, enhanced.2);
    // Callers pass constant, valid parts (class matching the code, printable text); the fallback replies are
    // themselves constant and valid, so neither `expect` below can fire.
    let reply = status
        .ok()
        .and_then(|e| Reply::new(code, Some(e), [text]).ok());
    reply.unwrap_or_else(|| {
        Reply::new(451, None, ["Error: internal error"]).expect("constant reply is valid")
    })
}

/// TLS facts of an inbound connection, known once the STARTTLS handshake completed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The negotiated protocol version.
    pub version: TlsVersion,
    /// The negotiated cipher suite, as rustls names it (e.g. `TLS13_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// The client certificate, if one was presented: SHA-256 fingerprint, subject, issuer and the result of
    /// verifying it against the configured client CA roots.
    pub client_certificate: Option<ClientCertificate>,
    /// How long the handshake took, from `220 Ready to start TLS` to its end.
    pub handshake_time: Duration,
}

impl TlsInfo {
    /// The client certificate check: `Anonymous` when none was presented.
    pub fn client_check(&self) -> CertificateCheck {
        self.client_certificate
            .as_ref()
            .map_or_else(CertificateCheck::anonymous, |c| c.check)
    }
}

/// What the server knows about a connection; passed to every handler call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// A number identifying the connection in logs (unique per [`Server`]).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// TLS facts once STARTTLS succeeded; `None` while plaintext.
    pub tls: Option<TlsInfo>,
    /// A STARTTLS handshake was started and failed or timed out (the connection then closes).
    pub tls_handshake_failed: bool,
    /// How many times each command was given and accepted so far, as of the last event (complete in
    /// [`SessionHandler::closed`]: Postfix's `disconnect from … ehlo=1 mail=1 rcpt=0/1 commands=2/3`).
    pub commands: CommandCounts,
}

impl ConnectionInfo {
    /// Whether TLS is active.
    pub fn tls_active(&self) -> bool {
        self.tls.is_some()
    }

    /// The client certificate, if TLS is active and one was presented. Feed it to
    /// [`ServerPolicy::may_relay`] to authorise relaying by verified certificate (trusted agents).
    pub fn client_certificate(&self) -> Option<&ClientCertificate> {
        self.tls
            .as_ref()
            .and_then(|t| t.client_certificate.as_ref())
    }
}

/// The application behind a [`Server`]: opens one [`SessionHandler`] per connection.
pub trait ServerHandler: Send + Sync + 'static {
    /// The per-connection state (e.g. the spool file of the current message).
    type Session: SessionHandler;

    /// A client connected (and was given a slot under the connection limit).
    fn open(&self, info: &ConnectionInfo) -> Self::Session;
}

/// Per-connection decisions. Each decision method is awaited before the connection goes on, so it may do I/O
/// (a DNS lookup, an fsync); replies stay in order (RFC 2920 section 3.1).
///
/// A transaction starts with an accepted [`mail`](Self::mail) and ends with [`message_end`](Self::message_end)
/// or [`reset`](Self::reset); on `reset`, drop any content stored for it.
pub trait SessionHandler: Send + 'static {
    /// EHLO (`extended`) or HELO. Default: accept.
    fn hello(
        &mut self,
        info: &ConnectionInfo,
        name: &Host,
        extended: bool,
    ) -> impl Future<Output = Verdict> + Send {
        let _ = (info, name, extended);
        async { Verdict::Accept }
    }

    /// MAIL FROM, after the engine's syntax, sequence and size checks. Default: accept.
    fn mail(
        &mut self,
        info: &ConnectionInfo,
        from: &ReversePath,
        params: &MailParams,
    ) -> impl Future<Output = Verdict> + Send {
        let _ = (info, from, params);
        async { Verdict::Accept }
    }

    /// RCPT TO: the place for relay rules (accept local domains; relay only for authorised networks or a
    /// verified client certificate, [`ConnectionInfo::client_certificate`]).
    fn rcpt(
        &mut self,
        info: &ConnectionInfo,
        to: &ForwardPath,
        params: &RcptParams,
    ) -> impl Future<Output = Verdict> + Send;

    /// Message content starts: `354` was sent for DATA (`chunked` false), or the first BDAT chunk (RFC 3030)
    /// was accepted. The place to write a `Received:` header from `info` (peer, TLS facts). Default: nothing.
    fn message_start(
        &mut self,
        info: &ConnectionInfo,
        chunked: bool,
    ) -> impl Future<Output = ()> + Send {
        let _ = (info, chunked);
        async {}
    }

    /// A piece of message content, in order (dot-unstuffed, CRLF line endings for DATA; verbatim for BDAT).
    fn message_chunk(
        &mut self,
        info: &ConnectionInfo,
        chunk: Vec<u8>,
    ) -> impl Future<Output = ()> + Send;

    /// The whole message was received. Accept only once it is durably stored (file and directory fsynced): the
    /// `250` is the promise of delivery (RFC 5321 section 6.1). If storing failed, reject with a 4xx.
    fn message_end(
        &mut self,
        info: &ConnectionInfo,
        summary: &DataSummary,
    ) -> impl Future<Output = Verdict> + Send;

    /// The current transaction, if any, is gone (RSET, EHLO, STARTTLS, a refused message, the end of the
    /// connection). May be called when no transaction is open.
    fn reset(&mut self) {}

    /// The engine refused a command itself, without a decision being asked (a sequence or size check, `530
    /// 5.7.0 Must issue a STARTTLS command first` while TLS is required, the refusal after a failed client
    /// certificate check, too many junk commands); the reply is already sent. For logs (Postfix's `NOQUEUE:
    /// reject:` lines) and counters. Default: nothing.
    fn refused(
        &mut self,
        info: &ConnectionInfo,
        verb: Verb,
        command: Option<&Command>,
        reply: &Reply,
    ) {
        let _ = (info, verb, command, reply);
    }

    /// The connection ended; [`ConnectionInfo::commands`] holds the session's command counters.
    fn closed(&mut self, info: &ConnectionInfo, reason: CloseReason) {
        let _ = (info, reason);
    }
}

/// Why a [`Server`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The inbound policy is inconsistent (client certificates required without TLS required, …).
    #[error("invalid inbound policy: {0}")]
    Policy(#[from] ServerPolicyError),
    /// TLS mode `offer` or `require` needs a TLS context (certificates).
    #[error("tls mode {0} needs a tls context")]
    MissingTlsContext(ServerTlsMode),
    /// The TLS context handles client certificates otherwise than the policy says (e.g. the policy requires
    /// them but the handshake never requests one).
    #[error("policy client_certificates = {policy} but the tls context was built with {tls}")]
    ClientCertMismatch {
        /// The policy's mode.
        policy: ClientCertMode,
        /// The TLS context's mode.
        tls: ClientCertMode,
    },
    /// The TLS context accepts other protocol versions than the policy's minimum.
    #[error("policy min_tls_version = {policy} but the tls context was built with {tls}")]
    MinVersionMismatch {
        /// The policy's minimum.
        policy: TlsVersion,
        /// The TLS context's minimum.
        tls: TlsVersion,
    },
}

/// Server settings.
///
/// Default: the engine's default [`ServerConfig`] (host name `localhost`; its STARTTLS setting is replaced by
/// the policy's mode; greet pause, junk command and session limits, stress limits), [`ServerPolicy::default`]
/// (offer TLS, no client certificate), no TLS context (set one for `offer` / `require`), 100 simultaneous
/// connections (Postfix `default_process_limit`), stress from 90 % of them, clients that passed the greet pause
/// spared it for a day, a 60 s TLS handshake timeout and a 30 s shutdown grace period.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerSettings {
    /// Engine settings: host name, limits, deadlines ([`postern_smtp::Timeouts`]).
    pub smtp: ServerConfig,
    /// Inbound TLS policy: mode none / offer / require, client certificates none / ask / require.
    pub policy: ServerPolicy,
    /// The TLS configuration from postern-certs; its client-certificate mode and minimum version must match
    /// `policy` ([`ServerSettings::validate`]).
    pub tls: Option<ServerTlsContext>,
    /// Simultaneous connections; past it a client gets `421 4.3.2 Too many connections` and is closed.
    pub max_connections: usize,
    /// The server is under stress while at least this percentage of `max_connections` (rounded up) are in use:
    /// every session then applies the engine's [`StressLimits`](postern_smtp::StressLimits) (a 10 s command
    /// deadline, one error, one junk command), so that idle clients give their slots back to honest ones
    /// (Postfix's `stress`, which its master sets when all `smtpd` processes are busy; ours starts a little
    /// earlier, because a client finding no free slot is refused rather than queued). 0: never. Default 90.
    pub stress_percent: u8,
    /// How long a client address that kept quiet through a whole greet pause is spared the pause on its next
    /// connections (Postfix `postscreen_greet_ttl`, 1 day): honest clients that come back, and benchmarks, pay it
    /// once. Such a client is still refused if its bytes are there before the greeting is sent. Zero: every
    /// connection waits the pause. Default 1 day.
    pub greet_pass_ttl: Duration,
    /// Time allowed for the TLS handshake after `220 Ready to start TLS`.
    pub handshake_timeout: Duration,
    /// Time sessions are given to finish after shutdown is requested; then idle sessions are told `421 4.3.2`
    /// and the rest are aborted.
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            smtp: ServerConfig::default(),
            policy: ServerPolicy::default(),
            tls: None,
            max_connections: 100,
            stress_percent: 90,
            greet_pass_ttl: Duration::from_secs(86_400),
            handshake_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl ServerSettings {
    /// Checks the policy, and that the TLS context agrees with it: present for TLS modes `offer` and
    /// `require`, built with the policy's client-certificate mode and minimum TLS version. A context that
    /// never requests a client certificate under a policy that requires one would refuse every client after
    /// its handshake; one that requests them under a policy of `none` would ask clients for nothing used.
    pub fn validate(&self) -> Result<(), ServerError> {
        self.policy.validate()?;
        let Some(tls) = &self.tls else {
            return match self.policy.tls {
                ServerTlsMode::None => Ok(()),
                mode => Err(ServerError::MissingTlsContext(mode)),
            };
        };
        if tls.client_cert_mode() != self.policy.client_certificates {
            return Err(ServerError::ClientCertMismatch {
                policy: self.policy.client_certificates,
                tls: tls.client_cert_mode(),
            });
        }
        if tls.min_version() != self.policy.min_tls_version {
            return Err(ServerError::MinVersionMismatch {
                policy: self.policy.min_tls_version,
                tls: tls.min_version(),
            });
        }
        Ok(())
    }

    /// Settings for this host name, TLS policy and TLS context, defaults otherwise.
    pub fn new(
        hostname: impl Into<String>,
        policy: ServerPolicy,
        tls: Option<ServerTlsContext>,
    ) -> Self {
        Self {
            smtp: ServerConfig::new(hostname),
            policy,
            tls,
            ..Self::default()
        }
    }
}

/// An SMTP server: accepts connections and drives one session per connection.
///
/// Cloning is cheap (shared settings and handler).
pub struct Server<H> {
    endpoint: Endpoint,
    handler: Arc<H>,
    slots: Arc<Semaphore>,
    reconfiguring: Arc<std::sync::Mutex<()>>,
}

impl<H> Clone for Server<H> {
    fn clone(&self) -> Self {
        Self {
            endpoint: self.endpoint.clone(),
            handler: Arc::clone(&self.handler),
            slots: Arc::clone(&self.slots),
            reconfiguring: Arc::clone(&self.reconfiguring),
        }
    }
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("settings", &self.endpoint.settings())
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

/// The repeated events of one accept loop, summarised in the log.
#[derive(Debug)]
struct Floods {
    /// Connections refused over the limit.
    refused: Repeats,
    /// Failed `accept` calls.
    accept_errors: Repeats,
    /// The last `accept` error, for the summary.
    last_accept_error: String,
}

impl Default for Floods {
    fn default() -> Self {
        Self {
            refused: Repeats::new(SUMMARY_INTERVAL),
            accept_errors: Repeats::new(SUMMARY_INTERVAL),
            last_accept_error: String::new(),
        }
    }
}

impl Floods {
    /// When the next summary is due, if one may be.
    fn due_at(&self) -> Option<Instant> {
        self.refused
            .due_at()
            .into_iter()
            .chain(self.accept_errors.due_at())
            .min()
    }

    /// Logs the summaries that are due at `now` (all that are pending when `last`: the loop ends).
    fn log(&mut self, now: Instant, limit: usize, last: bool) {
        let take = |r: &mut Repeats| {
            if last {
                r.flush(now)
            } else {
                r.take_summary(now)
            }
        };
        if let Some((n, span)) = take(&mut self.refused) {
            tracing::warn!(
                refused = n,
                limit,
                "too many connections: {n} more refused in the last {}s",
                span.as_secs()
            );
        }
        if let Some((n, span)) = take(&mut self.accept_errors) {
            tracing::warn!(
                failures = n,
                last_error = %self.last_accept_error,
                "accept failed {n} more times in the last {}s",
                span.as_secs()
            );
        }
    }
}

impl<H: ServerHandler> Server<H> {
    /// A server with these settings and this application. The policy is validated, and so is its agreement
    /// with the TLS context (client-certificate mode, minimum TLS version); the engine's STARTTLS setting
    /// follows the policy's mode.
    pub fn new(settings: ServerSettings, handler: H) -> Result<Self, ServerError> {
        let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
        Ok(Self {
            endpoint: Endpoint::new(settings)?,
            handler: Arc::new(handler),
            slots,
            reconfiguring: Arc::default(),
        })
    }

    /// The settings new connections get.
    pub fn settings(&self) -> Arc<ServerSettings> {
        self.endpoint.settings()
    }

    /// Replace the settings for the connections accepted from now on (a configuration reload), checked as
    /// [`new`](Self::new) checks them; on error nothing changes. Sessions already open finish under the
    /// settings they started with; nothing is closed. A new `max_connections` applies at once to the slots
    /// given from now on: lowered, the sessions over the new limit finish and their slots are not given again.
    pub fn reconfigure(&self, settings: ServerSettings) -> Result<(), ServerError> {
        // One reconfiguration at a time, so that the slot arithmetic sees the limit it replaces.
        let _one = self
            .reconfiguring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = self.settings().max_connections.max(1);
        let after = settings.max_connections.max(1);
        self.endpoint.reconfigure(settings)?;
        if after > before {
            self.slots.add_permits(after - before);
        } else if before > after {
            let owed = (before - after) - self.slots.forget_permits(before - after);
            // The rest are in use: taken back as their sessions end.
            if owed > 0 {
                let slots = Arc::clone(&self.slots);
                let take_back = async move {
                    if let Ok(permits) = slots
                        .acquire_many_owned(u32::try_from(owed).unwrap_or(u32::MAX))
                        .await
                    {
                        permits.forget();
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(take_back)),
                    Err(_) => tracing::warn!(
                        owed,
                        "connection limit lowered outside a runtime: {owed} slots in use stay available"
                    ),
                }
            }
        }
        self.update_stress();
        Ok(())
    }

    /// Whether the server is under stress now (see [`ServerSettings::stress_percent`]).
    pub fn is_under_stress(&self) -> bool {
        self.endpoint.is_under_stress()
    }

    /// Recompute the stress state from the slots in use, and tell the sessions when it changes.
    fn update_stress(&self) {
        let max = self.settings().max_connections.max(1);
        let pct = usize::from(self.settings().stress_percent.min(100));
        let in_use = max.saturating_sub(self.slots.available_permits());
        // ceil(max * pct / 100), at least one connection.
        let threshold = (max * pct).div_ceil(100).max(1);
        let stress = pct > 0 && in_use >= threshold;
        let changed = self.endpoint.set_stress(stress);
        if changed {
            if stress {
                tracing::warn!(
                    in_use,
                    limit = max,
                    "under stress: shortened timeouts and tighter limits"
                );
            } else {
                tracing::info!(in_use, limit = max, "no longer under stress");
            }
        }
    }

    /// Serve `listener` until `shutdown` completes; then stop accepting, give open sessions the grace period to
    /// finish, tell the idle ones `421 4.3.2` and abort the rest. Accept errors (e.g. out of file descriptors)
    /// are retried after a pause that grows while they go on (10 ms, doubled up to 1 s), never in a tight loop.
    /// The first connection refused over the limit and the first accept error of a quiet period are logged;
    /// those that follow are counted and logged as one summary line a minute.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let (force_tx, force_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut floods = Floods::default();
        let mut backoff = Duration::ZERO;
        enum Woke {
            Shutdown,
            Joined,
            Summary,
            Accepted(io::Result<(TcpStream, SocketAddr)>),
        }
        tokio::pin!(shutdown);
        loop {
            let summary_due = floods.due_at();
            // In this order when several are ready (no `tokio::select!`: it needs tokio's `macros` feature).
            let woke = {
                let mut joining = !tasks.is_empty();
                let mut joined = pin!(tasks.join_next());
                let mut summary = pin!(async {
                    match summary_due {
                        Some(due) => tokio::time::sleep_until(due.into()).await,
                        None => std::future::pending().await,
                    }
                });
                let mut accept = pin!(listener.accept());
                poll_fn(|cx| {
                    if shutdown.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Woke::Shutdown);
                    }
                    if joining {
                        match joined.as_mut().poll(cx) {
                            Poll::Ready(Some(_)) => return Poll::Ready(Woke::Joined),
                            Poll::Ready(None) => joining = false,
                            Poll::Pending => {}
                        }
                    }
                    if summary.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Woke::Summary);
                    }
                    accept.as_mut().poll(cx).map(Woke::Accepted)
                })
                .await
            };
            match woke {
                Woke::Shutdown => break,
                Woke::Joined => {}
                Woke::Summary => floods.log(Instant::now(), self.settings().max_connections, false),
                Woke::Accepted(Ok((tcp, peer))) => {
                    backoff = Duration::ZERO;
                    self.spawn_connection(
                        &mut tasks,
                        tcp,
                        peer,
                        force_rx.clone(),
                        &mut floods.refused,
                    );
                }
                Woke::Accepted(Err(e)) => {
                    if floods.accept_errors.record(Instant::now()) == Logged::Now {
                        tracing::warn!(error = %e, "accept failed");
                    }
                    floods.last_accept_error = e.to_string();
                    backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        floods.log(Instant::now(), self.settings().max_connections, true);
        drop(listener);
        tracing::info!(
            sessions = tasks.len(),
            "shutting down: no longer accepting connections"
        );
        let all_done = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.settings().shutdown_grace, all_done)
            .await
            .is_err()
        {
            tracing::info!(
                sessions = tasks.len(),
                "grace period over: closing remaining sessions"
            );
            // Receivers are in the tasks; a send error only means they are all gone already.
            let _ = force_tx.send(true);
            let closing = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(Duration::from_secs(1), closing)
                .await
                .is_err()
            {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
    }

    fn spawn_connection(
        &self,
        tasks: &mut JoinSet<()>,
        tcp: TcpStream,
        peer: SocketAddr,
        force: watch::Receiver<bool>,
        refused: &mut Repeats,
    ) {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                self.update_stress();
                let server = self.clone();
                tasks.spawn(async move {
                    server.serve_connection(tcp, peer, force).await;
                    drop(permit);
                    server.update_stress();
                });
            }
            Err(_) => {
                if refused.record(Instant::now()) == Logged::Now {
                    tracing::warn!(%peer, limit = self.settings().max_connections, "too many connections");
                }
                let reply = fixed(
                    421,
                    (4, 3, 2),
                    &format!(
                        "{} Too many connections, try again later",
                        self.settings().smtp.hostname
                    ),
                );
                tasks.spawn(async move {
                    let mut tcp = tcp;
                    let refuse = async {
                        tcp.write_all(&reply.to_bytes()).await?;
                        tcp.shutdown().await
                    };
                    // A client that does not read gets no more than a second.
                    let _ = tokio::time::timeout(Duration::from_secs(1), refuse).await;
                });
            }
        }
    }

    /// Drive one connection to its end (for callers with their own accept loop; the connection limit is not
    /// applied here). `force` turning `true` closes the session with `421 4.3.2` when it next waits for input.
    pub async fn serve_connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        force: watch::Receiver<bool>,
    ) {
        let mut conn = self.endpoint.open(tcp, peer, force);
        let mut handler = self.handler.open(conn.info());
        let reason = run(&mut conn, &mut handler).await;
        handler.reset();
        handler.closed(conn.info(), reason);
    }
}

/// Drive `conn` to its end with the decisions of `handler`; returns why it ended.
async fn run<S: SessionHandler>(conn: &mut ServerConnection, handler: &mut S) -> CloseReason {
    loop {
        let event = match conn.next().await {
            Ok(Event::Session(event)) => event,
            Ok(Event::TlsEstablished) => {
                // STARTTLS ended any transaction (RFC 3207 section 4.2).
                handler.reset();
                continue;
            }
            Ok(Event::Closed(reason)) => return reason,
            // Every decision below is answered before `next` is called again.
            Err(_) => return CloseReason::Application,
        };
        let info = conn.info();
        let verdict = match event {
            ServerEvent::Hello { name, extended } => {
                handler.reset();
                handler.hello(info, &name, extended).await
            }
            ServerEvent::Mail { from, params } => handler.mail(info, &from, &params).await,
            ServerEvent::Rcpt { to, params } => handler.rcpt(info, &to, &params).await,
            ServerEvent::MessageStart { chunked } => {
                handler.message_start(info, chunked).await;
                continue;
            }
            ServerEvent::MessageChunk(chunk) => {
                handler.message_chunk(info, chunk).await;
                continue;
            }
            ServerEvent::MessageEnd { summary } => handler.message_end(info, &summary).await,
            ServerEvent::Vrfy(_) => Verdict::Accept,
            ServerEvent::Refused {
                verb,
                command,
                reply,
            } => {
                handler.refused(info, verb, command.as_deref(), &reply);
                continue;
            }
            ServerEvent::MessageRejected { .. } | ServerEvent::Reset => {
                handler.reset();
                continue;
            }
            _ => continue,
        };
        // Only decisions reach this point: answered exactly once.
        let _ = conn.answer(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_smtp::StartTlsPolicy;

    #[test]
    fn reject_builds_the_reply_or_refuses_safely() {
        let Verdict::Reject(r) = Verdict::reject(
            554,
            EnhancedStatus::DELIVERY_NOT_AUTHORIZED,
            "Relay access denied",
        ) else {
            panic!("not a refusal")
        };
        assert_eq!(r.to_bytes(), b"554 5.7.1 Relay access denied\r\n");
        // A 2xx code, a class mismatch or a CR in the text never turn into an acceptance.
        for (code, enhanced, text) in [
            (250, EnhancedStatus::OK, "ok"),
            (554, EnhancedStatus::CRYPTO_FAILURE, "mismatch"),
            (550, EnhancedStatus::DELIVERY_NOT_AUTHORIZED, "a\r\nb"),
        ] {
            assert_eq!(
                Verdict::reject(code, enhanced, text),
                Verdict::Reject(internal_error()),
                "{code} {text:?}"
            );
        }
        assert_eq!(
            internal_error().to_bytes(),
            b"451 4.3.0 Error: internal error\r\n"
        );
    }

    #[test]
    fn settings_follow_the_policy() {
        #[derive(Debug)]
        struct Nobody;
        #[derive(Debug)]
        struct NoSession;
        impl ServerHandler for Nobody {
            type Session = NoSession;
            fn open(&self, _: &ConnectionInfo) -> NoSession {
                NoSession
            }
        }
        impl SessionHandler for NoSession {
            async fn rcpt(
                &mut self,
                _: &ConnectionInfo,
                _: &ForwardPath,
                _: &RcptParams,
            ) -> Verdict {
                Verdict::reject(550, EnhancedStatus::DELIVERY_NOT_AUTHORIZED, "no")
            }
            async fn message_chunk(&mut self, _: &ConnectionInfo, _: Vec<u8>) {}
            async fn message_end(&mut self, _: &ConnectionInfo, _: &DataSummary) -> Verdict {
                Verdict::reject(451, EnhancedStatus::SYSTEM_TEMPORARY, "no")
            }
        }
        // Offer and require need certificates; none does not.
        let offer = ServerSettings::new("mx.example.org", ServerPolicy::default(), None);
        assert!(matches!(
            Server::new(offer, Nobody),
            Err(ServerError::MissingTlsContext(ServerTlsMode::Offer))
        ));
        let mut none = ServerSettings::default();
        none.policy.tls = ServerTlsMode::None;
        let server = Server::new(none, Nobody).expect("valid");
        assert_eq!(server.settings().smtp.starttls, StartTlsPolicy::Disabled);
        assert!(!server.settings().smtp.tls_available);
        // Client certificates required without TLS required is refused (postern-policy's rule).
        let mut bad = ServerSettings::default();
        bad.policy.client_certificates = ClientCertMode::Require;
        assert!(matches!(
            Server::new(bad, Nobody),
            Err(ServerError::Policy(_))
        ));

        // The TLS context must handle client certificates and versions as the policy says.
        let context = |client_cert, min_version| {
            let mut spec = postern_certs::ServerTlsSpec::default();
            spec.mode = ServerTlsMode::Require;
            spec.client_cert = client_cert;
            spec.min_version = min_version;
            let resolver =
                postern_certs::CertResolver::new(postern_certs::ServedCertificates::new());
            ServerTlsContext::new(&spec, Arc::new(resolver)).expect("valid spec")
        };
        let settings = |policy_cc, policy_min, tls| {
            let mut policy = ServerPolicy::default();
            policy.tls = ServerTlsMode::Require;
            policy.client_certificates = policy_cc;
            policy.min_tls_version = policy_min;
            ServerSettings::new("mx.example.org", policy, Some(tls))
        };
        let (tls12, tls13) = (TlsVersion::Tls12, TlsVersion::Tls13);
        // Policy requires client certificates; the context never requests one.
        let err = Server::new(
            settings(
                ClientCertMode::Require,
                tls12,
                context(ClientCertMode::None, tls12),
            ),
            Nobody,
        )
        .expect_err("mismatch");
        assert!(matches!(
            err,
            ServerError::ClientCertMismatch {
                policy: ClientCertMode::Require,
                tls: ClientCertMode::None
            }
        ));
        assert_eq!(
            err.to_string(),
            "policy client_certificates = require but the tls context was built with none"
        );
        // The context asks for certificates the policy does not want.
        assert!(matches!(
            Server::new(
                settings(
                    ClientCertMode::None,
                    tls12,
                    context(ClientCertMode::Ask, tls12)
                ),
                Nobody
            ),
            Err(ServerError::ClientCertMismatch { .. })
        ));
        // The policy's TLS 1.3 minimum, a context that accepts TLS 1.2.
        assert!(matches!(
            Server::new(
                settings(
                    ClientCertMode::Ask,
                    tls13,
                    context(ClientCertMode::Ask, tls12)
                ),
                Nobody
            ),
            Err(ServerError::MinVersionMismatch { .. })
        ));
        // In agreement: built.
        let server = Server::new(
            settings(
                ClientCertMode::Ask,
                tls13,
                context(ClientCertMode::Ask, tls13),
            ),
            Nobody,
        )
        .expect("policy and context agree");
        assert_eq!(server.settings().smtp.starttls, StartTlsPolicy::Require);
        assert!(server.settings().smtp.tls_available);
    }
}
