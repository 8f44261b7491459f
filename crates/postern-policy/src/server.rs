//! Inbound (server) TLS policy: what to advertise, which commands to allow in
//! each TLS state, client certificates, and relaying for trusted agents.

use std::fmt;

use crate::fingerprint::Fingerprint;
use crate::modes::{CertificateCheck, ClientCertMode, ServerTlsMode, TlsVersion};
use crate::outbound::EnhancedStatus;

/// A rule that authorises relaying for a client presenting a verified certificate
/// (the seed's "trusted agents"; Postfix `relay_clientcerts`,
/// `check_ccert_access`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrustedAgent {
    /// The SHA-256 fingerprint of the client's certificate.
    Fingerprint(Fingerprint),
    /// The issuer and subject distinguished names, compared exactly as the
    /// certificate library renders them (e.g. `CN=mx1.corp.example, O=Corp`).
    Subject {
        /// The issuer DN.
        issuer: String,
        /// The subject DN.
        subject: String,
    },
}

impl fmt::Display for TrustedAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fingerprint(fp) => write!(f, "fingerprint {fp}"),
            Self::Subject { issuer, subject } => {
                write!(f, "subject {subject:?} issued by {issuer:?}")
            }
        }
    }
}

/// What the TLS layer learned about a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCertificate {
    /// SHA-256 of the DER certificate.
    pub fingerprint: Fingerprint,
    /// The subject DN.
    pub subject: String,
    /// The issuer DN.
    pub issuer: String,
    /// The result of verifying it against the configured client CA roots.
    pub check: CertificateCheck,
}

impl ClientCertificate {
    /// A certificate description.
    pub fn new(
        fingerprint: Fingerprint,
        subject: impl Into<String>,
        issuer: impl Into<String>,
        check: CertificateCheck,
    ) -> Self {
        Self {
            fingerprint,
            subject: subject.into(),
            issuer: issuer.into(),
            check,
        }
    }
}

/// Why server settings were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerPolicyError {
    /// `require` for client certificates needs TLS mode `require` (as Postfix's
    /// `smtpd_tls_req_ccert`).
    #[error("client certificates can only be required when tls = \"require\"")]
    ClientCertRequiresTls,
    /// Trusted agents are configured but client certificates are never requested.
    #[error("trusted agents need client_certificates = \"ask\" or \"require\"")]
    TrustedAgentsWithoutCertificates,
}

/// The inbound TLS policy.
///
/// Default: offer TLS, no client certificate, minimum TLS 1.2, no trusted agents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerPolicy {
    /// The TLS mode.
    pub tls: ServerTlsMode,
    /// Whether client certificates are requested.
    pub client_certificates: ClientCertMode,
    /// The lowest TLS version accepted.
    pub min_tls_version: TlsVersion,
    /// Certificates that authorise relaying.
    pub trusted_agents: Vec<TrustedAgent>,
}

/// The answer to a command in the current TLS state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandVerdict {
    /// Process the command.
    Allow,
    /// Answer with this reply and do not process the command.
    Reject {
        /// The reply code.
        code: u16,
        /// The enhanced status code (RFC 3463, e.g. `5.7.0`).
        status: EnhancedStatus,
        /// The reply text.
        text: &'static str,
    },
}

/// Whether a client may relay, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayDecision {
    /// Whether relaying is authorised by the client certificate.
    pub allowed: bool,
    /// Why, in a few words.
    pub reason: String,
}

impl fmt::Display for RelayDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed {
            "relay allowed"
        } else {
            "relay not allowed"
        };
        write!(f, "{verdict} ({})", self.reason)
    }
}

/// Commands a `require` server accepts before TLS (RFC 3207 §4, Postfix
/// `smtpd_tls_security_level = encrypt`).
const ALLOWED_BEFORE_TLS: [&str; 6] = ["EHLO", "HELO", "STARTTLS", "NOOP", "QUIT", "HELP"];

