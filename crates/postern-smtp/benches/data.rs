//! DATA content throughput: postern's receiver (end detection + dot-unstuffing + bare line ending checks), both
//! copying into a buffer (`feed`) and zero-copy (`feed_spans`, content handed over as borrowed spans), side by
//! side with smtp-proto's `DataReceiver` and with the physical limit (one `memmem` search for CRLF "." CRLF and one
//! copy) on the same wire bytes; and the client-side dot-stuffer.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_smtp::data::{DataLimits, DataReceiver, DotStuffer, dot_stuff};

mod common;
use common::message;

fn data_receive(c: &mut Criterion) {
    for (name, size) in [("10KB", 10 * 1024), ("1MB", 1024 * 1024)] {
        let wire = dot_stuff(&message(size));
        let mut group = c.benchmark_group(format!("data_receive/{name}"));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let mut out = Vec::with_capacity(wire.len());
        group.bench_function("postern feed (copy)", |b| {
            b.iter(|| {
                out.clear();
                let mut rx = DataReceiver::new(DataLimits::default());
                let step = rx.feed(black_box(&wire), &mut out);
                assert!(step.end.is_some() && step.consumed == wire.len());
                black_box(&out);
            })
        });
        group.bench_function("postern feed_spans (zero-copy)", |b| {
            b.iter(|| {
                let mut rx = DataReceiver::new(DataLimits::default());
                let mut len = 0;
                let step = rx.feed_spans(black_box(&wire), |span| len += black_box(span).len());
                assert!(step.end.is_some() && step.consumed == wire.len());
                black_box(len);
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
