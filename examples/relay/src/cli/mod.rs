//! The subcommands of `postern-relay` other than running: configuration
//! check, certificate table and import, policy explanation, probe, and the
//! queue (list, show, delete, hold, release, flush: see
//! [`crate::queue::control`] for how they act on a running relay). Each
//! prints its result to stdout and returns an error for stderr.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use postern_certs::{
    CertKey, CertStatus, CertificateRow, DEFAULT_CERT_NAME, ECDSA_CERT_FILE, ECDSA_KEY_FILE,
    RSA_CERT_FILE, RSA_KEY_FILE,
};
use postern_policy::mta_sts::StsPolicy;
use postern_policy::{ClientTlsMode, DomainName, NextHop};
use rustls::pki_types::UnixTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, DnssecMode};
use crate::envelope::{Envelope, Failure, FailureSource, Mailbox, MessageId};
use crate::net::dns::{Resolver as _, SystemResolver};
use crate::outbound::explain;
use crate::outbound::next_hop::{self, DaneUse};
use crate::outbound::routing::{RouteSource, Router};
use crate::queue::control::{self, ANSWER_WAIT, Answer, Request, Selection};
use crate::queue::lock::{LockError, StateLock};
use crate::queue::spool::{Scan, Spool, SpoolError};
use crate::queue::{Queue, RetryPolicy, SharedQueue};
use crate::reporting::dkim::DkimSigner;
use crate::tls::certs::{CertDir, rfc3339, rsa_bits};
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

