//! PIPELINING (RFC 2920): replies in order, group-ending commands, and Postfix 3.9's
//! `smtpd_forbid_unauth_pipelining` synchronization errors.

mod common;

use common::Harness;
use postern_smtp::{CloseReason, EnhancedStatus, Reply, ServerConfig, ServerEvent, ServerSession};

const SYNC: &str = "554 5.5.0 Error: SMTP protocol synchronization\r\n";

fn ehlo(h: &mut Harness) {
    let r = h.feed_str("EHLO client.example\r\n");
    assert!(r.contains("250-PIPELINING\r\n"));
}

#[test]
fn pipelined_transaction_replies_in_order() {
    let mut h = Harness::default_named("mx.example.org");
    h.reject_rcpts.push("nobody@".into());
    ehlo(&mut h);
    let out = h.feed_str("MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user here\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    // After the end of data the client may pipeline the next transaction or QUIT (RFC 2920 3.1).
    let out = h.feed_str("hello\r\n.\r\nRSET\r\nMAIL FROM:<a@example.net>\r\nQUIT\r\n");
    assert_eq!(
        out,
        "250 2.0.0 Ok: queued\r\n250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n221 2.0.0 Bye\r\n"
    );
}

#[test]
fn asynchronous_decisions_keep_order() {
    let mut h = Harness::default_named("mx.example.org");
    ehlo(&mut h);
    h.manual = true;
    let out = h.feed_str("MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nNOOP\r\n");
    assert_eq!(
        out, "",
        "nothing is sent before the application answers MAIL"
    );
    assert!(matches!(h.events.last(), Some(ServerEvent::Mail { .. })));
    assert!(h.server.is_awaiting_decision());
    assert_eq!(
        h.server.poll_timeout(),
        None,
        "no deadline while the application decides"
    );
    h.server.accept().unwrap();
    h.pump();
    assert!(matches!(h.events.last(), Some(ServerEvent::Rcpt { .. })));
    let r = Reply::new(450, EnhancedStatus::new(4, 2, 0).ok(), ["Mailbox busy"]).unwrap();
    assert_eq!(
        h.server.accept_with(r.clone()),
        Err(postern_smtp::AnswerError::WrongReplyClass)
    );
    h.server.reject(r).unwrap();
    h.pump();
    assert_eq!(
        h.wire_str().split_once("250 CHUNKING\r\n").unwrap().1,
        "250 2.1.0 Ok\r\n450 4.2.0 Mailbox busy\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(
        h.server.accept(),
        Err(postern_smtp::AnswerError::NoDecisionPending)
    );
}

#[test]
fn talking_before_greeting() {
    let now = std::time::Instant::now();
    let mut s = ServerSession::new(ServerConfig::new("mx.example.org"), now);
    let _ = s.handle_input(b"EHLO early\r\n");
    assert_eq!(
        s.poll_event(now),
        Some(ServerEvent::Closing(CloseReason::Synchronization))
    );
    let out = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert!(out.ends_with(SYNC), "{out}");
    assert!(s.is_closed());
}

#[test]
fn group_enders_followed_by_more() {
    for (prefix, input) in [
        ("", "EHLO client.example\r\nMAIL FROM:<a@example.net>\r\n"),
        ("", "HELO client.example\r\nMAIL FROM:<a@example.net>\r\n"),
        ("EHLO c.example\r\n", "NOOP\r\nRSET\r\n"),
        ("EHLO c.example\r\n", "VRFY bob\r\nRSET\r\n"),
        ("EHLO c.example\r\n", "QUIT\r\nRSET\r\n"),
        (
            "EHLO c.example\r\n|MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n",
            "DATA\r\nSubject: early\r\n",
        ),
    ] {
        let mut h = Harness::default_named("mx.example.org");
        for read in prefix.split('|').filter(|r| !r.is_empty()) {
            assert!(!h.feed_str(read).contains("554"));
        }
        let out = h.feed_str(input);
        assert_eq!(out, SYNC, "{input:?}");
        assert!(h.server.is_closed());
        assert!(
            h.events
                .contains(&ServerEvent::Closing(CloseReason::Synchronization))
        );
    }
}

#[test]
fn pipelining_without_ehlo_or_without_offer() {
    // HELO: no PIPELINING was offered.
    let mut h = Harness::default_named("mx.example.org");
    h.feed_str("HELO client.example\r\n");
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n"),
        SYNC
    );
    // EHLO, PIPELINING not advertised.
    let mut config = ServerConfig::new("mx.example.org");
    config.pipelining = false;
    let mut h = Harness::new(config);
    assert!(!h.feed_str("EHLO client.example\r\n").contains("PIPELINING"));
    assert_eq!(
        h.feed_str("MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n"),
        SYNC
    );
}

#[test]
fn bytes_during_pending_group_ender() {
    let mut h = Harness::default_named("mx.example.org");
    h.manual = true;
    h.feed_str("EHLO client.example\r\n");
    assert!(h.server.is_awaiting_decision());
    // The client did not wait for the EHLO reply.
    let out = h.feed_str("MAIL FROM:<a@example.net>\r\n");
    assert_eq!(out, SYNC);
}

