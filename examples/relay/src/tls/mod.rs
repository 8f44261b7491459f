//! TLS set-up from the configuration: the validated policy, the inbound TLS
//! context (certificates from the [`crate::tls::certs::CertDir`], client
//! certificate roots) and the outbound TLS context (system roots plus the
//! configured CA bundle, optional client certificate).

pub mod certs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postern_certs::{
    CertResolver, CertificateStore, ClientTlsContext, ServerTlsContext, ServerTlsSpec, TrustRoots,
};
use postern_policy::{ClientCertMode, Policy, ServerTlsMode};
use rustls::RootCertStore;
use rustls::pki_types::UnixTime;

use crate::config::{Config, ConfigError};
use certs::{CertDir, CertDirError, rsa_bits};

/// An error setting up TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate could not be loaded or generated.
    #[error(transparent)]
    Certificates(#[from] CertDirError),
    /// A PEM file of trust anchors could not be read or holds no certificate.
    #[error("`{key}` {}: {reason}", path.display())]
    Roots {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] postern_certs::ConfigError),
}

/// Reads a PEM file of CA certificates into `roots`.
fn add_pem_file(
    roots: &mut TrustRoots,
    key: &'static str,
    path: &Path,
) -> Result<usize, TlsSetupError> {
    let fail = |reason: String| TlsSetupError::Roots {
        key,
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let n = roots.add_pem(&pem).map_err(|e| fail(e.to_string()))?;
    if n == 0 {
        return Err(fail("no certificate in the file".into()));
    }
    Ok(n)
}

/// The client-certificate roots (`certificates.client_cert_roots`), if set.
pub fn client_cert_roots(config: &Config) -> Result<Option<Arc<RootCertStore>>, TlsSetupError> {
    let Some(path) = &config.certificates.client_cert_roots else {
        return Ok(None);
    };
    let mut roots = TrustRoots::empty();
    add_pem_file(&mut roots, "certificates.client_cert_roots", path)?;
    Ok(Some(roots.into_store()))
}

/// The outbound trust anchors: the system roots (when
/// `certificates.system_roots`) plus `certificates.ca_bundle`.
pub fn outbound_roots(config: &Config) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let mut roots = if config.certificates.system_roots {
        let native = TrustRoots::native();
        if native.is_empty() {
            // No system store on this machine: the Mozilla roots instead.
            TrustRoots::webpki()
        } else {
            native
        }
    } else {
        TrustRoots::empty()
    };
    if let Some(path) = &config.certificates.ca_bundle {
        add_pem_file(&mut roots, "certificates.ca_bundle", path)?;
    }
    Ok(roots.into_store())
}

/// Everything TLS the relay needs, built once at start.
#[derive(Debug)]
pub struct TlsSetup {
    /// The validated policy.
    pub policy: Policy,
    /// The certificate directory.
    pub cert_dir: CertDir,
    /// The certificates served.
    pub store: CertificateStore,
    /// The inbound context; `None` for inbound mode `none`.
    pub server: Option<ServerTlsContext>,
    /// The outbound context.
    pub client: Arc<ClientTlsContext>,
}

impl TlsSetup {
    /// Builds the policy, loads (or generates) the certificates and the
    /// trust anchors, and builds both contexts.
    pub fn new(config: &Config) -> Result<Self, TlsSetupError> {
        let policy = config.policy()?;
        let cert_dir = CertDir::new(config.cert_dir());
        let store = cert_dir.store(
            &config.hostname,
            rsa_bits(config.certificates.default_rsa_bits),
            UnixTime::now(),
        )?;
        let server = if policy.inbound.tls == ServerTlsMode::None {
            None
        } else {
            let mut spec = ServerTlsSpec::default();
            spec.mode = policy.inbound.tls;
            spec.client_cert = policy.inbound.client_certificates;
            spec.min_version = policy.inbound.min_tls_version;
            spec.client_roots = if spec.client_cert == ClientCertMode::None {
                None
            } else {
                client_cert_roots(config)?
            };
            let resolver = Arc::new(CertResolver::new(store.served()));
            Some(ServerTlsContext::new(&spec, resolver)?)
        };
        let mut client = ClientTlsContext::new(outbound_roots(config)?);
        if let Some(name) = &config.certificates.outbound_certificate {
            client = client.with_client_certificate(cert_dir.get(name)?);
        }
        Ok(Self {
            policy,
            cert_dir,
            store,
            server,
            client: Arc::new(client),
        })
    }

    /// Reloads the certificates from the directory into the running server
    /// (hot swap: new handshakes use them, running sessions keep theirs).
    pub fn reload(&mut self, config: &Config) -> Result<usize, TlsSetupError> {
        let store = self.cert_dir.store(
            &config.hostname,
            rsa_bits(config.certificates.default_rsa_bits),
            UnixTime::now(),
        )?;
        if let Some(server) = &self.server {
            server.resolver().swap(store.served());
        }
        let n = store.len();
        self.store = store;
        Ok(n)
    }
}
