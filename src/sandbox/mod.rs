//! Local simulators of the external APIs (SPEC §10), served by
//! `paystar-sync sandbox` and started in-process for `paystar.endpoint: sandbox`
//! and by the tests.

pub mod lotuspay;
pub mod payroc;
pub mod paystar;
pub mod pushback;
pub mod smarterpay;
mod timer;

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use paystar::PaystarSim;

/// The simulators, served on one listener.
#[derive(Clone, Default)]
pub struct Sandbox {
    pub paystar: PaystarSim,
    pub lotuspay: lotuspay::LotusPaySim,
    pub payroc: payroc::PayrocSim,
}

/// A running sandbox.
pub struct RunningSandbox {
    pub addr: SocketAddr,
    pub sandbox: Sandbox,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    /// The Payroc identity URL and API base URL of this sandbox.
    pub fn payroc_urls(&self) -> (String, String) {
        (
            format!("http://{}/authorize", self.addr),
            format!("http://{}/v1", self.addr),
        )
    }

    /// The LotusPay API base URL of this sandbox.
    pub fn lotuspay_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Paystar Events API URL of this sandbox.
    pub fn paystar_endpoint(&self) -> String {
        format!("http://{}/integrations/events", self.addr)
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn router(&self) -> axum::Router {
        self.paystar
            .router()
            .merge(self.lotuspay.router())
            .merge(smarterpay::router())
            .merge(self.payroc.router())
    }

    /// Serves on `listener` until `stop`.
    pub fn spawn(self, listener: TcpListener) -> std::io::Result<RunningSandbox> {
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let router = self.router();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "sandbox server failed");
            }
        });
        Ok(RunningSandbox {
            addr,
            sandbox: self,
            cancel,
            task,
        })
    }

    /// Binds `addr` (port 0 for any) and serves.
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<RunningSandbox> {
        let listener = TcpListener::bind(addr).await?;
        self.spawn(listener)
    }
}
