//! DNS responses as the trust-AD resolver mode reads them (RFC 7672 with RFC 6840 §5.7 and RFC 8914):
//! arbitrary bytes decoded as a response message go through the classification a real response
//! gets (AD bit, RCODE, extended errors, truncation), then through the MX, address and TLSA shaping
//! and `DaneOutcome::from_lookup`. Never panics, and:
//!
//! - no AD bit, never Secure; truncated, or an RCODE other than NOERROR/NXDOMAIN, always a failure
//!   (Bogus or Indeterminate) with neither records nor a denial; otherwise Secure with AD, Insecure
//!   without, unless the resolver named a DNSSEC failure (Bogus) or said NXDOMAIN with records
//!   (Indeterminate);
//! - records only under NOERROR; a denial says NXDOMAIN exactly when the RCODE does;
//! - a null MX leaves no hosts; hosts come most preferred first; a failure leaves no hosts;
//! - a secure TLSA answer has records, each printing to a form that parses back to it (or, with
//!   empty association data, which has no presentation form, unusable); DANE outcomes follow the
//!   lookup they came from.
//!
//! Input: one selector octet, then the response message. Selector bit 0: query names from the
//! message's first question (else fixed names); bits 1–3: the type the classification is checked
//! for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_dns::fuzzing::proto::op::{Message, ResponseCode};
use postern_dns::fuzzing::proto::rr::{Name, RecordType};
use postern_dns::fuzzing::{self, Classified};
use postern_dns::{Denial, DnssecStatus};
use postern_policy::DomainName;
use postern_policy::dane::{DaneOutcome, LookupFailure, TlsaLookup, TlsaRecord};

const TYPES: [RecordType; 8] = [
    RecordType::MX,
    RecordType::A,
    RecordType::AAAA,
    RecordType::TLSA,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::NS,
    RecordType::ANY,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let Ok(response) = Message::from_vec(bytes) else {
        return;
    };
    let from_message = selector & 1 == 1;
    let ty = TYPES[usize::from(selector >> 1) % TYPES.len()];
    let asked = response.queries.first().map(|q| q.name().clone());
    let qname = match (&asked, from_message) {
        (Some(name), true) => name.clone(),
        _ => Name::from_ascii("mx.example.net.").unwrap(),
    };
    let domain = match (&asked, from_message) {
        (Some(name), true) => DomainName::parse(&name.to_ascii()).ok(),
        _ => None,
    }
    .unwrap_or_else(|| DomainName::parse("mx.example.net").unwrap());
    let tlsa_name = match (&asked, from_message) {
        (Some(name), true) => name.clone(),
        _ => Name::from_ascii("_25._tcp.mx.example.net.").unwrap(),
    };

    let ad = response.metadata.authentic_data;
    let code = response.metadata.response_code;
    let answerable = !response.metadata.truncation
        && matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);

    check_classified(
        &fuzzing::classify(&response, &qname, ty),
        ad,
        code,
        answerable,
    );

    let mx = fuzzing::mx(&domain, &response);
    let mx_class = match Name::from_ascii(format!("{domain}.")) {
        Ok(q) => fuzzing::classify(&response, &q, RecordType::MX).status,
        Err(_) => DnssecStatus::Indeterminate,
    };
    assert_eq!(mx.status, mx_class);
    assert!(ad || !mx.dane_applies(), "DANE applies without the AD bit");
    if mx.null_mx {
        assert!(mx.hosts.is_empty(), "a null MX left hosts");
    }
    assert!(mx.hosts.is_sorted_by_key(|h| h.preference));
    if mx.status.failure().is_some() {
        assert!(mx.hosts.is_empty() && !mx.null_mx && mx.denial.is_none());
    }
    if mx.denial.is_some() {
        assert!(mx.hosts.is_empty() && !mx.null_mx);
    }
    if !mx.hosts.is_empty() || mx.null_mx {
        assert_eq!(code, ResponseCode::NoError, "MX hosts from a {code} answer");
    }

    let addresses = fuzzing::addresses(&domain, &response, &response);
    assert!(ad || addresses.status != DnssecStatus::Secure);
    if !addresses.addresses.is_empty() {
        assert_eq!(
            code,
            ResponseCode::NoError,
            "addresses from a {code} answer"
        );
        assert!(addresses.status.failure().is_none());
        assert!(addresses.denial.is_none());
    }

    let tlsa = fuzzing::tlsa(&tlsa_name, &response);
    match &tlsa {
        TlsaLookup::Secure(records) => {
            assert!(ad && answerable && code == ResponseCode::NoError);
            assert!(!records.is_empty());
            for record in records {
                if record.data.is_empty() {
                    assert!(!record.is_usable());
                } else {
                    let again: TlsaRecord = record.to_string().parse().unwrap();
                    assert_eq!(&again, record);
                }
            }
        }
        TlsaLookup::SecureNoRecords => assert!(ad && answerable),
        TlsaLookup::Insecure => assert!(!ad && answerable),
        // Past a failed response: a DNSSEC failure the resolver named (Bogus), a secure RRset
        // with no readable record, or NXDOMAIN with records (Indeterminate).
        TlsaLookup::Failed(failure) => assert!(
            !answerable || *failure == LookupFailure::Bogus || ad || code == ResponseCode::NXDomain
        ),
        _ => unreachable!("a TLSA lookup this target does not know"),
    }
    match DaneOutcome::from_lookup(tlsa.clone()) {
        DaneOutcome::Authenticate(usable) => {
            let TlsaLookup::Secure(records) = &tlsa else {
                panic!("authenticated from {tlsa:?}");
            };
            assert!(!usable.is_empty());
            assert!(usable.iter().all(|r| r.is_usable() && records.contains(r)));
        }
        DaneOutcome::EncryptOnly => {
            let TlsaLookup::Secure(records) = &tlsa else {
                panic!("encrypt-only from {tlsa:?}");
            };
            assert!(records.iter().all(|r| !r.is_usable()));
        }
        DaneOutcome::Opportunistic => assert!(matches!(
            tlsa,
            TlsaLookup::SecureNoRecords | TlsaLookup::Insecure
        )),
        DaneOutcome::HostUnusable(failure) => assert_eq!(tlsa, TlsaLookup::Failed(failure)),
        _ => unreachable!("a DANE outcome this target does not know"),
    }
});

fn check_classified(c: &Classified, ad: bool, code: ResponseCode, answerable: bool) {
    assert!(ad || c.status != DnssecStatus::Secure, "Secure without AD");
    if !answerable {
        assert!(c.status.failure().is_some(), "{code} read as {}", c.status);
        assert!(c.records.is_none() && c.denial.is_none());
        return;
    }
    match c.status {
        // The resolver named a DNSSEC failure (an RFC 8914 extended error).
        DnssecStatus::Bogus => {}
        // NXDOMAIN with records of the type asked for contradicts itself.
        DnssecStatus::Indeterminate => assert_eq!(code, ResponseCode::NXDomain),
        status => assert_eq!(
            status,
            if ad {
                DnssecStatus::Secure
            } else {
                DnssecStatus::Insecure
            }
        ),
    }
    if c.status.failure().is_some() {
        assert!(c.records.is_none() && c.denial.is_none());
        return;
    }
    assert!(c.records.is_some() != c.denial.is_some());
    if let Some(records) = &c.records {
        assert_eq!(code, ResponseCode::NoError, "records from a {code} answer");
        assert!(records.iter().all(|r| r.record_type() != RecordType::RRSIG));
    }
    if let Some(denial) = c.denial {
        assert_eq!(denial == Denial::NxDomain, code == ResponseCode::NXDomain);
    }
}
