//! Each customer's story: events sent, holds, approvals, provider stops;
//! retention.

use super::*;

impl Db {
    /// One customer's history, oldest first.
    pub fn history(&self, key: KeyRef<'_>) -> Result<Vec<HistoryRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at_ms, kind, event_type, detail FROM history
             WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3 ORDER BY id",
        )?;
        let rows = stmt.query_map(
            params![key.business_unit, key.account, key.sub_account],
            |r| {
                Ok(HistoryRecord::from_stored(
                    key,
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ))
            },
        )?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// Drops history older than `before_ms`; returns how many lines.
    pub fn prune_history(&mut self, before_ms: i64) -> Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM history WHERE at_ms < ?1", [before_ms])?)
    }
}
