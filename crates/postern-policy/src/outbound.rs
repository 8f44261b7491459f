//! Outbound (client) TLS policy: per-destination settings and the decisions of a
//! delivery attempt.
//!
//! A delivery engine asks [`OutboundPolicy::connection`] for a [`ConnectionPolicy`]
//! per connection attempt, adds what it learned from DNS (DANE, MTA-STS, secure
//! MX) and the message's [`MessageTls`], then feeds it the facts of the SMTP
//! session in order. Each step returns a [`Decision`]: what to do next, and why.
//!
//! ```text
//! before_connect()                      → Connect | Defer | Bounce
//! on_ehlo(starttls_offered)             → StartTls | ContinuePlaintext | Defer | Bounce
//! on_starttls_reply(code)               → Handshake | ContinuePlaintext | Defer | Bounce
//! on_bytes_after_starttls_reply()       → RetryPlaintextNewConnection | Defer | Bounce
//! on_handshake(outcome)                 → ContinueTls | RetryPlaintextNewConnection | Defer | Bounce
//! on_tls_ehlo(requiretls_advertised)    → ContinueTls | Bounce
//! on_plaintext_retry()                  → ContinuePlaintext | Defer | Bounce
//! ```
//!
//! `postern-attempt` drives these steps from a live SMTP session;
//! [`ConnectionPolicy::evaluate`] replays them over the facts of a session
//! already observed (a probe, a test).
//!
//! The contract is the outcome matrix of the design (documented in
//! `docs/policy.md`): under a mode that requires TLS, every failure defers with
//! our own 4.7.x, whatever the server answered, and no MAIL command or message
//! byte is ever sent in plaintext.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::dane::{DaneOutcome, LookupFailure, TlsaRecord};
use crate::fingerprint::Fingerprint;
use crate::lookup::{OverrideTable, PolicySource};
use crate::modes::{CertificateCheck, CertificateFailure, ClientTlsMode, PeerTrust, TlsVersion};
use crate::mta_sts::{StsMode, StsPolicy};
use crate::name::{DomainName, Host, NextHop};
use crate::requiretls::MessageTls;
use crate::tlsrpt::{FailureFacts, PolicyDetails, PolicyType, ResultType};

/// Which names a peer certificate must match (Postfix `match=`,
/// `smtp_tls_verify_cert_match`, `smtp_tls_secure_cert_match`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertificateMatch {
    /// `hostname`: the MX host name (or the host of a `[host]:port` next hop).
    Hostname,
    /// `nexthop`: the next-hop domain.
    NextHop,
    /// `dot-nexthop`: any subdomain of the next-hop domain.
    DotNextHop,
    /// A literal name.
    Name(DomainName),
    /// `.example.com`: any subdomain of a literal name.
    Subdomains(DomainName),
}

impl CertificateMatch {
    /// Parses `hostname`, `nexthop`, `dot-nexthop`, `.example.com` or `example.com`.
    pub fn parse(text: &str) -> Result<Self, crate::NameError> {
        Ok(match text {
            "hostname" => Self::Hostname,
            "nexthop" => Self::NextHop,
            "dot-nexthop" => Self::DotNextHop,
            _ => match text.strip_prefix('.') {
                Some(rest) => Self::Subdomains(DomainName::parse(rest)?),
                None => Self::Name(DomainName::parse(text)?),
            },
        })
    }
}

impl fmt::Display for CertificateMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hostname => f.write_str("hostname"),
            Self::NextHop => f.write_str("nexthop"),
            Self::DotNextHop => f.write_str("dot-nexthop"),
            Self::Name(name) => name.fmt(f),
            Self::Subdomains(name) => write!(f, ".{name}"),
        }
    }
}

impl Serialize for CertificateMatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CertificateMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A concrete name a certificate may match, for the certificate verifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamePattern {
    /// This name exactly.
    Exact(DomainName),
    /// Any subdomain of this name (not the name itself).
    Subdomains(DomainName),
}

impl NamePattern {
    /// Whether a certificate DNS name (already canonical) satisfies the pattern.
    pub fn matches(&self, name: &DomainName) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Subdomains(base) => name != base && name.is_within(base),
        }
    }
}

/// TLS settings for one destination (or the default).
///
/// Default: `opportunistic`, minimum TLS 1.2, the mode's default name matching,
/// the system trust anchors, no pins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DestinationPolicy {
    /// The TLS mode.
    pub tls: ClientTlsMode,
    /// The lowest TLS version accepted.
    pub min_tls_version: TlsVersion,
    /// Names to match; empty means the mode's default (`verify`: hostname;
    /// `secure`: nexthop, dot-nexthop).
    pub certificate_match: Vec<CertificateMatch>,
    /// A file of trust anchors (PEM) to use instead of the system roots.
    pub trust_anchors: Option<String>,
    /// SHA-256 pins for `fingerprint` mode.
    pub pins: Vec<Fingerprint>,
}

