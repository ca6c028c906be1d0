//! The daemon's part in the election (SPEC §12): leading after a takeover,
//! stepping down after the lease is lost or a write was fenced.

use super::{Daemon, Pipeline, StageFailure};
use crate::app::wiring::resolve;
use crate::config::{Config, process_env};
use crate::ha::{Keeper, RoleChange};
use anyhow::Context;
use tokio::sync::mpsc;

impl Daemon {
    /// This instance took the lease under `epoch`: its writes are fenced to it,
    /// then the pipeline starts with a full scan. A fenced write during the
    /// start steps down again.
    pub(super) async fn lead(
        &self,
        config: &Config,
        epoch: i64,
        keeper: &Keeper,
        failures: &mut mpsc::Receiver<StageFailure>,
    ) -> anyhow::Result<Option<Pipeline>> {
        self.store
            .call(move |s| s.fence_writes(Some(epoch)))
            .await
            .context("cannot fence this instance's writes to its lease")?;
        match self.resume(config).await {
            Ok(pipeline) => {
                tracing::info!(epoch, "leading: scanned the manifests; delivering");
                Ok(Some(pipeline))
            }
            Err(err) if fenced(&err) => {
                keeper.step_down("its startup scan found its writes fenced".to_owned());
                let mut none = None;
                self.step_down(&mut none, keeper, failures).await?;
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Starts the pipeline again (after a takeover or a reconnect), with a
    /// full scan; the receivers and the console are in force already.
    pub(super) async fn resume(&self, config: &Config) -> anyhow::Result<Pipeline> {
        let mut prepared = Self::prepare(
            config,
            resolve(config, &process_env)?,
            self.sandbox.as_ref(),
        )?;
        prepared.resolved.payroc_receiver = None;
        prepared.resolved.smarterpay = None;
        self.start(config, prepared).await
    }

    /// Stops leading: the pipeline stops (requests on the wire may finish
    /// within the grace; nothing new starts, the gate is closed), the writer is
    /// unfenced for the standby's webhooks, and the keeper looks again. Stages
    /// that do not stop in time end the process, to be restarted clean.
    pub(super) async fn step_down(
        &self,
        pipeline: &mut Option<Pipeline>,
        keeper: &Keeper,
        failures: &mut mpsc::Receiver<StageFailure>,
    ) -> anyhow::Result<()> {
        if let Some(pipeline) = pipeline.take()
            && !pipeline.stop().await
        {
            // They wait on a database that does not answer: their writes are
            // fenced and the lease gate is closed, so they are left to end on
            // their own, and new sessions take their place.
            return Err(StagesStuck.into());
        }
        // What the stopped stages reported: refused writes are expected now.
        while let Ok(failure) = failures.try_recv() {
            if !fenced(&failure.error) {
                return Err(failure
                    .error
                    .context(format!("stage `{}` failed", failure.stage)));
            }
        }
        self.set_poll_behind_after(None);
        self.store
            .call(|s| s.fence_writes(None))
            .await
            .context("cannot unfence this instance's writes")?;
        tracing::info!(
            "standby: serving webhooks, /health and /metrics; waiting for the leader lease"
        );
        keeper.ready();
        Ok(())
    }
}

/// The keeper's next change of role; never, without a keeper.
pub(super) async fn next_change(keeper: &mut Option<Keeper>) -> Option<RoleChange> {
    match keeper {
        Some(keeper) => keeper.next_change().await,
        None => std::future::pending().await,
    }
}

/// The store errors in `err`'s chain: a store error itself, or one inside a
/// scan's or a pass's error (those are `transparent`, so the store error is not
/// a link of the chain of its own).
fn state_errors(err: &anyhow::Error) -> impl Iterator<Item = &crate::store::StateError> {
    use crate::app::PassError;
    use crate::scan::ScanError;
    use crate::store::{OpenError, StateError};
    err.chain().filter_map(|e| {
        e.downcast_ref::<StateError>()
            .or_else(|| match e.downcast_ref::<ScanError>() {
                Some(ScanError::Store(s)) => Some(s),
                _ => None,
            })
            .or_else(|| match e.downcast_ref::<PassError>() {
                Some(PassError::Store(s) | PassError::Scan(ScanError::Store(s))) => Some(s),
                _ => None,
            })
            .or_else(|| match e.downcast_ref::<OpenError>() {
                Some(OpenError::Open { source, .. }) => Some(source),
                _ => None,
            })
    })
}

/// Whether `err` is a write the lease's fence refused, from any stage.
pub(super) fn fenced(err: &anyhow::Error) -> bool {
    state_errors(err).any(crate::store::StateError::is_fenced)
}

/// Stages still busy after the lease was lost: stuck on a session that does
/// not answer (a silent partition).
#[derive(Debug, thiserror::Error)]
#[error("stages still wait on the state database after the leader lease was lost")]
pub(super) struct StagesStuck;

/// Whether `err` is the loss of the database session, from any stage, or
/// stages stuck on one.
pub(super) fn connection_lost(err: &anyhow::Error) -> bool {
    err.downcast_ref::<StagesStuck>().is_some()
        || state_errors(err).any(crate::store::StateError::is_connection_lost)
}
