//! The data model of a queued message: identifier, envelope, recipients and the
//! record of failed delivery attempts.
//!
//! These types are what [`crate::queue::spool`] stores (as JSON, next to the content),
//! what [`crate::queue`] schedules, what [`crate::reporting::dsn`] reports on and what
//! `postern-relay queue list --json` prints.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use postern_smtp::{Mailbox, ReversePath};
pub use postern_types::{Body, EnhancedStatus, ResultType, Ret};
use serde::{Deserialize, Serialize};

/// Identifier of a queued message.
///
/// Always 1 to 64 ASCII letters and digits, so it is safe to use as a file
/// name and in headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

/// A string that is not a valid [`MessageId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message id (1 to 64 ASCII letters and digits expected)")]
pub struct InvalidMessageId;

/// Per-process counter that keeps ids generated within one microsecond apart.
static ID_COUNTER: AtomicU32 = AtomicU32::new(0);

impl MessageId {
    /// Generates a fresh id from the time, the process id and a counter
    /// (like Postfix's long queue ids: sortable by arrival time).
    pub fn generate(now: SystemTime) -> Self {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let count = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!(
            "{:010X}{:05X}{:08X}{:08X}",
            since.as_secs(),
            since.subsec_micros(),
            std::process::id(),
            count
        ))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageId {
    type Error = InvalidMessageId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if !value.is_empty()
            && value.len() <= 64
            && value.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            Ok(Self(value))
        } else {
            Err(InvalidMessageId)
        }
    }
}

impl FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> Self {
        id.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who wrote the [`text`](Failure::text) of a [`Failure`].
///
/// RFC 3464 §2.3.6 keeps the diagnostic-type `smtp` for the actual reply of
/// the remote MTA; a bounce therefore needs to know whether the text is one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureSource {
    /// This relay decided and described the failure (routing, DNS, a TLS
    /// policy, a lost connection, expiry). The text is a description
    /// without reply or status code (`no address for mx.example`); the
    /// status is in [`Failure::code`]. A server reply the policy overrode
    /// (a 5xx to STARTTLS under a TLS-required mode, recorded as our own
    /// 4.7.x) is quoted in the description, but our code decides.
    ///
    /// The default: a failure recorded before this field existed is taken as
    /// ours, so a bounce never claims a server said what it may not have.
    #[default]
    Local,
    /// The remote server's reply decided the failure (a refusal of RCPT,
    /// MAIL, DATA, of the greeting or of EHLO): the text is that reply,
    /// verbatim on one line (`550 5.1.1 <bob@example.com>: no such user`),
    /// and [`Failure::code`] is its enhanced code (or `4.0.0` / `5.0.0` from
    /// its class when it has none).
    Remote,
}

/// Why a delivery attempt failed, as recorded in the queue and reported by
/// `queue list` and in bounces.
///
/// Each fact has one place: the status in `code`, the RFC 8460 result type
/// in `result_type`, the policy rule in `policy_rule`, the host in
/// `remote_mta`, and in `text` either the server's reply or our description,
/// as `source` says. `Display` gives the one-line form of the delivery log:
/// `host mx.example.com[192.0.2.1]:25 said: 550 5.1.1 no such user` for a
/// server reply, the description otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The enhanced status code (ours, or the remote server's when `source`
    /// is [`FailureSource::Remote`]).
    pub code: EnhancedStatus,
    /// Who wrote `text`: the remote server (its reply) or this relay (a
    /// description). Absent in records written before it existed: local.
    #[serde(default)]
    pub source: FailureSource,
    /// One line: the remote server's reply verbatim
    /// ([`FailureSource::Remote`], `550 5.1.1 no such user`), or this
    /// relay's description of a local failure ([`FailureSource::Local`],
    /// `no address for mx.example.com`), which carries no status code.
    /// (Read from the former name `reply` too.)
    #[serde(alias = "reply")]
    pub text: String,
    /// The RFC 8460 §4.3 result type when the failure is a TLS one
    /// (stored as `starttls-not-supported`, `certificate-not-trusted`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_type: Option<ResultType>,
    /// The policy rule that decided, as the TLS policy explains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<String>,
    /// The remote host the attempt talked to, or tried to
    /// (`mx.example.com[192.0.2.1]:25`): the one that gave the reply of a
    /// remote failure, or the one a local failure (TLS policy, lost
    /// connection) happened with; `None` when no host was involved (routing,
    /// DNS, queue file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    /// When the failure happened.
    #[serde(with = "unix_time")]
    pub at: SystemTime,
}

