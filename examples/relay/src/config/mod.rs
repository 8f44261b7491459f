//! The relay's configuration: a TOML file in which every key is optional.
//!
//! With no file at all the embedded defaults make a working local relay:
//! listen on 127.0.0.1:2525, accept mail for `localhost`, relay for the
//! loopback networks, keep the spool in `./postern-state`. Unknown keys are
//! errors (`deny_unknown_fields`), and every error names the key.
//! docs/configuration.md documents each key with its Postfix equivalent.
//!
//! The `[tls]` table holds the TLS policy settings (`[tls.inbound]`,
//! `[tls.outbound]`, `[tls.outbound.domains."…"]`: postern-policy's format,
//! docs/policy.md), read with the rest of the file: a parse error there
//! carries its line, column and full key like any other. [`Config::validate`]
//! checks it through the policy crate and reports its errors with the `tls.`
//! prefix.
//!
//! ```
//! use postern_relay::config::Config;
//!
//! let config = Config::from_toml_str(r#"
//!     accepted_domains = ["example.com"]
//!     [queue]
//!     max_lifetime = "2d"
//! "#).unwrap();
//! assert_eq!(config.queue.max_lifetime.as_secs(), 2 * 86_400);
//! assert_eq!(config.listen[0].to_string(), "127.0.0.1:2525");
//!
//! let err = Config::from_toml_str("[queue]\nmax_lifetime = \"2 fortnights\"").unwrap_err();
//! assert!(err.to_string().contains("queue.max_lifetime"));
//! ```

pub mod routes;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use postern_policy::config::ConfigError as PolicyError;
use postern_policy::{ClientCertMode, ClientTlsMode, Policy, PolicyConfig};
use postern_types::DomainRule;

use routes::{NextHop, StaticRoutes};

/// An error in the configuration. Every variant names the key concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML does not parse, or a key is unknown or has a value of the
    /// wrong type.
    #[error("invalid `{key}`: {message}")]
    Parse {
        /// The key (dotted path) the error is at, or `<syntax>` when the
        /// file is not TOML at all.
        key: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The key (dotted path).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The key the error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Read { .. } => None,
            Self::Parse { key, .. } | Self::Invalid { key, .. } => Some(key),
        }
    }
}

/// `dane` and `dane-only` need DNSSEC-validated TLSA lookups: with
/// `[dns] dnssec = "off"` a DANE destination could only ever see "lookup
/// failed" and would be deferred forever (RFC 7672: a failed lookup is never
/// "no DANE"). Refuse such a configuration up front instead of queueing mail
/// that cannot leave.
fn refuse_dane_without_dnssec(policy: &Policy, dnssec: DnssecMode) -> Result<(), ConfigError> {
    if dnssec != DnssecMode::Off {
        return Ok(());
    }
    let outbound = &policy.outbound;
    let overrides = outbound
        .overrides
        .iter()
        .map(|(key, p)| (format!("tls.outbound.domains.\"{key}\".tls"), p));
    for (key, destination) in
        std::iter::once(("tls.outbound.tls".to_owned(), &outbound.default)).chain(overrides)
    {
        if matches!(
            destination.tls,
            ClientTlsMode::Dane | ClientTlsMode::DaneOnly
        ) {
            return Err(invalid(
                key,
                format!(
                    "\"{}\" needs DNSSEC-validated TLSA lookups, which dns.dnssec = \"off\" \
                     turns off; set dns.dnssec to \"trust-ad\" or \"validate\"",
                    destination.tls
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `name` can name an imported certificate: 1–64 characters of
/// letters, digits, `.`, `_`, `-` and space, not starting with `.` or a
/// space (so that it stays inside the certificate directory), and not the
/// reserved "Default Cert".
pub fn is_certificate_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', ' '])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' '))
        && name != postern_certs::DEFAULT_CERT_NAME
}

/// A user or group name as `useradd` accepts it: 1–32 characters of
/// letters, digits, `.`, `_` and `-` (and a final `$`), not starting with `-`.
fn is_account_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    !body.is_empty()
        && name.len() <= 32
        && !body.starts_with('-')
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A duration written as a number with a unit, Postfix style: `100ms`, `30s`,
/// `5m`, `1h`, `5d`, `1w`; a bare integer is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "DurationRepr", into = "String")]
pub struct Interval(pub Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Secs(u64),
    Text(String),
}

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?} (expected a number with unit ms, s, m, h, d or w, like \"5m\")")]
pub struct InvalidInterval(String);

impl FromStr for Interval {
    type Err = InvalidInterval;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidInterval(s.to_owned());
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match unit.trim() {
            "ms" => return Ok(Self(Duration::from_millis(n))),
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        n.checked_mul(mult)
            .map(|s| Self(Duration::from_secs(s)))
            .ok_or_else(bad)
    }
}

impl TryFrom<DurationRepr> for Interval {
    type Error = InvalidInterval;

    fn try_from(r: DurationRepr) -> Result<Self, Self::Error> {
        match r {
            DurationRepr::Secs(s) => Ok(Self(Duration::from_secs(s))),
            DurationRepr::Text(t) => t.parse(),
        }
    }
}

impl fmt::Display for Interval {
    /// The largest whole unit: `300s` shows as `5m`, `1500ms` as `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() != 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        let s = self.0.as_secs();
        for (unit, mult) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s != 0 && s.is_multiple_of(mult) {
                return write!(f, "{}{unit}", s / mult);
            }
        }
        write!(f, "{s}s")
    }
}

impl From<Interval> for String {
    fn from(i: Interval) -> Self {
        i.to_string()
    }
}

impl Interval {
    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

const fn mins(m: u64) -> Interval {
    Interval(Duration::from_secs(m * 60))
}

/// The whole configuration. See the [module docs](self); the defaults are
/// those of [`Config::default`], listed in docs/configuration.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// This relay's host name: greeting, EHLO, Received, bounces.
    /// Default: the system host name, else `localhost`.
    pub hostname: String,
    /// Addresses to accept SMTP connections on. Default `127.0.0.1:2525`.
    pub listen: Vec<SocketAddr>,
    /// The state directory: spool, certificates. Default `postern-state`
    /// (relative to the working directory).
    pub state_dir: PathBuf,
    /// The account the relay runs as (Postfix `mail_owner`): started as
    /// root, it binds its listen addresses, gives the state directory to
    /// this user and switches to it before it accepts a connection. Default
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group for `user`; default the user's primary group (and its
    /// supplementary groups). Only with `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Let the binary run as root without `user`; else it refuses to start
    /// as root. Default `false`.
    pub allow_root: bool,
    /// Domains accepted from anyone (`example.com`; `.example.com` for its
    /// subdomains). Default `["localhost"]`.
    pub accepted_domains: Vec<String>,
    /// Client networks allowed to relay anywhere.
    /// Default `["127.0.0.0/8", "::1/128"]`.
    pub authorised_networks: Vec<IpNet>,
    /// Largest message accepted, in bytes (RFC 1870 SIZE). Default 10240000.
    pub message_size_limit: u64,
    /// Largest original returned whole in a bounce, in bytes. Default 50000.
    pub bounce_size_limit: u64,
    /// A message whose header holds this many `Received:` fields, the
    /// relay's own included, is refused with `554 5.4.6` (a mail loop).
    /// At least 2. Default 50.
    pub hopcount_limit: usize,
    /// Recipients accepted per message (at least 100). Default 1000.
    pub max_recipients: usize,
    /// Simultaneous inbound connections; past it `421 4.3.2`. Default 100.
    pub max_connections: usize,
    /// NOOP, RSET, HELP and VRFY commands tolerated in a session (the count
    /// starts again after each accepted message); the next one gets
    /// `421 4.7.0` and the session is closed. Default 100.
    pub junk_command_limit: u32,
    /// Tighter limits while the relay is under connection pressure.
    pub stress: StressConfig,
    /// Bare CR / LF in message content: `normalize` (re-emitted as CRLF) or
    /// `reject` (`550 5.5.2`). Default `normalize`.
    pub bare_newlines: BareNewlines,
    /// Messages delivered at the same time. Default 10.
    pub delivery_workers: usize,
    /// Outbound connection reuse (`[connection_cache]`): several messages
    /// for one next hop over one connection.
    pub connection_cache: ConnectionCacheConfig,
    /// Certificate files and trust anchors.
    pub certificates: CertificatesConfig,
    /// Static routes: destination (`example.com`, `.example.com`, `*`) →
    /// next hop (`host`, `host:port`, `[ip]:port`). Default none (MX lookup).
    pub routes: BTreeMap<String, NextHop>,
    /// Retries and queue lifetime.
    pub queue: QueueConfig,
    /// SMTP timeouts.
    pub timeouts: Timeouts,
    /// MTA-STS policy fetching (RFC 8461), for destinations whose outbound
    /// mode is `mta-sts` (or `dane` without usable TLSA records).
    pub mta_sts: MtaStsConfig,
    /// DNS and DNSSEC (`[dns]`): where DNSSEC-validated answers come from,
    /// for DANE (RFC 7672).
    pub dns: DnsConfig,
    /// SMTP TLS Reporting (RFC 8460): daily reports about deliveries under
    /// MTA-STS, sent to the domains that ask for them. Off by default.
    pub tls_reporting: TlsReportingConfig,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    /// Default `info`.
    pub log: String,
    /// TLS policy settings: `[tls.inbound]` and `[tls.outbound]` in
    /// postern-policy's format (docs/policy.md), read with the rest of the
    /// file (so errors carry their line and full key);
    /// [`Config::policy`] validates it (and [`Config::validate`] calls it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<PolicyConfig>,
}

/// What to do with a bare CR or LF in message content (SMTP smuggling,
/// CVE-2023-51764; Postfix `smtpd_forbid_bare_newline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewlines {
    /// A bare LF ends a line and is re-emitted as CRLF. The default.
    #[default]
    Normalize,
    /// The message is refused with `550 5.5.2`.
    Reject,
}

