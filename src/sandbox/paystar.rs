//! A Paystar Events API simulator, as strict as the vendor page implies: the API
//! key header, a JSON envelope of exactly `eventType`, `businessUnitSlug` and
//! `payload`, `payload` a *string* holding a JSON object with the event's fields.
//! Accepted events are listed; faults, latency and a capacity (see
//! [`super::pushback`]) can be injected.

use super::pushback::{Capacity, Gate, Latency};
use super::timer::PreciseTimer;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// An event the simulator accepted.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub event_type: String,
    pub business_unit_slug: String,
    /// The payload string as sent.
    pub payload: String,
    /// When the request arrived (Unix milliseconds), before any latency.
    pub received_ms: i64,
}

impl Accepted {
    /// The payload, parsed.
    pub fn payload_json(&self) -> Value {
        serde_json::from_str(&self.payload).expect("accepted payloads are JSON")
    }
}

/// An injected fault: the next `count` requests get `status` (after `delay_ms`),
/// or never get an answer when `hang` is set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Fault {
    #[serde(default)]
    pub status: u16,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub retry_after: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub hang: bool,
}

fn one() -> u32 {
    1
}

struct SimState {
    /// The latest accepted events, at most `keep` of them.
    accepted: VecDeque<Accepted>,
    keep: usize,
    /// Tells waiters how many events were accepted so far (kept or not).
    accepted_count: tokio::sync::watch::Sender<usize>,
    faults: VecDeque<Fault>,
    latency: Latency,
    requests: u64,
    /// Requests being answered right now, in total and per customer.
    active: usize,
    active_keys: HashMap<String, usize>,
    max_active: usize,
    /// Times a request arrived while another one for the same customer was open.
    overlaps: u64,
    /// When the simulator refuses (429 or 503 at once).
    gate: Gate,
    refused: u64,
    /// Refusals per customer.
    refused_keys: HashMap<String, u32>,
}

impl Default for SimState {
    fn default() -> Self {
        Self {
            accepted: VecDeque::new(),
            keep: PaystarSim::KEEP,
            accepted_count: tokio::sync::watch::channel(0).0,
            faults: VecDeque::new(),
            latency: Latency::default(),
            requests: 0,
            active: 0,
            active_keys: HashMap::new(),
            max_active: 0,
            overlaps: 0,
            gate: Gate::default(),
            refused: 0,
            refused_keys: HashMap::new(),
        }
    }
}

/// Counts a request as open until dropped (also when the client gives up).
struct Open {
    sim: PaystarSim,
    key: String,
}

impl Open {
    fn new(sim: &PaystarSim, key: String) -> Self {
        let mut state = sim.lock();
        state.requests += 1;
        state.active += 1;
        state.max_active = state.max_active.max(state.active);
        let count = state.active_keys.entry(key.clone()).or_default();
        *count += 1;
        if *count > 1 {
            state.overlaps += 1;
        }
        drop(state);
        Self {
            sim: sim.clone(),
            key,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut state = self.sim.lock();
        state.active -= 1;
        if let Some(count) = state.active_keys.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                state.active_keys.remove(&self.key);
            }
        }
    }
}

/// A request body, read once: the envelope if it is a JSON object, and its
/// payload if that is a string holding a JSON object.
struct Body {
    envelope: Option<Map<String, Value>>,
    payload: Option<Map<String, Value>>,
}

impl Body {
    fn read(body: &[u8]) -> Self {
        let envelope = match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        let payload = envelope
            .as_ref()
            .and_then(|e| e.get("payload")?.as_str())
            .and_then(|p| match serde_json::from_str(p) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            });
        Self { envelope, payload }
    }

    /// The customer the request is about, read leniently (for concurrency
    /// tracking only).
    fn key(&self) -> String {
        let text = |map: &Option<Map<String, Value>>, name: &str| {
            map.as_ref()
                .and_then(|m| m.get(name)?.as_str())
                .unwrap_or("")
                .to_owned()
        };
        format!(
            "{}/{}/{}",
            text(&self.envelope, "businessUnitSlug"),
            text(&self.payload, "accountNumber"),
            text(&self.payload, "subAccountNumber")
        )
    }
}

/// The simulator's state; clones share it.
#[derive(Clone, Default)]
pub struct PaystarSim {
    state: Arc<Mutex<SimState>>,
    /// Waits out the injected latency.
    timer: PreciseTimer,
}

impl PaystarSim {
    /// How many accepted events a simulator keeps unless told otherwise; it
    /// counts every one, so its memory does not grow with a long import.
    pub const KEEP: usize = 100_000;

    pub fn new() -> Self {
        Self::default()
    }

