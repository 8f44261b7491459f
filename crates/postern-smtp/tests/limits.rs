//! Limits (RFC 5321 4.5.3), the error budget, deadlines as data (a trickling client is cut off), bounded
//! buffers, and arbitrary input never panicking either session.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use postern_smtp::{
    ClientConfig, ClientEvent, ClientSession, CloseReason, ServerConfig, ServerEvent, ServerSession,
};
use proptest::prelude::*;

fn ready(config: ServerConfig) -> Harness {
    let mut h = Harness::new(config);
    h.feed_str("EHLO client.example\r\n");
    h
}

#[test]
fn command_line_limit_and_minimum() {
    let mut config = ServerConfig::new("mx.example.org");
    config.max_command_line = 100; // raised to the RFC minimum of 512
    let mut h = ready(config);
    // A 512-octet line (CRLF included) is accepted.
    let noop = format!("NOOP {}\r\n", "x".repeat(512 - 7));
    assert_eq!(noop.len(), 512);
    assert_eq!(h.feed_str(&noop), "250 2.0.0 Ok\r\n");
    let long = format!("NOOP {}\r\n", "x".repeat(600));
    assert_eq!(h.feed_str(&long), "500 5.5.0 Error: line too long\r\n");
    // Fed in pieces the overlong line is skipped without buffering it, and the session stays in sync.
    let mut h = ready(ServerConfig::new("mx.example.org"));
    let mut out = String::new();
    out += &h.feed_str("NOOP ");
    for _ in 0..100 {
        out += &h.feed_str(&"y".repeat(1000));
    }
    out += &h.feed_str("\r");
    out += &h.feed_str("\n");
    assert_eq!(out, "500 5.5.0 Error: line too long\r\n");
    assert_eq!(h.feed_str("RSET\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn recipient_limit() {
    let mut config = ServerConfig::new("mx.example.org");
    config.max_recipients = 1; // raised to 100
    let mut h = ready(config);
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    for i in 0..100 {
        assert_eq!(
            h.feed_str(&format!("RCPT TO:<r{i}@example.org>\r\n")),
            "250 2.1.5 Ok\r\n"
        );
    }
    assert_eq!(
        h.feed_str("RCPT TO:<r100@example.org>\r\n"),
        "452 4.5.3 Error: too many recipients\r\n"
    );
}

#[test]
fn message_size_limits() {
    let mut config = ServerConfig::new("mx.example.org");
    config.data.max_message_size = 100;
    let mut h = ready(config.clone());
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net> SIZE=101\r\n"),
        "552 5.3.4 Message size exceeds fixed limit\r\n"
    );
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net> SIZE=100\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    h.feed_str("RCPT TO:<b@example.org>\r\n");
    h.feed_str("DATA\r\n");
    let out = h.feed_str(&format!("{}\r\n.\r\n", "z".repeat(300)));
    assert_eq!(out, "552 5.3.4 Error: message file too big\r\n");
    assert!(h.messages.is_empty());
    assert_eq!(
        h.count(|e| matches!(e, ServerEvent::MessageRejected { .. })),
        1
    );
    // BDAT past the limit.
    let mut h = ready(config);
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    h.feed_str("RCPT TO:<b@example.org>\r\n");
    let out = h.feed_str(&format!("BDAT 80\r\n{}", "a".repeat(80)));
    assert_eq!(out, "250 2.0.0 Ok: 80 bytes\r\n");
    let out = h.feed_str(&format!("BDAT 80 LAST\r\n{}", "a".repeat(80)));
    assert_eq!(out, "552 5.3.4 Error: message file too big\r\n");
    assert!(h.messages.is_empty());
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net>\r\n"),
        "250 2.1.0 Ok\r\n",
        "the transaction ended"
    );
}

#[test]
fn address_length_limits() {
    let mut h = ready(ServerConfig::new("mx.example.org"));
    let out = h.feed_str(&format!("MAIL FROM:<{}@example.net>\r\n", "a".repeat(65)));
    assert_eq!(out, "501 5.1.7 Bad sender address syntax\r\n");
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    let out = h.feed_str(&format!("RCPT TO:<b@{}.example>\r\n", "c".repeat(64)));
    assert_eq!(out, "501 5.1.3 Bad recipient address syntax\r\n");
}

