//! The operator's configuration (TOML) and its validation.
//!
//! ```toml
//! [inbound]
//! tls = "offer"                    # none | offer | require
//! client_certificates = "ask"      # none | ask | require (require needs tls = "require")
//! min_tls_version = "TLSv1.2"
//!
//! [[inbound.trusted_agents]]
//! fingerprint = "sha256:…"         # or: issuer = "…", subject = "…"
//!
//! [outbound]
//! tls = "opportunistic"            # none | opportunistic | encrypt | verify | secure
//!                                  # | fingerprint | dane | dane-only | mta-sts
//!
//! [outbound.domains."example.com"]
//! tls = "verify"
//!
//! [outbound.domains.".example.org"]   # every subdomain of example.org
//! tls = "secure"
//! certificate_match = ["nexthop", "dot-nexthop"]
//!
//! [outbound.domains."[relay.example.net]:587"]
//! tls = "fingerprint"
//! pins = ["sha256:…"]
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;
use crate::lookup::OverrideTable;
use crate::modes::{ClientCertMode, ClientTlsMode, ServerTlsMode, TlsVersion};
use crate::name::PolicyKey;
use crate::outbound::{CertificateMatch, DestinationPolicy, OutboundPolicy};
use crate::server::{ServerPolicy, ServerPolicyError, TrustedAgent};

/// A configuration error: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML could not be read into the configuration types (syntax, unknown
    /// key, wrong type, unknown value); the message names the key and line.
    #[error("{0}")]
    Syntax(String),
    /// A value is invalid.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key, e.g. `outbound.domains."example.com".pins[0]`.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// Two keys name the same destination once normalised.
    #[error(
        "{key}: duplicate of {other} (names are compared in lower-case A-label form, without a trailing dot)"
    )]
    Duplicate {
        /// The key that repeats.
        key: String,
        /// The key it repeats.
        other: String,
    },
    /// Settings contradict each other.
    #[error("{key}: {problem}")]
    Contradiction {
        /// The key at fault.
        key: String,
        /// The contradiction.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.to_string(),
    }
}

fn contradiction(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The whole policy configuration: `[inbound]` and `[outbound]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// Inbound (server) settings.
    #[serde(default)]
    pub inbound: InboundConfig,
    /// Outbound (client) settings.
    #[serde(default)]
    pub outbound: OutboundConfig,
}

/// `[inbound]`. Every field has a default: offer TLS, no client certificates,
/// TLS 1.2 minimum, no trusted agents.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct InboundConfig {
    /// `tls`: none | offer | require.
    #[serde(default)]
    pub tls: ServerTlsMode,
    /// `client_certificates`: none | ask | require.
    #[serde(default)]
    pub client_certificates: ClientCertMode,
    /// `min_tls_version`: TLSv1.2 | TLSv1.3.
    #[serde(default)]
    pub min_tls_version: TlsVersion,
    /// `[[inbound.trusted_agents]]`: certificates allowed to relay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_agents: Vec<TrustedAgentConfig>,
}

/// One `[[inbound.trusted_agents]]`: either `fingerprint`, or `issuer` and `subject`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TrustedAgentConfig {
    /// SHA-256 fingerprint of the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Issuer DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Subject DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// `[outbound]`: the default for every destination, and per-destination overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OutboundConfig {
    /// `tls`: the default mode (opportunistic).
    #[serde(default)]
    pub tls: ClientTlsMode,
    /// `min_tls_version`: the default minimum (TLSv1.2); inherited by overrides.
    #[serde(default)]
    pub min_tls_version: TlsVersion,
    /// `certificate_match`: names to match (verify / secure only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_match: Vec<String>,
    /// `trust_anchors`: a PEM file of trust anchors replacing the system roots;
    /// inherited by overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchors: Option<String>,
    /// `pins`: SHA-256 fingerprints (fingerprint mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<String>,
    /// `[outbound.domains."…"]`: overrides keyed by `example.com`, `.example.com`
    /// (subdomains) or `[host]:port`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub domains: BTreeMap<String, DestinationConfig>,
}

/// One `[outbound.domains."…"]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DestinationConfig {
    /// `tls`: the mode for this destination (required).
    pub tls: ClientTlsMode,
    /// `min_tls_version`: else the `[outbound]` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tls_version: Option<TlsVersion>,
    /// `certificate_match`: names to match (verify / secure only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_match: Vec<String>,
    /// `trust_anchors`: else the `[outbound]` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchors: Option<String>,
    /// `pins`: SHA-256 fingerprints (fingerprint mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<String>,
}

/// The validated policy: inbound and outbound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Policy {
    /// Inbound decisions.
    pub inbound: ServerPolicy,
    /// Outbound decisions.
    pub outbound: OutboundPolicy,
}

