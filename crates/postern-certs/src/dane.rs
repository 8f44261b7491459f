//! DANE authentication of a server's certificate chain by TLSA records
//! (RFC 7672 §3, RFC 7671 §5 and §9, RFC 6698 §2.1).
//!
//! [`DaneHook`] documents the rules.

use std::fmt;
use std::sync::Arc;

use postern_policy::dane::{CertificateUsage, MatchingType, Selector, TlsaRecord};
use postern_policy::{CertificateCheck, CertificateFailure, PeerTrust};
use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, Der, ServerName, TrustAnchor, UnixTime};
use rustls::server::ParsedCertificate;
use sha2::{Digest, Sha256, Sha512};
use x509_parser::asn1_rs::Any;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::verify::{CertificateHook, HookInput, check, failure_of, name_matches};

/// What authenticated a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DaneMatch {
    /// The record that matched.
    pub record: TlsaRecord,
    /// Position in the chain as sent of the certificate the record matched
    /// (0: the server's own certificate, for DANE-EE(3)); `None` when the
    /// trust anchor came from the record itself (a `2 0 0` certificate or a
    /// `2 1 0` public key).
    pub depth: Option<usize>,
}

/// Why a chain was not authenticated by the TLSA records, from the least to
/// the most progress made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DaneError {
    /// No usable DANE-TA(2) or DANE-EE(3) record was given.
    #[error("no usable tlsa records")]
    NoUsableRecords,
    /// The server's certificate could not be parsed.
    #[error("invalid server certificate")]
    InvalidCertificate,
    /// No record matched the server's certificate, nor a trust anchor in its chain.
    #[error("no tlsa record matched the certificate chain")]
    NoMatch,
    /// A DANE-TA(2) record matched a trust anchor, but the server's certificate
    /// does not validly chain to it (signature, validity dates, constraints).
    #[error("certificate does not chain to the tlsa trust anchor: {0}")]
    Chain(CertificateFailure),
    /// The chain validated up to a DANE-TA(2) trust anchor, but no name of the
    /// server's certificate is a reference identifier.
    #[error("certificate names do not match the tlsa base domain")]
    NameMismatch,
}

impl DaneError {
    /// The certificate check this failure gives, for logs and TLS-RPT:
    /// `Untrusted` with `DaneMismatch` (RFC 8460 `tlsa-invalid`) when nothing
    /// matched; with the chain's failure (`certificate-expired`, ...) when a
    /// trust anchor matched but the path did not validate; `Trusted` with
    /// `HostMismatch` (`certificate-host-mismatch`) when only the name failed.
    pub fn check(&self) -> CertificateCheck {
        match self {
            Self::NoUsableRecords | Self::NoMatch => {
                check(PeerTrust::Untrusted, Some(CertificateFailure::DaneMismatch))
            }
            Self::InvalidCertificate => {
                check(PeerTrust::Untrusted, Some(CertificateFailure::Invalid))
            }
            Self::Chain(failure) => check(PeerTrust::Untrusted, Some(*failure)),
            Self::NameMismatch => check(PeerTrust::Trusted, Some(CertificateFailure::HostMismatch)),
        }
    }

    /// How far the attempt got: a higher rank is the more useful report.
    fn rank(&self) -> u8 {
        match self {
            Self::NoUsableRecords => 0,
            Self::InvalidCertificate => 1,
            Self::NoMatch => 2,
            Self::Chain(_) => 3,
            Self::NameMismatch => 4,
        }
    }
}

/// Digest strength for RFC 7671 §9 digest agility; 0 for `Full(0)`, which
/// agility never discards.
fn strength(matching_type: MatchingType) -> u8 {
    match matching_type {
        MatchingType::Sha256 => 1,
        MatchingType::Sha512 => 2,
        _ => 0,
    }
}

/// The records a client uses: the usable ones (RFC 7672 §3.1), then digest
/// agility (RFC 7671 §9).
///
/// RFC 7671 §9: "Algorithm agility is to be applied after first discarding
/// any unusable or malformed records (unsupported digest algorithm, or
/// incorrect digest length). For each usage and selector, the client SHOULD
/// process only any usable records with a matching type of Full(0) and the
/// usable records whose digest algorithm is considered by the client to be
/// the strongest among usable records with the given usage and selector."
pub fn usable_records(records: impl IntoIterator<Item = TlsaRecord>) -> Vec<TlsaRecord> {
    let usable: Vec<TlsaRecord> = records.into_iter().filter(TlsaRecord::is_usable).collect();
    let strongest = |usage: CertificateUsage, selector: Selector| {
        usable
            .iter()
            .filter(|r| r.usage == usage && r.selector == selector)
            .map(|r| strength(r.matching_type))
            .max()
            .unwrap_or(0)
    };
    let mut kept: Vec<TlsaRecord> = Vec::with_capacity(usable.len());
    for r in &usable {
        let keep = r.matching_type == MatchingType::Full
            || strength(r.matching_type) == strongest(r.usage, r.selector);
        if keep && !kept.contains(r) {
            kept.push(r.clone());
        }
    }
    kept
}