impl Failure {
    /// A failure this relay decided, with its code and a description (no
    /// reply or status code in it: `no host to deliver to`).
    pub fn local(code: EnhancedStatus, description: impl Into<String>, at: SystemTime) -> Self {
        Self::with_source(FailureSource::Local, code, description.into(), at)
    }

    /// A failure decided by the remote server's `reply` (one line,
    /// verbatim), with the enhanced code it carries.
    pub fn remote(code: EnhancedStatus, reply: impl Into<String>, at: SystemTime) -> Self {
        Self::with_source(FailureSource::Remote, code, reply.into(), at)
    }

    fn with_source(
        source: FailureSource,
        code: EnhancedStatus,
        text: String,
        at: SystemTime,
    ) -> Self {
        Self {
            code,
            source,
            text,
            result_type: None,
            policy_rule: None,
            remote_mta: None,
            at,
        }
    }

    /// Whether `text` is the remote server's reply.
    pub fn is_remote_reply(&self) -> bool {
        self.source == FailureSource::Remote
    }
}

impl fmt::Display for Failure {
    /// Postfix-style: `host X said: <reply>` for a server reply, else the
    /// description.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.source, &self.remote_mta) {
            (FailureSource::Remote, Some(host)) => write!(f, "host {host} said: {}", self.text),
            (FailureSource::Remote, None) => write!(f, "remote server said: {}", self.text),
            (FailureSource::Local, _) => f.write_str(&self.text),
        }
    }
}

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientState {
    /// Not attempted yet.
    Pending,
    /// Attempted, failed temporarily; will be retried.
    Deferred,
    /// Accepted by the next hop.
    Delivered,
    /// Failed permanently (or expired); the sender is still to be notified.
    Failed,
    /// Failed, and the sender was notified (or cannot be: null reverse path).
    Returned,
}

impl RecipientState {
    /// Whether delivery to this recipient is still to be attempted.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Deferred)
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward-path mailbox (a domain-less `<Postmaster>` is the
    /// relay's own postmaster). Stored as text, without angle brackets.
    pub address: Mailbox,
    /// The RFC 3461 ORCPT parameter as received: address type and the
    /// address as encoded (xtext), as the SMTP engine gives it
    /// ([`RcptParams::orcpt`](postern_smtp::RcptParams::orcpt)). Stored as
    /// one string, `rfc822;user@example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "orcpt_text")]
    pub orcpt: Option<(String, String)>,
    /// Where delivery to this recipient stands.
    pub state: RecipientState,
    /// The most recent failure for this recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
}

impl Recipient {
    /// A pending recipient.
    pub fn new(address: Mailbox) -> Self {
        Self {
            address,
            orcpt: None,
            state: RecipientState::Pending,
            last_failure: None,
        }
    }
}

/// The MAIL FROM parameters the relay keeps with the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailParams {
    /// RFC 8689 REQUIRETLS: every hop must use verified TLS, and a bounce is
    /// redacted (headers only).
    #[serde(default)]
    pub requiretls: bool,
    /// RFC 6531 SMTPUTF8.
    #[serde(default)]
    pub smtputf8: bool,
    /// RFC 1652 BODY (stored as `seven-bit`, `eight-bit-mime`, `binary-mime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
    /// RFC 1870 SIZE as declared by the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// RFC 3461 ENVID (decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// RFC 3461 RET (stored as `full` or `hdrs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
}

