//! SMTP TLS Reporting (RFC 8460): result types, the JSON report model and the
//! aggregation of session outcomes into a daily report.
//!
//! Time is always passed in (seconds since the Unix epoch, UTC); nothing here reads
//! a clock.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::mta_sts::{is_ext_name, is_ext_value, is_wsp, record_fields};

pub use postern_types::ResultType;

/// A TLS-RPT aggregate report (RFC 8460 §4.4), field names exactly as the RFC has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct Report {
    /// `organization-name`: the reporting organisation.
    pub organization_name: String,
    /// `date-range`: the period covered.
    pub date_range: DateRange,
    /// `contact-info`: how to reach the reporter.
    pub contact_info: String,
    /// `report-id`: a unique identifier of this report.
    pub report_id: String,
    /// `policies`: one entry per policy applied (always an array).
    pub policies: Vec<PolicyReport>,
}

/// `date-range` (RFC 3339 date-times).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct DateRange {
    /// `start-datetime`.
    pub start_datetime: String,
    /// `end-datetime`.
    pub end_datetime: String,
}

/// One entry of `policies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct PolicyReport {
    /// `policy`: which policy was applied.
    pub policy: PolicyDetails,
    /// `summary`: session counts.
    pub summary: Summary,
    /// `failure-details`: the failures, grouped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetails>,
}

/// `policy-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PolicyType {
    /// A DANE TLSA policy.
    Tlsa,
    /// An MTA-STS policy.
    Sts,
    /// No policy was found.
    NoPolicyFound,
}

/// `policy`: the policy applied to a set of sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct PolicyDetails {
    /// `policy-type`.
    pub policy_type: PolicyType,
    /// `policy-string`: the TLSA records or the MTA-STS policy lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    /// `policy-domain`.
    pub policy_domain: String,
    /// `mx-host`: the MX patterns (MTA-STS) or host (DANE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

impl PolicyDetails {
    /// A policy of `policy_type` for `policy_domain`, with no policy string and no MX hosts.
    pub fn new(policy_type: PolicyType, policy_domain: impl Into<String>) -> Self {
        Self {
            policy_type,
            policy_string: Vec::new(),
            policy_domain: policy_domain.into(),
            mx_host: Vec::new(),
        }
    }

    /// Sets `policy-string`.
    pub fn with_policy_string(mut self, policy_string: Vec<String>) -> Self {
        self.policy_string = policy_string;
        self
    }

    /// Sets `mx-host`.
    pub fn with_mx_host(mut self, mx_host: Vec<String>) -> Self {
        self.mx_host = mx_host;
        self
    }
}

/// `summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct Summary {
    /// `total-successful-session-count`.
    pub total_successful_session_count: u64,
    /// `total-failure-session-count`.
    pub total_failure_session_count: u64,
}

/// One entry of `failure-details`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct FailureDetails {
    /// `result-type`.
    pub result_type: ResultType,
    /// `sending-mta-ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<IpAddr>,
    /// `receiving-mx-hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    /// `receiving-mx-helo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_helo: Option<String>,
    /// `receiving-ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
    /// `failed-session-count`.
    pub failed_session_count: u64,
    /// `additional-information`: a URI with more detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_information: Option<String>,
    /// `failure-reason-code`: free text, e.g. a TLS library error name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

/// The facts of one failed session, as recorded for a report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub struct FailureFacts {
    /// The RFC 8460 result type.
    pub result_type: Option<ResultType>,
    /// The sending MTA's address.
    pub sending_mta_ip: Option<IpAddr>,
    /// The MX host name tried.
    pub receiving_mx_hostname: Option<String>,
    /// The name the MX gave in its greeting or EHLO reply.
    pub receiving_mx_helo: Option<String>,
    /// The MX address tried.
    pub receiving_ip: Option<IpAddr>,
    /// A short machine-readable reason (e.g. `tls-handshake-failed`).
    pub failure_reason_code: Option<String>,
}

impl FailureFacts {
    /// Facts with only a result type.
    pub fn new(result_type: ResultType) -> Self {
        Self {
            result_type: Some(result_type),
            ..Self::default()
        }
    }
}

/// How one delivery session ended, for reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionOutcome {
    /// The policy that applied.
    pub policy: PolicyDetails,
    /// When the session happened (seconds since the Unix epoch, UTC).
    pub at: i64,
    /// `None` for a successful session, else the failure.
    pub failure: Option<FailureFacts>,
}

