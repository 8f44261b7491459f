//! Plumbing shared by the flows: DNS lookups ([`dns`]), the HTTPS client of
//! MTA-STS and TLS-RPT (`https`) and the open-file limit ([`fd_limit`]).

pub mod dns;
pub mod fd_limit;
pub(crate) mod https;