impl Policy {
    /// Reads and validates a TOML configuration (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        PolicyConfig::from_toml_str(text)
    }
}

impl PolicyConfig {
    /// Reads a TOML configuration and validates it (feature `toml`; without
    /// it, deserialize a [`PolicyConfig`] with any serde format and call
    /// [`PolicyConfig::validate`]).
    ///
    /// ```
    /// use postern_policy::{ClientTlsMode, NextHop, PolicyConfig};
    /// let policy = PolicyConfig::from_toml_str(r#"
    ///     [outbound.domains.".example.org"]
    ///     tls = "verify"
    /// "#).unwrap();
    /// let (settings, source) = policy.outbound.lookup(&"mx.EXAMPLE.org.".parse::<NextHop>().unwrap());
    /// assert_eq!(settings.tls, ClientTlsMode::Verify);
    /// assert_eq!(source.to_string(), "domain .example.org (override)");
    ///
    /// let err = PolicyConfig::from_toml_str("[inbound]\nclient_certificates = \"require\"").unwrap_err();
    /// assert_eq!(err.to_string(), "inbound.client_certificates: client certificates can only be required when tls = \"require\"");
    /// ```
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<Policy, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate()
    }

    /// Validates the configuration into a [`Policy`].
    pub fn validate(&self) -> Result<Policy, ConfigError> {
        Ok(Policy {
            inbound: self.inbound.validate()?,
            outbound: self.outbound.validate()?,
        })
    }
}

impl InboundConfig {
    /// Validates `[inbound]`.
    pub fn validate(&self) -> Result<ServerPolicy, ConfigError> {
        let mut agents = Vec::with_capacity(self.trusted_agents.len());
        for (index, agent) in self.trusted_agents.iter().enumerate() {
            let key = format!("inbound.trusted_agents[{index}]");
            let parsed = match (&agent.fingerprint, &agent.issuer, &agent.subject) {
                (Some(fp), None, None) => TrustedAgent::Fingerprint(
                    Fingerprint::parse(fp).map_err(|e| invalid(format!("{key}.fingerprint"), e))?,
                ),
                (None, Some(issuer), Some(subject)) => {
                    if issuer.trim().is_empty() || subject.trim().is_empty() {
                        return Err(invalid(key, "issuer and subject must not be empty"));
                    }
                    TrustedAgent::Subject {
                        issuer: issuer.clone(),
                        subject: subject.clone(),
                    }
                }
                _ => {
                    return Err(invalid(
                        key,
                        "give either fingerprint, or both issuer and subject",
                    ));
                }
            };
            agents.push(parsed);
        }
        ServerPolicy::new(
            self.tls,
            self.client_certificates,
            self.min_tls_version,
            agents,
        )
        .map_err(|e| match e {
            ServerPolicyError::TrustedAgentsWithoutCertificates => {
                contradiction("inbound.trusted_agents", e.to_string())
            }
            _ => contradiction("inbound.client_certificates", e.to_string()),
        })
    }
}

