//! An instance that lost its PostgreSQL session (SPEC §9): it steps down (the
//! pipeline stops: nothing is sent without a state to record it in), `/health`
//! answers 503 because its reads fail, and the daemon reconnects with back-off,
//! never exiting for it. Once its sessions are back, its lease keeper looks at
//! the lease again, and leading starts the pipeline with a full scan, as at
//! start (an instance without a keeper starts it at once).

use super::{Daemon, Pipeline, StageFailure};
use crate::config::Config;
use crate::ha::Keeper;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Where reconnecting stands.
pub(super) struct Reconnect {
    since: Instant,
    attempts: u32,
    next: Instant,
    /// The sessions are back; the keeper looks at the lease at `next`.
    connected: bool,
}

impl Reconnect {
    fn starting(now: Instant) -> Self {
        Self {
            since: now,
            attempts: 0,
            next: now + Duration::from_secs(1),
            connected: false,
        }
    }

    /// When the next attempt is due.
    pub(super) fn next(&self) -> Instant {
        self.next
    }

    /// 1 s, 2 s, 4 s … up to [`MAX_WAIT`].
    fn wait(attempts: u32) -> Duration {
        Duration::from_secs(1u64 << attempts.min(5)).min(MAX_WAIT)
    }
}

/// A result of the daemon's loop that may be the loss of the session: that
/// loss steps the instance down and plans a reconnect instead of ending it.
pub(super) fn or_reconnect<T>(
    result: anyhow::Result<T>,
    keeper: Option<&Keeper>,
    reconnect: &mut Option<Reconnect>,
) -> anyhow::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if super::connection_lost(&err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "the state database session is lost: delivery stops, /health answers 503, and the daemon reconnects with back-off"
            );
            if let Some(keeper) = keeper {
                keeper.step_down("its database session was lost".to_owned());
            }
            reconnect.get_or_insert_with(|| Reconnect::starting(Instant::now()));
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

impl Daemon {
    /// A stage lost the session: stop the pipeline and plan the first attempt.
    pub(super) async fn lose_session(
        &self,
        failure: StageFailure,
        pipeline: &mut Option<Pipeline>,
        failures: &mut mpsc::Receiver<StageFailure>,
        keeper: Option<&Keeper>,
        reconnect: &mut Option<Reconnect>,
    ) {
        let error = failure
            .error
            .context(format!("stage `{}` failed", failure.stage));
        let _ = or_reconnect::<()>(Err(error), keeper, reconnect);
        if let Some(pipeline) = pipeline.take() {
            pipeline.stop().await;
        }
        // The other stages met the same loss.
        while failures.try_recv().is_ok() {}
    }

    /// One attempt: new sessions, then (without a keeper) the pipeline with a
    /// full scan, or (with one, one lease later) a new look at the lease. `Err`
    /// with the next plan while that is still to come.
    pub(super) async fn try_reconnect(
        &self,
        config: &Config,
        mut plan: Reconnect,
        keeper: Option<&Keeper>,
    ) -> anyhow::Result<Result<Option<Pipeline>, Reconnect>> {
        if plan.connected {
            if let Some(keeper) = keeper {
                keeper.ready();
            }
            return Ok(Ok(None));
        }
        let failed = match self.store.reconnect(&config.state).await {
            Ok(()) => match keeper {
                Some(_) => {
                    // A standby that kept its sessions may take the lease first:
                    // this instance looks again once a lease could have run out.
                    let wait = config.ha.as_ref().map_or(Duration::ZERO, |ha| ha.lease_ttl);
                    tracing::info!(
                        down_for = ?plan.since.elapsed(),
                        look_in = ?wait,
                        "reconnected to the state database; looking at the leader lease again after one lease"
                    );
                    plan.connected = true;
                    plan.next = Instant::now() + wait;
                    return Ok(Err(plan));
                }
                None => match self.resume(config).await {
                    Ok(pipeline) => {
                        tracing::info!(
                            down_for = ?plan.since.elapsed(),
                            "reconnected to the state database; scanned the manifests; delivering"
                        );
                        return Ok(Ok(Some(pipeline)));
                    }
                    Err(err) if super::connection_lost(&err) => err,
                    Err(err) => return Err(err),
                },
            },
            Err(err) => anyhow::Error::new(err),
        };
        plan.attempts += 1;
        let wait = Reconnect::wait(plan.attempts);
        plan.next = Instant::now() + wait;
        tracing::warn!(
            attempts = plan.attempts,
            down_for = ?plan.since.elapsed(),
            next_in = ?wait,
            error = format!("{failed:#}"),
            "the state database is still out of reach"
        );
        Ok(Err(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_doubling_to_thirty_seconds() {
        let waits: Vec<u64> = (0..8).map(|n| Reconnect::wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
