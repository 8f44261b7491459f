//! The policy-driven delivery attempt, sans I/O: one outbound attempt to one next hop, as a state machine that
//! owns the [`postern_smtp::ClientSession`] and the connection's [`postern_policy::ConnectionPolicy`] and
//! talks to its driver in events.
//!
//! # What it is for
//!
//! This is where the project's most important rule lives: under a policy that requires TLS, no MAIL, RCPT,
//! DATA or message octet ever crosses in plaintext. An MTA with its own I/O (tokio or not, its own queue)
//! drives an [`Attempt`] and gets the STARTTLS policy enforced exactly as `postern-tokio` and the example
//! relay do, because they drive the same type. Nothing here reads a socket or the clock, or runs TLS: the
//! driver moves bytes, runs the handshake with the [`TlsParams`] it is given, and reports the outcome.
//!
//! # Design
//!
//! The engine (`postern-smtp`) knows SMTP; the policy (`postern-policy`) knows what each step of a session
//! means under the configured mode, DANE, MTA-STS and REQUIRETLS. The attempt is the only code that feeds the
//! session's events to the policy's step methods ([`ConnectionPolicy::on_ehlo`],
//! [`ConnectionPolicy::on_starttls_reply`], [`ConnectionPolicy::on_handshake`], …) and carries out the
//! decision: STARTTLS, plaintext, QUIT and defer, or a new plaintext connection. It also sets the engine's
//! [`ClientConfig::require_tls`] from [`ConnectionPolicy::requires_tls`], a second line of defence inside the
//! engine. The session's facts are recorded ([`Done::facts`]) so a probe can ask what other policies would
//! have decided with [`ConnectionPolicy::evaluate`], which replays the same step methods.
//!
//! The attempt's behaviour is explored exhaustively (up to a bound, see `tests/exploration.rs` and
//! `docs/security.md`) over every next-hop behaviour, and fuzzed (`fuzz/fuzz_targets/delivery_attempt.rs`).
//!
//! # Example
//!
//! A driver loop over an in-memory next hop that offers STARTTLS; the "handshake" is the driver's and
//! succeeds with an untrusted certificate, which the default opportunistic mode accepts.
//!
//! ```
//! use std::time::Instant;
//! use postern_attempt::{Attempt, Event, HandshakeResult, Outcome};
//! use postern_policy::{CertificateCheck, DestinationPolicy, NextHop, OutboundPolicy, PeerTrust, TlsVersion};
//! use postern_smtp::{ClientConfig, Envelope, ForwardPath, ReversePath};
//!
//! let policy = OutboundPolicy::new(DestinationPolicy::default())
//!     .connection(&NextHop::parse("example.org")?, Some(&"mx.example.org".parse()?));
//! let envelope = Envelope::new(ReversePath::parse("<a@example.net>")?, [ForwardPath::parse("<b@example.org>")?]);
//! let now = Instant::now();
//! let mut attempt = Attempt::new(policy, ClientConfig::new("client.example.net"), envelope, b"Hi\r\n".to_vec(), now);
//!
//! // The next hop's replies, in order (a real driver reads them from the socket).
//! let mut replies = [
//!     &b"220 mx.example.org ESMTP\r\n"[..],
//!     b"250-mx.example.org\r\n250 STARTTLS\r\n",
//!     b"220 2.0.0 Ready to start TLS\r\n",
//!     b"250-mx.example.org\r\n250 PIPELINING\r\n",
//!     b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
//!     b"250 2.0.0 Ok: queued\r\n",
//!     b"221 2.0.0 Bye\r\n",
//! ]
//! .into_iter();
//! let mut sent = Vec::new();
//! let done = loop {
//!     // Drain the events first; then wait for input (a real driver also waits for `poll_timeout`).
//!     match attempt.poll_event(now) {
//!         Some(Event::Transmit(bytes)) => sent.extend(bytes),
//!         Some(Event::StartTls(params)) => {
//!             assert_eq!(params.server_name, "mx.example.org");
//!             // Run the handshake with `params`, then report it.
//!             let certificate = CertificateCheck::failed(PeerTrust::Untrusted, postern_policy::CertificateFailure::NotTrusted);
//!             attempt.handle_tls(HandshakeResult::Established {
//!                 version: TlsVersion::Tls13,
//!                 cipher: "TLS13_AES_128_GCM_SHA256".into(),
//!                 certificate,
//!                 peer_certificates: Vec::new(),
//!             })?;
//!         }
//!         Some(Event::RetryPlaintext(_)) => unreachable!("the handshake succeeded"),
//!         Some(Event::Done(done)) => break done,
//!         Some(_) => {} // `Decided`: for the logs
//!         None => match replies.next() {
//!             Some(reply) => { let _ = attempt.handle_input(reply); }
//!             None => attempt.handle_eof(),
//!         },
//!     }
//! };
//! assert_eq!(done.outcome, Outcome::Delivered);
//! assert!(done.tls.is_some());
//! assert!(String::from_utf8(sent)?.contains("STARTTLS\r\nEHLO client.example.net\r\nMAIL FROM:<a@example.net>"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

