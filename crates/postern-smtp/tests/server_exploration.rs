//! Exhaustive exploration of the server session: under every inbound configuration of [`configs`] (TLS mode
//! none / offer / require × client certificates none / ask / require where valid × bare newlines normalize /
//! reject × pipelining advertised and enforced, not advertised, not enforced × plaintext after STARTTLS
//! discarded / closing), every state a client can drive a [`ServerSession`] into within [`MAX_MOVES`] moves is
//! reached, and a model of the client ([`Model`]) checks the rules of docs/security.md after every move.
//!
//! A plain enumerator: a breadth-first search over the client's moves. The session is deterministic and can be
//! cloned, so each move is applied to a copy of the state it starts from; two paths that reach the same state
//! (the same session, compared by its full `Debug` rendering, and the same model) are explored once. No
//! model-checking crate is needed: the states are a few thousand per configuration, the session already gives
//! what such a crate would ask for (clone, a canonical rendering), and a failure prints the exact moves and
//! bytes that broke a rule. Breadth first, so every state is reached by a shortest path and the bound means
//! "every state reachable within [`MAX_MOVES`] moves".
//!
//! The client's moves:
//! - before the greeting: wait for it, talk early (EHLO during the greet pause), disconnect;
//! - in the command phase, one read each: EHLO, HELO, STARTTLS, MAIL, RCPT, DATA, `BDAT 4 LAST` with its
//!   chunk, RSET, NOOP, QUIT, VRFY, HELP, a junk line holding a bare LF (`MAIL ...\nRCPT ...`), the group
//!   MAIL + RCPT + DATA, NOOP followed by MAIL (a command after a group-ending one), STARTTLS followed by RSET
//!   and a MAIL in the same read (injection), disconnect, silence until the deadline;
//! - in the content phase: a message ended by `CRLF . CRLF`; `\n.\n` and `\n.\r\n` then a would-be smuggled
//!   MAIL; `\r\n.\r` then a would-be smuggled RCPT; the end line followed by NOOP in the same read;
//!   disconnect, silence;
//! - after `220 Ready to start TLS`, the driver reports the handshake: ok with a verified client certificate,
//!   ok without one, ok with one that did not verify (only when certificates are requested), plaintext read
//!   ahead and handed over before an ok handshake, failed (the driver drops the connection).
//!
//! The application accepts every decision (the most permissive one), so that only the engine and the policy
//! stand between a client and an accepted message. The handshake's client-certificate outcome goes through
//! `ServerPolicy::client_certificate_verdict` to the session, as postern-tokio's driver does.
//!
//! Checked after every move: under `require` no MAIL, RCPT, DATA, BDAT or RSET gets a 2xx/3xx before TLS (MAIL
//! gets `530 5.7.0`) and no content starts; STARTTLS is accepted exactly when TLS is enabled, not active and
//! no transaction is open, a second one gets `554`; bytes after the STARTTLS line (same read, or read ahead
//! before the handshake) are discarded and counted, or close the session, and are never answered; after TLS
//! the EHLO and the transaction are forgotten (MAIL needs a new EHLO) and STARTTLS is not advertised; a message
//! is accepted only after its `CRLF . CRLF` (nothing is answered to a lookalike, no would-be smuggled command
//! reaches the application), and refused `550` when it holds a bare CR or LF under `reject`; a command after a
//! group-ending one, or pipelining without PIPELINING, gets `554 5.5.0` and the session closes, and no
//! `554 5.5.0` comes otherwise; with client certificates `require` and no verified certificate, EHLO / HELO get
//! `554 5.7.1` and no transaction is accepted, while `ask` never refuses; replies come in order, exactly one per
//! command, except a final `421` or `554 5.5.0`; the session closes after QUIT, a closing reply or a
//! disconnect, and says nothing after a disconnect or a failed handshake; while it waits for the client it
//! has a deadline, and the deadline closes it with `421`. At the bound the client disconnects and the session
//! must end in silence, so every path ends.
//!
//! States are remembered as two 64-bit hashes of the session's rendering and the model: a collision could
//! only skip a state, never report a false failure.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use postern_policy::{
    CertificateCheck, CertificateFailure, ClientCertMode, CommandVerdict, PeerTrust, ServerPolicy,
    ServerTlsMode, TlsVersion,
};
use postern_smtp::data::BareLineEndings;
use postern_smtp::{
    AfterStartTls, EnhancedStatus, Reply, ServerConfig, ServerEvent, ServerSession, StartTlsPolicy,
};

