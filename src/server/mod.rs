//! The daemon's HTTP server (`server.listen`): `GET /health` and `GET /metrics`
//! (Prometheus text format). Bodies are limited to 1 MiB.

use crate::clock::now_ms;
use crate::store::SharedStore;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Retrying for longer than this makes `/health` fail.
pub const DELIVERY_FAILING_AFTER: Duration = Duration::from_secs(15 * 60);

/// What the server reads; the counters are shared with the stages that move them.
#[derive(Clone)]
pub struct ServerState {
    pub store: SharedStore,
    /// Delivery outcomes since start.
    pub delivery: Arc<crate::deliver::DeliveryCounters>,
    /// How long the last committed scan took, in milliseconds.
    pub scan_ms: Arc<AtomicU64>,
    /// After this long without a successful LotusPay poll (counted from start
    /// until the first one), the poller is behind; `None` when none runs.
    pub poll_behind_after: Option<Duration>,
    pub started_ms: i64,
    /// The Payroc receiver, when `providers.payroc.webhook_secret_*` is configured.
    pub payroc: Option<crate::providers::payroc::PayrocReceiver>,
    /// The SmarterPay receiver, when `providers.smarterpay` is configured.
    pub smarterpay: Option<crate::providers::smarterpay::SmarterPay>,
    /// Wakes delivery after a new stop signal.
    pub wake: Arc<tokio::sync::Notify>,
    /// Webhooks answered, by provider and outcome.
    pub webhooks: Arc<WebhookCounts>,
}

/// Webhook answers by provider and outcome, for `/metrics`.
#[derive(Default)]
pub struct WebhookCounts(
    std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
);

