//! Latency samples, percentiles and the run report (text and JSON).
//!
//! Samples are kept exactly (one `u32` of microseconds each) rather than in a histogram: a run is bounded by
//! its message count, so memory is bounded too, and exact nearest-rank percentiles need no error analysis.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Nearest-rank percentile (`p` in 0..=100) of sorted samples: the smallest sample such that at least `p`
/// percent of all samples are less or equal. `None` for no samples.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    // rank is at most len (p <= 100) and the index at least 0.
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summary of one latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// Number of samples.
    pub(crate) count: usize,
    /// Median.
    pub(crate) p50: u32,
    /// 90th percentile.
    pub(crate) p90: u32,
    /// 99th percentile.
    pub(crate) p99: u32,
    /// Largest sample.
    pub(crate) max: u32,
    /// Arithmetic mean.
    pub(crate) mean: f64,
}

impl Summary {
    /// Summarise samples (sorted in place). All zero for no samples.
    pub(crate) fn of(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        let count = samples.len();
        let pick = |p| percentile(samples, p).unwrap_or(0);
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Self {
            count,
            p50: pick(50.0),
            p90: pick(90.0),
            p99: pick(99.0),
            max: samples.last().copied().unwrap_or(0),
            mean: if count == 0 {
                0.0
            } else {
                sum as f64 / count as f64
            },
        }
    }
}

/// A duration as whole microseconds, saturating at `u32::MAX` (71 minutes, beyond any run).
pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// What one worker measured; merged into the report at the end.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Messages accepted with a final 2yz.
    pub(crate) delivered: u64,
    /// Messages refused or lost.
    pub(crate) failed: u64,
    /// Connections that reached the point of sending mail.
    pub(crate) connections: u64,
    /// Connections that failed before that.
    pub(crate) connection_failures: u64,
    /// TLS handshakes that resumed a session.
    pub(crate) resumed: u64,
    /// TLS handshakes that were full.
    pub(crate) full: u64,
    /// Per-message latency (send_mail to the final reply).
    pub(crate) message_us: Vec<u32>,
    /// Connection setup latency (TCP connect to ready for MAIL, TLS and the second EHLO included).
    pub(crate) setup_us: Vec<u32>,
    /// Errors by reply code or cause.
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Count one error.
    pub(crate) fn error(&mut self, key: impl Into<String>) {
        *self.errors.entry(key.into()).or_default() += 1;
    }

    /// Add another worker's figures.
    pub(crate) fn merge(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.connections += other.connections;
        self.connection_failures += other.connection_failures;
        self.resumed += other.resumed;
        self.full += other.full;
        self.message_us.extend(other.message_us);
        self.setup_us.extend(other.setup_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// The final report of a `send` or `idle` run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `send` or `idle`.
    pub(crate) mode: &'static str,
    /// The server.
    pub(crate) target: String,
    /// STARTTLS used.
    pub(crate) starttls: bool,
    /// Concurrency.
    pub(crate) connections: usize,
    /// Messages asked for.
    pub(crate) messages_requested: u64,
    /// Messages accepted by the server.
    pub(crate) messages_delivered: u64,
    /// Messages refused or lost.
    pub(crate) messages_failed: u64,
    /// Messages never attempted because the duration cap was reached.
    pub(crate) messages_not_sent: u64,
    /// Connections that got ready for mail (idle: that sat idle).
    pub(crate) connections_ok: u64,
    /// Connections that failed before that.
    pub(crate) connections_failed: u64,
    /// Resumed TLS handshakes.
    pub(crate) tls_resumed: u64,
    /// Full TLS handshakes.
    pub(crate) tls_full: u64,
    /// Wall-clock time of the run, seconds.
    pub(crate) elapsed_s: f64,
    /// The duration cap was reached.
    pub(crate) hit_duration_cap: bool,
    /// Delivered messages per second of wall-clock time.
    pub(crate) messages_per_s: f64,
    /// Per-message latency, microseconds.
    pub(crate) message_latency_us: Summary,
    /// Connection setup latency, microseconds.
    pub(crate) setup_latency_us: Summary,
    /// Errors by reply code (`550`, `421`, ...) or cause (`connect`, `tls`, `timeout`, ...).
    pub(crate) errors: BTreeMap<String, u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} ({}), {} connections",
            self.mode,
            self.target,
            if self.starttls {
                "STARTTLS"
            } else {
                "plaintext"
            },
            self.connections
        )?;
        writeln!(
            f,
            "messages: {} delivered, {} failed, {} not sent (of {})",
            self.messages_delivered,
            self.messages_failed,
            self.messages_not_sent,
            self.messages_requested
        )?;
        writeln!(
            f,
            "connections: {} ok, {} failed; TLS handshakes: {} full, {} resumed",
            self.connections_ok, self.connections_failed, self.tls_full, self.tls_resumed
        )?;
        writeln!(
            f,
            "elapsed: {:.3} s{}; throughput: {:.1} messages/s",
            self.elapsed_s,
            if self.hit_duration_cap {
                " (duration cap reached)"
            } else {
                ""
            },
            self.messages_per_s
        )?;
        for (name, s) in [
            ("message", &self.message_latency_us),
            ("setup", &self.setup_latency_us),
        ] {
            writeln!(
                f,
                "{name:>7} latency (us): p50 {} p90 {} p99 {} max {} mean {:.0} (n={})",
                s.p50, s.p90, s.p99, s.max, s.mean, s.count
            )?;
        }
        if self.errors.is_empty() {
            writeln!(f, "errors: none")
        } else {
            writeln!(f, "errors:")?;
            for (k, v) in &self.errors {
                writeln!(f, "  {k}: {v}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // Ten samples: p50 is the 5th, p90 the 9th, p99 the 10th.
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000];
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(1000));
    }

    #[test]
    fn summary_sorts_and_averages() {
        let mut v = vec![5, 1, 4, 2, 3];
        let s = Summary::of(&mut v);
        assert_eq!((s.count, s.p50, s.p90, s.p99, s.max), (5, 3, 5, 5, 5));
        assert!((s.mean - 3.0).abs() < f64::EPSILON);
        let s = Summary::of(&mut []);
        assert_eq!((s.count, s.p50, s.max), (0, 0, 0));
    }

    #[test]
    fn merge_adds_up() {
        let mut a = Tally {
            delivered: 2,
            message_us: vec![1, 2],
            ..Tally::default()
        };
        a.error("550");
        let mut b = Tally {
            delivered: 3,
            failed: 1,
            message_us: vec![3],
            ..Tally::default()
        };
        b.error("550");
        b.error("421");
        a.merge(b);
        assert_eq!((a.delivered, a.failed, a.message_us.len()), (5, 1, 3));
        assert_eq!(a.errors.get("550"), Some(&2));
        assert_eq!(a.errors.get("421"), Some(&1));
    }

    #[test]
    fn micros_saturates() {
        assert_eq!(micros(Duration::from_millis(3)), 3000);
        assert_eq!(micros(Duration::from_secs(10_000)), u32::MAX);
    }
}
