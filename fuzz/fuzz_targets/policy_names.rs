//! Domain names, next hops and policy keys: never panic; whatever parses prints to
//! a canonical form that parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_policy::{DomainName, NextHop, PolicyKey, TlsaRecord};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = DomainName::parse(text) {
        assert_eq!(DomainName::parse(name.as_str()).unwrap(), name);
        assert!(name.parents().count() < name.as_str().len());
    }
    if let Ok(hop) = NextHop::parse(text) {
        assert_eq!(NextHop::parse(&hop.to_string()).unwrap(), hop);
    }
    if let Ok(key) = PolicyKey::parse(text) {
        assert_eq!(PolicyKey::parse(&key.to_string()).unwrap(), key);
    }
    if let Ok(record) = text.parse::<TlsaRecord>() {
        assert_eq!(record.to_string().parse::<TlsaRecord>().unwrap(), record);
    }
});
