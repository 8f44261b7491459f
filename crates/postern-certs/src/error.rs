//! Error types, one enum per operation.

use std::path::PathBuf;

/// Why a PEM certificate chain and private key could not be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The PEM text is malformed (bad markers, bad base64, oversized section).
    #[error("malformed pem: {0}")]
    MalformedPem(String),
    /// The PEM text holds no certificate.
    #[error("empty certificate chain")]
    EmptyChain,
    /// The PEM text holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key found")]
    NoPrivateKey,
    /// The private key could not be loaded (unsupported algorithm or bad encoding).
    #[error("unusable private key: {0}")]
    InvalidKey(#[source] rustls::Error),
    /// The private key does not belong to the first certificate of the chain.
    #[error("private key does not match the certificate")]
    KeyMismatch,
    /// A certificate of the chain could not be parsed.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The RSA key is shorter than 2048 bits.
    #[error("rsa key of {bits} bits is too short (minimum 2048)")]
    WeakRsaKey {
        /// Size of the modulus in bits.
        bits: usize,
    },
}

/// Why a certificate could not be inspected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The DER bytes are not a parsable X.509 certificate.
    #[error("invalid certificate: {0}")]
    Parse(String),
}

/// Why the default certificate could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefaultCertError {
    /// No host name was configured for the certificate.
    #[error("no host name configured for the default certificate")]
    NoHostName,
    /// Key or certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read, written or synced.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Only one of the certificate and key files exists; refusing to regenerate.
    #[error("{} exists but {} is missing; refusing to regenerate", present.display(), missing.display())]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A key found without its certificate could not be read back to issue
    /// the certificate again.
    #[error("{} has no certificate and cannot be read back to issue one; remove it to generate a new pair", key.display())]
    LoneKeyUnusable {
        /// The key file.
        key: PathBuf,
    },
    /// The stored certificate and key could not be used together.
    #[error("stored pair {} is unusable: {source}", cert.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// Why it was rejected.
        #[source]
        source: ImportError,
    },
}

/// Why a certificate store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An entry of that name already exists.
    #[error("a certificate named {0:?} already exists")]
    Duplicate(String),
}

/// Why a rustls configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The mode disables TLS, so there is no configuration to build.
    #[error("tls is disabled by the mode")]
    TlsDisabled,
    /// Client certificates can be required only when the server requires TLS.
    #[error("client certificate require is only valid with server mode require")]
    ClientCertNeedsRequire,
    /// Requiring client certificates needs configured CA roots.
    #[error("no ca roots configured for client certificates")]
    MissingClientRoots,
    /// The mode needs a verification hook (DANE) that was not supplied.
    #[error("mode {0:?} needs a verification hook")]
    MissingHook(postern_policy::ClientTlsMode),
    /// The fingerprint mode needs at least one pin.
    #[error("fingerprint mode needs at least one pin")]
    MissingPins,
    /// The mode is not known to this version.
    #[error("unsupported mode {0:?}")]
    UnsupportedMode(postern_policy::ClientTlsMode),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Session tickets were asked for, but no built-in crypto provider
    /// (feature `aws-lc-rs` or `ring`) supplies a ticketer.
    #[error("session tickets need feature aws-lc-rs or ring")]
    NoTicketer,
}
