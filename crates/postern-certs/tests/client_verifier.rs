//! Every outbound verifier outcome, through real in-memory handshakes.

mod common;

use std::sync::Arc;

use common::{LeafSpec, MX, Pem, fixtures, handshake, now};
use postern_certs::{
    CertResolver, CertificateHook, ClientTlsContext, ClientTlsSpec, ConfigError, Fingerprint,
    HookInput, ServedCertificates, ServerTlsContext, ServerTlsSpec, TrustRoots, describe_tls_error,
    refused_check,
};
use postern_policy::{CertificateCheck, CertificateFailure, ClientTlsMode, PeerTrust};
use rustls::{ClientConnection, ServerConnection};

fn server_for(pem: &Pem) -> ServerTlsContext {
    let set = ServedCertificates::from_certs([&pem.cert_key()]);
    ServerTlsContext::new(&ServerTlsSpec::default(), Arc::new(CertResolver::new(set))).unwrap()
}

struct Outcome {
    result: Result<(), rustls::Error>,
    check: CertificateCheck,
}

fn run(pem: &Pem, spec: &ClientTlsSpec) -> Outcome {
    let roots = fixtures().ca.roots();
    let client = ClientTlsContext::new(roots);
    run_with(&client, &server_for(pem), spec)
}

fn run_with(client: &ClientTlsContext, server: &ServerTlsContext, spec: &ClientTlsSpec) -> Outcome {
    let conn = client.connection(spec).unwrap();
    let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    let result = handshake(&mut c, &mut s);
    let check = match &result {
        Ok(()) => conn.certificate_check(c.peer_certificates(), now()),
        // The refusal carries the check for logs and TLS-RPT.
        Err(e) => refused_check(e).unwrap_or_else(|| panic!("not a certificate refusal: {e:?}")),
    };
    Outcome { result, check }
}

fn spec(mode: ClientTlsMode) -> ClientTlsSpec {
    ClientTlsSpec::new(mode, MX)
}

fn is(o: &Outcome, trust: PeerTrust, failure: Option<CertificateFailure>) {
    assert_eq!(o.check.trust, trust, "trust");
    assert_eq!(o.check.failure, failure, "failure");
}

#[test]
fn encrypt_and_opportunistic_never_refuse_but_report_trust() {
    let f = fixtures();
    for mode in [ClientTlsMode::Encrypt, ClientTlsMode::Opportunistic] {
        let o = run(&f.leaf, &spec(mode));
        assert!(o.result.is_ok());
        is(&o, PeerTrust::Verified, None);

        let o = run(&f.self_signed, &spec(mode));
        assert!(o.result.is_ok(), "{mode:?} must accept self-signed");
        is(
            &o,
            PeerTrust::Untrusted,
            Some(CertificateFailure::NotTrusted),
        );

        let o = run(&f.expired, &spec(mode));
        assert!(o.result.is_ok());
        is(&o, PeerTrust::Untrusted, Some(CertificateFailure::Expired));

        let o = run(&f.not_yet_valid, &spec(mode));
        assert!(o.result.is_ok());
        is(
            &o,
            PeerTrust::Untrusted,
            Some(CertificateFailure::NotYetValid),
        );

        let o = run(&f.wrong_name, &spec(mode));
        assert!(o.result.is_ok());
        is(
            &o,
            PeerTrust::Trusted,
            Some(CertificateFailure::HostMismatch),
        );
    }
}

