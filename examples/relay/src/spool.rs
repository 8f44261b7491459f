//! The durable message queue on disk.
//!
//! # Layout
//!
//! ```text
//! <spool>/queue/<id>/content.eml     the message as received (CRLF lines)
//! <spool>/queue/<id>/envelope.json   the [`Envelope`]: sender, recipients, state
//! <spool>/tmp/                       messages being received, removals in progress
//! <spool>/corrupt/                   entries recovery could not read, moved aside
//! <spool>/flush                      present when `queue flush` asked for a retry
//! ```
//!
//! # Durability (a crash never loses an acknowledged message)
//!
//! A message is received into `tmp/<id>/` ([`Spool::begin`], then
//! [`Incoming::write_chunk`] for each piece of content). [`Incoming::commit`]
//! fsyncs the content and the envelope, fsyncs the message directory, renames
//! it to `queue/<id>` in one atomic step and fsyncs `queue/`. Only when
//! `commit` returns `Ok` may the SMTP layer answer `250` (RFC 5321 §6.1: the
//! server takes responsibility for the message when it acknowledges it).
//! A crash before the rename leaves only a `tmp/` entry, which the next
//! [`Spool::open`] deletes (that message was never acknowledged); a crash
//! after it leaves a complete queue entry.
//!
//! Envelope updates ([`Spool::update`]) write `envelope.json.tmp`, fsync it,
//! rename it over `envelope.json` and fsync the directory, so a reader sees
//! either the old or the new envelope. Removal ([`Spool::remove`]) first
//! renames the entry out of `queue/`, so a half-deleted entry is never taken
//! for a message.
//!
//! All calls are blocking file I/O; an async caller runs them with
//! `tokio::task::spawn_blocking` (commit and update fsync). Memory use is
//! bounded: content goes straight to the file through a fixed-size buffer.
//!
//! A spool is meant to be used by one relay process at a time;
//! [`Spool::scan`] is the read-only view for other processes (`queue list`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::envelope::{Envelope, MessageId};

const QUEUE_DIR: &str = "queue";
const TMP_DIR: &str = "tmp";
const CORRUPT_DIR: &str = "corrupt";
const FLUSH_FLAG: &str = "flush";
const CONTENT_FILE: &str = "content.eml";
const ENVELOPE_FILE: &str = "envelope.json";
const ENVELOPE_TMP_FILE: &str = "envelope.json.tmp";
/// Envelopes larger than this are treated as corrupt rather than read into
/// memory (a million recipients fit comfortably).
const MAX_ENVELOPE_BYTES: u64 = 256 * 1024 * 1024;
/// Buffer between the content chunks and the file.
const WRITE_BUFFER: usize = 64 * 1024;

/// An error of a spool operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file system operation failed.
    #[error("spool i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The content exceeds the size limit given to [`Spool::begin`].
    #[error("message exceeds the size limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// No message with this id is queued.
    #[error("message {0} is not queued")]
    NotQueued(MessageId),
    /// A message with this id is already queued or being received.
    #[error("message {0} already exists")]
    Duplicate(MessageId),
    /// The envelope could not be encoded.
    #[error("cannot encode envelope: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A queue entry that recovery could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptEntry {
    /// The entry's name in `queue/`.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
    /// Where [`Spool::open`] moved it; `None` from the read-only [`Spool::scan`].
    pub moved_to: Option<PathBuf>,
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every committed message, oldest first.
    pub messages: Vec<Envelope>,
    /// Unreadable entries, moved to `corrupt/`.
    pub corrupt: Vec<CorruptEntry>,
    /// Incomplete receptions or removals deleted from `tmp/`.
    pub cleaned_temp: usize,
}

/// A queued message as [`Spool::scan`] sees it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The envelope.
    pub envelope: Envelope,
    /// The content size in bytes.
    pub size: u64,
}

/// What [`Spool::scan`] found (read-only).
#[derive(Debug, Default)]
pub struct Scan {
    /// Every committed message, oldest first.
    pub messages: Vec<QueuedMessage>,
    /// Unreadable entries (left in place).
    pub corrupt: Vec<CorruptEntry>,
}

