//! A running relay: the SMTP listeners bound (then, started as root with
//! `user`, root given up), the spool recovered, the certificates loaded (the
//! Default Cert generated on first start), the delivery scheduler,
//! certificate hot reload, configuration reload; stopped gracefully.
//!
//! [`Relay::start`] returns once every listener is bound; the binary then
//! waits for SIGINT / SIGTERM (SIGHUP reads the configuration file again:
//! [`Relay::reload`]) and calls [`Relay::shutdown`]. A reload builds and
//! checks everything the new configuration needs before anything changes,
//! then swaps it in: the server settings, the inbound sessions' shared
//! state, the delivery rules, the retry policy, the certificates — each
//! session and each delivery attempt keeps the ones it started with. Tests
//! run it in process the same way:
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
//! // A reload: checked whole, then in force for the sessions that start next.
//! let mut config = relay.config();
//! config.max_recipients = 200;
//! assert!(relay.reload(config).await?.restart_needed.is_empty());
//! assert_eq!(relay.config().max_recipients, 200);
//! relay.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use postern_smtp::BareLineEndings;
use postern_tokio::server::{Server, ServerSettings};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::routes::{SMTP_PORT, StaticRoutes};
use crate::config::{BareNewlines, Config};
use crate::inbound::access::AccessPolicy;
use crate::inbound::session::{RelayHandler, Shared};
use crate::metrics::{Endpoint, Metrics};
use crate::net::dns::{DnsSetupError, SystemResolver};
use crate::net::fd_limit::{self, TooLow};
use crate::outbound::delivery::{Delivery, DeliveryRules};
use crate::outbound::mta_sts::{StsFetch, StsResolver};
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
    /// Root could not be given up for `user`.
    #[cfg(unix)]
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
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
    live: Arc<Live>,
    metrics_addr: Option<SocketAddr>,
    // Released when the relay is dropped, after shutdown.
    _lock: StateLock,
}

/// What a configuration reload replaces, and what it replaces it in.
#[derive(Debug)]
struct Live {
    /// The configuration in force (its TLS side in `tls`).
    config: Mutex<Config>,
    /// The certificates and TLS contexts of `config`; the certificate
    /// reload task swaps certificates in it.
    tls: Mutex<TlsSetup>,
    server: Server<RelayHandler>,
    handler: RelayHandler,
    delivery: Arc<Delivery>,
    queue: Arc<SharedQueue>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A configuration made ready to run: everything built from it and
/// checked. Preparing one changes nothing in the running relay; putting
/// it in force ([`Prepared::apply`]) cannot fail.
struct Prepared {
    config: Config,
    tls: TlsSetup,
    server: ServerSettings,
    shared: Arc<Shared>,
    rules: DeliveryRules,
    sts: StsFetch,
    retry: RetryPolicy,
}

impl Prepared {
    /// Builds and checks everything `config` needs: the TLS policy, the
    /// certificates (the Default Cert generated if missing) and trust
    /// anchors, the server settings, the static routes, the MTA-STS
    /// client, the TLS-RPT settings. `router` brings the resolver.
    async fn new(
        config: Config,
        queue: &Arc<SharedQueue>,
        router: &Router<SystemResolver>,
    ) -> Result<Self, StartError> {
        let max_connections = fit_connections(&config)?;
        // Generating the RSA-4096 Default Cert takes a moment: off the runtime.
        let cfg = config.clone();
        let tls = tokio::task::spawn_blocking(move || TlsSetup::new(&cfg))
            .await
            .map_err(|e| StartError::StateDir {
                path: config.state_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let server = server_settings(&config, &tls, max_connections);
        server.validate()?;
        let routes = config.static_routes().map_err(TlsSetupError::from)?;
        let sts = StsFetch::new(
            crate::tls::outbound_roots(&config)?,
            config.mta_sts.https_port,
            config.mta_sts.fetch_timeout.0,
        )?;
        // Checked whether or not reporting is on (the DKIM key among them).
        ReportSettings::from_config(&config).map_err(TlsSetupError::from)?;
        let shared = Arc::new(Shared {
            inbound: tls.policy.inbound.clone(),
            access: AccessPolicy::from_config(&config),
            queue: Arc::clone(queue),
            config: config.clone(),
        });
        let rules = DeliveryRules::new(
            config.clone(),
            router.with_routes(routes),
            tls.policy.outbound.clone(),
            Arc::clone(&tls.client),
        );
        Ok(Self {
            retry: RetryPolicy::from_config(&config.queue),
            config,
            tls,
            server,
            shared,
            rules,
            sts,
        })
    }

    /// Puts this configuration in force: new sessions and new delivery
    /// attempts run under it; those in progress finish under the one they
    /// started with.
    fn apply(self, live: &Live) {
        // Checked by `new` (`ServerSettings::validate`): cannot fail here.
        if let Err(e) = live.server.reconfigure(self.server) {
            tracing::error!(error = %e, "server settings refused after their check");
            return;
        }
        live.handler.replace(self.shared);
        live.delivery.reconfigure(self.rules, self.sts);
        live.queue.schedule().set_policy(self.retry);
        *live.tls.lock().unwrap_or_else(PoisonError::into_inner) = self.tls;
        *live.config.lock().unwrap_or_else(PoisonError::into_inner) = self.config;
    }
}

/// The inbound server settings of `config`.
fn server_settings(config: &Config, tls: &TlsSetup, max_connections: usize) -> ServerSettings {
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
    settings
}

/// Gives `new` the running values of the settings a relay reads only at
/// start, so that the configuration in force describes what runs; returns
/// the names of those that differed (a reload says a restart is needed for
/// them). One list for both, so they cannot drift apart.
pub fn keep_start_settings(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident),*) => {$(
            if new.$field != running.$field {
                changed.push(stringify!($field));
                new.$field.clone_from(&running.$field);
            }
        )*};
    }
    keep!(
        listen,
        state_dir,
        user,
        group,
        delivery_workers,
        dns,
        tls_reporting,
        log,
        log_format,
        metrics
    );
    changed
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
        // Started as root with `user`: the state directory is the user's now,
        // and root is given up once the listeners are bound.
        #[cfg(unix)]
        let account = crate::privileges::Account::prepare(&config)?;
        // Raised before the listeners take descriptors (again, silently, by
        // each preparation).
        raise_fd_limit();
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
        #[cfg(unix)]
        if let Some(account) = account {
            account.switch_to(&config.state_dir)?;
            tracing::info!(user = %account.name, uid = %account.uid, gid = %account.gid, "switched to the relay's user");
        }
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
        let queue = Arc::new(SharedQueue::new(Arc::new(spool), queue));
        let router = Router::new(StaticRoutes::default(), resolver).with_mx_port(mx_port);
        let prepared = Prepared::new(config.clone(), &queue, &router).await?;
        for row in prepared.tls.store.list(rustls::pki_types::UnixTime::now()) {
            tracing::info!(name = %row.name, subject = %row.subject, key = %format!("{} {}", row.key_type, row.key_bits),
                fingerprint = %row.fingerprint, status = %row.status, "certificate");
        }
        // Again once a day, by the certificate reload task.
        crate::tls::certs::log_expiry(&prepared.tls.store, rustls::pki_types::UnixTime::now());

