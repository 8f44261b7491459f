//! Delivery: the scheduler and its workers.
//!
//! The scheduler applies the operator's requests
//! ([`control`]: delete, hold, release, flush), takes
//! due messages from the [`Queue`](crate::queue::Queue) (at most
//! `delivery_workers` at a time), and sleeps until the next due time, a new
//! message, `queue.scan_interval` or [`REQUEST_POLL`], whichever is first.
//! A message the operator deleted during its attempt is removed when the
//! attempt ends, without a bounce.
//! A worker groups the open recipients by domain, routes each domain (static
//! route or MX), and hands the message to postern-tokio's
//! [`postern_tokio::client::Client`] under the per-domain outbound
//! policy. The client never sends MAIL in plaintext when the policy requires
//! TLS, and logs one TLS line per connection. Outcomes are recorded per
//! recipient with the last failure (enhanced code, RFC 8460 result type,
//! the policy decision that applied, and either the server's reply verbatim
//! when the server refused, or our description when our code decides: see
//! [`FailureSource`](crate::envelope::FailureSource)), and logged Postfix
//! style (`dsn=4.7.4, status=deferred (STARTTLS not offered)`, `dsn=5.1.1,
//! status=bounced (host X said: 550 5.1.1 …)`); failed recipients get a
//! bounce (queued before it is recorded, so a crash duplicates rather than
//! loses it); a finished message is removed from the spool.
//!
//! Every recipient outcome of an attempt is logged exactly once, routing
//! failures included (`relay=none`); a host passed over for the next MX
//! gets a line of its own. A next hop that is one of the relay's own
//! listening addresses is never contacted: "mail for X loops back to
//! myself", bounced `5.4.6`. A message whose bounce cannot be queued (a
//! full disk) stays queued with its failures, and the bounce is retried.
//!
//! MTA-STS (RFC 8461): when a destination routed by MX has the outbound
//! mode `mta-sts` (or `dane`, whose no-TLSA case falls back to MTA-STS), or
//! the message carries REQUIRETLS (RFC 8689 §4.2.1: the policy is how its MX
//! is found securely, whatever the mode), the
//! worker asks the [`StsResolver`] for the policy of the destination domain
//! and hands it to the connection policy, which refuses, under `enforce`,
//! MX hosts outside the policy (they are not contacted) and certificates
//! not valid for the MX name (4.7.5 deferral), and reports only under
//! `testing`; a message with `TLS-Required: No` (RFC 8689 §5) is not held
//! by it. A statically routed domain is the operator's choice of next
//! hop and is not checked against MTA-STS (RFC 8461 §3.4 would make the
//! smart host's own domain the Policy Domain). A failed policy fetch is
//! recorded with its RFC 8460 result type on deferred recipients.
//!
//! TLS reporting (RFC 8460, when `[tls_reporting] enabled = true`): each
//! attempt on a host of an MTA-STS-governed destination is counted by the
//! [`TlsReporter`] (see [`crate::reporting::tlsrpt`]); report mails themselves are
//! delivered without MTA-STS and are not counted (§5.3).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use postern_policy::tlsrpt::{FailureFacts, PolicyType, SessionOutcome};
use postern_policy::{
    ClientTlsMode, ConnectionPolicy, Decision, MessageTls, NextHop as PolicyHop, OutboundPolicy,
};
use postern_smtp::{DeliveryStatus, ForwardPath, RcptParams, Reply};
use postern_tokio::client::{Client, ClientSettings, DeliveryFailure, DeliveryResult, Destination};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::config::routes::NextHop;
use crate::envelope::{EnhancedStatus, Envelope, Failure, MessageId};
use crate::net::dns::{SystemResolver, normalize_domain};
use crate::outbound::connection_cache::ConnectionCache;
use crate::outbound::mta_sts::{StsFetch, StsLookup, StsResolver};
use crate::outbound::next_hop::{self, DaneUse};
use crate::outbound::routing::{Route, RouteSource, Router};
use crate::queue::SharedQueue;
use crate::queue::control::{self, REQUEST_POLL};
use crate::queue::spool::SpoolError;
use crate::queue::{AttemptReport, Disposition, Outcome};
use crate::reporting::dsn::{BounceSettings, build_bounce};
use crate::reporting::tlsrpt::{SendSummary, TlsReporter, sts_policy_details, unix_time};

/// How often the cached MTA-STS policies are checked for a due refresh
/// (each is fetched again about daily: RFC 8461 §10.2).
pub const STS_REFRESH_CHECK: Duration = Duration::from_secs(3600);

/// What delivery runs under, built from one configuration: replaced whole
/// by a configuration reload ([`Delivery::reconfigure`]); an attempt keeps
/// the rules it started with to its end.
#[derive(Debug)]
pub struct DeliveryRules {
    config: Config,
    router: Router<SystemResolver>,
    client: Client,
    outbound: OutboundPolicy,
}

impl DeliveryRules {
    /// Delivery under `config`, along `router`, with this outbound policy
    /// and client TLS context.
    pub fn new(
        config: Config,
        router: Router<SystemResolver>,
        outbound: OutboundPolicy,
        tls: Arc<postern_certs::ClientTlsContext>,
    ) -> Self {
        let mut settings = ClientSettings::new(config.hostname.clone());
        settings.connect_timeout = config.timeouts.connect.0;
        settings.handshake_timeout = config.timeouts.tls_handshake.0;
        settings.smtp.timeouts.command = config.timeouts.client_reply.0;
        settings.smtp.timeouts.data = config.timeouts.client_data.0;
        let client = Client::new(settings, tls);
        Self {
            config,
            router,
            client,
            outbound,
        }
    }

    /// The router (its resolver is shared by the rules that replace these).
    pub fn router(&self) -> &Router<SystemResolver> {
        &self.router
    }
}

