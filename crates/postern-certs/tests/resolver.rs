//! Server certificate selection: SNI, wildcard, fallback, imported vs generated,
//! ECDSA vs RSA, hot swap.

mod common;

use std::sync::Arc;

use common::{LeafSpec, MX, Pem, fixtures, handshake, now, rsa4096_leaf};
use postern_certs::{
    CertResolver, CertificateStore, ClientTlsContext, ClientTlsSpec, DEFAULT_CERT_NAME, KeyType,
    ServedCertificates, ServerTlsContext, ServerTlsSpec,
};
use postern_policy::ClientTlsMode;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, ServerConnection, SignatureScheme};

fn leaf(names: &[&str]) -> Pem {
    let f = fixtures();
    let mut p = f.inter.leaf_with(LeafSpec::server(names));
    p.chain.push(f.inter.cert_pem.clone());
    p
}

/// Handshake with SNI `sni` (None: no SNI) and return the served leaf.
fn served_leaf(
    server: &ServerTlsContext,
    sni: Option<&str>,
    schemes: Option<&[SignatureScheme]>,
) -> CertificateDer<'static> {
    let f = fixtures();
    let ctx = ClientTlsContext::new(f.ca.roots());
    let mut spec = ClientTlsSpec::new(ClientTlsMode::Encrypt, sni.unwrap_or("unused.invalid"));
    spec.no_sni = sni.is_none();
    let conn = ctx.connection(&spec).unwrap();
    let config = match schemes {
        None => conn.config.clone(),
        Some(_) => {
            // A client restricted to RSA signature schemes: drop the ECDSA verify
            // algorithms from the provider so rustls does not offer them.
            let mut provider = (*postern_certs::provider()).clone();
            let mut algs = provider.signature_verification_algorithms;
            let keep: Vec<_> = algs
                .mapping
                .iter()
                .filter(|(s, _)| schemes.unwrap().contains(s))
                .cloned()
                .collect();
            algs.mapping = Box::leak(keep.into_boxed_slice());
            provider.signature_verification_algorithms = algs;
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(f.ca.roots())
                    .with_no_client_auth(),
            )
        }
    };
    let name = ServerName::try_from(sni.unwrap_or(MX)).unwrap().to_owned();
    let mut c = ClientConnection::new(config, name).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    handshake(&mut c, &mut s).unwrap();
    c.peer_certificates().unwrap()[0].clone().into_owned()
}

fn server(set: ServedCertificates) -> ServerTlsContext {
    ServerTlsContext::new(&ServerTlsSpec::default(), Arc::new(CertResolver::new(set))).unwrap()
}

#[test]
fn sni_selects_and_unknown_or_absent_sni_falls_back() {
    let a = leaf(&["mx.a.example"]);
    let b = leaf(&["mx.b.example", "smtp.b.example"]);
    let wild = leaf(&["*.w.example"]);
    let mut store = CertificateStore::new();
    store.add("a", a.cert_key()).unwrap();
    store.add("b", b.cert_key()).unwrap();
    store.add("w", wild.cert_key()).unwrap();
    store.set_fallback("b");
    let srv = server(store.served());

    assert_eq!(served_leaf(&srv, Some("mx.a.example"), None), a.der());
    assert_eq!(served_leaf(&srv, Some("MX.A.EXAMPLE"), None), a.der());
    assert_eq!(served_leaf(&srv, Some("smtp.b.example"), None), b.der());
    assert_eq!(served_leaf(&srv, Some("x.w.example"), None), wild.der());
    // A wildcard covers one label only: two labels fall back.
    assert_eq!(served_leaf(&srv, Some("y.x.w.example"), None), b.der());
    // RFC 8461 §7.1: no SNI, or an unknown one, still gets a certificate.
    assert_eq!(served_leaf(&srv, Some("unknown.example"), None), b.der());
    assert_eq!(served_leaf(&srv, None, None), b.der());

    // Without set_fallback, the first entry is the fallback.
    store = CertificateStore::new();
    store.add("a", a.cert_key()).unwrap();
    store.add("b", b.cert_key()).unwrap();
    let srv = server(store.served());
    assert_eq!(served_leaf(&srv, None, None), a.der());
}

