//! Certificate verifiers that decide a structured [`CertificateCheck`].
//!
//! Every verifier here checks the handshake signatures (`CertificateVerify`)
//! with `rustls::crypto::verify_tls12_signature` / `verify_tls13_signature`,
//! whatever the mode: even "encrypt" proves the peer holds the key of the
//! certificate it sent. None of them accepts everything.

use std::fmt;
use std::sync::Arc;

use postern_policy::{
    CertificateCheck, CertificateFailure, ClientCertMode, ClientCertificate, ClientTlsMode,
    Fingerprint, PeerTrust,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certkey::dns_names;

/// The handshake-signature methods shared by [`ServerCertVerifier`] and
/// [`ClientCertVerifier`] implementations of this module: `CertificateVerify`
/// is always checked with the provider's algorithms, in every mode. The type
/// must have a `provider: Arc<CryptoProvider>` field.
macro_rules! handshake_signatures {
    () => {
        handshake_signatures!(verify_tls12_signature, verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
    // Each trait method calls the rustls function of the same name (a bare
    // name in a method body resolves to the imported function, not the method).
    ($($method:ident),+) => {
        $(
            fn $method(
                &self,
                message: &[u8],
                cert: &CertificateDer<'_>,
                dss: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, Error> {
                $method(
                    message,
                    cert,
                    dss,
                    &self.provider.signature_verification_algorithms,
                )
            }
        )+
    };
}

/// Builds a check value.
pub(crate) const fn check(
    trust: PeerTrust,
    failure: Option<CertificateFailure>,
) -> CertificateCheck {
    CertificateCheck::new(trust, failure)
}

/// The error inside `rustls::Error::InvalidCertificate(CertificateError::Other(..))`
/// with which a verifier refuses a handshake: it carries the full check, so
/// the reason (and the trust reached) survives a failed handshake for logs and
/// TLS-RPT, and for a name mismatch the names looked for and the names the
/// certificate holds. Read the check back with [`refused_check`]; its
/// `Display` is the operator's reading ("certificate name mismatch: expected
/// mx.example.net, certificate names a.example, b.example"), which
/// [`describe_tls_error`] gives for a whole handshake error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedCertificate {
    /// The check that failed.
    pub check: CertificateCheck,
    /// For a name mismatch: the names looked for (the match names, else the
    /// name connected to).
    pub expected: Vec<String>,
    /// For a name mismatch: the DNS names of the certificate (subjectAltName).
    pub presented: Vec<String>,
}

impl RefusedCertificate {
    /// A refusal for `check`, with no names.
    pub fn new(check: CertificateCheck) -> Self {
        Self {
            check,
            expected: Vec::new(),
            presented: Vec::new(),
        }
    }
}

impl fmt::Display for RefusedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.check.failure {
            Some(CertificateFailure::HostMismatch) => {
                f.write_str("certificate name mismatch")?;
                if !self.expected.is_empty() {
                    write!(f, ": expected {}", self.expected.join(" or "))?;
                }
                if self.presented.is_empty() {
                    f.write_str(", certificate names no DNS name")
                } else {
                    write!(f, ", certificate names {}", self.presented.join(", "))
                }
            }
            Some(CertificateFailure::NotTrusted) => {
                f.write_str("certificate not trusted: no chain to a trusted root")
            }
            Some(CertificateFailure::Expired) => f.write_str("certificate expired"),
            Some(CertificateFailure::NotYetValid) => f.write_str("certificate not yet valid"),
            Some(CertificateFailure::PinMismatch) => {
                f.write_str("certificate matches none of the pinned fingerprints")
            }
            Some(CertificateFailure::DaneMismatch) => {
                f.write_str("certificate matches no DANE TLSA record")
            }
            Some(CertificateFailure::Invalid) => {
                f.write_str("certificate invalid (does not parse)")
            }
            Some(other) => write!(f, "certificate refused: {other}"),
            None => write!(
                f,
                "certificate refused: trust reached {}, Verified needed",
                self.check.trust
            ),
        }
    }
}

impl std::error::Error for RefusedCertificate {}

/// The rustls error in `error`, as rustls returns it or wrapped in an
/// `std::io::Error` (tokio-rustls).
fn rustls_error_of<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    error.downcast_ref::<Error>().or_else(|| {
        error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Error>())
    })
}

/// The refusal of a verifier of this crate in `error`, if that is why it happened.
fn refusal_of<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedCertificate> {
    match rustls_error_of(error)? {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            let inner: &(dyn std::error::Error + 'static) = &*other.0;
            inner.downcast_ref::<RefusedCertificate>()
        }
        _ => None,
    }
}

