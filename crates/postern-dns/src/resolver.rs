//! The resolver: two back ends, one vocabulary.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Edns, Message, Query, ResponseCode,
};
use hickory_resolver::proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use postern_policy::dane::{DnssecStatus, LookupFailure, TlsaLookup, TlsaRecord};
use postern_types::DomainName;
use tracing::debug;

use crate::answer::{AddressLookup, Denial, HostTlsa, MxHost, MxLookup};
use crate::config::{TrustAdConfig, TrustAnchor, ValidatingConfig};

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

/// Why a resolver could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The trust-anchor file could not be read or holds no usable DNSKEY.
    #[error("trust anchor file {path}: {message}")]
    TrustAnchor {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// No name server is configured.
    #[error("no name server configured")]
    NoNameServers,
    /// hickory-resolver refused the configuration.
    #[error("resolver: {0}")]
    Resolver(String),
}

/// Which of the two models a [`DaneResolver`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Validates itself from a trust anchor ([`ValidatingConfig`]).
    Validating,
    /// Trusts the AD bit of a validating resolver ([`TrustAdConfig`]).
    TrustAd,
}

/// DNSSEC-aware MX, address and TLSA lookups for DANE; see the crate
/// documentation.
///
/// Cheap to clone (the state is shared); the lookups run on Tokio.
#[derive(Clone)]
pub struct DaneResolver {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Validating(Arc<Resolver<TokioRuntimeProvider>>),
    TrustAd(TrustAdConfig),
}

impl fmt::Debug for DaneResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Validating(r) => f
                .debug_struct("DaneResolver")
                .field("mode", &Mode::Validating)
                .field("options", r.options())
                .finish(),
            Backend::TrustAd(config) => f
                .debug_struct("DaneResolver")
                .field("mode", &Mode::TrustAd)
                .field("config", config)
                .finish(),
        }
    }
}

/// One query's outcome, before it is shaped for MX, A/AAAA or TLSA.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw {
    status: DnssecStatus,
    kind: RawKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RawKind {
    /// The answer section (no RRSIGs): the CNAME chain and the records.
    Records(Vec<Record>),
    Denied(Denial),
    Failed,
}

impl Raw {
    fn failed(status: DnssecStatus) -> Self {
        Self {
            status,
            kind: RawKind::Failed,
        }
    }
}

/// The records of `ty` at the end of the CNAME chain that starts at `qname`,
/// and the chain's last name. Records off the chain are ignored.
fn follow_chain(qname: &Name, ty: RecordType, records: &[Record]) -> (Name, Vec<Record>) {
    let mut name = qname.clone();
    // A chain longer than the records is a loop.
    for _ in 0..=records.len() {
        let next = records.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == name && ty != RecordType::CNAME => {
                Some(target.0.clone())
            }
            _ => None,
        });
        match next {
            Some(target) => name = target,
            None => break,
        }
    }
    let found = records
        .iter()
        .filter(|r| r.name == name && r.record_type() == ty)
        .cloned()
        .collect();
    (name, found)
}

fn proof_status(proof: Proof) -> DnssecStatus {
    match proof {
        Proof::Secure => DnssecStatus::Secure,
        Proof::Insecure => DnssecStatus::Insecure,
        Proof::Bogus => DnssecStatus::Bogus,
        Proof::Indeterminate => DnssecStatus::Indeterminate,
    }
}

/// The status of a negative answer from the validating back end, judged from
/// the proofs hickory attached to the authority section.
///
/// hickory returns a negative answer (rather than an error) only when its
/// NSEC/NSEC3 proof was secure or every authority record is insecure; so a
/// secure NSEC or NSEC3 record here means a proved denial.
fn negative_status(authorities: &[Record]) -> DnssecStatus {
    let records = authorities
        .iter()
        .filter(|r| r.record_type() != RecordType::RRSIG);
    let mut status = DnssecStatus::Insecure;
    for r in records {
        match (r.proof, r.record_type()) {
            (Proof::Bogus, _) => return DnssecStatus::Bogus,
            (Proof::Secure, RecordType::NSEC | RecordType::NSEC3) => {
                status = DnssecStatus::Secure;
            }
            (Proof::Indeterminate, _) if status != DnssecStatus::Secure => {
                status = DnssecStatus::Indeterminate;
            }
            _ => {}
        }
    }
    status
}

fn denial_of(code: ResponseCode) -> Denial {
    if code == ResponseCode::NXDomain {
        Denial::NxDomain
    } else {
        Denial::NoData
    }
}

/// Maps what hickory's validating resolver returned.
fn from_validating(
    result: Result<hickory_resolver::lookup::Lookup, NetError>,
    qname: &Name,
    ty: RecordType,
) -> Raw {
    match result {
        Ok(lookup) => {
            let records: Vec<Record> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG)
                .cloned()
                .collect();
            if records.is_empty() {
                debug!(%qname, ?ty, "empty answer without a denial");
                return Raw::failed(DnssecStatus::Indeterminate);
            }
            // Every record on the way counts: a CNAME chain is only as secure
            // as its weakest link (RFC 7672 §2.2.2).
            let (_, chain) = chain_records(qname, ty, &records);
            let status = chain
                .iter()
                .fold(DnssecStatus::Secure, |s, r| s.and(proof_status(r.proof)));
            Raw {
                status,
                kind: RawKind::Records(records),
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code,
            authorities,
            ..
        }))) => Raw {
            status: negative_status(authorities.as_deref().unwrap_or_default()),
            kind: RawKind::Denied(denial_of(response_code)),
        },
        Err(NetError::Dns(DnsError::Nsec {
            response, proof, ..
        })) => {
            let status = match proof_status(proof) {
                // Not an error when secure; be safe if it ever is.
                DnssecStatus::Secure => DnssecStatus::Indeterminate,
                other => other,
            };
            match status.failure() {
                Some(_) => Raw::failed(status),
                None => Raw {
                    status,
                    kind: RawKind::Denied(denial_of(response.response_code)),
                },
            }
        }
        Err(NetError::Dns(DnsError::DnssecBogus)) => Raw::failed(DnssecStatus::Bogus),
        Err(error) => {
            debug!(%qname, ?ty, %error, "lookup failed");
            Raw::failed(DnssecStatus::Indeterminate)
        }
    }
}

