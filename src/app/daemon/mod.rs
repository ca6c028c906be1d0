//! The daemon (SPEC §9): the stages of one configuration as a [`Pipeline`],
//! reloads that build the new pipeline before the old one stops, and one place
//! where a stage that fails or panics ends the process.

mod leading;
mod pipeline;
mod reconnect;

use super::intake::{Intake, log_scan};
use super::listeners::{ConsoleServer, Server, bind, console_settings};
use super::loops::{payroc_subscription_loop, poll_loop};
use super::wiring::{Resolved, resolve};
use super::{Signal, scan_and_commit, worker_settings};
use crate::config::{Config, Endpoint, process_env};
use crate::deliver::{PaystarClient, Until, Worker};
use crate::ha::{Keeper, Leadership, LeaseGate, Role, RoleChange};
use crate::metrics::Metrics;
use crate::sandbox::RunningSandbox;
use crate::server::{Live, ServerState};
use crate::store::SharedStore;
use anyhow::Context;
use leading::{connection_lost, fenced, next_change};
use pipeline::Pipeline;
use reconnect::or_reconnect;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A stage that stopped on its own: the daemon ends with its error.
pub struct StageFailure {
    pub stage: &'static str,
    pub error: anyhow::Error,
}

/// Runs `stage` as its own task and reports to `failures` if it returns an error
/// or panics. Returning `Ok` (after cancellation) is a normal stop.
pub fn supervise<F>(
    tracker: &TaskTracker,
    stage: &'static str,
    failures: mpsc::Sender<StageFailure>,
    future: F,
) where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let task = tokio::spawn(future);
    tracker.spawn(async move {
        let error = match task.await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            Err(join) if join.is_panic() => {
                let payload = join.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                anyhow::anyhow!("panicked: {message}")
            }
            Err(_) => return, // aborted at shutdown
        };
        let _ = failures.send(StageFailure { stage, error }).await;
    });
}

/// Everything that outlives one configuration: the store, counters, the
/// delivery wake-up, the listeners, the in-process sandbox, and this
/// instance's part in the election.
struct Daemon {
    store: SharedStore,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    server_state: ServerState,
    server: Server,
    console: Option<ConsoleServer>,
    sandbox: Option<RunningSandbox>,
    failures: mpsc::Sender<StageFailure>,
    /// The leader's gate (always open for a single instance).
    gate: LeaseGate,
}

/// The in-process sandbox, when `paystar.endpoint: sandbox` asks for it.
async fn sandbox_for(config: &Config) -> anyhow::Result<Option<RunningSandbox>> {
    if config.paystar.endpoint != Endpoint::Sandbox {
        return Ok(None);
    }
    Ok(Some(super::in_process_sandbox().await?))
}

