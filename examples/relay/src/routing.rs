//! Where to deliver: static routes, else the destination's MX records.
//!
//! [`Router::route`] answers for a recipient domain with a [`Route`]: the
//! next-hop hosts in the order to try them, or a [`Failure`] that is
//! temporary (defer) or permanent (bounce).
//!
//! 1. Static routes (Postfix `transport_maps` with `smtp:[host]:port`
//!    entries): the domain itself, then `.parent` entries from the nearest to
//!    the farthest, then `*`. Keys are case-insensitive and a trailing dot is
//!    ignored. A static route names the host to connect to: no MX lookup.
//! 2. `localhost` and its subdomains (RFC 6761 §6.3) go to the loopback
//!    address on the MX port, without a DNS query.
//! 3. Otherwise DNS, RFC 5321 §5.1: the MX records sorted by preference; no
//!    MX records at all means the implicit MX, the domain itself with
//!    preference 0, provided it has an address record; a null MX (RFC 7505:
//!    one MX with exchange `.`) means the domain accepts no mail, a permanent
//!    failure `5.1.10` (the status RFC 7505 §4 pairs with reply code 556).
//!    A domain that does not exist is a permanent failure `5.1.2`; a DNS
//!    error is a temporary failure `4.4.3`, never a bounce.
//!
//! These failures are the relay's own ([`FailureSource::Local`](crate::envelope::FailureSource::Local)):
//! their text describes the problem (`MX lookup for example.com failed:
//! timeout`) and carries no reply or status code; the status is the
//! failure's `code`.
//!
//! DNS goes through the [`Resolver`] trait: [`HickoryResolver`] in the relay,
//! a fake in tests.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::SystemTime;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use serde::{Deserialize, Serialize};

use postern_types::{DomainName, DomainRule, DomainTable, DuplicateRule};

use crate::envelope::{EnhancedStatus, Failure};

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

/// How a route was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSource {
    /// A static route; the key that matched (`example.com`, `.example.com`, `*`).
    Static(String),
    /// The destination's MX records.
    Mx,
    /// No MX records: the domain itself (RFC 5321 §5.1 implicit MX).
    ImplicitMx,
}

/// Where to deliver mail for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination domain (normalised: lowercase, no trailing dot). The
    /// TLS policy is looked up by this name, and `secure` mode matches the
    /// certificate against it.
    pub domain: String,
    /// The hosts to try, in order (MX preference; `verify` mode matches the
    /// certificate against the host name).
    pub hosts: Vec<NextHop>,
    /// How the route was found.
    pub source: RouteSource,
}

/// A DNS lookup that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The name does not exist (NXDOMAIN).
    #[error("domain does not exist")]
    NoSuchDomain,
    /// The name exists but has no records of the type asked (NODATA).
    #[error("no records")]
    NoRecords,
    /// The lookup could not be completed (timeout, SERVFAIL, network).
    #[error("dns lookup failed: {0}")]
    Temporary(String),
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is preferred.
    pub preference: u16,
    /// The mail exchanger's host name; `"."` or `""` for a null MX.
    pub exchange: String,
}

/// The DNS lookups routing needs. Implemented by [`HickoryResolver`]; tests
/// use an in-memory table.
pub trait Resolver {
    /// The MX records of `domain`.
    fn mx(&self, domain: &str) -> impl Future<Output = Result<Vec<MxRecord>, LookupError>> + Send;
    /// The A and AAAA addresses of `host`.
    fn addresses(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<IpAddr>, LookupError>> + Send;
    /// The TXT records of `name`, each record's strings joined without
    /// separators (RFC 8461 §3.1 and RFC 7208 §3.3 read them so).
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<String>, LookupError>> + Send;
}

/// [`Resolver`] backed by hickory-resolver with the system configuration
/// (`/etc/resolv.conf`).
#[derive(Debug, Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl HickoryResolver {
    /// A resolver with the system configuration. Call within a tokio runtime.
    pub fn from_system() -> Result<Self, LookupError> {
        let inner = TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| LookupError::Temporary(e.to_string()))?;
        Ok(Self { inner })
    }
}