#[test]
fn smtputf8_required_for_unicode_addresses() {
    let mut h = ready(ServerConfig::new("mx.example.org"));
    assert_eq!(
        h.feed_str("MAIL FROM:<用户@例子.广告>\r\n"),
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"
    );
    assert_eq!(
        h.feed_str("MAIL FROM:<用户@例子.广告> SMTPUTF8\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        h.feed_str("RCPT TO:<ü@example.org>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(h.feed_str("RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net> XTEST=1\r\n"),
        "555 5.5.4 Unsupported option: XTEST\r\n"
    );
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net> REQUIRETLS\r\n"),
        "555 5.5.4 Unsupported option: REQUIRETLS\r\n"
    );
}

#[test]
fn sequence_errors() {
    let mut h = Harness::default_named("mx.example.org");
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    h.feed_str("EHLO client.example\r\n");
    assert_eq!(
        h.feed_str("RCPT TO:<b@example.org>\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(
        h.feed_str("DATA\r\n"),
        "503 5.5.1 Error: need RCPT command\r\n"
    );
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net>\r\n"),
        "503 5.5.1 Error: nested MAIL command\r\n"
    );
    assert_eq!(
        h.feed_str("DATA\r\n"),
        "554 5.5.1 Error: no valid recipients\r\n"
    );
    assert_eq!(
        h.feed_str("STARTTLS\r\n"),
        "503 5.5.1 Error: MAIL transaction in progress\r\n"
    );
}

#[test]
fn error_budget() {
    let mut config = ServerConfig::new("mx.example.org");
    config.max_errors = 3;
    let mut h = ready(config);
    assert_eq!(
        h.feed_str("BOGUS\r\n"),
        "502 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(
        h.feed_str("BOGUS\r\n"),
        "502 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(
        h.feed_str("BOGUS\r\n"),
        "502 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.example.org Error: too many errors\r\n"
    );
    assert!(h.server.is_closed());
    assert!(
        h.events
            .contains(&ServerEvent::Closing(CloseReason::TooManyErrors))
    );
    assert_eq!(h.feed_str("NOOP\r\n"), "");
}

#[test]
fn trickling_client_is_cut_off() {
    let t0 = Instant::now();
    let mut config = ServerConfig::new("mx.example.org");
    config.greet_pause = Duration::ZERO;
    let mut s = ServerSession::new(config, t0);
    let _ = s.poll_transmit();
    assert_eq!(s.poll_event(t0), None);
    let deadline = s
        .poll_timeout()
        .expect("waiting for a command arms the deadline");
    assert_eq!(deadline, t0 + Duration::from_secs(300));
    // One byte per second: the deadline never moves.
    let line = b"NOOP and a very long trickled line ";
    let mut now = t0;
    for i in 0..400u64 {
        now = t0 + Duration::from_secs(i);
        s.handle_timeout(now);
        if s.is_closed() {
            break;
        }
        let _ = s.handle_input(&line[i as usize % line.len()..][..1]);
        assert_eq!(s.poll_event(now), None);
        assert_eq!(
            s.poll_timeout(),
            Some(deadline),
            "a partial read must not extend the deadline"
        );
    }
    assert!(s.is_closed());
    assert_eq!(now, t0 + Duration::from_secs(300));
    assert_eq!(
        s.poll_event(now),
        Some(ServerEvent::Closing(CloseReason::Timeout))
    );
    assert_eq!(
        s.poll_transmit().unwrap(),
        b"421 4.4.2 mx.example.org Error: timeout exceeded\r\n"
    );
}

#[test]
fn trickling_data_phase_is_cut_off() {
    let mut h = ready(ServerConfig::new("mx.example.org"));
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    h.feed_str("RCPT TO:<b@example.org>\r\n");
    let t0 = h.now;
    h.feed_str("DATA\r\n");
    let deadline = h.server.poll_timeout().unwrap();
    assert_eq!(
        deadline,
        t0 + Duration::from_secs(600),
        "the data phase has its own deadline"
    );
    for i in 0..599u64 {
        h.now = t0 + Duration::from_secs(i);
        h.server.handle_timeout(h.now);
        h.feed_str("x");
        assert_eq!(h.server.poll_timeout(), Some(deadline));
    }
    h.server.handle_timeout(t0 + Duration::from_secs(600));
    h.pump();
    assert!(h.server.is_closed());
    assert!(
        h.wire_str()
            .ends_with("421 4.4.2 mx.example.org Error: timeout exceeded\r\n")
    );
}

#[test]
fn input_buffer_is_bounded_while_deciding() {
    let mut h = ready(ServerConfig::new("mx.example.org"));
    h.manual = true;
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    assert!(h.server.is_awaiting_decision());
    let flood = "RCPT TO:<b@example.org>\r\n".repeat(10_000);
    let mut taken = 0;
    loop {
        let n = h.server.handle_input(&flood.as_bytes()[taken..]);
        if n == 0 {
            break;
        }
        taken += n;
    }
    assert!(taken <= h.server.config().input_buffer, "took {taken}");
    assert!(taken < flood.len());
}

#[test]
fn client_trickling_server_is_cut_off() {
    let t0 = Instant::now();
    let mut c = ClientSession::new(ClientConfig::new("client.example"), t0);
    assert_eq!(c.poll_event(t0), None);
    let deadline = c.poll_timeout().unwrap();
    for (i, b) in b"220 slow".iter().enumerate() {
        let now = t0 + Duration::from_secs(i as u64 * 60);
        c.handle_timeout(now);
        let _ = c.handle_input(std::slice::from_ref(b));
        let _ = c.poll_event(now);
        if c.is_closed() {
            break;
        }
        assert_eq!(c.poll_timeout(), Some(deadline));
    }
    assert!(c.is_closed());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes in arbitrary reads never panic the server, and its buffers stay bounded.
    #[test]
    fn server_never_panics(reads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..30), prefix in 0usize..4) {
        let prefixes: [&[u8]; 4] = [b"", b"EHLO x.example\r\n", b"EHLO x.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n", b"EHLO x.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 100\r\n"];
        let mut config = ServerConfig::new("mx.example.org");
        config.forbid_unauth_pipelining = false;
        let mut h = Harness::new(config);
        h.feed(prefixes[prefix]);
        let cap = h.server.config().input_buffer;
        for r in &reads {
            let before = h.wire.len();
            h.feed(r);
            prop_assert!(h.wire.len() - before <= 128 * 1024);
            prop_assert!(h.current.len() <= 10_240_000);
        }
        h.server.handle_timeout(h.now + Duration::from_secs(3600));
        h.pump();
        prop_assert!(h.server.is_closed());
        let _ = cap;
    }

    /// Arbitrary replies never panic the client; it never buffers more than its input cap.
    #[test]
    fn client_never_panics(reads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..30), greet in any::<bool>()) {
        let now = Instant::now();
        let mut c = ClientSession::new(ClientConfig::new("client.example"), now);
        if greet {
            let _ = c.handle_input(b"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
        }
        for r in &reads {
            let mut rest: &[u8] = r;
            while !rest.is_empty() {
                let n = c.handle_input(rest);
                while let Some(ev) = c.poll_event(now) {
                    if let ClientEvent::Ready { .. } = ev {
                        let env = postern_smtp::Envelope::new(postern_smtp::ReversePath::Null, [common::rcpt("<x@y.example>")]);
                        let _ = c.send_mail(env, b"hi\r\n".to_vec());
                    }
                }
                while c.poll_transmit().is_some() {}
                if n == 0 {
                    break;
                }
                rest = &rest[n..];
            }
        }
        c.handle_timeout(now + Duration::from_secs(3600));
        let _ = c.poll_event(now);
        prop_assert!(c.is_closed() || c.poll_timeout().is_none());
    }
}