/// The most client moves on one path (handshake reports included).
const MAX_MOVES: usize = 7;

/// What a line the client sends is, for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    Junk,
    DataEnd,
}

impl Kind {
    /// RFC 2920 3.1: the commands that end a pipelined group.
    fn ends_group(self) -> bool {
        matches!(
            self,
            Self::Ehlo
                | Self::Helo
                | Self::Data
                | Self::Vrfy
                | Self::Quit
                | Self::Noop
                | Self::StartTls
        )
    }
}

/// The handshake as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Verified,
    Anonymous,
    Unverified,
    /// Plaintext read ahead after the `220` and handed to the session before an ok handshake.
    ReadAhead,
    Failed,
}

/// Message content, one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Proper,
    LfLookalike,
    CrLookalike,
    EndThenNoop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Wait,
    EarlyTalk,
    Send(&'static str, &'static [(Kind, &'static str)]),
    Content(Content),
    Handshake(Outcome),
    Disconnect,
    Silence,
}

const INJECTED: &str = "MAIL FROM:<injected@evil.example>\r\n";
const SMUGGLED: &str = "smuggled@evil.example";

const COMMANDS: &[Move] = &[
    Move::Send("EHLO", &[(Kind::Ehlo, "EHLO c.example\r\n")]),
    Move::Send("HELO", &[(Kind::Helo, "HELO c.example\r\n")]),
    Move::Send("STARTTLS", &[(Kind::StartTls, "STARTTLS\r\n")]),
    Move::Send("MAIL", &[(Kind::Mail, "MAIL FROM:<a@b.example>\r\n")]),
    Move::Send("RCPT", &[(Kind::Rcpt, "RCPT TO:<c@d.example>\r\n")]),
    Move::Send("DATA", &[(Kind::Data, "DATA\r\n")]),
    Move::Send("BDAT", &[(Kind::Bdat, "BDAT 4 LAST\r\nabcd")]),
    Move::Send("RSET", &[(Kind::Rset, "RSET\r\n")]),
    Move::Send("NOOP", &[(Kind::Noop, "NOOP\r\n")]),
    Move::Send("QUIT", &[(Kind::Quit, "QUIT\r\n")]),
    Move::Send("VRFY", &[(Kind::Vrfy, "VRFY c\r\n")]),
    Move::Send("HELP", &[(Kind::Help, "HELP\r\n")]),
    Move::Send(
        "junk",
        &[(
            Kind::Junk,
            "MAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\r\n",
        )],
    ),
    Move::Send(
        "MAIL+RCPT+DATA",
        &[
            (Kind::Mail, "MAIL FROM:<a@b.example>\r\n"),
            (Kind::Rcpt, "RCPT TO:<c@d.example>\r\n"),
            (Kind::Data, "DATA\r\n"),
        ],
    ),
    Move::Send(
        "NOOP+MAIL",
        &[
            (Kind::Noop, "NOOP\r\n"),
            (Kind::Mail, "MAIL FROM:<a@b.example>\r\n"),
        ],
    ),
    Move::Send(
        "STARTTLS+injection",
        &[
            (Kind::StartTls, "STARTTLS\r\n"),
            (Kind::Rset, "RSET\r\n"),
            (Kind::Mail, INJECTED),
        ],
    ),
    Move::Disconnect,
    Move::Silence,
];

const CONTENT: &[Move] = &[
    Move::Content(Content::Proper),
    Move::Content(Content::LfLookalike),
    Move::Content(Content::CrLookalike),
    Move::Content(Content::EndThenNoop),
    Move::Disconnect,
    Move::Silence,
];

/// One inbound configuration.
#[derive(Debug, Clone)]
struct Config {
    name: String,
    policy: ServerPolicy,
    smtp: ServerConfig,
}

impl Config {
    fn require(&self) -> bool {
        self.policy.tls == ServerTlsMode::Require
    }

    fn certs_requested(&self) -> bool {
        self.policy.client_certificates != ClientCertMode::None
    }
}

/// Every valid combination of TLS mode, client-certificate mode, bare newline handling, pipelining rules and
/// plaintext-after-STARTTLS handling.
fn configs() -> Vec<Config> {
    let mut all = Vec::new();
    for mode in [
        ServerTlsMode::None,
        ServerTlsMode::Offer,
        ServerTlsMode::Require,
    ] {
        for cert in [
            ClientCertMode::None,
            ClientCertMode::Ask,
            ClientCertMode::Require,
        ] {
            let Ok(policy) = ServerPolicy::new(mode, cert, TlsVersion::Tls12, Vec::new()) else {
                continue;
            };
            if mode == ServerTlsMode::None && cert != ClientCertMode::None {
                // Nothing is requested without a handshake.
                continue;
            }
            for bare in [BareLineEndings::Normalize, BareLineEndings::Reject] {
                for (pipelining, forbid, pipe_name) in [
                    (true, true, "pipelining"),
                    (false, true, "no-pipelining"),
                    (true, false, "unforbidden"),
                ] {
                    let afters: &[AfterStartTls] = if mode == ServerTlsMode::None {
                        &[AfterStartTls::Discard]
                    } else {
                        &[AfterStartTls::Discard, AfterStartTls::Close]
                    };
                    for &after in afters {
                        let mut smtp = ServerConfig::new("mx.example.org");
                        // As postern-tokio's `Server::new` maps the policy's mode.
                        smtp.starttls = match mode {
                            ServerTlsMode::None => StartTlsPolicy::Disabled,
                            ServerTlsMode::Require => StartTlsPolicy::Require,
                            _ => StartTlsPolicy::Offer,
                        };
                        smtp.tls_available = mode != ServerTlsMode::None;
                        smtp.data.bare_line_endings = bare;
                        smtp.pipelining = pipelining;
                        smtp.forbid_unauth_pipelining = forbid;
                        smtp.after_starttls = after;
                        all.push(Config {
                            name: format!("{mode}/{cert}/{bare:?}/{pipe_name}/{after:?}"),
                            policy: policy.clone(),
                            smtp,
                        });
                    }
                }
            }
        }
    }
    all
}

/// What the client knows, from the replies it read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Model {
    greeted: bool,
    /// The handshake completed.
    tls: bool,
    /// ... with a verified client certificate.
    verified: bool,
    /// `220 Ready to start TLS` read; the handshake is next.
    handshake: bool,
    /// EHLO / HELO accepted since the start or the handshake.
    hello: bool,
    /// That was EHLO.
    ehlo: bool,
    /// MAIL accepted: a transaction is open.
    mail: bool,
    /// A recipient accepted.
    rcpt: bool,
    /// `354` read: content is being sent.
    data: bool,
    /// The content sent so far holds a bare CR or LF.
    bare: bool,
}

/// What the model expects of one move.
#[derive(Debug, Default)]
struct Plan {
    /// The lines that must be answered, in order.
    owed: VecDeque<Kind>,
    /// A synchronization violation: `554 5.5.0` and close after the owed replies.
    violation: bool,
    /// Octets the session must discard after an accepted STARTTLS.
    discarded: Option<usize>,
}

impl Model {
    fn pipelining(&self, c: &Config) -> bool {
        c.smtp.pipelining && self.hello && self.ehlo
    }

    fn starttls_accepted(&self, c: &Config) -> bool {
        c.policy.tls != ServerTlsMode::None && !self.tls && !self.mail
    }

    /// Whether a transaction may be accepted in this TLS state.
    fn transaction_allowed(&self, c: &Config) -> bool {
        (!c.require() || self.tls)
            && (c.policy.client_certificates != ClientCertMode::Require || self.verified)
    }

    fn plan(&self, c: &Config, lines: &[(Kind, &str)]) -> Plan {
        let mut plan = Plan::default();
        for (i, &(kind, _)) in lines.iter().enumerate() {
            let more = i + 1 < lines.len();
            if kind == Kind::StartTls && self.starttls_accepted(c) {
                if more && c.smtp.after_starttls == AfterStartTls::Close {
                    plan.violation = true;
                } else {
                    plan.owed.push_back(kind);
                    plan.discarded = Some(lines[i + 1..].iter().map(|(_, l)| l.len()).sum());
                }
                return plan;
            }
            let exempt = matches!(kind, Kind::Bdat | Kind::StartTls | Kind::Junk);
            if c.smtp.forbid_unauth_pipelining
                && more
                && !exempt
                && (kind.ends_group() || !self.pipelining(c))
            {
                plan.violation = true;
                return plan;
            }
            plan.owed.push_back(kind);
            if kind == Kind::Quit {
                break;
            }
        }
        plan
    }

    /// Checks one reply to `kind` and learns from it.
    fn on_reply(&mut self, c: &Config, kind: Kind, code: u16, text: &str) -> Result<(), String> {
        let positive = code < 400;
        if c.require()
            && !self.tls
            && positive
            && matches!(
                kind,
                Kind::Mail | Kind::Rcpt | Kind::Data | Kind::Bdat | Kind::DataEnd | Kind::Rset
            )
        {
            return Err(format!(
                "{kind:?} accepted before TLS under require: {text}"
            ));
        }
        if positive
            && matches!(
                kind,
                Kind::Mail | Kind::Rcpt | Kind::Data | Kind::Bdat | Kind::DataEnd
            )
            && !self.transaction_allowed(c)
        {
            return Err(format!(
                "{kind:?} accepted without TLS or without a verified client certificate: {text}"
            ));
        }
        let refused_cert =
            self.tls && c.policy.client_certificates == ClientCertMode::Require && !self.verified;
        match kind {
            Kind::Greeting => expect(code == 220, "greeting", text)?,
            Kind::Ehlo | Kind::Helo => {
                if refused_cert {
                    expect(
                        text.starts_with("554 5.7.1 "),
                        "554 5.7.1 to EHLO without a verified certificate",
                        text,
                    )?;
                } else {
                    expect(
                        code == 250,
                        "EHLO accepted (client certificates: ask never rejects)",
                        text,
                    )?;
                    let offered = text.contains("STARTTLS");
                    if kind == Kind::Ehlo
                        && offered != (c.policy.tls != ServerTlsMode::None && !self.tls)
                    {
                        return Err(format!(
                            "STARTTLS advertised wrongly (tls {}): {text}",
                            self.tls
                        ));
                    }
                }
                self.hello = code == 250;
                self.ehlo = kind == Kind::Ehlo;
                self.mail = false;
                self.rcpt = false;
            }
            Kind::StartTls => {
                expect(
                    (code == 220) == self.starttls_accepted(c),
                    "STARTTLS accepted exactly when TLS is enabled, not active, no transaction",
                    text,
                )?;
                if self.tls {
                    expect(code == 554, "a second STARTTLS refused with 554", text)?;
                }
                if code == 220 {
                    self.handshake = true;
                    self.hello = false;
                    self.mail = false;
                    self.rcpt = false;
                }
            }
            Kind::Mail => {
                if c.require() && !self.tls {
                    expect(code == 530, "530 before TLS", text)?;
                }
                if code == 250 {
                    expect(
                        self.hello && !self.mail,
                        "MAIL accepted after EHLO only",
                        text,
                    )?;
                    self.mail = true;
                }
            }
            Kind::Rcpt => {
                if code == 250 {
                    expect(self.mail, "RCPT accepted in a transaction only", text)?;
                    self.rcpt = true;
                }
            }
            Kind::Data => {
                if code == 354 {
                    expect(self.rcpt, "354 after an accepted RCPT only", text)?;
                    self.data = true;
                    self.bare = false;
                }
            }
            Kind::Bdat => {
                if code == 250 {
                    expect(self.rcpt, "BDAT accepted after an accepted RCPT only", text)?;
                }
                self.mail = false;
                self.rcpt = false;
            }
            Kind::DataEnd => {
                let reject = c.smtp.data.bare_line_endings == BareLineEndings::Reject && self.bare;
                if reject {
                    expect(code == 550, "550 to content with a bare CR or LF", text)?;
                } else {
                    expect(code == 250, "250 to a complete message", text)?;
                }
                self.mail = false;
                self.rcpt = false;
            }
            Kind::Rset => {
                if code == 250 {
                    self.mail = false;
                    self.rcpt = false;
                }
            }
            Kind::Noop => expect(code == 250, "250 to NOOP", text)?,
            Kind::Help => expect(code == 214, "214 to HELP", text)?,
            Kind::Quit => expect(code == 221, "221 to QUIT", text)?,
            Kind::Vrfy => expect(code == 252 || code >= 500, "252 or a refusal to VRFY", text)?,
            Kind::Junk => expect(code >= 500, "5xx to a line with a bare LF", text)?,
        }
        Ok(())
    }
}

fn expect(ok: bool, rule: &str, reply: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("broken: {rule}; got {reply:?}"))
    }
}

