//! Wiring: builds the stages from a [`Config`] and runs them for `apply` and the
//! daemon. Owns the cancellation tokens; nothing below it reads the clock's
//! wall time for decisions except through its callers' parameters.

use crate::clock::now_ms;
use crate::config::{Config, ConfigError, Endpoint, Secret};
use crate::deliver::{PaystarClient, Totals, Until, Worker, WorkerSettings};
use crate::manifest::watch::FolderWatch;
use crate::sandbox::{RunningSandbox, Sandbox};
use crate::scan::{Fingerprint, Scan, ScanSettings, scan};
use crate::store::{SharedStore, Store};
use anyhow::Context;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The Paystar client the config asks for; for `endpoint: sandbox`, the
/// in-process simulator it talks to (kept alive by the caller).
pub async fn paystar(config: &Config) -> anyhow::Result<(PaystarClient, Option<RunningSandbox>)> {
    let timeout = config.paystar.timeout;
    match &config.paystar.endpoint {
        Endpoint::Sandbox => {
            let running = Sandbox::new()
                .start(([127, 0, 0, 1], 0).into())
                .await
                .context("cannot start the in-process Paystar sandbox")?;
            tracing::warn!(
                endpoint = %running.paystar_endpoint(),
                lotuspay = %running.lotuspay_base_url(),
                "paystar.endpoint is `sandbox`: events go to the in-process Paystar simulator, NOT to Paystar"
            );
            let key = Secret::new("sandbox");
            let client = PaystarClient::new(&running.paystar_endpoint(), key, timeout)?;
            Ok((client, Some(running)))
        }
        Endpoint::Url(url) => {
            let key = match &config.paystar.api_key {
                Some(source) => source
                    .resolve(&crate::config::process_env)
                    .map_err(|problem| config_problem(config, problem))?,
                None => {
                    return Err(config_problem(config, "paystar: set api_key_env or api_key_file: sending to Paystar needs an API key".into()).into());
                }
            };
            Ok((PaystarClient::new(url, key, timeout)?, None))
        }
    }
}

/// The LotusPay poller the config asks for, if any.
/// `sandbox`, when running, serves `base_url: sandbox`.
pub fn lotuspay(
    config: &Config,
    sandbox: Option<&RunningSandbox>,
) -> anyhow::Result<Option<crate::providers::lotuspay::LotusPay>> {
    let Some(lp) = &config.providers.lotuspay else {
        return Ok(None);
    };
    let problem = |message: String| config_problem(config, message);
    let base_url = match (lp.base_url.as_str(), sandbox) {
        ("sandbox", Some(running)) => running.lotuspay_base_url(),
        ("sandbox", None) => {
            return Err(problem(
                "providers.lotuspay.base_url: `sandbox` is served by the daemon with paystar.endpoint: sandbox".into(),
            )
            .into());
        }
        (url, _) => url.to_owned(),
    };
    let secret = match &lp.secret_key {
        Some(source) => source
            .resolve(&crate::config::process_env)
            .map_err(problem)?,
        None if lp.base_url == "sandbox" => Secret::new("sandbox"),
        None => {
            return Err(problem(
                "providers.lotuspay: set secret_key_env or secret_key_file".into(),
            )
            .into());
        }
    };
    let business_unit = provider_business_unit(config, &lp.business_unit, "lotuspay")?;
    Ok(Some(crate::providers::lotuspay::LotusPay::new(
        lp,
        &base_url,
        secret,
        business_unit,
    )?))
}

/// A configuration problem found while wiring a stage (exit 78).
fn config_problem(config: &Config, message: String) -> ConfigError {
    ConfigError {
        path: config.path.clone(),
        problems: vec![message],
    }
}

/// A provider's business unit: its own setting, else `paystar.default_business_unit`.
fn provider_business_unit(
    config: &Config,
    own: &Option<String>,
    provider: &str,
) -> Result<String, ConfigError> {
    own.clone()
        .or_else(|| config.paystar.default_business_unit.clone())
        .ok_or_else(|| {
            config_problem(
                config,
                format!(
                    "providers.{provider}.business_unit: set it, or paystar.default_business_unit"
                ),
            )
        })
}

