//! The server connection driver: one inbound connection, stepped by [`ServerConnection::next`].

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use postern_policy::{ClientCertMode, CommandVerdict, ServerTlsMode};
use postern_smtp::{AnswerError, CloseReason, ServerEvent, ServerSession, StartTlsPolicy};
use rustls::pki_types::UnixTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{
    ConnectionInfo, ServerError, ServerSettings, TlsInfo, Verdict, fixed, internal_error,
    negative_reply,
};
use crate::stream::{Stream, negotiated, postfix_cipher};

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;
/// Most client addresses remembered as having passed the greet pause.
const MAX_GREET_PASSES: usize = 65_536;

/// What the connections of one server share: the settings (checked, the engine's STARTTLS setting following
/// the policy), the stress state, the clients that passed the greet pause and the connection numbers.
///
/// Build one per listener and open a [`ServerConnection`] per accepted socket with
/// [`connection`](Self::connection). Cloning is cheap; clones share everything, the settings included:
/// [`reconfigure`](Self::reconfigure) on one is seen by all. A connection keeps the settings it was opened
/// with until it ends. [`Server`](super::Server) is built on it.
#[derive(Clone)]
pub struct Endpoint {
    /// The settings new connections get (each connection keeps its own snapshot).
    settings: Arc<RwLock<Arc<ServerSettings>>>,
    /// Whether the server is under stress, for every session to follow.
    stress: Arc<watch::Sender<bool>>,
    /// Client addresses that passed the greet pause, and when.
    greet_passes: Arc<Mutex<HashMap<IpAddr, Instant>>>,
    next_id: Arc<AtomicU64>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("settings", &self.settings)
            .field("stress", &*self.stress.borrow())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with these settings. The policy is validated, and so is its agreement with the TLS context
    /// (client-certificate mode, minimum TLS version); the engine's STARTTLS setting follows the policy's mode.
    pub fn new(settings: ServerSettings) -> Result<Self, ServerError> {
        Ok(Self {
            settings: Arc::new(RwLock::new(Arc::new(prepare(settings)?))),
            stress: Arc::new(watch::channel(false).0),
            greet_passes: Arc::new(Mutex::new(HashMap::new())),
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The settings new connections get.
    pub fn settings(&self) -> Arc<ServerSettings> {
        // A poisoned lock only means a panic elsewhere while swapping an `Arc`: the value is whole.
        Arc::clone(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replace the settings for the connections opened from now on, checked as [`new`](Self::new) checks
    /// them; connections already open finish under the settings they started with. On error nothing changes.
    /// The stress state, the clients that passed the greet pause and the connection numbering carry over.
    pub fn reconfigure(&self, settings: ServerSettings) -> Result<(), ServerError> {
        let prepared = Arc::new(prepare(settings)?);
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = prepared;
        Ok(())
    }

    /// Whether the server is under stress now.
    pub fn is_under_stress(&self) -> bool {
        *self.stress.borrow()
    }

    /// Put every connection of this endpoint under stress, or take them out of it: their sessions then apply
    /// the engine's [`StressLimits`](postern_smtp::StressLimits), recomputing a deadline already armed. Returns
    /// whether the state changed. ([`Server`](super::Server) does this from its connection count.)
    pub fn set_stress(&self, stress: bool) -> bool {
        self.stress.send_if_modified(|s| {
            let changed = *s != stress;
            *s = stress;
            changed
        })
    }

    /// Start serving an accepted connection from `peer`. Nothing is sent yet: the greeting goes out from the
    /// first [`ServerConnection::next`]. The connection limit is the caller's.
    pub fn connection(&self, tcp: TcpStream, peer: SocketAddr) -> ServerConnection {
        // Nobody can request a forced close: the sender is dropped at once.
        self.open(tcp, peer, watch::channel(false).1)
    }

    /// As [`connection`](Self::connection); `force` turning `true` closes the session with `421 4.3.2` when it
    /// next waits for input.
    pub(super) fn open(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        force: watch::Receiver<bool>,
    ) -> ServerConnection {
        let local = tcp.local_addr().unwrap_or(peer);
        let _ = tcp.set_nodelay(true);
        let info = ConnectionInfo {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            local,
            tls: None,
            tls_handshake_failed: false,
            commands: postern_smtp::CommandCounts::default(),
        };
        tracing::debug!(id = info.id, %peer, "connect");
        let settings = self.settings();
        let mut smtp = settings.smtp.clone();
        if self.passed_greet_pause(peer.ip()) {
            smtp.greet_pause = Duration::ZERO;
        }
        let mut session = ServerSession::new(smtp, Instant::now());
        let mut buf = vec![0; READ_CHUNK];
        let mut pending = Vec::new();
        // RFC 5321 3.1 / 4.3.1: the client waits for the greeting. Bytes already received now were sent before it
        // ("improper command pipelining after CONNECT" in Postfix): the session, handed them before its greeting
        // is taken, answers `554 5.5.0` and closes. Bytes that arrive later in the greet pause (the engine holds
        // the greeting back, `ServerConfig::greet_pause`) are read by the loop and refused the same way.
        if let Ok(n @ 1..) = tcp.try_read(&mut buf) {
            tracing::debug!(id = info.id, %peer, octets = n, "client talked before the greeting");
            let taken = session.handle_input(&buf[..n]);
            pending.extend_from_slice(&buf[taken..n]);
        }
        ServerConnection {
            endpoint: self.clone(),
            settings,
            session,
            stream: Stream::Plain(tcp),
            pending,
            buf,
            info,
            force,
            stress: self.stress.subscribe(),
            state: State::Running,
            reason: CloseReason::PeerClosed,
        }
    }

    /// Whether `ip` passed the greet pause less than `greet_pass_ttl` ago.
    fn passed_greet_pause(&self, ip: IpAddr) -> bool {
        let ttl = self.settings().greet_pass_ttl;
        // A poisoned lock only means another connection panicked while holding it; the map is still valid.
        let passes = self
            .greet_passes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        passes.get(&ip).is_some_and(|at| at.elapsed() < ttl)
    }

    /// Remember that `ip` kept quiet through a whole greet pause. The map is bounded: when full, expired entries
    /// go, and if that is not enough, all of them.
    fn record_greet_pass(&self, ip: IpAddr) {
        let ttl = self.settings().greet_pass_ttl;
        if ttl.is_zero() {
            return;
        }
        let mut passes = self
            .greet_passes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if passes.len() >= MAX_GREET_PASSES && !passes.contains_key(&ip) {
            passes.retain(|_, at| at.elapsed() < ttl);
            if passes.len() >= MAX_GREET_PASSES {
                passes.clear();
            }
        }
        passes.insert(ip, Instant::now());
    }
}

/// Checks `settings` ([`ServerSettings::validate`]) and sets the engine's STARTTLS setting from the policy's
/// mode and the context's presence.
fn prepare(mut settings: ServerSettings) -> Result<ServerSettings, ServerError> {
    settings.validate()?;
    settings.smtp.starttls = match settings.policy.tls {
        ServerTlsMode::None => StartTlsPolicy::Disabled,
        ServerTlsMode::Require => StartTlsPolicy::Require,
        _ => StartTlsPolicy::Offer,
    };
    settings.smtp.tls_available = settings.tls.is_some();
    Ok(settings)
}

/// What [`ServerConnection::next`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An event of the engine, never `StartTls` or `Closing` (the driver handles those). Its *decisions*
    /// (`Hello`, `Mail`, `Rcpt`, `Vrfy`, `MessageEnd`) must be answered with [`ServerConnection::answer`]
    /// before `next` is called again; the others need no answer. A transaction ends with `MessageEnd`
    /// answered, `MessageRejected`, `Reset`, `Hello`, [`Event::TlsEstablished`] or [`Event::Closed`]: drop any
    /// content stored for it then.
    Session(ServerEvent),
    /// STARTTLS done: the handshake completed and the session forgot its state (RFC 3207 section 4.2). The
    /// TLS facts are in [`ServerConnection::info`].
    TlsEstablished,
    /// The connection is closed (the socket shut down); `next` has nothing more to report.
    Closed(CloseReason),
}

/// Misuse of a [`ServerConnection`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// `next` was called while a decision was still unanswered (the session would wait for ever).
    #[error("decision not answered")]
    Unanswered,
    /// `answer` was called with no decision pending.
    #[error("no decision to answer")]
    NoDecision,
    /// `next` was called after it reported [`Event::Closed`].
    #[error("connection closed")]
    Closed,
}

/// Where the driver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// A decision event was returned and not answered yet.
    Deciding,
    /// The engine accepted STARTTLS: send the `220`, then the handshake.
    StartTls,
    Closed,
}

/// One inbound SMTP connection, driven step by step (imap-next style): [`next`](Self::next) does the I/O, the
/// engine's timers and the STARTTLS handshake, and returns what the application must know or decide.
///
/// ```text
/// loop {
///     match conn.next().await? {
///         Event::Session(ServerEvent::Rcpt { to, .. }) => conn.answer(rules(conn.info(), &to))?,
///         Event::Session(ServerEvent::MessageEnd { .. }) => conn.answer(store().await)?,
///         Event::Session(e) if e.is_decision() => conn.answer(Verdict::Accept)?,
///         Event::Closed(_) => break,
///         _ => {}
///     }
/// }
/// ```
///
/// Replies go out in command order (RFC 2920 section 3.1): the session processes nothing more until a decision
/// is answered. Plaintext received after STARTTLS is handed to the engine, which discards and counts it, before
/// the bare socket goes to tokio-rustls (RFC 3207 section 4, CVE-2011-0411).
///
/// Cancelling `next` (dropping its future) is safe while it waits for input; cancelled while it writes, a reply
/// may be cut short: drop the connection then.
pub struct ServerConnection {
    endpoint: Endpoint,
    /// The settings this connection was opened with, kept to its end.
    settings: Arc<ServerSettings>,
    session: ServerSession,
    stream: Stream<TlsStream<TcpStream>>,
    /// Bytes read but not yet taken by the session.
    pending: Vec<u8>,
    /// The read buffer.
    buf: Vec<u8>,
    info: ConnectionInfo,
    force: watch::Receiver<bool>,
    /// The server's stress state, handed to the session before each wait.
    stress: watch::Receiver<bool>,
    state: State,
    /// The reason of the engine's `Closing` event (a connection that fails is `PeerClosed`).
    reason: CloseReason,
}

impl fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConnection")
            .field("info", &self.info)
            .field("session", &self.session)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Whether the engine waits for the application's answer to this event.
fn is_decision(event: &ServerEvent) -> bool {
    matches!(
        event,
        ServerEvent::Hello { .. }
            | ServerEvent::Mail { .. }
            | ServerEvent::Rcpt { .. }
            | ServerEvent::Vrfy(_)
            | ServerEvent::MessageEnd { .. }
    )
}

impl ServerConnection {
    /// What is known about the connection: peer, local address, TLS facts once STARTTLS succeeded.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The engine's session (read only: counters such as [`ServerSession::discarded_bytes`]).
    pub fn session(&self) -> &ServerSession {
        &self.session
    }

    /// Drive the connection until something happens that the application must know or decide. After
    /// [`Event::Closed`] it returns [`ConnectionError::Closed`].
    pub async fn next(&mut self) -> Result<Event, ConnectionError> {
        loop {
            match self.state {
                State::Deciding => return Err(ConnectionError::Unanswered),
                State::Closed => return Err(ConnectionError::Closed),
                State::Running | State::StartTls => {}
            }
            // 1. events.
            while let Some(event) = self.session.poll_event(Instant::now()) {
                match event {
                    ServerEvent::StartTls { discarded } => {
                        self.state = State::StartTls;
                        if discarded > 0 {
                            tracing::warn!(id = self.info.id, peer = %self.info.peer, discarded,
                                "plaintext after STARTTLS discarded (RFC 3207 section 4)");
                        }
                    }
                    ServerEvent::Closing(r) => self.reason = r,
                    other => {
                        if is_decision(&other) {
                            self.state = State::Deciding;
                        }
                        self.info.commands = self.session.command_counts();
                        return Ok(Event::Session(other));
                    }
                }
            }
            // 2. transmit.
            if let Err(e) = self.transmit().await {
                tracing::debug!(id = self.info.id, error = %e, "write failed");
                return Ok(self.closed(CloseReason::PeerClosed));
            }
            // 3. close, or handshake.
            if self.session.is_closed() {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
                return Ok(self.closed(self.reason));
            }
            if self.state == State::StartTls {
                self.state = State::Running;
                if let Err(r) = self.handshake().await {
                    return Ok(self.closed(r));
                }
                if self.info.tls.is_some() {
                    return Ok(Event::TlsEstablished);
                }
                continue;
            }
            // 4. input: buffered bytes first, then the socket, with the session's deadline.
            if !self.pending.is_empty() {
                let taken = self.session.handle_input(&self.pending);
                self.pending.drain(..taken);
                if taken == 0 {
                    // After its events are drained the session always has room (its buffer is at least twice a
                    // command line); should it not, close rather than buffer without bound.
                    tracing::error!(
                        id = self.info.id,
                        held = self.pending.len(),
                        "session takes no input"
                    );
                    self.session.handle_eof();
                }
                continue;
            }
            self.read().await;
        }
    }

    /// Answer the decision [`next`](Self::next) returned. A 2xx reply where the engine builds its own (EHLO)
    /// counts as [`Verdict::Accept`]; a refusal of the wrong class (a bug) becomes `451 4.3.0`.
    pub fn answer(&mut self, verdict: Verdict) -> Result<(), ConnectionError> {
        if self.state != State::Deciding {
            return Err(ConnectionError::NoDecision);
        }
        self.state = State::Running;
        let answered = match verdict {
            Verdict::Accept => self.session.accept(),
            Verdict::AcceptWith(reply) => match self.session.accept_with(reply) {
                Err(AnswerError::Unsupported) => self.session.accept(),
                other => other,
            },
            Verdict::Reject(reply) => match self.session.reject(reply) {
                // A reply of the wrong class is a handler bug: refuse rather than accept.
                Err(AnswerError::WrongReplyClass) => self.session.reject(internal_error()),
                other => other,
            },
        };
        if let Err(e) = answered {
            // Only decision events set `Deciding`, and each is answered exactly once.
            tracing::error!(id = self.info.id, error = %e, "answer not taken by the session");
        }
        Ok(())
    }

    /// The connection ended: remember a client that passed the greet pause, report `reason` once.
    fn closed(&mut self, reason: CloseReason) -> Event {
        self.state = State::Closed;
        self.info.commands = self.session.command_counts();
        if self.session.passed_greet_pause() {
            self.endpoint.record_greet_pass(self.info.peer.ip());
        }
        tracing::debug!(id = self.info.id, peer = %self.info.peer, ?reason, "disconnect");
        Event::Closed(reason)
    }

    async fn transmit(&mut self) -> io::Result<()> {
        let limit = self.settings.smtp.timeouts.command;
        while let Some(bytes) = self.session.poll_transmit() {
            match tokio::time::timeout(limit, self.stream.write_all(&bytes)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client does not read",
                    ));
                }
            }
        }
        self.stream.flush().await
    }

    async fn read(&mut self) {
        // The engine decides what stress changes (its deadline included); the driver only passes it on.
        let stressed = *self.stress.borrow_and_update();
        self.session.set_stress(stressed);
        let mut stress = self.stress.clone();
        let deadline = self.session.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut force = self.force.clone();
        let forced = async move {
            // An error means nobody can request a forced close any more: wait forever.
            if force.wait_for(|f| *f).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        /// What ended the wait.
        enum Woke {
            Forced,
            Timeout,
            Stress,
            Read(io::Result<usize>),
        }
        // In this order when several are ready (no `tokio::select!`: it needs tokio's `macros` feature).
        let woke = {
            let mut forced = pin!(forced);
            let mut sleep = pin!(sleep);
            let mut stress_open = true;
            let mut changed = pin!(stress.changed());
            let mut read = pin!(self.stream.read(&mut self.buf));
            poll_fn(|cx| {
                if forced.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Forced);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Timeout);
                }
                if stress_open {
                    match changed.as_mut().poll(cx) {
                        Poll::Ready(Ok(())) => return Poll::Ready(Woke::Stress),
                        // The server is gone; the other futures still end the wait.
                        Poll::Ready(Err(_)) => stress_open = false,
                        Poll::Pending => {}
                    }
                }
                read.as_mut().poll(cx).map(Woke::Read)
            })
            .await
        };
        match woke {
            Woke::Read(Ok(0) | Err(_)) => self.session.handle_eof(),
            Woke::Read(Ok(n)) => {
                let taken = self.session.handle_input(&self.buf[..n]);
                self.pending.extend_from_slice(&self.buf[taken..n]);
            }
            Woke::Timeout => self.session.handle_timeout(Instant::now()),
            // Stress began or ended: wait again with the deadline the session recomputes.
            Woke::Stress => {}
            Woke::Forced => {
                // RFC 5321 3.8: a server shutting down answers 421.
                let reply = fixed(
                    421,
                    (4, 3, 2),
                    &format!("{} Service shutting down", self.settings.smtp.hostname),
                );
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    self.stream.write_all(&reply.to_bytes()),
                )
                .await;
                self.session.handle_eof();
            }
        }
    }

    /// After `220 Ready to start TLS` was sent: discard any plaintext still held, handshake, tell the session.
    async fn handshake(&mut self) -> Result<(), CloseReason> {
        // RFC 3207 section 4 (CVE-2011-0411): the session throws away (counts) plaintext handed to it now.
        let held = std::mem::take(&mut self.pending);
        let _ = self.session.handle_input(&held);
        if self.session.discarded_bytes() > 0 {
            tracing::warn!(id = self.info.id, peer = %self.info.peer, total = self.session.discarded_bytes(),
                "plaintext received after STARTTLS dropped before the TLS handshake");
        }
        if self.session.is_closed() {
            // `AfterStartTls::Close`: the loop drains the Closing event and closes.
            return Ok(());
        }
        let Some(ctx) = &self.settings.tls else {
            // The engine only accepts STARTTLS when `tls_available`, set from the context's presence.
            return Err(CloseReason::Application);
        };
        let Some(tcp) = self.stream.take_plain() else {
            return Err(CloseReason::Application);
        };
        let started = Instant::now();
        let accept = TlsAcceptor::from(ctx.config()).accept(tcp);
        let tls = match tokio::time::timeout(self.settings.handshake_timeout, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.info.tls_handshake_failed = true;
                tracing::info!(
                    id = self.info.id,
                    "TLS handshake failed from unknown[{}]: {}",
                    self.info.peer.ip(),
                    postern_certs::describe_tls_error(&e)
                );
                return Err(CloseReason::PeerClosed);
            }
            Err(_) => {
                self.info.tls_handshake_failed = true;
                tracing::info!(
                    id = self.info.id,
                    "TLS handshake timed out from unknown[{}]",
                    self.info.peer.ip()
                );
                return Err(CloseReason::Timeout);
            }
        };
        let handshake_time = started.elapsed();
        let (_, conn) = tls.get_ref();
        let (version, cipher) = negotiated(conn);
        let described = postfix_cipher(conn);
        let client_certificate = ctx.client_certificate(conn.peer_certificates(), UnixTime::now());
        let trust = client_certificate
            .as_ref()
            .map_or(postern_policy::PeerTrust::Anonymous, |c| c.check.trust);
        // Postfix's summary line (smtpd_tls_loglevel = 1).
        tracing::info!(
            id = self.info.id,
            "{trust} TLS connection established from unknown[{}]: {version} with cipher {described}",
            self.info.peer.ip()
        );
        if let Some(c) = &client_certificate {
            tracing::info!(id = self.info.id, subject = %c.subject, issuer = %c.issuer, fingerprint = %c.fingerprint,
                trust = %c.check.trust, "client certificate");
        }
        let info = TlsInfo {
            version,
            cipher,
            client_certificate,
            handshake_time,
        };
        let check = info.client_check();
        self.info.tls = Some(info);
        self.stream = Stream::Tls(Box::new(tls));
        // The policy decides whether the client failed a required authentication; the session refuses its
        // commands (RFC 3207 section 4.1: the handshake completes whatever the client presents, so that the
        // client reads why it is refused instead of a TLS alert).
        let refusal = match self.settings.policy.client_certificate_verdict(&check) {
            CommandVerdict::Allow => None,
            CommandVerdict::Reject { code, status, text } => {
                Some(negative_reply(code, status, text))
            }
            _ => Some(fixed(554, (5, 7, 1), "Client certificate required")),
        };
        if self.settings.policy.client_certificates == ClientCertMode::Require && refusal.is_some()
        {
            let why = if self.info.client_certificate().is_some() {
                "client certificate not verified"
            } else {
                "no client certificate presented"
            };
            tracing::warn!(
                id = self.info.id,
                "client certificate required from unknown[{}]: {why}; commands refused with 554 5.7.1",
                self.info.peer.ip()
            );
        }
        // The session was waiting for exactly this (StartTls event); RFC 3207 4.2: it forgets all state.
        let established = match refusal {
            None => self.session.handle_tls_established(),
            Some(reply) => self.session.handle_tls_established_refusing(reply),
        };
        if established.is_err() {
            return Err(CloseReason::Application);
        }
        Ok(())
    }
}
