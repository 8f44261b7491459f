//! Delivery scheduling: which messages are due, what an attempt's outcome
//! does to each recipient, when to retry and when to give up.
//!
//! The time is always passed in (`now`); nothing here reads the clock or
//! touches the disk. The caller persists every envelope this module changes
//! with [`Spool::update`](crate::queue::spool::Spool::update) and acts on the
//! returned [`AttemptReport`].
//!
//! Retry schedule (Postfix `minimal_backoff_time` / `maximal_backoff_time`):
//! after the n-th failed attempt the next one is due `min_backoff × 2^(n-1)`
//! later, capped at `max_backoff`, and never later than the expiry time,
//! so the last attempt happens at expiry. A message that still has
//! undelivered recipients after `max_lifetime` (Postfix
//! `maximal_queue_lifetime`; `bounce_lifetime` for a message with a null
//! reverse path, Postfix `bounce_queue_lifetime`) is returned to its sender
//! (RFC 5321 §4.5.4.1: give up after at least 4–5 days).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::config::QueueConfig;
use crate::envelope::{
    EnhancedStatus, Envelope, Failure, FailureSource, MessageId, RecipientState,
};

/// Retry and expiry settings.
///
/// The default: retry after 5 minutes, doubling up to 1 hour, give up after
/// 5 days (bounces: also 5 days), as Postfix does (its `maximal_backoff_time`
/// is 4000 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Delay after the first failed attempt.
    pub min_backoff: Duration,
    /// Longest delay between two attempts.
    pub max_backoff: Duration,
    /// How long a message may stay queued before it is returned.
    pub max_lifetime: Duration,
    /// The same for a message with a null reverse path (a bounce), which is
    /// dropped rather than returned.
    pub bounce_lifetime: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from_config(&QueueConfig::default())
    }
}

impl RetryPolicy {
    /// The policy of the `[queue]` settings.
    pub fn from_config(queue: &QueueConfig) -> Self {
        Self {
            min_backoff: queue.min_backoff.0,
            max_backoff: queue.max_backoff.0,
            max_lifetime: queue.max_lifetime.0,
            bounce_lifetime: queue.bounce_lifetime.0,
        }
    }

    /// The delay after `attempts` failed attempts (1 for the first):
    /// `min_backoff × 2^(attempts-1)`, capped at `max_backoff`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.min_backoff
            .checked_mul(1u32 << doublings)
            .unwrap_or(Duration::MAX)
            .min(self.max_backoff)
            .max(self.min_backoff.min(self.max_backoff))
    }

    /// When `envelope` expires.
    pub fn expiry(&self, envelope: &Envelope) -> SystemTime {
        let lifetime = if envelope.is_null_sender() {
            self.bounce_lifetime
        } else {
            self.max_lifetime
        };
        envelope
            .received_at
            .checked_add(lifetime)
            .unwrap_or(envelope.received_at)
    }
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop accepted the recipient (and the data).
    Delivered,
    /// A temporary failure (4xx, connection or TLS-policy failure, DNS
    /// trouble): retry later.
    Deferred(Failure),
    /// A permanent failure (5xx): return to the sender.
    Failed(Failure),
}

/// What the caller must do after [`record_attempt`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "failed recipients must be bounced and the envelope persisted"]
pub struct AttemptReport {
    /// Recipients (indices) that failed and whose sender must get a bounce:
    /// build it with [`crate::reporting::dsn`], queue it, then call
    /// [`mark_returned`]. Empty for a null reverse path (those recipients
    /// are marked returned at once: RFC 5321 §4.5.5, no bounce to `<>`).
    pub bounce: Vec<usize>,
    /// Whether the message is finished once the bounce is queued.
    pub disposition: Disposition,
}

/// Whether a message stays queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Some recipients remain; the next attempt is due at this time
    /// (also stored in the envelope).
    Retry {
        /// When.
        at: SystemTime,
    },
    /// No recipient remains: remove the message from the spool after the
    /// bounce (if any) is queued.
    Complete,
}

/// See [`Queue::leftovers`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Messages and the failed recipients still to be bounced.
    pub bounce: Vec<(MessageId, Vec<usize>)>,
    /// Messages with nothing left to do.
    pub remove: Vec<MessageId>,
}

