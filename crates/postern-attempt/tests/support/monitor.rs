//! The invariants of a delivery attempt, checked from outside: a monitor sees every byte the attempt
//! transmits, every byte the next hop sends, every driver event and the end, and says when a rule of
//! docs/security.md is broken. Shared by `tests/exploration.rs` and the `delivery_attempt` fuzz target.

use std::collections::VecDeque;
use std::time::Instant;

use postern_attempt::{Attempt, Done, Event, HandshakeResult, Outcome};
use postern_policy::{
    CertificateCheck, CertificateFailure, ClientTlsMode, ConnectionPolicy, DaneOutcome,
    DestinationPolicy, DomainName, Fingerprint, MessageTls, NextHop, OutboundPolicy, PeerTrust,
    StsPolicy, TlsVersion, TlsaLookup, TlsaRecord,
};
use postern_smtp::{ClientConfig, Envelope, ForwardPath, ReversePath};

/// What a scenario's policy requires of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tls {
    /// STARTTLS is never sent.
    Never,
    /// STARTTLS when offered; plaintext allowed (on a new connection after a failed handshake).
    Optional,
    /// TLS required, any certificate.
    Required,
    /// TLS required and the certificate verified (chain and name, pin, or DANE).
    Authenticated,
}

/// One outbound policy under test, and what the rules say of it.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// A short name for reports.
    pub(crate) name: &'static str,
    /// The connection's policy.
    pub(crate) policy: ConnectionPolicy,
    /// What it requires.
    pub(crate) tls: Tls,
    /// The message carries REQUIRETLS: a TLS refusal bounces 5.7.30 instead of deferring.
    pub(crate) requiretls: bool,
}

const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn mx() -> DomainName {
    "mx.example.org".parse().expect("valid name")
}

fn connection(mode: ClientTlsMode) -> ConnectionPolicy {
    let mut dest = DestinationPolicy::new(mode);
    dest.pins = vec![Fingerprint::parse(SHA256).expect("valid pin")];
    OutboundPolicy::new(dest).connection(
        &NextHop::parse("example.org").expect("valid next hop"),
        Some(&mx()),
    )
}

fn dane_records() -> DaneOutcome {
    DaneOutcome::from_lookup(TlsaLookup::Secure(vec![
        format!("3 1 1 {SHA256}")
            .parse::<TlsaRecord>()
            .expect("valid record"),
    ]))
}

fn sts(mode: &str) -> Option<StsPolicy> {
    Some(
        StsPolicy::parse(&format!(
            "version: STSv1\nmode: {mode}\nmx: mx.example.org\nmax_age: 86400\n"
        ))
        .expect("valid policy"),
    )
}

/// Every outbound mode the policy has, with DANE, MTA-STS and the message's REQUIRETLS.
pub(crate) fn scenarios() -> Vec<Scenario> {
    let s = |name, policy, tls| Scenario {
        name,
        policy,
        tls,
        requiretls: false,
    };
    vec![
        s("none", connection(ClientTlsMode::None), Tls::Never),
        s(
            "opportunistic",
            connection(ClientTlsMode::Opportunistic),
            Tls::Optional,
        ),
        s("encrypt", connection(ClientTlsMode::Encrypt), Tls::Required),
        s(
            "verify",
            connection(ClientTlsMode::Verify),
            Tls::Authenticated,
        ),
        s(
            "secure",
            connection(ClientTlsMode::Secure),
            Tls::Authenticated,
        ),
        s(
            "fingerprint",
            connection(ClientTlsMode::Fingerprint),
            Tls::Authenticated,
        ),
        s(
            "dane (usable TLSA)",
            connection(ClientTlsMode::Dane).with_dane(dane_records()),
            Tls::Authenticated,
        ),
        s(
            "dane (no TLSA)",
            connection(ClientTlsMode::Dane)
                .with_dane(DaneOutcome::from_lookup(TlsaLookup::SecureNoRecords)),
            Tls::Optional,
        ),
        s(
            "dane-only",
            connection(ClientTlsMode::DaneOnly).with_dane(dane_records()),
            Tls::Authenticated,
        ),
        s(
            "mta-sts enforce",
            connection(ClientTlsMode::MtaSts).with_mta_sts(sts("enforce")),
            Tls::Authenticated,
        ),
        s(
            "mta-sts testing",
            connection(ClientTlsMode::MtaSts).with_mta_sts(sts("testing")),
            Tls::Optional,
        ),
        s(
            "mta-sts enforce, TLS-Required: No",
            connection(ClientTlsMode::MtaSts)
                .with_mta_sts(sts("enforce"))
                .with_message(MessageTls::TlsOptional),
            Tls::Optional,
        ),
        Scenario {
            name: "opportunistic, REQUIRETLS message",
            policy: connection(ClientTlsMode::Opportunistic)
                .with_secure_mx(true)
                .with_message(MessageTls::RequireTls),
            tls: Tls::Authenticated,
            requiretls: true,
        },
    ]
}

