//! ESMTP MAIL parameters a message keeps beyond its transaction.

/// `BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME` (RFC 6152).
    EightBitMime,
    /// `BINARYMIME` (RFC 3030; only with BDAT).
    BinaryMime,
}

/// `RET=` (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Ret {
    /// `FULL`: return the full message in a failure DSN.
    Full,
    /// `HDRS`: return only the headers.
    #[cfg_attr(feature = "serde", serde(rename = "hdrs"))]
    Headers,
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    #[test]
    fn parameters_serialize_by_name() {
        let json =
            serde_json::to_string(&[Body::SevenBit, Body::EightBitMime, Body::BinaryMime]).unwrap();
        assert_eq!(json, r#"["seven-bit","eight-bit-mime","binary-mime"]"#);
        let json = serde_json::to_string(&[Ret::Full, Ret::Headers]).unwrap();
        assert_eq!(json, r#"["full","hdrs"]"#);
        let back: [Ret; 2] = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [Ret::Full, Ret::Headers]);
    }
}