/// The daemon (SPEC §9). Returns when told to shut down, or with the error of a
/// stage that died. On a PostgreSQL state it takes part in the election (SPEC
/// §12): a standby serves webhooks, `/health` and `/metrics` and runs no
/// pipeline until it takes the lease.
pub async fn run(
    config_path: &std::path::Path,
    mut config: Config,
    mut signals: mpsc::Receiver<Signal>,
    notifier: crate::systemd::Notifier,
) -> anyhow::Result<()> {
    let resolved = resolve(&config, &process_env)?;
    // One owner per SQLite state, for the daemon's whole life.
    let _owner = crate::store::Owner::claim(&config.state, "run")?;
    let store = SharedStore::open_with_readers(&config.state).await?;
    let metrics = Arc::new(Metrics::default());
    let wake = Arc::new(Notify::new());
    let (fail_tx, mut failures) = mpsc::channel(8);
    let leadership = Arc::new(match &config.ha {
        Some(ha) => Leadership::new(ha.resolved_instance_id(), Role::Standby),
        None => Leadership::single(),
    });
    metrics.set_leader(config.ha.is_none());
    let mut keeper = config.ha.clone().map(|ha| {
        Keeper::start(
            config.state.clone(),
            ha,
            leadership.clone(),
            metrics.clone(),
        )
    });
    let server_state = ServerState::new(
        store.clone(),
        metrics.clone(),
        wake.clone(),
        Live::default(),
    )
    .with_leadership(leadership.clone());
    let listener = bind(config.server.listen).await?;
    let console = ConsoleServer::start(
        &config,
        resolved.console_token.clone(),
        &store,
        &wake,
        leadership.clone(),
        metrics.delivery.clone(),
        fail_tx.clone(),
    )
    .await?;
    let mut daemon = Daemon {
        sandbox: sandbox_for(&config).await?,
        server: Server::start(&config, listener, &server_state, fail_tx.clone()),
        console,
        store,
        metrics,
        wake,
        server_state,
        failures: fail_tx,
        gate: keeper
            .as_ref()
            .map_or_else(LeaseGate::always_open, Keeper::gate),
    };
    let mut prepared = Daemon::prepare(&config, resolved, daemon.sandbox.as_ref())?;
    daemon.serve(&config, &mut prepared.resolved);
    let mut pipeline = match &mut keeper {
        None => Some(daemon.start(&config, prepared).await?),
        Some(keeper) => {
            // Ready once the first look at the lease answered: leading (the
            // startup scan done), or a standby.
            keeper.ready();
            let bound = config.ha.as_ref().map_or(Duration::ZERO, |ha| ha.lease_ttl);
            match tokio::time::timeout(bound, keeper.next_change()).await {
                Ok(Some(RoleChange::Leading { epoch })) => {
                    daemon.lead(&config, epoch, keeper, &mut failures).await?
                }
                Ok(Some(RoleChange::Standby { leader })) => {
                    tracing::info!(instance = leadership.instance_id(), %leader, "standby: serving webhooks, /health and /metrics; waiting for the leader lease");
                    None
                }
                Ok(Some(RoleChange::Lost { .. })) | Err(_) => {
                    tracing::warn!(
                        instance = leadership.instance_id(),
                        "no answer about the leader lease yet; serving as a standby meanwhile"
                    );
                    None
                }
                Ok(None) => anyhow::bail!("the leader lease keeper stopped"),
            }
        }
    };
    notifier.notify("READY=1\nSTATUS=watching manifests");
    tracing::info!(manifests = %config.manifests.dir.display(), "ready");
    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
    // A single instance that lost its PostgreSQL session, reconnecting.
    let mut reconnect: Option<reconnect::Reconnect> = None;
    loop {
        tokio::select! {
            signal = signals.recv() => match signal.unwrap_or(Signal::Shutdown) {
                Signal::Shutdown => {
                    notifier.notify("STOPPING=1");
                    tracing::info!("shutting down");
                    daemon.stop_all(pipeline.take(), keeper.take(), config.shutdown_grace).await;
                    return Ok(());
                }
                Signal::Reload => {
                    match daemon.reload(config_path, &config, pipeline.take(), &notifier).await? {
                        Reloaded::Swapped(new_config, new_pipeline) => {
                            config = *new_config;
                            pipeline = new_pipeline;
                        }
                        Reloaded::Refused(old) => pipeline = old,
                    }
                    notifier.notify("READY=1\nSTATUS=watching manifests");
                }
            },
            change = next_change(&mut keeper) => {
                let keeper = keeper.as_ref().expect("changes come from a keeper");
                match change {
                    // Sessions lost: the lease is looked at again once they are back.
                    Some(RoleChange::Leading { .. } | RoleChange::Lost { .. }) if reconnect.is_some() => {
                        keeper.step_down("its database session is lost".to_owned());
                    }
                    Some(RoleChange::Leading { epoch }) => {
                        let led = daemon.lead(&config, epoch, keeper, &mut failures).await;
                        pipeline = or_reconnect(led, Some(keeper), &mut reconnect)?.flatten();
                    }
                    Some(RoleChange::Lost { .. }) => {
                        let stepped = daemon.step_down(&mut pipeline, keeper, &mut failures).await;
                        or_reconnect(stepped, Some(keeper), &mut reconnect)?;
                    }
                    Some(RoleChange::Standby { leader }) => {
                        tracing::info!(%leader, "another instance leads; this one stays a standby");
                    }
                    None => anyhow::bail!("the leader lease keeper stopped"),
                }
            }
            _ = tokio::time::sleep_until(reconnect.as_ref().map_or_else(tokio::time::Instant::now, |r| r.next())), if reconnect.is_some() => {
                let plan = reconnect.take().expect("guarded");
                match daemon.try_reconnect(&config, plan, keeper.as_ref()).await? {
                    Ok(resumed) => pipeline = resumed,
                    Err(plan) => reconnect = Some(plan),
                }
            }
            Some(failure) = failures.recv() => {
                if reconnect.is_some() && (connection_lost(&failure.error) || fenced(&failure.error)) {
                    // A stage left on the old sessions ended as expected.
                    tracing::debug!(stage = failure.stage, error = format!("{:#}", failure.error), "a stage left on the lost sessions ended");
                    continue;
                }
                if connection_lost(&failure.error) {
                    daemon.lose_session(failure, &mut pipeline, &mut failures, keeper.as_ref(), &mut reconnect).await;
                    continue;
                }
                if let (true, Some(keeper)) = (fenced(&failure.error), keeper.as_ref()) {
                    tracing::warn!(stage = failure.stage, "a write was refused: this instance no longer holds the leader lease");
                    keeper.step_down(format!("the {} found its writes fenced", failure.stage));
                    daemon.step_down(&mut pipeline, keeper, &mut failures).await?;
                    continue;
                }
                tracing::error!(stage = failure.stage, error = format!("{:#}", failure.error), "a stage failed; stopping the daemon so that it is restarted");
                daemon.stop_all(pipeline.take(), keeper.take(), config.shutdown_grace).await;
                return Err(failure.error.context(format!("stage `{}` failed", failure.stage)));
            }
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                notifier.notify("WATCHDOG=1");
            }
        }
    }
}

