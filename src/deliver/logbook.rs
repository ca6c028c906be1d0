//! What delivery tells the operator, and the one thing it keeps: retries said
//! once a minute with a count, the endpoint's pause and recovery, a Payroc
//! pause, and the learned concurrency (the gauge, a line on a big move, the
//! state now and then).

use super::circuit::Change;
use super::worker::DeliveryCounters;
use crate::providers::payroc::Pause;
use crate::store::SharedStore;
use std::time::Duration;

/// Where the learned concurrency is kept in the state (a restart or a new
/// leader starts from it).
pub const LEARNED_KEY: &str = "delivery.concurrency.learned";

/// How an adaptive limit's moves are told: the gauge always, a log line when
/// it moved by more than a quarter since the last, the state at most every 10 s.
#[derive(Default)]
pub(super) struct Learning {
    said: Option<usize>,
    kept_at: Option<tokio::time::Instant>,
}

impl Learning {
    pub(super) fn moved(
        &mut self,
        counters: &DeliveryCounters,
        store: &SharedStore,
        limit: usize,
        now: tokio::time::Instant,
    ) {
        counters.limit.set(limit as i64);
        let said = self.said.get_or_insert(limit);
        if limit.abs_diff(*said) * 4 > *said {
            tracing::info!(limit, was = *said, "adaptive delivery concurrency moved");
            *said = limit;
        }
        if self
            .kept_at
            .is_none_or(|at| now - at >= Duration::from_secs(10))
        {
            self.kept_at = Some(now);
            let store = store.clone();
            tokio::spawn(async move {
                let kept = store
                    .call(move |s| s.set_meta(LEARNED_KEY, &limit.to_string()))
                    .await;
                if let Err(err) = kept {
                    tracing::debug!(error = %err, "could not keep the learned concurrency");
                }
            });
        }
    }
}

/// Retries said at most once a minute, counted with the last reason: a
/// failure that every customer meets is one line a minute, not one per customer.
#[derive(Default)]
pub(super) struct RetryLog {
    unsaid: u64,
    said_at: Option<tokio::time::Instant>,
}

impl RetryLog {
    const EVERY: Duration = Duration::from_secs(60);

    pub(super) fn note(&mut self, reason: &str, now: tokio::time::Instant) {
        self.unsaid += 1;
        if self.said_at.is_none_or(|at| now - at >= Self::EVERY) {
            tracing::warn!(
                customers = self.unsaid,
                last_error = %reason,
                "deliveries failed and will be retried on paystar.retry.schedule (said at most once a minute; `paystar-sync status` lists them)"
            );
            self.unsaid = 0;
            self.said_at = Some(now);
        }
    }
}

pub(super) fn log_heal(change: Change) {
    if let Change::Closed { after } = change {
        tracing::info!(paused_for = ?after, "Paystar answers again; delivery resumed");
    }
}

pub(super) fn log_pause(pause: Option<&Pause>) {
    match pause {
        Some(p) => {
            tracing::warn!(business_units = %p.business_units.join(","), cause = %p.cause, "delivery paused (providers.payroc.pause); changes stay queued")
        }
        None => {
            tracing::info!("delivery resumed: no Payroc processing account is in a pausing status")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_said_once_a_minute_with_the_count_since_the_last_line() {
        let mut log = RetryLog::default();
        let t0 = tokio::time::Instant::now();
        log.note("HTTP 503", t0);
        assert_eq!((log.unsaid, log.said_at), (0, Some(t0)));
        for _ in 0..10_000 {
            log.note("HTTP 503", t0 + Duration::from_secs(30));
        }
        assert_eq!(log.unsaid, 10_000);
        log.note("HTTP 503", t0 + RetryLog::EVERY);
        assert_eq!(log.unsaid, 0);
    }
}
