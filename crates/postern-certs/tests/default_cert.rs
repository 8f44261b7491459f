//! The default certificate: generated once, persisted, reused, never
//! silently regenerated.

use std::fs;

use postern_certs::{
    CertStatus, CertificateStore, DEFAULT_CERT_NAME, DefaultCertError, DefaultCertOptions,
    ECDSA_CERT_FILE, ECDSA_KEY_FILE, KeyType, RSA_CERT_FILE, RSA_KEY_FILE, RsaBits, inspect,
    load_or_create,
};
use rustls::pki_types::UnixTime;

fn opts(bits: RsaBits) -> DefaultCertOptions {
    let mut o = DefaultCertOptions::new("mx.example.org");
    o.rsa_bits = bits;
    o
}

#[test]
fn generates_rsa4096_sha256_default_cert_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = UnixTime::now();
    let first = load_or_create(dir.path(), &opts(RsaBits::B4096), now).unwrap();
    assert!(first.created);
    let row = inspect("Default Cert", first.rsa.leaf(), now).unwrap();
    assert_eq!((row.key_type, row.key_bits), (KeyType::Rsa, 4096));
    assert_eq!(row.signature_algorithm, "sha256WithRSAEncryption");
    assert_eq!(row.sans, ["mx.example.org"]);
    assert_eq!(row.subject, "CN=Default Cert");
    assert!(row.self_signed);
    assert_eq!(row.status, CertStatus::Valid);
    // Explicit validity: one hour back, 825 days ahead (not rcgen's 1975–4096).
    let secs = now.as_secs() as i64;
    assert_eq!(row.not_before.unix_timestamp(), secs - 3600);
    assert_eq!(row.not_after.unix_timestamp(), secs + 825 * 86_400);
    let mut store = CertificateStore::new();
    store.add_default(&first).unwrap();
    assert_eq!(store.get(DEFAULT_CERT_NAME).count(), 2);
    assert!(store.add_default(&first).is_err(), "added twice");
    let ecdsa = first.ecdsa.as_ref().unwrap();
    assert_eq!(
        (ecdsa.key_type(), ecdsa.names()),
        (KeyType::Ecdsa, &["mx.example.org".to_string()][..])
    );

    // Restart: same certificates, nothing generated.
    let second = load_or_create(dir.path(), &opts(RsaBits::B4096), now).unwrap();
    assert!(!second.created);
    assert_eq!(second.rsa.fingerprint(), first.rsa.fingerprint());
    assert_eq!(second.ecdsa.unwrap().fingerprint(), ecdsa.fingerprint());
    // Even when the options changed: never regenerated silently.
    let mut other = opts(RsaBits::B2048);
    other.host_names = vec!["other.example".into()];
    let third = load_or_create(dir.path(), &other, now).unwrap();
    assert_eq!(third.rsa.fingerprint(), first.rsa.fingerprint());
}

#[cfg(unix)]
#[test]
fn key_files_are_private_and_no_temp_files_remain() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    load_or_create(dir.path(), &opts(RsaBits::B2048), UnixTime::now()).unwrap();
    for key in [RSA_KEY_FILE, ECDSA_KEY_FILE] {
        let mode = fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [ECDSA_CERT_FILE, ECDSA_KEY_FILE, RSA_CERT_FILE, RSA_KEY_FILE]
    );
}

#[test]
fn half_present_or_mismatched_pairs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let now = UnixTime::now();
    let mut o = opts(RsaBits::B2048);
    o.ecdsa_companion = false;
    load_or_create(dir.path(), &o, now).unwrap();

    // Mismatched: the key of another pair.
    let other = tempfile::tempdir().unwrap();
    load_or_create(other.path(), &o, now).unwrap();
    fs::copy(
        other.path().join(RSA_KEY_FILE),
        dir.path().join(RSA_KEY_FILE),
    )
    .unwrap();
    let err = load_or_create(dir.path(), &o, now).unwrap_err();
    assert!(matches!(err, DefaultCertError::Unusable { .. }), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");

    // Key missing.
    fs::remove_file(dir.path().join(RSA_KEY_FILE)).unwrap();
    let cert_before = fs::read(dir.path().join(RSA_CERT_FILE)).unwrap();
    let err = load_or_create(dir.path(), &o, now).unwrap_err();
    assert!(matches!(err, DefaultCertError::Incomplete { .. }), "{err}");
    assert_eq!(
        fs::read(dir.path().join(RSA_CERT_FILE)).unwrap(),
        cert_before,
        "untouched"
    );
    assert!(!dir.path().join(RSA_KEY_FILE).exists());

    // Certificate missing.
    fs::copy(
        other.path().join(RSA_KEY_FILE),
        dir.path().join(RSA_KEY_FILE),
    )
    .unwrap();
    fs::remove_file(dir.path().join(RSA_CERT_FILE)).unwrap();
    let err = load_or_create(dir.path(), &o, now).unwrap_err();
    assert!(matches!(err, DefaultCertError::Incomplete { .. }), "{err}");

    // Garbage in the certificate file.
    fs::write(dir.path().join(RSA_CERT_FILE), "not pem").unwrap();
    let err = load_or_create(dir.path(), &o, now).unwrap_err();
    assert!(matches!(err, DefaultCertError::Unusable { .. }), "{err}");
}

#[test]
fn companion_can_be_switched_off_and_added_later() {
    let dir = tempfile::tempdir().unwrap();
    let now = UnixTime::now();
    let mut o = opts(RsaBits::B2048);
    o.ecdsa_companion = false;
    let first = load_or_create(dir.path(), &o, now).unwrap();
    assert!(first.ecdsa.is_none());
    assert!(!dir.path().join(ECDSA_CERT_FILE).exists());
    o.ecdsa_companion = true;
    let second = load_or_create(dir.path(), &o, now).unwrap();
    assert!(second.created, "the companion was created");
    assert_eq!(
        second.rsa.fingerprint(),
        first.rsa.fingerprint(),
        "RSA kept"
    );
    assert!(second.ecdsa.is_some());
}

#[test]
fn no_host_name_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        load_or_create(dir.path(), &DefaultCertOptions::default(), UnixTime::now()).unwrap_err();
    assert!(matches!(err, DefaultCertError::NoHostName));
    assert!(!dir.path().join(RSA_KEY_FILE).exists());
}
