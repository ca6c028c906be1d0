//! Committing a scan: files, errors, desired rows, queue entries, holds and
//! each changed file's held rows, in one transaction.

use super::*;

impl Db {
    /// Commits one scan: files, their errors, desired rows, queue entries,
    /// holds and the files' held rows, in one transaction.
    pub fn commit_scan<'w>(
        &mut self,
        now_ms: i64,
        files: &[FileWrite<'_>],
        writes: ScanWrites<
            impl IntoIterator<Item = DesiredWrite<'w>>,
            impl IntoIterator<Item = QueueWrite<'w>>,
            impl IntoIterator<Item = HoldWrite<'w>>,
            impl IntoIterator<Item = HeldWrite<'w>>,
        >,
        meta: &[(&str, String)],
    ) -> Result<()> {
        self.commit_scan_in(now_ms, files, writes, meta)
            .step("committing a scan")
    }

    fn commit_scan_in<'w>(
        &mut self,
        now_ms: i64,
        files: &[FileWrite<'_>],
        writes: ScanWrites<
            impl IntoIterator<Item = DesiredWrite<'w>>,
            impl IntoIterator<Item = QueueWrite<'w>>,
            impl IntoIterator<Item = HoldWrite<'w>>,
            impl IntoIterator<Item = HeldWrite<'w>>,
        >,
        meta: &[(&str, String)],
    ) -> DbResult<()> {
        let ScanWrites {
            desired,
            queue,
            holds,
            held,
        } = writes;
        let tx = self.conn.transaction()?;
        let mut ids: HashMap<String, i64> = HashMap::new();
        write_files(&tx, now_ms, files, &mut ids)?;
        write_desired(&tx, now_ms, desired, &mut ids)?;
        write_queue(&tx, now_ms, queue)?;
        write_holds(&tx, now_ms, holds)?;
        write_held(&tx, held, &mut ids)?;
        write_meta(&tx, meta)?;
        tx.commit()
    }
}

/// Each file's entry and, where given, its errors; records the files' ids.
fn write_files(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    files: &[FileWrite<'_>],
    ids: &mut HashMap<String, i64>,
) -> DbResult<()> {
    let mut upsert_file = tx.prepare_cached(
        "INSERT INTO files (path, present, size, mtime_ns, inode, sha256, clean, status, rows, scanned_at, ctime_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (path) DO UPDATE SET present = excluded.present, size = excluded.size,
           mtime_ns = excluded.mtime_ns, inode = excluded.inode, sha256 = excluded.sha256,
           ctime_ns = excluded.ctime_ns,
           clean = excluded.clean, status = excluded.status, rows = excluded.rows,
           scanned_at = excluded.scanned_at
         RETURNING id",
    )?;
    let mut clear_errors = tx.prepare_cached("DELETE FROM file_errors WHERE file_id = ?1")?;
    let mut insert_error = tx.prepare_cached(
        "INSERT INTO file_errors (file_id, seq, line, account, field, kind, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for file in files {
        let id: i64 = upsert_file.query_row(
            params![
                file.path,
                file.present,
                file.stat.map(|s| s.size as i64),
                file.stat.map(|s| s.mtime_ns),
                file.stat.map(|s| s.inode as i64),
                file.sha256.as_ref().map(|h| &h[..]),
                file.clean,
                if file.ok { "ok" } else { "error" },
                file.rows as i64,
                now,
                file.stat.map(|s| s.ctime_ns),
            ],
            |r| r.get(0),
        )?;
        ids.insert(file.path.to_owned(), id);
        if let Some(errors) = &file.errors {
            clear_errors.execute([id])?;
            for (seq, e) in errors.iter().enumerate() {
                insert_error.execute(params![
                    id,
                    seq as i64,
                    e.line,
                    e.account,
                    e.field,
                    e.kind.as_str(),
                    e.reason
                ])?;
            }
        }
    }
    Ok(())
}

/// Desired rows: live ones upserted, removed ones turned into tombstones.
fn write_desired<'w>(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    desired: impl IntoIterator<Item = DesiredWrite<'w>>,
    ids: &mut HashMap<String, i64>,
) -> DbResult<()> {
    let mut file_id = tx.prepare_cached("SELECT id FROM files WHERE path = ?1")?;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO desired (business_unit, account, sub_account, first_name, last_name, email,
                              autopay, removed, file_id, line, fingerprint, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11)
         ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
           first_name = excluded.first_name, last_name = excluded.last_name, email = excluded.email,
           autopay = excluded.autopay, removed = 0, file_id = excluded.file_id, line = excluded.line,
           fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
    )?;
    let mut remove = tx.prepare_cached(
        "UPDATE desired SET removed = 1, updated_at = ?4
         WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
    )?;
    for write in desired {
        match write {
            DesiredWrite::Live {
                key,
                fields,
                autopay,
                fingerprint,
                file,
                line,
            } => {
                let id = match ids.get(file) {
                    Some(id) => *id,
                    None => {
                        let id: i64 = file_id.query_row([file], |r| r.get(0))?;
                        ids.insert(file.to_owned(), id);
                        id
                    }
                };
                upsert.execute(params![
                    key.business_unit,
                    key.account,
                    key.sub_account,
                    fields.first_name,
                    fields.last_name,
                    fields.email,
                    autopay,
                    id,
                    line,
                    fingerprint,
                    now
                ])?;
            }
            DesiredWrite::Removed { key } => {
                remove.execute(params![
                    key.business_unit,
                    key.account,
                    key.sub_account,
                    now
                ])?;
            }
        }
    }
    Ok(())
}

