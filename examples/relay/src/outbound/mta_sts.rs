//! MTA-STS policy discovery (RFC 8461) for the delivery layer.
//!
//! postern-policy holds the rules ([`StsRecord`], [`StsPolicy`], [`StsCache`]);
//! this module does the I/O they leave to the caller:
//!
//! 1. the TXT lookup of `_mta-sts.<domain>` through the relay's [`Resolver`]
//!    (§3.1: exactly one `v=STSv1` record, else no policy);
//! 2. when the cache says so (new `id`, no or expired policy, daily
//!    refresh), an HTTPS GET of `https://mta-sts.<domain>/.well-known/mta-sts.txt`
//!    (§3.3): TLS 1.2 or later, the certificate verified against the relay's
//!    outbound trust roots for `mta-sts.<domain>` (also sent as SNI, §7.1),
//!    HTTP/1.1 with `Connection: close`, status 200 only (a 3xx is not
//!    followed), no HTTP cache, body at most 64 KiB, one deadline for the
//!    whole fetch;
//! 3. the cache entry of each Policy Domain is kept in memory and persisted
//!    as JSON under `<state_dir>/mta-sts/` (written to a temporary file,
//!    synced, then renamed), so a policy survives restarts. A failed fetch
//!    keeps applying a valid cached policy (§3.3) and the same `id` is not
//!    fetched again for five minutes.
//!
//! A failed fetch is reported with its RFC 8460 result type
//! (`sts-policy-fetch-error`, `sts-policy-invalid`, `sts-webpki-invalid`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use postern_policy::mta_sts::{
    CachePlan, FETCH_RETRY_INTERVAL, MAX_POLICY_SIZE, StsPolicyError, TxtLookup, txt_name,
};
use postern_policy::{DomainName, ResultType, StsCache, StsPolicy, StsRecord};
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use crate::net::dns::{LookupError, Resolver};
use crate::net::https::{self, AbortOnDrop, ConnectError, write_atomic};

/// The path of the policy file on the policy host (RFC 8461 §3.3).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// Why a policy could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The policy host has no usable address.
    #[error("address lookup for {host} failed: {reason}")]
    Resolve {
        /// The policy host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// No TCP connection could be made.
    #[error("connect to the policy host failed: {0}")]
    Connect(String),
    /// The policy host's certificate is not valid for `mta-sts.<domain>`.
    #[error("policy host certificate invalid: {0}")]
    Certificate(String),
    /// The TLS handshake failed for another reason.
    #[error("tls with the policy host failed: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("http exchange failed: {0}")]
    Http(String),
    /// The status was not 200 (redirects included: they are not followed).
    #[error("http status {0} (only 200 is accepted)")]
    Status(u16),
    /// The body is larger than 64 KiB.
    #[error("policy larger than 64 KiB")]
    TooLarge,
    /// The body is not UTF-8 text.
    #[error("policy is not utf-8 text")]
    NotText,
    /// The fetch did not finish within the deadline.
    #[error("policy fetch timed out")]
    Timeout,
    /// The body is not a valid policy.
    #[error("invalid policy: {0}")]
    Invalid(StsPolicyError),
}

impl FetchError {
    /// The RFC 8460 §4.3.2.2 result type for this failure.
    pub fn result_type(&self) -> ResultType {
        match self {
            Self::Certificate(_) => ResultType::StsWebpkiInvalid,
            Self::Invalid(_) | Self::NotText | Self::TooLarge => ResultType::StsPolicyInvalid,
            _ => ResultType::StsPolicyFetchError,
        }
    }
}

/// What [`StsResolver::lookup`] found for a Policy Domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StsLookup {
    /// The policy to apply (fresh or cached); `None`: deliver as without
    /// MTA-STS.
    pub policy: Option<StsPolicy>,
    /// A fetch that failed during this lookup: its RFC 8460 result type and
    /// reason.
    pub problem: Option<(ResultType, String)>,
}

#[derive(Debug, Default)]
struct Slot {
    loaded: bool,
    cache: StsCache,
}

/// How [`StsResolver`] fetches policies: the HTTPS client (its trust
/// anchors), the port and the time allowed. Built apart so that a
/// configuration reload can check it before anything changes.
#[derive(Clone)]
pub struct StsFetch {
    connector: TlsConnector,
    https_port: u16,
    timeout: Duration,
}

