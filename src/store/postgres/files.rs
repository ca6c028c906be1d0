//! Manifest files as last read: the file index, each file's errors and rows,
//! Git provenance.

use super::*;
use crate::manifest::{ErrorKind, FileStat, ManifestError};

const FILE_INDEX: &str = "SELECT id, path, present, size, mtime_ns, inode, sha256, clean, status, rows, scanned_at, ctime_ns FROM files";
const FILE_ERRORS: &str = "SELECT f.path, e.line, e.account, e.field, e.kind, e.reason, e.file_id
   FROM file_errors e JOIN files f ON f.id = e.file_id
   WHERE e.file_id = ANY($1) ORDER BY e.file_id, e.seq";
const FILE_ROWS: &str = "SELECT business_unit, account, sub_account, fingerprint, line, removed
   FROM desired WHERE file_id = $1
   ORDER BY business_unit, account, sub_account";
/// The value's size, and whether its stamps still match the file's (its
/// generation, moved by every write of the file's rows, and its content hash).
const STALE_HELD_ROWS: &str = "SELECT f.path FROM held_rows h JOIN files f ON f.id = h.file_id
   WHERE NOT (h.generation IS NOT DISTINCT FROM f.generation AND h.sha256 IS NOT DISTINCT FROM f.sha256)
   ORDER BY f.path";
const HELD_ROWS_SIZE: &str = "SELECT octet_length(h.data),
       h.generation IS NOT DISTINCT FROM f.generation AND h.sha256 IS NOT DISTINCT FROM f.sha256
   FROM held_rows h JOIN files f ON f.id = h.file_id WHERE h.file_id = $1";
/// Bytes of a stored value per query.
const HELD_ROWS_CHUNK: usize = 1 << 20;
const HELD_ROWS_PART: &str =
    "SELECT substring(data FROM $2 FOR $3) FROM held_rows WHERE file_id = $1";
/// Rows per fetch of a file's rows.
const FILE_ROWS_CHUNK: i32 = 10_000;

