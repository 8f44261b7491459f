//! Inputs shared by the benches.

// Each bench uses a part of this module.
#![allow(dead_code)]

/// A deterministic, realistic message of about `size` octets: a header block, then text lines of 60 to 78
/// characters, about one in forty starting with "." (which the wire form stuffs).
pub(crate) fn message(size: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "relay",
        "message",
        "delivery",
        "of",
        "and",
        "postern",
        "transport",
        "security",
        "a",
        "to",
        "certificate",
        "policy",
        "in",
        "mailbox",
        "is",
        "domain",
        "for",
        "server",
        "with",
        "client",
        "queue",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut m = b"Received: from client.example.org (client.example.org [192.0.2.7])\r\n\
        \tby mx.example.net with ESMTPS; Sat, 28 Nov 2026 03:00:00 +0000\r\n\
        From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: quarterly report\r\n\
        Message-ID: <20261128030000.1234@client.example.org>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\r\n"
        .to_vec();
    while m.len() < size {
        let target = 60 + (next() % 19) as usize;
        let mut line = Vec::with_capacity(80);
        if next() % 40 == 0 {
            line.extend_from_slice(b".");
        }
        while line.len() < target {
            if !line.is_empty() && line != b"." {
                line.push(b' ');
            }
            line.extend_from_slice(WORDS[(next() % WORDS.len() as u64) as usize].as_bytes());
        }
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// One transaction as a pipelining client sends it, plus the session commands around it.
pub(crate) const MIX: &[&[u8]] = &[
    b"EHLO client.example.org\r\n",
    b"MAIL FROM:<alice.sender@example.org> SIZE=48213 BODY=8BITMIME\r\n",
    b"RCPT TO:<bob@example.net>\r\n",
    b"RCPT TO:<carol.recipient@mail.example.net>\r\n",
    b"RCPT TO:<dave+tag@example.com>\r\n",
    b"DATA\r\n",
    b"RSET\r\n",
    b"MAIL FROM:<> SIZE=1024\r\n",
    b"RCPT TO:<postmaster@example.net>\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
];