impl std::fmt::Debug for StsFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsFetch")
            .field("https_port", &self.https_port)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StsFetch {
    /// Fetches verifying policy hosts against `roots`, connecting to
    /// `https_port` (443 but in tests), giving each fetch `timeout`.
    pub fn new(
        roots: Arc<RootCertStore>,
        https_port: u16,
        timeout: Duration,
    ) -> Result<Self, rustls::Error> {
        // RFC 8461 §7.2 / §3.3: TLS 1.2 or later, WebPKI validation.
        Ok(Self {
            connector: https::connector(roots)?,
            https_port,
            timeout,
        })
    }
}

/// Fetches and caches MTA-STS policies; one per relay, shared by the
/// delivery workers (a Policy Domain is looked up by one worker at a time).
pub struct StsResolver {
    /// How policies are fetched; replaced by a configuration reload.
    fetch: std::sync::RwLock<StsFetch>,
    dir: PathBuf,
    slots: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl std::fmt::Debug for StsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsResolver")
            .field("fetch", &self.fetch_settings())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl StsResolver {
    /// A resolver fetching policies as `fetch` says and persisting its
    /// cache under `dir`.
    pub fn new(fetch: StsFetch, dir: PathBuf) -> Self {
        Self {
            fetch: std::sync::RwLock::new(fetch),
            dir,
            slots: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Fetches from now on as `fetch` says (a configuration reload); the
    /// cache is kept.
    pub fn reconfigure(&self, fetch: StsFetch) {
        *self
            .fetch
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fetch;
    }

    /// How policies are fetched now.
    fn fetch_settings(&self) -> StsFetch {
        self.fetch
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The file holding the cache entry of `domain`.
    fn path(&self, domain: &DomainName) -> PathBuf {
        self.dir.join(format!("{}.json", domain.as_str()))
    }

    /// The Policy Domains that have a cache entry in `dir` (entries from
    /// before a restart count too).
    fn cached_domains_in(dir: &Path) -> Vec<DomainName> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                let domain = name.to_str()?.strip_suffix(".json")?;
                DomainName::parse(domain).ok()
            })
            .collect()
    }

    /// RFC 8461 §10.2: refreshes cached policies proactively, so that the
    /// policy of a domain that gets no mail for a while neither expires nor
    /// goes stale. Runs [`lookup`](Self::lookup) for every cached Policy
    /// Domain: it fetches only where the cache rules or the daily refresh
    /// say so, and logs a failed refresh as a warning. Returns the number of
    /// domains looked up.
    pub async fn refresh_cached<R: Resolver>(&self, resolver: &R) -> usize {
        let domains = tokio::task::spawn_blocking({
            let dir = self.dir.clone();
            move || Self::cached_domains_in(&dir)
        })
        .await
        .unwrap_or_default();
        for domain in &domains {
            self.lookup(resolver, domain).await;
        }
        domains.len()
    }

    /// The policy that applies to deliveries for `domain` now, fetching it
    /// when the cache rules say so.
    pub async fn lookup<R: Resolver>(&self, resolver: &R, domain: &DomainName) -> StsLookup {
        // §3.1: exactly one valid `v=STSv1` record, else no policy; a DNS
        // failure is not "no record" for the cache (it never evicts).
        let txt = match resolver.txt(&txt_name(domain)).await {
            Ok(records) => StsRecord::select(records.iter().map(String::as_str))
                .map_or(TxtLookup::NoRecord, TxtLookup::Record),
            Err(LookupError::Temporary(_)) => TxtLookup::Failed,
            Err(_) => TxtLookup::NoRecord,
        };
        let slot = {
            let mut slots = self.slots.lock().await;
            Arc::clone(slots.entry(domain.as_str().to_owned()).or_default())
        };
        let mut slot = slot.lock().await;
        if !slot.loaded {
            slot.cache = load(self.path(domain)).await;
            slot.loaded = true;
        }
        let now = crate::reporting::tlsrpt::unix_time(SystemTime::now());
        let cache = &mut slot.cache;
        let plan = cache.plan(&txt, now);
        let fetch_id = match (&plan, &txt) {
            (CachePlan::Fetch { id }, _) => Some(id.clone()),
            // §10.2: refresh a cached policy proactively (daily), still
            // waiting five minutes after a failure (§3.3).
            (CachePlan::Use(_), TxtLookup::Record(record))
                if cache.needs_refresh(now) && !recently_failed(cache, &record.id, now) =>
            {
                Some(record.id.clone())
            }
            _ => None,
        };
        let Some(id) = fetch_id else {
            return StsLookup {
                policy: match plan {
                    CachePlan::Use(policy) => Some(policy),
                    _ => None,
                },
                problem: None,
            };
        };
        let result = self.fetch(resolver, domain).await;
        let mut problem = None;
        let policy = match result {
            Ok(policy) => {
                tracing::info!(%domain, %id, mode = %policy.mode, max_age = policy.max_age, "mta-sts policy fetched");
                cache.handle_fetch(&id, Ok(policy), now)
            }
            Err(e) => {
                // §3.3: a valid cached policy keeps applying; the id is not
                // fetched again for five minutes.
                cache.failed_fetch = Some((id.clone(), now));
                let fallback = match cache.plan(&TxtLookup::NoRecord, now) {
                    CachePlan::Use(policy) => Some(policy),
                    _ => None,
                };
                tracing::warn!(%domain, %id, error = %e, result_type = %e.result_type(),
                    cached_policy = fallback.is_some(), "mta-sts policy fetch failed");
                problem = Some((e.result_type(), e.to_string()));
                fallback
            }
        };
        let snapshot = cache.clone();
        if let Err(e) = store(self.path(domain), snapshot).await {
            tracing::warn!(%domain, error = %e, "cannot persist the mta-sts cache");
        }
        StsLookup { policy, problem }
    }

    /// Fetches and parses the policy of `domain` (RFC 8461 §3.3).
    pub async fn fetch<R: Resolver>(
        &self,
        resolver: &R,
        domain: &DomainName,
    ) -> Result<StsPolicy, FetchError> {
        let host = format!("mta-sts.{}", domain.as_str());
        let fetch = self.fetch_settings();
        let attempt = async {
            let tls = https::connect(&fetch.connector, resolver, &host, fetch.https_port)
                .await
                .map_err(|e| match e {
                    ConnectError::Resolve(reason) => FetchError::Resolve {
                        host: host.clone(),
                        reason,
                    },
                    ConnectError::Connect(last) => FetchError::Connect(last),
                    ConnectError::Name(e) => FetchError::Tls(e),
                    ConnectError::Tls(e) => tls_error(&e),
                })?;
            let body = http_get(tls, &host).await?;
            parse_body(&body)
        };
        tokio::time::timeout(fetch.timeout, attempt)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

fn recently_failed(cache: &StsCache, id: &str, now: i64) -> bool {
    cache
        .failed_fetch
        .as_ref()
        .is_some_and(|(failed, at)| failed == id && now.saturating_sub(*at) < FETCH_RETRY_INTERVAL)
}

/// A handshake error: a certificate problem is `sts-webpki-invalid`.
fn tls_error(e: &std::io::Error) -> FetchError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(c)) => FetchError::Certificate(format!("{c:?}")),
        Some(other) => FetchError::Tls(other.to_string()),
        None => FetchError::Tls(e.to_string()),
    }
}