/// Keeps the declared Payroc subscription existing, matching and enabled: at
/// start and then hourly. Failures are logged and tried again; they never stop
/// the daemon.
async fn payroc_subscription_loop(
    api: crate::providers::payroc::PayrocApi,
    declared: crate::config::PayrocSubscription,
    secret: Secret,
    store: SharedStore,
    cancel: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        match api.reconcile(&store, &declared, &secret).await {
            Ok(action) => tracing::info!(
                provider = "payroc",
                ?action,
                "event subscription reconciled"
            ),
            Err(err) => {
                tracing::error!(provider = "payroc", error = %err, "cannot reconcile the event subscription; trying again in an hour")
            }
        }
    }
}

/// The Payroc subscription manager, when `providers.payroc.subscription` is declared.
fn payroc_subscription(
    config: &Config,
) -> anyhow::Result<
    Option<(
        crate::providers::payroc::PayrocApi,
        crate::config::PayrocSubscription,
        Secret,
    )>,
> {
    let Some(pr) = &config.providers.payroc else {
        return Ok(None);
    };
    let Some(declared) = &pr.subscription else {
        return Ok(None);
    };
    let resolve = |source: Option<&crate::config::SecretSource>, key: &str| match source {
        Some(source) => source
            .resolve(&crate::config::process_env)
            .map_err(|p| config_problem(config, p)),
        None => Err(config_problem(
            config,
            format!("providers.payroc: set {key}_env or {key}_file to manage the subscription"),
        )),
    };
    let api_key = resolve(pr.api_key.as_ref(), "api_key")?;
    let secret = resolve(pr.webhook_secret.as_ref(), "webhook_secret")?;
    let api = crate::providers::payroc::PayrocApi::new(&pr.identity_url, &pr.api_url, api_key)?;
    Ok(Some((api, declared.clone(), secret)))
}

/// The Payroc webhook receiver, when a webhook secret is configured.
fn payroc_receiver(
    config: &Config,
) -> anyhow::Result<Option<crate::providers::payroc::PayrocReceiver>> {
    let Some(source) = config
        .providers
        .payroc
        .as_ref()
        .and_then(|p| p.webhook_secret.as_ref())
    else {
        return Ok(None);
    };
    let secret = source
        .resolve(&crate::config::process_env)
        .map_err(|problem| config_problem(config, problem))?;
    Ok(Some(crate::providers::payroc::PayrocReceiver {
        secret,
        pause: config
            .providers
            .payroc
            .as_ref()
            .and_then(|p| p.pause.clone()),
    }))
}

/// The SmarterPay webhook receiver the config asks for, if any.
pub fn smarterpay(
    config: &Config,
) -> anyhow::Result<Option<crate::providers::smarterpay::SmarterPay>> {
    use crate::config::SmarterPayAuth;
    use crate::providers::smarterpay::{Auth, SmarterPay};
    let Some(sp) = &config.providers.smarterpay else {
        return Ok(None);
    };
    let problem = |message: String| config_problem(config, message);
    let resolve = |source: &crate::config::SecretSource| {
        source.resolve(&crate::config::process_env).map_err(problem)
    };
    let auth = match &sp.auth {
        Some(SmarterPayAuth::Basic { user, password }) => Auth::Basic {
            user: resolve(user)?,
            password: resolve(password)?,
        },
        Some(SmarterPayAuth::Signature { secret, header }) => Auth::Signature {
            secret: resolve(secret)?,
            header: header.clone(),
        },
        None => return Err(problem("providers.smarterpay.auth: required".into()).into()),
    };
    let business_unit = provider_business_unit(config, &sp.business_unit, "smarterpay")?;
    Ok(Some(SmarterPay {
        auth,
        account_field: sp.account_field.clone(),
        business_unit,
    }))
}

/// Polls LotusPay on its cron schedule until cancelled; a failed poll is logged
/// and tried again at the next tick, and a long gap raises an alert.
async fn poll_loop(
    poller: crate::providers::lotuspay::LotusPay,
    schedule: cron::Schedule,
    store: SharedStore,
    wake: std::sync::Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    use crate::providers::lotuspay::{ALERT_AFTER, PROVIDER};
    loop {
        let Some(next) = schedule.upcoming(chrono::Utc).next() else {
            return;
        };
        // Ticks missed while a poll ran are skipped, never caught up in a burst.
        let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match poller.poll_once(&store, now_ms()).await {
            Ok(report) => {
                tracing::info!(
                    provider = PROVIDER,
                    listed = report.listed,
                    new = report.new,
                    stops = report.stops,
                    unmatched = report.unmatched,
                    "poll done"
                );
                if report.stops > 0 {
                    wake.notify_one();
                }
            }
            Err(err) => {
                tracing::warn!(provider = PROVIDER, error = %err, "poll failed; trying again at the next scheduled run");
                let last = store
                    .call(|s| s.poll_cursor(PROVIDER))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| c.last_success_ms);
                let gap =
                    Duration::from_millis(now_ms().saturating_sub(last.unwrap_or(0)).max(0) as u64);
                if last.is_some() && gap > ALERT_AFTER {
                    tracing::error!(
                        provider = PROVIDER,
                        days = gap.as_secs() / 86_400,
                        "no successful poll for too long: events older than 30 days are lost; resync mandates and customers by hand"
                    );
                }
            }
        }
    }
}

