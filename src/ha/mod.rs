//! High availability (SPEC §12): instances that share one PostgreSQL state
//! elect one leader through a lease row, and only the leader scans, polls and
//! delivers. [`Keeper`] takes and renews the lease; [`LeaseGate`] tells the
//! delivery worker whether it may still start a Paystar request;
//! [`Leadership`] is what `/health`, `/metrics` and the console show.
//!
//! The lease's epoch is a fencing token: the leader's writing session is
//! fenced to it (`Store::fence_writes`), so a leader that lost its lease while
//! frozen commits nothing after it wakes.

mod keeper;

pub use keeper::{Keeper, RoleChange};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// What this instance does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A SQLite state: the one instance, always active.
    Single,
    Leader,
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

/// This instance's role and the leader it saw last.
pub struct Leadership {
    instance_id: String,
    seen: Mutex<Seen>,
}

#[derive(Clone, Debug)]
struct Seen {
    role: Role,
    /// The leader's instance id and epoch, while a live lease shows one.
    leader: Option<(String, i64)>,
    /// The epoch of the last live lease seen.
    last_epoch: Option<i64>,
}

impl Leadership {
    pub fn new(instance_id: String, role: Role) -> Self {
        let leader = (role == Role::Single).then(|| (instance_id.clone(), 0));
        Self {
            instance_id,
            seen: Mutex::new(Seen {
                role,
                leader,
                last_epoch: None,
            }),
        }
    }

    /// A single instance on SQLite: always its own leader.
    pub fn single() -> Self {
        Self::new(crate::config::default_instance_id(), Role::Single)
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn role(&self) -> Role {
        self.seen().role
    }

    /// The current leader's instance id, if one holds a live lease.
    pub fn leader(&self) -> Option<String> {
        self.seen().leader.map(|(id, _)| id)
    }

    fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records what the lease showed; true when the leader changed since the
    /// last look (not on the first one).
    fn saw(&self, role: Role, leader: Option<(String, i64)>) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let epoch = leader.as_ref().map(|(_, epoch)| *epoch);
        let changed =
            matches!((seen.last_epoch, epoch), (Some(before), Some(now)) if before != now);
        seen.role = role;
        seen.leader = leader;
        seen.last_epoch = epoch.or(seen.last_epoch);
        changed
    }
}

/// Whether the leader may start a Paystar request: only until its lease, as
/// this instance's monotonic clock measures from the renewal last confirmed,
/// comes within the safety margin of its end. Checked before every request,
/// so a leader that wakes from a freeze sends nothing before it has renewed.
#[derive(Clone, Default)]
pub struct LeaseGate(Option<Arc<GateClock>>);

struct GateClock {
    base: Instant,
    /// Milliseconds after `base` until which requests may start; 0: closed.
    open_until: AtomicU64,
}

impl LeaseGate {
    /// Always open: a SQLite state has no lease.
    pub fn always_open() -> Self {
        Self(None)
    }

    /// Closed until the first [`LeaseGate::open_until`].
    pub fn closed() -> Self {
        Self(Some(Arc::new(GateClock {
            base: Instant::now(),
            open_until: AtomicU64::new(0),
        })))
    }

    pub fn may_send(&self) -> bool {
        match &self.0 {
            None => true,
            Some(clock) => {
                let now = clock.base.elapsed().as_millis() as u64;
                now < clock.open_until.load(Ordering::Acquire)
            }
        }
    }

    /// Requests may start until `deadline`.
    pub fn open_until(&self, deadline: Instant) {
        if let Some(clock) = &self.0 {
            let ms = deadline.saturating_duration_since(clock.base).as_millis() as u64;
            clock.open_until.store(ms, Ordering::Release);
        }
    }

    pub fn close(&self) {
        if let Some(clock) = &self.0 {
            clock.open_until.store(0, Ordering::Release);
        }
    }

    /// How long requests may still start (zero when closed).
    pub fn open_for(&self) -> Duration {
        match &self.0 {
            None => Duration::MAX,
            Some(clock) => {
                let now = clock.base.elapsed().as_millis() as u64;
                Duration::from_millis(clock.open_until.load(Ordering::Acquire).saturating_sub(now))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_until_its_deadline_and_closes_at_once_when_told() {
        let gate = LeaseGate::closed();
        assert!(!gate.may_send(), "a new gate starts closed");
        gate.open_until(Instant::now() + Duration::from_secs(60));
        assert!(gate.may_send());
        assert!(gate.open_for() > Duration::from_secs(59));
        gate.open_until(Instant::now());
        assert!(!gate.may_send(), "a deadline in the past closes it");
        gate.open_until(Instant::now() + Duration::from_secs(60));
        gate.close();
        assert!(!gate.may_send());
        assert!(LeaseGate::always_open().may_send());
    }

    #[test]
    fn a_change_of_leader_is_counted_from_the_second_look_on() {
        let l = Leadership::new("a".into(), Role::Standby);
        assert!(
            !l.saw(Role::Standby, Some(("b".into(), 1))),
            "the first look is no change"
        );
        assert!(!l.saw(Role::Standby, Some(("b".into(), 1))));
        assert!(l.saw(Role::Leader, Some(("a".into(), 2))));
        assert_eq!(l.leader().as_deref(), Some("a"));
        assert_eq!(l.role(), Role::Leader);
        assert!(!l.saw(Role::Standby, None), "no live lease: no leader");
        assert_eq!(l.leader(), None);
        assert!(
            l.saw(Role::Standby, Some(("b".into(), 3))),
            "compared with the last live one"
        );
    }
}