/// Certificates and trust anchors (`[certificates]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CertificatesConfig {
    /// Trust the system's root certificates for outbound `verify` / `secure`.
    /// Default `true`.
    pub system_roots: bool,
    /// A PEM file of CA certificates trusted for outbound `verify` /
    /// `secure`, in addition to the system roots. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// A PEM file of the CAs that issue client certificates (needed for
    /// `tls.inbound.client_certificates = "require"`, and for `ask` to record
    /// a certificate as verified). Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_roots: Option<PathBuf>,
    /// Name of a certificate in the table (`cert import --name`) presented
    /// to next hops that ask for a client certificate. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_certificate: Option<String>,
    /// RSA key size of a generated Default Cert: 2048, 3072 or 4096.
    /// Default 4096.
    pub default_rsa_bits: u32,
    /// How often the certificate directory is checked for imported
    /// certificates (also reloaded on SIGHUP). Default `10s`.
    pub reload_interval: Interval,
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        Self {
            system_roots: true,
            ca_bundle: None,
            client_cert_roots: None,
            outbound_certificate: None,
            default_rsa_bits: 4096,
            reload_interval: Interval(Duration::from_secs(10)),
        }
    }
}

/// Queue settings (`[queue]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Delay after the first failed attempt. Default `5m`.
    pub min_backoff: Interval,
    /// Longest delay between attempts. Default `1h`.
    pub max_backoff: Interval,
    /// Time after which undelivered mail is returned. Default `5d`.
    pub max_lifetime: Interval,
    /// The same for bounces (null sender), which are dropped. Default `5d`.
    pub bounce_lifetime: Interval,
    /// Longest wait between two looks at the queue (new messages and the
    /// `queue flush` flag wake it earlier). Default `1s`.
    pub scan_interval: Interval,
}

impl Default for QueueConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            min_backoff: Interval(Duration::from_secs(5 * 60)),
            max_backoff: Interval(Duration::from_secs(60 * 60)),
            max_lifetime: Interval(Duration::from_secs(5 * DAY)),
            bounce_lifetime: Interval(Duration::from_secs(5 * DAY)),
            scan_interval: Interval(Duration::from_secs(1)),
        }
    }
}