/// Splits output into replies: (code, full text).
fn replies(out: &[u8]) -> Result<Vec<(u16, String)>, String> {
    let text = String::from_utf8_lossy(out);
    let mut all = Vec::new();
    let mut current = String::new();
    if !text.is_empty() && !text.ends_with("\r\n") {
        return Err(format!("partial reply: {text:?}"));
    }
    for line in text.split_terminator("\r\n") {
        if line.contains(['\r', '\n']) || line.len() < 3 {
            return Err(format!("bad reply line {line:?}"));
        }
        current.push_str(line);
        current.push('\n');
        if line.as_bytes().get(3) != Some(&b'-') {
            let code = line[..3]
                .parse()
                .map_err(|_| format!("bad reply code in {line:?}"))?;
            all.push((code, std::mem::take(&mut current)));
        }
    }
    if !current.is_empty() {
        return Err(format!("unfinished multi-line reply {current:?}"));
    }
    Ok(all)
}

/// A state of the exploration.
#[derive(Debug, Clone)]
struct Node {
    session: ServerSession,
    model: Model,
    path: Vec<Move>,
}

/// What one move led to.
struct Step {
    /// The session is over.
    ended: bool,
    /// A message was accepted.
    accepted: bool,
}

/// Runs the session until it waits, accepting every decision; returns (events, output).
fn drain(s: &mut ServerSession, now: Instant) -> (Vec<ServerEvent>, Vec<u8>) {
    let mut events = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut any = false;
        while let Some(e) = s.poll_event(now) {
            any = true;
            if s.is_awaiting_decision() {
                s.accept().expect("a decision is pending");
            }
            events.push(e);
        }
        while let Some(bytes) = s.poll_transmit() {
            any = true;
            out.extend_from_slice(&bytes);
        }
        if !any {
            return (events, out);
        }
    }
}

