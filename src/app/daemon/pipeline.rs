//! The running stages of one configuration, stopped together.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The running stages of one configuration: intake, delivery and the providers.
pub(super) struct Pipeline {
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    pub grace: Duration,
}

impl Pipeline {
    /// Stops intake and delivery; everything gets `shutdown_grace` in all.
    /// False if some stage was still busy then.
    pub async fn stop(self) -> bool {
        self.cancel.cancel();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "stages still busy after shutdown_grace; leaving them (the queue is durable)");
            return false;
        }
        true
    }
}