/// The message every attempt carries (23 octets: more than a `SIZE 10` next hop accepts).
pub(crate) const MESSAGE: &[u8] = b"Subject: x\r\n\r\nhello\r\n";

/// A fresh attempt for `scenario`.
pub(crate) fn attempt(scenario: &Scenario, now: Instant) -> Attempt {
    let mut envelope = Envelope::new(
        ReversePath::parse("<a@example.net>").expect("valid path"),
        [ForwardPath::parse("<b@example.org>").expect("valid path")],
    );
    envelope.mail_params.requiretls = scenario.requiretls;
    Attempt::new(
        scenario.policy.clone(),
        ClientConfig::new("client.example.net"),
        envelope,
        MESSAGE.to_vec(),
        now,
    )
}

/// A command the next hop received and owes a reply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmd {
    /// The greeting is owed first.
    Greeting,
    /// EHLO.
    Ehlo,
    /// HELO.
    Helo,
    /// STARTTLS.
    StartTls,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA.
    Data,
    /// The content, ended by `.`.
    DataEnd,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
    /// Anything else.
    Other,
}

/// The monitor of one attempt (over its one or two connections).
#[derive(Debug)]
pub(crate) struct Monitor {
    tls_rule: Tls,
    requiretls: bool,
    /// The current connection is TLS.
    tls: bool,
    /// TLS is up with a verified certificate.
    verified: bool,
    /// Which connection (0: first, 1: the plaintext retry).
    pub(crate) conn: usize,
    /// The next hop closed the connection, answered 421, or let a deadline pass.
    pub(crate) lost: bool,
    input: Vec<u8>,
    /// Commands the next hop owes replies to, in order.
    pub(crate) pending: VecDeque<Cmd>,
    in_data: bool,
    starttls_sent: bool,
    /// The handshake is due (StartTls seen, not yet reported).
    handshaking: bool,
    /// The handshake failed on this connection: nothing more may be sent on it.
    handshake_failed: bool,
    /// Octets the next hop sent since TLS started (0: the attempt has nothing to act on but its EHLO).
    since_tls: usize,
    /// The first command inside TLS has been seen.
    tls_first_seen: bool,
    /// The plaintext EHLO or HELO was answered 2xx (a TLS decision followed).
    hello_ok: bool,
    /// The final reply to the content was 2xx.
    accepted: bool,
    done: bool,
    /// Bytes the attempt has sent, for reports.
    pub(crate) transcript: Vec<u8>,
    /// The harness says which command each reply answers (the exploration); false for arbitrary input (the
    /// fuzzer), where only the rules that need no knowledge of the replies are checked.
    pub(crate) exact: bool,
}

impl Monitor {
    /// A monitor for an attempt under `scenario`.
    pub(crate) fn new(scenario: &Scenario) -> Self {
        Self {
            tls_rule: scenario.tls,
            requiretls: scenario.requiretls,
            tls: false,
            verified: false,
            conn: 0,
            lost: false,
            input: Vec::new(),
            pending: VecDeque::from([Cmd::Greeting]),
            in_data: false,
            starttls_sent: false,
            handshaking: false,
            handshake_failed: false,
            since_tls: 0,
            tls_first_seen: false,
            hello_ok: false,
            accepted: false,
            done: false,
            transcript: Vec::new(),
            exact: true,
        }
    }

    /// TLS is up on this connection.
    pub(crate) fn tls(&self) -> bool {
        self.tls
    }

    fn requires_tls(&self) -> bool {
        matches!(self.tls_rule, Tls::Required | Tls::Authenticated)
    }

