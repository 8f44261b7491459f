//! DANE for SMTP (RFC 7672, with RFC 6698 / RFC 7671): the TLSA record model and
//! what a TLSA lookup means for delivery.
//!
//! The DNS lookup and the certificate matching happen elsewhere (a resolver with
//! DNSSEC validation; a certificate verifier). This module says which records are
//! usable and what the delivery must then require.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// TLSA certificate usage (RFC 6698 §2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CertificateUsage {
    /// 0, PKIX-TA: unusable for SMTP (RFC 7672 §3.1.3).
    PkixTa,
    /// 1, PKIX-EE: unusable for SMTP (RFC 7672 §3.1.3).
    PkixEe,
    /// 2, DANE-TA: the trust anchor must appear in the server's chain.
    DaneTa,
    /// 3, DANE-EE: the server's certificate or key must match; no name or expiry
    /// checks (RFC 7672 §3.1.1).
    DaneEe,
    /// Any other value: unusable.
    Other(u8),
}

impl From<u8> for CertificateUsage {
    fn from(value: u8) -> Self {
        match value {
            0 => Self::PkixTa,
            1 => Self::PkixEe,
            2 => Self::DaneTa,
            3 => Self::DaneEe,
            other => Self::Other(other),
        }
    }
}

impl CertificateUsage {
    /// The wire value.
    pub const fn value(self) -> u8 {
        match self {
            Self::PkixTa => 0,
            Self::PkixEe => 1,
            Self::DaneTa => 2,
            Self::DaneEe => 3,
            Self::Other(v) => v,
        }
    }
}

/// TLSA selector (RFC 6698 §2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Selector {
    /// 0: the full certificate.
    FullCertificate,
    /// 1: the SubjectPublicKeyInfo.
    SubjectPublicKeyInfo,
    /// Any other value: unusable.
    Other(u8),
}

impl From<u8> for Selector {
    fn from(value: u8) -> Self {
        match value {
            0 => Self::FullCertificate,
            1 => Self::SubjectPublicKeyInfo,
            other => Self::Other(other),
        }
    }
}

impl Selector {
    /// The wire value.
    pub const fn value(self) -> u8 {
        match self {
            Self::FullCertificate => 0,
            Self::SubjectPublicKeyInfo => 1,
            Self::Other(v) => v,
        }
    }
}

/// TLSA matching type (RFC 6698 §2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MatchingType {
    /// 0: exact match of the selected content.
    Full,
    /// 1: SHA2-256 of the selected content.
    Sha256,
    /// 2: SHA2-512 of the selected content.
    Sha512,
    /// Any other value: unusable.
    Other(u8),
}

impl From<u8> for MatchingType {
    fn from(value: u8) -> Self {
        match value {
            0 => Self::Full,
            1 => Self::Sha256,
            2 => Self::Sha512,
            other => Self::Other(other),
        }
    }
}

impl MatchingType {
    /// The wire value.
    pub const fn value(self) -> u8 {
        match self {
            Self::Full => 0,
            Self::Sha256 => 1,
            Self::Sha512 => 2,
            Self::Other(v) => v,
        }
    }

    /// The digest length this type requires, if it is a digest.
    pub const fn digest_len(self) -> Option<usize> {
        match self {
            Self::Sha256 => Some(32),
            Self::Sha512 => Some(64),
            _ => None,
        }
    }
}

/// One TLSA record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TlsaRecord {
    /// Certificate usage.
    pub usage: CertificateUsage,
    /// Selector.
    pub selector: Selector,
    /// Matching type.
    pub matching_type: MatchingType,
    /// Certificate association data.
    pub data: Vec<u8>,
}

/// Why a TLSA record in presentation form was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsaParseError {
    /// Not `usage selector matching-type hex-data`.
    #[error("expected \"usage selector matching-type data\"")]
    Shape,
    /// A field is not a number from 0 to 255.
    #[error("invalid number {0:?}")]
    Number(String),
    /// The data is not hex.
    #[error("association data is not hex")]
    Hex,
}

impl FromStr for TlsaRecord {
    type Err = TlsaParseError;