mod reload;
pub use reload::{RELOAD_WAIT, reload};

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
    #[cfg(unix)]
    if let Some(account) = crate::privileges::Account::from_config(config)? {
        eprintln!(
            "user: {} (uid {}, gid {}): started as root, the relay switches to it once its ports \
             are bound",
            account.name, account.uid, account.gid
        );
    }
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
    let preferred = store.preferred();
    if json {
        let mut table = cert_json(&rows);
        if let Some(rows) = table.as_array_mut() {
            for row in rows {
                let is_preferred = preferred.is_some() && row["name"].as_str() == preferred;
                row["preferred"] = is_preferred.into();
            }
        }
        outln!("{}", serde_json::to_string_pretty(&table)?);
        if !has_default {
            eprintln!("note: {NO_DEFAULT_CERT}");
        }
    } else {
        out!("{}", cert_table(&rows));
        if let Some(name) = preferred {
            if rows.iter().any(|r| r.name == name) {
                outln!("served first for its names (cert use): {name}");
            } else {
                outln!("served first (cert use): {name}, which is not in the table");
            }
        }
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
    let (chain, key) = (read(chain)?, read(key)?);
    switch_for_writes(config)?;
    let cert = CertDir::new(config.cert_dir()).import(name, &chain, &key, now, force)?;
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

/// Before a command writes into the state directory: run as root with
/// `user` set, it switches to that user (its input files already read), so
/// that the relay, running as that user, can read and replace what it
/// writes.
fn switch_for_writes(config: &Config) -> CliResult {
    #[cfg(unix)]
    crate::privileges::switch_for_command(config)?;
    #[cfg(not(unix))]
    let _ = config;
    Ok(())
}

/// `cert remove NAME`: removes an imported certificate (and the preference
/// for it); a running relay stops serving it at its next certificate check.
/// Neither the Default Cert nor the `certificates.outbound_certificate` can
/// be removed.
pub fn cert_remove(config: &Config, name: &str) -> CliResult {
    if config.certificates.outbound_certificate.as_deref() == Some(name) {
        return Err(format!(
            "{name:?} is the `certificates.outbound_certificate`: name another one (or none) \
             in the configuration first"
        )
        .into());
    }
    switch_for_writes(config)?;
    CertDir::new(config.cert_dir()).remove(name)?;
    outln!(
        "removed {name:?}: a running relay stops serving it within {}",
        config.certificates.reload_interval
    );
    Ok(())
}

/// `cert regenerate-default`: a new Default Cert (RSA of
/// `certificates.default_rsa_bits`, SHA-256, self-signed for the host name,
/// and its ECDSA companion) replaces the old one; a running relay serves it
/// at its next certificate check.
pub fn cert_regenerate_default(config: &Config) -> CliResult {
    switch_for_writes(config)?;
    let now = UnixTime::now();
    let certs = CertDir::new(config.cert_dir()).regenerate_default(
        &config.hostname,
        rsa_bits(config.certificates.default_rsa_bits),
        now,
    )?;
    let rows = certs
        .iter()
        .map(|c| postern_certs::inspect(DEFAULT_CERT_NAME, c.leaf(), now))
        .collect::<Result<Vec<_>, _>>()?;
    out!("{}", cert_table(&rows));
    outln!(
        "regenerated: a running relay serves it within {}",
        config.certificates.reload_interval
    );
    Ok(())
}

/// `cert use NAME` / `cert use --clear`: which certificate is served first
/// when several carry the same name (see [`crate::tls::certs`]).
pub fn cert_use(config: &Config, name: Option<&str>) -> CliResult {
    switch_for_writes(config)?;
    let certs = CertDir::new(config.cert_dir());
    certs.set_preferred(name)?;
    match name {
        Some(name) => outln!(
            "{name:?} is served first for its names; a running relay applies it within {}",
            config.certificates.reload_interval
        ),
        None => outln!(
            "no preference: imported certificates before the Default Cert, ECDSA before RSA, \
             then by name; a running relay applies it within {}",
            config.certificates.reload_interval
        ),
    }
    Ok(())
}

/// `cert inspect FILE [--key KEY]`: what `cert list` shows for each
/// certificate of a PEM chain, and the problems of the chain (order,
/// validity, the key when given), without importing anything. An error when
/// a problem was found.
pub fn cert_inspect(config: &Config, file: &Path, key: Option<&Path>) -> CliResult {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let pem = read(file)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate (PEM) in the file", file.display()).into());
    }
    let now = UnixTime::now();
    let rows = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let name = if i == 0 {
                "#1 (leaf)".to_owned()
            } else {
                format!("#{}", i + 1)
            };
            postern_certs::inspect(&name, der, now)
                .map_err(|e| format!("{}: certificate #{}: {e}", file.display(), i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    out!("{}", cert_table(&rows));
    let (mut problems, notes) = chain_problems(&rows, &config.hostname);
    if let Some(key_path) = key {
        match CertKey::from_pem(&pem, &read(key_path)?) {
            Ok(_) => outln!("key: {} matches the leaf", key_path.display()),
            Err(e) => problems.push(format!("key {}: {e}", key_path.display())),
        }
    }
    for note in &notes {
        outln!("note: {note}");
    }
    if problems.is_empty() {
        outln!("chain: {} certificate(s), in order", rows.len());
        return Ok(());
    }
    for problem in &problems {
        outln!("problem: {problem}");
    }
    Err(format!("{}: {} problem(s) found", file.display(), problems.len()).into())
}

/// The problems (and notes) of a chain as `cert inspect` reports them: each
/// certificate must be issued by the next one (leaf first), and within its
/// validity; notes say when the root is included or the leaf does not carry
/// the host name.
pub fn chain_problems(rows: &[CertificateRow], hostname: &str) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for (i, pair) in rows.windows(2).enumerate() {
        let (cert, next) = (&pair[0], &pair[1]);
        if cert.issuer == next.subject {
            continue;
        }
        let issuer_at = rows
            .iter()
            .position(|r| r.subject == cert.issuer && r.fingerprint != cert.fingerprint);
        problems.push(match issuer_at {
            Some(j) => format!(
                "out of order: certificate #{} is issued by #{} ({}), not by the next one, #{} \
                 ({}); order the file leaf first, each certificate followed by its issuer",
                i + 1,
                j + 1,
                cert.issuer,
                i + 2,
                next.subject
            ),
            None => format!(
                "certificate #{} is issued by {}, which is not in the file, yet #{} ({}) follows \
                 it: a certificate is missing or does not belong to this chain",
                i + 1,
                cert.issuer,
                i + 2,
                next.subject
            ),
        });
    }
    for (i, row) in rows.iter().enumerate() {
        if matches!(
            row.status,
            CertStatus::Expired | CertStatus::NotYetValid | CertStatus::Weak
        ) {
            problems.push(format!("certificate #{} is {}", i + 1, row.status));
        }
    }
    if let Some(last) = rows.last().filter(|r| rows.len() > 1 && r.self_signed) {
        notes.push(format!(
            "the chain includes its root ({}): harmless, but clients need only the \
             intermediates",
            last.subject
        ));
    }
    if let Some(leaf) = rows.first()
        && !leaf.sans.iter().any(|n| names_host(n, hostname))
    {
        notes.push(format!(
            "the leaf does not carry this relay's host name {hostname}: it is served only to \
             clients that ask for one of its names"
        ));
    }
    (problems, notes)
}

/// Whether a subjectAltName covers `host` (exactly, or as `*.parent` for
/// one leftmost label).
fn names_host(san: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match san.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(_, rest)| rest == parent),
        None => san == host,
    }
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
    if let Some(domain) = hop.domain() {
        match config.static_routes()?.lookup(domain.as_str()) {
            Some((key, next)) => outln!(
                "  next hop:           {}:{} (static route {key})",
                next.host,
                next.port
            ),
            None => outln!("  next hop:           MX lookup (`--dns` shows the hosts)"),
        }
    }
    outln!(
        "  mode:               {} (Postfix smtp_tls_security_level = {})",
        settings.tls.as_str(),
        settings.tls.postfix_level()
    );
    outln!(
        "  minimum version:    {}",
        settings.min_tls_version.as_str()
    );
    let names: Vec<String> = settings
        .effective_match()
        .iter()
        .map(ToString::to_string)
        .collect();
    match settings.tls {
        ClientTlsMode::Verify | ClientTlsMode::Secure => {
            outln!("  certificate match:  {}", names.join(", "));
        }
        ClientTlsMode::MtaSts => {
            outln!(
                "  certificate match:  the MX host, which must match the MTA-STS policy's mx patterns"
            );
        }
        ClientTlsMode::Dane | ClientTlsMode::DaneOnly => outln!(
            "  certificate match:  a usable TLSA record; DANE-TA(2) names: the MX host and {hop}"
        ),
        _ => {}
    }
    if matches!(
        settings.tls,
        ClientTlsMode::Verify | ClientTlsMode::Secure | ClientTlsMode::MtaSts
    ) {
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
    if let Some(domain) = hop.domain() {
        for line in mta_sts_lines(config, domain) {
            outln!("{line}");
        }
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

/// The MTA-STS policy cached for `domain`, read only, as lines.
fn mta_sts_lines(config: &Config, domain: &DomainName) -> Vec<String> {
    let cache = match crate::outbound::mta_sts::read_cached(&config.state_dir, domain) {
        Ok(Some(cache)) => cache,
        Ok(None) => return vec!["  mta-sts cache:      none".to_owned()],
        Err(e) => return vec![format!("  mta-sts cache:      unreadable: {e}")],
    };
    let Some(cached) = cache.cached else {
        return vec!["  mta-sts cache:      no policy (a failed fetch only)".to_owned()];
    };
    let expires = cached.expires_at();
    let when = OffsetDateTime::from_unix_timestamp(expires)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| expires.to_string());
    let state = if cached.is_valid_at(crate::reporting::tlsrpt::unix_time(SystemTime::now())) {
        "valid"
    } else {
        "expired"
    };
    let mx: Vec<String> = cached.policy.mx.iter().map(ToString::to_string).collect();
    vec![
        format!("  mta-sts cache:      id {}, {state}", cached.id),
        format!("    mode:             {}", cached.policy.mode),
        format!("    mx:               {}", mx.join(", ")),
        format!("    max_age:          {}", cached.policy.max_age),
        format!("    expires:          {when}"),
    ]
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

/// `probe DESTINATION`: a domain is routed as delivery routes it (static
/// route or MX lookup) and its hosts probed in order, stopping at the first
/// that answers unless `all`; `[host]`, `[host]:port` and `host:port` are
/// probed directly (no MX lookup).
pub async fn probe(
    config: &Config,
    target: &str,
    server_name: Option<&str>,
    ehlo: Option<&str>,
    all: bool,
) -> CliResult {
    let policy = config.policy()?;
    let roots = outbound_roots(config)?;
    let timeout = config.timeouts.connect.0.max(Duration::from_secs(5));
    let resolver = SystemResolver::from_config(&config.dns)?;
    let server_name = server_name
        .map(|n| DomainName::parse(n).map_err(|e| format!("--servername {n:?}: {e}")))
        .transpose()?;
    let options = crate::outbound::probe::ProbeOptions {
        ehlo: ehlo.unwrap_or(&config.hostname),
        server_name,
        destination: None,
        configured: Some(&policy.outbound),
        secure_mx: true,
        mta_sts: None,
        address: None,
        roots,
        timeout,
    };
    let direct = target.starts_with('[')
        || target.contains(':')
        || target.parse::<std::net::IpAddr>().is_ok();
    if direct {
        // `[host]:port` keys of the policy apply to a bracketed target.
        let mut options = options;
        if target.starts_with('[') {
            options.destination = NextHop::parse(target).ok();
        }
        if let Some(domain) = options.destination.as_ref().and_then(NextHop::domain) {
            options.mta_sts = cached_sts(config, domain);
        }
        let report = crate::outbound::probe::probe(target, options, resolver.dnssec()).await?;
        out!("{}", report.to_text());
        return Ok(());
    }
    let hop = NextHop::parse(target).map_err(|e| format!("{target:?}: {e}"))?;
    let router = Router::new(config.static_routes()?, resolver);
    let route = router
        .route(target, SystemTime::now())
        .await
        .map_err(|f| format!("{target}: no route: {} ({})", f.text, f.code))?;
    let how = match &route.source {
        RouteSource::Static(key) => format!("static route {key:?}"),
        RouteSource::Mx => "MX lookup".to_owned(),
        RouteSource::ImplicitMx => "implicit MX (the domain itself)".to_owned(),
    };
    let hosts: Vec<String> = route
        .hosts
        .iter()
        .map(|h| format!("{}:{}", h.host, h.port))
        .collect();
    outln!("Route for {}: {how}: {}", route.domain, hosts.join(", "));
    let sts = hop.domain().and_then(|d| cached_sts(config, d));
    let mut answered = false;
    for host in &route.hosts {
        let mut options = options.clone();
        options.destination = Some(hop.clone());
        options.mta_sts.clone_from(&sts);
        options.secure_mx = route.hosts_found_securely();
        let target = format!("{}:{}", host.host, host.port);
        outln!("\n--- {target}");
        // The addresses as delivery finds them.
        match next_hop::look_up(router.resolver(), host, DaneUse::No, SystemTime::now()).await {
            Ok(found) => options.address = found.addresses.first().copied(),
            Err(failure) => {
                outln!("not usable: {}", failure.text);
                continue;
            }
        }
        match crate::outbound::probe::probe(&target, options, router.resolver().dnssec()).await {
            Ok(report) => {
                out!("{}", report.to_text());
                answered = true;
                if !all {
                    break;
                }
            }
            Err(e) => outln!("{e}"),
        }
    }
    if answered {
        Ok(())
    } else {
        Err(format!("{target}: no host answered").into())
    }
}

/// The valid MTA-STS policy cached for `domain`, if any (read only).
fn cached_sts(config: &Config, domain: &DomainName) -> Option<StsPolicy> {
    crate::outbound::mta_sts::read_cached(&config.state_dir, domain)
        .ok()
        .flatten()
        .and_then(|cache| cache.cached)
        .filter(|c| c.is_valid_at(crate::reporting::tlsrpt::unix_time(SystemTime::now())))
        .map(|c| c.policy)
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
            obj.insert("held".into(), m.envelope.held.into());
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
        if e.held {
            out.push_str(", HELD (not attempted until released)");
        }
        out.push('\n');
        if let Some(f) = &e.last_failure {
            let _ = writeln!(out, "    last failure: {}", failure_text(f));
        }
        for r in &e.recipients {
            let _ = write!(out, "      {:<10} {}", json_text(&r.state), r.address);
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

/// Headers longer than this are cut in `queue show` (the relay accepts
/// no such header block by default anyway).
const MAX_SHOWN_HEADER_BYTES: u64 = 1024 * 1024;

/// `queue show ID [--body]` (like `postcat -q`): the envelope and the
/// header, and the body if asked. Reads only: safe while the relay runs.
pub fn queue_show(config: &Config, id: &MessageId, body: bool) -> CliResult {
    use std::io::{BufRead as _, BufReader, Read as _};
    let (envelope, size, content) =
        Spool::read_message(&config.spool_dir(), id).map_err(|e| match e {
            SpoolError::NotQueued(_) => {
                format!("message {id} is not queued (delivered or deleted, if it was)")
            }
            e => e.to_string(),
        })?;
    out!("{}", envelope_text(&envelope, size));
    outln!("-- header --");
    let mut reader = BufReader::new(content);
    let mut header = Vec::new();
    let mut line = Vec::new();
    let mut complete = false;
    // The header ends at the first empty line (RFC 5322 §2.1).
    while (header.len() as u64) < MAX_SHOWN_HEADER_BYTES {
        line.clear();
        let n = (&mut reader)
            .take(MAX_SHOWN_HEADER_BYTES)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("message {id}: {e}"))?;
        if n == 0 || line == b"\r\n" || line == b"\n" {
            complete = true;
            break;
        }
        header.extend_from_slice(&line);
    }
    out!("{}", String::from_utf8_lossy(&header));
    if !complete {
        outln!("[header cut at {MAX_SHOWN_HEADER_BYTES} bytes]");
    }
    if body {
        outln!("-- body --");
        let mut rest = Vec::new();
        reader
            .read_to_end(&mut rest)
            .map_err(|e| format!("message {id}: {e}"))?;
        out!("{}", String::from_utf8_lossy(&rest));
    }
    Ok(())
}

/// The envelope of one message, as `queue show` prints it.
pub fn envelope_text(e: &Envelope, size: u64) -> String {
    let mut out = String::new();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let sender = e
        .reverse_path
        .mailbox()
        .map_or_else(|| "<>".to_owned(), |m| format!("<{m}>"));
    let _ = writeln!(out, "message:      {}", e.id);
    let _ = writeln!(out, "size:         {size} bytes");
    let _ = writeln!(out, "arrival:      {}", when(e.received_at));
    let _ = writeln!(out, "sender:       {sender}");
    let _ = writeln!(out, "attempts:     {}", e.attempts);
    let _ = writeln!(out, "next attempt: {}", when(e.next_attempt));
    let _ = writeln!(
        out,
        "held:         {}",
        if e.held {
            "yes (not attempted until released)"
        } else {
            "no"
        }
    );
    let _ = writeln!(out, "requiretls:   {}", yes_no(e.params.requiretls));
    let _ = writeln!(out, "smtputf8:     {}", yes_no(e.params.smtputf8));
    if let Some(body) = &e.params.body {
        let _ = writeln!(out, "body:         {}", json_text(body));
    }
    if let Some(envid) = &e.params.envid {
        let _ = writeln!(out, "envid:        {envid}");
    }
    if let Some(ret) = &e.params.ret {
        let _ = writeln!(out, "ret:          {}", json_text(ret));
    }
    if e.tls_report {
        let _ = writeln!(
            out,
            "tls report:   yes (RFC 8460 report mailed by this relay)"
        );
    }
    if let Some(f) = &e.last_failure {
        let _ = writeln!(out, "last failure: {}", failure_text(f));
    }
    let _ = writeln!(out, "recipients:   {}", e.recipients.len());
    for r in &e.recipients {
        let _ = write!(out, "  {:<10} <{}>", json_text(&r.state), r.address);
        if let Some((kind, addr)) = &r.orcpt {
            let _ = write!(out, "  ORCPT={kind};{addr}");
        }
        out.push('\n');
        if let Some(f) = &r.last_failure {
            let _ = writeln!(out, "             last failure: {}", failure_text(f));
        }
    }
    out
}

/// A value serialised as a JSON string, as text (`deferred`, `hdrs`).
fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `queue delete`, `hold`, `release` and `flush`: applied by this command
/// if no relay runs, else handed to the running relay (see
/// [`crate::queue::control`]). Prints one line per message; a message that
/// is not queued, or an action that failed, makes the command fail.
pub fn queue_control(config: &Config, request: &Request) -> CliResult {
    let state = &config.state_dir;
    let spool_dir = config.spool_dir();
    // The lock file lives in the state directory: no spool, nothing to do.
    Spool::attach(&spool_dir)?;
    let answer = match StateLock::acquire(state) {
        // Held until the action is done, then released.
        Ok(_lock) => {
            if let Request::Flush { messages } = request {
                return flush_stopped(&spool_dir, request, messages);
            }
            apply_stopped(&spool_dir, config, request)?
        }
        Err(LockError::Busy { pid, .. }) => {
            match control::submit_and_wait(&spool_dir, request, ANSWER_WAIT)? {
                Some(answer) => answer,
                None => {
                    outln!(
                        "request queued: the relay{} has not answered within {} s; it applies \
                         the request when it next reads its requests (at the latest at its next start)",
                        pid.map_or_else(String::new, |p| format!(" (pid {p})")),
                        ANSWER_WAIT.as_secs()
                    );
                    return Ok(());
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(e) = answer.error {
        return Err(e.into());
    }
    let mut failed = 0;
    for (id, applied) in &answer.messages {
        outln!("{id}: {applied}");
        failed += usize::from(applied.is_error());
    }
    if answer.messages.is_empty() {
        outln!("no message selected");
    }
    if failed > 0 {
        return Err(format!(
            "{} of {} message(s) not {}",
            failed,
            answer.messages.len(),
            past_tense(request)
        )
        .into());
    }
    Ok(())
}

fn past_tense(request: &Request) -> &'static str {
    match request {
        Request::Delete { .. } => "deleted",
        Request::Hold { .. } => "held",
        Request::Release { .. } => "released",
        _ => "flushed",
    }
}

/// Acts on the spool of a stopped relay (this process holds its lock).
fn apply_stopped(
    spool_dir: &Path,
    config: &Config,
    request: &Request,
) -> Result<Answer, Box<dyn std::error::Error>> {
    let spool = Spool::attach(spool_dir)?;
    let mut schedule = Queue::new(RetryPolicy::from_config(&config.queue));
    for m in Spool::scan(spool_dir)?.messages {
        schedule.insert(m.envelope);
    }
    let queue = SharedQueue::new(std::sync::Arc::new(spool), schedule);
    Ok(control::apply(&queue, request, SystemTime::now()))
}

/// A flush with no relay running has nothing to act on: it waits in the
/// requests directory for the next start (which retries every message
/// already due anyway).
fn flush_stopped(spool_dir: &Path, request: &Request, messages: &Selection) -> CliResult {
    if let Selection::Ids(ids) = messages {
        for id in ids {
            if let Err(SpoolError::NotQueued(_)) = Spool::read_message(spool_dir, id) {
                return Err(format!("message {id} is not queued").into());
            }
        }
    }
    Spool::submit_request(spool_dir, &serde_json::to_vec(request)?)?;
    outln!("no relay is running: the flush is applied when it starts");
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

    fn row(der: &rustls::pki_types::CertificateDer<'_>) -> CertificateRow {
        postern_certs::inspect("x", der, UnixTime::now()).unwrap()
    }

    #[test]
    fn chain_problems_find_order_gaps_and_validity() {
        use postern_test_support::{Ca, LeafSpec};
        let root = Ca::new("Root");
        let inter = root.intermediate("Inter");
        let der = |pem: &str| {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
        };
        let leaf = row(&inter.leaf(&["mx.example.org"], false, -1, 90).der());
        let (inter, root) = (row(&der(&inter.cert_pem)), row(&der(&root.cert_pem)));
        let (problems, notes) = chain_problems(
            &[leaf.clone(), inter.clone(), root.clone()],
            "mx.example.org",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(notes.len(), 1, "the root is included: {notes:?}");
        let (problems, _) = chain_problems(&[leaf.clone(), inter.clone()], "mx.example.org");
        assert!(problems.is_empty(), "{problems:?}");
        let (problems, _) = chain_problems(
            &[leaf.clone(), root.clone(), inter.clone()],
            "mx.example.org",
        );
        assert!(problems[0].starts_with("out of order"), "{problems:?}");
        let (problems, _) = chain_problems(&[leaf.clone(), root.clone()], "mx.example.org");
        assert!(problems[0].contains("not in the file"), "{problems:?}");
        let (_, notes) = chain_problems(&[leaf], "relay.example.org");
        assert!(notes[0].contains("does not carry"), "{notes:?}");
        let expired = Ca::new("Other").leaf_with(LeafSpec::server(&["a.test"]).valid(-30, -1));
        let (problems, _) = chain_problems(&[row(&expired.der())], "a.test");
        assert_eq!(problems, ["certificate #1 is expired"]);
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(names_host("mx.example.org", "MX.example.org."));
        assert!(names_host("*.example.org", "mx.example.org"));
        assert!(!names_host("*.example.org", "example.org"));
        assert!(!names_host("*.example.org", "a.mx.example.org"));
        assert!(!names_host("example.org", "mx.example.org"));
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
