//! One relay per state directory: an exclusive lock on
//! `<state_dir>/relay.lock`, taken before anything in the directory is
//! touched and held until the relay is dropped (Postfix's `master.lock`).
//!
//! The lock is an advisory `flock` on the file (std's [`File::try_lock`]),
//! released by the kernel when the process ends, even by `kill -9`: a stale
//! lock file never blocks a restart. The file holds the process id of its
//! holder, so that a second instance can name it.
//!
//! ```
//! use postern_relay::queue::lock::{LockError, StateLock};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let held = StateLock::acquire(dir.path()).unwrap();
//! match StateLock::acquire(dir.path()) {
//!     Err(LockError::Busy { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
//!     other => panic!("{other:?}"),
//! }
//! drop(held);
//! assert!(StateLock::acquire(dir.path()).is_ok());
//! ```

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "relay.lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "state directory {} is in use by another postern-relay ({}): stop it, or give this relay its own state_dir",
        dir.display(),
        pid.map_or_else(|| "process id unknown".to_owned(), |p| format!("pid {p}"))
    )]
    Busy {
        /// The state directory.
        dir: PathBuf,
        /// The process id written in the lock file by its holder, if readable.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock the state directory: {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The exclusive lock on a state directory; released when dropped.
#[derive(Debug)]
pub struct StateLock {
    // Held open for the lock; closing it releases the lock.
    _file: File,
}

impl StateLock {
    /// Locks `dir` (which must exist) without waiting, and records this
    /// process id in the lock file.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        // The state directory may belong to the relay's `user` while this
        // runs as root: never write through a link it put there.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, nix::libc::O_NOFOLLOW);
        let mut file = options.open(&path).map_err(io)?;
        #[cfg(unix)]
        if std::os::unix::fs::MetadataExt::nlink(&file.metadata().map_err(io)?) > 1 {
            return Err(io(std::io::Error::other(
                "the lock file has other hard links: remove it",
            )));
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may not have written its pid yet: then it is unknown.
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Busy {
                    dir: dir.to_owned(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn never_writes_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "precious\n").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.join(LOCK_FILE)).unwrap();
        assert!(matches!(
            StateLock::acquire(&state),
            Err(LockError::Io { .. })
        ));
        std::fs::remove_file(state.join(LOCK_FILE)).unwrap();
        std::fs::hard_link(&elsewhere, state.join(LOCK_FILE)).unwrap();
        let err = StateLock::acquire(&state).unwrap_err();
        assert!(err.to_string().contains("hard links"), "{err}");
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "precious\n");
        std::fs::remove_file(state.join(LOCK_FILE)).unwrap();
        let _lock = StateLock::acquire(&state).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.join(LOCK_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
    }
}
