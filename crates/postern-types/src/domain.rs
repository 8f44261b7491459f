//! Domain names in their one canonical form, and the one lookup rule of
//! per-domain tables.
//!
//! Every name is normalised once, here: lower case, A-label (punycode) form via
//! the `idna` crate (UTS #46 with STD3 rules and DNS length checks), one
//! trailing dot removed. `Bücher.Example.` and `xn--bcher-kva.example` are the
//! same [`DomainName`], so a TLS policy override, a static route and an
//! accepted domain written either way match the same destinations.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty (or only a dot).
    #[error("empty name")]
    Empty,
    /// The name is not a valid domain name (IDNA / STD3 / DNS length rules).
    #[error("{name:?} is not a valid domain name")]
    InvalidDomain {
        /// The rejected input.
        name: String,
    },
    /// A bare IP address was given where a domain name was expected.
    #[error("{name:?} is an address: write it as [{name}]")]
    BareAddress {
        /// The rejected input.
        name: String,
    },
    /// A `[host]:port` key is malformed.
    #[error("{key:?} is not a valid [host]:port key")]
    InvalidHostKey {
        /// The rejected input.
        key: String,
    },
}

/// A domain name in canonical form: lower-case A-labels, no trailing dot.
///
/// ```
/// use postern_types::DomainName;
/// let name: DomainName = "Bücher.Example.".parse().unwrap();
/// assert_eq!(name.as_str(), "xn--bcher-kva.example");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Parses and normalises a domain name. One trailing dot is ignored.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if trimmed.parse::<IpAddr>().is_ok() {
            return Err(NameError::BareAddress {
                name: trimmed.to_owned(),
            });
        }
        let ascii =
            idna::domain_to_ascii_strict(trimmed).map_err(|_| NameError::InvalidDomain {
                name: input.to_owned(),
            })?;
        // domain_to_ascii_strict verifies DNS lengths, which rejects empty labels
        // ("a..b", a leading dot) and a second trailing dot.
        if ascii.is_empty() || ascii.ends_with('.') {
            return Err(NameError::InvalidDomain {
                name: input.to_owned(),
            });
        }
        Ok(Self(ascii))
    }

    /// The canonical text (lower-case A-labels, no trailing dot).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent domains, nearest first: `a.b.example` yields `b.example`, `example`.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.0
            .match_indices('.')
            .map(move |(index, _)| &self.0[index + 1..])
    }

    /// Whether `self` equals `other` or is a subdomain of it.
    pub fn is_within(&self, other: &Self) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.ends_with(&other.0)
                && self.0.as_bytes()[self.0.len() - other.0.len() - 1] == b'.')
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DomainName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for DomainName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

/// A rule of a [`DomainTable`]: `example.com` (that domain exactly) or
/// `.example.com` (its subdomains, not `example.com` itself), as Postfix's
/// tables write them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainRule {
    /// An exact domain.
    Exact(DomainName),
    /// Every subdomain of this domain (written with a leading dot).
    Subdomains(DomainName),
}

impl DomainRule {
    /// Parses `example.com` or `.example.com` (names normalised as [`DomainName`]).
    pub fn parse(input: &str) -> Result<Self, NameError> {
        match input.strip_prefix('.') {
            Some(parent) => DomainName::parse(parent).map(Self::Subdomains),
            None => DomainName::parse(input).map(Self::Exact),
        }
    }

    /// The domain the rule names.
    pub fn domain(&self) -> &DomainName {
        match self {
            Self::Exact(name) | Self::Subdomains(name) => name,
        }
    }
}

impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => name.fmt(f),
            Self::Subdomains(name) => write!(f, ".{name}"),
        }
    }
}