#[test]
fn ecdsa_to_ecdsa_clients_rsa_to_the_others() {
    let f = fixtures();
    let rsa = rsa4096_leaf();
    let ecdsa = &f.leaf;
    let rsa_key = rsa.cert_key();
    assert_eq!(rsa_key.key_type(), KeyType::Rsa);
    assert_eq!(rsa_key.key_bits(), 4096);
    let mut store = CertificateStore::new();
    store.add("Default Cert", rsa_key).unwrap();
    store.add("Default Cert", ecdsa.cert_key()).unwrap();
    let srv = server(store.served());

    // A default client offers ECDSA schemes: it gets ECDSA, with or without SNI.
    assert_eq!(served_leaf(&srv, Some(MX), None), ecdsa.der());
    assert_eq!(served_leaf(&srv, None, None), ecdsa.der());
    // A client offering only RSA schemes gets RSA.
    let rsa_only = [
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PKCS1_SHA384,
    ];
    assert_eq!(served_leaf(&srv, Some(MX), Some(&rsa_only)), rsa.der());
    assert_eq!(served_leaf(&srv, None, Some(&rsa_only)), rsa.der());

    // Direct selection: no scheme usable → no certificate.
    let set = store.served();
    assert!(
        set.select(Some(MX), &[SignatureScheme::ED448], now())
            .is_none()
    );
    let chosen = set
        .select(Some(MX), &[SignatureScheme::ECDSA_NISTP256_SHA256], now())
        .unwrap();
    assert_eq!(chosen.cert[0], ecdsa.der());
}

#[test]
fn hot_swap_affects_only_new_handshakes() {
    let old = leaf(&[MX]);
    let new = leaf(&[MX]);
    let resolver = Arc::new(CertResolver::new(ServedCertificates::from_certs([
        &old.cert_key()
    ])));
    let srv = ServerTlsContext::new(&ServerTlsSpec::default(), Arc::clone(&resolver)).unwrap();
    let f = fixtures();
    let ctx = ClientTlsContext::new(f.ca.roots()).with_session_cache_size(0);
    let conn = ctx
        .connection(&ClientTlsSpec::new(ClientTlsMode::Verify, MX))
        .unwrap();

    // Start a handshake: ClientHello processed, certificate chosen.
    let mut c = ClientConnection::new(conn.config.clone(), conn.server_name.clone()).unwrap();
    let mut s = ServerConnection::new(srv.config()).unwrap();
    let mut buf = Vec::new();
    c.write_tls(&mut buf).unwrap();
    s.read_tls(&mut buf.as_slice()).unwrap();
    s.process_new_packets().unwrap();

    // Renew.
    let previous = resolver.swap(ServedCertificates::from_certs([&new.cert_key()]));
    assert_eq!(previous.len(), 1);

    // The handshake in flight completes with the old certificate.
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(c.peer_certificates().unwrap()[0], old.der());

    // A new handshake sees the new one.
    assert_eq!(served_leaf(&srv, Some(MX), None), new.der());

    // The store publishes into the resolver the same way.
    let mut store = CertificateStore::new();
    store.add("renewed", old.cert_key()).unwrap();
    store.publish(&resolver);
    assert_eq!(served_leaf(&srv, Some(MX), None), old.der());
    store.replace("renewed", [new.cert_key()]);
    store.publish(&resolver);
    assert_eq!(served_leaf(&srv, Some(MX), None), new.der());
}

#[test]
fn store_add_remove_list() {
    let f = fixtures();
    let mut store = CertificateStore::new();
    store.add("mx", f.leaf.cert_key()).unwrap();
    assert!(
        store.add("mx", f.leaf.cert_key()).is_err(),
        "same name and key type"
    );
    store.add("other", f.wrong_name.cert_key()).unwrap();
    let rows = store.list(now());
    assert_eq!(
        rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["mx", "other"]
    );
    assert_eq!(store.remove("mx").len(), 1);
    assert_eq!(store.remove("mx").len(), 0);
    assert_eq!(store.len(), 1);
    let set = store.served();
    assert_eq!(set.len(), 1);
    // The remaining one is now the fallback.
    let any = set
        .select(None, &[SignatureScheme::ECDSA_NISTP256_SHA256], now())
        .unwrap();
    assert_eq!(any.cert[0], f.wrong_name.der());
}

