//! The SMTP server side of the relay: a [`ServerHandler`] for postern-tokio's
//! [`Server`](postern_tokio::server::Server).
//!
//! - RCPT TO: [`AccessPolicy`] decides; relaying by certificate is the TLS
//!   policy's [`may_relay`](postern_policy::ServerPolicy::may_relay) (trusted
//!   agents), passed to the access rules as [`Client::trusted_agent`].
//! - Content streams into the [`Spool`](crate::queue::spool::Spool) as it
//!   arrives, behind a `Received` header that records the TLS version,
//!   cipher and client certificate status (Postfix style). File writes and
//!   the commit's fsyncs run on tokio's blocking pool.
//! - `250` only after [`Incoming::commit`](crate::queue::spool::Incoming::commit)
//!   returned: the message file and directory are fsynced (RFC 5321 §6.1,
//!   "the receiver-SMTP MUST NOT lose the message").
//! - Logs as Postfix's smtpd does, at the default level: every refusal
//!   (the relay's and the engine's: `530 5.7.0 Must issue a STARTTLS
//!   command first` under `require`, size and sequence checks) as
//!   `NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <x@y>:
//!   Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<name>`,
//!   and one `disconnect from unknown[192.0.2.1] ehlo=1 mail=1 rcpt=0/1
//!   commands=2/3` line per session (accepted/given per command).

use std::fmt::Write as _;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use postern_policy::{CertificateCheck, ClientCertMode, PeerTrust, ServerPolicy, ServerTlsMode};
use postern_smtp::{
    CloseReason, Command, DataSummary, EnhancedStatus, ForwardPath, Host, Mailbox, RcptParams,
    Reply, ReversePath, Verb,
};
use postern_tokio::server::{ConnectionInfo, ServerHandler, SessionHandler, Verdict};

use crate::config::Config;
use crate::envelope::{Envelope, MailParams, Recipient};
use crate::inbound::access::{AccessPolicy, Client};
use crate::metrics::Metrics;
use crate::queue::SharedQueue;
use crate::queue::spool::{Incoming, SpoolError};
use crate::reporting::dsn::rfc5322_date;

/// What every inbound session reads: the configuration and policies it
/// runs under, and the queue it hands messages to.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The inbound TLS policy (for trusted agents).
    pub inbound: ServerPolicy,
    /// The relay access rules.
    pub access: AccessPolicy,
    /// The queue.
    pub queue: Arc<SharedQueue>,
}

/// The relay's [`ServerHandler`].
///
/// Cloning is cheap; clones share the state, which a configuration reload
/// replaces with [`replace`](Self::replace): each session keeps the state
/// it opened with to its end.
#[derive(Debug, Clone)]
pub struct RelayHandler {
    shared: Arc<RwLock<Arc<Shared>>>,
    metrics: Arc<Metrics>,
}