impl Db {
    pub fn stale_held_rows(&self) -> Result<Vec<String>> {
        let mut c = self.conn();
        let s = c.prepare(STALE_HELD_ROWS)?;
        let rows = c.client.query(&s, &[]).step("finding stale held rows")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub fn file_index(&self) -> Result<HashMap<String, FileEntry>> {
        let mut c = self.conn();
        let s = c.prepare(FILE_INDEX)?;
        let rows = c.client.query(&s, &[]).step("reading the file index")?;
        Ok(rows
            .iter()
            .map(|r| {
                let size: Option<i64> = r.get(3);
                let mtime_ns: Option<i64> = r.get(4);
                let inode: Option<i64> = r.get(5);
                let sha: Option<Vec<u8>> = r.get(6);
                let ctime_ns: Option<i64> = r.get(11);
                (
                    r.get::<_, String>(1),
                    FileEntry {
                        id: r.get(0),
                        present: r.get(2),
                        stat: FileStat::from_stored(size, mtime_ns, inode, ctime_ns),
                        sha256: sha.and_then(|s| s.try_into().ok()),
                        clean: r.get(7),
                        ok: r.get::<_, &str>(8) == "ok",
                        rows: count(r.get(9)),
                        scanned_at: r.get(10),
                    },
                )
            })
            .collect())
    }

    /// The stored errors of the given files, in the order given, each file's in line order.
    pub fn file_errors(&self, file_ids: &[i64]) -> Result<Vec<ManifestError>> {
        let mut c = self.conn();
        let s = c.prepare(FILE_ERRORS)?;
        let rows = c
            .client
            .query(&s, &[&file_ids])
            .step("reading file errors")?;
        let mut by_file: HashMap<i64, Vec<ManifestError>> = HashMap::new();
        for r in &rows {
            by_file.entry(r.get(6)).or_default().push(ManifestError {
                file: r.get(0),
                line: line(r.get(1)),
                account: r.get(2),
                field: r.get(3),
                kind: ErrorKind::parse(r.get(4)).unwrap_or(ErrorKind::Row),
                reason: r.get(5),
            });
        }
        Ok(file_ids
            .iter()
            .flat_map(|id| by_file.remove(id).unwrap_or_default())
            .collect())
    }

    /// Calls `f` for every desired row last read from `file_id`, in key order,
    /// fetched [`FILE_ROWS_CHUNK`] rows at a time from one portal: the sync
    /// driver enters its runtime once per fetch, where a streamed query
    /// entered it once per row (for a million rows, more than the server's
    /// own reading cost).
    pub fn for_each_file_row(&self, file_id: i64, mut f: impl FnMut(PrevRow<'_>)) -> Result<()> {
        let step = "reading a file's rows";
        let mut c = self.conn();
        let Conn { client, statements } = &mut *c;
        let s = prepare(client, statements, FILE_ROWS).step(step)?;
        let mut tx = client.transaction().step(step)?;
        let portal = tx.bind(&s, &[&file_id]).step(step)?;
        loop {
            let rows = tx.query_portal(&portal, FILE_ROWS_CHUNK).step(step)?;
            for r in &rows {
                f(PrevRow {
                    key: KeyRef {
                        business_unit: r.get(0),
                        account: r.get(1),
                        sub_account: r.get(2),
                    },
                    fingerprint: r.get(3),
                    line: line(r.get(4)),
                    removed: r.get(5),
                });
            }
            if rows.len() < FILE_ROWS_CHUNK as usize {
                return tx.commit().step(step);
            }
        }
    }

    /// The file's held rows as the last commit that changed them stored
    /// them; `None` where there are none, or they do not read back (then
    /// they are read from `desired`). Read part by part (`substring` of the
    /// uncompressed value fetches only its part) in one snapshot, so that
    /// the driver never holds the whole value beside the rows read from it.
    pub fn stored_held_rows(&self, file_id: i64) -> Result<Option<HeldRows>> {
        let step = "reading a file's held rows";
        let mut c = self.conn();
        let Conn { client, statements } = &mut *c;
        let mut tx = client
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .start()
            .step(step)?;
        let size = prepare(&mut tx, statements, HELD_ROWS_SIZE).step(step)?;
        let Some(row) = tx.query_opt(&size, &[&file_id]).step(step)? else {
            return Ok(None);
        };
        if !row.get::<_, bool>(1) {
            return Ok(held::stale(file_id));
        }
        let len: i32 = row.get(0);
        let part = prepare(&mut tx, statements, HELD_ROWS_PART).step(step)?;
        let mut failure = None;
        let held = HeldRows::read(usize::try_from(len).unwrap_or(0), |buf, at| {
            // A megabyte a query: the driver's buffer grows to the largest
            // message and keeps that size for the session's life.
            for (i, chunk) in buf.chunks_mut(HELD_ROWS_CHUNK).enumerate() {
                let from = i32::try_from(at + i * HELD_ROWS_CHUNK + 1).ok()?;
                let count = i32::try_from(chunk.len()).ok()?;
                match tx.query_one(&part, &[&file_id, &from, &count]) {
                    Ok(row) => {
                        let bytes: &[u8] = row.get(0);
                        if bytes.len() != chunk.len() {
                            return None;
                        }
                        chunk.copy_from_slice(bytes);
                    }
                    Err(err) => {
                        failure = Some(err);
                        return None;
                    }
                }
            }
            Some(())
        });
        if let Some(err) = failure {
            return Err(err).step(step);
        }
        tx.commit().step(step)?;
        Ok(held::decoded(file_id, held, len as usize))
    }

    pub fn present_file_error_count(&self) -> Result<u64> {
        let mut c = self.conn();
        let n: i64 = c
            .client
            .query_one(
                "SELECT COUNT(*) FROM file_errors e JOIN files f ON f.id = e.file_id WHERE f.present",
                &[],
            )
            .step("counting file errors")?
            .get(0);
        Ok(n.max(0) as u64)
    }

    pub fn present_file_errors(&self) -> Result<Vec<ManifestError>> {
        let ids: Vec<i64> = {
            let mut c = self.conn();
            c.client
                .query("SELECT id FROM files WHERE present ORDER BY path", &[])
                .step("reading file errors")?
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        self.file_errors(&ids)
    }

    pub fn set_git_provenance(
        &mut self,
        files: &[crate::manifest::git::GitProvenance],
    ) -> Result<()> {
        let paths: Vec<&str> = files.iter().map(|f| f.file.as_str()).collect();
        let commits: Vec<&str> = files.iter().map(|f| f.commit.as_str()).collect();
        let authors: Vec<&str> = files.iter().map(|f| f.author.as_str()).collect();
        self.client()
            .execute(
                "UPDATE files SET git_commit = g.commit, git_author = g.author
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS g(path, commit, author)
                 WHERE files.path = g.path",
                &[&paths, &commits, &authors],
            )
            .step("recording Git provenance")?;
        Ok(())
    }
}
