//! `postern-loadgen`: an SMTP load generator for benchmarks, loopback only.
//!
//! Postfix's `smtp-source` speaks no TLS; this generator drives any SMTP server with plaintext or STARTTLS
//! sessions (TLS 1.2 or 1.3, full or resumed handshakes, with or without a client certificate) and reports
//! messages per second, latency percentiles per message and per connection setup, and errors by reply code,
//! as text or JSON.
//!
//! # Design
//!
//! - SMTP is spoken by the sans-IO [`postern_smtp::ClientSession`] engine, driven by postern-tokio's
//!   [`ClientConnection`](postern_tokio::client::ClientConnection) (`conn`), upgraded with tokio-rustls on
//!   STARTTLS. The engine pipelines MAIL, RCPT and DATA when the server
//!   offers PIPELINING, as real MTAs do.
//! - TLS uses rustls with the aws-lc-rs provider. By default any server certificate is accepted, but the
//!   handshake signatures are verified (`tls::BenchVerifier`), so the server performs every
//!   cryptographic step of a real handshake; `--ca` verifies the chain and name too. `--server-key rsa|ecdsa`
//!   offers only that key type's signature schemes, so a server holding both certificates presents the one
//!   asked for. `--resume` shares one client session cache among all connections; without it resumption is
//!   disabled.
//! - `send`: `--connections` workers claim batches of `--per-connection` messages from a shared counter, so
//!   exactly `--messages` are attempted unless `--duration` ends the run first. Both are hard caps: every
//!   network wait is bounded by the run's deadline.
//! - `idle`: opens `--connections` sessions, prints `idle-ready N` on standard error once all are idle, holds
//!   them for `--hold`, then QUITs (memory-per-idle-connection measurements).
//! - `sink`: a discard SMTP server (the same engine, server side, driven by postern-tokio's
//!   [`ServerConnection`](postern_tokio::server::ServerConnection)) to relay to, with optional STARTTLS.
//! - Targets and listen addresses must be loopback addresses; anything else is refused.
//!
//! # Example
//!
//! ```text
//! postern-loadgen send --target 127.0.0.1:2525 --connections 20 --messages 5000 --per-connection 10 \
//!     --starttls --tls-version 1.3 --resume --size 4096 --duration 60s --json
//! postern-loadgen idle --target 127.0.0.1:2525 --connections 10000 --hold 20s --duration 5m
//! postern-loadgen sink --listen 127.0.0.1:2526 --cert sink.crt --key sink.key
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

mod conn;
mod idle;
#[cfg(test)]
mod loopback_tests;
mod options;
mod send;
mod sink;
mod stats;
mod tls;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;

use crate::conn::{Target, TlsSetup};
use crate::options::{Cli, ClientArgs, Mode, SinkArgs};
use crate::stats::{Report, Summary, Tally};

fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        b.worker_threads(t);
    }
    b.enable_all().build()
}

fn target(args: &ClientArgs, addr: std::net::SocketAddr) -> Result<Target, String> {
    let tls = if args.starttls {
        let config = tls::client_config(args).map_err(|e| e.to_string())?;
        let server_name = tls::server_name(&args.server_name).map_err(|e| e.to_string())?;
        Some(TlsSetup {
            config,
            server_name,
        })
    } else {
        None
    };
    Ok(Target {
        addr,
        ehlo: args.ehlo.as_str().into(),
        tls,
        deadline: tokio::time::Instant::now() + args.duration,
    })
}

#[allow(clippy::too_many_arguments)]
fn report(
    mode: &'static str,
    args: &ClientArgs,
    requested: u64,
    not_sent: u64,
    mut tally: Tally,
    elapsed: std::time::Duration,
    hit_cap: bool,
) -> Report {
    let secs = elapsed.as_secs_f64();
    Report {
        mode,
        target: args.target.clone(),
        starttls: args.starttls,
        connections: args.connections,
        messages_requested: requested,
        messages_delivered: tally.delivered,
        messages_failed: tally.failed,
        messages_not_sent: not_sent,
        connections_ok: tally.connections,
        connections_failed: tally.connection_failures,
        tls_resumed: tally.resumed,
        tls_full: tally.full,
        elapsed_s: secs,
        hit_duration_cap: hit_cap,
        messages_per_s: if secs > 0.0 {
            tally.delivered as f64 / secs
        } else {
            0.0
        },
        message_latency_us: Summary::of(&mut tally.message_us),
        setup_latency_us: Summary::of(&mut tally.setup_us),
        errors: std::mem::take(&mut tally.errors),
    }
}

