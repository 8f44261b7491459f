//! Client dot-stuffing then server receiving gives back the message with normalised line endings.
//!
//! Input: 1 cut-seed octet, then the message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::data::{DataLimits, DataReceiver, DotStuffer, dot_stuff, normalize_line_endings};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, message)) = data.split_first() else {
        return;
    };
    let wire = dot_stuff(message);

    // The wire form: no bare CR or LF, CRLF "." CRLF only at its end.
    for (j, &b) in wire.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(wire.get(j + 1), Some(&b'\n'), "bare CR on the wire");
        }
        if b == b'\n' {
            assert!(j > 0 && wire[j - 1] == b'\r', "bare LF on the wire");
        }
    }
    let end = wire.windows(5).position(|w| w == b"\r\n.\r\n");
    assert!(
        end.is_none_or(|p| p + 5 == wire.len()),
        "end marker inside the content"
    );
    assert!(wire.ends_with(b".\r\n"));

    // Streaming in pieces gives the same bytes.
    let mut s = DotStuffer::new();
    let mut streamed = Vec::new();
    let step = usize::from(seed % 37) + 1;
    for chunk in message.chunks(step) {
        s.feed(chunk, &mut streamed);
    }
    s.finish(&mut streamed);
    assert_eq!(streamed, wire);

    // The receiver takes exactly the wire form and gives back the normalised message, CRLF-terminated.
    let mut expected = normalize_line_endings(message);
    if !expected.is_empty() && !expected.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    let mut limits = DataLimits::default();
    limits.max_message_size = u64::MAX;
    let mut rx = DataReceiver::new(limits);
    let mut out = Vec::new();
    let mut input = wire.clone();
    input.extend_from_slice(b"QUIT\r\n");
    let step = rx.feed(&input, &mut out);
    assert_eq!(step.consumed, wire.len());
    let summary = step.end.expect("dot_stuff output ends the data");
    assert!(!summary.bare_cr && !summary.bare_lf);
    assert_eq!(out, expected);
});