fn destination(
    key: &str,
    tls: ClientTlsMode,
    min_tls_version: TlsVersion,
    certificate_match: &[String],
    trust_anchors: Option<&String>,
    pins: &[String],
) -> Result<DestinationPolicy, ConfigError> {
    let mut matches = Vec::with_capacity(certificate_match.len());
    for (i, m) in certificate_match.iter().enumerate() {
        matches.push(
            CertificateMatch::parse(m)
                .map_err(|e| invalid(format!("{key}.certificate_match[{i}]"), e))?,
        );
    }
    let mut parsed_pins = Vec::with_capacity(pins.len());
    for (i, pin) in pins.iter().enumerate() {
        parsed_pins
            .push(Fingerprint::parse(pin).map_err(|e| invalid(format!("{key}.pins[{i}]"), e))?);
    }
    if !matches.is_empty() && !matches!(tls, ClientTlsMode::Verify | ClientTlsMode::Secure) {
        return Err(contradiction(
            format!("{key}.certificate_match"),
            format!("has no effect with tls = \"{tls}\" (only verify or secure)"),
        ));
    }
    if tls == ClientTlsMode::Fingerprint && parsed_pins.is_empty() {
        return Err(contradiction(
            format!("{key}.pins"),
            "tls = \"fingerprint\" needs at least one pin",
        ));
    }
    if tls != ClientTlsMode::Fingerprint && !parsed_pins.is_empty() {
        return Err(contradiction(
            format!("{key}.pins"),
            format!("has no effect with tls = \"{tls}\" (only fingerprint)"),
        ));
    }
    if let Some(file) = trust_anchors
        && file.trim().is_empty()
    {
        return Err(invalid(format!("{key}.trust_anchors"), "empty file name"));
    }
    Ok(DestinationPolicy {
        tls,
        min_tls_version,
        certificate_match: matches,
        trust_anchors: trust_anchors.cloned(),
        pins: parsed_pins,
    })
}

impl OutboundConfig {
    /// Validates `[outbound]`.
    pub fn validate(&self) -> Result<OutboundPolicy, ConfigError> {
        let default = destination(
            "outbound",
            self.tls,
            self.min_tls_version,
            &self.certificate_match,
            self.trust_anchors.as_ref(),
            &self.pins,
        )?;
        let mut overrides = OverrideTable::new();
        let mut spelled: BTreeMap<PolicyKey, &str> = BTreeMap::new();
        for (name, entry) in &self.domains {
            let key = format!("outbound.domains.{name:?}");
            let policy_key = PolicyKey::parse(name).map_err(|e| invalid(key.clone(), e))?;
            if let Some(other) = spelled.get(&policy_key) {
                return Err(ConfigError::Duplicate {
                    key,
                    other: format!("outbound.domains.{other:?}"),
                });
            }
            let policy = destination(
                &key,
                entry.tls,
                entry.min_tls_version.unwrap_or(self.min_tls_version),
                &entry.certificate_match,
                entry.trust_anchors.as_ref().or(self.trust_anchors.as_ref()),
                &entry.pins,
            )?;
            spelled.insert(policy_key.clone(), name);
            overrides
                .insert(policy_key, policy)
                .map_err(|e| invalid(key, e))?;
        }
        Ok(OutboundPolicy { default, overrides })
    }
}

#[cfg(all(test, feature = "toml"))]
mod tests {
    use super::*;
    use crate::name::NextHop;