/// The records that the answer to `qname` rests on: the CNAMEs of the chain
/// and the final RRset.
fn chain_records(qname: &Name, ty: RecordType, records: &[Record]) -> (Name, Vec<Record>) {
    let (last, found) = follow_chain(qname, ty, records);
    let mut chain: Vec<Record> = Vec::new();
    let mut name = qname.clone();
    while name != last {
        let Some(link) = records
            .iter()
            .find(|r| r.name == name && r.record_type() == RecordType::CNAME)
        else {
            break;
        };
        chain.push(link.clone());
        match &link.data {
            RData::CNAME(target) => name = target.0.clone(),
            _ => break,
        }
        if chain.len() > records.len() {
            break;
        }
    }
    chain.extend(found);
    (last, chain)
}

/// RFC 8914 extended DNS error codes that report a DNSSEC validation failure:
/// 1 (unsupported DNSKEY algorithm) is not among them, as RFC 4035 treats
/// that as insecure.
const EDE_DNSSEC_FAILURES: [u16; 7] = [
    6,  // DNSSEC Bogus
    7,  // Signature Expired
    8,  // Signature Not Yet Valid
    9,  // DNSKEY Missing
    10, // RRSIGs Missing
    11, // No Zone Key Bit Set
    12, // NSEC Missing
];

/// The extended DNS error codes (RFC 8914) of a response.
fn ede_codes(message: &Message) -> Vec<u16> {
    let Some(edns) = &message.edns else {
        return Vec::new();
    };
    edns.options()
        .get_all(EdnsCode::from(15))
        .into_iter()
        .filter_map(|option| match option {
            EdnsOption::Unknown(15, data) if data.len() >= 2 => {
                Some(u16::from_be_bytes([data[0], data[1]]))
            }
            _ => None,
        })
        .collect()
}

/// Whether `message` carries an RFC 8914 extended error naming a DNSSEC
/// validation failure.
fn dnssec_failure_reported(message: &Message) -> bool {
    ede_codes(message)
        .iter()
        .any(|c| EDE_DNSSEC_FAILURES.contains(c))
}

/// Maps the response of a resolver whose AD bit is trusted.
fn from_trusted_response(message: &Message, qname: &Name, ty: RecordType) -> Raw {
    if message.metadata.truncation {
        // A truncated answer may omit records: never read it as a denial.
        return Raw::failed(DnssecStatus::Indeterminate);
    }
    let ad = if message.metadata.authentic_data {
        DnssecStatus::Secure
    } else {
        DnssecStatus::Insecure
    };
    let code = message.metadata.response_code;
    match code {
        ResponseCode::NoError | ResponseCode::NXDomain => {
            if dnssec_failure_reported(message) {
                // A resolver that hands out data it could not validate
                // (unbound's `val-permissive-mode`) clears the AD bit, which
                // would read as Insecure, "no DANE": the extended error says
                // Bogus (RFC 7672 §2.1).
                debug!(%qname, ?ty, %code, "answer with a DNSSEC extended error");
                return Raw::failed(DnssecStatus::Bogus);
            }
            let records: Vec<Record> = message
                .answers
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG)
                .cloned()
                .collect();
            let (_, found) = follow_chain(qname, ty, &records);
            match (found.is_empty(), code) {
                // A chain to nowhere is a denial of the chain's last name.
                (true, _) => Raw {
                    status: ad,
                    kind: RawKind::Denied(denial_of(code)),
                },
                (false, ResponseCode::NoError) => Raw {
                    status: ad,
                    kind: RawKind::Records(records),
                },
                // Records of the type asked for under NXDOMAIN: the response
                // contradicts itself (RFC 6604 §2.1: the RCODE speaks of the
                // last name of the chain); neither answer can be trusted.
                (false, _) => {
                    debug!(%qname, ?ty, "NXDOMAIN with records; ignored");
                    Raw::failed(DnssecStatus::Indeterminate)
                }
            }
        }
        ResponseCode::ServFail => {
            // A validating resolver answers SERVFAIL both for bogus data and
            // for data it could not get. Only an RFC 8914 extended error
            // naming a DNSSEC failure (unbound: `ede: yes`) tells them apart;
            // without one the answer is Indeterminate.
            if dnssec_failure_reported(message) {
                Raw::failed(DnssecStatus::Bogus)
            } else {
                debug!(%qname, ?ty, codes = ?ede_codes(message), "SERVFAIL");
                Raw::failed(DnssecStatus::Indeterminate)
            }
        }
        code => {
            debug!(%qname, ?ty, %code, "resolver refused or failed");
            Raw::failed(DnssecStatus::Indeterminate)
        }
    }
}

/// The DNS name of a normalised domain (absolute).
fn dns_name(domain: &str) -> Option<Name> {
    match Name::from_ascii(format!("{domain}.")) {
        Ok(name) => Some(name),
        Err(error) => {
            debug!(%domain, %error, "not a DNS name");
            None
        }
    }
}

