//! The daemon's HTTP server (`server.listen`): `GET /health`, `GET /metrics`
//! (Prometheus text format) and the provider webhooks. Bodies are limited to
//! 1 MiB; a client gets `server.header_read_timeout` to send its request head
//! and `server.request_timeout` for the whole request, body included.
//!
//! The server outlives reloads: its listener stays bound while the
//! configuration-dependent parts ([`Live`]) are swapped underneath it.

mod status;
mod webhooks;

use crate::metrics::Metrics;
use crate::store::SharedStore;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use status::{ANSWER_WITHIN, DELIVERY_FAILING_AFTER, delivery_failing};

/// How long clients may take (`server.header_read_timeout`, `server.request_timeout`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub request: Duration,
}

/// What the server reads; the counters are shared with the stages that move them.
#[derive(Clone)]
pub struct ServerState {
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub started_ms: i64,
    /// Wakes delivery after a new provider event.
    pub wake: Arc<tokio::sync::Notify>,
    live: Arc<RwLock<Arc<Live>>>,
    /// This instance's role and the leader it sees (SPEC §12).
    pub leadership: Arc<crate::ha::Leadership>,
    /// Whether the state database has left a status read unanswered.
    probe: Arc<status::StateProbe>,
    /// Set when the daemon begins to stop: webhooks and `/health` answer 503.
    draining: CancellationToken,
}

/// The parts of the server's state that a reload replaces.
#[derive(Default)]
pub struct Live {
    /// After this long without a successful LotusPay poll (counted from start
    /// until the first one), the poller is behind; `None` when none runs.
    pub poll_behind_after: Option<Duration>,
    /// The Payroc receiver, when `providers.payroc.webhook_secret_*` is configured.
    pub payroc: Option<crate::providers::payroc::PayrocReceiver>,
    /// The SmarterPay receiver, when `providers.smarterpay` is configured.
    pub smarterpay: Option<crate::providers::smarterpay::SmarterPay>,
}

impl ServerState {
    pub fn new(
        store: SharedStore,
        metrics: Arc<Metrics>,
        wake: Arc<tokio::sync::Notify>,
        live: Live,
    ) -> Self {
        Self {
            store,
            metrics,
            started_ms: crate::clock::now_ms(),
            wake,
            live: Arc::new(RwLock::new(Arc::new(live))),
            leadership: Arc::new(crate::ha::Leadership::single()),
            probe: Arc::default(),
            draining: CancellationToken::new(),
        }
    }

    /// The daemon is stopping: from now on webhooks are refused with 503 and
    /// `Retry-After` (the providers send them again, to whichever instance
    /// runs next) and `/health` answers 503, so that a load balancer turns away.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Shows `leadership`'s role and leader on `/health`.
    pub fn with_leadership(mut self, leadership: Arc<crate::ha::Leadership>) -> Self {
        self.leadership = leadership;
        self
    }

    /// The configuration-dependent parts in force now.
    pub fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts a reloaded configuration's parts in force.
    pub fn swap(&self, live: Live) {
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
    }
}

/// The routes; [`with_request_timeout`] and [`serve`] add the timeouts.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/health", get(status::health))
        .route("/metrics", get(status::metrics))
        .route("/webhooks/smarterpay", post(webhooks::smarterpay))
        .route("/webhooks/payroc", post(webhooks::payroc))
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .with_state(state)
}

/// Answers 408 to a request of `router` that takes longer than `limit`
/// (`server.request_timeout`), on every listener the daemon serves.
pub fn with_request_timeout(router: Router, limit: Duration) -> Router {
    router.layer(axum::middleware::from_fn(move |request, next| {
        request_timeout(limit, request, next)
    }))
}

/// Answers 408 to a request that takes longer than `limit` (a body sent byte
/// by byte, say).
async fn request_timeout(
    limit: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
    }
}

/// Serves `router` on `listener` until `stop`, then lets open requests finish
/// for at most `grace`. Connections that do not send their headers within
/// `timeouts.header_read` are closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(timeouts.header_read));
    loop {
        let (stream, _peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) if is_transient(&err) => {
                    tracing::warn!(error = %err, "cannot accept a connection; going on");
                    // Out of file descriptors: let some close before trying again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(err) => return Err(err),
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or times out ends its own connection only.
            let _ = watched.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "http connections still open after the grace period; closing them"
        );
    }
    Ok(())
}

/// Accept errors that concern one connection or a passing shortage, not the listener.
fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) || matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
