//! `sink` mode: a discard SMTP server, the next hop of the servers under test. Each connection is a
//! [`ServerSession`] driven over TCP; STARTTLS is offered when a certificate is given. Every transaction is
//! accepted at once (nothing is stored), so the sink is never the bottleneck of a relay benchmark.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use postern_smtp::{ServerConfig, ServerEvent, ServerSession, StartTlsPolicy};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Counters of a sink run.
#[derive(Debug, Default)]
pub(crate) struct SinkCounters {
    /// Connections accepted.
    pub(crate) connections: AtomicU64,
    /// TLS handshakes completed.
    pub(crate) tls: AtomicU64,
    /// Messages accepted.
    pub(crate) messages: AtomicU64,
    /// Octets of content accepted.
    pub(crate) octets: AtomicU64,
}

/// Accept connections until the future is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    hostname: String,
    acceptor: Option<TlsAcceptor>,
    counters: Arc<SinkCounters>,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = listener.accept().await?;
        let (hostname, acceptor, counters) = (hostname.clone(), acceptor.clone(), counters.clone());
        counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = session(tcp, peer, hostname, acceptor, &counters).await;
        });
    }
}

async fn flush<S: AsyncWrite + Unpin>(
    s: &mut S,
    session: &mut ServerSession,
) -> std::io::Result<()> {
    let mut wrote = false;
    while let Some(bytes) = session.poll_transmit() {
        s.write_all(&bytes).await?;
        wrote = true;
    }
    if wrote {
        s.flush().await?;
    }
    Ok(())
}

/// What the event loop asks of its caller.
enum Next {
    Closed,
    StartTls,
}

/// Answer every pending event (accept everything, count messages); true when the session asks for TLS.
fn dispatch(session: &mut ServerSession, counters: &SinkCounters) -> bool {
    while let Some(event) = session.poll_event(Instant::now()) {
        match event {
            ServerEvent::MessageChunk(chunk) => {
                counters
                    .octets
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            ServerEvent::MessageEnd { .. } => {
                counters.messages.fetch_add(1, Ordering::Relaxed);
                let _ = session.accept();
            }
            ServerEvent::StartTls { .. } => return true,
            // Only decisions are answered: the other events need none.
            ServerEvent::Hello { .. }
            | ServerEvent::Mail { .. }
            | ServerEvent::Rcpt { .. }
            | ServerEvent::Vrfy(_) => {
                let _ = session.accept();
            }
            _ => {}
        }
    }
    false
}

/// Drive the session over one stream until it closes or asks for TLS.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    session: &mut ServerSession,
    counters: &SinkCounters,
) -> std::io::Result<Next> {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut start, mut end) = (0, 0);
    let mut stalled = 0u8;
    loop {
        if dispatch(session, counters) {
            flush(s, session).await?;
            return Ok(Next::StartTls);
        }
        flush(s, session).await?;
        if session.is_closed() {
            return Ok(Next::Closed);
        }
        if start < end {
            let taken = session.handle_input(&buf[start..end]);
            // Nothing taken twice in a row, with every event answered in between: the engine is stuck.
            stalled = if taken == 0 { stalled + 1 } else { 0 };
            if stalled > 1 {
                return Ok(Next::Closed);
            }
            start += taken;
            continue;
        }
        let read = match session.poll_timeout() {
            Some(d) => {
                match tokio::time::timeout_at(tokio::time::Instant::from_std(d), s.read(&mut buf))
                    .await
                {
                    Ok(r) => r?,
                    Err(_) => {
                        session.handle_timeout(Instant::now());
                        continue;
                    }
                }
            }
            None => s.read(&mut buf).await?,
        };
        if read == 0 {
            session.handle_eof();
            continue;
        }
        (start, end) = (0, read);
    }
}

async fn session(
    mut tcp: TcpStream,
    _peer: SocketAddr,
    hostname: String,
    acceptor: Option<TlsAcceptor>,
    counters: &SinkCounters,
) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut config = ServerConfig::new(hostname);
    config.starttls = if acceptor.is_some() {
        StartTlsPolicy::Offer
    } else {
        StartTlsPolicy::Disabled
    };
    config.tls_available = acceptor.is_some();
    // A discard next hop for measurements: it greets at once, so that it adds nothing to what is measured.
    config.greet_pause = std::time::Duration::ZERO;
    let mut session = ServerSession::new(config, Instant::now());
    match drive(&mut tcp, &mut session, counters).await? {
        Next::Closed => return tcp.shutdown().await,
        Next::StartTls => {}
    }
    let Some(acceptor) = acceptor else {
        return Ok(());
    };
    let mut tls = tokio::time::timeout(std::time::Duration::from_secs(60), acceptor.accept(tcp))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    counters.tls.fetch_add(1, Ordering::Relaxed);
    if session.handle_tls_established().is_err() {
        return Ok(());
    }
    // A second StartTls cannot happen: the engine refuses STARTTLS once TLS is active.
    let _ = drive(&mut tls, &mut session, counters).await?;
    tls.shutdown().await
}
