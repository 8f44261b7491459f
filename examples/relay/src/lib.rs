//! The Postern relay: a TLS-policy-enforcing SMTP relay (mail gateway) built
//! on the Postern crates.
//!
//! The binary is a thin command line over this library. Its modules follow
//! the flow of a message, from the bottom (plain data) up to the one place
//! that assembles the pieces:
//!
//! - [`config`]: the TOML configuration as plain data, every key optional,
//!   embedded defaults; [`envelope`]: the data model the flows share.
//! - [`inbound`]: a message arrives. [`inbound::session`], the SMTP server
//!   side (a postern-tokio `ServerHandler`: content streamed into the spool
//!   behind a `Received` header recording TLS version, cipher and client
//!   certificate, `250` only after the commit's fsyncs), and
//!   [`inbound::access`], the answer to each `RCPT TO` (relaying by
//!   certificate is decided by the TLS policy's trusted agents).
//! - [`queue`]: the message waits. [`queue::spool`], the durable queue (a
//!   message is acknowledged only after
//!   [`Incoming::commit`](queue::spool::Incoming::commit) returned); the
//!   schedule of retries, per-recipient outcomes and expiry; [`queue::lock`],
//!   one relay per state directory; [`queue::control`], the operator's
//!   delete, hold, release and flush, on a running or a stopped relay.
//! - [`outbound`]: the message leaves. [`outbound::routing`] (static routes,
//!   MX), [`outbound::mta_sts`] (the destination's policy: TXT, HTTPS fetch,
//!   persisted cache, daily refresh), [`outbound::delivery`] (postern-attempt's
//!   sans-IO attempt under the per-domain policy, driven by postern-tokio) and
//!   [`outbound::probe`] (the same attempt, stopped once TLS is up).
//! - [`reporting`]: what the relay writes itself: bounces
//!   ([`reporting::dsn`], RFC 3464), SMTP TLS reports ([`reporting::tlsrpt`],
//!   RFC 8460) and their DKIM signature ([`reporting::dkim`]).
//! - [`tls`]: the TLS policy from `[tls]`, the inbound and outbound TLS
//!   contexts, and [`tls::certs`], the certificate directory (the Default
//!   Cert generated on first start, imports, the certificate table).
//! - [`net`]: the HTTPS client MTA-STS and TLS-RPT share, and the open-file
//!   limit; [`privileges`]: started as root, the switch to the configured
//!   `user` once the ports are bound.
//! - [`cli`]: the subcommands (`check-config`, `cert list`, `cert import`,
//!   `policy explain`, `probe`, `queue list`, `show`, `delete`, `hold`,
//!   `release`, `flush`).
//! - [`relay`]: the one place that assembles them: a running relay
//!   ([`Relay::start`](relay::Relay::start)): spool recovery, certificates,
//!   listeners, delivery, hot reload, graceful shutdown.
//!
//! # The life of a message
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use postern_relay::inbound::access::{AccessPolicy, Client};
//! use postern_relay::config::Config;
//! use postern_relay::envelope::{Envelope, EnhancedStatus, Failure, MailParams, Mailbox, Recipient};
//! use postern_relay::queue::{Disposition, Outcome, Queue, RetryPolicy};
//! use postern_relay::queue::spool::Spool;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let config = Config::default();
//! let (spool, recovery) = Spool::open(dir.path())?;
//! let mut queue = Queue::new(RetryPolicy::from_config(&config.queue));
//! for envelope in recovery.messages {
//!     queue.insert(envelope);
//! }
//!
//! // RCPT TO: the access policy decides (a local client may relay; a client
//! // elsewhere only as a trusted agent, which the TLS policy decides).
//! let client = Client { ip: "127.0.0.1".parse()?, trusted_agent: None };
//! AccessPolicy::from_config(&config).check_recipient(&client, "bob@example.net")?;
//!
//! // DATA: stream the content into the spool; answer 250 only after commit.
//! let now = SystemTime::now();
//! let (alice, bob) = (Mailbox::parse("alice@localhost")?, Mailbox::parse("bob@example.net")?);
//! let envelope = Envelope::new(alice, [Recipient::new(bob)], MailParams::default(), now);
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
//! // The attempt is over; the operator did not delete the message meanwhile.
//! assert!(!queue.end_attempt(&envelope.id));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod cli;
pub mod config;
pub mod envelope;
pub mod inbound;
pub mod net;
pub mod outbound;
#[cfg(unix)]
pub mod privileges;
pub mod queue;
pub mod relay;
pub mod reporting;
pub mod tls;
