//! Unenrolls held by the mass-change guard, and their approval.

use super::*;

impl Db {
    /// Releases the held unenrolls of `cause` (all when `None`) into the
    /// queue; returns how many.
    pub fn approve(&mut self, cause: Option<&str>, actor: &str, now_ms: i64) -> Result<usize> {
        self.approve_in(cause, actor, now_ms)
            .step("approving held unenrolls")
    }

    fn approve_in(&mut self, cause: Option<&str>, actor: &str, now_ms: i64) -> DbResult<usize> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
             SELECT business_unit, account, sub_account, ?1, 'approved', 'Accounts.UnenrollAutopay',
                    json_object('cause', cause, 'actor', ?3)
             FROM holds WHERE ?2 IS NULL OR cause = ?2",
            params![now_ms, cause, actor],
        )?;
        tx.execute(
            "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
             SELECT business_unit, account, sub_account, 'pending', 0, ?1, ?1 FROM holds
             WHERE ?2 IS NULL OR cause = ?2
             ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
               state = CASE WHEN state = 'parked' THEN 'pending' ELSE state END,
               version = version + 1",
            params![now_ms, cause],
        )?;
        let count = tx.execute("DELETE FROM holds WHERE ?1 IS NULL OR cause = ?1", [cause])?;
        tx.commit()?;
        Ok(count)
    }

    /// Held unenrolls by cause, most first.
    pub fn holds_by_cause(&self) -> Result<Vec<HoldCause>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT cause, COUNT(*) FROM holds GROUP BY cause ORDER BY COUNT(*) DESC, cause",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(HoldCause {
                cause: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
            })
        })?;
        Ok(rows.collect::<DbResult<_>>()?)
    }
}