/// A durable message queue in a directory. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    queue: PathBuf,
    tmp: PathBuf,
    corrupt: PathBuf,
}

impl Spool {
    /// Opens (creating if needed) the spool in `root` and recovers it:
    /// deletes incomplete entries in `tmp/`, moves unreadable queue entries to
    /// `corrupt/` and returns every committed message.
    ///
    /// Only the relay that will deliver from this spool calls `open`; other
    /// processes use [`Spool::scan`].
    pub fn open(root: impl Into<PathBuf>) -> Result<(Self, Recovery), SpoolError> {
        let root = root.into();
        let spool = Self {
            queue: root.join(QUEUE_DIR),
            tmp: root.join(TMP_DIR),
            corrupt: root.join(CORRUPT_DIR),
            root,
        };
        for dir in [&spool.root, &spool.queue, &spool.tmp, &spool.corrupt] {
            private_dir_builder()
                .recursive(true)
                .create(dir)
                .map_err(io_at(dir))?;
        }
        let mut recovery = Recovery::default();
        for entry in fs::read_dir(&spool.tmp).map_err(io_at(&spool.tmp))? {
            let path = entry.map_err(io_at(&spool.tmp))?.path();
            remove_any(&path)?;
            recovery.cleaned_temp += 1;
        }
        for entry in read_queue_dir(&spool.queue)? {
            let path = spool.queue.join(&entry);
            // A crash during an envelope update leaves its temporary file; the
            // envelope it was to replace is still complete.
            let stale = path.join(ENVELOPE_TMP_FILE);
            if stale.is_file() {
                fs::remove_file(&stale).map_err(io_at(&stale))?;
            }
            match load_entry(&path, &entry) {
                Ok((envelope, _)) => recovery.messages.push(envelope),
                Err(reason) => {
                    let moved_to = spool.move_aside(&path, &entry)?;
                    recovery.corrupt.push(CorruptEntry {
                        name: entry,
                        reason,
                        moved_to: Some(moved_to),
                    });
                }
            }
        }
        if recovery.cleaned_temp > 0 {
            sync_dir(&spool.tmp)?;
        }
        if !recovery.corrupt.is_empty() {
            sync_dir(&spool.queue)?;
            sync_dir(&spool.corrupt)?;
        }
        recovery
            .messages
            .sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        Ok((spool, recovery))
    }

    /// Reads the spool in `root` without changing anything, for `queue list`
    /// while a relay may be running. A missing spool is an empty one.
    pub fn scan(root: &Path) -> Result<Scan, SpoolError> {
        let queue = root.join(QUEUE_DIR);
        let mut scan = Scan::default();
        if !queue.is_dir() {
            return Ok(scan);
        }
        for entry in read_queue_dir(&queue)? {
            match load_entry(&queue.join(&entry), &entry) {
                Ok((envelope, size)) => scan.messages.push(QueuedMessage { envelope, size }),
                // The relay may have removed it since the listing: not corrupt.
                Err(_) if !queue.join(&entry).exists() => {}
                Err(reason) => scan.corrupt.push(CorruptEntry {
                    name: entry,
                    reason,
                    moved_to: None,
                }),
            }
        }
        scan.messages.sort_by(|a, b| {
            (a.envelope.received_at, &a.envelope.id).cmp(&(b.envelope.received_at, &b.envelope.id))
        });
        Ok(scan)
    }