/// One deadline for the whole message content, however it is cut: `BDAT 1` and one octet a second is cut off
/// `timeouts.data` after the first chunk, like a trickled DATA phase, and so is a pause between chunks.
#[test]
fn bdat_trickle_is_cut_off_at_the_message_deadline() {
    let mut h = ready(ServerConfig::new("mx.example.org"));
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    h.feed_str("RCPT TO:<b@example.org>\r\n");
    let t0 = h.now;
    let mut chunks = 0u64;
    for i in 0..700u64 {
        h.now = t0 + Duration::from_secs(i);
        h.server.handle_timeout(h.now);
        h.pump();
        if h.server.is_closed() {
            break;
        }
        chunks += 1;
        assert_eq!(
            h.feed_str("BDAT 1\r\nx"),
            format!("250 2.0.0 Ok: {chunks} bytes\r\n")
        );
        assert!(
            h.server.poll_timeout().unwrap() <= t0 + Duration::from_secs(600),
            "a chunk extended the message deadline"
        );
    }
    assert!(h.server.is_closed());
    assert_eq!(chunks, 600, "cut off 600 s after the first chunk");
    assert!(
        h.wire_str()
            .ends_with("421 4.4.2 mx.example.org Error: timeout exceeded\r\n")
    );
    assert!(
        h.events
            .contains(&ServerEvent::Closing(CloseReason::Timeout))
    );

    // Between chunks, the wait for the next BDAT line is capped by the same deadline.
    let mut h = ready(ServerConfig::new("mx.example.org"));
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    h.feed_str("RCPT TO:<b@example.org>\r\n");
    let t0 = h.now;
    h.feed_str("BDAT 3\r\nab");
    h.now = t0 + Duration::from_secs(500);
    assert_eq!(h.feed_str("c"), "250 2.0.0 Ok: 3 bytes\r\n");
    assert_eq!(
        h.server.poll_timeout(),
        Some(t0 + Duration::from_secs(600)),
        "the next BDAT line is due by the message deadline, not 300 s later"
    );
    // A new transaction gets a deadline of its own.
    h.feed_str("RSET\r\n");
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    h.feed_str("RCPT TO:<b@example.org>\r\n");
    h.feed_str("BDAT 2\r\nx");
    assert_eq!(
        h.server.poll_timeout(),
        Some(t0 + Duration::from_secs(1100))
    );
}

