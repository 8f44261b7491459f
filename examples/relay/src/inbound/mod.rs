//! Inbound: a message arrives. The SMTP session handler (greeting, STARTTLS
//! under the server TLS mode, client certificates, the `Received` header,
//! content streamed into the spool, `250` only after the fsyncs) and the
//! relay authorisation that answers each `RCPT TO`.
//!
//! The TLS decisions themselves (530 before STARTTLS, client-certificate
//! outcomes, relaying by certificate) are made by postern-smtp's session and
//! postern-policy; [`session`] carries them out and records them.

pub mod access;
pub mod session;
