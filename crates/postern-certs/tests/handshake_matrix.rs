//! In-memory handshakes for each server mode × client mode, and client
//! certificates none / ask / require with trusted, untrusted and no certificate.

mod common;

use std::sync::Arc;

use common::{MX, Pem, exchange, fixtures, handshake, now};
use postern_certs::{
    CertResolver, ClientTlsContext, ClientTlsSpec, ConfigError, ServedCertificates,
    ServerTlsContext, ServerTlsSpec, TrustRoots,
};
use postern_policy::{
    CertificateCheck, CertificateFailure, ClientCertMode, ClientTlsMode, CommandVerdict, PeerTrust,
    ServerPolicy, ServerTlsMode, TlsVersion,
};
use rustls::{ClientConnection, ProtocolVersion, ServerConnection};

fn server(
    mode: ServerTlsMode,
    client_cert: ClientCertMode,
    roots: bool,
) -> Result<ServerTlsContext, ConfigError> {
    let f = fixtures();
    let mut spec = ServerTlsSpec::default();
    spec.mode = mode;
    spec.client_cert = client_cert;
    if roots {
        spec.client_roots = Some(f.ca.roots());
    }
    let set = ServedCertificates::from_certs([&f.leaf.cert_key()]);
    ServerTlsContext::new(&spec, Arc::new(CertResolver::new(set)))
}

fn client(cert: Option<&Pem>) -> ClientTlsContext {
    let ctx = ClientTlsContext::new(fixtures().ca.roots());
    match cert {
        Some(p) => ctx.with_client_certificate(p.cert_key()),
        None => ctx,
    }
}

fn connect(
    client: &ClientTlsContext,
    spec: &ClientTlsSpec,
    server: &ServerTlsContext,
) -> (
    Result<(), rustls::Error>,
    ClientConnection,
    ServerConnection,
) {
    let conn = client.connection(spec).unwrap();
    let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    let r = handshake(&mut c, &mut s);
    (r, c, s)
}

#[test]
fn every_server_mode_with_every_client_mode() {
    let f = fixtures();
    let pin = postern_certs::Fingerprint::of(&f.leaf.der());
    let client_modes = [
        ClientTlsMode::Opportunistic,
        ClientTlsMode::Encrypt,
        ClientTlsMode::Verify,
        ClientTlsMode::Secure,
        ClientTlsMode::Fingerprint,
        ClientTlsMode::MtaSts,
    ];
    for server_mode in [ServerTlsMode::Offer, ServerTlsMode::Require] {
        for cc in [ClientCertMode::None, ClientCertMode::Ask] {
            let srv = server(server_mode, cc, true).unwrap();
            for mode in client_modes {
                let mut spec = ClientTlsSpec::new(mode, MX);
                if mode == ClientTlsMode::Fingerprint {
                    spec.pins = vec![pin];
                }
                if mode == ClientTlsMode::Secure {
                    spec.match_names = vec!["example.org".into(), ".example.org".into()];
                }
                let cl = client(None);
                let (r, mut c, mut s) = connect(&cl, &spec, &srv);
                r.unwrap_or_else(|e| panic!("{server_mode:?}/{cc:?}/{mode:?}: {e}"));
                exchange(&mut c, &mut s);
                let check = cl
                    .connection(&spec)
                    .unwrap()
                    .certificate_check(c.peer_certificates(), now());
                assert_eq!(check.trust, PeerTrust::Verified, "{mode:?}");
                // The client presented no certificate: encryption without one
                // (the seed's "anonymous ciphers") works in offer/require + none/ask.
                assert_eq!(srv.client_certificate(s.peer_certificates(), now()), None);
            }
        }
    }
    assert!(matches!(
        server(ServerTlsMode::None, ClientCertMode::None, false),
        Err(ConfigError::TlsDisabled)
    ));
}