/// The delivery side of a running relay.
#[derive(Debug)]
pub struct Delivery {
    rules: RwLock<Arc<DeliveryRules>>,
    queue: Arc<SharedQueue>,
    mta_sts: StsResolver,
    reporter: Option<Arc<TlsReporter>>,
    /// This relay's listening addresses: a next hop among them is a loop.
    listening: Vec<SocketAddr>,
    /// Connections kept open for the next message to their next hop.
    connections: ConnectionCache,
}

/// `4.x.y`, which is always valid (class 4, small numbers).
fn transient(subject: u16, detail: u16) -> EnhancedStatus {
    EnhancedStatus::new(4, subject, detail).unwrap_or(EnhancedStatus::EXPIRED)
}

impl Delivery {
    /// Delivery of the queue's messages under `config`, with this outbound
    /// policy, client TLS context and MTA-STS resolver.
    pub fn new(
        config: Config,
        queue: Arc<SharedQueue>,
        router: Router<SystemResolver>,
        outbound: OutboundPolicy,
        tls: Arc<postern_certs::ClientTlsContext>,
        mta_sts: StsResolver,
    ) -> Self {
        Self {
            rules: RwLock::new(Arc::new(DeliveryRules::new(config, router, outbound, tls))),
            queue,
            mta_sts,
            reporter: None,
            listening: Vec::new(),
            connections: ConnectionCache::new(),
        }
    }

    /// The rules attempts start under now.
    pub fn rules(&self) -> Arc<DeliveryRules> {
        // A poisoned lock only means a panic elsewhere while swapping an
        // `Arc`: the value is whole.
        Arc::clone(&self.rules.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Attempts started from now on run under `rules`, and MTA-STS policies
    /// are fetched as `sts` says (a configuration reload); attempts in
    /// progress finish under the rules they started with.
    pub fn reconfigure(&self, rules: DeliveryRules, sts: StsFetch) {
        self.mta_sts.reconfigure(sts);
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
    }

    /// Refuses to deliver to `addrs`, this relay's own listening addresses
    /// (as bound: a configured port 0 shows the real one): mail whose next
    /// hop is one of them "loops back to myself" and is bounced `5.4.6`.
    pub fn with_listen_addrs(mut self, addrs: &[SocketAddr]) -> Self {
        self.listening = addrs.to_vec();
        self
    }

    /// Records TLS-RPT outcomes into `reporter` (none: reporting disabled,
    /// nothing recorded).
    pub fn with_tls_reporter(mut self, reporter: Arc<TlsReporter>) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// The TLS reporter, when reporting is enabled.
    pub fn tls_reporter(&self) -> Option<&Arc<TlsReporter>> {
        self.reporter.as_ref()
    }

    /// Sends the TLS reports due by `now` (RFC 8460; nothing when reporting
    /// is disabled). `now` is passed in so that a day's end can be simulated.
    pub async fn send_tls_reports(&self, now: SystemTime) -> SendSummary {
        let Some(reporter) = &self.reporter else {
            return SendSummary::default();
        };
        let rules = self.rules();
        let summary = reporter
            .send_due(rules.router.resolver(), &self.queue, now)
            .await;
        if summary.reports > 0 {
            // The taken days must not come back after a restart.
            self.save_tls_reports().await;
        }
        summary
    }

    /// Saves the TLS-RPT aggregates (if any changed).
    pub async fn save_tls_reports(&self) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        let r = Arc::clone(reporter);
        match tokio::task::spawn_blocking(move || r.save()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot save the tls-rpt aggregates"),
            Err(e) => tracing::error!(error = %e, "tls-rpt save task failed"),
        }
    }

    /// Runs the TLS-RPT timer until `shutdown`: saves every
    /// `persist_interval`, sends due reports (checked every minute at
    /// most), and saves once more at shutdown.
    pub async fn run_tls_reports(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.reporter.is_none() {
            return;
        }
        let persist = self.rules().config.tls_reporting.persist_interval.0;
        let tick = persist.min(Duration::from_secs(60));
        let mut last_save = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            self.send_tls_reports(SystemTime::now()).await;
            if last_save.elapsed() >= persist {
                self.save_tls_reports().await;
                last_save = tokio::time::Instant::now();
            }
        }
        self.save_tls_reports().await;
    }

    /// Refreshes the cached MTA-STS policies that are due (RFC 8461 §10.2);
    /// returns the number of Policy Domains looked up.
    pub async fn refresh_mta_sts(&self) -> usize {
        let rules = self.rules();
        self.mta_sts.refresh_cached(rules.router.resolver()).await
    }

