//! What delivery learns about one next-hop host before it connects: its
//! addresses, the name to present and check, and, where DANE applies, the
//! verdict of its TLSA records (RFC 7672 §2.2).
//!
//! [`look_up`] follows RFC 7672 §2.2.2 with the DNSSEC-aware resolver:
//!
//! - The address records are looked up with their DNSSEC status. A Bogus
//!   answer makes the host unusable (deferred), whatever the mode: it is a
//!   sign of tampering, and a validating resolver would have refused it.
//!   Where DANE is wanted, a failed address lookup goes to the policy as an
//!   unusable host (4.7.5 `dnssec-invalid`); elsewhere it is a DNS failure
//!   (4.4.3).
//! - TLSA records are looked up only when DANE is wanted for the
//!   destination ([`DaneUse`]) and the host was found securely (a Secure MX
//!   RRset, or a static route); then through
//!   [`DaneResolver::tlsa_for`](postern_dns::DaneResolver::tlsa_for), which
//!   follows a secure CNAME to the TLSA base domain. The base domain
//!   becomes the name sent as SNI and checked by DANE-TA(2) (RFC 7672 §3.2.2,
//!   §8.1).
//! - The verdict, [`DaneOutcome::from_lookup`], goes to the connection
//!   policy: usable records authenticate, unusable ones still require TLS,
//!   an insecure answer leaves the destination's other policy, a failed one
//!   (Bogus, Indeterminate) makes the host unusable — never "no DANE".

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::SystemTime;

use postern_dns::HostTlsa;
use postern_policy::dane::{DaneOutcome, DnssecStatus, LookupFailure, TlsaLookup};
use postern_policy::{ClientTlsMode, DomainName, MessageTls};

use crate::config::routes::{NextHop, SMTP_PORT};
use crate::envelope::{EnhancedStatus, Failure};
use crate::net::dns::{Resolver, normalize_domain};
use crate::outbound::routing::{Route, RouteSource, dnssec_failure, is_localhost};

/// Whether DANE is wanted for a destination, and where TLSA records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaneUse {
    /// No TLSA lookup: the mode does not use DANE, or DNSSEC is off.
    No,
    /// Look TLSA records up at `_port._tcp` of each host; `secure_hosts`:
    /// whether the hosts were found securely (else DANE does not apply and
    /// the verdict is "insecure").
    Yes {
        /// The port of the TLSA name: 25 for MX hosts (whatever port the
        /// connection uses), the route's port for a static route.
        port: u16,
        /// See [`Route::hosts_found_securely`].
        secure_hosts: bool,
    },
}

impl DaneUse {
    /// Whether DANE is wanted under `mode`: the `dane`, `dane-only` and
    /// `mta-sts` modes (RFC 8461 §2: usable DANE records take precedence),
    /// and `opportunistic` when `opportunistic_dane` is on or the message
    /// requires TLS (RFC 8689 §4.2.1 accepts DANE). A TLS report mail (RFC
    /// 8460 §5.3: delivered despite TLS failures) is not upgraded beyond
    /// its mode: only `dane` and `dane-only` apply to it.
    pub fn wanted(
        mode: ClientTlsMode,
        message: MessageTls,
        tls_report: bool,
        opportunistic_dane: bool,
    ) -> bool {
        match mode {
            ClientTlsMode::Dane | ClientTlsMode::DaneOnly => true,
            ClientTlsMode::MtaSts => !tls_report,
            ClientTlsMode::Opportunistic => {
                !tls_report && (opportunistic_dane || message == MessageTls::RequireTls)
            }
            _ => false,
        }
    }

    /// What to look up for `route`'s hosts: TLSA records when DANE is
    /// `wanted` ([`DaneUse::wanted`]) and `resolver` has DNSSEC on, else
    /// nothing.
    pub fn choose<R: Resolver>(resolver: &R, route: &Route, wanted: bool) -> Self {
        if wanted && resolver.dnssec().is_some() {
            Self::for_route(route)
        } else {
            Self::No
        }
    }

    /// TLSA lookups for the hosts of `route`.
    pub fn for_route(route: &Route) -> Self {
        let port = match route.source {
            RouteSource::Static(_) => route.hosts.first().map_or(SMTP_PORT, |h| h.port),
            RouteSource::Mx | RouteSource::ImplicitMx => SMTP_PORT,
        };
        Self::Yes {
            port,
            secure_hosts: route.hosts_found_securely(),
        }
    }
}

