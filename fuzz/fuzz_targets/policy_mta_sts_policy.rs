//! MTA-STS policy file parser (RFC 8461 §3.2): never panics; an accepted policy
//! survives a round trip through its canonical lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_policy::mta_sts::{MAX_AGE_LIMIT, StsPolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = StsPolicy::parse(text) {
        assert!(policy.max_age <= MAX_AGE_LIMIT);
        let again = StsPolicy::parse(&policy.to_lines().join("\r\n")).unwrap();
        assert_eq!(again, policy);
        for pattern in &policy.mx {
            // A plain pattern matches its own name.
            if !pattern.wildcard {
                assert!(policy.matches_mx(&pattern.domain));
            }
        }
    }
});
