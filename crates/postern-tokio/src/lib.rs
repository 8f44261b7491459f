//! Tokio adapter for Postern: drives the sans-IO SMTP sessions of [`postern_smtp`] over TCP, upgrades them with
//! tokio-rustls when STARTTLS succeeds, and follows [`postern_policy`] decisions with the rustls configurations
//! and certificate verifiers of [`postern_certs`].
//!
//! # Design
//!
//! The crate is deliberately thin: protocol logic lives in the engine, decisions in the policy crate,
//! certificates in the certs crate. What is here is I/O, time and glue.
//!
//! - [`server::Server`] accepts connections under a connection limit (`421 4.3.2 Too many connections` past
//!   it), drives one [`postern_smtp::ServerSession`] per connection, and asks the application — a
//!   [`server::ServerHandler`] opening one [`server::SessionHandler`] per connection — for every decision
//!   (EHLO, MAIL, RCPT, end of message), passing the [`server::ConnectionInfo`] (peer, TLS version and cipher,
//!   client certificate check, fingerprint, subject and issuer) so relaying can be authorised by a verified
//!   client certificate. The end of a message is acknowledged only when the handler's `message_end` returns,
//!   which it does after storing the message durably. The server TLS mode (none / offer / require) and the
//!   client-certificate mode (none / ask / require) come from [`postern_policy::ServerPolicy`]; the engine
//!   enforces `530 5.7.0` before TLS. Deadlines are the engine's ([`postern_smtp::ServerSession::poll_timeout`])
//!   enforced with tokio timers: a client that trickles is cut off with `421 4.4.2`. Shutdown stops accepting,
//!   gives sessions a grace period, then closes them with `421 4.3.2`.
//! - [`client::Client::deliver`] delivers one message to a next hop by driving a
//!   [`postern_attempt::Attempt`] per address, which makes every decision: after EHLO the policy says start
//!   TLS, continue in plaintext or defer (never a plaintext MAIL when TLS is required: QUIT instead); a refused
//!   STARTTLS, a failed handshake and the certificate check (from the postern-certs verifier built from the
//!   attempt's [`postern_attempt::TlsParams`]) each go to the policy, which continues, defers with its 4.7.x
//!   code and RFC 8460 result type, or — opportunistic TLS after a failed handshake — asks for a new plaintext
//!   connection, which the client opens. The client only writes, reads, times and runs the handshake. The
//!   result has per-recipient outcomes, a TLS summary and, on failure, the enhanced code, result type and the
//!   policy's explanation. When usable TLSA records require DANE ([`client::Client::deliver_with`] with a
//!   [`postern_policy::ConnectionPolicy`] carrying the DANE outcome), the handshake sends the MX host as SNI
//!   (the TLSA base domain, RFC 7672 section 8.1) and is judged by [`postern_certs::DaneHook`]; a chain no
//!   record authenticates aborts the handshake and defers with 4.7.5.
//!
//! ## Two styles, one driver per side
//!
//! Each side has a connection driver stepped by `next()` (imap-next style), which does the I/O, the engine's
//! deadlines and the TLS upgrade, and returns what the caller must know or decide:
//! [`server::ServerConnection`] (opened by a [`server::Endpoint`]; `next()` yields the engine's
//! [`postern_smtp::ServerEvent`]s, `TlsEstablished` and `Closed`; decisions are answered with `answer`) and
//! [`client::ClientConnection`] (yields [`postern_smtp::ClientEvent`]s; the caller chooses `start_tls`,
//! `send_mail` or `quit`, and runs `handshake` with its rustls configuration). The callback style —
//! [`server::Server`] with a [`server::SessionHandler`] — is a loop over the server driver, and the
//! attempt-driven [`client::Client`] shares the client driver's socket code.
//!
//! ## STARTTLS and buffered plaintext (RFC 3207 section 4, CVE-2011-0411)
//!
//! The socket is never wrapped in a buffering reader. The only plaintext held in user space is what the engine
//! has not taken yet; when STARTTLS is accepted (server) or answered `220` (client), that remainder is handed
//! to the session — which discards and counts it — before the bare `TcpStream` goes to tokio-rustls. Bytes that
//! arrive later are read by rustls as TLS records, so a pipelined `STARTTLS\r\nRSET\r\n` never gets its `RSET`
//! answered inside TLS. Discarded bytes are logged.
//!
//! ## Logs
//!
//! One line per TLS connection in Postfix's spirit, at `INFO`:
//! `Anonymous TLS connection established from unknown[192.0.2.7]: TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`
//! (server; the trust level is that of the client certificate) and
//! `Verified TLS connection established to mx.example.com[192.0.2.1]:25: TLSv1.3 with cipher …` (client).
//!
//! Events that come in floods are summarised: the first connection refused over the limit (and the first
//! failed `accept`) of a quiet period is logged at `WARN`; those that follow within a minute are counted and
//! reported as one line per minute while they go on (`… more connections refused in the last 60s`).
//!
//! # Example
//!
//! A server offering TLS with a self-signed certificate on a loopback port, and the client delivering one
//! message to it with opportunistic TLS (encrypted; the certificate recorded as untrusted).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use postern_certs::{
//!     CertKey, CertResolver, ClientTlsContext, DefaultCertOptions, GeneratedKind, ServedCertificates,
//!     ServerTlsContext, ServerTlsSpec, TrustRoots, generate_self_signed,
//! };
//! use postern_policy::{
//!     ClientTlsMode, DestinationPolicy, NextHop, OutboundPolicy, PeerTrust, ServerPolicy,
//! };
//! use postern_smtp::{DataSummary, EnhancedStatus, Envelope, ForwardPath, RcptParams, ReversePath};
//! use postern_tokio::client::{Client, ClientSettings, Destination};
//! use postern_tokio::server::{ConnectionInfo, Server, ServerHandler, ServerSettings, SessionHandler, Verdict};
//!
//! /// Keeps accepted messages in memory (a real handler writes and fsyncs them before answering).
//! #[derive(Debug, Clone, Default)]
//! struct Inbox(Arc<Mutex<Vec<Vec<u8>>>>);
//! #[derive(Debug)]
//! struct Txn { inbox: Inbox, content: Vec<u8> }
//!
//! impl ServerHandler for Inbox {
//!     type Session = Txn;
//!     fn open(&self, _: &ConnectionInfo) -> Txn { Txn { inbox: self.clone(), content: Vec::new() } }
//! }
//! impl SessionHandler for Txn {
//!     async fn rcpt(&mut self, _: &ConnectionInfo, to: &ForwardPath, _: &RcptParams) -> Verdict {
//!         match to.to_string().ends_with("@example.org>") {
//!             true => Verdict::Accept,
//!             false => Verdict::reject(554, EnhancedStatus::DELIVERY_NOT_AUTHORIZED, "Relay access denied"),
//!         }
//!     }
//!     async fn message_chunk(&mut self, _: &ConnectionInfo, chunk: Vec<u8>) { self.content.extend(chunk) }
//!     async fn message_end(&mut self, _: &ConnectionInfo, _: &DataSummary) -> Verdict {
//!         self.inbox.0.lock().unwrap().push(std::mem::take(&mut self.content));
//!         Verdict::Accept
//!     }
//!     fn reset(&mut self) { self.content.clear() }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//!     // Server: offer TLS with a self-signed P-256 certificate.
//!     let now = rustls::pki_types::UnixTime::now();
//!     let pem = generate_self_signed(&DefaultCertOptions::new("mx.example.org"), GeneratedKind::EcdsaP256, now)?;
//!     let cert = CertKey::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())?;
//!     let resolver = Arc::new(CertResolver::new(ServedCertificates::from_certs([&cert])));
//!     let tls = ServerTlsContext::new(&ServerTlsSpec::default(), resolver)?;
//!     let settings = ServerSettings::new("mx.example.org", ServerPolicy::default(), Some(tls));
//!     let inbox = Inbox::default();
//!     let server = Server::new(settings, inbox.clone())?;
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//!     let serving = tokio::spawn(async move {
//!         server.serve(listener, async { let _ = stopped.await; }).await
//!     });
//!
//!     // Client: opportunistic TLS (the default outbound mode).
//!     let client = Client::new(ClientSettings::new("client.example.net"),
//!         Arc::new(ClientTlsContext::new(TrustRoots::empty().into_store())));
//!     let policy = OutboundPolicy::new(DestinationPolicy::new(ClientTlsMode::Opportunistic));
//!     let destination = Destination::new(vec![addr], NextHop::parse("example.org")?, Some("mx.example.org".parse()?));
//!     let envelope = Envelope::new(
//!         ReversePath::parse("<alice@example.net>")?,
//!         [ForwardPath::parse("<bob@example.org>")?],
//!     );
//!     let result = client.deliver(&destination, &envelope, b"Subject: hi\r\n\r\nHello\r\n", &policy).await;
//!
//!     assert!(result.all_delivered(), "{result:?}");
//!     let tls = result.tls.expect("TLS was used");
//!     assert_eq!(tls.certificate.trust, PeerTrust::Untrusted); // self-signed
//!     assert_eq!(inbox.0.lock().unwrap().as_slice(), [b"Subject: hi\r\n\r\nHello\r\n".to_vec()]);
//!
//!     let _ = stop.send(());
//!     serving.await?;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Example: a server driven step by step
//!
//! A discard server that accepts every message, answering each decision itself.
//!
//! ```no_run
//! use postern_policy::{ServerPolicy, ServerTlsMode};
//! use postern_smtp::{EnhancedStatus, ServerEvent};
//! use postern_tokio::server::{Endpoint, Event, ServerSettings, Verdict};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut policy = ServerPolicy::default();
//! policy.tls = ServerTlsMode::None;
//! let endpoint = Endpoint::new(ServerSettings::new("mx.example.org", policy, None))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
//! loop {
//!     let (tcp, peer) = listener.accept().await?;
//!     let mut conn = endpoint.connection(tcp, peer);
//!     tokio::spawn(async move {
//!         let mut size = 0;
//!         // After `Closed`, `next` returns an error: the loop ends.
//!         while let Ok(event) = conn.next().await {
//!             let verdict = match event {
//!                 Event::Session(ServerEvent::Rcpt { to, .. }) if !to.to_string().ends_with("@example.org>") => {
//!                     Verdict::reject(554, EnhancedStatus::DELIVERY_NOT_AUTHORIZED, "Relay access denied")
//!                 }
//!                 Event::Session(ServerEvent::MessageChunk(chunk)) => {
//!                     size += chunk.len();
//!                     continue;
//!                 }
//!                 Event::Session(
//!                     ServerEvent::Hello { .. } | ServerEvent::Mail { .. } | ServerEvent::Rcpt { .. }
//!                     | ServerEvent::Vrfy(_) | ServerEvent::MessageEnd { .. },
//!                 ) => Verdict::Accept,
//!                 _ => continue,
//!             };
//!             if conn.answer(verdict).is_err() {
//!                 break;
//!             }
//!         }
//!         println!("{}: {size} octets", conn.info().peer);
//!     });
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod client;
mod repeats;
pub mod server;
mod stream;

/// The rustls whose types appear in this crate's signatures (and in
/// postern-certs'): use it rather than a rustls dependency of your own.
pub use rustls;
pub use stream::openssl_cipher_name;

pub use client::{
    Client, ClientConnection, ClientConnectionError, ClientSettings, DeliveryFailure,
    DeliveryResult, Destination, TlsSummary,
};
pub use server::{
    ConnectionInfo, Endpoint, Server, ServerConnection, ServerError, ServerHandler, ServerSettings,
    SessionHandler, TlsInfo, Verdict,
};
