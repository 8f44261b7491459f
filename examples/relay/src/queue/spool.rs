//! The durable message queue on disk.
//!
//! # Layout
//!
//! ```text
//! <spool>/queue/<id>.msg   one queued message: a header line, its envelope as
//!                          received (JSON), then the content (CRLF lines)
//! <spool>/queue/<id>.env   the envelope as last updated (delivery state), once
//!                          a delivery attempt left something to remember
//! <spool>/tmp/             messages being received, updates being written
//! <spool>/corrupt/         entries recovery could not read, moved aside
//! <spool>/requests/        operator requests to the running relay
//!                          (`<rid>.req`) and its answers (`<rid>.done`):
//!                          see [`crate::queue::control`]
//! <spool>/flush            the flush flag of earlier versions' `queue
//!                          flush`, still honoured (a flush of every message)
//! ```
//!
//! One message is one file: receiving it creates one inode and costs two
//! fsyncs, and a message delivered at the first attempt is never rewritten.
//! The header line is `postern-queue 1 <n>`, where `n` is the length in bytes
//! of the envelope JSON that follows it (itself followed by a line feed);
//! the content starts right after.
//!
//! # Durability (a crash never loses an acknowledged message)
//!
//! A message is received into `tmp/<id>.msg` ([`Spool::begin`], which writes
//! the header and envelope, then [`Incoming::write_chunk`] for each piece of
//! content). [`Incoming::commit`] fsyncs the file, renames it to
//! `queue/<id>.msg` in one atomic step and fsyncs `queue/`. Only when
//! `commit` returns `Ok` may the SMTP layer answer `250` (RFC 5321 §6.1: the
//! server takes responsibility for the message when it acknowledges it).
//! A crash before the rename leaves only a `tmp/` entry, which the next
//! [`Spool::open`] deletes (that message was never acknowledged); a crash
//! after it leaves a complete queue entry.
//!
//! Envelope updates ([`Spool::update`]) write `tmp/<id>.env`, fsync it,
//! rename it over `queue/<id>.env` and fsync `queue/`, so a reader sees
//! either the old or the new envelope. Removal ([`Spool::remove`]) unlinks
//! the message file first, then its envelope file: a crash in between leaves
//! an envelope file without a message, which the next [`Spool::open`]
//! deletes. Removal is not fsynced: a crash right after it can bring the
//! message back, and it is then delivered again (a duplicate, never a loss).
//!
//! All calls are blocking file I/O; an async caller runs them with
//! `tokio::task::spawn_blocking` (commit and update fsync). Memory use is
//! bounded: content goes straight to the file through a fixed-size buffer.
//!
//! A spool is meant to be used by one relay process at a time;
//! [`Spool::scan`] and [`Spool::read_message`] are the read-only views for
//! other processes (`queue list`, `queue show`), and [`Spool::attach`]
//! serves a process that holds the state-directory lock instead of a
//! relay (`queue delete` on a stopped relay).
//!
//! Earlier versions kept each message in a directory
//! (`queue/<id>/content.eml` and `queue/<id>/envelope.json`);
//! [`Spool::open`] converts such entries to the one-file layout, and
//! [`Spool::scan`] reads them as they are.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use postern_certs::durable;

use crate::envelope::{Envelope, MessageId};

const QUEUE_DIR: &str = "queue";
const TMP_DIR: &str = "tmp";
const CORRUPT_DIR: &str = "corrupt";
const REQUESTS_DIR: &str = "requests";
const FLUSH_FLAG: &str = "flush";
/// Extension of a request to the relay, once complete.
const REQUEST_EXT: &str = "req";
/// Extension of a request being written.
const REQUEST_TMP_EXT: &str = "tmp";
/// Extension of the relay's answer to a request.
const ANSWER_EXT: &str = "done";
/// Requests and answers are small; larger files are refused unread.
const MAX_REQUEST_BYTES: u64 = 1024 * 1024;
/// An answer no command collected (it gave up waiting) is deleted at the
/// relay's next start once it is this old.
const STALE_ANSWER: std::time::Duration = std::time::Duration::from_secs(60);
/// Extension of a message file.
const MESSAGE_EXT: &str = "msg";
/// Extension of an updated envelope.
const ENVELOPE_EXT: &str = "env";
/// The header line's prefix; the version follows the name.
const HEADER_PREFIX: &str = "postern-queue 1 ";
/// The header line is short: the prefix, at most 20 digits and a line feed.
const MAX_HEADER_BYTES: usize = 64;
/// Files of the directory layout of earlier versions.
const LEGACY_CONTENT_FILE: &str = "content.eml";
const LEGACY_ENVELOPE_FILE: &str = "envelope.json";
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
    /// A queued message file does not have the expected form.
    #[error("queue file {} is damaged: {reason}", path.display())]
    Damaged {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
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
    /// Incomplete receptions, updates or removals deleted.
    pub cleaned_temp: usize,
    /// Messages converted from the directory layout of earlier versions.
    pub converted: usize,
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

/// A request waiting in `requests/` ([`Spool::pending_requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// Its id, under which it is answered ([`Spool::answer_request`]).
    pub rid: String,
    /// Its bytes, or why they could not be read.
    pub bytes: Result<Vec<u8>, String>,
}

/// What a name in `queue/` stands for.
enum QueueName {
    /// `<id>.msg`: a message file.
    Message(MessageId),
    /// `<id>.env`: the updated envelope of message `<id>`.
    Envelope(MessageId),
    /// `<id>`: a message directory of the earlier layout.
    Legacy(MessageId),
    /// Anything else.
    Stray,
}

