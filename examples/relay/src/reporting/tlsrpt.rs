//! SMTP TLS Reporting (RFC 8460) for the delivery layer.
//!
//! postern-policy holds the model ([`DailyAggregator`], [`Report`],
//! [`TlsRptRecord`]); this module does what it leaves to the caller:
//!
//! 1. **Recording.** When `[tls_reporting] enabled = true`, every delivery
//!    attempt to a destination whose TLS was governed by an MTA-STS policy
//!    (or whose policy fetch failed: `sts-policy-fetch-error`,
//!    `sts-policy-invalid`, `sts-webpki-invalid`) is counted into the
//!    [`DailyAggregator`] of its Policy Domain and UTC day (§4.1). Attempts
//!    that never reached TLS for reasons unrelated to it (a refused
//!    connection) are not counted (§4.3.4: transient errors need not be).
//!    Memory is bounded: at most `max_domains` Policy Domains per day, at
//!    most `max_failure_groups` failure groups per domain, at most
//!    [`MAX_DAYS`] unsent days. With reporting disabled there is no
//!    [`TlsReporter`] at all and nothing is recorded.
//! 2. **Persistence.** The aggregates are saved as JSON in
//!    `<state_dir>/tlsrpt/aggregates.json` (temporary file, sync, rename,
//!    directory sync) every `persist_interval` and at shutdown, and read
//!    back at start.
//! 3. **Sending.** After a UTC day ended plus a random delay of up to
//!    `max_send_delay` (§4.1: reports "SHOULD" not all be sent at
//!    midnight), each Policy Domain's report goes to the `rua` URIs of its
//!    `_smtp._tls.<domain>` TXT record (§3; not exactly one valid
//!    `v=TLSRPTv1` record: no report):
//!    - `mailto:` — a §5.3 message (`multipart/report;
//!      report-type="tlsrpt"`, a text part and the gzip'd JSON as
//!      `application/tlsrpt+gzip`, base64, with the §5.1 file name;
//!      `TLS-Report-Domain` and `TLS-Report-Submitter` headers) queued
//!      through the spool like a bounce and retried like any message;
//!    - `https:` — one POST of the gzip'd JSON with `Content-Type:
//!      application/tlsrpt+gzip` (§5.2), certificate verified against the
//!      relay's outbound trust roots; not retried.
//!
//! §5.3: "when sending failure reports via SMTP, sending MTAs MUST deliver
//! reports despite any TLS-related failures and SHOULD NOT include this
//! SMTP session in the next report". A report mail's envelope says so
//! ([`Envelope::tls_report`], stored with it in the spool): it is delivered without
//! MTA-STS (the operator's own per-domain TLS rules still apply) and its
//! sessions are not recorded. §5.3 also requires a DKIM signature on report
//! mails: with `dkim_domain`, `dkim_selector` and `dkim_key` set, each report
//! mail is signed ([`crate::reporting::dkim`]) before it is queued; without them it is
//! not, and an operator who enables reporting routes report mail through a
//! signing smart host (or accepts that some receivers ignore unsigned
//! reports).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use postern_policy::mta_sts::StsPolicy;
use postern_policy::tlsrpt::{
    DailyAggregator, PolicyDetails, PolicyType, Report, ReportPeriod, ReportUri, SessionOutcome,
    TlsRptRecord,
};
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsConnector;

use crate::config::{Config, ConfigError};
use crate::envelope::{Envelope, MailParams, Mailbox, MessageId, Recipient};
use crate::net::dns::Resolver;
use crate::net::https::{self, AbortOnDrop, ConnectError, write_atomic};
use crate::queue::SharedQueue;
use crate::reporting::dkim::DkimSigner;

/// Unsent days kept; an older day's aggregates are dropped (a relay that
/// could not send for this long has bigger problems).
pub const MAX_DAYS: usize = 3;

/// The file holding the aggregates under the reporter's directory.
pub const STATE_FILE: &str = "aggregates.json";

/// Deadline for one HTTPS report upload (connect, TLS, request, response).
const POST_TIMEOUT: Duration = Duration::from_secs(60);

