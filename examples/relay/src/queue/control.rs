//! The operator's actions on the queue: delete, hold, release and flush
//! (Postfix `postsuper -d/-h/-H`, `postqueue -f/-s/-i`), on a running relay
//! and on a stopped one, with one meaning for both.
//!
//! # Who acts
//!
//! A command first tries to take the state-directory lock
//! ([`StateLock`](crate::queue::lock::StateLock)) without waiting:
//!
//! - If it gets it, no relay runs: it acts on the spool itself
//!   ([`apply`] on a [`SharedQueue`] read from the spool with
//!   [`Spool::attach`]), durably, and releases the lock. A relay started
//!   meanwhile stops at once, naming the command's process: run it again.
//!   A flush has nothing to act on without a relay: it is left as a request
//!   for the next start, which (like any start) also retries every message
//!   already due.
//! - If a relay holds the lock, the command hands it the request
//!   ([`Spool::submit_request`]: a durable file in `requests/`) and waits
//!   for the answer ([`Spool::take_answer`]), at most [`ANSWER_WAIT`]. The
//!   relay's scheduler reads the requests directory at every turn of its
//!   loop, and its loop turns at least every [`REQUEST_POLL`]: the answer
//!   usually comes within that. A relay that does not answer in time (busy,
//!   or stopped meanwhile) still has the request, and applies it when it
//!   next reads the directory or at its next start: the command says so
//!   and exits 0.
//!
//! # What each action does
//!
//! - **hold**: the message is not attempted, and so does not expire, until
//!   released (as Postfix's hold queue); the state is kept in the envelope
//!   (`"held": true`), so it survives restarts. An attempt in progress
//!   finishes, and the message is not retried after it.
//! - **release**: the message is due at once. Its age still counts from
//!   its arrival (as Postfix, whose `postsuper -r` would requeue it
//!   afresh): a message held beyond `queue.max_lifetime` is returned to its
//!   sender if that attempt fails.
//! - **delete**: the message is removed from the spool, never delivered and
//!   never bounced. One being delivered right now is held at once (a crash
//!   before the attempt ends leaves it held, not retried), its attempt
//!   finishes (recipients it delivered stay delivered: nothing is sent
//!   twice), nothing is bounced, and it is removed when the attempt ends.
//! - **flush**: every message, the messages with a recipient still to
//!   deliver in one domain, or one message, is due at once. Held messages
//!   are not flushed (release them).
//!
//! Requests from concurrent commands are applied one after another, in the
//! order they were submitted.

use std::collections::BTreeSet;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, MessageId};
use crate::net::dns::normalize_domain;
use crate::queue::spool::{PendingRequest, Spool, SpoolError};
use crate::queue::{Change, QueueError, SharedQueue};

/// How long a command waits for the running relay's answer.
pub const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest a running relay's scheduler sleeps before it looks at the
/// requests directory again.
pub const REQUEST_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// An operator's request, as a command hands it to the relay (JSON in
/// `requests/<rid>.req`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Request {
    /// Delete messages (`postsuper -d`).
    Delete {
        /// Which.
        messages: Selection,
    },
    /// Put messages on hold (`postsuper -h`).
    Hold {
        /// Which.
        messages: Selection,
    },
    /// Release held messages (`postsuper -H`).
    Release {
        /// Which.
        messages: Selection,
    },
    /// Make messages due now (`postqueue -f`, `-s`, `-i`).
    Flush {
        /// Which.
        messages: Selection,
    },
}

/// The messages a [`Request`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Selection {
    /// Every queued message.
    All,
    /// These messages.
    Ids(Vec<MessageId>),
    /// The messages with a recipient still to deliver in this domain.
    Domain(String),
}

impl Request {
    /// The action's name, for logs.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Delete { .. } => "delete",
            Self::Hold { .. } => "hold",
            Self::Release { .. } => "release",
            Self::Flush { .. } => "flush",
        }
    }

    fn messages(&self) -> &Selection {
        match self {
            Self::Delete { messages }
            | Self::Hold { messages }
            | Self::Release { messages }
            | Self::Flush { messages } => messages,
        }
    }
}

