//! `postern-relay probe DESTINATION`: what a next hop offers and what each
//! client TLS mode would decide, in the spirit of Postfix's `posttls-finger`.
//! (The command line routes a domain first; see `cli::probe`.)
//!
//! The report shows the certificate chain the server sent, each certificate
//! with its subject, subjectAltNames, issuer, validity, key and two SHA-256
//! digests: of the certificate (what a `fingerprint` pin holds, written as
//! `pins` takes it) and of its public key (SPKI). With the configured policy
//! given, it also shows what that policy decides for the destination and
//! which rule matched: the chain is checked as the policy's handshake would
//! check it (match names, pins, TLSA records, trust anchors), then judged by
//! the same evaluation.
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
use postern_policy::mta_sts::StsPolicy;
use postern_policy::{
    Action, CertificateCheck, ClientTlsMode, ConnectionPolicy, DestinationPolicy, DomainName,
    EnhancedStatus, Fingerprint, HandshakeOutcome, NextHop, OutboundPolicy, SessionFacts,
    TlsVersion,
};
use postern_tokio::client::{Client, ClientSettings, TlsParams};
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
    /// The name sent as SNI and verified (`verify`), if any.
    pub server_name: Option<String>,
    /// The certificate chain the server sent, leaf first, one block of
    /// lines per certificate.
    pub chain: Vec<Vec<String>>,
    /// Per mode, the final decision.
    pub decisions: Vec<(ClientTlsMode, String, bool)>,
    /// The configured policy's rule, mode, decision and whether it would
    /// deliver.
    pub configured: Option<Configured>,
}

/// What the configured policy for the destination decides.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Configured {
    /// The rule that matched (`default`, `example.com`, `.example.com` …).
    pub rule: String,
    /// Its mode.
    pub mode: ClientTlsMode,
    /// The decision, in words.
    pub decision: String,
    /// Whether it would deliver.
    pub deliver: bool,
}

