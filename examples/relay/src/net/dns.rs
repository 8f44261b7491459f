//! The DNS lookups the flows need (MX, addresses, TXT), behind the
//! [`Resolver`] trait: [`HickoryResolver`] with the system configuration, or
//! [`FixedResolver`], fixed tables for tests and sites without DNS; and the
//! DNSSEC-aware [`DaneResolver`] for DANE (RFC 7672), which
//! [`SystemResolver`] puts beside them as `[dns]` says.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use postern_dns::{DaneResolver, TrustAdConfig, TrustAnchor, ValidatingConfig};
use postern_types::DomainName;

use crate::config::{DnsConfig, DnssecMode};

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
    /// The DNSSEC-aware resolver, when DNSSEC is on: MX, address and TLSA
    /// lookups for delivery then go through it, with their DNSSEC status.
    fn dnssec(&self) -> Option<&DaneResolver> {
        None
    }
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

    /// A resolver asking `servers` (over UDP, and TCP when truncated)
    /// instead of those of `/etc/resolv.conf`.
    pub fn from_servers(servers: &[SocketAddr]) -> Result<Self, LookupError> {
        let config = ResolverConfig::from_name_servers(
            servers
                .iter()
                .map(|addr| {
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .map(|mut c| {
                            c.port = addr.port();
                            c
                        })
                        .to_vec();
                    NameServerConfig::new(addr.ip(), true, connections)
                })
                .collect(),
        );
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
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

/// The resolvers of a running relay, as `[dns]` says: the plain one (MX,
/// addresses, TXT) and, unless `dnssec = "off"`, the DNSSEC-aware one that
/// delivery uses for MX, address and TLSA lookups.
#[derive(Debug)]
pub struct SystemResolver {
    plain: Plain,
    dnssec: Option<DaneResolver>,
}

#[derive(Debug)]
enum Plain {
    Hickory(Box<HickoryResolver>),
    Fixed(Box<FixedResolver>),
    /// No resolver could be built: every lookup fails temporarily and only
    /// static routes deliver.
    Unavailable(String),
}

/// A `[dns]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("dns: {0}")]
pub struct DnsSetupError(String);

impl SystemResolver {
    /// The resolvers `[dns]` describes. Call within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A trust-anchor file that cannot be read or holds no `DNSKEY`, or a
    /// configuration hickory-resolver refuses.
    pub fn from_config(dns: &DnsConfig) -> Result<Self, DnsSetupError> {
        let configured: Vec<SocketAddr> = dns.nameservers.iter().map(|n| n.0).collect();
        let plain = if configured.is_empty() {
            HickoryResolver::from_system()
        } else {
            HickoryResolver::from_servers(&configured)
        };
        let plain = match plain {
            Ok(r) => Plain::Hickory(Box::new(r)),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver: only static routes can deliver");
                Plain::Unavailable(e.to_string())
            }
        };
        let dnssec = dane_resolver(dns)?;
        Ok(Self { plain, dnssec })
    }

    /// Fixed tables, without DNSSEC (tests, sites without DNS).
    pub fn fixed(tables: FixedResolver) -> Self {
        Self {
            plain: Plain::Fixed(Box::new(tables)),
            dnssec: None,
        }
    }

    /// No resolver: every lookup fails temporarily with `reason`, and only
    /// static routes deliver (tests).
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            plain: Plain::Unavailable(reason.into()),
            dnssec: None,
        }
    }
}

/// The DNSSEC-aware resolver of `dns` (asking [`name_servers`]); none with
/// `dnssec = "off"`.
fn dane_resolver(dns: &DnsConfig) -> Result<Option<DaneResolver>, DnsSetupError> {
    if dns.dnssec == DnssecMode::Off {
        return Ok(None);
    }
    let servers = name_servers(dns);
    let Some(&first) = servers.first() else {
        // No resolver at all (no /etc/resolv.conf): the plain resolver
        // fails every lookup too; DANE destinations are deferred, never
        // sent without it.
        tracing::warn!(
            "no name server: DNSSEC lookups unavailable; DANE destinations are deferred"
        );
        return Ok(None);
    };
    match dns.dnssec {
        DnssecMode::Validate => {
            let anchor = dns
                .trust_anchor
                .clone()
                .map_or(TrustAnchor::BuiltInRoot, TrustAnchor::File);
            let config = ValidatingConfig::new(servers)
                .with_trust_anchor(anchor)
                .with_timeout(dns.timeout.0);
            DaneResolver::validating(&config)
                .map(Some)
                .map_err(|e| DnsSetupError(e.to_string()))
        }
        _ => Ok(Some(DaneResolver::trust_ad(
            TrustAdConfig::new(first).with_timeout(dns.timeout.0),
        ))),
    }
}

/// The name servers `[dns]` asks: `nameservers`, else those of
/// `/etc/resolv.conf`.
pub fn name_servers(dns: &DnsConfig) -> Vec<SocketAddr> {
    if dns.nameservers.is_empty() {
        system_name_servers()
    } else {
        dns.nameservers.iter().map(|n| n.0).collect()
    }
}

/// The name servers of `/etc/resolv.conf`, with their ports.
fn system_name_servers() -> Vec<SocketAddr> {
    hickory_resolver::system_conf::read_system_conf()
        .map(|(config, _)| {
            config
                .name_servers()
                .iter()
                .map(|ns| {
                    let port = ns.connections.first().map_or(53, |c| c.port);
                    SocketAddr::new(ns.ip, port)
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Resolver for SystemResolver {
    async fn mx(&self, domain: &str) -> Result<Vec<MxRecord>, LookupError> {
        match &self.plain {
            Plain::Hickory(r) => r.mx(domain).await,
            Plain::Fixed(r) => r.mx(domain).await,
            Plain::Unavailable(e) => Err(LookupError::Temporary(e.clone())),
        }
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        match &self.plain {
            Plain::Hickory(r) => r.addresses(host).await,
            Plain::Fixed(r) => r.addresses(host).await,
            Plain::Unavailable(e) => Err(LookupError::Temporary(e.clone())),
        }
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        match &self.plain {
            Plain::Hickory(r) => r.txt(name).await,
            Plain::Fixed(r) => r.txt(name).await,
            Plain::Unavailable(e) => Err(LookupError::Temporary(e.clone())),
        }
    }

    fn dnssec(&self) -> Option<&DaneResolver> {
        self.dnssec.as_ref()
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
