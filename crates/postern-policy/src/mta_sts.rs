//! MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file, MX pattern
//! matching and cache rules. Fetching (DNS, HTTPS) is left to the caller; the
//! [`StsCache`] type says when to fetch and which policy applies, with time passed in.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::DomainName;

/// The largest policy file accepted (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_POLICY_SIZE: usize = 64 * 1024;

/// The largest `max_age` allowed (RFC 8461 §3.2: 31557600 seconds, about a year).
pub const MAX_AGE_LIMIT: u32 = 31_557_600;

/// How long to wait before fetching again a policy `id` whose fetch failed
/// (RFC 8461 §3.3: "at least five minutes").
pub const FETCH_RETRY_INTERVAL: i64 = 300;

/// How often to refresh a cached policy proactively (RFC 8461 §10.2 suggests daily).
pub const PROACTIVE_REFRESH_INTERVAL: i64 = 86_400;

/// Why a TXT record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StsRecordError {
    /// No record begins with `v=STSv1`.
    #[error("no v=STSv1 record")]
    NoRecord,
    /// More than one record begins with `v=STSv1` (§3.1: then there is no policy).
    #[error("more than one v=STSv1 record")]
    MultipleRecords,
    /// The record does not follow the §3.1 grammar.
    #[error("invalid record: {0}")]
    Syntax(&'static str),
}

/// A parsed `_mta-sts` TXT record (RFC 8461 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StsRecord {
    /// The policy id: 1 to 32 letters and digits.
    pub id: String,
}

/// Whitespace of the TXT record grammars (ABNF `WSP`).
pub(crate) fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The fields of a TXT record after its version tag. RFC 8461 §3.1 and RFC 8460 §3 share the shape
/// `version 1*(*WSP ";" *WSP field) [*WSP ";"]`, and neither grammar lets a field hold `;`: each field is the
/// text up to the next `;`, without the whitespace around it. Errors: `expected ';'`, `no fields`.
pub(crate) fn record_fields(mut rest: &str) -> Result<Vec<&str>, &'static str> {
    let mut fields = Vec::new();
    loop {
        rest = rest.trim_start_matches(is_wsp);
        if rest.is_empty() {
            break;
        }
        rest = rest.strip_prefix(';').ok_or("expected ';'")?;
        rest = rest.trim_start_matches(is_wsp);
        if rest.is_empty() {
            // The optional trailing ';'.
            break;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        fields.push(rest[..end].trim_end_matches(is_wsp));
        rest = &rest[end..];
    }
    if fields.is_empty() {
        return Err("no fields");
    }
    Ok(fields)
}

/// RFC 8461 §3.1 `sts-ext-name`; RFC 8460 §3 `tlsrpt-ext-name` is the same rule.
pub(crate) fn is_ext_name(name: &str) -> bool {
    // sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// RFC 8461 §3.1 `sts-ext-value`; RFC 8460 §3 `tlsrpt-ext-value` is the same rule.
pub(crate) fn is_ext_value(value: &str) -> bool {
    // sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E): visible characters but ';' and '='.
    !value.is_empty()
        && value
            .bytes()
            .all(|b| matches!(b, 0x21..=0x3a | 0x3c | 0x3e..=0x7e))
}

impl StsRecord {
    /// Parses one record (its TXT strings already joined without spaces, §3.1).
    ///
    /// ```
    /// use postern_policy::mta_sts::StsRecord;
    /// // RFC 8461 §3.1 example.
    /// let record = StsRecord::parse("v=STSv1; id=20160831085700Z;").unwrap();
    /// assert_eq!(record.id, "20160831085700Z");
    /// ```
    pub fn parse(text: &str) -> Result<Self, StsRecordError> {
        // sts-text-record = sts-version 1*(*WSP %x3B *WSP sts-field) [%x3B]
        let rest = text
            .strip_prefix("v=STSv1")
            .ok_or(StsRecordError::Syntax("must begin with v=STSv1"))?;
        let mut id = None;
        for field in record_fields(rest).map_err(StsRecordError::Syntax)? {
            let (name, value) = field
                .split_once('=')
                .ok_or(StsRecordError::Syntax("field without '='"))?;
            if name == "id" {
                // sts-id = %s"id=" 1*32(ALPHA / DIGIT)
                if value.is_empty()
                    || value.len() > 32
                    || !value.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(StsRecordError::Syntax(
                        "id must be 1 to 32 letters or digits",
                    ));
                }
                if id.is_some() {
                    return Err(StsRecordError::Syntax("duplicate id"));
                }
                id = Some(value.to_owned());
            } else if !is_ext_name(name) || !is_ext_value(value) {
                return Err(StsRecordError::Syntax("invalid extension field"));
            }
        }
        let id = id.ok_or(StsRecordError::Syntax("missing id"))?;
        Ok(Self { id })
    }

    /// Picks the record among all TXT records at `_mta-sts.<domain>` (§3.1):
    /// records that do not begin with `v=STSv1;` are discarded; if not exactly
    /// one remains, or it is invalid, there is no policy.
    pub fn select<'a>(records: impl IntoIterator<Item = &'a str>) -> Result<Self, StsRecordError> {
        let mut found = None;
        for record in records {
            if record.starts_with("v=STSv1;")
                || record.starts_with("v=STSv1 ")
                || record == "v=STSv1"
            {
                if found.is_some() {
                    return Err(StsRecordError::MultipleRecords);
                }
                found = Some(record);
            }
        }
        Self::parse(found.ok_or(StsRecordError::NoRecord)?)
    }
}