fn domain_of(name: &Name) -> Option<DomainName> {
    DomainName::parse(&name.to_ascii()).ok()
}

/// A TLSA record as the policy takes it; `None` (logged) for rdata that cannot
/// be read. hickory keeps rdata it could not decode as `Unknown`: its wire form
/// (usage, selector, matching type, data; RFC 6698 §2.1) is read here.
fn tlsa_record(record: &Record) -> Option<TlsaRecord> {
    match &record.data {
        RData::TLSA(tlsa) => Some(TlsaRecord {
            usage: u8::from(tlsa.cert_usage).into(),
            selector: u8::from(tlsa.selector).into(),
            matching_type: u8::from(tlsa.matching).into(),
            data: tlsa.cert_data.clone(),
        }),
        RData::Unknown { code, rdata } if *code == RecordType::TLSA => match &rdata.anything[..] {
            [usage, selector, matching_type, data @ ..] => Some(TlsaRecord {
                usage: (*usage).into(),
                selector: (*selector).into(),
                matching_type: (*matching_type).into(),
                data: data.to_vec(),
            }),
            short => {
                debug!(name = %record.name, len = short.len(), "TLSA rdata too short; skipped");
                None
            }
        },
        other => {
            debug!(name = %record.name, rdata = ?other, "TLSA record not readable; skipped");
            None
        }
    }
}

/// Shapes the answer to an MX query for `domain` (RFC 7672 §2.2.1, RFC 7505);
/// `None` when `domain` is not a DNS name (Indeterminate, nothing asked).
fn mx_lookup(domain: &DomainName, answer: Option<(&Name, Raw)>) -> MxLookup {
    let mut lookup = MxLookup {
        domain: domain.clone(),
        canonical: domain.clone(),
        status: DnssecStatus::Indeterminate,
        hosts: Vec::new(),
        null_mx: false,
        denial: None,
    };
    let Some((qname, raw)) = answer else {
        return lookup;
    };
    lookup.status = raw.status;
    match raw.kind {
        RawKind::Records(records) => {
            let (last, found) = follow_chain(qname, RecordType::MX, &records);
            if let Some(canonical) = domain_of(&last) {
                lookup.canonical = canonical;
            }
            for record in &found {
                let RData::MX(mx) = &record.data else {
                    continue;
                };
                if mx.exchange.is_root() {
                    lookup.null_mx = true;
                    continue;
                }
                match domain_of(&mx.exchange) {
                    Some(exchange) => lookup.hosts.push(MxHost {
                        preference: mx.preference,
                        exchange,
                    }),
                    None => debug!(exchange = %mx.exchange, "MX exchange skipped"),
                }
            }
            if lookup.null_mx {
                // RFC 7505 §3: a null MX stands alone.
                lookup.hosts.clear();
            }
            lookup.hosts.sort_by_key(|h| h.preference);
        }
        RawKind::Denied(denial) => lookup.denial = Some(denial),
        RawKind::Failed => {}
    }
    lookup
}

/// Shapes the answers to the A and AAAA queries for `host` (RFC 7672
/// §2.2.2); `None` when `host` is not a DNS name (Indeterminate, nothing
/// asked).
fn address_lookup(host: &DomainName, answers: Option<(&Name, &Raw, &Raw)>) -> AddressLookup {
    let mut lookup = AddressLookup {
        name: host.clone(),
        canonical: host.clone(),
        status: DnssecStatus::Indeterminate,
        addresses: Vec::new(),
        denial: None,
    };
    let Some((qname, a, aaaa)) = answers else {
        return lookup;
    };
    lookup.status = a.status.and(aaaa.status);
    let mut canonical = None;
    for (raw, ty) in [(a, RecordType::A), (aaaa, RecordType::AAAA)] {
        if let RawKind::Records(records) = &raw.kind {
            let (last, found) = follow_chain(qname, ty, records);
            canonical.get_or_insert(last);
            lookup
                .addresses
                .extend(found.iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                }));
        }
    }
    if let Some(canonical) = canonical.as_ref().and_then(domain_of) {
        lookup.canonical = canonical;
    }
    if let (RawKind::Denied(denial), RawKind::Denied(_)) = (&a.kind, &aaaa.kind) {
        lookup.denial = Some(*denial);
    }
    lookup
}

/// Shapes the answer to the TLSA query `qname` (`_port._tcp.host`) as the
/// sans-IO DANE policy takes it; see [`DaneResolver::tlsa`].
fn tlsa_lookup(qname: &Name, raw: Raw) -> TlsaLookup {
    match (raw.status, raw.kind) {
        (DnssecStatus::Bogus, _) => TlsaLookup::Failed(LookupFailure::Bogus),
        (DnssecStatus::Indeterminate, _) | (_, RawKind::Failed) => {
            TlsaLookup::Failed(LookupFailure::Indeterminate)
        }
        (DnssecStatus::Insecure, _) => TlsaLookup::Insecure,
        (_, RawKind::Denied(_)) => TlsaLookup::SecureNoRecords,
        (_, RawKind::Records(records)) => {
            let (_, found) = follow_chain(qname, RecordType::TLSA, &records);
            let parsed: Vec<TlsaRecord> = found.iter().filter_map(tlsa_record).collect();
            if parsed.is_empty() && !found.is_empty() {
                // Records exist but none can be read. "No TLSA" would
                // downgrade the host to opportunistic TLS; say
                // Indeterminate instead (the host is deferred).
                debug!(%qname, "no readable TLSA record in a secure RRset");
                TlsaLookup::Failed(LookupFailure::Indeterminate)
            } else if parsed.is_empty() {
                TlsaLookup::SecureNoRecords
            } else {
                TlsaLookup::Secure(parsed)
            }
        }
    }
}

