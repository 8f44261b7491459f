//! SMTP TLS policy model and decisions (skeleton: the policy work fills this in).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod modes;

pub use modes::{
    CertificateCheck, CertificateFailure, ClientCertMode, ClientTlsMode, PeerTrust, ServerTlsMode,
    TlsVersion,
};
