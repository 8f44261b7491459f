//! Entry points for the `dns_answer` fuzz target (`fuzz/fuzz_targets/dns_answer.rs`),
//! behind the `fuzzing` feature and hidden from the documentation: not part
//! of the API, they may change at any time.
//!
//! They run a response message that did not come from a socket through the
//! code a [`DaneResolver`](crate::DaneResolver) in [`Mode::TrustAd`](crate::Mode::TrustAd) runs
//! on a real one: the classification of the response (AD bit, RCODE, RFC
//! 8914 extended errors, truncation), then the MX, address and TLSA shaping.

use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use postern_policy::dane::{DnssecStatus, TlsaLookup};
use postern_types::DomainName;

use super::{RawKind, address_lookup, from_trusted_response, mx_lookup, tlsa_lookup};
use crate::answer::{AddressLookup, Denial, MxLookup};

/// The hickory types the entry points take, so that the fuzz crate uses the
/// same version.
pub use hickory_resolver::proto;

/// What the trust-AD classification made of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The DNSSEC status.
    pub status: DnssecStatus,
    /// The answer records kept (RRSIGs dropped), when the answer holds
    /// records of the type asked for at the end of its CNAME chain.
    pub records: Option<Vec<Record>>,
    /// The denial, when it has none.
    pub denial: Option<Denial>,
}

/// Classifies `response` to the query `qname`/`ty` as the trust-AD mode does.
pub fn classify(response: &Message, qname: &Name, ty: RecordType) -> Classified {
    let raw = from_trusted_response(response, qname, ty);
    let (records, denial) = match raw.kind {
        RawKind::Records(records) => (Some(records), None),
        RawKind::Denied(denial) => (None, Some(denial)),
        RawKind::Failed => (None, None),
    };
    Classified {
        status: raw.status,
        records,
        denial,
    }
}

/// [`DaneResolver::mx`](crate::DaneResolver::mx) for `domain`, with
/// `response` as the trusted resolver's answer.
pub fn mx(domain: &DomainName, response: &Message) -> MxLookup {
    let Some(qname) = super::dns_name(domain.as_str()) else {
        return mx_lookup(domain, None);
    };
    let raw = from_trusted_response(response, &qname, RecordType::MX);
    mx_lookup(domain, Some((&qname, raw)))
}

/// [`DaneResolver::addresses`](crate::DaneResolver::addresses) for `host`,
/// with `a` and `aaaa` as the trusted resolver's answers.
pub fn addresses(host: &DomainName, a: &Message, aaaa: &Message) -> AddressLookup {
    let Some(qname) = super::dns_name(host.as_str()) else {
        return address_lookup(host, None);
    };
    let a = from_trusted_response(a, &qname, RecordType::A);
    let aaaa = from_trusted_response(aaaa, &qname, RecordType::AAAA);
    address_lookup(host, Some((&qname, &a, &aaaa)))
}

/// [`DaneResolver::tlsa`](crate::DaneResolver::tlsa) for the TLSA query name
/// `qname`, with `response` as the trusted resolver's answer.
pub fn tlsa(qname: &Name, response: &Message) -> TlsaLookup {
    tlsa_lookup(
        qname,
        from_trusted_response(response, qname, RecordType::TLSA),
    )
}
