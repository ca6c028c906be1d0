//! Whole-state facts (counts, meta), holds and their approval, history.

use super::*;

const IS_EMPTY: &str =
    "SELECT NOT (EXISTS (SELECT 1 FROM desired) OR EXISTS (SELECT 1 FROM acked))";
const COUNTS: &str = "SELECT
   (SELECT COUNT(*) FROM desired WHERE NOT removed),
   (SELECT COUNT(*) FROM desired WHERE removed),
   (SELECT COUNT(*) FROM acked),
   (SELECT COUNT(*) FROM queue WHERE state = 'pending'),
   (SELECT COUNT(*) FROM queue WHERE state = 'retrying'),
   (SELECT COUNT(*) FROM queue WHERE state = 'parked'),
   (SELECT COUNT(*) FROM holds)";
const SET_META: &str = "INSERT INTO meta (key, value) VALUES ($1, $2)
   ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const META: &str = "SELECT value FROM meta WHERE key = $1";
const HISTORY: &str = "SELECT h.at_ms, h.kind, h.event_type, h.detail,
     v.id IS NOT NULL, v.path, v.sha256, v.git_commit, v.git_author
   FROM history h LEFT JOIN manifest_versions v ON v.id = h.manifest_version
   WHERE h.business_unit = $1 AND h.account = $2 AND h.sub_account = $3 ORDER BY h.id";
/// Every line before the first one at or after the cutoff, in the order
/// written: see the SQLite backend's `prune_history`.
const PRUNE_HISTORY: &str = "DELETE FROM history WHERE id < COALESCE(
     (SELECT id FROM history WHERE at_ms >= $1 ORDER BY id LIMIT 1),
     (SELECT MAX(id) + 1 FROM history))";

impl Db {
    pub fn is_empty(&self) -> Result<bool> {
        let mut c = self.conn();
        let s = c.prepare(IS_EMPTY)?;
        Ok(c.client.query_one(&s, &[])?.get(0))
    }

    /// Takes and releases a write transaction (refused on a read-only session
    /// or a read-only server).
    pub fn check_writable(&mut self) -> Result<()> {
        let client = self.client();
        let mut tx = client.transaction()?;
        tx.batch_execute("SET TRANSACTION READ WRITE; LOCK TABLE meta IN ROW EXCLUSIVE MODE")?;
        Ok(tx.rollback()?)
    }

    pub fn live_count(&self) -> Result<u64> {
        let mut c = self.conn();
        let n: i64 = c
            .client
            .query_one("SELECT COUNT(*) FROM desired WHERE NOT removed", &[])?
            .get(0);
        Ok(count(n))
    }

    pub fn counts(&self) -> Result<Counts> {
        let mut c = self.conn();
        let s = c.prepare(COUNTS)?;
        let r = c.client.query_one(&s, &[]).step("counting the state")?;
        Ok(Counts {
            desired: count(r.get(0)),
            removed: count(r.get(1)),
            acknowledged: count(r.get(2)),
            pending: count(r.get(3)),
            retrying: count(r.get(4)),
            parked: count(r.get(5)),
            held: count(r.get(6)),
        })
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        let mut c = self.conn();
        let s = c.prepare(SET_META)?;
        c.client.execute(&s, &[&key, &value])?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        let mut c = self.conn();
        let s = c.prepare(META)?;
        Ok(c.client.query_opt(&s, &[&key])?.map(|r| r.get(0)))
    }

    /// Releases every held unenroll into the queue; returns how many.
    pub fn approve(&mut self, cause: Option<&str>, actor: &str, now_ms: i64) -> Result<usize> {
        let step = "approving held unenrolls";
        let client = self.client();
        let mut tx = client.transaction().step(step)?;
        tx.execute(
            "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
             SELECT business_unit, account, sub_account, $1, 'approved', 'Accounts.UnenrollAutopay',
                    json_build_object('cause', cause, 'actor', $3::text)::text
             FROM holds WHERE $2::text IS NULL OR cause = $2
             ORDER BY business_unit, account, sub_account",
            &[&now_ms, &cause, &actor],
        )
        .step(step)?;
        tx.execute(
            "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
             SELECT business_unit, account, sub_account, 'pending', 0, $1, $1 FROM holds
             WHERE $2::text IS NULL OR cause = $2
             ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
               state = CASE WHEN queue.state = 'parked' THEN 'pending' ELSE queue.state END,
               version = queue.version + 1",
            &[&now_ms, &cause],
        )
        .step(step)?;
        let n = tx
            .execute(
                "DELETE FROM holds WHERE $1::text IS NULL OR cause = $1",
                &[&cause],
            )
            .step(step)?;
        tx.commit().step(step)?;
        Ok(n as usize)
    }

    pub fn holds_by_cause(&self) -> Result<Vec<HoldCause>> {
        let mut c = self.conn();
        let rows = c.client.query(
            "SELECT cause, COUNT(*) FROM holds GROUP BY cause ORDER BY COUNT(*) DESC, cause COLLATE \"C\"",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| HoldCause {
                cause: r.get(0),
                count: count(r.get(1)),
            })
            .collect())
    }

    /// The sub-accounts the state knows under one account (at most 20, in order).
    pub fn sub_accounts(&self, business_unit: &str, account: &str) -> Result<Vec<String>> {
        let mut c = self.conn();
        let rows = c
            .client
            .query(
                "SELECT sub_account FROM desired WHERE business_unit = $1 AND account = $2 AND sub_account <> ''
                 UNION SELECT sub_account FROM history WHERE business_unit = $1 AND account = $2 AND sub_account <> ''
                 ORDER BY 1 LIMIT 20",
                &[&business_unit, &account],
            )
            .step("listing an account's sub-accounts")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub fn history(&self, key: KeyRef<'_>) -> Result<Vec<HistoryRecord>> {
        let mut c = self.conn();
        let s = c.prepare(HISTORY)?;
        let rows = c
            .client
            .query(&s, &[&key.business_unit, &key.account, &key.sub_account])
            .step("reading a customer's history")?;
        Ok(rows
            .iter()
            .map(|r| {
                let manifest = r.get::<_, bool>(4).then(|| ManifestVersion {
                    path: r.get(5),
                    sha256: r.get(6),
                    git_commit: r.get(7),
                    git_author: r.get(8),
                });
                HistoryRecord::from_stored(key, r.get(0), r.get(1), r.get(2), r.get(3), manifest)
            })
            .collect())
    }

    pub fn prune_history(&mut self, before_ms: i64) -> Result<usize> {
        let n = self
            .client()
            .execute(PRUNE_HISTORY, &[&before_ms])
            .step("pruning history")?;
        Ok(n as usize)
    }
}