/// The check that made a verifier of this crate refuse the handshake, if
/// that is why `error` happened. Accepts the error as rustls returns it, or
/// as an `std::io::Error` wrapping it (tokio-rustls).
pub fn refused_check(error: &(dyn std::error::Error + 'static)) -> Option<CertificateCheck> {
    refusal_of(error).map(|r| r.check)
}

/// A handshake error (as rustls returns it, or wrapped in an `std::io::Error`
/// by tokio-rustls) in words for logs and delivery reports: a refusal by a
/// verifier of this crate gives its reason ("invalid peer certificate:
/// certificate name mismatch: expected mx.example.net, certificate names
/// a.example, b.example"), rustls' certificate errors get words where their
/// `Display` would show Rust debug output; other errors keep their `Display`.
pub fn describe_tls_error(error: &(dyn std::error::Error + 'static)) -> String {
    let Some(rustls_error) = rustls_error_of(error) else {
        return error.to_string();
    };
    let Error::InvalidCertificate(cert) = rustls_error else {
        return rustls_error.to_string();
    };
    let reason = match cert {
        CertificateError::Other(other) => {
            let inner: &(dyn std::error::Error + 'static) = &*other.0;
            inner
                .downcast_ref::<RefusedCertificate>()
                .map_or_else(|| inner.to_string(), ToString::to_string)
        }
        CertificateError::BadEncoding => "certificate invalid (does not parse)".into(),
        CertificateError::Expired => "certificate expired".into(),
        CertificateError::NotValidYet => "certificate not yet valid".into(),
        CertificateError::Revoked => "certificate revoked".into(),
        CertificateError::UnknownIssuer => {
            "certificate not trusted: issued by an unknown CA".into()
        }
        CertificateError::BadSignature => "certificate signature invalid".into(),
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "certificate signed with an unsupported algorithm".into()
        }
        CertificateError::ExpiredRevocationList => "certificate revocation list expired".into(),
        CertificateError::InvalidOcspResponse => "invalid OCSP response".into(),
        CertificateError::NotValidForName => "certificate not valid for the name".into(),
        CertificateError::InvalidPurpose => {
            "certificate not valid for this use (extended key usage)".into()
        }
        CertificateError::UnhandledCriticalExtension => {
            "certificate has an unsupported critical extension".into()
        }
        CertificateError::UnknownRevocationStatus => "certificate revocation status unknown".into(),
        CertificateError::ApplicationVerificationFailure => {
            "certificate refused by the application".into()
        }
        // The other variants carry context that their Display spells out.
        other => other.to_string(),
    };
    format!("invalid peer certificate: {reason}")
}

/// Whether a check is a full success.
pub(crate) fn accepted(c: &CertificateCheck) -> bool {
    c.trust == PeerTrust::Verified && c.failure.is_none()
}

/// What a [`CertificateHook`] is given.
#[derive(Debug)]
#[non_exhaustive]
pub struct HookInput<'a> {
    /// The server's end-entity certificate.
    pub end_entity: &'a CertificateDer<'a>,
    /// The rest of the chain as sent.
    pub intermediates: &'a [CertificateDer<'a>],
    /// The name the connection was made to (SNI / MX host).
    pub server_name: &'a ServerName<'a>,
    /// The handshake time.
    pub now: UnixTime,
    /// The WebPKI result (chain to the configured roots, name match).
    pub pkix: CertificateCheck,
}

/// Where DANE (RFC 7672) and custom MTA-STS checks plug in.
///
/// The hook receives the chain and the WebPKI outcome and returns the final
/// check. For [`ClientTlsMode::Dane`] and [`ClientTlsMode::DaneOnly`] a hook
/// is required and the connection is refused unless it returns
/// [`PeerTrust::Verified`]. For other modes a hook, if given, replaces the
/// WebPKI outcome (and the mode's enforcement applies to its result).
pub trait CertificateHook: Send + Sync + fmt::Debug {
    /// Decides the check for this chain.
    fn check(&self, input: &HookInput<'_>) -> CertificateCheck;

    /// A key under which hooks that decide alike share one rustls
    /// configuration (and its resumable sessions) in a
    /// [`ClientTlsContext`](crate::ClientTlsContext). `None`, the default,
    /// shares only with the same hook instance. Keys must be unique to the
    /// hook type and everything its decision depends on.
    fn cache_key(&self) -> Option<String> {
        None
    }
}

/// Maps a rustls chain error to a failure reason.
pub(crate) fn failure_of(e: &Error) -> CertificateFailure {
    match e {
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            CertificateFailure::Expired
        }
        Error::InvalidCertificate(CertificateError::NotValidYet)
        | Error::InvalidCertificate(CertificateError::NotValidYetContext { .. }) => {
            CertificateFailure::NotYetValid
        }
        Error::InvalidCertificate(CertificateError::BadEncoding) => CertificateFailure::Invalid,
        _ => CertificateFailure::NotTrusted,
    }
}

