//! The server session: an SMTP receiver (RFC 5321 section 4) as a state machine with no I/O.

use std::collections::VecDeque;
use std::time::Instant;

use crate::address::{ForwardPath, Host, ReversePath};
use crate::capabilities::Capabilities;
use crate::command::{Body, Command, CommandError, MailParams, RcptParams};
use crate::config::{AfterStartTls, ServerConfig, StartTlsPolicy};
use crate::counts::{CommandCounts, Verb};
use crate::data::{DataReceiver, DataSummary};
use crate::reply::Reply;

/// Output queued beyond this many octets pauses command processing until [`ServerSession::poll_transmit`]
/// drains it, so a pipelining client cannot grow the output without bound.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;

/// What the server session reports to the application. Events marked *decision* leave the session waiting:
/// the application answers with [`ServerSession::accept`], [`ServerSession::accept_with`] or
/// [`ServerSession::reject`], possibly much later (after an fsync); no further input is processed meanwhile,
/// so replies stay in order (RFC 2920 3.1).
///
/// A transaction (opened by an accepted `Mail`) ends with `MessageEnd` answered, `MessageRejected`, `Reset`,
/// `Hello`, `StartTls` or `Closing`; the application then drops any content it stored for it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// *Decision.* EHLO (`extended`) or HELO. Accepting sends the greeting reply (with the capability list for
    /// EHLO) and resets any transaction (RFC 5321 4.1.4).
    Hello {
        /// The client's name.
        name: Host,
        /// EHLO rather than HELO.
        extended: bool,
    },
    /// *Decision.* MAIL FROM, syntax, sequence, size and extension checks already passed. Accepting opens a
    /// transaction (`250 2.1.0 Ok`).
    Mail {
        /// The reverse path.
        from: ReversePath,
        /// Its ESMTP parameters.
        params: MailParams,
    },
    /// *Decision.* RCPT TO, checks passed (sequence, recipient limit). Accepting adds the recipient (`250 2.1.5
    /// Ok`).
    Rcpt {
        /// The forward path.
        to: ForwardPath,
        /// Its ESMTP parameters.
        params: RcptParams,
    },
    /// Message content starts: `354` was sent for DATA (`chunked` false) or the first BDAT chunk was accepted.
    MessageStart {
        /// BDAT (RFC 3030) rather than DATA.
        chunked: bool,
    },
    /// A piece of message content, in order: dot-unstuffed with CRLF line endings for DATA, verbatim for BDAT.
    /// Each piece is at most the input buffer size.
    MessageChunk(Vec<u8>),
    /// *Decision.* The whole message has been received (DATA's end line or BDAT LAST). Accept only once the
    /// message is safely stored: the `250` is the promise of delivery (RFC 5321 4.1.1.4, 6.1).
    MessageEnd {
        /// What the receiver saw: size, long lines, bare CR / LF (already normalised), NUL. For BDAT only the
        /// size is filled in (its content is binary-transparent, RFC 3030 3).
        summary: DataSummary,
    },
    /// The engine refused the message after its content (too large: `552 5.3.4`; bare CR / LF in `Reject`
    /// mode: `550 5.5.2`); the reply is already queued. Discard the content.
    MessageRejected {
        /// The reply sent.
        reply: Reply,
    },
    /// RSET: the transaction, if any, is gone (`250 2.0.0 Ok` sent).
    Reset,
    /// NOOP (`250 2.0.0 Ok` sent).
    Noop,
    /// HELP (`214` sent).
    Help,
    /// *Decision.* VRFY with its argument; accepting sends `252 2.0.0` (cannot verify, will try), or answer
    /// with your own `250` / `550` reply.
    Vrfy(String),
    /// STARTTLS accepted: `220 2.0.0 Ready to start TLS` is queued. Send all pending output
    /// ([`ServerSession::poll_transmit`]), then run the TLS handshake on the connection and call
    /// [`ServerSession::handle_tls_established`]. Plaintext that followed the STARTTLS line was thrown away
    /// (RFC 3207 section 4, CVE-2011-0411); input handed over until the handshake is thrown away too and
    /// counted in [`ServerSession::discarded_bytes`].
    StartTls {
        /// Octets that followed the STARTTLS line in the buffer and were discarded (log them: a client sending
        /// any is broken or an attacker's injection).
        discarded: usize,
    },
    /// The session refused a command itself, without asking the application: a sequence, syntax, size or
    /// extension check, `530 5.7.0 Must issue a STARTTLS command first` while TLS is required, the refusal
    /// that follows a failed client certificate check, or too many junk commands (a synchronization error is
    /// the reason of [`ServerEvent::Closing`] instead). The reply is already queued; there is nothing to answer.
    /// For logs and counters (refusals the application makes itself are not reported again).
    Refused {
        /// The command refused.
        verb: Verb,
        /// The command, when its line parsed (a refused `RCPT TO:<…>` carries its address).
        command: Option<Box<Command>>,
        /// The reply sent.
        reply: Reply,
    },
    /// The session is over: send the pending output, then close the connection.
    Closing(CloseReason),
}

/// Why the server session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent QUIT (`221 2.0.0 Bye`).
    Quit,
    /// A deadline passed (`421 4.4.2 ... Error: timeout exceeded`).
    Timeout,
    /// The error budget ran out (`421 4.7.0 ... Error: too many errors`).
    TooManyErrors,
    /// Too many NOOP, RSET, HELP or VRFY commands (`421 4.7.0 ... Error: too many junk commands`; Postfix
    /// `smtpd_junk_command_limit`).
    TooManyJunkCommands,
    /// The session lasted longer than `ServerConfig::session_time_limit` (`421 4.7.0 ... Error: session time
    /// limit exceeded`).
    SessionTimeLimit,
    /// Pipelining or greeting synchronization violated (`554 5.5.0 Error: SMTP protocol synchronization`),
    /// including a client that talked during the greet pause.
    Synchronization,
    /// The application answered with a `421` reply.
    Application,
    /// The client closed the connection ([`ServerSession::handle_eof`]).
    PeerClosed,
}

/// Misuse of the answering methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// No decision is pending.
    #[error("no decision pending")]
    NoDecisionPending,
    /// `accept_with` needs a 2xx reply, `reject` a 4xx or 5xx reply.
    #[error("reply code does not match the answer")]
    WrongReplyClass,
    /// `accept_with` is not available for EHLO / HELO (the engine builds that reply).
    #[error("custom acceptance not supported for this event")]
    Unsupported,
}

/// Misuse of [`ServerSession::handle_tls_established`] / [`crate::ClientSession::handle_tls_established`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no tls handshake was expected")]
pub struct UnexpectedTls;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Hello {
        extended: bool,
    },
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt,
    MessageEnd,
    Vrfy(String),
}

#[derive(Debug, Clone)]
enum Bdat {
    /// Content is delivered as chunks.
    Accept,
    /// Content is skipped; this reply is sent once the chunk is consumed.
    Discard(Reply),
}

#[derive(Debug, Clone)]
enum Phase {
    Command,
    Data(Box<DataReceiver>),
    Bdat {
        remaining: u64,
        last: bool,
        mode: Bdat,
    },
    Decision(Pending),
    Handshake,
    Closed,
}

