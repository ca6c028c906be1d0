//! The daemon's periodic provider stages: the LotusPay poller and the Payroc
//! subscription keeper. Both log failures and try again; neither ever stops
//! the daemon.

use crate::clock::now_ms;
use crate::config::Secret;
use crate::store::SharedStore;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Keeps the declared Payroc subscription existing, matching and enabled: at
/// start and then hourly. Failures are logged and tried again; they never stop
/// the daemon.
pub async fn payroc_subscription_loop(
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

/// Polls LotusPay on its cron schedule until cancelled; a failed poll is logged
/// and tried again at the next tick, and a long gap raises an alert.
pub async fn poll_loop(
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
        let wait = (next - crate::clock::now_utc())
            .to_std()
            .unwrap_or_default();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let span = tracing::info_span!(
            "paystar.poll",
            otel.name = "paystar.poll",
            otel.kind = "client",
            provider = PROVIDER,
            listed = tracing::field::Empty,
            new = tracing::field::Empty,
            stops = tracing::field::Empty,
            unmatched = tracing::field::Empty,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let polled = poller
            .poll_once(&store, now_ms())
            .instrument(span.clone())
            .await;
        match &polled {
            Ok(report) => {
                span.record("listed", report.listed);
                span.record("new", report.new);
                span.record("stops", report.stops);
                span.record("unmatched", report.unmatched);
                span.record("outcome", "done");
            }
            Err(_) => {
                span.record("outcome", "failed");
                span.record("otel.status_code", "error");
            }
        }
        match polled {
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