    /// Every [`STS_REFRESH_CHECK`], refreshes the cached MTA-STS policies
    /// that are due (daily per policy, see
    /// [`StsResolver::refresh_cached`]), until `shutdown` turns true.
    pub async fn run_mta_sts_refresh(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(STS_REFRESH_CHECK) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            self.refresh_mta_sts().await;
        }
    }

    /// Counts one attempt on `host` for TLS reporting (RFC 8460): under
    /// DANE (policy type `tlsa`, when the connection was governed by TLSA
    /// records), else under an MTA-STS policy or after a failed policy
    /// fetch.
    fn record_tls_outcome(
        &self,
        envelope: &Envelope,
        policy: &ConnectionPolicy,
        sts: Option<&StsLookup>,
        host: &NextHop,
        result: &DeliveryResult,
    ) {
        let (Some(reporter), Some(domain)) = (&self.reporter, policy.next_hop().domain()) else {
            return;
        };
        // Report mails are not counted (RFC 8460 §5.3); nor is a message
        // on a reused connection: its TLS session was counted once.
        if envelope.tls_report || result.connection_use > 1 {
            return;
        }
        let dane = policy.report_policy();
        let sts = sts.filter(|s| s.policy.is_some() || s.problem.is_some());
        let policy = match (dane.policy_type, sts) {
            (PolicyType::Tlsa, _) => dane,
            (_, Some(sts)) => sts_policy_details(domain.as_str(), sts.policy.as_ref()),
            // A destination without TLSA records or an MTA-STS record (no
            // policy, no failed fetch) has nothing to report under.
            (_, None) => return,
        };
        let sts = sts.filter(|_| policy.policy_type == PolicyType::Sts);
        let at = unix_time(SystemTime::now());
        // The policy's own facts (also a `testing` policy's failure that did
        // not stop delivery), else the client's TLS result type, else
        // §4.3.2.2: a failed fetch with no policy to fall back on.
        let facts = result
            .decision
            .as_ref()
            .and_then(Decision::failure_facts)
            .or_else(|| {
                result
                    .failure
                    .as_ref()
                    .and_then(|f| f.result_type)
                    .map(FailureFacts::new)
            })
            .or_else(|| {
                sts.filter(|s| s.policy.is_none())
                    .and_then(|s| s.problem.as_ref())
                    .map(|(t, _)| FailureFacts::new(*t))
            });
        let outcome = match (facts, result.tls.is_some()) {
            (Some(mut facts), _) => {
                facts.receiving_mx_hostname = Some(host.host.clone());
                facts.receiving_ip = result.server.map(|a| a.ip());
                SessionOutcome::failure(policy, at, facts)
            }
            (None, true) => SessionOutcome::success(policy, at),
            // No TLS session and no TLS failure (connection refused, …):
            // transient, not reported (§4.3.4).
            (None, false) => return,
        };
        reporter.record(domain.as_str(), outcome);
    }

    /// The MTA-STS policy for `route`, when it was routed by MX and its
    /// outbound mode consults MTA-STS or the message requires TLS (see the
    /// module documentation).
    async fn sts_policy(
        &self,
        rules: &DeliveryRules,
        next_hop: &PolicyHop,
        route: &Route,
        message: MessageTls,
    ) -> Option<StsLookup> {
        if matches!(route.source, RouteSource::Static(_)) {
            return None;
        }
        let mode = rules.outbound.connection(next_hop, None).settings().tls;
        // RFC 8689 §4.2.1: a REQUIRETLS message needs its MX found
        // securely, which the destination's MTA-STS policy can establish,
        // whatever mode is configured for the destination.
        if message != MessageTls::RequireTls
            && !matches!(mode, ClientTlsMode::MtaSts | ClientTlsMode::Dane)
        {
            return None;
        }
        let domain = next_hop.domain()?;
        Some(self.mta_sts.lookup(rules.router.resolver(), domain).await)
    }

    /// Runs the scheduler until `shutdown` turns true; then lets running
    /// attempts finish for up to `timeouts.shutdown_grace` and aborts the
    /// rest (their messages stay queued and are retried at the next start).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        self.finish_leftovers().await;
        let workers = Arc::new(Semaphore::new(self.rules().config.delivery_workers));
        let mut tasks = JoinSet::new();
        // New messages wake the loop often: the requests directory is read
        // at most twice per poll interval.
        let mut served_at: Option<tokio::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if served_at.is_none_or(|t| t.elapsed() >= REQUEST_POLL / 2) {
                self.serve_requests().await;
                served_at = Some(tokio::time::Instant::now());
            }
            let now = SystemTime::now();
            let free = workers.available_permits();
            let due = if free > 0 {
                self.queue().take_due(now, free)
            } else {
                Vec::new()
            };
            for envelope in due {
                // `take_due` took no more than the free permits, so the wait
                // is immediate; the semaphore is never closed.
                let permit = Arc::clone(&workers).acquire_owned();
                let this = Arc::clone(&self);
                tasks.spawn(async move {
                    let _permit = permit.await;
                    this.attempt(envelope).await;
                });
            }
            self.close_idle();
            let next = self.queue().next_wakeup();
            let scan = self.rules().config.queue.scan_interval.0;
            let sleep = next
                .map_or(scan, |t| {
                    t.duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO)
                })
                .min(scan)
                .min(REQUEST_POLL);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.queue.wake.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        let grace = self.rules().config.timeouts.shutdown_grace.0;
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        let closing: Vec<_> = self
            .connections
            .expired(
                &self.rules().config.connection_cache,
                std::time::Instant::now(),
                true,
            )
            .into_iter()
            .map(postern_tokio::client::IdleConnection::quit)
            .collect();
        for quit in closing {
            quit.await;
        }
        tracing::info!("delivery stopped");
    }

    /// Closes the kept connections idle for longer than the cache allows
    /// (`QUIT` sent in the background).
    fn close_idle(&self) {
        let cache = self.rules().config.connection_cache;
        for conn in self
            .connections
            .expired(&cache, std::time::Instant::now(), false)
        {
            tokio::spawn(conn.quit());
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, crate::queue::Queue> {
        self.queue.schedule()
    }

    /// Applies the operator's pending requests and answers them.
    async fn serve_requests(&self) {
        let queue = Arc::clone(&self.queue);
        let served =
            tokio::task::spawn_blocking(move || control::serve(&queue, SystemTime::now())).await;
        let served = match served {
            Ok(Ok(served)) => served,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot serve the queue requests");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve the queue requests");
                return;
            }
        };
        for (request, answer) in served {
            for (id, applied) in &answer.messages {
                tracing::info!(queue_id = %id, action = request.action(), result = %applied, "queue request");
            }
        }
    }

    /// Persists a message's envelope as the schedule holds it
    /// ([`SharedQueue::persist`]).
    async fn persist(&self, id: &MessageId) -> Result<(), String> {
        let queue = Arc::clone(&self.queue);
        let id = id.clone();
        match tokio::task::spawn_blocking(move || queue.persist(&id)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// After a crash: queue the bounces not yet queued, remove finished
    /// messages.
    async fn finish_leftovers(&self) {
        let left = self.queue().leftovers();
        let now = SystemTime::now();
        for (id, failed) in left.bounce {
            let envelope = self.queue().get(&id).cloned();
            // A bounce that cannot be queued now keeps the message queued:
            // the scheduler takes it again (`Queue::retry_bounce`).
            if let Some(envelope) = envelope
                && !self.bounce(&envelope, &failed, now).await
            {
                self.queue().retry_bounce(&id, now);
            }
        }
        for id in left.remove {
            self.remove(&id).await;
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::queue::spool::Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, String> {
        let spool = Arc::clone(&self.queue.spool);
        match tokio::task::spawn_blocking(move || f(&spool)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn remove(&self, id: &MessageId) {
        let owned = id.clone();
        match self.blocking(move |s| s.remove(&owned)).await {
            Ok(()) => {
                self.queue().remove(id);
                tracing::info!(queue_id = %id, "removed");
            }
            Err(e) => tracing::error!(queue_id = %id, error = %e, "cannot remove from the spool"),
        }
    }

    /// Removes a message the operator deleted during its attempt, now that
    /// the attempt is over (nothing is bounced). On failure it stays queued,
    /// held, and the deletion can be asked again.
    async fn remove_deleted(&self, id: &MessageId) {
        let owned = id.clone();
        match self.blocking(move |s| s.delete(&owned)).await {
            Ok(()) => {
                self.queue().remove(id);
                tracing::info!(queue_id = %id, "removed: deleted by the operator during its attempt");
            }
            Err(e) => {
                self.queue().end_attempt(id);
                tracing::error!(queue_id = %id, error = %e, "cannot delete from the spool");
            }
        }
    }

    /// Builds and queues the bounce for `failed`, then records it returned;
    /// returns whether that is done (false: the bounce is not queued and the
    /// recipients are still to be returned).
    async fn bounce(&self, envelope: &Envelope, failed: &[usize], now: SystemTime) -> bool {
        let settings = BounceSettings::from_config(&self.rules().config);
        let env = envelope.clone();
        let list = failed.to_vec();
        let queued = self
            .blocking(move |spool| {
                let original = spool.open_content(&env.id)?;
                let Some(bounce) =
                    build_bounce(&env, &list, original, &settings, now).map_err(|e| {
                        SpoolError::Io {
                            path: spool.root().to_owned(),
                            source: e,
                        }
                    })?
                else {
                    return Ok(None);
                };
                let mut incoming = spool.begin(bounce.envelope(now), None)?;
                incoming.write_chunk(&bounce.content)?;
                incoming.commit().map(Some)
            })
            .await;
        match queued {
            Ok(Some(b)) => {
                tracing::info!(queue_id = %envelope.id, bounce_id = %b.id, "sender non-delivery notification queued");
                self.queue.enqueue(b);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(queue_id = %envelope.id, error = %e, "cannot queue the bounce");
                return false;
            }
        }
        let marked = self.queue().mark_returned(&envelope.id, failed);
        if marked.is_ok()
            && let Err(e) = self.persist(&envelope.id).await
        {
            tracing::error!(queue_id = %envelope.id, error = %e, "cannot record the bounce");
        }
        true
    }

    /// One delivery attempt of one message, or, for a message whose
    /// delivery is over but whose bounce could not be queued, another try
    /// at queuing the bounce.
    async fn attempt(&self, envelope: Envelope) {
        let id = envelope.id.clone();
        let (updated, report) = if envelope.open_recipients().is_empty() {
            // Only the bounce is left to do; no delivery is attempted.
            let report = AttemptReport {
                bounce: envelope.failed_unreturned(),
                disposition: Disposition::Complete,
            };
            (envelope, report)
        } else {
            let Some(done) = self.deliver(envelope).await else {
                return;
            };
            done
        };
        let now = SystemTime::now();
        // Deleted by the operator during the attempt: removed, not bounced.
        if self.queue().is_deleted(&id) {
            self.remove_deleted(&id).await;
            self.queue.wake.notify_one();
            return;
        }
        // RFC 5321 §6.1: the message stays queued, with its failures, until
        // the bounce that reports them is durably queued.
        if !report.bounce.is_empty() && !self.bounce(&updated, &report.bounce, now).await {
            if self.queue().is_deleted(&id) {
                self.remove_deleted(&id).await;
                self.queue.wake.notify_one();
                return;
            }
            let at = self.queue().retry_bounce(&id, now);
            if let Some(at) = at {
                let wait = retry_in(at, now);
                tracing::warn!(queue_id = %id, retry_in = %wait, "bounce not queued: message kept");
            }
            self.queue.wake.notify_one();
            return;
        }
        match report.disposition {
            Disposition::Complete => self.remove(&id).await,
            Disposition::Retry { at } => {
                if self.queue().end_attempt(&id) {
                    self.remove_deleted(&id).await;
                } else {
                    let wait = retry_in(at, now);
                    tracing::info!(queue_id = %id, retry_in = %wait, "deferred");
                }
            }
        }
        self.queue.wake.notify_one();
    }

    /// Delivers the open recipients of `envelope`, logs one line per
    /// recipient, records the outcomes and persists what must be
    /// remembered; returns the updated envelope and what is left to do.
    async fn deliver(&self, envelope: Envelope) -> Option<(Envelope, AttemptReport)> {
        let id = envelope.id.clone();
        let read_id = id.clone();
        let content = self
            .blocking(move |spool| {
                use std::io::Read as _;
                let mut buf = Vec::new();
                spool
                    .open_content(&read_id)?
                    .read_to_end(&mut buf)
                    .map_err(|e| SpoolError::Io {
                        path: spool.root().to_owned(),
                        source: e,
                    })?;
                Ok(buf)
            })
            .await;
        let now = SystemTime::now();
        let attempted = match content {
            Err(e) => {
                let f = Failure::local(transient(3, 0), format!("queue file read error: {e}"), now);
                vec![Attempted::without_host(
                    envelope
                        .open_recipients()
                        .into_iter()
                        .map(|i| (i, Outcome::Deferred(f.clone())))
                        .collect(),
                )]
            }
            Ok(content) => self.deliver_all(&self.rules(), &envelope, &content).await,
        };
        // Exactly one log line per recipient outcome.
        for a in &attempted {
            for (i, o) in &a.outcomes {
                log_outcome(&envelope, *i, o, a);
            }
        }
        let outcomes: Vec<(usize, Outcome)> =
            attempted.into_iter().flat_map(|a| a.outcomes).collect();
        let now = SystemTime::now();
        let done = self.queue().complete_attempt(&id, &outcomes, now);
        let (updated, report) = match done {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "attempt not recorded");
                return None;
            }
        };
        // A message delivered to every recipient with nothing to bounce is
        // removed at once: recording its final state first would cost a
        // file, a rename and two fsyncs per message for nothing (a crash
        // before the removal then delivers it again: a duplicate, never a
        // loss, as with any crash between the next hop's `250` and the
        // update). Anything that stays queued or must be bounced is
        // persisted first.
        let finished = report.bounce.is_empty() && report.disposition == Disposition::Complete;
        if !finished && let Err(e) = self.persist(&id).await {
            tracing::error!(queue_id = %id, error = %e, "cannot persist the delivery state");
        }
        Some((updated, report))
    }

    /// Delivers to every domain of the open recipients.
    async fn deliver_all(
        &self,
        rules: &DeliveryRules,
        envelope: &Envelope,
        content: &[u8],
    ) -> Vec<Attempted> {
        let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in envelope.open_recipients() {
            let Some(address) = envelope.recipients.get(i).map(|r| &r.address) else {
                continue;
            };
            by_domain
                .entry(normalize_domain(&address.host().to_string()))
                .or_default()
                .push(i);
        }
        let message = MessageTls::from_message(
            envelope.params.requiretls,
            tls_required_header(content).as_deref(),
        );
        let mut attempted = Vec::new();
        for (domain, indices) in by_domain {
            let now = SystemTime::now();
            match rules.router.route(&domain, now).await {
                Err(f) => {
                    let outcome = if f.code.is_permanent() {
                        Outcome::Failed(f)
                    } else {
                        Outcome::Deferred(f)
                    };
                    attempted.push(Attempted::without_host(
                        indices.into_iter().map(|i| (i, outcome.clone())).collect(),
                    ));
                }
                Ok(route) => attempted.push(
                    self.deliver_route(rules, envelope, &indices, &route, message, content)
                        .await,
                ),
            }
        }
        attempted
    }

    /// Delivers the recipients `indices` of one domain along `route`, trying
    /// its hosts in order while they fail temporarily as a whole, and never
    /// to this relay itself.
    async fn deliver_route(
        &self,
        rules: &DeliveryRules,
        envelope: &Envelope,
        indices: &[usize],
        route: &Route,
        message: MessageTls,
        content: &[u8],
    ) -> Attempted {
        let now = SystemTime::now();
        let all = |outcome: Outcome| {
            Attempted::without_host(indices.iter().map(|&i| (i, outcome.clone())).collect())
        };
        let Ok(next_hop) = PolicyHop::parse(&route.domain) else {
            return all(Outcome::Failed(Failure::local(
                EnhancedStatus::BAD_DESTINATION,
                format!("bad destination {}", route.domain),
                now,
            )));
        };
        let smtp_envelope = match smtp_envelope(envelope, indices) {
            Ok(e) => e,
            Err(e) => {
                return all(Outcome::Failed(Failure::local(
                    EnhancedStatus::BAD_ADDRESS_SYNTAX,
                    e,
                    now,
                )));
            }
        };
        // RFC 8460 §5.3: a report mail is delivered "despite any TLS-related
        // failures": MTA-STS is not applied to it.
        let sts = if envelope.tls_report {
            None
        } else {
            self.sts_policy(rules, &next_hop, route, message).await
        };
        let mode = rules.outbound.connection(&next_hop, None).settings().tls;
        let wanted = DaneUse::wanted(
            mode,
            message,
            envelope.tls_report,
            rules.config.dns.opportunistic_dane,
        );
        let dane = DaneUse::choose(rules.router.resolver(), route, wanted);
        let mut last: Option<Attempted> = None;
        for host in &route.hosts {
            let found = match next_hop::look_up(rules.router.resolver(), host, dane, now).await {
                Ok(v) => v,
                Err(f) => {
                    replace_last(envelope, &mut last, all(Outcome::Deferred(f)));
                    continue;
                }
            };
            let addresses = found.addresses;
            // Postfix's "loops back to myself": this host and those after
            // it (no better MX preference) would hand the mail back to us.
            if let Some(own) = own_address(&addresses, &self.listening) {
                tracing::warn!(queue_id = %envelope.id,
                    "mail for {} loops back to myself: next hop {host} is {own}, where this relay listens",
                    route.domain);
                if last.is_none() {
                    last = Some(all(Outcome::Failed(Failure::local(
                        EnhancedStatus::ROUTING_LOOP,
                        format!("mail for {} loops back to myself", route.domain),
                        now,
                    ))));
                }
                break;
            }
            let destination =
                Destination::new(addresses, next_hop.clone(), found.server_name.clone());
            // RFC 8689 §4.2.1: REQUIRETLS needs the MX found securely (a
            // DNSSEC-secure MX RRset; a static route is the operator's own
            // choice, not a DNS answer).
            let mut policy = rules
                .outbound
                .connection(&next_hop, found.server_name.as_ref())
                .with_message(message)
                .with_secure_mx(route.hosts_found_securely())
                .with_mta_sts(sts.as_ref().and_then(|s| s.policy.clone()));
            if let Some(outcome) = found.dane {
                policy = policy.with_dane(outcome);
            }
            let cache = &rules.config.connection_cache;
            let idle = cache
                .enabled
                .then(|| self.connections.take(&destination, &policy))
                .flatten();
            let (result, kept) = rules
                .client
                .deliver_reusing(
                    &destination,
                    &policy,
                    &smtp_envelope,
                    content,
                    idle,
                    cache.enabled,
                )
                .await;
            if let Some(kept) = kept {
                let more_due = self.queue().has_due_for(&route.domain, SystemTime::now());
                if let Some(done) =
                    self.connections
                        .keep(kept, cache, more_due, std::time::Instant::now())
                {
                    tokio::spawn(done.quit());
                }
            }
            self.record_tls_outcome(envelope, &policy, sts.as_ref(), host, &result);
            let mut outcomes = outcomes(&result, indices, host);
            if let Some((result_type, reason)) = sts.as_ref().and_then(|s| s.problem.as_ref()) {
                note_sts_problem(&mut outcomes, *result_type, reason);
            }
            let retry_next = outcomes
                .iter()
                .all(|(_, o)| matches!(o, Outcome::Deferred(_)))
                && result.failure.is_some();
            let attempted = Attempted {
                relay: relay_name(host, &result),
                tls: result.tls.as_ref().map_or_else(
                    || "none".to_owned(),
                    |t| format!("{} {} {}", t.version, t.cipher, t.certificate.trust),
                ),
                outcomes,
            };
            replace_last(envelope, &mut last, attempted);
            if !retry_next {
                break;
            }
        }
        last.unwrap_or_else(|| {
            all(Outcome::Deferred(Failure::local(
                transient(4, 4),
                "no host to deliver to",
                now,
            )))
        })
    }
}

/// The postern-smtp envelope for the recipients `indices` (the paths and
/// ORCPT as the queue holds them: typed, nothing parsed again).
fn smtp_envelope(envelope: &Envelope, indices: &[usize]) -> Result<postern_smtp::Envelope, String> {
    let mut recipients = Vec::with_capacity(indices.len());
    for &i in indices {
        let r = envelope.recipients.get(i).ok_or("no such recipient")?;
        recipients.push(r);
    }
    let mut out = postern_smtp::Envelope::new(
        envelope.reverse_path.clone(),
        recipients
            .iter()
            .map(|r| ForwardPath::Mailbox(r.address.clone())),
    );
    for (slot, r) in out.recipients.iter_mut().zip(&recipients) {
        if r.orcpt.is_some() {
            let mut params = RcptParams::default();
            params.orcpt.clone_from(&r.orcpt);
            slot.1 = params;
        }
    }
    let p = &envelope.params;
    out.mail_params.requiretls = p.requiretls;
    out.mail_params.smtputf8 = p.smtputf8;
    out.mail_params.envid.clone_from(&p.envid);
    out.mail_params.body = p.body;
    out.mail_params.ret = p.ret;
    Ok(out)
}

/// The server reply that decided a connection-level failure, if one did:
/// no TLS policy involved (no RFC 8460 result type) and the status recorded
/// is the reply's own (its enhanced code, else `class.0.0`). A reply that
/// the policy overrode (a 5xx to STARTTLS under a TLS-required mode,
/// recorded as our own 4.7.x: DESIGN.md §3) did not decide.
fn deciding_reply(f: &DeliveryFailure) -> Option<&Reply> {
    let reply = f.reply.as_ref()?;
    let own_status = reply
        .enhanced()
        .or_else(|| EnhancedStatus::of_reply_code(reply.code()));
    let refusal = reply.code().is_transient() || reply.code().is_permanent();
    (f.result_type.is_none() && refusal && own_status == Some(f.status)).then_some(reply)
}

/// Our description of a connection-level failure that our code decides:
/// the policy's reason when a policy decision failed the attempt (the rule
/// itself goes to `policy_rule`, the status to `code`), else the client's
/// explanation; and the server's words when it replied (`STARTTLS refused
/// (554); server said: 554 5.7.0 no`).
fn local_description(f: &DeliveryFailure, decision: Option<&Decision>) -> String {
    let policy_reason = decision
        .filter(|d| !d.reason.is_empty())
        .filter(|d| d.action.failure().is_some_and(|pf| pf.status == f.status))
        .map(|d| d.reason.as_str());
    let mut text = policy_reason.unwrap_or(&f.explanation).to_owned();
    if let Some(reply) = &f.reply {
        text.push_str(&format!("; server said: {reply}"));
    }
    text
}

/// Our enhanced code for a server reply: its own, else `4.0.0` / `5.0.0`
/// from its class (RFC 3463 §2: the class matches the reply's first digit).
fn reply_code(reply: &Reply) -> EnhancedStatus {
    let fallback = if reply.code().is_permanent() {
        EnhancedStatus::OTHER_PERMANENT
    } else {
        EnhancedStatus::OTHER_TRANSIENT
    };
    reply.enhanced().unwrap_or(fallback)
}

/// Per-recipient outcomes of a delivery result.
///
/// A connection-level failure our code decides (TLS policy, lost
/// connection, local problem) speaks for every recipient as a local failure
/// with our status: a refused STARTTLS is recorded as 4.7.x, never as the
/// server's 5xx (DESIGN.md §3). Otherwise each recipient's deciding reply
/// (to RCPT, MAIL or DATA, or a refused greeting or EHLO) is recorded
/// verbatim as the server's.
fn outcomes(result: &DeliveryResult, indices: &[usize], host: &NextHop) -> Vec<(usize, Outcome)> {
    let now = SystemTime::now();
    let remote = relay_name(host, result);
    let policy_rule = result
        .failure
        .as_ref()
        .filter(|f| f.result_type.is_some())
        .map(|f| f.explanation.clone())
        .or_else(|| result.decision.as_ref().map(ToString::to_string));
    let ours = result
        .failure
        .as_ref()
        .filter(|f| deciding_reply(f).is_none());
    let server_failure_reply = result.failure.as_ref().and_then(deciding_reply);
    indices
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let r = result.recipients.get(k);
            let status = r.map_or(DeliveryStatus::Deferred, |r| r.status);
            if status == DeliveryStatus::Delivered {
                return (i, Outcome::Delivered);
            }
            let reply = r.and_then(|r| r.reply.as_ref()).or(server_failure_reply);
            let mut failure = match (ours, reply) {
                (Some(f), _) => Failure::local(
                    f.status,
                    local_description(f, result.decision.as_ref()),
                    now,
                ),
                (None, Some(reply)) => Failure::remote(reply_code(reply), reply.to_string(), now),
                (None, None) => Failure::local(transient(4, 2), "connection lost", now),
            };
            failure.remote_mta = Some(remote.clone());
            failure.result_type = result.failure.as_ref().and_then(|f| f.result_type);
            failure.policy_rule.clone_from(&policy_rule);
            // A permanent reply fails the recipient; everything else, TLS
            // policy failures included (our own 4.7.x), is retried.
            let outcome = if status == DeliveryStatus::Failed && failure.code.is_permanent() {
                Outcome::Failed(failure)
            } else {
                Outcome::Deferred(failure)
            };
            (i, outcome)
        })
        .collect()
}

/// Records a failed MTA-STS policy fetch (RFC 8460 result type) on the
/// recipients that were not delivered and carry no TLS result of their own.
fn note_sts_problem(
    outcomes: &mut [(usize, Outcome)],
    result_type: postern_policy::ResultType,
    reason: &str,
) {
    for (_, outcome) in outcomes {
        if let Outcome::Deferred(f) | Outcome::Failed(f) = outcome
            && f.result_type.is_none()
        {
            f.result_type = Some(result_type);
            f.policy_rule = Some(format!("mta-sts: {reason}"));
        }
    }
}

/// The outcomes of one destination in an attempt, with what their log
/// lines show.
#[derive(Debug)]
struct Attempted {
    /// `host[ip]:port` when a server was reached, else the host; `none`
    /// when no host was tried (as Postfix writes `relay=none`).
    relay: String,
    /// The TLS summary (`TLSv1.3 TLS13_AES_256_GCM_SHA384 verified`), or
    /// `none`.
    tls: String,
    /// Each recipient's outcome.
    outcomes: Vec<(usize, Outcome)>,
}

impl Attempted {
    /// Outcomes decided without a connection (routing, local trouble).
    fn without_host(outcomes: Vec<(usize, Outcome)>) -> Self {
        Self {
            relay: "none".to_owned(),
            tls: "none".to_owned(),
            outcomes,
        }
    }
}

/// Keeps `next` as the outcome of a destination, after logging the one it
/// replaces: a host passed over for the next one gets a line of its own,
/// so that each recipient still gets exactly one `to=` line per attempt.
fn replace_last(envelope: &Envelope, last: &mut Option<Attempted>, next: Attempted) {
    if let Some(passed) = last.replace(next)
        && let Some((_, Outcome::Deferred(f) | Outcome::Failed(f))) = passed.outcomes.first()
    {
        tracing::info!(queue_id = %envelope.id, "relay={}, tls={}, {f}; trying the next host",
            passed.relay, passed.tls);
    }
}

/// `host[ip]:port` of the server a delivery result reached, else the host.
fn relay_name(host: &NextHop, result: &DeliveryResult) -> String {
    match result.server {
        Some(addr) => format!("{}[{}]:{}", host.host, addr.ip(), addr.port()),
        None => host.to_string(),
    }
}

/// The first of `addresses` that reaches this relay itself: a listening
/// address (IP and port), or, for a listener on the unspecified address
/// (`0.0.0.0`, `[::]`), any address of this host on its port.
fn own_address(addresses: &[SocketAddr], listening: &[SocketAddr]) -> Option<SocketAddr> {
    addresses.iter().copied().find(|addr| {
        let ip = addr.ip().to_canonical();
        listening.iter().any(|l| {
            let ours = l.ip().to_canonical();
            l.port() == addr.port()
                && (ours == ip || ip.is_unspecified() || (ours.is_unspecified() && is_local_ip(ip)))
        })
    })
}

/// Whether `ip` is an address of this host: loopback, or assigned to one of
/// its interfaces (a socket can be bound to it).
fn is_local_ip(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The value of the message's `TLS-Required` header field (RFC 8689 §5),
/// if it has one.
fn tls_required_header(content: &[u8]) -> Option<String> {
    let (header, _) = crate::reporting::dkim::split_message(content);
    crate::reporting::dkim::header_fields(header)
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"TLS-Required"))
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
}

