//! STARTTLS command injection (server side, CVE-2011-0411) and response injection (client side): plaintext
//! that follows STARTTLS / its `220` reply is never processed as if it had arrived over TLS.

mod common;

use std::time::Instant;

use common::Harness;
use postern_smtp::{
    AfterStartTls, ClientCloseReason, ClientConfig, ClientEvent, ClientSession, CloseReason,
    SendError, ServerConfig, ServerEvent,
};

fn server_after_ehlo(config: ServerConfig) -> Harness {
    let mut h = Harness::new(config);
    let r = h.feed_str("EHLO client.example\r\n");
    assert!(r.contains("250-STARTTLS\r\n"));
    h
}

fn starttls_events(h: &Harness) -> Vec<usize> {
    h.events
        .iter()
        .filter_map(|e| {
            if let ServerEvent::StartTls { discarded } = e {
                Some(*discarded)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn server_injection_in_one_read_is_discarded() {
    let mut h = server_after_ehlo(ServerConfig::new("mx.example.org"));
    let out = h.feed_str("STARTTLS\r\nRSET\r\n");
    assert_eq!(
        out, "220 2.0.0 Ready to start TLS\r\n",
        "RSET must not be answered"
    );
    assert_eq!(starttls_events(&h), vec![6]);
    assert_eq!(h.server.discarded_bytes(), 6);
    assert!(!h.events.iter().any(|e| matches!(e, ServerEvent::Reset)));
    h.server.handle_tls_established().unwrap();
    // Inside TLS the session starts afresh: no reply to the injected RSET ever appears.
    let out = h.feed_str("EHLO client.example\r\n");
    assert!(out.starts_with("250-mx.example.org\r\n"), "{out}");
    assert!(!out.contains("STARTTLS"));
    assert!(out.contains("250 REQUIRETLS\r\n") || out.contains("REQUIRETLS"));
}

#[test]
fn server_injection_split_across_reads() {
    for split in 1..("STARTTLS\r\nRSET\r\n".len()) {
        let mut h = server_after_ehlo(ServerConfig::new("mx.example.org"));
        let input = b"STARTTLS\r\nRSET\r\n";
        let mut out = h.feed(&input[..split]);
        out += &h.feed(&input[split..]);
        assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n", "split at {split}");
        assert_eq!(h.server.discarded_bytes(), 6, "split at {split}");
        h.server.handle_tls_established().unwrap();
        let out = h.feed_str("MAIL FROM:<a@example.net>\r\n");
        assert_eq!(
            out, "503 5.5.1 Error: send HELO/EHLO first\r\n",
            "EHLO state forgotten (RFC 3207 4.2)"
        );
    }
}

#[test]
fn server_injection_of_a_whole_transaction() {
    let mut h = server_after_ehlo(ServerConfig::new("mx.example.org"));
    let out = h.feed_str("STARTTLS\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, ServerEvent::Mail { .. } | ServerEvent::Rcpt { .. }))
    );
    h.server.handle_tls_established().unwrap();
    assert!(h.messages.is_empty());
}

#[test]
fn server_close_mode() {
    let mut config = ServerConfig::new("mx.example.org");
    config.after_starttls = AfterStartTls::Close;
    let mut h = server_after_ehlo(config.clone());
    let out = h.feed_str("STARTTLS\r\nRSET\r\n");
    assert_eq!(out, "554 5.5.0 Error: SMTP protocol synchronization\r\n");
    assert!(h.server.is_closed());
    assert!(
        h.events
            .contains(&ServerEvent::Closing(CloseReason::Synchronization))
    );
    // Bytes arriving in a later read, before the handshake, close the session too.
    let mut h = server_after_ehlo(config);
    assert_eq!(
        h.feed_str("STARTTLS\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    h.feed_str("RSET\r\n");
    assert!(h.server.is_closed());
    assert!(h.server.handle_tls_established().is_err());
}

#[test]
fn server_second_starttls_refused() {
    let mut h = server_after_ehlo(ServerConfig::new("mx.example.org"));
    h.feed_str("STARTTLS\r\n");
    h.server.handle_tls_established().unwrap();
    h.feed_str("EHLO client.example\r\n");
    assert_eq!(
        h.feed_str("STARTTLS\r\n"),
        "554 5.5.1 Error: TLS already active\r\n"
    );
}

/// A client at its decision point after EHLO with STARTTLS advertised.
fn client_ready(config: ClientConfig) -> (ClientSession, Instant) {
    let now = Instant::now();
    let mut c = ClientSession::new(config, now);
    assert_eq!(c.handle_input(b"220 mx.example.org ESMTP\r\n"), 26);
    assert!(c.poll_event(now).is_none());
    assert_eq!(c.poll_transmit().unwrap(), b"EHLO client.example\r\n");
    let ehlo = b"250-mx.example.org\r\n250-SIZE 1000\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n";
    assert_eq!(c.handle_input(ehlo), ehlo.len());
    match c.poll_event(now) {
        Some(ClientEvent::Ready {
            capabilities,
            tls_active: false,
            extended: true,
        }) => {
            assert!(capabilities.starttls);
            assert_eq!(capabilities.size, Some(1000));
        }
        other => panic!("{other:?}"),
    }
    (c, now)
}

#[test]
fn client_response_injection_in_one_read_is_discarded() {
    let (mut c, now) = client_ready(ClientConfig::new("client.example"));
    c.start_tls().unwrap();
    assert_eq!(c.poll_transmit().unwrap(), b"STARTTLS\r\n");
    let _ = c.handle_input(b"220 go\r\n250 injected\r\n");
    assert_eq!(
        c.poll_event(now),
        Some(ClientEvent::StartTls { discarded: 14 })
    );
    assert_eq!(c.poll_event(now), None);
    c.handle_tls_established().unwrap();
    // EHLO is sent first inside TLS; the injected 250 was not taken as its reply.
    assert_eq!(c.poll_transmit().unwrap(), b"EHLO client.example\r\n");
    assert_eq!(c.poll_event(now), None);
    assert!(!c.is_ready());
    // The TLS EHLO reply advertises STARTTLS again and no SIZE/AUTH: nothing from before is remembered.
    let _ = c.handle_input(b"250-mx.example.org\r\n250 STARTTLS\r\n");
    match c.poll_event(now) {
        Some(ClientEvent::Ready {
            capabilities,
            tls_active: true,
            ..
        }) => {
            assert_eq!(capabilities.size, None);
            assert_eq!(capabilities.auth, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.start_tls(),
        Err(SendError::StartTlsUnavailable),
        "never STARTTLS twice"
    );
}

#[test]
fn client_response_injection_split_across_reads() {
    let (mut c, now) = client_ready(ClientConfig::new("client.example"));
    c.start_tls().unwrap();
    let _ = c.poll_transmit();
    let _ = c.handle_input(b"220 go\r\n");
    assert_eq!(
        c.poll_event(now),
        Some(ClientEvent::StartTls { discarded: 0 })
    );
    assert_eq!(c.handle_input(b"250 injected\r\n"), 14);
    assert_eq!(c.discarded_bytes(), 14);
    c.handle_tls_established().unwrap();
    assert_eq!(c.poll_event(now), None, "the injected reply is gone");
}

#[test]
fn client_close_mode_aborts() {
    let mut config = ClientConfig::new("client.example");
    config.after_starttls = AfterStartTls::Close;
    let (mut c, now) = client_ready(config);
    c.start_tls().unwrap();
    let _ = c.poll_transmit();
    let _ = c.handle_input(b"220 go\r\n250 injected\r\n");
    assert_eq!(
        c.poll_event(now),
        Some(ClientEvent::Closed(ClientCloseReason::StartTlsInjection {
            discarded: 14
        }))
    );
    assert!(c.is_closed());
    assert!(
        c.poll_transmit().is_none(),
        "nothing more is sent on a compromised channel"
    );
}

#[test]
fn client_refused_starttls_stays_at_decision_point() {
    let (mut c, now) = client_ready(ClientConfig::new("client.example"));
    c.start_tls().unwrap();
    let _ = c.poll_transmit();
    let _ = c.handle_input(b"454 4.7.0 TLS not available due to temporary reason\r\n");
    match c.poll_event(now) {
        Some(ClientEvent::StartTlsRefused(r)) => assert_eq!(r.code().value(), 454),
        other => panic!("{other:?}"),
    }
    assert!(c.is_ready());
    assert!(!c.is_tls_active());
    // A policy requiring TLS quits here instead of sending MAIL.
    c.quit().unwrap();
    assert_eq!(c.poll_transmit().unwrap(), b"QUIT\r\n");
}
