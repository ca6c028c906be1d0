//! `GET /health` and `GET /metrics`.

use super::ServerState;
use crate::clock::now_ms;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Retrying for longer than this makes `/health` fail.
pub const DELIVERY_FAILING_AFTER: Duration = Duration::from_secs(15 * 60);

/// Everything `/health` and `/metrics` need, read in one store call.
struct Snapshot {
    writable: Result<(), String>,
    counts: crate::store::Counts,
    oldest_retrying: Option<i64>,
    last_poll_ms: Option<i64>,
    unmatched: u64,
    /// Business units whose delivery a Payroc pause holds back.
    paused: u64,
}

async fn snapshot(state: &ServerState) -> Result<Snapshot, String> {
    let rule = state.live().payroc.as_ref().and_then(|p| p.pause.clone());
    state
        .store
        .call(move |s| -> Result<Snapshot, crate::store::StateError> {
            Ok(Snapshot {
                writable: s.check_writable().map_err(|e| e.to_string()),
                counts: s.counts()?,
                oldest_retrying: s.oldest_retrying_since()?,
                last_poll_ms: s
                    .poll_cursor(crate::providers::lotuspay::PROVIDER)?
                    .and_then(|c| c.last_success_ms),
                unmatched: s.unmatched_count()?,
                paused: crate::providers::payroc::current_pause(rule.as_ref(), s)?
                    .map_or(0, |p| p.business_units.len() as u64),
            })
        })
        .await
        .map_err(|e| e.to_string())
}

/// 503 for a state database that cannot be read.
fn unreadable(err: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("state database unreadable: {err}\n"),
    )
        .into_response()
}

pub async fn health(State(state): State<ServerState>) -> Response {
    let snap = match snapshot(&state).await {
        Ok(snap) => snap,
        Err(err) => return unreadable(&err),
    };
    let mut problems = Vec::new();
    if let Err(err) = &snap.writable {
        problems.push(format!("state database not writable: {err}"));
    }
    if let Some(since) = snap.oldest_retrying {
        let minutes = (now_ms() - since) / 60_000;
        if minutes as u64 * 60 > DELIVERY_FAILING_AFTER.as_secs() {
            problems.push(format!(
                "delivery to Paystar failing for {minutes} minutes ({} customers retrying)",
                snap.counts.retrying
            ));
        }
    }
    if let Some(limit) = state.live().poll_behind_after {
        // Never polled yet: counted from start, so a fresh daemon is not "behind".
        let last = snap.last_poll_ms.unwrap_or(state.started_ms);
        let behind = now_ms() - last > limit.as_millis() as i64;
        if behind {
            problems.push("the LotusPay poller is behind: no successful poll recently".into());
        }
    }
    if problems.is_empty() {
        match state.metrics.reload_failure() {
            // Still healthy: the running configuration stays in force.
            Some(failure) => (
                StatusCode::OK,
                format!("ok\nthe last reload was refused; the previous configuration stays in force:\n{failure}\n"),
            )
                .into_response(),
            None => (StatusCode::OK, "ok\n").into_response(),
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<ServerState>) -> Response {
    let snap = match snapshot(&state).await {
        Ok(snap) => snap,
        Err(err) => return unreadable(&err),
    };
    let c = &snap.counts;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge(
        "paystar_sync_queue",
        "Customers waiting to be sent, by state.",
        &[
            ("{state=\"pending\"}", c.pending),
            ("{state=\"retrying\"}", c.retrying),
            ("{state=\"parked\"}", c.parked),
            ("{state=\"held\"}", c.held),
        ],
    );
    gauge(
        "paystar_sync_customers",
        "Customers the manifests hold.",
        &[("", c.desired)],
    );
    gauge(
        "paystar_sync_customers_removed",
        "Customers that left every manifest.",
        &[("", c.removed)],
    );
    gauge(
        "paystar_sync_acknowledged",
        "Customers Paystar acknowledged.",
        &[("", c.acknowledged)],
    );
    gauge(
        "paystar_sync_provider_events_unmatched",
        "Provider events that named no known customer.",
        &[("", snap.unmatched)],
    );
    gauge(
        "paystar_sync_paused_business_units",
        "Business units whose delivery a Payroc pause holds back.",
        &[("", snap.paused)],
    );
    if let Some(last) = snap.last_poll_ms {
        let lag = ((now_ms() - last).max(0) / 1000) as u64;
        gauge(
            "paystar_sync_poll_lag_seconds",
            "Seconds since the last successful LotusPay poll.",
            &[("{provider=\"lotuspay\"}", lag)],
        );
    }
    let _ = writeln!(
        out,
        "# HELP paystar_sync_webhooks_total Webhooks answered, by provider and outcome.\n# TYPE paystar_sync_webhooks_total counter"
    );
    for ((provider, outcome), n) in state.metrics.webhooks.snapshot() {
        let _ = writeln!(
            out,
            "paystar_sync_webhooks_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP paystar_sync_events_delivered_total Events Paystar acknowledged since start.\n# TYPE paystar_sync_events_delivered_total counter\npaystar_sync_events_delivered_total {}",
        state.metrics.delivery.delivered.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP paystar_sync_delivery_failures_total Failed deliveries since start, by what happened next.\n# TYPE paystar_sync_delivery_failures_total counter\npaystar_sync_delivery_failures_total{{outcome=\"retry\"}} {}\npaystar_sync_delivery_failures_total{{outcome=\"parked\"}} {}",
        state.metrics.delivery.retries.load(Ordering::Relaxed),
        state.metrics.delivery.parked.load(Ordering::Relaxed)
    );
    let m = &state.metrics;
    let _ = writeln!(
        out,
        "# HELP paystar_sync_scans_total Manifest scans committed since start.\n# TYPE paystar_sync_scans_total counter\npaystar_sync_scans_total {}",
        m.scans.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP paystar_sync_config_reloads_total Configuration reloads since start, by outcome.\n# TYPE paystar_sync_config_reloads_total counter\npaystar_sync_config_reloads_total{{outcome=\"ok\"}} {}\npaystar_sync_config_reloads_total{{outcome=\"failed\"}} {}",
        m.reloads_ok.load(Ordering::Relaxed),
        m.reloads_failed.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP paystar_sync_scan_duration_seconds How long the last committed manifest scan took.\n# TYPE paystar_sync_scan_duration_seconds gauge\npaystar_sync_scan_duration_seconds {:.3}",
        state.metrics.scan_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