/// SMTP timeouts (`[timeouts]`), RFC 5321 §4.5.3.2 values by default. Each is
/// a deadline for the whole phase, not reset by every read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Timeouts {
    /// Server: waiting for the next command (§4.5.3.2.7). Default `5m`.
    pub server_command: Interval,
    /// Server: receiving the message content, up to the final dot (DATA), or
    /// up to the last BDAT chunk. Default `10m`.
    pub server_data: Interval,
    /// Server: how long the greeting is held back while the client is
    /// watched; a client that talks meanwhile gets `554 5.5.0` and no
    /// greeting. `0` turns it off. Default `100ms`.
    pub greet_pause: Interval,
    /// Server: how long a client address that kept quiet through a whole
    /// greet pause is spared it on its next connections. `0`: never spared.
    /// Default `1d`.
    pub greet_pass_ttl: Interval,
    /// Server: longest SMTP session; then `421 4.7.0`. `0`: no limit.
    /// Default `1h`.
    pub server_session: Interval,
    /// Both sides: the TLS handshake after STARTTLS. Default `1m`.
    pub tls_handshake: Interval,
    /// Client: establishing the TCP connection. Default `30s`.
    pub connect: Interval,
    /// Client: each reply (greeting, EHLO, STARTTLS, MAIL, RCPT, DATA;
    /// §4.5.3.2.1–4). Default `5m`.
    pub client_reply: Interval,
    /// Client: sending the content and the reply to the final dot
    /// (§4.5.3.2.5–6). Default `10m`.
    pub client_data: Interval,
    /// Time open sessions get to finish at shutdown. Default `30s`.
    pub shutdown_grace: Interval,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            server_command: mins(5),
            server_data: mins(10),
            greet_pause: Interval(postern_smtp::DEFAULT_GREET_PAUSE),
            greet_pass_ttl: Interval(Duration::from_secs(86_400)),
            server_session: mins(60),
            tls_handshake: mins(1),
            connect: Interval(Duration::from_secs(30)),
            client_reply: mins(5),
            client_data: mins(10),
            shutdown_grace: Interval(Duration::from_secs(30)),
        }
    }
}

/// Limits applied while the relay is under stress (`[stress]`): while at
/// least `threshold` percent of `max_connections` are in use, so that idle
/// or misbehaving clients give their connection slots back to honest ones.
/// Postfix's `stress` parameter, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StressConfig {
    /// Percentage of `max_connections` in use from which the relay is
    /// under stress (1 to 100; `0` never). Default 90.
    pub threshold: u8,
    /// Time for each whole command line under stress. Default `10s`.
    pub server_command: Interval,
    /// Negative replies tolerated under stress. Default 1.
    pub error_limit: u32,
    /// Junk commands (NOOP, RSET, HELP, VRFY) tolerated under stress.
    /// Default 1.
    pub junk_command_limit: u32,
}

impl Default for StressConfig {
    fn default() -> Self {
        Self {
            threshold: 90,
            server_command: Interval(Duration::from_secs(10)),
            error_limit: 1,
            junk_command_limit: 1,
        }
    }
}

/// Outbound connection reuse (`[connection_cache]`, Postfix's connection
/// cache): after a message, the connection to its next hop stays open
/// when more mail for the same destination is due, and carries the next
/// messages whose TLS policy is the one it was opened and judged under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ConnectionCacheConfig {
    /// Keep connections for mail that is due (Postfix
    /// `smtp_connection_cache_on_demand`). Default `true`.
    pub enabled: bool,
    /// How long an unused connection is kept (Postfix
    /// `smtp_connection_cache_time_limit`). Default `2s`.
    pub idle: Interval,
    /// Messages one connection carries at most (Postfix
    /// `smtp_connection_reuse_count_limit`). Default 100.
    pub max_messages: u32,
    /// How long after it was opened a connection is no longer given new
    /// messages (Postfix `smtp_connection_reuse_time_limit`). Default `5m`.
    pub max_age: Interval,
}

impl Default for ConnectionCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle: Interval(Duration::from_secs(2)),
            max_messages: 100,
            max_age: mins(5),
        }
    }
}

/// MTA-STS policy fetching (`[mta_sts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MtaStsConfig {
    /// Deadline for one policy fetch (connect, TLS, request, body); RFC 8461
    /// §3.3 suggests one minute. Default `1m`.
    pub fetch_timeout: Interval,
    /// TCP port of the policy host. Always 443 in production (RFC 8461
    /// §3.3); only tests change it. Default 443.
    pub https_port: u16,
}

impl Default for MtaStsConfig {
    fn default() -> Self {
        Self {
            fetch_timeout: mins(1),
            https_port: 443,
        }
    }
}

/// Where DNSSEC answers come from (`[dns] dnssec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DnssecMode {
    /// No DNSSEC: every answer counts as insecure, DANE never applies, and
    /// the `dane` and `dane-only` modes are refused (Postfix
    /// `smtp_dns_support_level = enabled`).
    Off,
    /// Trust the AD bit of the first name server, a validating resolver
    /// (Postfix `smtp_dns_support_level = dnssec` with a local unbound;
    /// Exim's default). The default: with a resolver that does not
    /// validate, the AD bit is never set and nothing changes.
    #[default]
    TrustAd,
    /// Validate DNSSEC in the relay, from `trust_anchor` (the built-in root
    /// keys by default), asking the name servers with the DO bit.
    Validate,
}

impl DnssecMode {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::TrustAd => "trust-ad",
            Self::Validate => "validate",
        }
    }
}

/// DNS settings (`[dns]`): the name servers and how DNSSEC is trusted, for
/// DANE (RFC 7672). MX, address and TLSA lookups of outbound deliveries go
/// through the DNSSEC-aware resolver unless `dnssec = "off"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DnsConfig {
    /// `off`, `trust-ad` (the default) or `validate`; see [`DnssecMode`].
    pub dnssec: DnssecMode,
    /// The name servers (recursive resolvers) to ask, `ip` or `ip:port`.
    /// Default: those of `/etc/resolv.conf`. With `trust-ad` the first one
    /// is the resolver whose AD bit is trusted: keep it on loopback.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<NameServer>,
    /// With `validate`: a file of `DNSKEY` records the chains of trust
    /// start from. Default: the root zone's keys built into the resolver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_anchor: Option<PathBuf>,
    /// How long to wait for one answer from one server. Default `5s`.
    pub timeout: Interval,
    /// Whether destinations under the default `opportunistic` mode use DANE
    /// when their MX and TLSA records are DNSSEC-secure (Exim's
    /// `hosts_try_dane = *`): TLS is then required and authenticated by the
    /// TLSA records. Without TLSA records nothing changes. Default `true`.
    pub opportunistic_dane: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            dnssec: DnssecMode::default(),
            nameservers: Vec::new(),
            trust_anchor: None,
            timeout: Interval(Duration::from_secs(5)),
            opportunistic_dane: true,
        }
    }
}

/// A name server address: `ip` (port 53) or `ip:port` (`[v6]:port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NameServer(pub SocketAddr);

impl TryFrom<String> for NameServer {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self(SocketAddr::new(ip, 53)));
        }
        text.parse::<SocketAddr>()
            .map(Self)
            .map_err(|_| format!("{text:?} is not an IP address or ip:port"))
    }
}

impl From<NameServer> for String {
    fn from(server: NameServer) -> Self {
        server.0.to_string()
    }
}