/// A certificate as sent, with its SubjectPublicKeyInfo when it parses.
struct Presented<'a> {
    der: &'a [u8],
    spki: Option<&'a [u8]>,
}

impl<'a> Presented<'a> {
    fn new(der: &'a CertificateDer<'a>) -> Self {
        let der: &'a [u8] = der.as_ref();
        let spki = X509Certificate::from_der(der)
            .ok()
            .map(|(_, cert)| cert.tbs_certificate.subject_pki.raw);
        Self { der, spki }
    }

    /// The content a selector designates (RFC 6698 §2.1.2): the full
    /// certificate DER, or the DER SubjectPublicKeyInfo.
    fn selected(&self, selector: Selector) -> Option<&'a [u8]> {
        match selector {
            Selector::FullCertificate => Some(self.der),
            Selector::SubjectPublicKeyInfo => self.spki,
            _ => None,
        }
    }

    fn matches(&self, record: &TlsaRecord) -> bool {
        self.selected(record.selector)
            .is_some_and(|content| association_matches(record, content))
    }
}

/// RFC 6698 §2.1.3: the association data is the selected content itself
/// (Full), or its SHA2-256 / SHA2-512 digest.
fn association_matches(record: &TlsaRecord, content: &[u8]) -> bool {
    match record.matching_type {
        MatchingType::Full => content == record.data.as_slice(),
        MatchingType::Sha256 => Sha256::digest(content).as_slice() == record.data.as_slice(),
        MatchingType::Sha512 => Sha512::digest(content).as_slice() == record.data.as_slice(),
        _ => false,
    }
}

/// The association data of a TLSA record for `cert` (to publish, or to
/// compare with what is published): `None` when a parameter is unknown or,
/// for selector SPKI(1), the certificate does not parse.
pub fn tlsa_record(
    cert: &CertificateDer<'_>,
    usage: CertificateUsage,
    selector: Selector,
    matching_type: MatchingType,
) -> Option<TlsaRecord> {
    let presented = Presented::new(cert);
    let content = presented.selected(selector)?;
    let data = match matching_type {
        MatchingType::Full => content.to_vec(),
        MatchingType::Sha256 => Sha256::digest(content).to_vec(),
        MatchingType::Sha512 => Sha512::digest(content).to_vec(),
        _ => return None,
    };
    Some(TlsaRecord {
        usage,
        selector,
        matching_type,
        data,
    })
}

/// The contents of a DER SEQUENCE (the form webpki's trust anchors hold
/// names and keys in), if `der` is exactly one SEQUENCE.
fn sequence_contents(der: &[u8]) -> Option<Vec<u8>> {
    match Any::from_der(der) {
        Ok((rest, any)) if rest.is_empty() && any.header.tag().0 == 0x10 => Some(any.data.to_vec()),
        _ => None,
    }
}

/// A trust anchor made of a bare public key (the DER SubjectPublicKeyInfo of
/// a `2 1 0` record), named as the issuer of `topmost` so that webpki checks
/// `topmost`'s signature with that key.
fn bare_key_anchor(
    record: &TlsaRecord,
    topmost: &CertificateDer<'_>,
) -> Option<TrustAnchor<'static>> {
    let (_, cert) = X509Certificate::from_der(topmost.as_ref()).ok()?;
    Some(TrustAnchor {
        subject: Der::from(sequence_contents(cert.issuer().as_raw())?),
        subject_public_key_info: Der::from(sequence_contents(&record.data)?),
        name_constraints: None,
    })
}

