//! Reply codes (RFC 5321 §4.2) and enhanced status codes (RFC 3463).

use std::fmt;
use std::str::FromStr;

/// A number that is not a reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid reply code")]
pub struct InvalidReplyCode;

/// A reply code `%x32-35 %x30-35 %x30-39` (RFC 5321 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// Validate a code: first digit 2 to 5, second 0 to 5, third 0 to 9.
    pub const fn new(code: u16) -> Result<Self, InvalidReplyCode> {
        let (a, b) = (code / 100, code / 10 % 10);
        if a >= 2 && a <= 5 && b <= 5 {
            Ok(Self(code))
        } else {
            Err(InvalidReplyCode)
        }
    }

    /// The numeric value.
    pub const fn value(self) -> u16 {
        self.0
    }

    /// 2yz: positive completion.
    pub const fn is_positive(self) -> bool {
        self.0 / 100 == 2
    }

    /// 3yz: positive intermediate (354).
    pub const fn is_intermediate(self) -> bool {
        self.0 / 100 == 3
    }

    /// 4yz: transient negative completion.
    pub const fn is_transient(self) -> bool {
        self.0 / 100 == 4
    }

    /// 5yz: permanent negative completion.
    pub const fn is_permanent(self) -> bool {
        self.0 / 100 == 5
    }
}

impl TryFrom<u16> for ReplyCode {
    type Error = InvalidReplyCode;
    fn try_from(code: u16) -> Result<Self, Self::Error> {
        Self::new(code)
    }
}

impl From<ReplyCode> for u16 {
    fn from(code: ReplyCode) -> Self {
        code.0
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

/// A string or triple that is not an enhanced status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid enhanced status code (RFC 3463 `class.subject.detail` expected)")]
pub struct InvalidEnhancedStatus;

/// An RFC 3463 enhanced status code `class.subject.detail`.
///
/// RFC 3463 §2: the class is 2, 4 or 5; subject and detail are 1 to 3 digits.
///
/// ```
/// use postern_types::EnhancedStatus;
/// let status: EnhancedStatus = "5.1.10".parse()?;
/// assert_eq!(status, EnhancedStatus::NULL_MX);
/// assert!(status.is_permanent());
/// assert_eq!(status.to_string(), "5.1.10");
/// # Ok::<(), postern_types::InvalidEnhancedStatus>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// `2.0.0`: success, nothing more to say.
    pub const OK: Self = Self::known(2, 0, 0);
    /// `4.0.0`: other undefined status (transient), e.g. a reply without one.
    pub const OTHER_TRANSIENT: Self = Self::known(4, 0, 0);
    /// `4.3.0`: other or undefined mail system status (transient).
    pub const SYSTEM_TEMPORARY: Self = Self::known(4, 3, 0);
    /// `4.4.1`: no answer from host (RFC 3463 §3.5).
    pub const NO_ANSWER: Self = Self::known(4, 4, 1);
    /// `4.4.2`: bad connection (RFC 3463 §3.5): lost, timed out, broken.
    pub const BAD_CONNECTION: Self = Self::known(4, 4, 2);
    /// `4.4.3`: directory (DNS) server failure (RFC 3463 §3.5).
    pub const DNS_FAILURE: Self = Self::known(4, 4, 3);
    /// `4.4.7`: delivery time expired (RFC 3463 §3.5).
    pub const EXPIRED: Self = Self::known(4, 4, 7);
    /// `4.7.0`: other or undefined security status (temporary).
    pub const SECURITY_TEMPORARY: Self = Self::known(4, 7, 0);
    /// `4.7.4`: security features not supported (temporary): no or refused STARTTLS.
    pub const TLS_NOT_AVAILABLE: Self = Self::known(4, 7, 4);
    /// `4.7.5`: cryptographic failure (temporary): handshake or certificate failure.
    pub const CRYPTO_FAILURE: Self = Self::known(4, 7, 5);
    /// `5.0.0`: other undefined status (permanent), e.g. a reply without one.
    pub const OTHER_PERMANENT: Self = Self::known(5, 0, 0);
    /// `5.1.2`: bad destination system address (RFC 3463 §3.2).
    pub const BAD_DESTINATION: Self = Self::known(5, 1, 2);
    /// `5.1.3`: bad destination mailbox address syntax (RFC 3463 §3.2).
    pub const BAD_ADDRESS_SYNTAX: Self = Self::known(5, 1, 3);
    /// `5.1.10`: recipient address has null MX (RFC 7505 §4, registered in §6).
    pub const NULL_MX: Self = Self::known(5, 1, 10);
    /// `5.3.4`: message too big for system (RFC 3463 §3.4).
    pub const MESSAGE_TOO_BIG: Self = Self::known(5, 3, 4);
    /// `5.4.4`: unable to route (RFC 3463 §3.5).
    pub const UNROUTABLE: Self = Self::known(5, 4, 4);
    /// `5.4.6`: routing loop detected (RFC 3463 §3.5).
    pub const ROUTING_LOOP: Self = Self::known(5, 4, 6);
    /// `5.5.4`: invalid command arguments (RFC 3463 §3.6), e.g. a parameter
    /// the server does not support.
    pub const INVALID_ARGUMENTS: Self = Self::known(5, 5, 4);
    /// `5.6.7`: non-ASCII addresses not permitted for that sender or
    /// recipient (RFC 6531 §3.5).
    pub const NON_ASCII_NOT_PERMITTED: Self = Self::known(5, 6, 7);
    /// `5.7.0`: other or undefined security status (permanent), e.g. a command
    /// refused before STARTTLS (RFC 3207 §4).
    pub const SECURITY_PERMANENT: Self = Self::known(5, 7, 0);
    /// `5.7.1`: delivery not authorized (RFC 3463 §3.8), e.g. relaying refused
    /// or no verified client certificate.
    pub const DELIVERY_NOT_AUTHORIZED: Self = Self::known(5, 7, 1);
    /// `5.7.30`: REQUIRETLS support required (RFC 8689 §6).
    pub const REQUIRETLS_REQUIRED: Self = Self::known(5, 7, 30);

    /// The constructor of the constants above, valid by inspection (class
    /// 2, 4 or 5, subject and detail below 1000).
    const fn known(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Builds a status; `class` must be 2, 4 or 5 and subject and detail at
    /// most 999 (RFC 3463 §2).
    pub const fn new(class: u8, subject: u16, detail: u16) -> Result<Self, InvalidEnhancedStatus> {
        if matches!(class, 2 | 4 | 5) && subject <= 999 && detail <= 999 {
            Ok(Self::known(class, subject, detail))
        } else {
            Err(InvalidEnhancedStatus)
        }
    }

    /// `class.0.0`: the status of a reply that carries none, from its code's
    /// first digit (RFC 3463 §2: the class matches it); `None` for 3yz.
    pub const fn of_reply_code(code: ReplyCode) -> Option<Self> {
        match Self::new((code.value() / 100) as u8, 0, 0) {
            Ok(status) => Some(status),
            Err(_) => None,
        }
    }

    /// Parses `d.d{1,3}.d{1,3}`.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// The class digit (2 success, 4 persistent transient failure, 5 permanent failure).
    pub const fn class(self) -> u8 {
        self.class
    }

    /// The subject number.
    pub const fn subject(self) -> u16 {
        self.subject
    }

    /// The detail number.
    pub const fn detail(self) -> u16 {
        self.detail
    }

    /// Whether the status reports a permanent failure (class 5).
    pub const fn is_permanent(self) -> bool {
        self.class == 5
    }
}

impl FromStr for EnhancedStatus {
    type Err = InvalidEnhancedStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn part(p: Option<&str>, max: usize) -> Result<u16, InvalidEnhancedStatus> {
            let p = p.ok_or(InvalidEnhancedStatus)?;
            if p.is_empty() || p.len() > max || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidEnhancedStatus);
            }
            p.parse().map_err(|_| InvalidEnhancedStatus)
        }
        let mut parts = s.split('.');
        let class = part(parts.next(), 1)?;
        let subject = part(parts.next(), 3)?;
        let detail = part(parts.next(), 3)?;
        if parts.next().is_some() {
            return Err(InvalidEnhancedStatus);
        }
        let class = u8::try_from(class).map_err(|_| InvalidEnhancedStatus)?;
        Self::new(class, subject, detail)
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

#[cfg(feature = "serde")]
mod serde_impls {
    use super::{EnhancedStatus, ReplyCode};
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    impl Serialize for EnhancedStatus {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }

    impl<'de> Deserialize<'de> for EnhancedStatus {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(D::Error::custom)
        }
    }

    impl Serialize for ReplyCode {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_u16(self.value())
        }
    }

    impl<'de> Deserialize<'de> for ReplyCode {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            Self::new(u16::deserialize(deserializer)?).map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_follow_the_grammar() {
        for good in [200, 250, 354, 421, 554, 559] {
            assert_eq!(ReplyCode::new(good).map(ReplyCode::value), Ok(good));
        }
        for bad in [0, 199, 260, 599, 600, 1000, 65535] {
            assert_eq!(ReplyCode::new(bad), Err(InvalidReplyCode), "{bad}");
        }
        assert_eq!(ReplyCode::new(250).unwrap().to_string(), "250");
    }

    #[test]
    fn enhanced_status_parses_per_rfc3463() {
        let c: EnhancedStatus = "5.1.10".parse().unwrap();
        assert_eq!(c, EnhancedStatus::NULL_MX);
        assert!(c.is_permanent());
        assert_eq!((c.class(), c.subject(), c.detail()), (5, 1, 10));
        assert!(!"4.7.5".parse::<EnhancedStatus>().unwrap().is_permanent());
        for bad in [
            "3.1.1", "5.1", "5.1.1.1", "5.1000.1", "5..1", "x.1.1", "5.1.+1", "", "05.1.1",
            "5.1.1 ",
        ] {
            assert!(bad.parse::<EnhancedStatus>().is_err(), "{bad}");
            assert_eq!(EnhancedStatus::parse(bad), None, "{bad}");
        }
        assert_eq!(EnhancedStatus::new(3, 0, 0), Err(InvalidEnhancedStatus));
        assert_eq!(EnhancedStatus::new(4, 1000, 0), Err(InvalidEnhancedStatus));
    }

    #[test]
    fn a_reply_without_status_gets_its_class() {
        let of = |c| EnhancedStatus::of_reply_code(ReplyCode::new(c).unwrap());
        assert_eq!(of(550).map(|s| s.to_string()).as_deref(), Some("5.0.0"));
        assert_eq!(of(421).map(|s| s.to_string()).as_deref(), Some("4.0.0"));
        assert_eq!(of(354), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn statuses_serialize_as_text() {
        let json = serde_json::to_string(&EnhancedStatus::CRYPTO_FAILURE).unwrap();
        assert_eq!(json, r#""4.7.5""#);
        let back: EnhancedStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, EnhancedStatus::CRYPTO_FAILURE);
        assert!(serde_json::from_str::<EnhancedStatus>(r#""4.7""#).is_err());
        let code: ReplyCode = serde_json::from_str("250").unwrap();
        assert_eq!(serde_json::to_string(&code).unwrap(), "250");
        assert!(serde_json::from_str::<ReplyCode>("650").is_err());
    }
}
