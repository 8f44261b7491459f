//! Static routes (`[routes]`): destination domain → next hop, as the
//! configuration writes them. The lookup rule is postern-types'
//! [`DomainTable`], the one the TLS policy and the accepted domains use.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use postern_types::{DomainName, DomainRule, DomainTable, DuplicateRule};

/// The SMTP port (RFC 5321 §4.5.4.2 delivery is to port 25).
pub const SMTP_PORT: u16 = 25;

/// A host and port to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NextHop {
    /// A host name or an IP address (without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

/// A next-hop string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid next hop {0:?} (expected host, host:port, [ip] or [ip]:port)")]
pub struct InvalidNextHop(String);

impl FromStr for NextHop {
    type Err = InvalidNextHop;

    /// Parses `host`, `host:port`, `1.2.3.4:port`, `[ip]` or `[ip]:port`
    /// (brackets are needed around an IPv6 address with a port).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidNextHop(s.to_owned());
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
            inside.parse::<IpAddr>().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (inside, port)
        } else if s.parse::<Ipv6Addr>().is_ok() {
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
            None => SMTP_PORT,
        };
        let host = host.trim_end_matches('.');
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if host.parse::<IpAddr>().is_err() && !valid_name {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl TryFrom<String> for NextHop {
    type Error = InvalidNextHop;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<NextHop> for String {
    fn from(hop: NextHop) -> Self {
        hop.to_string()
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}
/// Static routes: destination domain → next hop.
///
/// The domain keys are a [`DomainTable`], the lookup rule that the TLS
/// policy's per-domain overrides and the accepted domains use too, with the
/// same normalisation (lower-case A-labels): a route written `bücher.example`
/// takes mail for `user@xn--bcher-kva.example`, as the policy does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticRoutes {
    domains: DomainTable<NextHop>,
    /// The `*` route (a smart host): everything no domain key matched.
    default: Option<NextHop>,
}

/// A static route key that is not a domain, `.domain` or `*`, or that
/// repeats another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRouteKey {
    /// Not a domain, `.domain` or `*`.
    #[error("invalid route key {0:?} (expected domain, .domain or *)")]
    Syntax(String),
    /// The same key as another one, once normalised.
    #[error("{0}")]
    Duplicate(DuplicateRule),
}

/// The static route key that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKey<'a> {
    /// A domain or `.domain` key.
    Domain(&'a DomainRule),
    /// The `*` key.
    Default,
}

impl fmt::Display for RouteKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(rule) => rule.fmt(f),
            Self::Default => f.write_str("*"),
        }
    }
}

impl StaticRoutes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. `key` is a domain (that domain only), `.domain` (its
    /// subdomains) or `*` (everything else, a smart host).
    pub fn insert(&mut self, key: &str, hop: NextHop) -> Result<(), InvalidRouteKey> {
        if key == "*" {
            if self.default.is_some() {
                return Err(InvalidRouteKey::Syntax(key.to_owned()));
            }
            self.default = Some(hop);
            return Ok(());
        }
        let rule = DomainRule::parse(key).map_err(|_| InvalidRouteKey::Syntax(key.to_owned()))?;
        self.domains
            .insert(rule, hop)
            .map_err(InvalidRouteKey::Duplicate)
    }

    /// The route for `domain` and the key that matched: exact name, then
    /// `.parent` keys nearest first, then `*`.
    pub fn lookup(&self, domain: &str) -> Option<(RouteKey<'_>, &NextHop)> {
        DomainName::parse(domain)
            .ok()
            .and_then(|name| self.domains.lookup(&name))
            .map(|(rule, hop)| (RouteKey::Domain(rule), hop))
            .or_else(|| self.default.as_ref().map(|hop| (RouteKey::Default, hop)))
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.default.is_none()
    }
}
