//! The subcommands of `postern-relay` other than running: configuration
//! check, certificate table and import, policy explanation, probe, queue
//! listing and flush. Each prints its result to stdout and returns an error
//! for stderr.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use postern_certs::{
    CertKey, CertificateRow, ECDSA_CERT_FILE, ECDSA_KEY_FILE, RSA_CERT_FILE, RSA_KEY_FILE,
};
use postern_policy::{ClientTlsMode, NextHop};
use rustls::pki_types::UnixTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, DnssecMode};
use crate::envelope::{Envelope, Failure, FailureSource, Mailbox};
use crate::net::dns::{Resolver as _, SystemResolver};
use crate::outbound::explain;
use crate::outbound::routing::Router;
use crate::queue::spool::{Scan, Spool};
use crate::reporting::dkim::DkimSigner;
use crate::tls::certs::{CertDir, rfc3339};
use crate::tls::{client_cert_roots, outbound_roots};

/// The result of a command.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Standard output was closed before the command finished writing (`queue
/// list | head`): the binary stops quietly with [`StdoutClosed::EXIT_STATUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("standard output closed")]
pub struct StdoutClosed;

impl StdoutClosed {
    /// 141 = 128 + SIGPIPE: the status a shell reports for a Unix tool
    /// stopped by a closed pipe.
    pub const EXIT_STATUS: u8 = 141;
}

/// Writes to stdout; a closed stdout is [`StdoutClosed`] (never a panic, as
/// `print!` would), any other write error is returned as is.
fn emit(args: std::fmt::Arguments<'_>) -> CliResult {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => StdoutClosed.into(),
            _ => e.into(),
        })
}

/// `print!` through [`emit`], returning its error from the enclosing command.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))?
    };
}