/// SMTP TLS Reporting (`[tls_reporting]`, RFC 8460).
///
/// When enabled, every delivery attempt to a destination whose TLS was
/// governed by an MTA-STS policy (or whose policy fetch failed) is counted
/// per Policy Domain and UTC day; after the day ends (plus a random delay up
/// to `max_send_delay`) the report goes to the `rua` addresses of the
/// domain's `_smtp._tls` TXT record, by mail or HTTPS POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TlsReportingConfig {
    /// Record outcomes and send reports. Reports go to third parties, so
    /// this is the operator's choice (Postfix `smtp_tlsrpt_enable` is off by
    /// default too). Default `false`.
    pub enabled: bool,
    /// `organization-name` of the reports. Default empty: the host name.
    pub organization: String,
    /// `contact-info` of the reports. Default empty: `mailto:` and the
    /// `report_from` address.
    pub contact_info: String,
    /// `From:` address (and envelope sender) of report mails. Default empty:
    /// `postmaster@` and the host name.
    pub report_from: String,
    /// Largest random delay after midnight UTC before a day's reports are
    /// sent (RFC 8460 §4.1 asks not to send them all at once). Default `1h`.
    pub max_send_delay: Interval,
    /// How often the aggregates are saved under `<state_dir>/tlsrpt/` (also
    /// at shutdown). Default `5m`.
    pub persist_interval: Interval,
    /// Policy Domains counted per day; outcomes for more are dropped (and
    /// logged). Default 1000.
    pub max_domains: usize,
    /// Distinct failure groups (result type, MX, address) kept per Policy
    /// Domain and day; more still count in the summary. Default 100.
    pub max_failure_groups: usize,
    /// DKIM signing domain (`d=`) of report mails (RFC 8460 §5.3: reports
    /// "MUST" be DKIM-signed by the reporting domain). With
    /// `dkim_selector` and `dkim_key`: all three or none. Default empty:
    /// report mails are not signed.
    pub dkim_domain: String,
    /// DKIM selector (`s=`): the public key is published at
    /// `<selector>._domainkey.<dkim_domain>`. Default empty.
    pub dkim_selector: String,
    /// PEM file with the DKIM private key: RSA (PKCS#8 or PKCS#1, at least
    /// 2048 bits) for `rsa-sha256`, or Ed25519 (PKCS#8) for
    /// `ed25519-sha256` (RFC 8463). Relative to the working directory; read
    /// and checked at start and by `check-config`. Default none.
    pub dkim_key: Option<PathBuf>,
}

impl Default for TlsReportingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            organization: String::new(),
            contact_info: String::new(),
            report_from: String::new(),
            max_send_delay: Interval(Duration::from_secs(3600)),
            persist_interval: mins(5),
            max_domains: 1000,
            max_failure_groups: 100,
            dkim_domain: String::new(),
            dkim_selector: String::new(),
            dkim_key: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hostname: system_hostname(),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            state_dir: PathBuf::from("postern-state"),
            user: None,
            group: None,
            allow_root: false,
            accepted_domains: vec!["localhost".into()],
            // Prefix lengths 8 and 128 are within range for their families,
            // so `new_assert` cannot panic.
            authorised_networks: vec![
                IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            ],
            message_size_limit: 10_240_000,
            bounce_size_limit: 50_000,
            hopcount_limit: 50,
            max_recipients: 1000,
            max_connections: 100,
            junk_command_limit: 100,
            stress: StressConfig::default(),
            bare_newlines: BareNewlines::Normalize,
            delivery_workers: 10,
            connection_cache: ConnectionCacheConfig::default(),
            certificates: CertificatesConfig::default(),
            routes: BTreeMap::new(),
            queue: QueueConfig::default(),
            timeouts: Timeouts::default(),
            mta_sts: MtaStsConfig::default(),
            dns: DnsConfig::default(),
            tls_reporting: TlsReportingConfig::default(),
            log: "info".into(),
            tls: None,
        }
    }
}

