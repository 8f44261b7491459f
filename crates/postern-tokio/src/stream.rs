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
