//! Relay authorisation: who may send mail where.
//!
//! The relay is never an open relay (RFC 2505, anti-spam recommendations for
//! SMTP MTAs). For each RCPT TO the server asks
//! [`AccessPolicy::check_recipient`]:
//!
//! - a recipient in an accepted domain (Postfix `mydestination` /
//!   `relay_domains`) is accepted from anyone;
//! - any other recipient only from an authorised client: a client address in
//!   an authorised network (Postfix `mynetworks`), or a client whose verified
//!   TLS certificate matches a trusted agent (Postfix `permit_tls_clientcerts`
//!   with `relay_clientcerts`);
//! - anyone else gets `554 5.7.1 <rcpt>: Relay access denied`, Postfix's
//!   reply.
//!
//! Sender-specified routing in the local part (`user%other@local`,
//! `user!other@local`, `"user@other"@local`) is refused from unauthorised
//! clients even for accepted domains (Postfix `allow_untrusted_routing = no`):
//! a next hop that honours it would turn the relay into an open one.
//!
//! Whether a client certificate authorises relaying is decided in one place,
//! the TLS policy: [`ServerPolicy::may_relay`](postern_policy::ServerPolicy::may_relay)
//! checks that the certificate verified against the client-certificate roots
//! and matches one of `[[tls.inbound.trusted_agents]]`. This module only
//! takes its answer ([`Client::trusted_agent`]).

use std::net::IpAddr;

use ipnet::IpNet;
use postern_types::{DomainName, DomainRule, DomainTable};

use crate::config::Config;
use crate::envelope::EnhancedStatus;

/// What the server knows about the client when a recipient is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's IP address.
    pub ip: IpAddr,
    /// Set when the TLS policy authorised relaying by the client's verified
    /// certificate (a trusted agent): the policy's reason, for the logs.
    pub trusted_agent: Option<String>,
}

/// Why a client may relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The recipient is in an accepted domain; anyone may send to it.
    AcceptedDomain,
    /// The client address is in this authorised network.
    Network(IpNet),
    /// The client presented a verified certificate of a trusted agent; the
    /// policy's reason.
    TrustedAgent(String),
}

/// A refused recipient. Its `Display` is the reply line the server sends,
/// without CRLF: `554 5.7.1 <rcpt>: Relay access denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {enhanced} {text}")]
pub struct Denied {
    /// The SMTP reply code.
    pub code: u16,
    /// The enhanced status code.
    pub enhanced: EnhancedStatus,
    /// The reply text after the codes.
    pub text: String,
}

/// The relay's access rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessPolicy {
    /// Domains accepted from anyone: `example.com` is that domain only,
    /// `.example.com` its subdomains (the lookup rule and normalisation of
    /// the TLS policy and the static routes).
    pub accepted_domains: DomainTable<()>,
    /// Client networks that may relay anywhere.
    pub authorised_networks: Vec<IpNet>,
}

impl AccessPolicy {
    /// The rules of a configuration: `accepted_domains` and
    /// `authorised_networks`. (An accepted domain that does not parse, in a
    /// configuration that was not validated, accepts nothing.)
    pub fn from_config(config: &Config) -> Self {
        let mut accepted = DomainTable::new();
        for rule in config
            .accepted_domains
            .iter()
            .filter_map(|d| DomainRule::parse(d).ok())
        {
            // A domain written twice, in any form, is accepted either way.
            let _ = accepted.insert(rule, ());
        }
        Self::new(accepted, config.authorised_networks.clone())
    }

    /// A policy with these accepted domains and networks.
    pub fn new(accepted_domains: DomainTable<()>, authorised_networks: Vec<IpNet>) -> Self {
        Self {
            accepted_domains,
            authorised_networks,
        }
    }

    /// Whether `domain` is one of ours.
    pub fn is_accepted_domain(&self, domain: &str) -> bool {
        DomainName::parse(domain).is_ok_and(|name| self.accepted_domains.lookup(&name).is_some())
    }

    /// Why `client` may relay to any destination, if it may.
    pub fn relay_grant(&self, client: &Client) -> Option<Grant> {
        // An IPv4-mapped IPv6 address (a dual-stack listener) is matched as IPv4.
        let ip = match client.ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client.ip, IpAddr::V4),
            v4 => v4,
        };
        if let Some(net) = self.authorised_networks.iter().find(|n| n.contains(&ip)) {
            return Some(Grant::Network(*net));
        }
        client.trusted_agent.clone().map(Grant::TrustedAgent)
    }

    /// Decides a RCPT TO. `recipient` is the mailbox without angle brackets
    /// (source routes already dropped, RFC 5321 §4.1.1.3).
    pub fn check_recipient(&self, client: &Client, recipient: &str) -> Result<Grant, Denied> {
        let grant = self.relay_grant(client);
        if let Some((local, domain)) = recipient.rsplit_once('@')
            && self.is_accepted_domain(domain)
        {
            let routed = local.contains(['@', '%', '!']);
            if !routed {
                return Ok(grant.unwrap_or(Grant::AcceptedDomain));
            }
            if let Some(grant) = grant {
                return Ok(grant);
            }
        } else if let Some(grant) = grant {
            return Ok(grant);
        }
        Err(Denied {
            code: 554,
            enhanced: EnhancedStatus::DELIVERY_NOT_AUTHORIZED,
            text: format!("<{}>: Relay access denied", printable(recipient)),
        })
    }
}

