//! Validated names: next hops and the keys of the per-destination table.
//!
//! Every name that enters the policy is a [`DomainName`], normalised once by
//! `postern-types`: lower case, A-label (punycode) form (UTS #46 with STD3 rules
//! and DNS length checks), one trailing dot removed. Lookups then compare plain
//! strings.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use postern_types::{DomainName, NameError};

/// The host of a `[host]:port` next hop: a domain name or an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A host name.
    Name(DomainName),
    /// An IP address.
    Address(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => name.fmt(f),
            Self::Address(addr) => addr.fmt(f),
        }
    }
}

/// The SMTP port, used when a `[host]` key has no port.
pub const SMTP_PORT: u16 = 25;

/// Where mail goes next, as Postfix names a next hop.
///
/// - `example.com`: a destination domain, reached through its MX hosts;
/// - `[mx.example.com]:587` or `[192.0.2.1]`: a host reached directly (no MX lookup),
///   port 25 when omitted.
///
/// ```
/// use postern_policy::NextHop;
/// let hop: NextHop = "[MX.Example.com.]:587".parse().unwrap();
/// assert_eq!(hop.to_string(), "[mx.example.com]:587");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// A destination domain (MX routing).
    Domain(DomainName),
    /// A host and port reached directly.
    HostPort {
        /// The host.
        host: Host,
        /// The TCP port.
        port: u16,
    },
}

impl NextHop {
    /// Parses `domain`, `[host]` or `[host]:port`.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let Some(rest) = input.strip_prefix('[') else {
            return DomainName::parse(input).map(Self::Domain);
        };
        let bad = || NameError::InvalidHostKey {
            key: input.to_owned(),
        };
        let (inner, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => SMTP_PORT,
            _ => {
                let digits = after.strip_prefix(':').ok_or_else(bad)?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                match digits.parse::<u16>() {
                    Ok(port) if port != 0 => port,
                    _ => return Err(bad()),
                }
            }
        };
        let host = if let Ok(addr) = inner.parse::<IpAddr>() {
            Host::Address(addr)
        } else if let Some(v6) = inner.strip_prefix("ipv6:").or(inner.strip_prefix("IPv6:")) {
            Host::Address(v6.parse::<IpAddr>().map_err(|_| bad())?)
        } else {
            Host::Name(DomainName::parse(inner).map_err(|_| bad())?)
        };
        Ok(Self::HostPort { host, port })
    }

    /// The domain for a [`NextHop::Domain`], or the host name of a
    /// [`NextHop::HostPort`] when it is a name.
    pub fn domain(&self) -> Option<&DomainName> {
        match self {
            Self::Domain(name)
            | Self::HostPort {
                host: Host::Name(name),
                ..
            } => Some(name),
            Self::HostPort {
                host: Host::Address(_),
                ..
            } => None,
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(name) => name.fmt(f),
            Self::HostPort { host, port } => write!(f, "[{host}]:{port}"),
        }
    }
}

impl FromStr for NextHop {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for NextHop {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NextHop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A key of the per-destination table.
///
/// - `example.com`: that domain exactly;
/// - `.example.com`: any subdomain of `example.com` (not `example.com` itself);
/// - `[host]:port`: that next hop exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKey {
    /// An exact domain.
    Exact(DomainName),
    /// Every subdomain of this domain (written with a leading dot).
    Subdomains(DomainName),
    /// An exact `[host]:port` next hop.
    HostPort {
        /// The host.
        host: Host,
        /// The TCP port.
        port: u16,
    },
}

impl PolicyKey {
    /// Parses a key as written in the configuration.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        if let Some(rest) = input.strip_prefix('.') {
            return DomainName::parse(rest).map(Self::Subdomains);
        }
        Ok(match NextHop::parse(input)? {
            NextHop::Domain(name) => Self::Exact(name),
            NextHop::HostPort { host, port } => Self::HostPort { host, port },
        })
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => name.fmt(f),
            Self::Subdomains(name) => write!(f, ".{name}"),
            Self::HostPort { host, port } => write!(f, "[{host}]:{port}"),
        }
    }
}

impl FromStr for PolicyKey {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops() {
        assert_eq!(
            NextHop::parse("[mx.example.com]").unwrap().to_string(),
            "[mx.example.com]:25"
        );
        assert_eq!(
            NextHop::parse("[192.0.2.1]:2525").unwrap().to_string(),
            "[192.0.2.1]:2525"
        );
        assert_eq!(
            NextHop::parse("[ipv6:2001:db8::1]").unwrap().to_string(),
            "[2001:db8::1]:25"
        );
        for bad in [
            "[mx.example.com",
            "[mx]:",
            "[mx]:0",
            "[mx]:99999",
            "[mx] :25",
            "[]:25",
        ] {
            assert!(NextHop::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(
            PolicyKey::parse(".Example.com.").unwrap(),
            PolicyKey::Subdomains(DomainName::parse("example.com").unwrap())
        );
        assert!(PolicyKey::parse("..example.com").is_err());
        assert_eq!(
            PolicyKey::parse("[mx.example.com]:25").unwrap().to_string(),
            "[mx.example.com]:25"
        );
    }
}