/// The error with which a refusal aborts the handshake.
fn error_of(refused: RefusedCertificate) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        refused,
    ))))
}

/// Whether the leaf matches one of `names`. A name starting with a dot
/// (`.example.com`) matches any subdomain, as Postfix's `dot-nexthop`.
pub(crate) fn name_matches(
    parsed: &ParsedCertificate<'_>,
    leaf: &CertificateDer<'_>,
    names: &[String],
) -> bool {
    let mut san_cache: Option<Vec<String>> = None;
    names.iter().any(|name| match name.strip_prefix('.') {
        Some(suffix) => {
            let sans = san_cache.get_or_insert_with(|| {
                X509Certificate::from_der(leaf)
                    .map(|(_, c)| dns_names(&c))
                    .unwrap_or_default()
            });
            let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
            let dotted = format!(".{suffix}");
            sans.iter().any(|san| match san.strip_prefix("*.") {
                // `*.parent` stands for names one label under `parent`.
                Some(parent) => parent == suffix || parent.ends_with(&dotted),
                None => san.ends_with(&dotted),
            })
        }
        None => ServerName::try_from(name.as_str())
            .map(|sn| verify_server_name(parsed, &sn).is_ok())
            .unwrap_or(false),
    })
}

/// What the client (outbound) verifier checks, per mode.
#[derive(Clone)]
pub(crate) struct ServerCheckConfig {
    pub(crate) mode: ClientTlsMode,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) match_names: Vec<String>,
    pub(crate) pins: Vec<Fingerprint>,
    pub(crate) hook: Option<Arc<dyn CertificateHook>>,
    pub(crate) report_only: bool,
}

/// The outbound verifier: a [`ServerCertVerifier`] for every
/// [`ClientTlsMode`], deciding a [`CertificateCheck`].
///
/// | mode | refuses the handshake unless |
/// |---|---|
/// | opportunistic, encrypt | never (the trust reached is recorded) |
/// | verify, mta-sts | chain to the roots and a match name (the MX host) |
/// | secure | chain to the roots and a match name (next-hop names) |
/// | fingerprint | the leaf's SHA-256 matches a pin |
/// | dane, dane-only | the hook returns `Verified` |
///
/// In every mode, the check recorded says how far the chain got: `Untrusted`
/// (no path to a root, expired, ...), `Trusted` (chain good, name not matched)
/// or `Verified`, for logs and TLS-RPT.
pub struct PeerCertVerifier {
    cfg: ServerCheckConfig,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PeerCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCertVerifier")
            .field("mode", &self.cfg.mode)
            .field("match_names", &self.cfg.match_names)
            .field("pins", &self.cfg.pins)
            .field("roots", &self.cfg.roots.len())
            .field("hook", &self.cfg.hook)
            .field("report_only", &self.cfg.report_only)
            .finish_non_exhaustive()
    }
}

impl PeerCertVerifier {
    pub(crate) fn new(cfg: ServerCheckConfig, provider: Arc<CryptoProvider>) -> Self {
        Self { cfg, provider }
    }

    /// Whether this mode refuses a handshake whose check is not `Verified`.
    pub fn enforces(&self) -> bool {
        !self.cfg.report_only
            && !matches!(
                self.cfg.mode,
                ClientTlsMode::Opportunistic | ClientTlsMode::Encrypt | ClientTlsMode::None
            )
    }

    /// The WebPKI part: chain to the configured roots, then the match names
    /// (none configured: the name connected to). RFC 8461 §4.2 states the
    /// check `verify` and MTA-STS need: the certificate is unexpired, chains
    /// to a trusted root, and has a DNS-ID subjectAltName matching the MX host.
    fn pkix(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> CertificateCheck {
        let Ok(parsed) = ParsedCertificate::try_from(end_entity) else {
            return check(PeerTrust::Untrusted, Some(CertificateFailure::Invalid));
        };
        if let Err(e) = verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.cfg.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        ) {
            return check(PeerTrust::Untrusted, Some(failure_of(&e)));
        }
        let matched = if self.cfg.match_names.is_empty() {
            verify_server_name(&parsed, server_name).is_ok()
        } else {
            name_matches(&parsed, end_entity, &self.cfg.match_names)
        };
        if matched {
            check(PeerTrust::Verified, None)
        } else {
            check(PeerTrust::Trusted, Some(CertificateFailure::HostMismatch))
        }
    }

