//! `postern-relay probe HOST[:PORT]`: what a next hop offers and what each
//! client TLS mode would decide, in the spirit of Postfix's `posttls-finger`.
//!
//! The probe connects, reads the greeting, sends EHLO, tries STARTTLS and a
//! handshake whose certificate check is recorded but never refused (so the
//! certificate can be reported), then QUITs. It sends no MAIL. The outcome
//! is fed to postern-policy's [`ConnectionPolicy`] once per mode (none,
//! opportunistic, encrypt, verify, secure): the same decisions delivery
//! takes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_certs::{ClientTlsContext, ClientTlsSpec};
use postern_policy::{
    Action, CertificateCheck, ClientTlsMode, ConnectionPolicy, DestinationPolicy, DomainName,
    HandshakeOutcome, NextHop, OutboundPolicy, TlsVersion,
};
use postern_smtp::{Capabilities, Reply, ReplyParser};
use rustls::RootCertStore;
use rustls::pki_types::UnixTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The modes the probe judges, in order.
pub const MODES: [ClientTlsMode; 5] = [
    ClientTlsMode::None,
    ClientTlsMode::Opportunistic,
    ClientTlsMode::Encrypt,
    ClientTlsMode::Verify,
    ClientTlsMode::Secure,
];

/// A probe failure before anything useful was learnt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// `HOST[:PORT]` does not parse.
    #[error("invalid target {0:?} (expected HOST or HOST:PORT)")]
    Target(String),
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The connection failed.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server did not answer as SMTP.
    #[error("{0}")]
    Protocol(String),
}

/// How the handshake went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// TLS was established.
    Established {
        /// Version.
        version: TlsVersion,
        /// Cipher suite.
        cipher: String,
        /// The certificate check against the host name.
        certificate: CertificateCheck,
        /// Subject of the leaf certificate.
        subject: String,
    },
    /// The handshake failed.
    Failed(String),
}

/// What the probe learnt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The address connected to.
    pub addr: SocketAddr,
    /// The greeting and replies, as received.
    pub transcript: Vec<String>,
    /// Whether EHLO offered STARTTLS.
    pub starttls_offered: bool,
    /// The reply code to STARTTLS, when sent.
    pub starttls_reply: Option<u16>,
    /// Bytes that came after the `220` to STARTTLS (an injection attempt).
    pub injected: usize,
    /// The handshake, when tried.
    pub handshake: Option<Handshake>,
    /// Per mode, the final decision.
    pub decisions: Vec<(ClientTlsMode, String, bool)>,
}

impl ProbeReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Connected to {}", self.addr);
        for line in &self.transcript {
            let _ = writeln!(out, "< {line}");
        }
        let _ = writeln!(
            out,
            "STARTTLS: {}",
            match (self.starttls_offered, self.starttls_reply) {
                (false, _) => "not offered".to_owned(),
                (true, Some(code)) => format!("offered, reply {code}"),
                (true, None) => "offered".to_owned(),
            }
        );
        if self.injected > 0 {
            let _ = writeln!(
                out,
                "WARNING: {} bytes after the 220 to STARTTLS (discarded, never read as a reply)",
                self.injected
            );
        }
        match &self.handshake {
            Some(Handshake::Established {
                version,
                cipher,
                certificate,
                subject,
            }) => {
                let _ = writeln!(
                    out,
                    "{} TLS connection established: {version} with cipher {cipher}",
                    certificate.trust
                );
                let _ = write!(out, "Certificate: {subject}, {}", certificate.trust);
                if let Some(f) = certificate.failure {
                    let _ = write!(out, " ({f})");
                }
                out.push('\n');
            }
            Some(Handshake::Failed(e)) => {
                let _ = writeln!(out, "TLS handshake failed: {e}");
            }
            None => {}
        }
        out.push_str("\nWhat each client mode would do:\n");
        for (mode, decision, deliver) in &self.decisions {
            let verdict = if *deliver { "deliver" } else { "no delivery" };
            let _ = writeln!(out, "  {:<14} {verdict:<12} {decision}", mode.as_str());
        }
        out
    }
}

/// Splits `HOST[:PORT]` (`[v6]:port` for IPv6); port 25 by default.
pub fn parse_target(target: &str) -> Result<(String, u16), ProbeError> {
    let bad = || ProbeError::Target(target.to_owned());
    if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => 25,
            None => return Err(bad()),
        };
        return Ok((host.to_owned(), port));
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
        }
        _ if !target.is_empty() => Ok((target.to_owned(), 25)),
        _ => Err(bad()),
    }
}