/// What a request did to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "error", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Applied {
    /// Deleted.
    Deleted,
    /// Being delivered: held now, removed when the attempt ends.
    DeletedAfterAttempt,
    /// Put on hold.
    Held,
    /// Put on hold; the attempt in progress finishes first.
    HeldAfterAttempt,
    /// Already on hold.
    AlreadyHeld,
    /// Released: due now.
    Released,
    /// Was not on hold.
    NotHeld,
    /// Due now.
    Flushed,
    /// On hold: not flushed.
    HeldNotFlushed,
    /// No such message in the queue.
    NotQueued,
    /// The action failed.
    Failed(String),
}

impl Applied {
    /// Whether the request failed for this message.
    pub fn is_error(&self) -> bool {
        matches!(self, Self::NotQueued | Self::Failed(_))
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Deleted => "deleted",
            Self::DeletedAfterAttempt => {
                "deleted: a delivery attempt is in progress; the message is held, and removed \
                 when the attempt ends (nothing is bounced)"
            }
            Self::Held => "held",
            Self::HeldAfterAttempt => {
                "held: the delivery attempt in progress finishes, and the message is not \
                 retried after it"
            }
            Self::AlreadyHeld => "already held",
            Self::Released => "released: due now",
            Self::NotHeld => "not held: nothing to release",
            Self::Flushed => "due now",
            Self::HeldNotFlushed => "held: not flushed (release it first)",
            Self::NotQueued => "not queued",
            Self::Failed(e) => return f.write_str(e),
        })
    }
}

/// The relay's answer to a [`Request`] (JSON in `requests/<rid>.done`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Answer {
    /// Each message concerned and what was done to it.
    pub messages: Vec<(MessageId, Applied)>,
    /// Why the request itself could not be applied (unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    fn refused(error: String) -> Self {
        Self {
            messages: Vec::new(),
            error: Some(error),
        }
    }
}

/// Applies `request` to the queue and its spool, durably; blocking.
pub fn apply(queue: &SharedQueue, request: &Request, now: SystemTime) -> Answer {
    let ids = select(queue, request.messages());
    let mut answer = Answer::default();
    for id in ids {
        let applied = match request {
            Request::Delete { .. } => delete(queue, &id),
            Request::Hold { .. } => {
                let change = queue.schedule().hold(&id);
                persisted(queue, &id, change, Applied::Held, Applied::HeldAfterAttempt)
                    .unwrap_or(Applied::AlreadyHeld)
            }
            Request::Release { .. } => {
                let change = queue.schedule().release(&id, now);
                persisted(queue, &id, change, Applied::Released, Applied::Released)
                    .unwrap_or(Applied::NotHeld)
            }
            Request::Flush { .. } => flush(queue, &id, now),
        };
        answer.messages.push((id, applied));
    }
    answer
}

/// The ids of the selected messages: the given ones as given (queued or
/// not), or the queued ones that match, oldest first.
fn select(queue: &SharedQueue, selection: &Selection) -> Vec<MessageId> {
    let matching = |pred: &dyn Fn(&Envelope) -> bool| {
        let schedule = queue.schedule();
        let mut found: Vec<_> = schedule
            .envelopes()
            .filter(|e| pred(e))
            .map(|e| (e.received_at, e.id.clone()))
            .collect();
        found.sort();
        found.into_iter().map(|(_, id)| id).collect()
    };
    match selection {
        Selection::Ids(ids) => {
            let mut seen = BTreeSet::new();
            ids.iter().filter(|id| seen.insert(*id)).cloned().collect()
        }
        Selection::All => matching(&|_| true),
        Selection::Domain(domain) => {
            let domain = normalize_domain(domain);
            matching(&|e: &Envelope| {
                e.recipients.iter().any(|r| {
                    r.state.is_open() && normalize_domain(&r.address.host().to_string()) == domain
                })
            })
        }
    }
}

