//! A TCP connection that is plaintext until STARTTLS, then TLS.
//!
//! There is deliberately no buffering layer between the socket and the session: the only plaintext kept in
//! user space is the adapter's own unconsumed input, which is handed to the session (which discards it, RFC 3207
//! section 4) before the socket is given to tokio-rustls. Nothing read in plaintext can reach the TLS layer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The connection: plaintext TCP, then TLS over the same socket. `Upgrading` only exists while the socket is
/// lent to the handshake; a failed handshake leaves it there (the connection is then dropped).
#[derive(Debug)]
pub(crate) enum Stream<T> {
    Plain(TcpStream),
    Tls(Box<T>),
    Upgrading,
}

impl<T> Stream<T> {
    /// Take the plaintext socket for the handshake.
    pub(crate) fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Self::Upgrading) {
            Self::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }
}

fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lent to the tls handshake",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// The negotiated TLS parameters of a rustls connection, as `(version, cipher suite name)`.
pub(crate) fn negotiated(conn: &rustls::CommonState) -> (postern_policy::TlsVersion, String) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => postern_policy::TlsVersion::Tls13,
        // rustls speaks only TLS 1.2 and 1.3 (protocol_versions in postern-certs).
        _ => postern_policy::TlsVersion::Tls12,
    };
    let cipher = conn.negotiated_cipher_suite().map_or_else(
        || "unknown".to_owned(),
        |s| {
            s.suite()
                .as_str()
                .map_or_else(|| format!("{:?}", s.suite()), str::to_owned)
        },
    );
    (version, cipher)
}

/// What Postfix's `TLS connection established` line shows of a session besides its version: the cipher suite
/// under its OpenSSL name (the IANA name for TLS 1.3), its key bits and the key-exchange group.
pub(crate) fn postfix_cipher(conn: &rustls::CommonState) -> String {
    let name = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    let mut out = openssl_cipher_name(name).to_owned();
    if let Some(bits) = cipher_bits(name) {
        out.push_str(&format!(" ({bits}/{bits} bits)"));
    }
    if let Some(group) = conn.negotiated_key_exchange_group() {
        out.push_str(&format!(" key-exchange {}", group_name(group.name())));
    }
    out
}

/// The name OpenSSL (and so Postfix) gives a cipher suite rustls names `name`; a name not in the table (a
/// suite rustls adds later) is returned unchanged.
pub fn openssl_cipher_name(name: &str) -> &str {
    match name {
        "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384",
        "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other,
    }
}

/// The key bits of a cipher suite (Postfix's `(256/256 bits)`).
fn cipher_bits(name: &str) -> Option<u16> {
    if name.contains("AES_256") || name.contains("CHACHA20") {
        Some(256)
    } else if name.contains("AES_128") {
        Some(128)
    } else {
        None
    }
}

/// The name OpenSSL gives a key-exchange group.
fn group_name(group: rustls::NamedGroup) -> String {
    match group {
        rustls::NamedGroup::X25519 => "X25519".to_owned(),
        rustls::NamedGroup::secp256r1 => "prime256v1".to_owned(),
        rustls::NamedGroup::secp384r1 => "secp384r1".to_owned(),
        rustls::NamedGroup::secp521r1 => "secp521r1".to_owned(),
        rustls::NamedGroup::X448 => "X448".to_owned(),
        rustls::NamedGroup::X25519MLKEM768 => "X25519MLKEM768".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_follow_openssl() {
        assert_eq!(
            openssl_cipher_name("TLS13_AES_256_GCM_SHA384"),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            openssl_cipher_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
        assert_eq!(openssl_cipher_name("SOMETHING_NEW"), "SOMETHING_NEW");
        assert_eq!(cipher_bits("TLS13_CHACHA20_POLY1305_SHA256"), Some(256));
        assert_eq!(cipher_bits("TLS13_AES_128_GCM_SHA256"), Some(128));
        assert_eq!(group_name(rustls::NamedGroup::secp256r1), "prime256v1");
    }
}
