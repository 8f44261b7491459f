//! `postern-relay probe HOST[:PORT]`: what a next hop offers and what each
//! client TLS mode would decide, in the spirit of Postfix's `posttls-finger`.
//!
//! The probe drives the same delivery attempt as delivery
//! (postern-attempt's `Attempt::probe`, through [`postern_tokio::client::Client::probe`]) under
//! opportunistic TLS until TLS is up or refused, then QUITs: it sends no MAIL.
//! The handshake's certificate check is recorded but never refused, so the
//! certificate can be reported. What the attempt saw (its session facts) is then
//! judged by postern-policy's [`ConnectionPolicy::evaluate`] once per mode (none,
//! opportunistic, encrypt, verify, secure): the same step rules delivery follows,
//! so the probe cannot disagree with it.
//!
//! With DNSSEC on (`[dns] dnssec`), a host name is looked up through the
//! DNSSEC-aware resolver: the report shows the status of its addresses, the
//! TLSA records at `_port._tcp.HOST` (RFC 7672 §2.2.2, CNAMEs followed) with
//! their status, which record matched the certificate chain the server sent
//! (or why none did), and the decisions of `dane` and `dane-only` too.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_certs::{ClientTlsContext, DaneHook};
use postern_dns::{DaneResolver, HostTlsa};
use postern_policy::dane::{DaneOutcome, TlsaRecord};
use postern_policy::{
    Action, CertificateCheck, ClientTlsMode, ConnectionPolicy, DestinationPolicy, DomainName,
    EnhancedStatus, HandshakeOutcome, NextHop, OutboundPolicy, SessionFacts, TlsVersion,
};
use postern_tokio::client::{Client, ClientSettings};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};

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
    /// Whether EHLO offered STARTTLS.
    pub starttls_offered: bool,
    /// The reply code to STARTTLS, when sent.
    pub starttls_reply: Option<u16>,
    /// Bytes that came after the `220` to STARTTLS (an injection attempt).
    pub injected: usize,
    /// The handshake, when tried.
    pub handshake: Option<Handshake>,
    /// What DNSSEC said (addresses and TLSA), one line each; empty without
    /// DNSSEC or for an IP address.
    pub dns: Vec<String>,
    /// Which TLSA record matched the chain, or why none did.
    pub dane: Option<String>,
    /// Per mode, the final decision.
    pub decisions: Vec<(ClientTlsMode, String, bool)>,
}