impl DestinationPolicy {
    /// A policy with this mode and defaults otherwise.
    pub fn new(tls: ClientTlsMode) -> Self {
        Self {
            tls,
            ..Self::default()
        }
    }

    /// The names to match: the configured ones, else the mode's default.
    pub fn effective_match(&self) -> Vec<CertificateMatch> {
        if !self.certificate_match.is_empty() {
            return self.certificate_match.clone();
        }
        match self.tls {
            ClientTlsMode::Secure => vec![CertificateMatch::NextHop, CertificateMatch::DotNextHop],
            _ => vec![CertificateMatch::Hostname],
        }
    }
}

/// The outbound policy: a default and per-destination overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OutboundPolicy {
    /// Applies when no override matches.
    pub default: DestinationPolicy,
    /// Overrides by destination domain, `.parent` or `[host]:port`.
    pub overrides: OverrideTable<DestinationPolicy>,
}

impl OutboundPolicy {
    /// A policy with only a default.
    pub fn new(default: DestinationPolicy) -> Self {
        Self {
            default,
            overrides: OverrideTable::new(),
        }
    }

    /// The settings that apply to `next_hop`, and which rule gave them.
    pub fn lookup(&self, next_hop: &NextHop) -> (&DestinationPolicy, PolicySource) {
        self.overrides.resolve(next_hop, &self.default)
    }

    /// Which rule applies to `next_hop` and its mode, e.g.
    /// `domain .example.com (override): verify`.
    pub fn explain(&self, next_hop: &NextHop) -> String {
        let (policy, source) = self.lookup(next_hop);
        format!("{source}: {}", policy.tls)
    }

    /// Starts the decisions for one connection to `next_hop`, through MX host
    /// `mx_host` (`None` for a `[host]:port` next hop or when not known).
    pub fn connection(&self, next_hop: &NextHop, mx_host: Option<&DomainName>) -> ConnectionPolicy {
        let (policy, source) = self.lookup(next_hop);
        ConnectionPolicy {
            next_hop: next_hop.clone(),
            mx_host: mx_host.cloned(),
            source,
            policy: policy.clone(),
            dane: None,
            sts: None,
            message: MessageTls::Default,
            secure_mx: matches!(next_hop, NextHop::HostPort { .. }),
        }
    }
}

pub use postern_types::EnhancedStatus;

/// How to end the session after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Close {
    /// Nothing to close (no connection was made).
    NotConnected,
    /// Send QUIT, then close.
    Quit,
    /// Close without another command (the session is not usable: after a failed
    /// handshake, or after unexpected bytes).
    Drop,
}

/// Why a delivery attempt cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failure {
    /// Our enhanced status code.
    pub status: EnhancedStatus,
    /// The RFC 8460 result type, for reports.
    pub result_type: ResultType,
    /// A short lowercase reason.
    pub reason: String,
    /// How to end the session.
    pub close: Close,
}

/// What the delivery engine does next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open the connection.
    Connect,
    /// Send STARTTLS.
    StartTls,
    /// Start the TLS handshake (after the 2xx reply to STARTTLS; any bytes
    /// received after that reply are discarded, never read as a reply).
    Handshake,
    /// Go on without TLS (send MAIL).
    ContinuePlaintext,
    /// Go on over TLS (EHLO again inside TLS, then MAIL).
    ContinueTls,
    /// Close this connection and deliver over a new one without STARTTLS.
    RetryPlaintextNewConnection,
    /// This host fails for now: try the next MX host, else keep the message
    /// queued and retry later.
    Defer(Failure),
    /// This host cannot take the message: try the next MX host; when none is
    /// left, return the message with this code.
    Bounce(Failure),
}

impl Action {
    /// The failure of a `Defer` or `Bounce`.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Defer(f) | Self::Bounce(f) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => f.write_str("connect"),
            Self::StartTls => f.write_str("start TLS"),
            Self::Handshake => f.write_str("handshake"),
            Self::ContinuePlaintext => f.write_str("continue in plaintext"),
            Self::ContinueTls => f.write_str("continue over TLS"),
            Self::RetryPlaintextNewConnection => f.write_str("retry on a new plaintext connection"),
            Self::Defer(failure) => write!(f, "defer {} {}", failure.status, failure.result_type),
            Self::Bounce(failure) => {
                write!(f, "bounce {} {}", failure.status, failure.result_type)
            }
        }
    }
}

