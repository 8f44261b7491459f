//! The queue: the durable spool on disk ([`spool`]), the in-memory schedule
//! of what is due and what an attempt's outcome does to each recipient
//! ([`Queue`], [`RetryPolicy`], [`record_attempt`]), and the lock that keeps
//! one relay per state directory ([`lock`]). [`SharedQueue`] is the queue
//! as the flows share it: inbound and reporting put messages in, outbound
//! takes them out, and the operator's requests ([`control`]) act on it.

pub mod control;
pub mod lock;
mod schedule;
pub mod spool;

pub use schedule::{
    AttemptReport, Change, Disposition, Leftovers, Outcome, Queue, QueueError, RetryPolicy,
    mark_returned, record_attempt,
};

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::envelope::{Envelope, MessageId};
use spool::{Spool, SpoolError};

/// The queue as the flows share it: the durable spool, the in-memory schedule
/// and the wake-up of delivery.
#[derive(Debug)]
pub struct SharedQueue {
    /// The spool.
    pub spool: Arc<Spool>,
    schedule: Mutex<Queue>,
    /// Held while an envelope is written: see [`persist`](Self::persist).
    persisting: Mutex<()>,
    /// Wakes the delivery scheduler (a new message, a finished attempt).
    pub wake: Notify,
}

impl SharedQueue {
    /// The spool and the schedule of its messages.
    pub fn new(spool: Arc<Spool>, schedule: Queue) -> Self {
        Self {
            spool,
            schedule: Mutex::new(schedule),
            persisting: Mutex::new(()),
            wake: Notify::new(),
        }
    }

    /// Adds a committed message to the schedule and wakes delivery.
    pub fn enqueue(&self, envelope: Envelope) {
        self.schedule().insert(envelope);
        self.wake.notify_one();
    }

    /// The schedule, locked.
    pub fn schedule(&self) -> MutexGuard<'_, Queue> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a message's envelope as the schedule holds it now to the
    /// spool ([`Spool::update`]); does nothing if the message is no longer
    /// queued (in the schedule or in the spool). Blocking (an fsync): run it off the async runtime.
    ///
    /// Every change to a queued envelope that must survive a restart is
    /// made in the schedule first, then persisted with this method, by the
    /// delivery worker (an attempt's outcome) as by an operator's request
    /// (a hold). The copy is taken under a lock held until it is written,
    /// so the last write carries every change made before it: a hold
    /// requested during an attempt is not overwritten by the attempt's
    /// record, nor the record by the hold.
    pub fn persist(&self, id: &MessageId) -> Result<(), SpoolError> {
        let _writing = self
            .persisting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(envelope) = self.schedule().get(id).cloned() else {
            return Ok(());
        };
        match self.spool.update(&envelope) {
            // Removed since (delivered, deleted): nothing left to record.
            Err(SpoolError::NotQueued(_)) => Ok(()),
            other => other,
        }
    }
}