/// What is known about one next-hop host before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLookup {
    /// Where to connect, in order.
    pub addresses: Vec<SocketAddr>,
    /// The host's name as the connection presents and checks it: the TLSA
    /// base domain when TLSA records were found, else the host name; `None`
    /// for an IP address.
    pub server_name: Option<DomainName>,
    /// The DNSSEC status of the address records, when they were looked up
    /// with DNSSEC.
    pub address_status: Option<DnssecStatus>,
    /// The TLSA records found and where, when DANE was wanted.
    pub tlsa: Option<HostTlsa>,
    /// DANE's verdict for the connection policy, when DANE was wanted.
    pub dane: Option<DaneOutcome>,
}

/// Looks `host` up (see the [module documentation](self)); a failure is a
/// temporary one for the recipients (the next host is tried).
pub async fn look_up<R: Resolver>(
    resolver: &R,
    host: &NextHop,
    dane: DaneUse,
    now: SystemTime,
) -> Result<HostLookup, Failure> {
    let bare = host.host.trim_start_matches('[').trim_end_matches(']');
    // No DNS name, no TLSA: DANE has nothing to say (under `dane-only`
    // the policy then defers: no usable TLSA records).
    let no_dns = |addresses: Vec<IpAddr>, server_name| HostLookup {
        addresses: with_port(addresses, host.port),
        server_name,
        address_status: None,
        tlsa: None,
        dane: (dane != DaneUse::No).then(|| DaneOutcome::from_lookup(TlsaLookup::Insecure)),
    };
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(no_dns(vec![ip], None));
    }
    if is_localhost(&normalize_domain(bare)) {
        let loopback = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(Ipv6Addr::LOCALHOST),
        ];
        return Ok(no_dns(loopback, DomainName::parse(bare).ok()));
    }
    let no_address = || {
        Failure::local(
            EnhancedStatus::DNS_FAILURE,
            format!("no address for {bare}"),
            now,
        )
    };
    let (Some(dnssec), Ok(name)) = (resolver.dnssec(), DomainName::parse(bare)) else {
        let ips = resolver.addresses(bare).await.map_err(|e| {
            Failure::local(
                EnhancedStatus::DNS_FAILURE,
                format!("address lookup for {bare} failed: {e}"),
                now,
            )
        })?;
        if ips.is_empty() {
            return Err(no_address());
        }
        return Ok(HostLookup {
            addresses: with_port(ips, host.port),
            server_name: DomainName::parse(bare).ok(),
            address_status: None,
            tlsa: None,
            dane: None,
        });
    };
    let addresses = dnssec.addresses(&name).await;
    let dane_applies = matches!(
        dane,
        DaneUse::Yes {
            secure_hosts: true,
            ..
        }
    );
    match addresses.status.failure() {
        // Where DANE applies, a failed address lookup makes the host
        // unusable through the policy (4.7.5 `dnssec-invalid`, counted for
        // TLS-RPT): `tlsa_for` says so without a TLSA query.
        Some(_) if dane_applies => {}
        Some(failure @ LookupFailure::Bogus) => {
            return Err(dnssec_failure("address", bare, failure, now));
        }
        Some(failure) if addresses.addresses.is_empty() => {
            return Err(dnssec_failure("address", bare, failure, now));
        }
        _ if addresses.addresses.is_empty() => return Err(no_address()),
        _ => {}
    }
    let tlsa = match dane {
        DaneUse::No => None,
        DaneUse::Yes {
            port,
            secure_hosts: true,
        } => Some(dnssec.tlsa_for(&addresses, port).await),
        // RFC 7672 §2.2.1: TLSA records of hosts from an insecure MX RRset
        // are not looked up.
        DaneUse::Yes {
            secure_hosts: false,
            ..
        } => Some(HostTlsa::new(name.clone(), TlsaLookup::Insecure)),
    };
    let dane = tlsa
        .as_ref()
        .map(|t| DaneOutcome::from_lookup(t.lookup.clone()));
    // RFC 7672 §8.1: with TLSA records, the SNI (and the DANE-TA reference
    // identifier) is the TLSA base domain.
    let server_name = match &tlsa {
        Some(t) if matches!(t.lookup, TlsaLookup::Secure(_)) => t.base_domain.clone(),
        _ => name,
    };
    Ok(HostLookup {
        addresses: with_port(addresses.addresses, host.port),
        server_name: Some(server_name),
        address_status: Some(addresses.status),
        tlsa,
        dane,
    })
}