/// The recipient as echoed in a reply: no control characters (it came from
/// the client) and bounded length.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccessPolicy {
        let mut accepted = DomainTable::new();
        for rule in ["example.com", ".corp.example"] {
            accepted.insert(rule.parse().unwrap(), ()).unwrap();
        }
        AccessPolicy::new(
            accepted,
            vec![
                "127.0.0.0/8".parse().unwrap(),
                "::1/128".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
        )
    }

    fn client(ip: &str) -> Client {
        Client {
            ip: ip.parse().unwrap(),
            trusted_agent: None,
        }
    }

    fn agent(ip: &str) -> Client {
        Client {
            ip: ip.parse().unwrap(),
            trusted_agent: Some("trusted agent fingerprint sha256:ab".into()),
        }
    }

    #[test]
    fn accepted_domains_from_anyone() {
        let p = policy();
        let stranger = client("203.0.113.9");
        assert_eq!(
            p.check_recipient(&stranger, "user@example.com"),
            Ok(Grant::AcceptedDomain)
        );
        assert_eq!(
            p.check_recipient(&stranger, "user@EXAMPLE.COM."),
            Ok(Grant::AcceptedDomain)
        );
        assert_eq!(
            p.check_recipient(&stranger, "user@mail.corp.example"),
            Ok(Grant::AcceptedDomain)
        );
        // `.corp.example` is subdomains only; `example.com` is that domain only.
        assert!(p.check_recipient(&stranger, "user@corp.example").is_err());
        assert!(
            p.check_recipient(&stranger, "user@sub.example.com")
                .is_err()
        );
        assert!(p.check_recipient(&stranger, "user@notexample.com").is_err());
    }

    #[test]
    fn relaying_denied_to_strangers_with_postfix_reply() {
        let p = policy();
        let denied = p
            .check_recipient(&client("203.0.113.9"), "victim@elsewhere.org")
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "554 5.7.1 <victim@elsewhere.org>: Relay access denied"
        );
        // No domain, address literal: also relaying.
        assert!(
            p.check_recipient(&client("203.0.113.9"), "postmaster")
                .is_err()
        );
        assert!(
            p.check_recipient(&client("203.0.113.9"), "u@[192.0.2.1]")
                .is_err()
        );
    }

    #[test]
    fn authorised_networks_relay() {
        let p = policy();
        assert_eq!(
            p.check_recipient(&client("127.0.0.1"), "x@elsewhere.org"),
            Ok(Grant::Network("127.0.0.0/8".parse().unwrap()))
        );
        assert!(
            p.check_recipient(&client("10.1.200.3"), "x@elsewhere.org")
                .is_ok()
        );
        assert!(
            p.check_recipient(&client("10.2.0.1"), "x@elsewhere.org")
                .is_err()
        );
        assert!(p.check_recipient(&client("::1"), "x@elsewhere.org").is_ok());
        assert!(
            p.check_recipient(&client("::ffff:127.0.0.1"), "x@elsewhere.org")
                .is_ok()
        );
        assert!(
            p.check_recipient(&client("::2"), "x@elsewhere.org")
                .is_err()
        );
    }

    #[test]
    fn trusted_agents_relay() {
        let p = policy();
        assert_eq!(
            p.check_recipient(&agent("203.0.113.9"), "x@elsewhere.org"),
            Ok(Grant::TrustedAgent(
                "trusted agent fingerprint sha256:ab".into()
            ))
        );
        // Routing in the local part is allowed for authorised clients.
        assert!(
            p.check_recipient(&agent("203.0.113.9"), "a%b@example.com")
                .is_ok()
        );
    }

    #[test]
    fn trusted_agent_decision_comes_from_the_tls_policy() {
        use postern_policy::{
            CertificateCheck, CertificateFailure, ClientCertificate, Fingerprint, PeerTrust,
            PolicyConfig,
        };
        let fp = "sha256:".to_owned() + &"ab".repeat(32);
        let tls = PolicyConfig::from_toml_str(&format!(
            "[inbound]\ntls = \"require\"\nclient_certificates = \"ask\"\n\
             [[inbound.trusted_agents]]\nfingerprint = \"{fp}\"\n"
        ))
        .unwrap();
        let print = Fingerprint::parse(&fp).unwrap();
        let verified = ClientCertificate::new(print, "CN=a", "CN=ca", CertificateCheck::verified());
        let unverified = ClientCertificate::new(
            print,
            "CN=a",
            "CN=ca",
            CertificateCheck::failed(PeerTrust::Untrusted, CertificateFailure::NotTrusted),
        );
        let client = |c: &ClientCertificate| {
            let d = tls.inbound.may_relay(Some(c));
            Client {
                ip: "203.0.113.9".parse().unwrap(),
                trusted_agent: d.allowed.then_some(d.reason),
            }
        };
        let p = policy();
        assert!(matches!(
            p.check_recipient(&client(&verified), "x@elsewhere.org"),
            Ok(Grant::TrustedAgent(_))
        ));
        assert!(
            p.check_recipient(&client(&unverified), "x@elsewhere.org")
                .is_err()
        );
    }

    #[test]
    fn sender_routing_in_local_part_is_refused_from_strangers() {
        let p = policy();
        let stranger = client("203.0.113.9");
        for rcpt in [
            "victim%elsewhere.org@example.com",
            "elsewhere.org!victim@example.com",
            "\"v@elsewhere.org\"@example.com",
        ] {
            assert!(p.check_recipient(&stranger, rcpt).is_err(), "{rcpt}");
            assert!(
                p.check_recipient(&client("127.0.0.1"), rcpt).is_ok(),
                "{rcpt}"
            );
        }
    }

    #[test]
    fn reply_cannot_be_split_by_the_recipient() {
        let p = policy();
        let denied = p
            .check_recipient(&client("203.0.113.9"), "a@b.org\r\n250 ok")
            .unwrap_err();
        assert!(!denied.to_string().contains('\n'));
    }
}