mod result;

use rustls_pki_types::CertificateDer;
use std::collections::VecDeque;
use std::time::Instant;

use postern_policy::{
    Action, Authentication, CertificateCheck, CertificateFailure, ClientTlsMode, Close,
    ConnectionPolicy, Decision, EnhancedStatus, Fingerprint, HandshakeOutcome, Host, NamePattern,
    NextHop, SessionFacts, TlsRequirement, TlsVersion, TlsaRecord,
};
use postern_smtp::{
    ClientCloseReason, ClientConfig, ClientEvent, ClientSession, Command, Envelope, ForwardPath,
    Reply, TransactionReport, UnexpectedTls,
};

pub use result::{DeliveryFailure, DeliveryResult, Done, Outcome, TlsSummary};

/// What the TLS handshake must check: the driver builds its TLS client from these (with postern-certs:
/// a `ClientTlsSpec` field by field) and reports the result with [`Attempt::handle_tls`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsParams {
    /// The name to send as SNI and the default name to match (the MX host, else the next hop's host).
    pub server_name: String,
    /// How the certificate verifier works: `opportunistic` and `encrypt` record the check and never refuse;
    /// `verify`, `secure`, `mta-sts` check a chain and `match_names`; `fingerprint` the pins; `dane` and
    /// `dane-only` the TLSA records.
    pub mode: ClientTlsMode,
    /// Names the certificate must match (`.example.com` for any subdomain); empty: `server_name`.
    pub match_names: Vec<String>,
    /// SHA-256 pins (`fingerprint`).
    pub pins: Vec<Fingerprint>,
    /// TLSA records and the names a DANE-TA(2) certificate may carry (RFC 7672 section 3.1, RFC 7671
    /// section 10.2): the MX host, then the next-hop domain.
    pub dane: Option<(Vec<TlsaRecord>, Vec<String>)>,
    /// A PEM file of trust anchors to use instead of the driver's.
    pub trust_anchors: Option<String>,
    /// The lowest TLS version to offer.
    pub min_version: TlsVersion,
    /// Record the check, never refuse the handshake over it (an MTA-STS `testing` policy reports failures
    /// instead of enforcing them).
    pub dangerous_report_only: bool,
    /// Octets that followed the `220` to STARTTLS and were discarded, never read as a reply.
    pub discarded: u64,
}

/// How the driver's TLS handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeResult {
    /// TLS is up.
    Established {
        /// The negotiated version.
        version: TlsVersion,
        /// The negotiated cipher suite.
        cipher: String,
        /// The check of the peer's certificate against [`TlsParams`].
        certificate: CertificateCheck,
        /// The peer's certificate chain as sent (its own certificate first),
        /// for logs and reports ([`TlsSummary::peer_certificates`]).
        peer_certificates: Vec<CertificateDer<'static>>,
    },
    /// The handshake failed (or timed out); the connection is unusable.
    Failed {
        /// The certificate failure that aborted the handshake, if that was the cause.
        certificate: Option<CertificateFailure>,
    },
}

/// The step of the session a [`Event::Decided`] decision was taken at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// After the plaintext EHLO (or HELO) reply.
    Ehlo,
    /// After a refusal of STARTTLS, with the server's reply.
    StartTlsRefused(Reply),
    /// After the bytes that followed the `220` to STARTTLS made the session abort
    /// ([`postern_smtp::AfterStartTls::Close`]).
    BytesAfterStartTls {
        /// The octets that followed the `220`.
        discarded: usize,
    },
    /// After the TLS handshake.
    Handshake,
    /// After the EHLO reply inside TLS.
    TlsEhlo,
    /// After the EHLO reply on the new plaintext connection.
    PlaintextRetry,
}

