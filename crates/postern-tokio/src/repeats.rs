//! Repeated events summarised in the log: under a connection flood or a
//! shortage of file descriptors, one line per event would flood the log (and
//! the disk) as well. The first event of a quiet period is logged at once;
//! those that follow within [`SUMMARY_INTERVAL`] are counted and reported as
//! one line when the interval ends, and so on while they keep coming.
//!
//! Sans-IO: the caller passes the time in and asks when the next summary is
//! due.

use std::time::{Duration, Instant};

/// Length of one counting interval.
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// What to log for a repeated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logged {
    /// The first of a quiet period: log this one.
    Now,
    /// Counted in the summary of the current interval.
    Counted,
}

/// The counter of one kind of event.
#[derive(Debug)]
pub(crate) struct Repeats {
    interval: Duration,
    /// The start of the current interval; `None` when quiet.
    since: Option<Instant>,
    /// Events counted (not logged) in the current interval.
    counted: u64,
}

impl Repeats {
    pub(crate) const fn new(interval: Duration) -> Self {
        Self {
            interval,
            since: None,
            counted: 0,
        }
    }

    /// Records one event at `now`.
    pub(crate) fn record(&mut self, now: Instant) -> Logged {
        match self.since {
            Some(_) => {
                self.counted += 1;
                Logged::Counted
            }
            None => {
                self.since = Some(now);
                Logged::Now
            }
        }
    }

    /// When the current interval ends; `None` when quiet.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        self.since.map(|s| s + self.interval)
    }

    /// At the end of an interval (`now` at or past [`Self::due_at`]): the
    /// number of events counted in it, to log as one line, if any. A new
    /// interval starts if there were some (the flood may go on); otherwise
    /// the next event is logged at once.
    pub(crate) fn take_summary(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let since = self.since?;
        if now < since + self.interval {
            return None;
        }
        self.flush(now)
    }

    /// The events counted so far and the time they span, whatever the time
    /// (at shutdown); starts a new interval if there were some.
    pub(crate) fn flush(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let since = self.since?;
        let counted = std::mem::take(&mut self.counted);
        if counted == 0 {
            self.since = None;
            return None;
        }
        self.since = Some(now);
        Some((counted, now.saturating_duration_since(since)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_then_one_summary_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Repeats::new(60 * s);
        assert_eq!(r.due_at(), None);
        assert_eq!(r.record(t0), Logged::Now);
        assert_eq!(r.due_at(), Some(t0 + 60 * s));
        for i in 1..=1000 {
            assert_eq!(r.record(t0 + i * s / 20), Logged::Counted);
        }
        assert_eq!(r.take_summary(t0 + 59 * s), None, "interval not over");
        assert_eq!(r.take_summary(t0 + 60 * s), Some((1000, 60 * s)));
        // The flood goes on: counted in the next interval, not logged one by one.
        assert_eq!(r.record(t0 + 61 * s), Logged::Counted);
        assert_eq!(r.due_at(), Some(t0 + 120 * s));
        assert_eq!(r.take_summary(t0 + 120 * s), Some((1, 60 * s)));
        // A quiet interval ends the period: nothing to say, the next event is logged at once.
        assert_eq!(r.take_summary(t0 + 180 * s), None);
        assert_eq!(r.due_at(), None);
        assert_eq!(r.record(t0 + 500 * s), Logged::Now);
    }

    #[test]
    fn flush_reports_what_was_counted_at_any_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Repeats::new(60 * s);
        assert_eq!(r.flush(t0), None);
        r.record(t0);
        assert_eq!(r.flush(t0 + s), None, "the one event was logged");
        r.record(t0 + 2 * s);
        r.record(t0 + 3 * s);
        r.record(t0 + 4 * s);
        assert_eq!(r.flush(t0 + 5 * s), Some((2, 3 * s)));
    }
}
