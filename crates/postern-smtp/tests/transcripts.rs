//! Byte-exact C:/S: transcripts replayed against the server engine: RFC 5321 Appendix D (client lines verbatim,
//! server lines as this engine words them) and the RFC 3207 STARTTLS example.

mod common;

use common::{Harness, replay};
use postern_smtp::{EnhancedStatus, Reply, ServerConfig, StartTlsPolicy};

const EHLO_FOO: &str = "S: 250-foo.com
S: 250-PIPELINING
S: 250-SIZE 10240000
S: 250-STARTTLS
S: 250-ENHANCEDSTATUSCODES
S: 250-8BITMIME
S: 250-DSN
S: 250-SMTPUTF8
S: 250 CHUNKING";

fn foo() -> Harness {
    let mut config = ServerConfig::new("foo.com");
    config.banner = "Simple Mail Transfer Service Ready".into();
    let mut h = Harness::new(config);
    h.reject_rcpts.push("Green@".into());
    h
}

/// RFC 5321 D.1: a typical SMTP transaction scenario.
#[test]
fn rfc5321_d1_typical_transaction() {
    let mut h = foo();
    let script = format!(
        "S: 220 foo.com Simple Mail Transfer Service Ready
C: EHLO bar.com
{EHLO_FOO}
C: MAIL FROM:<Smith@bar.com>
S: 250 2.1.0 Ok
C: RCPT TO:<Jones@foo.com>
S: 250 2.1.5 Ok
C: RCPT TO:<Green@foo.com>
S: 550 5.1.1 No such user here
C: RCPT TO:<Brown@foo.com>
S: 250 2.1.5 Ok
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
C: Blah blah blah...
C: ...etc. etc. etc.
C: .
S: 250 2.0.0 Ok: queued
C: QUIT
S: 221 2.0.0 Bye"
    );
    replay(&mut h, &script);
    assert!(h.server.is_closed());
    // "...etc." was dot-stuffed on the wire: one leading dot is removed (RFC 5321 4.5.2).
    assert_eq!(
        h.messages,
        vec![b"Blah blah blah...\r\n..etc. etc. etc.\r\n".to_vec()]
    );
}

/// RFC 5321 D.2: aborted SMTP transaction scenario.
#[test]
fn rfc5321_d2_aborted_transaction() {
    let mut h = foo();
    let script = format!(
        "S: 220 foo.com Simple Mail Transfer Service Ready
C: EHLO bar.com
{EHLO_FOO}
C: MAIL FROM:<Smith@bar.com>
S: 250 2.1.0 Ok
C: RCPT TO:<Jones@foo.com>
S: 250 2.1.5 Ok
C: RCPT TO:<Green@foo.com>
S: 550 5.1.1 No such user here
C: RSET
S: 250 2.0.0 Ok
C: QUIT
S: 221 2.0.0 Bye"
    );
    replay(&mut h, &script);
    assert!(h.messages.is_empty());
}

/// RFC 5321 D.3: relayed mail scenario (the first hop, with a source route to be ignored on the second).
#[test]
fn rfc5321_d3_relayed_mail() {
    let mut h = foo();
    let script = format!(
        "S: 220 foo.com Simple Mail Transfer Service Ready
C: EHLO bar.com
{EHLO_FOO}
C: MAIL FROM:<JQP@bar.com>
S: 250 2.1.0 Ok
C: RCPT TO:<@foo.com:Jones@XYZ.COM>
S: 250 2.1.5 Ok
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
C: Date: Thu, 21 May 1998 05:33:29 -0700
C: From: John Q. Public <JQP@bar.com>
C: Subject: The Next Meeting of the Board
C: To: Jones@xyz.com
C:
C: Bill:
C: The next meeting of the board of directors will be
C: on Tuesday.
C: John.
C: .
S: 250 2.0.0 Ok: queued
C: QUIT
S: 221 2.0.0 Bye"
    );
    replay(&mut h, &script);
    let rcpt = h.events.iter().find_map(|e| match e {
        postern_smtp::ServerEvent::Rcpt { to, .. } => Some(to.to_string()),
        _ => None,
    });
    assert_eq!(
        rcpt.as_deref(),
        Some("<Jones@XYZ.COM>"),
        "source route ignored (RFC 5321 4.1.1.3)"
    );
    let msg = String::from_utf8(h.messages[0].clone()).unwrap();
    assert!(msg.starts_with("Date: Thu, 21 May 1998 05:33:29 -0700\r\n"));
    assert!(msg.ends_with("\r\n\r\nBill:\r\nThe next meeting of the board of directors will be\r\non Tuesday.\r\nJohn.\r\n"));
}

