//! The comparisons of `benches/data.rs` and `benches/command.rs`, timed as the best of many repetitions instead
//! of a statistical summary: on a busy machine the fastest run is the one least disturbed by other work, so
//! ratios between the contenders stay meaningful. Prints one line per input.

use std::hint::black_box;
use std::time::{Duration, Instant};

use postern_smtp::Command;
use postern_smtp::data::{DataLimits, DataReceiver, dot_stuff};

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
        let postern = best(rounds, || {
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
        println!(
            "data_receive/{name}: postern {:.2} GB/s, smtp-proto {:.2} GB/s, memchr+memcpy baseline {:.2} GB/s; \
             postern/smtp-proto {:.2}x, postern/baseline {:.2}x",
            gbps(postern),
            gbps(smtp_proto),
            gbps(baseline),
            smtp_proto.as_secs_f64() / postern.as_secs_f64(),
            baseline.as_secs_f64() / postern.as_secs_f64(),
        );
    }
    let wire: Vec<u8> = MIX.concat();
    let postern = best(rounds, || {
        let mut rest = black_box(wire.as_slice());
        while let Some(lf) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(lf + 1);
            black_box(Command::parse(line).expect("valid command"));
            rest = tail;
        }
    });
    let smtp_proto = best(rounds, || {
        let mut bytes = black_box(wire.as_slice()).iter();
        while !bytes.as_slice().is_empty() {
            black_box(smtp_proto::Request::parse(&mut bytes).expect("valid command"));
        }
    });
    let mcmd = |d: Duration| MIX.len() as f64 / d.as_secs_f64() / 1e6;
    println!(
        "command_parse/transaction_mix: postern {:.2} Mcmd/s, smtp-proto {:.2} Mcmd/s; postern/smtp-proto {:.2}x",
        mcmd(postern),
        mcmd(smtp_proto),
        smtp_proto.as_secs_f64() / postern.as_secs_f64(),
    );
}