impl DaneResolver {
    /// Mode (a): validates DNSSEC itself, from the configured trust anchor,
    /// asking the configured servers over UDP and TCP.
    ///
    /// # Errors
    ///
    /// No server, an unreadable trust-anchor file, or a configuration
    /// hickory-resolver refuses.
    pub fn validating(config: &ValidatingConfig) -> Result<Self, BuildError> {
        if config.name_servers.is_empty() {
            return Err(BuildError::NoNameServers);
        }
        let anchors = match &config.trust_anchor {
            TrustAnchor::BuiltInRoot => TrustAnchors::default(),
            TrustAnchor::File(path) => {
                let error = |message: String| BuildError::TrustAnchor {
                    path: path.display().to_string(),
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
                // hickory counts only root keys in `is_empty`; an anchor file
                // for another zone must still hold a DNSKEY.
                if !text.to_ascii_uppercase().contains("DNSKEY") {
                    return Err(error("no DNSKEY record".to_owned()));
                }
                text.parse::<TrustAnchors>()
                    .map_err(|e| error(e.to_string()))?
            }
        };
        let servers = config
            .name_servers
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
            .collect();
        let mut builder = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .with_trust_anchor(Arc::new(anchors));
        let options: &mut ResolverOpts = builder.options_mut();
        options.validate = true;
        options.timeout = config.timeout;
        options.attempts = config.attempts.max(1);
        options.use_hosts_file = ResolveHosts::Never;
        options.preserve_intermediates = true;
        options.ndots = 0;
        let resolver = builder
            .build()
            .map_err(|e| BuildError::Resolver(e.to_string()))?;
        Ok(Self {
            backend: Backend::Validating(Arc::new(resolver)),
        })
    }

    /// Mode (b): trusts the AD bit of the validating resolver in `config`.
    ///
    /// Queries go over UDP with the AD bit set (RFC 6840 §5.7: "give me the
    /// AD bit") and EDNS, and are retried over TCP when truncated.
    pub fn trust_ad(config: TrustAdConfig) -> Self {
        Self {
            backend: Backend::TrustAd(config),
        }
    }

    /// Which model this resolver follows.
    pub fn mode(&self) -> Mode {
        match self.backend {
            Backend::Validating(_) => Mode::Validating,
            Backend::TrustAd(_) => Mode::TrustAd,
        }
    }

    /// For [`Mode::TrustAd`], whether the trusted resolver is on loopback
    /// (see [`TrustAdConfig::is_loopback`]); `None` in [`Mode::Validating`],
    /// where the network path does not matter.
    pub fn trusted_resolver_is_loopback(&self) -> Option<bool> {
        match &self.backend {
            Backend::Validating(_) => None,
            Backend::TrustAd(config) => Some(config.is_loopback()),
        }
    }

    async fn query(&self, qname: &Name, ty: RecordType) -> Raw {
        let raw = match &self.backend {
            Backend::Validating(resolver) => validated(resolver, qname, ty).await,
            Backend::TrustAd(config) => match trusted_query(config, qname, ty).await {
                Ok(response) => from_trusted_response(&response, qname, ty),
                Err(error) => {
                    debug!(%qname, ?ty, %error, "trusted resolver did not answer");
                    Raw::failed(DnssecStatus::Indeterminate)
                }
            },
        };
        debug!(%qname, ?ty, status = %raw.status, "lookup");
        raw
    }

    /// The MX RRset of `domain`, with its DNSSEC status (RFC 7672 §2.2.1).
    pub async fn mx(&self, domain: &DomainName) -> MxLookup {
        let Some(qname) = dns_name(domain.as_str()) else {
            return mx_lookup(domain, None);
        };
        let raw = self.query(&qname, RecordType::MX).await;
        mx_lookup(domain, Some((&qname, raw)))
    }

    /// The A and AAAA records of `host`, with the status of both and of any
    /// CNAMEs on the way (RFC 7672 §2.2.2).
    pub async fn addresses(&self, host: &DomainName) -> AddressLookup {
        let Some(qname) = dns_name(host.as_str()) else {
            return address_lookup(host, None);
        };
        let (a, aaaa) = tokio::join!(
            self.query(&qname, RecordType::A),
            self.query(&qname, RecordType::AAAA)
        );
        address_lookup(host, Some((&qname, &a, &aaaa)))
    }

    /// The TLSA records at `_port._tcp.host` (RFC 7672 §2.2.2), as the
    /// sans-IO DANE policy takes them.
    ///
    /// A CNAME on the TLSA name is followed, and the records at its end are
    /// used only if every link is secure: an insecure link makes the whole
    /// answer [`TlsaLookup::Insecure`]. The TLSA base domain stays `host`
    /// (RFC 7671 §7). Records that cannot be read are skipped (logged at
    /// debug level); if records exist but none can be read, the answer is
    /// `Failed(Indeterminate)`, not "no records", which would downgrade the
    /// host to opportunistic TLS.
    pub async fn tlsa(&self, host: &DomainName, port: u16) -> TlsaLookup {
        let Some(qname) = dns_name(&format!("_{port}._tcp.{host}")) else {
            return TlsaLookup::Failed(LookupFailure::Indeterminate);
        };
        let raw = self.query(&qname, RecordType::TLSA).await;
        tlsa_lookup(&qname, raw)
    }

    /// The TLSA records for one MX host whose addresses were looked up, by
    /// the rules of RFC 7672 §2.2.2:
    ///
    /// - addresses Bogus or Indeterminate: the host cannot be used now
    ///   ([`TlsaLookup::Failed`]), no TLSA query is made;
    /// - addresses Insecure (including through an insecure CNAME): DANE does
    ///   not apply ([`TlsaLookup::Insecure`]), no TLSA query is made;
    /// - addresses Secure through a CNAME: the TLSA records of the expanded
    ///   name first (base domain: the expanded name); if it has none (a
    ///   secure denial, or an insecure TLSA name), those of the original
    ///   name (base domain: the original name);
    /// - addresses Secure without a CNAME: the host's TLSA records.
    pub async fn tlsa_for(&self, addresses: &AddressLookup, port: u16) -> HostTlsa {
        let original = HostTlsa {
            base_domain: addresses.name.clone(),
            lookup: TlsaLookup::Insecure,
        };
        match addresses.status {
            DnssecStatus::Secure => {}
            DnssecStatus::Insecure => return original,
            failure => {
                return HostTlsa {
                    lookup: TlsaLookup::Failed(
                        failure.failure().unwrap_or(LookupFailure::Indeterminate),
                    ),
                    ..original
                };
            }
        }
        if addresses.canonical != addresses.name {
            let expanded = self.tlsa(&addresses.canonical, port).await;
            if !matches!(expanded, TlsaLookup::SecureNoRecords | TlsaLookup::Insecure) {
                return HostTlsa {
                    base_domain: addresses.canonical.clone(),
                    lookup: expanded,
                };
            }
        }
        HostTlsa {
            lookup: self.tlsa(&addresses.name, port).await,
            ..original
        }
    }
}

/// How many CNAME links [`validated`] walks one at a time.
const MAX_CNAME_LINKS: usize = 8;

/// One query to hickory's validating resolver.
///
/// hickory-resolver 0.26.3 reports a CNAME whose target has no records of the
/// type asked for (a secure NODATA under NSEC3, as unbound and delv agree) as
/// Bogus. So when an answer is Bogus, the chain is walked again one link at a
/// time: the CNAME alone, then the type at its target, each validated by
/// hickory on its own. The verdict changes only if every step validates; a
/// name without a CNAME, or a link that fails, keeps the first answer.
async fn validated(resolver: &Resolver<TokioRuntimeProvider>, qname: &Name, ty: RecordType) -> Raw {
    let first = from_validating(resolver.lookup(qname.clone(), ty).await, qname, ty);
    if first.status != DnssecStatus::Bogus || ty == RecordType::CNAME {
        return first;
    }
    let mut chain: Vec<Record> = Vec::new();
    let mut status = DnssecStatus::Secure;
    let mut name = qname.clone();
    for _ in 0..MAX_CNAME_LINKS {
        let link = from_validating(
            resolver.lookup(name.clone(), RecordType::CNAME).await,
            &name,
            RecordType::CNAME,
        );
        let RawKind::Records(records) = link.kind else {
            return first;
        };
        if link.status.failure().is_some() {
            return first;
        }
        let Some(target) = records.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == name => Some(target.0.clone()),
            _ => None,
        }) else {
            return first;
        };
        debug!(%qname, ?ty, link = %name, %target, "Bogus through a CNAME; walking the chain");
        status = status.and(link.status);
        chain.extend(records);
        name = target;
        let next = from_validating(resolver.lookup(name.clone(), ty).await, &name, ty);
        if next.status == DnssecStatus::Bogus {
            // Perhaps another link: walk on from the target.
            continue;
        }
        let kind = match next.kind {
            RawKind::Records(records) => {
                chain.extend(records);
                RawKind::Records(chain)
            }
            other => other,
        };
        return Raw {
            status: status.and(next.status),
            kind,
        };
    }
    first
}