    /// A simulator that keeps only the latest `keep` accepted events (at least one).
    pub fn keeping(keep: usize) -> Self {
        let sim = Self::default();
        sim.lock().keep = keep.max(1);
        sim
    }

    fn record(&self, accepted: Accepted) {
        let mut state = self.lock();
        if state.accepted.len() == state.keep {
            state.accepted.pop_front();
        }
        state.accepted.push_back(accepted);
        state.accepted_count.send_modify(|count| *count += 1);
    }

    /// Every event accepted so far, including those no longer kept.
    pub fn accepted_total(&self) -> usize {
        *self.lock().accepted_count.borrow()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest accepted events, oldest first (all of them, up to the kept number).
    pub fn accepted(&self) -> Vec<Accepted> {
        self.lock().accepted.iter().cloned().collect()
    }

    /// Waits until at least `count` events were accepted, or `timeout` passes;
    /// returns the accepted events either way.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Accepted> {
        let mut counter = self.lock().accepted_count.subscribe();
        let _ = tokio::time::timeout(timeout, counter.wait_for(|n| *n >= count)).await;
        self.accepted()
    }

    /// Every request that reached the endpoint, valid or not.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// The most requests ever open at once.
    pub fn max_concurrent(&self) -> usize {
        self.lock().max_active
    }

    /// How often a request came while another for the same customer was open.
    pub fn same_customer_overlaps(&self) -> u64 {
        self.lock().overlaps
    }

    pub fn push_fault(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = Latency::fixed(latency);
    }

    /// A latency with jitter, or one that grows with the requests open.
    pub fn set_latency_model(&self, latency: Latency) {
        self.lock().latency = latency;
    }

    /// A Paystar that takes only `capacity` requests at a time: beyond, it
    /// answers 429 at once (without `Retry-After`). `None`: unlimited.
    pub fn set_capacity(&self, capacity: Option<usize>) {
        self.set_pushback(Capacity {
            requests: capacity,
            ..Capacity::default()
        });
    }

    /// When the simulator refuses: a concurrency capacity, a token-bucket rate,
    /// and how it answers then (429 or 503, `Retry-After`).
    pub fn set_pushback(&self, capacity: Capacity) {
        self.lock().gate.set(capacity);
    }

    /// Requests refused for being over the capacity or the rate.
    pub fn over_capacity(&self) -> u64 {
        self.lock().refused
    }

    /// The most refusals any one customer had.
    pub fn most_refusals_of_one_customer(&self) -> u32 {
        self.lock()
            .refused_keys
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/integrations/events", post(receive))
            .route("/_sandbox/paystar/events", get(list))
            .route(
                "/_sandbox/paystar/faults",
                post(add_fault).delete(clear_faults),
            )
            .route("/_sandbox/paystar/latency", post(set_latency))
            .route("/_sandbox/paystar/capacity", post(set_capacity))
            .with_state(self.clone())
    }

    /// Takes the next fault to apply, if any.
    fn next_fault(&self) -> Option<Fault> {
        let mut state = self.lock();
        let fault = state.faults.front_mut()?;
        fault.count = fault.count.saturating_sub(1);
        let taken = fault.clone();
        if fault.count == 0 {
            state.faults.pop_front();
        }
        Some(taken)
    }
}

fn rejection(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "hasErrors": true, "errors": [message.into()], "data": null })),
    )
        .into_response()
}

async fn receive(
    State(sim): State<PaystarSim>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let received_ms = crate::clock::now_ms();
    let body = Body::read(&body);
    let _open = Open::new(&sim, body.key());
    let latency = {
        let mut state = sim.lock();
        let open = state.active;
        if let Err(refused) = state.gate.admit(open, tokio::time::Instant::now()) {
            state.refused += 1;
            *state.refused_keys.entry(body.key()).or_default() += 1;
            let capacity = state.gate.capacity.clone();
            drop(state);
            return refusal(&capacity, refused);
        }
        (!state.latency.is_zero()).then(|| state.latency.pick(open, fastrand::f64()))
    };
    if let Some(latency) = latency {
        sim.timer.sleep(latency).await;
    }
    if let Some(fault) = sim.next_fault() {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if fault.hang {
            std::future::pending::<()>().await;
        }
        let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let response = (status, fault.body.unwrap_or_default()).into_response();
        return with_retry_after(response, fault.retry_after.as_deref());
    }
    match checked(&headers, body) {
        Ok(mut accepted) => {
            accepted.received_ms = received_ms;
            tracing::info!(
                event = %accepted.event_type,
                business_unit = %accepted.business_unit_slug,
                "sandbox: Paystar accepted an event"
            );
            sim.record(accepted);
            // The same bytes history stores as a status alone.
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                crate::deliver::event::ACCEPTED_BODY,
            )
                .into_response()
        }
        Err((status, message)) => rejection(status, message),
    }
}

