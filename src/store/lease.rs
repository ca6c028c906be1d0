//! The leader lease (SPEC §12): what the state layer offers the election.
//! Only PostgreSQL holds a lease; a SQLite state has one instance, which is
//! always its leader, and these calls answer so.

use super::*;
use std::time::Duration;

/// The lease row as the database saw it, times on the database's clock, so
/// that instances whose clocks disagree agree on who leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: String,
    /// Moves on every takeover: the fencing token.
    pub epoch: i64,
    pub acquired_ms: i64,
    pub renewed_ms: i64,
    pub expires_ms: i64,
    /// The database's clock when this was read.
    pub now_ms: i64,
    /// The leader's build (`0.1.0+commit`), where it named one.
    pub version: Option<String>,
}

impl LeaseView {
    /// Whether the lease still holds.
    pub fn live(&self) -> bool {
        self.expires_ms > self.now_ms
    }

    /// How long it still holds (zero once it has run out).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis((self.expires_ms - self.now_ms).max(0) as u64)
    }
}

/// What trying to take the lease found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseLook {
    /// This instance leads now, under the returned epoch.
    Acquired(LeaseView),
    /// Another instance (or another run of this one) holds a live lease.
    Held(LeaseView),
    /// The lease ran out, but its holder's last writes had not finished: try again.
    Busy,
    /// The state was upgraded to this schema version by a newer paystar-sync:
    /// this instance must not lead.
    Upgraded(i64),
}

/// What renewing the lease found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// It ran out, or another instance took it.
    Lost,
    /// The state was upgraded to this schema version by a newer paystar-sync;
    /// the lease is released.
    Upgraded(i64),
}

impl LeaseLook {
    /// What an instance that finds the state upgraded past it says.
    pub fn upgraded_message(version: i64) -> String {
        format!(
            "the state was upgraded to v{version} by a newer paystar-sync; upgrade this instance ({})",
            crate::build_info::describe()
        )
    }
}

impl Store {
    /// Takes the lease for `holder` for `ttl` if nobody holds a live one.
    pub fn lease_try_acquire(&mut self, holder: &str, ttl: Duration) -> Result<LeaseLook> {
        match &mut self.0 {
            Backend::Sqlite(_) => Ok(LeaseLook::Acquired(single(holder))),
            Backend::Postgres(db) => db.lease_try_acquire(holder, ttl),
        }
    }

    /// Extends the lease of `epoch` by `ttl` from now, unless it was lost (it
    /// ran out, or another instance took it) or the state was upgraded past
    /// this build (then it is released).
    pub fn lease_renew(&mut self, epoch: i64, ttl: Duration) -> Result<Renewal> {
        match &mut self.0 {
            Backend::Sqlite(_) => Ok(Renewal::Renewed),
            Backend::Postgres(db) => db.lease_renew(epoch, ttl),
        }
    }

    /// Ends the lease of `epoch` now, so that a standby takes over at its next look.
    pub fn lease_release(&mut self, epoch: i64) -> Result<()> {
        match &mut self.0 {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(db) => db.lease_release(epoch),
        }
    }

    /// The lease as it stands; `None` with SQLite, or before anyone led.
    pub fn lease(&self) -> Result<Option<LeaseView>> {
        match &self.0 {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(db) => db.lease(),
        }
    }

    /// From now on, this session writes only while `epoch` holds a live lease
    /// (every write fails with [`StateError::is_fenced`] once it does not);
    /// `None` writes unfenced, as a standby's webhooks and the commands do.
    pub fn fence_writes(&mut self, epoch: Option<i64>) -> Result<()> {
        match &mut self.0 {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(db) => db.fence_writes(epoch),
        }
    }
}

fn single(holder: &str) -> LeaseView {
    LeaseView {
        holder: holder.to_owned(),
        epoch: 0,
        acquired_ms: 0,
        renewed_ms: 0,
        expires_ms: i64::MAX,
        now_ms: 0,
        version: Some(crate::build_info::short()),
    }
}