/// The host name the kernel reports (Linux `/proc`), else `/etc/hostname`,
/// else `localhost`. (std has no gethostname; reading these files avoids a
/// dependency for one value that the configuration can set anyway.)
fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .find(|s| is_domain(s))
        .unwrap_or_else(|| "localhost".into())
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens.
fn is_domain(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Config {
    /// Parses and validates a configuration from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .and_then(|span| key_at(text, span.start))
                .unwrap_or_else(|| "<syntax>".to_owned());
            let message = match e.span().and_then(|span| line_column(text, span.start)) {
                Some((line, column)) => {
                    format!("{} (line {line}, column {column})", e.message().trim())
                }
                None => e.message().trim().to_owned(),
            };
            ConfigError::Parse { key, message }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the configuration: the file if given, else the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => {
                let config = Self::default();
                config.validate()?;
                Ok(config)
            }
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml_str(&text)
            }
        }
    }

    /// Checks the values that parse but are not acceptable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_domain(&self.hostname) {
            return Err(invalid(
                "hostname",
                format!("{:?} is not a host name", self.hostname),
            ));
        }
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed"));
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir", "must not be empty"));
        }
        self.validate_account()?;
        for d in &self.accepted_domains {
            if DomainRule::parse(d).is_err() {
                return Err(invalid(
                    "accepted_domains",
                    format!("{d:?} is not a domain or .domain"),
                ));
            }
        }
        // RFC 5321 §4.5.3.1.7: the maximum message size is at least 64K octets.
        if self.message_size_limit < 65_536 {
            return Err(invalid(
                "message_size_limit",
                "must be at least 65536 (RFC 5321 §4.5.3.1.7)",
            ));
        }
        // The relay's own Received header counts: 1 would refuse everything.
        if self.hopcount_limit < 2 {
            return Err(invalid("hopcount_limit", "must be at least 2"));
        }
        self.static_routes()?;
        let q = &self.queue;
        for (key, v) in [
            ("queue.min_backoff", q.min_backoff),
            ("queue.max_backoff", q.max_backoff),
            ("queue.max_lifetime", q.max_lifetime),
            ("queue.bounce_lifetime", q.bounce_lifetime),
        ] {
            if v.0.is_zero() {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        if q.min_backoff > q.max_backoff {
            return Err(invalid(
                "queue.min_backoff",
                "must not exceed queue.max_backoff",
            ));
        }
        let t = &self.timeouts;
        for (key, v) in [
            ("timeouts.server_command", t.server_command),
            ("timeouts.server_data", t.server_data),
            ("timeouts.tls_handshake", t.tls_handshake),
            ("timeouts.connect", t.connect),
            ("timeouts.client_reply", t.client_reply),
            ("timeouts.client_data", t.client_data),
            ("queue.scan_interval", q.scan_interval),
            (
                "certificates.reload_interval",
                self.certificates.reload_interval,
            ),
            ("mta_sts.fetch_timeout", self.mta_sts.fetch_timeout),
            (
                "tls_reporting.persist_interval",
                self.tls_reporting.persist_interval,
            ),
        ] {
            if v.0.is_zero() {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        let r = &self.tls_reporting;
        if r.max_send_delay.0 > Duration::from_secs(86_400) {
            return Err(invalid(
                "tls_reporting.max_send_delay",
                "must not exceed 1d",
            ));
        }
        if r.max_domains == 0 {
            return Err(invalid("tls_reporting.max_domains", "must be more than 0"));
        }
        // It goes into a header and MAIL FROM: one plain address.
        if !r.report_from.is_empty()
            && (!r.report_from.contains('@')
                || !r
                    .report_from
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',')))
        {
            return Err(invalid(
                "tls_reporting.report_from",
                "must be an address (local@domain)",
            ));
        }
        self.validate_dkim()?;
        self.validate_dns()?;
        if self.mta_sts.https_port == 0 {
            return Err(invalid("mta_sts.https_port", "must be more than 0"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(invalid("log", e.to_string()));
        }
        // RFC 5321 §4.5.3.1.8: at least 100 recipients.
        if self.max_recipients < 100 {
            return Err(invalid(
                "max_recipients",
                "must be at least 100 (RFC 5321 §4.5.3.1.8)",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be more than 0"));
        }
        let s = &self.stress;
        if s.threshold > 100 {
            return Err(invalid(
                "stress.threshold",
                "must be a percentage (0 to 100)",
            ));
        }
        if s.server_command.0.is_zero() {
            return Err(invalid("stress.server_command", "must be more than 0"));
        }
        if s.error_limit == 0 {
            return Err(invalid("stress.error_limit", "must be more than 0"));
        }
        if self.connection_cache.max_messages == 0 {
            return Err(invalid(
                "connection_cache.max_messages",
                "must be at least 1",
            ));
        }
        if self.delivery_workers == 0 {
            return Err(invalid("delivery_workers", "must be more than 0"));
        }
        if ![2048, 3072, 4096].contains(&self.certificates.default_rsa_bits) {
            return Err(invalid(
                "certificates.default_rsa_bits",
                "must be 2048, 3072 or 4096",
            ));
        }
        if let Some(name) = &self.certificates.outbound_certificate
            && !is_certificate_name(name)
        {
            return Err(invalid(
                "certificates.outbound_certificate",
                format!("{name:?} is not a certificate name"),
            ));
        }
        let policy = self.policy()?;
        if policy.inbound.client_certificates == ClientCertMode::Require
            && self.certificates.client_cert_roots.is_none()
        {
            return Err(invalid(
                "certificates.client_cert_roots",
                "needed when tls.inbound.client_certificates = \"require\"",
            ));
        }
        Ok(())
    }

    /// The TLS policy of the `[tls]` table (postern-policy's `[inbound]` and
    /// `[outbound]`, here `[tls.inbound]` and `[tls.outbound]`); the
    /// defaults (offer TLS, opportunistic outbound) without one.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let Some(config) = &self.tls else {
            return Ok(Policy::default());
        };
        let policy = config.validate().map_err(|e| match e {
            PolicyError::Invalid { key, problem } | PolicyError::Contradiction { key, problem } => {
                invalid(format!("tls.{key}"), problem)
            }
            PolicyError::Duplicate { key, other } => {
                invalid(format!("tls.{key}"), format!("duplicate of tls.{other}"))
            }
            other => invalid("tls", other.to_string()),
        })?;
        refuse_dane_without_dnssec(&policy, self.dns.dnssec)?;
        Ok(policy)
    }

    /// The DKIM settings of report mails (`tls_reporting.dkim_domain`,
    /// `dkim_selector`, `dkim_key`): all three or none, and a domain that is
    /// a name. Whether the selector is one and the key file holds a usable key is
    /// [`DkimSigner::from_config`](crate::reporting::dkim::DkimSigner::from_config)'s
    /// to say, when the relay starts and in `check-config`.
    /// `user` and `group` are account names (looked up when the relay
    /// starts and by `check-config`); `group` only with `user`.
    fn validate_account(&self) -> Result<(), ConfigError> {
        for (key, name) in [("user", &self.user), ("group", &self.group)] {
            if let Some(name) = name
                && !is_account_name(name)
            {
                return Err(invalid(
                    key,
                    format!("{name:?} is not an account name (letters, digits, '.', '_', '-')"),
                ));
            }
        }
        if self.group.is_some() && self.user.is_none() {
            return Err(invalid(
                "group",
                "needs `user` (the account the relay runs as)",
            ));
        }
        if cfg!(not(unix)) && self.user.is_some() {
            return Err(invalid("user", "switching users is supported on Unix only"));
        }
        Ok(())
    }

    fn validate_dns(&self) -> Result<(), ConfigError> {
        let dns = &self.dns;
        if dns.timeout.0.is_zero() {
            return Err(invalid("dns.timeout", "must be more than 0"));
        }
        if dns.trust_anchor.is_some() && dns.dnssec != DnssecMode::Validate {
            return Err(invalid(
                "dns.trust_anchor",
                "used only with dns.dnssec = \"validate\"",
            ));
        }
        Ok(())
    }

    fn validate_dkim(&self) -> Result<(), ConfigError> {
        let r = &self.tls_reporting;
        let set = [
            ("tls_reporting.dkim_domain", !r.dkim_domain.is_empty()),
            ("tls_reporting.dkim_selector", !r.dkim_selector.is_empty()),
            ("tls_reporting.dkim_key", r.dkim_key.is_some()),
        ];
        if set.iter().all(|(_, s)| !s) {
            return Ok(());
        }
        if let Some((missing, _)) = set.iter().find(|(_, s)| !s) {
            return Err(invalid(
                *missing,
                "needed for DKIM signing: set tls_reporting.dkim_domain, dkim_selector and \
                 dkim_key together, or none of them",
            ));
        }
        if !is_domain(&r.dkim_domain) {
            return Err(invalid(
                "tls_reporting.dkim_domain",
                format!("{:?} is not a domain", r.dkim_domain),
            ));
        }
        Ok(())
    }

    /// The certificate directory inside the state directory.
    pub fn cert_dir(&self) -> PathBuf {
        self.state_dir.join("certs")
    }

    /// The spool directory inside the state directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.state_dir.join("spool")
    }

    /// The static routes.
    pub fn static_routes(&self) -> Result<StaticRoutes, ConfigError> {
        let mut routes = StaticRoutes::new();
        for (key, hop) in &self.routes {
            routes
                .insert(key, hop.clone())
                .map_err(|e| invalid(format!("routes.\"{key}\""), e.to_string()))?;
        }
        Ok(routes)
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some((
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    ))
}

/// The dotted key at byte `offset` of a TOML document: the `[table]` header
/// in force there plus the key on that line. Covers the plain
/// `[section]` / `key = value` layout of this file format.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        });
    if line.starts_with('[') {
        // The error is about a table header itself (an unknown section).
        return Some(
            line.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        );
    }
    let key = line.split('=').next()?.trim();
    if key.is_empty() {
        return table;
    }
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_gives_working_defaults() {
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:2525".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.accepted_domains, ["localhost"]);
        assert_eq!(
            c.authorised_networks,
            vec![
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        assert_eq!(c.state_dir, PathBuf::from("postern-state"));
        assert_eq!(c.queue.min_backoff.as_secs(), 300);
        assert_eq!(c.queue.max_backoff.as_secs(), 3600);
        assert_eq!(c.queue.max_lifetime.as_secs(), 5 * 86_400);
        assert_eq!(c.timeouts.client_reply.as_secs(), 300);
        assert_eq!(c.timeouts.client_data.as_secs(), 600);
        assert_eq!(c.certificates.default_rsa_bits, 4096);
        assert_eq!(c.mta_sts.https_port, 443);
        assert_eq!(c.mta_sts.fetch_timeout.0, Duration::from_secs(60));
        assert_eq!(c.bare_newlines, BareNewlines::Normalize);
        assert_eq!(c.timeouts.greet_pause.0, Duration::from_millis(100));
        assert_eq!(c.timeouts.server_session.as_secs(), 3600);
        assert_eq!(c.timeouts.greet_pass_ttl.as_secs(), 86_400);
        assert_eq!(c.junk_command_limit, 100);
        assert_eq!(c.stress, StressConfig::default());
        assert_eq!(c.stress.server_command.as_secs(), 10);
        let policy = c.policy().unwrap();
        assert_eq!(policy.inbound.tls, postern_policy::ServerTlsMode::Offer);
        assert_eq!(policy.outbound.default.tls, ClientTlsMode::Opportunistic);
        assert!(!c.hostname.is_empty());
        assert!(c.tls.is_none());
        // An empty file is the same as no file.
        assert_eq!(Config::from_toml_str("").unwrap(), c);
    }

    #[test]
    fn full_file_parses() {
        let c = Config::from_toml_str(
            r#"
            hostname = "relay.example.org"
            listen = ["0.0.0.0:25", "[::]:25"]
            state_dir = "/var/lib/postern"
            user = "postern"
            group = "mail"
            accepted_domains = ["example.org", ".example.org"]
            authorised_networks = ["10.0.0.0/8"]
            bare_newlines = "reject"
            message_size_limit = 52428800
            log = "postern=debug,info"
            junk_command_limit = 20

            [routes]
            "example.net" = "127.0.0.1:2526"
            ".example.net" = "[::1]:2527"
            "*" = "smarthost.example.org"

            [queue]
            min_backoff = "1m"
            max_backoff = 7200
            max_lifetime = "3d"

            [stress]
            threshold = 80
            server_command = "5s"

            [timeouts]
            connect = "10s"
            greet_pause = "2s"
            server_session = 0

            [tls.inbound]
            tls = "require"
            [tls.outbound.domains."example.net"]
            tls = "verify"
        "#,
        )
        .unwrap();
        assert_eq!(c.hostname, "relay.example.org");
        assert_eq!(
            (c.user.as_deref(), c.group.as_deref(), c.allow_root),
            (Some("postern"), Some("mail"), false)
        );
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.queue.max_backoff.as_secs(), 7200);
        assert_eq!(c.timeouts.connect.as_secs(), 10);
        assert_eq!(c.timeouts.greet_pause.as_secs(), 2);
        assert!(c.timeouts.server_session.0.is_zero());
        assert_eq!(c.junk_command_limit, 20);
        assert_eq!((c.stress.threshold, c.stress.error_limit), (80, 1));
        assert_eq!(c.stress.server_command.as_secs(), 5);
        assert_eq!(
            c.timeouts.client_reply.as_secs(),
            300,
            "others keep defaults"
        );
        assert_eq!(c.bare_newlines, BareNewlines::Reject);
        let routes = c.static_routes().unwrap();
        assert_eq!(
            routes.lookup("a.example.net").unwrap().1.to_string(),
            "[::1]:2527"
        );
        assert_eq!(
            routes.lookup("other.org").unwrap().1.to_string(),
            "smarthost.example.org:25"
        );
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.inbound.tls, postern_policy::ServerTlsMode::Require);
        let policy = c.policy().unwrap();
        assert_eq!(policy.inbound.tls, postern_policy::ServerTlsMode::Require);
        assert_eq!(
            policy.outbound.explain(&"example.net".parse().unwrap()),
            "domain example.net (override): verify"
        );
        assert_eq!(c.queue.min_backoff.0, Duration::from_secs(60));
    }

    #[test]
    fn dane_modes_need_dnssec() {
        for (text, key) in [
            ("[tls.outbound]\ntls = \"dane\"", "tls.outbound.tls"),
            (
                "[tls.outbound.domains.\"example.org\"]\ntls = \"dane-only\"",
                "tls.outbound.domains.\"example.org\".tls",
            ),
        ] {
            // Accepted with the default (trust the resolver's AD bit) and
            // with validation in the relay.
            for dnssec in ["", "[dns]\ndnssec = \"validate\"\n"] {
                let config = Config::from_toml_str(&format!("{dnssec}{text}")).unwrap();
                assert!(config.validate().is_ok(), "{dnssec}{text}");
            }
            let e = Config::from_toml_str(&format!("[dns]\ndnssec = \"off\"\n{text}"))
                .and_then(|c| c.policy())
                .unwrap_err();
            assert_eq!(e.key(), Some(key), "{e}");
            assert!(e.to_string().contains("TLSA"), "{e}");
        }
        let ok =
            Config::from_toml_str("[dns]\ndnssec = \"off\"\n[tls.outbound]\ntls = \"mta-sts\"")
                .unwrap();
        assert!(ok.policy().is_ok());
    }

    #[test]
    fn dns_settings() {
        let config = Config::from_toml_str(
            "[dns]\ndnssec = \"validate\"\nnameservers = [\"127.0.0.1\", \"[::1]:5353\"]\n\
             trust_anchor = \"root.key\"\ntimeout = \"2s\"\nopportunistic_dane = false",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.dns.dnssec, DnssecMode::Validate);
        assert_eq!(
            config.dns.nameservers,
            vec![
                NameServer("127.0.0.1:53".parse().unwrap()),
                NameServer("[::1]:5353".parse().unwrap())
            ]
        );
        assert!(!config.dns.opportunistic_dane);
        assert_eq!(Config::default().dns.dnssec, DnssecMode::TrustAd);
        assert!(Config::default().dns.opportunistic_dane);
        for (text, key) in [
            ("[dns]\nnameservers = [\"ns.example\"]", "dns.nameservers"),
            ("[dns]\ndnssec = \"maybe\"", "dns.dnssec"),
            ("[dns]\ntimeout = \"0s\"", "dns.timeout"),
            ("[dns]\ntrust_anchor = \"root.key\"", "dns.trust_anchor"),
        ] {
            let e = Config::from_toml_str(text)
                .and_then(|c| c.validate())
                .unwrap_err();
            assert!(e.key().is_some_and(|k| k.starts_with(key)), "{text}: {e}");
        }
    }

    #[test]
    fn tls_reporting_settings_default_and_validate() {
        let c = Config::default();
        assert!(!c.tls_reporting.enabled);
        assert_eq!(c.tls_reporting.max_send_delay.0, Duration::from_secs(3600));
        assert_eq!(c.tls_reporting.max_domains, 1000);
        assert_eq!(
            error_key("[tls_reporting]\nmax_send_delay = \"2d\""),
            "tls_reporting.max_send_delay"
        );
        assert_eq!(
            error_key("[tls_reporting]\nmax_domains = 0"),
            "tls_reporting.max_domains"
        );
        assert_eq!(
            error_key("[tls_reporting]\nreport_from = \"nobody\""),
            "tls_reporting.report_from"
        );
        assert_eq!(
            error_key("[tls_reporting]\nreport_from = \"a@b\\r\\nBcc: x@y\""),
            "tls_reporting.report_from"
        );
        let c = Config::from_toml_str(
            "[tls_reporting]\nenabled = true\nmax_send_delay = \"0s\"\norganization = \"Example\"",
        )
        .unwrap();
        assert!(c.tls_reporting.enabled);
        assert!(c.tls_reporting.max_send_delay.0.is_zero());
        assert_eq!(c.tls_reporting.organization, "Example");
        // check-config prints the section.
        assert!(toml::to_string(&c).unwrap().contains("[tls_reporting]"));
    }

    #[test]
    fn mta_sts_settings_are_validated() {
        assert_eq!(error_key("[mta_sts]\nhttps_port = 0"), "mta_sts.https_port");
        assert_eq!(
            error_key("[mta_sts]\nfetch_timeout = \"0s\""),
            "mta_sts.fetch_timeout"
        );
        let c =
            Config::from_toml_str("[mta_sts]\nhttps_port = 8443\nfetch_timeout = \"20s\"").unwrap();
        assert_eq!(c.mta_sts.https_port, 8443);
        assert_eq!(c.mta_sts.fetch_timeout.0, Duration::from_secs(20));
    }

    fn build_signer(c: &Config) -> Result<Option<crate::reporting::dkim::DkimSigner>, ConfigError> {
        crate::reporting::dkim::DkimSigner::from_config(&c.tls_reporting)
    }

    #[test]
    fn dkim_settings_are_all_or_none_and_the_key_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ed = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        let pem = |label: &str, der: &[u8]| {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
        };
        let good = dir.path().join("ed.pem");
        std::fs::write(&good, pem("PRIVATE KEY", ed.to_pkcs8().unwrap().as_ref())).unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, pem("CERTIFICATE", b"not a key")).unwrap();
        let toml = |domain: &str, selector: &str, key: Option<&Path>| {
            let mut t = "[tls_reporting]\n".to_owned();
            if !domain.is_empty() {
                t.push_str(&format!("dkim_domain = \"{domain}\"\n"));
            }
            if !selector.is_empty() {
                t.push_str(&format!("dkim_selector = \"{selector}\"\n"));
            }
            if let Some(key) = key {
                t.push_str(&format!("dkim_key = {:?}\n", key.display().to_string()));
            }
            t
        };

        assert!(build_signer(&Config::default()).unwrap().is_none());
        let c = Config::from_toml_str(&toml("example.com", "tlsrpt", Some(&good))).unwrap();
        let signer = build_signer(&c).unwrap().unwrap();
        assert_eq!(signer.domain(), "example.com");
        assert_eq!(signer.selector(), "tlsrpt");
        assert_eq!(signer.algorithm(), "ed25519-sha256");
        // Printed back by check-config.
        let printed = toml::to_string(&c).unwrap();
        assert!(printed.contains("dkim_selector = \"tlsrpt\""), "{printed}");
        assert_eq!(Config::from_toml_str(&printed).unwrap(), c);

        // All three or none: the error names a missing one.
        for (text, key) in [
            (toml("example.com", "", None), "tls_reporting.dkim_selector"),
            (toml("", "tlsrpt", Some(&good)), "tls_reporting.dkim_domain"),
            (
                toml("example.com", "tlsrpt", None),
                "tls_reporting.dkim_key",
            ),
            (toml("", "", Some(&good)), "tls_reporting.dkim_domain"),
        ] {
            assert_eq!(error_key(&text), key, "{text}");
        }
        // Bad names, unreadable files and unusable keys.
        let small = dir.path().join("small.pem");
        // Too small to be accepted.
        std::fs::write(&small, crate::reporting::dkim::tests::RSA_1024_PKCS1).unwrap();
        for (text, key, words) in [
            (
                toml("exa mple.com", "tlsrpt", Some(&good)),
                "tls_reporting.dkim_domain",
                "not a domain",
            ),
            (
                toml("example.com", "a/b", Some(&good)),
                "tls_reporting.dkim_selector",
                "not a selector",
            ),
            (
                toml(
                    "example.com",
                    "tlsrpt",
                    Some(&dir.path().join("missing.pem")),
                ),
                "tls_reporting.dkim_key",
                "cannot read",
            ),
            (
                toml("example.com", "tlsrpt", Some(&cert)),
                "tls_reporting.dkim_key",
                "no PEM private key",
            ),
            (
                toml("example.com", "tlsrpt", Some(&small)),
                "tls_reporting.dkim_key",
                "2048 bits",
            ),
        ] {
            // The names are the configuration's; the key file is read when
            // the signer is built (at start and by check-config).
            let e = Config::from_toml_str(&text)
                .and_then(|c| build_signer(&c).map(|_| c))
                .unwrap_err();
            assert_eq!(e.key(), Some(key), "{text}");
            assert!(e.to_string().contains(words), "{e}");
        }
    }

    fn error_key(text: &str) -> String {
        let e = Config::from_toml_str(text).unwrap_err();
        let msg = e.to_string();
        let key = e.key().unwrap().to_owned();
        assert!(msg.contains(&key), "{msg}");
        key
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(error_key("colour = \"blue\""), "colour");
        assert_eq!(
            error_key("[queue]\nmin_backof = \"5m\""),
            "queue.min_backof"
        );
        assert_eq!(
            error_key("[queue]\nmin_backoff = \"5 parsecs\""),
            "queue.min_backoff"
        );
        assert_eq!(error_key("listen = [\"localhost\"]"), "listen");
        assert_eq!(
            error_key("authorised_networks = [\"10.0.0.0/33\"]"),
            "authorised_networks"
        );
        assert_eq!(
            error_key("[routes]\n\"example.com\" = \"bad host:99999\""),
            "routes.\"example.com\""
        );
        assert_eq!(
            error_key("[routes]\n\"*.example.com\" = \"mx.example.com\""),
            "routes.\"*.example.com\""
        );
        assert_eq!(error_key("[nonsense]\nx = 1"), "nonsense");
        assert_eq!(error_key("message_size_limit = 1000"), "message_size_limit");
        assert_eq!(error_key("hopcount_limit = 1"), "hopcount_limit");
        assert_eq!(error_key("hostname = \"not a host\""), "hostname");
        assert_eq!(error_key("listen = []"), "listen");
        assert_eq!(
            error_key("[queue]\nmin_backoff = \"2h\""),
            "queue.min_backoff"
        );
        assert_eq!(error_key("[timeouts]\nrcpt = 0"), "timeouts.rcpt");
        assert_eq!(
            error_key("[tls.outbound]\ntls = \"fingerprint\""),
            "tls.outbound.pins"
        );
        assert_eq!(
            error_key("[tls.inbound]\nclient_certificates = \"require\""),
            "tls.inbound.client_certificates"
        );
        assert_eq!(
            error_key("[tls.inbound]\ntls = \"require\"\nclient_certificates = \"require\""),
            "certificates.client_cert_roots"
        );
        assert_eq!(error_key("max_recipients = 5"), "max_recipients");
        assert_eq!(
            error_key("[certificates]\ndefault_rsa_bits = 1024"),
            "certificates.default_rsa_bits"
        );
        assert_eq!(
            error_key("accepted_domains = [\"a..b\"]"),
            "accepted_domains"
        );
        assert_eq!(error_key("log = \"[[[\""), "log");
        assert_eq!(error_key("hostname = "), "hostname");
        assert_eq!(error_key("user = \"\""), "user");
        assert_eq!(error_key("user = \"../x\""), "user");
        assert_eq!(error_key("user = \"-x\""), "user");
        assert_eq!(error_key("user = \"mail\"\ngroup = \"a b\""), "group");
        assert_eq!(error_key("group = \"mail\""), "group");
        assert_eq!(error_key("allow_root = \"yes\""), "allow_root");
    }

    /// `[tls]` is read with the rest of the file: an error there names the
    /// real line, column and full key, and quotes nothing that is not in the
    /// file.
    #[test]
    fn tls_errors_carry_line_column_and_full_key() {
        let text = "hostname = \"relay.test\"\n\n[tls.inbound]\ntls = \"offer\"\n\n\
                    [tls.outbond]\ntls = \"verify\"\n";
        let e = Config::from_toml_str(text).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.key(), Some("tls.outbond"), "{msg}");
        assert!(msg.contains("unknown field `outbond`"), "{msg}");
        assert!(msg.contains("(line 6, column 6)"), "{msg}");
        assert!(!msg.contains("[outbond]"), "{msg}");

        let text = "[tls.outbound.domains.\"example.com\"]\ntls = \"verify\"\n\
                    certificate_macth = [\"nexthop\"]\n";
        let e = Config::from_toml_str(text).unwrap_err();
        let msg = e.to_string();
        assert_eq!(
            e.key(),
            Some("tls.outbound.domains.\"example.com\".certificate_macth"),
            "{msg}"
        );
        assert!(msg.contains("(line 3, column 1)"), "{msg}");

        let text = "log = \"info\"\n[tls.inbound]\ntls = \"maybe\"\n";
        let e = Config::from_toml_str(text).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.key(), Some("tls.inbound.tls"), "{msg}");
        assert!(msg.contains("(line 3, column 7)"), "{msg}");

        // Duplicates name both keys in full.
        let text = "[tls.outbound.domains.\"Example.com\"]\ntls = \"verify\"\n\
                    [tls.outbound.domains.\"example.com.\"]\ntls = \"verify\"\n";
        let msg = Config::from_toml_str(text).unwrap_err().to_string();
        assert!(
            msg.contains("duplicate of tls.outbound.domains.\"Example.com\""),
            "{msg}"
        );
    }

    #[test]
    fn intervals() {
        assert_eq!("30s".parse::<Interval>().unwrap().as_secs(), 30);
        assert_eq!("5m".parse::<Interval>().unwrap().as_secs(), 300);
        assert_eq!("1h".parse::<Interval>().unwrap().as_secs(), 3600);
        assert_eq!("5d".parse::<Interval>().unwrap().as_secs(), 432_000);
        assert_eq!("2w".parse::<Interval>().unwrap().as_secs(), 1_209_600);
        assert_eq!("42".parse::<Interval>().unwrap().as_secs(), 42);
        assert_eq!(
            "250ms".parse::<Interval>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(Interval(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!("0".parse::<Interval>().unwrap().0, Duration::ZERO);
        for bad in ["", "m", "5 minutes", "-5m", "1.5h", "99999999999999999999d"] {
            assert!(bad.parse::<Interval>().is_err(), "{bad}");
        }
        assert_eq!(Interval(Duration::from_secs(300)).to_string(), "5m");
        assert_eq!(Interval(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(Interval(Duration::from_secs(432_000)).to_string(), "5d");
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let c = Config::default();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(Config::from_toml_str(&text).unwrap(), c);
    }
}
