//! Test fixtures generated with rcgen, and an in-memory handshake pump.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use postern_certs::{CertKey, TrustRoots};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{ClientConnection, RootCertStore, ServerConnection};
use time::OffsetDateTime;

pub const MX: &str = "mx.example.org";

pub fn now() -> UnixTime {
    UnixTime::now()
}

/// A certificate with its key, as PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
    pub chain: Vec<String>,
}

impl Pem {
    pub fn chain_pem(&self) -> String {
        let mut s = self.cert.clone();
        for c in &self.chain {
            s.push_str(c);
        }
        s
    }
    pub fn cert_key(&self) -> CertKey {
        CertKey::from_pem(self.chain_pem().as_bytes(), self.key.as_bytes())
            .expect("fixture imports")
    }
    pub fn der(&self) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(self.cert.as_bytes()).expect("fixture pem")
    }
}

pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn now_odt() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now_odt() - Duration::from_secs(86_400 * 10);
    p.not_after = now_odt() + Duration::from_secs(86_400 * 3650);
    p
}

impl Ca {
    pub fn new(cn: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(cn);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, cn: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut r = TrustRoots::empty();
        r.add_pem(self.cert_pem.as_bytes()).unwrap();
        r.into_store()
    }

    pub fn leaf(&self, spec: LeafSpec<'_>) -> Pem {
        let key = spec.key();
        let params = spec.params();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            chain: Vec::new(),
        }
    }
}

#[derive(Clone, Copy)]
pub enum Alg {
    P256,
    Rsa2048,
}

#[derive(Clone, Copy)]
pub struct LeafSpec<'a> {
    pub names: &'a [&'a str],
    pub alg: Alg,
    /// Validity as offsets in days from now.
    pub from_days: i64,
    pub to_days: i64,
    pub client: bool,
}

impl<'a> LeafSpec<'a> {
    pub fn server(names: &'a [&'a str]) -> Self {
        Self {
            names,
            alg: Alg::P256,
            from_days: -1,
            to_days: 90,
            client: false,
        }
    }
    pub fn client(names: &'a [&'a str]) -> Self {
        Self {
            client: true,
            ..Self::server(names)
        }
    }
    pub fn valid(self, from_days: i64, to_days: i64) -> Self {
        Self {
            from_days,
            to_days,
            ..self
        }
    }
    pub fn rsa(self) -> Self {
        Self {
            alg: Alg::Rsa2048,
            ..self
        }
    }
    fn key(&self) -> KeyPair {
        match self.alg {
            Alg::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            Alg::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap(),
        }
    }
    fn params(&self) -> CertificateParams {
        let mut p =
            CertificateParams::new(self.names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name
            .push(DnType::CommonName, *self.names.first().unwrap_or(&"client"));
        p.not_before = now_odt() + time::Duration::days(self.from_days);
        p.not_after = now_odt() + time::Duration::days(self.to_days);
        p.extended_key_usages = vec![if self.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        p
    }
    pub fn self_signed(&self) -> Pem {
        let key = self.key();
        let cert = self.params().self_signed(&key).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            chain: Vec::new(),
        }
    }
}

/// The shared fixture set: a root CA, an intermediate, and leaves.
pub struct Fixtures {
    pub ca: Ca,
    pub inter: Ca,
    /// mx.example.org, signed by the intermediate (chain includes it).
    pub leaf: Pem,
    pub self_signed: Pem,
    pub expired: Pem,
    pub not_yet_valid: Pem,
    pub wrong_name: Pem,
    /// A client certificate signed by the root.
    pub client_trusted: Pem,
    /// A self-signed client certificate.
    pub client_untrusted: Pem,
    /// Another CA, untrusted by anyone.
    pub other_ca: Ca,
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let ca = Ca::new("Postern Test Root");
        let inter = ca.intermediate("Postern Test Intermediate");
        let mut leaf = inter.leaf(LeafSpec::server(&[MX]));
        leaf.chain.push(inter.cert_pem.clone());
        let mut expired = inter.leaf(LeafSpec::server(&[MX]).valid(-30, -1));
        expired.chain.push(inter.cert_pem.clone());
        let mut not_yet_valid = inter.leaf(LeafSpec::server(&[MX]).valid(2, 30));
        not_yet_valid.chain.push(inter.cert_pem.clone());
        let mut wrong_name = inter.leaf(LeafSpec::server(&["other.example.net"]));
        wrong_name.chain.push(inter.cert_pem.clone());
        let other_ca = Ca::new("Unknown Root");
        Fixtures {
            self_signed: LeafSpec::server(&[MX]).self_signed(),
            client_trusted: ca.leaf(LeafSpec::client(&["client.example.com"])),
            client_untrusted: LeafSpec::client(&["client.example.com"]).self_signed(),
            ca,
            inter,
            leaf,
            expired,
            not_yet_valid,
            wrong_name,
            other_ca,
        }
    })
}

/// An RSA-4096 leaf for mx.example.org signed by the intermediate, generated
/// once per test binary (a few seconds).
pub fn rsa4096_leaf() -> &'static Pem {
    static R: OnceLock<Pem> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixtures();
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096).unwrap();
        let params = LeafSpec::server(&[MX]).params();
        let cert = params.signed_by(&key, &f.inter.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            chain: vec![f.inter.cert_pem.clone()],
        }
    })
}

/// Drives a handshake in memory until both sides are done or one fails.
pub fn handshake(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    for _ in 0..20 {
        if !c.is_handshaking() && !s.is_handshaking() {
            // Flush what is left (e.g. TLS 1.3 tickets) so resumption works.
            transfer_server(s, c, &mut buf)?;
            return Ok(());
        }
        buf.clear();
        c.write_tls(&mut buf).unwrap();
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets()?;
        }
        transfer_server(s, c, &mut buf)?;
    }
    panic!("handshake did not finish");
}

fn transfer_server(
    s: &mut ServerConnection,
    c: &mut ClientConnection,
    buf: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    buf.clear();
    s.write_tls(buf).unwrap();
    let mut rd = buf.as_slice();
    while !rd.is_empty() {
        c.read_tls(&mut rd).unwrap();
        c.process_new_packets()?;
    }
    Ok(())
}

/// Sends application data both ways to prove the session works.
pub fn exchange(c: &mut ClientConnection, s: &mut ServerConnection) {
    use std::io::{Read, Write};
    c.writer().write_all(b"EHLO client.example\r\n").unwrap();
    let mut buf = Vec::new();
    c.write_tls(&mut buf).unwrap();
    s.read_tls(&mut buf.as_slice()).unwrap();
    s.process_new_packets().unwrap();
    let mut got = [0u8; 21];
    s.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"EHLO client.example\r\n");
}
