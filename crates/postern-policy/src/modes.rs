//! The shared vocabulary of TLS policy: modes and certificate-check outcomes.
//!
//! `postern-certs` produces [`CertificateCheck`] values; the decision functions of
//! this crate consume them.

use serde::{Deserialize, Serialize};

/// Inbound (server) TLS mode. Seed: "Mode de sécurité TLS du serveur";
/// Postfix: `smtpd_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ServerTlsMode {
    /// STARTTLS is not advertised (Postfix `none`).
    None,
    /// STARTTLS is advertised, plaintext is accepted (Postfix `may`). The default.
    #[default]
    Offer,
    /// STARTTLS is advertised and required before mail commands (Postfix `encrypt`).
    Require,
}

/// Whether the server requests a client certificate. Postfix:
/// `smtpd_tls_ask_ccert` / `smtpd_tls_req_ccert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ClientCertMode {
    /// No certificate is requested. The default.
    #[default]
    None,
    /// A certificate is requested, never required; whether it verified is recorded.
    Ask,
    /// A certificate verified against the configured roots is required
    /// (only valid with [`ServerTlsMode::Require`]).
    Require,
}

/// Outbound (client) TLS mode. Seed: "Mode de sécurité TLS du client";
/// Postfix: `smtp_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ClientTlsMode {
    /// Never use TLS (Postfix `none`).
    None,
    /// STARTTLS when offered, else plaintext (Postfix `may`). The default.
    #[default]
    Opportunistic,
    /// TLS required, certificate not verified (Postfix `encrypt`).
    Encrypt,
    /// TLS required, certificate chain verified and matching the MX host name
    /// (Postfix `verify`).
    Verify,
    /// TLS required, certificate verified and matching the next-hop domain
    /// (Postfix `secure`).
    Secure,
    /// TLS required, certificate matching a SHA-256 pin (Postfix `fingerprint`).
    Fingerprint,
    /// DANE (RFC 7672) when TLSA records exist, else opportunistic (Postfix `dane`).
    Dane,
    /// DANE required (Postfix `dane-only`).
    DaneOnly,
    /// MTA-STS (RFC 8461) policy of the destination domain.
    MtaSts,
}

/// A TLS protocol version. Only TLS 1.2 and 1.3 exist in this stack.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    #[default]
    #[serde(rename = "TLSv1.2")]
    Tls12,
    /// TLS 1.3 (RFC 8446).
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// How far a peer's certificate was trusted, as Postfix's TLS summary line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PeerTrust {
    /// No certificate was presented (or none was looked at).
    Anonymous,
    /// A certificate was presented but its chain is not trusted.
    Untrusted,
    /// The chain is trusted but the name did not match (or was not checked).
    Trusted,
    /// The chain is trusted and the name matched, or a pin / DANE record matched.
    Verified,
}

/// Why a certificate check did not reach [`PeerTrust::Verified`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CertificateFailure {
    /// The chain does not lead to a trust anchor (includes self-signed).
    NotTrusted,
    /// A certificate of the chain has expired.
    Expired,
    /// A certificate of the chain is not yet valid.
    NotYetValid,
    /// The chain is trusted but no name matched.
    HostMismatch,
    /// No SHA-256 pin matched.
    PinMismatch,
    /// No usable DANE TLSA record matched.
    DaneMismatch,
    /// The certificate could not be parsed or is otherwise invalid.
    Invalid,
}

/// The outcome of checking a peer's certificate: the trust reached and, when it
/// fell short of what was checked for, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CertificateCheck {
    /// The trust reached.
    pub trust: PeerTrust,
    /// Why the check fell short, if it did.
    pub failure: Option<CertificateFailure>,
}

impl ServerTlsMode {
    /// The configuration spelling (`none`, `offer`, `require`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Offer => "offer",
            Self::Require => "require",
        }
    }
}

impl ClientCertMode {
    /// The configuration spelling (`none`, `ask`, `require`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Ask => "ask",
            Self::Require => "require",
        }
    }
}

impl ClientTlsMode {
    /// The configuration spelling (`none`, `opportunistic`, `encrypt`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Opportunistic => "opportunistic",
            Self::Encrypt => "encrypt",
            Self::Verify => "verify",
            Self::Secure => "secure",
            Self::Fingerprint => "fingerprint",
            Self::Dane => "dane",
            Self::DaneOnly => "dane-only",
            Self::MtaSts => "mta-sts",
        }
    }

    /// The Postfix `smtp_tls_security_level` value closest to this mode.
    pub const fn postfix_level(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Opportunistic => "may",
            Self::Encrypt => "encrypt",
            Self::Verify => "verify",
            Self::Secure => "secure",
            Self::Fingerprint => "fingerprint",
            Self::Dane => "dane",
            Self::DaneOnly => "dane-only",
            Self::MtaSts => "may (+ MTA-STS policy)",
        }
    }

    /// Whether the mode, by itself, requires TLS whatever the DNS says
    /// (`dane` and `mta-sts` depend on what is published, so they return `false`).
    pub const fn always_requires_tls(self) -> bool {
        matches!(
            self,
            Self::Encrypt | Self::Verify | Self::Secure | Self::Fingerprint | Self::DaneOnly
        )
    }
}

impl TlsVersion {
    /// The conventional spelling (`TLSv1.2`, `TLSv1.3`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }
}

impl PeerTrust {
    /// Postfix's word for this level, as in "Verified TLS connection established".
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "Anonymous",
            Self::Untrusted => "Untrusted",
            Self::Trusted => "Trusted",
            Self::Verified => "Verified",
        }
    }
}

impl CertificateFailure {
    /// A short lowercase description.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotTrusted => "certificate not trusted",
            Self::Expired => "certificate expired",
            Self::NotYetValid => "certificate not yet valid",
            Self::HostMismatch => "certificate name mismatch",
            Self::PinMismatch => "no pinned fingerprint matched",
            Self::DaneMismatch => "no usable TLSA record matched",
            Self::Invalid => "invalid certificate",
        }
    }
}

impl CertificateCheck {
    /// A check that reached `trust`, falling short for `failure` if any.
    pub const fn new(trust: PeerTrust, failure: Option<CertificateFailure>) -> Self {
        Self { trust, failure }
    }

    /// A check that reached [`PeerTrust::Verified`].
    pub const fn verified() -> Self {
        Self {
            trust: PeerTrust::Verified,
            failure: None,
        }
    }

    /// A check that stopped at `trust` because of `failure`.
    pub const fn failed(trust: PeerTrust, failure: CertificateFailure) -> Self {
        Self {
            trust,
            failure: Some(failure),
        }
    }

    /// No certificate presented.
    pub const fn anonymous() -> Self {
        Self {
            trust: PeerTrust::Anonymous,
            failure: None,
        }
    }

    /// Whether the peer was verified (chain and name, pin, or DANE record).
    pub const fn is_verified(&self) -> bool {
        matches!(self.trust, PeerTrust::Verified)
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(
    ServerTlsMode,
    ClientCertMode,
    ClientTlsMode,
    TlsVersion,
    PeerTrust,
    CertificateFailure
);