        let metrics = Arc::new(Metrics::new());
        let handler =
            RelayHandler::new(Arc::clone(&prepared.shared)).with_metrics(Arc::clone(&metrics));
        let server = Server::new(prepared.server.clone(), handler.clone())?;

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
        let mta_sts = StsResolver::new(prepared.sts.clone(), config.state_dir.join("mta-sts"));
        let mut delivery = Delivery::new(
            config.clone(),
            Arc::clone(&queue),
            prepared.rules.router().clone(),
            prepared.tls.policy.outbound.clone(),
            Arc::clone(&prepared.tls.client),
            mta_sts,
        )
        .with_listen_addrs(&addrs)
        .with_metrics(Arc::clone(&metrics));
        // RFC 8460 reporting exists only when enabled: no cost otherwise.
        if config.tls_reporting.enabled {
            let reporter = TlsReporter::new(
                ReportSettings::from_config(&config).map_err(TlsSetupError::from)?,
                crate::tls::outbound_roots(&config)?,
                config.state_dir.join("tlsrpt"),
            )?;
            delivery = delivery.with_tls_reporter(Arc::new(reporter));
        }
        let delivery = Arc::new(delivery);
        let live = Arc::new(Live {
            config: Mutex::new(prepared.config),
            tls: Mutex::new(prepared.tls),
            server,
            handler,
            delivery: Arc::clone(&delivery),
            queue: Arc::clone(&queue),
            reloading: tokio::sync::Mutex::new(()),
        });
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
        tasks.spawn(reload_certificates(
            Arc::clone(&live),
            Arc::clone(&reload),
            rx,
        ));
        tracing::info!(queued = queue.schedule().len(), "relay started");
        Ok(Self {
            addrs,
            shutdown,
            reload,
            tasks,
            live,
            metrics_addr,
            _lock: lock,
        })
    }

    /// The bound listen addresses (a configured port 0 shows the real one).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.live.config()
    }

    /// Puts `config` in force (SIGHUP, `postern-relay reload`): it is
    /// checked completely first — TLS policy, certificates, trust anchors,
    /// routes, server settings, TLS-RPT settings — and on any error the
    /// running configuration stays and the error is returned. Sessions in
    /// progress finish under the configuration they started with; new
    /// sessions and new delivery attempts get the new one; nothing is
    /// dropped. The settings read only at start ([`keep_start_settings`]:
    /// listen addresses, state directory, …) keep their running values;
    /// the returned summary names those that differ.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, StartError> {
        let _one = self.live.reloading.lock().await;
        let running = self.live.config();
        let mut config = config;
        let restart = keep_start_settings(&running, &mut config);
        let router = self.live.delivery.rules().router().clone();
        let prepared = Prepared::new(config, &self.live.queue, &router).await?;
        let certificates = prepared.tls.store.len();
        prepared.apply(&self.live);
        if restart.is_empty() {
            tracing::info!(certificates, "configuration reloaded");
        } else {
            tracing::warn!(certificates, restart_needed = %restart.join(", "),
                "configuration reloaded; changed settings that need a restart keep their running values: {}",
                restart.join(", "));
        }
        Ok(Reloaded {
            restart_needed: restart,
        })
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
        self.live.delivery.send_tls_reports(now).await
    }

    /// Refreshes the cached MTA-STS policies that are due now, as the
    /// relay's own timer does every hour (RFC 8461 §10.2: a policy is
    /// fetched again about daily even when no mail goes to its domain);
    /// returns the number of Policy Domains looked up.
    pub async fn refresh_mta_sts(&self) -> usize {
        self.live.delivery.refresh_mta_sts().await
    }

    /// Reloads the certificates now, without reading the configuration
    /// again.
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