impl RelayHandler {
    /// A handler over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared: Arc::new(RwLock::new(shared)),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Records the sessions into `metrics` (the relay's endpoint serves
    /// them).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The state new sessions get.
    pub fn shared(&self) -> Arc<Shared> {
        // A poisoned lock only means a panic elsewhere while swapping an
        // `Arc`: the value is whole.
        Arc::clone(&self.shared.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// New sessions get `shared` from now on; sessions in progress keep
    /// theirs.
    pub fn replace(&self, shared: Arc<Shared>) {
        *self.shared.write().unwrap_or_else(PoisonError::into_inner) = shared;
    }
}

impl ServerHandler for RelayHandler {
    type Session = RelaySession;

    fn open(&self, _info: &ConnectionInfo) -> RelaySession {
        RelaySession {
            shared: self.shared(),
            metrics: Arc::clone(&self.metrics),
            helo: None,
            extended: true,
            from: None,
            recipients: Vec::new(),
            incoming: None,
            error: None,
            received: ReceivedCounter::default(),
        }
    }
}

/// One inbound connection.
#[derive(Debug)]
pub struct RelaySession {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    helo: Option<String>,
    extended: bool,
    from: Option<(ReversePath, MailParams)>,
    recipients: Vec<Recipient>,
    /// The message being received (from its first content chunk).
    incoming: Option<Incoming>,
    /// A spool error during this message: it is refused with 451 at its end.
    error: Option<String>,
    /// The `Received:` fields of the message being received (hop count).
    received: ReceivedCounter,
}

/// `451 4.3.0` with a text, for local trouble (the client retries).
fn local_error(text: &str) -> Verdict {
    Verdict::reject(451, EnhancedStatus::SYSTEM_TEMPORARY, text)
}

impl SessionHandler for RelaySession {
    async fn hello(&mut self, info: &ConnectionInfo, name: &Host, extended: bool) -> Verdict {
        self.helo = Some(name.to_string());
        self.extended = extended;
        // The EHLO reply advertises STARTTLS.
        if extended && !info.tls_active() && self.shared.inbound.tls != ServerTlsMode::None {
            self.metrics.starttls("offered");
        }
        Verdict::Accept
    }

    async fn mail(
        &mut self,
        _info: &ConnectionInfo,
        from: &ReversePath,
        params: &postern_smtp::MailParams,
    ) -> Verdict {
        self.from = Some((from.clone(), mail_params(params)));
        self.recipients.clear();
        Verdict::Accept
    }

    async fn rcpt(
        &mut self,
        info: &ConnectionInfo,
        to: &ForwardPath,
        params: &RcptParams,
    ) -> Verdict {
        let address = match to {
            // RFC 5321 §4.5.1: <Postmaster> without a domain is ours.
            ForwardPath::Postmaster => match self.postmaster() {
                Some(postmaster) => postmaster,
                None => {
                    tracing::error!(id = info.id, "<Postmaster>: no usable local domain");
                    return local_error("Error: internal error");
                }
            },
            ForwardPath::Mailbox(m) => m.clone(),
        };
        let relay = self.shared.inbound.may_relay(info.client_certificate());
        let client = Client {
            ip: info.peer.ip(),
            trusted_agent: relay.allowed.then_some(relay.reason),
        };
        match self
            .shared
            .access
            .check_recipient(&client, &address.to_string())
        {
            Ok(grant) => {
                tracing::debug!(id = info.id, rcpt = %address, ?grant, "recipient accepted");
                let mut r = Recipient::new(address);
                r.orcpt.clone_from(&params.orcpt);
                self.recipients.push(r);
                Verdict::Accept
            }
            Err(denied) => {
                let to = format!("<{address}>");
                self.reject_line(info, "RCPT", &denied.to_string(), None, Some(&to));
                self.metrics.refusal("rcpt", denied.code);
                Verdict::reject(denied.code, denied.enhanced, &denied.text)
            }
        }
    }

    async fn message_chunk(&mut self, info: &ConnectionInfo, chunk: Vec<u8>) {
        self.received.feed(&chunk);
        if self.error.is_some() {
            return;
        }
        let spool = Arc::clone(&self.shared.queue.spool);
        let step = match self.incoming.take() {
            Some(mut incoming) => {
                tokio::task::spawn_blocking(move || incoming.write_chunk(&chunk).map(|()| incoming))
                    .await
            }
            None => {
                let Some(envelope) = self.envelope() else {
                    self.error = Some("no transaction".into());
                    return;
                };
                // The trace header goes before the content (RFC 5321 §4.4).
                let header = received_header(
                    info,
                    &Trace {
                        helo: self.helo.as_deref(),
                        extended: self.extended,
                        client_cert_mode: self.shared.inbound.client_certificates,
                        hostname: &self.shared.config.hostname,
                        id: envelope.id.as_str(),
                        recipients: &self.recipients,
                        now: SystemTime::now(),
                    },
                );
                let limit = self.shared.config.message_size_limit + header.len() as u64;
                tokio::task::spawn_blocking(move || {
                    let mut incoming = spool.begin(envelope, Some(limit))?;
                    incoming.write_chunk(header.as_bytes())?;
                    incoming.write_chunk(&chunk)?;
                    Ok::<_, SpoolError>(incoming)
                })
                .await
            }
        };
        match step {
            Ok(Ok(incoming)) => self.incoming = Some(incoming),
            Ok(Err(e)) => self.error = Some(e.to_string()),
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    async fn message_end(&mut self, info: &ConnectionInfo, _summary: &DataSummary) -> Verdict {
        if self.incoming.is_none() && self.error.is_none() {
            // An empty message: only the Received header.
            self.message_chunk(info, Vec::new()).await;
        }
        // Our own Received header counts too, as in Postfix's cleanup.
        let hops = std::mem::take(&mut self.received).count + 1;
        if let Some(e) = self.error.take() {
            tracing::error!(id = info.id, error = %e, "message not stored");
            self.incoming = None;
            return local_error("Error: queue file write error");
        }
        let Some(incoming) = self.incoming.take() else {
            return local_error("Error: internal error");
        };
        // A mail loop (DESIGN.md §4, Postfix `hopcount_limit`): refused, so
        // never relayed again; dropping `incoming` deletes its file.
        if hops >= self.shared.config.hopcount_limit {
            tracing::debug!(id = info.id, queue_id = %incoming.id(), hops, "too many hops (a mail loop?)");
            self.reject_line(
                info,
                "END-OF-MESSAGE",
                "554 5.4.6 Error: too many hops",
                None,
                None,
            );
            self.metrics.refusal("data", 554);
            return Verdict::reject(554, EnhancedStatus::ROUTING_LOOP, "Error: too many hops");
        }
        match tokio::task::spawn_blocking(move || incoming.commit()).await {
            Ok(Ok(envelope)) => {
                let id = envelope.id.clone();
                tracing::info!(id = info.id, queue_id = %id, from = %envelope.reverse_path,
                    nrcpt = envelope.recipients.len(), client = %info.peer.ip(), "message queued");
                self.shared.queue.enqueue(envelope);
                self.from = None;
                self.recipients.clear();
                Reply::new(
                    250,
                    Some(EnhancedStatus::OK),
                    [format!("Ok: queued as {id}")],
                )
                .map_or(Verdict::Accept, Verdict::AcceptWith)
            }
            Ok(Err(e)) => {
                tracing::error!(id = info.id, error = %e, "message not stored");
                local_error("Error: queue file write error")
            }
            Err(e) => {
                tracing::error!(id = info.id, error = %e, "message not stored");
                local_error("Error: queue file write error")
            }
        }
    }

    fn refused(
        &mut self,
        info: &ConnectionInfo,
        verb: Verb,
        command: Option<&Command>,
        reply: &Reply,
    ) {
        let code = reply.code();
        // Refusals, and the 4xx of policy (4.7.x): syntax slips and the
        // like (a 503 after a refused MAIL, a 4xx of ours) stay at debug.
        let policy = reply.enhanced().is_some_and(|e| e.subject() == 7);
        if !(code.is_permanent() || policy) {
            tracing::debug!(id = info.id, %verb, %reply, "command refused");
            return;
        }
        let (from, to) = match command {
            Some(Command::Mail { from, .. }) => (Some(from.to_string()), None),
            Some(Command::Rcpt { to, .. }) => (None, Some(to.to_string())),
            _ => (None, None),
        };
        let stage = verb.as_str().to_ascii_uppercase();
        self.reject_line(
            info,
            &stage,
            &reply.to_string(),
            from.as_deref(),
            to.as_deref(),
        );
        self.metrics.refusal(stage_label(verb), code.value());
    }

    fn closed(&mut self, info: &ConnectionInfo, reason: CloseReason) {
        let client = format!("unknown[{}]", info.peer.ip());
        let commands = info.commands;
        // Postfix's lines for a session cut short, before its summary.
        match reason {
            CloseReason::Synchronization => {
                let after = if commands.total().attempted == 0 {
                    "CONNECT"
                } else {
                    "a command"
                };
                tracing::info!(
                    id = info.id,
                    "improper command pipelining after {after} from {client}"
                );
                let stage = if after == "CONNECT" {
                    "connect"
                } else {
                    "other"
                };
                self.metrics.refusal(stage, 554);
            }
            CloseReason::Timeout => tracing::info!(id = info.id, "timeout from {client}"),
            CloseReason::TooManyErrors => {
                tracing::info!(id = info.id, "too many errors from {client}")
            }
            CloseReason::TooManyJunkCommands => {
                tracing::info!(id = info.id, "too many junk commands from {client}");
            }
            CloseReason::SessionTimeLimit => {
                tracing::info!(id = info.id, "session time limit exceeded from {client}");
            }
            _ => {}
        }
        tracing::info!(id = info.id, "disconnect from {client} {commands}");
        if commands.get(Verb::StartTls).accepted > 0 {
            self.metrics.starttls("taken");
        }
        if info.tls_handshake_failed {
            self.metrics.starttls("failed");
        }
        match &info.tls {
            Some(tls) => {
                self.metrics.handshake("inbound", tls.handshake_time);
                let trust = trust_label(tls.client_check().trust);
                self.metrics.session(
                    &tls.version.to_string(),
                    postern_tokio::openssl_cipher_name(&tls.cipher),
                    trust,
                );
            }
            None => self.metrics.session("none", "none", "none"),
        }
    }

    fn reset(&mut self) {
        // Dropping an uncommitted Incoming removes its temporary file.
        self.incoming = None;
        self.error = None;
        self.received = ReceivedCounter::default();
        self.from = None;
        self.recipients.clear();
    }
}

impl RelaySession {
    /// The mailbox a domain-less `<Postmaster>` stands for: postmaster at
    /// the first accepted domain, else at the host name (`None` if that name
    /// is not one the SMTP grammar takes, one with a trailing dot say).
    fn postmaster(&self) -> Option<Mailbox> {
        let config = &self.shared.config;
        let domain = config
            .accepted_domains
            .first()
            .map_or(config.hostname.as_str(), |d| d.trim_start_matches('.'));
        Host::parse(domain).ok().map(Mailbox::postmaster)
    }

    /// Postfix's `NOQUEUE: reject: STAGE from unknown[ip]: REPLY; from=<…>
    /// to=<…> proto=ESMTP helo=<…>` (`from` and `to` when known; the
    /// sender of the open transaction unless the refused command names
    /// one).
    fn reject_line(
        &self,
        info: &ConnectionInfo,
        stage: &str,
        reply: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) {
        let mut line = format!(
            "NOQUEUE: reject: {stage} from unknown[{}]: {reply};",
            info.peer.ip()
        );
        let open = self.from.as_ref().map(|(f, _)| f.to_string());
        if let Some(from) = from.or(open.as_deref()) {
            let _ = write!(line, " from={from}");
        }
        if let Some(to) = to {
            let _ = write!(line, " to={to}");
        }
        let proto = if self.extended { "ESMTP" } else { "SMTP" };
        let _ = write!(line, " proto={proto}");
        if let Some(helo) = &self.helo {
            let _ = write!(line, " helo=<{}>", header_safe(helo, 255));
        }
        tracing::info!(id = info.id, "{line}");
    }

    fn envelope(&self) -> Option<Envelope> {
        let (from, params) = self.from.clone()?;
        Some(Envelope::new(
            from,
            self.recipients.clone(),
            params,
            SystemTime::now(),
        ))
    }
}

fn mail_params(p: &postern_smtp::MailParams) -> MailParams {
    MailParams {
        requiretls: p.requiretls,
        smtputf8: p.smtputf8,
        body: p.body,
        size: p.size,
        envid: p.envid.clone(),
        ret: p.ret,
    }
}

/// Counts the `Received:` fields of a message's header section as its
/// content streams in, chunk by chunk (the content has CRLF line ends: bare
/// ones were normalised or refused before).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ReceivedCounter {
    /// `Received:` fields seen so far.
    count: usize,
    /// Where the scan is.
    at: Scan,
}

/// Where a [`ReceivedCounter`] is in the header section.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// At the start of a line.
    #[default]
    LineStart,
    /// This many octets of `received:` matched at the start of a line.
    Name(usize),
    /// Elsewhere in a line, up to its LF.
    Line,
    /// Past the header section.
    Body,
}

impl ReceivedCounter {
    const NAME: &'static [u8] = b"received:";

    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.at = match self.at {
                Scan::Body => return,
                // An empty line ends the header section (RFC 5322 §2.1).
                Scan::LineStart if b == b'\r' || b == b'\n' => Scan::Body,
                Scan::LineStart | Scan::Name(_) if b == b'\n' => Scan::LineStart,
                Scan::LineStart | Scan::Name(_) => {
                    let matched = match self.at {
                        Scan::Name(n) => n,
                        _ => 0,
                    };
                    match Self::NAME.get(matched) {
                        Some(c)
                            if c.eq_ignore_ascii_case(&b) && matched + 1 == Self::NAME.len() =>
                        {
                            self.count += 1;
                            Scan::Line
                        }
                        Some(c) if c.eq_ignore_ascii_case(&b) => Scan::Name(matched + 1),
                        _ => Scan::Line,
                    }
                }
                Scan::Line if b == b'\n' => Scan::LineStart,
                Scan::Line => Scan::Line,
            };
        }
    }
}