/// One HTTP/1.1 GET of the policy over `io` (a TLS stream), with hyper:
/// `Connection: close`, no cache, status 200 only, body capped at 64 KiB
/// (Content-Length, chunked and close-delimited bodies alike).
pub async fn http_get<S>(io: S, host: &str) -> Result<Bytes, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| FetchError::Http(e.to_string());
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(http)?;
    // The connection future drives the I/O; it ends when the response is
    // read (Connection: close) and is aborted if we return early.
    let driver = tokio::spawn(conn);
    let _abort = AbortOnDrop(driver);
    let request = Request::get(POLICY_PATH)
        .header(HOST, host)
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    // RFC 8461 §3.3: "only 200 OK"; "3xx redirects MUST NOT be followed".
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    // §3.2: the media type SHOULD be text/plain; others are accepted.
    let media = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !media
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/plain")
    {
        tracing::debug!(%host, media, "mta-sts policy not served as text/plain");
    }
    // §3.3: a size limit (64 KiB) protects against a hostile host.
    let collected = Limited::new(response.into_body(), MAX_POLICY_SIZE)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                FetchError::TooLarge
            } else {
                FetchError::Http(e.to_string())
            }
        })?;
    Ok(collected.to_bytes())
}

/// Parses a fetched body into a policy.
pub fn parse_body(body: &[u8]) -> Result<StsPolicy, FetchError> {
    let text = std::str::from_utf8(body).map_err(|_| FetchError::NotText)?;
    StsPolicy::parse(text).map_err(FetchError::Invalid)
}