impl SessionOutcome {
    /// A successful session.
    pub fn success(policy: PolicyDetails, at: i64) -> Self {
        Self {
            policy,
            at,
            failure: None,
        }
    }

    /// A failed session.
    pub fn failure(policy: PolicyDetails, at: i64, facts: FailureFacts) -> Self {
        Self {
            policy,
            at,
            failure: Some(facts),
        }
    }
}

/// Seconds in a UTC day.
const DAY: i64 = 86_400;

/// A report period: one UTC day, 00:00:00 to 23:59:59 (RFC 8460 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportPeriod {
    start: i64,
}

impl ReportPeriod {
    /// The UTC day that contains `at` (seconds since the epoch).
    pub const fn utc_day_containing(at: i64) -> Self {
        Self {
            start: at.div_euclid(DAY) * DAY,
        }
    }

    /// First second of the period.
    pub const fn start(&self) -> i64 {
        self.start
    }

    /// Last second of the period.
    pub const fn end(&self) -> i64 {
        self.start + DAY - 1
    }

    /// Whether `at` falls within the period.
    pub const fn contains(&self, at: i64) -> bool {
        at >= self.start && at <= self.end()
    }

    /// The next period.
    pub const fn next(&self) -> Self {
        Self {
            start: self.start + DAY,
        }
    }

    /// The `date-range` of this period.
    pub fn date_range(&self) -> DateRange {
        DateRange {
            start_datetime: rfc3339(self.start),
            end_datetime: rfc3339(self.end()),
        }
    }
}

fn rfc3339(at: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        // Only reachable for timestamps beyond year 9999, which no session has.
        .unwrap_or_else(|| format!("@{at}"))
}

/// Why an outcome was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The outcome's time is outside the aggregator's period.
    #[error("session time outside the report period")]
    OutsidePeriod,
}

#[derive(Debug, Default)]
struct PolicyTally {
    summary: Summary,
    failures: BTreeMap<FailureFacts, u64>,
}

/// Collects session outcomes for one UTC day and turns them into a [`Report`].
///
/// Memory is bounded: at most [`DailyAggregator::MAX_FAILURE_GROUPS`] distinct
/// failure groups are kept per policy; further failures still count in the summary.
#[derive(Debug)]
pub struct DailyAggregator {
    period: ReportPeriod,
    policies: BTreeMap<PolicyDetails, PolicyTally>,
    max_failure_groups: usize,
}

impl DailyAggregator {
    /// Distinct failure groups kept per policy.
    pub const MAX_FAILURE_GROUPS: usize = 10_000;

    /// A new aggregator for `period`.
    pub fn new(period: ReportPeriod) -> Self {
        Self::with_failure_group_limit(period, Self::MAX_FAILURE_GROUPS)
    }

    /// A new aggregator for `period` that keeps at most `limit` distinct
    /// failure groups per policy (further failures still count in the summary).
    pub fn with_failure_group_limit(period: ReportPeriod, limit: usize) -> Self {
        Self {
            period,
            policies: BTreeMap::new(),
            max_failure_groups: limit,
        }
    }

    /// Rebuilds an aggregator from a report made by [`DailyAggregator::report`]
    /// (to persist aggregates across restarts): its policies, summaries and
    /// failure groups, within `limit` groups per policy. The report's
    /// `date-range` is not read; `period` is authoritative.
    pub fn from_report(period: ReportPeriod, report: &Report, limit: usize) -> Self {
        let mut this = Self::with_failure_group_limit(period, limit);
        for entry in &report.policies {
            let tally = this.policies.entry(entry.policy.clone()).or_default();
            let summary = &mut tally.summary;
            summary.total_successful_session_count = summary
                .total_successful_session_count
                .saturating_add(entry.summary.total_successful_session_count);
            summary.total_failure_session_count = summary
                .total_failure_session_count
                .saturating_add(entry.summary.total_failure_session_count);
            for d in &entry.failure_details {
                let facts = FailureFacts {
                    result_type: Some(d.result_type),
                    sending_mta_ip: d.sending_mta_ip,
                    receiving_mx_hostname: d.receiving_mx_hostname.clone(),
                    receiving_mx_helo: d.receiving_mx_helo.clone(),
                    receiving_ip: d.receiving_ip,
                    failure_reason_code: d.failure_reason_code.clone(),
                };
                if let Some(count) = tally.failures.get_mut(&facts) {
                    *count = count.saturating_add(d.failed_session_count);
                } else if tally.failures.len() < limit {
                    tally.failures.insert(facts, d.failed_session_count);
                }
            }
        }
        this
    }

