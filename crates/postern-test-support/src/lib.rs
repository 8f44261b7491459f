//! Test fixtures shared by Postern's test suites: a certificate authority
//! (with intermediates), leaf and self-signed certificates generated with
//! rcgen, as PEM, and the conversions the tests need (a [`CertKey`], DER, a
//! fingerprint, a root store, files on disk).
//!
//! Not published: it is a dev-dependency of `postern-certs`, `postern-tokio`,
//! `postern-dns` and the relay, so their tests build certificates one way;
//! [`dns_lab`] starts the offline DNSSEC lab for the tests that need DNS.
//!
//! ```
//! use postern_test_support::{Ca, LeafSpec, self_signed};
//!
//! let ca = Ca::new("Example Test CA");
//! let leaf = ca.leaf(&["mx.example.org"], false, -1, 90);
//! assert!(leaf.cert.starts_with("-----BEGIN CERTIFICATE-----"));
//! let rsa = ca.leaf_with(LeafSpec::server(&["mx.example.org"]).rsa());
//! assert_ne!(rsa.key, leaf.key);
//! let alone = self_signed(&["client.example.net"], true);
//! assert!(alone.cert_key().leaf().as_ref().len() > 100);
//! ```

pub mod dns_lab;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postern_certs::{CertKey, Fingerprint, TrustRoots};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Now plus `n` days (negative: in the past).
pub fn days(n: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(n)
}

/// A certificate and its key, as PEM, with the intermediates that follow it.
#[derive(Clone, Debug)]
pub struct Pem {
    /// The leaf certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
    /// Intermediate certificates, nearest first.
    pub chain: Vec<String>,
}

impl Pem {
    /// The leaf followed by its intermediates.
    pub fn chain_pem(&self) -> String {
        let mut s = self.cert.clone();
        for c in &self.chain {
            s.push_str(c);
        }
        s
    }

    /// The chain and key, imported as `postern-certs` imports them.
    ///
    /// # Panics
    /// If the fixture does not import (a bug in the fixture).
    pub fn cert_key(&self) -> CertKey {
        CertKey::from_pem(self.chain_pem().as_bytes(), self.key.as_bytes())
            .expect("fixture imports")
    }

    /// The leaf, DER.
    ///
    /// # Panics
    /// If the PEM does not parse (a bug in the fixture).
    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).expect("fixture pem")
    }

    /// The leaf's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.cert_key().fingerprint()
    }

    /// Writes `name.crt` (the chain) and `name.key` into `dir`; returns their
    /// paths.
    ///
    /// # Panics
    /// If a file cannot be written.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, self.chain_pem()).expect("write the certificate");
        std::fs::write(&k, &self.key).expect("write the key");
        (c, k)
    }
}

/// A test certificate authority (P-256), valid from ten days ago for ten
/// years.
pub struct Ca {
    /// Its certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = days(-10);
    p.not_after = days(3650);
    p
}

impl Ca {
    /// A root CA named `cn`.
    ///
    /// # Panics
    /// If rcgen fails (not expected).
    pub fn new(cn: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let params = ca_params(cn);
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA named `cn`, signed by this one.
    ///
    /// # Panics
    /// If rcgen fails (not expected).
    pub fn intermediate(&self, cn: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let params = ca_params(cn);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("intermediate certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A root store holding this CA.
    ///
    /// # Panics
    /// If the CA's PEM does not load (not expected).
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut r = TrustRoots::empty();
        r.add_pem(self.cert_pem.as_bytes()).expect("CA loads");
        r.into_store()
    }

    /// A P-256 leaf for `names` (the first is also the common name), for a
    /// client (`client`) or a server, valid from `from` to `to` days from now.
    pub fn leaf(&self, names: &[&str], client: bool, from: i64, to: i64) -> Pem {
        let spec = if client {
            LeafSpec::client(names)
        } else {
            LeafSpec::server(names)
        };
        self.leaf_with(spec.valid(from, to))
    }

    /// A leaf as `spec` describes it, signed by this CA.
    ///
    /// # Panics
    /// If rcgen fails (not expected).
    pub fn leaf_with(&self, spec: LeafSpec<'_>) -> Pem {
        let key = spec.key();
        let cert = spec
            .params()
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            chain: Vec::new(),
        }
    }
}

/// A self-signed P-256 certificate for `names`, valid from yesterday for 90
/// days.
pub fn self_signed(names: &[&str], client: bool) -> Pem {
    let spec = if client {
        LeafSpec::client(names)
    } else {
        LeafSpec::server(names)
    };
    spec.self_signed()
}

/// The key algorithm of a leaf.
#[derive(Clone, Copy, Debug)]
pub enum Alg {
    /// ECDSA P-256 (fast; the default).
    P256,
    /// RSA 2048.
    Rsa2048,
    /// RSA 4096 (seconds to generate).
    Rsa4096,
}

/// What a leaf certificate looks like.
#[derive(Clone, Copy, Debug)]
pub struct LeafSpec<'a> {
    /// Its subjectAltNames; the first is also its common name.
    pub names: &'a [&'a str],
    /// Its key algorithm.
    pub alg: Alg,
    /// Start of validity, in days from now.
    pub from_days: i64,
    /// End of validity, in days from now.
    pub to_days: i64,
    /// A client certificate (clientAuth) rather than a server one.
    pub client: bool,
}

impl<'a> LeafSpec<'a> {
    /// A P-256 server certificate valid from yesterday for 90 days.
    pub fn server(names: &'a [&'a str]) -> Self {
        Self {
            names,
            alg: Alg::P256,
            from_days: -1,
            to_days: 90,
            client: false,
        }
    }

    /// As [`LeafSpec::server`], for a client.
    pub fn client(names: &'a [&'a str]) -> Self {
        Self {
            client: true,
            ..Self::server(names)
        }
    }

    /// Valid from `from_days` to `to_days` days from now.
    pub fn valid(self, from_days: i64, to_days: i64) -> Self {
        Self {
            from_days,
            to_days,
            ..self
        }
    }

    /// With an RSA-2048 key.
    pub fn rsa(self) -> Self {
        Self {
            alg: Alg::Rsa2048,
            ..self
        }
    }

    /// With an RSA-4096 key.
    pub fn rsa4096(self) -> Self {
        Self {
            alg: Alg::Rsa4096,
            ..self
        }
    }

    fn key(&self) -> KeyPair {
        match self.alg {
            Alg::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
            Alg::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
            Alg::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
        }
        .expect("key generation")
    }

    fn params(&self) -> CertificateParams {
        let mut p = CertificateParams::new(
            self.names
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("leaf parameters");
        p.distinguished_name
            .push(DnType::CommonName, *self.names.first().unwrap_or(&"client"));
        p.not_before = days(self.from_days);
        p.not_after = days(self.to_days);
        p.extended_key_usages = vec![if self.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        p
    }

    /// This leaf, self-signed.
    ///
    /// # Panics
    /// If rcgen fails (not expected).
    pub fn self_signed(&self) -> Pem {
        let key = self.key();
        let cert = self
            .params()
            .self_signed(&key)
            .expect("self-signed certificate");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            chain: Vec::new(),
        }
    }
}
