//! lettre (tokio1 + rustls) submitting to our server in each server TLS mode and client-certificate mode.

mod common;

use std::time::Duration;

use common::{MX, Pem, fixtures, settings, start_server};
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, Identity, Tls, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use postern_policy::{ClientCertMode, PeerTrust, ServerTlsMode};

fn message() -> Message {
    Message::builder()
        .from("alice@example.net".parse().unwrap())
        .to("bob@example.org".parse().unwrap())
        .subject("hello")
        .body(String::from("Hello over SMTP"))
        .unwrap()
}

#[derive(Clone, Copy)]
enum Mode<'a> {
    Plain,
    /// STARTTLS required, presenting this client certificate if any.
    StartTls(Option<&'a Pem>),
}

fn transport(port: u16, mode: Mode<'_>) -> AsyncSmtpTransport<Tokio1Executor> {
    let tls = match mode {
        Mode::Plain => Tls::None,
        Mode::StartTls(identity) => {
            let mut b = TlsParameters::builder(MX.into())
                .certificate_store(CertificateStore::None)
                .add_root_certificate(
                    Certificate::from_pem(fixtures().ca.cert_pem.as_bytes()).unwrap(),
                );
            if let Some(p) = identity {
                // lettre 0.11.23 with rustls takes the certificate argument of `Identity::from_pem` as DER
                // (`from_pem_rustls_tls` wraps the bytes unparsed), so hand it DER.
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let der = CertificateDer::from_pem_slice(p.cert.as_bytes()).unwrap();
                b = b.identify_with(Identity::from_pem(&der, p.key.as_bytes()).unwrap());
            }
            Tls::Required(b.build_rustls().unwrap())
        }
    };
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .hello_name(ClientId::Domain("client.example.net".into()))
        .timeout(Some(Duration::from_secs(10)))
        .tls(tls)
        .build()
}

#[tokio::test]
async fn offer_accepts_plaintext_and_starttls() {
    let server = start_server(settings(ServerTlsMode::Offer, ClientCertMode::None)).await;
    transport(server.addr.port(), Mode::Plain)
        .send(message())
        .await
        .expect("plaintext accepted in offer mode");
    transport(server.addr.port(), Mode::StartTls(None))
        .send(message())
        .await
        .expect("STARTTLS works");
    let got = server.inbox.messages();
    assert_eq!(got.len(), 2);
    assert!(got[0].tls.is_none());
    assert!(String::from_utf8_lossy(&got[0].content).contains("Hello over SMTP"));
    let tls = got[1].tls.as_ref().expect("second message over TLS");
    assert!(tls.cipher.starts_with("TLS"), "{tls:?}");
    assert!(tls.client_certificate.is_none());
    assert_eq!(tls.client_check().trust, PeerTrust::Anonymous);
    server.shutdown().await;
}

#[tokio::test]
async fn none_mode_does_not_offer_starttls() {
    let server = start_server(settings(ServerTlsMode::None, ClientCertMode::None)).await;
    transport(server.addr.port(), Mode::Plain)
        .send(message())
        .await
        .expect("plaintext accepted");
    let err = transport(server.addr.port(), Mode::StartTls(None))
        .send(message())
        .await
        .expect_err("no STARTTLS to use");
    assert!(
        err.to_string().to_lowercase().contains("tls") || err.is_client(),
        "{err}"
    );
    assert_eq!(server.inbox.messages().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn require_refuses_plaintext_with_530() {
    let server = start_server(settings(ServerTlsMode::Require, ClientCertMode::None)).await;
    let err = transport(server.addr.port(), Mode::Plain)
        .send(message())
        .await
        .expect_err("plaintext refused");
    assert_eq!(
        err.status().map(|c| c.to_string()).as_deref(),
        Some("530"),
        "{err}"
    );
    assert!(server.inbox.messages().is_empty());
    transport(server.addr.port(), Mode::StartTls(None))
        .send(message())
        .await
        .expect("accepted over TLS");
    let got = server.inbox.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls.is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn ask_records_client_certificates_and_never_refuses() {
    let f = fixtures();
    let server = start_server(settings(ServerTlsMode::Offer, ClientCertMode::Ask)).await;
    let port = server.addr.port();
    transport(port, Mode::StartTls(None))
        .send(message())
        .await
        .expect("no certificate: accepted");
    transport(port, Mode::StartTls(Some(&f.client_untrusted)))
        .send(message())
        .await
        .expect("untrusted: accepted");
    transport(port, Mode::StartTls(Some(&f.client_trusted)))
        .send(message())
        .await
        .expect("trusted: accepted");
    let got = server.inbox.messages();
    assert_eq!(got.len(), 3);
    let tls: Vec<_> = got
        .iter()
        .map(|m| m.tls.clone().expect("over TLS"))
        .collect();
    assert!(tls[0].client_certificate.is_none());
    let untrusted = tls[1]
        .client_certificate
        .as_ref()
        .expect("certificate recorded");
    assert_eq!(untrusted.check.trust, PeerTrust::Untrusted);
    assert!(!untrusted.check.is_verified());
    assert_eq!(untrusted.fingerprint, f.client_untrusted.fingerprint());
    let trusted = tls[2]
        .client_certificate
        .as_ref()
        .expect("certificate recorded");
    assert_eq!(trusted.check.trust, PeerTrust::Verified);
    assert!(
        trusted.subject.contains("client.example.net"),
        "{trusted:?}"
    );
    assert!(trusted.issuer.contains("Postern Test CA"), "{trusted:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn require_cert_refuses_clients_without_a_verified_certificate() {
    let f = fixtures();
    let server = start_server(settings(ServerTlsMode::Require, ClientCertMode::Require)).await;
    let port = server.addr.port();
    // The handshake completes; the session refuses with 554 5.7.1 (RFC 3207 §4.1).
    for (cert, what) in [
        (None, "no certificate"),
        (Some(&f.client_untrusted), "untrusted"),
    ] {
        let err = transport(port, Mode::StartTls(cert))
            .send(message())
            .await
            .expect_err(what);
        assert_eq!(
            err.status().map(|c| c.to_string()).as_deref(),
            Some("554"),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains("Client certificate required"),
            "{what}: {err}"
        );
    }
    assert!(
        transport(port, Mode::Plain).send(message()).await.is_err(),
        "plaintext refused"
    );
    assert!(server.inbox.messages().is_empty());
    transport(port, Mode::StartTls(Some(&f.client_trusted)))
        .send(message())
        .await
        .expect("CA-issued certificate accepted");
    let got = server.inbox.messages();
    assert_eq!(got.len(), 1);
    let cert = got[0]
        .tls
        .as_ref()
        .and_then(|t| t.client_certificate.clone())
        .expect("client certificate");
    assert!(cert.check.is_verified());
    assert_eq!(cert.fingerprint, f.client_trusted.fingerprint());
    server.shutdown().await;
}
