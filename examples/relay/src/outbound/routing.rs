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
//! DNS goes through the [`Resolver`] trait:
//! [`HickoryResolver`](crate::net::dns::HickoryResolver) in the relay, a fake
//! in tests. When DNSSEC is on (`[dns] dnssec`, the default), the MX RRset
//! comes from the DNSSEC-aware resolver and the route keeps its status
//! ([`Route::mx_dnssec`]): a Secure MX RRset lets DANE apply to its hosts
//! (RFC 7672 §2.2.1) and counts as an MX found securely for REQUIRETLS (RFC
//! 8689 §4.2.1). A Bogus or Indeterminate MX answer defers (`4.4.3`): it is
//! never read as "no MX" or "no DANE".

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::routes::{NextHop, SMTP_PORT, StaticRoutes};
use crate::envelope::{EnhancedStatus, Failure};
use postern_dns::{DaneResolver, Denial};
use postern_policy::dane::{DnssecStatus, LookupFailure};
use postern_types::DomainName;

use crate::net::dns::{LookupError, MxRecord, Resolver, normalize_domain};

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
    /// The DNSSEC status of the MX RRset (of its denial, for an implicit
    /// MX), when it was looked up with DNSSEC on; `None` for static routes,
    /// `localhost` and without DNSSEC.
    pub mx_dnssec: Option<DnssecStatus>,
}

impl Route {
    /// Whether the hosts were found securely: a static route (the
    /// operator's own choice, no DNS answer to forge) or a DNSSEC-secure MX
    /// RRset. DANE applies only to such hosts (RFC 7672 §2.2.1), and a
    /// REQUIRETLS message needs one (RFC 8689 §4.2.1).
    pub fn hosts_found_securely(&self) -> bool {
        matches!(self.source, RouteSource::Static(_))
            || self.mx_dnssec == Some(DnssecStatus::Secure)
    }
}

/// Whether `name` (normalised) is `localhost` or under it: the loopback
/// host, never looked up in DNS (RFC 6761 §6.3).
pub fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Finds routes: static first, then DNS.
///
/// Cloning is cheap: clones share the resolver.
#[derive(Debug)]
pub struct Router<R> {
    routes: StaticRoutes,
    resolver: Arc<R>,
    mx_port: u16,
}

impl<R> Clone for Router<R> {
    fn clone(&self) -> Self {
        Self {
            routes: self.routes.clone(),
            resolver: Arc::clone(&self.resolver),
            mx_port: self.mx_port,
        }
    }
}

impl<R: Resolver> Router<R> {
    /// A router with these static routes and this resolver.
    pub fn new(routes: StaticRoutes, resolver: R) -> Self {
        Self {
            routes,
            resolver: Arc::new(resolver),
            mx_port: SMTP_PORT,
        }
    }

    /// The same router with other static routes (a configuration reload):
    /// the resolver is shared.
    #[must_use]
    pub fn with_routes(&self, routes: StaticRoutes) -> Self {
        Self {
            routes,
            ..self.clone()
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
                mx_dnssec: None,
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
                mx_dnssec: None,
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
        if let Some(dane) = self.resolver.dnssec() {
            return self.dnssec_route(dane, domain, now).await;
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
                mx_dnssec: None,
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

impl<R: Resolver> Router<R> {
    /// [`Router::route`] with DNSSEC on: the MX RRset from `dane`, with its
    /// status kept in the route.
    async fn dnssec_route(
        &self,
        dane: &DaneResolver,
        domain: String,
        now: SystemTime,
    ) -> Result<Route, Failure> {
        let Ok(name) = DomainName::parse(&domain) else {
            return Err(Failure::local(
                EnhancedStatus::BAD_DESTINATION,
                format!("{domain} is not a domain name"),
                now,
            ));
        };
        let mx = dane.mx(&name).await;
        // RFC 7672 §2.2.1: a failed MX lookup is an error, never "no MX".
        if let Some(failure) = mx.status.failure() {
            return Err(dnssec_failure("MX", &domain, failure, now));
        }
        let status = Some(mx.status);
        if mx.null_mx {
            return Err(null_mx(&domain, now));
        }
        match mx.denial {
            Some(Denial::NxDomain) => Err(Failure::local(
                EnhancedStatus::BAD_DESTINATION,
                format!("domain {domain} does not exist"),
                now,
            )),
            Some(_) => {
                // RFC 5321 §5.1 implicit MX; the status of the MX denial
                // says whether the domain was found securely as its own host.
                let addresses = dane.addresses(&name).await;
                if let Some(failure) = addresses.status.failure()
                    && addresses.addresses.is_empty()
                {
                    return Err(dnssec_failure("address", &domain, failure, now));
                }
                if addresses.addresses.is_empty() {
                    return Err(Failure::local(
                        EnhancedStatus::UNROUTABLE,
                        format!("{domain} has no MX and no address record"),
                        now,
                    ));
                }
                Ok(Route {
                    hosts: vec![NextHop {
                        host: domain.clone(),
                        port: self.mx_port,
                    }],
                    domain,
                    source: RouteSource::ImplicitMx,
                    mx_dnssec: status,
                })
            }
            None => {
                let records = mx
                    .hosts
                    .iter()
                    .map(|h| MxRecord {
                        preference: h.preference,
                        exchange: h.exchange.to_string(),
                    })
                    .collect();
                let mut route = mx_route(domain, records, self.mx_port, now)?;
                route.mx_dnssec = status;
                Ok(route)
            }
        }
    }
}

/// The temporary failure of a `what` lookup for `name` that DNSSEC did not
/// let through: `4.4.3`, retried later.
pub(crate) fn dnssec_failure(
    what: &str,
    name: &str,
    failure: LookupFailure,
    now: SystemTime,
) -> Failure {
    let why = match failure {
        LookupFailure::Bogus => "DNSSEC validation failed (bogus)",
        _ => "no answer (server failure or timeout)",
    };
    Failure::local(
        EnhancedStatus::DNS_FAILURE,
        format!("{what} lookup for {name}: {why}"),
        now,
    )
}

fn null_mx(domain: &str, now: SystemTime) -> Failure {
    // RFC 7505 §4: mail to a null MX domain is returned with status 5.1.10
    // (reply code 556, RFC 7504 §3).
    Failure::local(
        EnhancedStatus::NULL_MX,
        format!("null MX: {domain} accepts no mail"),
        now,
    )
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
        return Err(null_mx(&domain, now));
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
        mx_dnssec: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::FailureSource;
    use crate::net::dns::FixedResolver;
    use std::collections::HashMap;
    use std::net::IpAddr;
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
