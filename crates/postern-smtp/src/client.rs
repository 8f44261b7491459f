//! The client session: an SMTP sender (RFC 5321 section 3, 4.1.4) as a state machine with no I/O.

use std::collections::VecDeque;
use std::time::Instant;

use crate::address::{ForwardPath, ReversePath};
use crate::capabilities::Capabilities;
use crate::command::{Body, Command, MailParams, RcptParams};
use crate::config::{AfterStartTls, ClientConfig};
use crate::data::{DotStuffer, normalize_line_endings};
use crate::reply::{Reply, ReplyError, ReplyParser};
use crate::server::UnexpectedTls;

/// Message content is dot-stuffed into the output in pieces of this size, so a large message is not copied
/// at once.
const CONTENT_PIECE: usize = 64 * 1024;
/// Unparsed input buffered at most.
const MAX_INPUT: usize = 64 * 1024;

/// One message to send: envelope and content.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// MAIL FROM path.
    pub from: ReversePath,
    /// MAIL FROM parameters. SIZE is added when the server advertises SIZE and it is unset; SMTPUTF8 is added
    /// when an address needs it; `BODY=8BITMIME` when the content has 8-bit octets and the server offers it.
    pub mail_params: MailParams,
    /// Recipients with their RCPT parameters, in order.
    pub recipients: Vec<(ForwardPath, RcptParams)>,
}

impl Envelope {
    /// An envelope with default parameters.
    pub fn new(from: ReversePath, recipients: impl IntoIterator<Item = ForwardPath>) -> Self {
        Self {
            from,
            mail_params: MailParams::default(),
            recipients: recipients
                .into_iter()
                .map(|r| (r, RcptParams::default()))
                .collect(),
        }
    }
}

/// Outcome for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Accepted by RCPT and by the final reply to the content.
    Delivered,
    /// Transient failure (4yz, or the connection ended): retry later.
    Deferred,
    /// Permanent failure (5yz): bounce.
    Failed,
}

/// Result for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecipientResult {
    /// The recipient.
    pub recipient: ForwardPath,
    /// The outcome.
    pub status: DeliveryStatus,
    /// The reply that decided it (MAIL, RCPT or the final reply); `None` when the connection ended first.
    pub reply: Option<Reply>,
}

impl RecipientResult {
    /// The result for `recipient`: `status`, decided by `reply`.
    pub fn new(recipient: ForwardPath, status: DeliveryStatus, reply: Option<Reply>) -> Self {
        Self {
            recipient,
            status,
            reply,
        }
    }
}

/// Result of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionReport {
    /// The reply to MAIL FROM, if received.
    pub mail_reply: Option<Reply>,
    /// The final reply to the content (after `.` or BDAT LAST), or the refusal of DATA.
    pub data_reply: Option<Reply>,
    /// Per-recipient outcome, in envelope order.
    pub recipients: Vec<RecipientResult>,
}

/// Why the client session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCloseReason {
    /// We sent QUIT (the `221` reply, or the server closing after it).
    Quit,
    /// The greeting was not `220`; QUIT was sent.
    GreetingRefused(Reply),
    /// Both EHLO and HELO were refused, or EHLO got a 4yz; QUIT was sent.
    HelloRefused(Reply),
    /// The server sent `421` (closing transmission channel).
    ServiceClosing(Reply),
    /// The server sent a malformed reply, or a reply nobody asked for.
    ProtocolError(ReplyError),
    /// The server sent a reply when none was expected.
    UnexpectedReply(Reply),
    /// Bytes followed the `220` to STARTTLS and the setting is [`AfterStartTls::Close`].
    StartTlsInjection {
        /// Octets that followed the `220`.
        discarded: usize,
    },
    /// A deadline passed.
    Timeout,
    /// The server closed the connection unexpectedly.
    ConnectionLost,
}