/// The policy mode (RFC 8461 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StsMode {
    /// Do not deliver to MX hosts that fail the MX match, certificate checks or STARTTLS.
    Enforce,
    /// Report failures but deliver anyway.
    Testing,
    /// As if no policy existed.
    None,
}

impl StsMode {
    /// The policy-file spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Testing => "testing",
            Self::None => "none",
        }
    }
}

impl fmt::Display for StsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `mx` pattern: a host name, or `*.` and a domain (RFC 8461 §3.2, §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MxPattern {
    /// Whether the pattern starts with `*.`.
    pub wildcard: bool,
    /// The name (after `*.` for a wildcard), in A-label form.
    pub domain: DomainName,
}

impl MxPattern {
    /// Parses a pattern.
    pub fn parse(text: &str) -> Result<Self, StsPolicyError> {
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let domain = DomainName::parse(name).map_err(|_| StsPolicyError::InvalidMx(text.into()))?;
        Ok(Self { wildcard, domain })
    }

    /// RFC 8461 §4.1: a host matches a plain pattern when equal; a `*.` pattern
    /// matches exactly one extra left-most label (`*.example.com` matches
    /// `mx.example.com`, neither `example.com` nor `a.b.example.com`).
    pub fn matches(&self, host: &DomainName) -> bool {
        if !self.wildcard {
            return host == &self.domain;
        }
        match host.as_str().split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == self.domain.as_str(),
            None => false,
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        self.domain.fmt(f)
    }
}

/// Why a policy file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StsPolicyError {
    /// Larger than [`MAX_POLICY_SIZE`].
    #[error("policy larger than 64 KiB")]
    TooLarge,
    /// A line without `:`.
    #[error("line {0}: expected \"name: value\"")]
    Line(usize),
    /// `version` missing or not `STSv1`.
    #[error("version must be STSv1")]
    Version,
    /// `mode` missing or not `enforce`, `testing` or `none`.
    #[error("mode must be enforce, testing or none")]
    Mode,
    /// `max_age` missing, not 1 to 10 digits, or above 31557600.
    #[error("max_age must be an integer from 0 to 31557600")]
    MaxAge,
    /// An `mx` value is not a valid pattern.
    #[error("invalid mx pattern {0:?}")]
    InvalidMx(String),
    /// No `mx` line, and the mode is not `none`.
    #[error("at least one mx is required unless mode is none")]
    MissingMx,
}

/// A parsed MTA-STS policy (RFC 8461 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StsPolicy {
    /// `mode`.
    pub mode: StsMode,
    /// `max_age` in seconds.
    pub max_age: u32,
    /// `mx` patterns, in file order.
    pub mx: Vec<MxPattern>,
}

