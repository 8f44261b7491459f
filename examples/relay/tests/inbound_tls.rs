//! lettre submits to the relay in each server TLS mode and client-certificate mode; the relay is never an open
//! relay, and relays for a trusted agent's verified certificate.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Hop, NextHop, Pem, Submit, ca, give_relay_ca_cert, message, self_signed, start_hop,
    start_relay, transport,
};
use lettre::AsyncTransport;
use postern_relay::relay::Relay;

/// A relay whose mail for `dest.test` goes to a plaintext sink; `extra` is appended to its configuration.
async fn relay(dir: &Path, extra: &str) -> (Relay, NextHop) {
    let sink = start_hop(Hop::NoStartTls, Duration::ZERO).await;
    give_relay_ca_cert(dir);
    std::fs::write(dir.join("ca.pem"), &ca().cert_pem).unwrap();
    let toml = format!(
        "accepted_domains = [\"relay.test\"]\n{extra}\n[routes]\n\"dest.test\" = \"127.0.0.1:{}\"\n\
         [certificates]\ndefault_rsa_bits = 2048\nsystem_roots = false\nclient_cert_roots = \"{}\"\n",
        sink.addr.port(),
        dir.join("ca.pem").display()
    );
    (start_relay(dir, &toml).await, sink)
}

async fn delivered(sink: &NextHop, rcpt: &str) -> String {
    for _ in 0..200 {
        if let Some(d) = sink.delivered_to(rcpt).first() {
            return String::from_utf8_lossy(&d.content).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{rcpt} never delivered");
}

fn client_ca() -> Pem {
    ca().leaf(&["agent.test"], true, -1, 90)
}

#[tokio::test]
async fn offer_accepts_plaintext_and_records_tls_in_received() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, sink) = relay(dir.path(), "").await;
    let addr = relay.local_addrs()[0];
    transport(addr, Submit::Plain)
        .send(message("plain@dest.test", "plain"))
        .await
        .unwrap();
    transport(addr, Submit::StartTls(None))
        .send(message("tls@dest.test", "tls"))
        .await
        .unwrap();
    let plain = delivered(&sink, "plain@dest.test").await;
    assert!(plain.starts_with("Received: from client.test (unknown [127.0.0.1])\r\n\tby relay.test (Postern) with ESMTP id "), "{plain}");
    assert!(!plain.contains("using TLS"), "{plain}");
    let tls = delivered(&sink, "tls@dest.test").await;
    assert!(
        tls.contains("\r\n\t(using TLSv1.3 with cipher TLS13_"),
        "{tls}"
    );
    assert!(tls.contains(" bits))\r\n\t(No client certificate requested)\r\n\tby relay.test (Postern) with ESMTPS id "), "{tls}");
    assert!(tls.contains("\tfor <tls@dest.test>; "), "{tls}");
    relay.shutdown().await;
}

#[tokio::test]
async fn require_refuses_plaintext_with_530() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, sink) = relay(dir.path(), "[tls.inbound]\ntls = \"require\"").await;
    let addr = relay.local_addrs()[0];
    let err = transport(addr, Submit::Plain)
        .send(message("plain@dest.test", "plain"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Must issue a STARTTLS command first"),
        "{err}"
    );
    assert_eq!(
        err.status().map(|c| c.to_string()),
        Some("530".to_owned()),
        "{err}"
    );
    transport(addr, Submit::StartTls(None))
        .send(message("tls@dest.test", "tls"))
        .await
        .unwrap();
    delivered(&sink, "tls@dest.test").await;
    assert!(sink.delivered_to("plain@dest.test").is_empty());
    relay.shutdown().await;
}

#[tokio::test]
async fn none_does_not_offer_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, sink) = relay(dir.path(), "[tls.inbound]\ntls = \"none\"").await;
    let addr = relay.local_addrs()[0];
    assert!(
        transport(addr, Submit::StartTls(None))
            .send(message("tls@dest.test", "tls"))
            .await
            .is_err()
    );
    transport(addr, Submit::Plain)
        .send(message("plain@dest.test", "plain"))
        .await
        .unwrap();
    delivered(&sink, "plain@dest.test").await;
    relay.shutdown().await;
}