/// RFC 5321 D.4: verifying and sending scenario (SEND is not implemented by this engine).
#[test]
fn rfc5321_d4_verifying_and_sending() {
    let mut h = foo();
    h.vrfy_reply = Some(
        Reply::new(
            250,
            EnhancedStatus::new(2, 1, 5).ok(),
            ["Mark Crispin <Admin.MRC@foo.com>"],
        )
        .unwrap(),
    );
    let script = format!(
        "S: 220 foo.com Simple Mail Transfer Service Ready
C: EHLO bar.com
{EHLO_FOO}
C: VRFY Crispin
S: 250 2.1.5 Mark Crispin <Admin.MRC@foo.com>
C: SEND FROM:<EAK@bar.com>
S: 502 5.5.2 Error: command not recognized
C: QUIT
S: 221 2.0.0 Bye"
    );
    replay(&mut h, &script);
}

/// The same D.1 session, each client line fed one byte per read: identical bytes out.
#[test]
fn rfc5321_d1_bytewise() {
    let mut h = foo();
    let script = format!(
        "S: 220 foo.com Simple Mail Transfer Service Ready
-- bytewise
C: EHLO bar.com
{EHLO_FOO}
-- bytewise
C: MAIL FROM:<Smith@bar.com>
S: 250 2.1.0 Ok
-- bytewise
C: RCPT TO:<Jones@foo.com>
S: 250 2.1.5 Ok
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
-- bytewise
C: Blah blah blah...
C: .
S: 250 2.0.0 Ok: queued"
    );
    replay(&mut h, &script);
    assert_eq!(h.messages, vec![b"Blah blah blah...\r\n".to_vec()]);
}

/// RFC 3207 section 5 example, then the session after the handshake: EHLO again, STARTTLS no longer
/// advertised, REQUIRETLS now advertised, a second STARTTLS refused.
#[test]
fn rfc3207_example() {
    let mut config = ServerConfig::new("mail.imc.org");
    config.banner = "SMTP service ready".into();
    config.chunking = false;
    config.smtputf8 = false;
    config.pipelining = false;
    let mut h = Harness::new(config);
    replay(
        &mut h,
        "S: 220 mail.imc.org SMTP service ready
C: EHLO mail.example.com
S: 250-mail.imc.org
S: 250-SIZE 10240000
S: 250-STARTTLS
S: 250-ENHANCEDSTATUSCODES
S: 250-8BITMIME
S: 250 DSN
C: STARTTLS
S: 220 2.0.0 Ready to start TLS
-- tls
C: EHLO mail.example.com
S: 250-mail.imc.org
S: 250-SIZE 10240000
S: 250-ENHANCEDSTATUSCODES
S: 250-8BITMIME
S: 250-DSN
S: 250 REQUIRETLS
C: STARTTLS
S: 554 5.5.1 Error: TLS already active
C: MAIL FROM:<a@example.com> REQUIRETLS
S: 250 2.1.0 Ok",
    );
    assert!(h.server.is_tls_active());
}

/// RFC 3207 section 4 for a server that requires TLS.
#[test]
fn rfc3207_tls_required() {
    let mut config = ServerConfig::new("foo.com");
    config.starttls = StartTlsPolicy::Require;
    let mut h = Harness::new(config);
    let script = format!(
        "S: 220 foo.com ESMTP
C: EHLO bar.com
{EHLO_FOO}
C: MAIL FROM:<Smith@bar.com>
S: 530 5.7.0 Must issue a STARTTLS command first
C: NOOP
S: 250 2.0.0 Ok
C: HELP
S: 214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS
C: VRFY x
S: 530 5.7.0 Must issue a STARTTLS command first
C: STARTTLS foo
S: 501 5.5.4 Syntax: STARTTLS
C: STARTTLS
S: 220 2.0.0 Ready to start TLS
-- tls
C: MAIL FROM:<Smith@bar.com>
S: 503 5.5.1 Error: send HELO/EHLO first
C: HELO bar.com
S: 250 foo.com
C: MAIL FROM:<Smith@bar.com>
S: 250 2.1.0 Ok"
    );
    replay(&mut h, &script);
}

/// BDAT (RFC 3030 section 4.2 style): chunks, then LAST.
#[test]
fn rfc3030_bdat() {
    let mut h = foo();
    let script = format!(
        "S: 220 foo.com Simple Mail Transfer Service Ready
C: EHLO bar.com
{EHLO_FOO}
C: MAIL FROM:<Sam@Random.com> BODY=8BITMIME
S: 250 2.1.0 Ok
C: RCPT TO:<Susan@Random.com>
S: 250 2.1.5 Ok
C: BDAT 10
C: Hi Susan
S: 250 2.0.0 Ok: 10 bytes
C: BDAT 5 LAST
C: bye
S: 250 2.0.0 Ok: queued"
    );
    replay(&mut h, &script);
    // BDAT content is passed through verbatim (no dot-unstuffing, RFC 3030 2).
    assert_eq!(h.messages, vec![b"Hi Susan\r\nbye\r\n".to_vec()]);
}

