//! `sink` mode: a discard SMTP server, the next hop of the servers under test. Each connection is a
//! postern-tokio [`ServerConnection`] stepped by its `next()`; STARTTLS is offered when a certificate is
//! given. Every transaction is accepted at once (nothing is stored), so the sink is never the bottleneck of a
//! relay benchmark.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postern_certs::{CertKey, CertResolver, ServedCertificates, ServerTlsContext, ServerTlsSpec};
use postern_policy::{ServerPolicy, ServerTlsMode};
use postern_smtp::ServerEvent;
use postern_tokio::server::{Endpoint, Event, ServerConnection, ServerSettings, Verdict};
use tokio::net::TcpListener;

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
    endpoint: Endpoint,
    counters: Arc<SinkCounters>,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = listener.accept().await?;
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let (conn, counters) = (endpoint.connection(tcp, peer), counters.clone());
        tokio::spawn(session(conn, counters));
    }
}

/// Accept everything the session asks about and count it, until it closes. (The loop ends: after `Closed`,
/// `next` returns an error.)
async fn session(mut conn: ServerConnection, counters: Arc<SinkCounters>) {
    while let Ok(event) = conn.next().await {
        let decide = match event {
            Event::Session(ServerEvent::MessageChunk(chunk)) => {
                counters
                    .octets
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                false
            }
            Event::Session(ServerEvent::MessageEnd { .. }) => {
                counters.messages.fetch_add(1, Ordering::Relaxed);
                true
            }
            Event::Session(
                ServerEvent::Hello { .. }
                | ServerEvent::Mail { .. }
                | ServerEvent::Rcpt { .. }
                | ServerEvent::Vrfy(_),
            ) => true,
            Event::TlsEstablished => {
                counters.tls.fetch_add(1, Ordering::Relaxed);
                false
            }
            // The other events need no answer.
            _ => false,
        };
        if decide && conn.answer(Verdict::Accept).is_err() {
            break;
        }
    }
}

/// The sink's endpoint: STARTTLS offered with the certificate and key of these PEM files when given (TLS 1.2
/// and 1.3, session tickets and a session cache, as the relay serves), and a greeting at once, so that the
/// sink adds nothing to what is measured.
pub(crate) fn endpoint(hostname: &str, cert: Option<(&Path, &Path)>) -> Result<Endpoint, String> {
    let tls = match cert {
        Some((cert, key)) => {
            let cert = CertKey::from_pem_files(cert, key).map_err(|e| e.to_string())?;
            let resolver = CertResolver::new(ServedCertificates::from_certs([&cert]));
            let mut spec = ServerTlsSpec::default();
            spec.session_cache_size = 4096;
            Some(ServerTlsContext::new(&spec, Arc::new(resolver)).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let mut policy = ServerPolicy::default();
    if tls.is_none() {
        policy.tls = ServerTlsMode::None;
    }
    let mut settings = ServerSettings::new(hostname, policy, tls);
    settings.smtp.greet_pause = Duration::ZERO;
    Endpoint::new(settings).map_err(|e| e.to_string())
}