impl ServerPolicy {
    /// Validated settings.
    pub fn new(
        tls: ServerTlsMode,
        client_certificates: ClientCertMode,
        min_tls_version: TlsVersion,
        trusted_agents: Vec<TrustedAgent>,
    ) -> Result<Self, ServerPolicyError> {
        let policy = Self {
            tls,
            client_certificates,
            min_tls_version,
            trusted_agents,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Checks the combination of settings.
    pub fn validate(&self) -> Result<(), ServerPolicyError> {
        if self.client_certificates == ClientCertMode::Require && self.tls != ServerTlsMode::Require
        {
            return Err(ServerPolicyError::ClientCertRequiresTls);
        }
        if !self.trusted_agents.is_empty() && self.client_certificates == ClientCertMode::None {
            return Err(ServerPolicyError::TrustedAgentsWithoutCertificates);
        }
        Ok(())
    }

    /// Whether to list STARTTLS in the EHLO reply: when TLS is enabled and not
    /// yet active (RFC 3207 §4.2: never again once TLS is up).
    pub fn advertise_starttls(&self, tls_active: bool) -> bool {
        !tls_active && self.tls != ServerTlsMode::None
    }

    /// Whether to accept STARTTLS now (`false` → `502`/`554` by the engine).
    pub fn accept_starttls(&self, tls_active: bool) -> bool {
        self.advertise_starttls(tls_active)
    }

    /// Whether to request a client certificate in the handshake.
    pub fn request_client_certificate(&self) -> bool {
        self.client_certificates != ClientCertMode::None
    }

    /// Whether command `verb` (case-insensitive) may run. Under `require`, before
    /// TLS only EHLO, HELO, STARTTLS, NOOP, QUIT and HELP run; the rest get
    /// `530 5.7.0 Must issue a STARTTLS command first`.
    pub fn command_allowed(&self, tls_active: bool, verb: &str) -> CommandVerdict {
        if tls_active
            || self.tls != ServerTlsMode::Require
            || ALLOWED_BEFORE_TLS
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(verb))
        {
            CommandVerdict::Allow
        } else {
            CommandVerdict::Reject {
                code: 530,
                status: EnhancedStatus::SECURITY_PERMANENT,
                text: "Must issue a STARTTLS command first",
            }
        }
    }

    /// After the handshake: under client-certificate `require`, a client without
    /// a verified certificate gets `554 5.7.1` on every command but QUIT
    /// (RFC 3207 §4.1).
    pub fn client_certificate_verdict(&self, check: &CertificateCheck) -> CommandVerdict {
        if self.client_certificates == ClientCertMode::Require && !check.is_verified() {
            CommandVerdict::Reject {
                code: 554,
                status: EnhancedStatus::DELIVERY_NOT_AUTHORIZED,
                text: "Client certificate required",
            }
        } else {
            CommandVerdict::Allow
        }
    }

    /// Whether the client may relay on the strength of its certificate: it must
    /// be verified and match a trusted agent.
    pub fn may_relay(&self, certificate: Option<&ClientCertificate>) -> RelayDecision {
        let deny = |reason: &str| RelayDecision {
            allowed: false,
            reason: reason.to_owned(),
        };
        let Some(cert) = certificate else {
            return deny("no client certificate");
        };
        if !cert.check.is_verified() {
            return deny("client certificate not verified");
        }
        let matched = self.trusted_agents.iter().find(|agent| match agent {
            TrustedAgent::Fingerprint(fp) => *fp == cert.fingerprint,
            TrustedAgent::Subject { issuer, subject } => {
                *issuer == cert.issuer && *subject == cert.subject
            }
        });
        match matched {
            Some(agent) => RelayDecision {
                allowed: true,
                reason: format!("trusted agent: {agent}"),
            },
            None => deny("client certificate matches no trusted agent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::{CertificateFailure, PeerTrust};

    fn policy(tls: ServerTlsMode) -> ServerPolicy {
        ServerPolicy {
            tls,
            ..ServerPolicy::default()
        }
    }

    #[test]
    fn advertise_per_mode_and_state() {
        assert!(!policy(ServerTlsMode::None).advertise_starttls(false));
        assert!(policy(ServerTlsMode::Offer).advertise_starttls(false));
        assert!(policy(ServerTlsMode::Require).advertise_starttls(false));
        for mode in [
            ServerTlsMode::None,
            ServerTlsMode::Offer,
            ServerTlsMode::Require,
        ] {
            assert!(!policy(mode).advertise_starttls(true), "{mode} after TLS");
        }
    }

    #[test]
    fn commands_before_tls() {
        let reject = CommandVerdict::Reject {
            code: 530,
            status: EnhancedStatus::SECURITY_PERMANENT,
            text: "Must issue a STARTTLS command first",
        };
        let require = policy(ServerTlsMode::Require);
        for verb in ["EHLO", "helo", "StartTLS", "NOOP", "QUIT", "HELP"] {
            assert_eq!(
                require.command_allowed(false, verb),
                CommandVerdict::Allow,
                "{verb}"
            );
        }
        for verb in [
            "MAIL", "RCPT", "DATA", "RSET", "VRFY", "AUTH", "BDAT", "XYZZY",
        ] {
            assert_eq!(require.command_allowed(false, verb), reject, "{verb}");
            assert_eq!(
                require.command_allowed(true, verb),
                CommandVerdict::Allow,
                "{verb}"
            );
        }
        for mode in [ServerTlsMode::None, ServerTlsMode::Offer] {
            assert_eq!(
                policy(mode).command_allowed(false, "MAIL"),
                CommandVerdict::Allow
            );
        }
    }

    #[test]
    fn client_cert_require_needs_tls_require() {
        for tls in [ServerTlsMode::None, ServerTlsMode::Offer] {
            assert_eq!(
                ServerPolicy::new(tls, ClientCertMode::Require, TlsVersion::Tls12, vec![]),
                Err(ServerPolicyError::ClientCertRequiresTls)
            );
        }
        assert!(
            ServerPolicy::new(
                ServerTlsMode::Require,
                ClientCertMode::Require,
                TlsVersion::Tls12,
                vec![]
            )
            .is_ok()
        );
        assert!(
            ServerPolicy::new(
                ServerTlsMode::Offer,
                ClientCertMode::Ask,
                TlsVersion::Tls12,
                vec![]
            )
            .is_ok()
        );
    }

    #[test]
    fn client_certificate_verdicts() {
        let mut p = policy(ServerTlsMode::Require);
        let unverified =
            CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted);
        assert_eq!(
            p.client_certificate_verdict(&unverified),
            CommandVerdict::Allow
        );
        p.client_certificates = ClientCertMode::Ask;
        assert_eq!(
            p.client_certificate_verdict(&unverified),
            CommandVerdict::Allow
        );
        p.client_certificates = ClientCertMode::Require;
        assert_eq!(
            p.client_certificate_verdict(&unverified),
            CommandVerdict::Reject {
                code: 554,
                status: EnhancedStatus::DELIVERY_NOT_AUTHORIZED,
                text: "Client certificate required",
            }
        );
        assert!(matches!(
            p.client_certificate_verdict(&CertificateCheck::anonymous()),
            CommandVerdict::Reject { code: 554, .. }
        ));
        assert_eq!(
            p.client_certificate_verdict(&CertificateCheck::verified()),
            CommandVerdict::Allow
        );
    }

    #[test]
    fn trusted_agents() {
        let fp = Fingerprint([7; 32]);
        let p = ServerPolicy {
            tls: ServerTlsMode::Require,
            client_certificates: ClientCertMode::Require,
            trusted_agents: vec![
                TrustedAgent::Fingerprint(fp),
                TrustedAgent::Subject {
                    issuer: "CN=Corp CA".into(),
                    subject: "CN=mx2.corp.example".into(),
                },
            ],
            ..ServerPolicy::default()
        };
        let cert =
            |fp, subject: &str, check| ClientCertificate::new(fp, subject, "CN=Corp CA", check);
        let ok = CertificateCheck::verified();
        assert!(p.may_relay(Some(&cert(fp, "CN=x", ok))).allowed);
        assert!(
            p.may_relay(Some(&cert(Fingerprint([1; 32]), "CN=mx2.corp.example", ok)))
                .allowed
        );
        assert!(
            !p.may_relay(Some(&cert(Fingerprint([1; 32]), "CN=mx3.corp.example", ok)))
                .allowed
        );
        let untrusted =
            CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted);
        let denied = p.may_relay(Some(&cert(fp, "CN=x", untrusted)));
        assert!(!denied.allowed);
        assert_eq!(
            denied.to_string(),
            "relay not allowed (client certificate not verified)"
        );
        assert!(!p.may_relay(None).allowed);
        assert_eq!(
            ServerPolicy {
                client_certificates: ClientCertMode::None,
                ..p
            }
            .validate(),
            Err(ServerPolicyError::TrustedAgentsWithoutCertificates)
        );
    }
}
