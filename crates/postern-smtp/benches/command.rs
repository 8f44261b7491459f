//! Command parsing over a realistic transaction mix, side by side with smtp-proto's request parser on the same
//! bytes: postern's borrowed `CommandRef::parse` (validated, typed, strings borrowed from the line, as
//! smtp-proto's result is) and the owned `Command::parse` (the same plus copies into owned strings). Both include finding the end of each line; throughput is reported in commands per second.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_smtp::{Command, CommandRef};

mod common;
use common::MIX;

fn command_parse(c: &mut Criterion) {
    let wire: Vec<u8> = MIX.concat();
    let mut group = c.benchmark_group("command_parse/transaction_mix");
    group.throughput(Throughput::Elements(MIX.len() as u64));
    group.bench_function("postern CommandRef (borrowed)", |b| {
        b.iter(|| {
            let mut rest = black_box(wire.as_slice());
            let mut n = 0;
            while let Some(lf) = memchr::memchr(b'\n', rest) {
                let (line, tail) = rest.split_at(lf + 1);
                black_box(CommandRef::parse(line).expect("valid command"));
                rest = tail;
                n += 1;
            }
            assert_eq!(n, MIX.len());
        })
    });
    group.bench_function("postern Command (owned)", |b| {
        b.iter(|| {
            let mut rest = black_box(wire.as_slice());
            let mut n = 0;
            while let Some(lf) = memchr::memchr(b'\n', rest) {
                let (line, tail) = rest.split_at(lf + 1);
                black_box(Command::parse(line).expect("valid command"));
                rest = tail;
                n += 1;
            }
            assert_eq!(n, MIX.len());
        })
    });
    group.bench_function("smtp-proto", |b| {
        b.iter(|| {
            let mut bytes = black_box(wire.as_slice()).iter();
            let mut n = 0;
            while !bytes.as_slice().is_empty() {
                black_box(smtp_proto::Request::parse(&mut bytes).expect("valid command"));
                n += 1;
            }
            assert_eq!(n, MIX.len());
        })
    });
    group.finish();
}

criterion_group!(benches, command_parse);
criterion_main!(benches);