/// Checks a request as strictly as the vendor page implies.
pub fn validate(headers: &HeaderMap, body: &[u8]) -> Result<Accepted, (StatusCode, String)> {
    checked(headers, Body::read(body))
}

/// [`validate`], on a body already read.
fn checked(headers: &HeaderMap, body: Body) -> Result<Accepted, (StatusCode, String)> {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, m.to_owned());
    let key = headers
        .get("x-paystar-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.trim().is_empty() {
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing X-Paystar-Api-Key header".into(),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json".into(),
        ));
    }
    let Some(envelope) = body.envelope else {
        return Err(bad("body must be a JSON object"));
    };
    for field in envelope.keys() {
        if !["eventType", "businessUnitSlug", "payload"].contains(&field.as_str()) {
            return Err(bad(&format!("unknown field {field:?} in the request body")));
        }
    }
    let text = |name: &str| match envelope.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(&format!("{name} must be a string"))),
        None => Err(bad(&format!("{name} is required"))),
    };
    let event_type = text("eventType")?;
    let business_unit_slug = text("businessUnitSlug")?;
    if business_unit_slug.trim().is_empty() {
        return Err(bad("businessUnitSlug must not be empty"));
    }
    let payload_text = match envelope.get("payload") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(_)) => {
            return Err(bad(
                "payload must be a serialized JSON string, not a raw JSON object",
            ));
        }
        Some(_) => return Err(bad("payload must be a string")),
        None => return Err(bad("payload is required")),
    };
    let Some(payload) = body.payload else {
        return Err(bad("payload must hold a serialized JSON object"));
    };
    let (required, optional): (&[&str], &[&str]) = match event_type.as_str() {
        "Accounts.ManageCustomer" => (
            &[
                "accountNumber",
                "subAccountNumber",
                "firstName",
                "lastName",
                "emailAddress",
            ],
            &["originalEmailAddress"],
        ),
        "Accounts.UnenrollAutopay" => (&["accountNumber", "subAccountNumber"], &[]),
        other => return Err(bad(&format!("unknown eventType {other:?}"))),
    };
    for field in required {
        match payload.get(*field) {
            Some(Value::String(s)) if !s.is_empty() || *field == "subAccountNumber" => {}
            Some(Value::String(_)) => {
                return Err(bad(&format!("payload.{field} must not be empty")));
            }
            Some(_) => return Err(bad(&format!("payload.{field} must be a string"))),
            None => return Err(bad(&format!("payload.{field} is required"))),
        }
    }
    for (field, value) in &payload {
        if !required.contains(&field.as_str()) && !optional.contains(&field.as_str()) {
            return Err(bad(&format!("unknown payload field {field:?}")));
        }
        if !value.is_string() {
            return Err(bad(&format!("payload.{field} must be a string")));
        }
    }
    Ok(Accepted {
        event_type,
        business_unit_slug,
        payload: payload_text,
        received_ms: crate::clock::now_ms(),
    })
}

async fn list(State(sim): State<PaystarSim>) -> Json<Value> {
    Json(json!({ "events": sim.accepted(), "total": sim.accepted_total() }))
}

async fn add_fault(State(sim): State<PaystarSim>, Json(fault): Json<Fault>) -> StatusCode {
    sim.push_fault(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(sim): State<PaystarSim>) -> StatusCode {
    sim.lock().faults.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyRequest {
    ms: f64,
    #[serde(default)]
    jitter_ms: f64,
    #[serde(default)]
    per_open_ms: f64,
}

async fn set_latency(State(sim): State<PaystarSim>, Json(l): Json<LatencyRequest>) -> StatusCode {
    sim.set_latency_model(Latency::from_millis(l.ms, l.jitter_ms, l.per_open_ms));
    StatusCode::NO_CONTENT
}

/// `{"requests": 40, "rate": 300, "burst": 30, "status": 503, "retry_after": "1"}`,
/// every field optional (`{}`: unlimited).
async fn set_capacity(State(sim): State<PaystarSim>, Json(c): Json<Capacity>) -> Response {
    if !matches!(c.status, 429 | 503) {
        return rejection(StatusCode::BAD_REQUEST, "status must be 429 or 503");
    }
    sim.set_pushback(c);
    StatusCode::NO_CONTENT.into_response()
}

/// A refusal as the capacity asks for it.
fn refusal(capacity: &Capacity, refused: super::pushback::Refused) -> Response {
    let status = StatusCode::from_u16(capacity.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    with_retry_after(
        rejection(status, refused.message()),
        capacity.retry_after.as_deref(),
    )
}

fn with_retry_after(mut response: Response, retry_after: Option<&str>) -> Response {
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
#[path = "paystar_tests.rs"]
mod tests;