/// TLS unavailable and STARTTLS disabled.
#[test]
fn starttls_unavailable_and_disabled() {
    let mut config = ServerConfig::new("foo.com");
    config.tls_available = false;
    let mut h = Harness::new(config);
    replay(
        &mut h,
        "S: 220 foo.com ESMTP
C: HELO bar.com
S: 250 foo.com
C: STARTTLS
S: 454 4.7.0 TLS not available due to temporary reason",
    );
    let mut config = ServerConfig::new("foo.com");
    config.starttls = StartTlsPolicy::Disabled;
    let mut h = Harness::new(config);
    replay(
        &mut h,
        "S: 220 foo.com ESMTP
C: STARTTLS
S: 502 5.5.1 Error: command not implemented",
    );
}

/// Replay a transcript against the client engine: each `S:` group is fed to the client, and what the client
/// then sends must equal the following `C:` group byte for byte. At each decision point the client sends the
/// next envelope of `outbox`, or quits.
fn replay_client(
    script: &str,
    mut outbox: Vec<(postern_smtp::Envelope, Vec<u8>)>,
) -> Vec<postern_smtp::ClientEvent> {
    use postern_smtp::{ClientConfig, ClientEvent, ClientSession};
    let now = std::time::Instant::now();
    let mut c = ClientSession::new(ClientConfig::new("bar.com"), now);
    let mut events = Vec::new();
    let mut groups: Vec<(String, String)> = Vec::new(); // (server, client)
    for line in script.lines().map(str::trim_start) {
        let (is_server, text) = if let Some(s) = line.strip_prefix("S: ") {
            (true, s)
        } else if let Some(c) = line
            .strip_prefix("C: ")
            .or_else(|| (line == "C:").then_some(""))
        {
            (false, c)
        } else {
            continue;
        };
        if is_server && groups.last().is_none_or(|g| !g.1.is_empty()) {
            groups.push((String::new(), String::new()));
        }
        let g = groups.last_mut().expect("a group exists");
        let target = if is_server { &mut g.0 } else { &mut g.1 };
        target.push_str(text);
        target.push_str("\r\n");
    }
    for (server, expected) in groups {
        assert_eq!(c.handle_input(server.as_bytes()), server.len());
        let mut sent = Vec::new();
        loop {
            let mut progressed = false;
            while let Some(ev) = c.poll_event(now) {
                progressed = true;
                if matches!(
                    ev,
                    ClientEvent::Ready { .. } | ClientEvent::TransactionDone(_)
                ) {
                    if outbox.is_empty() {
                        c.quit().unwrap();
                    } else {
                        let (env, msg) = outbox.remove(0);
                        c.send_mail(env, msg).unwrap();
                    }
                }
                events.push(ev);
            }
            while let Some(out) = c.poll_transmit() {
                progressed = true;
                sent.extend(out);
            }
            if !progressed {
                break;
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&sent),
            expected,
            "after the server sent {server:?}"
        );
    }
    events
}

/// RFC 5321 D.1 from the client's side (server lines verbatim from the RFC). The server advertises SIZE, so
/// the client declares the size (RFC 1870); no PIPELINING, so one command per reply.
#[test]
fn rfc5321_d1_client_side() {
    use postern_smtp::{ClientEvent, DeliveryStatus, Envelope, ForwardPath, ReversePath};
    let env = Envelope::new(
        ReversePath::parse("<Smith@bar.com>").unwrap(),
        ["<Jones@foo.com>", "<Green@foo.com>", "<Brown@foo.com>"]
            .map(|r| ForwardPath::parse(r).unwrap()),
    );
    let events = replay_client(
        "S: 220 foo.com Simple Mail Transfer Service Ready
C: EHLO bar.com
S: 250-foo.com greets bar.com
S: 250-8BITMIME
S: 250-SIZE
S: 250-DSN
S: 250 HELP
C: MAIL FROM:<Smith@bar.com> SIZE=37
S: 250 OK
C: RCPT TO:<Jones@foo.com>
S: 250 OK
C: RCPT TO:<Green@foo.com>
S: 550 No such user here
C: RCPT TO:<Brown@foo.com>
S: 250 OK
C: DATA
S: 354 Start mail input; end with <CRLF>.<CRLF>
C: Blah blah blah...
C: ...etc. etc. etc.
C: .
S: 250 OK
C: QUIT
S: 221 foo.com Service closing transmission channel",
        vec![(env, b"Blah blah blah...\r\n..etc. etc. etc.\r\n".to_vec())],
    );
    let report = events
        .iter()
        .find_map(|e| {
            if let ClientEvent::TransactionDone(r) = e {
                Some(r)
            } else {
                None
            }
        })
        .unwrap();
    let statuses: Vec<_> = report.recipients.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Delivered
        ]
    );
    assert!(matches!(
        events.last(),
        Some(ClientEvent::Closed(postern_smtp::ClientCloseReason::Quit))
    ));
}