#[test]
fn client_cert_ask_never_rejects_and_records() {
    let f = fixtures();
    let spec = ClientTlsSpec::new(ClientTlsMode::Verify, MX);
    let srv = server(ServerTlsMode::Offer, ClientCertMode::Ask, true).unwrap();
    assert_eq!(srv.client_cert_mode(), ClientCertMode::Ask);

    let (r, _, s) = connect(&client(Some(&f.client_trusted)), &spec, &srv);
    r.unwrap();
    let seen = srv
        .client_certificate(s.peer_certificates(), now())
        .expect("a certificate was sent");
    assert_eq!(seen.check.trust, PeerTrust::Verified);
    assert_eq!(
        seen.fingerprint,
        postern_certs::Fingerprint::of(&f.client_trusted.der())
    );
    // Subject and issuer as the certificate table shows them, for trusted-agent rules.
    let row = postern_certs::inspect("client", &f.client_trusted.der(), now()).unwrap();
    assert_eq!(seen.subject, row.subject);
    assert_eq!(seen.issuer, row.issuer);
    assert!(
        seen.issuer.contains("CN=Postern Test Root"),
        "{}",
        seen.issuer
    );
    assert_ne!(seen.subject, seen.issuer);

    let (r, _, s) = connect(&client(Some(&f.client_untrusted)), &spec, &srv);
    r.expect("ask must accept an untrusted client certificate");
    let seen = srv
        .client_certificate(s.peer_certificates(), now())
        .expect("a certificate was sent");
    assert_eq!(seen.check.trust, PeerTrust::Untrusted);
    assert_eq!(seen.check.failure, Some(CertificateFailure::NotTrusted));
    assert_eq!(
        seen.fingerprint,
        postern_certs::Fingerprint::of(&f.client_untrusted.der())
    );
    assert_eq!(seen.subject, seen.issuer, "self-signed");

    let (r, _, s) = connect(&client(None), &spec, &srv);
    r.unwrap();
    assert_eq!(srv.client_certificate(s.peer_certificates(), now()), None);

    // Ask without roots: certificates are accepted and recorded as untrusted.
    let srv = server(ServerTlsMode::Offer, ClientCertMode::Ask, false).unwrap();
    let (r, _, s) = connect(&client(Some(&f.client_trusted)), &spec, &srv);
    r.unwrap();
    assert_eq!(
        srv.client_certificate(s.peer_certificates(), now())
            .map(|c| c.check.trust),
        Some(PeerTrust::Untrusted)
    );
}

/// A rustls client limited to one protocol version, presenting `cert` if any.
fn client_at(
    version: &'static rustls::SupportedProtocolVersion,
    cert: Option<&Pem>,
) -> ClientConnection {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let builder = rustls::ClientConfig::builder_with_provider(postern_certs::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(fixtures().ca.roots());
    let config = match cert {
        Some(p) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(p.chain_pem().as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from(MX).unwrap();
    ClientConnection::new(Arc::new(config), name).unwrap()
}

/// Client certificates `require`: the handshake completes whatever the client
/// presents, over TLS 1.3 and TLS 1.2 alike (no alert: rustls would send
/// `certificate_required`, a TLS 1.3 alert, to TLS 1.2 peers too); the check
/// read after it is what the SMTP session refuses with `554 5.7.1`.
#[test]
fn client_cert_require_completes_the_handshake_and_the_session_refuses() {
    let f = fixtures();
    let srv = server(ServerTlsMode::Require, ClientCertMode::Require, true).unwrap();
    assert_eq!(srv.client_cert_mode(), ClientCertMode::Require);
    let policy = ServerPolicy::new(
        ServerTlsMode::Require,
        ClientCertMode::Require,
        TlsVersion::Tls12,
        vec![],
    )
    .unwrap();
    for (version, expected) in [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ] {
        for (cert, trust) in [
            (Some(&f.client_trusted), Some(PeerTrust::Verified)),
            (Some(&f.client_untrusted), Some(PeerTrust::Untrusted)),
            (None, None),
        ] {
            let mut c = client_at(version, cert);
            let mut s = ServerConnection::new(srv.config()).unwrap();
            handshake(&mut c, &mut s).unwrap_or_else(|e| {
                panic!("{expected:?}, client certificate {trust:?}: handshake failed: {e}")
            });
            assert_eq!(c.protocol_version(), Some(expected));
            exchange(&mut c, &mut s);
            let seen = srv.client_certificate(s.peer_certificates(), now());
            assert_eq!(seen.as_ref().map(|c| c.check.trust), trust, "{expected:?}");
            let check = seen.map_or(CertificateCheck::anonymous(), |c| c.check);
            let verdict = policy.client_certificate_verdict(&check);
            if trust == Some(PeerTrust::Verified) {
                assert_eq!(verdict, CommandVerdict::Allow);
            } else {
                assert!(
                    matches!(verdict, CommandVerdict::Reject { code: 554, .. }),
                    "{expected:?} {trust:?}: {verdict:?}"
                );
            }
        }
    }
}

#[test]
fn client_cert_config_rules() {
    assert!(matches!(
        server(ServerTlsMode::Offer, ClientCertMode::Require, true),
        Err(ConfigError::ClientCertNeedsRequire)
    ));
    assert!(matches!(
        server(ServerTlsMode::Require, ClientCertMode::Require, false),
        Err(ConfigError::MissingClientRoots)
    ));
}

#[test]
fn minimum_version_is_honoured() {
    let f = fixtures();
    let srv12 = {
        let mut spec = ServerTlsSpec::default();
        spec.min_version = TlsVersion::Tls12;
        let set = ServedCertificates::from_certs([&f.leaf.cert_key()]);
        ServerTlsContext::new(&spec, Arc::new(CertResolver::new(set))).unwrap()
    };
    let srv13 = {
        let mut spec = ServerTlsSpec::default();
        spec.min_version = TlsVersion::Tls13;
        let set = ServedCertificates::from_certs([&f.leaf.cert_key()]);
        ServerTlsContext::new(&spec, Arc::new(CertResolver::new(set))).unwrap()
    };
    // A TLS 1.2-only rustls client (not ours: ours cannot be limited below 1.3 max).
    let tls12_only = {
        let cfg = rustls::ClientConfig::builder_with_provider(postern_certs::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(f.ca.roots())
            .with_no_client_auth();
        Arc::new(cfg)
    };
    let name = rustls::pki_types::ServerName::try_from(MX).unwrap();
    let mut c = ClientConnection::new(tls12_only.clone(), name.clone()).unwrap();
    let mut s = ServerConnection::new(srv12.config()).unwrap();
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_2));

    let mut c = ClientConnection::new(tls12_only, name).unwrap();
    let mut s = ServerConnection::new(srv13.config()).unwrap();
    assert!(
        handshake(&mut c, &mut s).is_err(),
        "TLS 1.2 refused with minimum 1.3"
    );

    // Our client with minimum TLS 1.3 negotiates 1.3 against the default server.
    let mut spec = ClientTlsSpec::new(ClientTlsMode::Verify, MX);
    spec.min_version = TlsVersion::Tls13;
    let (r, c, _) = connect(&client(None), &spec, &srv12);
    r.unwrap();
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));
}

