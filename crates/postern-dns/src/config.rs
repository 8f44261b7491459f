//! How the operator says where DNSSEC answers come from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default time to wait for one answer from one server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a [`ValidatingConfig`] starts its chains of trust.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustAnchor {
    /// The root zone's key-signing keys built into hickory-resolver (the
    /// ordinary choice on the Internet).
    BuiltInRoot,
    /// A file of `DNSKEY` records in zone-file form (for example an
    /// `ldns-keygen` `.key` file, or the root keys exported from a local
    /// resolver). `DS`-form anchors are not accepted by hickory.
    File(PathBuf),
}

/// Mode (a): the relay validates DNSSEC itself, from a trust anchor, asking
/// the configured name servers (recursive resolvers) with the DO bit set.
///
/// Each server is asked over UDP and TCP: a truncated UDP answer is retried
/// over TCP, which large DNSKEY RRsets need (hickory #3690: with UDP alone they
/// validated as a false Bogus).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidatingConfig {
    /// The servers to ask, tried in order.
    pub name_servers: Vec<SocketAddr>,
    /// Where chains of trust start.
    pub trust_anchor: TrustAnchor,
    /// How long to wait for one server's answer.
    pub timeout: Duration,
    /// How many times a query is sent before it counts as failed
    /// ([`DnssecStatus::Indeterminate`](crate::DnssecStatus::Indeterminate)).
    pub attempts: usize,
}

impl ValidatingConfig {
    /// Validation from the built-in root anchor, asking `name_servers`, with
    /// [`DEFAULT_TIMEOUT`] and two attempts.
    pub fn new(name_servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            name_servers: name_servers.into_iter().collect(),
            trust_anchor: TrustAnchor::BuiltInRoot,
            timeout: DEFAULT_TIMEOUT,
            attempts: 2,
        }
    }

    /// Uses another trust anchor.
    #[must_use]
    pub fn with_trust_anchor(mut self, trust_anchor: TrustAnchor) -> Self {
        self.trust_anchor = trust_anchor;
        self
    }

    /// Sets the per-server timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how many times a query is sent (at least once).
    #[must_use]
    pub fn with_attempts(mut self, attempts: usize) -> Self {
        self.attempts = attempts.max(1);
        self
    }
}

/// Mode (b): trust the AD ("authentic data") bit of one validating resolver,
/// Postfix's model with a local unbound (Postfix TLS_README, "DANE TLS
/// authentication").
///
/// The AD bit itself is not protected: anyone on the path between the relay
/// and the resolver can set it. Use this mode only with a resolver on the
/// same host, reached over loopback; [`TrustAdConfig::is_loopback`] lets a
/// configuration check warn otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustAdConfig {
    /// The validating resolver.
    pub resolver: SocketAddr,
    /// How long to wait for its answer (over UDP, then TCP if truncated).
    pub timeout: Duration,
}

impl TrustAdConfig {
    /// Trusts the resolver at `resolver`, with [`DEFAULT_TIMEOUT`].
    pub fn new(resolver: SocketAddr) -> Self {
        Self {
            resolver,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the resolver is reached over loopback (`127.0.0.0/8` or `::1`),
    /// the only place where trusting its AD bit is safe.
    pub fn is_loopback(&self) -> bool {
        self.resolver.ip().is_loopback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        for (addr, loopback) in [
            ("127.0.0.1:53", true),
            ("127.0.0.53:53", true),
            ("[::1]:53", true),
            ("192.0.2.1:53", false),
            ("[2001:db8::1]:53", false),
            ("0.0.0.0:53", false),
        ] {
            let config = TrustAdConfig::new(addr.parse().unwrap());
            assert_eq!(config.is_loopback(), loopback, "{addr}");
        }
    }

    #[test]
    fn builders() {
        let c = ValidatingConfig::new(["127.0.0.1:53".parse().unwrap()])
            .with_attempts(0)
            .with_timeout(Duration::from_millis(300))
            .with_trust_anchor(TrustAnchor::File("anchor.key".into()));
        assert_eq!(c.attempts, 1);
        assert_eq!(c.timeout, Duration::from_millis(300));
        assert_eq!(c.trust_anchor, TrustAnchor::File("anchor.key".into()));
        assert_eq!(c.name_servers.len(), 1);
    }
}
