//! Each customer's story: events sent, holds, approvals, provider stops;
//! the manifest versions delivery lines name; retention.

use super::*;

/// The manifest versions one transaction's history lines name, by id: each is
/// looked up (or added) once per transaction.
#[derive(Default)]
pub(super) struct ManifestVersions<'a> {
    known: HashMap<&'a ManifestVersion, i64>,
}

impl<'a> ManifestVersions<'a> {
    /// The id of `version`, added if no line named it before.
    pub fn id(&mut self, tx: &Connection, version: &'a ManifestVersion) -> DbResult<i64> {
        if let Some(&id) = self.known.get(version) {
            return Ok(id);
        }
        let v = params![
            version.path,
            version.sha256,
            version.git_commit,
            version.git_author
        ];
        let found = tx
            .prepare_cached(
                "SELECT id FROM manifest_versions WHERE path = ?1 AND sha256 IS ?2
                   AND git_commit IS ?3 AND git_author IS ?4 ORDER BY id LIMIT 1",
            )?
            .query_row(v, |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => tx
                .prepare_cached(
                    "INSERT INTO manifest_versions (path, sha256, git_commit, git_author)
                     VALUES (?1, ?2, ?3, ?4) RETURNING id",
                )?
                .query_row(v, |r| r.get(0))?,
        };
        self.known.insert(version, id);
        Ok(id)
    }
}

impl Db {
    /// The sub-accounts the state knows under one account (at most 20, in order).
    pub fn sub_accounts(&self, business_unit: &str, account: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sub_account FROM desired WHERE business_unit = ?1 AND account = ?2 AND sub_account <> ''
             UNION SELECT sub_account FROM history WHERE business_unit = ?1 AND account = ?2 AND sub_account <> ''
             ORDER BY 1 LIMIT 20",
        )?;
        let rows = stmt.query_map(params![business_unit, account], |r| r.get(0))?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// One customer's history, oldest first.
    pub fn history(&self, key: KeyRef<'_>) -> Result<Vec<HistoryRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT h.at_ms, h.kind, h.event_type, h.detail,
                    v.id IS NOT NULL, v.path, v.sha256, v.git_commit, v.git_author
             FROM history h LEFT JOIN manifest_versions v ON v.id = h.manifest_version
             WHERE h.business_unit = ?1 AND h.account = ?2 AND h.sub_account = ?3 ORDER BY h.id",
        )?;
        let rows = stmt.query_map(
            params![key.business_unit, key.account, key.sub_account],
            |r| {
                let manifest = if r.get(4)? {
                    Some(ManifestVersion {
                        path: r.get(5)?,
                        sha256: r.get(6)?,
                        git_commit: r.get(7)?,
                        git_author: r.get(8)?,
                    })
                } else {
                    None
                };
                Ok(HistoryRecord::from_stored(
                    key,
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    manifest,
                ))
            },
        )?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// Drops history older than `before_ms`, walking it in the order it was
    /// written: every line before the first one at or after `before_ms`.
    /// Returns how many lines. A line written under a clock that stepped back
    /// is kept until the lines before it go; none is dropped early.
    pub fn prune_history(&mut self, before_ms: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM history WHERE id < COALESCE(
               (SELECT id FROM history WHERE at_ms >= ?1 ORDER BY id LIMIT 1),
               (SELECT MAX(id) + 1 FROM history))",
            [before_ms],
        )?)
    }
}
