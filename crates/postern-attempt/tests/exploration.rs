//! Exhaustive exploration of the delivery attempt: under every outbound policy of
//! [`support::monitor::scenarios`], every sequence of next-hop behaviours up to the bound below is run
//! against a fresh [`postern_attempt::Attempt`], and the monitor checks the rules of docs/security.md on
//! every path.
//!
//! A plain enumerator: a depth-first search over the next hop's choices, replaying each path from the
//! start (the attempt is deterministic, so a path is its list of choices). No model-checking crate is
//! needed: the state space is a tree of a few hundred thousand paths, the attempt does not need to be
//! cloned or hashed, and a failure prints the exact transcript that broke a rule.
//!
//! The next hop's choices, at each point where the attempt waits:
//! - greeting: 220, 554, 421, close, silence (deadline);
//! - EHLO: 250 with STARTTLS and PIPELINING, with STARTTLS, without STARTTLS, 502 (HELO fallback: 250, 550,
//!   close), 421, close, silence;
//! - STARTTLS: 220, 220 with plaintext injected in the same read, 220 with plaintext read ahead before the
//!   handshake, 454, 502, 354, 554, 421, close, silence;
//! - the handshake (the driver's report): verified, untrusted, wrong name, expired, pin mismatch, failed,
//!   failed on an untrusted chain, failed on a name, failed on a DANE mismatch;
//! - EHLO inside TLS: every subset of STARTTLS, SIZE 10 (smaller than the message), PIPELINING and
//!   REQUIRETLS, 502 (HELO), 421, close, silence;
//! - MAIL, RCPT, DATA and the end of data: 2xx (354), 4xx, 5xx, close (421 and silence for MAIL and the end
//!   of data);
//! - QUIT: 221, close.
//!
//! Bound: the choices above, one recipient, and [`MAX_STEPS`] replies per path. The tree is finite (every
//! path ends well before [`MAX_STEPS`], which is checked: a path that does not end fails the test), so within
//! these choices the exploration is complete.

#[path = "support/monitor.rs"]
mod monitor;

use std::time::{Duration, Instant};

use monitor::{Cmd, Monitor, Scenario, attempt, drain, handshakes, scenarios};
use postern_attempt::HandshakeResult;

/// The most replies on one path.
const MAX_STEPS: usize = 64;

/// What the next hop does.
#[derive(Debug, Clone)]
enum Move {
    /// Send these bytes (a reply with this code).
    Reply(u16, Vec<u8>),
    /// `220` to STARTTLS, with bytes injected after it in the same read.
    Injected(Vec<u8>),
    /// `220` to STARTTLS, then bytes the driver read ahead and holds when the handshake starts.
    ReadAhead,
    /// Close the connection.
    Close,
    /// Say nothing until the deadline.
    Silence,
}

fn reply(code: u16, text: &str) -> Move {
    Move::Reply(code, format!("{text}\r\n").into_bytes())
}

fn ehlo(caps: &[&str]) -> Move {
    let mut text = String::from("250");
    if caps.is_empty() {
        text.push_str(" mx.example.org\r\n");
    } else {
        text.push_str("-mx.example.org\r\n");
        for (i, cap) in caps.iter().enumerate() {
            let sep = if i + 1 == caps.len() { ' ' } else { '-' };
            text.push_str(&format!("250{sep}{cap}\r\n"));
        }
    }
    Move::Reply(250, text.into_bytes())
}