    /// The spool directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts receiving a message. `limit` caps the content size in bytes
    /// (Postfix `message_size_limit`). Nothing is queued until
    /// [`Incoming::commit`]; dropping the [`Incoming`] discards it.
    pub fn begin(&self, envelope: Envelope, limit: Option<u64>) -> Result<Incoming, SpoolError> {
        if self.queue.join(envelope.id.as_str()).exists() {
            return Err(SpoolError::Duplicate(envelope.id));
        }
        let dir = self.tmp.join(envelope.id.as_str());
        match private_dir_builder().create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SpoolError::Duplicate(envelope.id));
            }
            Err(e) => return Err(io_at(&dir)(e)),
        }
        let path = dir.join(CONTENT_FILE);
        let file = match private_file_options().create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(io_at(&path)(e));
            }
        };
        Ok(Incoming {
            envelope,
            dir,
            queue: self.queue.clone(),
            writer: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            written: 0,
            limit,
            renamed: false,
        })
    }

    /// Replaces the stored envelope of a queued message atomically
    /// (temporary file, fsync, rename, fsync of the directory).
    pub fn update(&self, envelope: &Envelope) -> Result<(), SpoolError> {
        let dir = self.queue.join(envelope.id.as_str());
        if !dir.is_dir() {
            return Err(SpoolError::NotQueued(envelope.id.clone()));
        }
        let tmp = dir.join(ENVELOPE_TMP_FILE);
        write_synced(&tmp, &serde_json::to_vec_pretty(envelope)?)?;
        let target = dir.join(ENVELOPE_FILE);
        fs::rename(&tmp, &target).map_err(io_at(&target))?;
        sync_dir(&dir)
    }

    /// Removes a message, after full delivery (and any bounce queued).
    pub fn remove(&self, id: &MessageId) -> Result<(), SpoolError> {
        let dir = self.queue.join(id.as_str());
        let doomed = self.tmp.join(format!("{id}.removed"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotQueued(id.clone()));
            }
            Err(e) => return Err(io_at(&dir)(e)),
        }
        sync_dir(&self.queue)?;
        // Once out of `queue/` the message is gone; a crash from here on leaves
        // a `tmp/` entry that the next `open` deletes.
        fs::remove_dir_all(&doomed).map_err(io_at(&doomed))
    }

    /// Opens the content of a queued message for reading (to send it on, or
    /// to quote it in a bounce).
    pub fn open_content(&self, id: &MessageId) -> Result<File, SpoolError> {
        let path = self.queue.join(id.as_str()).join(CONTENT_FILE);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SpoolError::NotQueued(id.clone())
            } else {
                io_at(&path)(e)
            }
        })
    }

    /// Asks the relay using the spool in `root` to retry every message now
    /// (what `postern-relay queue flush` does): creates the `flush` flag file,
    /// which the relay consumes with [`Spool::take_flush_request`]. The
    /// spool directory must exist.
    pub fn request_flush(root: &Path) -> Result<(), SpoolError> {
        let queue = root.join(QUEUE_DIR);
        if !queue.is_dir() {
            return Err(io_at(&queue)(io::Error::new(
                io::ErrorKind::NotFound,
                "no spool here",
            )));
        }
        write_synced(&root.join(FLUSH_FLAG), b"")?;
        sync_dir(root)
    }

    /// Whether a flush was requested since the last call; consumes the request.
    pub fn take_flush_request(&self) -> Result<bool, SpoolError> {
        let flag = self.root.join(FLUSH_FLAG);
        match fs::remove_file(&flag) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at(&flag)(e)),
        }
    }

    /// Moves an unreadable queue entry to `corrupt/`, under a name not yet taken.
    fn move_aside(&self, path: &Path, name: &str) -> Result<PathBuf, SpoolError> {
        let mut target = self.corrupt.join(name);
        let mut n = 1u32;
        while target.exists() {
            target = self.corrupt.join(format!("{name}.{n}"));
            n += 1;
        }
        fs::rename(path, &target).map_err(io_at(path))?;
        Ok(target)
    }
}

/// A message being received. See [`Spool::begin`].
///
/// Dropping it without [`commit`](Self::commit) discards the partial message.
#[derive(Debug)]
pub struct Incoming {
    envelope: Envelope,
    dir: PathBuf,
    queue: PathBuf,
    /// `None` once commit has started.
    writer: Option<BufWriter<File>>,
    /// Set once the entry was renamed into `queue/`.
    renamed: bool,
    written: u64,
    limit: Option<u64>,
}

impl Incoming {
    /// The id the message will be queued under.
    pub fn id(&self) -> &MessageId {
        &self.envelope.id
    }