fn lookup_error(e: &hickory_resolver::net::NetError) -> LookupError {
    if e.is_nx_domain() {
        LookupError::NoSuchDomain
    } else if e.is_no_records_found() {
        LookupError::NoRecords
    } else {
        LookupError::Temporary(e.to_string())
    }
}

/// An absolute name, so the resolver's search list is never applied.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

impl Resolver for HickoryResolver {
    async fn mx(&self, domain: &str) -> Result<Vec<MxRecord>, LookupError> {
        let lookup = self
            .inner
            .mx_lookup(fqdn(domain))
            .await
            .map_err(|e| lookup_error(&e))?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some(MxRecord {
                    preference: mx.preference,
                    exchange: mx.exchange.to_ascii(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let lookup = self
            .inner
            .lookup_ip(fqdn(host))
            .await
            .map_err(|e| lookup_error(&e))?;
        Ok(lookup.iter().collect())
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let lookup = self
            .inner
            .txt_lookup(fqdn(name))
            .await
            .map_err(|e| lookup_error(&e))?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => {
                    let bytes: Vec<u8> = txt.txt_data.iter().flatten().copied().collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            })
            .collect())
    }
}

/// A [`Resolver`] answering from fixed tables, for tests and for sites
/// without DNS. A name without an entry does not exist (NXDOMAIN); names are
/// matched case-insensitively, without a trailing dot.
#[derive(Debug, Clone, Default)]
pub struct FixedResolver {
    mx: HashMap<String, Vec<MxRecord>>,
    addresses: HashMap<String, Vec<IpAddr>>,
    txt: HashMap<String, Result<Vec<String>, LookupError>>,
}

impl FixedResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an MX record for `domain`.
    #[must_use]
    pub fn with_mx(mut self, domain: &str, preference: u16, exchange: &str) -> Self {
        self.mx
            .entry(normalize_domain(domain))
            .or_default()
            .push(MxRecord {
                preference,
                exchange: exchange.to_owned(),
            });
        self
    }

    /// Adds an address for `host`.
    #[must_use]
    pub fn with_address(mut self, host: &str, ip: IpAddr) -> Self {
        self.addresses
            .entry(normalize_domain(host))
            .or_default()
            .push(ip);
        self
    }

    /// Sets the TXT answer of `name` (a list of records, or a lookup error).
    #[must_use]
    pub fn with_txt(mut self, name: &str, answer: Result<Vec<String>, LookupError>) -> Self {
        self.txt.insert(normalize_domain(name), answer);
        self
    }

    fn known(&self, name: &str) -> bool {
        self.mx.contains_key(name)
            || self.addresses.contains_key(name)
            || self.txt.contains_key(name)
    }

    fn answer<T: Clone>(
        &self,
        map: &HashMap<String, Vec<T>>,
        name: &str,
    ) -> Result<Vec<T>, LookupError> {
        let name = normalize_domain(name);
        match map.get(&name) {
            Some(v) => Ok(v.clone()),
            None if self.known(&name) => Err(LookupError::NoRecords),
            None => Err(LookupError::NoSuchDomain),
        }
    }
}

