//! Inspection of a certificate into a row of the certificate table.

use std::fmt;

use rustls::pki_types::UnixTime;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use postern_policy::Fingerprint;

use crate::certkey::{KeyType, MIN_RSA_BITS, key_type_and_bits, san_entries};
use crate::error::InspectError;

/// How close to expiry a certificate is reported as [`CertStatus::ExpiresSoon`].
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The status column of the certificate table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertStatus {
    /// Within its validity period, not weak, more than 30 days left.
    Valid,
    /// Valid, but expires within 30 days.
    ExpiresSoon,
    /// Past its not-after time.
    Expired,
    /// Before its not-before time.
    NotYetValid,
    /// Valid in time, but with an RSA key under 2048 bits, an EC key under
    /// 256 bits, or an MD5 / SHA-1 signature.
    Weak,
}

impl fmt::Display for CertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Valid => "valid",
            Self::ExpiresSoon => "expires within 30 days",
            Self::Expired => "expired",
            Self::NotYetValid => "not yet valid",
            Self::Weak => "weak",
        })
    }
}

/// One row of the certificate table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateRow {
    /// The table name (e.g. "Default Cert").
    pub name: String,
    /// Subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// subjectAltNames in certificate order: DNS names (lower-cased) and IP
    /// addresses (`127.0.0.1`, `::1`).
    pub sans: Vec<String>,
    /// Public-key algorithm.
    pub key_type: KeyType,
    /// Key size in bits (RSA: modulus bits; EC: curve size).
    pub key_bits: usize,
    /// Signature algorithm name (e.g. `sha256WithRSAEncryption`) or its OID.
    pub signature_algorithm: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 fingerprint of the DER certificate.
    pub fingerprint: Fingerprint,
    /// Subject and issuer are the same name.
    pub self_signed: bool,
    /// Status at the time given to [`inspect`].
    pub status: CertStatus,
}

/// Names for the signature algorithms a mail server meets; others show as OIDs.
fn signature_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "ED25519",
        _ => return None,
    })
}

fn weak_signature(oid: &str) -> bool {
    matches!(
        oid,
        "1.2.840.113549.1.1.4" | "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1"
    )
}

/// Inspects a DER certificate into a table row, with `now` deciding the status.
pub fn inspect(name: &str, der: &[u8], now: UnixTime) -> Result<CertificateRow, InspectError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| InspectError::Parse(e.to_string()))?;
    let (key_type, key_bits) = key_type_and_bits(&cert);
    let sig_oid = cert.signature_algorithm.algorithm.to_id_string();
    let validity = cert.validity();
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let weak = (key_type == KeyType::Rsa && key_bits < MIN_RSA_BITS)
        || (key_type == KeyType::Ecdsa && key_bits < 256)
        || key_type == KeyType::Dsa
        || weak_signature(&sig_oid);
    let status = if now_secs < not_before.unix_timestamp() {
        CertStatus::NotYetValid
    } else if now_secs > not_after.unix_timestamp() {
        CertStatus::Expired
    } else if weak {
        CertStatus::Weak
    } else if not_after.unix_timestamp() - now_secs <= EXPIRY_WARNING_DAYS * 86_400 {
        CertStatus::ExpiresSoon
    } else {
        CertStatus::Valid
    };
    Ok(CertificateRow {
        name: name.to_owned(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans: san_entries(&cert),
        key_type,
        key_bits,
        signature_algorithm: signature_name(&sig_oid).map_or(sig_oid.clone(), str::to_owned),
        not_before,
        not_after,
        fingerprint: Fingerprint::of(der),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        status,
    })
}
