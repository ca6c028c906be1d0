//! Wiring: builds the stages from a [`Config`] and runs them for `apply` and the
//! daemon. Owns the cancellation tokens; nothing below it reads the clock's
//! wall time for decisions except through its callers' parameters.

use crate::clock::now_ms;
use crate::config::{Config, Endpoint, Secret};
use crate::deliver::{PaystarClient, Totals, Until, Worker, WorkerSettings};
use crate::sandbox::{RunningSandbox, Sandbox};
use crate::scan::{Fingerprint, Scan, ScanSettings, scan};
use crate::store::{SharedStore, Store};
use anyhow::Context;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod daemon;
mod intake;
mod listeners;
mod loops;
pub mod wiring;

pub use daemon::run;

/// Starts the simulators for `paystar.endpoint: sandbox`, saying loudly so.
pub(crate) async fn in_process_sandbox() -> anyhow::Result<RunningSandbox> {
    // A first import may send millions of events: keep the latest, count them all.
    let sandbox = Sandbox {
        paystar: crate::sandbox::PaystarSim::keeping(1_000),
        ..Sandbox::default()
    };
    let running = sandbox
        .start(([127, 0, 0, 1], 0).into())
        .await
        .context("cannot start the in-process Paystar sandbox")?;
    tracing::warn!(
        endpoint = %running.paystar_endpoint(),
        lotuspay = %running.lotuspay_base_url(),
        "paystar.endpoint is `sandbox`: events go to the in-process Paystar simulator, NOT to Paystar"
    );
    Ok(running)
}

/// The Paystar client the config asks for; for `endpoint: sandbox`, the
/// in-process simulator it talks to (kept alive by the caller).
pub async fn paystar(config: &Config) -> anyhow::Result<(PaystarClient, Option<RunningSandbox>)> {
    let key = wiring::paystar_key(config, &crate::config::process_env)?;
    let sandbox = match config.paystar.endpoint {
        Endpoint::Sandbox => Some(in_process_sandbox().await?),
        Endpoint::Url(_) => None,
    };
    Ok((paystar_client(config, key, sandbox.as_ref())?, sandbox))
}

/// The client for `paystar.endpoint`: its URL with `key`, or the running `sandbox`.
pub(crate) fn paystar_client(
    config: &Config,
    key: Option<Secret>,
    sandbox: Option<&RunningSandbox>,
) -> anyhow::Result<PaystarClient> {
    let timeout = config.paystar.timeout;
    Ok(match (&config.paystar.endpoint, key) {
        (Endpoint::Sandbox, _) => {
            let running =
                sandbox.context("paystar.endpoint: sandbox needs the in-process sandbox")?;
            PaystarClient::new(&running.paystar_endpoint(), Secret::new("sandbox"), timeout)?
        }
        (Endpoint::Url(url), Some(key)) => PaystarClient::new(url, key, timeout)?,
        (Endpoint::Url(_), None) => anyhow::bail!("paystar: no API key was resolved"),
    })
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
        grace: config.shutdown_grace,
        gate: crate::ha::LeaseGate::always_open(),
        rate_limit: config.paystar.rate_limit.map(|r| r.per_second),
        adaptive: config.paystar.adaptive,
    }
}

/// Scans the manifests and commits the result: the one path every change takes.
pub async fn scan_and_commit(config: &Config, store: &SharedStore) -> anyhow::Result<Scan> {
    let scan = traced_pass(store, config.clone(), PassOptions::default(), "start")
        .await
        .context("cannot scan and commit the manifests")?;
    Ok(scan)
}