/// What the client session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The decision point after each successful EHLO (or HELO): the policy layer chooses
    /// [`ClientSession::start_tls`], [`ClientSession::send_mail`] (plaintext if TLS is not active) or
    /// [`ClientSession::quit`]. Never send mail here when policy requires TLS and `tls_active` is false.
    Ready {
        /// The extensions of this EHLO reply (empty after HELO).
        capabilities: Capabilities,
        /// EHLO succeeded (false: HELO fallback).
        extended: bool,
        /// TLS is active on this connection.
        tls_active: bool,
    },
    /// The server answered `220` to STARTTLS: send pending output, run the TLS handshake, then call
    /// [`ClientSession::handle_tls_established`]. Bytes that followed the `220` were discarded, never read as
    /// replies (response injection); input handed over until then is discarded too.
    StartTls {
        /// Octets that followed the `220` reply (anything but 0 means a broken or malicious server).
        discarded: usize,
    },
    /// STARTTLS was refused; the session is still at the decision point (plaintext or quit).
    StartTlsRefused(Reply),
    /// A transaction finished; the session is at the decision point again (another message, or quit).
    TransactionDone(TransactionReport),
    /// The session is over: send pending output, then close the connection.
    Closed(ClientCloseReason),
}

/// Misuse of the client's commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The session is not at the decision point.
    #[error("session not ready")]
    NotReady,
    /// STARTTLS is not advertised, already done, or TLS is active.
    #[error("starttls not possible")]
    StartTlsUnavailable,
    /// The envelope has no recipients.
    #[error("no recipients")]
    NoRecipients,
    /// The envelope or message needs an extension the server did not advertise (e.g. `SMTPUTF8`,
    /// `REQUIRETLS`, `DSN`, `8BITMIME`, `BINARYMIME`).
    #[error("extension not offered: {0}")]
    ExtensionNotOffered(&'static str),
    /// The message exceeds the server's advertised SIZE.
    #[error("message larger than the server accepts")]
    MessageTooLarge,
    /// `ClientConfig::require_tls` is set and TLS is not active: nothing is sent in plaintext.
    #[error("tls required")]
    TlsRequired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    DataEnd,
    BdatLast,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    BdatLast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Greeting, EHLO/HELO in progress.
    Opening,
    /// Decision point (after EHLO or after a transaction).
    Ready,
    /// STARTTLS accepted: waiting for the handshake.
    Handshake,
    /// A transaction in progress.
    Transaction,
    /// QUIT sent.
    Quitting,
    Closed,
}

#[derive(Debug)]
struct Txn {
    envelope: Envelope,
    message: Vec<u8>,
    mail_reply: Option<Reply>,
    rcpt_replies: Vec<Option<Reply>>,
    data_reply: Option<Reply>,
}

#[derive(Debug)]
struct Content {
    bytes: Vec<u8>,
    offset: usize,
    stuffer: Option<DotStuffer>,
}

/// A client SMTP session, sans I/O.
///
/// # Contract
/// Same driving loop as [`crate::ServerSession`]: after every input (`handle_input`, `handle_timeout`,
/// `handle_eof`, `handle_tls_established`) or command (`start_tls`, `send_mail`, `quit`), drain
/// [`poll_event`](Self::poll_event), then send what [`poll_transmit`](Self::poll_transmit) returns, then read
/// with [`poll_timeout`](Self::poll_timeout) as deadline. Nothing is sent before the server's greeting.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    parser: ReplyParser,
    input: Vec<u8>,
    pos: usize,
    output: Vec<u8>,
    events: VecDeque<ClientEvent>,
    state: State,
    expected: VecDeque<Expect>,
    to_send: VecDeque<Step>,
    capabilities: Capabilities,
    extended: bool,
    tls_active: bool,
    starttls_sent: bool,
    needs_rset: bool,
    txn: Option<Txn>,
    content: Option<Content>,
    deadline: Option<Instant>,
    discarded: u64,
}