fn print(report: &Report, json: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("postern-loadgen: json: {e}"),
        }
    } else {
        print!("{report}");
    }
}

fn run_send(args: options::SendArgs) -> Result<Report, String> {
    let addr = args.validate().map_err(|e| e.to_string())?;
    let rt = runtime(args.client.threads).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let target = target(&args.client, addr)?;
        let envelope = send::Job::envelope(&args.from, &args.to)?;
        let start = Instant::now();
        let job = Arc::new(send::Job {
            target: target.clone(),
            remaining: AtomicU64::new(args.messages),
            per_connection: args.per_connection,
            envelope,
            message: send::make_message(args.size, &args.from, &args.to),
            record_after: start + args.warmup,
        });
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.client.connections {
            tasks.spawn(send::worker(job.clone()));
        }
        let mut tally = Tally::default();
        while let Some(t) = tasks.join_next().await {
            match t {
                Ok(t) => tally.merge(t),
                Err(e) => tally.error(format!("task: {e}")),
            }
        }
        let elapsed = start.elapsed();
        let not_sent = job.remaining.load(Ordering::Relaxed);
        let hit_cap = tokio::time::Instant::now() >= target.deadline;
        Ok(report(
            "send",
            &args.client,
            args.messages,
            not_sent,
            tally,
            elapsed,
            hit_cap,
        ))
    })
}

fn run_idle(args: options::IdleArgs) -> Result<Report, String> {
    let addr = args.client.validate().map_err(|e| e.to_string())?;
    let rt = runtime(args.client.threads).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let target = target(&args.client, addr)?;
        let start = Instant::now();
        let tally = idle::run(
            target.clone(),
            args.client.connections,
            args.ramp,
            args.hold,
        )
        .await;
        let hit_cap = tokio::time::Instant::now() >= target.deadline;
        Ok(report(
            "idle",
            &args.client,
            0,
            0,
            tally,
            start.elapsed(),
            hit_cap,
        ))
    })
}

fn run_sink(args: SinkArgs) -> Result<(), String> {
    let addr = options::loopback_addr(&args.listen).map_err(|e| e.to_string())?;
    let cert = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let endpoint = sink::endpoint(&args.hostname, cert)?;
    let rt = runtime(args.threads).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        eprintln!("sink-ready {addr}");
        let counters = Arc::new(sink::SinkCounters::default());
        let serve = sink::serve(listener, endpoint, counters.clone());
        let stop = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    },
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        tokio::select! {
            r = serve => r.map_err(|e| e.to_string())?,
            () = stop => {}
            () = tokio::time::sleep(args.duration) => {}
        }
        eprintln!(
            "sink: {} connections, {} TLS, {} messages, {} octets",
            counters.connections.load(Ordering::Relaxed),
            counters.tls.load(Ordering::Relaxed),
            counters.messages.load(Ordering::Relaxed),
            counters.octets.load(Ordering::Relaxed)
        );
        Ok(())
    })
}

/// Exit code when the watchdog ends a run that outlived its duration cap.
const EXIT_WATCHDOG: i32 = 3;

/// Enforce the duration cap even if the runtime were starved: a plain thread ends the process a little after
/// the cap (the runtime's own deadline normally ends the run first, with a report).
fn watchdog(cap: std::time::Duration) {
    let grace = std::time::Duration::from_secs(15);
    std::thread::spawn(move || {
        std::thread::sleep(cap + grace);
        eprintln!("postern-loadgen: duration cap exceeded by {grace:?}: exiting");
        std::process::exit(EXIT_WATCHDOG);
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Mode::Send(a) => watchdog(a.client.duration),
        Mode::Idle(a) => watchdog(a.client.duration),
        Mode::Sink(a) => watchdog(a.duration),
    }
    let result = match cli.command {
        Mode::Send(args) => {
            let json = args.client.json;
            run_send(args).map(|r| print(&r, json))
        }
        Mode::Idle(args) => {
            let json = args.client.json;
            run_idle(args).map(|r| print(&r, json))
        }
        Mode::Sink(args) => run_sink(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