impl ProbeReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.dns {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "Connected to {}", self.addr);
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
            }) => {
                let _ = writeln!(
                    out,
                    "{} TLS connection established: {version} with cipher {cipher}",
                    certificate.trust
                );
                let _ = write!(out, "Certificate: {}", certificate.trust);
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
        if let Some(dane) = &self.dane {
            let _ = writeln!(out, "DANE: {dane}");
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

/// The next hop and the MX host name `host` stands for.
fn next_hop(host: &str, port: u16) -> Result<(NextHop, Option<DomainName>), String> {
    match DomainName::parse(host) {
        Ok(name) => Ok((NextHop::Domain(name.clone()), Some(name))),
        Err(_) => NextHop::parse(&format!("[{host}]:{port}"))
            .map(|hop| (hop, None))
            .map_err(|e| e.to_string()),
    }
}

/// What DNSSEC says about a probed host name.
struct DnsFacts {
    lines: Vec<String>,
    addresses: Vec<SocketAddr>,
    tlsa: HostTlsa,
}

/// The addresses and TLSA records of `host` through `dane`.
async fn dns_facts(dane: &DaneResolver, host: &DomainName, port: u16) -> DnsFacts {
    let addresses = dane.addresses(host).await;
    let list: Vec<String> = addresses
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut lines = vec![format!(
        "Addresses of {host}: {} (DNSSEC {})",
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        },
        addresses.status
    )];
    let tlsa = dane.tlsa_for(&addresses, port).await;
    lines.extend(crate::outbound::explain::tlsa_lines(&tlsa));
    DnsFacts {
        lines,
        addresses: addresses
            .addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect(),
        tlsa,
    }
}

/// DANE's check of `chain` (as sent) against `records` and the reference
/// names `names`, and in words which record matched, or why none did.
fn dane_check(
    records: &[TlsaRecord],
    names: &[String],
    chain: &[CertificateDer<'static>],
) -> (CertificateCheck, String) {
    let Some((leaf, rest)) = chain.split_first() else {
        return (
            CertificateCheck::anonymous(),
            "no certificate received".to_owned(),
        );
    };
    let hook = DaneHook::new(records.iter().cloned(), names.iter().cloned());
    match hook.authenticate(leaf, rest, UnixTime::now()) {
        Ok(m) => {
            let line = match m.depth {
                Some(0) => format!("{} matched the server's certificate", m.record),
                Some(depth) => format!("{} matched the certificate at depth {depth}", m.record),
                None => format!("{} (a trust anchor published in DNS) matched", m.record),
            };
            (CertificateCheck::verified(), line)
        }
        Err(e) => (e.check(), format!("no TLSA record matched: {e}")),
    }
}

/// Probes `target` (`HOST[:PORT]`), saying `ehlo_name` in EHLO and checking
/// certificates against `roots`; with `dnssec`, a host name's addresses
/// and TLSA records come from it (see the module documentation).
pub async fn probe(
    target: &str,
    ehlo_name: &str,
    roots: Arc<RootCertStore>,
    timeout: Duration,
    dnssec: Option<&DaneResolver>,
) -> Result<ProbeReport, ProbeError> {
    let (host, port) = parse_target(target)?;
    let dns = match (dnssec, DomainName::parse(&host)) {
        (Some(dane), Ok(name)) if host.parse::<std::net::IpAddr>().is_err() => {
            Some(dns_facts(dane, &name, port).await)
        }
        _ => None,
    };
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) if dns.as_ref().is_some_and(|d| !d.addresses.is_empty()) => dns
            .as_ref()
            .and_then(|d| d.addresses.first().copied())
            .ok_or_else(|| ProbeError::Resolve {
                host: host.clone(),
                reason: "no address".into(),
            })?,
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
    let (hop, mx) = next_hop(&host, port).map_err(|_| ProbeError::Target(target.to_owned()))?;
    let mut settings = ClientSettings::new(ehlo_name);
    settings.connect_timeout = timeout;
    settings.handshake_timeout = timeout;
    settings.smtp.timeouts.command = timeout;
    let client = Client::new(settings, Arc::new(ClientTlsContext::new(roots)));
    let policy = OutboundPolicy::new(DestinationPolicy::new(ClientTlsMode::Opportunistic))
        .connection(&hop, mx.as_ref());
    let result = client.probe(addr, policy).await;
    let facts = result.facts;
    if let Some(f) = &result.failure
        && facts == SessionFacts::default()
    {
        // Nothing learnt: the connection, the greeting or EHLO failed.
        return Err(match f.reply {
            None if f.status == EnhancedStatus::NO_ANSWER => ProbeError::Connect {
                addr,
                reason: f.explanation.clone(),
            },
            _ => ProbeError::Protocol(f.to_string()),
        });
    }
    let handshake = match (facts.handshake, &result.tls) {
        (Some(_), Some(tls)) => Some(Handshake::Established {
            version: tls.version,
            cipher: tls.cipher.clone(),
            certificate: tls.certificate,
        }),
        (Some(_), None) => {
            Some(Handshake::Failed(result.failure.as_ref().map_or_else(
                || "failed".to_owned(),
                |f| f.explanation.clone(),
            )))
        }
        (None, _) => None,
    };
    let dane_outcome = dns
        .as_ref()
        .map(|d| DaneOutcome::from_lookup(d.tlsa.lookup.clone()));
    // The DANE check of the chain the server sent (the probe's own check is
    // against the host name and the PKIX roots).
    let mut dane_facts = None;
    let mut dane_line = None;
    if let (Some(DaneOutcome::Authenticate(records)), Some(tls), Some(d)) =
        (&dane_outcome, &result.tls, &dns)
    {
        let mut names = vec![d.tlsa.base_domain.to_string()];
        if !names.contains(&host.to_ascii_lowercase()) {
            names.push(host.to_ascii_lowercase());
        }
        let (check, line) = dane_check(records, &names, &tls.peer_certificates);
        dane_line = Some(line);
        dane_facts = Some(facts.with_handshake(HandshakeOutcome::Established {
            version: tls.version,
            certificate: check,
        }));
    }
    let mut report = ProbeReport {
        dns: dns.as_ref().map(|d| d.lines.clone()).unwrap_or_default(),
        dane: dane_line,
        addr,
        starttls_offered: facts.starttls_offered,
        starttls_reply: facts.starttls_reply,
        injected: result.tls.as_ref().map_or(0, |t| {
            usize::try_from(t.discarded_before_handshake).unwrap_or(usize::MAX)
        }),
        handshake,
        decisions: Vec::new(),
    };
    report.decisions = MODES
        .iter()
        .map(|&mode| {
            let policy =
                OutboundPolicy::new(DestinationPolicy::new(mode)).connection(&hop, mx.as_ref());
            let (decision, deliver) = decide(&policy, &facts);
            (mode, decision, deliver)
        })
        .collect();
    // `dane` and `dane-only`, judged on the DANE check of the chain.
    if let Some(outcome) = dane_outcome {
        let judged = dane_facts.as_ref().unwrap_or(&facts);
        for mode in [ClientTlsMode::Dane, ClientTlsMode::DaneOnly] {
            let policy = OutboundPolicy::new(DestinationPolicy::new(mode))
                .connection(&hop, mx.as_ref())
                .with_secure_mx(true)
                .with_dane(outcome.clone());
            let (decision, deliver) = decide(&policy, judged);
            report.decisions.push((mode, decision, deliver));
        }
    }
    Ok(report)
}

/// The decision `policy` takes on what the probe saw, and whether it would
/// deliver.
fn decide(policy: &ConnectionPolicy, facts: &SessionFacts) -> (String, bool) {
    let d = policy.evaluate(facts);
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
