//! The `ha` section (SPEC §12): the leader lease that instances sharing one
//! PostgreSQL state elect their one active instance through.

use super::walk::{self, Walker};
use super::{StateBackend, StateConfig};
use std::time::Duration;

/// The lease's timing and this instance's name. Present exactly when the state
/// is on PostgreSQL: every instance there takes part in the election, with or
/// without an `ha` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaConfig {
    /// `ha.lease_ttl`: a leader that has not renewed for this long loses the lease.
    pub lease_ttl: Duration,
    /// `ha.renew_interval`: how often the leader renews and a standby looks.
    pub renew_interval: Duration,
    /// `ha.instance_id`; `None`: the host name and process id, found at start.
    pub instance_id: Option<String>,
}

const DEFAULT_TTL: Duration = Duration::from_secs(15);
const DEFAULT_RENEW: Duration = Duration::from_secs(5);
const SHORTEST_RENEW: Duration = Duration::from_millis(100);
const MOST_ID_CHARS: usize = 128;

impl HaConfig {
    /// The leader starts no Paystar request this close to its lease's end, as
    /// this instance's clock measures from the renewal that was last confirmed.
    pub fn safety_margin(&self) -> Duration {
        self.renew_interval
    }

    /// `ha.instance_id`, else [`default_instance_id`].
    pub fn resolved_instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(default_instance_id)
    }
}

/// `HOST-PID`: this host's name and this process's id.
pub fn default_instance_id() -> String {
    format!("{}-{}", crate::host::host_name(), std::process::id())
}

pub(super) fn build(
    w: &mut Walker,
    root: &walk::Section<'_>,
    state: &StateConfig,
) -> Option<HaConfig> {
    let present = w.present(root, "ha");
    let h = w.section(root, "ha", &["lease_ttl", "renew_interval", "instance_id"]);
    if !matches!(state.backend, StateBackend::Postgres(_)) {
        if present {
            w.error(
                "ha",
                "needs state.backend: postgres: instances elect their leader through the shared database, and a SQLite state has one instance; remove ha or move the state (paystar-sync state copy)",
            );
        }
        return None;
    }
    let lease_ttl = w.duration(&h, "lease_ttl").unwrap_or(DEFAULT_TTL);
    let renew_interval = w.duration(&h, "renew_interval").unwrap_or(DEFAULT_RENEW);
    if renew_interval < SHORTEST_RENEW {
        w.error(
            "ha.renew_interval",
            format!("{renew_interval:?} is too short; write at least 100ms (the default is 5s)"),
        );
    } else if renew_interval.saturating_mul(2) > lease_ttl {
        w.error(
            "ha.renew_interval",
            format!(
                "{renew_interval:?} must be at most half of ha.lease_ttl ({lease_ttl:?}), so that one failed renewal does not lose the lease; e.g. lease_ttl: 15s, renew_interval: 5s"
            ),
        );
    }
    let instance_id = w.string(&h, "instance_id");
    if let Some(id) = &instance_id
        && (id.trim().is_empty()
            || id.chars().count() > MOST_ID_CHARS
            || id.chars().any(char::is_control))
    {
        w.error(
                "ha.instance_id",
                format!(
                    "{id:?} must be 1 to {MOST_ID_CHARS} characters without control characters, e.g. the host name"
                ),
            );
    }
    Some(HaConfig {
        lease_ttl,
        renew_interval,
        instance_id,
    })
}