#[test]
fn imported_outranks_the_default_cert_then_ecdsa_before_rsa() {
    let f = fixtures();
    let ecdsa_and_rsa = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::RSA_PSS_SHA256,
    ];
    let ecdsa_only = [SignatureScheme::ECDSA_NISTP256_SHA256];
    let rsa_only = [SignatureScheme::RSA_PSS_SHA256];
    let pick = |store: &CertificateStore, sni: Option<&str>, schemes: &[SignatureScheme]| {
        store.served().select(sni, schemes, now()).unwrap().cert[0].clone()
    };
    // The generated Default Cert (RSA and its ECDSA companion) for the host name.
    let default_rsa = rsa4096_leaf();
    let default_ecdsa = &f.leaf;
    let mut store = CertificateStore::new();
    store
        .add(DEFAULT_CERT_NAME, default_rsa.cert_key())
        .unwrap();
    store
        .add(DEFAULT_CERT_NAME, default_ecdsa.cert_key())
        .unwrap();
    store.set_fallback(DEFAULT_CERT_NAME);
    assert_eq!(pick(&store, Some(MX), &ecdsa_and_rsa), default_ecdsa.der());
    assert_eq!(pick(&store, None, &rsa_only), default_rsa.der());

    // An import for another name is served by SNI; the Default Cert stays the fallback.
    let other = leaf(&["mx.other.example"]);
    store.add("other", other.cert_key()).unwrap();
    assert_eq!(
        pick(&store, Some("mx.other.example"), &ecdsa_and_rsa),
        other.der()
    );
    assert_eq!(pick(&store, None, &ecdsa_and_rsa), default_ecdsa.der());

    // An imported RSA certificate for the host name, added after the Default
    // Cert, outranks its ECDSA companion too, fallback included.
    let mut own_rsa = f.inter.leaf_with(LeafSpec::server(&[MX]).rsa());
    own_rsa.chain.push(f.inter.cert_pem.clone());
    store.add("own", own_rsa.cert_key()).unwrap();
    for sni in [
        Some(MX),
        Some("MX.Example.ORG."),
        None,
        Some("unknown.example"),
    ] {
        assert_eq!(pick(&store, sni, &ecdsa_and_rsa), own_rsa.der(), "{sni:?}");
        assert_eq!(pick(&store, sni, &rsa_only), own_rsa.der(), "{sni:?}");
    }
    // A client that can use no imported certificate still gets the Default Cert.
    assert_eq!(pick(&store, Some(MX), &ecdsa_only), default_ecdsa.der());

    // Within the same origin: ECDSA for ECDSA clients, RSA for the others.
    let own_ecdsa = leaf(&[MX]);
    store.add("own", own_ecdsa.cert_key()).unwrap();
    for sni in [Some(MX), None] {
        assert_eq!(
            pick(&store, sni, &ecdsa_and_rsa),
            own_ecdsa.der(),
            "{sni:?}"
        );
        assert_eq!(pick(&store, sni, &rsa_only), own_rsa.der(), "{sni:?}");
    }
    // The Default Cert stays in the table.
    assert_eq!(store.get(DEFAULT_CERT_NAME).count(), 2);

    // The same through a real handshake (client offering both kinds).
    let srv = server(store.served());
    assert_eq!(served_leaf(&srv, Some(MX), None), own_ecdsa.der());
    assert_eq!(served_leaf(&srv, None, None), own_ecdsa.der());
    assert_eq!(served_leaf(&srv, Some(MX), Some(&rsa_only)), own_rsa.der());

    // The order of addition does not matter: imported first, Default Cert later.
    let mut store = CertificateStore::new();
    store.add("own", own_rsa.cert_key()).unwrap();
    store
        .add(DEFAULT_CERT_NAME, default_ecdsa.cert_key())
        .unwrap();
    store.set_fallback(DEFAULT_CERT_NAME);
    assert_eq!(pick(&store, Some(MX), &ecdsa_and_rsa), own_rsa.der());
    assert_eq!(pick(&store, None, &ecdsa_and_rsa), own_rsa.der());
}

