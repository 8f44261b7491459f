//! Durable file writes: the one write, fsync, rename, fsync-the-directory
//! sequence for every file Postern keeps (certificates and keys here; a
//! relay's queue, caches and state).
//!
//! A file replaced with [`replace_file`] is, after a crash at any point, either
//! the old one or the new one, never a mix or an empty file: the new content
//! goes to a temporary file on the same file system, is fsynced, renamed over
//! the target, and the directory is fsynced so that the rename itself
//! survives.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("postern-durable-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! use postern_certs::durable;
//! let path = dir.join("state.json");
//! durable::replace_file(&dir.join(".state.json.tmp"), &path, b"{}", 0o600)?;
//! assert_eq!(std::fs::read(&path)?, b"{}");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `path` (which must not exist) with `mode` on Unix (then reduced by
/// the umask; ignored elsewhere), writes `bytes` and fsyncs the file. Its
/// name is durable once its directory is synced ([`sync_dir`]).
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replaces `path` with `bytes` durably: writes them to `tmp` (a new file
/// created with `mode`, on the same file system as `path`; a stale `tmp`
/// left by a crash is removed first), fsyncs it, renames it over `path` and
/// fsyncs `path`'s directory. On error `tmp` is removed and `path` is
/// unchanged, unless only the final directory fsync failed.
pub fn replace_file(tmp: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    // A temporary file left by a crash is stale: start afresh, so `mode`
    // applies to a newly created file.
    let _ = fs::remove_file(tmp);
    let written = write_new_file(tmp, bytes, mode).and_then(|()| fs::rename(tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Fsyncs a directory, making the creations, renames and removals in it
/// durable. Only Unix can open a directory for fsync; elsewhere this does
/// nothing and durability rests on the file system.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let tmp = dir.path().join(".f.tmp");
        fs::write(&tmp, b"stale").unwrap();
        replace_file(&tmp, &path, b"one", 0o600).unwrap();
        replace_file(&tmp, &path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!tmp.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A rename that fails (the target is a directory) leaves no temporary file.
        let blocked = dir.path().join("d");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(replace_file(&tmp, &blocked, b"three", 0o600).is_err());
        assert!(!tmp.exists());
        assert!(write_new_file(&path, b"exists", 0o600).is_err());
    }
}