    /// The attempt transmitted `bytes`.
    pub(crate) fn on_transmit(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.transcript.extend_from_slice(bytes);
        if self.done {
            return Err("bytes after Done".into());
        }
        if self.handshaking {
            return Err("bytes sent while the handshake is due".into());
        }
        if self.handshake_failed {
            return Err("bytes sent on a connection whose handshake failed".into());
        }
        self.input.extend_from_slice(bytes);
        while let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = self.input.drain(..end + 2).collect();
            let line = &line[..end];
            if self.in_data {
                if self.requires_tls() && !self.tls {
                    return Err(
                        "message octets in plaintext under a policy that requires TLS".into(),
                    );
                }
                if line == b"." {
                    self.in_data = false;
                    self.pending.push_back(Cmd::DataEnd);
                }
                continue;
            }
            self.on_command(line)?;
        }
        if self.input.len() > 100_000 {
            return Err("unbounded output without CRLF".into());
        }
        Ok(())
    }

    fn on_command(&mut self, line: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(line).to_ascii_uppercase();
        let verb = text.split([' ', ':']).next().unwrap_or_default();
        let cmd = match verb {
            "EHLO" => Cmd::Ehlo,
            "HELO" => Cmd::Helo,
            "STARTTLS" => Cmd::StartTls,
            "MAIL" => Cmd::Mail,
            "RCPT" => Cmd::Rcpt,
            "DATA" => Cmd::Data,
            "RSET" => Cmd::Rset,
            "QUIT" => Cmd::Quit,
            _ => Cmd::Other,
        };
        let handshake_cmd = matches!(cmd, Cmd::Ehlo | Cmd::Helo | Cmd::StartTls | Cmd::Quit);
        if !self.tls && self.requires_tls() && !handshake_cmd {
            return Err(format!(
                "{text:?} in plaintext under a policy that requires TLS"
            ));
        }
        if self.tls && !self.tls_first_seen {
            self.tls_first_seen = true;
            if !matches!(cmd, Cmd::Ehlo | Cmd::Quit) {
                return Err(format!("{text:?} before EHLO inside TLS (RFC 3207 4.2)"));
            }
        }
        if self.tls && self.since_tls == 0 && !matches!(cmd, Cmd::Ehlo | Cmd::Quit) {
            return Err(format!(
                "{text:?} sent on replies not received over TLS (plaintext read after the handshake)"
            ));
        }
        if cmd == Cmd::Mail && self.tls_rule == Tls::Authenticated && !self.verified {
            return Err("MAIL over TLS whose certificate was not verified".into());
        }
        if cmd == Cmd::StartTls {
            if self.starttls_sent || self.tls {
                return Err("STARTTLS sent twice".into());
            }
            if self.conn > 0 {
                return Err("STARTTLS on the plaintext retry connection".into());
            }
            if self.tls_rule == Tls::Never {
                return Err("STARTTLS under mode none".into());
            }
            self.starttls_sent = true;
        }
        self.pending.push_back(cmd);
        Ok(())
    }

    /// The next hop sends `bytes` (the harness knows which command they answer: `answered`, or `None` for
    /// injected or arbitrary bytes), with reply code `code` when known.
    pub(crate) fn on_input(&mut self, answered: Option<Cmd>, code: Option<u16>, bytes: usize) {
        if self.tls {
            self.since_tls += bytes;
        }
        match (answered, code) {
            (Some(Cmd::Ehlo | Cmd::Helo), Some(c)) if (200..300).contains(&c) && !self.tls => {
                self.hello_ok = true;
            }
            (Some(Cmd::Data), Some(354)) => self.in_data = true,
            (Some(Cmd::DataEnd), Some(c)) if (200..300).contains(&c) => self.accepted = true,
            _ => {}
        }
    }

    /// The next hop's reply to the front pending command: the command, taken off the queue.
    pub(crate) fn answer(&mut self) -> Option<Cmd> {
        self.pending.pop_front()
    }

    /// The attempt asked for the handshake.
    pub(crate) fn on_start_tls(&mut self) -> Result<(), String> {
        if !self.starttls_sent || self.tls_rule == Tls::Never {
            return Err("StartTls without STARTTLS".into());
        }
        self.handshaking = true;
        self.pending.clear();
        self.in_data = false;
        Ok(())
    }

    /// The driver reports the handshake.
    pub(crate) fn on_handshake(&mut self, result: &HandshakeResult) {
        self.handshaking = false;
        match result {
            HandshakeResult::Established { certificate, .. } => {
                self.tls = true;
                self.verified = certificate.is_verified();
                self.since_tls = 0;
                self.input.clear();
            }
            _ => self.handshake_failed = true,
        }
    }

    /// The attempt asked for a new plaintext connection.
    pub(crate) fn on_retry(&mut self) -> Result<(), String> {
        if self.tls_rule != Tls::Optional {
            return Err("plaintext retry under a policy that requires TLS".into());
        }
        if self.conn > 0 {
            return Err("a second plaintext retry".into());
        }
        if !self.starttls_sent {
            return Err("plaintext retry without a STARTTLS".into());
        }
        self.conn = 1;
        self.lost = false;
        self.tls = false;
        self.verified = false;
        self.handshake_failed = false;
        self.handshaking = false;
        self.input.clear();
        self.in_data = false;
        self.pending = VecDeque::from([Cmd::Greeting]);
        Ok(())
    }

    /// The attempt is over.
    pub(crate) fn on_done(&mut self, done: &Done) -> Result<(), String> {
        if self.done {
            return Err("Done twice".into());
        }
        self.done = true;
        if done.recipients.len() != 1 {
            return Err(format!(
                "{} recipient results for 1 recipient",
                done.recipients.len()
            ));
        }
        if self.exact && done.outcome == Outcome::Delivered && !self.accepted {
            return Err("delivered without a 2xx to the content".into());
        }
        let tls_ok = self.tls && (self.tls_rule != Tls::Authenticated || self.verified);
        if self.requires_tls() && !tls_ok {
            // A refusal (a reply, STARTTLS not offered, a failed or unverified handshake) defers with our own
            // 4.7.x; a lost connection or a 421 defers as such. Never a bounce, except a REQUIRETLS
            // message's 5.7.30 (RFC 8689 4.2.1).
            match done.outcome {
                Outcome::Deferred { status, .. }
                    if self.exact && self.hello_ok && !self.lost && !self.requiretls =>
                {
                    if status.class() != 4 || status.subject() != 7 {
                        return Err(format!(
                            "required-TLS refusal deferred with {status}, not 4.7.x"
                        ));
                    }
                }
                Outcome::Deferred { .. } => {}
                Outcome::Bounced { status, .. }
                    if self.requiretls && status.to_string() == "5.7.30" => {}
                other => {
                    return Err(format!(
                        "required-TLS refusal ended {other:?}, not a deferral"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The driver's possible handshake reports.
pub(crate) fn handshakes() -> Vec<HandshakeResult> {
    let up = |certificate| HandshakeResult::Established {
        version: TlsVersion::Tls13,
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        certificate,
        peer_certificates: Vec::new(),
    };
    let failed = |certificate| HandshakeResult::Failed { certificate };
    vec![
        up(CertificateCheck::verified()),
        up(CertificateCheck::failed(
            PeerTrust::Untrusted,
            CertificateFailure::NotTrusted,
        )),
        up(CertificateCheck::failed(
            PeerTrust::Trusted,
            CertificateFailure::HostMismatch,
        )),
        up(CertificateCheck::failed(
            PeerTrust::Untrusted,
            CertificateFailure::Expired,
        )),
        up(CertificateCheck::failed(
            PeerTrust::Untrusted,
            CertificateFailure::PinMismatch,
        )),
        failed(None),
        failed(Some(CertificateFailure::NotTrusted)),
        failed(Some(CertificateFailure::HostMismatch)),
        failed(Some(CertificateFailure::DaneMismatch)),
    ]
}

/// Drives `attempt` until it needs input: every event goes to the monitor; `handshake` answers StartTls
/// (and may return injected bytes to offer before it, as a driver holding read-ahead would).
pub(crate) fn drain(
    attempt: &mut Attempt,
    monitor: &mut Monitor,
    now: Instant,
    mut handshake: impl FnMut(&mut Monitor) -> (HandshakeResult, Vec<u8>),
) -> Result<Option<Box<Done>>, String> {
    for _ in 0..10_000 {
        let Some(event) = attempt.poll_event(now) else {
            return Ok(None);
        };
        match event {
            Event::Transmit(bytes) => monitor.on_transmit(&bytes)?,
            Event::StartTls(_) => {
                monitor.on_start_tls()?;
                let (result, held) = handshake(monitor);
                // Read-ahead held by the driver is handed over: discarded, never read.
                if !held.is_empty() {
                    let _ = attempt.handle_input(&held);
                }
                monitor.on_handshake(&result);
                attempt
                    .handle_tls(result)
                    .map_err(|e| format!("handle_tls: {e}"))?;
            }
            Event::RetryPlaintext(_) => {
                monitor.on_retry()?;
                attempt.handle_reconnected(now);
            }
            Event::Done(done) => {
                monitor.on_done(&done)?;
                if let Some(e) = attempt.poll_event(now) {
                    return Err(format!("event after Done: {e:?}"));
                }
                return Ok(Some(done));
            }
            _ => {}
        }
    }
    Err("more than 10000 events without waiting".into())
}