    /// The period covered.
    pub fn period(&self) -> ReportPeriod {
        self.period
    }

    /// Records one session outcome.
    pub fn record(&mut self, outcome: SessionOutcome) -> Result<(), RecordError> {
        if !self.period.contains(outcome.at) {
            return Err(RecordError::OutsidePeriod);
        }
        let tally = self.policies.entry(outcome.policy).or_default();
        match outcome.failure {
            None => tally.summary.total_successful_session_count += 1,
            Some(mut facts) => {
                tally.summary.total_failure_session_count += 1;
                facts
                    .result_type
                    .get_or_insert(ResultType::ValidationFailure);
                if let Some(count) = tally.failures.get_mut(&facts) {
                    *count += 1;
                } else if tally.failures.len() < self.max_failure_groups {
                    tally.failures.insert(facts, 1);
                }
            }
        }
        Ok(())
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Builds the report (policies and failures in a stable order).
    pub fn into_report(
        self,
        organization_name: impl Into<String>,
        contact_info: impl Into<String>,
        report_id: impl Into<String>,
    ) -> Report {
        self.report(organization_name, contact_info, report_id)
    }

    /// Builds the report without consuming the aggregator.
    pub fn report(
        &self,
        organization_name: impl Into<String>,
        contact_info: impl Into<String>,
        report_id: impl Into<String>,
    ) -> Report {
        let policies = self
            .policies
            .iter()
            .map(|(policy, tally)| PolicyReport {
                policy: policy.clone(),
                summary: tally.summary,
                failure_details: tally
                    .failures
                    .iter()
                    .map(|(facts, &count)| FailureDetails {
                        result_type: facts.result_type.unwrap_or(ResultType::ValidationFailure),
                        sending_mta_ip: facts.sending_mta_ip,
                        receiving_mx_hostname: facts.receiving_mx_hostname.clone(),
                        receiving_mx_helo: facts.receiving_mx_helo.clone(),
                        receiving_ip: facts.receiving_ip,
                        failed_session_count: count,
                        additional_information: None,
                        failure_reason_code: facts.failure_reason_code.clone(),
                    })
                    .collect(),
            })
            .collect();
        Report {
            organization_name: organization_name.into(),
            date_range: self.period.date_range(),
            contact_info: contact_info.into(),
            report_id: report_id.into(),
            policies,
        }
    }
}

impl Report {
    /// The file name of RFC 8460 §5.3: `sender!policy-domain!begin!end[!id].json`
    /// (add `.gz` when compressed). `begin` and `end` are Unix timestamps.
    pub fn file_name(
        sender: &str,
        policy_domain: &str,
        period: ReportPeriod,
        unique_id: Option<&str>,
    ) -> String {
        let mut name = format!(
            "{sender}!{policy_domain}!{}!{}",
            period.start(),
            period.end()
        );
        if let Some(id) = unique_id {
            name.push('!');
            name.push_str(id);
        }
        name.push_str(".json");
        name
    }
}

/// Why a `_smtp._tls` TXT record set gives no reporting address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsRptRecordError {
    /// No record begins with `v=TLSRPTv1`.
    #[error("no v=TLSRPTv1 record")]
    NoRecord,
    /// More than one record begins with `v=TLSRPTv1` (§3: then the domain
    /// does not implement TLSRPT).
    #[error("more than one v=TLSRPTv1 record")]
    MultipleRecords,
    /// The record does not follow the §3 grammar.
    #[error("invalid record: {0}")]
    Syntax(&'static str),
    /// The `rua` field names no `mailto:` or `https:` URI we can use.
    #[error("no usable mailto: or https: report uri")]
    NoUsableUri,
}

/// Where a report goes: one URI of the `rua` field (RFC 8460 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReportUri {
    /// `mailto:`: the report is mailed (§5.3) to this address
    /// (percent-decoded, without any `?query`).
    Mailto(String),
    /// `https:`: the report is POSTed (§5.2) to this URL, as written.
    Https(String),
}