    /// Parses the presentation form, e.g. `3 1 1 0123…` (RFC 6698 §2.2); the data
    /// may be split by white space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut fields = s.split_ascii_whitespace();
        let mut number = || -> Result<u8, TlsaParseError> {
            let field = fields.next().ok_or(TlsaParseError::Shape)?;
            field
                .parse::<u8>()
                .map_err(|_| TlsaParseError::Number(field.to_owned()))
        };
        let usage = number()?.into();
        let selector = number()?.into();
        let matching_type = number()?.into();
        let hex: String = fields.collect();
        if hex.is_empty() || !hex.len().is_multiple_of(2) {
            return Err(TlsaParseError::Hex);
        }
        let data = hex
            .as_bytes()
            .chunks_exact(2)
            .map(|pair| {
                let hi = (pair[0] as char).to_digit(16).ok_or(TlsaParseError::Hex)?;
                let lo = (pair[1] as char).to_digit(16).ok_or(TlsaParseError::Hex)?;
                Ok((hi * 16 + lo) as u8)
            })
            .collect::<Result<Vec<u8>, TlsaParseError>>()?;
        Ok(Self {
            usage,
            selector,
            matching_type,
            data,
        })
    }
}

impl fmt::Display for TlsaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} ",
            self.usage.value(),
            self.selector.value(),
            self.matching_type.value()
        )?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl TlsaRecord {
    /// Whether an SMTP client can use this record (RFC 7672 §3.1): usage DANE-TA(2)
    /// or DANE-EE(3), a known selector, a known matching type, and data of the
    /// right length for a digest.
    pub fn is_usable(&self) -> bool {
        let usage_ok = matches!(
            self.usage,
            CertificateUsage::DaneTa | CertificateUsage::DaneEe
        );
        let selector_ok = !matches!(self.selector, Selector::Other(_));
        let matching_ok = match self.matching_type {
            MatchingType::Full => !self.data.is_empty(),
            MatchingType::Other(_) => false,
            digest => digest.digest_len() == Some(self.data.len()),
        };
        usage_ok && selector_ok && matching_ok
    }
}

/// Why a TLSA lookup did not give a clean answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LookupFailure {
    /// DNSSEC validation failed (bogus).
    Bogus,
    /// The resolver could not say (timeout, SERVFAIL, indeterminate).
    Indeterminate,
}

/// The DNSSEC status of one DNS answer (RFC 4033 §5, RFC 4035 §4.3): every
/// lookup a DANE client makes ends in exactly one of these.
///
/// The four are never merged: a resolver that cannot answer
/// ([`DnssecStatus::Indeterminate`]) or whose answer fails validation
/// ([`DnssecStatus::Bogus`]) has *not* said "no DANE"; only
/// [`DnssecStatus::Insecure`] (an unsigned zone) has (RFC 7672 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DnssecStatus {
    /// Validated from a trust anchor: the data (or its absence) is authentic.
    Secure,
    /// Provably unsigned: the data may be used, but DANE does not apply.
    Insecure,
    /// Validation failed (bad or expired signatures, missing proofs).
    Bogus,
    /// No answer that could be judged: timeout, SERVFAIL, REFUSED, network
    /// error.
    Indeterminate,
}

impl DnssecStatus {
    /// Whether the answer was validated.
    pub const fn is_secure(self) -> bool {
        matches!(self, Self::Secure)
    }

    /// The failure, for [`DnssecStatus::Bogus`] and
    /// [`DnssecStatus::Indeterminate`]; `None` for an answer that can be used.
    pub const fn failure(self) -> Option<LookupFailure> {
        match self {
            Self::Bogus => Some(LookupFailure::Bogus),
            Self::Indeterminate => Some(LookupFailure::Indeterminate),
            Self::Secure | Self::Insecure => None,
        }
    }

    /// The status of data that needed all of `self` and `other` (a CNAME chain,
    /// an RRset and its denial proof): the weakest of the two, in the order
    /// Indeterminate, Bogus, Insecure, Secure.
    #[must_use]
    pub const fn and(self, other: Self) -> Self {
        const fn rank(s: DnssecStatus) -> u8 {
            match s {
                DnssecStatus::Indeterminate => 0,
                DnssecStatus::Bogus => 1,
                DnssecStatus::Insecure => 2,
                DnssecStatus::Secure => 3,
            }
        }
        if rank(self) <= rank(other) {
            self
        } else {
            other
        }
    }
}