#[test]
fn server_resumption_with_tickets_tls13_and_tls12() {
    let f = fixtures();
    let srv = server(ServerTlsMode::Offer, ClientCertMode::None, false).unwrap();
    for min in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let cl = client(None);
        let mut spec = ClientTlsSpec::new(ClientTlsMode::Verify, MX);
        spec.min_version = min;
        let (r, c, _) = connect(&cl, &spec, &srv);
        r.unwrap();
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
        let (r, c, _) = connect(&cl, &spec, &srv);
        r.unwrap();
        assert_eq!(
            c.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{min:?}"
        );
        let _ = f;
    }
    // TLS 1.2 resumption through tickets: a TLS 1.2-only client.
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(postern_certs::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(f.ca.roots())
            .with_no_client_auth(),
    );
    let name = rustls::pki_types::ServerName::try_from(MX).unwrap();
    for kind in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
        let mut c = ClientConnection::new(cfg.clone(), name.clone()).unwrap();
        let mut s = ServerConnection::new(srv.config()).unwrap();
        handshake(&mut c, &mut s).unwrap();
        assert_eq!(c.handshake_kind(), Some(kind));
    }
}

#[test]
fn webpki_roots_load() {
    assert!(TrustRoots::webpki().len() > 100);
}

#[test]
fn server_cipher_order_wins_over_the_client_preference() {
    let f = fixtures();
    let srv = server(ServerTlsMode::Offer, ClientCertMode::None, false).unwrap();
    let provider = postern_certs::provider();
    let name = rustls::pki_types::ServerName::try_from(MX).unwrap();
    let cases = [
        (
            &rustls::version::TLS13,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            &rustls::version::TLS12,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ];
    for (version, weakest) in cases {
        // A client that lists the weakest suite of its version first.
        let mut client_provider = (*provider).clone();
        client_provider
            .cipher_suites
            .sort_by_key(|s| s.suite() != weakest);
        let server_first = provider
            .cipher_suites
            .iter()
            .find(|s| s.version() == version && s.suite() != weakest)
            .map(|s| s.suite());
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(f.ca.roots())
            .with_no_client_auth();
        let mut c = ClientConnection::new(Arc::new(cfg), name.clone()).unwrap();
        let mut s = ServerConnection::new(srv.config()).unwrap();
        handshake(&mut c, &mut s).unwrap();
        let chosen = s.negotiated_cipher_suite().map(|s| s.suite());
        assert_ne!(chosen, Some(weakest), "{version:?}: client order won");
        assert_eq!(chosen, server_first, "{version:?}: server's first suite");
    }
}