impl StsPolicy {
    /// Parses a policy file (RFC 8461 §3.2): lines end with LF or CRLF; fields are
    /// `name: value`; unknown fields are ignored; for a repeated field other than
    /// `mx`, the first instance wins.
    ///
    /// ```
    /// use postern_policy::mta_sts::{StsMode, StsPolicy};
    /// // RFC 8461 §3.2 example.
    /// let policy = StsPolicy::parse(
    ///     "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n",
    /// ).unwrap();
    /// assert_eq!(policy.mode, StsMode::Enforce);
    /// assert_eq!(policy.mx.len(), 3);
    /// ```
    pub fn parse(text: &str) -> Result<Self, StsPolicyError> {
        if text.len() > MAX_POLICY_SIZE {
            return Err(StsPolicyError::TooLarge);
        }
        let mut version = None;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        for (index, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let line = line.trim_matches(|c| c == ' ' || c == '\t');
            if line.is_empty() {
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or(StsPolicyError::Line(index + 1))?;
            let value = value.trim_matches(|c| c == ' ' || c == '\t');
            match name {
                "version" => {
                    version.get_or_insert(value);
                }
                "mode" => {
                    mode.get_or_insert(value);
                }
                "max_age" => {
                    max_age.get_or_insert(value);
                }
                "mx" => mx.push(MxPattern::parse(value)?),
                // Unknown fields are ignored (§3.2).
                _ => {}
            }
        }
        if version != Some("STSv1") {
            return Err(StsPolicyError::Version);
        }
        let mode = match mode {
            Some("enforce") => StsMode::Enforce,
            Some("testing") => StsMode::Testing,
            Some("none") => StsMode::None,
            _ => return Err(StsPolicyError::Mode),
        };
        // max-age-value = 1*10(DIGIT)
        let max_age = max_age
            .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v <= u64::from(MAX_AGE_LIMIT))
            .ok_or(StsPolicyError::MaxAge)?;
        if mx.is_empty() && mode != StsMode::None {
            return Err(StsPolicyError::MissingMx);
        }
        Ok(Self {
            mode,
            // max_age was checked to be at most MAX_AGE_LIMIT, which fits in u32.
            max_age: u32::try_from(max_age).unwrap_or(MAX_AGE_LIMIT),
            mx,
        })
    }

    /// Whether `host` matches one of the `mx` patterns (§4.1).
    pub fn matches_mx(&self, host: &DomainName) -> bool {
        self.mx.iter().any(|pattern| pattern.matches(host))
    }

    /// The policy as canonical lines, for a TLS-RPT `policy-string`.
    pub fn to_lines(&self) -> Vec<String> {
        let mut lines = vec!["version: STSv1".to_owned(), format!("mode: {}", self.mode)];
        lines.extend(self.mx.iter().map(|mx| format!("mx: {mx}")));
        lines.push(format!("max_age: {}", self.max_age));
        lines
    }
}

/// A policy held in the cache, with the id it was fetched for and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CachedPolicy {
    /// The TXT record id the policy was fetched under.
    pub id: String,
    /// The policy.
    pub policy: StsPolicy,
    /// When it was fetched (seconds since the Unix epoch).
    pub fetched_at: i64,
}

impl CachedPolicy {
    /// `policy`, fetched under TXT record id `id` at `fetched_at` (seconds since the Unix epoch).
    pub fn new(id: impl Into<String>, policy: StsPolicy, fetched_at: i64) -> Self {
        Self {
            id: id.into(),
            policy,
            fetched_at,
        }
    }

    /// When the policy expires: `fetched_at + max_age`.
    pub fn expires_at(&self) -> i64 {
        self.fetched_at
            .saturating_add(i64::from(self.policy.max_age))
    }

    /// Whether the policy is still valid at `now`.
    pub fn is_valid_at(&self, now: i64) -> bool {
        now < self.expires_at()
    }
}

/// What the `_mta-sts` TXT lookup gave.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxtLookup {
    /// A valid record.
    Record(StsRecord),
    /// No valid record (none, several, or invalid).
    NoRecord,
    /// The DNS lookup failed.
    Failed,
}