/// One query to the trusted resolver: UDP, then TCP if the answer was
/// truncated.
async fn trusted_query(
    config: &TrustAdConfig,
    qname: &Name,
    ty: RecordType,
) -> Result<Message, NetError> {
    let request = || {
        let mut message = Message::query();
        message.add_query(Query::query(qname.clone(), ty));
        message.metadata.recursion_desired = true;
        // RFC 6840 §5.7: the AD bit in a query asks for it in the response.
        message.metadata.authentic_data = true;
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        message.set_edns(edns);
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        DnsRequest::new(message, options)
    };
    let provider = TokioRuntimeProvider::default();
    let udp =
        hickory_resolver::net::udp::UdpClientStream::builder(config.resolver, provider.clone())
            .with_timeout(Some(config.timeout))
            .exchange();
    let response: DnsResponse = udp.send(request()).first_answer().await?;
    if !response.metadata.truncation {
        return Ok(response.into_message());
    }
    debug!(%qname, ?ty, "truncated; retrying over TCP");
    let tcp = hickory_resolver::net::tcp::TcpClientStream::exchange(
        config.resolver,
        None,
        config.timeout,
        None,
        provider,
    )
    .await?;
    let response = tokio::time::timeout(config.timeout, tcp.send(request()).first_answer())
        .await
        .map_err(|_| NetError::Timeout)??;
    Ok(response.into_message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, CNAME, MX, TLSA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn rec(owner: &str, data: RData, proof: Proof) -> Record {
        let mut r = Record::from_rdata(name(owner), 300, data);
        r.proof = proof;
        r
    }

    fn a(owner: &str, proof: Proof) -> Record {
        rec(owner, RData::A(A::new(192, 0, 2, 1)), proof)
    }

    fn cname(owner: &str, target: &str, proof: Proof) -> Record {
        rec(owner, RData::CNAME(CNAME(name(target))), proof)
    }

    #[test]
    fn chains() {
        let q = name("alias.example.");
        let records = vec![
            cname("alias.example.", "mid.example.", Proof::Secure),
            cname("mid.example.", "host.example.", Proof::Secure),
            a("host.example.", Proof::Secure),
            a("elsewhere.example.", Proof::Secure),
        ];
        let (last, found) = follow_chain(&q, RecordType::A, &records);
        assert_eq!(last, name("host.example."));
        assert_eq!(found.len(), 1);
        let (_, chain) = chain_records(&q, RecordType::A, &records);
        assert_eq!(chain.len(), 3, "two links and the RRset");

        // A loop ends.
        let looped = vec![
            cname("a.example.", "b.example.", Proof::Secure),
            cname("b.example.", "a.example.", Proof::Secure),
        ];
        let (_, found) = follow_chain(&name("a.example."), RecordType::A, &looped);
        assert!(found.is_empty());
        let (_, chain) = chain_records(&name("a.example."), RecordType::A, &looped);
        assert!(chain.len() <= 3);
    }

    #[test]
    fn weakest_link_decides() {
        let q = name("alias.example.");
        let lookup = |proofs: [Proof; 2]| {
            let records = vec![
                cname("alias.example.", "host.example.", proofs[0]),
                a("host.example.", proofs[1]),
            ];
            let l = hickory_resolver::lookup::Lookup::new_with_max_ttl(
                Query::query(q.clone(), RecordType::A),
                records,
            );
            from_validating(Ok(l), &q, RecordType::A).status
        };
        assert_eq!(lookup([Proof::Secure, Proof::Secure]), DnssecStatus::Secure);
        assert_eq!(
            lookup([Proof::Insecure, Proof::Secure]),
            DnssecStatus::Insecure
        );
        assert_eq!(
            lookup([Proof::Secure, Proof::Insecure]),
            DnssecStatus::Insecure
        );
        assert_eq!(lookup([Proof::Secure, Proof::Bogus]), DnssecStatus::Bogus);
        assert_eq!(
            lookup([Proof::Indeterminate, Proof::Secure]),
            DnssecStatus::Indeterminate
        );
    }

    #[test]
    fn errors_are_never_no_dane() {
        let q = name("_25._tcp.mx.example.");
        let ty = RecordType::TLSA;
        let status = |e: NetError| from_validating(Err(e), &q, ty);
        assert_eq!(
            status(DnsError::DnssecBogus.into()),
            Raw::failed(DnssecStatus::Bogus)
        );
        for e in [
            NetError::Timeout,
            NetError::NoConnections,
            DnsError::ResponseCode(ResponseCode::ServFail).into(),
            DnsError::ResponseCode(ResponseCode::Refused).into(),
        ] {
            assert_eq!(status(e), Raw::failed(DnssecStatus::Indeterminate));
        }
    }

    #[test]
    fn negative_answers() {
        let soa_like = |proof| a("example.", proof);
        let nsec3 = |proof| {
            let mut r = a("abc.example.", proof);
            // The type is what counts: use a real NSEC3 owner with NSEC3 data.
            r = rec(
                "abc.example.",
                RData::DNSSEC(hickory_resolver::proto::dnssec::rdata::DNSSECRData::NSEC3(
                    hickory_resolver::proto::dnssec::rdata::NSEC3::new(
                        hickory_resolver::proto::dnssec::Nsec3HashAlgorithm::SHA1,
                        false,
                        0,
                        vec![],
                        vec![1, 2, 3],
                        [RecordType::A],
                    ),
                )),
                r.proof,
            );
            r
        };
        assert_eq!(negative_status(&[]), DnssecStatus::Insecure);
        assert_eq!(
            negative_status(&[soa_like(Proof::Insecure)]),
            DnssecStatus::Insecure
        );
        assert_eq!(
            negative_status(&[soa_like(Proof::Secure), nsec3(Proof::Secure)]),
            DnssecStatus::Secure
        );
        // A secure SOA alone proves nothing.
        assert_eq!(
            negative_status(&[soa_like(Proof::Secure)]),
            DnssecStatus::Insecure
        );
        assert_eq!(
            negative_status(&[nsec3(Proof::Secure), soa_like(Proof::Bogus)]),
            DnssecStatus::Bogus
        );
        assert_eq!(
            negative_status(&[soa_like(Proof::Indeterminate)]),
            DnssecStatus::Indeterminate
        );
    }

    fn response(code: ResponseCode, ad: bool, answers: Vec<Record>) -> Message {
        let mut m = Message::response(1, hickory_resolver::proto::op::OpCode::Query);
        m.metadata.response_code = code;
        m.metadata.authentic_data = ad;
        m.add_answers(answers);
        m
    }

    #[test]
    fn trusted_ad_bit() {
        let q = name("host.example.");
        let ty = RecordType::A;
        let r = from_trusted_response(
            &response(
                ResponseCode::NoError,
                true,
                vec![a("host.example.", Proof::Indeterminate)],
            ),
            &q,
            ty,
        );
        assert_eq!(r.status, DnssecStatus::Secure);
        assert!(matches!(r.kind, RawKind::Records(_)));
        let r = from_trusted_response(
            &response(
                ResponseCode::NoError,
                false,
                vec![a("host.example.", Proof::Indeterminate)],
            ),
            &q,
            ty,
        );
        assert_eq!(r.status, DnssecStatus::Insecure);
        let r = from_trusted_response(&response(ResponseCode::NXDomain, true, vec![]), &q, ty);
        assert_eq!(
            r,
            Raw {
                status: DnssecStatus::Secure,
                kind: RawKind::Denied(Denial::NxDomain)
            }
        );
        let r = from_trusted_response(&response(ResponseCode::NoError, false, vec![]), &q, ty);
        assert_eq!(
            r,
            Raw {
                status: DnssecStatus::Insecure,
                kind: RawKind::Denied(Denial::NoData)
            }
        );
        // A CNAME to nowhere is a denial.
        let r = from_trusted_response(
            &response(
                ResponseCode::NXDomain,
                true,
                vec![cname(
                    "host.example.",
                    "gone.example.",
                    Proof::Indeterminate,
                )],
            ),
            &q,
            ty,
        );
        assert_eq!(r.kind, RawKind::Denied(Denial::NxDomain));
    }

    #[test]
    fn truncated_is_not_a_denial() {
        let q = name("host.example.");
        let mut m = response(ResponseCode::NoError, true, vec![]);
        m.metadata.truncation = true;
        assert_eq!(
            from_trusted_response(&m, &q, RecordType::A),
            Raw::failed(DnssecStatus::Indeterminate)
        );
    }

    #[test]
    fn build_errors() {
        let config = |servers: Vec<std::net::SocketAddr>, anchor: TrustAnchor| {
            DaneResolver::validating(&ValidatingConfig::new(servers).with_trust_anchor(anchor))
        };
        let server = vec!["127.0.0.1:53".parse().unwrap()];
        assert!(matches!(
            config(vec![], TrustAnchor::BuiltInRoot),
            Err(BuildError::NoNameServers)
        ));
        let missing = std::env::temp_dir().join("postern-dns-no-such-anchor.key");
        assert!(matches!(
            config(server.clone(), TrustAnchor::File(missing)),
            Err(BuildError::TrustAnchor { .. })
        ));
        let empty =
            std::env::temp_dir().join(format!("postern-dns-empty-{}.key", std::process::id()));
        std::fs::write(&empty, "; no keys here\n").unwrap();
        let result = config(server, TrustAnchor::File(empty.clone()));
        let _ = std::fs::remove_file(&empty);
        assert!(
            matches!(&result, Err(BuildError::TrustAnchor { message, .. }) if message.contains("DNSKEY")),
            "{result:?}"
        );
    }

    #[test]
    fn trusted_servfail() {
        let q = name("host.example.");
        let ty = RecordType::A;
        // Plain SERVFAIL: Indeterminate, even with the AD bit (which it
        // never carries from a sane resolver).
        for ad in [false, true] {
            let r = from_trusted_response(&response(ResponseCode::ServFail, ad, vec![]), &q, ty);
            assert_eq!(r, Raw::failed(DnssecStatus::Indeterminate));
        }
        let with_ede = |code: u16| {
            let mut m = response(ResponseCode::ServFail, false, vec![]);
            let mut edns = Edns::new();
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(b"validation failure");
            edns.options_mut().insert(EdnsOption::Unknown(15, data));
            m.set_edns(edns);
            from_trusted_response(&m, &q, ty)
        };
        assert_eq!(with_ede(6), Raw::failed(DnssecStatus::Bogus));
        assert_eq!(with_ede(7), Raw::failed(DnssecStatus::Bogus));
        // 22: No Reachable Authority; 1: unsupported algorithm.
        assert_eq!(with_ede(22), Raw::failed(DnssecStatus::Indeterminate));
        assert_eq!(with_ede(1), Raw::failed(DnssecStatus::Indeterminate));
        // Refused and the rest: Indeterminate.
        let r = from_trusted_response(&response(ResponseCode::Refused, false, vec![]), &q, ty);
        assert_eq!(r, Raw::failed(DnssecStatus::Indeterminate));
    }

    /// A response with an RFC 8914 extended error of `code`.
    fn with_ede(mut m: Message, code: u16) -> Message {
        let mut edns = m.edns.take().unwrap_or_default();
        let mut data = code.to_be_bytes().to_vec();
        data.extend_from_slice(b"extra text");
        edns.options_mut().insert(EdnsOption::Unknown(15, data));
        m.set_edns(edns);
        m
    }

    /// The status table of the crate documentation, for the trust-AD mode:
    /// AD bit × RCODE × extended error × truncation.
    #[test]
    fn trusted_classification_matrix() {
        use DnssecStatus::{Bogus, Indeterminate, Insecure, Secure};
        let q = name("host.example.");
        let ty = RecordType::A;
        let answer = || vec![a("host.example.", Proof::Indeterminate)];
        let dnssec_codes = 6..=12;
        let other_codes = [0, 1, 3, 5, 13, 18, 22, 23];
        for ad in [false, true] {
            let data_status = if ad { Secure } else { Insecure };
            // NOERROR with data, NOERROR without (NODATA), NXDOMAIN.
            let cases = [
                (ResponseCode::NoError, answer(), None),
                (ResponseCode::NoError, vec![], Some(Denial::NoData)),
                (ResponseCode::NXDomain, vec![], Some(Denial::NxDomain)),
            ];
            for (code, answers, denial) in cases {
                let m = response(code, ad, answers.clone());
                let r = from_trusted_response(&m, &q, ty);
                assert_eq!(r.status, data_status, "{code} ad={ad}");
                match denial {
                    Some(d) => assert_eq!(r.kind, RawKind::Denied(d), "{code} ad={ad}"),
                    None => assert!(matches!(r.kind, RawKind::Records(_)), "{code} ad={ad}"),
                }
                // Another extended error changes nothing.
                for ede in other_codes {
                    let r2 = from_trusted_response(&with_ede(m.clone(), ede), &q, ty);
                    assert_eq!(r2, r, "{code} ad={ad} ede={ede}");
                }
                // A DNSSEC failure named by the resolver is Bogus, never
                // Insecure data (a resolver in permissive mode).
                for ede in dnssec_codes.clone() {
                    let r2 = from_trusted_response(&with_ede(m.clone(), ede), &q, ty);
                    assert_eq!(r2, Raw::failed(Bogus), "{code} ad={ad} ede={ede}");
                }
                // Truncated: Indeterminate, whatever else it says.
                let mut t = with_ede(m.clone(), 6);
                t.metadata.truncation = true;
                assert_eq!(
                    from_trusted_response(&t, &q, ty),
                    Raw::failed(Indeterminate)
                );
            }
            // SERVFAIL: Bogus only with a DNSSEC extended error.
            let servfail = response(ResponseCode::ServFail, ad, vec![]);
            assert_eq!(
                from_trusted_response(&servfail, &q, ty),
                Raw::failed(Indeterminate)
            );
            for ede in dnssec_codes.clone() {
                let r = from_trusted_response(&with_ede(servfail.clone(), ede), &q, ty);
                assert_eq!(r, Raw::failed(Bogus), "SERVFAIL ad={ad} ede={ede}");
                // Among other extended errors too.
                let both = with_ede(with_ede(servfail.clone(), 22), ede);
                assert_eq!(from_trusted_response(&both, &q, ty), Raw::failed(Bogus));
            }
            for ede in other_codes {
                let r = from_trusted_response(&with_ede(servfail.clone(), ede), &q, ty);
                assert_eq!(r, Raw::failed(Indeterminate), "SERVFAIL ad={ad} ede={ede}");
            }
            // An extended error too short to hold a code is ignored.
            let mut short = servfail.clone();
            let mut edns = Edns::new();
            edns.options_mut().insert(EdnsOption::Unknown(15, vec![6]));
            short.set_edns(edns);
            assert_eq!(
                from_trusted_response(&short, &q, ty),
                Raw::failed(Indeterminate)
            );
            let mut t = with_ede(servfail, 6);
            t.metadata.truncation = true;
            assert_eq!(
                from_trusted_response(&t, &q, ty),
                Raw::failed(Indeterminate)
            );
            // REFUSED and the other RCODEs: Indeterminate, records or not,
            // extended error or not.
            for code in [
                ResponseCode::Refused,
                ResponseCode::NotImp,
                ResponseCode::FormErr,
                ResponseCode::YXDomain,
                ResponseCode::NotAuth,
            ] {
                let m = response(code, ad, answer());
                assert_eq!(
                    from_trusted_response(&m, &q, ty),
                    Raw::failed(Indeterminate),
                    "{code} ad={ad}"
                );
                assert_eq!(
                    from_trusted_response(&with_ede(m, 6), &q, ty),
                    Raw::failed(Indeterminate),
                    "{code} ad={ad} ede=6"
                );
            }
        }
    }

    /// The `dns_answer` fuzz target's invariant "records only under NOERROR":
    /// NXDOMAIN with an RRset of the type asked for used to be read as that
    /// RRset.
    #[test]
    fn nxdomain_with_records_is_not_an_answer() {
        let q = name("host.example.");
        for ad in [false, true] {
            for answers in [
                vec![a("host.example.", Proof::Indeterminate)],
                vec![
                    cname("host.example.", "target.example.", Proof::Indeterminate),
                    a("target.example.", Proof::Indeterminate),
                ],
            ] {
                let m = response(ResponseCode::NXDomain, ad, answers);
                assert_eq!(
                    from_trusted_response(&m, &q, RecordType::A),
                    Raw::failed(DnssecStatus::Indeterminate)
                );
            }
        }
    }

    #[test]
    fn tlsa_rdata() {
        let data = vec![0xab; 32];
        let r = rec(
            "_25._tcp.mx.example.",
            RData::TLSA(TLSA::new(3.into(), 1.into(), 1.into(), data.clone())),
            Proof::Secure,
        );
        assert_eq!(
            tlsa_record(&r),
            Some(format!("3 1 1 {}", "ab".repeat(32)).parse().unwrap())
        );
        // rdata hickory kept undecoded is read from its wire form; too short
        // is skipped.
        let unknown = |bytes: &[u8]| {
            rec(
                "_25._tcp.mx.example.",
                RData::Unknown {
                    code: RecordType::TLSA,
                    rdata: hickory_resolver::proto::rr::rdata::NULL::with(bytes.to_vec()),
                },
                Proof::Secure,
            )
        };
        assert_eq!(
            tlsa_record(&unknown(&[3, 1, 1, 0xab, 0xcd])),
            Some("3 1 1 abcd".parse().unwrap())
        );
        assert_eq!(tlsa_record(&unknown(&[3, 1])), None);
        // Anything else is skipped.
        let r = rec(
            "_25._tcp.mx.example.",
            RData::MX(MX::new(10, name("mx.example."))),
            Proof::Secure,
        );
        assert_eq!(tlsa_record(&r), None);
    }

    #[test]
    fn names() {
        assert_eq!(dns_name("mx.example"), Some(name("mx.example.")));
        assert_eq!(
            domain_of(&name("MX.Example.")),
            Some(DomainName::parse("mx.example").unwrap())
        );
        assert_eq!(domain_of(&Name::root()), None);
    }
}