enum Reloaded {
    Swapped(Box<Config>, Option<Pipeline>),
    Refused(Option<Pipeline>),
}

/// A configuration's stages, built and checked but not yet running.
struct Prepared {
    client: PaystarClient,
    resolved: Resolved,
    poller: Option<(crate::providers::lotuspay::LotusPay, cron::Schedule)>,
}

impl Daemon {
    /// Builds what `config` needs without starting anything; fails on anything
    /// that could stop the new pipeline from starting.
    fn prepare(
        config: &Config,
        mut resolved: Resolved,
        sandbox: Option<&RunningSandbox>,
    ) -> anyhow::Result<Prepared> {
        let client = super::paystar_client(config, resolved.paystar_key.take(), sandbox)?;
        let poller = match &resolved.lotuspay {
            Some(lp) => Some((lp.poller(sandbox)?, lp.schedule().clone())),
            None => None,
        };
        Ok(Prepared {
            client,
            resolved,
            poller,
        })
    }

    /// Puts a configuration's webhook receivers and console settings in force:
    /// what every instance serves, leader or standby.
    fn serve(&self, config: &Config, resolved: &mut Resolved) {
        if let Some(c) = &self.console {
            c.console
                .swap(resolved.console_token.take(), console_settings(config));
        }
        self.server_state.swap(Live {
            poll_behind_after: None,
            payroc: resolved.payroc_receiver.take(),
            smarterpay: resolved.smarterpay.take(),
        });
    }

    /// `/health` watches the LotusPay poller only where one runs.
    fn set_poll_behind_after(&self, poll_behind_after: Option<Duration>) {
        let live = self.server_state.live();
        self.server_state.swap(Live {
            poll_behind_after,
            payroc: live.payroc.clone(),
            smarterpay: live.smarterpay.clone(),
        });
    }