/// What to do before a delivery, per the cache rules.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CachePlan {
    /// Apply this cached policy; no fetch is needed.
    Use(StsPolicy),
    /// Fetch the policy for this id, then call [`StsCache::handle_fetch`].
    Fetch {
        /// The id to fetch.
        id: String,
    },
    /// No policy applies: deliver as without MTA-STS.
    NoPolicy,
}

/// The cached MTA-STS state of one Policy Domain, as plain data (serialisable, so
/// it can be stored). Rules from RFC 8461 §3.1 and §3.3:
///
/// - a cached, unexpired policy whose id equals the TXT id is used as is;
/// - a new id (or an expired policy) means fetching; while a fetch is pending or
///   has failed, an unexpired cached policy still applies;
/// - a missing TXT record (or a DNS failure) does not evict an unexpired policy;
/// - a failed fetch of an id is not retried before [`FETCH_RETRY_INTERVAL`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StsCache {
    /// The cached policy, if any.
    pub cached: Option<CachedPolicy>,
    /// The last failed fetch: the id and when it failed.
    pub failed_fetch: Option<(String, i64)>,
}

impl StsCache {
    /// An empty cache entry.
    pub fn new() -> Self {
        Self::default()
    }

    fn valid_cached(&self, now: i64) -> Option<&CachedPolicy> {
        self.cached.as_ref().filter(|c| c.is_valid_at(now))
    }

    /// Decides, from the TXT lookup and the time, what to do.
    pub fn plan(&self, txt: &TxtLookup, now: i64) -> CachePlan {
        let valid = self.valid_cached(now);
        let fallback = || valid.map_or(CachePlan::NoPolicy, |c| CachePlan::Use(c.policy.clone()));
        match txt {
            TxtLookup::Record(record) => {
                if let Some(cached) = valid
                    && cached.id == record.id
                {
                    return CachePlan::Use(cached.policy.clone());
                }
                let recently_failed = self.failed_fetch.as_ref().is_some_and(|(id, at)| {
                    *id == record.id && now.saturating_sub(*at) < FETCH_RETRY_INTERVAL
                });
                if recently_failed {
                    fallback()
                } else {
                    CachePlan::Fetch {
                        id: record.id.clone(),
                    }
                }
            }
            TxtLookup::NoRecord | TxtLookup::Failed => fallback(),
        }
    }

    /// Records the result of a fetch for `id` at `now`, and returns the policy that
    /// now applies (the new one; on failure an unexpired cached one; else none).
    pub fn handle_fetch(
        &mut self,
        id: &str,
        result: Result<StsPolicy, StsPolicyError>,
        now: i64,
    ) -> Option<StsPolicy> {
        match result {
            Ok(policy) => {
                self.failed_fetch = None;
                self.cached = Some(CachedPolicy {
                    id: id.to_owned(),
                    policy: policy.clone(),
                    fetched_at: now,
                });
                Some(policy)
            }
            Err(_) => {
                self.failed_fetch = Some((id.to_owned(), now));
                self.valid_cached(now).map(|c| c.policy.clone())
            }
        }
    }

    /// Whether a proactive refresh is due (RFC 8461 §10.2: refresh periodically,
    /// e.g. daily, so that a policy does not silently expire).
    pub fn needs_refresh(&self, now: i64) -> bool {
        self.cached.as_ref().is_some_and(|c| {
            now.saturating_sub(c.fetched_at) >= PROACTIVE_REFRESH_INTERVAL || !c.is_valid_at(now)
        })
    }

    /// Drops an expired policy.
    pub fn evict_expired(&mut self, now: i64) {
        if self.cached.as_ref().is_some_and(|c| !c.is_valid_at(now)) {
            self.cached = None;
        }
    }
}

/// The URL of the policy file for a Policy Domain (§3.3).
pub fn policy_url(domain: &DomainName) -> String {
    format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
}

