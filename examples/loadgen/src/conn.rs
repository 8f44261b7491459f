//! One client connection: postern-tokio's [`ClientConnection`] driver (the sans-IO `ClientSession` over TCP,
//! upgraded with tokio-rustls on STARTTLS), every step bounded by the run's deadline.

use std::net::SocketAddr;
use std::sync::Arc;

use postern_smtp::{ClientCloseReason, ClientEvent, Envelope};
use postern_tokio::client::{ClientConnection, ClientConnectionError, ClientSettings};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Why a connection step failed. The `key` is what the report counts errors by.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed.
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// The session ended (reply code or reason in the key).
    #[error("closed: {0:?}")]
    Closed(ClientCloseReason),
    /// The server did not offer STARTTLS.
    #[error("starttls not offered")]
    NoStartTls,
    /// STARTTLS was refused with this code.
    #[error("starttls refused: {0}")]
    StartTlsRefused(u16),
    /// The run's duration cap was reached.
    #[error("duration cap reached")]
    Deadline,
    /// The engine reported something out of sequence (a bug here or in the engine).
    #[error("unexpected event: {0}")]
    Unexpected(String),
}

impl ConnError {
    /// The key errors are counted under: a reply code where there is one, else a short cause.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Connect(e) => format!("connect: {}", e.kind()),
            Self::Tls(e) => format!("tls: {e}"),
            Self::Closed(reason) => match reason {
                ClientCloseReason::GreetingRefused(r)
                | ClientCloseReason::HelloRefused(r)
                | ClientCloseReason::ServiceClosing(r)
                | ClientCloseReason::UnexpectedReply(r) => r.code().value().to_string(),
                ClientCloseReason::Timeout => "timeout".into(),
                ClientCloseReason::ConnectionLost => "connection lost".into(),
                ClientCloseReason::ProtocolError(_) => "protocol error".into(),
                ClientCloseReason::StartTlsInjection { .. } => "starttls injection".into(),
                _ => "closed".into(),
            },
            Self::NoStartTls => "starttls not offered".into(),
            Self::StartTlsRefused(code) => code.to_string(),
            Self::Deadline => "duration cap".into(),
            Self::Unexpected(_) => "unexpected event".into(),
        }
    }
}

/// TLS settings of a connection.
#[derive(Debug, Clone)]
pub(crate) struct TlsSetup {
    /// The client configuration (shared by all connections, and so is its session cache).
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// SNI name.
    pub(crate) server_name: ServerName<'static>,
}

/// How the TLS handshake went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// No TLS.
    None,
    /// Full handshake.
    Full,
    /// Resumed session.
    Resumed,
}

/// A client SMTP connection ready for mail (after EHLO, and STARTTLS with the second EHLO when asked).
#[derive(Debug)]
pub(crate) struct Conn {
    conn: ClientConnection,
    deadline: tokio::time::Instant,
}