/// What the reports say about their sender, from `[tls_reporting]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportSettings {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`.
    pub contact_info: String,
    /// `From:` and envelope sender of report mails.
    pub report_from: String,
    /// The submitter: this relay's host name (`TLS-Report-Submitter`, the
    /// `sender` of the §5.1 file name).
    pub submitter: String,
    /// Largest random delay after the end of a day, in seconds.
    pub max_send_delay: i64,
    /// Policy Domains counted per day.
    pub max_domains: usize,
    /// Failure groups kept per Policy Domain and day.
    pub max_failure_groups: usize,
    /// The DKIM signer of report mails (§5.3), when configured.
    pub dkim: Option<Arc<DkimSigner>>,
}

impl ReportSettings {
    /// The settings of `config` (empty values get their documented defaults),
    /// with the DKIM key read and checked.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let r = &config.tls_reporting;
        let or = |v: &str, d: String| if v.is_empty() { d } else { v.to_owned() };
        let report_from = or(&r.report_from, format!("postmaster@{}", config.hostname));
        Ok(Self {
            organization: or(&r.organization, config.hostname.clone()),
            contact_info: or(&r.contact_info, format!("mailto:{report_from}")),
            report_from,
            submitter: config.hostname.clone(),
            max_send_delay: i64::try_from(r.max_send_delay.0.as_secs()).unwrap_or(86_400),
            max_domains: r.max_domains,
            max_failure_groups: r.max_failure_groups,
            dkim: DkimSigner::from_config(r)?.map(Arc::new),
        })
    }
}

/// One day of aggregates.
#[derive(Debug)]
struct Day {
    /// When its reports are due (seconds since the epoch).
    send_at: i64,
    domains: BTreeMap<String, DailyAggregator>,
}

#[derive(Debug, Default)]
struct State {
    days: BTreeMap<i64, Day>,
    dirty: bool,
    dropped: u64,
}

/// The persisted form: per day, per Policy Domain, the report so far.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    days: Vec<SavedDay>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedDay {
    start: i64,
    domains: BTreeMap<String, Report>,
}

/// A report ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DueReport {
    /// The Policy Domain.
    pub domain: String,
    /// The day covered.
    pub period: ReportPeriod,
    /// The report.
    pub report: Report,
    /// The alphanumeric unique id (the §5.1 file name's `unique-id`).
    pub unique_id: String,
}

impl DueReport {
    /// The §5.1 file name of the compressed report.
    pub fn file_name(&self, submitter: &str) -> String {
        format!(
            "{}.gz",
            Report::file_name(submitter, &self.domain, self.period, Some(&self.unique_id))
        )
    }
}

/// What [`TlsReporter::send_due`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendSummary {
    /// Reports taken (one per Policy Domain and day).
    pub reports: usize,
    /// Report mails queued.
    pub mails_queued: usize,
    /// HTTPS uploads accepted (2xx).
    pub posts_sent: usize,
    /// Reports or URIs that could not be sent (no record, errors).
    pub failed: usize,
}

/// Records outcomes and sends the reports; one per relay, shared by the
/// delivery workers.
pub struct TlsReporter {
    settings: ReportSettings,
    dir: PathBuf,
    state: Mutex<State>,
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReporter")
            .field("settings", &self.settings)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Seconds since the epoch.
pub fn unix_time(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A random number (std's randomly keyed SipHash of a counter and the
/// clock: unpredictable enough for send delays and report ids, and no
/// dependency for it).
fn random_u64() -> u64 {
    use std::hash::BuildHasher as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new()
        .hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), SystemTime::now()))
}

/// The `policy` entry for an MTA-STS policy of `domain` (§4.4: the policy
/// lines and the `mx` patterns); `None`: the fetch failed and no policy
/// applied.
pub fn sts_policy_details(domain: &str, policy: Option<&StsPolicy>) -> PolicyDetails {
    let (policy_string, mx_host) = match policy {
        Some(p) => (p.to_lines(), p.mx.iter().map(ToString::to_string).collect()),
        None => (Vec::new(), Vec::new()),
    };
    PolicyDetails::new(PolicyType::Sts, domain)
        .with_policy_string(policy_string)
        .with_mx_host(mx_host)
}