/// A line-oriented SMTP exchange with limits (ReplyParser bounds every
/// line and reply).
struct Talk<S> {
    io: S,
    parser: ReplyParser,
    buf: Vec<u8>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Talk<S> {
    async fn reply(&mut self) -> Result<Reply, ProbeError> {
        let mut chunk = [0u8; 4096];
        loop {
            if !self.buf.is_empty() {
                let (used, reply) = self
                    .parser
                    .feed(&self.buf)
                    .map_err(|e| ProbeError::Protocol(format!("bad reply: {e}")))?;
                self.buf.drain(..used);
                if let Some(r) = reply {
                    return Ok(r);
                }
            }
            let n = tokio::time::timeout(self.timeout, self.io.read(&mut chunk))
                .await
                .map_err(|_| ProbeError::Protocol("timeout waiting for a reply".into()))?
                .map_err(|e| ProbeError::Protocol(e.to_string()))?;
            if n == 0 {
                return Err(ProbeError::Protocol("connection closed".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), ProbeError> {
        self.io
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| ProbeError::Protocol(e.to_string()))
    }
}

/// Probes `target` (`HOST[:PORT]`), saying `ehlo_name` in EHLO and checking
/// certificates against `roots`.
pub async fn probe(
    target: &str,
    ehlo_name: &str,
    roots: Arc<RootCertStore>,
    timeout: Duration,
) -> Result<ProbeReport, ProbeError> {
    let (host, port) = parse_target(target)?;
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ProbeError::Resolve {
                host: host.clone(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| ProbeError::Resolve {
                host: host.clone(),
                reason: "no address".into(),
            })?,
    };
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ProbeError::Connect {
            addr,
            reason: "timed out".into(),
        })?
        .map_err(|e| ProbeError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    let mut talk = Talk {
        io: tcp,
        parser: ReplyParser::new(2048, 256),
        buf: Vec::new(),
        timeout,
    };
    let mut report = ProbeReport {
        addr,
        transcript: Vec::new(),
        starttls_offered: false,
        starttls_reply: None,
        injected: 0,
        handshake: None,
        decisions: Vec::new(),
    };
    let greeting = talk.reply().await?;
    report.transcript.push(greeting.to_string());
    if greeting.code().value() != 220 {
        return Err(ProbeError::Protocol(format!(
            "greeting refused: {greeting}"
        )));
    }
    talk.send(&format!("EHLO {ehlo_name}")).await?;
    let ehlo = talk.reply().await?;
    report.transcript.push(ehlo.to_string());
    report.starttls_offered =
        Capabilities::parse_ehlo(&ehlo).is_some_and(|e| e.capabilities.starttls);
    if report.starttls_offered {
        talk.send("STARTTLS").await?;
        let reply = talk.reply().await?;
        report.transcript.push(reply.to_string());
        report.starttls_reply = Some(reply.code().value());
        if reply.code().is_positive() {
            // RFC 3207 §4: whatever followed the 220 is not a reply; count it,
            // drop it.
            report.injected = talk.buf.len();
            report.handshake = Some(handshake(talk.io, &host, roots, timeout).await);
        } else {
            let _ = talk.send("QUIT").await;
        }
    } else {
        let _ = talk.send("QUIT").await;
    }
    report.decisions = MODES
        .iter()
        .map(|&mode| {
            let d = decide(mode, &host, port, &report);
            (mode, d.0, d.1)
        })
        .collect();
    Ok(report)
}

async fn handshake(
    tcp: TcpStream,
    host: &str,
    roots: Arc<RootCertStore>,
    timeout: Duration,
) -> Handshake {
    let ctx = ClientTlsContext::new(roots);
    let mut spec = ClientTlsSpec::new(ClientTlsMode::Verify, host);
    // Record the check, never refuse over it: the probe reports it.
    spec.dangerous_report_only = true;
    let conn = match ctx.connection(&spec) {
        Ok(c) => c,
        Err(e) => return Handshake::Failed(e.to_string()),
    };
    let connect =
        TlsConnector::from(Arc::clone(&conn.config)).connect(conn.server_name.clone(), tcp);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(mut tls)) => {
            let (_, c) = tls.get_ref();
            let version = match c.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
                _ => TlsVersion::Tls12,
            };
            let cipher = c
                .negotiated_cipher_suite()
                .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
            let certificate = conn.certificate_check(c.peer_certificates(), UnixTime::now());
            let subject = c
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| postern_certs::inspect("peer", leaf, UnixTime::now()).ok())
                .map_or_else(|| "?".to_owned(), |row| row.subject);
            let _ = tokio::time::timeout(timeout, tls.write_all(b"QUIT\r\n")).await;
            let _ = tls.shutdown().await;
            Handshake::Established {
                version,
                cipher,
                certificate,
                subject,
            }
        }
        Ok(Err(e)) => Handshake::Failed(e.to_string()),
        Err(_) => Handshake::Failed("timed out".into()),
    }
}

/// The decision `mode` takes on what the probe saw, and whether it would
/// deliver.
fn decide(mode: ClientTlsMode, host: &str, port: u16, report: &ProbeReport) -> (String, bool) {
    let (hop, mx) = match DomainName::parse(host) {
        Ok(name) => (NextHop::Domain(name.clone()), Some(name)),
        Err(_) => match NextHop::parse(&format!("[{host}]:{port}")) {
            Ok(hop) => (hop, None),
            Err(e) => return (format!("cannot judge: {e}"), false),
        },
    };
    let outbound = OutboundPolicy::new(DestinationPolicy::new(mode));
    let policy: ConnectionPolicy = outbound.connection(&hop, mx.as_ref());
    let mut d = policy.on_ehlo(report.starttls_offered);
    if d.action == Action::StartTls {
        d = policy.on_starttls_reply(report.starttls_reply.unwrap_or(454));
    }
    if d.action == Action::Handshake {
        let outcome = match &report.handshake {
            Some(Handshake::Established {
                version,
                certificate,
                ..
            }) => HandshakeOutcome::Established {
                version: *version,
                certificate: *certificate,
            },
            _ => HandshakeOutcome::Failed { certificate: None },
        };
        d = policy.on_handshake(outcome);
    }
    let deliver = matches!(
        d.action,
        Action::ContinuePlaintext | Action::ContinueTls | Action::RetryPlaintextNewConnection
    );
    (d.to_string(), deliver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("mx.example.org").unwrap(),
            ("mx.example.org".into(), 25)
        );
        assert_eq!(
            parse_target("mx.example.org:587").unwrap(),
            ("mx.example.org".into(), 587)
        );
        assert_eq!(
            parse_target("127.0.0.1:2526").unwrap(),
            ("127.0.0.1".into(), 2526)
        );
        assert_eq!(parse_target("[::1]:2526").unwrap(), ("::1".into(), 2526));
        assert!(parse_target("").is_err());
        assert!(parse_target("mx:port").is_err());
    }
}