/// Authenticates a server's chain by DANE TLSA records.
///
/// It is a [`CertificateHook`]: give it to
/// [`ClientTlsSpec::hook`](crate::ClientTlsSpec::hook) under
/// [`ClientTlsMode::Dane`](postern_policy::ClientTlsMode::Dane) or `DaneOnly`,
/// and the handshake is refused unless a usable record matches. The TLSA
/// lookup (with DNSSEC) and the choice of outcome are done elsewhere
/// (`postern_policy::dane`); this type only matches certificates.
///
/// - **DANE-EE(3)**: the server's own certificate (selector 0) or its
///   SubjectPublicKeyInfo (selector 1) matches. No name check and no expiry
///   check (RFC 7671 §5.1).
/// - **DANE-TA(2)**: a certificate of the chain the server sent (position 1
///   or higher) matches, and is then the only trust anchor of a full path
///   validation of the server's certificate (signatures, validity dates,
///   constraints; webpki), followed by a name check against the reference
///   identifiers (the TLSA base domain, i.e. the MX host, and the next-hop
///   domain). A record that merely matches some later certificate is not
///   enough: the server's certificate must chain to it.
/// - **PKIX-TA(0) / PKIX-EE(1)**, unknown parameters, wrong digest lengths:
///   unusable, never matched (RFC 7672 §3.1.3).
/// - **Digest agility** (RFC 7671 §9): for each usage and selector, only the
///   strongest digest present (SHA2-512 over SHA2-256) and the `Full(0)`
///   records are used.
///
/// ```
/// use postern_certs::{DaneHook, tlsa_record};
/// use postern_policy::dane::{CertificateUsage, MatchingType, Selector};
/// use rustls::pki_types::UnixTime;
///
/// let key = rcgen::KeyPair::generate().unwrap();
/// let cert = rcgen::CertificateParams::new(vec!["mx.example.org".to_owned()])
///     .unwrap()
///     .self_signed(&key)
///     .unwrap();
/// // The recommended "3 1 1" record (RFC 7671 §5.1) for this certificate's key.
/// let record = tlsa_record(
///     cert.der(),
///     CertificateUsage::DaneEe,
///     Selector::SubjectPublicKeyInfo,
///     MatchingType::Sha256,
/// )
/// .unwrap();
/// assert_eq!(record.to_string().len(), "3 1 1 ".len() + 64);
/// let hook = DaneHook::new([record.clone()], ["mx.example.org"]);
/// let matched = hook.authenticate(cert.der(), &[], UnixTime::now()).unwrap();
/// assert_eq!((matched.record, matched.depth), (record, Some(0)));
///
/// // Another key: no match.
/// let other = rcgen::KeyPair::generate().unwrap();
/// let other = rcgen::CertificateParams::new(vec!["mx.example.org".to_owned()])
///     .unwrap()
///     .self_signed(&other)
///     .unwrap();
/// assert!(hook.authenticate(other.der(), &[], UnixTime::now()).is_err());
/// ```
///
/// As a [`CertificateHook`], it decides the connection's
/// [`CertificateCheck`]: `Verified` when a record matches, otherwise the
/// failure of [`DaneError::check`]. When no reference identifiers are given,
/// the name connected to (the SNI, i.e. the TLSA base domain, RFC 7672 §8.1)
/// is the only one.
pub struct DaneHook {
    records: Vec<TlsaRecord>,
    reference_names: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for DaneHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaneHook")
            .field(
                "records",
                &self
                    .records
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .field("reference_names", &self.reference_names)
            .finish_non_exhaustive()
    }
}