/// A decision and its explanation.
///
/// `Display` reads like `domain .example.com (override): verify → defer 4.7.5
/// certificate-not-trusted (certificate not trusted)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a decision says what the delivery must do next"]
#[non_exhaustive]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The rule that gave the settings.
    pub source: PolicySource,
    /// The configured mode.
    pub mode: ClientTlsMode,
    /// What shaped the requirement beyond the mode (DANE, MTA-STS, REQUIRETLS …).
    pub basis: Basis,
    /// Why, in a few words.
    pub reason: String,
    /// A failure to report (TLS-RPT) although the action goes on: MTA-STS
    /// `testing` mode reports failures without enforcing them.
    pub report_only: Option<ResultType>,
}

impl Decision {
    /// The RFC 8460 result type to record for this attempt, if it failed (or
    /// would have failed under an enforced policy).
    pub fn result_type(&self) -> Option<ResultType> {
        self.action
            .failure()
            .map(|f| f.result_type)
            .or(self.report_only)
    }

    /// The facts to record for a TLS-RPT report when the attempt failed (or
    /// would have, under an enforced policy); the caller adds addresses and names.
    pub fn failure_facts(&self) -> Option<FailureFacts> {
        let result_type = self.result_type()?;
        let mut facts = FailureFacts::new(result_type);
        if result_type == ResultType::ValidationFailure {
            facts.failure_reason_code = Some(self.reason.clone());
        }
        Some(facts)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.mode)?;
        if self.basis != Basis::Mode {
            write!(f, " ({})", self.basis)?;
        }
        write!(f, " → {}", self.action)?;
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        if let Some(report) = self.report_only {
            write!(f, " [reported: {report}]")?;
        }
        Ok(())
    }
}

/// What decided the requirement, beyond the configured mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Basis {
    /// The configured mode alone.
    Mode,
    /// DANE TLSA records (RFC 7672).
    Dane,
    /// An MTA-STS policy (RFC 8461).
    MtaSts,
    /// The message's REQUIRETLS (RFC 8689).
    RequireTls,
    /// The message's `TLS-Required: No` (RFC 8689 §4.2.2).
    TlsRequiredNo,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mode => "mode",
            Self::Dane => "dane",
            Self::MtaSts => "mta-sts",
            Self::RequireTls => "requiretls",
            Self::TlsRequiredNo => "tls-required: no",
        })
    }
}

/// How the peer must be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// A chain to a trust anchor (the system roots, or the configured file) and a
    /// name among these.
    Pkix {
        /// Acceptable names.
        names: Vec<NamePattern>,
    },
    /// The certificate's SHA-256 fingerprint must be one of these.
    Pins(Vec<Fingerprint>),
    /// A usable TLSA record must match (RFC 7672 §3.1).
    Dane(Vec<TlsaRecord>),
}

/// What TLS the connection needs, all inputs considered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRequirement {
    /// Never send STARTTLS.
    Plaintext,
    /// STARTTLS when offered; anything goes otherwise.
    Opportunistic,
    /// TLS required, certificate not checked.
    Encrypt,
    /// TLS required and the peer authenticated.
    Authenticated(Authentication),
    /// This host cannot be used (e.g. DANE lookup failed, MX not in the MTA-STS
    /// policy).
    Unusable(Failure),
}

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeOutcome {
    /// The handshake failed. `certificate` says why when the verifier refused the
    /// peer's certificate.
    Failed {
        /// The certificate failure that aborted the handshake, if that was the cause.
        certificate: Option<CertificateFailure>,
    },
    /// TLS is up.
    Established {
        /// The negotiated version.
        version: TlsVersion,
        /// The check of the peer's certificate.
        certificate: CertificateCheck,
    },
}

/// Everything observed in one session, for [`ConnectionPolicy::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SessionFacts {
    /// Whether the (plaintext) EHLO reply offered STARTTLS.
    pub starttls_offered: bool,
    /// The reply code to STARTTLS, once sent.
    pub starttls_reply: Option<u16>,
    /// Whether bytes followed the STARTTLS reply before the handshake.
    pub bytes_after_starttls_reply: bool,
    /// The handshake outcome, once done.
    pub handshake: Option<HandshakeOutcome>,
    /// Whether the EHLO reply inside TLS offered REQUIRETLS, once seen.
    pub requiretls_advertised: Option<bool>,
}

impl SessionFacts {
    /// Sets whether the plaintext EHLO reply offered STARTTLS.
    #[must_use]
    pub fn with_starttls_offered(mut self, offered: bool) -> Self {
        self.starttls_offered = offered;
        self
    }

    /// Sets the reply code to STARTTLS.
    #[must_use]
    pub fn with_starttls_reply(mut self, code: u16) -> Self {
        self.starttls_reply = Some(code);
        self
    }

    /// Records that bytes followed the STARTTLS reply.
    #[must_use]
    pub fn with_bytes_after_starttls_reply(mut self) -> Self {
        self.bytes_after_starttls_reply = true;
        self
    }

    /// Sets the handshake outcome.
    #[must_use]
    pub fn with_handshake(mut self, outcome: HandshakeOutcome) -> Self {
        self.handshake = Some(outcome);
        self
    }

