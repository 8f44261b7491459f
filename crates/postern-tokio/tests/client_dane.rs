//! Our client against loopback next hops under DANE (RFC 7672): a matching TLSA record authenticates the next
//! hop (even a self-signed one, with DANE-EE), a record that does not match defers with 4.7.5 before any MAIL,
//! and DANE-TA needs the trust anchor in the chain and the MX host name in the certificate.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{HopConfig, MX, Pem, fixtures, start_hop};
use postern_certs::{ClientTlsContext, tlsa_record};
use postern_policy::dane::{CertificateUsage, DaneOutcome, MatchingType, Selector, TlsaRecord};
use postern_policy::{
    ClientTlsMode, DestinationPolicy, NextHop, OutboundPolicy, PeerTrust, ResultType,
};
use postern_smtp::{Envelope, ForwardPath, ReversePath};
use postern_tokio::client::{Client, ClientSettings, DeliveryResult, Destination};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const MESSAGE: &[u8] = b"Subject: dane\r\n\r\nbody\r\n";

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("fixture certificate")
}

fn record(
    cert: &CertificateDer<'_>,
    usage: CertificateUsage,
    selector: Selector,
    matching: MatchingType,
) -> TlsaRecord {
    tlsa_record(cert, usage, selector, matching).expect("record for a fixture")
}

fn dane_ee_3_1_1(pem: &Pem) -> TlsaRecord {
    record(
        &der(&pem.cert),
        CertificateUsage::DaneEe,
        Selector::SubjectPublicKeyInfo,
        MatchingType::Sha256,
    )
}

fn dane_ta_2_0_1_of_the_ca() -> TlsaRecord {
    record(
        &der(&fixtures().ca.cert_pem),
        CertificateUsage::DaneTa,
        Selector::FullCertificate,
        MatchingType::Sha256,
    )
}

fn wrong(mut r: TlsaRecord) -> TlsaRecord {
    r.data[0] ^= 0xff;
    r
}

/// A certificate served with the test CA after it in the chain (RFC 7672 section 3.2.1: the TA must be sent).
fn with_ca(pem: &Pem) -> Pem {
    Pem {
        chain: vec![fixtures().ca.cert_pem.clone()],
        ..pem.clone()
    }
}

/// A client whose roots do not include the test CA: only DANE can authenticate the next hops here.
fn client() -> Client {
    let mut settings = ClientSettings::new("client.example.net");
    settings.smtp.timeouts.command = Duration::from_secs(5);
    settings.smtp.timeouts.data = Duration::from_secs(5);
    settings.connect_timeout = Duration::from_secs(5);
    settings.handshake_timeout = Duration::from_secs(5);
    Client::new(
        settings,
        Arc::new(ClientTlsContext::new(Arc::new(
            rustls::RootCertStore::empty(),
        ))),
    )
}

struct Run {
    result: DeliveryResult,
    plaintext: String,
    messages: Vec<(bool, Vec<u8>)>,
}

async fn deliver(served: &Pem, mode: ClientTlsMode, records: Vec<TlsaRecord>) -> Run {
    let hop = start_hop(HopConfig::tls(served)).await;
    let next_hop = NextHop::parse("example.org").unwrap();
    let mx = MX.parse().unwrap();
    let destination = Destination::new(vec![hop.addr], next_hop.clone(), Some(mx));
    let policy = OutboundPolicy::new(DestinationPolicy::new(mode))
        .connection(&next_hop, destination.mx_host.as_ref())
        .with_dane(DaneOutcome::Authenticate(records));
    let envelope = Envelope::new(
        ReversePath::parse("<alice@example.net>").unwrap(),
        [ForwardPath::parse("<bob@example.org>").unwrap()],
    );
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        client().deliver_with(&destination, &policy, &envelope, MESSAGE),
    )
    .await
    .expect("delivery hung");
    Run {
        result,
        plaintext: hop.plaintext(),
        messages: hop.messages(),
    }
}

fn assert_delivered(run: &Run) {
    let what = format!("{:#?}", run.result);
    assert!(run.result.all_delivered(), "{what}");
    let tls = run.result.tls.as_ref().expect("TLS summary");
    assert_eq!(tls.certificate.trust, PeerTrust::Verified, "{what}");
    assert_eq!(tls.certificate.failure, None, "{what}");
    // RFC 7672 section 8.1: the SNI (and name checked) is the TLSA base domain, the MX host.
    assert_eq!(tls.server_name, MX);
    assert!(tls.explanation.contains("(dane)"), "{}", tls.explanation);
    assert_eq!(run.messages, vec![(true, MESSAGE.to_vec())], "{what}");
    assert!(!run.plaintext.contains("MAIL FROM"), "{}", run.plaintext);
}