    /// Content bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk of content. Fails with [`SpoolError::TooLarge`] once
    /// the total would exceed the limit; the caller then drops the message.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        let total = self.written.saturating_add(chunk.len() as u64);
        if let Some(limit) = self.limit
            && total > limit
        {
            return Err(SpoolError::TooLarge { limit });
        }
        let path = self.dir.join(CONTENT_FILE);
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io_at(&path)(io::Error::other("message already committed")))?;
        writer.write_all(chunk).map_err(io_at(&path))?;
        self.written = total;
        Ok(())
    }

    /// Makes the message durable and queues it; returns its envelope. Only
    /// after `Ok` may the server acknowledge the message with `250`.
    pub fn commit(mut self) -> Result<Envelope, SpoolError> {
        // On error Drop deletes the entry if it is still in tmp/.
        self.persist()?;
        Ok(self.envelope.clone())
    }

    fn persist(&mut self) -> Result<(), SpoolError> {
        let content = self.dir.join(CONTENT_FILE);
        let writer = self
            .writer
            .take()
            .ok_or_else(|| io_at(&content)(io::Error::other("message already committed")))?;
        let file = writer
            .into_inner()
            .map_err(|e| io_at(&content)(e.into_error()))?;
        file.sync_all().map_err(io_at(&content))?;
        drop(file);
        write_synced(
            &self.dir.join(ENVELOPE_FILE),
            &serde_json::to_vec_pretty(&self.envelope)?,
        )?;
        sync_dir(&self.dir)?;
        let target = self.queue.join(self.envelope.id.as_str());
        // `rename` of a directory onto an existing non-empty one fails, so a
        // queued message is never replaced.
        fs::rename(&self.dir, &target).map_err(io_at(&target))?;
        // The message is now queued. If the fsync below fails it stays queued
        // (commit reports the error, the client retries, and at worst the
        // message is delivered twice: never lost).
        self.renamed = true;
        sync_dir(&self.queue)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Discard a message that never reached queue/ (best effort: whatever
        // remains in tmp/ is deleted by the next `Spool::open`).
        if !self.renamed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Names of the entries of `queue/` (unsorted).
fn read_queue_dir(queue: &Path) -> Result<Vec<String>, SpoolError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(queue).map_err(io_at(queue))? {
        let entry = entry.map_err(io_at(queue))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Reads one queue entry: its envelope and content size, or why it is unusable.
fn load_entry(path: &Path, name: &str) -> Result<(Envelope, u64), String> {
    let id: MessageId = name
        .parse()
        .map_err(|_| "name is not a message id".to_owned())?;
    if !path.is_dir() {
        return Err("not a directory".into());
    }
    let content = fs::metadata(path.join(CONTENT_FILE)).map_err(|e| format!("content: {e}"))?;
    if !content.is_file() {
        return Err("content is not a file".into());
    }
    let env_path = path.join(ENVELOPE_FILE);
    let file = File::open(&env_path).map_err(|e| format!("envelope: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_ENVELOPE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("envelope: {e}"))?;
    if bytes.len() as u64 > MAX_ENVELOPE_BYTES {
        return Err("envelope too large".into());
    }
    let envelope: Envelope =
        serde_json::from_slice(&bytes).map_err(|e| format!("envelope: {e}"))?;
    if envelope.id != id {
        return Err(format!("envelope is for message {}", envelope.id));
    }
    Ok((envelope, content.len()))
}

/// Creates or truncates `path`, writes `bytes` and fsyncs the file.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let mut file = private_file_options()
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_at(path))?;
    file.write_all(bytes).map_err(io_at(path))?;
    file.sync_all().map_err(io_at(path))
}

/// Mail is private: spool directories are created `0700` on Unix.
fn private_dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

/// Spool files are created `0600` on Unix, for writing.
fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Fsyncs a directory, making renames and creations in it durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))?;
    // Elsewhere directories cannot be opened for fsync; rename durability
    // then rests on the file system.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Removes a file or a directory tree.
fn remove_any(path: &Path) -> Result<(), SpoolError> {
    let meta = fs::symlink_metadata(path).map_err(io_at(path))?;
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(io_at(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Failure, MailParams, Recipient, RecipientState};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn envelope(at: u64) -> Envelope {
        Envelope::new(
            "sender@example.org",
            [
                Recipient::new("a@example.com"),
                Recipient::new("b@example.net"),
            ],
            MailParams::default(),
            t(at),
        )
    }

    fn receive(spool: &Spool, env: Envelope, chunks: &[&[u8]]) -> Envelope {
        let mut incoming = spool.begin(env, None).unwrap();
        for chunk in chunks {
            incoming.write_chunk(chunk).unwrap();
        }
        incoming.commit().unwrap()
    }

    fn content(spool: &Spool, id: &MessageId) -> Vec<u8> {
        let mut out = Vec::new();
        spool
            .open_content(id)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn committed_message_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert!(recovery.messages.is_empty());
        let env = receive(&spool, envelope(0), &[b"Subject: hi\r\n", b"\r\nbody\r\n"]);
        drop(spool);

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![env.clone()]);
        assert!(recovery.corrupt.is_empty());
        assert_eq!(recovery.cleaned_temp, 0);
        assert_eq!(content(&spool, &env.id), b"Subject: hi\r\n\r\nbody\r\n");
    }

    #[test]
    fn crash_during_reception_loses_only_the_unacknowledged_message() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let kept = receive(&spool, envelope(0), &[b"kept\r\n"]);
        let mut partial = spool.begin(envelope(1), None).unwrap();
        partial.write_chunk(b"half a mess").unwrap();
        let partial_id = partial.id().clone();
        // Simulated crash: the process dies, no destructor runs.
        std::mem::forget(partial);
        assert!(dir.path().join("tmp").join(partial_id.as_str()).exists());
        // A message whose commit reached the rename but not beyond is whole.
        drop(spool);

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.cleaned_temp, 1);
        assert_eq!(recovery.messages, vec![kept.clone()]);
        assert!(!dir.path().join("tmp").join(partial_id.as_str()).exists());
        assert!(matches!(
            spool.open_content(&partial_id),
            Err(SpoolError::NotQueued(_))
        ));
        assert_eq!(content(&spool, &kept.id), b"kept\r\n");
    }

    #[cfg(unix)]
    #[test]
    fn spool_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        let (spool, _) = Spool::open(&root).unwrap();
        let env = receive(&spool, envelope(0), &[b"secret"]);
        spool.update(&env).unwrap();
        let entry = root.join("queue").join(env.id.as_str());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("queue")), 0o700);
        assert_eq!(mode(&entry), 0o700);
        assert_eq!(mode(&entry.join(CONTENT_FILE)), 0o600);
        assert_eq!(mode(&entry.join(ENVELOPE_FILE)), 0o600);
    }

    #[test]
    fn dropped_reception_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut incoming = spool.begin(envelope(0), None).unwrap();
        incoming.write_chunk(b"x").unwrap();
        drop(incoming);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("queue")).unwrap().count(), 0);
    }

    #[test]
    fn size_limit_is_enforced_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut incoming = spool.begin(envelope(0), Some(10)).unwrap();
        incoming.write_chunk(b"12345").unwrap();
        incoming.write_chunk(b"67890").unwrap();
        assert!(matches!(
            incoming.write_chunk(b"1"),
            Err(SpoolError::TooLarge { limit: 10 })
        ));
        assert_eq!(incoming.written(), 10);
    }

    #[test]
    fn update_is_persisted_and_stale_temp_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut env = receive(&spool, envelope(0), &[b"x\r\n"]);
        env.attempts = 3;
        env.recipients[0].state = RecipientState::Deferred;
        env.last_failure = Some(Failure::new(
            "4.4.1".parse().unwrap(),
            "connection refused",
            t(5),
        ));
        spool.update(&env).unwrap();
        // A crash in the middle of a later update leaves a partial temp file.
        let entry = dir.path().join("queue").join(env.id.as_str());
        fs::write(entry.join(ENVELOPE_TMP_FILE), b"{\"id\": \"trunc").unwrap();
        drop(spool);

        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![env]);
        assert!(recovery.corrupt.is_empty());
        assert!(!entry.join(ENVELOPE_TMP_FILE).exists());
    }

    #[test]
    fn corrupt_entries_are_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let good = receive(&spool, envelope(0), &[b"good\r\n"]);
        let bad_json = receive(&spool, envelope(1), &[b"bad\r\n"]);
        let no_content = receive(&spool, envelope(2), &[b"gone\r\n"]);
        let queue = dir.path().join("queue");
        fs::write(
            queue.join(bad_json.id.as_str()).join(ENVELOPE_FILE),
            b"not json",
        )
        .unwrap();
        fs::remove_file(queue.join(no_content.id.as_str()).join(CONTENT_FILE)).unwrap();
        fs::write(queue.join("stray-file"), b"?").unwrap();
        drop(spool);

        // The read-only scan reports but moves nothing.
        let scan = Spool::scan(dir.path()).unwrap();
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(scan.corrupt.len(), 3);
        assert!(queue.join(bad_json.id.as_str()).exists());

        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![good]);
        let mut names: Vec<_> = recovery.corrupt.iter().map(|c| c.name.clone()).collect();
        names.sort();
        let mut expected = vec![
            bad_json.id.to_string(),
            no_content.id.to_string(),
            "stray-file".to_owned(),
        ];
        expected.sort();
        assert_eq!(names, expected);
        for c in &recovery.corrupt {
            assert!(c.moved_to.as_ref().unwrap().exists(), "{c:?}");
        }
        assert!(!queue.join(bad_json.id.as_str()).exists());
        // A second start finds a clean queue.
        let (_, again) = Spool::open(dir.path()).unwrap();
        assert!(again.corrupt.is_empty());
        assert_eq!(again.messages.len(), 1);
    }

    #[test]
    fn envelope_for_another_id_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let a = receive(&spool, envelope(0), &[b"a"]);
        let b = receive(&spool, envelope(1), &[b"b"]);
        let queue = dir.path().join("queue");
        fs::copy(
            queue.join(a.id.as_str()).join(ENVELOPE_FILE),
            queue.join(b.id.as_str()).join(ENVELOPE_FILE),
        )
        .unwrap();
        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![a]);
        assert_eq!(recovery.corrupt.len(), 1);
        assert!(
            recovery.corrupt[0]
                .reason
                .contains("envelope is for message")
        );
    }

    #[test]
    fn remove_deletes_and_scan_sees_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let a = receive(&spool, envelope(5), &[b"12345"]);
        let b = receive(&spool, envelope(1), &[b"123"]);
        let scan = Spool::scan(dir.path()).unwrap();
        let listed: Vec<_> = scan
            .messages
            .iter()
            .map(|m| (m.envelope.id.clone(), m.size))
            .collect();
        assert_eq!(listed, vec![(b.id.clone(), 3), (a.id.clone(), 5)]);

        spool.remove(&a.id).unwrap();
        assert!(matches!(spool.remove(&a.id), Err(SpoolError::NotQueued(_))));
        assert!(matches!(spool.update(&a), Err(SpoolError::NotQueued(_))));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![b]);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let env = envelope(0);
        let committed = receive(&spool, env.clone(), &[b"x"]);
        assert!(matches!(
            spool.begin(committed, None),
            Err(SpoolError::Duplicate(_))
        ));
        let other = envelope(1);
        let _first = spool.begin(other.clone(), None).unwrap();
        assert!(matches!(
            spool.begin(other, None),
            Err(SpoolError::Duplicate(_))
        ));
    }

    #[test]
    fn flush_flag_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Spool::request_flush(dir.path()).is_err(), "no spool yet");
        let (spool, _) = Spool::open(dir.path()).unwrap();
        assert!(!spool.take_flush_request().unwrap());
        Spool::request_flush(dir.path()).unwrap();
        assert!(spool.take_flush_request().unwrap());
        assert!(!spool.take_flush_request().unwrap());
    }

    #[test]
    fn scan_of_missing_spool_is_empty_and_scan_does_not_clean() {
        let dir = tempfile::tempdir().unwrap();
        let scan = Spool::scan(&dir.path().join("nothing")).unwrap();
        assert!(scan.messages.is_empty() && scan.corrupt.is_empty());
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let incoming = spool.begin(envelope(0), None).unwrap();
        let id = incoming.id().clone();
        std::mem::forget(incoming);
        Spool::scan(dir.path()).unwrap();
        assert!(dir.path().join("tmp").join(id.as_str()).exists());
    }
}