/// What a [`Relay::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The changed settings that keep their running values until a restart.
    pub restart_needed: Vec<&'static str>,
}

/// The outcome of the last reload of a running relay, in
/// `<state_dir>/reload.json`: how `postern-relay reload` learns whether
/// the relay took its configuration, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReloadReport {
    /// The relay's process id.
    pub pid: u32,
    /// The number of this reload since the relay started (1, 2, …).
    pub serial: u64,
    /// When it ended (RFC 3339).
    pub at: String,
    /// Why the new configuration was refused (the running one stayed);
    /// `None`: it is in force.
    pub error: Option<String>,
    /// Changed settings that keep their running values until a restart.
    pub restart_needed: Vec<String>,
}

/// The report file's name in the state directory.
pub const RELOAD_REPORT: &str = "reload.json";

impl ReloadReport {
    /// The report of reload number `serial` of this process.
    pub fn new(serial: u64, outcome: &Result<Reloaded, String>) -> Self {
        Self {
            pid: std::process::id(),
            serial,
            at: OffsetDateTime::from(SystemTime::now())
                .format(&Rfc3339)
                .unwrap_or_default(),
            error: outcome.as_ref().err().cloned(),
            restart_needed: outcome.as_ref().map_or_else(
                |_| Vec::new(),
                |r| r.restart_needed.iter().map(|k| (*k).to_owned()).collect(),
            ),
        }
    }

    /// Writes the report into `state_dir` (whole: written aside, then
    /// renamed over the previous one).
    pub fn save(&self, state_dir: &std::path::Path) -> std::io::Result<()> {
        let path = state_dir.join(RELOAD_REPORT);
        let tmp = state_dir.join(format!("{RELOAD_REPORT}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    /// The last report in `state_dir`, if there is a readable one.
    pub fn load(state_dir: &std::path::Path) -> Option<Self> {
        let bytes = std::fs::read(state_dir.join(RELOAD_REPORT)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// How often the relay logs again the certificates that expire within 30
/// days or have expired (also logged at start).
const EXPIRY_LOG_INTERVAL: Duration = Duration::from_secs(86_400);

/// Raises the open-file limit as far as the hard limit allows (logged when
/// it changed); returns it.
fn raise_fd_limit() -> fd_limit::FdLimit {
    let (before, after) = fd_limit::raise();
    if after != before {
        tracing::info!(from = %before, to = %after, "open-file limit raised");
    }
    after
}

/// Raises the open-file limit as far as the hard limit allows, and returns
/// the connections that fit in it: `max_connections`, or fewer with a
/// warning.
fn fit_connections(config: &Config) -> Result<usize, TooLow> {
    let after = raise_fd_limit();
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
    live: Arc<Live>,
    now: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cert_dir = live
        .tls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .cert_dir
        .clone();
    let mut seen = cert_dir.stamp();
    let mut next_expiry_log = tokio::time::Instant::now() + EXPIRY_LOG_INTERVAL;
    loop {
        let interval = live.config().certificates.reload_interval.0;
        let forced = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = now.notified() => true,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        if tokio::time::Instant::now() >= next_expiry_log {
            let tls = live.tls.lock().unwrap_or_else(PoisonError::into_inner);
            crate::tls::certs::log_expiry(&tls.store, rustls::pki_types::UnixTime::now());
            next_expiry_log += EXPIRY_LOG_INTERVAL;
        }
        let stamp = cert_dir.stamp();
        if !forced && stamp == seen {
            continue;
        }
        seen = stamp;
        let live = Arc::clone(&live);
        let result = tokio::task::spawn_blocking(move || {
            let config = live.config();
            live.tls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reload(&config)
        })
        .await;
        match result {
            Ok(Ok(n)) => {
                let at = OffsetDateTime::from(SystemTime::now())
                    .format(&Rfc3339)
                    .unwrap_or_default();
                tracing::info!(certificates = n, %at, "certificates reloaded");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "certificate reload failed; the previous certificates stay in use");
            }
            Err(e) => {
                tracing::error!(error = %e, "certificate reload task failed");
                return;
            }
        }
    }
}
