//! SMTP smuggling (CVE-2023-51764/5/6): every end-of-data lookalike, followed by a smuggled second
//! transaction, yields at most the one intended message and never the smuggled one — in `normalize` and
//! `reject` modes, with the attack in one read and fed one byte per read. And the converse: a real
//! `CRLF . CRLF` ends the data even when a bare CR or LF comes right before it (RFC 5321 4.1.1.4).

mod common;

use common::Harness;
use postern_smtp::{BareLineEndings, ServerConfig, ServerEvent};

const LOOKALIKES: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n\0.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.\0\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
];

const SMUGGLED: &[u8] = b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: admin@bank.example\r\n\r\nsmuggled\r\n.\r\n";

fn attack(fake_end: &[u8]) -> Vec<u8> {
    [
        b"Subject: real\r\n\r\nbody".as_slice(),
        fake_end,
        SMUGGLED,
        b"\r\n.\r\nQUIT\r\n",
    ]
    .concat()
}

fn run(mode: BareLineEndings, fake_end: &[u8], bytewise: bool) -> Harness {
    let mut config = ServerConfig::new("mx.example.org");
    config.data.bare_line_endings = mode;
    let mut h = Harness::new(config);
    h.feed_str("EHLO client.example\r\n");
    let r = h.feed_str("MAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
    assert!(
        r.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
        "{r}"
    );
    let payload = attack(fake_end);
    if bytewise {
        for b in &payload {
            h.feed(std::slice::from_ref(b));
        }
    } else {
        h.feed(&payload);
    }
    h
}

fn check(h: &Harness, mode: BareLineEndings, fake_end: &[u8]) {
    let label = format!("{mode:?} {:?}", String::from_utf8_lossy(fake_end));
    let ends = h.count(|e| matches!(e, ServerEvent::MessageEnd { .. }));
    assert!(ends <= 1, "{label}: {ends} messages");
    // The smuggled transaction never produces a message: no stored message starts with its headers, and no
    // message was accepted for its recipient.
    for m in &h.messages {
        assert!(
            m.starts_with(b"Subject: real\r\n"),
            "{label}: stored {:?}",
            String::from_utf8_lossy(m)
        );
    }
    let mut smuggled_rcpt = false;
    for e in &h.events {
        if let ServerEvent::Rcpt { to, .. } = e {
            smuggled_rcpt |= to.to_string().contains("victim");
        }
        if matches!(e, ServerEvent::MessageEnd { .. }) && smuggled_rcpt {
            panic!("{label}: smuggled message completed");
        }
    }
    // Stronger: the lookalike never ended the data, so the smuggled MAIL was never even parsed as a command.
    assert_eq!(
        h.count(|e| matches!(e, ServerEvent::Mail { .. })),
        1,
        "{label}: smuggled MAIL parsed"
    );
    if mode == BareLineEndings::Reject && fake_end != b"\r\n\0.\r\n" && fake_end != b"\r\n.\0\r\n" {
        // Every lookalike but the NUL ones holds a bare CR or LF: the message is refused after its real end.
        assert!(h.messages.is_empty(), "{label}: accepted in reject mode");
    }
}

#[test]
fn lookalikes_in_one_read() {
    for mode in [BareLineEndings::Normalize, BareLineEndings::Reject] {
        for end in LOOKALIKES {
            let h = run(mode, end, false);
            check(&h, mode, end);
        }
    }
}

#[test]
fn lookalikes_bytewise() {
    for mode in [BareLineEndings::Normalize, BareLineEndings::Reject] {
        for end in LOOKALIKES {
            let h = run(mode, end, true);
            check(&h, mode, end);
        }
    }
}

/// In normalize mode the lookalike stays inside the one message, which ends at the real CRLF.CRLF.
#[test]
fn normalize_keeps_lookalike_inside_message() {
    let h = run(BareLineEndings::Normalize, b"\n.\n", false);
    assert_eq!(h.messages.len(), 1);
    let m = String::from_utf8_lossy(&h.messages[0]).into_owned();
    assert!(m.contains("MAIL FROM:<admin@bank.example>"), "{m}");
    // The smuggled payload's own CRLF.CRLF is the real end of the one message; what follows is junk commands.
    assert!(m.ends_with("\r\nsmuggled\r\n"), "{m}");
    let wire = h.wire_str();
    assert_eq!(wire.matches("250 2.0.0 Ok: queued").count(), 1, "{wire}");
    assert!(wire.ends_with("221 2.0.0 Bye\r\n"), "{wire}");
}

#[test]
fn reject_mode_refuses_bare_lf() {
    let h = run(BareLineEndings::Reject, b"\n.\n", false);
    assert!(h.messages.is_empty());
    assert!(
        h.wire_str()
            .contains("550 5.5.2 Error: bare <CR> or <LF> received\r\n"),
        "{}",
        h.wire_str()
    );
    assert_eq!(
        h.count(|e| matches!(e, ServerEvent::MessageRejected { .. })),
        1
    );
}

/// The classic smuggling bytes also cannot split a command line: `\r` or `\n` inside a command is not a
/// separator.
#[test]
fn bare_cr_in_command_is_one_bad_line() {
    let mut h = Harness::new(ServerConfig::new("mx.example.org"));
    h.feed_str("EHLO client.example\r\n");
    let out = h.feed_str("MAIL FROM:<a@b.example>\rRCPT TO:<c@d.example>\r\n");
    assert_eq!(out, "500 5.5.2 Error: bare <CR> or <LF> in command\r\n");
    assert_eq!(
        h.count(|e| matches!(e, ServerEvent::Mail { .. } | ServerEvent::Rcpt { .. })),
        0
    );
    let out = h.feed_str("MAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\r\n");
    assert_eq!(out, "500 5.5.2 Error: bare <CR> or <LF> in command\r\n");
}

/// `text\r` then `\r\n.\r\n` holds `CRLF . CRLF`: the data ends there (RFC 5321 4.1.1.4), the bare CR is
/// content under the bare-newline policy, and the commands that follow are answered, pipelined or not.
#[test]
fn bare_cr_or_lf_before_the_real_end() {
    for before in [&b"text\r"[..], b"text\n"] {
        for mode in [BareLineEndings::Normalize, BareLineEndings::Reject] {
            for pipelined in [false, true] {
                let label = format!("{mode:?} {before:?} pipelined={pipelined}");
                let mut config = ServerConfig::new("mx.example.org");
                config.data.bare_line_endings = mode;
                let mut h = Harness::new(config);
                h.feed_str("EHLO client.example\r\n");
                h.feed_str(
                    "MAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n",
                );
                let mut content = [b"Subject: real\r\n\r\n", before, b"\r\n.\r\n"].concat();
                let wire = if pipelined {
                    content.extend_from_slice(b"QUIT\r\n");
                    h.feed(&content)
                } else {
                    let mut w = h.feed(&content);
                    w.push_str(&h.feed_str("QUIT\r\n"));
                    w
                };
                let expected = match mode {
                    BareLineEndings::Reject => "550 5.5.2 Error: bare <CR> or <LF> received\r\n",
                    _ => "250 2.0.0 Ok: queued\r\n",
                };
                assert_eq!(wire, format!("{expected}221 2.0.0 Bye\r\n"), "{label}");
                if mode == BareLineEndings::Normalize {
                    assert_eq!(
                        h.messages,
                        vec![b"Subject: real\r\n\r\ntext\r\n\r\n".to_vec()],
                        "{label}"
                    );
                }
            }
        }
    }
}