/// The envelope and delivery state of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The message id (also its spool entry name).
    pub id: MessageId,
    /// The reverse path (MAIL FROM). Stored as text without angle brackets;
    /// empty for the null reverse path `<>`.
    pub reverse_path: ReversePath,
    /// The recipients, in RCPT order.
    pub recipients: Vec<Recipient>,
    /// The MAIL FROM parameters.
    pub params: MailParams,
    /// When the message was accepted.
    #[serde(with = "unix_time")]
    pub received_at: SystemTime,
    /// How many delivery attempts were made.
    pub attempts: u32,
    /// When the next delivery attempt is due.
    #[serde(with = "unix_time")]
    pub next_attempt: SystemTime,
    /// The most recent failure of any recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// A TLS report (RFC 8460) mailed by this relay: delivered without
    /// MTA-STS and not counted in the next report (§5.3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_report: bool,
    /// Put on hold by the operator (`queue hold`, Postfix `postsuper -h`):
    /// never attempted, never expired, until released. Absent (not held)
    /// in envelopes written before it existed, and written only when set,
    /// so the envelope of a message never held is unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

impl Envelope {
    /// A new envelope, due for delivery at `received_at`, with a fresh id.
    pub fn new(
        reverse_path: impl Into<ReversePath>,
        recipients: impl IntoIterator<Item = Recipient>,
        params: MailParams,
        received_at: SystemTime,
    ) -> Self {
        Self {
            id: MessageId::generate(received_at),
            reverse_path: reverse_path.into(),
            recipients: recipients.into_iter().collect(),
            params,
            received_at,
            attempts: 0,
            next_attempt: received_at,
            last_failure: None,
            tls_report: false,
            held: false,
        }
    }

    /// Whether the reverse path is null (`<>`): bounces and other
    /// notifications, which must never be answered with a bounce
    /// (RFC 5321 §4.5.5).
    pub fn is_null_sender(&self) -> bool {
        self.reverse_path == ReversePath::Null
    }

    /// Indices of the recipients still to be attempted.
    pub fn open_recipients(&self) -> Vec<usize> {
        self.indices_in(RecipientState::is_open)
    }

    /// Indices of the recipients that failed and whose sender is still to be
    /// notified.
    pub fn failed_unreturned(&self) -> Vec<usize> {
        self.indices_in(|s| s == RecipientState::Failed)
    }

    /// Whether nothing is left to do: every recipient delivered or returned.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| {
            matches!(
                r.state,
                RecipientState::Delivered | RecipientState::Returned
            )
        })
    }

    fn indices_in(&self, pred: impl Fn(RecipientState) -> bool) -> Vec<usize> {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| pred(r.state))
            .map(|(i, _)| i)
            .collect()
    }
}

/// A mailbox for a test (panics if `s` does not parse).
#[cfg(test)]
pub(crate) fn mailbox(s: &str) -> Mailbox {
    Mailbox::parse(s).expect("a test mailbox")
}

/// A reverse path for a test: `""` is `<>`, anything else a mailbox.
#[cfg(test)]
pub(crate) fn reverse_path(s: &str) -> ReversePath {
    if s.is_empty() {
        ReversePath::Null
    } else {
        mailbox(s).into()
    }
}

/// Serde helper: an ORCPT (address type, encoded address) as one string,
/// `type;address`, the form the spool has always kept. Both parts are
/// printable ASCII without spaces (RFC 3461 §4.2 `addr-type` and `xtext`):
/// they go back on the wire in a RCPT command.
pub(crate) mod orcpt_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    fn is_word(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
    }

    pub(crate) fn serialize<S: Serializer>(
        orcpt: &Option<(String, String)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match orcpt {
            Some((kind, addr)) => s.collect_str(&format_args!("{kind};{addr}")),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(String, String)>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        match text.split_once(';') {
            Some((kind, addr)) if is_word(kind) && is_word(addr) => {
                Ok(Some((kind.to_owned(), addr.to_owned())))
            }
            _ => Err(D::Error::custom(format!(
                "invalid ORCPT {text:?} (addr-type;xtext expected)"
            ))),
        }
    }
}

/// Serde helper: a [`SystemTime`] as whole seconds since the Unix epoch
/// (before the epoch is stored as 0).
pub(crate) mod unix_time {
    use super::{Duration, SystemTime, UNIX_EPOCH};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = u64::deserialize(d)?;
        UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(|| serde::de::Error::custom("time out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_unique_and_valid() {
        let now = SystemTime::now();
        let a = MessageId::generate(now);
        let b = MessageId::generate(now);
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<MessageId>(), Ok(a.clone()));
        assert!("../etc".parse::<MessageId>().is_err());
        assert!("".parse::<MessageId>().is_err());
        assert!("A".repeat(65).parse::<MessageId>().is_err());
    }