/// What an operator's action ([`Queue::hold`], [`Queue::release`]) did to
/// one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Done.
    Done,
    /// Nothing to do: the message was already in that state.
    Unchanged,
    /// Done in memory while an attempt on the message is in progress: that
    /// attempt finishes, and the worker's record of it carries the change.
    DuringAttempt,
}

/// An error of [`record_attempt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// An outcome names a recipient index the message does not have.
    #[error("message {id} has no recipient {index}")]
    NoSuchRecipient {
        /// The message.
        id: MessageId,
        /// The index given.
        index: usize,
    },
    /// The message is not in the queue.
    #[error("message {0} is not queued")]
    NotQueued(MessageId),
}

/// Applies the outcomes of one delivery attempt to `envelope`.
///
/// `outcomes` pairs recipient indices with their outcome; open recipients
/// not mentioned were not attempted and stay as they are. Counts the
/// attempt, records failures, expires the message when its lifetime is over
/// and computes the next attempt.
pub fn record_attempt(
    envelope: &mut Envelope,
    outcomes: &[(usize, Outcome)],
    now: SystemTime,
    policy: &RetryPolicy,
) -> Result<AttemptReport, QueueError> {
    if let Some(&(index, _)) = outcomes
        .iter()
        .find(|(i, _)| *i >= envelope.recipients.len())
    {
        return Err(QueueError::NoSuchRecipient {
            id: envelope.id.clone(),
            index,
        });
    }
    envelope.attempts = envelope.attempts.saturating_add(1);
    for (index, outcome) in outcomes {
        // In bounds: every index was checked against `recipients.len()` above.
        let rcpt = &mut envelope.recipients[*index];
        if !rcpt.state.is_open() {
            continue;
        }
        match outcome {
            Outcome::Delivered => rcpt.state = RecipientState::Delivered,
            Outcome::Deferred(failure) => {
                rcpt.state = RecipientState::Deferred;
                rcpt.last_failure = Some(failure.clone());
                envelope.last_failure = Some(failure.clone());
            }
            Outcome::Failed(failure) => {
                rcpt.state = RecipientState::Failed;
                rcpt.last_failure = Some(failure.clone());
                envelope.last_failure = Some(failure.clone());
            }
        }
    }

    let expiry = policy.expiry(envelope);
    let open = envelope.open_recipients();
    if !open.is_empty() && now >= expiry {
        // RFC 5321 §4.5.4.1: the sender is told when the message is given up.
        // The status stays the last temporary one (say 4.7.5 for a TLS policy
        // deferral) so the bounce tells why; `Action: failed` marks the end.
        for index in open {
            // In bounds: `open_recipients` returns indices of `recipients`.
            let rcpt = &mut envelope.recipients[index];
            rcpt.state = RecipientState::Failed;
            let failure = match rcpt.last_failure.take() {
                // The text is now ours, quoting the last error in its
                // log form (`host X said: <reply>` for a server's reply):
                // no longer the server's verbatim reply.
                Some(mut f) => {
                    f.text = format!(
                        "message expired after {} attempts; last error: {f}",
                        envelope.attempts
                    );
                    f.source = FailureSource::Local;
                    f
                }
                None => Failure::local(
                    EnhancedStatus::EXPIRED,
                    format!("message expired after {} attempts", envelope.attempts),
                    now,
                ),
            };
            rcpt.last_failure = Some(failure);
        }
    }

    let mut bounce = envelope.failed_unreturned();
    if envelope.is_null_sender() {
        mark_returned(envelope, &bounce);
        bounce.clear();
    }
    let disposition = if envelope.open_recipients().is_empty() {
        Disposition::Complete
    } else {
        let at = now
            .checked_add(policy.backoff(envelope.attempts))
            .unwrap_or(expiry)
            .min(expiry);
        envelope.next_attempt = at;
        Disposition::Retry { at }
    };
    Ok(AttemptReport {
        bounce,
        disposition,
    })
}

/// Marks recipients as returned once their bounce is queued.
pub fn mark_returned(envelope: &mut Envelope, indices: &[usize]) {
    for &i in indices {
        if let Some(rcpt) = envelope.recipients.get_mut(i)
            && rcpt.state == RecipientState::Failed
        {
            rcpt.state = RecipientState::Returned;
        }
    }
}