fn policy_refusal(c: &Config, check: &CertificateCheck) -> Option<Reply> {
    // As postern-tokio's driver turns the policy's verdict into the session's refusal.
    match c.policy.client_certificate_verdict(check) {
        CommandVerdict::Allow => None,
        CommandVerdict::Reject { code, status, text } => {
            Reply::new(code, Some(status), [text]).ok()
        }
        _ => Some(
            Reply::new(
                554,
                EnhancedStatus::new(5, 7, 1).ok(),
                ["Client certificate required"],
            )
            .ok()?,
        ),
    }
}

/// The moves open to the client in `model`'s state.
fn moves(c: &Config, m: &Model) -> Vec<Move> {
    if !m.greeted {
        return vec![Move::Wait, Move::EarlyTalk, Move::Disconnect];
    }
    if m.handshake {
        let mut v = vec![Move::Handshake(Outcome::Anonymous)];
        if c.certs_requested() {
            v.push(Move::Handshake(Outcome::Verified));
            v.push(Move::Handshake(Outcome::Unverified));
        }
        v.push(Move::Handshake(Outcome::ReadAhead));
        v.push(Move::Handshake(Outcome::Failed));
        return v;
    }
    if m.data {
        return CONTENT.to_vec();
    }
    COMMANDS.to_vec()
}

