//! Client session fed arbitrary server replies in arbitrary pieces: never panics, and never sends a bare CR or
//! LF, whatever the message holds.
//!
//! Input: 3 control octets (settings, cut seed, decision seed), then the server's bytes.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use postern_smtp::{
    AfterStartTls, ClientConfig, ClientEvent, ClientSession, Envelope, ForwardPath, ReversePath,
};

/// A message with everything a client must repair: bare LF, bare CR, lines starting with ".", an end-marker
/// lookalike, no final CRLF.
const MESSAGE: &[u8] =
    b"Subject: test\r\n\r\n.leading dot\nbare LF\rbare CR\r\n.\r\nafter a fake end\n.\n.";

fn check_wire(bytes: &[u8]) {
    for (j, &b) in bytes.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(bytes.get(j + 1), Some(&b'\n'), "bare CR sent: {bytes:?}");
        }
        if b == b'\n' {
            assert!(j > 0 && bytes[j - 1] == b'\r', "bare LF sent: {bytes:?}");
        }
    }
}

fn drive(
    client: &mut ClientSession,
    now: Instant,
    decisions: &mut u32,
    sent: &mut Vec<u8>,
) -> bool {
    let mut any = false;
    while let Some(event) = client.poll_event(now) {
        any = true;
        match event {
            ClientEvent::Ready {
                capabilities,
                tls_active,
                ..
            } => {
                *decisions = decisions.rotate_left(2);
                let result = match *decisions & 3 {
                    0 if capabilities.starttls && !tls_active => client.start_tls(),
                    0..=2 => {
                        let from = ReversePath::parse("<alice@example.org>").expect("valid path");
                        let to = [
                            ForwardPath::parse("<bob@example.net>").expect("valid path"),
                            ForwardPath::parse("<Postmaster>").expect("valid path"),
                        ];
                        client.send_mail(Envelope::new(from, to), MESSAGE.to_vec())
                    }
                    _ => client.quit(),
                };
                // Refusals (extension not offered, message too large) leave the session at the decision point.
                if result.is_err() {
                    client
                        .quit()
                        .expect("quit is possible at the decision point");
                }
            }
            ClientEvent::StartTls { .. } => {
                while let Some(bytes) = client.poll_transmit() {
                    sent.extend_from_slice(&bytes);
                }
                client
                    .handle_tls_established()
                    .expect("handshake was expected");
            }
            _ => {}
        }
    }
    while let Some(bytes) = client.poll_transmit() {
        any = true;
        sent.extend_from_slice(&bytes);
    }
    any
}

fuzz_target!(|data: &[u8]| {
    let Some((ctl, input)) = data.split_first_chunk::<3>() else {
        return;
    };
    let mut config = ClientConfig::new("client.example.org");
    config.prefer_chunking = ctl[0] & 1 != 0;
    config.pipelining = ctl[0] & 2 == 0;
    config.after_starttls = if ctl[0] & 4 == 0 {
        AfterStartTls::Discard
    } else {
        AfterStartTls::Close
    };
    let now = Instant::now();
    let mut client = ClientSession::new(config, now);
    let mut decisions = u32::from(ctl[2]) | 0xa500;
    let mut sent = Vec::new();
    drive(&mut client, now, &mut decisions, &mut sent);

    let mut seed = u32::from(ctl[1]) | 0x100;
    let mut pos = 0;
    let mut stalls = 0;
    while pos < input.len() && !client.is_closed() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let chunk = &input[pos..input.len().min(pos + (seed % 200) as usize + 1)];
        let taken = client.handle_input(chunk);
        assert!(taken <= chunk.len());
        pos += taken;
        let moved = drive(&mut client, now, &mut decisions, &mut sent);
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
    client.handle_timeout(now + Duration::from_secs(3600));
    drive(&mut client, now, &mut decisions, &mut sent);
    client.handle_eof();
    drive(&mut client, now, &mut decisions, &mut sent);
    check_wire(&sent);
    assert!(client.is_closed(), "open after timeout and end of input");
});
