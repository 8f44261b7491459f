//! Reply parser on arbitrary bytes in arbitrary pieces: never panics, always makes progress, and every reply
//! it returns survives encode then parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::ReplyParser;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(seed % 64) + 1;
    let mut parser = ReplyParser::default();
    let mut pos = 0;
    while pos < input.len() {
        let chunk = &input[pos..input.len().min(pos + step)];
        let (used, reply) = match parser.feed(chunk) {
            Ok(r) => r,
            Err(_) => return,
        };
        assert!(used <= chunk.len());
        assert!(used > 0 || reply.is_some(), "no progress");
        pos += used;
        if let Some(reply) = reply {
            let wire = reply.to_bytes();
            let mut fresh = ReplyParser::default();
            match fresh.feed(&wire) {
                Ok((n, Some(again))) => {
                    assert_eq!(n, wire.len(), "re-parse of {wire:?} left bytes");
                    assert_eq!(again, reply, "round trip changed the reply (wire {wire:?})");
                }
                other => panic!("{reply:?} encoded as {wire:?} re-parses as {other:?}"),
            }
        }
    }
});