/// `println!` through [`emit`], returning its error from the enclosing command.
macro_rules! outln {
    ($($arg:tt)*) => {
        emit(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// `check-config`: the configuration (already parsed and validated,
/// `[tls]` included) printed as TOML; the trust anchor files, the imported
/// certificates and the Default Cert (when present) are loaded to check them.
pub fn check_config(config: &Config, from_file: bool) -> CliResult {
    out!("{}", toml::to_string(config)?);
    let policy = config.policy()?;
    client_cert_roots(config)?;
    outbound_roots(config)?;
    let certs = CertDir::new(config.cert_dir());
    let imported = certs.imported()?;
    if let Some(name) = &config.certificates.outbound_certificate {
        certs.get(name)?;
    }
    for (cert, key) in [
        (RSA_CERT_FILE, RSA_KEY_FILE),
        (ECDSA_CERT_FILE, ECDSA_KEY_FILE),
    ] {
        let (c, k) = (certs.root().join(cert), certs.root().join(key));
        if c.exists() || k.exists() {
            let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            CertKey::from_pem(&read(&c)?, &read(&k)?)
                .map_err(|e| format!("{}: {e}", c.display()))?;
        }
    }
    eprintln!(
        "inbound TLS: {}, client certificates: {}, trusted agents: {}; outbound default: {}, {} per-domain rule(s); {} imported certificate(s)",
        policy.inbound.tls.as_str(),
        policy.inbound.client_certificates.as_str(),
        policy.inbound.trusted_agents.len(),
        policy.outbound.default.tls.as_str(),
        policy.outbound.overrides.len(),
        imported.len(),
    );
    dns_summary(config, &policy)?;
    // The record to publish for the report mails' DKIM signature (RFC 6376 §3.6.2.1).
    if let Some(signer) = DkimSigner::from_config(&config.tls_reporting)? {
        eprintln!(
            "tls reports signed with DKIM: publish TXT {}._domainkey.{} \"{}\"",
            signer.selector(),
            signer.domain(),
            signer.dns_record()
        );
    }
    eprintln!(
        "configuration OK{}",
        if from_file {
            ""
        } else {
            " (embedded defaults)"
        }
    );
    Ok(())
}

/// `check-config`'s lines about `[dns]`: where DNSSEC answers come from,
/// the trust anchor checked, and a warning when the AD bit of a resolver
/// off this host is trusted (anyone on the path can set it).
fn dns_summary(config: &Config, policy: &postern_policy::Policy) -> CliResult {
    let dns = &config.dns;
    let servers = crate::net::dns::name_servers(dns);
    let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
    let list = if list.is_empty() {
        "none found".to_owned()
    } else {
        list.join(", ")
    };
    eprintln!(
        "dns: dnssec {}, name servers {list}; DANE for opportunistic destinations: {}",
        dns.dnssec.as_str(),
        if dns.dnssec != DnssecMode::Off && dns.opportunistic_dane {
            "on"
        } else {
            "off"
        }
    );
    match dns.dnssec {
        DnssecMode::Off => {}
        _ if servers.is_empty() => eprintln!(
            "warning: no name server found (dns.nameservers or /etc/resolv.conf): only static \
             routes can deliver, and DANE destinations are deferred"
        ),
        DnssecMode::Validate => {
            // Reads and checks the trust anchor file, as the relay will.
            let anchor = dns.trust_anchor.clone().map_or(
                postern_dns::TrustAnchor::BuiltInRoot,
                postern_dns::TrustAnchor::File,
            );
            postern_dns::DaneResolver::validating(
                &postern_dns::ValidatingConfig::new(servers).with_trust_anchor(anchor),
            )
            .map_err(|e| format!("dns: {e}"))?;
        }
        _ => match servers.first() {
            Some(resolver) if !resolver.ip().is_loopback() => {
                let dane_modes = std::iter::once(&policy.outbound.default)
                    .chain(policy.outbound.overrides.iter().map(|(_, p)| p))
                    .any(|p| matches!(p.tls, ClientTlsMode::Dane | ClientTlsMode::DaneOnly));
                eprintln!(
                    "warning: dns.dnssec = \"trust-ad\" trusts the AD bit of {resolver}, which is not on \
                     loopback: anyone on the path to it can forge DNSSEC-secure answers{}; run a \
                     validating resolver on this host (unbound) or set dns.dnssec = \"validate\"",
                    if dane_modes {
                        " and defeat the dane and dane-only destinations"
                    } else {
                        ""
                    }
                );
            }
            _ => {}
        },
    }
    Ok(())
}

/// The certificate table as text.
pub fn cert_table(rows: &[CertificateRow]) -> String {
    let mut out = String::new();
    for row in rows {
        let _ = writeln!(out, "{}", row.name);
        let _ = writeln!(out, "  subject:      {}", row.subject);
        let _ = writeln!(out, "  issuer:       {}", row.issuer);
        let _ = writeln!(out, "  names (SAN):  {}", row.sans.join(", "));
        let _ = writeln!(
            out,
            "  key:          {} {} bits",
            row.key_type, row.key_bits
        );
        let _ = writeln!(out, "  signature:    {}", row.signature_algorithm);
        let _ = writeln!(out, "  not before:   {}", rfc3339(row.not_before));
        let _ = writeln!(out, "  not after:    {}", rfc3339(row.not_after));
        let _ = writeln!(out, "  sha256:       {}", row.fingerprint);
        let _ = writeln!(
            out,
            "  self-signed:  {}",
            if row.self_signed { "yes" } else { "no" }
        );
        let _ = writeln!(out, "  status:       {}", row.status);
    }
    out
}

fn cert_json(rows: &[CertificateRow]) -> serde_json::Value {
    rows.iter()
        .map(|row| {
            serde_json::json!({
                "name": row.name,
                "subject": row.subject,
                "issuer": row.issuer,
                "sans": row.sans,
                "key_type": row.key_type.to_string(),
                "key_bits": row.key_bits,
                "signature_algorithm": row.signature_algorithm,
                "not_before": rfc3339(row.not_before),
                "not_after": rfc3339(row.not_after),
                "sha256": row.fingerprint.to_string(),
                "self_signed": row.self_signed,
                "status": row.status.to_string(),
            })
        })
        .collect()
}

/// What `cert list` says when the state directory has no Default Cert yet.
pub const NO_DEFAULT_CERT: &str = "no Default Cert exists yet: the relay generates it \
     (RSA and an ECDSA P-256 companion, for the configured hostname) at its first start \
     (postern-relay with this configuration)";

/// `cert list`: the certificate table as it stands. Reads only: when the
/// Default Cert does not exist yet it says so (and that the relay's first
/// start creates it) rather than generating it.
pub fn cert_list(config: &Config, json: bool) -> CliResult {
    let (store, has_default) = CertDir::new(config.cert_dir()).existing_store()?;
    let rows = store.list(UnixTime::now());
    if json {
        outln!("{}", serde_json::to_string_pretty(&cert_json(&rows))?);
        if !has_default {
            eprintln!("note: {NO_DEFAULT_CERT}");
        }
    } else {
        out!("{}", cert_table(&rows));
        if !has_default {
            outln!("{NO_DEFAULT_CERT}");
        }
    }
    Ok(())
}

/// `cert import`: validates and persists a chain and key under `name`; a
/// running relay picks it up at its next certificate check (or on SIGHUP).
/// A certificate that has expired or is not yet valid is refused unless
/// `force`.
pub fn cert_import(
    config: &Config,
    name: &str,
    chain: &Path,
    key: &Path,
    force: bool,
) -> CliResult {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let now = UnixTime::now();
    let cert =
        CertDir::new(config.cert_dir()).import(name, &read(chain)?, &read(key)?, now, force)?;
    let row = postern_certs::inspect(name, cert.leaf(), now)?;
    out!("{}", cert_table(&[row]));
    outln!(
        "imported: a running relay serves it within {}",
        config.certificates.reload_interval
    );
    if !cert.valid_at(now) {
        eprintln!(
            "warning: this certificate is outside its validity period; it is served only to clients that no valid certificate can answer"
        );
    }
    Ok(())
}

/// `policy explain DOMAIN`: the outbound settings for a destination and the
/// rule that gave them.
pub fn policy_explain(config: &Config, destination: &str) -> CliResult {
    let policy = config.policy()?;
    let hop = NextHop::parse(destination).map_err(|e| format!("{destination:?}: {e}"))?;
    let (settings, source) = policy.outbound.lookup(&hop);
    outln!("{}", policy.outbound.explain(&hop));
    outln!("  destination:        {hop}");
    outln!("  rule:               {source}");
    outln!(
        "  mode:               {} (Postfix smtp_tls_security_level = {})",
        settings.tls.as_str(),
        settings.tls.postfix_level()
    );
    outln!(
        "  minimum version:    {}",
        settings.min_tls_version.as_str()
    );
    if matches!(settings.tls, ClientTlsMode::Verify | ClientTlsMode::Secure) {
        let names: Vec<String> = settings
            .effective_match()
            .iter()
            .map(ToString::to_string)
            .collect();
        outln!("  certificate match:  {}", names.join(", "));
        outln!(
            "  trust anchors:      {}",
            settings.trust_anchors.clone().unwrap_or_else(|| {
                match &config.certificates.ca_bundle {
                    Some(b) if config.certificates.system_roots => {
                        format!("system roots + {}", b.display())
                    }
                    Some(b) => b.display().to_string(),
                    None => "system roots".into(),
                }
            })
        );
    }
    if !settings.pins.is_empty() {
        let pins: Vec<String> = settings.pins.iter().map(ToString::to_string).collect();
        outln!("  pins:               {}", pins.join(", "));
    }
    let requires = settings.tls.always_requires_tls();
    outln!(
        "  without TLS:        {}",
        if requires {
            "the message stays queued (deferred 4.7.x), never sent in plaintext"
        } else {
            "delivered in plaintext"
        }
    );
    Ok(())
}

/// `policy explain DOMAIN --dns`: the DNS facts and per-host decisions
/// (see [`crate::outbound::explain`]).
pub async fn policy_explain_dns(config: &Config, destination: &str) -> CliResult {
    let policy = config.policy()?;
    let resolver = SystemResolver::from_config(&config.dns)?;
    let router = Router::new(config.static_routes()?, resolver);
    outln!(
        "  dns:                dnssec {}",
        config.dns.dnssec.as_str()
    );
    out!(
        "{}",
        explain::dns_report(config, &policy.outbound, &router, destination).await
    );
    Ok(())
}

/// `probe HOST[:PORT]`.
pub async fn probe(config: &Config, target: &str) -> CliResult {
    let roots = outbound_roots(config)?;
    let timeout = config.timeouts.connect.0.max(Duration::from_secs(5));
    let resolver = SystemResolver::from_config(&config.dns)?;
    let report =
        crate::outbound::probe::probe(target, &config.hostname, roots, timeout, resolver.dnssec())
            .await?;
    out!("{}", report.to_text());
    Ok(())
}

/// `queue list [--json]`.
pub fn queue_list(config: &Config, json: bool) -> CliResult {
    let scan = Spool::scan(&config.spool_dir())?;
    for bad in &scan.corrupt {
        eprintln!(
            "warning: unreadable queue entry {}: {}",
            bad.name, bad.reason
        );
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&queue_json(&scan)?)?);
    } else {
        out!("{}", queue_text(&scan));
    }
    Ok(())
}

/// The queue as JSON.
pub fn queue_json(scan: &Scan) -> Result<serde_json::Value, serde_json::Error> {
    let mut messages = Vec::with_capacity(scan.messages.len());
    for m in &scan.messages {
        let mut v = serde_json::to_value(&m.envelope)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("size".into(), m.size.into());
        }
        messages.push(v);
    }
    let corrupt: Vec<_> = scan
        .corrupt
        .iter()
        .map(|c| serde_json::json!({ "entry": c.name, "reason": c.reason }))
        .collect();
    Ok(serde_json::json!({ "messages": messages, "corrupt": corrupt }))
}