#[test]
fn setting_off_processes_everything() {
    let mut config = ServerConfig::new("mx.example.org");
    config.forbid_unauth_pipelining = false;
    let mut h = Harness::new(config);
    let out = h.feed_str("HELO client.example\r\nMAIL FROM:<a@example.net>\r\nNOOP\r\nQUIT\r\n");
    assert_eq!(
        out,
        "250 mx.example.org\r\n250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"
    );
}

#[test]
fn bdat_pipelined_with_envelope() {
    let mut h = Harness::default_named("mx.example.org");
    ehlo(&mut h);
    let out = h.feed_str("MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nBDAT 5\r\nhelloBDAT 8 LAST\r\n world\r\nQUIT\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 5 bytes\r\n250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n"
    );
    assert_eq!(h.messages, vec![b"hello world\r\n".to_vec()]);
}

#[test]
fn refused_bdat_chunk_is_skipped_in_sync() {
    let mut h = Harness::default_named("mx.example.org");
    ehlo(&mut h);
    // No MAIL: the chunk is consumed and refused, then the next command is read normally.
    let out = h.feed_str("BDAT 9 LAST\r\nRSET\r\nxyzRSET\r\n");
    assert_eq!(
        out,
        "503 5.5.1 Error: need RCPT command\r\n250 2.0.0 Ok\r\n"
    );
    assert!(h.messages.is_empty());
    assert_eq!(h.count(|e| matches!(e, ServerEvent::Reset)), 1);
}

/// The greet pause (sendmail `greet_pause`, Postfix `postscreen_greet_wait`): the greeting is held back while the
/// connection is watched; a client that talks in the pause gets `554 5.5.0` and never sees a `220`.
#[test]
fn greet_pause_catches_early_talkers_without_a_greeting() {
    let start = std::time::Instant::now();
    let config = ServerConfig::new("mx.example.org");
    assert_eq!(config.greet_pause, postern_smtp::DEFAULT_GREET_PAUSE);
    let pause = config.greet_pause;
    assert!(!pause.is_zero(), "on by default");

    // Quiet during the pause: greeted at its end, then served.
    let mut s = ServerSession::new(config.clone(), start);
    assert!(!s.passed_greet_pause());
    assert_eq!(s.poll_transmit(), None, "no greeting during the pause");
    assert_eq!(s.poll_event(start), None);
    assert_eq!(s.poll_timeout(), Some(start + pause));
    s.handle_timeout(start + pause / 2);
    assert_eq!(s.poll_transmit(), None);
    s.handle_timeout(start + pause);
    assert!(s.passed_greet_pause());
    assert_eq!(s.poll_event(start + pause), None);
    assert_eq!(s.poll_transmit().unwrap(), b"220 mx.example.org ESMTP\r\n");
    assert_eq!(
        s.poll_timeout(),
        Some(start + pause + std::time::Duration::from_secs(300)),
        "then the command deadline"
    );
    let _ = s.handle_input(b"EHLO patient.example\r\n");
    assert!(matches!(
        s.poll_event(start + pause),
        Some(ServerEvent::Hello { .. })
    ));

    // Talking in the pause, however early: 554 and close, and no 220 at all.
    for at in [std::time::Duration::ZERO, pause / 2, pause - pause / 100] {
        let mut s = ServerSession::new(config.clone(), start);
        s.handle_timeout(start + at);
        let _ = s.handle_input(b"EHLO early.example\r\n");
        assert_eq!(
            s.poll_event(start + at),
            Some(ServerEvent::Closing(CloseReason::Synchronization))
        );
        assert_eq!(s.poll_transmit().unwrap(), SYNC.as_bytes(), "at {at:?}");
        assert!(s.is_closed());
        s.handle_timeout(start + pause);
        assert_eq!(s.poll_transmit(), None, "no greeting after the close");
        assert!(!s.passed_greet_pause());
    }

    // Zero turns the pause off: the greeting is queued at once.
    let mut off = config.clone();
    off.greet_pause = std::time::Duration::ZERO;
    let mut s = ServerSession::new(off, start);
    assert_eq!(s.poll_transmit().unwrap(), b"220 mx.example.org ESMTP\r\n");

    // Without forbid_unauth_pipelining the early commands wait for the greeting.
    let mut lax = config;
    lax.forbid_unauth_pipelining = false;
    let mut s = ServerSession::new(lax, start);
    let _ = s.handle_input(b"EHLO early.example\r\n");
    assert_eq!(
        s.poll_event(start),
        None,
        "nothing processed before the greeting"
    );
    s.handle_timeout(start + pause);
    assert!(matches!(
        s.poll_event(start + pause),
        Some(ServerEvent::Hello { .. })
    ));
    assert_eq!(s.poll_transmit().unwrap(), b"220 mx.example.org ESMTP\r\n");
}