    /// Sets whether the EHLO reply inside TLS offered REQUIRETLS.
    #[must_use]
    pub fn with_requiretls_advertised(mut self, advertised: bool) -> Self {
        self.requiretls_advertised = Some(advertised);
        self
    }
}

/// The policy of one connection attempt; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPolicy {
    next_hop: NextHop,
    mx_host: Option<DomainName>,
    source: PolicySource,
    policy: DestinationPolicy,
    dane: Option<DaneOutcome>,
    sts: Option<StsPolicy>,
    message: MessageTls,
    secure_mx: bool,
}

struct Resolved {
    requirement: TlsRequirement,
    enforce: bool,
    basis: Basis,
}

impl ConnectionPolicy {
    /// Adds the DANE outcome for this MX host (required for `dane` and
    /// `dane-only`; for `mta-sts`, usable DANE records take precedence,
    /// RFC 8461 §2, and a failed lookup makes the host unusable, RFC 7672
    /// §2.1; for `opportunistic`, an outcome supplied upgrades the
    /// connection to opportunistic DANE, as `dane` decides it: the MTA
    /// chooses whether to look TLSA records up for opportunistic
    /// destinations).
    #[must_use]
    pub fn with_dane(mut self, outcome: DaneOutcome) -> Self {
        self.dane = Some(outcome);
        self
    }

    /// Adds the MTA-STS policy that applies to the next-hop domain (from
    /// [`crate::mta_sts::StsCache`]); `None` when there is none.
    #[must_use]
    pub fn with_mta_sts(mut self, policy: Option<StsPolicy>) -> Self {
        self.sts = policy;
        self
    }

    /// Adds the message's requirement.
    #[must_use]
    pub fn with_message(mut self, message: MessageTls) -> Self {
        self.message = message;
        self
    }

    /// Says whether the MX host was found securely (DNSSEC-validated MX answer);
    /// a matching MTA-STS policy also counts (RFC 8689 §4.2.1).
    #[must_use]
    pub fn with_secure_mx(mut self, secure: bool) -> Self {
        self.secure_mx = secure;
        self
    }

    /// The next hop this connection goes to.
    pub fn next_hop(&self) -> &NextHop {
        &self.next_hop
    }

    /// The settings that apply.
    pub fn settings(&self) -> &DestinationPolicy {
        &self.policy
    }

    /// Which rule gave the settings.
    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    /// The lowest TLS version to offer.
    pub fn min_tls_version(&self) -> TlsVersion {
        self.policy.min_tls_version
    }

    /// The trust anchors file to verify against instead of the system roots.
    pub fn trust_anchors(&self) -> Option<&str> {
        self.policy.trust_anchors.as_deref()
    }

    /// The name to send as SNI and to look up TLSA records for: the MX host, or
    /// the host of a `[host]:port` next hop (RFC 7672 §8.1, RFC 8461 §7.1).
    pub fn server_name(&self) -> Option<&DomainName> {
        self.mx_host.as_ref().or(match &self.next_hop {
            NextHop::HostPort {
                host: Host::Name(name),
                ..
            } => Some(name),
            _ => None,
        })
    }

    /// What the connection needs, all inputs considered.
    pub fn requirement(&self) -> TlsRequirement {
        self.resolve().requirement
    }

    /// Whether failures of the requirement are enforced (false only under an
    /// MTA-STS `testing` policy, whose failures are reported instead).
    pub fn enforced(&self) -> bool {
        self.resolve().enforce
    }

    /// Whether no MAIL command or message octet may cross this connection in
    /// plaintext: the requirement needs TLS and is enforced (not under an
    /// MTA-STS `testing` policy, not for `TLS-Required: No`).
    pub fn requires_tls(&self) -> bool {
        let resolved = self.resolve();
        resolved.enforce
            && !matches!(
                resolved.requirement,
                TlsRequirement::Plaintext | TlsRequirement::Opportunistic
            )
    }