/// The `stage` label of a refused command.
fn stage_label(verb: Verb) -> &'static str {
    match verb {
        Verb::Ehlo | Verb::Helo => "helo",
        Verb::StartTls => "starttls",
        Verb::Mail => "mail",
        Verb::Rcpt => "rcpt",
        Verb::Data | Verb::Bdat => "data",
        _ => "other",
    }
}

/// The `client_certificate` label of a TLS session.
fn trust_label(trust: PeerTrust) -> &'static str {
    match trust {
        PeerTrust::Verified => "verified",
        PeerTrust::Trusted => "trusted",
        PeerTrust::Untrusted => "untrusted",
        _ => "anonymous",
    }
}

/// Postfix's `(N/M bits)` for a cipher suite name.
fn cipher_bits(cipher: &str) -> Option<&'static str> {
    if cipher.contains("AES_256") || cipher.contains("CHACHA20") {
        Some("256/256")
    } else if cipher.contains("AES_128") {
        Some("128/128")
    } else {
        None
    }
}

/// Keeps a client-supplied name printable and bounded in a header.
fn header_safe(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect()
}

/// What the `Received:` header records besides the connection.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    /// The EHLO / HELO name.
    pub helo: Option<&'a str>,
    /// EHLO rather than HELO.
    pub extended: bool,
    /// Whether client certificates were requested.
    pub client_cert_mode: ClientCertMode,
    /// Our host name.
    pub hostname: &'a str,
    /// The queue id.
    pub id: &'a str,
    /// The recipients (named when there is one).
    pub recipients: &'a [Recipient],
    /// The time stamp.
    pub now: SystemTime,
}

