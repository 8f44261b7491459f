//! Metrics in the Prometheus text format, and health checks for
//! supervisors, on a listener of their own (`[metrics] listen`, off by
//! default).
//!
//! - `GET /metrics`: the counters and histograms below, and gauges computed
//!   when scraped (queue size, age of the oldest message, certificate
//!   expiry). Every label has a bounded set of values: no domain, address
//!   or queue id is ever a label.
//! - `GET /health`: `200 ok` while the process serves (liveness).
//! - `GET /ready`: `200 ready` once the listeners are bound and while the
//!   spool directory is there and the relay is not shutting down; else
//!   `503` (readiness).
//!
//! docs/metrics.md describes each metric.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::queue::SharedQueue;
use crate::tls::certs::CertDir;

/// Most scrapes served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// Time a scraper has to send its request and read the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// `postern_inbound_sessions_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    tls_version: String,
    cipher: String,
    client_certificate: String,
}

/// A label set of one label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

/// `postern_inbound_refusals_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    stage: String,
    code: String,
}

/// `postern_outbound_attempts_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    tls_mode: String,
    result: String,
}

/// `postern_tls_handshake_duration_seconds` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: String,
}

/// `postern_certificate_expiry_timestamp_seconds` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabel {
    name: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn handshake_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The relay's metrics: recorded by the inbound sessions and the delivery
