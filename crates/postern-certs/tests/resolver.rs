//! Server certificate selection: SNI, wildcard, fallback, imported vs generated,
//! ECDSA vs RSA, hot swap.

mod common;

use std::sync::Arc;

use common::{LeafSpec, MX, Pem, fixtures, handshake, rsa4096_leaf};
use postern_certs::{
    CertResolver, CertificateStore, ClientTlsContext, ClientTlsSpec, DEFAULT_CERT_NAME, KeyType,
    ServedCertificates, ServerTlsContext, ServerTlsSpec,
};
use postern_policy::ClientTlsMode;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, ServerConnection, SignatureScheme};

fn leaf(names: &[&str]) -> Pem {
    let f = fixtures();
    let mut p = f.inter.leaf(LeafSpec::server(names));
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
    assert!(set.select(Some(MX), &[SignatureScheme::ED448]).is_none());
    let chosen = set
        .select(Some(MX), &[SignatureScheme::ECDSA_NISTP256_SHA256])
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
    let rows = store.list(common::now());
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
        .select(None, &[SignatureScheme::ECDSA_NISTP256_SHA256])
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
        store.served().select(sni, schemes).unwrap().cert[0].clone()
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
    let mut own_rsa = f.inter.leaf(LeafSpec::server(&[MX]).rsa());
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
