//! Sans-IO SMTP engine: server and client sessions, command and reply codec, ESMTP extensions, limits.
//!
//! This crate speaks SMTP (RFC 5321) with its extensions — PIPELINING (RFC 2920), STARTTLS (RFC 3207), SIZE
//! (RFC 1870), 8BITMIME (RFC 6152), CHUNKING/BDAT (RFC 3030), SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES (RFC
//! 2034/3463), DSN (RFC 3461), REQUIRETLS (RFC 8689) — without doing any I/O, any TLS or any clock read. An
//! adapter (a tokio one, a thread-per-connection one, a fuzzer, a test) moves bytes between a socket and a
//! session, runs the TLS handshake when told to, and passes the current time in.
//!
//! # Design
//!
//! A session ([`ServerSession`], [`ClientSession`]) is a state machine with
//! - **inputs**, the `handle_*` methods: `handle_input(&[u8])` (bytes received), `handle_timeout(now)`,
//!   `handle_eof()`, `handle_tls_established()`; plus the application's answers to decision events
//!   (server: `accept`, `accept_with`, `reject`; client: `start_tls`, `send_mail`, `quit`);
//! - **outputs**, the `poll_*` methods: `poll_event(now)` (what happened, what to decide), `poll_transmit()`
//!   (bytes to send), `poll_timeout()` (the deadline as data).
//!
//! After any input, drain in this order: **events** (answering decisions, which may queue replies), then
//! **transmit**, then check `is_closed()`, then wait for input or the deadline. Input is buffered with a hard
//! bound: `handle_input` returns how many bytes it took. Message content reaches the server application as
//! [`ServerEvent::MessageChunk`]s, never as one large buffer.
//!
//! The security rules are enforced by the sessions, not left to the adapter: commands end only at CRLF; DATA
//! ends only at CRLF `.` CRLF (no SMTP smuggling); plaintext after STARTTLS is never processed; state is reset
//! after TLS (RFC 3207 4.2); pipelining synchronization errors close the session, and a client that talks during
//! the greet pause never sees the greeting; deadlines cover whole phases (a whole message's content, DATA or BDAT);
//! junk commands and the session's length are limited, and tighter limits apply under stress
//! ([`ServerSession::set_stress`]).
//! See `docs/architecture.md` in the repository for the full picture.
//!
//! The codecs can also be used on their own, without allocating on the hot path: [`CommandRef::parse`] returns
//! a validated command whose strings borrow from the line ([`Command::parse`] is the same parser plus one copy
//! into owned types), and [`DataReceiver::feed_spans`] hands DATA content over as spans of the input instead of
//! copying it ([`DataReceiver::feed`] appends the same octets to a buffer).
//!
//! Addresses are validated once, at the command parser, and then travel as typed values: [`Mailbox`],
//! [`ReversePath`], [`ForwardPath`] (module [`address`]).
//!
//! # Features
//!
//! - `serde`: `Serialize` and `Deserialize` for the address types, as text: a [`Mailbox`], [`Domain`] or
//!   [`Host`] as it displays, a path as its mailbox without angle brackets (`""` for the null reverse path, the
//!   form a queue file keeps); it enables the `serde` feature of `postern-types` for the types re-exported from
//!   there.
//!
//! # Example: a server session fed a scripted transaction
//!
//! ```
//! use std::time::Instant;
//! use postern_smtp::{ServerConfig, ServerEvent, ServerSession};
//!
//! let start = Instant::now();
//! let mut server = ServerSession::new(ServerConfig::new("mx.example.org"), start);
//! let mut wire = Vec::new(); // what the client would receive
//! let mut message = Vec::new(); // what the application stores
//!
//! let script: &[&[u8]] = &[
//!     b"EHLO client.example.net\r\n",
//!     b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n",
//!     b"Subject: hi\r\n\r\n..dot-stuffed line\r\n.\r\n",
//!     b"QUIT\r\n",
//! ];
//! // The greeting is held for the greet pause (a client that talks meanwhile is refused). The pause passes in
//! // silence: the greeting is queued; send it before reading.
//! assert!(server.poll_transmit().is_none());
//! let now = server.poll_timeout().unwrap();
//! server.handle_timeout(now);
//! wire.extend(server.poll_transmit().unwrap());
//! for input in script {
//!     let mut input: &[u8] = input;
//!     while !input.is_empty() {
//!         let taken = server.handle_input(input);
//!         input = &input[taken..];
//!         // 1. events (answer decisions; a real server may answer later, e.g. after an fsync)
//!         while let Some(event) = server.poll_event(now) {
//!             match event {
//!                 ServerEvent::Hello { .. } | ServerEvent::Mail { .. } | ServerEvent::Rcpt { .. } => {
//!                     server.accept().unwrap()
//!                 }
//!                 ServerEvent::MessageChunk(chunk) => message.extend(chunk),
//!                 ServerEvent::MessageEnd { .. } => server.accept().unwrap(), // after storing durably
//!                 _ => {}
//!             }
//!         }
//!         // 2. transmit
//!         while let Some(bytes) = server.poll_transmit() {
//!             wire.extend(bytes);
//!         }
//!     }
//! }
//! assert!(server.is_closed());
//! assert_eq!(message, b"Subject: hi\r\n\r\n.dot-stuffed line\r\n");
//! let wire = String::from_utf8(wire).unwrap();
//! assert!(wire.starts_with("220 mx.example.org ESMTP\r\n250-mx.example.org\r\n250-PIPELINING\r\n"));
//! assert!(wire.ends_with(
//!     "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
//!      250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n"
//! ));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod address;
pub mod capabilities;
mod class;
pub mod client;
pub mod command;
pub mod config;
pub mod counts;
pub mod data;
pub mod reply;
pub mod server;

pub use address::{
    AddressError, AddressLiteral, AddressLiteralRef, Domain, ForwardPath, ForwardPathRef, Host,
    HostRef, Mailbox, MailboxRef, ReversePath, ReversePathRef,
};
pub use capabilities::{Capabilities, EhloReply};
pub use client::{
    ClientCloseReason, ClientEvent, ClientSession, DeliveryStatus, Envelope, RecipientResult,
    SendError, TransactionReport,
};
pub use command::{
    Body, Command, CommandError, CommandRef, MailParams, MailParamsRef, Notify, RcptParams,
    RcptParamsRef, Ret,
};
pub use config::{
    AfterStartTls, ClientConfig, DEFAULT_GREET_PAUSE, ServerConfig, StartTlsPolicy, StressLimits,
    Timeouts,
};
pub use counts::{CommandCount, CommandCounts, Verb};
pub use data::{
    BareLineEndings, DataLimits, DataReceiver, DataStep, DataSummary, DotStuffer, dot_stuff,
    normalize_line_endings,
};
pub use reply::{EnhancedStatus, Reply, ReplyCode, ReplyError, ReplyParser};
pub use server::{AnswerError, CloseReason, ServerEvent, ServerSession, UnexpectedTls};