fn with_port(ips: Vec<IpAddr>, port: u16) -> Vec<SocketAddr> {
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dns::FixedResolver;

    fn route(source: RouteSource, mx_dnssec: Option<DnssecStatus>) -> Route {
        Route {
            domain: "example.org".into(),
            hosts: vec![NextHop {
                host: "mx.example.org".into(),
                port: 2525,
            }],
            source,
            mx_dnssec,
        }
    }

    #[test]
    fn dane_is_wanted_by_the_dane_modes_and_opportunistic_when_on() {
        use ClientTlsMode as M;
        let cases = [
            // mode, message, report mail, opportunistic_dane → wanted
            (M::Dane, MessageTls::Default, false, false, true),
            (M::DaneOnly, MessageTls::Default, true, false, true),
            (M::MtaSts, MessageTls::Default, false, false, true),
            (M::MtaSts, MessageTls::Default, true, true, false),
            (M::Opportunistic, MessageTls::Default, false, true, true),
            (M::Opportunistic, MessageTls::Default, false, false, false),
            (M::Opportunistic, MessageTls::RequireTls, false, false, true),
            (M::Opportunistic, MessageTls::Default, true, true, false),
            (M::Encrypt, MessageTls::Default, false, true, false),
            (M::Verify, MessageTls::RequireTls, false, true, false),
            (M::Secure, MessageTls::Default, false, true, false),
            (M::Fingerprint, MessageTls::Default, false, true, false),
            (M::None, MessageTls::Default, false, true, false),
        ];
        for (mode, message, report, opportunistic, wanted) in cases {
            assert_eq!(
                DaneUse::wanted(mode, message, report, opportunistic),
                wanted,
                "{mode:?} {message:?} report={report} opportunistic_dane={opportunistic}"
            );
        }
    }

    #[test]
    fn tlsa_port_and_secure_hosts_follow_the_route() {
        // MX hosts: TLSA at port 25 whatever port the connection uses; only
        // a secure MX RRset lets DANE apply.
        assert_eq!(
            DaneUse::for_route(&route(RouteSource::Mx, Some(DnssecStatus::Secure))),
            DaneUse::Yes {
                port: 25,
                secure_hosts: true
            }
        );
        for status in [None, Some(DnssecStatus::Insecure)] {
            assert_eq!(
                DaneUse::for_route(&route(RouteSource::ImplicitMx, status)),
                DaneUse::Yes {
                    port: 25,
                    secure_hosts: false
                }
            );
        }
        // A static route is the operator's choice: its host and port.
        assert_eq!(
            DaneUse::for_route(&route(RouteSource::Static("*".into()), None)),
            DaneUse::Yes {
                port: 2525,
                secure_hosts: true
            }
        );
    }

    #[tokio::test]
    async fn without_dns_names_dane_has_nothing_to_say() {
        let dane = DaneUse::Yes {
            port: 25,
            secure_hosts: true,
        };
        let now = SystemTime::now();
        let resolver = FixedResolver::new();
        for host in ["[192.0.2.1]", "localhost"] {
            let hop = NextHop {
                host: host.into(),
                port: 25,
            };
            let found = look_up(&resolver, &hop, dane, now).await.unwrap();
            assert_eq!(found.dane, Some(DaneOutcome::Opportunistic), "{host}");
            assert!(found.tlsa.is_none());
            let none = look_up(&resolver, &hop, DaneUse::No, now).await.unwrap();
            assert_eq!(none.dane, None, "{host}");
        }
    }

    #[tokio::test]
    async fn without_dnssec_addresses_come_from_the_plain_resolver() {
        let resolver = FixedResolver::new().with_address("mx.example.org", [192, 0, 2, 7].into());
        let hop = NextHop {
            host: "mx.example.org".into(),
            port: 2525,
        };
        let now = SystemTime::now();
        let found = look_up(&resolver, &hop, DaneUse::No, now).await.unwrap();
        assert_eq!(found.addresses, vec!["192.0.2.7:2525".parse().unwrap()]);
        assert_eq!(found.server_name, DomainName::parse("mx.example.org").ok());
        assert_eq!(found.address_status, None);
        let missing = NextHop {
            host: "nx.example.org".into(),
            port: 25,
        };
        let failure = look_up(&resolver, &missing, DaneUse::No, now)
            .await
            .unwrap_err();
        assert_eq!(failure.code, EnhancedStatus::DNS_FAILURE);
        assert!(failure.text.contains("nx.example.org"), "{}", failure.text);
    }
}