impl Resolver for FixedResolver {
    async fn mx(&self, domain: &str) -> Result<Vec<MxRecord>, LookupError> {
        self.answer(&self.mx, domain)
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        self.answer(&self.addresses, host)
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let key = normalize_domain(name);
        match self.txt.get(&key) {
            Some(answer) => answer.clone(),
            None if self.known(&key) => Err(LookupError::NoRecords),
            None => Err(LookupError::NoSuchDomain),
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

/// A domain in the one canonical form of [`DomainName`] (lower-case A-labels,
/// no trailing dot), so that grouping, routing and the TLS policy agree on
/// an internationalised domain; text that is no domain name (an address
/// literal, a `_service` label) is lower-cased without its trailing dot.
pub fn normalize_domain(domain: &str) -> String {
    DomainName::parse(domain).map_or_else(
        |_| domain.trim_end_matches('.').to_lowercase(),
        |name| name.as_str().to_owned(),
    )
}

/// Whether `name` (normalised) is `localhost` or under it: the loopback
/// host, never looked up in DNS (RFC 6761 §6.3).
pub fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Finds routes: static first, then DNS.
#[derive(Debug, Clone)]
pub struct Router<R> {
    routes: StaticRoutes,
    resolver: R,
    mx_port: u16,
}

impl<R: Resolver> Router<R> {
    /// A router with these static routes and this resolver.
    pub fn new(routes: StaticRoutes, resolver: R) -> Self {
        Self {
            routes,
            resolver,
            mx_port: SMTP_PORT,
        }
    }

    /// Connects to MX hosts on `port` instead of 25 (for tests on loopback).
    #[must_use]
    pub fn with_mx_port(mut self, port: u16) -> Self {
        self.mx_port = port;
        self
    }

    /// The resolver (the delivery layer also looks up host addresses with it).
    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// The route for a recipient domain, or the failure to record for its
    /// recipients (temporary: defer; permanent: bounce). `now` stamps the
    /// failure.
    pub async fn route(&self, domain: &str, now: SystemTime) -> Result<Route, Failure> {
        let domain = normalize_domain(domain);
        if let Some((key, hop)) = self.routes.lookup(&domain) {
            return Ok(Route {
                domain,
                hosts: vec![hop.clone()],
                source: RouteSource::Static(key.to_string()),
            });
        }
        // RFC 6761 §6.3: `localhost` names are this host and are not looked
        // up in DNS; their mail goes to the loopback address, where the
        // delivery side's loop check refuses to send this relay its own mail.
        if is_localhost(&domain) {
            return Ok(Route {
                hosts: vec![NextHop {
                    host: domain.clone(),
                    port: self.mx_port,
                }],
                domain,
                source: RouteSource::ImplicitMx,
            });
        }
        // A domain literal (`user@[192.0.2.1]`, RFC 5321 §4.1.3) is not
        // routed by DNS; only a static route may take it.
        if domain.starts_with('[') {
            return Err(Failure::local(
                EnhancedStatus::UNROUTABLE,
                format!("no route to address literal {domain}"),
                now,
            ));
        }
        match self.resolver.mx(&domain).await {
            Ok(records) if !records.is_empty() => mx_route(domain, records, self.mx_port, now),
            Ok(_) | Err(LookupError::NoRecords) => self.implicit_mx(domain, now).await,
            Err(LookupError::NoSuchDomain) => Err(Failure::local(
                EnhancedStatus::BAD_DESTINATION,
                format!("domain {domain} does not exist"),
                now,
            )),
            Err(LookupError::Temporary(e)) => Err(Failure::local(
                EnhancedStatus::DNS_FAILURE,
                format!("MX lookup for {domain} failed: {e}"),
                now,
            )),
        }
    }

    /// RFC 5321 §5.1: "If an empty list of MXs is returned, the address is
    /// treated as if it was associated with an implicit MX RR, with a
    /// preference of 0, pointing to that host."
    async fn implicit_mx(&self, domain: String, now: SystemTime) -> Result<Route, Failure> {
        match self.resolver.addresses(&domain).await {
            Ok(addrs) if !addrs.is_empty() => Ok(Route {
                hosts: vec![NextHop {
                    host: domain.clone(),
                    port: self.mx_port,
                }],
                domain,
                source: RouteSource::ImplicitMx,
            }),
            Ok(_) | Err(LookupError::NoRecords | LookupError::NoSuchDomain) => Err(Failure::local(
                EnhancedStatus::UNROUTABLE,
                format!("{domain} has no MX and no address record"),
                now,
            )),
            Err(LookupError::Temporary(e)) => Err(Failure::local(
                EnhancedStatus::DNS_FAILURE,
                format!("address lookup for {domain} failed: {e}"),
                now,
            )),
        }
    }
}

fn mx_route(
    domain: String,
    mut records: Vec<MxRecord>,
    port: u16,
    now: SystemTime,
) -> Result<Route, Failure> {
    let is_null = |r: &MxRecord| r.exchange.is_empty() || r.exchange == ".";
    // RFC 7505 §3: a null MX is a single MX RR with preference 0 and the
    // zero-length exchange; the domain accepts no mail. §4: such
    // mail is returned with status 5.1.10 (reply code 556, RFC 7504 §3).
    // `records[0]` exists: the length is checked first.
    if records.len() == 1 && is_null(&records[0]) {
        return Err(Failure::local(
            EnhancedStatus::NULL_MX,
            format!("null MX: {domain} accepts no mail"),
            now,
        ));
    }
    // A "." mixed with real MX records is a misconfiguration; it names no
    // host, so it is skipped and the real ones are used.
    records.retain(|r| !is_null(r));
    // RFC 5321 §5.1: MX records are tried in order of preference, lowest first.
    // (Equal preferences keep the DNS order rather than being shuffled, so that
    // tests are deterministic.)
    records.sort_by_key(|r| r.preference);
    let mut hosts: Vec<NextHop> = Vec::with_capacity(records.len());
    for r in records {
        let hop = NextHop {
            host: normalize_domain(&r.exchange),
            port,
        };
        if !hosts.contains(&hop) {
            hosts.push(hop);
        }
    }
    Ok(Route {
        domain,
        hosts,
        source: RouteSource::Mx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::FailureSource;
    use std::sync::Mutex;
    use std::time::UNIX_EPOCH;

    /// In-memory DNS: answers from tables and records what was asked.
    #[derive(Default)]
    struct FakeDns {
        mx: HashMap<String, Result<Vec<MxRecord>, LookupError>>,
        addrs: HashMap<String, Result<Vec<IpAddr>, LookupError>>,
        asked: Mutex<Vec<String>>,
    }

    impl FakeDns {
        fn mx(mut self, domain: &str, records: &[(u16, &str)]) -> Self {
            let records = records
                .iter()
                .map(|&(preference, exchange)| MxRecord {
                    preference,
                    exchange: exchange.into(),
                })
                .collect();
            self.mx.insert(domain.into(), Ok(records));
            self
        }
        fn mx_err(mut self, domain: &str, e: LookupError) -> Self {
            self.mx.insert(domain.into(), Err(e));
            self
        }
        fn addr(mut self, host: &str, r: Result<Vec<IpAddr>, LookupError>) -> Self {
            self.addrs.insert(host.into(), r);
            self
        }
    }

    impl Resolver for FakeDns {
        async fn mx(&self, domain: &str) -> Result<Vec<MxRecord>, LookupError> {
            self.asked.lock().unwrap().push(format!("MX {domain}"));
            self.mx
                .get(domain)
                .cloned()
                .unwrap_or(Err(LookupError::NoSuchDomain))
        }
        async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
            self.asked.lock().unwrap().push(format!("A {host}"));
            self.addrs
                .get(host)
                .cloned()
                .unwrap_or(Err(LookupError::NoSuchDomain))
        }
        async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
            self.asked.lock().unwrap().push(format!("TXT {name}"));
            Err(LookupError::NoSuchDomain)
        }
    }

    #[tokio::test]
    async fn fixed_resolver_answers_and_distinguishes_nodata_from_nxdomain() {
        let dns = FixedResolver::new()
            .with_mx("Example.TEST.", 10, "mx1.example.test")
            .with_address("mx1.example.test", IpAddr::from([127, 0, 0, 1]))
            .with_txt(
                "_mta-sts.example.test",
                Ok(vec!["v=STSv1; id=1;".to_owned()]),
            );
        assert_eq!(
            dns.mx("example.test").await.unwrap()[0].exchange,
            "mx1.example.test"
        );
        assert_eq!(
            dns.txt("_MTA-STS.example.test.").await,
            Ok(vec!["v=STSv1; id=1;".to_owned()])
        );
        assert_eq!(dns.txt("example.test").await, Err(LookupError::NoRecords));
        assert_eq!(
            dns.addresses("example.test").await,
            Err(LookupError::NoRecords)
        );
        assert_eq!(dns.txt("other.test").await, Err(LookupError::NoSuchDomain));
        let route = Router::new(StaticRoutes::new(), dns)
            .with_mx_port(2525)
            .route("example.test", now())
            .await
            .unwrap();
        assert_eq!(hosts(&route), ["mx1.example.test:2525"]);
    }

    fn now() -> SystemTime {
        UNIX_EPOCH
    }

    fn hop(s: &str) -> NextHop {
        s.parse().unwrap()
    }

    fn hosts(route: &Route) -> Vec<String> {
        route.hosts.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn next_hop_parsing() {
        assert_eq!(
            hop("mx.example.com"),
            NextHop {
                host: "mx.example.com".into(),
                port: 25
            }
        );
        assert_eq!(
            hop("MX.Example.com.:2525"),
            NextHop {
                host: "mx.example.com".into(),
                port: 2525
            }
        );
        assert_eq!(
            hop("127.0.0.1:2526"),
            NextHop {
                host: "127.0.0.1".into(),
                port: 2526
            }
        );
        assert_eq!(
            hop("[::1]:2527"),
            NextHop {
                host: "::1".into(),
                port: 2527
            }
        );
        assert_eq!(
            hop("::1"),
            NextHop {
                host: "::1".into(),
                port: 25
            }
        );
        assert_eq!(hop("[::1]").to_string(), "[::1]:25");
        for bad in [
            "",
            ":25",
            "host:0",
            "host:99999",
            "[nothost]:25",
            "[::1]x",
            "bad_host",
            "-a.com",
            "a..b",
        ] {
            assert!(bad.parse::<NextHop>().is_err(), "{bad}");
        }
    }

    #[test]
    fn static_lookup_order_exact_then_parents_then_star() {
        let mut r = StaticRoutes::new();
        r.insert("example.com", hop("exact:1")).unwrap();
        r.insert(".example.com", hop("sub:2")).unwrap();
        r.insert(".com", hop("com:3")).unwrap();
        let found = |r: &StaticRoutes, domain: &str| {
            r.lookup(domain)
                .map(|(key, hop)| (key.to_string(), hop.to_string()))
        };
        let route = |key: &str, hop: &str| Some((key.to_owned(), hop.to_owned()));
        assert_eq!(found(&r, "EXAMPLE.com."), route("example.com", "exact:1"));
        assert_eq!(found(&r, "a.b.example.com"), route(".example.com", "sub:2"));
        assert_eq!(found(&r, "other.com"), route(".com", "com:3"));
        assert_eq!(found(&r, "example.org"), None);
        assert_eq!(found(&r, "[192.0.2.1]"), None);
        r.insert("*", hop("smarthost:4")).unwrap();
        assert_eq!(found(&r, "example.org"), route("*", "smarthost:4"));
        assert_eq!(found(&r, "[192.0.2.1]"), route("*", "smarthost:4"));
        // One normalisation: the key's U-labels meet the address's A-labels.
        r.insert(".bücher.example", hop("idn:5")).unwrap();
        assert_eq!(
            found(&r, "mx.xn--bcher-kva.example"),
            route(".xn--bcher-kva.example", "idn:5")
        );
        for bad in ["", ".", "..com", "a b", "*.example.com", "Example.COM", "*"] {
            assert!(r.insert(bad, hop("x")).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn static_route_wins_without_dns() {
        let mut routes = StaticRoutes::new();
        routes.insert(".test", hop("127.0.0.1:2526")).unwrap();
        let router = Router::new(routes, FakeDns::default());
        let route = router.route("Mail.Test.", now()).await.unwrap();
        assert_eq!(route.domain, "mail.test");
        assert_eq!(hosts(&route), ["127.0.0.1:2526"]);
        assert_eq!(route.source, RouteSource::Static(".test".into()));
        assert!(router.resolver().asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn localhost_goes_to_loopback_without_dns() {
        let router = Router::new(StaticRoutes::new(), FakeDns::default()).with_mx_port(2525);
        for name in ["LocalHost.", "mail.localhost"] {
            let route = router.route(name, now()).await.unwrap();
            assert_eq!(route.source, RouteSource::ImplicitMx);
            assert_eq!(hosts(&route), [format!("{}:2525", route.domain)]);
        }
        assert!(router.resolver().asked.lock().unwrap().is_empty());
        assert!(!is_localhost("notlocalhost"));
        // A static route still wins.
        let mut routes = StaticRoutes::new();
        routes.insert("localhost", hop("192.0.2.9:25")).unwrap();
        let route = Router::new(routes, FakeDns::default())
            .route("localhost", now())
            .await
            .unwrap();
        assert_eq!(hosts(&route), ["192.0.2.9:25"]);
    }

    #[tokio::test]
    async fn mx_sorted_by_preference() {
        let dns = FakeDns::default().mx(
            "example.com",
            &[
                (20, "mx2.example.com."),
                (10, "MX1.example.com."),
                (30, "mx3.example.com."),
                (10, "mx1.example.com"),
            ],
        );
        let route = Router::new(StaticRoutes::new(), dns)
            .route("example.com", now())
            .await
            .unwrap();
        assert_eq!(route.source, RouteSource::Mx);
        assert_eq!(
            hosts(&route),
            [
                "mx1.example.com:25",
                "mx2.example.com:25",
                "mx3.example.com:25"
            ]
        );
    }

    #[tokio::test]
    async fn implicit_mx_when_no_mx_records() {
        let dns = FakeDns::default()
            .mx_err("example.net", LookupError::NoRecords)
            .addr("example.net", Ok(vec!["192.0.2.1".parse().unwrap()]));
        let route = Router::new(StaticRoutes::new(), dns)
            .route("example.net", now())
            .await
            .unwrap();
        assert_eq!(route.source, RouteSource::ImplicitMx);
        assert_eq!(hosts(&route), ["example.net:25"]);

        let dns = FakeDns::default()
            .mx_err("example.net", LookupError::NoRecords)
            .addr("example.net", Err(LookupError::NoRecords));
        let err = Router::new(StaticRoutes::new(), dns)
            .route("example.net", now())
            .await
            .unwrap_err();
        assert_eq!(err.code, EnhancedStatus::UNROUTABLE);
        assert_eq!(err.text, "example.net has no MX and no address record");
        assert_eq!(err.source, FailureSource::Local);
    }

    #[tokio::test]
    async fn null_mx_is_a_permanent_failure() {
        let dns = FakeDns::default().mx("nomail.example", &[(0, ".")]);
        let err = Router::new(StaticRoutes::new(), dns)
            .route("nomail.example", now())
            .await
            .unwrap_err();
        assert_eq!(err.code.to_string(), "5.1.10");
        assert!(err.code.is_permanent());
        assert_eq!(err.text, "null MX: nomail.example accepts no mail");
        assert_eq!(err.source, FailureSource::Local);

        // "." among real records is skipped, not a null MX.
        let dns = FakeDns::default().mx("mixed.example", &[(0, "."), (10, "mx.mixed.example")]);
        let route = Router::new(StaticRoutes::new(), dns)
            .route("mixed.example", now())
            .await
            .unwrap();
        assert_eq!(hosts(&route), ["mx.mixed.example:25"]);
    }

    #[tokio::test]
    async fn dns_errors_defer_and_nxdomain_bounces() {
        let dns =
            FakeDns::default().mx_err("flaky.example", LookupError::Temporary("timeout".into()));
        let router = Router::new(StaticRoutes::new(), dns);
        let err = router.route("flaky.example", now()).await.unwrap_err();
        assert_eq!(err.code, EnhancedStatus::DNS_FAILURE);
        assert!(!err.code.is_permanent());
        assert_eq!(err.text, "MX lookup for flaky.example failed: timeout");

        let err = router.route("missing.example", now()).await.unwrap_err();
        assert_eq!(err.code, EnhancedStatus::BAD_DESTINATION);
        assert_eq!(err.text, "domain missing.example does not exist");

        let err = router.route("[192.0.2.1]", now()).await.unwrap_err();
        assert_eq!(err.code, EnhancedStatus::UNROUTABLE);
        assert_eq!(err.text, "no route to address literal [192.0.2.1]");
        assert_eq!(err.source, FailureSource::Local);
    }
}
