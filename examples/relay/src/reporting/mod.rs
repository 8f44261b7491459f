//! Reporting: what the relay writes itself. Bounces to senders ([`dsn`], RFC
//! 3464), daily SMTP TLS reports to destination domains ([`tlsrpt`], RFC
//! 8460) and the DKIM signature those reports carry ([`dkim`], RFC 6376).

pub mod dkim;
pub mod dsn;
pub mod tlsrpt;