impl WebhookCounts {
    fn count(&self, provider: &'static str, outcome: &'static str) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry((provider, outcome)).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<((&'static str, &'static str), u64)> {
        let counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/webhooks/smarterpay", axum::routing::post(smarterpay))
        .route("/webhooks/payroc", axum::routing::post(payroc))
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .with_state(state)
}

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
    let rule = state.payroc.as_ref().and_then(|p| p.pause.clone());
    state
        .store
        .call(move |s| -> Result<Snapshot, crate::store::SqlError> {
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

async fn health(State(state): State<ServerState>) -> Response {
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
    if let Some(limit) = state.poll_behind_after {
        // Never polled yet: counted from start, so a fresh daemon is not "behind".
        let last = snap.last_poll_ms.unwrap_or(state.started_ms);
        let behind = now_ms() - last > limit.as_millis() as i64;
        if behind {
            problems.push("the LotusPay poller is behind: no successful poll recently".into());
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

/// A request header by lower-case name, as text.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Records webhook events in the ledger and answers: 200 only once they are
/// durably stored (the providers retry anything else), waking delivery when a
/// new event may have changed what to send (a stop, fields, a pause).
async fn record(
    state: &ServerState,
    provider: &'static str,
    events: Vec<crate::store::ProviderEventWrite>,
) -> Response {
    let acts: Vec<bool> = events
        .iter()
        .map(|e| {
            use crate::store::EventOutcome::{Fields, Merchant, Stop};
            matches!(e.outcome, Stop | Fields | Merchant)
        })
        .collect();
    match state
        .store
        .call(move |s| s.record_provider_events(&events, now_ms()))
        .await
    {
        Ok(fresh) => {
            state.webhooks.count(provider, "recorded");
            if fresh.iter().zip(&acts).any(|(new, acts)| *new && *acts) {
                state.wake.notify_one();
            }
            (StatusCode::OK, "ok\n").into_response()
        }
        Err(err) => {
            state.webhooks.count(provider, "not_recorded");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not recorded: {err}\n"),
            )
                .into_response()
        }
    }
}

/// Refuses a body whose Content-Type is not one of `accepted`.
fn wrong_content_type(
    state: &ServerState,
    provider: &'static str,
    headers: &HeaderMap,
    accepted: &[&str],
) -> Option<Response> {
    let content_type = header_text(headers, "content-type").unwrap_or_default();
    if accepted.iter().any(|a| content_type.starts_with(a)) {
        return None;
    }
    state.webhooks.count(provider, "malformed");
    let message = format!("Content-Type must be {}\n", accepted.join(" or "));
    Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response())
}

async fn payroc(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::providers::payroc::{PROVIDER, Verdict};
    let Some(receiver) = &state.payroc else {
        return (
            StatusCode::NOT_FOUND,
            "providers.payroc.webhook_secret_env is not configured\n",
        )
            .into_response();
    };
    if let Some(refused) = wrong_content_type(
        &state,
        PROVIDER,
        &headers,
        &["application/json", "application/cloudevents+json"],
    ) {
        return refused;
    }
    match receiver.receive(&|name| header_text(&headers, name), &body) {
        Verdict::Unauthorised => {
            state.webhooks.count(PROVIDER, "unauthorised");
            (StatusCode::UNAUTHORIZED, "wrong or missing Payroc-Secret\n").into_response()
        }
        Verdict::Malformed(reason) => {
            state.webhooks.count(PROVIDER, "malformed");
            (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
        }
        Verdict::Record(event) => record(&state, PROVIDER, vec![*event]).await,
    }
}

async fn smarterpay(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::providers::smarterpay::{PROVIDER, Verdict};
    let Some(receiver) = &state.smarterpay else {
        return (
            StatusCode::NOT_FOUND,
            "providers.smarterpay is not configured\n",
        )
            .into_response();
    };
    if let Some(refused) = wrong_content_type(&state, PROVIDER, &headers, &["application/json"]) {
        return refused;
    }
    match receiver.receive(&|name| header_text(&headers, name), &body) {
        Verdict::Unauthorised => {
            state.webhooks.count(PROVIDER, "unauthorised");
            let status = StatusCode::from_u16(498).expect("498 is a valid status");
            (status, "Token Invalid\n").into_response()
        }
        Verdict::Malformed(reason) => {
            state.webhooks.count(PROVIDER, "malformed");
            (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
        }
        Verdict::Unknown => {
            state.webhooks.count(PROVIDER, "unknown_kind");
            StatusCode::NO_CONTENT.into_response()
        }
        Verdict::Record {
            mut events,
            idempotency,
        } => {
            if let Some(key) = idempotency {
                events.push(crate::store::ProviderEventWrite {
                    provider: PROVIDER,
                    event_id: format!("idempotency:{key}"),
                    channel: "webhook",
                    event_type: "delivery".into(),
                    outcome: crate::store::EventOutcome::Ignored,
                    reason: "v2 delivery".into(),
                    key: None,
                    raw: String::new(),
                    fields: None,
                    merchant: None,
                });
            }
            record(&state, PROVIDER, events).await
        }
    }
}

async fn metrics(State(state): State<ServerState>) -> Response {
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
    for ((provider, outcome), n) in state.webhooks.snapshot() {
        let _ = writeln!(
            out,
            "paystar_sync_webhooks_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP paystar_sync_events_delivered_total Events Paystar acknowledged since start.\n# TYPE paystar_sync_events_delivered_total counter\npaystar_sync_events_delivered_total {}",
        state.delivery.delivered.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP paystar_sync_delivery_failures_total Failed deliveries since start, by what happened next.\n# TYPE paystar_sync_delivery_failures_total counter\npaystar_sync_delivery_failures_total{{outcome=\"retry\"}} {}\npaystar_sync_delivery_failures_total{{outcome=\"parked\"}} {}",
        state.delivery.retries.load(Ordering::Relaxed),
        state.delivery.parked.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP paystar_sync_scan_duration_seconds How long the last committed manifest scan took.\n# TYPE paystar_sync_scan_duration_seconds gauge\npaystar_sync_scan_duration_seconds {:.3}",
        state.scan_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