fn assert_deferred(run: &Run, result_type: ResultType) {
    let what = format!("{:#?}", run.result);
    assert!(run.result.is_deferred(), "{what}");
    let failure = run.result.failure.as_ref().expect("failure");
    assert_eq!(failure.status.to_string(), "4.7.5", "{what}");
    assert_eq!(failure.result_type, Some(result_type), "{what}");
    assert!(!failure.permanent, "{what}");
    assert!(!run.result.plaintext_retry, "{what}");
    assert!(run.messages.is_empty(), "{what}");
    // Never MAIL nor a message byte in plaintext once DANE requires TLS.
    assert!(
        !run.plaintext.contains("MAIL FROM"),
        "MAIL in plaintext: {}",
        run.plaintext
    );
    assert!(
        !run.plaintext.contains("Subject: dane"),
        "content in plaintext"
    );
    assert!(run.plaintext.contains("STARTTLS"), "{}", run.plaintext);
}

#[tokio::test]
async fn dane_ee_authenticates_a_self_signed_next_hop() {
    let hop = &fixtures().self_signed;
    for mode in [ClientTlsMode::Dane, ClientTlsMode::DaneOnly] {
        let run = deliver(hop, mode, vec![dane_ee_3_1_1(hop)]).await;
        assert_delivered(&run);
    }
}

#[tokio::test]
async fn dane_ee_ignores_the_name_and_the_dates() {
    // RFC 7671 section 5.1: a DANE-EE match authenticates whatever the names and validity dates say.
    for hop in [&fixtures().wrong_name, &fixtures().expired] {
        let run = deliver(hop, ClientTlsMode::Dane, vec![dane_ee_3_1_1(hop)]).await;
        assert_delivered(&run);
    }
}

#[tokio::test]
async fn wrong_tlsa_record_defers() {
    let hop = &fixtures().self_signed;
    for mode in [ClientTlsMode::Dane, ClientTlsMode::DaneOnly] {
        let run = deliver(hop, mode, vec![wrong(dane_ee_3_1_1(hop))]).await;
        // RFC 8460 section 4.3.2.1: none of the records was found valid for the server.
        assert_deferred(&run, ResultType::TlsaInvalid);
    }
    // A record for another server's key (here the CA-signed certificate's) is just as wrong.
    let run = deliver(
        hop,
        ClientTlsMode::Dane,
        vec![dane_ee_3_1_1(&fixtures().good)],
    )
    .await;
    assert_deferred(&run, ResultType::TlsaInvalid);
}

#[tokio::test]
async fn dane_ta_with_the_anchor_in_the_chain() {
    let run = deliver(
        &with_ca(&fixtures().good),
        ClientTlsMode::Dane,
        vec![dane_ta_2_0_1_of_the_ca()],
    )
    .await;
    assert_delivered(&run);
}

#[tokio::test]
async fn dane_ta_without_the_anchor_in_the_chain_defers() {
    // The server sends only its own certificate: the TLSA digest cannot be matched to a trust anchor.
    let run = deliver(
        &fixtures().good,
        ClientTlsMode::Dane,
        vec![dane_ta_2_0_1_of_the_ca()],
    )
    .await;
    assert_deferred(&run, ResultType::TlsaInvalid);
}

#[tokio::test]
async fn dane_ta_with_a_wrong_name_defers() {
    // Chains to the anchor, but the certificate names other.example.net: not the MX host, not the domain.
    let run = deliver(
        &with_ca(&fixtures().wrong_name),
        ClientTlsMode::Dane,
        vec![dane_ta_2_0_1_of_the_ca()],
    )
    .await;
    assert_deferred(&run, ResultType::CertificateHostMismatch);
}

#[tokio::test]
async fn dane_ta_with_an_expired_certificate_defers() {
    let run = deliver(
        &with_ca(&fixtures().expired),
        ClientTlsMode::Dane,
        vec![dane_ta_2_0_1_of_the_ca()],
    )
    .await;
    assert_deferred(&run, ResultType::CertificateExpired);
}
