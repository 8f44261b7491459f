//! Certificate management and rustls configuration for SMTP TLS policy.
//!
//! This crate is the only place where Postern touches rustls configuration.
//! It takes its vocabulary (modes, trust levels, check outcomes) from
//! [`postern_policy`] and plain parameters for everything else.
//!
//! # Design
//!
//! - **Default certificate** ([`load_or_create`]): when no server certificate
//!   exists, a self-signed "Default Cert" (RSA 4096, SHA-256, SAN = host name,
//!   825 days of validity in total) and an ECDSA P-256 companion are
//!   generated, written atomically (key mode 0600, key first) and reused on
//!   every later start. A key found without its certificate (a first start
//!   killed between the two writes) gets its certificate issued again; a
//!   certificate without its key, or a mismatched pair, is an error, never
//!   silently regenerated. [`load_existing`] reads without writing.
//! - **Import and inspection** ([`CertKey::from_pem`], [`inspect`]): PEM chains
//!   with PKCS#8, PKCS#1 or SEC1 keys, with clear errors; a certificate table
//!   row (subject, SANs, key size, fingerprint, status at a given time).
//! - **Serving** ([`CertificateStore`], [`ServedCertificates`], [`CertResolver`]):
//!   selection by SNI (exact, then wildcard), a fallback for clients without SNI
//!   (RFC 8461 §7.1: servers must not require it) and for clients that can use
//!   no certificate of their SNI name, then any usable certificate rather than
//!   a failed handshake; an operator-imported certificate before the generated
//!   Default Cert for the same name ([`CertOrigin`]), then ECDSA to clients
//!   offering ECDSA schemes and RSA to the others; a certificate out of its
//!   validity only when no valid one can answer. The served set is swapped
//!   atomically for hot reload.
//! - **Verifiers** ([`PeerCertVerifier`], [`ClientCertPolicy`]): one per side,
//!   for every mode, each deciding a [`CertificateCheck`] (Anonymous /
//!   Untrusted / Trusted / Verified and the reason) for logs and TLS-RPT. Read
//!   it after a handshake with [`ClientTlsConnection::certificate_check`] or
//!   [`ServerTlsContext::client_certificate`] (from `peer_certificates()`, so
//!   resumed sessions report too), or from a refused handshake's error with
//!   [`refused_check`]. Handshake signatures are always verified, in every
//!   mode: no verifier here accepts everything. DANE and custom MTA-STS
//!   checks plug in through [`CertificateHook`].
//! - **DANE** ([`DaneHook`]): the [`CertificateHook`] for TLSA records
//!   (RFC 7672, RFC 7671): DANE-EE(3) matches the server's certificate or key
//!   with no name or date check; DANE-TA(2) makes the matched certificate of
//!   the chain the only trust anchor of a full path validation, then checks
//!   the names (TLSA base domain, next-hop domain); PKIX usages never match;
//!   only the strongest digest per usage and selector is used.
//!   [`tlsa_record`] computes the record to publish for a certificate.
//! - **Configuration** ([`ServerTlsContext`], [`ClientTlsContext`]): TLS 1.2 and
//!   1.3 only, minimum version honoured, the crypto provider (aws-lc-rs by
//!   default, or ring: see the crate features) passed explicitly, server
//!   session tickets and cache, client session caches shared across
//!   connections (one per verification policy), SNI sent.
//! - **Durable writes** ([`durable`]): the one write, fsync, rename,
//!   fsync-the-directory sequence, used for the certificate files here and
//!   by a relay for its queue and state files.
//!
//! Time is always passed in (`now`), except inside a rustls handshake, which
//! uses rustls' clock.
//!
//! ## No anonymous cipher suites
//!
//! rustls has no aNULL suites. Encryption for a client with no certificate
//! (the seed's "anonymous ciphers") is what server client-certificate modes
//! `none` and `ask` give: the client presents nothing and the session is
//! encrypted with the server's certificate.
//!
//! # Example
//!
//! Serve a certificate, connect with `encrypt` (no chain check, signatures
//! checked) and read the recorded outcome. Real servers would use
//! [`load_or_create`] to get the RSA-4096 default certificate; P-256 keeps this
//! example fast.
//!
//! ```
//! use std::sync::Arc;
//! use postern_certs::{
//!     CertKey, CertResolver, CertificateStore, ClientTlsContext, ClientTlsSpec,
//!     DefaultCertOptions, GeneratedKind, ServerTlsContext, ServerTlsSpec, TrustRoots,
//!     generate_self_signed,
//! };
//! use postern_policy::{ClientTlsMode, PeerTrust, CertificateFailure};
//! use rustls::pki_types::UnixTime;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = UnixTime::now();
//! let pem = generate_self_signed(&DefaultCertOptions::new("mx.example.org"), GeneratedKind::EcdsaP256, now)?;
//! let mut store = CertificateStore::new();
//! store.add("Default Cert", CertKey::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())?)?;
//! let row = &store.list(now)[0];
//! assert!(row.self_signed);
//!
//! let server = ServerTlsContext::new(&ServerTlsSpec::default(), Arc::new(CertResolver::new(store.served())))?;
//! let client = ClientTlsContext::new(TrustRoots::webpki().into_store());
//! let conn = client.connection(&ClientTlsSpec::new(ClientTlsMode::Encrypt, "mx.example.org"))?;
//!
//! let mut c = rustls::ClientConnection::new(conn.config.clone(), conn.server_name.clone())?;
//! let mut s = rustls::ServerConnection::new(server.config())?;
//! // Pump the handshake through memory.
//! while c.is_handshaking() || s.is_handshaking() {
//!     let mut buf = Vec::new();
//!     c.write_tls(&mut buf)?;
//!     s.read_tls(&mut buf.as_slice())?;
//!     s.process_new_packets()?;
//!     buf.clear();
//!     s.write_tls(&mut buf)?;
//!     c.read_tls(&mut buf.as_slice())?;
//!     c.process_new_packets()?;
//! }
//! let check = conn.certificate_check(c.peer_certificates(), now);
//! assert_eq!(check.trust, PeerTrust::Untrusted); // self-signed: no path to a root
//! assert_eq!(check.failure, Some(CertificateFailure::NotTrusted));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