/// The refusal reads as words in logs and delivery reports, never as Rust debug output, also as tokio-rustls
/// returns it (inside an `std::io::Error`).
#[test]
fn refusals_read_as_words() {
    let f = fixtures();
    let mut two_names = f
        .inter
        .leaf_with(LeafSpec::server(&["a.example", "b.example"]));
    two_names.chain.push(f.inter.cert_pem.clone());
    for (pem, words) in [
        (
            &two_names,
            "invalid peer certificate: certificate name mismatch: expected mx.example.org, \
             certificate names a.example, b.example",
        ),
        (
            &f.self_signed,
            "invalid peer certificate: certificate not trusted: no chain to a trusted root",
        ),
        (&f.expired, "invalid peer certificate: certificate expired"),
    ] {
        let err = run(pem, &spec(ClientTlsMode::Verify)).result.unwrap_err();
        assert_eq!(describe_tls_error(&err), words);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        assert_eq!(describe_tls_error(&io), words);
    }
    // With match names, those are what was expected.
    let mut s = spec(ClientTlsMode::Secure);
    s.match_names = vec!["example.org".into(), ".example.org".into()];
    let err = run(&two_names, &s).result.unwrap_err();
    assert_eq!(
        describe_tls_error(&err),
        "invalid peer certificate: certificate name mismatch: expected example.org or .example.org, \
         certificate names a.example, b.example"
    );
    // rustls' own certificate errors get words too; other errors keep their Display.
    let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    assert_eq!(
        describe_tls_error(&unknown),
        "invalid peer certificate: certificate not trusted: issued by an unknown CA"
    );
    let other = std::io::Error::other("connection reset");
    assert_eq!(describe_tls_error(&other), "connection reset");
}

#[test]
fn verify_accepts_only_a_trusted_chain_with_the_mx_name() {
    let f = fixtures();
    let o = run(&f.leaf, &spec(ClientTlsMode::Verify));
    assert!(o.result.is_ok());
    is(&o, PeerTrust::Verified, None);

    for (pem, trust, failure) in [
        (
            &f.self_signed,
            PeerTrust::Untrusted,
            CertificateFailure::NotTrusted,
        ),
        (
            &f.expired,
            PeerTrust::Untrusted,
            CertificateFailure::Expired,
        ),
        (
            &f.not_yet_valid,
            PeerTrust::Untrusted,
            CertificateFailure::NotYetValid,
        ),
        (
            &f.wrong_name,
            PeerTrust::Trusted,
            CertificateFailure::HostMismatch,
        ),
    ] {
        let o = run(pem, &spec(ClientTlsMode::Verify));
        assert!(o.result.is_err(), "verify must refuse {failure:?}");
        is(&o, trust, Some(failure));
    }
    // MTA-STS enforces the same WebPKI check.
    let o = run(&f.wrong_name, &spec(ClientTlsMode::MtaSts));
    assert!(o.result.is_err());
    let o = run(&f.leaf, &spec(ClientTlsMode::MtaSts));
    assert!(o.result.is_ok());
}

#[test]
fn chain_missing_its_intermediate_is_untrusted() {
    let f = fixtures();
    let mut bare = Pem {
        cert: f.leaf.cert.clone(),
        key: f.leaf.key.clone(),
        chain: Vec::new(),
    };
    let o = run(&bare, &spec(ClientTlsMode::Verify));
    assert!(o.result.is_err());
    is(
        &o,
        PeerTrust::Untrusted,
        Some(CertificateFailure::NotTrusted),
    );
    // Another CA's certificate is just as untrusted.
    bare = f.other_ca.leaf_with(LeafSpec::server(&[MX]));
    let o = run(&bare, &spec(ClientTlsMode::Encrypt));
    assert!(o.result.is_ok());
    is(
        &o,
        PeerTrust::Untrusted,
        Some(CertificateFailure::NotTrusted),
    );
}

#[test]
fn secure_matches_next_hop_names_not_the_mx_host() {
    let f = fixtures();
    // Certificate for mx.example.org; next hop example.org with dot-nexthop.
    let mut s = spec(ClientTlsMode::Secure);
    s.match_names = vec!["example.org".into(), ".example.org".into()];
    let o = run(&f.leaf, &s);
    assert!(o.result.is_ok());
    is(&o, PeerTrust::Verified, None);

    // Only the bare next-hop name: the MX certificate does not match it.
    s.match_names = vec!["example.org".into()];
    let o = run(&f.leaf, &s);
    assert!(o.result.is_err());
    is(
        &o,
        PeerTrust::Trusted,
        Some(CertificateFailure::HostMismatch),
    );

    // A spoofed MX answer pointing at a valid certificate of another domain.
    s.match_names = vec!["example.org".into(), ".example.org".into()];
    let o = run(&f.wrong_name, &s);
    assert!(o.result.is_err());
    is(
        &o,
        PeerTrust::Trusted,
        Some(CertificateFailure::HostMismatch),
    );

    // `.example.org` does not match a certificate for example.org itself.
    let apex = f.inter.leaf_with(LeafSpec::server(&["example.org"]));
    let mut apex = apex;
    apex.chain.push(f.inter.cert_pem.clone());
    let mut s2 = ClientTlsSpec::new(ClientTlsMode::Secure, "example.org");
    s2.match_names = vec![".example.org".into()];
    let o = run(&apex, &s2);
    assert!(o.result.is_err());
}

