//! REQUIRETLS (RFC 8689): what a message asks of TLS.

use serde::{Deserialize, Serialize};

/// A message's TLS requirement (RFC 8689).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MessageTls {
    /// No requirement from the message: the destination's policy applies.
    #[default]
    Default,
    /// `MAIL FROM:<…> REQUIRETLS` (§4.1): every hop needs a securely found MX,
    /// STARTTLS, a PKIX- or DANE-verified certificate and REQUIRETLS advertised
    /// after STARTTLS; else the next MX is tried and, when none is left, the
    /// message is returned with 5.7.30 (§4.2.1).
    RequireTls,
    /// `TLS-Required: No` (§4.2.2): MTA-STS and DANE policies are not enforced
    /// for this message; TLS is still attempted opportunistically. Locally
    /// configured modes (encrypt, verify, …) still apply: they are the
    /// operator's own decision.
    TlsOptional,
}

impl MessageTls {
    /// The requirement of a message from its envelope and header (RFC 8689 §4.1,
    /// §4.2.2): the REQUIRETLS parameter wins over the header; the header counts
    /// only when its value is `No` (case-insensitive, surrounding spaces ignored).
    ///
    /// ```
    /// use postern_policy::MessageTls;
    /// assert_eq!(MessageTls::from_message(false, Some(" no ")), MessageTls::TlsOptional);
    /// assert_eq!(MessageTls::from_message(true, Some("No")), MessageTls::RequireTls);
    /// assert_eq!(MessageTls::from_message(false, Some("yes")), MessageTls::Default);
    /// ```
    pub fn from_message(requiretls_parameter: bool, tls_required_header: Option<&str>) -> Self {
        if requiretls_parameter {
            Self::RequireTls
        } else if tls_required_header.is_some_and(|v| v.trim().eq_ignore_ascii_case("no")) {
            Self::TlsOptional
        } else {
            Self::Default
        }
    }

    /// The requirement of a non-delivery report about a message with this
    /// requirement: REQUIRETLS is not enforced on bounces (RFC 8689 §5; the
    /// report is redacted to headers instead).
    pub const fn for_bounce(self) -> Self {
        Self::Default
    }

    /// Whether the server should advertise REQUIRETLS in this session: only once
    /// TLS is active (RFC 8689 §2, as Postfix does).
    pub const fn advertise(tls_active: bool) -> bool {
        tls_active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_overrides_header() {
        assert_eq!(MessageTls::from_message(true, None), MessageTls::RequireTls);
        assert_eq!(
            MessageTls::from_message(true, Some("No")),
            MessageTls::RequireTls
        );
        assert_eq!(
            MessageTls::from_message(false, Some("NO")),
            MessageTls::TlsOptional
        );
        assert_eq!(
            MessageTls::from_message(false, Some("No thanks")),
            MessageTls::Default
        );
        assert_eq!(MessageTls::from_message(false, None), MessageTls::Default);
        assert_eq!(MessageTls::RequireTls.for_bounce(), MessageTls::Default);
        assert!(!MessageTls::advertise(false));
        assert!(MessageTls::advertise(true));
    }
}