    /// Starts a prepared pipeline: the startup scan, then every stage.
    async fn start(&self, config: &Config, prepared: Prepared) -> anyhow::Result<Pipeline> {
        let Prepared {
            client,
            resolved,
            poller,
        } = prepared;
        // Watch first, then scan: a change made during the startup scan is then
        // either in it or triggers the next one, never lost in between.
        let (tx, changes) = mpsc::unbounded_channel();
        let watch = Intake::watch(&config.manifests.dir, &tx);
        let started = tokio::time::Instant::now();
        let scan = scan_and_commit(config, &self.store).await?;
        self.metrics
            .scan_committed(started.elapsed().as_millis() as u64, scan.stats.files);
        log_scan(&scan);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let failures = &self.failures;
        let mut settings = worker_settings(config);
        settings.gate = self.gate.clone();
        // In-flight requests get most of the grace; the rest is for the stages to wind up.
        settings.grace = config
            .shutdown_grace
            .saturating_sub(Duration::from_millis(500));
        let worker = Worker::new(self.store.clone(), client, settings)
            .sharing(self.metrics.delivery.clone(), self.wake.clone());
        let mut poll_behind_after = None;
        if let Some((poller, schedule)) = poller {
            let mut upcoming = schedule.upcoming(chrono::Utc);
            if let (Some(a), Some(b)) = (upcoming.next(), upcoming.next()) {
                // Three missed runs, plus a minute for a slow provider.
                poll_behind_after = (b - a)
                    .to_std()
                    .ok()
                    .map(|every| every * 3 + Duration::from_secs(60));
            }
            let (store, wake, stop) = (self.store.clone(), self.wake.clone(), cancel.child_token());
            supervise(&tracker, "lotuspay poller", failures.clone(), async move {
                poll_loop(poller, schedule, store, wake, stop).await;
                Ok(())
            });
        }
        if let Some(sub) = resolved.payroc_subscription {
            let (store, stop) = (self.store.clone(), cancel.child_token());
            supervise(
                &tracker,
                "payroc subscription",
                failures.clone(),
                async move {
                    payroc_subscription_loop(sub.api, sub.declared, sub.secret, store, stop).await;
                    Ok(())
                },
            );
        }
        {
            let stop = cancel.child_token();
            supervise(&tracker, "delivery", failures.clone(), async move {
                worker
                    .run(Until::Cancelled, stop)
                    .await
                    .context("delivery stopped")?;
                Ok(())
            });
        }
        {
            let intake = Intake {
                config: config.clone(),
                store: self.store.clone(),
                wake: self.wake.clone(),
                metrics: self.metrics.clone(),
            };
            let stop = cancel.child_token();
            supervise(&tracker, "manifest intake", failures.clone(), async move {
                intake
                    .run(watch, tx, changes, stop)
                    .await
                    .context("manifest intake stopped")
            });
        }
        tracker.close();
        self.set_poll_behind_after(poll_behind_after);
        Ok(Pipeline {
            cancel,
            tracker,
            grace: config.shutdown_grace,
        })
    }

    /// SIGHUP: build the new configuration's stages, and only then swap them in.
    /// Any problem is logged with its key and the running pipeline goes on.
    async fn reload(
        &mut self,
        path: &std::path::Path,
        running: &Config,
        pipeline: Option<Pipeline>,
        notifier: &crate::systemd::Notifier,
    ) -> anyhow::Result<Reloaded> {
        let candidate = match self.build(path, running).await {
            Ok(candidate) => candidate,
            Err(err) => {
                let problem = format!("{err:#}");
                tracing::error!(error = %problem, "reload refused; the running configuration stays in force");
                self.metrics.reload_failed(problem);
                return Ok(Reloaded::Refused(pipeline));
            }
        };
        let Candidate {
            config,
            mut prepared,
            listener,
            sandbox,
        } = candidate;
        notifier.notify("RELOADING=1");
        let leading = pipeline.is_some();
        if let Some(pipeline) = pipeline {
            pipeline.stop().await;
        }
        if let Some(listener) = listener {
            let old = std::mem::replace(
                &mut self.server,
                Server::start(&config, listener, &self.server_state, self.failures.clone()),
            );
            old.listening.stop().await;
        }
        let old_sandbox = match sandbox {
            Some(new) => self.sandbox.replace(new),
            None if config.paystar.endpoint != Endpoint::Sandbox => self.sandbox.take(),
            None => None,
        };
        self.serve(&config, &mut prepared.resolved);
        // A standby keeps waiting for the lease; it starts a pipeline when it leads.
        let pipeline = match leading {
            true => Some(self.start(&config, prepared).await?),
            false => None,
        };
        if let Some(old) = old_sandbox {
            old.stop().await;
        }
        self.metrics.reload_succeeded();
        tracing::info!("configuration reloaded");
        Ok(Reloaded::Swapped(Box::new(config), pipeline))
    }