pub fn worker_settings(config: &Config) -> WorkerSettings {
    WorkerSettings {
        concurrency: config.paystar.concurrency,
        schedule: config.paystar.retry_schedule.clone(),
        policy: config.policy(),
        pause: config
            .providers
            .payroc
            .as_ref()
            .and_then(|p| p.pause.clone()),
        grace: Duration::from_secs(10),
    }
}

/// Scans the manifests and commits the result: the one path every change takes.
pub async fn scan_and_commit(config: &Config, store: &SharedStore) -> anyhow::Result<Scan> {
    let config = config.clone();
    let scan = store
        .call(move |s| commit_pass(s, &config, &PassOptions::default()))
        .await
        .context("cannot scan and commit the manifests")?;
    Ok(scan)
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Scan(#[from] crate::scan::ScanError),
    #[error("state database query failed")]
    Store(#[from] crate::store::SqlError),
    /// `apply --plan`: the reviewed plan is not what would be sent now.
    #[error("{0}")]
    Stale(&'static str),
}

/// A one-line progress display (on a terminal): each call replaces the line.
#[derive(Clone)]
pub struct Progress(std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl Progress {
    pub fn new(show: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(show))
    }

    pub fn line(&self, text: &str) {
        (self.0)(text);
    }
}

/// How one committed pass runs; the default reads every file as it is.
#[derive(Clone, Default)]
struct PassOptions {
    /// Files modified this recently (ms) are left for later (the daemon).
    settle_ms: i64,
    /// Files open for writing, from the folder watch.
    busy: Vec<std::path::PathBuf>,
    /// `apply --plan`: refuse unless the pass would send exactly this plan.
    expect: Option<Fingerprint>,
    progress: Option<Progress>,
}

/// One committed pass: scan, commit, Git provenance of the files read, history
/// retention, error reports.
fn commit_pass(
    store: &mut Store,
    config: &Config,
    options: &PassOptions,
) -> Result<Scan, PassError> {
    let parse = config.parse_options();
    let show = |n: usize, total: usize, file: &str| {
        if let Some(p) = &options.progress {
            p.line(&format!("reading {n}/{total}: {file}"));
        }
    };
    let settings = ScanSettings {
        settle_ms: options.settle_ms,
        busy: &options.busy,
        progress: Some(&show),
        ..ScanSettings::new(config, &parse, now_ms())
    };
    let scan = scan(store, &settings)?;
    if let Some(expected) = &options.expect {
        if let Some(why) = scan.fingerprint(store)?.mismatch(expected) {
            return Err(PassError::Stale(why));
        }
    }
    scan.commit(store)?;
    record_git_provenance(store, &config.manifests.dir, &scan)?;
    prune_history(store, config)?;
    let reports = config.state.dir().join("reports");
    if let Err(err) = crate::report::write_error_reports(&reports, &scan) {
        tracing::warn!(error = %err, dir = %reports.display(), "cannot write the manifest error reports");
    }
    Ok(scan)
}

/// Stores the last Git commit and author of the files a scan read, when the
/// manifests folder is a Git work tree.
fn record_git_provenance(
    store: &mut Store,
    dir: &std::path::Path,
    scan: &Scan,
) -> Result<(), crate::store::SqlError> {
    let parsed: Vec<&str> = scan.parsed_files().collect();
    let commits = crate::manifest::git::last_commits(dir, &parsed);
    if commits.is_empty() {
        return Ok(());
    }
    store.set_git_provenance(&commits)
}

/// Drops history older than `history.retention`, if set.
fn prune_history(store: &mut Store, config: &Config) -> Result<(), crate::store::SqlError> {
    if let Some(retention) = config.history.retention {
        store.prune_history(now_ms() - retention.as_millis() as i64)?;
    }
    Ok(())
}

/// What one `apply` did.
pub struct ApplyReport {
    pub scan: Scan,
    pub totals: Totals,
    pub parked: u64,
    /// Keys still queued (retrying) when the time limit ran out.
    pub waiting: u64,
    /// Unenrolls held by the mass-change guard.
    pub held: u64,
    /// The Payroc pause that kept some customers waiting, if any.
    pub pause: Option<crate::providers::payroc::Pause>,
}

/// One pass: scan, commit, send until everything is acknowledged or parked, or
/// `timeout` runs out (what is left stays queued).
/// `plan` is the reviewed plan's fingerprint (`apply --plan`): the pass is
/// refused, before anything is committed or sent, unless it would send exactly that.
pub async fn apply(
    config: &Config,
    timeout: Duration,
    plan: Option<Fingerprint>,
    progress: Option<Progress>,
) -> anyhow::Result<ApplyReport> {
    let (client, sandbox) = paystar(config).await?;
    let store = SharedStore::new(Store::open(&config.state.path)?);
    let pass_config = config.clone();
    let options = PassOptions {
        expect: plan,
        progress: progress.clone(),
        ..PassOptions::default()
    };
    let scan = store
        .call(move |s| commit_pass(s, &pass_config, &options))
        .await
        .map_err(|err| match err {
            PassError::Stale(why) => anyhow::anyhow!(
                "refusing to apply the plan: {why}; run `paystar-sync plan --out FILE` again and review it"
            ),
            other => anyhow::Error::new(other).context("cannot scan and commit the manifests"),
        })?;
    for warning in &scan.warnings {
        tracing::warn!(%warning, "manifest warning");
    }
    let worker = Worker::new(store.clone(), client, worker_settings(config));
    let ticker = progress.map(|p| {
        let counters = worker.counters();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let sent = counters
                    .delivered
                    .load(std::sync::atomic::Ordering::Relaxed);
                p.line(&format!("sent {sent} event(s) to Paystar"));
            }
        })
    });
    let cancel = CancellationToken::new();
    let timer = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            tracing::warn!(
                ?timeout,
                "apply time limit reached; what is left stays queued"
            );
            cancel.cancel();
        })
    };
    let totals = worker.run(Until::Idle, cancel).await?;
    timer.abort();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let rule = config
        .providers
        .payroc
        .as_ref()
        .and_then(|p| p.pause.clone());
    let (counts, pause) = store
        .call(move |s| {
            Ok::<_, crate::store::SqlError>((
                s.counts()?,
                crate::providers::payroc::current_pause(rule.as_ref(), s)?,
            ))
        })
        .await?;
    if let Some(sandbox) = sandbox {
        sandbox.stop().await;
    }
    Ok(ApplyReport {
        scan,
        totals,
        parked: counts.parked,
        waiting: counts.pending + counts.retrying,
        held: counts.held,
        pause,
    })
}