mod certkey;
mod config;
mod dane;
mod default_cert;
pub mod durable;
mod error;
mod inspect;
mod resolver;
mod store;
mod verify;

pub use certkey::{CertKey, KeyType, MIN_RSA_BITS};
pub use config::{
    ClientTlsConnection, ClientTlsContext, ClientTlsSpec, ServerTlsContext, ServerTlsSpec,
    TrustRoots, protocol_versions, provider,
};
pub use dane::{DaneError, DaneHook, DaneMatch, tlsa_record, usable_records};
pub use default_cert::{
    DefaultCertOptions, DefaultCertificate, ECDSA_CERT_FILE, ECDSA_KEY_FILE, GeneratedKind,
    GeneratedPem, RSA_CERT_FILE, RSA_KEY_FILE, RsaBits, load_existing,
};
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
pub use default_cert::{generate_self_signed, load_or_create};
pub use error::{ConfigError, DefaultCertError, ImportError, InspectError, StoreError};
pub use inspect::{CertStatus, CertificateRow, EXPIRY_WARNING_DAYS, inspect};
pub use resolver::{CertOrigin, CertResolver, ServedCertificates};
pub use store::{CertificateStore, DEFAULT_CERT_NAME};
pub use verify::{
    CertificateHook, ClientCertPolicy, HookInput, PeerCertVerifier, RefusedCertificate,
    describe_tls_error, refused_check,
};

/// The rustls whose types appear in this crate's signatures (`RootCertStore`,
/// `CryptoProvider`, `ServerConfig`, `ClientConfig`, `pki_types` …): use it
/// rather than a rustls dependency of your own, so the versions always match.
pub use rustls;

pub use postern_policy::{
    CertificateCheck, CertificateFailure, ClientCertificate, Fingerprint, FingerprintError,
    PeerTrust,
};

/// Another name for [`FingerprintError`], the error of parsing a [`Fingerprint`].
pub type FingerprintParseError = FingerprintError;