#[test]
fn wildcard_certificate_matches_one_label() {
    let f = fixtures();
    let mut wild = f.inter.leaf_with(LeafSpec::server(&["*.example.org"]));
    wild.chain.push(f.inter.cert_pem.clone());
    let o = run(&wild, &spec(ClientTlsMode::Verify));
    assert!(o.result.is_ok());
    is(&o, PeerTrust::Verified, None);
    let o = run(
        &wild,
        &ClientTlsSpec::new(ClientTlsMode::Verify, "a.mx.example.org"),
    );
    assert!(o.result.is_err());
}

#[test]
fn fingerprint_pins_the_leaf() {
    let f = fixtures();
    let pin = Fingerprint::of(&f.self_signed.der());
    let mut s = spec(ClientTlsMode::Fingerprint);
    s.pins = vec![pin];
    let o = run(&f.self_signed, &s);
    assert!(
        o.result.is_ok(),
        "a pinned self-signed certificate is accepted"
    );
    is(&o, PeerTrust::Verified, None);

    // A trusted, name-matching certificate that is not pinned is refused.
    let o = run(&f.leaf, &s);
    assert!(o.result.is_err());
    is(
        &o,
        PeerTrust::Trusted,
        Some(CertificateFailure::PinMismatch),
    );

    // Pinning the intermediate does not pin the leaf.
    use rustls::pki_types::pem::PemObject;
    let inter =
        rustls::pki_types::CertificateDer::from_pem_slice(f.inter.cert_pem.as_bytes()).unwrap();
    s.pins = vec![Fingerprint::of(&inter)];
    let o = run(&f.leaf, &s);
    assert!(o.result.is_err());

    s.pins.clear();
    let err = ClientTlsContext::new(f.ca.roots())
        .connection(&s)
        .unwrap_err();
    assert!(matches!(err, ConfigError::MissingPins));
}

#[derive(Debug)]
struct PinningHook(Fingerprint);

impl CertificateHook for PinningHook {
    fn check(&self, input: &HookInput<'_>) -> CertificateCheck {
        if Fingerprint::of(input.end_entity) == self.0 {
            CertificateCheck::verified()
        } else {
            CertificateCheck::failed(input.pkix.trust, CertificateFailure::DaneMismatch)
        }
    }
}

#[test]
fn dane_hook_decides() {
    let f = fixtures();
    let hook = Arc::new(PinningHook(Fingerprint::of(&f.self_signed.der())));
    for mode in [ClientTlsMode::Dane, ClientTlsMode::DaneOnly] {
        let mut s = spec(mode);
        assert!(matches!(
            ClientTlsContext::new(f.ca.roots()).connection(&s),
            Err(ConfigError::MissingHook(_))
        ));
        s.hook = Some(hook.clone());
        let o = run(&f.self_signed, &s);
        assert!(o.result.is_ok());
        is(&o, PeerTrust::Verified, None);
        let o = run(&f.leaf, &s);
        assert!(
            o.result.is_err(),
            "a WebPKI-valid certificate not matching TLSA is refused"
        );
        is(
            &o,
            PeerTrust::Verified,
            Some(CertificateFailure::DaneMismatch),
        );
    }
}

#[test]
fn report_only_records_without_refusing() {
    let f = fixtures();
    let mut s = spec(ClientTlsMode::MtaSts);
    s.dangerous_report_only = true;
    let o = run(&f.self_signed, &s);
    assert!(o.result.is_ok());
    is(
        &o,
        PeerTrust::Untrusted,
        Some(CertificateFailure::NotTrusted),
    );
}

