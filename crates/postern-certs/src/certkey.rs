//! Importing a certificate chain with its private key.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::public_key::PublicKey;

use postern_policy::Fingerprint;

use crate::error::ImportError;

/// The smallest RSA modulus accepted on import, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The public-key algorithm of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// RSA.
    Rsa,
    /// ECDSA (any named curve).
    Ecdsa,
    /// Ed25519.
    Ed25519,
    /// DSA (never accepted by rustls).
    Dsa,
    /// Anything else.
    Other,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "RSA",
            Self::Ecdsa => "ECDSA",
            Self::Ed25519 => "Ed25519",
            Self::Dsa => "DSA",
            Self::Other => "other",
        })
    }
}

/// Key type and size in bits read from a parsed certificate.
///
/// The RSA size is counted from the modulus here: x509-parser's
/// `RSAPublicKey::key_size()` returns 0 unless the modulus has exactly one
/// leading zero byte.
pub(crate) fn key_type_and_bits(cert: &X509Certificate<'_>) -> (KeyType, usize) {
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => (KeyType::Rsa, significant_bits(rsa.modulus)),
        Ok(PublicKey::EC(point)) => (KeyType::Ecdsa, point.key_size()),
        Ok(PublicKey::DSA(y)) => (KeyType::Dsa, significant_bits(y)),
        // id-Ed25519, RFC 8410 §3.
        _ if oid == "1.3.101.112" => (KeyType::Ed25519, 256),
        _ => (KeyType::Other, 0),
    }
}

/// Number of significant bits of a big-endian unsigned integer.
fn significant_bits(bytes: &[u8]) -> usize {
    let trimmed = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => return 0,
    };
    // `trimmed` is non-empty and its first byte is non-zero (found above).
    (trimmed.len() - 1) * 8 + (8 - trimmed[0].leading_zeros() as usize)
}

/// Every DNS name and IP address of a certificate's subjectAltName, in
/// certificate order: names lower-cased, addresses in their usual text form
/// (`127.0.0.1`, `::1`). Other entry types (e-mail, URI) are left out.
pub(crate) fn san_entries(cert: &X509Certificate<'_>) -> Vec<String> {
    san_filter(cert, |n| match n {
        GeneralName::DNSName(d) => Some(dns_name(d)),
        GeneralName::IPAddress(bytes) => ip_text(bytes),
        _ => None,
    })
}

/// A subjectAltName DNS name as compared: lower-cased, without a trailing dot.
fn dns_name(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// The subjectAltName entries of `cert` that `keep` turns into text.
fn san_filter(
    cert: &X509Certificate<'_>,
    keep: impl Fn(&GeneralName<'_>) -> Option<String>,
) -> Vec<String> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().filter_map(keep).collect(),
        _ => Vec::new(),
    }
}

/// An iPAddress subjectAltName (RFC 5280 §4.2.1.6: 4 octets for IPv4, 16
/// for IPv6) as text; `None` for any other length.
fn ip_text(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(v4).to_string())
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::from(v6).to_string())
    } else {
        None
    }
}

/// The DNS names of a certificate's subjectAltName, lower-cased.
pub(crate) fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    san_filter(cert, |n| match n {
        GeneralName::DNSName(d) => Some(dns_name(d)),
        _ => None,
    })
}

