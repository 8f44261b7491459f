//! `send` mode: N workers, each opening connections in turn and sending up to `--per-connection` messages
//! on each, until the message count or the duration cap is reached.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use postern_smtp::{Envelope, ForwardPath, ReversePath};

use crate::conn::{Conn, Handshake, Target};
use crate::stats::{Tally, micros};

/// A message of exactly `size` octets (CRLF line endings, lines of at most 78 octets, no line starting with
/// a dot); a `size` smaller than the header block gives just the header block.
pub(crate) fn make_message(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: postern-loadgen\r\nMessage-ID: <loadgen@localhost>\r\n\r\n"
    )
    .into_bytes();
    const LINE: &[u8] =
        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd";
    // Invariant: `room` is never 1 (a line needs at least its CRLF), so every line ends with CRLF.
    let mut room = size.saturating_sub(m.len());
    if room < 2 {
        return m;
    }
    while room > 0 {
        let len = if room >= LINE.len() + 5 {
            LINE.len()
        } else if room <= LINE.len() + 2 {
            room - 2
        } else {
            // Leave three octets for a last "x" line rather than one that cannot hold a CRLF.
            room - 5
        };
        m.extend_from_slice(&LINE[..len]);
        m.extend_from_slice(b"\r\n");
        room -= len + 2;
    }
    m
}

/// What every worker needs.
#[derive(Debug)]
pub(crate) struct Job {
    /// Where and how to connect.
    pub(crate) target: Target,
    /// Messages not yet claimed by a worker.
    pub(crate) remaining: AtomicU64,
    /// Messages per connection.
    pub(crate) per_connection: u64,
    /// The envelope of every message.
    pub(crate) envelope: Envelope,
    /// The content of every message.
    pub(crate) message: Vec<u8>,
    /// Samples taken before this instant are not recorded (warm-up).
    pub(crate) record_after: Instant,
}

impl Job {
    /// The envelope from the command line.
    pub(crate) fn envelope(from: &str, to: &str) -> Result<Envelope, String> {
        let from = ReversePath::parse(&format!("<{from}>")).map_err(|e| format!("--from: {e}"))?;
        let to = ForwardPath::parse(&format!("<{to}>")).map_err(|e| format!("--to: {e}"))?;
        Ok(Envelope::new(from, [to]))
    }

    /// Claim up to `per_connection` messages.
    fn claim(&self) -> u64 {
        let mut cur = self.remaining.load(Ordering::Relaxed);
        loop {
            let take = cur.min(self.per_connection);
            if take == 0 {
                return 0;
            }
            match self.remaining.compare_exchange_weak(
                cur,
                cur - take,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(now) => cur = now,
            }
        }
    }

    /// Give back messages a worker could not send (the deadline came first).
    fn unclaim(&self, n: u64) {
        self.remaining.fetch_add(n, Ordering::Relaxed);
    }
}

/// One worker: connections one after another until no message is left or the deadline passes.
pub(crate) async fn worker(job: Arc<Job>) -> Tally {
    let mut tally = Tally::default();
    let t = &job.target;
    loop {
        let batch = job.claim();
        if batch == 0 {
            break;
        }
        if tokio::time::Instant::now() >= t.deadline {
            job.unclaim(batch);
            break;
        }
        let started = Instant::now();
        let (mut conn, handshake) =
            match Conn::open(t.addr, &t.ehlo, t.tls.as_ref(), t.deadline).await {
                Ok(c) => c,
                Err(e) => {
                    job.unclaim(batch);
                    if matches!(e, crate::conn::ConnError::Deadline) {
                        break;
                    }
                    tally.connection_failures += 1;
                    tally.error(e.key());
                    // Do not spin on a dead server: the failures are counted, the deadline still applies.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
        let ready = Instant::now();
        tally.connections += 1;
        match handshake {
            Handshake::Full => tally.full += 1,
            Handshake::Resumed => tally.resumed += 1,
            Handshake::None => {}
        }
        if started >= job.record_after {
            tally.setup_us.push(micros(ready - started));
        }
        let mut sent = 0;
        let mut broken = false;
        while sent < batch {
            if tokio::time::Instant::now() >= t.deadline {
                break;
            }
            let begin = Instant::now();
            match conn.send(job.envelope.clone(), job.message.clone()).await {
                Ok(None) => {
                    tally.delivered += 1;
                    if begin >= job.record_after {
                        tally.message_us.push(micros(begin.elapsed()));
                    }
                }
                Ok(Some(code)) => {
                    tally.failed += 1;
                    tally.error(code.to_string());
                }
                Err(crate::conn::ConnError::Deadline) => break,
                Err(e) => {
                    tally.failed += 1;
                    tally.error(e.key());
                    broken = true;
                    sent += 1;
                    break;
                }
            }
            sent += 1;
        }
        if sent < batch {
            job.unclaim(batch - sent);
        }
        if broken {
            continue;
        }
        conn.quit().await;
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_exact_size_and_crlf_lines() {
        for size in [
            128, 129, 130, 131, 180, 181, 182, 183, 184, 185, 1000, 4096, 10_000,
        ] {
            let m = make_message(size, "a@b.example", "c@d.example");
            assert_eq!(m.len(), size, "size {size}");
            assert!(m.ends_with(b"\r\n"), "size {size}");
            for line in m.split(|&b| b == b'\n') {
                assert!(line.len() <= 79, "size {size}");
                assert!(!line.starts_with(b"."));
            }
            // No bare CR or LF.
            let crlf = m.windows(2).filter(|w| w == b"\r\n").count();
            assert_eq!(crlf, m.iter().filter(|&&b| b == b'\n').count());
            assert_eq!(crlf, m.iter().filter(|&&b| b == b'\r').count());
        }
    }

    #[test]
    fn claims_are_bounded() {
        let job = Job {
            target: Target {
                addr: "127.0.0.1:1".parse().unwrap(),
                ehlo: "x".into(),
                tls: None,
                deadline: tokio::time::Instant::now(),
            },
            remaining: AtomicU64::new(25),
            per_connection: 10,
            envelope: Job::envelope("a@b.example", "c@d.example").unwrap(),
            message: Vec::new(),
            record_after: Instant::now(),
        };
        assert_eq!(job.claim(), 10);
        assert_eq!(job.claim(), 10);
        assert_eq!(job.claim(), 5);
        assert_eq!(job.claim(), 0);
        job.unclaim(3);
        assert_eq!(job.claim(), 3);
        assert_eq!(job.claim(), 0);
    }
}