    /// Loads, resolves and prepares the configuration at `path`, binding a new
    /// listener or sandbox only if it needs one the running one does not give.
    async fn build(&self, path: &std::path::Path, running: &Config) -> anyhow::Result<Candidate> {
        let mut config = Config::load(path)?;
        if config.state.backend != running.state.backend {
            tracing::warn!(old = %running.state.describe(), new = %config.state.describe(), "state changes take effect on restart; keeping the old one");
            config.state.backend = running.state.backend.clone();
        }
        if config.ha != running.ha {
            tracing::warn!("ha changes take effect on restart; the lease keeps its timing");
            config.ha = running.ha.clone();
        }
        if config.telemetry != running.telemetry {
            tracing::warn!("telemetry changes take effect on restart; traces go where they went");
            config.telemetry = running.telemetry.clone();
        }
        let console_listen = |c: &Config| c.console.as_ref().map(|c| c.listen);
        if console_listen(&config) != self.console.as_ref().map(|c| c.listen) {
            tracing::warn!(
                "console.listen changes take effect on restart; the console stays as it was"
            );
            config.console = running.console.clone();
        }
        let resolved = resolve(&config, &process_env)?;
        let running = &self.server.configured;
        let listener = if config.server.listen != running.listen {
            Some(bind(config.server.listen).await?)
        } else if config.server.header_read_timeout != running.header_read_timeout
            || config.server.request_timeout != running.request_timeout
        {
            tracing::warn!(
                "server timeouts change with server.listen or on restart; keeping the old ones"
            );
            None
        } else {
            None
        };
        let needs_sandbox = config.paystar.endpoint == Endpoint::Sandbox;
        let sandbox = if needs_sandbox && self.sandbox.is_none() {
            sandbox_for(&config).await?
        } else {
            None
        };
        let prepared = Self::prepare(
            &config,
            resolved,
            sandbox.as_ref().or(self.sandbox.as_ref()),
        )?;
        Ok(Candidate {
            config,
            prepared,
            listener,
            sandbox,
        })
    }

    /// Stops everything within one `grace` (`shutdown_grace`): intake first
    /// (webhooks answer 503 with `Retry-After` from now on, so that providers
    /// send them again to whichever instance runs next), then the pipeline
    /// (in-flight requests get the grace), the lease, and last the listeners,
    /// with what is left of the grace but at least a second.
    async fn stop_all(self, pipeline: Option<Pipeline>, keeper: Option<Keeper>, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.server_state.drain();
        if let Some(pipeline) = pipeline {
            pipeline.stop().await;
        }
        if let Some(keeper) = keeper {
            keeper.stop().await;
        }
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        let listeners = async {
            if let Some(console) = self.console {
                console.listening.stop().await;
            }
            self.server.listening.stop().await;
        };
        if tokio::time::timeout(left, listeners).await.is_err() {
            tracing::warn!(
                "http connections still open at the end of shutdown_grace; closing them"
            );
        }
        if let Some(sandbox) = self.sandbox {
            sandbox.stop().await;
        }
    }
}

/// A reloaded configuration, ready to swap in.
struct Candidate {
    config: Config,
    prepared: Prepared,
    listener: Option<tokio::net::TcpListener>,
    sandbox: Option<RunningSandbox>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stage_that_panics_or_fails_is_reported_with_its_name_and_one_that_stops_is_not() {
        let tracker = TaskTracker::new();
        let (tx, mut rx) = mpsc::channel(4);
        supervise(&tracker, "worker", tx.clone(), async {
            let items: Vec<u8> = Vec::new();
            let _ = items[3]; // an index out of bounds: a bug, not an error
            Ok(())
        });
        supervise(&tracker, "poller", tx.clone(), async {
            Err(anyhow::anyhow!("the database is gone"))
        });
        supervise(&tracker, "intake", tx, async { Ok(()) });
        tracker.close();
        tracker.wait().await;
        let mut failures = Vec::new();
        while let Ok(failure) = rx.try_recv() {
            failures.push((failure.stage, format!("{:#}", failure.error)));
        }
        failures.sort();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert_eq!(failures[0].0, "poller");
        assert_eq!(failures[0].1, "the database is gone");
        assert_eq!(failures[1].0, "worker");
        assert!(
            failures[1].1.starts_with("panicked: index out of bounds"),
            "{failures:?}"
        );
    }
}
