//! Turns folder changes and the rescan interval into committed scans.

use super::{PassError, PassOptions, traced_pass};
use crate::config::Config;
use crate::manifest::watch::FolderWatch;
use crate::metrics::Metrics;
use crate::scan::Scan;
use crate::store::SharedStore;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn log_scan(scan: &Scan) {
    match &scan.guard {
        Some(trip) if scan.first_import => tracing::warn!(
            reason = %trip,
            "first import: unenrolls held for approval; {}",
            crate::report::held_advice(true)
        ),
        Some(trip) => {
            tracing::error!(reason = %trip, "mass unenroll held for approval; review `paystar-sync status`, then run `paystar-sync approve`")
        }
        None => {}
    }
    for error in scan.new_errors() {
        tracing::warn!(%error, "manifest error; the customer keeps its previous state");
    }
    for warning in &scan.warnings {
        tracing::warn!(%warning, "manifest warning");
    }
    let s = &scan.stats;
    let eventful =
        s.files_parsed + s.files_failed + s.files_deleted + s.keys_changed + s.keys_removed > 0;
    if eventful {
        tracing::info!(
            files = s.files,
            parsed = s.files_parsed,
            deferred = s.files_deferred,
            changed = s.keys_changed,
            removed = s.keys_removed,
            errors = scan.errors.len(),
            "scan committed"
        );
    } else {
        tracing::debug!(
            files = s.files,
            deferred = s.files_deferred,
            errors = scan.errors.len(),
            "scan committed; nothing changed"
        );
    }
}

/// Turns folder changes and the rescan interval into committed scans.
pub struct Intake {
    pub config: Config,
    pub store: SharedStore,
    pub wake: Arc<tokio::sync::Notify>,
    /// Scan counts and durations (for `/metrics`).
    pub metrics: Arc<Metrics>,
}

impl Intake {
    pub async fn run(
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

    pub fn watch(
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
        let options = PassOptions {
            settle_ms,
            busy,
            ..PassOptions::default()
        };
        let result = traced_pass(&self.store, config, options, "watch").await;
        match result {
            Ok(scan) => {
                self.metrics
                    .scan_committed(started.elapsed().as_millis() as u64, scan.stats.files);
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