/// Queue entries for keys that differ, none for keys that match.
/// Queues a key (?1–?3) at ?4: one that waits keeps its place and backoff; a
/// parked one is given another chance, because what it should be changed.
pub(super) const ENQUEUE: &str = "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
   VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)
   ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
     state = CASE WHEN state = 'parked' THEN 'pending' ELSE state END,
     attempts = CASE WHEN state = 'parked' THEN 0 ELSE attempts END,
     next_attempt_at = CASE WHEN state = 'parked' THEN excluded.next_attempt_at ELSE next_attempt_at END,
     version = version + 1";

fn write_queue<'w>(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    queue: impl IntoIterator<Item = QueueWrite<'w>>,
) -> DbResult<()> {
    let mut enqueue = tx.prepare_cached(ENQUEUE)?;
    let mut dequeue = tx.prepare_cached(
        "DELETE FROM queue WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
    )?;
    for q in queue {
        let key = params![q.key.business_unit, q.key.account, q.key.sub_account];
        if q.differs {
            enqueue.execute(params![
                q.key.business_unit,
                q.key.account,
                q.key.sub_account,
                now
            ])?;
        } else {
            dequeue.execute(key)?;
        }
    }
    Ok(())
}

/// Holds set or released, each with its history line.
fn write_holds<'w>(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    holds: impl IntoIterator<Item = HoldWrite<'w>>,
) -> DbResult<()> {
    let mut hold = tx.prepare_cached(
        "INSERT INTO holds (business_unit, account, sub_account, cause, held_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET cause = excluded.cause",
    )?;
    let mut release = tx.prepare_cached(
        "DELETE FROM holds WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
    )?;
    let mut history = tx.prepare_cached(
        "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, 'Accounts.UnenrollAutopay', ?6)",
    )?;
    for h in holds {
        let k = h.key;
        match &h.cause {
            Some(cause) => {
                hold.execute(params![
                    k.business_unit,
                    k.account,
                    k.sub_account,
                    cause,
                    now
                ])?;
                let detail = serde_json::json!({ "cause": cause }).to_string();
                history.execute(params![
                    k.business_unit,
                    k.account,
                    k.sub_account,
                    now,
                    "held",
                    detail
                ])?;
            }
            None => {
                if release.execute(params![k.business_unit, k.account, k.sub_account])? > 0 {
                    let detail =
                        serde_json::json!({ "cause": "the reason for the unenroll went away" })
                            .to_string();
                    history.execute(params![
                        k.business_unit,
                        k.account,
                        k.sub_account,
                        now,
                        "released",
                        detail
                    ])?;
                }
            }
        }
    }
    Ok(())
}

/// Each file's held rows: stored, or dropped.
fn write_held<'w>(
    tx: &rusqlite::Transaction<'_>,
    held: impl IntoIterator<Item = HeldWrite<'w>>,
    ids: &mut HashMap<String, i64>,
) -> DbResult<()> {
    let mut file_id = tx.prepare_cached("SELECT id FROM files WHERE path = ?1")?;
    // The value is written into a zeroed blob of its size by incremental I/O:
    // bound as a parameter, SQLite would copy it first.
    // Stamped with the file's generation and hash as they are after this
    // commit's writes to `desired`. The zeroblob is the row's last value and
    // given directly (not through a SELECT), so SQLite never allocates it.
    let mut stamps = tx.prepare_cached("SELECT generation, sha256 FROM files WHERE id = ?1")?;
    let mut store = tx.prepare_cached(
        "INSERT INTO held_rows (file_id, generation, sha256, data) VALUES (?1, ?2, ?3, zeroblob(?4))
         ON CONFLICT (file_id) DO UPDATE SET generation = excluded.generation,
             sha256 = excluded.sha256, data = excluded.data",
    )?;
    let mut drop = tx.prepare_cached("DELETE FROM held_rows WHERE file_id = ?1")?;
    for write in held {
        let id = match ids.get(write.path) {
            Some(id) => *id,
            None => match file_id.query_row([write.path], |r| r.get(0)).optional()? {
                Some(id) => id,
                None => continue, // never stored: nothing held
            },
        };
        match &write.rows {
            Some(data) => {
                let (generation, sha256): (i64, Option<Vec<u8>>) =
                    stamps.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                store.execute(params![id, generation, sha256, data.len() as i64])?;
                tx.blob_open(rusqlite::MAIN_DB, "held_rows", "data", id, false)?
                    .write_at(data, 0)?;
            }
            None => {
                drop.execute([id])?;
            }
        }
    }
    Ok(())
}

/// The scan's summary.
fn write_meta(tx: &rusqlite::Transaction<'_>, meta: &[(&str, String)]) -> DbResult<()> {
    let mut set_meta = tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?;
    for (key, value) in meta {
        set_meta.execute(params![key, value])?;
    }
    Ok(())
}
