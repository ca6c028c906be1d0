//! A Payroc simulator: `POST /authorize` (x-api-key → Bearer token), the
//! event-subscription endpoints (list, create with a required Idempotency-Key,
//! retrieve, update, patch `enabled`), and `POST /_sandbox/payroc/deliver`, which
//! posts a CloudEvent to every enabled subscription for its type with that
//! subscription's `Payroc-Secret`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct SimState {
    tokens: Vec<String>,
    authorize_calls: u64,
    subscriptions: Vec<Value>,
    /// Idempotency-Key of each create → the subscription id it made.
    creates: HashMap<String, i64>,
    next_id: i64,
}

#[derive(Clone, Default)]
pub struct PayrocSim {
    state: Arc<Mutex<SimState>>,
}

fn problem(status: StatusCode, title: &str) -> Response {
    let body = json!({ "type": "https://docs.payroc.com/api/errors", "title": title, "status": status.as_u16() });
    (status, Json(body)).into_response()
}

impl PayrocSim {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn authorize_calls(&self) -> u64 {
        self.lock().authorize_calls
    }

    /// Every issued token stops working (as if expired).
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn subscriptions(&self) -> Vec<Value> {
        self.lock().subscriptions.clone()
    }

    /// Adds a subscription as if made elsewhere; returns its id.
    pub fn add_subscription(&self, mut subscription: Value) -> i64 {
        let mut state = self.lock();
        state.next_id += 1;
        let id = 2_565_435_189_324 + state.next_id;
        subscription["id"] = json!(id);
        state.subscriptions.push(subscription);
        id
    }

    /// Sets a subscription's status, as Payroc does when it cannot reach the URI.
    pub fn set_status(&self, id: i64, status: &str, enabled: bool) {
        let mut state = self.lock();
        if let Some(s) = state
            .subscriptions
            .iter_mut()
            .find(|s| s["id"] == json!(id))
        {
            s["status"] = json!(status);
            s["enabled"] = json!(enabled);
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/authorize", post(authorize))
            .route("/v1/event-subscriptions", get(list).post(create))
            .route(
                "/v1/event-subscriptions/{id}",
                get(retrieve).put(update).patch(patch),
            )
            .route("/_sandbox/payroc/deliver", post(deliver))
            .with_state(self.clone())
    }

    /// Whether the request carries a token this simulator issued.
    fn bearer(&self, headers: &HeaderMap) -> bool {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        self.lock().tokens.iter().any(|t| t == token)
    }
}

async fn authorize(State(sim): State<PayrocSim>, headers: HeaderMap) -> Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.is_empty() {
        return problem(StatusCode::UNAUTHORIZED, "Missing x-api-key");
    }
    let mut state = sim.lock();
    state.authorize_calls += 1;
    let token = format!("tok-{}", state.authorize_calls);
    state.tokens.push(token.clone());
    Json(json!({ "access_token": token, "expires_in": 3600, "scope": "service_a service_b", "token_type": "Bearer" }))
        .into_response()
}

fn masked(mut s: Value) -> Value {
    for n in s["notifications"].as_array_mut().into_iter().flatten() {
        if let Some(secret) = n["secret"].as_str() {
            let tail: String = secret
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            n["secret"] = json!(format!("**********{tail}"));
        }
    }
    s
}

async fn list(State(sim): State<PayrocSim>, headers: HeaderMap) -> Response {
    if !sim.bearer(&headers) {
        return problem(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let data: Vec<Value> = sim
        .lock()
        .subscriptions
        .iter()
        .cloned()
        .map(masked)
        .collect();
    Json(json!({ "limit": 10, "count": data.len(), "hasMore": false, "links": [], "data": data }))
        .into_response()
}

async fn create(
    State(sim): State<PayrocSim>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> Response {
    if !sim.bearer(&headers) {
        return problem(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return problem(StatusCode::BAD_REQUEST, "Idempotency-Key is required");
    };
    if let Some(id) = sim.lock().creates.get(&key).copied() {
        let existing = sim
            .lock()
            .subscriptions
            .iter()
            .find(|s| s["id"] == json!(id))
            .cloned();
        return (
            StatusCode::CREATED,
            Json(masked(existing.unwrap_or_default())),
        )
            .into_response();
    }
    body["status"] = json!("registered");
    let id = sim.add_subscription(body);
    sim.lock().creates.insert(key, id);
    let created = sim.lock().subscriptions.last().cloned().unwrap_or_default();
    (StatusCode::CREATED, Json(masked(created))).into_response()
}

async fn retrieve(
    State(sim): State<PayrocSim>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if !sim.bearer(&headers) {
        return problem(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    match sim
        .lock()
        .subscriptions
        .iter()
        .find(|s| s["id"] == json!(id))
    {
        Some(s) => Json(masked(s.clone())).into_response(),
        None => problem(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn update(
    State(sim): State<PayrocSim>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(mut body): Json<Value>,
) -> Response {
    if !sim.bearer(&headers) {
        return problem(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let mut state = sim.lock();
    let Some(s) = state
        .subscriptions
        .iter_mut()
        .find(|s| s["id"] == json!(id))
    else {
        return problem(StatusCode::NOT_FOUND, "Not Found");
    };
    body["id"] = json!(id);
    body["status"] = s["status"].clone();
    *s = body;
    StatusCode::NO_CONTENT.into_response()
}

async fn patch(
    State(sim): State<PayrocSim>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(ops): Json<Value>,
) -> Response {
    if !sim.bearer(&headers) {
        return problem(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if headers.get("idempotency-key").is_none() {
        return problem(StatusCode::BAD_REQUEST, "Idempotency-Key is required");
    }
    let mut state = sim.lock();
    let Some(s) = state
        .subscriptions
        .iter_mut()
        .find(|s| s["id"] == json!(id))
    else {
        return problem(StatusCode::NOT_FOUND, "Not Found");
    };
    for op in ops.as_array().into_iter().flatten() {
        if op["op"] == "replace" && op["path"] == "/enabled" {
            s["enabled"] = op["value"].clone();
            if op["value"] == json!(true) {
                s["status"] = json!("registered");
            }
        }
    }
    Json(masked(s.clone())).into_response()
}

/// `{"type": "...", "data": {...}, "time": "..."}`: posts the CloudEvent to every
/// enabled subscription for that type (`time` defaults to now); answers the
/// receivers' statuses.
async fn deliver(State(sim): State<PayrocSim>, Json(request): Json<Value>) -> Json<Value> {
    let kind = request["type"]
        .as_str()
        .unwrap_or("processingAccount.status.changed")
        .to_owned();
    let targets: Vec<(String, String)> = sim
        .lock()
        .subscriptions
        .iter()
        .filter(|s| {
            s["enabled"] == json!(true)
                && s["eventTypes"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!(kind)))
        })
        .flat_map(|s| s["notifications"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| {
            Some((
                n["uri"].as_str()?.to_owned(),
                n["secret"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let event = json!({ "specversion": "1.0", "type": kind, "version": "1.0", "source": "payroc",
                        "id": uuid::Uuid::new_v4().to_string(),
                        "time": request["time"].as_str().map_or_else(|| crate::clock::now_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true), str::to_owned),
                        "datacontenttype": "application/json", "data": request["data"] });
    let mut statuses = Vec::new();
    for (uri, secret) in targets {
        let sent = reqwest::Client::new()
            .post(&uri)
            .header("content-type", "application/json")
            .header("Payroc-Secret", secret)
            .body(event.to_string())
            .send()
            .await;
        statuses.push(sent.map(|r| r.status().as_u16()).unwrap_or(0));
    }
    Json(json!({ "statuses": statuses }))
}
