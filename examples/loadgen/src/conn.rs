//! One client connection: the sans-IO [`ClientSession`] driven over TCP, upgraded with tokio-rustls on
//! STARTTLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use postern_smtp::{ClientCloseReason, ClientConfig, ClientEvent, ClientSession, Envelope};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Read buffer size; replies are small.
const READ_BUFFER: usize = 8192;

/// Why a connection step failed. The `key` is what the report counts errors by.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
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
            Self::Io(e) => format!("i/o: {}", e.kind()),
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

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the handshake runs.
    Upgrading,
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
pub(crate) struct Conn {
    stream: Stream,
    session: ClientSession,
    buf: Box<[u8; READ_BUFFER]>,
    start: usize,
    end: usize,
    deadline: tokio::time::Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

async fn write_all<S: AsyncWrite + Unpin>(
    s: &mut S,
    chunks: &mut ClientSession,
) -> std::io::Result<bool> {
    let mut wrote = false;
    while let Some(bytes) = chunks.poll_transmit() {
        s.write_all(&bytes).await?;
        wrote = true;
    }
    if wrote {
        s.flush().await?;
    }
    Ok(wrote)
}

async fn read_some<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> std::io::Result<usize> {
    s.read(buf).await
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
        // Small writes (commands) must not wait for Nagle.
        tcp.set_nodelay(true)?;
        let mut config = ClientConfig::new(ehlo);
        config.pipelining = true;
        let mut conn = Self {
            stream: Stream::Plain(tcp),
            session: ClientSession::new(config, Instant::now()),
            buf: Box::new([0; READ_BUFFER]),
            start: 0,
            end: 0,
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
        conn.session
            .start_tls()
            .map_err(|e| ConnError::Unexpected(e.to_string()))?;
        match conn.next_event().await? {
            ClientEvent::StartTls { .. } => {}
            ClientEvent::StartTlsRefused(r) => {
                return Err(ConnError::StartTlsRefused(r.code().value()));
            }
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
        // RFC 3207 4: bytes that followed the 220 are never replies; hand any we hold to the engine, which
        // discards and counts them.
        if conn.start < conn.end {
            let _ = conn.session.handle_input(&conn.buf[conn.start..conn.end]);
            conn.start = conn.end;
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Upgrading) else {
            return Err(ConnError::Unexpected("starttls on a tls stream".into()));
        };
        let tls_stream = tokio::time::timeout_at(
            deadline,
            TlsConnector::from(tls.config.clone()).connect(tls.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ConnError::Deadline)?
        .map_err(ConnError::Tls)?;
        let kind = match tls_stream.get_ref().1.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => Handshake::Resumed,
            _ => Handshake::Full,
        };
        conn.stream = Stream::Tls(Box::new(tls_stream));
        conn.session
            .handle_tls_established()
            .map_err(|_| ConnError::Unexpected("tls established".into()))?;
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
        self.session
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
        let read = async {
            match &mut self.stream {
                Stream::Plain(s) => read_some(s, &mut self.buf[..]).await,
                Stream::Tls(s) => read_some(s, &mut self.buf[..]).await,
                Stream::Upgrading => Ok(0),
            }
        };
        // Any read result (a 421, EOF, an error) means the server gave up on the idle session.
        tokio::time::timeout_at(until, read).await.is_err()
    }

    /// QUIT and close (best effort, bounded by the deadline).
    pub(crate) async fn quit(mut self) {
        if self.session.quit().is_ok() {
            let _ = self.next_event().await;
        }
        let _ = tokio::time::timeout_at(self.deadline, async {
            match &mut self.stream {
                Stream::Plain(s) => s.shutdown().await,
                Stream::Tls(s) => s.shutdown().await,
                Stream::Upgrading => Ok(()),
            }
        })
        .await;
    }

    /// Drive the engine until it reports an event: send its output, feed it input, honour its deadline and
    /// the run's. A `Closed` event other than after QUIT is an error.
    async fn next_event(&mut self) -> Result<ClientEvent, ConnError> {
        loop {
            if let Some(event) = self.session.poll_event(Instant::now()) {
                return match event {
                    ClientEvent::Closed(ClientCloseReason::Quit) => {
                        Ok(ClientEvent::Closed(ClientCloseReason::Quit))
                    }
                    ClientEvent::Closed(reason) => {
                        // Send the QUIT the engine may have queued, then give up.
                        let _ = self.flush_best_effort().await;
                        Err(ConnError::Closed(reason))
                    }
                    other => Ok(other),
                };
            }
            // Events drained: now send what they queued, before waiting for input.
            let wrote = tokio::time::timeout_at(self.deadline, async {
                match &mut self.stream {
                    Stream::Plain(s) => write_all(s, &mut self.session).await,
                    Stream::Tls(s) => write_all(s, &mut self.session).await,
                    Stream::Upgrading => Ok(false),
                }
            });
            wrote.await.map_err(|_| ConnError::Deadline)??;
            if self.session.is_closed() {
                return Err(ConnError::Closed(ClientCloseReason::ConnectionLost));
            }
            if self.start < self.end {
                let taken = self.session.handle_input(&self.buf[self.start..self.end]);
                self.start += taken;
                if taken == 0 {
                    // The engine's buffer is full of an incomplete reply longer than it accepts.
                    return Err(ConnError::Unexpected("reply too long".into()));
                }
                continue;
            }
            let engine_deadline = self
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let wait_until = engine_deadline.map_or(self.deadline, |d| d.min(self.deadline));
            let read = tokio::time::timeout_at(wait_until, async {
                match &mut self.stream {
                    Stream::Plain(s) => read_some(s, &mut self.buf[..]).await,
                    Stream::Tls(s) => read_some(s, &mut self.buf[..]).await,
                    Stream::Upgrading => Ok(0),
                }
            })
            .await;
            match read {
                Err(_)
                    if wait_until == self.deadline
                        && engine_deadline.is_none_or(|d| d > self.deadline) =>
                {
                    return Err(ConnError::Deadline);
                }
                Err(_) => self.session.handle_timeout(Instant::now()),
                Ok(Ok(0)) => self.session.handle_eof(),
                Ok(Ok(n)) => {
                    self.start = 0;
                    self.end = n;
                }
                Ok(Err(e)) => return Err(ConnError::Io(e)),
            }
        }
    }

    async fn flush_best_effort(&mut self) -> std::io::Result<bool> {
        let deadline = self.deadline;
        let fut = async {
            match &mut self.stream {
                Stream::Plain(s) => write_all(s, &mut self.session).await,
                Stream::Tls(s) => write_all(s, &mut self.session).await,
                Stream::Upgrading => Ok(false),
            }
        };
        tokio::time::timeout_at(deadline, fut)
            .await
            .unwrap_or(Ok(false))
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