impl ReportUri {
    /// The URI of a `rua` entry, or `None` for another scheme or a malformed
    /// `mailto:` (§3: "other URI schemes" are not defined; they are ignored).
    fn parse(uri: &str) -> Option<Self> {
        let (scheme, rest) = uri.split_once(':')?;
        if scheme.eq_ignore_ascii_case("https") {
            // An https URL needs an authority: "https://host...".
            let host = rest.strip_prefix("//")?;
            let end = host.find(['/', '?', '#']).unwrap_or(host.len());
            return (end > 0).then(|| Self::Https(format!("https:{rest}")));
        }
        if scheme.eq_ignore_ascii_case("mailto") {
            // RFC 6068: mailto:addr[?headers]; one address is used.
            let addr = rest.split('?').next().unwrap_or_default();
            let addr = percent_decode(addr)?;
            let (local, domain) = addr.rsplit_once('@')?;
            let plain = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'<' | b'>'))
            };
            return (plain(local) && plain(domain) && !addr.contains(','))
                .then_some(Self::Mailto(addr));
        }
        None
    }

    /// The URI as it would appear in a record.
    pub fn as_uri(&self) -> String {
        match self {
            Self::Mailto(addr) => format!("mailto:{addr}"),
            Self::Https(url) => url.clone(),
        }
    }
}

/// `%XX` decoding; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A parsed `_smtp._tls.<domain>` TXT record (RFC 8460 §3).
///
/// ```
/// use postern_policy::tlsrpt::{ReportUri, TlsRptRecord};
/// // RFC 8460 §3.1 examples.
/// let mail = TlsRptRecord::parse("v=TLSRPTv1;rua=mailto:reports@example.com").unwrap();
/// assert_eq!(mail.rua, [ReportUri::Mailto("reports@example.com".into())]);
/// let web = TlsRptRecord::parse("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt").unwrap();
/// assert_eq!(web.rua, [ReportUri::Https("https://reporting.example.com/v1/tlsrpt".into())]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TlsRptRecord {
    /// The usable report URIs of `rua`, in record order (never empty);
    /// URIs of other schemes are left out.
    pub rua: Vec<ReportUri>,
}

/// Most URIs kept from one `rua` field (a record is at most a few KiB; this
/// bounds the work done per report).
const MAX_RUA: usize = 16;

impl TlsRptRecord {
    /// The version tag every record begins with.
    pub const VERSION: &'static str = "v=TLSRPTv1";

    /// Parses one record (its TXT strings already joined without spaces).
    ///
    /// RFC 8460 §3:
    /// ```text
    /// tlsrpt-record     = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
    /// field-delim       = *WSP ";" *WSP
    /// tlsrpt-field      = tlsrpt-rua / tlsrpt-extension
    /// tlsrpt-rua        = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
    /// tlsrpt-extension  = tlsrpt-ext-name "=" tlsrpt-ext-value
    /// ```
    /// Extension fields are checked against their grammar and ignored;
    /// commas and semicolons inside a URI must be percent-encoded, so they
    /// always separate.
    pub fn parse(text: &str) -> Result<Self, TlsRptRecordError> {
        let rest = text
            .strip_prefix(Self::VERSION)
            .ok_or(TlsRptRecordError::Syntax("must begin with v=TLSRPTv1"))?;
        let is_uri_char = |c: char| c.is_ascii_graphic() && c != ',';
        let mut rua: Option<Vec<ReportUri>> = None;
        for field in record_fields(rest).map_err(TlsRptRecordError::Syntax)? {
            if let Some(uris) = field.strip_prefix("rua=") {
                if rua.is_some() {
                    return Err(TlsRptRecordError::Syntax("duplicate rua"));
                }
                let mut list = Vec::new();
                for (i, part) in uris.split(',').enumerate() {
                    // `*WSP "," *WSP` between URIs, none right after "rua=".
                    let uri = part.trim_end_matches(is_wsp);
                    let uri = if i == 0 {
                        uri
                    } else {
                        uri.trim_start_matches(is_wsp)
                    };
                    if uri.is_empty() || uri.starts_with(is_wsp) {
                        return Err(TlsRptRecordError::Syntax("empty rua uri"));
                    }
                    if !uri.chars().all(is_uri_char) {
                        return Err(TlsRptRecordError::Syntax("expected ';'"));
                    }
                    if let Some(uri) = ReportUri::parse(uri)
                        && list.len() < MAX_RUA
                    {
                        list.push(uri);
                    }
                }
                rua = Some(list);
            } else {
                let (name, value) = field
                    .split_once('=')
                    .ok_or(TlsRptRecordError::Syntax("field without '='"))?;
                if !is_ext_name(name) || !is_ext_value(value) {
                    return Err(TlsRptRecordError::Syntax("invalid extension field"));
                }
            }
        }
        let rua = rua.ok_or(TlsRptRecordError::Syntax("missing rua"))?;
        if rua.is_empty() {
            return Err(TlsRptRecordError::NoUsableUri);
        }
        Ok(Self { rua })
    }