/// Postfix-style delivery log line: `to=<…>, relay=…, delay=…, tls=…,
/// dsn=…, status=…`.
fn log_outcome(envelope: &Envelope, index: usize, outcome: &Outcome, attempted: &Attempted) {
    let to = envelope
        .recipients
        .get(index)
        .map_or_else(|| "?".to_owned(), |r| r.address.to_string());
    let delay = SystemTime::now()
        .duration_since(envelope.received_at)
        .unwrap_or_default();
    tracing::info!(queue_id = %envelope.id,
        "to=<{to}>, relay={}, delay={:.1}, tls={}, {}", attempted.relay, delay.as_secs_f64(),
        attempted.tls, status_field(outcome));
}

/// The end of a delivery log line, as Postfix writes it: `dsn=2.0.0,
/// status=sent`; `dsn=5.1.1, status=bounced (host mx[192.0.2.1]:25 said:
/// 550 5.1.1 no such user)` for a server's reply; `dsn=4.7.4,
/// status=deferred (STARTTLS not offered)` for a failure of ours.
fn status_field(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Delivered => "dsn=2.0.0, status=sent".to_owned(),
        Outcome::Deferred(f) => format!("dsn={}, status=deferred ({f})", f.code),
        Outcome::Failed(f) => format!("dsn={}, status=bounced ({f})", f.code),
    }
}