/// Applies `mv` to `node`, checking every rule.
fn step(c: &Config, node: &mut Node, mv: Move, start: Instant) -> Result<Step, String> {
    let now = start + c.smtp.greet_pause;
    let s = &mut node.session;
    let m = &mut node.model;
    let mut plan = Plan::default();
    let mut expect_silence = false;
    match mv {
        Move::Wait => {
            s.handle_timeout(now);
            plan.owed.push_back(Kind::Greeting);
            m.greeted = true;
        }
        Move::EarlyTalk => {
            let line = "EHLO c.example\r\n";
            if s.handle_input(line.as_bytes()) != line.len() {
                return Err("early input not taken".into());
            }
            s.handle_timeout(now);
            if c.smtp.forbid_unauth_pipelining {
                plan.violation = true;
            } else {
                plan.owed.extend([Kind::Greeting, Kind::Ehlo]);
                m.greeted = true;
            }
        }
        Move::Send(_, lines) => {
            plan = m.plan(c, lines);
            let bytes: String = lines.iter().map(|(_, l)| *l).collect();
            if s.handle_input(bytes.as_bytes()) != bytes.len() {
                return Err("input not taken".into());
            }
        }
        Move::Content(content) => {
            let (bytes, owed, bare): (&str, &[Kind], bool) = match content {
                Content::Proper => ("Subject: x\r\n\r\nhello\r\n.\r\n", &[Kind::DataEnd], false),
                Content::LfLookalike => (
                    "a\n.\nb\n.\r\nMAIL FROM:<smuggled@evil.example>\r\n",
                    &[],
                    true,
                ),
                Content::CrLookalike => ("b\r\n.\rRCPT TO:<smuggled@evil.example>\r\n", &[], true),
                Content::EndThenNoop => (".\r\nNOOP\r\n", &[Kind::DataEnd, Kind::Noop], false),
            };
            m.bare |= bare;
            if !owed.is_empty() {
                m.data = false;
            }
            plan.owed.extend(owed);
            if s.handle_input(bytes.as_bytes()) != bytes.len() {
                return Err("content not taken".into());
            }
        }
        Move::Handshake(outcome) => {
            m.handshake = false;
            let check = match outcome {
                Outcome::Verified => CertificateCheck::verified(),
                Outcome::Unverified => {
                    CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted)
                }
                Outcome::Anonymous | Outcome::ReadAhead => CertificateCheck::anonymous(),
                Outcome::Failed => {
                    // The driver drops the connection.
                    s.handle_eof();
                    expect_silence = true;
                    CertificateCheck::anonymous()
                }
            };
            if outcome == Outcome::ReadAhead {
                let _ = s.handle_input(INJECTED.as_bytes());
                if c.smtp.after_starttls == AfterStartTls::Close {
                    expect_silence = true;
                }
            }
            if !expect_silence {
                let established = match policy_refusal(c, &check) {
                    None => s.handle_tls_established(),
                    Some(r) => s.handle_tls_established_refusing(r),
                };
                established.map_err(|e| format!("handshake report refused: {e}"))?;
                m.tls = true;
                m.verified = check.is_verified();
            }
        }
        Move::Disconnect => {
            s.handle_eof();
            expect_silence = true;
        }
        Move::Silence => {
            let deadline = s
                .poll_timeout()
                .ok_or("the session waits for the client without a deadline")?;
            s.handle_timeout(deadline);
        }
    }
    let (events, out) = drain(s, now);
    let replies = replies(&out)?;
    if expect_silence && !replies.is_empty() {
        return Err(format!("replies after the connection ended: {replies:?}"));
    }
    let mut closing = false;
    let mut sync = false;
    let mut accepted = false;
    for (code, text) in &replies {
        if closing {
            return Err(format!("reply after a closing reply: {text:?}"));
        }
        if text.starts_with("554 5.5.0 ") {
            if !plan.violation || !plan.owed.is_empty() {
                return Err(format!(
                    "554 5.5.0 without a synchronization violation: {text:?}"
                ));
            }
            sync = true;
            closing = true;
            continue;
        }
        if *code == 421 {
            closing = true;
            continue;
        }
        let Some(kind) = plan.owed.pop_front() else {
            return Err(format!(
                "a reply to no command (replies out of step): {text:?}"
            ));
        };
        m.on_reply(c, kind, *code, text)?;
        accepted |= matches!(kind, Kind::DataEnd | Kind::Bdat) && *code == 250;
        if kind == Kind::Quit {
            closing = true;
        }
    }
    for e in &events {
        match e {
            ServerEvent::Mail { from, .. } if from.to_string().contains(SMUGGLED) => {
                return Err(format!("message content read as a command: {e:?}"));
            }
            ServerEvent::Rcpt { to, .. } if to.to_string().contains(SMUGGLED) => {
                return Err(format!("message content read as a command: {e:?}"));
            }
            ServerEvent::MessageStart { .. } if !m.transaction_allowed(c) => {
                return Err(format!("content accepted in this TLS state: {e:?}"));
            }
            ServerEvent::StartTls { discarded } if Some(*discarded) != plan.discarded => {
                return Err(format!(
                    "STARTTLS discarded {discarded} octets, expected {:?}",
                    plan.discarded
                ));
            }
            _ => {}
        }
    }
    if mv == Move::Silence && !closing {
        return Err("the deadline passed without a 421".into());
    }
    if plan.violation && !sync && !closing && !expect_silence {
        return Err("a synchronization violation was not answered with 554 5.5.0".into());
    }
    if closing || expect_silence {
        if !s.is_closed() {
            return Err("the session did not close after its closing reply".into());
        }
        return Ok(Step {
            ended: true,
            accepted,
        });
    }
    if s.is_closed() {
        return Err("the session closed without a closing reply".into());
    }
    if let Some(kind) = plan.owed.front() {
        return Err(format!("no reply to {kind:?}"));
    }
    if !m.handshake && s.poll_timeout().is_none() {
        return Err("the session waits for the client without a deadline".into());
    }
    Ok(Step {
        ended: false,
        accepted,
    })
}

