//! The daemon's listeners: the webhooks/health/metrics server and the console,
//! each one supervised stage that outlives reloads.

use super::daemon::{StageFailure, supervise};
use crate::config::Config;
use crate::server::ServerState;
use crate::store::SharedStore;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The operations console (`console.listen`) and the address it listens on;
/// it outlives reloads, which swap its token and settings.
pub(super) struct ConsoleServer {
    pub console: crate::console::Console,
    pub listen: SocketAddr,
    pub listening: Listening,
}

impl ConsoleServer {
    pub async fn start(
        config: &Config,
        token: Option<crate::config::Secret>,
        store: &SharedStore,
        wake: &Arc<Notify>,
        leadership: Arc<crate::ha::Leadership>,
        delivery: Arc<crate::deliver::DeliveryCounters>,
        failures: mpsc::Sender<StageFailure>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(c) = &config.console else {
            return Ok(None);
        };
        let listener = crate::console::bind(c.listen).await?;
        let console = crate::console::Console::new(
            store.clone(),
            wake.clone(),
            &config.state.describe(),
            token,
            console_settings(config),
        )
        .with_leadership(leadership)
        .with_delivery(delivery);
        let router = crate::console::router(console.clone());
        Ok(Some(Self {
            console,
            listen: c.listen,
            listening: Listening::serve(config, "console", listener, router, failures),
        }))
    }
}

pub(super) fn console_settings(config: &Config) -> crate::console::Settings {
    crate::console::Settings {
        default_business_unit: config.paystar.default_business_unit.clone(),
        paystar: Some(config.paystar.clone()),
    }
}

/// The HTTP server stage and the address it was configured with.
pub(super) struct Server {
    pub configured: crate::config::ServerConfig,
    pub listening: Listening,
}

/// One listener served as a supervised stage, with `server.*` timeouts and
/// `shutdown_grace` for its open requests.
pub(super) struct Listening {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Listening {
    fn serve(
        config: &Config,
        stage: &'static str,
        listener: tokio::net::TcpListener,
        router: axum::Router,
        failures: mpsc::Sender<StageFailure>,
    ) -> Self {
        let timeouts = crate::server::Timeouts {
            header_read: config.server.header_read_timeout,
            request: config.server.request_timeout,
        };
        let router = crate::server::with_request_timeout(router, timeouts.request);
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let (stop, grace) = (cancel.clone(), config.shutdown_grace);
        supervise(&tracker, stage, failures, async move {
            crate::server::serve(listener, router, timeouts, stop, grace)
                .await
                .with_context(|| format!("the {stage} stopped"))
        });
        tracker.close();
        Self { cancel, tracker }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }
}

pub(super) async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("server.listen {listen}: cannot listen there (another process may hold the port: change server.listen)"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "http server listening (/health, /metrics, /webhooks)");
    Ok(listener)
}

impl Server {
    pub fn start(
        config: &Config,
        listener: tokio::net::TcpListener,
        state: &ServerState,
        failures: mpsc::Sender<StageFailure>,
    ) -> Self {
        let router = crate::server::router(state.clone());
        Self {
            configured: config.server.clone(),
            listening: Listening::serve(config, "http server", listener, router, failures),
        }
    }
}