impl ClientSession {
    /// A session on a fresh plaintext connection, waiting for the greeting (deadline `now` +
    /// `timeouts.command`).
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        Self::with_tls(config, false, now)
    }

    /// A session on a connection that is already TLS (implicit TLS, RFC 8314).
    pub fn new_tls(config: ClientConfig, now: Instant) -> Self {
        Self::with_tls(config, true, now)
    }

    fn with_tls(config: ClientConfig, tls_active: bool, now: Instant) -> Self {
        let config = config.validated();
        let deadline = Some(now + config.timeouts.command);
        Self {
            parser: ReplyParser::new(config.max_reply_line, config.max_reply_lines),
            config,
            input: Vec::new(),
            pos: 0,
            output: Vec::new(),
            events: VecDeque::new(),
            state: State::Opening,
            expected: VecDeque::from([Expect::Greeting]),
            to_send: VecDeque::new(),
            capabilities: Capabilities::default(),
            extended: false,
            tls_active,
            starttls_sent: tls_active,
            needs_rset: false,
            txn: None,
            content: None,
            deadline,
            discarded: 0,
        }
    }

    /// Feed bytes received from the server; returns how many were taken (the rest must be offered again after
    /// draining events). While a TLS handshake is due, input is discarded and counted.
    #[must_use = "bytes not taken must be offered again after draining events"]
    pub fn handle_input(&mut self, data: &[u8]) -> usize {
        match self.state {
            State::Closed => return data.len(),
            State::Handshake => {
                self.discarded += data.len() as u64;
                if !data.is_empty() && self.config.after_starttls == AfterStartTls::Close {
                    self.close(ClientCloseReason::StartTlsInjection {
                        discarded: data.len(),
                    });
                }
                return data.len();
            }
            _ => {}
        }
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let take = MAX_INPUT.saturating_sub(self.input.len()).min(data.len());
        self.input.extend_from_slice(&data[..take]);
        take
    }

    /// The server closed the connection.
    pub fn handle_eof(&mut self) {
        match self.state {
            State::Closed => {}
            State::Quitting => self.close(ClientCloseReason::Quit),
            _ => self.close(ClientCloseReason::ConnectionLost),
        }
    }

    /// The current deadline while a reply is awaited.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time passed: past the deadline the session closes ([`ClientCloseReason::Timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) && self.state != State::Closed {
            self.close(ClientCloseReason::Timeout);
        }
    }

    /// The TLS handshake after a `StartTls` event succeeded. Per RFC 3207 4.2 everything learnt before is
    /// forgotten; EHLO is sent again and a new `Ready` event carries only its capabilities.
    pub fn handle_tls_established(&mut self) -> Result<(), UnexpectedTls> {
        if self.state != State::Handshake {
            return Err(UnexpectedTls);
        }
        self.tls_active = true;
        self.capabilities = Capabilities::default();
        self.extended = false;
        self.parser = ReplyParser::new(self.config.max_reply_line, self.config.max_reply_lines);
        self.input.clear();
        self.pos = 0;
        self.state = State::Opening;
        self.send_command(&Command::Ehlo(self.hello_host()), Expect::Ehlo);
        Ok(())
    }

    /// At the decision point: send STARTTLS (only if advertised, never twice, never once TLS is active).
    pub fn start_tls(&mut self) -> Result<(), SendError> {
        if self.state != State::Ready || !self.expected.is_empty() {
            return Err(SendError::NotReady);
        }
        if self.tls_active || self.starttls_sent || !self.capabilities.starttls {
            return Err(SendError::StartTlsUnavailable);
        }
        self.starttls_sent = true;
        self.send_command(&Command::StartTls, Expect::StartTls);
        Ok(())
    }

    /// At the decision point: send one message. MAIL, RCPT and DATA (or BDAT) are pipelined when the server
    /// offers PIPELINING. A `TransactionDone` event reports the outcome.
    pub fn send_mail(&mut self, envelope: Envelope, message: Vec<u8>) -> Result<(), SendError> {
        if self.state != State::Ready {
            return Err(SendError::NotReady);
        }
        if self.config.require_tls && !self.tls_active {
            return Err(SendError::TlsRequired);
        }
        if envelope.recipients.is_empty() {
            return Err(SendError::NoRecipients);
        }
        let mut envelope = envelope;
        let caps = &self.capabilities;
        let p = &mut envelope.mail_params;
        let needs_utf8 =
            !envelope.from.is_ascii() || envelope.recipients.iter().any(|(r, _)| !r.is_ascii());
        if needs_utf8 || p.smtputf8 {
            if !caps.smtputf8 {
                return Err(SendError::ExtensionNotOffered("SMTPUTF8"));
            }
            p.smtputf8 = true;
        }
        // RFC 8689 4.1: REQUIRETLS only over TLS to a server that advertises it.
        if p.requiretls && !(caps.requiretls && self.tls_active) {
            return Err(SendError::ExtensionNotOffered("REQUIRETLS"));
        }
        let dsn_used = p.ret.is_some()
            || p.envid.is_some()
            || envelope
                .recipients
                .iter()
                .any(|(_, r)| r.notify.is_some() || r.orcpt.is_some());
        if dsn_used && !caps.dsn {
            return Err(SendError::ExtensionNotOffered("DSN"));
        }
        // RFC 6152 3: declare 8-bit content when the server offers 8BITMIME.
        if p.body.is_none() && caps.eight_bit_mime && !message.is_ascii() {
            p.body = Some(Body::EightBitMime);
        }
        // BODY= itself belongs to 8BITMIME: without the extension, 7BIT is the default and is not declared.
        if p.body == Some(Body::SevenBit) && !caps.eight_bit_mime {
            p.body = None;
        }
        match p.body {
            Some(Body::EightBitMime) if !caps.eight_bit_mime => {
                return Err(SendError::ExtensionNotOffered("8BITMIME"));
            }
            Some(Body::BinaryMime) if !(caps.binary_mime && caps.chunking) => {
                return Err(SendError::ExtensionNotOffered("BINARYMIME"));
            }
            _ => {}
        }
        let chunked =
            caps.chunking && (self.config.prefer_chunking || p.body == Some(Body::BinaryMime));
        // BDAT carries the exact octets: normalise bare CR / LF so the client never emits them, and end the
        // content with CRLF as DATA does (RFC 5321 4.1.1.4).
        let message = if chunked {
            let mut m = normalize_line_endings(&message);
            if !m.is_empty() && !m.ends_with(b"\r\n") {
                m.extend_from_slice(b"\r\n");
            }
            m
        } else {
            message
        };
        if let Some(max) = caps.size {
            if max > 0 && message.len() as u64 > max {
                return Err(SendError::MessageTooLarge);
            }
            // RFC 1870 6: declare the size when the server supports SIZE.
            p.size.get_or_insert(message.len() as u64);
        } else {
            p.size = None;
        }
        let n = envelope.recipients.len();
        self.state = State::Transaction;
        if std::mem::take(&mut self.needs_rset) {
            self.to_send.push_back(Step::Rset);
        }
        self.to_send.push_back(Step::Mail);
        self.to_send.extend((0..n).map(Step::Rcpt));
        self.to_send
            .push_back(if chunked { Step::BdatLast } else { Step::Data });
        self.txn = Some(Txn {
            envelope,
            message,
            mail_reply: None,
            rcpt_replies: vec![None; n],
            data_reply: None,
        });
        self.flush();
        Ok(())
    }

    /// At the decision point: send QUIT and close after the reply.
    pub fn quit(&mut self) -> Result<(), SendError> {
        if self.state != State::Ready {
            return Err(SendError::NotReady);
        }
        self.state = State::Quitting;
        self.send_command(&Command::Quit, Expect::Quit);
        Ok(())
    }

    /// The capabilities of the last EHLO reply (empty before EHLO, after HELO, and right after TLS starts).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Whether TLS is active.
    pub fn is_tls_active(&self) -> bool {
        self.tls_active
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the session waits at the decision point for `start_tls`, `send_mail` or `quit`.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Total octets discarded after the `220` to STARTTLS.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// Bytes to send to the server, if any (message content is produced in pieces of at most 64 KiB).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.output.len() < CONTENT_PIECE
            && let Some(c) = &mut self.content
        {
            let end = (c.offset + CONTENT_PIECE).min(c.bytes.len());
            match &mut c.stuffer {
                Some(s) => s.feed(&c.bytes[c.offset..end], &mut self.output),
                None => self.output.extend_from_slice(&c.bytes[c.offset..end]),
            }
            c.offset = end;
            if c.offset == c.bytes.len() {
                if let Some(s) = c.stuffer.take() {
                    s.finish(&mut self.output);
                }
                self.content = None;
                self.flush();
            }
        }
        if self.output.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.output))
    }

    /// Process buffered replies and return the next event.
    pub fn poll_event(&mut self, now: Instant) -> Option<ClientEvent> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Some(ev);
            }
            if matches!(self.state, State::Closed | State::Handshake) {
                return None;
            }
            let avail = &self.input[self.pos..];
            let fed = if avail.is_empty() {
                Ok((0, None))
            } else {
                self.parser.feed(avail)
            };
            match fed {
                Err(e) => self.close(ClientCloseReason::ProtocolError(e)),
                Ok((n, reply)) => {
                    self.pos += n;
                    match reply {
                        Some(r) => {
                            self.deadline = None;
                            self.on_reply(r);
                        }
                        None => {
                            if !self.expected.is_empty() && self.deadline.is_none() {
                                let t = &self.config.timeouts;
                                let data_phase = matches!(
                                    self.expected.front(),
                                    Some(Expect::DataEnd | Expect::BdatLast)
                                );
                                self.deadline =
                                    Some(now + if data_phase { t.data } else { t.command });
                            }
                            if self.expected.is_empty() && self.parser.is_mid_reply() {
                                // A reply nobody asked for is arriving; judged once complete.
                            }
                            return None;
                        }
                    }
                }
            }
        }
    }

    // ---- internals ----

    fn hello_host(&self) -> crate::address::Host {
        crate::address::Host::parse(&self.config.hostname).unwrap_or(crate::address::Host::Literal(
            crate::address::AddressLiteral::Ipv4(std::net::Ipv4Addr::LOCALHOST),
        ))
    }

    fn send_command(&mut self, cmd: &Command, expect: Expect) {
        cmd.encode(&mut self.output);
        self.expected.push_back(expect);
    }

    fn pipelining(&self) -> bool {
        self.config.pipelining && self.capabilities.pipelining
    }

    /// Send queued transaction commands: all at once with PIPELINING (DATA last, RFC 2920 3.1), else one per
    /// reply. Nothing is sent while message content is still being produced.
    fn flush(&mut self) {
        while let Some(&step) = self.to_send.front() {
            if self.content.is_some() || (!self.expected.is_empty() && !self.pipelining()) {
                return;
            }
            self.to_send.pop_front();
            let Some(txn) = &mut self.txn else { return };
            match step {
                Step::Rset => self.send_command(&Command::Rset, Expect::Rset),
                Step::Mail => {
                    let cmd = Command::Mail {
                        from: txn.envelope.from.clone(),
                        params: txn.envelope.mail_params.clone(),
                    };
                    self.send_command(&cmd, Expect::Mail);
                }
                Step::Rcpt(i) => {
                    let (to, params) = txn.envelope.recipients[i].clone();
                    self.send_command(&Command::Rcpt { to, params }, Expect::Rcpt(i));
                }
                Step::Data => self.send_command(&Command::Data, Expect::Data),
                Step::BdatLast => {
                    let bytes = std::mem::take(&mut txn.message);
                    let size = bytes.len() as u64;
                    self.send_command(&Command::Bdat { size, last: true }, Expect::BdatLast);
                    self.content = Some(Content {
                        bytes,
                        offset: 0,
                        stuffer: None,
                    });
                }
            }
        }
    }

    fn close(&mut self, reason: ClientCloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.finish_txn(true);
        self.state = State::Closed;
        self.deadline = None;
        self.to_send.clear();
        self.expected.clear();
        self.content = None;
        self.events.push_back(ClientEvent::Closed(reason));
    }

    fn quit_and_close(&mut self, reason: ClientCloseReason) {
        Command::Quit.encode(&mut self.output);
        self.close(reason);
    }

    /// Emit the report of the current transaction. `aborted`: the connection ends, so anything undecided is
    /// deferred.
    fn finish_txn(&mut self, aborted: bool) {
        let Some(txn) = self.txn.take() else { return };
        self.to_send.retain(|s| *s == Step::Rset);
        self.content = None;
        let status_of = |r: &Reply| {
            if r.code().is_positive() {
                DeliveryStatus::Delivered
            } else if r.code().is_permanent() {
                DeliveryStatus::Failed
            } else {
                DeliveryStatus::Deferred
            }
        };
        let mut recipients = Vec::with_capacity(txn.envelope.recipients.len());
        for (i, (rcpt, _)) in txn.envelope.recipients.into_iter().enumerate() {
            let decided = match (&txn.mail_reply, &txn.rcpt_replies[i], &txn.data_reply) {
                (Some(m), _, _) if !m.code().is_positive() => Some(m.clone()),
                (_, Some(r), _) if !r.code().is_positive() => Some(r.clone()),
                (_, Some(_), Some(d)) if !d.code().is_intermediate() => Some(d.clone()),
                _ => None,
            };
            let status = decided.as_ref().map_or(DeliveryStatus::Deferred, status_of);
            recipients.push(RecipientResult {
                recipient: rcpt,
                status,
                reply: decided,
            });
        }
        let completed = txn
            .data_reply
            .as_ref()
            .is_some_and(|d| d.code().is_positive());
        let mail_ok = txn
            .mail_reply
            .as_ref()
            .is_some_and(|m| m.code().is_positive());
        // A transaction opened by MAIL and not ended by a final 250 is reset before the next one.
        self.needs_rset = mail_ok && !completed;
        let data_reply = txn.data_reply;
        self.events
            .push_back(ClientEvent::TransactionDone(TransactionReport {
                mail_reply: txn.mail_reply,
                data_reply,
                recipients,
            }));
        if !aborted {
            self.state = State::Ready;
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        let Some(expect) = self.expected.pop_front() else {
            // RFC 5321 3.8: a 421 may come at any time.
            if reply.code().value() == 421 {
                self.close(ClientCloseReason::ServiceClosing(reply));
            } else {
                self.close(ClientCloseReason::UnexpectedReply(reply));
            }
            return;
        };
        if reply.code().value() == 421 && expect != Expect::Quit {
            self.close(ClientCloseReason::ServiceClosing(reply));
            return;
        }
        let ok = reply.code().is_positive();
        match expect {
            Expect::Greeting => {
                if reply.code().value() == 220 {
                    self.send_command(&Command::Ehlo(self.hello_host()), Expect::Ehlo);
                } else {
                    self.quit_and_close(ClientCloseReason::GreetingRefused(reply));
                }
            }
            Expect::Ehlo => match Capabilities::parse_ehlo(&reply) {
                Some(ehlo) => self.ready(ehlo.capabilities, true),
                // RFC 5321 3.2: a server that does not support EHLO answers 5yz; fall back to HELO.
                None if reply.code().is_permanent() => {
                    self.send_command(&Command::Helo(self.hello_host()), Expect::Helo)
                }
                None => self.quit_and_close(ClientCloseReason::HelloRefused(reply)),
            },
            Expect::Helo => {
                if ok {
                    self.ready(Capabilities::default(), false);
                } else {
                    self.quit_and_close(ClientCloseReason::HelloRefused(reply));
                }
            }
            Expect::StartTls => {
                if reply.code().value() == 220 {
                    // RFC 3207 4 / response injection: nothing after the 220 is ever read as a reply.
                    let leftover = self.input.len() - self.pos;
                    self.discarded += leftover as u64;
                    self.input.clear();
                    self.pos = 0;
                    if leftover > 0 && self.config.after_starttls == AfterStartTls::Close {
                        self.close(ClientCloseReason::StartTlsInjection {
                            discarded: leftover,
                        });
                        return;
                    }
                    self.state = State::Handshake;
                    self.deadline = None;
                    self.events.push_back(ClientEvent::StartTls {
                        discarded: leftover,
                    });
                } else {
                    self.events.push_back(ClientEvent::StartTlsRefused(reply));
                }
            }
            Expect::Rset => self.flush(),
            Expect::Mail => {
                if let Some(t) = &mut self.txn {
                    t.mail_reply = Some(reply);
                }
                if !ok && !self.pipelining() {
                    self.to_send.clear();
                    self.finish_txn(false);
                } else {
                    self.flush();
                }
            }
            Expect::Rcpt(i) => {
                let Some(t) = &mut self.txn else { return };
                t.rcpt_replies[i] = Some(reply);
                let last = i + 1 == t.rcpt_replies.len();
                let any_ok = t
                    .rcpt_replies
                    .iter()
                    .flatten()
                    .any(|r| r.code().is_positive());
                if last && !any_ok && !self.pipelining() {
                    // No recipient: do not send DATA; reset the open transaction.
                    self.to_send.clear();
                    self.finish_txn(false);
                } else {
                    self.flush();
                }
            }
            Expect::Data => {
                let Some(t) = &mut self.txn else { return };
                let any_ok = t
                    .rcpt_replies
                    .iter()
                    .flatten()
                    .any(|r| r.code().is_positive());
                if reply.code().value() == 354 {
                    let message = std::mem::take(&mut t.message);
                    if any_ok {
                        self.content = Some(Content {
                            bytes: message,
                            offset: 0,
                            stuffer: Some(DotStuffer::new()),
                        });
                    } else {
                        // RFC 2920 3.1: 354 with no accepted recipient: send an empty message and ignore its reply.
                        self.output.extend_from_slice(b".\r\n");
                        t.data_reply = None;
                    }
                    self.expected.push_front(Expect::DataEnd);
                    if !any_ok {
                        self.finish_txn(false);
                        self.needs_rset = true;
                    }
                } else {
                    t.data_reply = Some(reply);
                    self.finish_txn(false);
                }
            }
            Expect::DataEnd | Expect::BdatLast => {
                if let Some(t) = &mut self.txn {
                    t.data_reply = Some(reply);
                    self.finish_txn(false);
                }
            }
            Expect::Quit => self.close(ClientCloseReason::Quit),
        }
    }

    fn ready(&mut self, capabilities: Capabilities, extended: bool) {
        self.capabilities = capabilities.clone();
        self.extended = extended;
        self.state = State::Ready;
        self.events.push_back(ClientEvent::Ready {
            capabilities,
            extended,
            tls_active: self.tls_active,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> (ClientSession, Instant) {
        let now = Instant::now();
        (
            ClientSession::new(ClientConfig::new("client.example"), now),
            now,
        )
    }

    fn reply(c: &mut ClientSession, now: Instant, wire: &[u8]) -> Vec<ClientEvent> {
        assert_eq!(c.handle_input(wire), wire.len());
        let mut ev = Vec::new();
        while let Some(e) = c.poll_event(now) {
            ev.push(e);
        }
        ev
    }

    fn sent(c: &mut ClientSession) -> String {
        let mut out = Vec::new();
        while let Some(o) = c.poll_transmit() {
            out.extend(o);
        }
        String::from_utf8(out).unwrap()
    }

    fn env(rcpts: &[&str]) -> Envelope {
        Envelope::new(
            ReversePath::parse("<a@example.net>").unwrap(),
            rcpts.iter().map(|r| ForwardPath::parse(r).unwrap()),
        )
    }

    #[test]
    fn helo_fallback() {
        let (mut c, now) = client();
        assert!(reply(&mut c, now, b"220 old.example\r\n").is_empty());
        assert_eq!(sent(&mut c), "EHLO client.example\r\n");
        assert!(reply(&mut c, now, b"502 5.5.2 Error: command not recognized\r\n").is_empty());
        assert_eq!(sent(&mut c), "HELO client.example\r\n");
        let ev = reply(&mut c, now, b"250 old.example\r\n");
        assert_eq!(
            ev,
            vec![ClientEvent::Ready {
                capabilities: Capabilities::default(),
                extended: false,
                tls_active: false
            }]
        );
        assert_eq!(c.start_tls(), Err(SendError::StartTlsUnavailable));
    }

    #[test]
    fn greeting_refused() {
        let (mut c, now) = client();
        let ev = reply(&mut c, now, b"554 5.7.1 go away\r\n");
        assert!(matches!(
            ev.as_slice(),
            [ClientEvent::Closed(ClientCloseReason::GreetingRefused(_))]
        ));
        assert_eq!(sent(&mut c), "QUIT\r\n");
    }

    #[test]
    fn send_mail_checks() {
        let (mut c, now) = client();
        assert_eq!(
            c.send_mail(env(&["<b@example.org>"]), b"x".to_vec()),
            Err(SendError::NotReady)
        );
        reply(&mut c, now, b"220 mx\r\n");
        reply(&mut c, now, b"250-mx\r\n250 SIZE 10\r\n");
        let _ = sent(&mut c);
        assert_eq!(
            c.send_mail(env(&[]), b"x".to_vec()),
            Err(SendError::NoRecipients)
        );
        assert_eq!(
            c.send_mail(env(&["<ü@example.org>"]), b"x".to_vec()),
            Err(SendError::ExtensionNotOffered("SMTPUTF8"))
        );
        assert_eq!(
            c.send_mail(env(&["<b@example.org>"]), vec![b'x'; 11]),
            Err(SendError::MessageTooLarge)
        );
        let mut e = env(&["<b@example.org>"]);
        e.mail_params.requiretls = true;
        assert_eq!(
            c.send_mail(e.clone(), b"x".to_vec()),
            Err(SendError::ExtensionNotOffered("REQUIRETLS"))
        );
        c.config.require_tls = true;
        assert_eq!(
            c.send_mail(env(&["<b@example.org>"]), b"x".to_vec()),
            Err(SendError::TlsRequired)
        );
        c.config.require_tls = false;
        assert_eq!(
            c.send_mail(e, b"x".to_vec()),
            Err(SendError::ExtensionNotOffered("REQUIRETLS"))
        );
    }

    #[test]
    fn lockstep_without_pipelining_and_rset_before_next() {
        let (mut c, now) = client();
        reply(&mut c, now, b"220 mx\r\n");
        reply(&mut c, now, b"250-mx\r\n250 8BITMIME\r\n");
        let _ = sent(&mut c);
        c.send_mail(env(&["<b@example.org>", "<c@example.org>"]), b"hi".to_vec())
            .unwrap();
        assert_eq!(sent(&mut c), "MAIL FROM:<a@example.net>\r\n");
        reply(&mut c, now, b"250 2.1.0 Ok\r\n");
        assert_eq!(sent(&mut c), "RCPT TO:<b@example.org>\r\n");
        reply(&mut c, now, b"550 5.1.1 no\r\n");
        assert_eq!(sent(&mut c), "RCPT TO:<c@example.org>\r\n");
        let ev = reply(&mut c, now, b"450 4.2.0 busy\r\n");
        assert_eq!(sent(&mut c), "", "no DATA without an accepted recipient");
        let [ClientEvent::TransactionDone(report)] = ev.as_slice() else {
            panic!("{ev:?}")
        };
        let st: Vec<_> = report.recipients.iter().map(|r| r.status).collect();
        assert_eq!(st, [DeliveryStatus::Failed, DeliveryStatus::Deferred]);
        c.send_mail(env(&["<b@example.org>"]), b"hi".to_vec())
            .unwrap();
        assert_eq!(
            sent(&mut c),
            "RSET\r\n",
            "the open transaction is reset first"
        );
        reply(&mut c, now, b"250 2.0.0 Ok\r\n");
        assert_eq!(sent(&mut c), "MAIL FROM:<a@example.net>\r\n");
        reply(&mut c, now, b"250 2.1.0 Ok\r\n");
        assert_eq!(sent(&mut c), "RCPT TO:<b@example.org>\r\n");
        reply(&mut c, now, b"250 2.1.5 Ok\r\n");
        assert_eq!(sent(&mut c), "DATA\r\n");
        reply(&mut c, now, b"354 go\r\n");
        assert_eq!(sent(&mut c), "hi\r\n.\r\n");
        let ev = reply(&mut c, now, b"250 2.0.0 Ok: queued\r\n");
        let [ClientEvent::TransactionDone(report)] = ev.as_slice() else {
            panic!("{ev:?}")
        };
        assert_eq!(report.recipients[0].status, DeliveryStatus::Delivered);
        c.quit().unwrap();
        assert_eq!(sent(&mut c), "QUIT\r\n");
        let ev = reply(&mut c, now, b"221 2.0.0 Bye\r\n");
        assert_eq!(ev, vec![ClientEvent::Closed(ClientCloseReason::Quit)]);
    }

    #[test]
    fn pipelined_and_service_closing() {
        let (mut c, now) = client();
        reply(&mut c, now, b"220 mx\r\n");
        reply(
            &mut c,
            now,
            b"250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
        );
        let _ = sent(&mut c);
        c.send_mail(
            env(&["<b@example.org>", "<c@example.org>"]),
            b"hi\r\n".to_vec(),
        )
        .unwrap();
        assert_eq!(
            sent(&mut c),
            "MAIL FROM:<a@example.net> SIZE=4\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
        );
        let ev = reply(
            &mut c,
            now,
            b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n421 4.3.2 shutting down\r\n",
        );
        let [
            ClientEvent::TransactionDone(report),
            ClientEvent::Closed(ClientCloseReason::ServiceClosing(_)),
        ] = ev.as_slice()
        else {
            panic!("{ev:?}")
        };
        assert!(
            report
                .recipients
                .iter()
                .all(|r| r.status == DeliveryStatus::Deferred)
        );
    }

    #[test]
    fn eight_bit_content_is_declared() {
        let (mut c, now) = client();
        reply(&mut c, now, b"220 mx\r\n");
        reply(&mut c, now, b"250-mx\r\n250 8BITMIME\r\n");
        let _ = sent(&mut c);
        c.send_mail(
            env(&["<b@example.org>"]),
            "caf\u{e9}\r\n".as_bytes().to_vec(),
        )
        .unwrap();
        assert_eq!(sent(&mut c), "MAIL FROM:<a@example.net> BODY=8BITMIME\r\n");
    }

    #[test]
    fn unexpected_reply_closes() {
        let (mut c, now) = client();
        reply(&mut c, now, b"220 mx\r\n");
        reply(&mut c, now, b"250 mx\r\n");
        let ev = reply(&mut c, now, b"250 surprise\r\n");
        assert!(matches!(
            ev.as_slice(),
            [ClientEvent::Closed(ClientCloseReason::UnexpectedReply(_))]
        ));
    }
}