    /// Picks the record among all TXT records at `_smtp._tls.<domain>` (§3):
    /// "Records that do not begin with `v=TLSRPTv1;` are discarded. If the
    /// number of resulting records is not one, senders MUST assume the
    /// recipient domain does not implement TLSRPT."
    pub fn select<'a>(
        records: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, TlsRptRecordError> {
        let mut found = None;
        for record in records {
            let Some(after) = record.strip_prefix(Self::VERSION) else {
                continue;
            };
            // `v=TLSRPTv10` is another version; whitespace may precede the ';'.
            if after.trim_start_matches([' ', '\t']).starts_with(';') {
                if found.is_some() {
                    return Err(TlsRptRecordError::MultipleRecords);
                }
                found = Some(record);
            }
        }
        Self::parse(found.ok_or(TlsRptRecordError::NoRecord)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8460 Appendix B (the `additional-information` URI joined on one line,
    /// as the RFC's line wrap is not part of the value).
    const RFC8460_APPENDIX_B: &str = r#"{
     "organization-name": "Company-X",
     "date-range": {
       "start-datetime": "2016-04-01T00:00:00Z",
       "end-datetime": "2016-04-01T23:59:59Z"
     },
     "contact-info": "sts-reporting@company-x.example",
     "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
     "policies": [{
       "policy": {
         "policy-type": "sts",
         "policy-string": ["version: STSv1","mode: testing",
               "mx: *.mail.company-y.example","max_age: 86400"],
         "policy-domain": "company-y.example",
         "mx-host": ["*.mail.company-y.example"]
       },
       "summary": {
         "total-successful-session-count": 5326,
         "total-failure-session-count": 303
       },
       "failure-details": [{
         "result-type": "certificate-expired",
         "sending-mta-ip": "2001:db8:abcd:0012::1",
         "receiving-mx-hostname": "mx1.mail.company-y.example",
         "failed-session-count": 100
       }, {
         "result-type": "starttls-not-supported",
         "sending-mta-ip": "2001:db8:abcd:0013::1",
         "receiving-mx-hostname": "mx2.mail.company-y.example",
         "receiving-ip": "203.0.113.56",
         "failed-session-count": 200,
         "additional-information": "https://reports.company-x.example/report_info ? id = 5065427c-23d3#StarttlsNotSupported"
       }, {
         "result-type": "validation-failure",
         "sending-mta-ip": "198.51.100.62",
         "receiving-ip": "203.0.113.58",
         "receiving-mx-hostname": "mx-backup.mail.company-y.example",
         "failed-session-count": 3,
         "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
       }]
     }]
   }"#;

    #[test]
    fn rfc8460_appendix_b_parses() {
        let report: Report = serde_json::from_str(RFC8460_APPENDIX_B).unwrap();
        assert_eq!(report.organization_name, "Company-X");
        assert_eq!(report.date_range.end_datetime, "2016-04-01T23:59:59Z");
        let policy = &report.policies[0];
        assert_eq!(policy.policy.policy_type, PolicyType::Sts);
        assert_eq!(policy.policy.mx_host, ["*.mail.company-y.example"]);
        assert_eq!(policy.summary.total_successful_session_count, 5326);
        assert_eq!(policy.summary.total_failure_session_count, 303);
        let details = &policy.failure_details;
        assert_eq!(details.len(), 3);
        assert_eq!(details[0].result_type, ResultType::CertificateExpired);
        assert_eq!(details[0].receiving_ip, None);
        assert_eq!(
            details[1].receiving_ip,
            Some("203.0.113.56".parse().unwrap())
        );
        assert_eq!(
            details[2].failure_reason_code.as_deref(),
            Some("X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED")
        );
        // Round trip through our serialisation.
        let again: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(again, report);
    }

    #[test]
    fn every_result_type_uses_the_registry_name() {
        let all = [
            ResultType::StarttlsNotSupported,
            ResultType::CertificateHostMismatch,
            ResultType::CertificateExpired,
            ResultType::CertificateNotTrusted,
            ResultType::ValidationFailure,
            ResultType::TlsaInvalid,
            ResultType::DnssecInvalid,
            ResultType::DaneRequired,
            ResultType::StsPolicyFetchError,
            ResultType::StsPolicyInvalid,
            ResultType::StsWebpkiInvalid,
        ];
        for ty in all {
            let json = serde_json::to_string(&ty).unwrap();
            assert_eq!(json, format!("\"{}\"", ty.as_str()));
            assert_eq!(serde_json::from_str::<ResultType>(&json).unwrap(), ty);
        }
    }

    fn sts_policy() -> PolicyDetails {
        PolicyDetails {
            policy_type: PolicyType::Sts,
            policy_string: vec!["version: STSv1".into(), "mode: enforce".into()],
            policy_domain: "example.com".into(),
            mx_host: vec!["mx.example.com".into()],
        }
    }

    #[test]
    fn aggregation_counts_and_groups() {
        // 2016-04-01T12:00:00Z
        let noon = 1_459_512_000;
        let period = ReportPeriod::utc_day_containing(noon);
        assert_eq!(period.date_range().start_datetime, "2016-04-01T00:00:00Z");
        assert_eq!(period.date_range().end_datetime, "2016-04-01T23:59:59Z");
        let mut agg = DailyAggregator::new(period);
        for _ in 0..3 {
            agg.record(SessionOutcome::success(sts_policy(), noon))
                .unwrap();
        }
        let mut facts = FailureFacts::new(ResultType::CertificateExpired);
        facts.receiving_mx_hostname = Some("mx.example.com".into());
        agg.record(SessionOutcome::failure(sts_policy(), noon, facts.clone()))
            .unwrap();
        agg.record(SessionOutcome::failure(sts_policy(), noon + 1, facts))
            .unwrap();
        agg.record(SessionOutcome::failure(
            sts_policy(),
            noon,
            FailureFacts::new(ResultType::StarttlsNotSupported),
        ))
        .unwrap();
        assert_eq!(
            agg.record(SessionOutcome::success(sts_policy(), period.end() + 1)),
            Err(RecordError::OutsidePeriod)
        );
        let report = agg.into_report("Example", "mailto:tlsrpt@example.net", "r1");
        assert_eq!(report.policies.len(), 1);
        let policy = &report.policies[0];
        assert_eq!(policy.summary.total_successful_session_count, 3);
        assert_eq!(policy.summary.total_failure_session_count, 3);
        let counts: Vec<_> = policy
            .failure_details
            .iter()
            .map(|d| (d.result_type, d.failed_session_count))
            .collect();
        assert_eq!(
            counts,
            [
                (ResultType::StarttlsNotSupported, 1),
                (ResultType::CertificateExpired, 2)
            ]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["policies"][0]["failure-details"][1]["receiving-mx-hostname"],
            "mx.example.com"
        );
    }

    #[test]
    fn rfc8460_record_examples_and_whitespace() {
        let r = TlsRptRecord::parse("v=TLSRPTv1;rua=mailto:reports@example.com").unwrap();
        assert_eq!(r.rua, [ReportUri::Mailto("reports@example.com".into())]);
        // The second §3.1 example, its TXT strings joined.
        let r =
            TlsRptRecord::parse("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt").unwrap();
        assert_eq!(
            r.rua,
            [ReportUri::Https(
                "https://reporting.example.com/v1/tlsrpt".into()
            )]
        );
        // Several URIs with *WSP "," *WSP, a trailing delimiter, extensions
        // ignored, another scheme ignored, percent-decoding of mailto.
        let r = TlsRptRecord::parse(
            "v=TLSRPTv1 ;\trua=mailto:a%2Bb@example.com?subject=x , https://r.example/p,\tftp://x.example/ ; ext-1.x=val ;",
        )
        .unwrap();
        assert_eq!(
            r.rua,
            [
                ReportUri::Mailto("a+b@example.com".into()),
                ReportUri::Https("https://r.example/p".into()),
            ]
        );
        assert_eq!(r.rua[0].as_uri(), "mailto:a+b@example.com");
    }

    #[test]
    fn bad_records_are_refused() {
        let bad = [
            ("", TlsRptRecordError::Syntax("must begin with v=TLSRPTv1")),
            ("v=TLSRPTv1", TlsRptRecordError::Syntax("no fields")),
            ("v=TLSRPTv1;", TlsRptRecordError::Syntax("no fields")),
            (
                "v=TLSRPTv1; ext=1",
                TlsRptRecordError::Syntax("missing rua"),
            ),
            (
                "v=TLSRPTv1; rua=",
                TlsRptRecordError::Syntax("empty rua uri"),
            ),
            (
                "v=TLSRPTv1; rua=mailto:a@b.example,",
                TlsRptRecordError::Syntax("empty rua uri"),
            ),
            (
                "v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example",
                TlsRptRecordError::Syntax("duplicate rua"),
            ),
            (
                "v=TLSRPTv1 rua=mailto:a@b.example",
                TlsRptRecordError::Syntax("expected ';'"),
            ),
            (
                "v=TLSRPTv1; rua=mailto:a@b.example x",
                TlsRptRecordError::Syntax("expected ';'"),
            ),
            (
                "v=TLSRPTv1; rua=mailto:a@b.example; _x=1",
                TlsRptRecordError::Syntax("invalid extension field"),
            ),
            (
                "v=TLSRPTv1; rua=ftp://x.example/",
                TlsRptRecordError::NoUsableUri,
            ),
            (
                "v=TLSRPTv1; rua=mailto:nobody",
                TlsRptRecordError::NoUsableUri,
            ),
            (
                "v=TLSRPTv1; rua=https:relative",
                TlsRptRecordError::NoUsableUri,
            ),
        ];
        for (text, err) in bad {
            assert_eq!(TlsRptRecord::parse(text), Err(err), "{text:?}");
        }
    }

    #[test]
    fn record_selection_needs_exactly_one_version_record() {
        let good = "v=TLSRPTv1; rua=mailto:r@example.com";
        assert!(
            TlsRptRecord::select(["v=spf1 -all", good, "v=TLSRPTv10; rua=mailto:x@y.z"]).is_ok()
        );
        assert_eq!(
            TlsRptRecord::select([good, good]),
            Err(TlsRptRecordError::MultipleRecords)
        );
        assert_eq!(
            TlsRptRecord::select(["v=spf1 -all"]),
            Err(TlsRptRecordError::NoRecord)
        );
        // A selected record that does not parse gives no reporting either.
        assert!(TlsRptRecord::select(["v=TLSRPTv1; rua="]).is_err());
    }

    #[test]
    fn aggregates_survive_a_report_round_trip() {
        let noon = 1_459_512_000;
        let period = ReportPeriod::utc_day_containing(noon);
        let mut agg = DailyAggregator::with_failure_group_limit(period, 2);
        agg.record(SessionOutcome::success(sts_policy(), noon))
            .unwrap();
        for (i, ty) in [
            ResultType::CertificateExpired,
            ResultType::CertificateExpired,
            ResultType::StarttlsNotSupported,
            ResultType::CertificateNotTrusted,
        ]
        .into_iter()
        .enumerate()
        {
            let mut facts = FailureFacts::new(ty);
            facts.receiving_ip = Some("192.0.2.1".parse().unwrap());
            agg.record(SessionOutcome::failure(
                sts_policy(),
                noon + i as i64,
                facts,
            ))
            .unwrap();
        }
        let saved = agg.report("o", "c", "id");
        // The third distinct group was over the limit: counted, not listed.
        assert_eq!(saved.policies[0].summary.total_failure_session_count, 4);
        assert_eq!(saved.policies[0].failure_details.len(), 2);
        let mut back = DailyAggregator::from_report(period, &saved, 2);
        assert_eq!(back.report("o", "c", "id"), saved);
        back.record(SessionOutcome::success(sts_policy(), noon))
            .unwrap();
        let report = back.into_report("o", "c", "id");
        assert_eq!(report.policies[0].summary.total_successful_session_count, 2);
    }

    #[test]
    fn periods_before_the_epoch_and_file_names() {
        let period = ReportPeriod::utc_day_containing(-1);
        assert_eq!(period.start(), -DAY);
        assert!(period.contains(-1));
        assert!(!period.contains(0));
        assert_eq!(period.next().start(), 0);
        assert_eq!(
            Report::file_name(
                "mail.sender.example",
                "example.com",
                period.next(),
                Some("1")
            ),
            "mail.sender.example!example.com!0!86399!1.json"
        );
    }
}
