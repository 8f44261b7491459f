//! Bounces: RFC 3464 delivery status notifications for failed recipients.
//!
//! [`build_bounce`] composes a `multipart/report; report-type=delivery-status`
//! message (RFC 6522) with three parts: a human-readable explanation, the
//! `message/delivery-status` report (one block per failed recipient with its
//! enhanced status code and diagnostic: RFC 3464 §2.3.6 `smtp; <reply>` when
//! the remote server's reply decided, `X-Postern; <description>` when the
//! relay did, with `Remote-MTA` whenever a remote host was involved), and the
//! returned message:
//!
//! - `message/rfc822` with the whole message when it fits the size limit
//!   (Postfix `bounce_size_limit`) and the sender did not ask for headers only
//!   (RFC 3461 `RET=HDRS`);
//! - `text/rfc822-headers` with its header section otherwise, and always for
//!   a REQUIRETLS message: RFC 8689 §5 has the bounce redacted, since it
//!   travels without the TLS guarantee the sender required.
//!
//! No bounce is built for a null reverse path `<>` (RFC 5321 §4.5.5); the
//! bounce itself is sent with a null reverse path, without REQUIRETLS
//! (RFC 8689 §5), so it can never cause another bounce.
//!
//! Text that came from a remote server (the reply) is peer input: it is
//! reduced to printable ASCII on one line before it goes into a header field.

use std::io::{self, Read};
use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::config::Config;
use crate::envelope::{
    Envelope, Failure, FailureSource, MailParams, Mailbox, Recipient, Ret, ReversePath,
};

/// Longest diagnostic text kept (the line must stay under RFC 5322's 998).
const MAX_DIAGNOSTIC: usize = 900;

/// Who reports, and how much of the message a bounce may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BounceSettings {
    /// The reporting MTA's host name (`Reporting-MTA: dns; <name>`, and the
    /// domain of the `From:` address).
    pub reporting_mta: String,
    /// Largest original message returned whole; a larger one is returned as
    /// headers only (Postfix `bounce_size_limit`, default 50000).
    pub size_limit: u64,
}

impl BounceSettings {
    /// The settings of a configuration: its `hostname` as the reporting MTA,
    /// `bounce_size_limit`.
    pub fn from_config(config: &Config) -> Self {
        let mut s = Self::new(config.hostname.clone());
        s.size_limit = config.bounce_size_limit;
        s
    }

    /// Settings for a host name, with the default size limit of 50000 bytes.
    pub fn new(reporting_mta: impl Into<String>) -> Self {
        Self {
            reporting_mta: reporting_mta.into(),
            size_limit: 50_000,
        }
    }
}

/// A bounce ready to be queued: send `content` from `<>` to `recipient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// Where the bounce goes: the failed message's reverse path.
    pub recipient: Mailbox,
    /// The complete RFC 5322 message, CRLF line endings.
    pub content: Vec<u8>,
    /// Whether the bounce carries UTF-8 addresses and so must be sent with
    /// SMTPUTF8 (RFC 6531, RFC 6533).
    pub smtputf8: bool,
}

impl Bounce {
    /// The envelope to queue the bounce with: null reverse path, one
    /// recipient, no REQUIRETLS (RFC 8689 §5).
    pub fn envelope(&self, now: SystemTime) -> Envelope {
        let params = MailParams {
            smtputf8: self.smtputf8,
            ..MailParams::default()
        };
        Envelope::new(
            ReversePath::Null,
            [Recipient::new(self.recipient.clone())],
            params,
            now,
        )
    }
}