/// workers, read by the endpoint.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions: Family<SessionLabels, Counter>,
    starttls: Family<EventLabel, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    handshakes: HistogramFamily<DirectionLabel>,
    deliveries: Histogram,
    queue_messages: Gauge,
    queue_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    certificate_expiry: Family<CertificateLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("postern");
        let sessions = Family::<SessionLabels, Counter>::default();
        registry.register(
            "inbound_sessions",
            "Inbound SMTP sessions ended, by TLS version, cipher and client certificate trust",
            sessions.clone(),
        );
        let starttls = Family::<EventLabel, Counter>::default();
        registry.register(
            "inbound_starttls",
            "STARTTLS offered (in an EHLO reply), taken (accepted) and failed (handshake failed or timed out)",
            starttls.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "inbound_refusals",
            "Refused inbound commands, by stage and reply code",
            refusals.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "outbound_attempts",
            "Outbound delivery attempts at one host, by TLS mode and result (success, an RFC 8460 result type, or failure)",
            attempts.clone(),
        );
        let handshakes: HistogramFamily<DirectionLabel> =
            Family::new_with_constructor(handshake_histogram);
        registry.register(
            "tls_handshake_duration_seconds",
            "TLS handshake duration, inbound and outbound",
            handshakes.clone(),
        );
        // 10 ms to about 5 minutes.
        let deliveries = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        registry.register(
            "delivery_duration_seconds",
            "Duration of one delivery attempt at one host (connection, TLS, transaction)",
            deliveries.clone(),
        );
        let queue_messages = Gauge::default();
        registry.register(
            "queue_messages",
            "Messages in the queue",
            queue_messages.clone(),
        );
        let queue_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "queue_oldest_message_age_seconds",
            "Age of the oldest message in the queue (0 when it is empty)",
            queue_oldest.clone(),
        );
        let certificate_expiry = Family::<CertificateLabel, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "End of validity (Unix time) of each certificate of the certificate table",
            certificate_expiry.clone(),
        );
        Self {
            registry,
            sessions,
            starttls,
            refusals,
            attempts,
            handshakes,
            deliveries,
            queue_messages,
            queue_oldest,
            certificate_expiry,
        }
    }

    /// An inbound session ended: its TLS version (`none` in plaintext),
    /// cipher (OpenSSL name, `none`) and client certificate trust (`none`
    /// without TLS, else `anonymous`, `untrusted`, `trusted`, `verified`).
    pub fn session(&self, tls_version: &str, cipher: &str, client_certificate: &str) {
        self.sessions
            .get_or_create(&SessionLabels {
                tls_version: tls_version.to_owned(),
                cipher: cipher.to_owned(),
                client_certificate: client_certificate.to_owned(),
            })
            .inc();
    }

    /// STARTTLS `offered`, `taken` or `failed`.
    pub fn starttls(&self, event: &str) {
        self.starttls
            .get_or_create(&EventLabel {
                event: event.to_owned(),
            })
            .inc();
    }

    /// A refusal at `stage` (`connect`, `helo`, `starttls`, `mail`,
    /// `rcpt`, `data`, `other`) with this reply code.
    pub fn refusal(&self, stage: &str, code: u16) {
        self.refusals
            .get_or_create(&RefusalLabels {
                stage: stage.to_owned(),
                code: code.to_string(),
            })
            .inc();
    }

    /// One attempt at one host under `tls_mode` (the configuration's
    /// spelling) ended with `result`, and took `took`.
    pub fn attempt(&self, tls_mode: &str, result: &str, took: Duration) {
        self.attempts
            .get_or_create(&AttemptLabels {
                tls_mode: tls_mode.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.deliveries.observe(took.as_secs_f64());
    }

    /// A TLS handshake (`inbound` or `outbound`) completed in `took`.
    pub fn handshake(&self, direction: &str, took: Duration) {
        self.handshakes
            .get_or_create(&DirectionLabel {
                direction: direction.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges of `state` computed now.
    fn render(&self, state: &Scrape) -> String {
        let now = SystemTime::now();
        let (count, oldest) = {
            let queue = state.queue.schedule();
            let oldest = queue.envelopes().map(|e| e.received_at).min();
            (queue.len(), oldest)
        };
        self.queue_messages
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        let age = oldest
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        self.queue_oldest.set(age.as_secs_f64());
        self.certificate_expiry.clear();
        if let Ok((store, _)) = CertDir::new(&state.cert_dir).existing_store() {
            for row in store.list(rustls::pki_types::UnixTime::now()) {
                self.certificate_expiry
                    .get_or_create(&CertificateLabel { name: row.name })
                    .set(row.not_after.unix_timestamp());
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

/// What a scrape reads besides the counters.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    queue: Arc<SharedQueue>,
    cert_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
}

/// The endpoint, bound: serve it with [`Endpoint::serve`].
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    scrape: Arc<Scrape>,
}

impl Endpoint {
    /// Binds `addr` for the metrics of this relay (its queue and
    /// certificate directory).
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        queue: Arc<SharedQueue>,
        cert_dir: PathBuf,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            scrape: Arc::new(Scrape {
                metrics,
                queue,
                cert_dir,
                shutdown,
            }),
        })
    }

    /// The bound address (a configured port 0 shows the real one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until shutdown; each connection is bounded in time, and at
    /// most 16 are served at once.
    pub async fn serve(self) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut shutdown = self.scrape.shutdown.clone();
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let Ok((tcp, _)) = accepted else {
                // Out of descriptors, say: not in a tight loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let scrape = Arc::clone(&self.scrape);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let scrape = Arc::clone(&scrape);
                    async move { Ok::<_, std::convert::Infallible>(answer(&scrape, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tcp), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                drop(permit);
            });
        }
    }
}

/// The answer to one request.
fn answer<B>(scrape: &Scrape, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            scrape.metrics.render(scrape),
        ),
        "/health" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/ready" => {
            let stopping = *scrape.shutdown.borrow();
            let spool = scrape.queue.spool.root().is_dir();
            if !stopping && spool {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                let why = if stopping {
                    "shutting down\n"
                } else {
                    "spool directory missing\n"
                };
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why.into())
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_exposed_with_bounded_labels() {
        let m = Metrics::new();
        m.session("TLSv1.3", "TLS_AES_256_GCM_SHA384", "anonymous");
        m.starttls("taken");
        m.refusal("rcpt", 554);
        m.attempt("opportunistic", "success", Duration::from_millis(20));
        m.handshake("outbound", Duration::from_millis(3));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        for line in [
            "postern_inbound_sessions_total{tls_version=\"TLSv1.3\",cipher=\"TLS_AES_256_GCM_SHA384\",client_certificate=\"anonymous\"} 1",
            "postern_inbound_starttls_total{event=\"taken\"} 1",
            "postern_inbound_refusals_total{stage=\"rcpt\",code=\"554\"} 1",
            "postern_outbound_attempts_total{tls_mode=\"opportunistic\",result=\"success\"} 1",
            "postern_tls_handshake_duration_seconds_count{direction=\"outbound\"} 1",
            "postern_delivery_duration_seconds_count 1",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
    }
}