    /// The TLS-RPT `policy` this connection reports under.
    pub fn report_policy(&self) -> PolicyDetails {
        let domain = self
            .next_hop
            .domain()
            .map_or_else(|| self.next_hop.to_string(), ToString::to_string);
        let resolved = self.resolve();
        match (resolved.basis, &resolved.requirement) {
            (Basis::Dane, _) => PolicyDetails {
                policy_type: PolicyType::Tlsa,
                policy_string: match &self.dane {
                    Some(DaneOutcome::Authenticate(records)) => {
                        records.iter().map(ToString::to_string).collect()
                    }
                    _ => Vec::new(),
                },
                policy_domain: domain,
                mx_host: self
                    .server_name()
                    .map(ToString::to_string)
                    .into_iter()
                    .collect(),
            },
            (Basis::MtaSts, _) => PolicyDetails {
                policy_type: PolicyType::Sts,
                policy_string: self
                    .sts
                    .as_ref()
                    .map(StsPolicy::to_lines)
                    .unwrap_or_default(),
                policy_domain: domain,
                mx_host: self
                    .sts
                    .as_ref()
                    .map(|p| p.mx.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
            },
            _ => PolicyDetails {
                policy_type: PolicyType::NoPolicyFound,
                policy_string: Vec::new(),
                policy_domain: domain,
                mx_host: Vec::new(),
            },
        }
    }

    fn hostname(&self) -> Option<DomainName> {
        self.server_name()
            .cloned()
            .or_else(|| self.next_hop.domain().cloned())
    }

    fn name_patterns(&self) -> Vec<NamePattern> {
        let mut names = Vec::new();
        for m in self.policy.effective_match() {
            let pattern = match m {
                CertificateMatch::Hostname => self.hostname().map(NamePattern::Exact),
                CertificateMatch::NextHop => {
                    self.next_hop.domain().cloned().map(NamePattern::Exact)
                }
                CertificateMatch::DotNextHop => {
                    self.next_hop.domain().cloned().map(NamePattern::Subdomains)
                }
                CertificateMatch::Name(name) => Some(NamePattern::Exact(name)),
                CertificateMatch::Subdomains(name) => Some(NamePattern::Subdomains(name)),
            };
            if let Some(p) = pattern
                && !names.contains(&p)
            {
                names.push(p);
            }
        }
        names
    }

    fn unusable(status: EnhancedStatus, result_type: ResultType, reason: &str) -> TlsRequirement {
        TlsRequirement::Unusable(Failure {
            status,
            result_type,
            reason: reason.to_owned(),
            close: Close::NotConnected,
        })
    }

    fn dane_failure(failure: LookupFailure) -> TlsRequirement {
        Self::unusable(
            EnhancedStatus::CRYPTO_FAILURE,
            ResultType::DnssecInvalid,
            match failure {
                LookupFailure::Bogus => "TLSA lookup bogus",
                LookupFailure::Indeterminate => "TLSA lookup failed",
            },
        )
    }

    /// The MTA-STS requirement (RFC 8461 §5): `enforce` and `testing` require a
    /// matching MX and a PKIX-valid certificate for the MX host; `none`, or no
    /// policy, is opportunistic.
    fn sts_requirement(&self) -> Option<Resolved> {
        let policy = self.sts.as_ref()?;
        let enforce = match policy.mode {
            StsMode::Enforce => true,
            StsMode::Testing => false,
            StsMode::None => return None,
        };
        let requirement = match self.server_name() {
            Some(mx) if policy.matches_mx(mx) => {
                TlsRequirement::Authenticated(Authentication::Pkix {
                    names: vec![NamePattern::Exact(mx.clone())],
                })
            }
            _ => Self::unusable(
                EnhancedStatus::CRYPTO_FAILURE,
                ResultType::ValidationFailure,
                "MX host not in the MTA-STS policy",
            ),
        };
        Some(Resolved {
            requirement,
            enforce,
            basis: Basis::MtaSts,
        })
    }

    fn resolve(&self) -> Resolved {
        let by_mode = |requirement| Resolved {
            requirement,
            enforce: true,
            basis: Basis::Mode,
        };
        let by_dane = |requirement| Resolved {
            requirement,
            enforce: true,
            basis: Basis::Dane,
        };
        let opportunistic = || by_mode(TlsRequirement::Opportunistic);
        // RFC 7672 §2.2: secure TLSA records, none usable: TLS is mandatory,
        // unauthenticated. An enforced MTA-STS policy for the host asks more
        // (PKIX) and still applies; a `testing` one, or none, asks less.
        let encrypt_only = || match self.sts_requirement() {
            Some(sts) if sts.enforce => sts,
            _ => by_dane(TlsRequirement::Encrypt),
        };
        let mut resolved = match self.policy.tls {
            ClientTlsMode::None => by_mode(TlsRequirement::Plaintext),
            ClientTlsMode::Encrypt => by_mode(TlsRequirement::Encrypt),
            ClientTlsMode::Verify | ClientTlsMode::Secure => {
                by_mode(TlsRequirement::Authenticated(Authentication::Pkix {
                    names: self.name_patterns(),
                }))
            }
            ClientTlsMode::Fingerprint => by_mode(TlsRequirement::Authenticated(
                Authentication::Pins(self.policy.pins.clone()),
            )),
            // RFC 7672 §2.2: usable → authenticate; unusable only → encrypt;
            // none → opportunistic (then an MTA-STS policy, if any, applies);
            // lookup failure → host unusable.
            // Opportunistic with a DANE outcome supplied is opportunistic DANE
            // (Exim's default): the MTA that looked up TLSA records upgrades.
            mode @ (ClientTlsMode::Dane | ClientTlsMode::Opportunistic)
                if mode == ClientTlsMode::Dane || self.dane.is_some() =>
            {
                match &self.dane {
                    Some(DaneOutcome::Authenticate(records)) => by_dane(
                        TlsRequirement::Authenticated(Authentication::Dane(records.clone())),
                    ),
                    Some(DaneOutcome::EncryptOnly) => encrypt_only(),
                    Some(DaneOutcome::HostUnusable(failure)) => {
                        by_dane(Self::dane_failure(*failure))
                    }
                    Some(DaneOutcome::Opportunistic) => {
                        self.sts_requirement().unwrap_or_else(opportunistic)
                    }
                    None => by_dane(Self::dane_failure(LookupFailure::Indeterminate)),
                }
            }
            // RFC 7672 §6: mandatory DANE.
            ClientTlsMode::DaneOnly => match &self.dane {
                Some(DaneOutcome::Authenticate(records)) => by_dane(TlsRequirement::Authenticated(
                    Authentication::Dane(records.clone()),
                )),
                Some(DaneOutcome::HostUnusable(failure)) => by_dane(Self::dane_failure(*failure)),
                Some(_) => by_dane(Self::unusable(
                    EnhancedStatus::CRYPTO_FAILURE,
                    ResultType::DaneRequired,
                    "no usable TLSA records",
                )),
                None => by_dane(Self::dane_failure(LookupFailure::Indeterminate)),
            },
            // RFC 8461 §2: MTA-STS must not override DANE; usable DANE records win,
            // and a failed TLSA lookup is never "no DANE" (RFC 7672 §2.1).
            ClientTlsMode::MtaSts => match &self.dane {
                Some(DaneOutcome::Authenticate(records)) => by_dane(TlsRequirement::Authenticated(
                    Authentication::Dane(records.clone()),
                )),
                Some(DaneOutcome::HostUnusable(failure)) => by_dane(Self::dane_failure(*failure)),
                Some(DaneOutcome::EncryptOnly) => encrypt_only(),
                _ => self.sts_requirement().unwrap_or_else(opportunistic),
            },
            // Opportunistic, and any mode added later, default to opportunistic.
            _ => opportunistic(),
        };
        match self.message {
            MessageTls::Default => {}
            // RFC 8689 §4.2.2: DANE and MTA-STS are not enforced; TLS still tried.
            MessageTls::TlsOptional => {
                if matches!(resolved.basis, Basis::Dane | Basis::MtaSts) {
                    resolved = Resolved {
                        requirement: TlsRequirement::Opportunistic,
                        enforce: true,
                        basis: Basis::TlsRequiredNo,
                    };
                }
            }
            // RFC 8689 §4.2.1: a securely found MX, STARTTLS, a PKIX- or
            // DANE-verified certificate.
            MessageTls::RequireTls => {
                let sts_secure = self.sts.as_ref().is_some_and(|p| {
                    p.mode != StsMode::None && self.server_name().is_some_and(|mx| p.matches_mx(mx))
                });
                let upgraded = match resolved.requirement {
                    _ if !(self.secure_mx || sts_secure) => Self::unusable(
                        EnhancedStatus::REQUIRETLS_REQUIRED,
                        ResultType::ValidationFailure,
                        "MX host not found securely",
                    ),
                    TlsRequirement::Authenticated(
                        auth @ (Authentication::Pkix { .. } | Authentication::Dane(_)),
                    ) => TlsRequirement::Authenticated(auth),
                    TlsRequirement::Unusable(failure) => TlsRequirement::Unusable(failure),
                    _ => TlsRequirement::Authenticated(Authentication::Pkix {
                        names: self
                            .hostname()
                            .map(NamePattern::Exact)
                            .into_iter()
                            .collect(),
                    }),
                };
                resolved = Resolved {
                    requirement: upgraded,
                    enforce: true,
                    basis: Basis::RequireTls,
                };
            }
        }
        resolved
    }

    fn decide(&self, resolved: &Resolved, action: Action, reason: impl Into<String>) -> Decision {
        Decision {
            action,
            source: self.source.clone(),
            mode: self.policy.tls,
            basis: resolved.basis,
            reason: reason.into(),
            report_only: None,
        }
    }

    /// A failure under the resolved requirement: defer (bounce 5.7.30 for a
    /// REQUIRETLS message), or, under a non-enforced policy, `lenient` with the
    /// failure reported.
    fn fail(&self, resolved: &Resolved, failure: Failure, lenient: Action) -> Decision {
        if !resolved.enforce {
            let mut decision = self.decide(resolved, lenient, failure.reason);
            decision.report_only = Some(failure.result_type);
            return decision;
        }
        let reason = failure.reason.clone();
        let action = if self.message == MessageTls::RequireTls {
            Action::Bounce(Failure {
                status: EnhancedStatus::REQUIRETLS_REQUIRED,
                ..failure
            })
        } else {
            Action::Defer(failure)
        };
        self.decide(resolved, action, reason)
    }

    fn failure(
        status: EnhancedStatus,
        result_type: ResultType,
        reason: impl Into<String>,
        close: Close,
    ) -> Failure {
        Failure {
            status,
            result_type,
            reason: reason.into(),
            close,
        }
    }

    /// Before connecting: is this host usable at all?
    pub fn before_connect(&self) -> Decision {
        let resolved = self.resolve();
        match &resolved.requirement {
            TlsRequirement::Unusable(failure) => {
                self.fail(&resolved, failure.clone(), Action::Connect)
            }
            _ => self.decide(&resolved, Action::Connect, ""),
        }
    }

    /// After the plaintext EHLO reply. `starttls_offered`: whether it listed STARTTLS.
    pub fn on_ehlo(&self, starttls_offered: bool) -> Decision {
        let resolved = self.resolve();
        match (&resolved.requirement, starttls_offered) {
            (TlsRequirement::Plaintext, _) => {
                self.decide(&resolved, Action::ContinuePlaintext, "TLS disabled")
            }
            (TlsRequirement::Unusable(failure), _) if resolved.enforce => {
                self.fail(&resolved, failure.clone(), Action::ContinuePlaintext)
            }
            (_, true) => self.decide(&resolved, Action::StartTls, "STARTTLS offered"),
            (TlsRequirement::Opportunistic, false) => {
                self.decide(&resolved, Action::ContinuePlaintext, "STARTTLS not offered")
            }
            (_, false) => self.fail(
                &resolved,
                Self::failure(
                    EnhancedStatus::TLS_NOT_AVAILABLE,
                    ResultType::StarttlsNotSupported,
                    "STARTTLS not offered",
                    Close::Quit,
                ),
                Action::ContinuePlaintext,
            ),
        }
    }

    /// After the reply to STARTTLS. Any 2xx accepts; anything else is a refusal,
    /// which under a TLS-required policy defers with our own 4.7.4 whatever the
    /// code (454, 502, 554, 354 …): a forged 5xx must never become a bounce.
    pub fn on_starttls_reply(&self, code: u16) -> Decision {
        let resolved = self.resolve();
        if (200..300).contains(&code) {
            return self.decide(
                &resolved,
                Action::Handshake,
                format!("STARTTLS accepted ({code})"),
            );
        }
        let reason = format!("STARTTLS refused ({code})");
        match &resolved.requirement {
            TlsRequirement::Plaintext | TlsRequirement::Opportunistic => {
                self.decide(&resolved, Action::ContinuePlaintext, reason)
            }
            _ => self.fail(
                &resolved,
                Self::failure(
                    EnhancedStatus::TLS_NOT_AVAILABLE,
                    ResultType::StarttlsNotSupported,
                    reason,
                    Close::Quit,
                ),
                Action::ContinuePlaintext,
            ),
        }
    }

    /// When bytes arrived after the STARTTLS reply, before the handshake, and the
    /// engine chose to abort rather than discard them (they are never read as a
    /// reply): opportunistic retries on a new plaintext connection; TLS-required
    /// modes defer.
    pub fn on_bytes_after_starttls_reply(&self) -> Decision {
        let resolved = self.resolve();
        let reason = "data after STARTTLS reply";
        match &resolved.requirement {
            TlsRequirement::Plaintext | TlsRequirement::Opportunistic => {
                self.decide(&resolved, Action::RetryPlaintextNewConnection, reason)
            }
            _ => self.fail(
                &resolved,
                Self::failure(
                    EnhancedStatus::SECURITY_TEMPORARY,
                    ResultType::ValidationFailure,
                    reason,
                    Close::Drop,
                ),
                Action::RetryPlaintextNewConnection,
            ),
        }
    }

    fn certificate_failure(check: &CertificateCheck) -> (ResultType, &'static str) {
        match check.failure {
            Some(CertificateFailure::NotTrusted) => {
                (ResultType::CertificateNotTrusted, "certificate not trusted")
            }
            Some(CertificateFailure::Expired) => {
                (ResultType::CertificateExpired, "certificate expired")
            }
            Some(CertificateFailure::HostMismatch) => (
                ResultType::CertificateHostMismatch,
                "certificate name mismatch",
            ),
            Some(CertificateFailure::DaneMismatch) => {
                (ResultType::TlsaInvalid, "no usable TLSA record matched")
            }
            Some(other) => (ResultType::ValidationFailure, other.as_str()),
            None => match check.trust {
                PeerTrust::Anonymous => (ResultType::ValidationFailure, "no certificate"),
                PeerTrust::Untrusted => {
                    (ResultType::CertificateNotTrusted, "certificate not trusted")
                }
                _ => (ResultType::ValidationFailure, "certificate not verified"),
            },
        }
    }

    /// After the TLS handshake.
    pub fn on_handshake(&self, outcome: HandshakeOutcome) -> Decision {
        let resolved = self.resolve();
        let opportunistic = matches!(
            resolved.requirement,
            TlsRequirement::Plaintext | TlsRequirement::Opportunistic
        );
        let handshake_failed = |reason: String, result_type: ResultType| {
            if opportunistic {
                self.decide(&resolved, Action::RetryPlaintextNewConnection, reason)
            } else {
                self.fail(
                    &resolved,
                    Self::failure(
                        EnhancedStatus::CRYPTO_FAILURE,
                        result_type,
                        reason,
                        Close::Drop,
                    ),
                    Action::RetryPlaintextNewConnection,
                )
            }
        };
        match outcome {
            HandshakeOutcome::Failed { certificate } => match certificate {
                Some(failure) => {
                    let (result_type, reason) = Self::certificate_failure(
                        &CertificateCheck::failed(PeerTrust::Untrusted, failure),
                    );
                    handshake_failed(format!("TLS handshake failed: {reason}"), result_type)
                }
                None => {
                    handshake_failed("TLS handshake failed".into(), ResultType::ValidationFailure)
                }
            },
            HandshakeOutcome::Established {
                version,
                certificate,
            } => {
                if version < self.policy.min_tls_version {
                    return handshake_failed(
                        format!(
                            "{version} below the minimum {}",
                            self.policy.min_tls_version
                        ),
                        ResultType::ValidationFailure,
                    );
                }
                let summary = format!("{} TLS connection established", certificate.trust);
                match &resolved.requirement {
                    TlsRequirement::Authenticated(_) if !certificate.is_verified() => {
                        let (result_type, reason) = Self::certificate_failure(&certificate);
                        self.fail(
                            &resolved,
                            Self::failure(
                                EnhancedStatus::CRYPTO_FAILURE,
                                result_type,
                                reason,
                                Close::Quit,
                            ),
                            Action::ContinueTls,
                        )
                    }
                    _ => self.decide(&resolved, Action::ContinueTls, summary),
                }
            }
        }
    }

    /// After the EHLO reply on the new plaintext connection that
    /// [`Action::RetryPlaintextNewConnection`] asked for: STARTTLS is not tried
    /// again. Goes on in plaintext where the policy allows it (what a connection
    /// without STARTTLS would get), else defers as such a connection would.
    pub fn on_plaintext_retry(&self) -> Decision {
        let mut decision = self.on_ehlo(false);
        if decision.action == Action::ContinuePlaintext {
            decision.reason = "retry without TLS after a failed handshake".into();
        }
        decision
    }

    /// After the EHLO reply inside TLS: a REQUIRETLS message needs the server to
    /// advertise REQUIRETLS (RFC 8689 §4.2.1), else it bounces with 5.7.30 (after
    /// the remaining MX hosts).
    pub fn on_tls_ehlo(&self, requiretls_advertised: bool) -> Decision {
        let resolved = self.resolve();
        if self.message == MessageTls::RequireTls && !requiretls_advertised {
            return self.decide(
                &resolved,
                Action::Bounce(Self::failure(
                    EnhancedStatus::REQUIRETLS_REQUIRED,
                    ResultType::ValidationFailure,
                    "REQUIRETLS not advertised",
                    Close::Quit,
                )),
                "REQUIRETLS not advertised",
            );
        }
        self.decide(&resolved, Action::ContinueTls, "")
    }

    /// Runs the steps over the facts of a whole session and returns the first
    /// decision that is not "go on", or the last one (`ContinuePlaintext` /
    /// `ContinueTls`, or the next step the facts do not cover yet).
    pub fn evaluate(&self, facts: &SessionFacts) -> Decision {
        let connect = self.before_connect();
        if connect.action != Action::Connect {
            return connect;
        }
        let ehlo = self.on_ehlo(facts.starttls_offered);
        if ehlo.action != Action::StartTls {
            return ehlo;
        }
        let Some(code) = facts.starttls_reply else {
            return ehlo;
        };
        let reply = self.on_starttls_reply(code);
        if reply.action != Action::Handshake {
            return reply;
        }
        if facts.bytes_after_starttls_reply {
            return self.on_bytes_after_starttls_reply();
        }
        let Some(outcome) = facts.handshake else {
            return reply;
        };
        let handshake = self.on_handshake(outcome);
        if handshake.action != Action::ContinueTls {
            return handshake;
        }
        match facts.requiretls_advertised {
            Some(advertised) => {
                let ehlo = self.on_tls_ehlo(advertised);
                if ehlo.action == Action::ContinueTls && handshake.report_only.is_some() {
                    handshake
                } else {
                    ehlo
                }
            }
            None => handshake,
        }
    }
}