/// Postfix `smtpd_junk_command_limit`: NOOP, RSET, HELP and VRFY are tolerated up to the limit, then `421
/// 4.7.0` and close; an accepted message starts the count again.
#[test]
fn junk_commands_are_limited() {
    let mut h = ready(ServerConfig::new("mx.example.org"));
    for i in 0..100 {
        let cmd = ["NOOP\r\n", "RSET\r\n", "HELP\r\n", "VRFY bob\r\n"][i % 4];
        let out = h.feed_str(cmd);
        assert!(!out.starts_with("421"), "{i}: {out}");
    }
    assert_eq!(
        h.feed_str("NOOP\r\n"),
        "421 4.7.0 mx.example.org Error: too many junk commands\r\n"
    );
    assert!(h.server.is_closed());
    assert!(
        h.events
            .contains(&ServerEvent::Closing(CloseReason::TooManyJunkCommands))
    );

    let mut config = ServerConfig::new("mx.example.org");
    config.max_junk_commands = 2;
    let mut h = ready(config);
    h.feed_str("NOOP\r\n");
    h.feed_str("NOOP\r\n");
    h.feed_str("MAIL FROM:<a@example.net>\r\n");
    h.feed_str("RCPT TO:<b@example.org>\r\n");
    h.feed_str("DATA\r\n");
    assert_eq!(h.feed_str("hi\r\n.\r\n"), "250 2.0.0 Ok: queued\r\n");
    assert_eq!(h.feed_str("RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(h.feed_str("NOOP\r\n"), "250 2.0.0 Ok\r\n");
    assert!(h.feed_str("NOOP\r\n").starts_with("421 4.7.0 "));
}

/// The session time limit: `421 4.7.0` once the session has lasted that long, whatever the client does.
#[test]
fn session_time_limit() {
    let mut config = ServerConfig::new("mx.example.org");
    config.session_time_limit = Duration::from_secs(60);
    let mut h = ready(config);
    // The session started a greet pause before the greeting.
    let end = h.now - h.server.config().greet_pause + Duration::from_secs(60);
    h.now = end - Duration::from_secs(1);
    h.server.handle_timeout(h.now);
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        h.server.poll_timeout(),
        Some(end),
        "the deadline never goes past the session's end"
    );
    h.server.handle_timeout(end);
    h.pump();
    assert!(h.server.is_closed());
    assert!(
        h.wire_str()
            .ends_with("421 4.7.0 mx.example.org Error: session time limit exceeded\r\n"),
        "{}",
        h.wire_str()
    );
    assert!(
        h.events
            .contains(&ServerEvent::Closing(CloseReason::SessionTimeLimit))
    );
    // Zero: no limit.
    let mut config = ServerConfig::new("mx.example.org");
    config.session_time_limit = Duration::ZERO;
    let h = ready(config);
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now + Duration::from_secs(300))
    );
}

/// Under stress (Postfix's `stress` parameter) the command deadline is 10 s from the start of the wait, one
/// junk command and one error are tolerated; when stress ends the normal limits are back.
#[test]
fn stress_tightens_the_limits() {
    let mut h = ready(ServerConfig::new("mx.example.org"));
    let t0 = h.now;
    assert_eq!(h.server.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    h.server.set_stress(true);
    assert!(h.server.is_under_stress());
    assert_eq!(
        h.server.poll_timeout(),
        Some(t0 + Duration::from_secs(10)),
        "the wait already armed is shortened"
    );
    h.server.set_stress(false);
    assert_eq!(h.server.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    h.server.set_stress(true);
    // An idle client is cut off 10 s into its wait.
    h.server.handle_timeout(t0 + Duration::from_secs(10));
    h.pump();
    assert!(
        h.wire_str()
            .ends_with("421 4.4.2 mx.example.org Error: timeout exceeded\r\n")
    );

    let mut h = ready(ServerConfig::new("mx.example.org"));
    h.server.set_stress(true);
    assert_eq!(h.feed_str("NOOP\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(
        h.feed_str("NOOP\r\n"),
        "421 4.7.0 mx.example.org Error: too many junk commands\r\n"
    );

    let mut h = ready(ServerConfig::new("mx.example.org"));
    h.server.set_stress(true);
    assert_eq!(
        h.feed_str("RCPT TO:<b@example.org>\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n421 4.7.0 mx.example.org Error: too many errors\r\n"
    );

    // Stress never loosens a limit configured tighter.
    let mut config = ServerConfig::new("mx.example.org");
    config.timeouts.command = Duration::from_secs(5);
    let mut h = ready(config);
    h.server.set_stress(true);
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now + Duration::from_secs(5))
    );
}