impl DaneHook {
    /// A hook for these TLSA records (the unusable ones and those that digest
    /// agility discards are dropped: see [`usable_records`]) and reference
    /// identifiers for DANE-TA(2) name checks.
    ///
    /// RFC 7672 §3.2.2 and RFC 7671 §10.2: "The primary server name used for
    /// this comparison MUST be the TLSA base domain; however, additional
    /// acceptable names may be specified by protocol-specific DANE standards.
    /// For example, with SMTP, both the destination domain name and the MX
    /// hostname are acceptable names" — Postfix's `nexthop, hostname`. A name
    /// starting with a dot (`.example.com`) matches any subdomain.
    pub fn new<N: Into<String>>(
        records: impl IntoIterator<Item = TlsaRecord>,
        reference_names: impl IntoIterator<Item = N>,
    ) -> Self {
        Self {
            records: usable_records(records),
            reference_names: reference_names
                .into_iter()
                .map(|n| n.into().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            provider: crate::provider(),
        }
    }

    /// Uses `provider`'s signature algorithms for DANE-TA(2) path validation
    /// (default: aws-lc-rs).
    #[must_use]
    pub fn with_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// The records in use (usable, after digest agility).
    pub fn records(&self) -> &[TlsaRecord] {
        &self.records
    }

    /// The reference identifiers for DANE-TA(2) name checks.
    pub fn reference_names(&self) -> &[String] {
        &self.reference_names
    }

    /// Authenticates the chain as sent (`end_entity`, then `intermediates`)
    /// at `now`, against the records and reference identifiers.
    pub fn authenticate(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<DaneMatch, DaneError> {
        self.authenticate_as(end_entity, intermediates, &self.reference_names, now)
    }

    fn authenticate_as(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        names: &[String],
        now: UnixTime,
    ) -> Result<DaneMatch, DaneError> {
        if self.records.is_empty() {
            return Err(DaneError::NoUsableRecords);
        }
        let leaf = Presented::new(end_entity);
        // RFC 7671 §5.1: "Authentication via certificate usage DANE-EE(3) TLSA
        // records involves simply checking that the server's leaf certificate
        // matches the TLSA record. [...] The server MUST be considered
        // authenticated even if none of the names in the certificate match the
        // client's reference identity for the server." And: "with
        // DANE-EE(3), the expiration date of the server certificate MUST be
        // ignored." Hence no name, date or chain check here.
        if let Some(record) = self
            .records
            .iter()
            .find(|r| r.usage == CertificateUsage::DaneEe && leaf.matches(r))
        {
            return Ok(DaneMatch {
                record: record.clone(),
                depth: Some(0),
            });
        }
        let mut best = DaneError::NoMatch;
        let ta_records = self
            .records
            .iter()
            .filter(|r| r.usage == CertificateUsage::DaneTa);
        let mut parsed_leaf = None;
        for record in ta_records {
            let anchors = self.trust_anchors(record, end_entity, intermediates);
            if anchors.is_empty() {
                continue;
            }
            let parsed = match &parsed_leaf {
                Some(p) => p,
                None => match ParsedCertificate::try_from(end_entity) {
                    Ok(p) => parsed_leaf.insert(p),
                    Err(_) => return Err(DaneError::InvalidCertificate),
                },
            };
            for (roots, depth) in anchors {
                match self.validate(parsed, end_entity, intermediates, &roots, names, now) {
                    Ok(()) => {
                        return Ok(DaneMatch {
                            record: record.clone(),
                            depth,
                        });
                    }
                    Err(e) if e.rank() > best.rank() => best = e,
                    Err(_) => {}
                }
            }
        }
        Err(best)
    }

    /// The trust anchors a DANE-TA(2) record designates, each alone in a root
    /// store, with the chain position it was found at.
    fn trust_anchors(
        &self,
        record: &TlsaRecord,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Vec<(RootCertStore, Option<usize>)> {
        let mut anchors = Vec::new();
        // RFC 7672 §3.2.1 (quoting the server's duty): "SMTP servers that rely
        // on certificate usage DANE-TA(2) TLSA records for TLS authentication
        // MUST include the TA certificate as part of the certificate chain
        // presented in the TLS handshake server certificate message even when
        // it is a self-signed root certificate." The TA is looked for among
        // the certificates after the server's own (position 1 and up): a TA
        // is an issuer, never the leaf itself.
        for (i, cert) in intermediates.iter().enumerate() {
            if Presented::new(cert).matches(record) {
                let mut roots = RootCertStore::empty();
                if roots.add(cert.clone().into_owned()).is_ok() {
                    anchors.push((roots, Some(i + 1)));
                }
            }
        }
        match (record.selector, record.matching_type) {
            // RFC 7671 §5.2.2: "Only when the server TLSA record includes a
            // "DANE-TA(2) Cert(0) Full(0)" TLSA record containing a full TA
            // certificate is the TA certificate optional in the server's TLS
            // certificate message. This is also the only type of DANE-TA(2)
            // record for which the client MUST be able to verify the server's
            // certificate chain even if the TA certificate appears only in DNS".
            (Selector::FullCertificate, MatchingType::Full) if anchors.is_empty() => {
                let mut roots = RootCertStore::empty();
                if roots.add(CertificateDer::from(record.data.clone())).is_ok() {
                    anchors.push((roots, None));
                }
            }
            // RFC 7671 §5.2.3: "If none of the server's certificate chain
            // elements match a public key specified in a TLSA record, and at
            // least one "DANE-TA(2) SPKI(1) Full(0)" TLSA record is available,
            // it is RECOMMENDED that clients check to see whether or not the
            // topmost certificate in the chain is signed by the provided
            // public key and has not expired, and in that case consider the
            // server authenticated, provided the rest of the chain passes
            // validation, including leaf certificate name checks." The bare
            // key becomes an anchor named as the topmost certificate's issuer.
            (Selector::SubjectPublicKeyInfo, MatchingType::Full) if anchors.is_empty() => {
                let topmost = intermediates.last().unwrap_or(end_entity);
                if let Some(anchor) = bare_key_anchor(record, topmost) {
                    let mut roots = RootCertStore::empty();
                    roots.roots.push(anchor);
                    anchors.push((roots, None));
                }
            }
            _ => {}
        }
        anchors
    }

    /// RFC 6698 §2.1.1, usage 2: "The target certificate MUST pass PKIX
    /// certification path validation, with any certificate matching the TLSA
    /// record considered to be a trust anchor for this certification path
    /// validation." Path validation includes the validity dates of every
    /// certificate below the anchor (RFC 5280 §6.1.3); RFC 7671 §5.1 reminds
    /// DANE-TA(2) operators that they "need to remember to replace
    /// certificates prior to their expiration dates". Then the name check,
    /// which RFC 7672 §3.2.3 bases on the DNS-IDs of the subjectAltName.
    fn validate(
        &self,
        parsed: &ParsedCertificate<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        roots: &RootCertStore,
        names: &[String],
        now: UnixTime,
    ) -> Result<(), DaneError> {
        verify_server_cert_signed_by_trust_anchor(
            parsed,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(|e| DaneError::Chain(failure_of(&e)))?;
        if name_matches(parsed, end_entity, names) {
            Ok(())
        } else {
            Err(DaneError::NameMismatch)
        }
    }
}

impl CertificateHook for DaneHook {
    fn check(&self, input: &HookInput<'_>) -> CertificateCheck {
        let fallback;
        let names = if self.reference_names.is_empty() {
            fallback = match input.server_name {
                ServerName::DnsName(name) => vec![name.as_ref().to_ascii_lowercase()],
                _ => Vec::new(),
            };
            &fallback
        } else {
            &self.reference_names
        };
        let result = self.authenticate_as(input.end_entity, input.intermediates, names, input.now);
        match result {
            Ok(m) => {
                tracing::debug!(record = %m.record, depth = ?m.depth, "dane: tlsa record matched");
                CertificateCheck::verified()
            }
            Err(e) => {
                tracing::debug!(error = %e, records = self.records.len(), "dane: no match");
                e.check()
            }
        }
    }

    fn cache_key(&self) -> Option<String> {
        let records: Vec<String> = self.records.iter().map(ToString::to_string).collect();
        Some(format!("dane|{records:?}|{:?}", self.reference_names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    fn days(n: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::days(n)
    }

    struct Ca {
        der: CertificateDer<'static>,
        spki: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = days(-10);
        p.not_after = days(3650);
        p
    }

    fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let p = ca_params(cn);
        let der = p.self_signed(&key).unwrap().der().clone();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        Ca {
            der,
            spki,
            issuer: Issuer::new(p, key),
        }
    }

    fn intermediate(cn: &str, parent: &Ca) -> Ca {
        let key = KeyPair::generate().unwrap();
        let p = ca_params(cn);
        let der = p.signed_by(&key, &parent.issuer).unwrap().der().clone();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        Ca {
            der,
            spki,
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(names: &[&str], issuer: &Ca, from: i64, to: i64) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        p.not_before = days(from);
        p.not_after = days(to);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.signed_by(&key, &issuer.issuer).unwrap().der().clone()
    }

    /// root → intermediate → leaf for mx.example.org, the chain as a server sends it.
    struct Pki {
        root: Ca,
        inter: Ca,
        leaf: CertificateDer<'static>,
    }

    fn pki(names: &[&str]) -> Pki {
        let root = root("Test Root");
        let inter = intermediate("Test Issuer", &root);
        let leaf = leaf(names, &inter, -1, 90);
        Pki { root, inter, leaf }
    }

    fn rec(cert: &CertificateDer<'_>, usage: u8, selector: u8, matching: u8) -> TlsaRecord {
        tlsa_record(cert, usage.into(), selector.into(), matching.into()).unwrap()
    }

    fn wrong(mut r: TlsaRecord) -> TlsaRecord {
        r.data[0] ^= 0xff;
        r
    }

    fn hook(records: Vec<TlsaRecord>) -> DaneHook {
        DaneHook::new(records, ["mx.example.org", "example.org"])
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn record_data_is_what_rfc6698_selects() {
        let p = pki(&["mx.example.org"]);
        // Selector SPKI(1) is the DER SubjectPublicKeyInfo, as the key itself encodes it.
        assert_eq!(rec(&p.inter.der, 2, 1, 0).data, p.inter.spki);
        assert_eq!(rec(&p.leaf, 3, 0, 0).data, p.leaf.as_ref());
        assert_eq!(
            rec(&p.leaf, 3, 1, 1).data,
            Sha256::digest(rec(&p.leaf, 3, 1, 0).data).to_vec()
        );
        assert_eq!(rec(&p.leaf, 3, 1, 2).data.len(), 64);
        assert!(tlsa_record(&p.leaf, 3.into(), 2.into(), 1.into()).is_none());
        assert!(tlsa_record(&p.leaf, 3.into(), 1.into(), 3.into()).is_none());
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(tlsa_record(&garbage, 3.into(), 1.into(), 1.into()).is_none());
    }

    #[test]
    fn dane_ee_spki_sha256() {
        let p = pki(&["mx.example.org"]);
        let chain = [p.inter.der.clone()];
        let good = rec(&p.leaf, 3, 1, 1);
        let m = hook(vec![good.clone()])
            .authenticate(&p.leaf, &chain, now())
            .unwrap();
        assert_eq!((m.record, m.depth), (good.clone(), Some(0)));
        assert_eq!(
            hook(vec![wrong(good)]).authenticate(&p.leaf, &chain, now()),
            Err(DaneError::NoMatch)
        );
        // A DANE-EE record for another certificate of the chain does not match.
        assert_eq!(
            hook(vec![rec(&p.inter.der, 3, 1, 1)]).authenticate(&p.leaf, &chain, now()),
            Err(DaneError::NoMatch)
        );
    }

    #[test]
    fn dane_ee_full_certificate_and_sha512() {
        let p = pki(&["mx.example.org"]);
        for r in [
            rec(&p.leaf, 3, 0, 1),
            rec(&p.leaf, 3, 1, 2),
            rec(&p.leaf, 3, 0, 0),
        ] {
            assert!(
                hook(vec![r.clone()])
                    .authenticate(&p.leaf, &[], now())
                    .is_ok(),
                "{r}"
            );
            assert_eq!(
                hook(vec![wrong(r.clone())]).authenticate(&p.leaf, &[], now()),
                Err(DaneError::NoMatch),
                "{r}"
            );
        }
    }

    #[test]
    fn dane_ee_ignores_names_dates_and_issuer() {
        // RFC 7671 §5.1: no name check, no expiry check, no chain.
        let stranger = root("Unknown CA");
        let expired = leaf(&["other.example.net"], &stranger, -30, -1);
        assert!(
            hook(vec![rec(&expired, 3, 1, 1)])
                .authenticate(&expired, &[], now())
                .is_ok()
        );
    }

    #[test]
    fn dane_ta_on_the_intermediate_or_the_root() {
        let p = pki(&["mx.example.org"]);
        let chain = [p.inter.der.clone(), p.root.der.clone()];
        for (r, depth) in [
            (rec(&p.inter.der, 2, 0, 1), 1),
            (rec(&p.inter.der, 2, 1, 1), 1),
            (rec(&p.root.der, 2, 0, 1), 2),
            (rec(&p.root.der, 2, 1, 2), 2),
        ] {
            let m = hook(vec![r.clone()])
                .authenticate(&p.leaf, &chain, now())
                .unwrap_or_else(|e| panic!("{r}: {e}"));
            assert_eq!(m.depth, Some(depth), "{r}");
        }
    }

    #[test]
    fn dane_ta_reference_names() {
        // The next-hop domain is a reference identifier too ("nexthop, hostname").
        let p = pki(&["example.org"]);
        let chain = [p.inter.der.clone()];
        let r = rec(&p.inter.der, 2, 0, 1);
        assert!(
            hook(vec![r.clone()])
                .authenticate(&p.leaf, &chain, now())
                .is_ok()
        );
        // A wildcard for one left-most label matches the MX host.
        let p = pki(&["*.example.org"]);
        let chain = [p.inter.der.clone()];
        let r2 = rec(&p.inter.der, 2, 0, 1);
        assert!(hook(vec![r2]).authenticate(&p.leaf, &chain, now()).is_ok());
        // Case and a trailing dot in the configured names do not matter.
        let p = pki(&["mx.example.org"]);
        let chain = [p.inter.der.clone()];
        let h = DaneHook::new([rec(&p.inter.der, 2, 0, 1)], ["MX.Example.ORG."]);
        assert!(h.authenticate(&p.leaf, &chain, now()).is_ok());
    }

    #[test]
    fn dane_ta_wrong_name_fails() {
        let p = pki(&["other.example.net"]);
        let chain = [p.inter.der.clone(), p.root.der.clone()];
        for r in [rec(&p.inter.der, 2, 0, 1), rec(&p.root.der, 2, 1, 1)] {
            let e = hook(vec![r])
                .authenticate(&p.leaf, &chain, now())
                .unwrap_err();
            assert_eq!(e, DaneError::NameMismatch);
            assert_eq!(
                e.check(),
                CertificateCheck::failed(PeerTrust::Trusted, CertificateFailure::HostMismatch)
            );
        }
        // No reference identifiers at all: no DANE-TA(2) match is possible.
        let h = DaneHook::new([rec(&p.inter.der, 2, 0, 1)], Vec::<String>::new());
        assert_eq!(
            h.authenticate(&p.leaf, &chain, now()),
            Err(DaneError::NameMismatch)
        );
    }

    #[test]
    fn dane_ta_not_in_the_chain_fails() {
        let p = pki(&["mx.example.org"]);
        // The server omits the root its TLSA record names.
        let chain = [p.inter.der.clone()];
        let e = hook(vec![rec(&p.root.der, 2, 0, 1)])
            .authenticate(&p.leaf, &chain, now())
            .unwrap_err();
        assert_eq!(e, DaneError::NoMatch);
        assert_eq!(
            e.check(),
            CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::DaneMismatch)
        );
        // A DANE-TA record is never matched by the server's own certificate.
        assert_eq!(
            hook(vec![rec(&p.leaf, 2, 0, 1)]).authenticate(&p.leaf, &chain, now()),
            Err(DaneError::NoMatch)
        );
    }

    #[test]
    fn dane_ta_must_be_an_issuer_of_the_leaf() {
        // Stalwart #2328: a DANE-TA record matching *some* later certificate is not enough. Here the chain
        // carries the genuine trust anchor, but the leaf was issued by an unrelated CA.
        let p = pki(&["mx.example.org"]);
        let rogue = root("Rogue CA");
        let forged = leaf(&["mx.example.org"], &rogue, -1, 90);
        let chain = [p.inter.der.clone(), p.root.der.clone()];
        // A rogue CA that copies the trust anchor's name: the signature check still fails.
        let impostor = root("Test Issuer");
        let forged_same_name = leaf(&["mx.example.org"], &impostor, -1, 90);
        for r in [rec(&p.inter.der, 2, 0, 1), rec(&p.root.der, 2, 1, 1)] {
            for forged in [&forged, &forged_same_name] {
                assert_eq!(
                    hook(vec![r.clone()]).authenticate(forged, &chain, now()),
                    Err(DaneError::Chain(CertificateFailure::NotTrusted))
                );
            }
        }
        // The genuine leaf passes with the same records and chain.
        assert!(
            hook(vec![rec(&p.inter.der, 2, 0, 1)])
                .authenticate(&p.leaf, &chain, now())
                .is_ok()
        );
    }

    #[test]
    fn dane_ta_checks_validity_dates() {
        let p = pki(&["mx.example.org"]);
        let expired = leaf(&["mx.example.org"], &p.inter, -30, -1);
        let chain = [p.inter.der.clone()];
        let e = hook(vec![rec(&p.inter.der, 2, 0, 1)])
            .authenticate(&expired, &chain, now())
            .unwrap_err();
        assert_eq!(e, DaneError::Chain(CertificateFailure::Expired));
        assert_eq!(e.check().failure, Some(CertificateFailure::Expired));
    }

    #[test]
    fn dane_ta_full_certificate_from_dns() {
        // RFC 7671 §5.2.2: with "2 0 0" the TA certificate may appear only in DNS.
        let p = pki(&["mx.example.org"]);
        let chain = [p.inter.der.clone()];
        let m = hook(vec![rec(&p.root.der, 2, 0, 0)])
            .authenticate(&p.leaf, &chain, now())
            .unwrap();
        assert_eq!(m.depth, None);
        let other = root("Other Root");
        assert_eq!(
            hook(vec![rec(&other.der, 2, 0, 0)]).authenticate(&p.leaf, &chain, now()),
            Err(DaneError::Chain(CertificateFailure::NotTrusted))
        );
    }

    #[test]
    fn dane_ta_bare_public_key() {
        // RFC 7671 §5.2.3: "2 1 0" and a chain without the TA: the topmost certificate must be signed by the key.
        let p = pki(&["mx.example.org"]);
        let chain = [p.inter.der.clone()];
        let m = hook(vec![rec(&p.root.der, 2, 1, 0)])
            .authenticate(&p.leaf, &chain, now())
            .unwrap();
        assert_eq!(m.depth, None);
        // The leaf alone, signed by the key of the record.
        let m = hook(vec![rec(&p.inter.der, 2, 1, 0)])
            .authenticate(&p.leaf, &[], now())
            .unwrap();
        assert_eq!(m.depth, None);
        let other = root("Other Root");
        assert_eq!(
            hook(vec![rec(&other.der, 2, 1, 0)]).authenticate(&p.leaf, &chain, now()),
            Err(DaneError::Chain(CertificateFailure::NotTrusted))
        );
        // The name check still applies.
        let p = pki(&["other.example.net"]);
        assert_eq!(
            hook(vec![rec(&p.inter.der, 2, 1, 0)]).authenticate(&p.leaf, &[], now()),
            Err(DaneError::NameMismatch)
        );
    }

    #[test]
    fn digest_agility_uses_only_the_strongest_digest() {
        let p = pki(&["mx.example.org"]);
        let sha256 = rec(&p.leaf, 3, 1, 1);
        let sha512 = rec(&p.leaf, 3, 1, 2);
        // A wrong SHA-512 record shadows a right SHA-256 record (RFC 7671 §9).
        let h = hook(vec![sha256.clone(), wrong(sha512.clone())]);
        assert_eq!(h.records().len(), 1);
        assert_eq!(h.authenticate(&p.leaf, &[], now()), Err(DaneError::NoMatch));
        // The other way round, the SHA-512 record is used.
        let h = hook(vec![wrong(sha256.clone()), sha512.clone()]);
        assert_eq!(h.authenticate(&p.leaf, &[], now()).unwrap().record, sha512);
        // Full(0) records are never discarded; other usages or selectors are separate groups.
        let full = rec(&p.leaf, 3, 1, 0);
        let cert256 = rec(&p.leaf, 3, 0, 1);
        let h = hook(vec![
            wrong(sha512.clone()),
            sha256.clone(),
            full.clone(),
            cert256.clone(),
        ]);
        assert_eq!(h.records(), &[wrong(sha512), full, cert256][..]);
        assert!(h.authenticate(&p.leaf, &[], now()).is_ok());
    }

    #[test]
    fn unusable_records_never_match() {
        let p = pki(&["mx.example.org"]);
        let chain = [p.inter.der.clone(), p.root.der.clone()];
        // PKIX-EE(1) and PKIX-TA(0) matching the chain: unusable for SMTP (RFC 7672 §3.1.3).
        let h = hook(vec![rec(&p.leaf, 1, 1, 1), rec(&p.root.der, 0, 0, 1)]);
        assert!(h.records().is_empty());
        let e = h.authenticate(&p.leaf, &chain, now()).unwrap_err();
        assert_eq!(e, DaneError::NoUsableRecords);
        assert_eq!(e.check().failure, Some(CertificateFailure::DaneMismatch));
        // A truncated digest is unusable too.
        let mut short = rec(&p.leaf, 3, 1, 1);
        short.data.truncate(20);
        assert_eq!(
            hook(vec![short]).authenticate(&p.leaf, &chain, now()),
            Err(DaneError::NoUsableRecords)
        );
    }

    #[test]
    fn hook_uses_the_server_name_without_reference_names() {
        let p = pki(&["mx.example.org"]);
        let chain = [p.inter.der.clone()];
        let h = DaneHook::new([rec(&p.inter.der, 2, 0, 1)], Vec::<String>::new());
        let input = |name: &'static str| HookInput {
            end_entity: &p.leaf,
            intermediates: &chain,
            server_name: Box::leak(Box::new(ServerName::try_from(name).unwrap())),
            now: now(),
            pkix: check(PeerTrust::Untrusted, Some(CertificateFailure::NotTrusted)),
        };
        assert_eq!(
            h.check(&input("mx.example.org")),
            CertificateCheck::verified()
        );
        assert_eq!(
            h.check(&input("mx.example.com")).failure,
            Some(CertificateFailure::HostMismatch)
        );
    }

    /// Runs a handshake in memory between a server with `chain` and a DANE client.
    fn handshake(
        chain: Vec<CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
        hook: Arc<DaneHook>,
    ) -> (Result<(), rustls::Error>, CertificateCheck) {
        let server_cfg = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let ctx = crate::ClientTlsContext::new(Arc::new(RootCertStore::empty()));
        let mut spec =
            crate::ClientTlsSpec::new(postern_policy::ClientTlsMode::Dane, "mx.example.org");
        spec.hook = Some(hook);
        let conn = ctx.connection(&spec).unwrap();
        let mut c =
            rustls::ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server_cfg)).unwrap();
        let result = (|| {
            while c.is_handshaking() || s.is_handshaking() {
                let mut buf = Vec::new();
                c.write_tls(&mut buf).unwrap();
                s.read_tls(&mut buf.as_slice()).unwrap();
                let _ = s.process_new_packets();
                buf.clear();
                s.write_tls(&mut buf).unwrap();
                c.read_tls(&mut buf.as_slice()).unwrap();
                c.process_new_packets()?;
            }
            Ok(())
        })();
        let check = match &result {
            Ok(()) => conn.certificate_check(c.peer_certificates(), now()),
            Err(e) => crate::refused_check(e).expect("refused by the verifier"),
        };
        (result, check)
    }

    #[test]
    fn handshake_with_dane_ee() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["mx.example.org".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .clone();
        let pkcs8 = || rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let good = Arc::new(hook(vec![rec(&cert, 3, 1, 1)]));
        let (result, check) = handshake(vec![cert.clone()], pkcs8(), good);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(check, CertificateCheck::verified());
        let bad = Arc::new(hook(vec![wrong(rec(&cert, 3, 1, 1))]));
        let (result, check) = handshake(vec![cert], pkcs8(), bad);
        assert!(result.is_err());
        assert_eq!(
            check,
            CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::DaneMismatch)
        );
    }

    #[test]
    fn equal_hooks_share_a_configuration() {
        let p = pki(&["mx.example.org"]);
        let ctx = crate::ClientTlsContext::new(Arc::new(RootCertStore::empty()));
        let spec = |records: Vec<TlsaRecord>| {
            let mut s =
                crate::ClientTlsSpec::new(postern_policy::ClientTlsMode::Dane, "mx.example.org");
            s.hook = Some(Arc::new(hook(records)));
            s
        };
        let a = ctx.connection(&spec(vec![rec(&p.leaf, 3, 1, 1)])).unwrap();
        let b = ctx.connection(&spec(vec![rec(&p.leaf, 3, 1, 1)])).unwrap();
        let c = ctx.connection(&spec(vec![rec(&p.leaf, 3, 0, 1)])).unwrap();
        assert!(Arc::ptr_eq(&a.config, &b.config));
        assert!(!Arc::ptr_eq(&a.config, &c.config));
    }
}