/// The TXT name to query for a Policy Domain (§3.1).
pub fn txt_name(domain: &DomainName) -> String {
    format!("_mta-sts.{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    /// RFC 8461 §3.2 example policy.
    const RFC8461_EXAMPLE: &str = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n";

    #[test]
    fn rfc8461_txt_example() {
        let record = StsRecord::parse("v=STSv1; id=20160831085700Z;").unwrap();
        assert_eq!(record.id, "20160831085700Z");
        assert_eq!(StsRecord::parse("v=STSv1;id=abc").unwrap().id, "abc");
        assert_eq!(
            StsRecord::parse("v=STSv1; id=abc; ext_1=v.a:lue")
                .unwrap()
                .id,
            "abc"
        );
    }

    #[test]
    fn txt_rejections() {
        for bad in [
            "",
            "v=STSv1",
            "v=STSv1;",
            "v=STSv2; id=1;",
            "v=STSv1; id=;",
            "v=STSv1; id=abc-def;",
            "v=STSv1; id=123456789012345678901234567890123;",
            "v=STSv1; id=1; id=2",
            "v=STSv1; noequals",
            "v=STSv1 id=1",
            "v=STSv1; ext=;",
            "v=STSv1; foo=bar",
            " v=STSv1; id=1",
        ] {
            assert!(StsRecord::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn txt_selection() {
        let records = ["v=spf1 -all", "v=STSv1; id=1;"];
        assert_eq!(StsRecord::select(records).unwrap().id, "1");
        assert_eq!(
            StsRecord::select(["v=STSv1; id=1;", "v=STSv1; id=2;"]),
            Err(StsRecordError::MultipleRecords)
        );
        assert_eq!(
            StsRecord::select(["v=spf1 -all"]),
            Err(StsRecordError::NoRecord)
        );
        assert!(StsRecord::select(["v=STSv1; id=bad!;"]).is_err());
    }

    #[test]
    fn rfc8461_policy_example() {
        let policy = StsPolicy::parse(RFC8461_EXAMPLE).unwrap();
        assert_eq!(policy.mode, StsMode::Enforce);
        assert_eq!(policy.max_age, 604_800);
        let patterns: Vec<String> = policy.mx.iter().map(ToString::to_string).collect();
        assert_eq!(
            patterns,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        // CRLF gives the same policy.
        assert_eq!(
            StsPolicy::parse(&RFC8461_EXAMPLE.replace('\n', "\r\n")).unwrap(),
            policy
        );
        // §4.1 examples.
        assert!(policy.matches_mx(&name("mail.example.com")));
        assert!(policy.matches_mx(&name("foo.example.net")));
        assert!(!policy.matches_mx(&name("example.net")));
        assert!(!policy.matches_mx(&name("a.b.example.net")));
        assert!(!policy.matches_mx(&name("mail.example.org")));
        assert!(policy.matches_mx(&name("MAIL.Example.com.")));
    }

    #[test]
    fn first_instance_wins_and_unknown_fields_are_ignored() {
        let text = "version: STSv1\nmode: testing\nmode: enforce\nfoo: bar\nmax_age: 86400\nmax_age: 1\nmx: a.example\nmx: b.example";
        let policy = StsPolicy::parse(text).unwrap();
        assert_eq!(policy.mode, StsMode::Testing);
        assert_eq!(policy.max_age, 86_400);
        assert_eq!(policy.mx.len(), 2);
    }

    #[test]
    fn policy_rejections() {
        let ok = |m: &str| format!("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: {m}\n");
        assert_eq!(
            StsPolicy::parse(&ok("31557600")).unwrap().max_age,
            MAX_AGE_LIMIT
        );
        assert_eq!(
            StsPolicy::parse(&ok("31557601")),
            Err(StsPolicyError::MaxAge)
        );
        assert_eq!(StsPolicy::parse(&ok("-1")), Err(StsPolicyError::MaxAge));
        assert_eq!(
            StsPolicy::parse(&ok("12345678901")),
            Err(StsPolicyError::MaxAge)
        );
        assert_eq!(StsPolicy::parse(&ok("")), Err(StsPolicyError::MaxAge));
        assert_eq!(
            StsPolicy::parse("mode: enforce\nmx: a.example\nmax_age: 1"),
            Err(StsPolicyError::Version)
        );
        assert_eq!(
            StsPolicy::parse("version: STSv1\nmode: report\nmx: a.example\nmax_age: 1"),
            Err(StsPolicyError::Mode)
        );
        assert_eq!(
            StsPolicy::parse("version: STSv1\nmode: enforce\nmax_age: 1"),
            Err(StsPolicyError::MissingMx)
        );
        assert!(StsPolicy::parse("version: STSv1\nmode: none\nmax_age: 1").is_ok());
        assert_eq!(
            StsPolicy::parse("version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1"),
            Err(StsPolicyError::InvalidMx("*.*.example".into()))
        );
        assert_eq!(
            StsPolicy::parse("version STSv1"),
            Err(StsPolicyError::Line(1))
        );
        assert_eq!(
            StsPolicy::parse(&"x".repeat(MAX_POLICY_SIZE + 1)),
            Err(StsPolicyError::TooLarge)
        );
    }

    #[test]
    fn policy_lines_round_trip() {
        let policy = StsPolicy::parse(RFC8461_EXAMPLE).unwrap();
        assert_eq!(
            StsPolicy::parse(&policy.to_lines().join("\n")).unwrap(),
            policy
        );
    }

    #[test]
    fn cache_rules() {
        let policy = StsPolicy::parse(RFC8461_EXAMPLE).unwrap();
        let rec = |id: &str| TxtLookup::Record(StsRecord { id: id.into() });
        let mut cache = StsCache::new();
        // Nothing cached: a record means fetch; no record means no policy.
        assert_eq!(
            cache.plan(&rec("1"), 0),
            CachePlan::Fetch { id: "1".into() }
        );
        assert_eq!(cache.plan(&TxtLookup::NoRecord, 0), CachePlan::NoPolicy);
        // A failed fetch with nothing cached: no policy, and no refetch for 5 minutes.
        assert_eq!(
            cache.handle_fetch("1", Err(StsPolicyError::Version), 0),
            None
        );
        assert_eq!(cache.plan(&rec("1"), 299), CachePlan::NoPolicy);
        assert_eq!(
            cache.plan(&rec("1"), 300),
            CachePlan::Fetch { id: "1".into() }
        );
        // A fetched policy is used while the id is unchanged and it is unexpired.
        assert_eq!(
            cache.handle_fetch("1", Ok(policy.clone()), 1000),
            Some(policy.clone())
        );
        assert_eq!(cache.plan(&rec("1"), 2000), CachePlan::Use(policy.clone()));
        // A missing TXT or a DNS failure does not evict it.
        assert_eq!(
            cache.plan(&TxtLookup::NoRecord, 2000),
            CachePlan::Use(policy.clone())
        );
        assert_eq!(
            cache.plan(&TxtLookup::Failed, 2000),
            CachePlan::Use(policy.clone())
        );
        // A new id means fetching; a failed fetch keeps the cached policy.
        assert_eq!(
            cache.plan(&rec("2"), 2000),
            CachePlan::Fetch { id: "2".into() }
        );
        assert_eq!(
            cache.handle_fetch("2", Err(StsPolicyError::Mode), 2000),
            Some(policy.clone())
        );
        assert_eq!(cache.plan(&rec("2"), 2100), CachePlan::Use(policy.clone()));
        // Expiry: max_age after the fetch.
        let expiry = 1000 + 604_800;
        assert_eq!(
            cache.plan(&TxtLookup::NoRecord, expiry - 1),
            CachePlan::Use(policy)
        );
        assert_eq!(
            cache.plan(&TxtLookup::NoRecord, expiry),
            CachePlan::NoPolicy
        );
        assert_eq!(
            cache.plan(&rec("1"), expiry),
            CachePlan::Fetch { id: "1".into() }
        );
        assert!(cache.needs_refresh(1000 + PROACTIVE_REFRESH_INTERVAL));
        assert!(!cache.needs_refresh(1001));
        cache.evict_expired(expiry);
        assert_eq!(cache.cached, None);
    }

    #[test]
    fn names() {
        let d = name("Example.com");
        assert_eq!(
            policy_url(&d),
            "https://mta-sts.example.com/.well-known/mta-sts.txt"
        );
        assert_eq!(txt_name(&d), "_mta-sts.example.com");
    }
}
