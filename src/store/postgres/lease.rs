//! The leader lease row, and the session setting that fences this session's
//! writes to one epoch (the `fence` trigger of migration v3 checks it).

use super::*;
use std::time::Duration;

/// The SQLSTATE the fence raises when a fenced session writes without a live lease.
pub(in crate::store) const FENCED: &str = "PSF01";

/// The SQLSTATE the fence raises when a session declares an older schema than
/// the state's (a binary older than the last migration that fences its writers).
pub(in crate::store) const OUTDATED: &str = "PSF02";

const LEASE: &str =
    "SELECT holder, epoch, acquired_ms, renewed_ms, expires_ms, lease_now_ms(), version
   FROM lease WHERE name = 'leader'";
const LOCK_LEASE: &str =
    "SELECT holder, epoch, acquired_ms, renewed_ms, expires_ms, lease_now_ms(), version
   FROM lease WHERE name = 'leader' FOR UPDATE";
const FIRST: &str =
    "INSERT INTO lease (name, holder, epoch, acquired_ms, renewed_ms, expires_ms, version)
   SELECT 'leader', $1, 1, n, n, n + $2, $3 FROM lease_now_ms() AS n
   ON CONFLICT (name) DO NOTHING
   RETURNING holder, epoch, acquired_ms, renewed_ms, expires_ms, lease_now_ms(), version";
const TAKE_OVER: &str = "UPDATE lease SET holder = $1, epoch = epoch + 1, version = $3,
     acquired_ms = lease_now_ms(), renewed_ms = lease_now_ms(), expires_ms = lease_now_ms() + $2
   WHERE name = 'leader'
   RETURNING holder, epoch, acquired_ms, renewed_ms, expires_ms, lease_now_ms(), version";
/// The newest schema the state was migrated to.
const SCHEMA: &str = "SELECT max(version) FROM schema_version";
const RENEW: &str = "UPDATE lease SET renewed_ms = lease_now_ms(), expires_ms = lease_now_ms() + $2
   WHERE name = 'leader' AND epoch = $1 AND expires_ms > lease_now_ms()";
const RELEASE: &str = "UPDATE lease SET expires_ms = lease_now_ms()
   WHERE name = 'leader' AND epoch = $1 AND expires_ms > lease_now_ms()";
const FENCE: &str = "SELECT set_config('paystar_sync.fence', $1, false)";

fn view(r: &::postgres::Row) -> LeaseView {
    LeaseView {
        holder: r.get(0),
        epoch: r.get(1),
        acquired_ms: r.get(2),
        renewed_ms: r.get(3),
        expires_ms: r.get(4),
        now_ms: r.get(5),
        version: r.get(6),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Db {
    pub fn lease(&self) -> Result<Option<LeaseView>> {
        let mut c = self.conn();
        let s = c.prepare(LEASE).step("reading the leader lease")?;
        let row = c
            .client
            .query_opt(&s, &[])
            .step("reading the leader lease")?;
        Ok(row.as_ref().map(view))
    }

    /// Reads the lease without a lock first: a standby looking at a live lease
    /// never queues behind the leader's writes (which share-lock the row).
    pub fn lease_try_acquire(&mut self, holder: &str, ttl: Duration) -> Result<LeaseLook> {
        let step = "taking the leader lease";
        if let Some(newer) = self.upgraded()? {
            return Ok(LeaseLook::Upgraded(newer));
        }
        if let Some(current) = self.lease()?
            && current.live()
        {
            return Ok(LeaseLook::Held(current));
        }
        let ttl = millis(ttl);
        let version = crate::build_info::short();
        let Conn { client, statements } = self.conn_mut();
        let mut tx = client.transaction().step(step)?;
        // The old leader's last transaction may still hold the row: wait a
        // moment, never long (the next look tries again).
        tx.batch_execute("SET LOCAL lock_timeout = '1s'")
            .step(step)?;
        let lock = prepare(&mut tx, statements, LOCK_LEASE).step(step)?;
        let current = match tx.query_opt(&lock, &[]) {
            Ok(row) => row.as_ref().map(view),
            Err(err) if err.code() == Some(&::postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                return Ok(LeaseLook::Busy);
            }
            Err(err) => return Err(err).step(step),
        };
        let taken = match current {
            Some(current) if current.live() => return Ok(LeaseLook::Held(current)),
            Some(_) => {
                let take = prepare(&mut tx, statements, TAKE_OVER).step(step)?;
                tx.query_one(&take, &[&holder, &ttl, &version]).step(step)?
            }
            None => {
                let first = prepare(&mut tx, statements, FIRST).step(step)?;
                match tx
                    .query_opt(&first, &[&holder, &ttl, &version])
                    .step(step)?
                {
                    Some(row) => row,
                    // Another instance took the first lease meanwhile.
                    None => return Ok(LeaseLook::Busy),
                }
            }
        };
        let taken = view(&taken);
        tx.commit().step(step)?;
        Ok(LeaseLook::Acquired(taken))
    }

    pub fn lease_renew(&mut self, epoch: i64, ttl: Duration) -> Result<Renewal> {
        let step = "renewing the leader lease";
        if let Some(newer) = self.upgraded()? {
            self.lease_release(epoch)?;
            return Ok(Renewal::Upgraded(newer));
        }
        let mut c = self.conn();
        let s = c.prepare(RENEW).step(step)?;
        let n = c.client.execute(&s, &[&epoch, &millis(ttl)]).step(step)?;
        Ok(if n == 1 {
            Renewal::Renewed
        } else {
            Renewal::Lost
        })
    }

    /// The schema version the state was upgraded to, where that is newer than
    /// this build knows: such an instance must not lead.
    fn upgraded(&self) -> Result<Option<i64>> {
        let step = "reading the state's schema version";
        let mut c = self.conn();
        let s = c.prepare(SCHEMA).step(step)?;
        let found: Option<i64> = c.client.query_one(&s, &[]).step(step)?.get(0);
        Ok(found.filter(|v| *v > VERSION))
    }

    pub fn lease_release(&mut self, epoch: i64) -> Result<()> {
        let step = "releasing the leader lease";
        let mut c = self.conn();
        let s = c.prepare(RELEASE).step(step)?;
        c.client.execute(&s, &[&epoch]).step(step)?;
        Ok(())
    }

    pub fn fence_writes(&mut self, epoch: Option<i64>) -> Result<()> {
        let step = "fencing this session's writes";
        let value = epoch.map(|e| e.to_string()).unwrap_or_default();
        let mut c = self.conn();
        let s = c.prepare(FENCE).step(step)?;
        c.client.query_one(&s, &[&value]).step(step)?;
        Ok(())
    }
}
