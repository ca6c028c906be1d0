//! Wiring: builds the stages from a [`Config`] and runs them for `apply` and the
//! daemon. Owns the cancellation tokens; nothing below it reads the clock's
//! wall time for decisions except through its callers' parameters.

use crate::config::{Config, ConfigError, Endpoint, Secret};
use crate::deliver::{PaystarClient, Totals, Until, Worker, WorkerSettings};
use crate::sandbox::{RunningSandbox, Sandbox};
use crate::scan::{Scan, ScanSettings, scan};
use crate::store::{SharedStore, Store};
use anyhow::Context;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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
                    .map_err(|problem| ConfigError {
                        path: config.path.clone(),
                        problems: vec![problem],
                    })?,
                None => {
                    return Err(ConfigError {
                        path: config.path.clone(),
                        problems: vec![
                            "paystar: set api_key_env or api_key_file: sending to Paystar needs an API key".into(),
                        ],
                    }
                    .into());
                }
            };
            Ok((PaystarClient::new(url, key, timeout)?, None))
        }
    }
}

pub fn worker_settings(config: &Config) -> WorkerSettings {
    WorkerSettings {
        concurrency: config.paystar.concurrency,
        schedule: config.paystar.retry_schedule.clone(),
        on_removal: config.manifests.on_removal,
        grace: Duration::from_secs(10),
    }
}

/// Scans the manifests and commits the result: the one path every change takes.
pub async fn scan_and_commit(config: &Config, store: &SharedStore) -> anyhow::Result<Scan> {
    let dir = config.manifests.dir.clone();
    let parse = config.parse_options();
    let on_removal = config.manifests.on_removal;
    store
        .call(move |s| -> anyhow::Result<Scan> {
            let settings = ScanSettings {
                dir: &dir,
                parse: &parse,
                on_removal,
                now_ms: now_ms(),
            };
            let scan = scan(s, &settings).context("cannot scan the manifests")?;
            scan.commit(s)
                .context("cannot commit the scan to the state database")?;
            Ok(scan)
        })
        .await
}

/// What one `apply` did.
pub struct ApplyReport {
    pub scan: Scan,
    pub totals: Totals,
    pub parked: u64,
    /// Keys still queued (retrying) when the time limit ran out.
    pub waiting: u64,
}

/// One pass: scan, commit, send until everything is acknowledged or parked, or
/// `timeout` runs out (what is left stays queued).
pub async fn apply(config: &Config, timeout: Duration) -> anyhow::Result<ApplyReport> {
    let (client, sandbox) = paystar(config).await?;
    let store = SharedStore::new(Store::open(&config.state.path)?);
    let scan = scan_and_commit(config, &store).await?;
    for warning in &scan.warnings {
        tracing::warn!(%warning, "manifest warning");
    }
    let worker = Worker::new(store.clone(), client, worker_settings(config));
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
    let counts = store.call(|s| s.counts()).await?;
    if let Some(sandbox) = sandbox {
        sandbox.stop().await;
    }
    Ok(ApplyReport {
        scan,
        totals,
        parked: counts.parked,
        waiting: counts.pending + counts.retrying,
    })
}