/// Persists a hold or release; `None` when there was nothing to change.
fn persisted(
    queue: &SharedQueue,
    id: &MessageId,
    change: Result<Change, QueueError>,
    done: Applied,
    during_attempt: Applied,
) -> Option<Applied> {
    let applied = match change {
        Ok(Change::Unchanged) => return None,
        Err(_) => return Some(Applied::NotQueued),
        Ok(Change::Done) => done,
        Ok(Change::DuringAttempt) => during_attempt,
    };
    Some(match queue.persist(id) {
        Ok(()) => applied,
        Err(e) => Applied::Failed(format!(
            "{applied}, but not recorded on disk ({e}): a running relay keeps it until it stops"
        )),
    })
}

fn delete(queue: &SharedQueue, id: &MessageId) -> Applied {
    let taken = queue.schedule().delete(id);
    match taken {
        Err(_) => Applied::NotQueued,
        // In flight: held now, so that a crash before the attempt ends does
        // not retry it; the worker removes it when the attempt ends.
        Ok(None) => match queue.persist(id) {
            Ok(()) => Applied::DeletedAfterAttempt,
            Err(e) => Applied::Failed(format!(
                "to be deleted when its delivery attempt ends, but not held meanwhile: {e}"
            )),
        },
        Ok(Some(envelope)) => match queue.spool.delete(id) {
            Ok(()) => Applied::Deleted,
            Err(SpoolError::NotQueued(_)) => Applied::NotQueued,
            Err(e) => {
                queue.schedule().insert(envelope);
                Applied::Failed(format!("not deleted: {e}"))
            }
        },
    }
}

fn flush(queue: &SharedQueue, id: &MessageId, now: SystemTime) -> Applied {
    let mut schedule = queue.schedule();
    match schedule.get(id).map(|e| e.held) {
        None => Applied::NotQueued,
        Some(true) => Applied::HeldNotFlushed,
        Some(false) => {
            schedule.flush(now, |e| e.id == *id);
            Applied::Flushed
        }
    }
}

/// Applies every pending request to a running relay's queue, oldest
/// first, and answers each; the flag file of earlier versions' `queue
/// flush` is a flush of every message. Returns what was applied, for the
/// log. Blocking.
pub fn serve(queue: &SharedQueue, now: SystemTime) -> Result<Vec<(Request, Answer)>, SpoolError> {
    let mut served = Vec::new();
    if queue.spool.take_flush_request()? {
        let request = Request::Flush {
            messages: Selection::All,
        };
        let answer = apply(queue, &request, now);
        served.push((request, answer));
    }
    for PendingRequest { rid, bytes } in queue.spool.pending_requests()? {
        let parsed = bytes.and_then(|b| {
            serde_json::from_slice::<Request>(&b).map_err(|e| format!("unreadable request: {e}"))
        });
        let answer = match &parsed {
            Ok(request) => apply(queue, request, now),
            Err(e) => Answer::refused(e.clone()),
        };
        queue
            .spool
            .answer_request(&rid, &serde_json::to_vec(&answer)?)?;
        if let Ok(request) = parsed {
            served.push((request, answer));
        }
    }
    Ok(served)
}

/// Hands `request` to the running relay that uses the spool in `root` and
/// waits for its answer, at most `wait`; `Ok(None)` if it did not answer in
/// time (the request stays, and is applied later).
pub fn submit_and_wait(
    root: &std::path::Path,
    request: &Request,
    wait: std::time::Duration,
) -> Result<Option<Answer>, SpoolError> {
    let rid = Spool::submit_request(root, &serde_json::to_vec(request)?)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(bytes) = Spool::take_answer(root, &rid)? {
            return Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                Answer::refused(format!("unreadable answer from the relay: {e}"))
            })));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
