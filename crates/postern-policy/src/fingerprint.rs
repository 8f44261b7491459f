//! SHA-256 certificate fingerprints (Postfix `smtpd_tls_fingerprint_digest = sha256`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 digest of a DER certificate (or of its public key, as configured).
///
/// This is the one fingerprint type of Postern: certificate pins, trusted
/// agents, certificate table rows and client certificates all use it.
///
/// Accepted spellings: 64 hex digits, optionally separated by `:` and optionally
/// prefixed with `sha256:`; case does not matter. Displayed as Postfix does:
/// upper-case pairs joined by `:`.
///
/// ```
/// use postern_policy::Fingerprint;
/// let fp: Fingerprint = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
/// assert!(fp.to_string().starts_with("AB:AB:"));
/// assert_eq!(Fingerprint::of(b"abc").to_string().len(), 95);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

/// Why a fingerprint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// Not 64 hex digits (32 bytes).
    #[error("expected 64 hex digits (a SHA-256 digest), found {0}")]
    Length(usize),
    /// A character that is not a hex digit or `:`.
    #[error("invalid character {0:?}")]
    Character(char),
}

impl Fingerprint {
    /// The SHA-256 digest of `der` (a DER certificate, or a DER public key).
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Parses a fingerprint.
    pub fn parse(input: &str) -> Result<Self, FingerprintError> {
        let text = input.trim();
        let text = text
            .strip_prefix("sha256:")
            .or_else(|| text.strip_prefix("SHA256:"))
            .unwrap_or(text);
        let mut nibbles = Vec::with_capacity(64);
        for c in text.chars() {
            match c {
                ':' => {}
                _ => nibbles.push(c.to_digit(16).ok_or(FingerprintError::Character(c))? as u8),
            }
            if nibbles.len() > 64 {
                return Err(FingerprintError::Length(nibbles.len()));
            }
        }
        if nibbles.len() != 64 {
            return Err(FingerprintError::Length(nibbles.len()));
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(nibbles.chunks_exact(2)) {
            *byte = (pair[0] << 4) | pair[1];
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<[u8; 32]> for Fingerprint {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let plain = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let fp = Fingerprint::parse(plain).unwrap();
        assert_eq!(fp.0[1], 0x11);
        assert_eq!(fp.0[31], 0xff);
        let shown = fp.to_string();
        assert_eq!(shown.len(), 95);
        assert_eq!(Fingerprint::parse(&shown).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&format!("sha256:{plain}")).unwrap(), fp);
    }

    #[test]
    fn rejects() {
        assert_eq!(Fingerprint::parse("abcd"), Err(FingerprintError::Length(4)));
        assert_eq!(
            Fingerprint::parse(&"g".repeat(64)),
            Err(FingerprintError::Character('g'))
        );
        assert!(Fingerprint::parse(&"a".repeat(66)).is_err());
        assert!(Fingerprint::parse("zz").is_err());
        assert!(Fingerprint::parse(&"é".repeat(32)).is_err());
    }

    #[test]
    fn digest_of_der() {
        // FIPS 180-2 appendix B.1: SHA-256("abc").
        let fp = Fingerprint::of(b"abc");
        assert_eq!(
            fp.to_string().replace(':', "").to_lowercase(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
    }
}