/// What the driver must do next; see [`Attempt`] for the order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Send these bytes on the connection (over TLS once the handshake is done).
    Transmit(Vec<u8>),
    /// Run the TLS handshake on the connection now, with these parameters, then call
    /// [`Attempt::handle_tls`]. Do not read plaintext any more: bytes already read were discarded.
    StartTls(TlsParams),
    /// The policy decided at this step (for logs; nothing to do).
    Decided {
        /// Where.
        step: Step,
        /// What, and why.
        decision: Decision,
    },
    /// Close this connection, open a new one to the same address and call [`Attempt::handle_reconnected`]:
    /// opportunistic TLS after a failed handshake, where the policy allows plaintext.
    RetryPlaintext(Decision),
    /// The attempt is over: close the connection. Nothing follows.
    Done(Box<Done>),
}

/// Which connection of the attempt this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first connection: STARTTLS when the policy says so.
    First,
    /// The TLS handshake is due (the driver runs it).
    Handshake,
    /// Waiting for the driver to open the new plaintext connection.
    Reconnecting,
    /// The new plaintext connection after a failed handshake: no STARTTLS.
    PlaintextRetry,
    /// Done was emitted with the connection kept open ([`Attempt::keep_open`]): waiting for
    /// [`Attempt::next_message`] or [`Attempt::quit`].
    Idle,
    /// Done was emitted.
    Finished,
}

/// One outbound delivery attempt to one next hop, sans I/O.
///
/// # Contract
///
/// Inputs: [`handle_input`](Self::handle_input) (bytes from the next hop), [`handle_eof`](Self::handle_eof),
/// [`handle_timeout`](Self::handle_timeout), [`handle_tls`](Self::handle_tls) (after [`Event::StartTls`]) and
/// [`handle_reconnected`](Self::handle_reconnected) (after [`Event::RetryPlaintext`]). Outputs:
/// [`poll_event`](Self::poll_event) and [`poll_timeout`](Self::poll_timeout). After every input, drain
/// `poll_event` until it returns `None` — carrying out each event in order: [`Event::Transmit`] comes before
/// the events that follow it, so a QUIT is written before [`Event::Done`] — then wait for input with
/// `poll_timeout` as the deadline. Time is passed in; the attempt never reads the clock.
///
/// The driver connects first (the policy's [`before_connect`](Self::before_connect) may say there is no point),
/// never reads plaintext after [`Event::StartTls`], and runs the handshake itself (with its own timeout;
/// no deadline runs meanwhile).
///
/// ```no_run
/// # use std::time::Instant;
/// # use postern_attempt::{Attempt, Event, HandshakeResult};
/// # fn read(_: Option<Instant>) -> Option<Vec<u8>> { None }
/// # fn write(_: &[u8]) {}
/// # fn handshake(_: &postern_attempt::TlsParams) -> HandshakeResult { todo!() }
/// # fn reconnect() {}
/// # fn run(mut attempt: Attempt) -> Result<(), postern_smtp::UnexpectedTls> {
/// loop {
///     while let Some(event) = attempt.poll_event(Instant::now()) {
///         match event {
///             Event::Transmit(bytes) => write(&bytes),
///             Event::StartTls(params) => attempt.handle_tls(handshake(&params))?,
///             Event::RetryPlaintext(_) => { reconnect(); attempt.handle_reconnected(Instant::now()) }
///             Event::Done(done) => return Ok(()),
///             _ => {}
///         }
///     }
///     match read(attempt.poll_timeout()) {
///         Some(bytes) if bytes.is_empty() => attempt.handle_eof(),
///         Some(bytes) => { let _ = attempt.handle_input(&bytes); }
///         None => attempt.handle_timeout(Instant::now()),
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Attempt {
    policy: ConnectionPolicy,
    config: ClientConfig,
    session: ClientSession,
    /// The message, until handed to the session (`None` for a probe).
    mail: Option<(Envelope, Vec<u8>)>,
    probe: bool,
    recipients: Vec<ForwardPath>,
    phase: Phase,
    /// Bytes written outside the session: the QUIT inside TLS after a refused certificate.
    output: Vec<u8>,
    events: VecDeque<Event>,
    decision: Option<Decision>,
    tls: Option<TlsSummary>,
    report: Option<TransactionReport>,
    failure: Option<DeliveryFailure>,
    facts: SessionFacts,
    server_name: String,
    plaintext_retry: bool,
    /// Keep the connection open after a completed transaction.
    keep_open: bool,
    /// The messages handed to this connection so far.
    uses: u32,
}