/// One committed pass on the state's thread, inside its `paystar.scan` span;
/// `trigger` says what started it.
async fn traced_pass(
    store: &SharedStore,
    config: Config,
    options: PassOptions,
    trigger: &'static str,
) -> Result<Scan, PassError> {
    use tracing::Instrument;
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "paystar.scan",
        otel.name = "paystar.scan",
        trigger,
        files = Empty,
        parsed = Empty,
        failed = Empty,
        deferred = Empty,
        rows = Empty,
        changed = Empty,
        removed = Empty,
        errors = Empty,
        held = Empty,
        outcome = Empty,
        otel.status_code = Empty,
    );
    let result = store
        .call(move |s| commit_pass(s, &config, &options))
        .instrument(span.clone())
        .await;
    match &result {
        Ok(scan) => {
            let s = &scan.stats;
            span.record("files", s.files);
            span.record("parsed", s.files_parsed);
            span.record("failed", s.files_failed);
            span.record("deferred", s.files_deferred);
            span.record("rows", s.rows_read);
            span.record("changed", s.keys_changed);
            span.record("removed", s.keys_removed);
            span.record("errors", scan.errors.len() as u64);
            span.record("held", scan.guard.is_some());
            span.record("outcome", "committed");
        }
        Err(err) => {
            let outcome = match err {
                PassError::Stale(_) => "refused",
                _ => "failed",
            };
            span.record("outcome", outcome);
            span.record("otel.status_code", "error");
        }
    }
    result
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Scan(#[from] crate::scan::ScanError),
    #[error(transparent)]
    Store(#[from] crate::store::StateError),
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
    if let Some(expected) = &options.expect
        && let Some(why) = scan.fingerprint(store)?.mismatch(expected)
    {
        return Err(PassError::Stale(why));
    }
    scan.commit(store)?;
    record_git_provenance(store, &config.manifests.dir, &scan)?;
    prune_history(store, config)?;
    if let Some(reports) = &config.state.reports_dir
        && let Err(err) = crate::report::write_error_reports(reports, &scan)
    {
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
) -> Result<(), crate::store::StateError> {
    let parsed: Vec<&str> = scan.parsed_files().collect();
    let commits = crate::manifest::git::last_commits(dir, &parsed);
    if commits.is_empty() {
        return Ok(());
    }
    store.set_git_provenance(&commits)
}

/// Drops history older than `history.retention`, if set.
fn prune_history(store: &mut Store, config: &Config) -> Result<(), crate::store::StateError> {
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
    /// The endpoint fault that paused delivery, if one did and lasted.
    pub endpoint: Option<crate::deliver::EndpointProblem>,
    /// Whether SIGINT or SIGTERM ended the pass early.
    pub interrupted: bool,
}

/// One pass: scan, commit, send until everything is acknowledged or parked, or
/// `timeout` runs out (what is left stays queued).
/// `plan` is the reviewed plan's fingerprint (`apply --plan`): the pass is
/// refused, before anything is committed or sent, unless it would send exactly that.
/// On a shared state `apply` leads for its pass (SPEC §12): it takes the
/// leader lease, its writes are fenced to it, and it releases it at the end;
/// while another instance leads, it refuses rather than deliver beside it.
async fn lead_for_apply(
    config: &Config,
    store: &SharedStore,
) -> anyhow::Result<Option<crate::ha::Keeper>> {
    use crate::store::LeaseLook;
    let Some(ha) = &config.ha else {
        return Ok(None);
    };
    let id = format!("apply-{}", ha.resolved_instance_id());
    let ttl = ha.lease_ttl;
    let sent = tokio::time::Instant::now();
    let holder = id.clone();
    let lease = match store
        .call(move |s| s.lease_try_acquire(&holder, ttl))
        .await?
    {
        LeaseLook::Acquired(lease) => lease,
        LeaseLook::Held(lease) => anyhow::bail!(
            "{} leads this state (its lease runs {:.0}s more unless renewed): apply would deliver beside it; let that daemon deliver (it scans the same manifests), or stop it and run apply again",
            lease.holder,
            lease.remaining().as_secs_f64()
        ),
        LeaseLook::Busy => {
            anyhow::bail!("the leader lease is changing hands right now; run apply again")
        }
        LeaseLook::Upgraded(version) => anyhow::bail!("{}", LeaseLook::upgraded_message(version)),
    };
    let epoch = lease.epoch;
    store.call(move |s| s.fence_writes(Some(epoch))).await?;
    tracing::info!(epoch, instance = %id, "took the leader lease for this pass");
    let leadership = std::sync::Arc::new(crate::ha::Leadership::new(id, crate::ha::Role::Leader));
    Ok(Some(crate::ha::Keeper::leading(
        config.state.clone(),
        ha.clone(),
        leadership,
        std::sync::Arc::new(crate::metrics::Metrics::default()),
        epoch,
        sent,
    )))
}

/// `interrupt` (SIGINT, SIGTERM) lets a running scan commit, starts nothing
/// new, and gives in-flight requests `shutdown_grace` to finish.
pub async fn apply(
    config: &Config,
    timeout: Duration,
    plan: Option<Fingerprint>,
    progress: Option<Progress>,
    interrupt: CancellationToken,
) -> anyhow::Result<ApplyReport> {
    let _owner = crate::store::Owner::claim(&config.state, "apply")?;
    let (client, sandbox) = paystar(config).await?;
    let store = SharedStore::open(&config.state).await?;
    let keeper = lead_for_apply(config, &store).await?;
    let gate = keeper.as_ref().map(crate::ha::Keeper::gate);
    let pass = Pass {
        timeout,
        plan,
        progress,
        interrupt,
    };
    let passed = apply_pass(config, &store, client, gate, pass).await;
    if let Some(keeper) = keeper {
        keeper.stop().await;
    }
    if let Some(sandbox) = sandbox {
        sandbox.stop().await;
    }
    passed
}

/// What `apply` was asked for.
struct Pass {
    timeout: Duration,
    plan: Option<Fingerprint>,
    progress: Option<Progress>,
    interrupt: CancellationToken,
}

/// `apply`'s scan, commit and delivery, on an open state.
async fn apply_pass(
    config: &Config,
    store: &SharedStore,
    client: PaystarClient,
    gate: Option<crate::ha::LeaseGate>,
    pass: Pass,
) -> anyhow::Result<ApplyReport> {
    let Pass {
        timeout,
        plan,
        progress,
        interrupt,
    } = pass;
    let options = PassOptions {
        expect: plan,
        progress: progress.clone(),
        ..PassOptions::default()
    };
    let scan = traced_pass(store, config.clone(), options, "apply")
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
    let mut settings = worker_settings(config);
    if let Some(gate) = gate {
        settings.gate = gate;
    }
    let worker = Worker::new(store.clone(), client, settings);
    let counters = worker.counters();
    let ticker = progress.map(|p| {
        let counters = worker.counters();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let sent = counters.delivered.get();
                p.line(&format!("sent {sent} event(s) to Paystar"));
            }
        })
    });
    // An interrupt during the scan let it commit; it sends nothing then.
    let cancel = interrupt.child_token();
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
    let totals = if interrupt.is_cancelled() {
        Totals::default()
    } else {
        worker.run(Until::Idle, cancel).await?
    };
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
            Ok::<_, crate::store::StateError>((
                s.counts()?,
                crate::providers::payroc::current_pause(rule.as_ref(), s)?,
            ))
        })
        .await?;
    Ok(ApplyReport {
        scan,
        totals,
        parked: counts.parked,
        waiting: counts.pending + counts.retrying,
        held: counts.held,
        pause,
        endpoint: counters.endpoint.problem(),
        interrupted: interrupt.is_cancelled(),
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
