//! In-memory rustls handshakes: RSA-4096 vs ECDSA P-256 server certificates,
//! full and resumed TLS 1.3, full TLS 1.2, side by side.
//!
//! Run: `cargo bench -p postern-certs --bench handshake`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_main};
use postern_certs::{
    CertKey, CertResolver, ClientTlsContext, ClientTlsSpec, DefaultCertOptions, GeneratedKind,
    RsaBits, ServedCertificates, ServerTlsContext, ServerTlsSpec, TrustRoots, generate_self_signed,
};
use postern_policy::{ClientTlsMode, TlsVersion};
use rustls::pki_types::UnixTime;
use rustls::{ClientConnection, HandshakeKind, ServerConnection};

const HOST: &str = "mx.example.org";

fn pump(c: &mut ClientConnection, s: &mut ServerConnection, buf: &mut Vec<u8>) {
    loop {
        buf.clear();
        c.write_tls(buf).expect("write to a Vec");
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("read from a slice");
            s.process_new_packets().expect("server handshake");
        }
        buf.clear();
        s.write_tls(buf).expect("write to a Vec");
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("read from a slice");
            c.process_new_packets().expect("client handshake");
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            return;
        }
    }
}

struct Setup {
    server: ServerTlsContext,
    client: ClientTlsContext,
    spec: ClientTlsSpec,
}

impl Setup {
    fn new(cert: &CertKey, version: TlsVersion, resumption: bool) -> Self {
        let set = ServedCertificates::from_certs([cert]);
        let mut server_spec = ServerTlsSpec::default();
        server_spec.min_version = version;
        let server = ServerTlsContext::new(&server_spec, Arc::new(CertResolver::new(set)))
            .expect("server config");
        let client = ClientTlsContext::new(TrustRoots::empty().into_store())
            .with_session_cache_size(if resumption { 256 } else { 0 });
        let mut spec = ClientTlsSpec::new(ClientTlsMode::Encrypt, HOST);
        spec.min_version = version;
        Self {
            server,
            client,
            spec,
        }
    }

    fn handshake(&self, buf: &mut Vec<u8>) -> HandshakeKind {
        let conn = self.client.connection(&self.spec).expect("client config");
        let mut c = ClientConnection::new(conn.config, conn.server_name).expect("client");
        let mut s = ServerConnection::new(self.server.config()).expect("server");
        pump(&mut c, &mut s, buf);
        black_box(c.handshake_kind().expect("handshake done"))
    }
}

fn certs() -> (CertKey, CertKey) {
    let now = UnixTime::now();
    let opts = DefaultCertOptions::new(HOST);
    let load = |kind| {
        let pem = generate_self_signed(&opts, kind, now).expect("generate");
        CertKey::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes()).expect("import")
    };
    (
        load(GeneratedKind::Rsa(RsaBits::B4096)),
        load(GeneratedKind::EcdsaP256),
    )
}

fn bench(c: &mut Criterion) {
    let (rsa, ecdsa) = certs();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut group = c.benchmark_group("handshake");
    for (key_name, cert) in [("rsa4096", &rsa), ("ecdsa-p256", &ecdsa)] {
        let full13 = Setup::new(cert, TlsVersion::Tls13, false);
        group.bench_function(format!("tls13-full/{key_name}"), |b| {
            b.iter(|| full13.handshake(&mut buf))
        });
        let resumed13 = Setup::new(cert, TlsVersion::Tls13, true);
        assert_eq!(resumed13.handshake(&mut buf), HandshakeKind::Full);
        assert_eq!(resumed13.handshake(&mut buf), HandshakeKind::Resumed);
        group.bench_function(format!("tls13-resumed/{key_name}"), |b| {
            b.iter(|| assert_eq!(resumed13.handshake(&mut buf), HandshakeKind::Resumed))
        });
        let full12 = Setup::new(cert, TlsVersion::Tls12, false);
        group.bench_function(format!("tls12-full/{key_name}"), |b| {
            b.iter(|| full12.handshake(&mut buf))
        });
    }
    group.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;

criterion_main!(benches);