/// The command whose final reply is awaited, for the counters and [`ServerEvent::Refused`].
#[derive(Debug, Clone)]
struct Current {
    verb: Verb,
    command: Option<Box<Command>>,
}

#[derive(Debug, Clone)]
struct Transaction {
    params: MailParams,
    recipients: usize,
    /// A BDAT chunk was received for this transaction.
    chunked: bool,
    /// Octets of BDAT content so far.
    bdat_size: u64,
    /// A BDAT chunk failed: later chunks get this reply (RFC 3030 4.2).
    bdat_failed: Option<Reply>,
    /// The end of the time allowed for the whole message content (`timeouts.data`), from the `354` reply or
    /// the first BDAT chunk: it caps every deadline of the transaction from then on, BDAT command lines
    /// between chunks included, so a client cannot stretch a message by sending it in small chunks.
    data_deadline: Option<Instant>,
}

/// A server SMTP session, sans I/O.
///
/// # Contract
/// Inputs are the `handle_*` methods and the answers to decision events; outputs are the `poll_*` methods.
/// After every input:
/// 1. call [`poll_event`](Self::poll_event) until it returns `None`, answering each decision event;
/// 2. send everything [`poll_transmit`](Self::poll_transmit) returns;
/// 3. if [`is_closed`](Self::is_closed), close the connection; if a `StartTls` event came, handshake;
/// 4. otherwise read from the connection with [`poll_timeout`](Self::poll_timeout) as deadline, then call
///    [`handle_input`](Self::handle_input) (or [`handle_timeout`](Self::handle_timeout) /
///    [`handle_eof`](Self::handle_eof)).
///
/// The greeting is held back for the greet pause (`ServerConfig::greet_pause`): [`poll_timeout`](Self::poll_timeout)
/// returns the end of the pause, and [`handle_timeout`](Self::handle_timeout) at that time queues the `220`. A
/// client that talks before the greeting was sent is refused (`554 5.5.0`), and during the pause it never sees
/// the `220` at all. With a zero pause [`new`](Self::new) queues the greeting at once: send it before reading.
///
/// Under stress ([`set_stress`](Self::set_stress)) the tighter [`StressLimits`](crate::StressLimits) apply.
/// Input is buffered up to `ServerConfig::input_buffer` octets: `handle_input` returns how many it took, and the
/// caller offers the rest again after step 1. Time is passed in; the session never reads the clock.
///
/// A session can be cloned: the copy goes on independently from the same state (to explore alternatives in
/// tests, or to compare two continuations).
#[derive(Debug, Clone)]
pub struct ServerSession {
    config: ServerConfig,
    phase: Phase,
    input: Vec<u8>,
    pos: usize,
    output: Vec<u8>,
    events: VecDeque<ServerEvent>,
    hello: Option<bool>,
    txn: Option<Transaction>,
    tls_active: bool,
    errors: u32,
    deadline: Option<Instant>,
    /// When the current deadline was armed (the start of the wait), to recompute it when stress changes.
    armed_at: Option<Instant>,
    /// The latest time passed in (creation, `poll_event`, `handle_timeout`).
    now: Instant,
    /// The greeting is held back until then (the greet pause).
    greet_at: Option<Instant>,
    /// The end of the session time limit.
    session_end: Option<Instant>,
    /// Junk commands (NOOP, RSET, HELP, VRFY) since the session started or the last accepted message.
    junk: u32,
    /// The server is under stress: the stress limits apply.
    stress: bool,
    /// The greeting went out at the end of a greet pause that the client kept quiet through.
    passed_greet_pause: bool,
    greeting_sent: bool,
    skipping_long_line: bool,
    discarded: u64,
    /// Service refused at connection time (RFC 5321 3.1): only QUIT is honoured.
    refused: bool,
    /// Set by [`ServerSession::handle_tls_established_refusing`]: every decision is answered with this reply
    /// instead of being asked of the application (RFC 3207 4.1).
    tls_refusal: Option<Reply>,
    /// Commands given and accepted.
    counts: CommandCounts,
    /// The command being answered.
    current: Option<Current>,
}