impl From<LookupFailure> for DnssecStatus {
    fn from(failure: LookupFailure) -> Self {
        match failure {
            LookupFailure::Bogus => Self::Bogus,
            LookupFailure::Indeterminate => Self::Indeterminate,
        }
    }
}

impl fmt::Display for DnssecStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secure => "secure",
            Self::Insecure => "insecure",
            Self::Bogus => "bogus",
            Self::Indeterminate => "indeterminate",
        })
    }
}

/// The result of looking up `_25._tcp.<mx-host>` TLSA records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsaLookup {
    /// DNSSEC-secure records.
    Secure(Vec<TlsaRecord>),
    /// DNSSEC-secure denial of existence: no TLSA records.
    SecureNoRecords,
    /// The zone (or the host's address records) is not signed: TLSA records, if
    /// any, must be ignored (RFC 7672 §2.2).
    Insecure,
    /// The lookup failed or validated as bogus.
    Failed(LookupFailure),
}

impl TlsaLookup {
    /// The DNSSEC status of the lookup.
    pub fn status(&self) -> DnssecStatus {
        match self {
            Self::Secure(_) | Self::SecureNoRecords => DnssecStatus::Secure,
            Self::Insecure => DnssecStatus::Insecure,
            Self::Failed(failure) => (*failure).into(),
        }
    }
}

/// What DANE requires of a connection to one MX host (RFC 7672 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaneOutcome {
    /// Usable records exist: the server MUST be authenticated by them; no fallback.
    Authenticate(Vec<TlsaRecord>),
    /// Records exist but none is usable: TLS is mandatory, unauthenticated
    /// (Postfix `encrypt`).
    EncryptOnly,
    /// No records (secure denial) or an unsigned zone: opportunistic TLS.
    Opportunistic,
    /// The lookup failed or was bogus: this host cannot be used now (defer or try
    /// another MX). Never treated as "no DANE".
    HostUnusable(LookupFailure),
}

impl DaneOutcome {
    /// Maps a lookup to its outcome.
    ///
    /// ```
    /// use postern_policy::dane::{DaneOutcome, TlsaLookup, TlsaRecord};
    /// let record: TlsaRecord = "3 1 1 2bb6f9b6f0e4c6bb7bd3ba8d2d8cfb6c1e3b1dd2d3c5e5f5a7d8c9b0a1f2e3d4".parse().unwrap();
    /// assert!(matches!(DaneOutcome::from_lookup(TlsaLookup::Secure(vec![record])), DaneOutcome::Authenticate(_)));
    /// ```
    pub fn from_lookup(lookup: TlsaLookup) -> Self {
        match lookup {
            TlsaLookup::Secure(records) if records.is_empty() => Self::Opportunistic,
            TlsaLookup::Secure(records) => {
                let usable: Vec<TlsaRecord> =
                    records.into_iter().filter(TlsaRecord::is_usable).collect();
                if usable.is_empty() {
                    Self::EncryptOnly
                } else {
                    Self::Authenticate(usable)
                }
            }
            TlsaLookup::SecureNoRecords | TlsaLookup::Insecure => Self::Opportunistic,
            TlsaLookup::Failed(failure) => Self::HostUnusable(failure),
        }
    }
}

