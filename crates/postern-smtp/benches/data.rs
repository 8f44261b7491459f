//! DATA content throughput: postern's receiver (end detection + dot-unstuffing + bare line ending checks), side by
//! side with smtp-proto's `DataReceiver` and with the physical limit (one `memmem` search for CRLF "." CRLF and one
//! copy) on the same wire bytes; and the client-side dot-stuffer.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_smtp::data::{DataLimits, DataReceiver, DotStuffer, dot_stuff};

/// A deterministic, realistic message of about `size` octets: a header block, then text lines of 60 to 78
/// characters, about one in forty starting with "." (which the wire form stuffs).
fn message(size: usize) -> Vec<u8> {
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

fn data_receive(c: &mut Criterion) {
    for (name, size) in [("10KB", 10 * 1024), ("1MB", 1024 * 1024)] {
        let wire = dot_stuff(&message(size));
        let mut group = c.benchmark_group(format!("data_receive/{name}"));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let mut out = Vec::with_capacity(wire.len());
        group.bench_function("postern", |b| {
            b.iter(|| {
                out.clear();
                let mut rx = DataReceiver::new(DataLimits::default());
                let step = rx.feed(black_box(&wire), &mut out);
                assert!(step.end.is_some() && step.consumed == wire.len());
                black_box(&out);
            })
        });
        group.bench_function("smtp-proto", |b| {
            b.iter(|| {
                out.clear();
                let mut rx = smtp_proto::request::receiver::DataReceiver::new();
                let mut bytes = black_box(&wire).iter();
                assert!(rx.ingest(&mut bytes, &mut out));
                assert!(bytes.as_slice().is_empty());
                black_box(&out);
            })
        });
        group.bench_function("memchr+memcpy baseline", |b| {
            b.iter(|| {
                out.clear();
                let wire = black_box(&wire);
                // The message ends with the terminator, so the search is over the whole input.
                let pos = memchr::memmem::find(wire, b"\r\n.\r\n").expect("terminated");
                out.extend_from_slice(&wire[..pos + 2]);
                black_box(&out);
            })
        });
        group.finish();
    }
}

fn dot_stuffing(c: &mut Criterion) {
    for (name, size) in [("10KB", 10 * 1024), ("1MB", 1024 * 1024)] {
        let msg = message(size);
        let mut group = c.benchmark_group(format!("dot_stuff/{name}"));
        group.throughput(Throughput::Bytes(msg.len() as u64));
        let mut out = Vec::with_capacity(msg.len() + msg.len() / 32 + 8);
        group.bench_function("postern DotStuffer", |b| {
            b.iter(|| {
                out.clear();
                let mut s = DotStuffer::new();
                s.feed(black_box(&msg), &mut out);
                s.finish(&mut out);
                black_box(&out);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, data_receive, dot_stuffing);
criterion_main!(benches);
