//! rustls configurations (aws-lc-rs provider) for the generator and the sink.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs, verify_tls12_signature,
    verify_tls13_signature,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion};

use crate::options::{ClientArgs, KeyType, TlsVersion};

/// A TLS setup error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name: {0}")]
    ServerName(String),
    /// The roots could not build a verifier.
    #[error("certificate verifier: {0}")]
    Verifier(String),
}

fn pem_error(path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::Pem {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Read every certificate of a PEM file (at least one).
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate"));
    }
    Ok(certs)
}

/// Read the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

static ONLY_TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
static ONLY_TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(v: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    match v {
        TlsVersion::Tls12 => &ONLY_TLS12,
        TlsVersion::Tls13 => &ONLY_TLS13,
        TlsVersion::Any => rustls::ALL_VERSIONS,
    }
}

fn scheme_allowed(key: KeyType, scheme: SignatureScheme) -> bool {
    use SignatureScheme as S;
    match key {
        KeyType::Any => true,
        KeyType::Rsa => matches!(
            scheme,
            S::RSA_PSS_SHA256
                | S::RSA_PSS_SHA384
                | S::RSA_PSS_SHA512
                | S::RSA_PKCS1_SHA256
                | S::RSA_PKCS1_SHA384
                | S::RSA_PKCS1_SHA512
        ),
        KeyType::Ecdsa => matches!(
            scheme,
            S::ECDSA_NISTP256_SHA256 | S::ECDSA_NISTP384_SHA384 | S::ECDSA_NISTP521_SHA512
        ),
    }
}

/// The generator's server certificate verifier.
///
/// Without roots it accepts any certificate chain and name, yet verifies the handshake signatures (TLS 1.2
/// `ServerKeyExchange`, TLS 1.3 `CertificateVerify`) with the certificate's key, so the server does all the
/// cryptographic work of a real handshake. Benchmark use only: that gives no authentication. With roots it
/// delegates to webpki. Either way it offers only the signature schemes of the key type asked for.
#[derive(Debug)]
pub(crate) struct BenchVerifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    key: KeyType,
}

impl BenchVerifier {
    /// A verifier using the provider's signature algorithms; `webpki` verifies chains and names when set.
    pub(crate) fn new(
        provider: &CryptoProvider,
        webpki: Option<Arc<WebPkiServerVerifier>>,
        key: KeyType,
    ) -> Self {
        Self {
            webpki,
            algorithms: provider.signature_verification_algorithms,
            key,
        }
    }
}

impl ServerCertVerifier for BenchVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let key = self.key;
        self.algorithms
            .supported_schemes()
            .into_iter()
            .filter(|&s| scheme_allowed(key, s))
            .collect()
    }
}

/// The client configuration for a run. With `--resume` the caller shares this one configuration (and so its
/// session cache) among all connections; without it resumption is disabled, so every handshake is full.
pub(crate) fn client_config(args: &ClientArgs) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(args.tls_version))?;
    let webpki = match &args.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|e| pem_error(ca, e))?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
            Some(verifier)
        }
        None => None,
    };
    let verifier = BenchVerifier::new(&provider, webpki, args.server_key);
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.resumption = if args.resume {
        // Room for one ticket per concurrent connection at least.
        Resumption::in_memory_sessions(args.connections.max(256))
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// The server name for SNI and verification.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsSetupError::ServerName(name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_filters_schemes() {
        let provider = aws_lc_rs::default_provider();
        let schemes = |key| BenchVerifier::new(&provider, None, key).supported_verify_schemes();
        let all = schemes(KeyType::Any);
        let rsa = schemes(KeyType::Rsa);
        let ecdsa = schemes(KeyType::Ecdsa);
        assert!(
            rsa.contains(&SignatureScheme::RSA_PSS_SHA256)
                && !rsa.contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
        );
        assert!(
            ecdsa.contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
                && !ecdsa.contains(&SignatureScheme::RSA_PSS_SHA256)
        );
        assert!(
            all.len() > rsa.len() + ecdsa.len(),
            "ed25519 is in neither subset"
        );
    }
}