/// The next hop's possible moves when it owes a reply to `cmd`.
fn moves(cmd: Cmd, tls: bool) -> Vec<Move> {
    use Move::{Close, Silence};
    match cmd {
        Cmd::Greeting => vec![
            reply(220, "220 mx.example.org ESMTP"),
            reply(554, "554 5.3.2 not now"),
            reply(421, "421 4.3.2 busy"),
            Close,
            Silence,
        ],
        Cmd::Ehlo if !tls => vec![
            ehlo(&["PIPELINING", "STARTTLS"]),
            ehlo(&["STARTTLS"]),
            ehlo(&["PIPELINING"]),
            reply(502, "502 5.5.2 Error: command not recognized"),
            reply(421, "421 4.3.2 busy"),
            Close,
            Silence,
        ],
        Cmd::Ehlo => {
            // Index 0 is PIPELINING alone; every subset of the four follows.
            let mut all: Vec<Move> = (0..16u8)
                .map(|i| {
                    let mask = i ^ 0b0100;
                    let caps: Vec<&str> = [
                        (0b0001, "STARTTLS"),
                        (0b0010, "SIZE 10"),
                        (0b0100, "PIPELINING"),
                        (0b1000, "REQUIRETLS"),
                    ]
                    .iter()
                    .filter(|(bit, _)| mask & bit != 0)
                    .map(|(_, cap)| *cap)
                    .collect();
                    ehlo(&caps)
                })
                .collect();
            all.extend([
                reply(502, "502 5.5.2 Error: command not recognized"),
                reply(421, "421 4.3.2 busy"),
                Close,
                Silence,
            ]);
            all
        }
        Cmd::Helo => vec![
            reply(250, "250 mx.example.org"),
            reply(550, "550 5.5.1 no"),
            Close,
        ],
        Cmd::StartTls => vec![
            reply(220, "220 2.0.0 Ready to start TLS"),
            Move::Injected(b"250-mx.example.org\r\n250 PIPELINING\r\n".to_vec()),
            Move::ReadAhead,
            reply(454, "454 4.7.0 TLS not available"),
            reply(502, "502 5.5.2 Error: command not recognized"),
            reply(354, "354 odd"),
            reply(554, "554 5.7.0 no TLS today"),
            reply(421, "421 4.3.2 busy"),
            Close,
            Silence,
        ],
        Cmd::Mail => vec![
            reply(250, "250 2.1.0 Ok"),
            reply(451, "451 4.3.0 try later"),
            reply(550, "550 5.7.1 refused"),
            reply(421, "421 4.3.2 busy"),
            Close,
            Silence,
        ],
        Cmd::Rcpt => vec![
            reply(250, "250 2.1.5 Ok"),
            reply(450, "450 4.2.0 busy"),
            reply(550, "550 5.1.1 unknown"),
            Close,
        ],
        Cmd::Data => vec![
            reply(354, "354 go ahead"),
            reply(451, "451 4.3.0 try later"),
            reply(554, "554 5.5.1 no valid recipients"),
            Close,
        ],
        Cmd::DataEnd => vec![
            reply(250, "250 2.0.0 Ok: queued"),
            reply(451, "451 4.3.0 try later"),
            reply(554, "554 5.6.0 refused"),
            Close,
            Silence,
        ],
        Cmd::Rset => vec![reply(250, "250 2.0.0 Ok"), Close],
        Cmd::Quit => vec![reply(221, "221 2.0.0 Bye"), Close],
        Cmd::Other => vec![reply(500, "500 5.5.2 what"), Close],
    }
}

/// Replays a path's choices, then takes the first option at each new choice point and records how many
/// options each point had.
#[derive(Debug, Default)]
struct Chooser {
    path: Vec<usize>,
    counts: Vec<usize>,
    pos: usize,
}

impl Chooser {
    fn choose(&mut self, options: usize) -> usize {
        let choice = if self.pos < self.path.len() {
            self.path[self.pos]
        } else {
            self.path.push(0);
            0
        };
        self.counts.truncate(self.pos);
        self.counts.push(options);
        self.pos += 1;
        choice
    }

    /// The next path in depth-first order, if any.
    fn advance(&mut self) -> bool {
        self.path.truncate(self.pos);
        while let Some(last) = self.path.pop() {
            let options = self.counts[self.path.len()];
            if last + 1 < options {
                self.path.push(last + 1);
                self.pos = 0;
                return true;
            }
        }
        false
    }
}