impl QueueName {
    fn of(name: &str) -> Self {
        let id = |s: &str| s.parse::<MessageId>().ok();
        match name.rsplit_once('.') {
            Some((stem, MESSAGE_EXT)) => id(stem).map_or(Self::Stray, Self::Message),
            Some((stem, ENVELOPE_EXT)) => id(stem).map_or(Self::Stray, Self::Envelope),
            _ => id(name).map_or(Self::Stray, Self::Legacy),
        }
    }
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
    /// The spool in `root`, as paths only: nothing is read or created.
    fn at(root: &Path) -> Self {
        Self {
            queue: root.join(QUEUE_DIR),
            tmp: root.join(TMP_DIR),
            corrupt: root.join(CORRUPT_DIR),
            root: root.to_owned(),
        }
    }

    /// Opens (creating if needed) the spool in `root` and recovers it:
    /// deletes incomplete entries in `tmp/` and envelope files left by a
    /// removal, converts message directories of earlier versions, moves
    /// unreadable queue entries to `corrupt/` and returns every committed
    /// message.
    ///
    /// Only the relay that will deliver from this spool calls `open`; other
    /// processes use [`Spool::scan`].
    pub fn open(root: impl Into<PathBuf>) -> Result<(Self, Recovery), SpoolError> {
        let spool = Self::at(&root.into());
        let requests = spool.root.join(REQUESTS_DIR);
        for dir in [
            &spool.root,
            &spool.queue,
            &spool.tmp,
            &spool.corrupt,
            &requests,
        ] {
            private_dir_builder()
                .recursive(true)
                .create(dir)
                .map_err(io_at(dir))?;
        }
        clean_requests(&requests)?;
        let mut recovery = Recovery::default();
        for entry in fs::read_dir(&spool.tmp).map_err(io_at(&spool.tmp))? {
            let path = entry.map_err(io_at(&spool.tmp))?.path();
            remove_any(&path)?;
            recovery.cleaned_temp += 1;
        }
        let names = read_queue_dir(&spool.queue)?;
        // Convert the directory layout first, so that the loop below sees
        // each message once, as a file.
        for name in &names {
            if let QueueName::Legacy(id) = QueueName::of(name) {
                let dir = spool.queue.join(name);
                if spool.convert_legacy(&dir, &id).is_ok() {
                    recovery.converted += 1;
                }
                // A directory that cannot be converted stays, and is moved
                // aside below with the reason.
            }
        }
        let names = if recovery.converted > 0 {
            read_queue_dir(&spool.queue)?
        } else {
            names
        };
        for name in names {
            let path = spool.queue.join(&name);
            let kind = QueueName::of(&name);
            let loaded = match &kind {
                QueueName::Message(id) => spool.load(id).map(|(envelope, _)| envelope),
                QueueName::Envelope(id) => {
                    if spool.message_path(id).exists() || !path.exists() {
                        // Its message's, or moved aside with it.
                        continue;
                    }
                    // Left by a removal interrupted between its two unlinks.
                    fs::remove_file(&path).map_err(io_at(&path))?;
                    recovery.cleaned_temp += 1;
                    continue;
                }
                QueueName::Legacy(id) => load_legacy(&path, id).map(|(envelope, _)| envelope),
                QueueName::Stray => Err("name is not a message id".to_owned()),
            };
            match loaded {
                Ok(envelope) => recovery.messages.push(envelope),
                Err(reason) => {
                    let moved_to = spool.move_aside(&path, &name)?;
                    if let QueueName::Message(id) = &kind {
                        // The updated envelope goes with its message.
                        let updated = spool.envelope_path(id);
                        if updated.exists() {
                            spool.move_aside(&updated, &file_name(id, ENVELOPE_EXT))?;
                        }
                    }
                    recovery.corrupt.push(CorruptEntry {
                        name,
                        reason,
                        moved_to: Some(moved_to),
                    });
                }
            }
        }
        if recovery.cleaned_temp > 0 {
            sync_dir(&spool.tmp)?;
        }
        if recovery.cleaned_temp > 0 || recovery.converted > 0 || !recovery.corrupt.is_empty() {
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
        let spool = Self::at(root);
        let mut scan = Scan::default();
        if !spool.queue.is_dir() {
            return Ok(scan);
        }
        for name in read_queue_dir(&spool.queue)? {
            let path = spool.queue.join(&name);
            let loaded = match QueueName::of(&name) {
                QueueName::Message(id) => spool.load(&id),
                QueueName::Envelope(_) => continue,
                // Converted, and the directory not yet deleted.
                QueueName::Legacy(id) if spool.message_path(&id).is_file() => continue,
                QueueName::Legacy(id) => load_legacy(&path, &id),
                QueueName::Stray => Err("name is not a message id".to_owned()),
            };
            match loaded {
                Ok((envelope, size)) => scan.messages.push(QueuedMessage { envelope, size }),
                // The relay may have removed it since the listing: not corrupt.
                Err(_) if !path.exists() => {}
                Err(reason) => scan.corrupt.push(CorruptEntry {
                    name,
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

    /// The spool in `root` as it is, without recovery, for a process that
    /// holds the state-directory lock in place of a relay
    /// ([`StateLock`](crate::queue::lock::StateLock)): `queue delete`,
    /// `hold` and `release` on a stopped relay. Fails if there is no spool.
    pub fn attach(root: &Path) -> Result<Self, SpoolError> {
        let spool = Self::at(root);
        for dir in [&spool.queue, &spool.tmp] {
            if !dir.is_dir() {
                return Err(no_spool(dir));
            }
        }
        Ok(spool)
    }

    /// Reads one queued message without changing anything (`queue show`):
    /// its current envelope, its content size and its content, positioned
    /// at the start. A message removed meanwhile (delivered, deleted) is
    /// [`SpoolError::NotQueued`].
    pub fn read_message(root: &Path, id: &MessageId) -> Result<(Envelope, u64, File), SpoolError> {
        let spool = Self::at(root);
        if !spool.queue.is_dir() {
            return Err(no_spool(&spool.queue));
        }
        let not_queued = |path: &Path, e: io::Error| {
            if e.kind() == io::ErrorKind::NotFound {
                SpoolError::NotQueued(id.clone())
            } else {
                io_at(path)(e)
            }
        };
        let path = spool.message_path(id);
        let legacy = spool.queue.join(id.as_str());
        if !path.is_file() && legacy.is_dir() {
            // A message directory of an earlier version, not yet converted.
            let (envelope, size) =
                load_legacy(&legacy, id).map_err(|reason| unreadable(&legacy, id, reason))?;
            let content = legacy.join(LEGACY_CONTENT_FILE);
            let file = File::open(&content).map_err(|e| not_queued(&content, e))?;
            return Ok((envelope, size, file));
        }
        let (envelope, size) = spool
            .load(id)
            .map_err(|reason| unreadable(&path, id, reason))?;
        Ok((envelope, size, spool.open_content(id)?))
    }

    /// The spool directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts receiving a message. `limit` caps the content size in bytes
    /// (Postfix `message_size_limit`). Nothing is queued until
    /// [`Incoming::commit`]; dropping the [`Incoming`] discards it.
    pub fn begin(&self, envelope: Envelope, limit: Option<u64>) -> Result<Incoming, SpoolError> {
        let name = file_name(&envelope.id, MESSAGE_EXT);
        let target = self.queue.join(&name);
        if target.exists() {
            return Err(SpoolError::Duplicate(envelope.id));
        }
        let path = self.tmp.join(name);
        let file = match private_file_options().create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SpoolError::Duplicate(envelope.id));
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        let mut incoming = Incoming {
            envelope,
            path,
            target,
            queue: self.queue.clone(),
            writer: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            written: 0,
            limit,
            renamed: false,
        };
        // On error, dropping `incoming` deletes the file.
        let json = serde_json::to_vec(&incoming.envelope)?;
        let header = format!("{HEADER_PREFIX}{}\n", json.len());
        incoming.write_raw(header.as_bytes())?;
        incoming.write_raw(&json)?;
        incoming.write_raw(b"\n")?;
        Ok(incoming)
    }

    /// Replaces the stored envelope of a queued message atomically
    /// (temporary file, fsync, rename, fsync of `queue/`).
    pub fn update(&self, envelope: &Envelope) -> Result<(), SpoolError> {
        if !self.message_path(&envelope.id).is_file() {
            return Err(SpoolError::NotQueued(envelope.id.clone()));
        }
        let name = file_name(&envelope.id, ENVELOPE_EXT);
        let target = self.queue.join(&name);
        let tmp = self.tmp.join(name);
        let json = serde_json::to_vec_pretty(envelope)?;
        durable::replace_file(&tmp, &target, &json, PRIVATE_FILE_MODE).map_err(io_at(&target))
    }

    /// Deletes a message at the operator's request (`queue delete`):
    /// [`remove`](Self::remove), then `queue/` fsynced, so that a deleted
    /// message does not come back after a crash.
    pub fn delete(&self, id: &MessageId) -> Result<(), SpoolError> {
        self.remove(id)?;
        sync_dir(&self.queue)
    }

    /// Removes a message, after full delivery (and any bounce queued).
    pub fn remove(&self, id: &MessageId) -> Result<(), SpoolError> {
        let message = self.message_path(id);
        match fs::remove_file(&message) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotQueued(id.clone()));
            }
            Err(e) => return Err(io_at(&message)(e)),
        }
        // The message is gone; a crash from here on leaves its envelope file,
        // which the next `open` deletes.
        let envelope = self.envelope_path(id);
        match fs::remove_file(&envelope) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&envelope)(e)),
            _ => Ok(()),
        }
    }

    /// Opens the content of a queued message for reading (to send it on, or
    /// to quote it in a bounce). The file is positioned at the start of the
    /// content and reads to its end.
    pub fn open_content(&self, id: &MessageId) -> Result<File, SpoolError> {
        let path = self.message_path(id);
        let mut file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SpoolError::NotQueued(id.clone())
            } else {
                io_at(&path)(e)
            }
        })?;
        let (header_len, json_len) =
            read_header(&mut file).map_err(|reason| SpoolError::Damaged {
                path: path.clone(),
                reason,
            })?;
        // The envelope and its line feed are skipped.
        file.seek(SeekFrom::Start(header_len + json_len + 1))
            .map_err(io_at(&path))?;
        Ok(file)
    }

    /// Hands a request to the relay using the spool in `root` (see
    /// [`crate::queue::control`]): written to `requests/<rid>.tmp`, fsynced,
    /// renamed to `requests/<rid>.req` and the directory fsynced, so the
    /// relay reads it whole, and after a crash or at its next start if it
    /// is not running. Returns `rid`, under which the relay answers
    /// ([`Spool::take_answer`]).
    pub fn submit_request(root: &Path, request: &[u8]) -> Result<String, SpoolError> {
        let queue = root.join(QUEUE_DIR);
        if !queue.is_dir() {
            return Err(no_spool(&queue));
        }
        let dir = root.join(REQUESTS_DIR);
        // Created by the relay at start; a spool of an earlier version has none.
        private_dir_builder()
            .recursive(true)
            .create(&dir)
            .map_err(io_at(&dir))?;
        // Unique: the time, this process id and a counter.
        let rid = MessageId::generate(std::time::SystemTime::now()).to_string();
        let tmp = dir.join(format!("{rid}.{REQUEST_TMP_EXT}"));
        let path = dir.join(format!("{rid}.{REQUEST_EXT}"));
        let written = durable::write_new_file(&tmp, request, PRIVATE_FILE_MODE)
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_at(&path)(e));
        }
        sync_dir(&dir)?;
        Ok(rid)
    }

    /// The requests waiting in `requests/`, oldest first.
    pub fn pending_requests(&self) -> Result<Vec<PendingRequest>, SpoolError> {
        let dir = self.root.join(REQUESTS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&dir)(e)),
        };
        let mut pending = Vec::new();
        for entry in entries {
            let name = entry.map_err(io_at(&dir))?.file_name();
            let Some((rid, REQUEST_EXT)) = name.to_str().and_then(|n| n.rsplit_once('.')) else {
                continue;
            };
            let path = dir.join(&name);
            let bytes = File::open(&path).and_then(|file| {
                let mut bytes = Vec::new();
                file.take(MAX_REQUEST_BYTES + 1).read_to_end(&mut bytes)?;
                Ok(bytes)
            });
            let bytes = match bytes {
                Ok(b) if b.len() as u64 > MAX_REQUEST_BYTES => Err("request too large".to_owned()),
                Ok(b) => Ok(b),
                Err(e) => Err(e.to_string()),
            };
            pending.push(PendingRequest {
                rid: rid.to_owned(),
                bytes,
            });
        }
        pending.sort_by(|a, b| a.rid.cmp(&b.rid));
        Ok(pending)
    }

    /// Answers request `rid`: writes `requests/<rid>.done` durably (the
    /// command waiting for it reads it whole), then deletes the request. A
    /// crash in between applies the request again at the next start.
    pub fn answer_request(&self, rid: &str, answer: &[u8]) -> Result<(), SpoolError> {
        let dir = self.root.join(REQUESTS_DIR);
        let path = dir.join(format!("{rid}.{ANSWER_EXT}"));
        let tmp = self.tmp.join(format!("{rid}.{ANSWER_EXT}"));
        durable::replace_file(&tmp, &path, answer, PRIVATE_FILE_MODE).map_err(io_at(&path))?;
        let request = dir.join(format!("{rid}.{REQUEST_EXT}"));
        match fs::remove_file(&request) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&request)(e)),
            _ => {}
        }
        sync_dir(&dir)
    }

    /// The relay's answer to request `rid`, consumed, if it has answered.
    pub fn take_answer(root: &Path, rid: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        let path = root.join(REQUESTS_DIR).join(format!("{rid}.{ANSWER_EXT}"));
        let bytes = match File::open(&path) {
            Ok(file) => {
                let mut bytes = Vec::new();
                file.take(MAX_REQUEST_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(io_at(&path))?;
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        fs::remove_file(&path).map_err(io_at(&path))?;
        Ok(Some(bytes))
    }

    /// Whether an earlier version's `queue flush` left its flag file (a
    /// flush of every message); consumes it.
    pub fn take_flush_request(&self) -> Result<bool, SpoolError> {
        let flag = self.root.join(FLUSH_FLAG);
        match fs::remove_file(&flag) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at(&flag)(e)),
        }
    }

    fn message_path(&self, id: &MessageId) -> PathBuf {
        self.queue.join(file_name(id, MESSAGE_EXT))
    }

    fn envelope_path(&self, id: &MessageId) -> PathBuf {
        self.queue.join(file_name(id, ENVELOPE_EXT))
    }

    /// Reads a queued message's current envelope (the updated one if there
    /// is one) and content size, or why it is unusable.
    fn load(&self, id: &MessageId) -> Result<(Envelope, u64), String> {
        let path = self.message_path(id);
        let mut file = File::open(&path).map_err(|e| e.to_string())?;
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let (header_len, json_len) = read_header(&mut file)?;
        let content_start = header_len + json_len + 1;
        if size < content_start {
            return Err("truncated before the content".into());
        }
        let updated = self.envelope_path(id);
        let envelope = match File::open(&updated) {
            Ok(file) => read_envelope(file, MAX_ENVELOPE_BYTES, id)
                .map_err(|e| format!("{ENVELOPE_EXT} file: {e}"))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                read_envelope((&mut file).take(json_len), json_len, id)?
            }
            Err(e) => return Err(format!("{ENVELOPE_EXT} file: {e}")),
        };
        Ok((envelope, size - content_start))
    }

    /// Rewrites a message directory of the earlier layout as one message
    /// file: written in `tmp/`, fsynced, renamed into `queue/`, `queue/`
    /// fsynced, and only then the directory deleted. A crash at any point
    /// leaves the directory or the file (or both: the next start converts
    /// the directory again, keeping the file).
    fn convert_legacy(&self, dir: &Path, id: &MessageId) -> Result<(), String> {
        let (envelope, _) = load_legacy(dir, id)?;
        // A file already in `queue/` was fsynced before its rename: only the
        // deletion of the directory was interrupted.
        if !self.message_path(id).is_file() {
            let content = dir.join(LEGACY_CONTENT_FILE);
            let mut source = File::open(&content).map_err(|e| e.to_string())?;
            let mut incoming = self.begin(envelope, None).map_err(|e| e.to_string())?;
            let mut buf = vec![0; WRITE_BUFFER];
            loop {
                let n = source.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                incoming.write_chunk(&buf[..n]).map_err(|e| e.to_string())?;
            }
            incoming.commit().map_err(|e| e.to_string())?;
        }
        fs::remove_dir_all(dir).map_err(|e| e.to_string())
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
    /// The file being written, in `tmp/`.
    path: PathBuf,
    /// Where commit renames it, in `queue/`.
    target: PathBuf,
    queue: PathBuf,
    /// `None` once commit has started.
    writer: Option<BufWriter<File>>,
    /// Set once the file was renamed into `queue/`.
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
        self.write_raw(chunk)?;
        self.written = total;
        Ok(())
    }

    /// Appends bytes to the file, outside the content count.
    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io_at(&self.path)(io::Error::other("message already committed")))?;
        writer.write_all(bytes).map_err(io_at(&self.path))
    }

    /// Makes the message durable and queues it; returns its envelope. Only
    /// after `Ok` may the server acknowledge the message with `250`.
    pub fn commit(mut self) -> Result<Envelope, SpoolError> {
        // On error Drop deletes the file if it is still in tmp/.
        self.persist()?;
        Ok(self.envelope.clone())
    }

    fn persist(&mut self) -> Result<(), SpoolError> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| io_at(&self.path)(io::Error::other("message already committed")))?;
        let file = writer
            .into_inner()
            .map_err(|e| io_at(&self.path)(e.into_error()))?;
        file.sync_all().map_err(io_at(&self.path))?;
        drop(file);
        // `begin` made sure no message with this id is queued, and its
        // `create_new` in `tmp/` that no other is being received: the rename
        // replaces nothing.
        fs::rename(&self.path, &self.target).map_err(io_at(&self.target))?;
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
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `<id>.<ext>`: the name of a message's file in `queue/` and `tmp/`.
fn file_name(id: &MessageId, ext: &str) -> String {
    format!("{id}.{ext}")
}