/// A client that accepts any server certificate (its handshake signature is
/// still checked) and offers only `schemes`: rustls announces the verifier's
/// schemes in `signature_algorithms`.
#[derive(Debug)]
struct OffersOnly {
    schemes: Vec<SignatureScheme>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for OffersOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Handshake offering only `schemes`, over `version`, with SNI `sni`
/// (None: no SNI); the served leaf, or the handshake error.
fn leaf_for_schemes(
    server: &ServerTlsContext,
    sni: Option<&str>,
    schemes: &[SignatureScheme],
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<CertificateDer<'static>, rustls::Error> {
    let provider = postern_certs::provider();
    let verifier = Arc::new(OffersOnly {
        schemes: schemes.to_vec(),
        provider: Arc::clone(&provider),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or(MX)).unwrap().to_owned();
    let mut c = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    handshake(&mut c, &mut s)?;
    Ok(c.peer_certificates().unwrap()[0].clone().into_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rsa,
    Ecdsa,
}

/// Every combination of SNI (known / unknown / absent), the client's
/// signature schemes (RSA / ECDSA / both) and the imported certificates for
/// the SNI name (RSA / ECDSA / both), over TLS 1.3 and TLS 1.2, next to the
/// Default Cert (RSA and ECDSA for the host name, the fallback): every
/// handshake succeeds, with the certificate of the documented order.
#[test]
fn every_sni_scheme_and_import_combination_gets_a_usable_certificate() {
    let f = fixtures();
    let mut default_rsa = f.inter.leaf_with(LeafSpec::server(&[MX]).rsa());
    default_rsa.chain.push(f.inter.cert_pem.clone());
    let default_ecdsa = &f.leaf;
    let named = "mx.a.example";
    let mut imported_rsa = f.inter.leaf_with(LeafSpec::server(&[named]).rsa());
    imported_rsa.chain.push(f.inter.cert_pem.clone());
    let imported_ecdsa = leaf(&[named]);

    let rsa_schemes = [
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let ecdsa_schemes = [SignatureScheme::ECDSA_NISTP256_SHA256];
    let both_schemes = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let clients: [(&[Kind], &[SignatureScheme]); 3] = [
        (&[Kind::Rsa], &rsa_schemes),
        (&[Kind::Ecdsa], &ecdsa_schemes),
        (&[Kind::Rsa, Kind::Ecdsa], &both_schemes),
    ];
    let imports: [&[Kind]; 3] = [&[Kind::Rsa], &[Kind::Ecdsa], &[Kind::Rsa, Kind::Ecdsa]];
    let mut checked = 0;
    for imported in imports {
        let mut store = CertificateStore::new();
        store
            .add(DEFAULT_CERT_NAME, default_rsa.cert_key())
            .unwrap();
        store
            .add(DEFAULT_CERT_NAME, default_ecdsa.cert_key())
            .unwrap();
        store.set_fallback(DEFAULT_CERT_NAME);
        for kind in imported {
            let pem = match kind {
                Kind::Rsa => &imported_rsa,
                Kind::Ecdsa => &imported_ecdsa,
            };
            store.add("a", pem.cert_key()).unwrap();
        }
        let srv = server(store.served());
        for (offers, schemes) in clients {
            // ECDSA first when the client can use it (within one origin).
            let preferred = |available: &[Kind]| {
                [Kind::Ecdsa, Kind::Rsa]
                    .into_iter()
                    .find(|k| available.contains(k) && offers.contains(k))
            };
            let default_leaf = match preferred(&[Kind::Rsa, Kind::Ecdsa]) {
                Some(Kind::Ecdsa) => default_ecdsa.der(),
                _ => default_rsa.der(),
            };
            for sni in [Some(named), Some("unknown.example"), None] {
                let expected = match (sni, preferred(imported)) {
                    (Some(n), Some(Kind::Rsa)) if n == named => imported_rsa.der(),
                    (Some(n), Some(Kind::Ecdsa)) if n == named => imported_ecdsa.der(),
                    // SNI unknown or absent, or no imported key the client can
                    // use: the Default Cert of a type it can use.
                    _ => default_leaf.clone(),
                };
                for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
                    let got = leaf_for_schemes(&srv, sni, schemes, version).unwrap_or_else(|e| {
                        panic!(
                            "imported {imported:?}, client {offers:?}, sni {sni:?}, {version:?}: {e}"
                        )
                    });
                    assert_eq!(
                        got, expected,
                        "imported {imported:?}, client {offers:?}, sni {sni:?}, {version:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 3 * 3 * 3 * 2);
}

/// Without a fallback that the client can use, any other certificate of the
/// set answers rather than a failed handshake.
#[test]
fn a_client_gets_any_usable_certificate_before_a_failed_handshake() {
    let f = fixtures();
    let mut rsa_only_default = f.inter.leaf_with(LeafSpec::server(&[MX]).rsa());
    rsa_only_default.chain.push(f.inter.cert_pem.clone());
    let other_ecdsa = leaf(&["mx.other.example"]);
    let mut store = CertificateStore::new();
    store
        .add(DEFAULT_CERT_NAME, rsa_only_default.cert_key())
        .unwrap();
    store.set_fallback(DEFAULT_CERT_NAME);
    store.add("other", other_ecdsa.cert_key()).unwrap();
    let srv = server(store.served());
    let ecdsa_only = [SignatureScheme::ECDSA_NISTP256_SHA256];
    for sni in [Some(MX), Some("unknown.example"), None] {
        let got = leaf_for_schemes(&srv, sni, &ecdsa_only, &rustls::version::TLS13).unwrap();
        assert_eq!(got, other_ecdsa.der(), "{sni:?}");
    }
}

/// An expired (or not yet valid) certificate is never chosen while a
/// certificate within its validity can answer the client, even one that
/// outranks it by name or origin; it is served only as the last resort.
#[test]
fn a_certificate_out_of_its_validity_yields_to_a_valid_one() {
    let f = fixtures();
    let both = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::RSA_PSS_SHA256,
    ];
    let default_ecdsa = &f.leaf;
    for stale in [&f.expired, &f.not_yet_valid] {
        // An imported certificate for the host name outranks the Default Cert,
        // fallback included, while it is valid; not once it is out of validity.
        let mut store = CertificateStore::new();
        store
            .add(DEFAULT_CERT_NAME, default_ecdsa.cert_key())
            .unwrap();
        store.set_fallback(DEFAULT_CERT_NAME);
        store.add("own", stale.cert_key()).unwrap();
        let set = store.served();
        for sni in [Some(MX), None, Some("unknown.example")] {
            let chosen = set.select(sni, &both, now()).unwrap();
            assert_eq!(chosen.cert[0], default_ecdsa.der(), "{sni:?}");
        }
        let srv = server(set);
        assert_eq!(served_leaf(&srv, Some(MX), None), default_ecdsa.der());

        // An imported certificate for another name that is out of validity:
        // the valid Default Cert answers that name too.
        let mut store = CertificateStore::new();
        store
            .add(DEFAULT_CERT_NAME, default_ecdsa.cert_key())
            .unwrap();
        store.set_fallback(DEFAULT_CERT_NAME);
        let mut stale_other = f
            .inter
            .leaf_with(LeafSpec::server(&["mx.a.example"]).valid(-30, -1));
        stale_other.chain.push(f.inter.cert_pem.clone());
        store.add("a", stale_other.cert_key()).unwrap();
        let chosen = store
            .served()
            .select(Some("mx.a.example"), &both, now())
            .unwrap();
        assert_eq!(chosen.cert[0], default_ecdsa.der());

        // Nothing valid at all: the stale certificate still answers.
        let mut store = CertificateStore::new();
        store.add("own", stale.cert_key()).unwrap();
        let chosen = store.served().select(Some(MX), &both, now()).unwrap();
        assert_eq!(chosen.cert[0], stale.der());
    }
}