/// Builds the bounce for the recipients of `envelope` listed in `failed`
/// (indices, as [`AttemptReport::bounce`](crate::queue::AttemptReport::bounce)
/// gives them), reading the original message from `original`.
///
/// Returns `Ok(None)` when there is nothing to send: a null reverse path, or
/// no listed recipient. Reads at most `size_limit + 1` bytes of `original`.
pub fn build_bounce(
    envelope: &Envelope,
    failed: &[usize],
    original: impl Read,
    settings: &BounceSettings,
    now: SystemTime,
) -> io::Result<Option<Bounce>> {
    let recipients: Vec<_> = failed
        .iter()
        .filter_map(|&i| envelope.recipients.get(i))
        .collect();
    let Some(sender) = envelope.reverse_path.mailbox() else {
        return Ok(None);
    };
    if recipients.is_empty() {
        return Ok(None);
    }

    // Read no more than the limit (plus one byte to know it was exceeded).
    let mut quoted = Vec::new();
    original
        .take(settings.size_limit.saturating_add(1))
        .read_to_end(&mut quoted)?;
    let whole = quoted.len() as u64 <= settings.size_limit;
    let headers_only =
        !whole || envelope.params.requiretls || envelope.params.ret == Some(Ret::Headers);
    if headers_only {
        quoted.truncate(header_section_len(&quoted));
    }

    let host = ascii_line(&settings.reporting_mta);
    let id = envelope.id.as_str();
    let date = rfc5322_date(now);
    let mut boundary = format!("{id}.{}/{host}", unix_secs(now));
    // The boundary must not occur in the quoted message (RFC 2046 §5.1.1).
    while contains(&quoted, boundary.as_bytes()) {
        boundary.push_str(".x");
    }
    let utf8 = recipients.iter().any(|r| !r.address.is_ascii()) || !sender.is_ascii();

    let mut m = String::new();
    let mut line = |s: &str| {
        m.push_str(s);
        m.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>"
    ));
    line(&format!("To: <{}>", header_text(&sender.to_string())));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {date}"));
    line(&format!(
        "Message-ID: <{id}.{}.bounce@{host}>",
        unix_secs(now)
    ));
    // RFC 3834 §5: automatic responses are marked as such.
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");

    // Part 1: for humans.
    line(&format!("--{boundary}"));
    line("Content-Description: Notification");
    line(&format!(
        "Content-Type: text/plain; charset={}",
        if utf8 { "utf-8" } else { "us-ascii" }
    ));
    line("");
    line(&format!("This is the mail system at host {host}."));
    line("");
    line("Your message could not be delivered to one or more recipients.");
    line("The reason for each is given below.");
    if envelope.params.requiretls {
        line("");
        line("The message required TLS (REQUIRETLS); only its headers are returned.");
    }
    line("");
    for rcpt in &recipients {
        let diagnostic = rcpt
            .last_failure
            .as_ref()
            .map_or_else(|| "unknown error".to_owned(), describe);
        line(&format!(
            "<{}>: {diagnostic}",
            header_text(&rcpt.address.to_string())
        ));
    }
    line("");

    // Part 2: RFC 3464 §2.2 per-message fields, §2.3 per-recipient fields.
    // RFC 6533: with UTF-8 addresses the report is message/global-delivery-status.
    line(&format!("--{boundary}"));
    line("Content-Description: Delivery report");
    line(if utf8 {
        "Content-Type: message/global-delivery-status"
    } else {
        "Content-Type: message/delivery-status"
    });
    line("");
    line(&format!("Reporting-MTA: dns; {host}"));
    if let Some(envid) = &envelope.params.envid {
        line(&format!("Original-Envelope-Id: {}", ascii_line(envid)));
    }
    line(&format!(
        "Arrival-Date: {}",
        rfc5322_date(envelope.received_at)
    ));
    for rcpt in &recipients {
        line("");
        let addr_type = if rcpt.address.is_ascii() {
            "rfc822"
        } else {
            "utf-8"
        };
        if let Some((kind, addr)) = &rcpt.orcpt {
            line(&format!(
                "Original-Recipient: {}",
                header_text(&format!("{kind};{addr}"))
            ));
        }
        line(&format!(
            "Final-Recipient: {addr_type}; {}",
            header_text(&rcpt.address.to_string())
        ));
        line("Action: failed");
        match &rcpt.last_failure {
            Some(f) => {
                line(&format!("Status: {}", f.code));
                if let Some(remote) = &f.remote_mta {
                    line(&format!(
                        "Remote-MTA: dns; {}",
                        ascii_line(mta_name(remote))
                    ));
                }
                // RFC 3464 §2.3.6: diagnostic-type `smtp` is for the reply
                // the remote MTA actually gave; our own description of a
                // failure (even one at that MTA, a TLS policy's) gets the
                // private type.
                let diagnostic_type = match f.source {
                    FailureSource::Remote => "smtp",
                    FailureSource::Local => "X-Postern",
                };
                line(&format!(
                    "Diagnostic-Code: {diagnostic_type}; {}",
                    ascii_line(&f.text)
                ));
                line(&format!("Last-Attempt-Date: {}", rfc5322_date(f.at)));
            }
            None => line("Status: 5.0.0"),
        }
    }
    line("");

    // Part 3: the message or its headers.
    line(&format!("--{boundary}"));
    if headers_only {
        line("Content-Description: Undelivered Message Headers");
        line("Content-Type: text/rfc822-headers");
    } else {
        line("Content-Description: Undelivered Message");
        line("Content-Type: message/rfc822");
    }
    line("");
    let mut content = m.into_bytes();
    content.extend_from_slice(&quoted);
    if !quoted.ends_with(b"\r\n") {
        content.extend_from_slice(b"\r\n");
    }
    content.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(Some(Bounce {
        recipient: sender.clone(),
        content,
        smtputf8: utf8,
    }))
}