/// The `Received:` header (RFC 5321 §4.4, RFC 5322 §3.6.7), Postfix style,
/// folded, ending in CRLF: TLS version, cipher and bits, client certificate
/// status, and `with` ESMTPS / ESMTP / SMTP (RFC 3848).
pub fn received_header(info: &ConnectionInfo, t: &Trace<'_>) -> String {
    let mut h = String::new();
    let helo = t
        .helo
        .map_or_else(|| "unknown".to_owned(), |h| header_safe(h, 255));
    let _ = write!(h, "Received: from {helo} (unknown [{}])", info.peer.ip());
    if let Some(tls) = &info.tls {
        let _ = write!(h, "\r\n\t(using {} with cipher {}", tls.version, tls.cipher);
        if let Some(bits) = cipher_bits(&tls.cipher) {
            let _ = write!(h, " ({bits} bits)");
        }
        h.push(')');
        let cert = match (&tls.client_certificate, t.client_cert_mode) {
            (_, ClientCertMode::None) => "(No client certificate requested)".to_owned(),
            (None, _) => "(Client did not present a certificate)".to_owned(),
            (Some(c), _) => format!(
                "(Client certificate {}, issuer {} ({}))",
                quoted(&c.subject),
                quoted(&c.issuer),
                cert_status(&c.check)
            ),
        };
        let _ = write!(h, "\r\n\t{cert}");
    }
    let with = match (t.extended, info.tls.is_some()) {
        (false, _) => "SMTP",
        (true, false) => "ESMTP",
        (true, true) => "ESMTPS",
    };
    let _ = write!(
        h,
        "\r\n\tby {} (Postern) with {with} id {}",
        t.hostname, t.id
    );
    // The recipient only when there is one (as Postfix: a list would
    // disclose the other recipients).
    if let [one] = t.recipients {
        let _ = write!(
            h,
            "\r\n\tfor <{}>",
            header_safe(&one.address.to_string(), 512)
        );
    }
    let _ = write!(h, "; {}\r\n", rfc5322_date(t.now));
    h
}

