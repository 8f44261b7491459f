//! The Postern relay: a TLS-policy-enforcing SMTP relay (mail gateway) built
//! on the Postern crates.
//!
//! The binary is a thin command line over this library:
//!
//! - [`relay`]: a running relay ([`Relay::start`](relay::Relay::start)):
//!   spool recovery, certificates, listeners, delivery, hot reload, graceful
//!   shutdown.
//! - [`server`]: the SMTP server side, a postern-tokio `ServerHandler`:
//!   access rules at RCPT, content streamed into the spool behind a
//!   `Received` header recording TLS version, cipher and client certificate,
//!   `250` only after the commit's fsyncs.
//! - [`delivery`]: the scheduler and workers: routing, postern-tokio's client
//!   under the per-domain outbound policy, per-recipient outcomes, retries,
//!   bounces.
//! - [`tls`] and [`certs`]: the TLS policy from `[tls]`, the inbound and
//!   outbound TLS contexts, the certificate directory (the Default Cert
//!   generated on first start, imports, the certificate table).
//! - [`cli`] and [`probe`]: the subcommands (`check-config`, `cert list`,
//!   `cert import`, `policy explain`, `probe`, `queue list`, `queue flush`).
//! - [`lock`]: one relay per state directory.
//! - [`fd_limit`]: the open-file limit, raised at start, and the
//!   connections that fit in it.
//! - [`config`]: the TOML configuration, every key optional, embedded defaults.
//! - [`access`]: relay authorisation, the answer to each RCPT TO (relaying
//!   by certificate is decided by the TLS policy's trusted agents).
//! - [`spool`]: the durable queue; a message is acknowledged only after
//!   [`Incoming::commit`](spool::Incoming::commit) returned.
//! - [`queue`]: retry scheduling, per-recipient outcomes, expiry.
//! - [`routing`]: static routes and MX lookup.
//! - [`mta_sts`]: MTA-STS policy discovery (TXT, HTTPS fetch, persisted
//!   cache, daily proactive refresh).
//! - [`tlsrpt`]: SMTP TLS Reporting (RFC 8460): outcomes counted per
//!   Policy Domain and day, daily reports by mail or HTTPS.
//! - [`dkim`]: DKIM signatures (RFC 6376, RFC 8463) for the report mails.
//! - [`dsn`]: bounces (RFC 3464 delivery status notifications).
//! - [`envelope`]: the data model the others share.
//!
//! # The life of a message
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use postern_relay::access::Client;
//! use postern_relay::config::Config;
//! use postern_relay::envelope::{Envelope, EnhancedStatus, Failure, MailParams, Recipient};
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
//! // RCPT TO: the access policy decides (a local client may relay; a client
//! // elsewhere only as a trusted agent, which the TLS policy decides).
//! let client = Client { ip: "127.0.0.1".parse()?, trusted_agent: None };
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
//! // A failure of ours carries a description; the status is in its code (a
//! // server's refusal would be `Failure::remote` with the reply verbatim).
//! let failure = Failure::local(EnhancedStatus::new(4, 7, 5)?, "TLS handshake failed", now);
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
pub mod dkim;
pub mod dsn;
pub mod envelope;
pub mod fd_limit;
mod https;
pub mod lock;
pub mod mta_sts;
pub mod probe;
pub mod queue;
pub mod relay;
pub mod routing;
pub mod server;
pub mod spool;
pub mod tls;
pub mod tlsrpt;
