//! RFC 8460 result types: how a TLS session to a receiving MTA failed.

use std::fmt;
use std::str::FromStr;

/// RFC 8460 §4.3 result types (IANA "STARTTLS Validation Result Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
#[non_exhaustive]
pub enum ResultType {
    /// §4.3.1: the receiving MX did not support STARTTLS.
    StarttlsNotSupported,
    /// §4.3.1: the certificate did not match the host name.
    CertificateHostMismatch,
    /// §4.3.1: the certificate has expired.
    CertificateExpired,
    /// §4.3.1: the certificate chain does not lead to a trusted root.
    CertificateNotTrusted,
    /// §4.3.1 / §4.3.3: any other failure, detailed by a failure-reason-code.
    ValidationFailure,
    /// §4.3.2.1: no record of the TLSA RRset was valid (DANE).
    TlsaInvalid,
    /// §4.3.2.1: no valid DNSSEC records from the resolver (DANE).
    DnssecInvalid,
    /// §4.3.2.1: DANE was required and no usable TLSA record was found.
    DaneRequired,
    /// §4.3.2.2: the MTA-STS policy could not be fetched.
    StsPolicyFetchError,
    /// §4.3.2.2: the MTA-STS policy is invalid.
    StsPolicyInvalid,
    /// §4.3.2.2: the MTA-STS policy host's certificate failed PKIX validation.
    StsWebpkiInvalid,
}

impl ResultType {
    /// Every result type, in registry order.
    pub const ALL: [Self; 11] = [
        Self::StarttlsNotSupported,
        Self::CertificateHostMismatch,
        Self::CertificateExpired,
        Self::CertificateNotTrusted,
        Self::ValidationFailure,
        Self::TlsaInvalid,
        Self::DnssecInvalid,
        Self::DaneRequired,
        Self::StsPolicyFetchError,
        Self::StsPolicyInvalid,
        Self::StsWebpkiInvalid,
    ];

    /// The registry spelling (`certificate-not-trusted`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StarttlsNotSupported => "starttls-not-supported",
            Self::CertificateHostMismatch => "certificate-host-mismatch",
            Self::CertificateExpired => "certificate-expired",
            Self::CertificateNotTrusted => "certificate-not-trusted",
            Self::ValidationFailure => "validation-failure",
            Self::TlsaInvalid => "tlsa-invalid",
            Self::DnssecInvalid => "dnssec-invalid",
            Self::DaneRequired => "dane-required",
            Self::StsPolicyFetchError => "sts-policy-fetch-error",
            Self::StsPolicyInvalid => "sts-policy-invalid",
            Self::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a registered result type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown RFC 8460 result type")]
pub struct UnknownResultType;

impl FromStr for ResultType {
    type Err = UnknownResultType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(UnknownResultType)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_types_round_trip_through_their_names() {
        for t in ResultType::ALL {
            assert_eq!(t.as_str().parse(), Ok(t));
        }
        assert_eq!(
            "certificate-not-trusted".parse(),
            Ok(ResultType::CertificateNotTrusted)
        );
        assert_eq!(
            "Certificate-Not-Trusted".parse::<ResultType>(),
            Err(UnknownResultType)
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn result_types_serialize_by_name() {
        for t in ResultType::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{t}\""));
            assert_eq!(serde_json::from_str::<ResultType>(&json).unwrap(), t);
        }
    }
}