/// Why [`Attempt::next_message`] refused a message: send it on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReusable {
    /// The connection is not idle after a completed transaction (it was not kept open, or it is closed).
    #[error("connection not idle")]
    NotIdle,
    /// The message's connection policy is not the one this connection was opened and judged under.
    #[error("connection opened under another policy")]
    OtherPolicy,
}

impl Attempt {
    /// An attempt to deliver `message` for `envelope` under `policy`, on a connection just opened (the
    /// greeting is awaited until `now` + the command timeout).
    pub fn new(
        policy: ConnectionPolicy,
        config: ClientConfig,
        envelope: Envelope,
        message: Vec<u8>,
        now: Instant,
    ) -> Self {
        let recipients = envelope.recipients.iter().map(|(r, _)| r.clone()).collect();
        Self::open(policy, config, Some((envelope, message)), recipients, now)
    }

    /// A probe: the same steps, but where the message would be sent the attempt QUITs instead ([`Done`]
    /// then says what the policy decided, with no recipients). It never retries on a new connection.
    pub fn probe(policy: ConnectionPolicy, config: ClientConfig, now: Instant) -> Self {
        Self::open(policy, config, None, Vec::new(), now)
    }

    fn open(
        policy: ConnectionPolicy,
        mut config: ClientConfig,
        mail: Option<(Envelope, Vec<u8>)>,
        recipients: Vec<ForwardPath>,
        now: Instant,
    ) -> Self {
        config.require_tls = policy.requires_tls();
        let server_name = server_name(&policy);
        Self {
            session: ClientSession::new(config.clone(), now),
            config,
            probe: mail.is_none(),
            mail,
            recipients,
            phase: Phase::First,
            output: Vec::new(),
            events: VecDeque::new(),
            decision: None,
            tls: None,
            report: None,
            failure: None,
            facts: SessionFacts::default(),
            server_name,
            policy,
            plaintext_retry: false,
            keep_open: false,
            uses: 1,
        }
    }

    /// Keep the connection open after a completed transaction (connection reuse, Postfix's connection
    /// cache): [`Event::Done`] then says [`Done::connection_open`], and the driver may hand the same connection
    /// the next message for this next hop with [`next_message`](Self::next_message), or end it with
    /// [`quit`](Self::quit). A probe ignores it.
    #[must_use]
    pub fn keep_open(mut self) -> Self {
        self.keep_open = !self.probe;
        self
    }

    /// The messages handed to this connection so far (1, then 2 after a [`next_message`](Self::next_message), …).
    pub fn connection_use(&self) -> u32 {
        self.uses
    }

