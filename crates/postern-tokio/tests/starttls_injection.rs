//! STARTTLS command injection against our server over a real socket (CVE-2011-0411): plaintext pipelined after
//! the STARTTLS line is dropped before the handshake and never answered inside TLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MX, fixtures, settings, start_server};
use postern_certs::{ClientTlsContext, ClientTlsSpec};
use postern_policy::{ClientCertMode, ClientTlsMode, ServerTlsMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read one reply (all its lines) byte by byte, so nothing after it is consumed.
async fn reply<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut all = String::new();
    loop {
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
                .await
                .expect("reply in time")
                .unwrap();
            assert_eq!(n, 1, "connection closed mid-reply after {all:?}");
            line.push(b[0]);
            if line.ends_with(b"\r\n") {
                break;
            }
        }
        let line = String::from_utf8(line).unwrap();
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

async fn injection(mode: ServerTlsMode, injected: &[u8]) {
    injection_with(mode, injected, 65536).await;
}

async fn injection_with(mode: ServerTlsMode, injected: &[u8], input_buffer: usize) {
    let mut settings = settings(mode, ClientCertMode::None);
    settings.smtp.max_command_line = 512;
    settings.smtp.input_buffer = input_buffer;
    let server = start_server(settings).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    assert!(reply(&mut tcp).await.starts_with("220 "));
    tcp.write_all(b"EHLO attacker.example\r\n").await.unwrap();
    assert!(reply(&mut tcp).await.contains("STARTTLS"));
    // The injection: one write, one segment.
    let mut line = b"STARTTLS\r\n".to_vec();
    line.extend_from_slice(injected);
    tcp.write_all(&line).await.unwrap();
    assert_eq!(reply(&mut tcp).await, "220 2.0.0 Ready to start TLS\r\n");

    let ctx = ClientTlsContext::new(fixtures().ca.roots());
    let conn = ctx
        .connection(&ClientTlsSpec::new(ClientTlsMode::Verify, MX))
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&conn.config))
        .connect(conn.server_name.clone(), tcp)
        .await
        .expect("handshake");

    // Nothing is answered for the injected commands inside TLS...
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "server spoke first inside TLS: {:?}",
        early.map(|r| r.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()))
    );
    // ...and the first reply inside TLS is the one to our EHLO, without STARTTLS (RFC 3207 4.2).
    tls.write_all(b"EHLO attacker.example\r\n").await.unwrap();
    let ehlo = reply(&mut tls).await;
    assert!(ehlo.starts_with(&format!("250-{MX}\r\n")), "{ehlo:?}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo:?}");
    // State from before TLS is forgotten: no transaction was opened by an injected MAIL.
    tls.write_all(b"RCPT TO:<bob@example.org>\r\n")
        .await
        .unwrap();
    assert!(reply(&mut tls).await.starts_with("503 5.5.1"));
    tls.write_all(b"QUIT\r\n").await.unwrap();
    assert!(reply(&mut tls).await.starts_with("221 "));
    assert!(server.inbox.messages().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn rset_after_starttls_never_answered_inside_tls() {
    injection(ServerTlsMode::Offer, b"RSET\r\n").await;
}

#[tokio::test]
async fn transaction_after_starttls_never_processed() {
    injection(
        ServerTlsMode::Require,
        b"MAIL FROM:<mallory@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: forged\r\n\r\nx\r\n.\r\n",
    )
    .await;
}

#[tokio::test]
async fn injection_larger_than_the_session_buffer_never_processed() {
    // With the smallest input buffer (1024 octets) the session cannot take the whole segment: the adapter holds
    // the rest, and must drop it too rather than feed it to the session once TLS is up.
    injection_with(
        ServerTlsMode::Offer,
        "RSET\r\n".repeat(400).as_bytes(),
        1024,
    )
    .await;
}
