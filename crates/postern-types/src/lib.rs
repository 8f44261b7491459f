//! The vocabulary shared by the Postern crates: each value that crosses a crate
//! boundary is defined here once, and passes as a typed value, never as a
//! string that the next crate parses again.
//!
//! # Design
//!
//! - [`ReplyCode`] (RFC 5321 §4.2) and [`EnhancedStatus`] (RFC 3463): the
//!   codes of an SMTP reply, of a policy decision and of a queued failure.
//! - [`DomainName`]: a domain in its one canonical form (lower-case A-labels via
//!   IDNA UTS #46, no trailing dot), and [`DomainTable`], the one lookup rule of
//!   every per-domain table — TLS policy overrides, static routes, accepted
//!   domains: the exact name, then `.parent` entries nearest first; the
//!   caller's default after that.
//! - [`Body`] and [`Ret`]: the ESMTP MAIL parameters a queue keeps with a
//!   message (RFC 6152, RFC 3030, RFC 3461).
//! - [`ResultType`]: the RFC 8460 TLS-RPT result types.
//!
//! The crate has no workspace dependency: `postern-smtp` and `postern-policy`
//! both build on it and re-export its types, and each stays usable alone.
//!
//! # Features
//!
//! - `serde`: `Serialize` and `Deserialize` for the types, in their text form
//!   (`"4.7.5"`, `"xn--bcher-kva.example"`, `"certificate-not-trusted"`).
//!
//! # Example
//!
//! ```
//! use postern_types::{DomainName, DomainRule, DomainTable, EnhancedStatus, ReplyCode};
//!
//! // One normalisation: a U-label rule matches an A-label destination.
//! let mut accepted = DomainTable::new();
//! accepted.insert(DomainRule::parse("Bücher.example")?, ())?;
//! let destination = DomainName::parse("xn--bcher-kva.example.")?;
//! assert!(accepted.lookup(&destination).is_some());
//!
//! // A reply without an enhanced status gets its class's.
//! let code = ReplyCode::new(550)?;
//! assert_eq!(EnhancedStatus::of_reply_code(code), EnhancedStatus::new(5, 0, 0).ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod domain;
pub mod esmtp;
pub mod result_type;
pub mod status;

pub use domain::{DomainName, DomainRule, DomainTable, DuplicateRule, NameError};
pub use esmtp::{Body, Ret};
pub use result_type::{ResultType, UnknownResultType};
pub use status::{EnhancedStatus, InvalidEnhancedStatus, InvalidReplyCode, ReplyCode};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