    /// Whether the connection is idle after a completed transaction, kept open for another message.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle && self.session.is_ready()
    }

    /// Another message on this idle connection, as a new attempt under `policy` (the message's own
    /// connection policy). Refused unless the connection is [idle](Self::is_idle) and `policy` is the very
    /// policy this connection was opened and judged under — same destination settings, MX name, DANE and
    /// MTA-STS facts, and message requirement (REQUIRETLS): a reused connection carries only messages whose
    /// policy it satisfied. The message goes at once (`MAIL` is the next command); drain
    /// [`poll_event`](Self::poll_event) as after any input. The [`Done`] of this message carries the
    /// connection's TLS facts and decision.
    pub fn next_message(
        &mut self,
        policy: &ConnectionPolicy,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> Result<(), NotReusable> {
        if !self.is_idle() {
            return Err(NotReusable::NotIdle);
        }
        if *policy != self.policy {
            return Err(NotReusable::OtherPolicy);
        }
        self.recipients = envelope.recipients.iter().map(|(r, _)| r.clone()).collect();
        self.mail = Some((envelope, message));
        self.report = None;
        self.failure = None;
        self.uses += 1;
        self.phase = if self.plaintext_retry {
            Phase::PlaintextRetry
        } else {
            Phase::First
        };
        // The checks of a first message apply again (TLS required and active, the extensions it needs).
        self.send();
        Ok(())
    }

    /// Ends an idle connection: returns the `QUIT` to write before closing it (its reply need not be
    /// awaited); `None` when the connection is not idle. Nothing follows.
    pub fn quit(&mut self) -> Option<Vec<u8>> {
        if self.phase != Phase::Idle {
            return None;
        }
        self.phase = Phase::Finished;
        self.session.quit().ok()?;
        self.session.poll_transmit()
    }

    /// Before connecting: `Some` when the policy says this next hop cannot be used (for example a DANE
    /// lookup failure, or an MX host outside the MTA-STS policy): the attempt is over without a connection.
    pub fn before_connect(policy: &ConnectionPolicy, envelope: &Envelope) -> Option<Done> {
        let decision = policy.before_connect();
        let failure = DeliveryFailure::policy(decision.action.failure()?, &decision);
        let recipients: Vec<_> = envelope.recipients.iter().map(|(r, _)| r.clone()).collect();
        let mut done = Done::undelivered(&recipients, failure, SessionFacts::default());
        done.decision = Some(decision);
        Some(done)
    }

    /// The connection's policy.
    pub fn policy(&self) -> &ConnectionPolicy {
        &self.policy
    }

    /// The name sent as SNI and checked.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Bytes received from the next hop; returns how many were taken (offer the rest again after draining
    /// events). Bytes received between the `220` to STARTTLS and the handshake are discarded, never read.
    #[must_use = "bytes not taken must be offered again after draining events"]
    pub fn handle_input(&mut self, data: &[u8]) -> usize {
        match self.phase {
            Phase::Finished | Phase::Reconnecting => data.len(),
            _ => self.session.handle_input(data),
        }
    }

    /// The next hop closed the connection (or a read or write failed).
    pub fn handle_eof(&mut self) {
        if !matches!(self.phase, Phase::Finished | Phase::Reconnecting) {
            self.session.handle_eof();
        }
    }

    /// The deadline for the next hop's next reply, if one is awaited (none during the handshake).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::First | Phase::PlaintextRetry => self.session.poll_timeout(),
            _ => None,
        }
    }

    /// Time passed: past the deadline the session closes and the attempt defers (4.4.2).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::First | Phase::PlaintextRetry) {
            self.session.handle_timeout(now);
        }
    }

    /// The new plaintext connection after [`Event::RetryPlaintext`] is open.
    pub fn handle_reconnected(&mut self, now: Instant) {
        if self.phase != Phase::Reconnecting {
            return;
        }
        self.session = ClientSession::new(self.config.clone(), now);
        self.phase = Phase::PlaintextRetry;
        self.plaintext_retry = true;
        self.tls = None;
    }

    /// The handshake after [`Event::StartTls`] ended. The policy judges it: go on inside TLS (EHLO again,
    /// RFC 3207 section 4.2), QUIT and defer, give up the connection, or retry on a new plaintext one.
    pub fn handle_tls(&mut self, result: HandshakeResult) -> Result<(), UnexpectedTls> {
        if self.phase != Phase::Handshake {
            return Err(UnexpectedTls);
        }
        self.phase = Phase::First;
        let outcome = match &result {
            HandshakeResult::Established {
                version,
                certificate,
                ..
            } => HandshakeOutcome::Established {
                version: *version,
                certificate: *certificate,
            },
            HandshakeResult::Failed { certificate } => HandshakeOutcome::Failed {
                certificate: *certificate,
            },
        };
        self.facts = self.facts.with_handshake(outcome);
        let decision = self.policy.on_handshake(outcome);
        self.decided(Step::Handshake, &decision);
        if let HandshakeResult::Established {
            version,
            cipher,
            certificate,
            peer_certificates,
        } = result
        {
            self.tls = Some(TlsSummary {
                server_name: self.server_name.clone(),
                version,
                cipher,
                certificate,
                peer_certificates,
                explanation: decision.to_string(),
                discarded_before_handshake: self.session.discarded_bytes(),
            });
        }
        match (&decision.action, decision.action.failure()) {
            (Action::ContinueTls, _) => {
                // RFC 3207 4.2: the session forgets everything and sends EHLO again.
                self.session.handle_tls_established()?;
            }
            (Action::RetryPlaintextNewConnection, _) => self.retry(decision),
            (_, Some(f)) => {
                if f.close == Close::Quit {
                    // Inside TLS, outside the session (which waits for the handshake): QUIT.
                    self.output.extend_from_slice(&Command::Quit.to_bytes());
                }
                self.failure = Some(DeliveryFailure::policy(f, &decision));
                self.finish(None);
            }
            (other, None) => {
                self.failure = Some(DeliveryFailure::local(
                    EnhancedStatus::SYSTEM_TEMPORARY,
                    &format!("unexpected policy action: {other}"),
                ));
                self.finish(None);
            }
        }
        Ok(())
    }

    /// The next thing for the driver to do; `None`: wait for input or the deadline.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        loop {
            if !self.output.is_empty() {
                return Some(Event::Transmit(std::mem::take(&mut self.output)));
            }
            if matches!(self.phase, Phase::First | Phase::PlaintextRetry)
                && let Some(bytes) = self.session.poll_transmit()
            {
                return Some(Event::Transmit(bytes));
            }
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if !matches!(self.phase, Phase::First | Phase::PlaintextRetry) {
                return None;
            }
            match self.session.poll_event(now) {
                Some(event) => self.on_session_event(event),
                // A reply may have produced output without an event (EHLO after the greeting).
                None => return self.session.poll_transmit().map(Event::Transmit),
            }
        }
    }

    fn decided(&mut self, step: Step, decision: &Decision) {
        self.decision = Some(decision.clone());
        self.events.push_back(Event::Decided {
            step,
            decision: decision.clone(),
        });
    }

    fn on_session_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Ready {
                capabilities,
                tls_active,
                ..
            } => {
                let (step, decision) = if tls_active {
                    self.facts = self
                        .facts
                        .with_requiretls_advertised(capabilities.requiretls);
                    (
                        Step::TlsEhlo,
                        self.policy.on_tls_ehlo(capabilities.requiretls),
                    )
                } else if self.phase == Phase::PlaintextRetry {
                    (Step::PlaintextRetry, self.policy.on_plaintext_retry())
                } else {
                    self.facts = self.facts.with_starttls_offered(capabilities.starttls);
                    (Step::Ehlo, self.policy.on_ehlo(capabilities.starttls))
                };
                self.decided(step, &decision);
                match &decision.action {
                    Action::StartTls => {
                        if self.session.start_tls().is_err() {
                            self.quit_with(DeliveryFailure::local(
                                EnhancedStatus::TLS_NOT_AVAILABLE,
                                "STARTTLS not possible",
                            ));
                        }
                    }
                    Action::ContinuePlaintext | Action::ContinueTls => self.send(),
                    other => self.stop(other.clone(), &decision),
                }
            }
            ClientEvent::StartTlsRefused(reply) => {
                self.facts = self.facts.with_starttls_reply(reply.code().value());
                let decision = self.policy.on_starttls_reply(reply.code().value());
                self.decided(Step::StartTlsRefused(reply.clone()), &decision);
                match &decision.action {
                    Action::ContinuePlaintext => self.send(),
                    other => {
                        self.stop(other.clone(), &decision);
                        if let Some(f) = &mut self.failure {
                            f.reply = Some(reply);
                        }
                    }
                }
            }
            ClientEvent::StartTls { discarded } => {
                self.facts = self.facts.with_starttls_reply(220);
                match self.tls_params(discarded as u64) {
                    Ok(params) => {
                        self.phase = Phase::Handshake;
                        self.events.push_back(Event::StartTls(params));
                    }
                    Err(f) => {
                        // The session waits for a handshake that will not happen: give up the connection.
                        self.failure = Some(f);
                        self.session.handle_eof();
                    }
                }
            }
            ClientEvent::TransactionDone(report) => {
                if self.keep_open && self.session.is_ready() {
                    // The connection stays, at the decision point, for the next message.
                    let mut done = self.done_of(report);
                    done.tls.clone_from(&self.tls);
                    done.decision.clone_from(&self.decision);
                    done.plaintext_retry = self.plaintext_retry;
                    done.connection_open = true;
                    self.phase = Phase::Idle;
                    self.events.push_back(Event::Done(Box::new(done)));
                } else {
                    self.report = Some(report);
                    let _ = self.session.quit();
                }
            }
            ClientEvent::Closed(reason) => self.finish(Some(reason)),
            _ => {}
        }
    }

    /// At the decision point, with the policy's go-ahead: hand the message over (a probe QUITs here).
    fn send(&mut self) {
        if self.policy.requires_tls() && !self.session.is_tls_active() {
            self.quit_with(DeliveryFailure::tls_required());
            return;
        }
        let Some((envelope, message)) = self.mail.take() else {
            if !self.probe {
                self.failure = Some(DeliveryFailure::local(
                    EnhancedStatus::SYSTEM_TEMPORARY,
                    "message already sent",
                ));
            }
            let _ = self.session.quit();
            return;
        };
        if let Err(e) = self.session.send_mail(envelope, message) {
            self.quit_with(DeliveryFailure::not_sent(&e));
        }
    }

    fn quit_with(&mut self, failure: DeliveryFailure) {
        self.failure = Some(failure);
        let _ = self.session.quit();
    }

    /// A policy `Defer` / `Bounce` before the transaction: end the session as the failure says.
    fn stop(&mut self, action: Action, decision: &Decision) {
        let Some(f) = action.failure() else {
            self.quit_with(DeliveryFailure::local(
                EnhancedStatus::SYSTEM_TEMPORARY,
                &format!("unexpected policy action: {action}"),
            ));
            return;
        };
        self.failure = Some(DeliveryFailure::policy(f, decision));
        match f.close {
            // The session closes after the 221.
            Close::Quit => {
                let _ = self.session.quit();
            }
            Close::Drop | Close::NotConnected => self.session.handle_eof(),
            // A way of closing this version does not know: the safest, without another command.
            _ => self.session.handle_eof(),
        }
    }

    /// The policy asks for a new plaintext connection (never for a probe).
    fn retry(&mut self, decision: Decision) {
        if self.probe || self.phase == Phase::PlaintextRetry {
            self.failure = Some(DeliveryFailure::local(
                EnhancedStatus::BAD_CONNECTION,
                "plaintext retry not possible",
            ));
            self.finish(None);
            return;
        }
        self.phase = Phase::Reconnecting;
        self.events.push_back(Event::RetryPlaintext(decision));
    }

    /// The session closed: the attempt is over (or, after bytes that followed the `220` to STARTTLS, the
    /// policy may ask for a new plaintext connection).
    fn finish(&mut self, reason: Option<ClientCloseReason>) {
        if matches!(self.phase, Phase::Finished | Phase::Reconnecting) {
            return;
        }
        if let Some(ClientCloseReason::StartTlsInjection { discarded }) = &reason
            && self.report.is_none()
            && self.failure.is_none()
        {
            self.facts = self.facts.with_bytes_after_starttls_reply();
            let decision = self.policy.on_bytes_after_starttls_reply();
            self.decided(
                Step::BytesAfterStartTls {
                    discarded: *discarded,
                },
                &decision,
            );
            match decision.action.failure() {
                Some(f) => self.failure = Some(DeliveryFailure::policy(f, &decision)),
                None => return self.retry(decision),
            }
        }
        self.phase = Phase::Finished;
        let mut done = match self.report.take() {
            Some(report) => self.done_of(report),
            None if self.probe
                && self.failure.is_none()
                && reason == Some(ClientCloseReason::Quit) =>
            {
                // A probe that reached the point of sending and QUIT.
                Done {
                    recipients: Vec::new(),
                    outcome: Outcome::Delivered,
                    tls: None,
                    decision: None,
                    failure: None,
                    facts: self.facts,
                    plaintext_retry: false,
                    handed_over: false,
                    connection_open: false,
                    connection_use: self.uses,
                }
            }
            None => {
                let failure = self.failure.take().unwrap_or_else(|| {
                    reason.as_ref().map_or_else(
                        || {
                            DeliveryFailure::local(
                                EnhancedStatus::BAD_CONNECTION,
                                "connection lost",
                            )
                        },
                        DeliveryFailure::closed,
                    )
                });
                let mut done = Done::undelivered(&self.recipients, failure, self.facts);
                done.connection_use = self.uses;
                done
            }
        };
        done.tls = self.tls.take();
        done.decision = self.decision.take();
        done.plaintext_retry = self.plaintext_retry;
        self.events.push_back(Event::Done(Box::new(done)));
    }

    /// The [`Done`] of a transaction that ran (TLS facts and decision are the caller's to add).
    fn done_of(&self, report: TransactionReport) -> Done {
        let failure = report
            .data_reply
            .as_ref()
            .or(report.mail_reply.as_ref())
            .filter(|r| !r.code().is_positive())
            .map(|r| DeliveryFailure::reply(r, "message refused"));
        Done {
            outcome: Done::outcome_of(&report.recipients, failure.as_ref()),
            recipients: report.recipients,
            tls: None,
            decision: None,
            failure,
            facts: self.facts,
            plaintext_retry: false,
            handed_over: true,
            connection_open: false,
            connection_use: self.uses,
        }
    }

    /// The handshake's parameters, from the policy's requirement.
    fn tls_params(&self, discarded: u64) -> Result<TlsParams, DeliveryFailure> {
        let mut params = TlsParams::for_policy(&self.policy, &self.server_name)?;
        params.discarded = discarded;
        Ok(params)
    }
}