/// How long until `at`, to the nearest second, for the log (`retry_in=5m`).
fn retry_in(at: SystemTime, now: SystemTime) -> crate::config::Interval {
    let wait = at.duration_since(now).unwrap_or_default();
    crate::config::Interval(Duration::from_secs_f64(wait.as_secs_f64().round()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_policy::ResultType;

    #[test]
    fn smtp_envelope_hands_the_queued_paths_over() {
        use crate::envelope::{MailParams, Recipient, mailbox};
        let mut carol = Recipient::new(mailbox("carol@example.net"));
        carol.orcpt = Some(("rfc822".into(), "carol+40orig.example".into()));
        let envelope = Envelope::new(
            mailbox("alice@example.org"),
            [Recipient::new(mailbox("bob@example.net")), carol],
            MailParams::default(),
            SystemTime::now(),
        );
        let out = smtp_envelope(&envelope, &[1, 0]).unwrap();
        assert_eq!(out.from, envelope.reverse_path);
        let rcpts: Vec<_> = out
            .recipients
            .iter()
            .map(|(path, params)| (path.to_string(), params.orcpt.clone()))
            .collect();
        assert_eq!(
            rcpts,
            [
                (
                    "<carol@example.net>".to_owned(),
                    Some(("rfc822".to_owned(), "carol+40orig.example".to_owned()))
                ),
                ("<bob@example.net>".to_owned(), None),
            ]
        );
        assert!(smtp_envelope(&envelope, &[2]).is_err());
    }

    #[test]
    fn log_status_reads_like_postfix() {
        let now = SystemTime::now();
        assert_eq!(status_field(&Outcome::Delivered), "dsn=2.0.0, status=sent");
        let mut remote = Failure::remote(
            "5.1.1".parse().unwrap(),
            "550 5.1.1 <bob@example.com>: no such user",
            now,
        );
        remote.remote_mta = Some("mx.example.com[192.0.2.1]:25".into());
        assert_eq!(
            status_field(&Outcome::Failed(remote)),
            "dsn=5.1.1, status=bounced (host mx.example.com[192.0.2.1]:25 said: \
             550 5.1.1 <bob@example.com>: no such user)"
        );
        let mut local = Failure::local(
            EnhancedStatus::new(4, 7, 4).unwrap(),
            "STARTTLS refused (554); server said: 554 5.7.0 not now",
            now,
        );
        local.remote_mta = Some("mx.example.com[192.0.2.1]:25".into());
        assert_eq!(
            status_field(&Outcome::Deferred(local)),
            "dsn=4.7.4, status=deferred (STARTTLS refused (554); server said: 554 5.7.0 not now)"
        );
        let dns = Failure::local(
            EnhancedStatus::DNS_FAILURE,
            "no address for mx.example",
            now,
        );
        assert_eq!(
            status_field(&Outcome::Deferred(dns)),
            "dsn=4.4.3, status=deferred (no address for mx.example)"
        );
    }

    #[test]
    fn own_listening_addresses_are_loops() {
        let sock = |s: &str| s.parse::<SocketAddr>().unwrap();
        let listening = [sock("127.0.0.1:2525"), sock("[::1]:2525")];
        for hit in [
            "127.0.0.1:2525",
            "[::1]:2525",
            "[::ffff:127.0.0.1]:2525",
            "0.0.0.0:2525",
        ] {
            assert_eq!(
                own_address(&[sock(hit)], &listening),
                Some(sock(hit)),
                "{hit}"
            );
        }
        for miss in ["127.0.0.1:25", "127.0.0.2:2525", "192.0.2.1:2525"] {
            assert_eq!(own_address(&[sock(miss)], &listening), None, "{miss}");
        }
        // The first own address among several is named.
        assert_eq!(
            own_address(&[sock("192.0.2.1:2525"), sock("[::1]:2525")], &listening),
            Some(sock("[::1]:2525"))
        );
        // A wildcard listener is every address of this host on its port, and
        // only those (192.0.2.1 is a documentation address, never local).
        let wildcard = [sock("0.0.0.0:25")];
        assert!(own_address(&[sock("127.0.0.9:25")], &wildcard).is_some());
        assert!(own_address(&[sock("[::1]:25")], &[sock("[::]:25")]).is_some());
        assert!(own_address(&[sock("192.0.2.1:25")], &wildcard).is_none());
        assert!(own_address(&[sock("127.0.0.1:26")], &wildcard).is_none());
        assert!(own_address(&[sock("127.0.0.1:25")], &[]).is_none());
    }

    #[test]
    fn tls_required_header_is_read_from_the_header_only() {
        let message = b"Received: from a\r\n\tby b\r\ntls-required:\r\n  No\r\nSubject: x\r\n\r\n";
        assert_eq!(
            tls_required_header(message).map(|v| MessageTls::from_message(false, Some(&v))),
            Some(MessageTls::TlsOptional)
        );
        assert_eq!(
            tls_required_header(b"Subject: x\r\n\r\nTLS-Required: No\r\n"),
            None
        );
        assert_eq!(tls_required_header(b"X-TLS-Required: No\r\n\r\n"), None);
    }

    #[test]
    fn sts_problem_is_recorded_only_where_no_tls_result_type_is() {
        let now = SystemTime::now();
        let plain = Failure::local(transient(4, 2), "connection lost", now);
        let mut tls = Failure::local(transient(7, 5), "certificate not trusted", now);
        tls.result_type = Some(ResultType::CertificateNotTrusted);
        let mut outcomes = vec![
            (0, Outcome::Deferred(plain)),
            (1, Outcome::Deferred(tls)),
            (2, Outcome::Delivered),
        ];
        note_sts_problem(
            &mut outcomes,
            ResultType::StsPolicyFetchError,
            "http status 500",
        );
        let Outcome::Deferred(first) = &outcomes[0].1 else {
            panic!("{outcomes:?}")
        };
        assert_eq!(first.result_type, Some(ResultType::StsPolicyFetchError));
        assert_eq!(
            first.policy_rule.as_deref(),
            Some("mta-sts: http status 500")
        );
        let Outcome::Deferred(second) = &outcomes[1].1 else {
            panic!("{outcomes:?}")
        };
        assert_eq!(second.result_type, Some(ResultType::CertificateNotTrusted));
        assert_eq!(outcomes[2].1, Outcome::Delivered);
    }
}