/// A certificate chain with its private key, checked and ready to serve.
///
/// Built by [`CertKey::from_pem`] (or [`CertKey::from_der`]); the checks are
/// those a mail administrator expects at import time: the chain is not empty,
/// every certificate parses, the key loads and matches the leaf, and an RSA
/// key has at least [`MIN_RSA_BITS`] bits.
#[derive(Clone)]
pub struct CertKey {
    certified: Arc<CertifiedKey>,
    key_type: KeyType,
    key_bits: usize,
    names: Vec<String>,
    fingerprint: Fingerprint,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKey")
            .field("names", &self.names)
            .field("key_type", &self.key_type)
            .field("key_bits", &self.key_bits)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn pem_error(e: pem::Error) -> ImportError {
    match e {
        pem::Error::NoItemsFound => ImportError::EmptyChain,
        other => ImportError::MalformedPem(other.to_string()),
    }
}

impl CertKey {
    /// Parses a PEM certificate chain (leaf first) and a PEM private key
    /// (`PRIVATE KEY` PKCS#8, `RSA PRIVATE KEY` PKCS#1 or `EC PRIVATE KEY` SEC1).
    ///
    /// Uses [`crate::provider()`] to load the key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, ImportError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error)?;
        if chain.is_empty() {
            return Err(ImportError::EmptyChain);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => ImportError::NoPrivateKey,
            other => ImportError::MalformedPem(other.to_string()),
        })?;
        Self::from_der(chain, key)
    }

    /// Reads and parses a PEM chain file and a PEM key file (they may be the
    /// same file), as [`CertKey::from_pem`].
    pub fn from_pem_files(
        chain_path: impl AsRef<std::path::Path>,
        key_path: impl AsRef<std::path::Path>,
    ) -> Result<Self, ImportError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| ImportError::Io {
                path: p.to_owned(),
                source,
            })
        };
        Self::from_pem(&read(chain_path.as_ref())?, &read(key_path.as_ref())?)
    }

    /// Builds from DER values (leaf first), with the same checks as [`CertKey::from_pem`].
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, ImportError> {
        Self::from_der_with_provider(chain, key, &crate::provider())
    }

    /// Builds from DER values with a given crypto provider.
    pub fn from_der_with_provider(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provider: &CryptoProvider,
    ) -> Result<Self, ImportError> {
        let Some(leaf_der) = chain.first() else {
            return Err(ImportError::EmptyChain);
        };
        for der in &chain {
            X509Certificate::from_der(der)
                .map_err(|e| ImportError::InvalidCertificate(e.to_string()))?;
        }
        let (_, leaf) = X509Certificate::from_der(leaf_der)
            .map_err(|e| ImportError::InvalidCertificate(e.to_string()))?;
        let (key_type, key_bits) = key_type_and_bits(&leaf);
        if key_type == KeyType::Rsa && key_bits < MIN_RSA_BITS {
            return Err(ImportError::WeakRsaKey { bits: key_bits });
        }
        let names = dns_names(&leaf);
        let fingerprint = Fingerprint::of(leaf_der);
        let not_before = leaf.validity().not_before.to_datetime();
        let not_after = leaf.validity().not_after.to_datetime();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(ImportError::InvalidKey)?;
        let certified = CertifiedKey::new(chain, signing_key);
        // aws-lc-rs and ring signing keys always expose their SubjectPublicKeyInfo, so
        // `Unknown` cannot hide a mismatch: treat every error as a mismatch.
        certified
            .keys_match()
            .map_err(|_| ImportError::KeyMismatch)?;
        Ok(Self {
            certified: Arc::new(certified),
            key_type,
            key_bits,
            names,
            fingerprint,
            not_before,
            not_after,
        })
    }

    /// The rustls certified key (chain and signing key).
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // Non-empty: checked in `from_der_with_provider`.
        &self.certified.cert[0]
    }

    /// The leaf's DNS subjectAltNames, lower-cased (wildcards kept as `*.example`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The leaf's key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The leaf's key size in bits.
    pub fn key_bits(&self) -> usize {
        self.key_bits
    }

    /// The SHA-256 fingerprint of the leaf.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The start of the leaf's validity (`notBefore`).
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The end of the leaf's validity (`notAfter`).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Whether `now` lies within the leaf's validity period (both ends
    /// included, RFC 5280 §4.1.2.5): neither expired nor not yet valid.
    pub fn valid_at(&self, now: UnixTime) -> bool {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.not_before.unix_timestamp() <= now && now <= self.not_after.unix_timestamp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_counting() {
        assert_eq!(significant_bits(&[0, 0x80, 0]), 16);
        assert_eq!(significant_bits(&[0, 0, 0x01]), 1);
        assert_eq!(significant_bits(&[0x7f, 0xff]), 15);
        assert_eq!(significant_bits(&[0, 0]), 0);
    }

    #[test]
    fn empty_and_malformed() {
        assert!(matches!(
            CertKey::from_pem(b"", b""),
            Err(ImportError::EmptyChain)
        ));
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            CertKey::from_pem(bad, b""),
            Err(ImportError::MalformedPem(_))
        ));
    }
}
