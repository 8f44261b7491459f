//! Outbound connection reuse (Postfix's connection cache,
//! `smtp_connection_cache_on_demand`): after a message, the connection to
//! its next hop stays open while more mail for the same destination is due,
//! and the next attempt for that destination takes it.
//!
//! A cached connection carries only messages whose connection policy is the
//! very one it was opened and judged under (same destination settings, MX
//! name, DANE and MTA-STS facts, REQUIRETLS): postern-attempt checks it
//! again before the message goes ([`IdleConnection::serves`]). One that the
//! next hop closed, or spoke on, while idle is not used: the message goes on
//! a new connection. Limits (`[connection_cache]`): idle time, messages per
//! connection, age.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use postern_policy::ConnectionPolicy;
use postern_tokio::client::{Destination, IdleConnection};

use crate::config::ConnectionCacheConfig;

/// The idle connections of a relay's delivery workers.
#[derive(Debug, Default)]
pub struct ConnectionCache {
    idle: Mutex<Vec<IdleConnection>>,
}

impl ConnectionCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleConnection>> {
        // A poisoned lock only means a panic elsewhere while moving a value in or out.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes an idle connection that serves `destination` under `policy`.
    pub fn take(
        &self,
        destination: &Destination,
        policy: &ConnectionPolicy,
    ) -> Option<IdleConnection> {
        let mut idle = self.idle();
        let i = idle.iter().position(|c| c.serves(destination, policy))?;
        Some(idle.swap_remove(i))
    }

    /// Keeps `conn` for the next message, when the limits allow it and
    /// `more_due` (mail for its destination is waiting); else gives it back
    /// to be closed.
    pub fn keep(
        &self,
        conn: IdleConnection,
        settings: &ConnectionCacheConfig,
        more_due: bool,
        now: Instant,
    ) -> Option<IdleConnection> {
        let usable = settings.enabled
            && more_due
            && conn.uses() < settings.max_messages
            && now.saturating_duration_since(conn.opened()) < settings.max_age.0;
        if usable {
            self.idle().push(conn);
            None
        } else {
            Some(conn)
        }
    }

    /// Takes out the connections idle for longer than `settings.idle` (all
    /// of them with `all`), to be closed.
    pub fn expired(
        &self,
        settings: &ConnectionCacheConfig,
        now: Instant,
        all: bool,
    ) -> Vec<IdleConnection> {
        let mut idle = self.idle();
        let (gone, kept) = std::mem::take(&mut *idle).into_iter().partition(|c| {
            all || !settings.enabled
                || now.saturating_duration_since(c.idle_since()) >= settings.idle.0
        });
        *idle = kept;
        gone
    }

    /// The connections kept now.
    pub fn len(&self) -> usize {
        self.idle().len()
    }

    /// Whether no connection is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
