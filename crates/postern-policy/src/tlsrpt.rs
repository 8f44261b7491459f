//! SMTP TLS Reporting (RFC 8460): result types, the JSON report model and the
//! aggregation of session outcomes into a daily report.
//!
//! Time is always passed in (seconds since the Unix epoch, UTC); nothing here reads
//! a clock.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// RFC 8460 §4.3 result types (IANA "STARTTLS Validation Result Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ResultType {
    /// §4.3.1: the receiving MX did not support STARTTLS.
    StarttlsNotSupported,
    /// §4.3.1: the certificate did not match the host name.
    CertificateHostMismatch,
    /// §4.3.1: the certificate has expired.
    CertificateExpired,
    /// §4.3.1: the certificate chain does not lead to a trusted root.
    CertificateNotTrusted,
    /// §4.3.1 / §4.3.3: any other failure, detailed by a failure-reason-code.
    ValidationFailure,
    /// §4.3.2.1: no record of the TLSA RRset was valid (DANE).
    TlsaInvalid,
    /// §4.3.2.1: no valid DNSSEC records from the resolver (DANE).
    DnssecInvalid,
    /// §4.3.2.1: DANE was required and no usable TLSA record was found.
    DaneRequired,
    /// §4.3.2.2: the MTA-STS policy could not be fetched.
    StsPolicyFetchError,
    /// §4.3.2.2: the MTA-STS policy is invalid.
    StsPolicyInvalid,
    /// §4.3.2.2: the MTA-STS policy host's certificate failed PKIX validation.
    StsWebpkiInvalid,
}

impl ResultType {
    /// The registry spelling (`certificate-not-trusted`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StarttlsNotSupported => "starttls-not-supported",
            Self::CertificateHostMismatch => "certificate-host-mismatch",
            Self::CertificateExpired => "certificate-expired",
            Self::CertificateNotTrusted => "certificate-not-trusted",
            Self::ValidationFailure => "validation-failure",
            Self::TlsaInvalid => "tlsa-invalid",
            Self::DnssecInvalid => "dnssec-invalid",
            Self::DaneRequired => "dane-required",
            Self::StsPolicyFetchError => "sts-policy-fetch-error",
            Self::StsPolicyInvalid => "sts-policy-invalid",
            Self::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TLS-RPT aggregate report (RFC 8460 §4.4), field names exactly as the RFC has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
pub struct DateRange {
    /// `start-datetime`.
    pub start_datetime: String,
    /// `end-datetime`.
    pub end_datetime: String,
}

/// One entry of `policies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

/// `summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    /// `total-successful-session-count`.
    pub total_successful_session_count: u64,
    /// `total-failure-session-count`.
    pub total_failure_session_count: u64,
}

/// One entry of `failure-details`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
}

impl DailyAggregator {
    /// Distinct failure groups kept per policy.
    pub const MAX_FAILURE_GROUPS: usize = 10_000;

    /// A new aggregator for `period`.
    pub fn new(period: ReportPeriod) -> Self {
        Self {
            period,
            policies: BTreeMap::new(),
        }
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
                } else if tally.failures.len() < Self::MAX_FAILURE_GROUPS {
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
        let policies = self
            .policies
            .into_iter()
            .map(|(policy, tally)| PolicyReport {
                policy,
                summary: tally.summary,
                failure_details: tally
                    .failures
                    .into_iter()
                    .map(|(facts, count)| FailureDetails {
                        result_type: facts.result_type.unwrap_or(ResultType::ValidationFailure),
                        sending_mta_ip: facts.sending_mta_ip,
                        receiving_mx_hostname: facts.receiving_mx_hostname,
                        receiving_mx_helo: facts.receiving_mx_helo,
                        receiving_ip: facts.receiving_ip,
                        failed_session_count: count,
                        additional_information: None,
                        failure_reason_code: facts.failure_reason_code,
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
