//! Test fixtures generated with rcgen, and an in-memory handshake pump.
#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;

pub use postern_test_support::{Ca, LeafSpec, Pem};
use rustls::pki_types::UnixTime;
use rustls::{ClientConnection, ServerConnection};

pub const MX: &str = "mx.example.org";

pub fn now() -> UnixTime {
    UnixTime::now()
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
        let mut leaf = inter.leaf_with(LeafSpec::server(&[MX]));
        leaf.chain.push(inter.cert_pem.clone());
        let mut expired = inter.leaf_with(LeafSpec::server(&[MX]).valid(-30, -1));
        expired.chain.push(inter.cert_pem.clone());
        let mut not_yet_valid = inter.leaf_with(LeafSpec::server(&[MX]).valid(2, 30));
        not_yet_valid.chain.push(inter.cert_pem.clone());
        let mut wrong_name = inter.leaf_with(LeafSpec::server(&["other.example.net"]));
        wrong_name.chain.push(inter.cert_pem.clone());
        let other_ca = Ca::new("Unknown Root");
        Fixtures {
            self_signed: LeafSpec::server(&[MX]).self_signed(),
            client_trusted: ca.leaf_with(LeafSpec::client(&["client.example.com"])),
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
        let mut leaf = f.inter.leaf_with(LeafSpec::server(&[MX]).rsa4096());
        leaf.chain.push(f.inter.cert_pem.clone());
        leaf
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
