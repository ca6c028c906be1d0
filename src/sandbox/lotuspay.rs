//! A LotusPay events API simulator: `GET /v1/events?limit=&page=` (newest first,
//! 1-based pages, summaries only, an empty `data` at the end) and
//! `GET /v1/events/{id}` (the full event), both behind Basic auth with the secret
//! key as user and an empty password. Events are added with
//! `POST /_sandbox/lotuspay/events`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct SimState {
    /// Full event objects, in the order added.
    events: Vec<Value>,
    secret: Option<String>,
    next_id: u64,
    list_calls: u64,
    retrieve_calls: u64,
    /// Answer the next N API calls with 503.
    failures: u32,
}

#[derive(Clone, Default)]
pub struct LotusPaySim {
    state: Arc<Mutex<SimState>>,
}

impl LotusPaySim {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Requires this secret key (Basic user) on every API call; any key otherwise.
    pub fn require_secret(&self, secret: &str) {
        self.lock().secret = Some(secret.to_owned());
    }

    /// Adds an event; `id`, `object` and `created` are filled in when missing.
    pub fn add_event(&self, mut event: Value) -> Value {
        let mut state = self.lock();
        state.next_id += 1;
        let n = state.next_id;
        if event.get("id").is_none() {
            event["id"] = json!(format!("EV{n:012}"));
        }
        if event.get("created").is_none() {
            // Now, in seconds, as LotusPay stamps events; several share a second.
            let now = crate::clock::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            event["created"] = json!(now);
        }
        event["object"] = json!("event");
        if event.get("livemode").is_none() {
            event["livemode"] = json!(false);
        }
        state.events.push(event.clone());
        event
    }

    /// `(list calls, retrieve calls)` so far.
    pub fn calls(&self) -> (u64, u64) {
        let s = self.lock();
        (s.list_calls, s.retrieve_calls)
    }

    /// The next `count` API calls answer 503.
    pub fn fail_next(&self, count: u32) {
        self.lock().failures = count;
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/events", get(list))
            .route("/v1/events/{id}", get(retrieve))
            .route("/_sandbox/lotuspay/events", post(add))
            .with_state(self.clone())
    }

    /// Checks Basic auth; the rejection's status and message otherwise.
    fn authorise(&self, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
        let unauthorised = || (StatusCode::UNAUTHORIZED, "invalid API key");
        let user = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(user, _)| user.to_owned()))
            .filter(|user| !user.is_empty())
            .ok_or_else(unauthorised)?;
        let mut state = self.lock();
        if state.secret.as_ref().is_some_and(|s| *s != user) {
            return Err(unauthorised());
        }
        if state.failures > 0 {
            state.failures -= 1;
            return Err((StatusCode::SERVICE_UNAVAILABLE, "try later"));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Paging {
    limit: Option<usize>,
    page: Option<usize>,
}

async fn list(
    State(sim): State<LotusPaySim>,
    headers: HeaderMap,
    Query(paging): Query<Paging>,
) -> Response {
    if let Err((status, error)) = sim.authorise(&headers) {
        return (status, Json(json!({ "error": error }))).into_response();
    }
    let limit = paging.limit.unwrap_or(100).clamp(1, 100);
    let page = paging.page.unwrap_or(1).max(1);
    let mut state = sim.lock();
    state.list_calls += 1;
    let mut events = state.events.clone();
    // Newest first; ties in `created` happen.
    events.sort_by(|a, b| {
        (b["created"].as_i64(), b["id"].as_str()).cmp(&(a["created"].as_i64(), a["id"].as_str()))
    });
    let data: Vec<Value> = events
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|e| json!({ "id": e["id"], "object": "event", "created": e["created"], "resource_id": e["resource_id"], "type": e["type"] }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

async fn retrieve(
    State(sim): State<LotusPaySim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err((status, error)) = sim.authorise(&headers) {
        return (status, Json(json!({ "error": error }))).into_response();
    }
    let mut state = sim.lock();
    state.retrieve_calls += 1;
    match state.events.iter().find(|e| e["id"] == json!(id)) {
        Some(event) => Json(event.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such event" })),
        )
            .into_response(),
    }
}

async fn add(State(sim): State<LotusPaySim>, Json(event): Json<Value>) -> Json<Value> {
    Json(sim.add_event(event))
}