/// A distinguished name in double quotes: printable ASCII and spaces, no
/// inner quote, bounded.
fn quoted(s: &str) -> String {
    let inner: String = s
        .chars()
        .map(|c| if c == '"' { '\'' } else { c })
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(256)
        .collect();
    format!("\"{inner}\"")
}

fn cert_status(check: &CertificateCheck) -> &'static str {
    match check.trust {
        PeerTrust::Verified | PeerTrust::Trusted => "verified OK",
        _ => "not verified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_fields_are_counted_in_the_header_only_across_chunks() {
        let message = b"Received: from a\r\n\tby b; now\r\nRECEIVED:x\r\nReceived-SPF: pass\r\n\
            X-Received: no\r\nSubject: Received: no\r\n received: folded, no\r\n\r\n\
            Received: in the body\r\n";
        for split in 0..message.len() {
            let mut counter = ReceivedCounter::default();
            counter.feed(&message[..split]);
            counter.feed(&message[split..]);
            assert_eq!(counter.count, 2, "split at {split}");
            assert_eq!(counter.at, Scan::Body);
        }
        let mut no_body = ReceivedCounter::default();
        no_body.feed(b"Received: x\r\nReceived: y");
        assert_eq!(no_body.count, 2);
    }

    #[test]
    fn cipher_bits_follow_the_suite() {
        assert_eq!(cipher_bits("TLS13_AES_256_GCM_SHA384"), Some("256/256"));
        assert_eq!(
            cipher_bits("TLS13_CHACHA20_POLY1305_SHA256"),
            Some("256/256")
        );
        assert_eq!(
            cipher_bits("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            Some("128/128")
        );
        assert_eq!(cipher_bits("SOMETHING_ELSE"), None);
    }

    #[test]
    fn client_names_cannot_break_the_header() {
        assert_eq!(
            header_safe("evil\r\nX-Injected: 1", 255),
            "evilX-Injected:1"
        );
        assert_eq!(header_safe(&"a".repeat(300), 255).len(), 255);
        assert_eq!(quoted("CN=\"x\"\r\n, O=Corp"), "\"CN='x', O=Corp\"");
    }
}