impl TlsParams {
    /// What a handshake under `policy` with `server_name` (SNI, first reference identifier) must check: the
    /// parameters an [`Attempt`] hands its driver with [`Event::StartTls`] (nothing discarded). A probe judging
    /// a chain as a configured policy would uses the same. `Err`: an authentication method this client does
    /// not have.
    pub fn for_policy(
        policy: &ConnectionPolicy,
        server_name: &str,
    ) -> Result<Self, DeliveryFailure> {
        let mut params = Self {
            server_name: server_name.to_owned(),
            mode: ClientTlsMode::Opportunistic,
            match_names: Vec::new(),
            pins: Vec::new(),
            dane: None,
            trust_anchors: policy.trust_anchors().map(str::to_owned),
            min_version: policy.min_tls_version(),
            dangerous_report_only: !policy.enforced(),
            discarded: 0,
        };
        match policy.requirement() {
            TlsRequirement::Encrypt => params.mode = ClientTlsMode::Encrypt,
            TlsRequirement::Authenticated(Authentication::Pkix { names }) => {
                params.mode = match policy.settings().tls {
                    mode @ (ClientTlsMode::Secure | ClientTlsMode::MtaSts) => mode,
                    _ => ClientTlsMode::Verify,
                };
                params.match_names = names
                    .iter()
                    .map(|n| match n {
                        NamePattern::Exact(name) => name.to_string(),
                        NamePattern::Subdomains(name) => format!(".{name}"),
                    })
                    .collect();
            }
            TlsRequirement::Authenticated(Authentication::Pins(pins)) => {
                params.mode = ClientTlsMode::Fingerprint;
                params.pins = pins;
            }
            TlsRequirement::Authenticated(Authentication::Dane(records)) => {
                params.mode = match policy.settings().tls {
                    ClientTlsMode::DaneOnly => ClientTlsMode::DaneOnly,
                    _ => ClientTlsMode::Dane,
                };
                // RFC 7672 section 8.1: the SNI is the TLSA base domain, the MX host. RFC 7671 section 10.2:
                // it is the primary reference identifier of DANE-TA(2) name checks, and with SMTP the
                // destination domain is acceptable too (Postfix's "nexthop, hostname").
                let mut names = vec![server_name.to_owned()];
                if let Some(domain) = policy.next_hop().domain().map(ToString::to_string)
                    && !names.contains(&domain)
                {
                    names.push(domain);
                }
                params.dane = Some((records, names));
            }
            TlsRequirement::Authenticated(_) => {
                return Err(DeliveryFailure {
                    status: EnhancedStatus::CRYPTO_FAILURE,
                    result_type: Some(postern_policy::ResultType::ValidationFailure),
                    explanation: "authentication method not available in this client".into(),
                    permanent: false,
                    reply: None,
                });
            }
            _ => {}
        }
        Ok(params)
    }
}

/// The TLS server name: the MX host, else the next hop's host or domain.
fn server_name(policy: &ConnectionPolicy) -> String {
    if let Some(name) = policy.server_name() {
        return name.to_string();
    }
    match policy.next_hop() {
        NextHop::HostPort { host, .. } => match host {
            Host::Name(name) => name.to_string(),
            Host::Address(ip) => ip.to_string(),
        },
        other => other
            .domain()
            .map_or_else(|| "localhost".to_owned(), ToString::to_string),
    }
}