#[test]
fn system_or_bundled_roots_do_not_trust_test_certificates() {
    let f = fixtures();
    let client = ClientTlsContext::new(TrustRoots::webpki().into_store());
    let o = run_with(&client, &server_for(&f.leaf), &spec(ClientTlsMode::Encrypt));
    assert!(o.result.is_ok());
    is(
        &o,
        PeerTrust::Untrusted,
        Some(CertificateFailure::NotTrusted),
    );
    // The per-spec roots override the context's.
    let mut s = spec(ClientTlsMode::Verify);
    s.roots = Some(f.ca.roots());
    let o = run_with(&client, &server_for(&f.leaf), &s);
    assert!(o.result.is_ok());
    is(&o, PeerTrust::Verified, None);
}

#[test]
fn handshake_signature_is_checked_even_in_encrypt_mode() {
    // A server presenting a certificate whose key it does not hold cannot be
    // built through CertKey (it refuses the mismatch), so build the rustls key
    // by hand: certificate of the leaf, key of the self-signed one.
    let f = fixtures();
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let provider = postern_certs::provider();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(f.self_signed.key.as_bytes()).unwrap())
        .unwrap();
    let forged = rustls::sign::CertifiedKey::new(vec![f.leaf.der()], key);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(forged)));
    let client = ClientTlsContext::new(f.ca.roots());
    let conn = client.connection(&spec(ClientTlsMode::Encrypt)).unwrap();
    let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
    let mut s = ServerConnection::new(Arc::new(config)).unwrap();
    let err = handshake(&mut c, &mut s).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}

#[test]
fn resumed_session_reports_the_same_check_and_is_not_shared_across_policies() {
    let f = fixtures();
    let client = ClientTlsContext::new(f.ca.roots());
    let server = server_for(&f.self_signed);
    for _ in 0..2 {
        let conn = client.connection(&spec(ClientTlsMode::Encrypt)).unwrap();
        let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
        let mut s = ServerConnection::new(server.config()).unwrap();
        handshake(&mut c, &mut s).unwrap();
        let check = conn.certificate_check(c.peer_certificates(), now());
        assert_eq!(check.trust, PeerTrust::Untrusted);
    }
    // A third encrypt connection resumes: the verifier does not run, the check
    // is recomputed from the certificates the session carries.
    let conn = client.connection(&spec(ClientTlsMode::Encrypt)).unwrap();
    let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    let check = conn.certificate_check(c.peer_certificates(), now());
    assert_eq!(check.trust, PeerTrust::Untrusted);

    // A verify connection to the same name must not resume the encrypt session.
    let conn = client.connection(&spec(ClientTlsMode::Verify)).unwrap();
    let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    let err = handshake(&mut c, &mut s).unwrap_err();
    assert_eq!(
        refused_check(&err).map(|c| c.trust),
        Some(PeerTrust::Untrusted)
    );

    // The refusal survives the io::Error wrapping of async adapters.
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
    assert_eq!(
        refused_check(&io).map(|c| c.failure),
        Some(Some(CertificateFailure::NotTrusted))
    );
}

#[test]
fn sni_is_sent_unless_disabled() {
    let f = fixtures();
    let client = ClientTlsContext::new(f.ca.roots());
    let server = server_for(&f.leaf);
    let conn = client.connection(&spec(ClientTlsMode::Verify)).unwrap();
    let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.server_name(), Some(MX));

    let mut sp = spec(ClientTlsMode::Verify);
    sp.no_sni = true;
    let conn = client.connection(&sp).unwrap();
    let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.server_name(), None);
}

#[test]
fn config_errors() {
    let client = ClientTlsContext::new(TrustRoots::empty().into_store());
    assert!(matches!(
        client.connection(&spec(ClientTlsMode::None)),
        Err(ConfigError::TlsDisabled)
    ));
    assert!(matches!(
        client.connection(&ClientTlsSpec::new(ClientTlsMode::Verify, "not a name!")),
        Err(ConfigError::InvalidServerName(_))
    ));
}
