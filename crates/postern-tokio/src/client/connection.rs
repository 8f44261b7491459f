//! The client connection driver: one outbound SMTP session, stepped by [`ClientConnection::next`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_smtp::{ClientCloseReason, ClientEvent, ClientSession, Envelope, SendError};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{ClientSettings, Conn, Input};
use crate::stream::Stream;

/// Misuse of a [`ClientConnection`], or a failed handshake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientConnectionError {
    /// `next` was called after [`ClientEvent::StartTls`] without [`ClientConnection::handshake`].
    #[error("starttls accepted: run the handshake first")]
    HandshakePending,
    /// `handshake` was called with no [`ClientEvent::StartTls`] to follow.
    #[error("no handshake to run")]
    NoHandshake,
    /// `next` was called after it reported [`ClientEvent::Closed`].
    #[error("connection closed")]
    Closed,
    /// The TLS handshake failed or timed out; the connection is closed.
    #[error("tls handshake: {0}")]
    Handshake(io::Error),
}

/// Where the driver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// The server answered `220` to STARTTLS: the caller runs the handshake.
    StartTls,
    Closed,
}

/// One outbound SMTP connection driven step by step (imap-next style) around a [`ClientSession`]:
/// [`next`](Self::next) writes the session's output, reads replies and keeps its deadlines, and returns its
/// next [`ClientEvent`]; the caller answers each `Ready` with [`start_tls`](Self::start_tls),
/// [`send_mail`](Self::send_mail) or [`quit`](Self::quit), and a `StartTls` with
/// [`handshake`](Self::handshake) and its own rustls configuration.
///
/// ```no_run
/// use std::sync::Arc;
/// use postern_smtp::{ClientEvent, Envelope, ForwardPath, ReversePath};
/// use postern_tokio::client::{ClientConnection, ClientSettings};
/// use rustls::pki_types::ServerName;
///
/// # async fn send(tls: Arc<rustls::ClientConfig>) -> Result<(), Box<dyn std::error::Error>> {
/// let envelope = Envelope::new(ReversePath::parse("<a@example.net>")?, [ForwardPath::parse("<b@example.org>")?]);
/// let settings = ClientSettings::new("client.example.net");
/// let mut conn = ClientConnection::connect("127.0.0.1:2525".parse()?, &settings).await?;
/// let mut sent = false;
/// // Bounded: one STARTTLS, one message, QUIT.
/// for _ in 0..10 {
///     match conn.next().await? {
///         ClientEvent::Ready { tls_active: false, capabilities, .. } if capabilities.starttls => conn.start_tls()?,
///         ClientEvent::StartTls { .. } => conn.handshake(Arc::clone(&tls), ServerName::try_from("mx.example.org")?).await?,
///         ClientEvent::Ready { .. } if !sent => {
///             conn.send_mail(envelope.clone(), b"Subject: hi\r\n\r\nHello\r\n".to_vec())?;
///             sent = true;
///         }
///         ClientEvent::TransactionDone(report) => {
///             println!("{:?}", report.data_reply);
///             conn.quit()?;
///         }
///         ClientEvent::Closed(_) => break,
///         _ => conn.quit()?,
///     }
/// }
/// # Ok(())
/// # }
/// ```
///
/// A policy-driven delivery (never a MAIL in plaintext when TLS is required) is [`Client`](super::Client)'s
/// job; this driver makes no decision. Cancelling `next` (e.g. with `tokio::time::timeout`) is safe while it
/// waits for a reply; cancelled while it writes, a command may be cut short: drop the connection then.
pub struct ClientConnection {
    conn: Conn,
    session: ClientSession,
    buf: Vec<u8>,
    /// Accumulates the session's output for one write.
    out: Vec<u8>,
    handshake_timeout: Duration,
    state: State,
}

