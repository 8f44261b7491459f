//! Server session fed arbitrary client bytes in arbitrary pieces, with varied settings and answers: never
//! panics, never stalls with input left while it could take it, never sends a bare CR or LF.
//!
//! Input: 3 control octets (settings, cut seed, answer seed), then the client's bytes.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use postern_smtp::data::BareLineEndings;
use postern_smtp::{
    AfterStartTls, Reply, ServerConfig, ServerEvent, ServerSession, StartTlsPolicy,
};

/// Checks a chunk of output: replies end only with CRLF.
fn check_wire(bytes: &[u8]) {
    for (j, &b) in bytes.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(bytes.get(j + 1), Some(&b'\n'), "bare CR sent: {bytes:?}");
        }
        if b == b'\n' {
            assert!(j > 0 && bytes[j - 1] == b'\r', "bare LF sent: {bytes:?}");
        }
    }
    assert!(
        bytes.ends_with(b"\r\n"),
        "partial reply line sent: {bytes:?}"
    );
}

/// Answers events and sends output; returns whether anything happened.
fn drive(server: &mut ServerSession, now: Instant, answers: &mut u32) -> bool {
    let mut any = false;
    while let Some(event) = server.poll_event(now) {
        any = true;
        *answers = answers.rotate_left(1);
        let accept = *answers & 1 == 0;
        match event {
            ServerEvent::Hello { .. }
            | ServerEvent::Mail { .. }
            | ServerEvent::Rcpt { .. }
            | ServerEvent::Vrfy(_)
            | ServerEvent::MessageEnd { .. } => {
                let answer = if accept {
                    server.accept()
                } else {
                    let code = if *answers & 2 == 0 { 550 } else { 451 };
                    server.reject(Reply::new(code, None, ["no"]).expect("valid reply"))
                };
                answer.expect("a decision event accepts an answer");
            }
            ServerEvent::StartTls { .. } => {
                while let Some(bytes) = server.poll_transmit() {
                    check_wire(&bytes);
                }
                server
                    .handle_tls_established()
                    .expect("handshake was expected");
            }
            _ => {}
        }
    }
    while let Some(bytes) = server.poll_transmit() {
        any = true;
        check_wire(&bytes);
    }
    any
}

fuzz_target!(|data: &[u8]| {
    let Some((ctl, input)) = data.split_first_chunk::<3>() else {
        return;
    };
    let mut config = ServerConfig::new("mx.example.org");
    config.starttls = match ctl[0] & 3 {
        0 => StartTlsPolicy::Disabled,
        1 => StartTlsPolicy::Require,
        _ => StartTlsPolicy::Offer,
    };
    config.tls_available = ctl[0] & 4 == 0;
    config.after_starttls = if ctl[0] & 8 == 0 {
        AfterStartTls::Discard
    } else {
        AfterStartTls::Close
    };
    config.pipelining = ctl[0] & 16 == 0;
    config.forbid_unauth_pipelining = ctl[0] & 32 == 0;
    config.data.bare_line_endings = if ctl[0] & 64 == 0 {
        BareLineEndings::Normalize
    } else {
        BareLineEndings::Reject
    };
    if ctl[0] & 128 != 0 {
        config.data.max_message_size = 64;
        config.max_errors = 3;
        config.input_buffer = 0;
    }
    let now = Instant::now();
    let pause = config.greet_pause;
    let mut server = ServerSession::new(config, now);
    // The greet pause passes in silence; the input then follows the greeting.
    let now = now + pause;
    server.handle_timeout(now);
    let mut answers = u32::from(ctl[2]) | 0x5a00;
    drive(&mut server, now, &mut answers);

    let mut seed = u32::from(ctl[1]) | 0x100;
    let mut pos = 0;
    let mut stalls = 0;
    while pos < input.len() && !server.is_closed() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let chunk = &input[pos..input.len().min(pos + (seed % 200) as usize + 1)];
        let taken = server.handle_input(chunk);
        assert!(taken <= chunk.len());
        pos += taken;
        let moved = drive(&mut server, now, &mut answers);
        if taken == 0 && !moved {
            stalls += 1;
            assert!(
                stalls < 3,
                "session takes no input and has nothing to say (at {pos} of {})",
                input.len()
            );
        } else {
            stalls = 0;
        }
    }
    server.handle_timeout(now + Duration::from_secs(3600));
    drive(&mut server, now, &mut answers);
    server.handle_eof();
    drive(&mut server, now, &mut answers);
    assert!(server.is_closed(), "open after timeout and end of input");
});
