//! What the lookups return.

use std::net::IpAddr;

use postern_policy::dane::{DnssecStatus, TlsaLookup};
use postern_types::DomainName;

/// Why a lookup found no records of the type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Denial {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists without records of this type (NODATA).
    NoData,
}

/// One mail exchanger of an MX RRset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MxHost {
    /// Lower is preferred.
    pub preference: u16,
    /// The host name in the MX record, as published: the name an address
    /// lookup starts from ([`AddressLookup::name`]); CNAMEs on it are
    /// followed there (RFC 7672 §2.2.2).
    pub exchange: DomainName,
}

/// The MX RRset of a destination domain (RFC 7672 §2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MxLookup {
    /// The domain asked for.
    pub domain: DomainName,
    /// The owner of the MX RRset after any CNAMEs on the domain (the same as
    /// `domain` without them).
    pub canonical: DomainName,
    /// The status of the MX RRset, of its denial, or of the failure: for a
    /// CNAME'd domain, the weakest of every link and the RRset.
    pub status: DnssecStatus,
    /// The exchangers, most preferred first (ties keep the server's order).
    /// Empty for a null MX, a denial or a failure.
    pub hosts: Vec<MxHost>,
    /// The domain publishes a null MX (`MX 0 .`, RFC 7505): it accepts no
    /// mail.
    pub null_mx: bool,
    /// Set when the answer was NXDOMAIN or NODATA (with `status` saying
    /// whether that was proved). On NODATA, RFC 5321 §5.1 falls back to the
    /// domain's own address records.
    pub denial: Option<Denial>,
}

impl MxLookup {
    /// Whether DANE can apply to the hosts of this RRset: RFC 7672 §2.2.1
    /// looks TLSA records up only when the MX RRset (or its denial, when
    /// the domain itself is the host) is secure. Insecure: no DANE for this
    /// destination; Bogus or Indeterminate: the lookup failed and delivery
    /// must be deferred (check [`DnssecStatus::failure`]).
    pub fn dane_applies(&self) -> bool {
        self.status.is_secure()
    }
}

/// The A and AAAA records of one host (RFC 7672 §2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AddressLookup {
    /// The host asked for (an MX exchange, or the domain itself without MX).
    pub name: DomainName,
    /// The owner of the address records after CNAMEs (the same as `name`
    /// without them). RFC 7672 §2.2.2: TLSA records are looked up here first
    /// when the whole expansion is secure; see
    /// [`DaneResolver::tlsa_for`](crate::DaneResolver::tlsa_for).
    pub canonical: DomainName,
    /// The weakest status of the two queries (A and AAAA) and of every CNAME
    /// on the way. Secure only if all of them are.
    pub status: DnssecStatus,
    /// IPv4 addresses first, then IPv6, each in the server's order.
    pub addresses: Vec<IpAddr>,
    /// Set when neither type exists (the A query's denial).
    pub denial: Option<Denial>,
}

/// The TLSA records that apply to one MX host, looked up by the rules of RFC
/// 7672 §2.2.2: see [`DaneResolver::tlsa_for`](crate::DaneResolver::tlsa_for).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostTlsa {
    /// The TLSA base domain: the name whose `_port._tcp` TLSA records were
    /// used, and the name to send as SNI and to check a DANE-TA certificate
    /// against (RFC 7672 §3.2.2, with the original MX name as a second
    /// reference identifier when they differ).
    pub base_domain: DomainName,
    /// What was found there.
    pub lookup: TlsaLookup,
}

impl HostTlsa {
    /// The records `lookup` found at `_port._tcp.base_domain` (for a
    /// caller that decided without a query, e.g. a host of an insecure MX
    /// RRset: [`TlsaLookup::Insecure`]).
    pub fn new(base_domain: DomainName, lookup: TlsaLookup) -> Self {
        Self {
            base_domain,
            lookup,
        }
    }
}
