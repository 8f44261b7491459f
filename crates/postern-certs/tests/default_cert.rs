//! The default certificate: generated once, persisted, reused, never
//! silently regenerated.

use std::fs;

use postern_certs::{
    CertKey, CertStatus, CertificateStore, DEFAULT_CERT_NAME, DefaultCertError, DefaultCertOptions,
    ECDSA_CERT_FILE, ECDSA_KEY_FILE, GeneratedKind, KeyType, RSA_CERT_FILE, RSA_KEY_FILE, RsaBits,
    generate_self_signed, inspect, load_existing, load_or_create,
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
    // Explicit validity (not rcgen's 1975–4096): from one hour back, 825 days
    // in total with the backdate, both ends counted (RFC 5280 §4.1.2.5).
    let secs = now.as_secs() as i64;
    assert_eq!(row.not_before.unix_timestamp(), secs - 3600);
    assert_eq!(
        row.not_after.unix_timestamp(),
        secs - 3600 + 825 * 86_400 - 1
    );
    let period = row.not_after.unix_timestamp() - row.not_before.unix_timestamp() + 1;
    assert!(period <= 825 * 86_400, "{period} s is more than 825 days");
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

    // Garbage in the certificate file, next to a key.
    fs::copy(
        other.path().join(RSA_KEY_FILE),
        dir.path().join(RSA_KEY_FILE),
    )
    .unwrap();
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

/// A first start killed after writing a key and before its certificate
/// leaves a lone key: the next start issues the certificate again for that
/// key (both kinds), instead of refusing to start.
#[test]
fn a_lone_key_gets_its_certificate_issued_again() {
    let now = UnixTime::now();
    let o = opts(RsaBits::B2048);
    for (cert_file, key_file) in [
        (RSA_CERT_FILE, RSA_KEY_FILE),
        (ECDSA_CERT_FILE, ECDSA_KEY_FILE),
    ] {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), &o, now).unwrap();
        let key_before = fs::read(dir.path().join(key_file)).unwrap();
        fs::remove_file(dir.path().join(cert_file)).unwrap();

        let again = load_or_create(dir.path(), &o, now).unwrap();
        assert!(again.created, "{cert_file}: issued again");
        assert_eq!(fs::read(dir.path().join(key_file)).unwrap(), key_before);
        // The new certificate belongs to the kept key, with the usual content.
        let pair =
            CertKey::from_pem_files(dir.path().join(cert_file), dir.path().join(key_file)).unwrap();
        let row = inspect(DEFAULT_CERT_NAME, pair.leaf(), now).unwrap();
        assert_eq!(row.sans, ["mx.example.org"]);
        assert_eq!(row.subject, "CN=Default Cert");
        assert_eq!(row.status, CertStatus::Valid);
        // And it is kept from then on.
        let third = load_or_create(dir.path(), &o, now).unwrap();
        assert!(!third.created);
    }

    // A lone key that cannot be read back is a clear error, left in place.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(RSA_KEY_FILE), "not a key").unwrap();
    let err = load_or_create(dir.path(), &o, now).unwrap_err();
    assert!(
        matches!(err, DefaultCertError::LoneKeyUnusable { .. }),
        "{err}"
    );
    assert!(!dir.path().join(RSA_CERT_FILE).exists());
}

/// `load_existing` reads the pairs and never writes: nothing is created in
/// an empty or missing directory, nor for a lone key.
#[test]
fn load_existing_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    assert!(load_existing(&certs).unwrap().is_none());
    assert!(!certs.exists(), "no directory created");

    let o = opts(RsaBits::B2048);
    let made = load_or_create(&certs, &o, UnixTime::now()).unwrap();
    let loaded = load_existing(&certs).unwrap().unwrap();
    assert!(!loaded.created);
    assert_eq!(loaded.rsa.fingerprint(), made.rsa.fingerprint());
    assert_eq!(
        loaded.ecdsa.map(|c| c.fingerprint()),
        made.ecdsa.map(|c| c.fingerprint())
    );

    fs::remove_file(certs.join(RSA_CERT_FILE)).unwrap();
    assert!(load_existing(&certs).unwrap().is_none());
    assert!(!certs.join(RSA_CERT_FILE).exists(), "not issued by a read");
}

/// IP-address subjectAltNames are listed with the DNS names, in certificate
/// order.
#[test]
fn ip_address_sans_are_listed() {
    let mut o = DefaultCertOptions::new("relay.test");
    o.host_names
        .extend(["127.0.0.1".to_owned(), "::1".to_owned()]);
    let now = UnixTime::now();
    let pem = generate_self_signed(&o, GeneratedKind::EcdsaP256, now).unwrap();
    let cert = CertKey::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes()).unwrap();
    let row = inspect("ip", cert.leaf(), now).unwrap();
    assert_eq!(row.sans, ["relay.test", "127.0.0.1", "::1"]);
    // SNI carries DNS names only: the addresses are not selection names.
    assert_eq!(cert.names(), ["relay.test"]);
}
