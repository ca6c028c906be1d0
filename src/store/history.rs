//! Each customer's story: events sent, holds, approvals, provider stops;
//! retention.

use super::*;

/// One line of a customer's story.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// `delivered`, `retry`, `parked`, `held`, `approved` or `released`.
    pub kind: &'static str,
    pub event_type: Option<&'static str>,
    /// JSON: provenance, request, response.
    pub detail: String,
}

/// A stored history line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HistoryRecord {
    pub at_ms: i64,
    pub kind: String,
    pub event_type: Option<String>,
    pub detail: serde_json::Value,
}

impl Store {
    /// One customer's history, oldest first.
    pub fn history(&self, key: KeyRef<'_>) -> Result<Vec<HistoryRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at_ms, kind, event_type, detail FROM history
             WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3 ORDER BY id",
        )?;
        let rows = stmt.query_map(
            params![key.business_unit, key.account, key.sub_account],
            |r| {
                let detail: String = r.get(3)?;
                Ok(HistoryRecord {
                    at_ms: r.get(0)?,
                    kind: r.get(1)?,
                    event_type: r.get(2)?,
                    detail: serde_json::from_str(&detail)
                        .unwrap_or(serde_json::Value::String(detail)),
                })
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
