//! Manifest files as last read: the file index, each file's errors and rows,
//! Git provenance.

use super::*;

impl Db {
    pub fn file_index(&self) -> Result<HashMap<String, FileEntry>> {
        self.file_index_in().step("reading the file index")
    }

    fn file_index_in(&self) -> DbResult<HashMap<String, FileEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, path, present, size, mtime_ns, inode, sha256, clean, status, rows, scanned_at, ctime_ns FROM files",
        )?;
        let rows = stmt.query_map([], |r| {
            let size: Option<i64> = r.get(3)?;
            let mtime_ns: Option<i64> = r.get(4)?;
            let inode: Option<i64> = r.get(5)?;
            let sha: Option<Vec<u8>> = r.get(6)?;
            let ctime_ns: Option<i64> = r.get(11)?;
            Ok((
                r.get::<_, String>(1)?,
                FileEntry {
                    id: r.get(0)?,
                    present: r.get(2)?,
                    stat: FileStat::from_stored(size, mtime_ns, inode, ctime_ns),
                    sha256: sha.and_then(|s| s.try_into().ok()),
                    clean: r.get(7)?,
                    ok: r.get::<_, String>(8)? == "ok",
                    rows: r.get::<_, i64>(9)? as u64,
                    scanned_at: r.get(10)?,
                },
            ))
        })?;
        rows.collect::<DbResult<_>>()
    }

    /// The stored errors of the given files, in file and line order.
    pub fn file_errors(&self, file_ids: &[i64]) -> Result<Vec<ManifestError>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.path, e.line, e.account, e.field, e.kind, e.reason
             FROM file_errors e JOIN files f ON f.id = e.file_id
             WHERE e.file_id = ?1 ORDER BY e.seq",
        )?;
        let mut out = Vec::new();
        for id in file_ids {
            let rows = stmt.query_map([id], |r| {
                Ok(ManifestError {
                    file: r.get(0)?,
                    line: r.get(1)?,
                    account: r.get(2)?,
                    field: r.get(3)?,
                    kind: ErrorKind::parse(&r.get::<_, String>(4)?).unwrap_or(ErrorKind::Row),
                    reason: r.get(5)?,
                })
            })?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }

    /// Calls `f` for every desired row last read from `file_id`, in key order.
    pub fn for_each_file_row(&self, file_id: i64, mut f: impl FnMut(PrevRow<'_>)) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT business_unit, account, sub_account, fingerprint, line, removed
             FROM desired WHERE file_id = ?1
             ORDER BY business_unit, account, sub_account",
        )?;
        let mut rows = stmt.query([file_id])?;
        while let Some(r) = rows.next()? {
            f(PrevRow {
                key: KeyRef {
                    business_unit: r.get_ref(0)?.as_str()?,
                    account: r.get_ref(1)?.as_str()?,
                    sub_account: r.get_ref(2)?.as_str()?,
                },
                fingerprint: r.get(3)?,
                line: r.get(4)?,
                removed: r.get(5)?,
            });
        }
        Ok(())
    }

    /// The file's held rows as the last commit that changed them stored
    /// them; `None` where there are none, or they do not read back (then
    /// they are read from `desired`). Read by incremental blob I/O, each part
    /// straight into place, so the value is never in memory twice.
    pub fn stored_held_rows(&self, file_id: i64) -> Result<Option<HeldRows>> {
        let step = "reading a file's held rows";
        // The value's type is in its record's header: its bytes are not read.
        // Used only while its stamps match the file's: its generation (moved
        // by every write of the file's rows) and its content hash.
        let kind: Option<(String, bool)> = self
            .conn
            .prepare_cached(
                "SELECT typeof(h.data), h.generation IS f.generation AND h.sha256 IS f.sha256
                   FROM held_rows h JOIN files f ON f.id = h.file_id WHERE h.file_id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([file_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .step(step)?;
        match kind {
            None => return Ok(None),
            Some((_, false)) => return Ok(held::stale(file_id)),
            Some((kind, true)) if kind == "blob" => {}
            Some(_) => return Ok(held::decoded(file_id, None, 0)),
        }
        let blob = self
            .conn
            .blob_open(rusqlite::MAIN_DB, "held_rows", "data", file_id, true)
            .step(step)?;
        let len = blob.len();
        let mut failure = None;
        let held = HeldRows::read(len, |buf, at| {
            blob.read_at_exact(buf, at)
                .map_err(|err| failure = Some(err))
                .ok()
        });
        if let Some(err) = failure {
            return Err(err).step(step);
        }
        Ok(held::decoded(file_id, held, len))
    }

    pub fn stale_held_rows(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT f.path FROM held_rows h JOIN files f ON f.id = h.file_id
                  WHERE NOT (h.generation IS f.generation AND h.sha256 IS f.sha256) ORDER BY f.path",
            )
            .step("finding stale held rows")?;
        let paths = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<DbResult<Vec<String>>>())
            .step("finding stale held rows")?;
        Ok(paths)
    }

    /// The stored errors of every file still present.
    pub fn present_file_error_count(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM file_errors e JOIN files f ON f.id = e.file_id WHERE f.present = 1",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    pub fn present_file_errors(&self) -> Result<Vec<ManifestError>> {
        let ids: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM files WHERE present = 1 ORDER BY path")?
            .query_map([], |r| r.get(0))?
            .collect::<DbResult<_>>()?;
        self.file_errors(&ids)
    }

    /// Records the last Git commit and author of manifest files.
    pub fn set_git_provenance(
        &mut self,
        files: &[crate::manifest::git::GitProvenance],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE files SET git_commit = ?2, git_author = ?3 WHERE path = ?1",
            )?;
            for f in files {
                stmt.execute(params![f.file, f.commit, f.author])?;
            }
        }
        Ok(tx.commit()?)
    }
}
