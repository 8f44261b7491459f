//! Connection reuse at the attempt: a connection kept open carries another message only under the very
//! policy it was opened and judged under, and the next message goes inside the TLS session of the first.

use std::time::Instant;

use postern_attempt::{Attempt, Done, Event, HandshakeResult, NotReusable, Outcome};
use postern_policy::{
    CertificateCheck, ClientTlsMode, ConnectionPolicy, DestinationPolicy, NextHop, OutboundPolicy,
};
use postern_smtp::{ClientConfig, Envelope, ForwardPath, ReversePath};

fn policy(mode: ClientTlsMode) -> ConnectionPolicy {
    OutboundPolicy::new(DestinationPolicy::new(mode)).connection(
        &NextHop::parse("example.org").unwrap(),
        Some(&"mx.example.org".parse().unwrap()),
    )
}

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::parse("<a@example.net>").unwrap(),
        [ForwardPath::parse("<b@example.org>").unwrap()],
    )
}

/// Runs `attempt` against `replies` (one per read) until Done; returns it and what was sent.
fn run(attempt: &mut Attempt, replies: &[&[u8]]) -> (Done, String) {
    let now = Instant::now();
    let mut replies = replies.iter();
    let mut sent = Vec::new();
    // Bounded: these sessions have a few dozen events.
    for _ in 0..200 {
        match attempt.poll_event(now) {
            Some(Event::Transmit(bytes)) => sent.extend(bytes),
            Some(Event::StartTls(_)) => attempt
                .handle_tls(HandshakeResult::Established {
                    version: postern_policy::TlsVersion::Tls13,
                    cipher: "TLS13_AES_128_GCM_SHA256".into(),
                    certificate: CertificateCheck::verified(),
                    peer_certificates: Vec::new(),
                })
                .unwrap(),
            Some(Event::Done(done)) => return (*done, String::from_utf8(sent).unwrap()),
            Some(_) => {}
            None => match replies.next() {
                Some(r) => {
                    let _ = attempt.handle_input(r);
                }
                None => attempt.handle_eof(),
            },
        }
    }
    panic!("no end")
}

#[test]
fn the_next_message_goes_in_the_same_tls_session_under_the_same_policy_only() {
    let verify = policy(ClientTlsMode::Verify);
    let mut attempt = Attempt::new(
        verify.clone(),
        ClientConfig::new("client.example.net"),
        envelope(),
        b"one\r\n".to_vec(),
        Instant::now(),
    )
    .keep_open();
    let (first, sent) = run(
        &mut attempt,
        &[
            b"220 mx.example.org ESMTP\r\n",
            b"250-mx.example.org\r\n250 STARTTLS\r\n",
            b"220 2.0.0 Ready\r\n",
            b"250-mx.example.org\r\n250 PIPELINING\r\n",
            b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
            b"250 2.0.0 queued\r\n",
        ],
    );
    assert_eq!(first.outcome, Outcome::Delivered);
    assert!(first.connection_open && first.tls.is_some());
    assert!(!sent.contains("QUIT"), "{sent}");
    assert!(attempt.is_idle());

    // Another policy: refused, and the connection stays idle for one that fits.
    assert_eq!(
        attempt.next_message(
            &policy(ClientTlsMode::Encrypt),
            envelope(),
            b"x\r\n".to_vec()
        ),
        Err(NotReusable::OtherPolicy)
    );
    assert!(attempt.is_idle());

    attempt
        .next_message(&verify, envelope(), b"two\r\n".to_vec())
        .unwrap();
    let (second, sent) = run(
        &mut attempt,
        &[
            b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
            b"250 2.0.0 queued\r\n",
        ],
    );
    assert_eq!(second.outcome, Outcome::Delivered);
    assert_eq!(second.connection_use, 2);
    assert!(second.tls.is_some(), "the connection's TLS facts");
    // No EHLO or STARTTLS again: MAIL is the first command on the reused session.
    assert!(sent.starts_with("MAIL FROM:<a@example.net>"), "{sent}");
    assert!(
        !sent.contains("STARTTLS") && !sent.contains("EHLO"),
        "{sent}"
    );

    let quit = attempt.quit().expect("idle: QUIT to write");
    assert_eq!(quit, b"QUIT\r\n");
    assert!(!attempt.is_idle());
    assert_eq!(
        attempt.next_message(&verify, envelope(), b"three\r\n".to_vec()),
        Err(NotReusable::NotIdle)
    );
}

#[test]
fn an_attempt_not_kept_open_quits_and_cannot_be_reused() {
    let p = policy(ClientTlsMode::None);
    let mut attempt = Attempt::new(
        p.clone(),
        ClientConfig::new("client.example.net"),
        envelope(),
        b"one\r\n".to_vec(),
        Instant::now(),
    );
    let (done, sent) = run(
        &mut attempt,
        &[
            b"220 mx.example.org ESMTP\r\n",
            b"250 mx.example.org\r\n",
            b"250 2.1.0 Ok\r\n",
            b"250 2.1.5 Ok\r\n",
            b"354 go\r\n",
            b"250 2.0.0 queued\r\n",
            b"221 bye\r\n",
        ],
    );
    assert_eq!(done.outcome, Outcome::Delivered);
    assert!(!done.connection_open);
    assert!(sent.ends_with("QUIT\r\n"), "{sent}");
    assert_eq!(
        attempt.next_message(&p, envelope(), b"two\r\n".to_vec()),
        Err(NotReusable::NotIdle)
    );
    assert_eq!(attempt.quit(), None);
}
