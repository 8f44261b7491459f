//! A running relay: the spool recovered, the certificates loaded (the
//! Default Cert generated on first start), the SMTP listeners, the delivery
//! scheduler, certificate hot reload; stopped gracefully.
//!
//! [`Relay::start`] returns once every listener is bound; the binary then
//! waits for SIGINT / SIGTERM (SIGHUP reloads the certificates) and calls
//! [`Relay::shutdown`]. Tests run it in process the same way:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use postern_relay::config::Config;
//! use postern_relay::relay::Relay;
//!
//! let dir = tempfile::tempdir()?;
//! let config = Config::from_toml_str(&format!(
//!     "listen = [\"127.0.0.1:0\"]\nstate_dir = {:?}\n\
//!      [certificates]\ndefault_rsa_bits = 2048\n",
//!     dir.path().join("state"),
//! ))?;
//! let relay = Relay::start(config).await?;
//! let addr = relay.local_addrs()[0]; // the port the system chose
//! assert!(addr.ip().is_loopback() && addr.port() != 0);
//! // The Default Cert was generated into the state directory.
//! assert!(dir.path().join("state/certs/default-rsa.crt.pem").exists());
//! relay.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postern_smtp::BareLineEndings;
use postern_tokio::server::{Server, ServerSettings};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::routes::SMTP_PORT;
use crate::config::{BareNewlines, Config};
use crate::inbound::access::AccessPolicy;
use crate::inbound::session::{RelayHandler, Shared};
use crate::metrics::{Endpoint, Metrics};
use crate::net::dns::{DnsSetupError, SystemResolver};
use crate::net::fd_limit::{self, TooLow};
use crate::outbound::delivery::Delivery;
use crate::outbound::mta_sts::StsResolver;
use crate::outbound::routing::Router;
use crate::queue::lock::{LockError, StateLock};
use crate::queue::spool::{Spool, SpoolError};
use crate::queue::{Queue, RetryPolicy, SharedQueue};
use crate::reporting::tlsrpt::{ReportSettings, SendSummary, TlsReporter};
use crate::tls::{TlsSetup, TlsSetupError};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration, the certificates or the trust anchors.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The MTA-STS HTTPS client could not be configured.
    #[error("mta-sts client: {0}")]
    MtaSts(#[from] rustls::Error),
    /// A `[dns]` setting cannot be used.
    #[error(transparent)]
    Dns(#[from] DnsSetupError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The state directory could not be created.
    #[error("state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The open-file limit leaves no room for a connection.
    #[error(transparent)]
    FdLimit(#[from] TooLow),
    /// Another relay uses the state directory, or it cannot be locked.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The server settings were refused.
    #[error(transparent)]
    Server(#[from] postern_tokio::server::ServerError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A started relay.
#[derive(Debug)]
pub struct Relay {
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    reload: Arc<Notify>,
    tasks: JoinSet<()>,
    delivery: Arc<Delivery>,
    metrics_addr: Option<SocketAddr>,
    // Released when the relay is dropped, after shutdown.
    _lock: StateLock,
}

impl Relay {
    /// Starts the relay; returns once it listens.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let resolver = SystemResolver::from_config(&config.dns)?;
        Self::start_with_resolver(config, resolver, SMTP_PORT).await
    }

    /// Starts the relay with this DNS resolver, connecting to MX hosts on
    /// `mx_port` (25 but in tests); returns once it listens.
    pub async fn start_with_resolver(
        config: Config,
        resolver: SystemResolver,
        mx_port: u16,
    ) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| StartError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        // One relay per state directory: locked before anything in it is touched.
        let lock = StateLock::acquire(&config.state_dir)?;
        let max_connections = fit_connections(&config)?;
        let spool_dir = config.spool_dir();
        let (spool, recovery) = tokio::task::spawn_blocking(move || Spool::open(spool_dir))
            .await
            .map_err(|e| StartError::StateDir {
                path: config.state_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        if recovery.cleaned_temp > 0 {
            tracing::info!(
                count = recovery.cleaned_temp,
                "removed incomplete messages (never acknowledged)"
            );
        }
        for bad in &recovery.corrupt {
            let moved_to = bad
                .moved_to
                .as_ref()
                .map_or_else(|| "nowhere".to_owned(), |p| p.display().to_string());
            tracing::warn!(entry = %bad.name, reason = %bad.reason, %moved_to, "unreadable queue entry moved aside");
        }
        let mut queue = Queue::new(RetryPolicy::from_config(&config.queue));
        for envelope in recovery.messages {
            queue.insert(envelope);
        }
        // Generating the RSA-4096 Default Cert takes a moment: off the runtime.
        let cfg = config.clone();
        let tls = tokio::task::spawn_blocking(move || TlsSetup::new(&cfg))
            .await
            .map_err(|e| StartError::StateDir {
                path: config.state_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        for row in tls.store.list(rustls::pki_types::UnixTime::now()) {
            tracing::info!(name = %row.name, subject = %row.subject, key = %format!("{} {}", row.key_type, row.key_bits),
                fingerprint = %row.fingerprint, status = %row.status, "certificate");
        }
        // Again once a day, by the certificate reload task.
        crate::tls::certs::log_expiry(&tls.store, rustls::pki_types::UnixTime::now());
        let routes = config.static_routes().map_err(TlsSetupError::from)?;
        let queue = Arc::new(SharedQueue::new(Arc::new(spool), queue));
        let shared = Arc::new(Shared {
            inbound: tls.policy.inbound.clone(),
            access: AccessPolicy::from_config(&config),
            queue: Arc::clone(&queue),
            config: config.clone(),
        });

        let mut settings = ServerSettings::new(
            config.hostname.clone(),
            tls.policy.inbound.clone(),
            tls.server.clone(),
        );
        settings.max_connections = max_connections;
        settings.handshake_timeout = config.timeouts.tls_handshake.0;
        settings.shutdown_grace = config.timeouts.shutdown_grace.0;
        settings.smtp.max_recipients = config.max_recipients;
        settings.smtp.data.max_message_size = config.message_size_limit;
        settings.smtp.data.bare_line_endings = match config.bare_newlines {
            BareNewlines::Normalize => BareLineEndings::Normalize,
            BareNewlines::Reject => BareLineEndings::Reject,
        };
        settings.smtp.timeouts.command = config.timeouts.server_command.0;
        settings.smtp.timeouts.data = config.timeouts.server_data.0;
        settings.smtp.greet_pause = config.timeouts.greet_pause.0;
        settings.greet_pass_ttl = config.timeouts.greet_pass_ttl.0;
        settings.smtp.session_time_limit = config.timeouts.server_session.0;
        settings.smtp.max_junk_commands = config.junk_command_limit;
        settings.stress_percent = config.stress.threshold;
        settings.smtp.stress.command_timeout = config.stress.server_command.0;
        settings.smtp.stress.max_errors = config.stress.error_limit;
        settings.smtp.stress.max_junk_commands = config.stress.junk_command_limit;
        let metrics = Arc::new(Metrics::new());
        let handler = RelayHandler::new(Arc::clone(&shared)).with_metrics(Arc::clone(&metrics));
        let server = Server::new(settings, handler)?;

        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for &addr in &config.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            let local = l.local_addr().unwrap_or(addr);
            tracing::info!(%local, "listening");
            addrs.push(local);
            listeners.push(l);
        }

        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for listener in listeners {
            let server = server.clone();
            let mut rx = rx.clone();
            tasks.spawn(async move {
                server
                    .serve(listener, async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await;
            });
        }
        let router = Router::new(routes, resolver).with_mx_port(mx_port);
        let mta_sts = StsResolver::new(
            crate::tls::outbound_roots(&config)?,
            config.mta_sts.https_port,
            config.mta_sts.fetch_timeout.0,
            config.state_dir.join("mta-sts"),
        )?;
        let mut delivery = Delivery::new(
            config.clone(),
            Arc::clone(&queue),
            router,
            tls.policy.outbound.clone(),
            Arc::clone(&tls.client),
            mta_sts,
        )
        .with_listen_addrs(&addrs)
        .with_metrics(Arc::clone(&metrics));
        // RFC 8460 reporting exists only when enabled: no cost otherwise.
        // Built whether or not reporting is on: the DKIM key is checked at start.
        let report_settings = ReportSettings::from_config(&config).map_err(TlsSetupError::from)?;
        if config.tls_reporting.enabled {
            let reporter = TlsReporter::new(
                report_settings,
                crate::tls::outbound_roots(&config)?,
                config.state_dir.join("tlsrpt"),
            )?;
            delivery = delivery.with_tls_reporter(Arc::new(reporter));
        }
        let delivery = Arc::new(delivery);
        tasks.spawn(Arc::clone(&delivery).run(rx.clone()));
        tasks.spawn(Arc::clone(&delivery).run_tls_reports(rx.clone()));
        tasks.spawn(Arc::clone(&delivery).run_mta_sts_refresh(rx.clone()));
        let mut metrics_addr = None;
        if let Some(addr) = config.metrics.listen {
            let endpoint = Endpoint::bind(
                addr,
                metrics,
                Arc::clone(&queue),
                config.cert_dir(),
                rx.clone(),
            )
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
            let local = endpoint.local_addr().unwrap_or(addr);
            tracing::info!(%local, "metrics listening");
            metrics_addr = Some(local);
            tasks.spawn(endpoint.serve());
        }
        let reload = Arc::new(Notify::new());
        tasks.spawn(reload_certificates(config, tls, Arc::clone(&reload), rx));
        tracing::info!(queued = queue.schedule().len(), "relay started");
        Ok(Self {
            addrs,
            shutdown,
            reload,
            tasks,
            delivery,
            metrics_addr,
            _lock: lock,
        })
    }

    /// The bound listen addresses (a configured port 0 shows the real one).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound address of the metrics endpoint, when `[metrics] listen` is
    /// set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Sends the TLS reports (RFC 8460) that are due by `now`, as the
    /// relay's own timer does every minute; `now` is passed in so that the
    /// end of a day can be simulated. Nothing when reporting is disabled.
    pub async fn send_tls_reports(&self, now: SystemTime) -> SendSummary {
        self.delivery.send_tls_reports(now).await
    }

    /// Refreshes the cached MTA-STS policies that are due now, as the
    /// relay's own timer does every hour (RFC 8461 §10.2: a policy is
    /// fetched again about daily even when no mail goes to its domain);
    /// returns the number of Policy Domains looked up.
    pub async fn refresh_mta_sts(&self) -> usize {
        self.delivery.refresh_mta_sts().await
    }

    /// Reloads the certificates now (SIGHUP).
    pub fn reload_certificates(&self) {
        self.reload.notify_one();
    }

    /// Stops accepting, lets sessions and deliveries finish within the
    /// grace period, and returns when everything stopped.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("relay stopped");
    }
}

/// How often the relay logs again the certificates that expire within 30
/// days or have expired (also logged at start).
const EXPIRY_LOG_INTERVAL: Duration = Duration::from_secs(86_400);

/// Raises the open-file limit as far as the hard limit allows, and returns
/// the connections that fit in it: `max_connections`, or fewer with a
/// warning.
fn fit_connections(config: &Config) -> Result<usize, TooLow> {
    let (before, after) = fd_limit::raise();
    if after != before {
        tracing::info!(from = %before, to = %after, "open-file limit raised");
    }
    let reserve = fd_limit::reserve(config.listen.len(), config.delivery_workers);
    let plan = fd_limit::plan(after, config.max_connections, reserve)?;
    if plan.lowered() {
        tracing::warn!(
            configured = plan.configured,
            max_connections = plan.max_connections,
            "max_connections = {} does not fit in the open-file limit {}: serving {} connections; \
             raise the limit (ulimit -n, systemd LimitNOFILE=) to serve {}",
            plan.configured,
            plan.limit,
            plan.max_connections,
            plan.configured
        );
    }
    Ok(plan.max_connections)
}

/// Polls the certificate directory (and answers reload requests); swaps the
/// served certificates when it changed. Logs the certificates that expire
/// soon or have expired once a day.
async fn reload_certificates(
    config: Config,
    mut tls: TlsSetup,
    now: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = tls.cert_dir.stamp();
    let mut next_expiry_log = tokio::time::Instant::now() + EXPIRY_LOG_INTERVAL;
    loop {
        let forced = tokio::select! {
            () = tokio::time::sleep(config.certificates.reload_interval.0) => false,
            () = now.notified() => true,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        if tokio::time::Instant::now() >= next_expiry_log {
            crate::tls::certs::log_expiry(&tls.store, rustls::pki_types::UnixTime::now());
            next_expiry_log += EXPIRY_LOG_INTERVAL;
        }
        let stamp = tls.cert_dir.stamp();
        if !forced && stamp == seen {
            continue;
        }
        seen = stamp;
        let cfg = config.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = tls.reload(&cfg);
            (tls, r)
        })
        .await;
        match result {
            Ok((back, Ok(n))) => {
                tls = back;
                let at = OffsetDateTime::from(SystemTime::now())
                    .format(&Rfc3339)
                    .unwrap_or_default();
                tracing::info!(certificates = n, %at, "certificates reloaded");
            }
            Ok((back, Err(e))) => {
                tls = back;
                tracing::warn!(error = %e, "certificate reload failed; the previous certificates stay in use");
            }
            Err(e) => {
                tracing::error!(error = %e, "certificate reload task failed");
                return;
            }
        }
    }
}
