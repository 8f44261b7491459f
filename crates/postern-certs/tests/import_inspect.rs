//! Import (PEM chain + key in every encoding, with clear refusals) and
//! inspection into certificate-table rows.

mod common;

use std::time::Duration;

use common::{fixtures, rsa4096_leaf};
use postern_certs::{
    CertKey, CertStatus, Fingerprint, ImportError, InspectError, KeyType, inspect,
};
use rustls::pki_types::UnixTime;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn at(days_from_now: i64) -> UnixTime {
    let now = UnixTime::now().as_secs() as i64;
    UnixTime::since_unix_epoch(Duration::from_secs((now + days_from_now * 86_400) as u64))
}

#[test]
fn imports_pkcs8_pkcs1_and_sec1_keys() {
    let f = fixtures();
    let k = CertKey::from_pem(f.leaf.chain_pem().as_bytes(), f.leaf.key.as_bytes()).unwrap();
    assert_eq!(k.chain().len(), 2, "leaf and intermediate");
    assert_eq!(k.names(), ["mx.example.org"]);
    assert_eq!(k.key_type(), KeyType::Ecdsa);
    assert_eq!(k.key_bits(), 256);
    assert_eq!(k.fingerprint(), Fingerprint::of(&f.leaf.der()));

    let k = CertKey::from_pem(
        &data("rsa2048-pkcs1.crt.pem"),
        &data("rsa2048-pkcs1.key.pem"),
    )
    .unwrap();
    assert_eq!((k.key_type(), k.key_bits()), (KeyType::Rsa, 2048));
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let k = CertKey::from_pem_files(
        format!("{dir}ec-sec1.crt.pem"),
        format!("{dir}ec-sec1.key.pem"),
    )
    .unwrap();
    assert_eq!((k.key_type(), k.key_bits()), (KeyType::Ecdsa, 256));
}

#[test]
fn refuses_with_clear_errors() {
    let f = fixtures();
    // Key of another certificate.
    let err =
        CertKey::from_pem(f.leaf.chain_pem().as_bytes(), f.self_signed.key.as_bytes()).unwrap_err();
    assert!(matches!(err, ImportError::KeyMismatch), "{err}");
    assert_eq!(
        err.to_string(),
        "private key does not match the certificate"
    );
    // RSA key of another certificate.
    let err = CertKey::from_pem(
        &data("rsa2048-pkcs1.crt.pem"),
        rsa4096_leaf().key.as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::KeyMismatch), "{err}");
    // RSA under 2048 bits.
    let err = CertKey::from_pem(&data("rsa1024.crt.pem"), &data("rsa1024.key.pem")).unwrap_err();
    assert!(
        matches!(err, ImportError::WeakRsaKey { bits: 1024 }),
        "{err}"
    );
    // Missing file.
    let err =
        CertKey::from_pem_files("/nonexistent/chain.pem", "/nonexistent/key.pem").unwrap_err();
    assert!(matches!(err, ImportError::Io { .. }), "{err}");
    // Empty chain.
    let err = CertKey::from_pem(b"", f.leaf.key.as_bytes()).unwrap_err();
    assert!(matches!(err, ImportError::EmptyChain), "{err}");
    let err = CertKey::from_pem(f.leaf.key.as_bytes(), f.leaf.key.as_bytes()).unwrap_err();
    assert!(
        matches!(err, ImportError::EmptyChain),
        "a key is not a chain: {err}"
    );
    // No key.
    let err = CertKey::from_pem(f.leaf.cert.as_bytes(), f.leaf.cert.as_bytes()).unwrap_err();
    assert!(matches!(err, ImportError::NoPrivateKey), "{err}");
    // Malformed PEM: truncated section, bad base64.
    let truncated = &f.leaf.cert[..f.leaf.cert.len() - 30];
    let err = CertKey::from_pem(truncated.as_bytes(), f.leaf.key.as_bytes()).unwrap_err();
    assert!(matches!(err, ImportError::MalformedPem(_)), "{err}");
    let bad = "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n";
    let err = CertKey::from_pem(bad.as_bytes(), f.leaf.key.as_bytes()).unwrap_err();
    assert!(matches!(err, ImportError::MalformedPem(_)), "{err}");
    // Well-formed PEM holding garbage DER.
    let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = CertKey::from_pem(junk.as_bytes(), f.leaf.key.as_bytes()).unwrap_err();
    assert!(matches!(err, ImportError::InvalidCertificate(_)), "{err}");
}

#[test]
fn inspects_a_row() {
    let f = fixtures();
    let now = UnixTime::now();
    let row = inspect("mx", &f.leaf.der(), now).unwrap();
    assert_eq!(row.name, "mx");
    assert_eq!(row.subject, "CN=mx.example.org");
    assert_eq!(row.issuer, "CN=Postern Test Intermediate");
    assert_eq!(row.sans, ["mx.example.org"]);
    assert_eq!((row.key_type, row.key_bits), (KeyType::Ecdsa, 256));
    assert_eq!(row.signature_algorithm, "ecdsa-with-SHA256");
    assert!(!row.self_signed);
    assert_eq!(row.status, CertStatus::Valid);
    assert_eq!(row.fingerprint, Fingerprint::of(&f.leaf.der()));
    assert!(row.not_before < row.not_after);

    let rsa = rsa4096_leaf();
    let row = inspect("rsa", &rsa.der(), now).unwrap();
    assert_eq!((row.key_type, row.key_bits), (KeyType::Rsa, 4096));
    assert_eq!(
        row.signature_algorithm, "ecdsa-with-SHA256",
        "signed by the ECDSA intermediate"
    );

    let row = inspect("self", &f.self_signed.der(), now).unwrap();
    assert!(row.self_signed);
}

#[test]
fn status_follows_the_time_passed_in() {
    let f = fixtures();
    // The leaf is valid from now−1 day to now+90 days.
    let der = f.leaf.der();
    assert_eq!(inspect("x", &der, at(0)).unwrap().status, CertStatus::Valid);
    assert_eq!(
        inspect("x", &der, at(61)).unwrap().status,
        CertStatus::ExpiresSoon
    );
    assert_eq!(
        inspect("x", &der, at(91)).unwrap().status,
        CertStatus::Expired
    );
    assert_eq!(
        inspect("x", &der, at(-2)).unwrap().status,
        CertStatus::NotYetValid
    );
    assert_eq!(
        inspect("x", &f.expired.der(), at(0)).unwrap().status,
        CertStatus::Expired
    );
    assert_eq!(
        inspect("x", &f.not_yet_valid.der(), at(0)).unwrap().status,
        CertStatus::NotYetValid
    );
    // RSA-1024 is weak (inspection accepts what import refuses).
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let weak = CertificateDer::from_pem_slice(&data("rsa1024.crt.pem")).unwrap();
    let row = inspect("weak", &weak, at(0)).unwrap();
    assert_eq!((row.key_type, row.key_bits), (KeyType::Rsa, 1024));
    assert_eq!(row.status, CertStatus::Weak);
    assert_eq!(row.signature_algorithm, "sha256WithRSAEncryption");
    assert!(matches!(
        inspect("bad", b"\x30\x03\x02\x01\x00", at(0)),
        Err(InspectError::Parse(_))
    ));
}