fn key(node: &Node) -> (u64, u64) {
    let rendered = without_counts(&format!("{:?}", node.session));
    let hash = |seed: u8| {
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        rendered.hash(&mut h);
        node.model.hash(&mut h);
        h.finish()
    };
    (hash(0), hash(1))
}

/// The rendering without the command counts: statistics the session only writes (for its disconnect summary),
/// never reads to decide anything, so two sessions that differ only there behave alike, and counting them as
/// different states would make the state space grow with every command.
fn without_counts(rendered: &str) -> String {
    const FIELD: &str = "counts: CommandCounts {";
    let Some(start) = rendered.find(FIELD) else {
        return rendered.to_owned();
    };
    let mut depth = 0usize;
    for (i, c) in rendered[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return format!("{}{}", &rendered[..start], &rendered[start + i + 1..]);
                }
            }
            _ => {}
        }
    }
    rendered.to_owned()
}

/// The moves of a path, for a failure message.
fn names(path: &[Move]) -> String {
    let names: Vec<String> = path
        .iter()
        .map(|mv| match mv {
            Move::Send(name, _) => (*name).to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    names.join(", ")
}

/// Explores `c`; returns (distinct states, transitions, messages accepted on some path).
fn explore(c: &Config) -> (usize, usize, usize) {
    let start = Instant::now();
    let root = Node {
        session: ServerSession::new(c.smtp.clone(), start),
        model: Model::default(),
        path: Vec::new(),
    };
    let mut seen = HashSet::new();
    seen.insert(key(&root));
    let mut queue = VecDeque::from([root]);
    let (mut transitions, mut accepting) = (0, 0);
    while let Some(node) = queue.pop_front() {
        for mv in moves(c, &node.model) {
            let mut next = node.clone();
            next.path.push(mv);
            transitions += 1;
            let result = step(c, &mut next, mv, start);
            let step = result.unwrap_or_else(|broken| {
                panic!("{}: {broken}\nmoves: {}", c.name, names(&next.path))
            });
            if step.accepted {
                accepting += 1;
            }
            if step.ended {
                continue;
            }
            if next.path.len() >= MAX_MOVES {
                // The bound: the client goes away; the session must end without a word.
                next.session.handle_eof();
                let (_, out) = drain(&mut next.session, start);
                assert!(
                    next.session.is_closed() && out.is_empty(),
                    "{}: the session does not end at a disconnect\nmoves: {}",
                    c.name,
                    names(&next.path)
                );
                continue;
            }
            if seen.insert(key(&next)) {
                queue.push_back(next);
            }
        }
    }
    (seen.len(), transitions, accepting)
}

#[test]
fn every_client_behaviour_under_every_inbound_configuration() {
    let started = Instant::now();
    let configs = configs();
    // The configurations are independent: explore them on every core.
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let results: Vec<(usize, usize, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = configs
            .chunks(configs.len().div_ceil(workers))
            .map(|chunk| scope.spawn(move || chunk.iter().map(explore).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let (mut states, mut transitions) = (0, 0);
    for (c, &(n, t, accepting)) in configs.iter().zip(&results) {
        println!(
            "{:<48} {n:>7} states, {t:>8} transitions, {accepting:>5} accepting",
            c.name
        );
        // The exploration reaches accepted messages wherever the configuration allows any.
        assert!(accepting > 0, "{}: no path delivers a message", c.name);
        states += n;
        transitions += t;
    }
    println!(
        "explored {states} states ({transitions} transitions) under {} configurations, at most {MAX_MOVES} \
         client moves per path, in {:.1?}",
        configs.len(),
        started.elapsed()
    );
}