/// The error of a command run where there is no spool.
fn no_spool(dir: &Path) -> SpoolError {
    io_at(dir)(io::Error::new(io::ErrorKind::NotFound, "no spool here"))
}

/// A message file at `path` that could not be read for `reason`: damaged
/// if it is still there, else gone from the queue meanwhile.
fn unreadable(path: &Path, id: &MessageId, reason: String) -> SpoolError {
    if path.exists() {
        SpoolError::Damaged {
            path: path.to_owned(),
            reason,
        }
    } else {
        SpoolError::NotQueued(id.clone())
    }
}

/// At the relay's start: deletes requests left half-written by a command
/// that stopped, and answers no command collected.
fn clean_requests(dir: &Path) -> Result<(), SpoolError> {
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        let stale = match path.extension().and_then(|e| e.to_str()) {
            Some(REQUEST_TMP_EXT) => true,
            Some(ANSWER_EXT) => fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_ANSWER)),
            _ => false,
        };
        if stale {
            remove_any(&path)?;
        }
    }
    Ok(())
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

/// Reads a message file's header line; returns its length (line feed
/// included) and the length of the envelope JSON that follows.
fn read_header(file: &mut File) -> Result<(u64, u64), String> {
    let mut head = [0u8; MAX_HEADER_BYTES];
    let mut filled = 0;
    // Read until the line feed (the header is short) or the buffer is full.
    while filled < head.len() && !head[..filled].contains(&b'\n') {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let line_end = head[..filled]
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| "no header line".to_owned())?;
    let json_len = std::str::from_utf8(&head[..line_end])
        .ok()
        .and_then(|line| line.strip_prefix(HEADER_PREFIX))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|&n| n <= MAX_ENVELOPE_BYTES)
        .ok_or_else(|| "bad header line".to_owned())?;
    let header_len = line_end as u64 + 1;
    // Back to the end of the header line.
    file.seek(SeekFrom::Start(header_len))
        .map_err(|e| e.to_string())?;
    Ok((header_len, json_len))
}