/// The TLSA query name for an MX host and port (RFC 7672 §2.2.1): `_25._tcp.<host>`.
pub fn tlsa_query_name(host: &crate::DomainName, port: u16) -> String {
    format!("_{port}._tcp.{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> TlsaRecord {
        s.parse().unwrap()
    }

    const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn presentation_form() {
        let r = rec(&format!("3 1 1 {}", SHA256.to_uppercase()));
        assert_eq!(r.usage, CertificateUsage::DaneEe);
        assert_eq!(r.selector, Selector::SubjectPublicKeyInfo);
        assert_eq!(r.matching_type, MatchingType::Sha256);
        assert_eq!(r.data.len(), 32);
        assert_eq!(r.to_string(), format!("3 1 1 {SHA256}"));
        // Data split by white space (RFC 6698 §2.2).
        assert_eq!(
            rec(&format!("3 1 1 {} {}", &SHA256[..10], &SHA256[10..])),
            r
        );
        for bad in ["", "3 1", "3 1 1", "3 1 1 abc", "3 1 1 zz", "300 1 1 00"] {
            assert!(bad.parse::<TlsaRecord>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn usability() {
        assert!(rec(&format!("3 1 1 {SHA256}")).is_usable());
        assert!(rec(&format!("2 0 1 {SHA256}")).is_usable());
        assert!(rec("3 0 0 3082").is_usable());
        assert!(!rec(&format!("1 1 1 {SHA256}")).is_usable(), "PKIX-EE");
        assert!(!rec(&format!("0 1 1 {SHA256}")).is_usable(), "PKIX-TA");
        assert!(
            !rec(&format!("4 1 1 {SHA256}")).is_usable(),
            "unknown usage"
        );
        assert!(
            !rec(&format!("3 2 1 {SHA256}")).is_usable(),
            "unknown selector"
        );
        assert!(
            !rec(&format!("3 1 3 {SHA256}")).is_usable(),
            "unknown matching type"
        );
        assert!(!rec("3 1 1 00ff").is_usable(), "short digest");
        assert!(
            !rec(&format!("3 1 2 {SHA256}")).is_usable(),
            "SHA-512 of 32 bytes"
        );
    }

    #[test]
    fn the_four_outcomes() {
        // Usable records → authenticate (only the usable ones are kept).
        let usable = rec(&format!("3 1 1 {SHA256}"));
        let pkix = rec(&format!("1 1 1 {SHA256}"));
        assert_eq!(
            DaneOutcome::from_lookup(TlsaLookup::Secure(vec![pkix.clone(), usable.clone()])),
            DaneOutcome::Authenticate(vec![usable])
        );
        // Records, none usable → encrypt.
        assert_eq!(
            DaneOutcome::from_lookup(TlsaLookup::Secure(vec![pkix])),
            DaneOutcome::EncryptOnly
        );
        // No records (secure denial) → opportunistic; unsigned zone likewise.
        assert_eq!(
            DaneOutcome::from_lookup(TlsaLookup::SecureNoRecords),
            DaneOutcome::Opportunistic
        );
        assert_eq!(
            DaneOutcome::from_lookup(TlsaLookup::Insecure),
            DaneOutcome::Opportunistic
        );
        // Lookup failure or bogus → host unusable, never "no DANE".
        for failure in [LookupFailure::Bogus, LookupFailure::Indeterminate] {
            assert_eq!(
                DaneOutcome::from_lookup(TlsaLookup::Failed(failure)),
                DaneOutcome::HostUnusable(failure)
            );
        }
    }

    #[test]
    fn dnssec_status() {
        use DnssecStatus::*;
        let all = [Secure, Insecure, Bogus, Indeterminate];
        // The weakest wins, in both orders.
        assert_eq!(Secure.and(Insecure), Insecure);
        assert_eq!(Insecure.and(Bogus), Bogus);
        assert_eq!(Bogus.and(Indeterminate), Indeterminate);
        for a in all {
            assert_eq!(a.and(Secure), a);
            assert_eq!(Secure.and(a), a);
            assert_eq!(a.and(Indeterminate), Indeterminate);
            for b in all {
                assert_eq!(a.and(b), b.and(a));
            }
        }
        assert_eq!(Secure.failure(), None);
        assert_eq!(Insecure.failure(), None);
        assert_eq!(Bogus.failure(), Some(LookupFailure::Bogus));
        assert_eq!(Indeterminate.failure(), Some(LookupFailure::Indeterminate));
        for f in [LookupFailure::Bogus, LookupFailure::Indeterminate] {
            assert_eq!(DnssecStatus::from(f).failure(), Some(f));
            assert_eq!(TlsaLookup::Failed(f).status(), DnssecStatus::from(f));
        }
        assert_eq!(TlsaLookup::SecureNoRecords.status(), Secure);
        assert_eq!(TlsaLookup::Insecure.status(), Insecure);
        assert_eq!(Bogus.to_string(), "bogus");
        assert_eq!(
            serde_json::to_string(&Indeterminate).unwrap(),
            "\"indeterminate\""
        );
    }

    #[test]
    fn query_name() {
        let host = crate::DomainName::parse("MX.example.com.").unwrap();
        assert_eq!(tlsa_query_name(&host, 25), "_25._tcp.mx.example.com");
    }
}
