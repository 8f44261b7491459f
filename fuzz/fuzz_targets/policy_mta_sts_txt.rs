//! MTA-STS TXT record parser (RFC 8461 §3.1): never panics; an accepted record's
//! id is 1 to 32 letters or digits, and re-parsing its canonical form gives it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_policy::mta_sts::StsRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(record) = StsRecord::parse(text) {
        assert!((1..=32).contains(&record.id.len()));
        assert!(record.id.bytes().all(|b| b.is_ascii_alphanumeric()));
        let again = StsRecord::parse(&format!("v=STSv1; id={};", record.id)).unwrap();
        assert_eq!(again, record);
    }
    // Selection among several records (split on a NUL byte) never panics either.
    let _ = StsRecord::select(text.split('\0'));
});
