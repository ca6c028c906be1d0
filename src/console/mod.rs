//! The operations console (SPEC §13): server-rendered pages and a JSON API
//! (`/api/v1/…`, described by `openapi.json`) on their own listener
//! (`console.listen`), never on the webhooks listener.
//!
//! Codemap: `auth.rs` (the token, sessions, CSRF), `view.rs` (what is shown,
//! read from the state), `pages.rs` + `html.rs` (the HTML), `routes.rs` (the
//! pages' handlers and their actions), `api.rs` (the JSON API). A GET never
//! changes state; the two actions (approve held unenrolls, retry parked
//! customers) are POSTs that need the token, a CSRF token from a session form
//! (or a bearer token), and a confirmation step in the browser; each is
//! recorded in history with the actor `console`.

mod api;
pub mod auth;
mod html;
mod pages;
mod routes;
pub mod view;

use crate::clock::now_ms;
use crate::store::SharedStore;
use auth::{Access, Guard};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::{Arc, PoisonError, RwLock};

/// The OpenAPI 3.1 document of `/api/v1/`, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What a reload may change.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `paystar.default_business_unit`: the customer search's default.
    pub default_business_unit: Option<String>,
    /// The delivery speed settings, described on the overview.
    pub paystar: Option<crate::config::PaystarConfig>,
}

/// Everything the console's handlers share.
#[derive(Clone)]
pub struct Console {
    store: SharedStore,
    guard: Arc<Guard>,
    /// Wakes delivery after an action queued something.
    wake: Arc<tokio::sync::Notify>,
    /// `state.describe()`, shown on the overview.
    state_name: Arc<str>,
    settings: Arc<RwLock<Settings>>,
    /// This instance's role and the leader it sees.
    leadership: Arc<crate::ha::Leadership>,
    /// The running delivery's counters: whether the endpoint paused it.
    delivery: Option<Arc<crate::deliver::DeliveryCounters>>,
}

impl Console {
    pub fn new(
        store: SharedStore,
        wake: Arc<tokio::sync::Notify>,
        state_name: &str,
        token: Option<crate::config::Secret>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            guard: Arc::new(Guard::new(token)),
            wake,
            state_name: state_name.into(),
            settings: Arc::new(RwLock::new(settings)),
            leadership: Arc::new(crate::ha::Leadership::single()),
            delivery: None,
        }
    }

    /// Shows a delivery paused for an endpoint fault on the overview.
    pub fn with_delivery(mut self, delivery: Arc<crate::deliver::DeliveryCounters>) -> Self {
        self.delivery = Some(delivery);
        self
    }

    /// Shows `leadership`'s role and leader on the overview.
    pub fn with_leadership(mut self, leadership: Arc<crate::ha::Leadership>) -> Self {
        self.leadership = leadership;
        self
    }

    /// What only the running process knows: its role, the leader, and
    /// whether the endpoint paused delivery (the leader's to say).
    fn show_live(&self, status: &mut view::Status) {
        let role = self.leadership.role();
        status.role = role.as_str();
        status.leader = self.leadership.leader();
        let problem = self
            .delivery
            .as_ref()
            .and_then(|d| d.endpoint.problem())
            .filter(|_| role != crate::ha::Role::Standby);
        if let Some(problem) = problem {
            status.delivery.health = "paused";
            status.delivery.endpoint = Some(problem.reason);
        }
        let settings = self.settings();
        if let (Some(delivery), Some(paystar)) = (&self.delivery, &settings.paystar)
            && role != crate::ha::Role::Standby
        {
            let limit = delivery.limit.get();
            status.delivery.concurrency = Some(view::Concurrency {
                describe: paystar.describe_concurrency(None, Some(limit)),
                limit,
                in_flight: delivery.in_flight.get(),
            });
        }
    }

    /// Puts a reloaded configuration's token and settings in force.
    pub fn swap(&self, token: Option<crate::config::Secret>, settings: Settings) {
        self.guard.set_token(token);
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
    }

    fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads a view on a reading session; a state error becomes a 503.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StateError> + Send + 'static,
    ) -> Result<T, Unavailable> {
        self.store
            .read(move |s| f(s))
            .await
            .map_err(|e| Unavailable(format!("{:#}", anyhow::Error::new(e))))
    }
}

/// The state could not be read or written: 503, with the reason.
pub struct Unavailable(pub String);

pub fn router(console: Console) -> Router {
    let guarded = Router::new()
        .route("/", get(routes::overview))
        .route("/files", get(routes::files))
        .route("/customers", get(routes::customer))
        .route("/holds", get(routes::holds))
        .route("/holds/approve", post(routes::approve))
        .route("/parked", get(routes::parked))
        .route("/parked/retry", post(routes::retry))
        .route("/unmatched", get(routes::unmatched))
        .route("/logout", post(routes::logout))
        .nest("/api/v1", api::router())
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            require_access,
        ));
    Router::new()
        .route("/login", get(routes::login_form).post(routes::login))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(guarded)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(request: Request) -> Response {
    if request.uri().path().starts_with("/api/") {
        api::error(
            StatusCode::NOT_FOUND,
            "no such API path; see /api/v1/openapi.json",
        )
    } else {
        html::problem(
            StatusCode::NOT_FOUND,
            &Access::Denied,
            "There is no such page.",
        )
    }
}

/// Lets a request through with its [`Access`] in its extensions, or refuses it:
/// 401 for the API, the sign-in form for a page.
async fn require_access(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let access = console.guard.access(request.headers(), now_ms());
    if access == Access::Denied {
        let path = request.uri().path();
        if path.starts_with("/api/") {
            let mut response = api::error(
                StatusCode::UNAUTHORIZED,
                "send the console token as Authorization: Bearer TOKEN",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let next_path = match request.method() {
            &axum::http::Method::GET => request
                .uri()
                .path_and_query()
                .map_or("/".to_owned(), |p| p.to_string()),
            _ => "/".to_owned(),
        };
        return Redirect::to(&format!("/login?next={}", html::query_value(&next_path)))
            .into_response();
    }
    request.extensions_mut().insert(access);
    next.run(request).await
}

/// No caching, no framing, no sniffing, no scripts, no referrer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Binds `console.listen`.
pub async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("console.listen {listen}: cannot listen there (another process may hold the port: change console.listen)"))?;
    let addr = listener.local_addr()?;
    tracing::info!(url = %format!("http://{addr}/"), "console listening");
    Ok(listener)
}
