//! The DNS side of DANE for SMTP (RFC 7672): MX, address and TLSA lookups
//! whose DNSSEC status is always known, for an MTA on Tokio.
//!
//! The decisions stay in [`postern_policy`] (sans-IO): this crate asks DNS
//! and reports what it found and how sure it is; the policy's
//! [`DaneOutcome::from_lookup`](postern_policy::dane::DaneOutcome::from_lookup)
//! and connection policy say what the delivery must then do.
//!
//! # The four statuses
//!
//! Every answer carries a [`DnssecStatus`], exactly one of:
//!
//! | status | when | for DANE |
//! |---|---|---|
//! | `Secure` | validated from a trust anchor, data or its denial (NSEC/NSEC3) | usable |
//! | `Insecure` | provably unsigned | DANE does not apply |
//! | `Bogus` | validation failed (bad or expired signatures, missing proof) | defer, never "no DANE" |
//! | `Indeterminate` | timeout, SERVFAIL without a DNSSEC reason, REFUSED, network error | defer, never "no DANE" |
//!
//! The enum lives in [`postern_policy::dane`], next to
//! [`TlsaLookup`](postern_policy::dane::TlsaLookup) and
//! [`LookupFailure`](postern_policy::dane::LookupFailure) (into which its two
//! failures map), so the sans-IO policy can take it from any resolver, not
//! only this one; it is re-exported here.
//!
//! # Two ways to trust DNSSEC
//!
//! - [`DaneResolver::validating`] ([`ValidatingConfig`]): the relay validates
//!   itself with hickory-resolver, from the built-in root anchor or a
//!   trust-anchor file of DNSKEY records ([`TrustAnchor`]), asking the
//!   configured servers over UDP and TCP (a truncated answer is retried over
//!   TCP). Status comes from the proof hickory attaches to every record.
//! - [`DaneResolver::trust_ad`] ([`TrustAdConfig`]): the relay trusts the AD
//!   bit of a validating resolver (Postfix's model, with a local unbound).
//!   hickory-resolver's `Resolver` neither asks for the AD bit nor keeps it in
//!   negative answers, so these queries go through hickory's lower-level
//!   exchange ([`hickory_resolver::net::xfer::DnsHandle`]) with the AD bit set
//!   in the query (RFC 6840 §5.7); the response header is read directly:
//!   NOERROR/NXDOMAIN with AD is Secure, without AD Insecure. A validating
//!   resolver answers bogus data with SERVFAIL, which also means "could not
//!   get an answer": it is reported as **Bogus** when the response carries an
//!   RFC 8914 extended error naming a DNSSEC failure (codes 6–12; unbound
//!   sends them with `ede: yes`), and as **Indeterminate** otherwise. Both
//!   defer the delivery (RFC 7672 §2.1); the difference is the report. A
//!   NOERROR/NXDOMAIN answer carrying such an extended error (a resolver in
//!   permissive mode hands out data it could not validate) is Bogus too,
//!   never Insecure. A truncated response, one with any other RCODE
//!   (REFUSED, NOTIMP, FORMERR …), and NXDOMAIN with records of the type
//!   asked for are Indeterminate; records are only taken from NOERROR. The AD
//!   bit is unauthenticated on the wire: keep the resolver on loopback
//!   ([`TrustAdConfig::is_loopback`], [`DaneResolver::trusted_resolver_is_loopback`]
//!   for a configuration check).
//!
//! # The lookups (RFC 7672 §2.2)
//!
//! - [`DaneResolver::mx`]: the MX RRset, preference-sorted ([`MxLookup`]).
//!   Only a secure MX RRset lets DANE apply to its hosts
//!   ([`MxLookup::dane_applies`]); null MX (RFC 7505) and denials are
//!   reported as such.
//! - [`DaneResolver::addresses`]: A and AAAA ([`AddressLookup`]), with both
//!   the name asked for and the name at the end of any CNAME chain; the
//!   status is the weakest of both queries and every link.
//! - [`DaneResolver::tlsa`]: `_port._tcp.host` TLSA, as a
//!   [`TlsaLookup`](postern_policy::dane::TlsaLookup). A CNAME on the TLSA
//!   name is followed; the records count only if every link is secure.
//!   Records that cannot be read are skipped with a debug log; a secure
//!   RRset with none readable is Indeterminate, never "no records".
//! - [`DaneResolver::tlsa_for`]: the §2.2.2 rule for an MX host reached
//!   through a CNAME: TLSA at the expanded name first, then at the original
//!   name, with the TLSA base domain reported ([`HostTlsa`]).
//!
//! Nothing here panics on network input: malformed answers become
//! Indeterminate, unparseable records are skipped.
//!
//! # Known limits of hickory-resolver 0.26.3
//!
//! - hickory #3932 / #3964 (open): in [`Mode::Validating`], a timeout while
//!   fetching a DS or DNSKEY RRset is reported as Bogus, not Indeterminate.
//!   RFC 7672 defers the delivery either way, but a TLS-RPT report may say
//!   `dnssec-invalid` for what was a network problem. (Tests assert a Secure
//!   control query first, so a broken lab cannot pass as "Bogus".)
//! - hickory-resolver 0.26.3 reports a CNAME whose target securely lacks the
//!   type asked for (CNAME, then NODATA proved by NSEC3) as Bogus, where
//!   unbound and delv say Secure. On a Bogus answer, [`Mode::Validating`]
//!   walks the chain again one link at a time (the CNAME alone, then the type
//!   at its target), each step validated by hickory; the verdict changes only
//!   if every step validates, so real Bogus data stays Bogus (the lab test
//!   checks both).
//! - Use 0.26.3 or later: earlier 0.26 releases carry NSEC3 advisories
//!   (RUSTSEC-2026-0118/0120) and an insecure-delegation regression.
//! - The validating resolver caches answers (and their proofs) for their
//!   TTL; build a new [`DaneResolver`] to start cold.
//!
//! # Example
//!
//! ```no_run
//! use postern_dns::{DaneResolver, ValidatingConfig};
//! use postern_policy::dane::DaneOutcome;
//! use postern_types::DomainName;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let resolver = DaneResolver::validating(&ValidatingConfig::new(["127.0.0.1:53".parse()?]))?;
//! let domain = DomainName::parse("example.net")?;
//! let mx = resolver.mx(&domain).await;
//! if let Some(failure) = mx.status.failure() {
//!     // Bogus or Indeterminate: defer, never "no DANE".
//!     println!("defer: MX lookup {failure:?}");
//!     return Ok(());
//! }
//! for host in &mx.hosts {
//!     let addresses = resolver.addresses(&host.exchange).await;
//!     let tlsa = if mx.dane_applies() {
//!         resolver.tlsa_for(&addresses, 25).await.lookup
//!     } else {
//!         postern_policy::dane::TlsaLookup::Insecure
//!     };
//!     match DaneOutcome::from_lookup(tlsa) {
//!         DaneOutcome::Authenticate(records) => println!("{}: {} TLSA", host.exchange, records.len()),
//!         other => println!("{}: {other:?}", host.exchange),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod answer;
mod config;
mod resolver;

pub use answer::{AddressLookup, Denial, HostTlsa, MxHost, MxLookup};
pub use config::{DEFAULT_TIMEOUT, TrustAdConfig, TrustAnchor, ValidatingConfig};
pub use postern_policy::dane::DnssecStatus;
pub use resolver::{BuildError, DaneResolver, Mode};

/// Entry points for the fuzz targets; not part of the API (see
/// `fuzz/fuzz_targets/dns_answer.rs`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use resolver::fuzzing;