/// The host name in a remote MTA as the relay records it
/// (`mx.example.net[192.0.2.7]:25`): RFC 3464 §2.3.5 `Remote-MTA` of type
/// `dns` is a name, without address or port. A host known only by its
/// address gives the address.
fn mta_name(remote: &str) -> &str {
    match remote.split_once('[') {
        Some(("", rest)) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        Some((name, _)) => name,
        None => remote,
    }
}

/// One-line human description of a failure: `host X said: <reply>` for a
/// server reply (it carries its own codes), `<description> (status <code>,
/// host X)` for ours; then the TLS result type and the policy rule.
fn describe(f: &Failure) -> String {
    let mut s = match f.source {
        FailureSource::Remote => ascii_line(&f.to_string()),
        FailureSource::Local => {
            let mut s = format!("{} (status {}", ascii_line(&f.text), f.code);
            if let Some(remote) = &f.remote_mta {
                s.push_str(&format!(", host {}", ascii_line(remote)));
            }
            s.push(')');
            s
        }
    };
    if let Some(rt) = &f.result_type {
        s.push_str(&format!(" [TLS result: {}]", ascii_line(rt.as_str())));
    }
    if let Some(rule) = &f.policy_rule {
        s.push_str(&format!(" [policy: {}]", ascii_line(rule)));
    }
    s
}

/// Length of the header section of a message: up to and including the
/// blank line, or up to the last complete line when there is none (a
/// truncated message).
fn header_section_len(msg: &[u8]) -> usize {
    if msg.starts_with(b"\r\n") {
        return 0;
    }
    match msg.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(pos) => pos + 2,
        None => msg
            .windows(2)
            .rposition(|w| w == b"\r\n")
            .map_or(0, |p| p + 2),
    }
}