impl TlsReporter {
    /// A reporter persisting under `dir`, verifying HTTPS report servers
    /// against `roots`; reads the saved aggregates (an unreadable file is
    /// logged and ignored).
    pub fn new(
        settings: ReportSettings,
        roots: Arc<RootCertStore>,
        dir: PathBuf,
    ) -> Result<Self, rustls::Error> {
        let this = Self {
            settings,
            dir,
            state: Mutex::new(State::default()),
            connector: https::connector(roots)?,
        };
        this.load();
        Ok(this)
    }

    /// The settings.
    pub fn settings(&self) -> &ReportSettings {
        &self.settings
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn load(&self) {
        let path = self.path();
        let saved: Saved = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable tls-rpt aggregates");
                    return;
                }
            },
            Err(_) => return,
        };
        let mut state = self.state();
        for day in saved.days.into_iter().rev().take(MAX_DAYS) {
            let period = ReportPeriod::utc_day_containing(day.start);
            let domains = day
                .domains
                .iter()
                .take(self.settings.max_domains)
                .map(|(d, r)| {
                    let agg =
                        DailyAggregator::from_report(period, r, self.settings.max_failure_groups);
                    (d.clone(), agg)
                })
                .collect();
            state.days.insert(
                period.start(),
                Day {
                    send_at: self.send_time(period),
                    domains,
                },
            );
        }
    }

    fn send_time(&self, period: ReportPeriod) -> i64 {
        let delay = match u64::try_from(self.settings.max_send_delay) {
            Ok(0) | Err(_) => 0,
            Ok(max) => i64::try_from(random_u64() % (max + 1)).unwrap_or(0),
        };
        period.next().start() + delay
    }

    /// Counts one session of a delivery to `policy_domain`.
    pub fn record(&self, policy_domain: &str, outcome: SessionOutcome) {
        let period = ReportPeriod::utc_day_containing(outcome.at);
        let send_at = self.send_time(period);
        let limits = (self.settings.max_domains, self.settings.max_failure_groups);
        let mut state = self.state();
        if !state.days.contains_key(&period.start()) && state.days.len() >= MAX_DAYS {
            // Drop the oldest unsent day to make room.
            if let Some((&oldest, _)) = state.days.iter().next() {
                if oldest > period.start() {
                    state.dropped += 1;
                    return;
                }
                state.days.remove(&oldest);
                tracing::warn!(day = oldest, "tls-rpt: oldest unsent day dropped");
            }
        }
        let day = state.days.entry(period.start()).or_insert_with(|| Day {
            send_at,
            domains: BTreeMap::new(),
        });
        let domain = policy_domain.to_ascii_lowercase();
        if !day.domains.contains_key(&domain) && day.domains.len() >= limits.0 {
            state.dropped += 1;
            if state.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = state.dropped,
                    "tls-rpt: too many policy domains today; outcome not recorded"
                );
            }
            return;
        }
        let agg = day
            .domains
            .entry(domain)
            .or_insert_with(|| DailyAggregator::with_failure_group_limit(period, limits.1));
        // The period was derived from `outcome.at`: it cannot fall outside.
        let _ = agg.record(outcome);
        state.dirty = true;
    }

    /// Takes the reports of every day whose send time has come by `now`.
    pub fn take_due(&self, now: SystemTime) -> Vec<DueReport> {
        let now = unix_time(now);
        let mut state = self.state();
        let due: Vec<i64> = state
            .days
            .iter()
            .filter(|(_, d)| d.send_at <= now)
            .map(|(&start, _)| start)
            .collect();
        let mut out = Vec::new();
        for start in due {
            let Some(day) = state.days.remove(&start) else {
                continue;
            };
            state.dirty = true;
            for (domain, agg) in day.domains {
                if agg.is_empty() {
                    continue;
                }
                let unique_id = format!("{:016x}", random_u64());
                let period = agg.period();
                let report_id =
                    format!("{}.{unique_id}@{}", period.start(), self.settings.submitter);
                let report = agg.into_report(
                    self.settings.organization.clone(),
                    self.settings.contact_info.clone(),
                    report_id,
                );
                out.push(DueReport {
                    domain,
                    period,
                    report,
                    unique_id,
                });
            }
        }
        out
    }

    /// Saves the aggregates if they changed since the last save (blocking
    /// file I/O: call it off the runtime).
    pub fn save(&self) -> std::io::Result<()> {
        let saved = {
            let mut state = self.state();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            Saved {
                days: state
                    .days
                    .iter()
                    .map(|(&start, day)| SavedDay {
                        start,
                        domains: day
                            .domains
                            .iter()
                            .map(|(d, agg)| (d.clone(), agg.report("", "", "")))
                            .collect(),
                    })
                    .collect(),
            }
        };
        let result = write_atomic(&self.path(), &saved);
        if result.is_err() {
            self.state().dirty = true;
        }
        result
    }

    /// Sends every report due by `now` (see the module documentation) and
    /// returns what was done. `now` is passed in so that tests can end a day.
    pub async fn send_due<R: Resolver>(
        &self,
        resolver: &R,
        queue: &Arc<SharedQueue>,
        now: SystemTime,
    ) -> SendSummary {
        let mut summary = SendSummary::default();
        for due in self.take_due(now) {
            summary.reports += 1;
            let name = format!("_smtp._tls.{}", due.domain);
            let record = match resolver.txt(&name).await {
                Ok(records) => TlsRptRecord::select(records.iter().map(String::as_str)),
                Err(e) => {
                    tracing::info!(domain = %due.domain, error = %e, "tls-rpt: record lookup failed; report dropped");
                    summary.failed += 1;
                    continue;
                }
            };
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(domain = %due.domain, error = %e, "tls-rpt: no reporting record; report dropped");
                    summary.failed += 1;
                    continue;
                }
            };
            let gzip = match gzip_json(&due.report) {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(domain = %due.domain, error = %e, "tls-rpt: cannot compress report");
                    summary.failed += 1;
                    continue;
                }
            };
            for uri in &record.rua {
                match uri {
                    ReportUri::Mailto(to) => {
                        // Queued at the real time: `now` only decides what is due.
                        let queued_at = SystemTime::now();
                        match self.queue_mail(queue, &due, to, &gzip, queued_at).await {
                            Ok(id) => {
                                tracing::info!(domain = %due.domain, to = %to, queue_id = %id, "tls-rpt: report mail queued");
                                summary.mails_queued += 1;
                            }
                            Err(e) => {
                                tracing::error!(domain = %due.domain, to = %to, error = %e, "tls-rpt: cannot queue report mail");
                                summary.failed += 1;
                            }
                        }
                    }
                    ReportUri::Https(url) => match self.post(resolver, url, gzip.clone()).await {
                        Ok(status) => {
                            tracing::info!(domain = %due.domain, %url, status, "tls-rpt: report posted");
                            summary.posts_sent += 1;
                        }
                        Err(e) => {
                            tracing::warn!(domain = %due.domain, %url, error = %e, "tls-rpt: report upload failed");
                            summary.failed += 1;
                        }
                    },
                    _ => {}
                }
            }
        }
        summary
    }

    async fn queue_mail(
        &self,
        queue: &Arc<SharedQueue>,
        due: &DueReport,
        to: &str,
        gzip: &[u8],
        now: SystemTime,
    ) -> Result<MessageId, String> {
        let mut content = build_mail(&self.settings, due, to, gzip, now);
        // §5.3: "The report MUST be signed using DKIM [RFC6376]".
        if let Some(signer) = &self.settings.dkim {
            content = signer.sign(&content, now).map_err(|e| e.to_string())?;
        }
        let from = Mailbox::parse(&self.settings.report_from)
            .map_err(|e| format!("bad report_from {}: {e}", self.settings.report_from))?;
        let to = Mailbox::parse(to).map_err(|e| format!("bad recipient {to}: {e}"))?;
        let mut envelope = Envelope::new(from, [Recipient::new(to)], MailParams::default(), now);
        envelope.tls_report = true;
        let spool = Arc::clone(&queue.spool);
        let committed = tokio::task::spawn_blocking(move || {
            let mut incoming = spool.begin(envelope, None)?;
            incoming.write_chunk(&content)?;
            incoming.commit()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let id = committed.id.clone();
        queue.enqueue(committed);
        Ok(id)
    }

    /// One HTTPS POST of the compressed report (§5.2); the 2xx status.
    async fn post<R: Resolver>(
        &self,
        resolver: &R,
        url: &str,
        body: Vec<u8>,
    ) -> Result<u16, String> {
        let target = HttpsTarget::parse(url).ok_or("malformed https uri")?;
        let attempt = async {
            let tls = https::connect(&self.connector, resolver, &target.host, target.port)
                .await
                .map_err(|e| match e {
                    ConnectError::Resolve(e) => format!("address lookup for {}: {e}", target.host),
                    ConnectError::Connect(e) | ConnectError::Name(e) => e,
                    ConnectError::Tls(e) => format!("tls: {e}"),
                })?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(conn);
            let _abort = AbortOnDrop(driver);
            let request = Request::post(&target.path)
                .header(HOST, target.authority.as_str())
                .header(CONNECTION, "close")
                .header(CONTENT_TYPE, "application/tlsrpt+gzip")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            // Drain a little of the body so the server sees the exchange end.
            let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await;
            if status.is_success() {
                Ok(status.as_u16())
            } else {
                Err(format!("http status {}", status.as_u16()))
            }
        };
        tokio::time::timeout(POST_TIMEOUT, attempt)
            .await
            .map_err(|_| "timed out".to_owned())?
    }
}

/// The parts of an `https://` URL that the upload needs.
#[derive(Debug, PartialEq, Eq)]
struct HttpsTarget {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl HttpsTarget {
    fn parse(url: &str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let mut path = rest[end..].split('#').next().unwrap_or_default().to_owned();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if authority.contains('@') {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => 443,
                None => return None,
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().ok()?),
                None => (authority.to_owned(), 443),
            }
        };
        (!host.is_empty()).then(|| Self {
            host,
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// The report as gzip'd JSON (§5: gzip "SHOULD" be used).
pub fn gzip_json(report: &Report) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&json)?;
    encoder.finish()
}

/// The §5.3 report mail to `to`, CRLF line endings.
///
/// ```text
/// Subject: Report Domain: <policy domain> Submitter: <host> Report-ID: <<id>>
/// TLS-Report-Domain: <policy domain>
/// TLS-Report-Submitter: <host>
/// Content-Type: multipart/report; report-type="tlsrpt"; boundary="…"
///   text/plain part
///   application/tlsrpt+gzip part, base64, filename = the §5.1 name + ".gz"
/// ```
pub fn build_mail(
    settings: &ReportSettings,
    due: &DueReport,
    to: &str,
    gzip: &[u8],
    now: SystemTime,
) -> Vec<u8> {
    let boundary = format!("tlsrpt-{:016x}", random_u64());
    let submitter = &settings.submitter;
    let domain = &due.domain;
    let id = &due.report.report_id;
    let file = due.file_name(submitter);
    let range = &due.report.date_range;
    let mut out = String::new();
    let mut line = |l: &str| {
        out.push_str(l);
        out.push_str("\r\n");
    };
    line(&format!("From: <{}>", settings.report_from));
    line(&format!("To: <{to}>"));
    line(&format!(
        "Date: {}",
        crate::reporting::dsn::rfc5322_date(now)
    ));
    line(&format!(
        "Message-ID: <{}.{}.tlsrpt@{submitter}>",
        due.period.start(),
        due.unique_id
    ));
    // §5.3: "Subject: Report Domain: <domain> Submitter: <submitter> Report-ID: <id>".
    line(&format!(
        "Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}>"
    ));
    // §5.3: both headers "MUST" be present.
    line(&format!("TLS-Report-Domain: {domain}"));
    line(&format!("TLS-Report-Submitter: {submitter}"));
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\""
    ));
    line("");
    line("This is a multipart message in MIME format.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=\"us-ascii\"");
    line("Content-Transfer-Encoding: 7bit");
    line("");
    line(&format!(
        "This is an aggregate TLS report from {submitter} for {domain},"
    ));
    line(&format!(
        "covering {} to {}.",
        range.start_datetime, range.end_datetime
    ));
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: application/tlsrpt+gzip");
    line("Content-Transfer-Encoding: base64");
    line(&format!(
        "Content-Disposition: attachment; filename=\"{file}\""
    ));
    line("");
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzip);
    // RFC 2045 §6.8: lines of at most 76 characters (base64 is ASCII, so
    // every chunk is valid UTF-8).
    for chunk in encoded.as_bytes().chunks(76) {
        line(std::str::from_utf8(chunk).unwrap_or_default());
    }
    line("");
    line(&format!("--{boundary}--"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_policy::tlsrpt::{FailureFacts, ResultType};
    use std::path::Path;

    fn settings(delay: i64) -> ReportSettings {
        ReportSettings {
            organization: "Example Org".into(),
            contact_info: "mailto:postmaster@relay.test".into(),
            report_from: "postmaster@relay.test".into(),
            submitter: "relay.test".into(),
            max_send_delay: delay,
            max_domains: 2,
            max_failure_groups: 10,
            dkim: None,
        }
    }

    fn reporter(dir: &Path, delay: i64) -> TlsReporter {
        TlsReporter::new(
            settings(delay),
            Arc::new(RootCertStore::empty()),
            dir.to_owned(),
        )
        .unwrap()
    }

    // 2016-04-01T12:00:00Z
    const NOON: i64 = 1_459_512_000;

    fn at(t: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap())
    }

    fn failure(domain: &str, t: i64) -> SessionOutcome {
        let mut facts = FailureFacts::new(ResultType::CertificateHostMismatch);
        facts.receiving_mx_hostname = Some(format!("mx.{domain}"));
        facts.receiving_ip = Some("192.0.2.7".parse().unwrap());
        SessionOutcome::failure(sts_policy_details(domain, None), t, facts)
    }

    #[test]
    fn aggregates_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let r = reporter(dir.path(), 0);
        let policy = sts_policy_details("a.test", None);
        r.record("a.test", SessionOutcome::success(policy.clone(), NOON));
        r.record("A.test", SessionOutcome::success(policy, NOON + 5));
        r.record("a.test", failure("a.test", NOON + 9));
        r.record("b.test", failure("b.test", NOON));
        // Over the cap of two domains: not recorded.
        r.record("c.test", failure("c.test", NOON));
        r.save().unwrap();
        assert!(dir.path().join(STATE_FILE).exists());
        assert!(!dir.path().join("aggregates.json.tmp").exists());

        let again = reporter(dir.path(), 0);
        // Nothing is due before the day ended.
        assert!(again.take_due(at(NOON + 3600)).is_empty());
        let due = again.take_due(at(ReportPeriod::utc_day_containing(NOON).next().start()));
        let domains: Vec<_> = due.iter().map(|d| d.domain.as_str()).collect();
        assert_eq!(domains, ["a.test", "b.test"]);
        let a = &due[0].report.policies[0];
        assert_eq!(a.policy.policy_domain, "a.test");
        assert_eq!(a.summary.total_successful_session_count, 2);
        assert_eq!(a.summary.total_failure_session_count, 1);
        assert_eq!(
            a.failure_details[0].receiving_mx_hostname.as_deref(),
            Some("mx.a.test")
        );
        assert_eq!(due[0].report.organization_name, "Example Org");
        assert_eq!(
            due[0].report.date_range.start_datetime,
            "2016-04-01T00:00:00Z"
        );
        assert_ne!(due[0].report.report_id, due[1].report.report_id);
        // Taken reports are gone, also from disk after the next save.
        assert!(again.take_due(at(NOON + 10 * 86_400)).is_empty());
        again.save().unwrap();
        assert!(
            reporter(dir.path(), 0)
                .take_due(at(NOON + 10 * 86_400))
                .is_empty()
        );
    }

    #[test]
    fn random_delay_stays_within_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let r = reporter(dir.path(), 3600);
        r.record("a.test", failure("a.test", NOON));
        let midnight = ReportPeriod::utc_day_containing(NOON).next().start();
        assert!(r.take_due(at(midnight - 1)).is_empty());
        assert_eq!(r.take_due(at(midnight + 3600)).len(), 1);
    }

    #[test]
    fn report_mail_structure() {
        use std::io::Read as _;
        let period = ReportPeriod::utc_day_containing(NOON);
        let mut agg = DailyAggregator::new(period);
        agg.record(SessionOutcome::success(
            sts_policy_details("a.test", None),
            NOON,
        ))
        .unwrap();
        agg.record(failure("a.test", NOON)).unwrap();
        let due = DueReport {
            domain: "a.test".into(),
            period,
            report: agg.into_report("Example Org", "mailto:x@relay.test", "r1@relay.test"),
            unique_id: "abc123".into(),
        };
        let gzip = gzip_json(&due.report).unwrap();
        let mail = build_mail(&settings(0), &due, "tlsrpt@a.test", &gzip, at(NOON));
        let text = String::from_utf8(mail).unwrap();
        assert!(
            !text.replace("\r\n", "").contains(['\r', '\n']),
            "bare CR or LF"
        );
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let headers: Vec<&str> = head.split("\r\n").collect();
        assert!(headers.contains(&"From: <postmaster@relay.test>"));
        assert!(headers.contains(&"To: <tlsrpt@a.test>"));
        assert!(headers.contains(
            &"Subject: Report Domain: a.test Submitter: relay.test Report-ID: <r1@relay.test>"
        ));
        assert!(headers.contains(&"TLS-Report-Domain: a.test"));
        assert!(headers.contains(&"TLS-Report-Submitter: relay.test"));
        assert!(headers.contains(&"MIME-Version: 1.0"));
        let ctype = headers
            .iter()
            .find(|h| h.starts_with("Content-Type: "))
            .unwrap();
        assert!(
            ctype
                .starts_with("Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"")
        );
        let boundary = ctype
            .rsplit_once("boundary=\"")
            .unwrap()
            .1
            .trim_end_matches('"');
        let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
        // Preamble, text, report, and the closing "--".
        assert_eq!(parts.len(), 4, "{body}");
        assert!(parts[3].starts_with("--"));
        assert!(parts[1].contains("Content-Type: text/plain"));
        let (report_head, report_body) = parts[2].split_once("\r\n\r\n").unwrap();
        assert!(report_head.contains("Content-Type: application/tlsrpt+gzip\r\n"));
        assert!(report_head.contains("Content-Transfer-Encoding: base64\r\n"));
        assert!(report_head.contains(&format!(
            "Content-Disposition: attachment; filename=\"relay.test!a.test!{}!{}!abc123.json.gz\"",
            period.start(),
            period.end()
        )));
        assert!(report_body.split("\r\n").all(|l| l.len() <= 76));
        let b64: String = report_body.split("\r\n").collect();
        let gz = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let mut json = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut json)
            .unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, due.report);
        assert_eq!(back.policies[0].policy.policy_domain, "a.test");
        assert_eq!(back.policies[0].summary.total_failure_session_count, 1);
    }

    #[test]
    fn https_targets() {
        let t = HttpsTarget::parse("https://r.example/v1/tlsrpt?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("r.example", 443, "/v1/tlsrpt?x=1")
        );
        let t = HttpsTarget::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8443, "/")
        );
        assert_eq!(t.authority, "[::1]:8443");
        assert!(HttpsTarget::parse("https://user@r.example/").is_none());
        assert!(HttpsTarget::parse("http://r.example/").is_none());
        assert!(HttpsTarget::parse("https://r.example:x/").is_none());
    }
}
