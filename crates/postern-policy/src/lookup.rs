//! Per-destination override tables and the lookup order.
//!
//! For a destination domain the order is (DESIGN §3, as Postfix's
//! `smtp_tls_policy_maps`): the exact name, then `.parent` entries from the nearest
//! parent to the farthest, then the default. A `[host]:port` next hop matches only
//! its own `[host]:port` key. Names are compared in canonical form (lower-case
//! A-labels, no trailing dot), so case, U-labels and a trailing dot never matter.
//! The domain order is `postern-types`' [`DomainTable`], shared with the routes
//! and accepted domains of an MTA.

use std::collections::BTreeMap;
use std::fmt;

use postern_types::{DomainRule, DomainTable};

use crate::name::{DomainName, Host, NextHop, PolicyKey};

/// Which rule of a table decided, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicySource {
    /// No override matched: the default applies.
    Default,
    /// An override matched.
    Override(PolicyKey),
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Override(key @ PolicyKey::HostPort { .. }) => {
                write!(f, "next hop {key} (override)")
            }
            Self::Override(key) => write!(f, "domain {key} (override)"),
        }
    }
}

/// A table of overrides keyed by [`PolicyKey`]: its domain keys are a
/// [`DomainTable`] (the one lookup rule of `postern-types`), its `[host]:port`
/// keys match exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideTable<T> {
    domains: DomainTable<T>,
    hosts: BTreeMap<(Host, u16), T>,
}

impl<T> Default for OverrideTable<T> {
    fn default() -> Self {
        Self {
            domains: DomainTable::new(),
            hosts: BTreeMap::new(),
        }
    }
}

/// A key was inserted twice (after normalisation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duplicate entry for {key}")]
#[non_exhaustive]
pub struct DuplicateKey {
    /// The normalised key.
    pub key: PolicyKey,
}

impl<T> OverrideTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; a key already present (after normalisation) is an error.
    pub fn insert(&mut self, key: PolicyKey, value: T) -> Result<(), DuplicateKey> {
        use std::collections::btree_map::Entry;
        let rule = match key {
            PolicyKey::Exact(name) => DomainRule::Exact(name),
            PolicyKey::Subdomains(name) => DomainRule::Subdomains(name),
            PolicyKey::HostPort { host, port } => {
                return match self.hosts.entry((host, port)) {
                    Entry::Occupied(e) => {
                        let (host, port) = e.key().clone();
                        Err(DuplicateKey {
                            key: PolicyKey::HostPort { host, port },
                        })
                    }
                    Entry::Vacant(e) => {
                        e.insert(value);
                        Ok(())
                    }
                };
            }
        };
        self.domains.insert(rule, value).map_err(|e| DuplicateKey {
            key: domain_key(&e.rule),
        })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.domains.len() + self.hosts.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.hosts.is_empty()
    }

    /// The entries, in key order (exact names, `.parent` entries, `[host]:port`).
    pub fn iter(&self) -> impl Iterator<Item = (PolicyKey, &T)> {
        let domains = self.domains.iter().map(|(rule, v)| (domain_key(rule), v));
        let hosts = self.hosts.iter().map(|((host, port), v)| {
            let key = PolicyKey::HostPort {
                host: host.clone(),
                port: *port,
            };
            (key, v)
        });
        domains.chain(hosts)
    }

    /// The most specific entry for `next_hop`, if any.
    pub fn find(&self, next_hop: &NextHop) -> Option<(PolicyKey, &T)> {
        match next_hop {
            NextHop::Domain(domain) => self.find_domain(domain),
            NextHop::HostPort { host, port } => {
                let value = self.hosts.get(&(host.clone(), *port))?;
                let key = PolicyKey::HostPort {
                    host: host.clone(),
                    port: *port,
                };
                Some((key, value))
            }
        }
    }

    /// The most specific entry for a domain: exact, then `.parent` nearest first.
    pub fn find_domain(&self, domain: &DomainName) -> Option<(PolicyKey, &T)> {
        self.domains
            .lookup(domain)
            .map(|(rule, value)| (domain_key(rule), value))
    }

    /// The value that applies to `next_hop` (an override, or `default`) and why.
    pub fn resolve<'a>(&'a self, next_hop: &NextHop, default: &'a T) -> (&'a T, PolicySource) {
        match self.find(next_hop) {
            Some((key, value)) => (value, PolicySource::Override(key)),
            None => (default, PolicySource::Default),
        }
    }
}

/// The policy key of a domain rule.
fn domain_key(rule: &DomainRule) -> PolicyKey {
    match rule {
        DomainRule::Exact(name) => PolicyKey::Exact(name.clone()),
        DomainRule::Subdomains(name) => PolicyKey::Subdomains(name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str]) -> OverrideTable<String> {
        let mut t = OverrideTable::new();
        for key in keys {
            t.insert(PolicyKey::parse(key).unwrap(), (*key).to_owned())
                .unwrap();
        }
        t
    }

    fn hit(t: &OverrideTable<String>, dest: &str) -> Option<String> {
        t.find(&NextHop::parse(dest).unwrap())
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn exact_then_nearest_parent_then_default() {
        let t = table(&["example.com", ".example.com", ".mx.example.com", ".com"]);
        assert_eq!(hit(&t, "example.com").as_deref(), Some("example.com"));
        assert_eq!(hit(&t, "a.example.com").as_deref(), Some(".example.com"));
        assert_eq!(
            hit(&t, "a.mx.example.com").as_deref(),
            Some(".mx.example.com")
        );
        assert_eq!(hit(&t, "mx.example.com").as_deref(), Some(".example.com"));
        assert_eq!(hit(&t, "other.com").as_deref(), Some(".com"));
        assert_eq!(hit(&t, "example.org"), None);
    }

    #[test]
    fn dot_entries_do_not_match_the_domain_itself() {
        let t = table(&[".example.com"]);
        assert_eq!(hit(&t, "example.com"), None);
    }

    #[test]
    fn host_port_keys_match_exactly() {
        let t = table(&["[mx.example.com]:587", "example.com"]);
        assert_eq!(
            hit(&t, "[MX.example.com.]:587").as_deref(),
            Some("[mx.example.com]:587")
        );
        assert_eq!(hit(&t, "[mx.example.com]:25"), None);
        assert_eq!(hit(&t, "[example.com]"), None);
    }

    #[test]
    fn duplicates_after_normalisation_are_rejected() {
        let mut t = table(&["example.com"]);
        let err = t
            .insert(PolicyKey::parse("EXAMPLE.com.").unwrap(), String::new())
            .unwrap_err();
        assert_eq!(err.to_string(), "duplicate entry for example.com");
        assert!(
            t.insert(PolicyKey::parse("[mx.example.com]").unwrap(), String::new())
                .is_ok()
        );
        assert!(
            t.insert(
                PolicyKey::parse("[mx.example.com]:25").unwrap(),
                String::new()
            )
            .is_err()
        );
    }

    #[test]
    fn sources_explain_themselves() {
        let t = table(&[".example.com"]);
        let default = String::from("default");
        let (_, source) = t.resolve(&NextHop::parse("a.example.com").unwrap(), &default);
        assert_eq!(source.to_string(), "domain .example.com (override)");
        let (value, source) = t.resolve(&NextHop::parse("example.net").unwrap(), &default);
        assert_eq!(
            (value.as_str(), source.to_string().as_str()),
            ("default", "default")
        );
    }
}