/// Peer text made safe for one header line: printable ASCII only (anything
/// else, CR and LF included, becomes a space), whitespace runs collapsed,
/// at most [`MAX_DIAGNOSTIC`] characters.
fn ascii_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_DIAGNOSTIC));
    for c in s.chars() {
        let c = if c.is_ascii_graphic() { c } else { ' ' };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if out.len() >= MAX_DIAGNOSTIC {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// An address for a header: like [`ascii_line`] but keeping non-ASCII
/// letters (SMTPUTF8 addresses, RFC 6532) and dropping control characters.
fn header_text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_DIAGNOSTIC)
        .collect::<String>()
        .replace(['<', '>'], "")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 5322 §3.3 date-time, in UTC.
pub(crate) fn rfc5322_date(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc2822)
        // Rfc2822 formatting fails only for years before 1900, which no
        // clock that delivers mail shows; fall back to the epoch text.
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{EnhancedStatus, RecipientState, ResultType, mailbox, reverse_path};
    use std::time::{Duration, UNIX_EPOCH};

    const ORIGINAL: &[u8] =
        b"From: a@example.org\r\nSubject: secret plans\r\n\r\nThe body text.\r\n";

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn failed_envelope(sender: &str, params: MailParams) -> Envelope {
        let mut env = Envelope::new(
            reverse_path(sender),
            [
                Recipient::new(mailbox("ok@example.com")),
                Recipient::new(mailbox("bad@example.net")),
            ],
            params,
            t(0),
        );
        env.recipients[0].state = RecipientState::Delivered;
        let mut f = Failure::remote(
            "5.1.1".parse().unwrap(),
            "550 5.1.1 <bad@example.net>: no such user\r\nInjected: header",
            t(60),
        );
        f.remote_mta = Some("mx.example.net[192.0.2.7]:25".into());
        env.recipients[1].state = RecipientState::Failed;
        env.recipients[1].last_failure = Some(f);
        env
    }

    fn bounce(env: &Envelope, original: &[u8]) -> String {
        let b = build_bounce(
            env,
            &[1],
            original,
            &BounceSettings::new("relay.example.org"),
            t(120),
        )
        .unwrap()
        .expect("a bounce");
        assert_eq!(Some(&b.recipient), env.reverse_path.mailbox());
        String::from_utf8(b.content).unwrap()
    }

    /// Splits the multipart body by the boundary named in the header.
    fn parts(msg: &str) -> Vec<String> {
        let start = msg.find("boundary=\"").unwrap() + 10;
        let boundary = &msg[start..start + msg[start..].find('"').unwrap()];
        let sep = format!("\r\n--{boundary}");
        let mut pieces: Vec<String> = msg.split(&sep).map(str::to_owned).collect();
        assert_eq!(pieces.pop().as_deref(), Some("--\r\n"), "closing delimiter");
        pieces.remove(0);
        pieces
    }

    #[test]
    fn bounce_is_an_rfc3464_report() {
        let env = failed_envelope("a@example.org", MailParams::default());
        let msg = bounce(&env, ORIGINAL);
        assert!(msg.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(msg.contains("To: <a@example.org>\r\n"));
        assert!(msg.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(
            msg.contains("Date: Tue, 14 Nov 2023 22:15:20 +0000\r\n"),
            "{msg}"
        );
        let parts = parts(&msg);
        assert_eq!(parts.len(), 3);
        assert!(parts[0].contains("Content-Type: text/plain"));
        assert!(
            parts[0].contains(
                "\r\n<bad@example.net>: host mx.example.net[192.0.2.7]:25 said: \
                 550 5.1.1 <bad@example.net>: no such user Injected: header\r\n"
            ),
            "{}",
            parts[0]
        );
        assert!(
            !parts[0].contains("ok@example.com"),
            "delivered recipient not reported"
        );

        let report = &parts[1];
        assert!(report.contains(
            "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.org\r\n"
        ));
        assert!(report.contains(
            "Final-Recipient: rfc822; bad@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(report.contains("Remote-MTA: dns; mx.example.net\r\n"));
        // The remote's CRLF cannot start a new field.
        assert!(report.contains(
            "Diagnostic-Code: smtp; 550 5.1.1 <bad@example.net>: no such user Injected: header\r\n"
        ));
        assert!(!report.contains("\r\nInjected:"));

        assert!(parts[2].contains("Content-Type: message/rfc822\r\n\r\nFrom: a@example.org"));
        assert!(parts[2].contains("The body text."));
    }

    #[test]
    fn bounce_envelope_is_from_the_null_sender() {
        let env = failed_envelope(
            "a@example.org",
            MailParams {
                requiretls: true,
                ..MailParams::default()
            },
        );
        let b = build_bounce(
            &env,
            &[1],
            ORIGINAL,
            &BounceSettings::new("relay.example.org"),
            t(1),
        )
        .unwrap()
        .unwrap();
        assert!(!b.smtputf8);
        let benv = b.envelope(t(1));
        assert!(benv.is_null_sender());
        assert_eq!(benv.recipients.len(), 1);
        assert_eq!(benv.recipients[0].address, mailbox("a@example.org"));
        assert!(
            !benv.params.requiretls,
            "RFC 8689 §5: bounces are not sent with REQUIRETLS"
        );
    }

    #[test]
    fn utf8_addresses_use_the_global_report_type() {
        let mut env = failed_envelope("jöran@example.org", MailParams::default());
        env.recipients[1].address = mailbox("дмитрий@example.net");
        let b = build_bounce(
            &env,
            &[1],
            ORIGINAL,
            &BounceSettings::new("relay.example.org"),
            t(1),
        )
        .unwrap()
        .unwrap();
        assert!(b.smtputf8);
        let msg = String::from_utf8(b.content.clone()).unwrap();
        assert!(msg.contains("Content-Type: message/global-delivery-status"));
        assert!(msg.contains("Final-Recipient: utf-8; дмитрий@example.net"));
        assert!(b.envelope(t(1)).params.smtputf8);
    }

    #[test]
    fn requiretls_bounce_is_redacted_to_headers() {
        let env = failed_envelope(
            "a@example.org",
            MailParams {
                requiretls: true,
                ..MailParams::default()
            },
        );
        let msg = bounce(&env, ORIGINAL);
        let parts = parts(&msg);
        assert!(parts[2].contains("Content-Type: text/rfc822-headers\r\n\r\nFrom: a@example.org\r\nSubject: secret plans\r\n"));
        assert!(!msg.contains("The body text."));
    }

    #[test]
    fn ret_hdrs_and_size_limit_return_headers_only() {
        let env = failed_envelope(
            "a@example.org",
            MailParams {
                ret: Some(Ret::Headers),
                ..MailParams::default()
            },
        );
        assert!(!bounce(&env, ORIGINAL).contains("The body text."));

        let env = failed_envelope("a@example.org", MailParams::default());
        let big = [ORIGINAL, &b"x".repeat(60_000)].concat();
        let msg = bounce(&env, &big);
        assert!(msg.contains("text/rfc822-headers"));
        assert!(!msg.contains("The body text."));
        assert!(msg.len() < 10_000);
    }

    #[test]
    fn no_bounce_to_null_sender_or_without_failures() {
        let env = failed_envelope("", MailParams::default());
        let s = BounceSettings::new("relay.example.org");
        assert_eq!(build_bounce(&env, &[1], ORIGINAL, &s, t(1)).unwrap(), None);
        let env = failed_envelope("a@example.org", MailParams::default());
        assert_eq!(build_bounce(&env, &[], ORIGINAL, &s, t(1)).unwrap(), None);
    }

    /// The delivery-status block of the failed recipient, without the date.
    fn recipient_block(msg: &str) -> String {
        let report = &parts(msg)[1];
        let start = report
            .find("Final-Recipient: rfc822; bad@example.net")
            .unwrap();
        let block = &report[start..];
        block[..block.find("Last-Attempt-Date:").unwrap()].to_owned()
    }

    #[test]
    fn local_failure_uses_a_private_diagnostic_type() {
        let mut env = failed_envelope("a@example.org", MailParams::default());
        let mut f = Failure::local(
            EnhancedStatus::NULL_MX,
            "null MX: example.net accepts no mail",
            t(5),
        );
        f.policy_rule = Some("default".into());
        env.recipients[1].last_failure = Some(f);
        let msg = bounce(&env, ORIGINAL);
        assert_eq!(
            recipient_block(&msg),
            "Final-Recipient: rfc822; bad@example.net\r\nAction: failed\r\nStatus: 5.1.10\r\n\
             Diagnostic-Code: X-Postern; null MX: example.net accepts no mail\r\n"
        );
        assert!(!msg.contains("Remote-MTA"));
        assert!(msg.contains(
            "\r\n<bad@example.net>: null MX: example.net accepts no mail (status 5.1.10) \
             [policy: default]\r\n"
        ));
    }

    #[test]
    fn local_tls_failure_at_a_remote_mta_is_not_an_smtp_diagnostic() {
        // A 554 to STARTTLS under `encrypt`: our 4.7.4 decides, the server's
        // words are quoted in our description, and it was that MTA.
        let mut env = failed_envelope("a@example.org", MailParams::default());
        let mut f = Failure::local(
            "4.7.4".parse().unwrap(),
            "STARTTLS refused (554); server said: 554 5.7.0 no TLS today",
            t(5),
        );
        f.remote_mta = Some("mx.example.net[192.0.2.7]:25".into());
        f.result_type = Some(ResultType::StarttlsNotSupported);
        env.recipients[1].last_failure = Some(f);
        let msg = bounce(&env, ORIGINAL);
        assert_eq!(
            recipient_block(&msg),
            "Final-Recipient: rfc822; bad@example.net\r\nAction: failed\r\nStatus: 4.7.4\r\n\
             Remote-MTA: dns; mx.example.net\r\n\
             Diagnostic-Code: X-Postern; STARTTLS refused (554); server said: 554 5.7.0 no TLS today\r\n"
        );
        assert!(!msg.contains("smtp;"), "{msg}");
        assert!(msg.contains(
            "\r\n<bad@example.net>: STARTTLS refused (554); server said: 554 5.7.0 no TLS today \
             (status 4.7.4, host mx.example.net[192.0.2.7]:25) [TLS result: starttls-not-supported]\r\n"
        ));
    }

    #[test]
    fn server_reply_is_an_smtp_diagnostic() {
        // A reply without an enhanced code: the status is its class's.
        let mut env = failed_envelope("a@example.org", MailParams::default());
        let mut f = Failure::remote("5.0.0".parse().unwrap(), "554 go away", t(5));
        f.remote_mta = Some("mx.example.net[192.0.2.7]:25".into());
        env.recipients[1].last_failure = Some(f);
        let msg = bounce(&env, ORIGINAL);
        assert_eq!(
            recipient_block(&msg),
            "Final-Recipient: rfc822; bad@example.net\r\nAction: failed\r\nStatus: 5.0.0\r\n\
             Remote-MTA: dns; mx.example.net\r\n\
             Diagnostic-Code: smtp; 554 go away\r\n"
        );
        assert!(!msg.contains("X-Postern"), "{msg}");
        assert!(msg.contains(
            "\r\n<bad@example.net>: host mx.example.net[192.0.2.7]:25 said: 554 go away\r\n"
        ));
    }

    #[test]
    fn boundary_never_occurs_in_the_quoted_message() {
        let env = failed_envelope("a@example.org", MailParams::default());
        let boundary = format!("{}.{}/relay.example.org", env.id, 1_700_000_120u64);
        let original = format!("Subject: x\r\n\r\n--{boundary}\r\n");
        let msg = bounce(&env, original.as_bytes());
        assert!(msg.contains(&format!("boundary=\"{boundary}.x\"")));
        assert_eq!(parts(&msg).len(), 3);
    }

    #[test]
    fn header_section_length() {
        assert_eq!(header_section_len(b"A: b\r\n\r\nbody"), 6);
        assert_eq!(header_section_len(b"\r\nbody"), 0);
        assert_eq!(header_section_len(b"A: b\r\nB: trunc"), 6);
        assert_eq!(header_section_len(b"no crlf at all"), 0);
    }

    #[test]
    fn remote_mta_is_a_host_name() {
        assert_eq!(mta_name("mx.example.net[192.0.2.7]:25"), "mx.example.net");
        assert_eq!(mta_name("[192.0.2.7]:25"), "192.0.2.7");
        assert_eq!(mta_name("[2001:db8::1]:25"), "2001:db8::1");
        assert_eq!(mta_name("mx.example.net"), "mx.example.net");
    }
}