/// The queue as text (like `postqueue -p`).
pub fn queue_text(scan: &Scan) -> String {
    if scan.messages.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out = String::new();
    let mut total = 0u64;
    for m in &scan.messages {
        let e: &Envelope = &m.envelope;
        total += m.size;
        let sender = e
            .reverse_path
            .mailbox()
            .map_or_else(|| "<>".to_owned(), Mailbox::to_string);
        let _ = writeln!(
            out,
            "{}  {} bytes  {}  from {sender}",
            e.id,
            m.size,
            when(e.received_at)
        );
        let _ = write!(
            out,
            "    attempts: {}, next attempt: {}",
            e.attempts,
            when(e.next_attempt)
        );
        if e.params.requiretls {
            out.push_str(", REQUIRETLS");
        }
        out.push('\n');
        if let Some(f) = &e.last_failure {
            let _ = writeln!(out, "    last failure: {}", failure_text(f));
        }
        for r in &e.recipients {
            let state = serde_json::to_value(r.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            let _ = write!(out, "      {:<10} {}", state.unwrap_or_default(), r.address);
            if let Some(f) = r.last_failure.as_ref().filter(|_| r.state.is_open()) {
                let _ = write!(out, "  ({})", f.code);
            }
            out.push('\n');
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "-- {} bytes in {} messages",
        total,
        scan.messages.len()
    );
    out
}

/// `<code> <text> (reply from <host>)` for a server reply, `<code>
/// <description> (at <host>)` for a failure of ours, then the TLS result
/// type and the policy rule.
fn failure_text(f: &Failure) -> String {
    let mut s = format!("{} {}", f.code, f.text);
    match (f.source, &f.remote_mta) {
        (FailureSource::Remote, Some(remote)) => s.push_str(&format!(" (reply from {remote})")),
        (FailureSource::Remote, None) => s.push_str(" (reply from the remote server)"),
        (FailureSource::Local, Some(remote)) => s.push_str(&format!(" (at {remote})")),
        (FailureSource::Local, None) => {}
    }
    if let Some(rt) = &f.result_type {
        s.push_str(&format!(" [result-type: {rt}]"));
    }
    if let Some(rule) = &f.policy_rule {
        s.push_str(&format!(" [policy: {rule}]"));
    }
    s
}

fn when(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

/// `queue flush`.
pub fn queue_flush(config: &Config) -> CliResult {
    Spool::request_flush(&config.spool_dir())?;
    outln!("flush requested: the relay retries every queued message at its next queue scan");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{MailParams, Recipient, RecipientState, ResultType, mailbox};
    use std::time::{Duration, UNIX_EPOCH};

    fn scan_with_failure() -> Scan {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let env = Envelope::new(
            mailbox("alice@example.org"),
            [
                Recipient::new(mailbox("bob@example.net")),
                Recipient::new(mailbox("carol@example.net")),
            ],
            MailParams::default(),
            at,
        );
        let mut incoming = spool.begin(env, None).unwrap();
        incoming
            .write_chunk(b"Subject: x\r\n\r\nhello\r\n")
            .unwrap();
        let mut env = incoming.commit().unwrap();
        let mut f = Failure::local("4.7.5".parse().unwrap(), "certificate not trusted", at);
        f.remote_mta = Some("mx.example.net[192.0.2.7]:25".into());
        f.result_type = Some(ResultType::CertificateNotTrusted);
        f.policy_rule = Some("domain example.net: verify".into());
        env.attempts = 2;
        env.recipients[0].state = RecipientState::Deferred;
        env.recipients[0].last_failure = Some(f.clone());
        env.recipients[1].state = RecipientState::Delivered;
        env.last_failure = Some(f);
        spool.update(&env).unwrap();
        Spool::scan(dir.path()).unwrap()
    }

    #[test]
    fn failure_text_says_who_wrote_the_text() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut local = Failure::local("4.4.1".parse().unwrap(), "connection refused", at);
        assert_eq!(failure_text(&local), "4.4.1 connection refused");
        local.remote_mta = Some("mx.example.net[192.0.2.7]:25".into());
        assert_eq!(
            failure_text(&local),
            "4.4.1 connection refused (at mx.example.net[192.0.2.7]:25)"
        );
        let mut remote = Failure::remote("5.1.1".parse().unwrap(), "550 5.1.1 no such user", at);
        assert_eq!(
            failure_text(&remote),
            "5.1.1 550 5.1.1 no such user (reply from the remote server)"
        );
        remote.remote_mta = Some("mx.example.net[192.0.2.7]:25".into());
        assert_eq!(
            failure_text(&remote),
            "5.1.1 550 5.1.1 no such user (reply from mx.example.net[192.0.2.7]:25)"
        );
    }

    #[test]
    fn queue_list_text_shows_state_and_last_failure() {
        let text = queue_text(&scan_with_failure());
        assert!(text.contains("from alice@example.org"), "{text}");
        assert!(text.contains("attempts: 2"), "{text}");
        assert!(
            text.contains(
                "    last failure: 4.7.5 certificate not trusted (at mx.example.net[192.0.2.7]:25) \
             [result-type: certificate-not-trusted] [policy: domain example.net: verify]\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("deferred   bob@example.net  (4.7.5)"),
            "{text}"
        );
        assert!(text.contains("delivered  carol@example.net\n"), "{text}");
        assert!(text.contains("-- 21 bytes in 1 messages"), "{text}");
        assert_eq!(queue_text(&Scan::default()), "Mail queue is empty\n");
    }

    #[test]
    fn queue_list_json_is_machine_readable() {
        let v = queue_json(&scan_with_failure()).unwrap();
        let m = &v["messages"][0];
        assert_eq!(m["reverse_path"], "alice@example.org");
        assert_eq!(m["size"], 21);
        assert_eq!(m["recipients"][0]["state"], "deferred");
        assert_eq!(m["last_failure"]["code"], "4.7.5");
        assert_eq!(m["last_failure"]["source"], "local");
        assert_eq!(m["last_failure"]["text"], "certificate not trusted");
        assert_eq!(m["last_failure"]["result_type"], "certificate-not-trusted");
        assert_eq!(
            m["last_failure"]["policy_rule"],
            "domain example.net: verify"
        );
        assert_eq!(v["corrupt"].as_array().map(Vec::len), Some(0));
    }
}