/// What the process asks the daemon to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM / SIGINT: stop intake, finish in-flight requests within the grace period, exit.
    Shutdown,
    /// SIGHUP: reload the config; an invalid one is reported and the old one keeps running.
    Reload,
}

/// The daemon (SPEC §9). Returns when told to shut down, or with the error of a
/// stage that died.
pub async fn run(
    config_path: &std::path::Path,
    mut config: Config,
    mut signals: tokio::sync::mpsc::Receiver<Signal>,
    notifier: crate::systemd::Notifier,
) -> anyhow::Result<()> {
    let store = SharedStore::new(Store::open(&config.state.path)?);
    loop {
        let mut pipeline = Pipeline::start(&config, store.clone()).await?;
        notifier.notify("READY=1\nSTATUS=watching manifests");
        tracing::info!(manifests = %config.manifests.dir.display(), "ready");
        let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
        let next = loop {
            tokio::select! {
                signal = signals.recv() => match signal.unwrap_or(Signal::Shutdown) {
                    Signal::Shutdown => break None,
                    Signal::Reload => match Config::load(config_path) {
                        Ok(new) => {
                            if new.state.path != config.state.path {
                                tracing::warn!(old = %config.state.path.display(), new = %new.state.path.display(), "state.path changes take effect on restart; keeping the old one");
                            }
                            tracing::info!("configuration reloaded");
                            break Some(new);
                        }
                        Err(err) => tracing::error!(error = %err, "reload refused; the running configuration stays in force"),
                    },
                },
                failure = pipeline.failures.recv() => {
                    let err = failure.unwrap_or_else(|| anyhow::anyhow!("a pipeline stage stopped"));
                    pipeline.stop().await;
                    return Err(err);
                }
                _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                    notifier.notify("WATCHDOG=1");
                }
            }
        };
        match next {
            None => {
                notifier.notify("STOPPING=1");
                tracing::info!("shutting down");
                pipeline.stop().await;
                return Ok(());
            }
            Some(mut new) => {
                notifier.notify("RELOADING=1");
                new.state.path = config.state.path.clone();
                pipeline.stop().await;
                config = new;
            }
        }
    }
}

