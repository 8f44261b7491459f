//! The queue: the durable spool on disk ([`spool`]), the in-memory schedule
//! of what is due and what an attempt's outcome does to each recipient
//! ([`Queue`], [`RetryPolicy`], [`record_attempt`]), and the lock that keeps
//! one relay per state directory ([`lock`]). [`SharedQueue`] is the queue
//! as the flows share it: inbound and reporting put messages in, outbound
//! takes them out.

pub mod lock;
mod schedule;
pub mod spool;

pub use schedule::{
    AttemptReport, Disposition, Leftovers, Outcome, Queue, QueueError, RetryPolicy, mark_returned,
    record_attempt,
};

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::envelope::Envelope;
use spool::Spool;

/// The queue as the flows share it: the durable spool, the in-memory schedule
/// and the wake-up of delivery.
#[derive(Debug)]
pub struct SharedQueue {
    /// The spool.
    pub spool: Arc<Spool>,
    schedule: Mutex<Queue>,
    /// Wakes the delivery scheduler (a new message, a finished attempt).
    pub wake: Notify,
}

impl SharedQueue {
    /// The spool and the schedule of its messages.
    pub fn new(spool: Arc<Spool>, schedule: Queue) -> Self {
        Self {
            spool,
            schedule: Mutex::new(schedule),
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
}