/// The in-memory schedule of a running relay: every queued envelope, which
/// are due, which are being delivered.
///
/// Fill it from [`Recovery::messages`](crate::queue::spool::Recovery::messages) at
/// start and with each committed message; take due messages with
/// [`take_due`](Self::take_due), report with
/// [`complete_attempt`](Self::complete_attempt), sleep until
/// [`next_wakeup`](Self::next_wakeup).
#[derive(Debug, Default)]
pub struct Queue {
    policy: RetryPolicy,
    entries: HashMap<MessageId, Entry>,
}

#[derive(Debug)]
struct Entry {
    envelope: Envelope,
    /// Taken by [`Queue::take_due`], until the worker ends the attempt.
    in_flight: bool,
    /// Deleted by the operator during its attempt: removed when it ends.
    deleted: bool,
}

impl Queue {
    /// An empty queue.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
        }
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Retries under `policy` from now on (a configuration reload): the
    /// next retry of each message and its expiry follow it; retry times
    /// already set stay.
    pub fn set_policy(&mut self, policy: RetryPolicy) {
        self.policy = policy;
    }

    /// Adds (or replaces) a message.
    pub fn insert(&mut self, envelope: Envelope) {
        self.entries.insert(
            envelope.id.clone(),
            Entry {
                envelope,
                in_flight: false,
                deleted: false,
            },
        );
    }

    /// Removes a message.
    pub fn remove(&mut self, id: &MessageId) -> Option<Envelope> {
        self.entries.remove(id).map(|e| e.envelope)
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A queued envelope.
    pub fn get(&self, id: &MessageId) -> Option<&Envelope> {
        self.entries.get(id).map(|e| &e.envelope)
    }

    /// Every queued envelope, in no particular order.
    pub fn envelopes(&self) -> impl Iterator<Item = &Envelope> {
        self.entries.values().map(|e| &e.envelope)
    }

    /// Takes the messages due at `now` that are not being delivered, oldest
    /// due first, at most `limit` of them, and marks them in flight: those
    /// with recipients to deliver, and those whose bounce is still to be
    /// queued (see [`retry_bounce`](Self::retry_bounce)).
    pub fn take_due(&mut self, now: SystemTime, limit: usize) -> Vec<Envelope> {
        let mut due: Vec<&mut Entry> = self
            .entries
            .values_mut()
            .filter(|e| {
                !e.in_flight
                    && !e.envelope.held
                    && e.envelope.next_attempt <= now
                    && e.envelope
                        .recipients
                        .iter()
                        .any(|r| r.state.is_open() || r.state == RecipientState::Failed)
            })
            .collect();
        due.sort_by(|a, b| {
            (
                a.envelope.next_attempt,
                a.envelope.received_at,
                &a.envelope.id,
            )
                .cmp(&(
                    b.envelope.next_attempt,
                    b.envelope.received_at,
                    &b.envelope.id,
                ))
        });
        due.into_iter()
            .take(limit)
            .map(|e| {
                e.in_flight = true;
                e.envelope.clone()
            })
            .collect()
    }

    /// Whether a message not in flight is due by `now` with a recipient
    /// still to deliver in `domain` (normalised): mail an open connection
    /// to that domain's next hop could carry at once.
    pub fn has_due_for(&self, domain: &str, now: SystemTime) -> bool {
        self.entries.values().any(|e| {
            !e.in_flight
                && !e.envelope.held
                && e.envelope.next_attempt <= now
                && e.envelope.recipients.iter().any(|r| {
                    r.state.is_open()
                        && crate::net::dns::normalize_domain(&r.address.host().to_string())
                            == domain
                })
        })
    }

    /// Records the outcome of the attempt on a message taken with
    /// [`take_due`](Self::take_due) and returns the updated envelope (to
    /// persist) with the report. The message stays in flight: a
    /// [`Disposition::Complete`] one until [`remove`](Self::remove)d, a
    /// retried one until [`end_attempt`](Self::end_attempt) (once its
    /// bounce is queued and its state persisted).
    pub fn complete_attempt(
        &mut self,
        id: &MessageId,
        outcomes: &[(usize, Outcome)],
        now: SystemTime,
    ) -> Result<(Envelope, AttemptReport), QueueError> {
        let entry = self
            .entries
            .get_mut(id)
            .ok_or_else(|| QueueError::NotQueued(id.clone()))?;
        let report = record_attempt(&mut entry.envelope, outcomes, now, &self.policy)?;
        Ok((entry.envelope.clone(), report))
    }

    /// Ends the attempt on a retried message: it is no longer in flight.
    /// Returns whether the operator deleted it meanwhile
    /// ([`delete`](Self::delete)): the caller then removes it.
    pub fn end_attempt(&mut self, id: &MessageId) -> bool {
        self.entries.get_mut(id).is_some_and(|e| {
            e.in_flight = false;
            e.deleted
        })
    }

    /// Whether the operator deleted this message during its attempt.
    pub fn is_deleted(&self, id: &MessageId) -> bool {
        self.entries.get(id).is_some_and(|e| e.deleted)
    }

    /// Puts a message on hold (`queue hold`, Postfix `postsuper -h`): it is
    /// not attempted, and so never expires, until [`release`](Self::release)d.
    /// An attempt in progress finishes; the message is not retried after it.
    pub fn hold(&mut self, id: &MessageId) -> Result<Change, QueueError> {
        let entry = self.entry(id)?;
        if entry.envelope.held {
            return Ok(Change::Unchanged);
        }
        entry.envelope.held = true;
        Ok(if entry.in_flight {
            Change::DuringAttempt
        } else {
            Change::Done
        })
    }

    /// Releases a held message (`queue release`, Postfix `postsuper -H`):
    /// due at `now`. Its age still counts from its arrival, so a message
    /// held beyond its lifetime is returned if its next attempt fails.
    pub fn release(&mut self, id: &MessageId, now: SystemTime) -> Result<Change, QueueError> {
        let entry = self.entry(id)?;
        if !entry.envelope.held {
            return Ok(Change::Unchanged);
        }
        entry.envelope.held = false;
        if entry.in_flight {
            return Ok(Change::DuringAttempt);
        }
        entry.envelope.next_attempt = entry.envelope.next_attempt.min(now);
        Ok(Change::Done)
    }

    /// Deletes a message (`queue delete`, Postfix `postsuper -d`). One not
    /// in flight leaves the schedule and is returned: the caller deletes its
    /// files (and [`insert`](Self::insert)s it back if that fails). One
    /// being delivered is held and marked deleted, and `None` is returned:
    /// its attempt finishes (what it delivered stays delivered, and nothing
    /// is bounced), then the worker removes it.
    pub fn delete(&mut self, id: &MessageId) -> Result<Option<Envelope>, QueueError> {
        let entry = self.entry(id)?;
        if entry.in_flight {
            entry.deleted = true;
            entry.envelope.held = true;
            return Ok(None);
        }
        Ok(self.remove(id))
    }

    fn entry(&mut self, id: &MessageId) -> Result<&mut Entry, QueueError> {
        self.entries
            .get_mut(id)
            .ok_or_else(|| QueueError::NotQueued(id.clone()))
    }

    /// After the bounce for a message could not be queued (a full disk):
    /// the message stays queued with its failed recipients (RFC 5321 §6.1:
    /// deliver or notify, never drop), and [`take_due`](Self::take_due)
    /// hands it out again for another try at the bounce: at its next
    /// delivery attempt if one is scheduled, else `min_backoff` (at least a
    /// second) from `now`. Returns when, or `None` if the message is not
    /// queued. In memory only: after a restart the bounce is among the
    /// [`leftovers`](Self::leftovers).
    pub fn retry_bounce(&mut self, id: &MessageId, now: SystemTime) -> Option<SystemTime> {
        let entry = self.entries.get_mut(id)?;
        let scheduled = !entry.envelope.open_recipients().is_empty();
        if !scheduled || entry.envelope.next_attempt <= now {
            let wait = self.policy.min_backoff.max(Duration::from_secs(1));
            entry.envelope.next_attempt = now.checked_add(wait).unwrap_or(now);
        }
        entry.in_flight = false;
        Some(entry.envelope.next_attempt)
    }

    /// Marks recipients returned once their bounce is queued; returns the
    /// updated envelope (to persist).
    pub fn mark_returned(
        &mut self,
        id: &MessageId,
        indices: &[usize],
    ) -> Result<Envelope, QueueError> {
        let entry = self
            .entries
            .get_mut(id)
            .ok_or_else(|| QueueError::NotQueued(id.clone()))?;
        mark_returned(&mut entry.envelope, indices);
        Ok(entry.envelope.clone())
    }

    /// Messages left half-handled by a crash, for the relay to finish at
    /// start: failed recipients whose bounce was not yet queued (build and
    /// queue it, then [`mark_returned`](Self::mark_returned)), and messages
    /// with nothing left to do (remove them). Queuing a bounce before
    /// recording it means a crash in between yields a duplicate bounce,
    /// never a lost one.
    pub fn leftovers(&self) -> Leftovers {
        let mut left = Leftovers::default();
        for e in self.entries.values().filter(|e| !e.in_flight) {
            let failed = e.envelope.failed_unreturned();
            if !failed.is_empty() {
                left.bounce.push((e.envelope.id.clone(), failed));
            } else if e.envelope.is_finished() {
                left.remove.push(e.envelope.id.clone());
            }
        }
        left.bounce.sort();
        left.remove.sort();
        left
    }

    /// Makes every message `select`ed, not in flight and not held due at
    /// `now` (`queue flush`); returns how many. The change is in memory
    /// only: after a restart every message with a past due time is due
    /// anyway.
    pub fn flush(&mut self, now: SystemTime, select: impl Fn(&Envelope) -> bool) -> usize {
        let mut n = 0;
        for entry in self
            .entries
            .values_mut()
            .filter(|e| !e.in_flight && !e.envelope.held && select(&e.envelope))
        {
            if entry.envelope.next_attempt > now {
                entry.envelope.next_attempt = now;
            }
            n += 1;
        }
        n
    }

    /// The earliest due time of a message not in flight and not held: when
    /// the scheduler should wake up next.
    pub fn next_wakeup(&self) -> Option<SystemTime> {
        self.entries
            .values()
            .filter(|e| !e.in_flight && !e.envelope.held)
            .map(|e| e.envelope.next_attempt)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{MailParams, Recipient, mailbox, reverse_path};
    use std::time::UNIX_EPOCH;

    const MIN: Duration = Duration::from_secs(60);

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn envelope(sender: &str, rcpts: usize) -> Envelope {
        Envelope::new(
            reverse_path(sender),
            (0..rcpts).map(|i| Recipient::new(mailbox(&format!("r{i}@example.com")))),
            MailParams::default(),
            t(0),
        )
    }

    fn temp(at: u64) -> Outcome {
        let mut f = Failure::local("4.7.5".parse().unwrap(), "TLS handshake failed", t(at));
        f.remote_mta = Some("mx.example.com[192.0.2.1]:25".into());
        Outcome::Deferred(f)
    }

    fn perm(at: u64) -> Outcome {
        Outcome::Failed(Failure::remote(
            "5.1.1".parse().unwrap(),
            "550 5.1.1 no such user",
            t(at),
        ))
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), 5 * MIN);
        assert_eq!(p.backoff(2), 10 * MIN);
        assert_eq!(p.backoff(3), 20 * MIN);
        assert_eq!(p.backoff(4), 40 * MIN);
        assert_eq!(p.backoff(5), 60 * MIN);
        assert_eq!(p.backoff(u32::MAX), 60 * MIN);
        let odd = RetryPolicy {
            min_backoff: 2 * MIN,
            max_backoff: MIN,
            ..p
        };
        assert_eq!(odd.backoff(1), MIN);
    }

    #[test]
    fn per_recipient_outcomes() {
        let mut env = envelope("s@example.org", 3);
        let p = RetryPolicy::default();
        let report = record_attempt(
            &mut env,
            &[(0, Outcome::Delivered), (1, temp(10)), (2, perm(10))],
            t(10),
            &p,
        )
        .unwrap();
        assert_eq!(env.recipients[0].state, RecipientState::Delivered);
        assert_eq!(env.recipients[1].state, RecipientState::Deferred);
        assert_eq!(env.recipients[2].state, RecipientState::Failed);
        assert_eq!(report.bounce, vec![2]);
        assert_eq!(
            report.disposition,
            Disposition::Retry {
                at: t(10) + 5 * MIN
            }
        );
        assert_eq!(env.next_attempt, t(10) + 5 * MIN);
        assert_eq!(env.attempts, 1);
        assert_eq!(
            env.last_failure.as_ref().unwrap().text,
            "550 5.1.1 no such user"
        );
        mark_returned(&mut env, &report.bounce);
        assert_eq!(env.recipients[2].state, RecipientState::Returned);

        // Second attempt: only the deferred one is open; delivered now.
        assert_eq!(env.open_recipients(), vec![1]);
        let report = record_attempt(&mut env, &[(1, Outcome::Delivered)], t(400), &p).unwrap();
        assert!(report.bounce.is_empty());
        assert_eq!(report.disposition, Disposition::Complete);
        assert!(env.is_finished());
    }

    #[test]
    fn closed_recipients_are_not_reopened() {
        let mut env = envelope("s@example.org", 1);
        let p = RetryPolicy::default();
        let _ = record_attempt(&mut env, &[(0, Outcome::Delivered)], t(1), &p).unwrap();
        let report = record_attempt(&mut env, &[(0, temp(2))], t(2), &p).unwrap();
        assert_eq!(env.recipients[0].state, RecipientState::Delivered);
        assert_eq!(report.disposition, Disposition::Complete);
    }

    #[test]
    fn unknown_recipient_index_is_an_error() {
        let mut env = envelope("s@example.org", 1);
        let err = record_attempt(
            &mut env,
            &[(1, Outcome::Delivered)],
            t(1),
            &RetryPolicy::default(),
        );
        assert!(matches!(
            err,
            Err(QueueError::NoSuchRecipient { index: 1, .. })
        ));
        assert_eq!(env.attempts, 0, "nothing recorded");
    }

    #[test]
    fn expiry_turns_deferrals_into_bounces_keeping_the_reason() {
        let p = RetryPolicy {
            max_lifetime: 60 * MIN,
            ..RetryPolicy::default()
        };
        let mut env = envelope("s@example.org", 1);
        let mut now = t(0);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let report = record_attempt(&mut env, &[(0, temp(0))], now, &p).unwrap();
            match report.disposition {
                Disposition::Retry { at } => {
                    assert!(at <= t(3600), "retry never scheduled past expiry");
                    assert!(report.bounce.is_empty());
                    now = at;
                }
                Disposition::Complete => {
                    assert_eq!(report.bounce, vec![0]);
                    break;
                }
            }
            assert!(attempts < 10);
        }
        // 0, +5, +10, +20 = 35 min, then +40 capped at expiry (60 min).
        assert_eq!(attempts, 5);
        assert_eq!(now, t(3600));
        let f = env.recipients[0].last_failure.as_ref().unwrap();
        assert_eq!(f.code.to_string(), "4.7.5");
        assert_eq!(
            f.text,
            "message expired after 5 attempts; last error: TLS handshake failed"
        );
        assert_eq!(f.source, FailureSource::Local);
        assert_eq!(
            f.remote_mta.as_deref(),
            Some("mx.example.com[192.0.2.1]:25")
        );
    }

    #[test]
    fn expiry_without_a_recorded_failure_uses_4_4_7() {
        let p = RetryPolicy {
            max_lifetime: MIN,
            ..RetryPolicy::default()
        };
        let mut env = envelope("s@example.org", 1);
        let report = record_attempt(&mut env, &[], t(120), &p).unwrap();
        assert_eq!(report.bounce, vec![0]);
        let f = env.recipients[0].last_failure.as_ref().unwrap();
        assert_eq!(f.code, EnhancedStatus::EXPIRED);
        assert_eq!(f.text, "message expired after 1 attempts");
        assert_eq!(f.source, FailureSource::Local);
    }

    #[test]
    fn expiry_after_a_server_reply_quotes_it_as_ours() {
        let p = RetryPolicy {
            max_lifetime: MIN,
            ..RetryPolicy::default()
        };
        let mut env = envelope("s@example.org", 1);
        let mut f = Failure::remote("4.2.2".parse().unwrap(), "452 4.2.2 mailbox full", t(0));
        f.remote_mta = Some("mx.example.com[192.0.2.1]:25".into());
        let report = record_attempt(&mut env, &[(0, Outcome::Deferred(f))], t(120), &p).unwrap();
        assert_eq!(report.bounce, vec![0]);
        let f = env.recipients[0].last_failure.as_ref().unwrap();
        assert_eq!(f.code.to_string(), "4.2.2");
        assert_eq!(
            f.text,
            "message expired after 1 attempts; last error: \
             host mx.example.com[192.0.2.1]:25 said: 452 4.2.2 mailbox full"
        );
        // No longer the server's verbatim reply: a bounce must not give it
        // as an `smtp` diagnostic.
        assert_eq!(f.source, FailureSource::Local);
    }

    #[test]
    fn null_sender_gets_no_bounce_and_its_own_lifetime() {
        let p = RetryPolicy {
            bounce_lifetime: 10 * MIN,
            ..RetryPolicy::default()
        };
        let mut env = envelope("", 2);
        let report = record_attempt(&mut env, &[(0, perm(1)), (1, temp(1))], t(1), &p).unwrap();
        assert!(report.bounce.is_empty());
        assert_eq!(env.recipients[0].state, RecipientState::Returned);
        assert!(matches!(report.disposition, Disposition::Retry { .. }));
        let report = record_attempt(&mut env, &[(1, temp(600))], t(600), &p).unwrap();
        assert!(report.bounce.is_empty());
        assert_eq!(report.disposition, Disposition::Complete);
        assert!(env.is_finished());
    }

    #[test]
    fn scheduler_takes_due_messages_and_flushes() {
        let mut q = Queue::new(RetryPolicy::default());
        let a = envelope("a@example.org", 1);
        let mut b = envelope("b@example.org", 1);
        b.next_attempt = t(1000);
        q.insert(a.clone());
        q.insert(b.clone());
        assert_eq!(q.next_wakeup(), Some(t(0)));

        let due = q.take_due(t(0), 10);
        assert_eq!(due.iter().map(|e| &e.id).collect::<Vec<_>>(), vec![&a.id]);
        assert!(q.take_due(t(0), 10).is_empty(), "in flight");
        assert_eq!(q.next_wakeup(), Some(t(1000)));

        let (env, report) = q.complete_attempt(&a.id, &[(0, temp(1))], t(1)).unwrap();
        assert_eq!(
            report.disposition,
            Disposition::Retry { at: t(1) + 5 * MIN }
        );
        assert_eq!(q.get(&a.id), Some(&env));
        assert_eq!(q.next_wakeup(), Some(t(1000)), "in flight until ended");
        assert!(!q.end_attempt(&a.id));
        assert_eq!(q.next_wakeup(), Some(t(301)));

        assert!(q.take_due(t(100), 10).is_empty());
        assert_eq!(q.flush(t(100), |_| true), 2);
        let due = q.take_due(t(100), 1);
        assert_eq!(due.len(), 1, "limit honoured");
        assert_eq!(q.take_due(t(100), 10).len(), 1);

        let (_, report) = q
            .complete_attempt(&b.id, &[(0, Outcome::Delivered)], t(101))
            .unwrap();
        assert_eq!(report.disposition, Disposition::Complete);
        assert!(
            q.take_due(t(10_000), 10).iter().all(|e| e.id != b.id),
            "complete stays out"
        );
        assert!(q.remove(&b.id).is_some());
        assert!(matches!(
            q.complete_attempt(&b.id, &[], t(102)),
            Err(QueueError::NotQueued(_))
        ));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn held_messages_are_not_taken_and_deletion_waits_for_the_attempt() {
        let mut q = Queue::new(RetryPolicy::default());
        let a = envelope("a@example.org", 1);
        let b = envelope("b@example.org", 1);
        q.insert(a.clone());
        q.insert(b.clone());
        assert_eq!(q.hold(&a.id), Ok(Change::Done));
        assert_eq!(q.hold(&a.id), Ok(Change::Unchanged));
        assert!(q.get(&a.id).unwrap().held);
        let due = q.take_due(t(10), 10);
        assert_eq!(due.iter().map(|e| &e.id).collect::<Vec<_>>(), vec![&b.id]);
        assert_eq!(q.next_wakeup(), None, "held: no wakeup for it");
        assert_eq!(q.flush(t(10), |_| true), 0, "held and in flight");

        // Held during its attempt: the outcome is recorded, it is not retried.
        assert_eq!(q.hold(&b.id), Ok(Change::DuringAttempt));
        let (env, _) = q.complete_attempt(&b.id, &[(0, temp(1))], t(11)).unwrap();
        assert!(env.held && env.attempts == 1, "{env:?}");
        assert!(!q.end_attempt(&b.id));
        assert!(q.take_due(t(100_000), 10).is_empty());

        // Released: due at once.
        assert_eq!(q.release(&b.id, t(20)), Ok(Change::Done));
        assert_eq!(q.release(&b.id, t(20)), Ok(Change::Unchanged));
        assert_eq!(q.next_wakeup(), Some(t(20)));
        assert_eq!(q.take_due(t(20), 10).len(), 1);

        // Deleted during its attempt: held, kept until the attempt ends.
        assert_eq!(q.delete(&b.id), Ok(None));
        assert!(q.is_deleted(&b.id) && q.get(&b.id).unwrap().held);
        assert!(q.end_attempt(&b.id), "the caller removes it");
        // Not in flight: taken out at once, for the caller to delete.
        assert_eq!(q.delete(&a.id).unwrap().map(|e| e.id), Some(a.id.clone()));
        assert!(q.get(&a.id).is_none());
        assert_eq!(q.delete(&a.id), Err(QueueError::NotQueued(a.id.clone())));
        assert_eq!(q.hold(&a.id), Err(QueueError::NotQueued(a.id.clone())));
    }

    #[test]
    fn a_bounce_not_queued_keeps_the_message_due() {
        let mut q = Queue::new(RetryPolicy::default());
        let env = envelope("a@example.org", 1);
        q.insert(env.clone());
        assert_eq!(q.take_due(t(0), 10).len(), 1);
        let (_, report) = q.complete_attempt(&env.id, &[(0, perm(1))], t(1)).unwrap();
        assert_eq!(report.bounce, vec![0]);
        assert_eq!(report.disposition, Disposition::Complete);
        assert!(q.take_due(t(1), 10).is_empty(), "in flight");
        // The bounce could not be queued: the message comes back later, for
        // its bounce only.
        assert_eq!(q.retry_bounce(&env.id, t(1)), Some(t(1) + 5 * MIN));
        assert!(q.take_due(t(2), 10).is_empty(), "not before the backoff");
        let due = q.take_due(t(1) + 5 * MIN, 10);
        assert_eq!(due.len(), 1);
        assert!(due[0].open_recipients().is_empty());
        assert_eq!(due[0].failed_unreturned(), vec![0]);
        assert!(q.leftovers().bounce.is_empty(), "in flight again");
        // A message with recipients still to deliver keeps its schedule.
        let mut open = envelope("b@example.org", 2);
        open.next_attempt = t(1000);
        q.insert(open.clone());
        assert_eq!(q.retry_bounce(&open.id, t(10)), Some(t(1000)));
        assert_eq!(q.retry_bounce(&MessageId::generate(t(5)), t(10)), None);
    }

    #[test]
    fn leftovers_after_a_crash() {
        let mut q = Queue::new(RetryPolicy::default());
        let p = RetryPolicy::default();
        let mut bounced_pending = envelope("a@example.org", 2);
        let _ = record_attempt(
            &mut bounced_pending,
            &[(0, perm(1)), (1, Outcome::Delivered)],
            t(1),
            &p,
        )
        .unwrap();
        let mut done = envelope("b@example.org", 1);
        let _ = record_attempt(&mut done, &[(0, Outcome::Delivered)], t(1), &p).unwrap();
        let open = envelope("c@example.org", 1);
        for e in [&bounced_pending, &done, &open] {
            q.insert(e.clone());
        }
        let left = q.leftovers();
        assert_eq!(left.bounce, vec![(bounced_pending.id.clone(), vec![0])]);
        assert_eq!(left.remove, vec![done.id.clone()]);
        // Due: the message with an open recipient, and the one whose bounce
        // is still to be queued; never the finished one.
        let mut due: Vec<_> = q
            .take_due(t(10_000), 10)
            .into_iter()
            .map(|e| e.id)
            .collect();
        due.sort();
        let mut expected = vec![bounced_pending.id.clone(), open.id.clone()];
        expected.sort();
        assert_eq!(due, expected);
        let (_, report) = q
            .complete_attempt(&open.id, &[(0, Outcome::Delivered)], t(10_001))
            .unwrap();
        assert_eq!(report.disposition, Disposition::Complete);
        q.mark_returned(&bounced_pending.id, &[0]).unwrap();
        assert!(q.take_due(t(20_000), 10).is_empty(), "nothing left to do");
    }

    #[test]
    fn leftovers_are_what_a_crash_left_half_done() {
        let mut q = Queue::new(RetryPolicy::default());
        let p = RetryPolicy::default();
        let mut bounced_pending = envelope("a@example.org", 1);
        let _ = record_attempt(&mut bounced_pending, &[(0, perm(1))], t(1), &p).unwrap();
        q.insert(bounced_pending.clone());
        q.mark_returned(&bounced_pending.id, &[0]).unwrap();
        assert!(q.leftovers().bounce.is_empty());
        assert_eq!(q.leftovers().remove, vec![bounced_pending.id]);
    }
}
