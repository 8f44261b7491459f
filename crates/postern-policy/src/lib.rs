//! SMTP TLS policy for mail transfer agents: the model and the decisions, as pure
//! logic over plain data (no I/O, no TLS library, no clock reads).
//!
//! # Design
//!
//! - [`modes`]: the shared vocabulary: inbound [`ServerTlsMode`] and
//!   [`ClientCertMode`], outbound [`ClientTlsMode`], [`TlsVersion`], and the
//!   [`CertificateCheck`] a certificate verifier reports.
//! - [`server`]: what an SMTP server advertises and allows in each TLS state, and
//!   whether a client certificate authorises relaying (trusted agents).
//! - [`outbound`]: per-destination settings with overrides ([`lookup`]: exact name,
//!   then `.parent` entries nearest first, then the default), and a
//!   [`ConnectionPolicy`] that turns what a delivery attempt observes (STARTTLS
//!   offered? its reply code, the handshake, the certificate check) into a
//!   [`Decision`]: start TLS, continue, retry in plaintext, defer with a 4.7.x code,
//!   or bounce. Every decision carries an RFC 8460 result type and explains
//!   which rule matched.
//! - [`mta_sts`] (RFC 8461), [`dane`] (RFC 7672), [`requiretls`] (RFC 8689) and
//!   [`tlsrpt`] (RFC 8460): parsers, rules and report models; fetching and DNS are
//!   left to the caller, with time passed in.
//! - [`config`]: the operator's TOML (`[inbound]`, `[outbound]`,
//!   `[outbound.domains."…"]`) and a validation whose errors name the key.
//!
//! All names are normalised once ([`DomainName`]: lower-case A-labels, no trailing
//! dot), so lookups are case- and trailing-dot-insensitive.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "toml")] {
//! use postern_policy::{
//!     Action, CertificateCheck, CertificateFailure, HandshakeOutcome, NextHop, PeerTrust,
//!     PolicyConfig, TlsVersion,
//! };
//!
//! let policy = PolicyConfig::from_toml_str(r#"
//!     [inbound]
//!     tls = "offer"
//!     client_certificates = "ask"
//!
//!     [outbound]
//!     tls = "opportunistic"
//!
//!     [outbound.domains.".example.com"]
//!     tls = "verify"
//! "#)?;
//!
//! // Inbound: STARTTLS is advertised before TLS, never after.
//! assert!(policy.inbound.advertise_starttls(false));
//! assert!(!policy.inbound.advertise_starttls(true));
//!
//! // Outbound: one delivery attempt to a subdomain of example.com.
//! let hop: NextHop = "Mail.Example.com.".parse()?;
//! let mx = "mx1.example.com".parse()?;
//! let attempt = policy.outbound.connection(&hop, Some(&mx));
//! assert_eq!(attempt.before_connect().action, Action::Connect);
//! assert_eq!(attempt.on_ehlo(true).action, Action::StartTls);
//! assert_eq!(attempt.on_starttls_reply(220).action, Action::Handshake);
//! let decision = attempt.on_handshake(HandshakeOutcome::Established {
//!     version: TlsVersion::Tls13,
//!     certificate: CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted),
//! });
//! assert!(matches!(decision.action, Action::Defer(_)));
//! assert_eq!(
//!     decision.to_string(),
//!     "domain .example.com (override): verify → defer 4.7.5 certificate-not-trusted (certificate not trusted)"
//! );
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod config;
pub mod dane;
pub mod fingerprint;
pub mod lookup;
pub mod modes;
pub mod mta_sts;
pub mod name;
pub mod outbound;
pub mod requiretls;
pub mod server;
pub mod tlsrpt;

pub use config::{ConfigError, Policy, PolicyConfig};
pub use dane::{DaneOutcome, DnssecStatus, TlsaLookup, TlsaRecord};
pub use fingerprint::{Fingerprint, FingerprintError};
pub use lookup::{OverrideTable, PolicySource};
pub use modes::{
    CertificateCheck, CertificateFailure, ClientCertMode, ClientTlsMode, PeerTrust, ServerTlsMode,
    TlsVersion,
};
pub use mta_sts::{StsCache, StsMode, StsPolicy, StsRecord};
pub use name::{DomainName, Host, NameError, NextHop, PolicyKey};
pub use outbound::{
    Action, Authentication, Basis, CertificateMatch, Close, ConnectionPolicy, Decision,
    DestinationPolicy, EnhancedStatus, Failure, HandshakeOutcome, NamePattern, OutboundPolicy,
    SessionFacts, TlsRequirement,
};
pub use requiretls::MessageTls;
pub use server::{
    ClientCertificate, CommandVerdict, RelayDecision, ServerPolicy, ServerPolicyError, TrustedAgent,
};
pub use tlsrpt::{ReportUri, ResultType, TlsRptRecord, TlsRptRecordError};
