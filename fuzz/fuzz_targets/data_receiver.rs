//! DATA receiver on arbitrary content cut into arbitrary pieces, with arbitrary limits.
//!
//! Input: 4 control octets (size limit, line limit, mode, cut seed), then the content.
//! Invariants: the data ends exactly after the first CRLF "." CRLF, whatever precedes it; the same result
//! for any cut; the output is bounded by the size limit and holds no bare CR or LF; nothing is consumed after
//! the end; the zero-copy `feed_spans` gives the same steps and, joined, the same output as `feed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::data::{BareLineEndings, DataLimits, DataReceiver};

fuzz_target!(|data: &[u8]| {
    let Some((ctl, input)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mut limits = DataLimits::default();
    limits.max_message_size = if ctl[0] == 255 {
        u64::MAX
    } else {
        u64::from(ctl[0]) * 8
    };
    limits.max_line_length = 2 + usize::from(ctl[1]) * 4;
    limits.bare_line_endings = if ctl[2] & 1 == 0 {
        BareLineEndings::Normalize
    } else {
        BareLineEndings::Reject
    };

    // One call.
    let mut rx = DataReceiver::new(limits.clone());
    let mut whole = Vec::new();
    let step = rx.feed(input, &mut whole);
    assert!(step.consumed <= input.len());
    // RFC 5321 4.1.1.4: the data ends right after the first CRLF "." CRLF (the DATA line's CRLF being the first
    // CRLF of a leading ".\r\n"), whatever precedes it, and nowhere else.
    let framed = [b"\r\n".as_slice(), input].concat();
    let first_end = framed
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|k| k + 3);
    assert_eq!(
        step.end.is_some().then_some(step.consumed),
        first_end,
        "the end of data is not the first CRLF.CRLF"
    );
    match step.end {
        Some(summary) => {
            assert_eq!(
                whole.len() as u64,
                summary.size.min(limits.max_message_size)
            );
            assert_eq!(summary.too_large, summary.size > limits.max_message_size);
            // Nothing more is taken once the end is found.
            assert_eq!(rx.feed(b"NOOP\r\n", &mut whole).consumed, 0);
        }
        None => assert_eq!(step.consumed, input.len()),
    }
    assert!(whole.len() as u64 <= limits.max_message_size);
    // The limit may cut a CRLF in two.
    let complete = if rx.summary().too_large {
        whole.len().saturating_sub(1)
    } else {
        whole.len()
    };
    for (j, &b) in whole[..complete].iter().enumerate() {
        if b == b'\r' {
            assert_eq!(whole.get(j + 1), Some(&b'\n'), "bare CR in output");
        }
        if b == b'\n' {
            assert!(j > 0 && whole[j - 1] == b'\r', "bare LF in output");
        }
    }

    // Cut into pieces of 0 to 70 octets chosen by a small generator seeded from the input.
    let mut seed = u32::from(ctl[3]) | 0x100;
    let limits_for_spans = limits.clone();
    let mut rx = DataReceiver::new(limits);
    let mut pieces = Vec::new();
    let mut pos = 0;
    let mut end = None;
    while pos < input.len() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let len = (seed % 71) as usize;
        let chunk = &input[pos..input.len().min(pos + len)];
        let s = rx.feed(chunk, &mut pieces);
        assert!(s.consumed <= chunk.len());
        pos += s.consumed;
        if s.end.is_some() {
            end = s.end;
            break;
        }
        assert_eq!(
            s.consumed,
            chunk.len(),
            "consumed less than given before the end"
        );
    }
    if input.is_empty() {
        end = rx.feed(&[], &mut pieces).end;
    }
    assert_eq!(pos, step.consumed, "split changed the consumed count");
    assert_eq!(end, step.end, "split changed the summary");
    assert_eq!(pieces, whole, "split changed the output");

    // The zero-copy interface, in one call: same step, same content once the spans are joined.
    let mut rx = DataReceiver::new(limits_for_spans);
    let mut joined = Vec::new();
    let span_step = rx.feed_spans(input, |span| joined.extend_from_slice(span));
    assert_eq!(span_step, step, "feed_spans and feed disagree on the step");
    assert_eq!(joined, whole, "feed_spans and feed disagree on the content");
});