/// Reads the persisted cache entry of `domain` under `state_dir`, without
/// changing it (`policy explain`, `probe`): `None` when there is none.
pub fn read_cached(state_dir: &Path, domain: &DomainName) -> Result<Option<StsCache>, String> {
    let path = state_dir
        .join("mta-sts")
        .join(format!("{}.json", domain.as_str()));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a persisted cache entry; a missing or unreadable file is an empty
/// entry (the policy is fetched again).
async fn load(path: PathBuf) -> StsCache {
    let read = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable mta-sts cache");
                None
            }
        }
    })
    .await;
    read.ok().flatten().unwrap_or_default()
}

/// Writes a cache entry atomically: temporary file, sync, rename.
async fn store(path: PathBuf, cache: StsCache) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || write_atomic(&path, &cache))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_cached_reads_without_writing_and_names_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let domain = DomainName::parse("example.com").unwrap();
        assert!(read_cached(dir.path(), &domain).unwrap().is_none());
        std::fs::create_dir_all(dir.path().join("mta-sts")).unwrap();
        let path = dir.path().join("mta-sts/example.com.json");
        std::fs::write(&path, b"{not json").unwrap();
        let e = read_cached(dir.path(), &domain).unwrap_err();
        assert!(e.contains("example.com.json"), "{e}");
        let cache = StsCache::new();
        std::fs::write(&path, serde_json::to_vec(&cache).unwrap()).unwrap();
        let read = read_cached(dir.path(), &domain).unwrap().unwrap();
        assert!(read.cached.is_none());
    }
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Serves `response` to one request on an in-memory pipe and returns the
    /// client's result and the request it sent.
    async fn exchange(response: Vec<u8>) -> (Result<Bytes, FetchError>, String) {
        let (client, mut server) = tokio::io::duplex(256 * 1024);
        let server = tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            server.write_all(&response).await.unwrap();
            server.shutdown().await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            http_get(client, "mta-sts.example.test"),
        )
        .await
        .unwrap();
        (result, server.await.unwrap())
    }

    const POLICY: &str =
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmax_age: 86400\r\n";

    #[tokio::test]
    async fn content_length_body_and_request_shape() {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{POLICY}",
            POLICY.len()
        );
        let (result, request) = exchange(response.into_bytes()).await;
        assert_eq!(result.unwrap(), POLICY.as_bytes());
        let lower = request.to_ascii_lowercase();
        assert!(
            request.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            lower.contains("host: mta-sts.example.test\r\n"),
            "{request}"
        );
        assert!(lower.contains("connection: close\r\n"), "{request}");
    }

    #[tokio::test]
    async fn chunked_body() {
        let (a, b) = POLICY.split_at(20);
        let response = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let (result, _) = exchange(response.into_bytes()).await;
        assert_eq!(result.unwrap(), POLICY.as_bytes());
    }

    #[tokio::test]
    async fn body_read_to_eof_without_length() {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n{POLICY}"
        );
        let (result, _) = exchange(response.into_bytes()).await;
        let body = result.unwrap();
        assert_eq!(body, POLICY.as_bytes());
        assert_eq!(parse_body(&body).unwrap().mx.len(), 1);
    }

    #[tokio::test]
    async fn redirect_is_not_followed() {
        let response = b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere.test/p.txt\r\nContent-Length: 0\r\n\r\n";
        let (result, _) = exchange(response.to_vec()).await;
        assert_eq!(result, Err(FetchError::Status(301)));
        assert_eq!(
            FetchError::Status(301).result_type(),
            ResultType::StsPolicyFetchError
        );
    }

    #[tokio::test]
    async fn other_statuses_fail() {
        for status in [
            "404 Not Found",
            "500 Internal Server Error",
            "204 No Content",
        ] {
            let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            let (result, _) = exchange(response.into_bytes()).await;
            assert!(
                matches!(result, Err(FetchError::Status(s)) if s != 200),
                "{status}"
            );
        }
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_declared_or_not() {
        let big = "x".repeat(MAX_POLICY_SIZE + 1);
        let declared = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        );
        assert_eq!(
            exchange(declared.into_bytes()).await.0,
            Err(FetchError::TooLarge)
        );
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        );
        assert_eq!(
            exchange(chunked.into_bytes()).await.0,
            Err(FetchError::TooLarge)
        );
        let eof = format!("HTTP/1.1 200 OK\r\n\r\n{big}");
        assert_eq!(
            exchange(eof.into_bytes()).await.0,
            Err(FetchError::TooLarge)
        );
        let exact = "y".repeat(MAX_POLICY_SIZE);
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{exact}",
            exact.len()
        );
        assert_eq!(
            exchange(ok.into_bytes()).await.0.unwrap().len(),
            MAX_POLICY_SIZE
        );
    }

    #[tokio::test]
    async fn garbage_is_an_http_error() {
        let (result, _) = exchange(b"SMTP/1.0 220 hello\r\n\r\n".to_vec()).await;
        assert!(matches!(result, Err(FetchError::Http(_))), "{result:?}");
    }

    #[test]
    fn body_classification() {
        assert_eq!(parse_body(&[0xff, 0xfe]), Err(FetchError::NotText));
        let invalid = parse_body(b"version: STSv1\nmode: enforce\nmax_age: 10\n").unwrap_err();
        assert_eq!(invalid, FetchError::Invalid(StsPolicyError::MissingMx));
        assert_eq!(invalid.result_type(), ResultType::StsPolicyInvalid);
        assert_eq!(
            FetchError::Certificate("x".into()).result_type(),
            ResultType::StsWebpkiInvalid
        );
    }

    /// A TLS server on loopback presenting a self-signed certificate for
    /// `mta-sts.example.test`, answering one request with a valid policy.
    async fn self_signed_policy_host() -> u16 {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mta-sts.example.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let body = POLICY;
                    let _ = tls
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn untrusted_policy_host_is_sts_webpki_invalid_and_nothing_is_cached() {
        let port = self_signed_policy_host().await;
        let dir = tempfile::tempdir().unwrap();
        let fetch = StsFetch::new(
            Arc::new(RootCertStore::empty()),
            port,
            Duration::from_secs(10),
        )
        .unwrap();
        let sts = StsResolver::new(fetch, dir.path().to_owned());
        let domain = DomainName::parse("example.test").unwrap();
        let dns = crate::net::dns::FixedResolver::new()
            .with_address(
                "mta-sts.example.test",
                std::net::IpAddr::from([127, 0, 0, 1]),
            )
            .with_txt(
                "_mta-sts.example.test",
                Ok(vec!["v=STSv1; id=a1;".to_owned()]),
            );
        let err = sts.fetch(&dns, &domain).await.unwrap_err();
        assert!(matches!(err, FetchError::Certificate(_)), "{err:?}");
        assert_eq!(err.result_type(), ResultType::StsWebpkiInvalid);
        let found = sts.lookup(&dns, &domain).await;
        assert_eq!(found.policy, None);
        assert_eq!(
            found.problem.map(|p| p.0),
            Some(ResultType::StsWebpkiInvalid)
        );
        let stored: StsCache =
            serde_json::from_slice(&std::fs::read(dir.path().join("example.test.json")).unwrap())
                .unwrap();
        assert_eq!(stored.cached, None);
        assert_eq!(stored.failed_fetch.map(|f| f.0), Some("a1".to_owned()));
        // No TXT record: no fetch, no policy, no problem.
        let other = DomainName::parse("other.test").unwrap();
        assert_eq!(sts.lookup(&dns, &other).await, StsLookup::default());
        assert!(!dir.path().join("other.test.json").exists());
    }

    #[test]
    fn cache_file_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("example.test.json");
        let mut cache = StsCache::new();
        let policy = parse_body(POLICY.as_bytes()).unwrap();
        cache.handle_fetch("id1", Ok(policy), 1000);
        write_atomic(&path, &cache).unwrap();
        let back: StsCache = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, cache);
        assert!(!path.with_extension("json.tmp").exists());
    }
}
