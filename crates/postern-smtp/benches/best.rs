//! The comparisons of `benches/data.rs` and `benches/command.rs`, timed as the best of many repetitions instead
//! of a statistical summary: on a busy machine the fastest run is the one least disturbed by other work, so
//! ratios between the contenders stay meaningful. Prints one line per input.

use std::hint::black_box;
use std::time::{Duration, Instant};

use postern_smtp::data::{DataLimits, DataReceiver, dot_stuff};
use postern_smtp::{Command, CommandRef};

mod common;
use common::{MIX, message};

/// Fastest time of one call of `f`, over `rounds` rounds of 10 calls.
fn best(rounds: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..10 {
                f();
            }
            t.elapsed() / 10
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test --benches` run passes nothing and only smoke-tests.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        2000
    } else {
        2
    };
    for (name, size) in [("10KB", 10 * 1024), ("1MB", 1024 * 1024)] {
        let wire = dot_stuff(&message(size));
        let mut out = Vec::with_capacity(wire.len());
        let gbps = |d: Duration| wire.len() as f64 / d.as_secs_f64() / 1e9;
        let spans = best(rounds, || {
            let mut rx = DataReceiver::new(DataLimits::default());
            let mut len = 0;
            assert!(
                rx.feed_spans(black_box(&wire), |s| len += black_box(s).len())
                    .end
                    .is_some()
            );
            black_box(len);
        });
        let copy = best(rounds, || {
            out.clear();
            let mut rx = DataReceiver::new(DataLimits::default());
            assert!(rx.feed(black_box(&wire), &mut out).end.is_some());
        });
        let smtp_proto = best(rounds, || {
            out.clear();
            let mut rx = smtp_proto::request::receiver::DataReceiver::new();
            assert!(rx.ingest(&mut black_box(&wire).iter(), &mut out));
        });
        let baseline = best(rounds, || {
            out.clear();
            let wire = black_box(&wire);
            let pos = memchr::memmem::find(wire, b"\r\n.\r\n").expect("terminated");
            out.extend_from_slice(&wire[..pos + 2]);
        });
        let r = |d: Duration, by: Duration| by.as_secs_f64() / d.as_secs_f64();
        println!(
            "data_receive/{name}: postern feed_spans {:.2} GB/s, postern feed {:.2} GB/s, smtp-proto {:.2} GB/s, \
             memchr+memcpy baseline {:.2} GB/s; feed_spans/smtp-proto {:.2}x, feed/smtp-proto {:.2}x, \
             feed_spans/baseline {:.2}x, feed/baseline {:.2}x",
            gbps(spans),
            gbps(copy),
            gbps(smtp_proto),
            gbps(baseline),
            r(spans, smtp_proto),
            r(copy, smtp_proto),
            r(spans, baseline),
            r(copy, baseline),
        );
    }
    let wire: Vec<u8> = MIX.concat();
    let lines = |f: &mut dyn FnMut(&[u8])| {
        let mut rest = black_box(wire.as_slice());
        while let Some(lf) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(lf + 1);
            f(line);
            rest = tail;
        }
    };
    let borrowed = best(rounds, || {
        lines(&mut |l| {
            black_box(CommandRef::parse(l).expect("valid command"));
        })
    });
    let owned = best(rounds, || {
        lines(&mut |l| {
            black_box(Command::parse(l).expect("valid command"));
        })
    });
    let smtp_proto = best(rounds, || {
        let mut bytes = black_box(wire.as_slice()).iter();
        while !bytes.as_slice().is_empty() {
            black_box(smtp_proto::Request::parse(&mut bytes).expect("valid command"));
        }
    });
    let mcmd = |d: Duration| MIX.len() as f64 / d.as_secs_f64() / 1e6;
    println!(
        "command_parse/transaction_mix: postern CommandRef {:.2} Mcmd/s, postern Command {:.2} Mcmd/s, \
         smtp-proto {:.2} Mcmd/s; CommandRef/smtp-proto {:.2}x, Command/smtp-proto {:.2}x",
        mcmd(borrowed),
        mcmd(owned),
        mcmd(smtp_proto),
        smtp_proto.as_secs_f64() / borrowed.as_secs_f64(),
        smtp_proto.as_secs_f64() / owned.as_secs_f64(),
    );
}