/// Runs one path; `Err` names the broken rule, with what the attempt sent.
fn run(scenario: &Scenario, chooser: &mut Chooser) -> Result<(), String> {
    let mut m = Monitor::new(scenario);
    steps(scenario, chooser, &mut m).map_err(|broken| {
        format!(
            "{broken}\n--- the attempt sent:\n{}",
            String::from_utf8_lossy(&m.transcript)
        )
    })
}

fn steps(scenario: &Scenario, chooser: &mut Chooser, m: &mut Monitor) -> Result<(), String> {
    let mut now = Instant::now();
    let mut a = attempt(scenario, now);
    let handshake_options = handshakes();
    let mut read_ahead = false;
    for _ in 0..MAX_STEPS {
        let done = drain(&mut a, m, now, |m| {
            let held = if std::mem::take(&mut read_ahead) {
                m.on_input(None, None, 0);
                b"250 2.1.0 injected\r\n".to_vec()
            } else {
                Vec::new()
            };
            let k = chooser.choose(handshake_options.len());
            (handshake_options[k].clone(), held)
        })?;
        if done.is_some() {
            return Ok(());
        }
        let deadline = a
            .poll_timeout()
            .ok_or("the attempt waits for the next hop without a deadline")?;
        let cmd = *m
            .pending
            .front()
            .ok_or("the attempt waits but the next hop owes no reply")?;
        let options = moves(cmd, m.tls());
        let k = chooser.choose(options.len());
        let bytes = match options[k].clone() {
            Move::Reply(code, bytes) => {
                let cmd = m.answer();
                m.on_input(cmd, Some(code), bytes.len());
                if code == 421 {
                    m.lost = true;
                }
                bytes
            }
            Move::Injected(extra) => {
                let cmd = m.answer();
                let mut bytes = b"220 2.0.0 Ready to start TLS\r\n".to_vec();
                m.on_input(cmd, Some(220), bytes.len());
                bytes.extend_from_slice(&extra);
                bytes
            }
            Move::ReadAhead => {
                let cmd = m.answer();
                read_ahead = true;
                let bytes = b"220 2.0.0 Ready to start TLS\r\n".to_vec();
                m.on_input(cmd, Some(220), bytes.len());
                bytes
            }
            Move::Close => {
                m.lost = true;
                a.handle_eof();
                continue;
            }
            Move::Silence => {
                m.lost = true;
                now = deadline.max(now) + Duration::from_millis(1);
                a.handle_timeout(now);
                continue;
            }
        };
        let mut offered = &bytes[..];
        for _ in 0..16 {
            if offered.is_empty() {
                break;
            }
            let taken = a.handle_input(offered);
            offered = &offered[taken..];
            if !offered.is_empty() && drain(&mut a, m, now, |_| unreachable_handshake())?.is_some()
            {
                return Ok(());
            }
        }
    }
    Err(format!(
        "the attempt did not end within {MAX_STEPS} replies"
    ))
}

fn unreachable_handshake() -> (HandshakeResult, Vec<u8>) {
    (HandshakeResult::Failed { certificate: None }, Vec::new())
}

#[test]
fn every_next_hop_behaviour_under_every_mode() {
    let started = Instant::now();
    let mut total_paths = 0usize;
    let mut total_points = 0usize;
    for scenario in scenarios() {
        let mut chooser = Chooser::default();
        let mut paths = 0usize;
        let mut points = 0usize;
        loop {
            chooser.pos = 0;
            if let Err(broken) = run(&scenario, &mut chooser) {
                panic!(
                    "{}: {broken}\nchoices: {:?}",
                    scenario.name,
                    &chooser.path[..chooser.pos]
                );
            }
            paths += 1;
            points += chooser.pos;
            if !chooser.advance() {
                break;
            }
        }
        println!(
            "{:<40} {paths:>7} paths, {points:>8} choice points",
            scenario.name
        );
        total_paths += paths;
        total_points += points;
    }
    println!(
        "explored {total_paths} paths ({total_points} choice points) under {} policies, one recipient, \
         at most {MAX_STEPS} replies per path, in {:.1?}",
        scenarios().len(),
        started.elapsed()
    );
    assert!(total_paths > 1000);
}