/// Reads and checks an envelope of at most `limit` bytes.
fn read_envelope(source: impl Read, limit: u64, id: &MessageId) -> Result<Envelope, String> {
    let mut bytes = Vec::new();
    source
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("envelope: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err("envelope too large".into());
    }
    let envelope: Envelope =
        serde_json::from_slice(&bytes).map_err(|e| format!("envelope: {e}"))?;
    if envelope.id != *id {
        return Err(format!("envelope is for message {}", envelope.id));
    }
    Ok(envelope)
}

/// Reads a message directory of the earlier layout: its envelope and
/// content size, or why it is unusable.
fn load_legacy(path: &Path, id: &MessageId) -> Result<(Envelope, u64), String> {
    if !path.is_dir() {
        return Err("not a directory".into());
    }
    let content =
        fs::metadata(path.join(LEGACY_CONTENT_FILE)).map_err(|e| format!("content: {e}"))?;
    if !content.is_file() {
        return Err("content is not a file".into());
    }
    let file = File::open(path.join(LEGACY_ENVELOPE_FILE)).map_err(|e| format!("envelope: {e}"))?;
    Ok((read_envelope(file, MAX_ENVELOPE_BYTES, id)?, content.len()))
}

/// Mail is private: spool directories are created `0700` on Unix.
fn private_dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