#[tokio::test]
async fn ask_records_the_certificate_and_never_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, sink) = relay(
        dir.path(),
        "[tls.inbound]\ntls = \"require\"\nclient_certificates = \"ask\"",
    )
    .await;
    let addr = relay.local_addrs()[0];
    let trusted = client_ca();
    let stranger = self_signed(&["stranger.test"], true);
    transport(addr, Submit::StartTls(None))
        .send(message("none@dest.test", "none"))
        .await
        .unwrap();
    transport(addr, Submit::StartTls(Some(&trusted)))
        .send(message("ca@dest.test", "ca"))
        .await
        .unwrap();
    transport(addr, Submit::StartTls(Some(&stranger)))
        .send(message("self@dest.test", "self"))
        .await
        .unwrap();
    assert!(
        delivered(&sink, "none@dest.test")
            .await
            .contains("(Client did not present a certificate)")
    );
    let ca_text = delivered(&sink, "ca@dest.test").await;
    assert!(
        ca_text.contains(
            "(Client certificate \"CN=agent.test\", issuer \"CN=Postern Test CA\" (verified OK))"
        ),
        "{ca_text}"
    );
    let self_text = delivered(&sink, "self@dest.test").await;
    assert!(self_text.contains("(not verified))"), "{self_text}");
    relay.shutdown().await;
}

#[tokio::test]
async fn require_client_certificates_refuses_without_a_verified_one() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, sink) = relay(
        dir.path(),
        "[tls.inbound]\ntls = \"require\"\nclient_certificates = \"require\"",
    )
    .await;
    let addr = relay.local_addrs()[0];
    // The handshake completes (no TLS alert); the session then refuses with a
    // reply the client can read and log (RFC 3207 §4.1).
    let stranger = self_signed(&["stranger.test"], true);
    for (cert, to) in [
        (None, "none@dest.test"),
        (Some(&stranger), "self@dest.test"),
    ] {
        let err = transport(addr, Submit::StartTls(cert))
            .send(message(to, "refused"))
            .await
            .unwrap_err();
        assert_eq!(
            err.status().map(|c| c.to_string()).as_deref(),
            Some("554"),
            "{to}: {err}"
        );
        assert!(
            err.to_string()
                .contains("5.7.1 Client certificate required"),
            "{to}: {err}"
        );
    }
    assert!(
        transport(addr, Submit::Plain)
            .send(message("plain@dest.test", "plain"))
            .await
            .is_err()
    );
    transport(addr, Submit::StartTls(Some(&client_ca())))
        .send(message("ca@dest.test", "ca"))
        .await
        .unwrap();
    assert!(
        delivered(&sink, "ca@dest.test")
            .await
            .contains("(verified OK)")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = sink.log.lock().unwrap().delivered.len();
    assert_eq!(delivered, 1, "only the verified client's message");
    relay.shutdown().await;
}

