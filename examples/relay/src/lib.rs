//! The Postern relay: a TLS-policy-enforcing SMTP relay (mail gateway) built
//! on the Postern crates.
//!
//! This library holds the parts of the `postern-relay` binary that do not
//! speak SMTP themselves; the network layer (listener and delivery) calls
//! them:
//!
//! - [`config`]: the TOML configuration, every key optional, embedded defaults.
//! - [`access`]: relay authorisation, the answer to each RCPT TO.
//! - [`spool`]: the durable queue; a message is acknowledged only after
//!   [`Incoming::commit`](spool::Incoming::commit) returned.
//! - [`queue`]: retry scheduling, per-recipient outcomes, expiry.
//! - [`routing`]: static routes and MX lookup.
//! - [`dsn`]: bounces (RFC 3464 delivery status notifications).
//! - [`envelope`]: the data model the others share.
//!
//! # The life of a message
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use postern_relay::access::Client;
//! use postern_relay::config::Config;
//! use postern_relay::envelope::{Envelope, EnhancedCode, Failure, MailParams, Recipient};
//! use postern_relay::queue::{Disposition, Outcome, Queue};
//! use postern_relay::spool::Spool;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let config = Config::default();
//! let (spool, recovery) = Spool::open(dir.path())?;
//! let mut queue = Queue::new(config.retry_policy());
//! for envelope in recovery.messages {
//!     queue.insert(envelope);
//! }
//!
//! // RCPT TO: the access policy decides (a local client may relay).
//! let client = Client { ip: "127.0.0.1".parse()?, certificate: None };
//! config.access_policy().check_recipient(&client, "bob@example.net")?;
//!
//! // DATA: stream the content into the spool; answer 250 only after commit.
//! let now = SystemTime::now();
//! let envelope = Envelope::new("alice@localhost", [Recipient::new("bob@example.net")], MailParams::default(), now);
//! let mut incoming = spool.begin(envelope, Some(config.message_size_limit))?;
//! incoming.write_chunk(b"Subject: hello\r\n\r\nHi Bob.\r\n")?;
//! let envelope = incoming.commit()?;
//! queue.insert(envelope);
//!
//! // Delivery: take what is due, report per recipient, persist, retry later.
//! let due = queue.take_due(now, 10);
//! let failure = Failure::new(EnhancedCode::new(4, 7, 5)?, "454 4.7.5 handshake failed", now);
//! let (envelope, report) = queue.complete_attempt(&due[0].id, &[(0, Outcome::Deferred(failure))], now)?;
//! spool.update(&envelope)?;
//! assert_eq!(report.disposition, Disposition::Retry { at: now + Duration::from_secs(300) });
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod access;
pub mod certs;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dsn;
pub mod envelope;
pub mod probe;
pub mod queue;
pub mod relay;
pub mod routing;
pub mod server;
pub mod spool;
pub mod tls;
