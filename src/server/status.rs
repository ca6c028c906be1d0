//! `GET /health` and `GET /metrics`.

use super::ServerState;
use crate::clock::now_ms;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Retrying for longer than this makes `/health` fail.
pub const DELIVERY_FAILING_AFTER: Duration = Duration::from_secs(15 * 60);

/// Whether delivery counts as failing: a key has retried, in whole minutes,
/// for longer than [`DELIVERY_FAILING_AFTER`]. `/health` and the console agree.
pub fn delivery_failing(oldest_retrying_since_ms: i64, now_ms: i64) -> bool {
    let minutes = (now_ms - oldest_retrying_since_ms) / 60_000;
    minutes as u64 * 60 > DELIVERY_FAILING_AFTER.as_secs()
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

/// `/health` and `/metrics` answer within this long, whatever the state
/// database does (SPEC §9).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Since when the state database has left a status read unanswered: while one
/// has waited longer than [`ANSWER_WITHIN`], later requests answer 503 at once
/// instead of queueing more reads behind it.
#[derive(Debug, Default)]
pub struct StateProbe {
    since: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl StateProbe {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        self.since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stuck_for(&self, now: tokio::time::Instant) -> Option<Duration> {
        self.lock()
            .map(|since| now - since)
            .filter(|waited| *waited >= ANSWER_WITHIN)
    }

    fn began(&self, now: tokio::time::Instant) {
        self.lock().get_or_insert(now);
    }

    fn answered(&self) {
        *self.lock() = None;
    }
}

/// Why there is no snapshot.
enum Unavailable {
    /// The database answered with an error.
    Unreadable(String),
    /// It has not answered for this long.
    NotAnswering(Duration),
}

impl Unavailable {
    fn response(&self) -> Response {
        let text = match self {
            Unavailable::Unreadable(err) => format!("state database unreadable: {err}\n"),
            Unavailable::NotAnswering(waited) => format!(
                "state database not answering for {} s\n",
                waited.as_secs().max(1)
            ),
        };
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

/// Reads the snapshot, or gives up after [`ANSWER_WITHIN`] (the read goes on
/// and clears the probe when the database answers).
async fn snapshot(state: &ServerState) -> Result<Snapshot, Unavailable> {
    let probe = state.probe.clone();
    let now = tokio::time::Instant::now();
    if let Some(waited) = probe.stuck_for(now) {
        return Err(Unavailable::NotAnswering(waited));
    }
    probe.began(now);
    let read = {
        let state = state.clone();
        let probe = probe.clone();
        tokio::spawn(async move {
            let read = read_snapshot(&state).await;
            probe.answered();
            read
        })
    };
    match tokio::time::timeout(ANSWER_WITHIN, read).await {
        Ok(Ok(read)) => read.map_err(Unavailable::Unreadable),
        Ok(Err(join)) => Err(Unavailable::Unreadable(format!(
            "the status read failed: {join}"
        ))),
        Err(_) => Err(Unavailable::NotAnswering(
            probe
                .stuck_for(tokio::time::Instant::now())
                .unwrap_or(ANSWER_WITHIN),
        )),
    }
}

async fn read_snapshot(state: &ServerState) -> Result<Snapshot, String> {
    let rule = state.live().payroc.as_ref().and_then(|p| p.pause.clone());
    state
        .store
        .read(move |s| -> Result<Snapshot, crate::store::StateError> {
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

pub async fn health(State(state): State<ServerState>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let snap = match snapshot(&state).await {
        Ok(snap) => snap,
        Err(why) => return why.response(),
    };
    let mut problems = Vec::new();
    if let Err(err) = &snap.writable {
        problems.push(format!("state database not writable: {err}"));
    }
    // A standby is healthy while it can record webhooks: delivery and polls
    // are the leader's, and its /health speaks for them.
    let role = state.leadership.role();
    let acting = role != crate::ha::Role::Standby;
    if let Some(since) = snap.oldest_retrying.filter(|_| acting) {
        let now = now_ms();
        if delivery_failing(since, now) {
            let minutes = (now - since) / 60_000;
            problems.push(format!(
                "delivery to Paystar failing for {minutes} minutes ({} customers retrying)",
                snap.counts.retrying
            ));
        }
    }
    if let Some(problem) = state.metrics.delivery.endpoint.problem().filter(|_| acting) {
        let minutes = (now_ms() - problem.since_ms).max(0) / 60_000;
        problems.push(format!(
            "delivery paused for {minutes} minutes: {}; nothing is parked for it, and delivery resumes by itself once Paystar answers",
            problem.reason
        ));
    }
    if let Some(limit) = state.live().poll_behind_after.filter(|_| acting) {
        // Never polled yet: counted from start, so a fresh daemon is not "behind".
        let last = snap.last_poll_ms.unwrap_or(state.started_ms);
        let behind = now_ms() - last > limit.as_millis() as i64;
        if behind {
            problems.push("the LotusPay poller is behind: no successful poll recently".into());
        }
    }
    // With a lease, every answer names the role and the leader (SPEC §12).
    let mut roles = match role {
        crate::ha::Role::Single => String::new(),
        role => format!(
            "role: {}\nleader: {}\n",
            role.as_str(),
            state
                .leadership
                .leader()
                .unwrap_or_else(|| "none (the lease ran out)".to_owned())
        ),
    };
    roles.push_str(&format!("version: {}\n", crate::build_info::describe()));
    // Not a failure (nothing is wrong with delivery), but said where people look.
    if state.metrics.no_manifests() {
        roles.push_str(
            "warning: manifests.dir holds no manifests (*.yaml, *.yml, *.csv, *.tsv, *.xlsx)\n",
        );
    }
    if problems.is_empty() {
        match state.metrics.reload_failure() {
            // Still healthy: the running configuration stays in force.
            Some(failure) => (
                StatusCode::OK,
                format!("ok\n{roles}the last reload was refused; the previous configuration stays in force:\n{failure}\n"),
            )
                .into_response(),
            None => (StatusCode::OK, format!("ok\n{roles}")).into_response(),
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n{roles}", problems.join("\n")),
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<ServerState>, headers: HeaderMap) -> Response {
    let snap = match snapshot(&state).await {
        Ok(snap) => snap,
        Err(why) => return why.response(),
    };
    let c = &snap.counts;
    let gauges = crate::metrics::StateGauges {
        pending: c.pending,
        retrying: c.retrying,
        parked: c.parked,
        held: c.held,
        customers: c.desired,
        removed: c.removed,
        acknowledged: c.acknowledged,
        unmatched: snap.unmatched,
        paused_business_units: snap.paused,
        poll_lag_seconds: snap
            .last_poll_ms
            .map(|last| ((now_ms() - last).max(0) / 1000) as u64),
    };
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let body = state.metrics.render(&gauges, openmetrics);
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