impl FromStr for DomainRule {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A rule was inserted twice (after normalisation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duplicate entry for {rule}")]
pub struct DuplicateRule {
    /// The normalised rule.
    pub rule: DomainRule,
}

/// A per-domain table with the one lookup order of DESIGN §3 (as Postfix's
/// `smtp_tls_policy_maps` and `transport_maps`): the exact name, then
/// `.parent` entries from the nearest parent to the farthest. The default that
/// applies when nothing matches is the caller's.
///
/// ```
/// use postern_types::{DomainName, DomainRule, DomainTable};
/// let mut table = DomainTable::new();
/// table.insert(DomainRule::parse("example.com")?, "exact")?;
/// table.insert(DomainRule::parse(".example.com")?, "subdomains")?;
/// let hit = |name: &str| table.lookup(&DomainName::parse(name).unwrap()).map(|(_, v)| *v);
/// assert_eq!(hit("Example.COM."), Some("exact"));
/// assert_eq!(hit("a.b.example.com"), Some("subdomains"));
/// assert_eq!(hit("example.org"), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainTable<T> {
    entries: BTreeMap<DomainRule, T>,
}

impl<T> Default for DomainTable<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<T> DomainTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; a rule already present (after normalisation) is an error.
    pub fn insert(&mut self, rule: DomainRule, value: T) -> Result<(), DuplicateRule> {
        use std::collections::btree_map::Entry;
        match self.entries.entry(rule) {
            Entry::Occupied(e) => Err(DuplicateRule {
                rule: e.key().clone(),
            }),
            Entry::Vacant(e) => {
                e.insert(value);
                Ok(())
            }
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries: exact names first, then subdomain rules, each in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&DomainRule, &T)> {
        self.entries.iter()
    }

    /// The most specific entry for `domain` and the rule that matched: the
    /// exact name, then `.parent` entries nearest first.
    pub fn lookup(&self, domain: &DomainName) -> Option<(&DomainRule, &T)> {
        if let Some(hit) = self
            .entries
            .get_key_value(&DomainRule::Exact(domain.clone()))
        {
            return Some(hit);
        }
        domain.parents().find_map(|parent| {
            // A parent of a canonical name is canonical: no second normalisation.
            let parent = DomainName(parent.to_owned());
            self.entries.get_key_value(&DomainRule::Subdomains(parent))
        })
    }
}

#[cfg(feature = "serde")]
mod serde_impls {
    use super::{DomainName, DomainRule};
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    impl Serialize for DomainName {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for DomainName {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            Self::parse(&text).map_err(D::Error::custom)
        }
    }

    impl Serialize for DomainRule {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }

    impl<'de> Deserialize<'de> for DomainRule {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            Self::parse(&text).map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_normalised() {
        assert_eq!(
            DomainName::parse("Example.COM.").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(
            DomainName::parse("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            DomainName::parse("xn--bcher-kva.example").unwrap(),
            DomainName::parse("BÜCHER.example").unwrap()
        );
    }

    #[test]
    fn invalid_domain_names_are_rejected() {
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a.b..",
            "-a.example",
            "a b.example",
            "a_b.example",
        ] {
            assert!(DomainName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            DomainName::parse("192.0.2.1"),
            Err(NameError::BareAddress {
                name: "192.0.2.1".into()
            })
        );
        let long = format!("{}.example", "a".repeat(64));
        assert!(DomainName::parse(&long).is_err());
        assert!(DomainRule::parse("..example.com").is_err());
        assert!(DomainRule::parse(".").is_err());
    }

    #[test]
    fn parents_are_nearest_first() {
        let name = DomainName::parse("a.b.example.com").unwrap();
        assert_eq!(
            name.parents().collect::<Vec<_>>(),
            ["b.example.com", "example.com", "com"]
        );
    }

    #[test]
    fn within() {
        let sub = DomainName::parse("mx.example.com").unwrap();
        let base = DomainName::parse("example.com").unwrap();
        let other = DomainName::parse("badexample.com").unwrap();
        assert!(sub.is_within(&base));
        assert!(base.is_within(&base));
        assert!(!other.is_within(&base));
        assert!(!base.is_within(&sub));
    }

    fn table(rules: &[&str]) -> DomainTable<String> {
        let mut t = DomainTable::new();
        for rule in rules {
            t.insert(DomainRule::parse(rule).unwrap(), (*rule).to_owned())
                .unwrap();
        }
        t
    }

    fn hit(t: &DomainTable<String>, name: &str) -> Option<String> {
        t.lookup(&DomainName::parse(name).unwrap())
            .map(|(rule, v)| {
                assert_eq!(rule, &DomainRule::parse(v).unwrap());
                v.clone()
            })
    }

    #[test]
    fn exact_then_nearest_parent() {
        let t = table(&["example.com", ".example.com", ".mx.example.com", ".com"]);
        assert_eq!(hit(&t, "example.com").as_deref(), Some("example.com"));
        assert_eq!(hit(&t, "a.example.com").as_deref(), Some(".example.com"));
        assert_eq!(
            hit(&t, "a.mx.example.com").as_deref(),
            Some(".mx.example.com")
        );
        assert_eq!(hit(&t, "mx.example.com").as_deref(), Some(".example.com"));
        assert_eq!(hit(&t, "example.org"), None);
        assert_eq!(hit(&t, "com"), None);
        assert_eq!(hit(&t, "other.com").as_deref(), Some(".com"));
    }

    #[test]
    fn u_labels_and_a_labels_meet() {
        let t = table(&[".bücher.example", "xn--caf-dma.example"]);
        assert_eq!(
            hit(&t, "mx.xn--bcher-kva.example").as_deref(),
            Some(".bücher.example")
        );
        assert_eq!(
            hit(&t, "Café.example.").as_deref(),
            Some("xn--caf-dma.example")
        );
    }

    #[test]
    fn duplicates_after_normalisation_are_refused() {
        let mut t = table(&["Bücher.example"]);
        let err = t
            .insert(
                DomainRule::parse("xn--bcher-kva.example.").unwrap(),
                String::new(),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "duplicate entry for xn--bcher-kva.example");
        assert_eq!(t.len(), 1);
    }
}
