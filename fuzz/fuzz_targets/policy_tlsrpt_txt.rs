//! TLS-RPT TXT record parser (RFC 8460 §3): never panics; an accepted record
//! has 1 to 16 mailto:/https: URIs, and re-parsing its canonical form gives it
//! back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_policy::tlsrpt::{ReportUri, TlsRptRecord};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(record) = TlsRptRecord::parse(text) {
        assert!((1..=16).contains(&record.rua.len()));
        let uris: Vec<String> = record.rua.iter().map(ReportUri::as_uri).collect();
        // A decoded mailto address may hold characters a record cannot carry
        // raw (`;`, `%`): only plain ones are re-parsed.
        if uris.iter().all(|u| {
            u.bytes()
                .all(|b| b.is_ascii_graphic() && !b",;%?".contains(&b))
        }) {
            let again = TlsRptRecord::parse(&format!("v=TLSRPTv1; rua={}", uris.join(",")))
                .expect("canonical form parses");
            assert_eq!(again, record);
        }
    }
    // Selection among several records (split on a NUL byte) never panics either.
    let _ = TlsRptRecord::select(text.split('\0'));
});