/// A TLS 1.2 client without a certificate, under client certificates
/// `require`: the handshake completes (no TLS alert, so no TLS 1.3-only
/// `certificate_required` either), and each command gets a readable SMTP
/// reply: `554 5.7.1` for EHLO and VRFY, `503` for the transaction commands
/// (no EHLO was accepted), nothing is accepted, QUIT works.
#[tokio::test]
async fn require_client_certificates_answers_a_tls12_client_in_smtp() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    async fn reply<S: tokio::io::AsyncRead + Unpin>(io: &mut BufReader<S>) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), io.read_line(&mut line))
                .await
                .expect("a reply within 10 s")
                .unwrap();
            assert!(n > 0, "closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (relay, sink) = relay(
        dir.path(),
        "[tls.inbound]\ntls = \"require\"\nclient_certificates = \"require\"",
    )
    .await;
    let addr = relay.local_addrs()[0];
    let mut io = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    assert!(reply(&mut io).await.starts_with("220 "));
    io.get_mut()
        .write_all(b"EHLO client.test\r\n")
        .await
        .unwrap();
    assert!(reply(&mut io).await.starts_with("250"));
    io.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert!(reply(&mut io).await.starts_with("220 "));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::pem::PemObject::from_pem_slice(ca().cert_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(postern_certs::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("relay.test").unwrap(),
            io.into_inner(),
        )
        .await
        .expect("the handshake completes");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut io = BufReader::new(tls);
    let mut transcript = Vec::new();
    for cmd in [
        "EHLO client.test",
        "MAIL FROM:<alice@client.test>",
        "RCPT TO:<bob@dest.test>",
        "DATA",
        "VRFY bob",
        "NOOP",
        "QUIT",
    ] {
        io.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .unwrap();
        transcript.push((cmd, reply(&mut io).await));
    }
    let code = |i: usize| transcript[i].1.get(..9).unwrap_or_default().to_owned();
    assert_eq!(code(0), "554 5.7.1", "{transcript:?}");
    assert!(transcript[0].1.contains("Client certificate required"));
    // No EHLO was accepted, so no transaction can start.
    assert!(code(1).starts_with("503"), "{transcript:?}");
    assert!(code(2).starts_with("503"), "{transcript:?}");
    assert!(code(3).starts_with("503"), "{transcript:?}");
    assert_eq!(code(4), "554 5.7.1", "{transcript:?}");
    assert!(code(5).starts_with("250"), "{transcript:?}");
    assert!(code(6).starts_with("221"), "{transcript:?}");
    assert!(sink.log.lock().unwrap().delivered.is_empty());
    relay.shutdown().await;
}

#[tokio::test]
async fn open_relay_attempt_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, sink) = relay(dir.path(), "authorised_networks = []").await;
    let addr = relay.local_addrs()[0];
    let err = transport(addr, Submit::Plain)
        .send(message("victim@dest.test", "spam"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Relay access denied"), "{err}");
    assert_eq!(err.status().map(|c| c.to_string()), Some("554".to_owned()));
    // Our own domain is accepted from anyone (it then routes like any other: here to the sink by a route).
    transport(addr, Submit::Plain)
        .send(message("postmaster@relay.test", "local"))
        .await
        .unwrap();
    assert!(
        postern_relay::queue::spool::Spool::scan(&dir.path().join("state/spool"))
            .unwrap()
            .messages
            .len()
            <= 1
    );
    assert!(sink.delivered_to("victim@dest.test").is_empty());
    relay.shutdown().await;
}

#[tokio::test]
async fn trusted_agent_relays_by_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let agent = client_ca();
    let other = ca().leaf(&["other-agent.test"], true, -1, 90);
    let extra = format!(
        "authorised_networks = []\n[tls.inbound]\ntls = \"require\"\nclient_certificates = \"ask\"\n\
         [[tls.inbound.trusted_agents]]\nfingerprint = \"{}\"\n",
        agent.fingerprint()
    );
    let (relay, sink) = relay(dir.path(), &extra).await;
    let addr = relay.local_addrs()[0];
    transport(addr, Submit::StartTls(Some(&agent)))
        .send(message("far@dest.test", "relayed"))
        .await
        .unwrap();
    delivered(&sink, "far@dest.test").await;
    // Verified by the CA but not a trusted agent: no relaying.
    let err = transport(addr, Submit::StartTls(Some(&other)))
        .send(message("far2@dest.test", "x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Relay access denied"), "{err}");
    // No certificate: no relaying either.
    assert!(
        transport(addr, Submit::StartTls(None))
            .send(message("far3@dest.test", "x"))
            .await
            .is_err()
    );
    relay.shutdown().await;
}
