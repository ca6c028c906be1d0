//! `POST /webhooks/payroc` and `POST /webhooks/smarterpay`: the providers
//! decide what a body means; this records it and answers.

use super::ServerState;
use crate::clock::now_ms;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

/// A request header by lower-case name, as text.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Once the daemon is stopping, a webhook is refused unread with 503 and
/// `Retry-After`: the provider sends it again, to whichever instance runs next,
/// instead of to a process that may end before recording it.
fn refused_while_stopping(state: &ServerState, provider: &'static str) -> Option<Response> {
    if !state.is_draining() {
        return None;
    }
    state.metrics.webhook(provider, "shutting_down");
    Some(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            "shutting down: send it again in a few seconds\n",
        )
            .into_response(),
    )
}

/// Counts a webhook's outcome, and puts it on the request's span.
fn count(state: &ServerState, provider: &'static str, outcome: &'static str) {
    state.metrics.webhook(provider, outcome);
    tracing::Span::current().record("outcome", outcome);
}

/// Runs one webhook handler inside its span, which ends with the answer's status.
async fn traced(
    provider: &'static str,
    headers: &HeaderMap,
    handle: impl std::future::Future<Output = Response>,
) -> Response {
    let span = crate::telemetry::webhook_span(provider, headers);
    let response = handle.instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
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
    let described: Vec<(String, &'static str)> = events
        .iter()
        .map(|e| (e.event_type.clone(), e.outcome.as_str()))
        .collect();
    match state
        .store
        .call(move |s| s.record_provider_events(&events, now_ms()))
        .await
    {
        Ok(fresh) => {
            if fresh.iter().any(|new| *new) {
                count(state, provider, "recorded");
                for ((event, outcome), _) in described.iter().zip(&fresh).filter(|(_, new)| **new) {
                    tracing::info!(provider, event = %event, outcome, "webhook event recorded");
                }
            } else {
                // A provider's retry, or an event already polled: a no-op.
                count(state, provider, "duplicate");
                tracing::debug!(provider, "duplicate webhook; already recorded");
            }
            if fresh.iter().zip(&acts).any(|(new, acts)| *new && *acts) {
                state.wake.notify_one();
            }
            (StatusCode::OK, "ok\n").into_response()
        }
        Err(err) => {
            count(state, provider, "not_recorded");
            tracing::error!(provider, error = %err, "cannot record a webhook; the provider will retry");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not recorded: the state database failed; try again\n",
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
    count(state, provider, "malformed");
    let message = format!("Content-Type must be {}\n", accepted.join(" or "));
    Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response())
}

pub async fn payroc(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let provider = crate::providers::payroc::PROVIDER;
    if let Some(refused) = refused_while_stopping(&state, provider) {
        return refused;
    }
    traced(provider, &headers, receive_payroc(state, &headers, body)).await
}

async fn receive_payroc(
    state: ServerState,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::providers::payroc::{PROVIDER, Verdict};
    let live = state.live();
    let Some(receiver) = &live.payroc else {
        return (
            StatusCode::NOT_FOUND,
            "providers.payroc.webhook_secret_env is not configured\n",
        )
            .into_response();
    };
    if let Some(refused) = wrong_content_type(
        &state,
        PROVIDER,
        headers,
        &["application/json", "application/cloudevents+json"],
    ) {
        return refused;
    }
    match receiver.receive(&|name| header_text(headers, name), &body) {
        Verdict::Unauthorised => {
            count(&state, PROVIDER, "unauthorised");
            (StatusCode::UNAUTHORIZED, "wrong or missing Payroc-Secret\n").into_response()
        }
        Verdict::Malformed(reason) => {
            count(&state, PROVIDER, "malformed");
            (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
        }
        Verdict::Record(event) => record(&state, PROVIDER, vec![*event]).await,
    }
}

pub async fn smarterpay(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let provider = crate::providers::smarterpay::PROVIDER;
    if let Some(refused) = refused_while_stopping(&state, provider) {
        return refused;
    }
    traced(
        provider,
        &headers,
        receive_smarterpay(state, &headers, body),
    )
    .await
}

async fn receive_smarterpay(
    state: ServerState,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::providers::smarterpay::{PROVIDER, Verdict};
    let live = state.live();
    let Some(receiver) = &live.smarterpay else {
        return (
            StatusCode::NOT_FOUND,
            "providers.smarterpay is not configured\n",
        )
            .into_response();
    };
    if let Some(refused) = wrong_content_type(&state, PROVIDER, headers, &["application/json"]) {
        return refused;
    }
    match receiver.receive(&|name| header_text(headers, name), &body) {
        Verdict::Unauthorised => {
            count(&state, PROVIDER, "unauthorised");
            let status = StatusCode::from_u16(498).expect("498 is a valid status");
            (status, "Token Invalid\n").into_response()
        }
        Verdict::Malformed(reason) => {
            count(&state, PROVIDER, "malformed");
            (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
        }
        Verdict::Unknown => {
            count(&state, PROVIDER, "unknown_kind");
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
