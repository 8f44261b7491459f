//! Command parser on arbitrary lines: never panics, and whatever parses survives encode then parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::Command;

fuzz_target!(|data: &[u8]| {
    // Raw, as received.
    let _ = Command::parse(data);
    // As a complete line, so that more inputs reach the argument parsers.
    let mut line = data.to_vec();
    if !line.ends_with(b"\r\n") {
        line.extend_from_slice(b"\r\n");
    }
    let Ok(command) = Command::parse(&line) else {
        return;
    };
    let encoded = command.to_bytes();
    assert!(encoded.ends_with(b"\r\n"));
    assert!(
        !encoded[..encoded.len() - 2]
            .iter()
            .any(|b| *b == b'\r' || *b == b'\n'),
        "encoded command holds a CR or LF: {encoded:?}"
    );
    let again = Command::parse(&encoded)
        .unwrap_or_else(|e| panic!("{command:?} encoded as {encoded:?} does not parse: {e}"));
    assert_eq!(
        again, command,
        "round trip changed the command (wire {encoded:?})"
    );
});
