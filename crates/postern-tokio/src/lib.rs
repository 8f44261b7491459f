//! Skeleton.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod client;
pub mod server;
mod stream;