/// The running stages of one configuration: intake (watch + rescans) and delivery.
struct Pipeline {
    cancel: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    failures: tokio::sync::mpsc::Receiver<anyhow::Error>,
    sandbox: Option<RunningSandbox>,
}

impl Pipeline {
    async fn start(config: &Config, store: SharedStore) -> anyhow::Result<Pipeline> {
        let (client, sandbox) = paystar(config).await?;
        // Watch first, then scan: a change made during the startup scan is then
        // either in it or triggers the next one, never lost in between.
        let (tx, changes) = tokio::sync::mpsc::unbounded_channel();
        let watch = Intake::watch(&config.manifests.dir, &tx);
        let started = tokio::time::Instant::now();
        let scan = scan_and_commit(config, &store).await?;
        let scan_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            started.elapsed().as_millis() as u64,
        ));
        log_scan(&scan);
        let cancel = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let (fail_tx, failures) = tokio::sync::mpsc::channel(4);
        let worker =
            std::sync::Arc::new(Worker::new(store.clone(), client, worker_settings(config)));
        let wake = worker.waker();
        let mut poll_behind_after = None;
        if let (Some(poller), Some(lp)) = (
            lotuspay(config, sandbox.as_ref())?,
            &config.providers.lotuspay,
        ) {
            let schedule: cron::Schedule =
                lp.schedule.parse().context("providers.lotuspay.schedule")?;
            let mut upcoming = schedule.upcoming(chrono::Utc);
            if let (Some(a), Some(b)) = (upcoming.next(), upcoming.next()) {
                // Three missed runs, plus a minute for a slow provider.
                poll_behind_after = (b - a)
                    .to_std()
                    .ok()
                    .map(|every| every * 3 + Duration::from_secs(60));
            }
            tracker.spawn(poll_loop(
                poller,
                schedule,
                store.clone(),
                wake.clone(),
                cancel.child_token(),
            ));
        }
        if let Some((api, declared, secret)) = payroc_subscription(config)? {
            tracker.spawn(payroc_subscription_loop(
                api,
                declared,
                secret,
                store.clone(),
                cancel.child_token(),
            ));
        }
        {
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .with_context(|| {
                    format!(
                        "server.listen {}: cannot listen there",
                        config.server.listen
                    )
                })?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "http server listening (/health, /metrics)");
            let router = crate::server::router(crate::server::ServerState {
                store: store.clone(),
                delivery: worker.counters(),
                scan_ms: scan_ms.clone(),
                poll_behind_after,
                started_ms: now_ms(),
                smarterpay: smarterpay(config)?,
                payroc: payroc_receiver(config)?,
                wake: wake.clone(),
                webhooks: Default::default(),
            });
            let stop = cancel.child_token();
            let fail = fail_tx.clone();
            tracker.spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(err) = served {
                    let _ = fail
                        .send(anyhow::Error::new(err).context("http server stopped"))
                        .await;
                }
            });
        }
        {
            let cancel = cancel.child_token();
            let fail = fail_tx.clone();
            tracker.spawn(async move {
                if let Err(err) = worker.run(Until::Cancelled, cancel).await {
                    let _ = fail
                        .send(anyhow::Error::new(err).context("delivery stopped"))
                        .await;
                }
            });
        }
        {
            let intake = Intake {
                config: config.clone(),
                store,
                wake,
                scan_ms,
            };
            let cancel = cancel.child_token();
            tracker.spawn(async move {
                if let Err(err) = intake.run(watch, tx, changes, cancel).await {
                    let _ = fail_tx.send(err.context("manifest intake stopped")).await;
                }
            });
        }
        tracker.close();
        Ok(Pipeline {
            cancel,
            tracker,
            failures,
            sandbox,
        })
    }

    /// Stops intake and delivery; delivery lets in-flight requests finish within its grace period.
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
        if let Some(sandbox) = self.sandbox {
            sandbox.stop().await;
        }
    }
}