impl Conn {
    /// Connect, read the greeting, EHLO, and with `tls` STARTTLS, handshake and EHLO again. Returns the
    /// connection ready for mail and how the handshake went. Everything stops at `deadline`.
    pub(crate) async fn open(
        addr: SocketAddr,
        ehlo: &str,
        tls: Option<&TlsSetup>,
        deadline: tokio::time::Instant,
    ) -> Result<(Self, Handshake), ConnError> {
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnError::Deadline)?
            .map_err(ConnError::Connect)?;
        let mut settings = ClientSettings::new(ehlo);
        settings.smtp.pipelining = true;
        // The run's deadline bounds the handshake.
        settings.handshake_timeout =
            deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut conn = Self {
            conn: ClientConnection::new(tcp, &settings),
            deadline,
        };
        let ClientEvent::Ready { capabilities, .. } = conn.next_event().await? else {
            return Err(ConnError::Unexpected("no ready after ehlo".into()));
        };
        let Some(tls) = tls else {
            return Ok((conn, Handshake::None));
        };
        if !capabilities.starttls {
            return Err(ConnError::NoStartTls);
        }
        conn.conn
            .start_tls()
            .map_err(|e| ConnError::Unexpected(e.to_string()))?;
        match conn.next_event().await? {
            ClientEvent::StartTls { .. } => {}
            ClientEvent::StartTlsRefused(r) => {
                return Err(ConnError::StartTlsRefused(r.code().value()));
            }
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
        let handshake = conn
            .conn
            .handshake(tls.config.clone(), tls.server_name.clone());
        match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => return Err(ConnError::Deadline),
            Ok(Err(ClientConnectionError::Handshake(e))) => return Err(ConnError::Tls(e)),
            Ok(Err(e)) => return Err(ConnError::Unexpected(e.to_string())),
            Ok(Ok(())) => {}
        }
        let kind = match conn.conn.tls().and_then(|c| c.handshake_kind()) {
            Some(rustls::HandshakeKind::Resumed) => Handshake::Resumed,
            _ => Handshake::Full,
        };
        match conn.next_event().await? {
            ClientEvent::Ready {
                tls_active: true, ..
            } => Ok((conn, kind)),
            other => Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Send one message; `Ok(None)` when the final reply is positive, `Ok(Some(code))` when the server
    /// refused it (the code of the refusing reply).
    pub(crate) async fn send(
        &mut self,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> Result<Option<u16>, ConnError> {
        self.conn
            .send_mail(envelope, message)
            .map_err(|e| ConnError::Unexpected(e.to_string()))?;
        match self.next_event().await? {
            ClientEvent::TransactionDone(report) => {
                if report
                    .data_reply
                    .as_ref()
                    .is_some_and(|r| r.code().is_positive())
                {
                    return Ok(None);
                }
                // The first negative reply decided: MAIL, then RCPT, then DATA / the final reply.
                let refusal = report
                    .mail_reply
                    .iter()
                    .chain(report.recipients.iter().filter_map(|r| r.reply.as_ref()))
                    .chain(report.data_reply.iter())
                    .find(|r| !r.code().is_positive());
                Ok(Some(refusal.map_or(0, |r| r.code().value())))
            }
            other => Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Wait, without sending anything, until the server closes the connection or `until` passes (idle
    /// mode). Returns true when the connection is still open at `until`.
    pub(crate) async fn hold(&mut self, until: tokio::time::Instant) -> bool {
        let until = until.min(self.deadline);
        // Any event (a 421, the end of the connection) means the server gave up on the idle session.
        tokio::time::timeout_at(until, self.conn.next())
            .await
            .is_err()
    }

    /// QUIT and close (best effort, bounded by the deadline).
    pub(crate) async fn quit(mut self) {
        if self.conn.quit().is_ok() {
            let _ = self.next_event().await;
        }
    }

    /// The session's next event, by the run's deadline. A `Closed` event other than after QUIT is an error.
    async fn next_event(&mut self) -> Result<ClientEvent, ConnError> {
        match tokio::time::timeout_at(self.deadline, self.conn.next()).await {
            Err(_) => Err(ConnError::Deadline),
            Ok(Err(e)) => Err(ConnError::Unexpected(e.to_string())),
            Ok(Ok(ClientEvent::Closed(ClientCloseReason::Quit))) => {
                Ok(ClientEvent::Closed(ClientCloseReason::Quit))
            }
            Ok(Ok(ClientEvent::Closed(reason))) => Err(ConnError::Closed(reason)),
            Ok(Ok(event)) => Ok(event),
        }
    }
}

/// Shared connection parameters of a run.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Server address.
    pub(crate) addr: SocketAddr,
    /// EHLO name.
    pub(crate) ehlo: Arc<str>,
    /// TLS, if STARTTLS is used.
    pub(crate) tls: Option<TlsSetup>,
    /// The run's hard deadline.
    pub(crate) deadline: tokio::time::Instant,
}