    fn err(text: &str) -> String {
        PolicyConfig::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_config_is_the_default() {
        let policy = PolicyConfig::from_toml_str("").unwrap();
        assert_eq!(policy.inbound.tls, ServerTlsMode::Offer);
        assert_eq!(policy.inbound.client_certificates, ClientCertMode::None);
        assert_eq!(policy.outbound.default.tls, ClientTlsMode::Opportunistic);
        assert_eq!(policy.outbound.default.min_tls_version, TlsVersion::Tls12);
        assert!(policy.outbound.overrides.is_empty());
    }

    #[test]
    fn full_config() {
        let pin = "ab".repeat(32);
        let text = format!(
            r#"
            [inbound]
            tls = "require"
            client_certificates = "require"
            min_tls_version = "TLSv1.3"
            [[inbound.trusted_agents]]
            fingerprint = "sha256:{pin}"
            [[inbound.trusted_agents]]
            issuer = "CN=Corp CA"
            subject = "CN=mx1.corp.example"

            [outbound]
            tls = "opportunistic"
            trust_anchors = "corp-ca.pem"
            [outbound.domains."example.com"]
            tls = "verify"
            certificate_match = ["hostname", ".example.com"]
            [outbound.domains.".example.org"]
            tls = "secure"
            min_tls_version = "TLSv1.3"
            [outbound.domains."[relay.example.net]:587"]
            tls = "fingerprint"
            pins = ["{pin}"]
            [outbound.domains."bücher.example"]
            tls = "encrypt"
            "#
        );
        let policy = PolicyConfig::from_toml_str(&text).unwrap();
        assert_eq!(policy.inbound.trusted_agents.len(), 2);
        assert_eq!(policy.inbound.min_tls_version, TlsVersion::Tls13);
        assert_eq!(policy.outbound.overrides.len(), 4);
        let look = |hop: &str| {
            let (settings, source) = policy.outbound.lookup(&NextHop::parse(hop).unwrap());
            (settings.clone(), source.to_string())
        };
        let (s, src) = look("a.b.example.org");
        assert_eq!(
            (s.tls, s.min_tls_version),
            (ClientTlsMode::Secure, TlsVersion::Tls13)
        );
        assert_eq!(src, "domain .example.org (override)");
        assert_eq!(s.trust_anchors.as_deref(), Some("corp-ca.pem"));
        let (s, src) = look("[Relay.Example.net]:587");
        assert_eq!((s.tls, s.pins.len()), (ClientTlsMode::Fingerprint, 1));
        assert_eq!(src, "next hop [relay.example.net]:587 (override)");
        let (s, src) = look("xn--bcher-kva.example.");
        assert_eq!(s.tls, ClientTlsMode::Encrypt);
        assert_eq!(src, "domain xn--bcher-kva.example (override)");
        let (s, src) = look("example.net");
        assert_eq!(
            (s.tls, src.as_str()),
            (ClientTlsMode::Opportunistic, "default")
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            err("[inbound]\ntls = \"offer\"\nclient_certificates = \"require\""),
            "inbound.client_certificates: client certificates can only be required when tls = \"require\""
        );
        assert!(err("[inbound]\ntls = \"maybe\"").contains("tls"));
        assert!(err("[inbound]\ntsl = \"offer\"").contains("tsl"));
        assert!(
            err("[outbound.domains.\"example.com\"]\ntls = \"verify\"\nfoo = 1").contains("foo")
        );
        assert!(
            err("[outbound.domains.\"example.com\"]\nmin_tls_version = \"TLSv1.3\"")
                .contains("tls")
        );
        assert_eq!(
            err("[outbound.domains.\"exa mple.com\"]\ntls = \"verify\""),
            "outbound.domains.\"exa mple.com\": \"exa mple.com\" is not a valid domain name"
        );
        assert_eq!(
            err(
                "[outbound.domains.\"Example.com\"]\ntls = \"verify\"\n[outbound.domains.\"example.com.\"]\ntls = \"encrypt\""
            ),
            "outbound.domains.\"example.com.\": duplicate of outbound.domains.\"Example.com\" (names are compared in lower-case A-label form, without a trailing dot)"
        );
        assert!(err("[outbound.domains.\"bücher.example\"]\ntls = \"verify\"\n[outbound.domains.\"xn--bcher-kva.example\"]\ntls = \"verify\"").contains("duplicate"));
        assert_eq!(
            err("[outbound.domains.\"example.com\"]\ntls = \"fingerprint\""),
            "outbound.domains.\"example.com\".pins: tls = \"fingerprint\" needs at least one pin"
        );
        assert_eq!(
            err("[outbound.domains.\"example.com\"]\ntls = \"verify\"\npins = [\"00\"]"),
            "outbound.domains.\"example.com\".pins[0]: expected 64 hex digits (a SHA-256 digest), found 2"
        );
        assert_eq!(
            err("[outbound]\ntls = \"encrypt\"\ncertificate_match = [\"nexthop\"]"),
            "outbound.certificate_match: has no effect with tls = \"encrypt\" (only verify or secure)"
        );
        assert_eq!(
            err("[[inbound.trusted_agents]]\nissuer = \"CN=CA\""),
            "inbound.trusted_agents[0]: give either fingerprint, or both issuer and subject"
        );
        assert_eq!(
            err(&format!(
                "[[inbound.trusted_agents]]\nfingerprint = \"{}\"",
                "ab".repeat(32)
            )),
            "inbound.trusted_agents: trusted agents need client_certificates = \"ask\" or \"require\""
        );
        assert!(
            err("[outbound.domains.\"[mx.example.com]:0\"]\ntls = \"verify\"")
                .contains("[mx.example.com]:0")
        );
    }

    #[test]
    fn config_round_trips_through_toml() {
        let text = "[inbound]\ntls = \"require\"\n\n[outbound]\ntls = \"verify\"\n\n[outbound.domains.\".example.org\"]\ntls = \"dane-only\"\n";
        let config: PolicyConfig = toml::from_str(text).unwrap();
        let again: PolicyConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
        assert!(config.validate().is_ok());
    }
}