    /// Computes the check for a chain, as the handshake would (without the
    /// signature check, which needs the handshake), e.g. after the handshake
    /// with `peer_certificates()`, which a resumed session carries over.
    pub fn evaluate(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> CertificateCheck {
        let pkix = self.pkix(end_entity, intermediates, server_name, now);
        if let Some(hook) = &self.cfg.hook {
            return hook.check(&HookInput {
                end_entity,
                intermediates,
                server_name,
                now,
                pkix,
            });
        }
        match self.cfg.mode {
            // Postfix `fingerprint` level with `smtp_tls_fingerprint_digest =
            // sha256`: the leaf's digest is compared with each pin; chain and
            // names are not required.
            ClientTlsMode::Fingerprint => {
                if self.cfg.pins.contains(&Fingerprint::of(end_entity)) {
                    check(PeerTrust::Verified, None)
                } else {
                    let trust = match pkix.trust {
                        PeerTrust::Verified => PeerTrust::Trusted,
                        other => other,
                    };
                    check(trust, Some(CertificateFailure::PinMismatch))
                }
            }
            _ => pkix,
        }
    }
}

impl ServerCertVerifier for PeerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let outcome = self.evaluate(end_entity, intermediates, server_name, now);
        tracing::debug!(mode = %self.cfg.mode, trust = %outcome.trust,
            failure = %outcome.failure.map_or("none", CertificateFailure::as_str), "server certificate checked");
        if self.enforces() && !accepted(&outcome) {
            let mut refused = RefusedCertificate::new(outcome);
            if outcome.failure == Some(CertificateFailure::HostMismatch) {
                refused.expected = if self.cfg.match_names.is_empty() {
                    vec![server_name.to_str().into_owned()]
                } else {
                    self.cfg.match_names.clone()
                };
                refused.presented = X509Certificate::from_der(end_entity)
                    .map(|(_, c)| dns_names(&c))
                    .unwrap_or_default();
            }
            return Err(error_of(refused));
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Describes a client's leaf certificate for the server policy: SHA-256
/// fingerprint, subject and issuer DNs (RFC 4514 form, as [`inspect`](crate::inspect)
/// shows them, which is what [`postern_policy::TrustedAgent::Subject`] compares),
/// and `check`. A leaf that does not parse as X.509 gets empty names (it
/// cannot match a subject rule) and keeps its fingerprint.
fn describe(leaf: &CertificateDer<'_>, check: CertificateCheck) -> ClientCertificate {
    let (subject, issuer) = X509Certificate::from_der(leaf)
        .map(|(_, c)| (c.subject().to_string(), c.issuer().to_string()))
        .unwrap_or_default();
    ClientCertificate::new(Fingerprint::of(leaf), subject, issuer, check)
}

/// The inbound verifier for client certificates (`ask` and `require`).
///
/// Both modes request a certificate and complete the handshake whatever the
/// client sends (none, an untrusted one, an expired one): any certificate is
/// accepted at the TLS level (its `CertificateVerify` signature is still
/// checked, so a client must hold the key of what it presents), and whether
/// it chains to the configured roots is recorded. rustls'
/// `WebPkiClientVerifier` would reject an untrusted certificate, hence this
/// verifier.
///
/// The modes differ after the handshake, in the SMTP session:
/// - `ask`: the check is recorded (logs, `Received:` header) and can
///   authorise relaying ([`postern_policy::ServerPolicy::may_relay`]);
/// - `require`: a client without a verified certificate is refused by
///   [`postern_policy::ServerPolicy::client_certificate_verdict`] with
///   `554 5.7.1` (RFC 3207 §4.1).
///
/// Requiring the certificate in the handshake instead would abort it with a
/// TLS alert: rustls sends `certificate_required` (116), which exists only
/// in TLS 1.3 (RFC 8446 §6.2), to TLS 1.2 peers too, and the client would see
/// and log only a handshake failure; a client that falls back to plaintext
/// would then meet `530`. Completing the handshake lets it read and log why
/// it is refused.
///
/// The check is a pure function of the client's chain, so the server reads it
/// after the handshake with [`ClientCertPolicy::client_certificate`] on
/// `peer_certificates()`; it holds for resumed sessions too. The result is the
/// [`ClientCertificate`] that [`postern_policy::ServerPolicy::may_relay`] takes.
pub struct ClientCertPolicy {
    mode: ClientCertMode,
    webpki: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for ClientCertPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertPolicy")
            .field("mode", &self.mode)
            .field("has_roots", &self.webpki.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientCertPolicy {
    /// A policy for `mode` with optional CA roots (required for `require`).
    pub fn new(
        mode: ClientCertMode,
        roots: Option<Arc<RootCertStore>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, crate::ConfigError> {
        let webpki = match roots {
            Some(r) if !r.is_empty() => Some(
                WebPkiClientVerifier::builder_with_provider(r, Arc::clone(&provider)).build()?,
            ),
            _ => None,
        };
        if mode == ClientCertMode::Require && webpki.is_none() {
            return Err(crate::ConfigError::MissingClientRoots);
        }
        Ok(Self {
            mode,
            webpki,
            provider,
        })
    }

    /// The mode.
    pub fn mode(&self) -> ClientCertMode {
        self.mode
    }

    /// Checks a client chain (as `peer_certificates()` returns it) at time `now`
    /// and describes its leaf (fingerprint, subject, issuer, check). `None` when
    /// the client sent no certificate (its check is
    /// [`CertificateCheck::anonymous`]).
    pub fn client_certificate(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        now: UnixTime,
    ) -> Option<ClientCertificate> {
        let (leaf, rest) = chain.and_then(<[_]>::split_first)?;
        Some(describe(leaf, self.check_chain(leaf, rest, now)))
    }

    fn check_chain(
        &self,
        leaf: &CertificateDer<'_>,
        rest: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> CertificateCheck {
        match &self.webpki {
            None => check(PeerTrust::Untrusted, Some(CertificateFailure::NotTrusted)),
            Some(v) => match v.verify_client_cert(leaf, rest, now) {
                // Client certificates carry no name to match: a trusted chain is
                // the whole check.
                Ok(_) => check(PeerTrust::Verified, None),
                Err(e) => check(PeerTrust::Untrusted, Some(failure_of(&e))),
            },
        }
    }
}

impl ClientCertVerifier for ClientCertPolicy {
    fn offer_client_auth(&self) -> bool {
        matches!(self.mode, ClientCertMode::Ask | ClientCertMode::Require)
    }

    fn client_auth_mandatory(&self) -> bool {
        // Never at the TLS level: `require` is enforced in the SMTP session,
        // after the handshake (see the type's documentation).
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.as_ref().map_or(&[], |v| v.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // Record (for the log) and accept; the signature is still checked.
        // Under `require` the session refuses an unverified certificate.
        let seen = self.check_chain(end_entity, intermediates, now);
        tracing::debug!(
            mode = ?self.mode,
            trust = ?seen.trust,
            fingerprint = %Fingerprint::of(end_entity),
            "client certificate"
        );
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn matches(cert_names: &[&str], wanted: &[&str]) -> bool {
        let der = cert(cert_names);
        let parsed = ParsedCertificate::try_from(&der).unwrap();
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        name_matches(&parsed, &der, &wanted)
    }

    #[test]
    fn dot_names_match_subdomains_only() {
        assert!(matches(&["mx.example.org"], &[".example.org"]));
        assert!(matches(&["a.b.example.org"], &[".example.org"]));
        assert!(matches(&["*.example.org"], &[".example.org"]));
        assert!(matches(&["*.mx.example.org"], &[".example.org"]));
        assert!(!matches(&["example.org"], &[".example.org"]));
        assert!(!matches(&["badexample.org"], &[".example.org"]));
        assert!(!matches(&["mx.example.org.evil"], &[".example.org"]));
        assert!(matches(&["MX.Example.ORG"], &[".EXAMPLE.org."]));
    }

    #[test]
    fn exact_names_use_webpki_rules() {
        assert!(matches(&["mx.example.org"], &["mx.example.org"]));
        assert!(matches(&["*.example.org"], &["mx.example.org"]));
        assert!(!matches(&["*.example.org"], &["a.mx.example.org"]));
        assert!(!matches(&["*.example.org"], &["example.org"]));
        assert!(matches(
            &["other.example", "mx.example.org"],
            &["nope.example", "mx.example.org"]
        ));
        assert!(!matches(&["mx.example.org"], &["not a name"]));
    }

    #[test]
    fn refusal_round_trips_through_errors() {
        let c = check(PeerTrust::Trusted, Some(CertificateFailure::HostMismatch));
        let e = error_of(RefusedCertificate::new(c));
        assert_eq!(refused_check(&e), Some(c));
        let io = std::io::Error::other(e);
        assert_eq!(refused_check(&io), Some(c));
        let unrelated = Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(refused_check(&unrelated), None);
        assert!(!accepted(&check(
            PeerTrust::Verified,
            Some(CertificateFailure::DaneMismatch)
        )));
        assert!(accepted(&check(PeerTrust::Verified, None)));
    }
}
