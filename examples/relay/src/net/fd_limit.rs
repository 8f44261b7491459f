//! The open-file limit (`RLIMIT_NOFILE`): raised at start as far as the hard
//! limit allows, and `max_connections` kept within it.
//!
//! Each inbound connection holds up to [`FDS_PER_CONNECTION`] descriptors
//! (its socket, and its spool file while a message is received); the rest of
//! the relay needs a reserve ([`reserve`]): listeners, the runtime, DNS, the
//! log, and per delivery worker a socket, a spool file and an MTA-STS or DNS
//! connection. A `max_connections` that does not fit is lowered to what
//! does, with a warning: past the limit `accept` would fail and clients would
//! hang without even a `421`.
//!
//! ```
//! use postern_relay::net::fd_limit::{FdLimit, plan};
//!
//! // Soft 1024 (hard 1024): 5000 connections do not fit, 459 do.
//! let limit = FdLimit { soft: Some(1024), hard: Some(1024) };
//! let p = plan(limit, 5000, 106).unwrap();
//! assert_eq!(p.max_connections, 459);
//! assert!(p.lowered());
//! ```

use std::fmt;

/// Descriptors one inbound connection may hold: its socket and its spool file.
pub const FDS_PER_CONNECTION: u64 = 2;

/// Descriptors kept for everything but inbound connections.
pub fn reserve(listeners: usize, delivery_workers: usize) -> u64 {
    let per_worker = 4;
    64 + as_u64(listeners) + per_worker * as_u64(delivery_workers)
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// An open-file limit; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit, the one enforced.
    pub soft: Option<u64>,
    /// The hard limit, as far as the soft one can be raised.
    pub hard: Option<u64>,
}

impl fmt::Display for FdLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
        write!(f, "{} (hard limit {})", show(self.soft), show(self.hard))
    }
}

/// The number of connections that fit, as decided at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The limit.
    pub limit: FdLimit,
    /// The connections configured.
    pub configured: usize,
    /// The connections served: `configured`, or fewer if they do not fit.
    pub max_connections: usize,
}

impl Plan {
    /// Whether `max_connections` had to be lowered.
    pub fn lowered(&self) -> bool {
        self.max_connections < self.configured
    }
}

/// The limit leaves no room for a single connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the open-file limit {limit} is too low: at least {needed} descriptors are needed \
     (raise it: ulimit -n, systemd LimitNOFILE=)"
)]
pub struct TooLow {
    /// The limit.
    pub limit: FdLimit,
    /// The least that serves one connection.
    pub needed: u64,
}

/// The connections that fit within `limit` next to `reserve` descriptors.
pub fn plan(limit: FdLimit, configured: usize, reserve: u64) -> Result<Plan, TooLow> {
    let fits = match limit.soft {
        None => usize::MAX,
        Some(soft) => {
            let n = soft.saturating_sub(reserve) / FDS_PER_CONNECTION;
            usize::try_from(n).unwrap_or(usize::MAX)
        }
    };
    if fits == 0 {
        return Err(TooLow {
            limit,
            needed: reserve + FDS_PER_CONNECTION,
        });
    }
    Ok(Plan {
        limit,
        configured,
        max_connections: configured.min(fits),
    })
}

/// The current limit (unlimited where there is no `RLIMIT_NOFILE`).
pub fn current() -> FdLimit {
    #[cfg(unix)]
    {
        let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        FdLimit {
            soft: l.current,
            hard: l.maximum,
        }
    }
    #[cfg(not(unix))]
    FdLimit {
        soft: None,
        hard: None,
    }
}

/// Raises the soft limit to the hard limit (Linux caps an unlimited hard
/// limit at `fs.nr_open`: then the soft limit is raised to 1048576, its
/// default, or left as it is if the kernel refuses). Returns the limit
/// before and after.
pub fn raise() -> (FdLimit, FdLimit) {
    let before = current();
    #[cfg(unix)]
    {
        let target = before.hard.unwrap_or(1 << 20);
        if before.soft.is_some_and(|soft| soft < target) {
            // Refused (e.g. above fs.nr_open): the limit stays as it was, and the plan fits within it.
            let _ = rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(target),
                    maximum: before.hard,
                },
            );
        }
    }
    (before, current())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(soft: u64, hard: u64) -> FdLimit {
        FdLimit {
            soft: Some(soft),
            hard: Some(hard),
        }
    }

    #[test]
    fn connections_fit_within_the_soft_limit() {
        let reserve = reserve(1, 10);
        assert_eq!(reserve, 105);
        let p = plan(limit(1024, 1024), 100, reserve).unwrap();
        assert_eq!((p.max_connections, p.lowered()), (100, false));
        let p = plan(limit(1024, 1024), 5000, reserve).unwrap();
        assert_eq!((p.max_connections, p.lowered()), (459, true));
        let p = plan(limit(256, 256), 5000, reserve).unwrap();
        assert_eq!(p.max_connections, 75);
        let unlimited = FdLimit {
            soft: None,
            hard: None,
        };
        assert_eq!(
            plan(unlimited, 5000, reserve).unwrap().max_connections,
            5000
        );
        let e = plan(limit(106, 106), 100, reserve).unwrap_err();
        assert_eq!(e.needed, 107);
        assert_eq!(
            e.to_string(),
            "the open-file limit 106 (hard limit 106) is too low: at least 107 descriptors are \
             needed (raise it: ulimit -n, systemd LimitNOFILE=)"
        );
    }
}