/// Spool files are created `0600` on Unix.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Spool files are created `0600` on Unix, for writing.
fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, PRIVATE_FILE_MODE);
    options
}

/// Fsyncs a directory, making renames and creations in it durable
/// ([`durable::sync_dir`]).
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    durable::sync_dir(dir).map_err(io_at(dir))
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
    use crate::envelope::{Failure, MailParams, Recipient, RecipientState, mailbox};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn envelope(at: u64) -> Envelope {
        Envelope::new(
            mailbox("sender@example.org"),
            [
                Recipient::new(mailbox("a@example.com")),
                Recipient::new(mailbox("b@example.net")),
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
        let partial_file = dir.path().join("tmp").join(format!("{partial_id}.msg"));
        assert!(partial_file.exists());
        // A message whose commit reached the rename but not beyond is whole.
        drop(spool);

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.cleaned_temp, 1);
        assert_eq!(recovery.messages, vec![kept.clone()]);
        assert!(!partial_file.exists());
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
        let queue = root.join("queue");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&queue), 0o700);
        assert_eq!(mode(&queue.join(format!("{}.msg", env.id))), 0o600);
        assert_eq!(mode(&queue.join(format!("{}.env", env.id))), 0o600);
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
        env.last_failure = Some(Failure::local(
            "4.4.1".parse().unwrap(),
            "connection refused",
            t(5),
        ));
        spool.update(&env).unwrap();
        // A crash in the middle of a later update leaves a partial temp file.
        let stale = dir.path().join("tmp").join(format!("{}.env", env.id));
        fs::write(&stale, b"{\"id\": \"trunc").unwrap();
        drop(spool);

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![env.clone()]);
        assert!(recovery.corrupt.is_empty());
        assert_eq!(recovery.cleaned_temp, 1);
        assert!(!stale.exists());
        // The content is untouched by updates.
        assert_eq!(content(&spool, &env.id), b"x\r\n");
    }

    #[test]
    fn corrupt_entries_are_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let good = receive(&spool, envelope(0), &[b"good\r\n"]);
        let bad_json = receive(&spool, envelope(1), &[b"bad\r\n"]);
        let truncated = receive(&spool, envelope(2), &[b"gone\r\n"]);
        let bad_header = receive(&spool, envelope(3), &[b"x\r\n"]);
        let queue = dir.path().join("queue");
        let file = |id: &MessageId, ext: &str| queue.join(format!("{id}.{ext}"));
        fs::write(file(&bad_json.id, "env"), b"not json").unwrap();
        // Cut inside the envelope.
        let whole = fs::read(file(&truncated.id, "msg")).unwrap();
        fs::write(file(&truncated.id, "msg"), &whole[..30]).unwrap();
        let mut damaged = fs::read(file(&bad_header.id, "msg")).unwrap();
        damaged[0] = b'X';
        fs::write(file(&bad_header.id, "msg"), &damaged).unwrap();
        fs::write(queue.join("stray-file"), b"?").unwrap();
        drop(spool);

        // The read-only scan reports but moves nothing.
        let scan = Spool::scan(dir.path()).unwrap();
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(scan.corrupt.len(), 4, "{:?}", scan.corrupt);
        assert!(file(&bad_json.id, "msg").exists());

        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![good]);
        let mut names: Vec<_> = recovery.corrupt.iter().map(|c| c.name.clone()).collect();
        names.sort();
        let mut expected = vec![
            format!("{}.msg", bad_json.id),
            format!("{}.msg", truncated.id),
            format!("{}.msg", bad_header.id),
            "stray-file".to_owned(),
        ];
        expected.sort();
        assert_eq!(names, expected);
        for c in &recovery.corrupt {
            assert!(c.moved_to.as_ref().unwrap().exists(), "{c:?}");
        }
        assert!(!file(&bad_json.id, "msg").exists());
        // Its envelope file went with it.
        assert!(!file(&bad_json.id, "env").exists());
        assert!(
            dir.path()
                .join("corrupt")
                .join(format!("{}.env", bad_json.id))
                .exists()
        );
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
            queue.join(format!("{}.msg", a.id)),
            queue.join(format!("{}.msg", b.id)),
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

        spool.update(&a).unwrap();
        spool.remove(&a.id).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("queue")).unwrap().count(), 1);
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
    fn flush_flag_of_earlier_versions_is_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        assert!(!spool.take_flush_request().unwrap());
        fs::write(dir.path().join("flush"), b"").unwrap();
        assert!(spool.take_flush_request().unwrap());
        assert!(!spool.take_flush_request().unwrap());
    }

    #[test]
    fn requests_round_trip_and_stale_files_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Spool::submit_request(dir.path(), b"x").is_err(),
            "no spool yet"
        );
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let first = Spool::submit_request(dir.path(), b"one").unwrap();
        let second = Spool::submit_request(dir.path(), b"two").unwrap();
        assert!(first < second, "ordered by submission");
        let requests = dir.path().join("requests");
        // Half-written by a command that stopped: never read, cleaned at start.
        fs::write(requests.join("HALF.tmp"), b"{").unwrap();
        let pending = spool.pending_requests().unwrap();
        let names: Vec<_> = pending.iter().map(|p| p.rid.clone()).collect();
        assert_eq!(names, vec![first.clone(), second.clone()]);
        assert_eq!(pending[0].bytes.as_deref(), Ok(&b"one"[..]));

        assert_eq!(Spool::take_answer(dir.path(), &first).unwrap(), None);
        spool.answer_request(&first, b"answer").unwrap();
        assert_eq!(spool.pending_requests().unwrap().len(), 1);
        assert_eq!(
            Spool::take_answer(dir.path(), &first).unwrap().as_deref(),
            Some(&b"answer"[..])
        );
        assert_eq!(Spool::take_answer(dir.path(), &first).unwrap(), None);

        // An answer nobody collected is kept a while, then cleaned at start.
        spool.answer_request(&second, b"late").unwrap();
        drop(spool);
        drop(Spool::open(dir.path()).unwrap());
        assert!(!requests.join("HALF.tmp").exists());
        assert!(requests.join(format!("{second}.done")).exists(), "fresh");
        let old = SystemTime::now() - 2 * STALE_ANSWER;
        File::options()
            .write(true)
            .open(requests.join(format!("{second}.done")))
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(Spool::open(dir.path()).unwrap());
        assert!(!requests.join(format!("{second}.done")).exists(), "stale");
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
        assert!(dir.path().join("tmp").join(format!("{id}.msg")).exists());
    }

    /// Writes a message directory as earlier versions did.
    fn legacy_entry(root: &Path, env: &Envelope, content: &[u8]) -> PathBuf {
        let dir = root.join("queue").join(env.id.as_str());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("content.eml"), content).unwrap();
        fs::write(
            dir.join("envelope.json"),
            serde_json::to_vec_pretty(env).unwrap(),
        )
        .unwrap();
        dir
    }

    #[test]
    fn directory_layout_of_earlier_versions_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let current = receive(&spool, envelope(0), &[b"current\r\n"]);
        drop(spool);
        // A conversion interrupted after the rename of the new file into
        // queue/, before the deletion of the directory.
        let twice = envelope(2);
        legacy_entry(dir.path(), &twice, b"twice\r\n");
        let (_, first) = Spool::open(dir.path()).unwrap();
        assert_eq!(first.converted, 1);
        let twice_dir = legacy_entry(dir.path(), &twice, b"twice\r\n");
        let mut old = envelope(1);
        old.attempts = 2;
        let body = b"Subject: old\r\n\r\nfrom before\r\n".repeat(5000);
        let old_dir = legacy_entry(dir.path(), &old, &body);

        // The read-only scan reads the directory as it is, each message once.
        let scan = Spool::scan(dir.path()).unwrap();
        assert!(scan.corrupt.is_empty(), "{:?}", scan.corrupt);
        let sizes: Vec<_> = scan.messages.iter().map(|m| m.size).collect();
        assert_eq!(sizes, vec![9, body.len() as u64, 7]);

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert!(recovery.corrupt.is_empty(), "{:?}", recovery.corrupt);
        assert_eq!(recovery.converted, 2);
        assert_eq!(
            recovery.messages,
            vec![current.clone(), old.clone(), twice.clone()]
        );
        assert!(!old_dir.exists() && !twice_dir.exists());
        assert_eq!(content(&spool, &old.id), body);
        assert_eq!(content(&spool, &twice.id), b"twice\r\n");
        assert_eq!(content(&spool, &current.id), b"current\r\n");
    }

    /// Writes `queue/<id>.msg` by hand: header line, `json`, content.
    fn write_message_file(root: &Path, id: &str, json: &str, content: &[u8]) -> PathBuf {
        let path = root.join("queue").join(format!("{id}.msg"));
        let mut raw = format!("postern-queue 1 {}\n{json}\n", json.len()).into_bytes();
        raw.extend_from_slice(content);
        fs::write(&path, raw).unwrap();
        path
    }

    /// Envelopes exactly as the relay wrote them when it kept addresses as
    /// strings (a message file's compact JSON, an update's pretty JSON).
    const STRING_ERA_MESSAGE: &str = r#"{"id":"ABC123","reverse_path":"a@example.org","recipients":[{"address":"b@example.com","orcpt":"rfc822;B+40example.com","state":"pending"},{"address":"\"x y\"@[IPv6:2001:db8::1]","state":"pending"}],"params":{"requiretls":false,"smtputf8":false},"received_at":1700000000,"attempts":0,"next_attempt":1700000000}"#;
    const STRING_ERA_BOUNCE: &str = r#"{"id":"ABC124","reverse_path":"","recipients":[{"address":"c@example.net","state":"pending"}],"params":{"requiretls":false,"smtputf8":false},"received_at":1700000000,"attempts":0,"next_attempt":1700000000}"#;
    const STRING_ERA_UPDATE: &str = r#"{
  "id": "ABC123",
  "reverse_path": "a@example.org",
  "recipients": [
    {
      "address": "b@example.com",
      "orcpt": "rfc822;B+40example.com",
      "state": "pending"
    },
    {
      "address": "\"x y\"@[IPv6:2001:db8::1]",
      "state": "pending"
    }
  ],
  "params": {
    "requiretls": false,
    "smtputf8": false
  },
  "received_at": 1700000000,
  "attempts": 0,
  "next_attempt": 1700000000
}"#;

    #[test]
    fn spool_written_with_string_addresses_loads_typed_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        drop(Spool::open(dir.path()).unwrap());
        write_message_file(dir.path(), "ABC123", STRING_ERA_MESSAGE, b"one\r\n");
        write_message_file(dir.path(), "ABC124", STRING_ERA_BOUNCE, b"two\r\n");

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert!(recovery.corrupt.is_empty(), "{:?}", recovery.corrupt);
        let [message, bounce] = &recovery.messages[..] else {
            panic!("{:?}", recovery.messages);
        };
        assert_eq!(
            message.reverse_path,
            postern_smtp::ReversePath::Mailbox(mailbox("a@example.org"))
        );
        assert_eq!(message.recipients[0].address, mailbox("b@example.com"));
        assert_eq!(
            message.recipients[0].orcpt,
            Some(("rfc822".to_owned(), "B+40example.com".to_owned()))
        );
        assert_eq!(
            message.recipients[1].address,
            mailbox("\"x y\"@[IPv6:2001:db8::1]")
        );
        assert_eq!(message.recipients[1].orcpt, None);
        assert!(bounce.is_null_sender());
        assert!(
            !message.held && !bounce.held,
            "written before holds existed"
        );
        // Written again, byte for byte what the string-era relay wrote.
        assert_eq!(serde_json::to_string(message).unwrap(), STRING_ERA_MESSAGE);
        assert_eq!(serde_json::to_string(bounce).unwrap(), STRING_ERA_BOUNCE);
        assert_eq!(
            String::from_utf8(serde_json::to_vec_pretty(message).unwrap()).unwrap(),
            STRING_ERA_UPDATE
        );

        // An update file of that era loads too.
        fs::write(
            dir.path().join("queue").join("ABC123.env"),
            STRING_ERA_UPDATE,
        )
        .unwrap();
        drop(spool);
        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert!(recovery.corrupt.is_empty(), "{:?}", recovery.corrupt);
        assert_eq!(recovery.messages[0], *message);
    }

    #[test]
    fn held_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut env = receive(&spool, envelope(0), &[b"x\r\n"]);
        env.held = true;
        spool.update(&env).unwrap();
        drop(spool);
        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![env.clone()]);
        let (shown, size, _) = Spool::read_message(dir.path(), &env.id).unwrap();
        assert!(shown.held);
        assert_eq!(size, 3);
        assert!(matches!(
            Spool::read_message(dir.path(), &envelope(1).id),
            Err(SpoolError::NotQueued(_))
        ));
    }

    #[test]
    fn envelope_with_an_unparsable_address_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let good = receive(&spool, envelope(0), &[b"good\r\n"]);
        drop(spool);
        let good_json = serde_json::to_string(&good).unwrap();
        let (sender, rcpt) = (
            r#""reverse_path":"sender@example.org""#,
            r#""address":"a@example.com""#,
        );
        let hostile = [
            ("BADSENDER", sender, r#""reverse_path":"not an address""#),
            (
                "BRACKETS",
                sender,
                r#""reverse_path":"<sender@example.org>""#,
            ),
            ("BADRCPT", rcpt, r#""address":"a@@example.com""#),
            (
                "INJECTED",
                rcpt,
                r#""address":"a@example.com>\r\nRCPT TO:<x@evil.example""#,
            ),
            (
                "BADORCPT",
                rcpt,
                r#""address":"a@example.com","orcpt":"no-type""#,
            ),
            (
                "ORCPTCRLF",
                rcpt,
                r#""address":"a@example.com","orcpt":"rfc822;a\r\nQUIT""#,
            ),
        ];
        let mut files = Vec::new();
        for (id, field, replacement) in hostile {
            assert_eq!(good_json.matches(field).count(), 1);
            let json = good_json
                .replace(good.id.as_str(), id)
                .replace(field, replacement);
            files.push((id, write_message_file(dir.path(), id, &json, b"x\r\n")));
        }

        // The read-only scan reports them, and moves nothing.
        let scan = Spool::scan(dir.path()).unwrap();
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(scan.corrupt.len(), hostile.len(), "{:?}", scan.corrupt);

        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, vec![good]);
        assert_eq!(
            recovery.corrupt.len(),
            hostile.len(),
            "{:?}",
            recovery.corrupt
        );
        for (id, path) in files {
            let entry = recovery
                .corrupt
                .iter()
                .find(|c| c.name == format!("{id}.msg"))
                .unwrap_or_else(|| panic!("{id} not reported: {:?}", recovery.corrupt));
            assert!(entry.reason.starts_with("envelope: "), "{entry:?}");
            assert!(entry.moved_to.as_ref().unwrap().exists(), "{entry:?}");
            assert!(!path.exists(), "{id}");
        }
    }

    #[test]
    fn message_file_starts_with_its_header_and_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let env = receive(&spool, envelope(0), &[b"body\r\n"]);
        let raw = fs::read(dir.path().join("queue").join(format!("{}.msg", env.id))).unwrap();
        let json = serde_json::to_vec(&env).unwrap();
        let mut expected = format!("postern-queue 1 {}\n", json.len()).into_bytes();
        expected.extend_from_slice(&json);
        expected.extend_from_slice(b"\nbody\r\n");
        assert_eq!(raw, expected);
    }
}