fn log_scan(scan: &Scan) {
    if let Some(trip) = &scan.guard {
        tracing::error!(reason = %trip, "mass unenroll held for approval; review `paystar-sync status`, then run `paystar-sync approve`");
    }
    for error in scan.new_errors() {
        tracing::warn!(%error, "manifest error; the customer keeps its previous state");
    }
    let s = &scan.stats;
    tracing::info!(
        files = s.files,
        parsed = s.files_parsed,
        deferred = s.files_deferred,
        changed = s.keys_changed,
        removed = s.keys_removed,
        errors = scan.errors.len(),
        "scan committed"
    );
}

/// Turns folder changes and the rescan interval into committed scans.
struct Intake {
    config: Config,
    store: SharedStore,
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// How long the last committed scan took (for `/metrics`).
    scan_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Intake {
    async fn run(
        self,
        mut watch: Option<FolderWatch>,
        tx: tokio::sync::mpsc::UnboundedSender<()>,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<()>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        use tokio::time::{Instant, MissedTickBehavior};
        let dir = self.config.manifests.dir.clone();
        let debounce = self.config.manifests.debounce;
        let mut rescan = tokio::time::interval(self.config.manifests.rescan_interval);
        rescan.set_missed_tick_behavior(MissedTickBehavior::Skip);
        rescan.tick().await; // the startup scan just ran
        let mut due: Option<Instant> = None;
        let mut first_change: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                Some(()) = changes.recv() => {
                    let now = Instant::now();
                    let first = *first_change.get_or_insert(now);
                    // Wait for quiet, but never longer than ten debounce periods.
                    due = Some((now + debounce).min(first + debounce * 10));
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    due = None;
                    first_change = None;
                    if self.scan(watch.as_ref()).await? > 0 {
                        due = Some(Instant::now() + debounce);
                    }
                    if watch.as_ref().is_none_or(|w| w.moved(&dir)) {
                        watch = Self::watch(&dir, &tx);
                    }
                }
                _ = rescan.tick() => {
                    if self.scan(watch.as_ref()).await? > 0 {
                        due = Some(Instant::now() + debounce);
                    }
                    if watch.as_ref().is_none_or(|w| w.moved(&dir)) {
                        watch = Self::watch(&dir, &tx);
                    }
                }
            }
        }
    }

    fn watch(
        dir: &std::path::Path,
        tx: &tokio::sync::mpsc::UnboundedSender<()>,
    ) -> Option<FolderWatch> {
        match FolderWatch::new(dir, tx.clone()) {
            Ok(watch) => Some(watch),
            Err(err) => {
                tracing::warn!(error = %err, dir = %dir.display(), "cannot watch the manifests folder; relying on manifests.rescan_interval");
                None
            }
        }
    }

    /// One committed scan; returns how many files were left to settle.
    async fn scan(&self, watch: Option<&FolderWatch>) -> anyhow::Result<u64> {
        let stale = (self.config.manifests.debounce * 10).max(Duration::from_secs(30));
        let busy = watch.map(|w| w.writers.snapshot(stale)).unwrap_or_default();
        let config = self.config.clone();
        // The debounce already waited for quiet; the mtime check only guards against
        // writers the watch cannot see (network filesystems, missed events).
        let settle_ms = (self.config.manifests.debounce / 2).as_millis() as i64;
        let started = tokio::time::Instant::now();
        let result = self
            .store
            .call(move |s| {
                let options = PassOptions {
                    settle_ms,
                    busy,
                    ..PassOptions::default()
                };
                commit_pass(s, &config, &options)
            })
            .await;
        match result {
            Ok(scan) => {
                self.scan_ms.store(
                    started.elapsed().as_millis() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                log_scan(&scan);
                self.wake.notify_one();
                Ok(scan.stats.files_deferred)
            }
            // The folder may be briefly missing (a symlink swap, a remount): nothing is
            // removed, and the next change or rescan tries again.
            Err(PassError::Scan(crate::scan::ScanError::Discover(err))) => {
                tracing::error!(error = %err, "cannot scan the manifests folder; nothing changes until it is back");
                Ok(0)
            }
            Err(err) => Err(anyhow::Error::new(err)),
        }
    }
}