impl fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConnection")
            .field("session", &self.session)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ClientConnection {
    /// Connect to `addr` (within `settings.connect_timeout`) and start a session with `settings.smtp`.
    pub async fn connect(addr: SocketAddr, settings: &ClientSettings) -> io::Result<Self> {
        let conn = Conn::open(addr, settings).await?;
        Ok(Self::with_conn(conn, settings))
    }

    /// A session over a connected socket.
    pub fn new(tcp: TcpStream, settings: &ClientSettings) -> Self {
        let _ = tcp.set_nodelay(true);
        Self::with_conn(Conn::new(tcp, settings), settings)
    }

    fn with_conn(conn: Conn, settings: &ClientSettings) -> Self {
        Self {
            conn,
            session: ClientSession::new(settings.smtp.clone(), Instant::now()),
            buf: vec![0; super::READ_CHUNK],
            out: Vec::new(),
            handshake_timeout: settings.handshake_timeout,
            state: State::Running,
        }
    }

    /// The engine's session (read only).
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The rustls connection once the handshake completed (version, cipher, resumption, peer certificates).
    pub fn tls(&self) -> Option<&rustls::ClientConnection> {
        match &self.conn.stream {
            Stream::Tls(tls) => Some(tls.get_ref().1),
            _ => None,
        }
    }

    /// At `Ready`: send STARTTLS ([`ClientSession::start_tls`]).
    pub fn start_tls(&mut self) -> Result<(), SendError> {
        self.session.start_tls()
    }

    /// At `Ready`: send one message ([`ClientSession::send_mail`]); `TransactionDone` reports how it went.
    pub fn send_mail(&mut self, envelope: Envelope, message: Vec<u8>) -> Result<(), SendError> {
        self.session.send_mail(envelope, message)
    }

    /// At `Ready`: send QUIT ([`ClientSession::quit`]); `Closed(Quit)` follows.
    pub fn quit(&mut self) -> Result<(), SendError> {
        self.session.quit()
    }

    /// Drive the session until its next event. After [`ClientEvent::Closed`] (the socket is then shut down) it
    /// returns [`ClientConnectionError::Closed`]; after [`ClientEvent::StartTls`], call
    /// [`handshake`](Self::handshake) first.
    pub async fn next(&mut self) -> Result<ClientEvent, ClientConnectionError> {
        loop {
            match self.state {
                State::Closed => return Err(ClientConnectionError::Closed),
                State::StartTls => return Err(ClientConnectionError::HandshakePending),
                State::Running => {}
            }
            if let Some(event) = self.session.poll_event(Instant::now()) {
                match &event {
                    ClientEvent::StartTls { discarded } => {
                        if *discarded > 0 {
                            tracing::warn!(
                                discarded,
                                "bytes after the 220 to STARTTLS discarded, never read as a reply"
                            );
                        }
                        self.state = State::StartTls;
                    }
                    ClientEvent::Closed(_) => self.close().await,
                    _ => {}
                }
                return Ok(event);
            }
            self.transmit().await;
            if self.session.is_closed() {
                // The session ended without a `Closed` event left to report (it was reported already).
                self.close().await;
                return Ok(ClientEvent::Closed(ClientCloseReason::ConnectionLost));
            }
            if !self.conn.pending.is_empty() {
                let taken = self.session.handle_input(&self.conn.pending);
                self.conn.pending.drain(..taken);
                if taken == 0 {
                    // After its events are drained the session has room for at least a reply line; should it
                    // not, give up rather than buffer without bound.
                    tracing::error!(held = self.conn.pending.len(), "session takes no input");
                    self.session.handle_eof();
                }
                continue;
            }
            match self
                .conn
                .wait(&mut self.buf, self.session.poll_timeout())
                .await
            {
                Input::Data(n) => {
                    let taken = self.session.handle_input(&self.buf[..n]);
                    self.conn.pending.extend_from_slice(&self.buf[taken..n]);
                }
                Input::Eof => self.session.handle_eof(),
                Input::Timeout => self.session.handle_timeout(Instant::now()),
            }
        }
    }

    /// After [`ClientEvent::StartTls`]: drop the plaintext still held (RFC 3207 section 4), run the TLS
    /// handshake with `config` for `server_name` (within the settings' `handshake_timeout`), and tell the
    /// session, which then sends EHLO again. On failure the connection is closed.
    pub async fn handshake(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<(), ClientConnectionError> {
        if self.state != State::StartTls {
            return Err(ClientConnectionError::NoHandshake);
        }
        self.state = State::Running;
        // The session discards (or, with `AfterStartTls::Close`, aborts on) what is still held.
        let held = std::mem::take(&mut self.conn.pending);
        let _ = self.session.handle_input(&held);
        self.transmit().await;
        if self.session.is_closed() {
            // `AfterStartTls::Close`: `next` reports the `Closed` event.
            return Ok(());
        }
        let handshake = self
            .conn
            .tls_connect(config, server_name, self.handshake_timeout)
            .await;
        let failed = match handshake {
            Ok(_) => match self.session.handle_tls_established() {
                Ok(()) => return Ok(()),
                Err(_) => io::Error::other("session not waiting for tls"),
            },
            Err(e) => e,
        };
        self.session.handle_eof();
        self.close().await;
        Err(ClientConnectionError::Handshake(failed))
    }

    /// Write everything the session queued, in one write; a failed write is a lost connection.
    async fn transmit(&mut self) {
        self.out.clear();
        while let Some(bytes) = self.session.poll_transmit() {
            self.out.extend_from_slice(&bytes);
        }
        if !self.out.is_empty() && !self.conn.write(&self.out).await {
            self.session.handle_eof();
        }
    }

    /// Send what is left (the QUIT the session may have queued) and shut the socket down.
    async fn close(&mut self) {
        self.state = State::Closed;
        self.transmit().await;
        self.conn.shutdown().await;
    }
}
