//! Server session fed arbitrary client bytes in arbitrary pieces, with varied settings, answers and handshake
//! reports: never panics, never stalls with input left while it could take it, never sends a bare CR or LF,
//! and keeps the rules that postern-smtp's `tests/server_exploration.rs` checks exhaustively on short paths:
//! under `require` no transaction before TLS; nothing received before the handshake is acted on after it;
//! after TLS the EHLO is forgotten and STARTTLS no longer advertised; a message ends only after its content
//! started; a `554 5.5.0` closes the session; a session refused after its handshake (client certificate
//! required, none verified) never asks the application for anything.
//!
//! Input: 3 control octets (settings, cut seed and refusal bit, answer seed), then the client's bytes.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use postern_smtp::data::BareLineEndings;
use postern_smtp::{
    AfterStartTls, EnhancedStatus, Reply, ServerConfig, ServerEvent, ServerSession, StartTlsPolicy,
};

/// What the fuzzed client has been told, to check the rules against.
#[derive(Debug, Default)]
struct Seen {
    /// TLS is required before any transaction.
    require: bool,
    /// The handshake is reported as refused (client certificate required, none verified).
    refuse: bool,
    /// EHLO / HELO accepted since the start or the handshake.
    hello: bool,
    /// The content of a message started and has not ended.
    content: bool,
}

/// Checks a chunk of output: replies end only with CRLF; a synchronization error closes the session; inside
/// TLS STARTTLS is not advertised; under `require` no transaction reply before TLS.
fn check_wire(bytes: &[u8], server: &ServerSession, seen: &Seen) {
    if bytes.is_empty() {
        return;
    }
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
    // Line starts only: a VRFY reply echoes the client's text.
    let text = String::from_utf8_lossy(bytes);
    let starts = |prefixes: &[&str]| {
        text.split("\r\n")
            .any(|line| prefixes.iter().any(|p| line.starts_with(p)))
    };
    if starts(&["554 5.5.0 "]) {
        assert!(server.is_closed(), "554 5.5.0 without closing: {text:?}");
    }
    if server.is_tls_active() {
        assert!(
            !starts(&["250-STARTTLS", "250 STARTTLS"]),
            "STARTTLS advertised inside TLS: {text:?}"
        );
    } else if seen.require {
        assert!(
            !starts(&["354 ", "250 2.1."]),
            "transaction reply before TLS under require: {text:?}"
        );
    }
}

/// Checks an event against the rules.
fn check_event(event: &ServerEvent, server: &ServerSession, seen: &mut Seen) {
    let tls = server.is_tls_active();
    let transaction = matches!(
        event,
        ServerEvent::Mail { .. }
            | ServerEvent::Rcpt { .. }
            | ServerEvent::MessageStart { .. }
            | ServerEvent::MessageEnd { .. }
    );
    if seen.refuse && tls {
        assert!(
            !transaction && !matches!(event, ServerEvent::Hello { .. } | ServerEvent::Vrfy(_)),
            "a refused session asked the application: {event:?}"
        );
    }
    if seen.require && !tls {
        assert!(!transaction, "transaction before TLS under require: {event:?}");
    }
    match event {
        ServerEvent::Mail { .. } => assert!(seen.hello, "MAIL without an accepted EHLO since TLS"),
        ServerEvent::MessageStart { .. } => seen.content = true,
        ServerEvent::MessageEnd { .. } => {
            assert!(seen.content, "message ended without its content starting");
            seen.content = false;
        }
        ServerEvent::Hello { .. } | ServerEvent::MessageRejected { .. } | ServerEvent::Reset => {
            seen.content = false;
        }
        _ => {}
    }
}

/// Answers events and sends output; returns whether anything happened.
fn drive(server: &mut ServerSession, now: Instant, answers: &mut u32, seen: &mut Seen) -> bool {
    let mut any = false;
    while let Some(event) = server.poll_event(now) {
        any = true;
        check_event(&event, server, seen);
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
                if matches!(event, ServerEvent::Hello { .. }) {
                    seen.hello = accept;
                }
            }
            ServerEvent::StartTls { .. } => {
                let mut out = Vec::new();
                while let Some(bytes) = server.poll_transmit() {
                    out.extend_from_slice(&bytes);
                }
                check_wire(&out, server, seen);
                assert!(
                    out.ends_with(b"220 2.0.0 Ready to start TLS\r\n"),
                    "STARTTLS event without its 220 last: {out:?}"
                );
                seen.hello = false;
                seen.content = false;
                let established = if seen.refuse {
                    let status = EnhancedStatus::new(5, 7, 1).ok();
                    let refusal = Reply::new(554, status, ["Client certificate required"]);
                    server.handle_tls_established_refusing(refusal.expect("valid reply"))
                } else {
                    server.handle_tls_established()
                };
                established.expect("handshake was expected");
                // RFC 3207 4.2: nothing from before the handshake is acted on after it.
                assert_eq!(server.poll_event(now), None, "pre-TLS input acted on after TLS");
                assert_eq!(server.poll_transmit(), None, "pre-TLS output after TLS");
            }
            _ => {}
        }
    }
    while let Some(bytes) = server.poll_transmit() {
        any = true;
        check_wire(&bytes, server, seen);
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
    let mut seen = Seen {
        require: server.config().starttls == StartTlsPolicy::Require,
        refuse: ctl[1] & 0x80 != 0,
        ..Seen::default()
    };
    drive(&mut server, now, &mut answers, &mut seen);

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
        let moved = drive(&mut server, now, &mut answers, &mut seen);
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
    drive(&mut server, now, &mut answers, &mut seen);
    server.handle_eof();
    drive(&mut server, now, &mut answers, &mut seen);
    assert!(server.is_closed(), "open after timeout and end of input");
});