impl ProbeReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.dns {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "Connected to {}", self.addr);
        if let Some(name) = &self.server_name {
            let _ = writeln!(out, "Server name (SNI, verified name): {name}");
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
        for (depth, lines) in self.chain.iter().enumerate() {
            let _ = writeln!(out, "Certificate {depth}:");
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
        if let Some(dane) = &self.dane {
            let _ = writeln!(out, "DANE: {dane}");
        }
        if let Some(c) = &self.configured {
            let verdict = if c.deliver { "deliver" } else { "no delivery" };
            let _ = writeln!(
                out,
                "\nConfigured policy (rule {}, mode {}): {verdict}: {}",
                c.rule,
                c.mode.as_str(),
                c.decision
            );
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

/// How to probe, besides the target.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProbeOptions<'a> {
    /// The name said in EHLO.
    pub ehlo: &'a str,
    /// The name sent as SNI and verified; `None`: the host name probed.
    pub server_name: Option<DomainName>,
    /// The destination whose configured policy is judged (a domain whose MX
    /// host is probed); `None`: the target itself.
    pub destination: Option<NextHop>,
    /// The configured outbound policy, judged too when given.
    pub configured: Option<&'a OutboundPolicy>,
    /// Whether the host was found securely (a static route, a DNSSEC-secure
    /// MX RRset, or named directly): DANE applies only then.
    pub secure_mx: bool,
    /// The MTA-STS policy (from the cache) for `mta-sts` mode.
    pub mta_sts: Option<StsPolicy>,
    /// The address to connect to, when the caller looked it up (a domain's
    /// route, looked up as delivery does); `None`: the target's.
    pub address: Option<SocketAddr>,
    /// The PKIX trust anchors.
    pub roots: Arc<RootCertStore>,
    /// The time allowed to connect, for the handshake and each reply.
    pub timeout: Duration,
}

/// Probes `target` (`HOST[:PORT]`) as `options` say; with `dnssec`, a host
/// name's addresses and TLSA records come from it (see the module
/// documentation).
pub async fn probe(
    target: &str,
    options: ProbeOptions<'_>,
    dnssec: Option<&DaneResolver>,
) -> Result<ProbeReport, ProbeError> {
    let ProbeOptions {
        ehlo: ehlo_name,
        roots,
        timeout,
        ..
    } = options.clone();
    let (host, port) = parse_target(target)?;
    let dns = match (dnssec, DomainName::parse(&host)) {
        (Some(dane), Ok(name)) if host.parse::<std::net::IpAddr>().is_err() => {
            Some(dns_facts(dane, &name, port).await)
        }
        _ => None,
    };
    let addr = match (options.address, host.parse::<std::net::IpAddr>()) {
        (Some(addr), _) => addr,
        (None, Ok(ip)) => SocketAddr::new(ip, port),
        (None, Err(_)) if dns.as_ref().is_some_and(|d| !d.addresses.is_empty()) => dns
            .as_ref()
            .and_then(|d| d.addresses.first().copied())
            .ok_or_else(|| ProbeError::Resolve {
                host: host.clone(),
                reason: "no address".into(),
            })?,
        (None, Err(_)) => tokio::net::lookup_host((host.as_str(), port))
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
    let mx = options.server_name.clone().or(mx);
    // A domain's host is judged as delivery judges it: under the domain.
    let hop = options.destination.clone().unwrap_or(hop);
    let mut settings = ClientSettings::new(ehlo_name);
    settings.connect_timeout = timeout;
    settings.handshake_timeout = timeout;
    settings.smtp.timeouts.command = timeout;
    let context = Arc::new(ClientTlsContext::new(roots));
    let client = Client::new(settings, Arc::clone(&context));
    let policy = OutboundPolicy::new(DestinationPolicy::new(ClientTlsMode::Opportunistic))
        .connection(&hop, mx.as_ref());
    // The name sent as SNI and checked (the attempt's choice).
    let server_name = policy
        .server_name()
        .or_else(|| hop.domain())
        .map(ToString::to_string);
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
        server_name: server_name.clone(),
        chain: result
            .tls
            .as_ref()
            .map(|t| t.peer_certificates.iter().map(|c| describe(c)).collect())
            .unwrap_or_default(),
        decisions: Vec::new(),
        configured: None,
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
    if let Some(outcome) = &dane_outcome {
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
    if let Some(outbound) = options.configured {
        let (settings, source) = outbound.lookup(&hop);
        let mut policy = outbound
            .connection(&hop, mx.as_ref())
            .with_secure_mx(options.secure_mx);
        if settings.tls == ClientTlsMode::MtaSts {
            policy = policy.with_mta_sts(options.mta_sts.clone());
        }
        if let Some(outcome) = &dane_outcome {
            policy = policy.with_dane(outcome.clone());
        }
        let (mode, rule) = (settings.tls, source.to_string());
        let judged = match (&result.tls, facts.handshake) {
            (Some(tls), Some(_)) => {
                let name = mx
                    .as_ref()
                    .map_or_else(|| host.clone(), ToString::to_string);
                let check =
                    configured_check(&client, &context, &policy, &name, &tls.peer_certificates)
                        .await
                        .map_err(ProbeError::Protocol)?;
                facts.with_handshake(HandshakeOutcome::Established {
                    version: tls.version,
                    certificate: check,
                })
            }
            _ => facts,
        };
        let (decision, deliver) = decide(&policy, &judged);
        report.configured = Some(Configured {
            rule,
            mode,
            decision,
            deliver,
        });
    }
    Ok(report)
}

/// One certificate as lines: subject, names, issuer, validity, key and the
/// SHA-256 fingerprints (the first is what a `fingerprint` pin holds).
fn describe(der: &CertificateDer<'_>) -> Vec<String> {
    let row = match postern_certs::inspect("", der, UnixTime::now()) {
        Ok(row) => row,
        Err(e) => {
            return vec![
                format!("unreadable certificate: {e}"),
                format!("pin (SHA-256 of the certificate): {}", Fingerprint::of(der)),
            ];
        }
    };
    let spki = x509_parser::parse_x509_certificate(der).map_or_else(
        |e| format!("unreadable ({e})"),
        |(_, cert)| Fingerprint::of(cert.public_key().raw).to_string(),
    );
    let date = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    vec![
        format!("subject:     {}", row.subject),
        format!(
            "names:       {}",
            if row.sans.is_empty() {
                "none".to_owned()
            } else {
                row.sans.join(", ")
            }
        ),
        format!("issuer:      {}", row.issuer),
        format!("not before:  {}", date(row.not_before)),
        format!("not after:   {} ({})", date(row.not_after), row.status),
        format!("key:         {} {} bits", row.key_type, row.key_bits),
        format!(
            "pin (SHA-256 of the certificate, as `pins` takes it): {}",
            row.fingerprint
        ),
        format!("SHA-256 of the public key (SPKI): {spki}"),
    ]
}

/// The check of `chain` as the configured `policy` would make it during the
/// handshake: chain and match names (`verify`, `secure`, `mta-sts`), pins
/// (`fingerprint`) or TLSA records (`dane`), from the delivery attempt's
/// own handshake parameters ([`TlsParams::for_policy`]).
async fn configured_check(
    client: &Client,
    context: &ClientTlsContext,
    policy: &ConnectionPolicy,
    server_name: &str,
    chain: &[CertificateDer<'static>],
) -> Result<CertificateCheck, String> {
    let params = TlsParams::for_policy(policy, server_name).map_err(|f| f.to_string())?;
    let spec = client
        .handshake_spec(&params)
        .await
        .map_err(|f| f.to_string())?;
    let connection = context
        .connection(&spec)
        .map_err(|e| format!("TLS settings of the configured policy: {e}"))?;
    Ok(connection.certificate_check(Some(chain), UnixTime::now()))
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

    #[test]
    fn an_unreadable_certificate_is_described_not_panicked_on() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01]);
        let lines = describe(&der);
        assert!(
            lines[0].starts_with("unreadable certificate: "),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            format!(
                "pin (SHA-256 of the certificate): {}",
                Fingerprint::of(&[0x30, 0x03, 0x02, 0x01])
            )
        );
    }
}