impl ServerSession {
    /// A session on a fresh plaintext connection. With a greet pause the deadline is the end of the pause; without
    /// one the `220` greeting is queued and the deadline armed for the first command (`now` + `timeouts.command`).
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        Self::with_tls(config, false, now)
    }

    /// A session on a connection that is already TLS (implicit TLS, RFC 8314): STARTTLS is not offered and
    /// REQUIRETLS is.
    pub fn new_tls(config: ServerConfig, now: Instant) -> Self {
        Self::with_tls(config, true, now)
    }

    /// A session that refuses service (RFC 5321 3.1): it greets with `greeting` (typically `554 5.7.1 ...`),
    /// then answers every command but QUIT with `503 5.5.1 Error: service refused` until QUIT or the error
    /// budget closes it. A `421` greeting closes the session right away. The greeting must be 4xx or 5xx.
    pub fn new_refusing(
        config: ServerConfig,
        now: Instant,
        greeting: Reply,
    ) -> Result<Self, AnswerError> {
        let code = greeting.code();
        if !(code.is_transient() || code.is_permanent()) {
            return Err(AnswerError::WrongReplyClass);
        }
        let mut s = Self::with_tls(config, false, now);
        s.output.clear();
        greeting.encode(&mut s.output);
        s.refused = true;
        // The refusal goes out at once: there is nothing to wait for.
        s.greet_at = None;
        s.arm(now);
        if code.value() == 421 {
            s.close(CloseReason::Application);
        }
        Ok(s)
    }

    fn with_tls(config: ServerConfig, tls_active: bool, now: Instant) -> Self {
        let config = config.validated();
        let greet_at = (!config.greet_pause.is_zero()).then(|| now + config.greet_pause);
        let session_end =
            (!config.session_time_limit.is_zero()).then(|| now + config.session_time_limit);
        let mut s = Self {
            phase: Phase::Command,
            input: Vec::with_capacity(4096),
            pos: 0,
            output: Vec::new(),
            events: VecDeque::new(),
            hello: None,
            txn: None,
            tls_active,
            errors: 0,
            deadline: greet_at,
            armed_at: None,
            now,
            greet_at,
            session_end,
            junk: 0,
            stress: false,
            passed_greet_pause: false,
            greeting_sent: false,
            skipping_long_line: false,
            discarded: 0,
            refused: false,
            tls_refusal: None,
            counts: CommandCounts::default(),
            current: None,
            config,
        };
        if s.greet_at.is_none() {
            s.queue_greeting();
            s.arm(now);
        }
        s
    }

    /// RFC 5321 4.2: the greeting is a 220 reply naming the host.
    fn queue_greeting(&mut self) {
        let greeting = Reply::plain(
            220,
            vec![
                format!("{} {}", self.config.hostname, self.config.banner)
                    .trim_end()
                    .to_owned(),
            ],
        );
        greeting.encode(&mut self.output);
    }

    /// Feed bytes received from the client. Returns how many were taken (at most the free buffer space; all of
    /// them once the session is closed or awaiting the TLS handshake, where input is discarded). Processing
    /// happens in [`poll_event`](Self::poll_event).
    #[must_use = "bytes not taken must be offered again after draining events"]
    pub fn handle_input(&mut self, data: &[u8]) -> usize {
        match self.phase {
            Phase::Closed => return data.len(),
            Phase::Handshake => {
                // RFC 3207 4: nothing received in plaintext after STARTTLS is ever processed.
                self.discarded += data.len() as u64;
                if !data.is_empty() && self.config.after_starttls == AfterStartTls::Close {
                    self.close(CloseReason::Synchronization);
                }
                return data.len();
            }
            _ => {}
        }
        if data.is_empty() {
            return 0;
        }
        if self.config.forbid_unauth_pipelining {
            // Talking before the greeting was sent (during the greet pause, or before the driver sent it), or
            // while a group-ending command awaits its reply.
            let barrier = matches!(
                self.phase,
                Phase::Decision(Pending::Hello { .. } | Pending::Vrfy(_))
            );
            if !self.greeting_sent || barrier {
                self.sync_violation();
                return data.len();
            }
        }
        if self.pos > 0 && (self.pos == self.input.len() || self.pos >= self.input.len() / 2) {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let free = self.config.input_buffer.saturating_sub(self.input.len());
        let take = free.min(data.len());
        self.input.extend_from_slice(&data[..take]);
        take
    }

    /// The client closed its side of the connection.
    pub fn handle_eof(&mut self) {
        if !matches!(self.phase, Phase::Closed) {
            self.close(CloseReason::PeerClosed);
        }
    }

    /// The current deadline, if the session is waiting for the client (or for the end of the greet pause): the
    /// caller calls [`handle_timeout`](Self::handle_timeout) when it passes. `None` while the application decides.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time passed. At the end of the greet pause, queue the `220` greeting. At a deadline, queue `421 4.4.2
    /// <host> Error: timeout exceeded` and close (RFC 5321 4.5.3.2; the deadline covers the whole command line,
    /// or the whole message content); at the end of the session time limit, `421 4.7.0 <host> Error: session
    /// time limit exceeded`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.is_closed() || self.deadline.is_none_or(|d| now < d) {
            return;
        }
        if self.greet_at.take().is_some() {
            // The pause is over and the client kept quiet: greet. The command deadline is armed once the
            // application has drained the events.
            self.queue_greeting();
            self.passed_greet_pause = true;
            self.deadline = None;
            return;
        }
        let host = &self.config.hostname;
        let (r, reason) = if self.session_end.is_some_and(|e| now >= e) {
            let text = format!("{host} Error: session time limit exceeded");
            let r = Reply::fixed(421, (4, 7, 0), text);
            (r, CloseReason::SessionTimeLimit)
        } else {
            let text = format!("{host} Error: timeout exceeded");
            (Reply::fixed(421, (4, 4, 2), text), CloseReason::Timeout)
        };
        // The command in progress (DATA, say) was not refused: the session ends.
        self.current = None;
        self.send(&r);
        self.close(reason);
    }

    /// Whether the server is under stress (its connection slots nearly all taken): while it is, the
    /// [`StressLimits`](crate::StressLimits) of the configuration replace the command timeout, the error budget
    /// and the junk command limit (Postfix's `stress` parameter). A deadline already armed is recomputed from the
    /// start of its wait, so an idle client is cut off at once if it has already waited longer than the stress
    /// timeout.
    pub fn set_stress(&mut self, stress: bool) {
        if self.stress == stress {
            return;
        }
        self.stress = stress;
        if self.greet_at.is_none()
            && self.deadline.is_some()
            && let Some(start) = self.armed_at
        {
            self.deadline = Some(self.deadline_from(start));
        }
    }

    /// Whether the stress limits apply.
    pub fn is_under_stress(&self) -> bool {
        self.stress
    }

    /// Whether the client kept quiet through a whole greet pause (the greeting went out at its end). A driver
    /// may remember such a client for a while and spare it the pause on its next connections, as Postfix's
    /// postscreen does (`postscreen_greet_ttl`).
    pub fn passed_greet_pause(&self) -> bool {
        self.passed_greet_pause
    }

    /// TLS is now established after a `StartTls` event. Per RFC 3207 4.2 the session returns to its state
    /// right after the greeting: EHLO name and transaction are forgotten, STARTTLS is no longer advertised (a
    /// second STARTTLS gets `554 5.5.1 Error: TLS already active`), REQUIRETLS is advertised.
    pub fn handle_tls_established(&mut self) -> Result<(), UnexpectedTls> {
        self.establish_tls(None)
    }

    /// TLS is now established after a `StartTls` event, but the client failed an authentication the policy
    /// requires (client certificates `require` and no verified certificate: `postern-policy`'s
    /// `ServerPolicy::client_certificate_verdict`). The session forgets its state as
    /// [`handle_tls_established`](Self::handle_tls_established) does, then answers every decision it would ask
    /// of the application (EHLO, HELO, VRFY, and MAIL, RCPT or an end of message, which cannot come without an
    /// accepted EHLO) with `refusal`, itself, without an event: no transaction can be opened (RFC 3207 4.1,
    /// "554 Command refused due to lack of security"). Other commands get their usual replies (NOOP `250`,
    /// QUIT `221`, MAIL `503` for want of EHLO). A `refusal` that is not 4xx / 5xx is replaced by `554 5.7.0
    /// Command refused due to lack of security`, so that a mistake never turns into an acceptance.
    pub fn handle_tls_established_refusing(&mut self, refusal: Reply) -> Result<(), UnexpectedTls> {
        let code = refusal.code();
        let refusal = if code.is_transient() || code.is_permanent() {
            refusal
        } else {
            Reply::fixed(554, (5, 7, 0), "Command refused due to lack of security")
        };
        self.establish_tls(Some(refusal))
    }

    fn establish_tls(&mut self, refusal: Option<Reply>) -> Result<(), UnexpectedTls> {
        if !matches!(self.phase, Phase::Handshake) {
            return Err(UnexpectedTls);
        }
        self.tls_active = true;
        self.tls_refusal = refusal;
        self.hello = None;
        self.txn = None;
        self.input.clear();
        self.pos = 0;
        self.skipping_long_line = false;
        self.deadline = None;
        self.phase = Phase::Command;
        Ok(())
    }

    /// Change whether a TLS handshake is possible now (certificates loaded): affects the next EHLO reply and
    /// STARTTLS (`454 4.7.0` when unavailable).
    pub fn set_tls_available(&mut self, available: bool) {
        self.config.tls_available = available;
    }

    /// Bytes to send to the client, if any. Everything queued so far is returned at once.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.output.is_empty() {
            return None;
        }
        self.greeting_sent = true;
        Some(std::mem::take(&mut self.output))
    }

    /// Whether the session is over (after draining the output, close the connection).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether TLS is active (after `handle_tls_established`, or a session made with `new_tls`).
    pub fn is_tls_active(&self) -> bool {
        self.tls_active
    }

    /// Whether a decision event awaits the application's answer.
    pub fn is_awaiting_decision(&self) -> bool {
        matches!(self.phase, Phase::Decision(_))
    }

    /// Total plaintext octets discarded after STARTTLS (RFC 3207 4), for logging.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// How many times each command was given and accepted so far (Postfix's disconnect line).
    pub fn command_counts(&self) -> CommandCounts {
        self.counts
    }

    /// Number of negative replies sent so far (the error budget).
    pub fn error_count(&self) -> u32 {
        self.errors
    }

    /// The configuration in use (after [`ServerConfig::validated`]).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Accept the pending decision with the standard reply.
    pub fn accept(&mut self) -> Result<(), AnswerError> {
        let pending = match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Decision(pending) => pending,
            other => {
                // A misplaced call (during DATA, say) leaves the session exactly as it was.
                self.phase = other;
                return Err(AnswerError::NoDecisionPending);
            }
        };
        match pending {
            Pending::Hello { extended } => {
                self.hello = Some(extended);
                self.txn = None;
                let reply = if extended {
                    self.capabilities().ehlo_reply(&self.config.hostname, "")
                } else {
                    Reply::plain(250, vec![self.config.hostname.clone()])
                };
                self.send(&reply);
            }
            Pending::Mail { from, params } => {
                let _ = from;
                self.txn = Some(Transaction {
                    params,
                    recipients: 0,
                    chunked: false,
                    bdat_size: 0,
                    bdat_failed: None,
                    data_deadline: None,
                });
                self.send(&Reply::fixed(250, (2, 1, 0), "Ok"));
            }
            Pending::Rcpt => {
                if let Some(t) = &mut self.txn {
                    t.recipients += 1;
                }
                self.send(&Reply::fixed(250, (2, 1, 5), "Ok"));
            }
            Pending::MessageEnd => {
                self.txn = None;
                // As Postfix does: a client that delivered a message is forgiven its junk commands.
                self.junk = 0;
                self.send(&Reply::fixed(250, (2, 0, 0), "Ok: queued"));
            }
            Pending::Vrfy(arg) => {
                let arg: String = arg.chars().filter(|c| !c.is_control()).take(256).collect();
                self.send(&Reply::fixed(252, (2, 0, 0), arg));
            }
        }
        Ok(())
    }

    /// Accept the pending decision with this 2xx reply (e.g. `250 2.0.0 Ok: queued as 4F2A`). Not for EHLO /
    /// HELO.
    pub fn accept_with(&mut self, reply: Reply) -> Result<(), AnswerError> {
        let Phase::Decision(pending) = &self.phase else {
            return Err(AnswerError::NoDecisionPending);
        };
        if !reply.code().is_positive() {
            return Err(AnswerError::WrongReplyClass);
        }
        if matches!(pending, Pending::Hello { .. }) {
            return Err(AnswerError::Unsupported);
        }
        // Apply the state change of a standard acceptance, then replace its reply.
        let mark = self.output.len();
        self.accept()?;
        self.output.truncate(mark);
        self.send(&reply);
        Ok(())
    }

    /// Refuse the pending decision with this 4xx / 5xx reply. A `421` reply closes the session afterwards
    /// (RFC 5321 3.8). Refusing MessageEnd ends the transaction.
    pub fn reject(&mut self, reply: Reply) -> Result<(), AnswerError> {
        let Phase::Decision(pending) = &self.phase else {
            return Err(AnswerError::NoDecisionPending);
        };
        let code = reply.code();
        if !(code.is_transient() || code.is_permanent()) {
            return Err(AnswerError::WrongReplyClass);
        }
        let pending = pending.clone();
        // The application's own refusal: counted, not reported back to it.
        self.current = None;
        self.refuse(&pending, &reply);
        Ok(())
    }

    /// Refuse `pending` with `reply` (4xx / 5xx, checked by the callers).
    fn refuse(&mut self, pending: &Pending, reply: &Reply) {
        match pending {
            Pending::Hello { .. } => {
                self.hello = None;
                self.txn = None;
            }
            Pending::MessageEnd => self.txn = None,
            _ => {}
        }
        self.phase = Phase::Command;
        self.send(reply);
        if reply.code().value() == 421 && !self.is_closed() {
            self.close(CloseReason::Application);
        }
    }

    /// Process buffered input and return the next event, if any. `now` arms the deadline when the session
    /// starts waiting for the client. Nothing is processed during the greet pause.
    pub fn poll_event(&mut self, now: Instant) -> Option<ServerEvent> {
        self.now = self.now.max(now);
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Some(ev);
            }
            if self.output.len() > MAX_PENDING_OUTPUT || self.greet_at.is_some() {
                return None;
            }
            let progressed = match self.phase {
                Phase::Command => self.step_command(),
                Phase::Data(_) => self.step_data(),
                Phase::Bdat { .. } => self.step_bdat(),
                Phase::Decision(_) | Phase::Handshake | Phase::Closed => return None,
            };
            if !progressed && self.events.is_empty() {
                if self.deadline.is_none() {
                    self.arm(now);
                }
                return None;
            }
        }
    }

    // ---- internals ----

    /// Arm the deadline of a wait for the client that starts at `now`.
    fn arm(&mut self, now: Instant) {
        self.armed_at = Some(now);
        self.deadline = Some(self.deadline_from(now));
    }

    /// The deadline of a wait that started at `start`: a whole command line (`timeouts.command`, or the stress
    /// timeout) or the content (`timeouts.data`), never past the deadline of the message being received, nor
    /// past the session time limit.
    fn deadline_from(&self, start: Instant) -> Instant {
        let span = match self.phase {
            Phase::Command if self.stress => self.config.stress.command_timeout,
            Phase::Command => self.config.timeouts.command,
            _ => self.config.timeouts.data,
        };
        let mut deadline = start + span;
        if let Some(d) = self.txn.as_ref().and_then(|t| t.data_deadline) {
            deadline = deadline.min(d);
        }
        if let Some(end) = self.session_end {
            deadline = deadline.min(end);
        }
        deadline
    }

    /// The message content starts now (`354` sent, or the first BDAT chunk accepted): RFC 5321 4.5.3.2.6 gives
    /// the whole content `timeouts.data`, whether it comes in one DATA phase or in any number of BDAT chunks.
    fn start_data_deadline(&mut self) {
        let end = self.now + self.config.timeouts.data;
        if let Some(t) = &mut self.txn
            && t.data_deadline.is_none()
        {
            t.data_deadline = Some(end);
        }
    }

    /// Count a junk command (NOOP, RSET, HELP, VRFY); past the limit, `421 4.7.0` and close (Postfix
    /// `smtpd_junk_command_limit`). Returns whether the session was closed.
    fn junk_command(&mut self) -> bool {
        let limit = if self.stress {
            self.config.stress.max_junk_commands
        } else {
            self.config.max_junk_commands
        };
        if self.junk >= limit {
            let text = format!("{} Error: too many junk commands", self.config.hostname);
            self.send(&Reply::fixed(421, (4, 7, 0), text));
            self.close(CloseReason::TooManyJunkCommands);
            return true;
        }
        self.junk += 1;
        false
    }

    fn capabilities(&self) -> Capabilities {
        let c = &self.config;
        Capabilities {
            size: Some(c.data.max_message_size),
            pipelining: c.pipelining,
            eight_bit_mime: true,
            smtputf8: c.smtputf8,
            chunking: c.chunking,
            binary_mime: c.chunking && c.binary_mime,
            // RFC 3207 4.2: not advertised again once TLS is active.
            starttls: c.starttls != StartTlsPolicy::Disabled && !self.tls_active && c.tls_available,
            enhanced_status_codes: true,
            // RFC 8689 2 in practice: only on a TLS-protected session.
            requiretls: c.requiretls && self.tls_active,
            dsn: c.dsn,
            ..Capabilities::default()
        }
    }

    fn send(&mut self, reply: &Reply) {
        reply.encode(&mut self.output);
        self.settle(reply);
        let code = reply.code();
        if (code.is_transient() || code.is_permanent()) && !self.is_closed() {
            self.errors += 1;
            let max = if self.stress {
                self.config.stress.max_errors
            } else {
                self.config.max_errors
            };
            if self.errors >= max && code.value() != 421 {
                let r = Reply::fixed(
                    421,
                    (4, 7, 0),
                    format!("{} Error: too many errors", self.config.hostname),
                );
                r.encode(&mut self.output);
                self.close(CloseReason::TooManyErrors);
            }
        }
    }

    /// A final reply to the current command: count it accepted, or report the engine's refusal.
    fn settle(&mut self, reply: &Reply) {
        let code = reply.code();
        if code.is_intermediate() {
            return;
        }
        let Some(current) = self.current.take() else {
            return;
        };
        if code.is_positive() {
            self.counts.accepted(current.verb);
        } else {
            self.events.push_back(ServerEvent::Refused {
                verb: current.verb,
                command: current.command,
                reply: reply.clone(),
            });
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if !self.is_closed() {
            self.phase = Phase::Closed;
            self.deadline = None;
            self.greet_at = None;
            self.input.clear();
            self.pos = 0;
            self.events.push_back(ServerEvent::Closing(reason));
        }
    }

    fn sync_violation(&mut self) {
        // Postfix 3.9 smtpd_forbid_unauth_pipelining.
        let r = Reply::fixed(554, (5, 5, 0), "Error: SMTP protocol synchronization");
        r.encode(&mut self.output);
        // Reported by the Closing event's reason, not as a refusal of the command.
        self.current = None;
        self.close(CloseReason::Synchronization);
    }

    fn pipelining_allowed(&self) -> bool {
        self.config.pipelining && self.hello == Some(true)
    }

    fn tls_required(&self) -> bool {
        self.config.starttls == StartTlsPolicy::Require && !self.tls_active
    }

    /// Take the next command line; returns whether anything was consumed.
    fn step_command(&mut self) -> bool {
        let buf = &self.input[self.pos..];
        // RFC 5321 2.3.8: only CRLF ends a line; a bare CR or LF is part of the (bad) line.
        let Some(i) = memchr::memmem::find(buf, b"\r\n") else {
            if buf.len() >= self.config.max_command_line {
                // Skip the overlong line but keep a trailing CR that may start the CRLF.
                let keep = usize::from(buf.last() == Some(&b'\r'));
                self.pos += buf.len() - keep;
                self.skipping_long_line = true;
                return true;
            }
            return false;
        };
        let end = self.pos + i + 2;
        let line_len = end - self.pos;
        let start = self.pos;
        self.pos = end;
        self.deadline = None;
        let skipped = std::mem::take(&mut self.skipping_long_line);
        let verb = if skipped {
            Verb::Unknown
        } else {
            Verb::of_line(&self.input[start..end])
        };
        if skipped || line_len > self.config.max_command_line {
            self.begin_command(verb, None);
            self.send(&CommandError::LineTooLong.reply());
            return true;
        }
        let parsed = Command::parse(&self.input[start..end]);
        let more = self.pos < self.input.len();
        match parsed {
            Err(e) => {
                self.begin_command(verb, None);
                self.send(&e.reply());
            }
            Ok(cmd) => {
                self.begin_command(Verb::of(&cmd), Some(Box::new(cmd.clone())));
                let ends = cmd.ends_group() || !self.pipelining_allowed();
                let exempt = matches!(cmd, Command::Bdat { .. } | Command::StartTls);
                if self.config.forbid_unauth_pipelining && more && ends && !exempt {
                    self.sync_violation();
                } else {
                    self.command(cmd);
                }
            }
        }
        true
    }

    /// A command line arrived: count it, and await its final reply.
    fn begin_command(&mut self, verb: Verb, command: Option<Box<Command>>) {
        self.counts.attempted(verb);
        self.current = Some(Current { verb, command });
    }

    fn decide(&mut self, pending: Pending, event: ServerEvent) {
        // RFC 3207 4.1: a client that failed the required authentication gets the refusal, and the
        // application is not asked.
        if let Some(refusal) = self.tls_refusal.clone() {
            self.refuse(&pending, &refusal);
            return;
        }
        self.phase = Phase::Decision(pending);
        self.events.push_back(event);
    }

    fn command(&mut self, cmd: Command) {
        // RFC 5321 3.1: after a 554 greeting the server waits for QUIT and answers 503 to everything else.
        if self.refused {
            match cmd {
                Command::Quit => {
                    self.send(&Reply::fixed(221, (2, 0, 0), "Bye"));
                    self.close(CloseReason::Quit);
                }
                Command::Bdat { size, last } => {
                    let r = Reply::fixed(503, (5, 5, 1), "Error: service refused");
                    self.phase = Phase::Bdat {
                        remaining: size,
                        last,
                        mode: Bdat::Discard(r),
                    };
                }
                _ => self.send(&Reply::fixed(503, (5, 5, 1), "Error: service refused")),
            }
            return;
        }
        // RFC 3207 4: with TLS required, only these commands are allowed before STARTTLS.
        let allowed_plain = matches!(
            cmd,
            Command::Ehlo(_)
                | Command::Helo(_)
                | Command::StartTls
                | Command::Noop
                | Command::Quit
                | Command::Help(_)
        );
        if self.tls_required() && !allowed_plain {
            let r = Reply::fixed(530, (5, 7, 0), "Must issue a STARTTLS command first");
            if let Command::Bdat { size, last } = cmd {
                self.phase = Phase::Bdat {
                    remaining: size,
                    last,
                    mode: Bdat::Discard(r),
                };
            } else {
                self.send(&r);
            }
            return;
        }
        let junk = matches!(
            cmd,
            Command::Rset | Command::Noop | Command::Help(_) | Command::Vrfy(_)
        );
        if junk && self.junk_command() {
            return;
        }
        match cmd {
            Command::Ehlo(name) => self.decide(
                Pending::Hello { extended: true },
                ServerEvent::Hello {
                    name,
                    extended: true,
                },
            ),
            Command::Helo(name) => self.decide(
                Pending::Hello { extended: false },
                ServerEvent::Hello {
                    name,
                    extended: false,
                },
            ),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.txn = None;
                self.send(&Reply::fixed(250, (2, 0, 0), "Ok"));
                self.events.push_back(ServerEvent::Reset);
            }
            Command::Noop => {
                self.send(&Reply::fixed(250, (2, 0, 0), "Ok"));
                self.events.push_back(ServerEvent::Noop);
            }
            Command::Quit => {
                self.send(&Reply::fixed(221, (2, 0, 0), "Bye"));
                self.close(CloseReason::Quit);
            }
            Command::Vrfy(arg) => self.decide(Pending::Vrfy(arg.clone()), ServerEvent::Vrfy(arg)),
            Command::Expn(_) => self.send(&Reply::fixed(
                502,
                (5, 5, 1),
                "Error: command not implemented",
            )),
            Command::Help(_) => {
                self.send(&Reply::fixed(
                    214,
                    (2, 0, 0),
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS",
                ));
                self.events.push_back(ServerEvent::Help);
            }
            Command::StartTls => self.starttls(),
            // Command is non_exhaustive for other crates only; every variant is handled above.
        }
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) {
        let c = &self.config;
        let unsupported =
            |p: &str| Reply::fixed(555, (5, 5, 4), format!("Unsupported option: {p}"));
        let refusal = if self.hello.is_none() {
            Some(Reply::fixed(503, (5, 5, 1), "Error: send HELO/EHLO first"))
        } else if self.txn.is_some() {
            Some(Reply::fixed(503, (5, 5, 1), "Error: nested MAIL command"))
        } else if params.size.is_some_and(|s| s > c.data.max_message_size) {
            // RFC 1870 6.1
            Some(Reply::fixed(
                552,
                (5, 3, 4),
                "Message size exceeds fixed limit",
            ))
        } else if params.body == Some(Body::BinaryMime) && !(c.chunking && c.binary_mime) {
            Some(unsupported("BODY=BINARYMIME"))
        } else if params.smtputf8 && !c.smtputf8 {
            Some(unsupported("SMTPUTF8"))
        } else if params.requiretls && !(c.requiretls && self.tls_active) {
            Some(unsupported("REQUIRETLS"))
        } else if (params.ret.is_some() || params.envid.is_some()) && !c.dsn {
            Some(unsupported(if params.ret.is_some() {
                "RET"
            } else {
                "ENVID"
            }))
        } else if !(from.is_ascii() || params.smtputf8 && c.smtputf8) {
            // RFC 6531 3.5
            Some(Reply::fixed(
                553,
                (5, 6, 7),
                "Must declare SMTPUTF8 to send unicode address",
            ))
        } else {
            None
        };
        match refusal {
            Some(r) => self.send(&r),
            None => self.decide(
                Pending::Mail {
                    from: from.clone(),
                    params: params.clone(),
                },
                ServerEvent::Mail { from, params },
            ),
        }
    }

    fn rcpt(&mut self, to: ForwardPath, params: RcptParams) {
        let refusal = match &self.txn {
            None => Some(Reply::fixed(503, (5, 5, 1), "Error: need MAIL command")),
            // RFC 5321 4.5.3.1.10: 452 for too many recipients.
            Some(t) if t.recipients >= self.config.max_recipients => {
                Some(Reply::fixed(452, (4, 5, 3), "Error: too many recipients"))
            }
            Some(_) if (params.notify.is_some() || params.orcpt.is_some()) && !self.config.dsn => {
                Some(Reply::fixed(555, (5, 5, 4), "Unsupported option: NOTIFY"))
            }
            Some(t) if !to.is_ascii() && !t.params.smtputf8 => Some(Reply::fixed(
                553,
                (5, 6, 7),
                "Must declare SMTPUTF8 to send unicode address",
            )),
            Some(_) => None,
        };
        match refusal {
            Some(r) => self.send(&r),
            None => self.decide(Pending::Rcpt, ServerEvent::Rcpt { to, params }),
        }
    }

    fn data(&mut self) {
        let refusal =
            match &self.txn {
                None if self.hello.is_none() => {
                    Some(Reply::fixed(503, (5, 5, 1), "Error: send HELO/EHLO first"))
                }
                None => Some(Reply::fixed(503, (5, 5, 1), "Error: need RCPT command")),
                Some(t) if t.recipients == 0 => {
                    Some(Reply::fixed(554, (5, 5, 1), "Error: no valid recipients"))
                }
                // RFC 3030 3: BINARYMIME content needs BDAT; DATA and BDAT do not mix in one transaction.
                Some(t) if t.params.body == Some(Body::BinaryMime) || t.chunked => Some(
                    Reply::fixed(503, (5, 5, 1), "Error: BDAT required for this transaction"),
                ),
                Some(_) => None,
            };
        if let Some(r) = refusal {
            self.send(&r);
            return;
        }
        self.send(&Reply::plain(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".into()],
        ));
        self.phase = Phase::Data(Box::new(DataReceiver::new(self.config.data.clone())));
        self.start_data_deadline();
        self.deadline = None;
        self.events
            .push_back(ServerEvent::MessageStart { chunked: false });
    }

    fn bdat(&mut self, size: u64, last: bool) {
        // RFC 3030 2: the chunk's octets follow the command line whatever the reply; they are always consumed
        // so the session stays in sync, and skipped when the command is refused.
        let refusal = if !self.config.chunking {
            Some(Reply::fixed(
                502,
                (5, 5, 1),
                "Error: command not implemented",
            ))
        } else {
            match &self.txn {
                None if self.hello.is_none() => {
                    Some(Reply::fixed(503, (5, 5, 1), "Error: send HELO/EHLO first"))
                }
                None => Some(Reply::fixed(503, (5, 5, 1), "Error: need RCPT command")),
                Some(t) if t.recipients == 0 => {
                    Some(Reply::fixed(554, (5, 5, 1), "Error: no valid recipients"))
                }
                Some(t) => t.bdat_failed.clone(),
            }
        };
        self.deadline = None;
        let mode = match refusal {
            Some(r) => Bdat::Discard(r),
            None => {
                if let Some(t) = &mut self.txn
                    && !t.chunked
                {
                    t.chunked = true;
                    self.events
                        .push_back(ServerEvent::MessageStart { chunked: true });
                }
                self.start_data_deadline();
                Bdat::Accept
            }
        };
        self.phase = Phase::Bdat {
            remaining: size,
            last,
            mode,
        };
    }

    fn starttls(&mut self) {
        let r = if self.tls_active {
            Some(Reply::fixed(554, (5, 5, 1), "Error: TLS already active"))
        } else if self.config.starttls == StartTlsPolicy::Disabled {
            Some(Reply::fixed(
                502,
                (5, 5, 1),
                "Error: command not implemented",
            ))
        } else if !self.config.tls_available {
            Some(Reply::fixed(
                454,
                (4, 7, 0),
                "TLS not available due to temporary reason",
            ))
        } else if self.txn.is_some() {
            Some(Reply::fixed(
                503,
                (5, 5, 1),
                "Error: MAIL transaction in progress",
            ))
        } else {
            None
        };
        if let Some(r) = r {
            self.send(&r);
            return;
        }
        let leftover = self.input.len() - self.pos;
        if leftover > 0 && self.config.after_starttls == AfterStartTls::Close {
            self.sync_violation();
            return;
        }
        // RFC 3207 4 / CVE-2011-0411: pipelined plaintext after STARTTLS is never processed.
        self.discarded += leftover as u64;
        self.input.clear();
        self.pos = 0;
        self.send(&Reply::fixed(220, (2, 0, 0), "Ready to start TLS"));
        self.hello = None;
        self.txn = None;
        self.deadline = None;
        self.phase = Phase::Handshake;
        self.events.push_back(ServerEvent::StartTls {
            discarded: leftover,
        });
    }

    fn step_data(&mut self) -> bool {
        let Phase::Data(rx) = &mut self.phase else {
            return false;
        };
        let avail = &self.input[self.pos..];
        if avail.is_empty() {
            return false;
        }
        let mut out = Vec::new();
        let step = rx.feed(avail, &mut out);
        self.pos += step.consumed.min(avail.len());
        if !out.is_empty() {
            self.events.push_back(ServerEvent::MessageChunk(out));
        }
        match step.end {
            Some(summary) => {
                self.deadline = None;
                self.phase = Phase::Command;
                self.message_end(summary);
                true
            }
            None => step.consumed > 0,
        }
    }

    fn message_end(&mut self, summary: DataSummary) {
        let reply = if summary.too_large {
            Some(Reply::fixed(552, (5, 3, 4), "Error: message file too big"))
        } else if summary.rejected_by_policy(self.config.data.bare_line_endings) {
            // Postfix 3.9 smtpd_forbid_bare_newline = reject
            Some(Reply::fixed(
                550,
                (5, 5, 2),
                "Error: bare <CR> or <LF> received",
            ))
        } else {
            None
        };
        match reply {
            Some(r) => {
                self.txn = None;
                self.send(&r);
                self.events
                    .push_back(ServerEvent::MessageRejected { reply: r });
            }
            None => self.decide(Pending::MessageEnd, ServerEvent::MessageEnd { summary }),
        }
    }

    fn step_bdat(&mut self) -> bool {
        let Phase::Bdat {
            remaining,
            last,
            mode,
        } = &mut self.phase
        else {
            return false;
        };
        let avail = self.input.len() - self.pos;
        // Bounded by the buffer, so the cast cannot truncate.
        let n = usize::try_from((*remaining).min(avail as u64)).unwrap_or(avail);
        if n == 0 && *remaining > 0 {
            return false;
        }
        *remaining -= n as u64;
        let (done, last) = (*remaining == 0, *last);
        let chunk = &self.input[self.pos..self.pos + n];
        self.pos += n;
        let mut mode = mode.clone();
        if let (Bdat::Accept, Some(t)) = (&mode, &mut self.txn) {
            let max = self.config.data.max_message_size;
            t.bdat_size += n as u64;
            if t.bdat_size > max {
                let r = Reply::fixed(552, (5, 3, 4), "Error: message file too big");
                if t.bdat_failed.is_none() {
                    self.events
                        .push_back(ServerEvent::MessageRejected { reply: r.clone() });
                }
                t.bdat_failed = Some(r.clone());
                mode = Bdat::Discard(r);
            } else if n > 0 {
                self.events
                    .push_back(ServerEvent::MessageChunk(chunk.to_vec()));
            }
        }
        if let Phase::Bdat { mode: m, .. } = &mut self.phase {
            *m = mode.clone();
        }
        if !done {
            return n > 0;
        }
        self.deadline = None;
        self.phase = Phase::Command;
        match mode {
            Bdat::Discard(r) => {
                if last {
                    self.txn = None;
                }
                self.send(&r);
            }
            Bdat::Accept if last => {
                let size = self.txn.as_ref().map_or(0, |t| t.bdat_size);
                let summary = DataSummary {
                    size,
                    ..DataSummary::default()
                };
                self.decide(Pending::MessageEnd, ServerEvent::MessageEnd { summary });
            }
            Bdat::Accept => {
                let size = self.txn.as_ref().map_or(0, |t| t.bdat_size);
                self.send(&Reply::fixed(250, (2, 0, 0), format!("Ok: {size} bytes")));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session greeted after its greet pause.
    fn session(config: ServerConfig) -> (ServerSession, Instant) {
        let start = Instant::now();
        let mut s = ServerSession::new(config, start);
        let now = start + s.config().greet_pause;
        s.handle_timeout(now);
        assert!(s.poll_transmit().unwrap().starts_with(b"220 "));
        (s, now)
    }

    /// Feed `input`, answer nothing, return (events, output).
    fn exchange(s: &mut ServerSession, now: Instant, input: &[u8]) -> (Vec<ServerEvent>, String) {
        assert_eq!(s.handle_input(input), input.len());
        let mut events = Vec::new();
        while let Some(e) = s.poll_event(now) {
            events.push(e);
        }
        let out = s
            .poll_transmit()
            .map(|o| String::from_utf8(o).unwrap())
            .unwrap_or_default();
        (events, out)
    }

    fn ehlo_reply(s: &mut ServerSession, now: Instant) -> String {
        let (ev, _) = exchange(s, now, b"EHLO c.example\r\n");
        assert!(matches!(
            ev.as_slice(),
            [ServerEvent::Hello { extended: true, .. }]
        ));
        s.accept().unwrap();
        String::from_utf8(s.poll_transmit().unwrap()).unwrap()
    }

    #[test]
    fn capabilities_follow_tls_state() {
        let (mut s, now) = session(ServerConfig::new("mx.example.org"));
        let r = ehlo_reply(&mut s, now);
        assert!(r.contains("STARTTLS") && !r.contains("REQUIRETLS"), "{r}");
        let mut unavailable = ServerConfig::new("mx.example.org");
        unavailable.tls_available = false;
        let (mut s, now) = session(unavailable);
        assert!(!ehlo_reply(&mut s, now).contains("STARTTLS"));
        s.set_tls_available(true);
        assert!(ehlo_reply(&mut s, now).contains("STARTTLS"));
        let mut s = ServerSession::new_tls(ServerConfig::new("mx.example.org"), now);
        let now2 = now + s.config().greet_pause;
        s.handle_timeout(now2);
        assert!(s.poll_transmit().unwrap().starts_with(b"220 "));
        let r = ehlo_reply(&mut s, now2);
        assert!(!r.contains("STARTTLS") && r.contains("REQUIRETLS"), "{r}");
        assert!(s.is_tls_active());
    }

    #[test]
    fn refused_after_the_handshake() {
        let (mut s, now) = session(ServerConfig::new("mx.example.org"));
        let (ev, out) = exchange(&mut s, now, b"STARTTLS\r\n");
        assert_eq!(ev, vec![ServerEvent::StartTls { discarded: 0 }]);
        assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
        // A refusal that is not 4xx / 5xx never turns into an acceptance.
        let ok = Reply::fixed(250, (2, 0, 0), "Ok");
        s.handle_tls_established_refusing(ok).unwrap();
        assert!(s.is_tls_active());
        let refused = "554 5.7.0 Command refused due to lack of security\r\n";
        for (line, reply) in [
            (&b"EHLO c.example\r\n"[..], refused),
            (
                b"MAIL FROM:<a@b.example>\r\n",
                "503 5.5.1 Error: send HELO/EHLO first\r\n",
            ),
            (b"NOOP\r\n", "250 2.0.0 Ok\r\n"),
        ] {
            let (ev, out) = exchange(&mut s, now, line);
            // Nothing is asked of the application; the refusals are reported.
            assert!(
                ev.iter()
                    .all(|e| matches!(e, ServerEvent::Noop | ServerEvent::Refused { .. })),
                "{ev:?}"
            );
            assert_eq!(out, reply);
        }
        let (ev, out) = exchange(&mut s, now, b"VRFY c\r\n");
        assert!(
            matches!(ev.as_slice(), [ServerEvent::Refused { verb: Verb::Vrfy, reply, .. }]
                if reply.to_string().starts_with("554 5.7.0")),
            "{ev:?}"
        );
        assert_eq!(out, refused);
        let counts = s.command_counts();
        assert_eq!(
            counts.to_string(),
            "ehlo=0/1 starttls=1 mail=0/1 noop=1 vrfy=0/1 commands=2/5"
        );
    }

    #[test]
    fn refusing_session() {
        let now = Instant::now();
        let greeting = Reply::fixed(554, (5, 7, 1), "Service unavailable; client blocked");
        let mut s = ServerSession::new_refusing(ServerConfig::new("mx.example.org"), now, greeting)
            .unwrap();
        assert_eq!(
            s.poll_transmit().unwrap(),
            b"554 5.7.1 Service unavailable; client blocked\r\n"
        );
        let (ev, out) = exchange(&mut s, now, b"EHLO c.example\r\n");
        assert!(
            matches!(
                ev.as_slice(),
                [ServerEvent::Refused {
                    verb: Verb::Ehlo,
                    ..
                }]
            ),
            "no Hello event: {ev:?}"
        );
        assert_eq!(out, "503 5.5.1 Error: service refused\r\n");
        let (ev, out) = exchange(&mut s, now, b"QUIT\r\n");
        assert_eq!(out, "221 2.0.0 Bye\r\n");
        assert_eq!(ev, vec![ServerEvent::Closing(CloseReason::Quit)]);
        let ok = Reply::fixed(250, (2, 0, 0), "x");
        assert_eq!(
            ServerSession::new_refusing(ServerConfig::default(), now, ok).err(),
            Some(AnswerError::WrongReplyClass)
        );
        let busy = Reply::fixed(421, (4, 3, 2), "busy");
        let mut s = ServerSession::new_refusing(ServerConfig::default(), now, busy).unwrap();
        assert!(s.is_closed());
        assert_eq!(s.poll_transmit().unwrap(), b"421 4.3.2 busy\r\n");
    }

    #[test]
    fn answer_misuse() {
        let (mut s, now) = session(ServerConfig::new("mx.example.org"));
        assert_eq!(s.accept(), Err(AnswerError::NoDecisionPending));
        let _ = exchange(&mut s, now, b"EHLO c.example\r\n");
        assert_eq!(
            s.accept_with(Reply::fixed(250, (2, 0, 0), "x")),
            Err(AnswerError::Unsupported)
        );
        assert_eq!(
            s.reject(Reply::fixed(250, (2, 0, 0), "x")),
            Err(AnswerError::WrongReplyClass)
        );
        assert!(
            s.is_awaiting_decision(),
            "a refused answer leaves the decision pending"
        );
        s.reject(Reply::fixed(421, (4, 3, 2), "shutting down"))
            .unwrap();
        assert!(s.is_closed());
        assert_eq!(
            s.poll_event(now),
            Some(ServerEvent::Closing(CloseReason::Application))
        );
        assert_eq!(s.poll_transmit().unwrap(), b"421 4.3.2 shutting down\r\n");
    }

    #[test]
    fn misplaced_accept_during_data_changes_nothing() {
        let (mut s, now) = session(ServerConfig::new("mx.example.org"));
        ehlo_reply(&mut s, now);
        let _ = exchange(&mut s, now, b"MAIL FROM:<a@b.example>\r\n");
        s.accept().unwrap();
        let _ = exchange(&mut s, now, b"RCPT TO:<c@d.example>\r\n");
        s.accept().unwrap();
        let (_, out) = exchange(&mut s, now, b"DATA\r\n");
        assert!(
            out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
            "{out}"
        );
        // Wrong moment: nothing is pending while the body arrives.
        assert_eq!(s.accept(), Err(AnswerError::NoDecisionPending));
        let (ev, out) = exchange(&mut s, now, b"RSET\r\nNOOP\r\n.\r\n");
        assert_eq!(out, "", "body lines were answered as commands");
        assert!(
            ev.contains(&ServerEvent::MessageChunk(b"RSET\r\nNOOP\r\n".to_vec())),
            "{ev:?}"
        );
        assert!(
            matches!(ev.last(), Some(ServerEvent::MessageEnd { .. })),
            "{ev:?}"
        );
    }

    #[test]
    fn ehlo_resets_transaction_and_eof_closes() {
        let (mut s, now) = session(ServerConfig::new("mx.example.org"));
        ehlo_reply(&mut s, now);
        let _ = exchange(&mut s, now, b"MAIL FROM:<a@b.example>\r\n");
        s.accept().unwrap();
        let _ = s.poll_transmit();
        ehlo_reply(&mut s, now);
        let (ev, _) = exchange(&mut s, now, b"MAIL FROM:<a@b.example>\r\n");
        assert!(
            matches!(ev.as_slice(), [ServerEvent::Mail { .. }]),
            "no nested MAIL after EHLO: {ev:?}"
        );
        assert_eq!(s.handle_tls_established(), Err(UnexpectedTls));
        s.handle_eof();
        assert_eq!(
            s.poll_event(now),
            Some(ServerEvent::Closing(CloseReason::PeerClosed))
        );
        assert_eq!(s.handle_input(b"more"), 4, "input after close is swallowed");
    }

    #[test]
    fn message_end_custom_reply_and_summary() {
        let (mut s, now) = session(ServerConfig::new("mx.example.org"));
        ehlo_reply(&mut s, now);
        let _ = exchange(&mut s, now, b"MAIL FROM:<>\r\n");
        s.accept().unwrap();
        let _ = exchange(&mut s, now, b"RCPT TO:<Postmaster>\r\n");
        s.accept().unwrap();
        let (ev, out) = exchange(&mut s, now, b"DATA\r\n");
        assert!(out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"));
        assert_eq!(ev, vec![ServerEvent::MessageStart { chunked: false }]);
        let (ev, _) = exchange(&mut s, now, b"a\nb\r\n.\r\n");
        assert_eq!(ev[0], ServerEvent::MessageChunk(b"a\r\nb\r\n".to_vec()));
        let ServerEvent::MessageEnd { summary } = &ev[1] else {
            panic!("{ev:?}")
        };
        assert!(summary.bare_lf);
        s.accept_with(
            Reply::new(
                250,
                EnhancedStatus::new(2, 0, 0).ok(),
                ["Ok: queued as 4F2A"],
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            s.poll_transmit().unwrap(),
            b"250 2.0.0 Ok: queued as 4F2A\r\n"
        );
    }

    use crate::reply::EnhancedStatus;
}