    #[test]
    fn envelope_round_trips_through_json() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut env = Envelope::new(
            mailbox("a@example.org"),
            [Recipient::new(mailbox("b@example.com"))],
            MailParams {
                requiretls: true,
                body: Some(Body::EightBitMime),
                ret: Some(Ret::Headers),
                ..MailParams::default()
            },
            t,
        );
        let mut failure = Failure::local("4.7.5".parse().unwrap(), "certificate not trusted", t);
        failure.result_type = Some(ResultType::CertificateNotTrusted);
        env.recipients[0].state = RecipientState::Deferred;
        env.recipients[0].last_failure = Some(failure);
        env.last_failure = Some(Failure::remote(
            "5.1.1".parse().unwrap(),
            "550 5.1.1 no such user",
            t,
        ));
        let json = serde_json::to_string(&env).unwrap();
        assert!(json.contains("\"4.7.5\""), "{json}");
        assert!(
            json.contains(r#""result_type":"certificate-not-trusted""#),
            "{json}"
        );
        assert!(json.contains("1700000000"), "{json}");
        // The spool format of the MAIL parameters, as written before they were shared types.
        assert!(json.contains(r#""body":"eight-bit-mime""#), "{json}");
        assert!(json.contains(r#""ret":"hdrs""#), "{json}");
        assert!(
            json.contains(r#""source":"local","text":"certificate not trusted""#),
            "{json}"
        );
        assert!(
            json.contains(r#""source":"remote","text":"550 5.1.1 no such user""#),
            "{json}"
        );
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn typed_addresses_are_stored_as_the_strings_they_were() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut rcpt = Recipient::new(Mailbox::postmaster(
            postern_smtp::Host::parse("example.com").unwrap(),
        ));
        rcpt.orcpt = Some(("rfc822".into(), "Postmaster+40example.com".into()));
        let mut env = Envelope::new(ReversePath::Null, [rcpt], MailParams::default(), t);
        env.id = "ABC125".parse().unwrap();
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(
            json,
            r#"{"id":"ABC125","reverse_path":"","recipients":[{"address":"postmaster@example.com","orcpt":"rfc822;Postmaster+40example.com","state":"pending"}],"params":{"requiretls":false,"smtputf8":false},"received_at":1700000000,"attempts":0,"next_attempt":1700000000}"#
        );
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
        assert!(back.is_null_sender());
        // An ORCPT whose address holds a `;` (xtext allows it) splits at the first.
        let r: Recipient = serde_json::from_str(
            r#"{"address":"a@b.example","orcpt":"x-type;a;b","state":"pending"}"#,
        )
        .unwrap();
        assert_eq!(r.orcpt, Some(("x-type".into(), "a;b".into())));
    }

    #[test]
    fn failure_recorded_before_the_source_field_loads_as_local() {
        let json = r#"{"code":"4.4.3","reply":"451 4.4.3 no address for mx.example","at":5}"#;
        let f: Failure = serde_json::from_str(json).unwrap();
        assert_eq!(f.source, FailureSource::Local);
        assert_eq!(f.text, "451 4.4.3 no address for mx.example");
        assert_eq!(f.code, EnhancedStatus::DNS_FAILURE);
        assert!(!f.is_remote_reply());
    }

    #[test]
    fn failure_displays_like_a_postfix_log_reason() {
        let t = UNIX_EPOCH;
        let mut remote = Failure::remote("5.1.1".parse().unwrap(), "550 5.1.1 no such user", t);
        assert_eq!(
            remote.to_string(),
            "remote server said: 550 5.1.1 no such user"
        );
        remote.remote_mta = Some("mx.example.com[192.0.2.1]:25".into());
        assert_eq!(
            remote.to_string(),
            "host mx.example.com[192.0.2.1]:25 said: 550 5.1.1 no such user"
        );
        let mut local = Failure::local(EnhancedStatus::DNS_FAILURE, "no address for mx.example", t);
        local.remote_mta = Some("mx.example:25".into());
        assert_eq!(local.to_string(), "no address for mx.example");
    }
}
