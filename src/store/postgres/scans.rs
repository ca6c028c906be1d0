//! Committing a scan: files, errors, desired rows, queue entries, holds, each
//! changed file's held rows and meta in one transaction, each kind of write
//! sent once per batch of rows.

use super::*;
use ::postgres::Transaction;

const UPSERT_FILES: &str = "INSERT INTO files (path, present, size, mtime_ns, inode, sha256, clean, status, rows, scanned_at, ctime_ns)
   SELECT path, present, size, mtime_ns, inode, sha256, clean, status, rows, $11, ctime_ns
   FROM unnest($1::text[], $2::bool[], $3::int8[], $4::int8[], $5::int8[], $6::bytea[], $7::bool[], $8::text[], $9::int8[], $10::int4[], $12::int8[])
        AS f(path, present, size, mtime_ns, inode, sha256, clean, status, rows, ord, ctime_ns)
   ORDER BY ord
   ON CONFLICT (path) DO UPDATE SET present = excluded.present, size = excluded.size,
     mtime_ns = excluded.mtime_ns, inode = excluded.inode, sha256 = excluded.sha256,
     ctime_ns = excluded.ctime_ns,
     clean = excluded.clean, status = excluded.status, rows = excluded.rows,
     scanned_at = excluded.scanned_at
   RETURNING id, path";
const CLEAR_ERRORS: &str = "DELETE FROM file_errors WHERE file_id = ANY($1)";
const INSERT_ERRORS: &str = "INSERT INTO file_errors (file_id, seq, line, account, field, kind, reason)
   SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[])";
const FILE_IDS: &str = "SELECT id, path FROM files WHERE path = ANY($1)";
const UPSERT_DESIRED: &str = "INSERT INTO desired (business_unit, account, sub_account, first_name, last_name, email,
                      autopay, removed, file_id, line, fingerprint, updated_at)
   SELECT b, a, s, fname, lname, email, autopay, false, file_id, line, fp, $11
   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::int8[], $9::int8[], $10::int8[])
        AS k(b, a, s, fname, lname, email, autopay, file_id, line, fp)
   ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
     first_name = excluded.first_name, last_name = excluded.last_name, email = excluded.email,
     autopay = excluded.autopay, removed = false, file_id = excluded.file_id, line = excluded.line,
     fingerprint = excluded.fingerprint, updated_at = excluded.updated_at";
const REMOVE_DESIRED: &str = "UPDATE desired d SET removed = true, updated_at = $4
   FROM unnest($1::text[], $2::text[], $3::text[]) AS k(b, a, s)
   WHERE d.business_unit = k.b AND d.account = k.a AND d.sub_account = k.s";
/// A key that waits keeps its place and backoff; a parked key is given another
/// chance because its desired state changed.
pub(super) const ENQUEUE: &str = "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
   SELECT b, a, s, 'pending', 0, $4, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(b, a, s)
   ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
     state = CASE WHEN queue.state = 'parked' THEN 'pending' ELSE queue.state END,
     attempts = CASE WHEN queue.state = 'parked' THEN 0 ELSE queue.attempts END,
     next_attempt_at = CASE WHEN queue.state = 'parked' THEN excluded.next_attempt_at ELSE queue.next_attempt_at END,
     version = queue.version + 1";
pub(super) const DEQUEUE: &str =
    "DELETE FROM queue q USING unnest($1::text[], $2::text[], $3::text[]) AS k(b, a, s)
   WHERE q.business_unit = k.b AND q.account = k.a AND q.sub_account = k.s";
const HOLD: &str = "WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS k(b, a, s, cause, ord)),
   held AS (INSERT INTO holds (business_unit, account, sub_account, cause, held_at)
            SELECT b, a, s, cause, $5 FROM k
            ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET cause = excluded.cause)
   INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
   SELECT b, a, s, $5, 'held', 'Accounts.UnenrollAutopay', json_build_object('cause', cause)::text FROM k ORDER BY ord";
const RELEASE: &str = "WITH released AS (
     DELETE FROM holds h USING unnest($1::text[], $2::text[], $3::text[]) AS k(b, a, s)
     WHERE h.business_unit = k.b AND h.account = k.a AND h.sub_account = k.s
     RETURNING h.business_unit, h.account, h.sub_account)
   INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
   SELECT business_unit, account, sub_account, $4, 'released', 'Accounts.UnenrollAutopay',
          json_build_object('cause', 'the reason for the unenroll went away')::text
   FROM released ORDER BY business_unit, account, sub_account";
const STORE_HELD: &str = "INSERT INTO held_rows (file_id, data, generation, sha256)
   SELECT $1, $2, generation, sha256 FROM files WHERE id = $1
   ON CONFLICT (file_id) DO UPDATE SET data = excluded.data,
       generation = excluded.generation, sha256 = excluded.sha256";
const DROP_HELD: &str = "DELETE FROM held_rows WHERE file_id = $1";
const SET_META: &str = "INSERT INTO meta (key, value) SELECT * FROM unnest($1::text[], $2::text[])
   ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The desired rows of one batch, as arrays.
#[derive(Default)]
struct DesiredBatch<'a> {
    keys: KeyColumns<'a>,
    first_name: Vec<&'a str>,
    last_name: Vec<&'a str>,
    email: Vec<&'a str>,
    autopay: Vec<Option<bool>>,
    file_id: Vec<i64>,
    line: Vec<i64>,
    fingerprint: Vec<i64>,
}

impl Db {
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
        let step = "committing a scan";
        let ScanWrites {
            desired,
            queue,
            holds,
            held,
        } = writes;
        let Conn { client, statements } = self.conn_mut();
        let mut tx = client.transaction().step(step)?;
        let mut ids = write_files(&mut tx, statements, now_ms, files).step(step)?;
        write_desired(&mut tx, statements, now_ms, &mut ids, desired).step(step)?;
        write_queue(&mut tx, statements, now_ms, queue).step(step)?;
        write_holds(&mut tx, statements, now_ms, holds).step(step)?;
        write_held(&mut tx, statements, &mut ids, held).step(step)?;
        let keys: Vec<&str> = meta.iter().map(|(k, _)| *k).collect();
        let values: Vec<&str> = meta.iter().map(|(_, v)| v.as_str()).collect();
        if !keys.is_empty() {
            let s = prepare(&mut tx, statements, SET_META).step(step)?;
            tx.execute(&s, &[&keys, &values]).step(step)?;
        }
        tx.commit().step(step)?;
        Ok(())
    }
}

type PgResult<T> = std::result::Result<T, ::postgres::Error>;

fn write_files(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<&'static str, Statement>,
    now_ms: i64,
    files: &[FileWrite<'_>],
) -> PgResult<HashMap<String, i64>> {
    let mut ids = HashMap::with_capacity(files.len());
    if files.is_empty() {
        return Ok(ids);
    }
    let upsert = prepare(tx, statements, UPSERT_FILES)?;
    for chunk in files.chunks(BATCH) {
        let path: Vec<&str> = chunk.iter().map(|f| f.path).collect();
        let present: Vec<bool> = chunk.iter().map(|f| f.present).collect();
        let size: Vec<Option<i64>> = chunk
            .iter()
            .map(|f| f.stat.map(|s| s.size as i64))
            .collect();
        let mtime: Vec<Option<i64>> = chunk.iter().map(|f| f.stat.map(|s| s.mtime_ns)).collect();
        let ctime: Vec<Option<i64>> = chunk.iter().map(|f| f.stat.map(|s| s.ctime_ns)).collect();
        let inode: Vec<Option<i64>> = chunk
            .iter()
            .map(|f| f.stat.map(|s| s.inode as i64))
            .collect();
        let sha: Vec<Option<&[u8]>> = chunk
            .iter()
            .map(|f| f.sha256.as_ref().map(|h| &h[..]))
            .collect();
        let clean: Vec<bool> = chunk.iter().map(|f| f.clean).collect();
        let status: Vec<&str> = chunk
            .iter()
            .map(|f| if f.ok { "ok" } else { "error" })
            .collect();
        let rows: Vec<i64> = chunk.iter().map(|f| f.rows as i64).collect();
        let ord: Vec<i32> = (0..chunk.len() as i32).collect();
        for r in tx.query(
            &upsert,
            &[
                &path, &present, &size, &mtime, &inode, &sha, &clean, &status, &rows, &ord,
                &now_ms, &ctime,
            ],
        )? {
            ids.insert(r.get::<_, String>(1), r.get::<_, i64>(0));
        }
    }
    let with_errors: Vec<(i64, &Vec<&ManifestErrorRef>)> = files
        .iter()
        .filter_map(|f| Some((ids[f.path], f.errors.as_ref()?)))
        .collect();
    if with_errors.is_empty() {
        return Ok(ids);
    }
    let clear = prepare(tx, statements, CLEAR_ERRORS)?;
    let cleared: Vec<i64> = with_errors.iter().map(|(id, _)| *id).collect();
    tx.execute(&clear, &[&cleared])?;
    let insert = prepare(tx, statements, INSERT_ERRORS)?;
    let errors: Vec<(i64, i64, &ManifestErrorRef)> = with_errors
        .iter()
        .flat_map(|(id, errors)| {
            errors
                .iter()
                .enumerate()
                .map(move |(seq, e)| (*id, seq as i64, *e))
        })
        .collect();
    for chunk in errors.chunks(BATCH) {
        let file_id: Vec<i64> = chunk.iter().map(|e| e.0).collect();
        let seq: Vec<i64> = chunk.iter().map(|e| e.1).collect();
        let line: Vec<Option<i64>> = chunk.iter().map(|e| e.2.line.map(i64::from)).collect();
        let account: Vec<Option<&str>> = chunk.iter().map(|e| e.2.account.as_deref()).collect();
        let field: Vec<Option<&str>> = chunk.iter().map(|e| e.2.field.as_deref()).collect();
        let kind: Vec<&str> = chunk.iter().map(|e| e.2.kind.as_str()).collect();
        let reason: Vec<&str> = chunk.iter().map(|e| e.2.reason.as_str()).collect();
        tx.execute(
            &insert,
            &[&file_id, &seq, &line, &account, &field, &kind, &reason],
        )?;
    }
    Ok(ids)
}

type ManifestErrorRef = crate::manifest::ManifestError;

/// A binary `COPY … FROM STDIN` of rows of `types`, in the transaction.
fn binary_copy<'t>(
    tx: &'t mut Transaction<'_>,
    sql: &str,
    types: &[::postgres::types::Type],
) -> PgResult<::postgres::binary_copy::BinaryCopyInWriter<'t>> {
    Ok(::postgres::binary_copy::BinaryCopyInWriter::new(
        tx.copy_in(sql)?,
        types,
    ))
}

/// Whether a table holds no row (a first import writes it by `COPY`).
fn is_empty(tx: &mut Transaction<'_>, table: &str) -> PgResult<bool> {
    let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {table})");
    Ok(tx.query_one(sql.as_str(), &[])?.get(0))
}

/// Streams the leading writes into an empty `desired` table by binary `COPY`,
/// as long as they are new rows in strictly increasing key order (so no key
/// repeats and none can conflict); returns the first write it did not take,
/// which the caller upserts with the rest.
fn copy_new_desired<'w>(
    tx: &mut Transaction<'_>,
    now_ms: i64,
    ids: &HashMap<String, i64>,
    writes: &mut impl Iterator<Item = DesiredWrite<'w>>,
) -> PgResult<Option<DesiredWrite<'w>>> {
    use ::postgres::types::Type;
    let mut copy = binary_copy(
        tx,
        "COPY desired (business_unit, account, sub_account, first_name, last_name, email,
                       autopay, removed, file_id, line, fingerprint, updated_at) FROM STDIN (FORMAT binary)",
        &[
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BOOL,
            Type::BOOL,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
        ],
    )?;
    let mut last: Option<KeyRef<'w>> = None;
    let mut left = None;
    for write in writes.by_ref() {
        let DesiredWrite::Live {
            key,
            fields,
            autopay,
            fingerprint,
            file,
            line,
        } = &write
        else {
            left = Some(write);
            break;
        };
        let (Some(id), true) = (ids.get(*file), last.is_none_or(|l| l < *key)) else {
            left = Some(write);
            break;
        };
        last = Some(*key);
        copy.write(&[
            &key.business_unit,
            &key.account,
            &key.sub_account,
            &fields.first_name,
            &fields.last_name,
            &fields.email,
            autopay,
            &false,
            id,
            &i64::from(*line),
            fingerprint,
            &now_ms,
        ])?;
    }
    copy.finish()?;
    Ok(left)
}

/// Writes the desired rows (into an empty table, a first import, by `COPY`).
fn write_desired<'w>(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<&'static str, Statement>,
    now_ms: i64,
    ids: &mut HashMap<String, i64>,
    desired: impl IntoIterator<Item = DesiredWrite<'w>>,
) -> PgResult<()> {
    let mut desired = desired.into_iter().peekable();
    let mut left = None;
    let imported = desired.peek().is_some() && is_empty(tx, "desired")?;
    if imported {
        left = copy_new_desired(tx, now_ms, ids, &mut desired)?;
        analyze(tx, "desired")?;
    }
    let desired = left.into_iter().chain(desired);
    let upsert = prepare(tx, statements, UPSERT_DESIRED)?;
    let remove = prepare(tx, statements, REMOVE_DESIRED)?;
    let mut live = DesiredBatch::default();
    let mut removed = KeyColumns::default();
    let flush_live = |tx: &mut Transaction<'_>, b: &mut DesiredBatch<'w>| -> PgResult<()> {
        tx.execute(
            &upsert,
            &[
                &b.keys.business_unit,
                &b.keys.account,
                &b.keys.sub_account,
                &b.first_name,
                &b.last_name,
                &b.email,
                &b.autopay,
                &b.file_id,
                &b.line,
                &b.fingerprint,
                &now_ms,
            ],
        )?;
        *b = DesiredBatch::default();
        Ok(())
    };
    let flush_removed = |tx: &mut Transaction<'_>, k: &mut KeyColumns<'w>| -> PgResult<()> {
        tx.execute(
            &remove,
            &[&k.business_unit, &k.account, &k.sub_account, &now_ms],
        )?;
        k.clear();
        Ok(())
    };
    // A key twice in one statement would be refused: on a repeat, send what came before.
    let mut pending: HashSet<KeyRef<'w>> = HashSet::new();
    for write in desired {
        let key = match &write {
            DesiredWrite::Live { key, .. } | DesiredWrite::Removed { key } => *key,
        };
        if !pending.insert(key) || pending.len() > BATCH {
            if live.keys.len() > 0 {
                flush_live(tx, &mut live)?;
            }
            if removed.len() > 0 {
                flush_removed(tx, &mut removed)?;
            }
            pending.clear();
            pending.insert(key);
        }
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
                        let s = prepare(tx, statements, FILE_IDS)?;
                        let row = tx.query_one(&s, &[&vec![file]])?;
                        let id: i64 = row.get(0);
                        ids.insert(file.to_owned(), id);
                        id
                    }
                };
                live.keys.push(key);
                live.first_name.push(fields.first_name);
                live.last_name.push(fields.last_name);
                live.email.push(fields.email);
                live.autopay.push(autopay);
                live.file_id.push(id);
                live.line.push(i64::from(line));
                live.fingerprint.push(fingerprint);
            }
            DesiredWrite::Removed { key } => removed.push(key),
        }
    }
    if live.keys.len() > 0 {
        flush_live(tx, &mut live)?;
    }
    if removed.len() > 0 {
        flush_removed(tx, &mut removed)?;
    }
    Ok(())
}

fn write_queue<'w>(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<&'static str, Statement>,
    now_ms: i64,
    queue: impl IntoIterator<Item = QueueWrite<'w>>,
) -> PgResult<()> {
    let writes: Vec<QueueWrite<'w>> = queue.into_iter().collect();
    if writes.len() >= COPY_AT_LEAST
        && writes.windows(2).all(|w| w[0].key < w[1].key)
        && is_empty(tx, "queue")?
    {
        copy_new_queue(tx, now_ms, &writes)?;
        return analyze(tx, "queue");
    }
    let enqueue = prepare(tx, statements, ENQUEUE)?;
    let dequeue = prepare(tx, statements, DEQUEUE)?;
    for run in unique_runs(writes.iter().map(|q| q.key)) {
        let mut add = KeyColumns::default();
        let mut drop = KeyColumns::default();
        for q in &writes[run] {
            if q.differs {
                add.push(q.key);
            } else {
                drop.push(q.key);
            }
        }
        if add.len() > 0 {
            tx.execute(
                &enqueue,
                &[&add.business_unit, &add.account, &add.sub_account, &now_ms],
            )?;
        }
        if drop.len() > 0 {
            tx.execute(
                &dequeue,
                &[&drop.business_unit, &drop.account, &drop.sub_account],
            )?;
        }
    }
    Ok(())
}

/// Gathers a table's statistics after a first import filled it. Until then the
/// planner takes it for nearly empty and reads a file's million rows by bitmap and
/// an on-disk sort instead of in index order (0.9 s against 0.2 s at 1M); the
/// autovacuum daemon would gather them only a minute or more later.
fn analyze(tx: &mut Transaction<'_>, table: &'static str) -> PgResult<()> {
    tx.batch_execute(&format!("ANALYZE {table}"))
}

/// Queue writes this many or more, into an empty queue, go by `COPY`.
const COPY_AT_LEAST: usize = 1_000;

/// Distinct keys' queue writes into an empty queue: the differing keys are
/// new entries, the others have nothing to delete.
fn copy_new_queue(
    tx: &mut Transaction<'_>,
    now_ms: i64,
    writes: &[QueueWrite<'_>],
) -> PgResult<()> {
    use ::postgres::types::Type;
    let mut copy = binary_copy(
        tx,
        "COPY queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
         FROM STDIN (FORMAT binary)",
        &[
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT8,
        ],
    )?;
    for q in writes.iter().filter(|q| q.differs) {
        let k = q.key;
        copy.write(&[
            &k.business_unit,
            &k.account,
            &k.sub_account,
            &"pending",
            &0i64,
            &now_ms,
            &now_ms,
        ])?;
    }
    copy.finish()?;
    Ok(())
}

fn write_holds<'w>(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<&'static str, Statement>,
    now_ms: i64,
    holds: impl IntoIterator<Item = HoldWrite<'w>>,
) -> PgResult<()> {
    let writes: Vec<HoldWrite<'w>> = holds.into_iter().collect();
    if writes.is_empty() {
        return Ok(());
    }
    let hold = prepare(tx, statements, HOLD)?;
    let release = prepare(tx, statements, RELEASE)?;
    for run in unique_runs(writes.iter().map(|h| h.key)) {
        let mut set = KeyColumns::default();
        let mut causes: Vec<&str> = Vec::new();
        let mut released = KeyColumns::default();
        for h in &writes[run] {
            match &h.cause {
                Some(cause) => {
                    set.push(h.key);
                    causes.push(cause);
                }
                None => released.push(h.key),
            }
        }
        if set.len() > 0 {
            tx.execute(
                &hold,
                &[
                    &set.business_unit,
                    &set.account,
                    &set.sub_account,
                    &causes,
                    &now_ms,
                ],
            )?;
        }
        if released.len() > 0 {
            tx.execute(
                &release,
                &[
                    &released.business_unit,
                    &released.account,
                    &released.sub_account,
                    &now_ms,
                ],
            )?;
        }
    }
    Ok(())
}

/// Each file's held rows: stored, or dropped. One statement a file: a file's
/// value is one parameter, and there are few files.
fn write_held<'w>(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<&'static str, Statement>,
    ids: &mut HashMap<String, i64>,
    held: impl IntoIterator<Item = HeldWrite<'w>>,
) -> PgResult<()> {
    for write in held {
        let id = match ids.get(write.path) {
            Some(id) => *id,
            None => {
                let s = prepare(tx, statements, FILE_IDS)?;
                match tx.query_opt(&s, &[&vec![write.path]])? {
                    Some(row) => row.get(0),
                    None => continue, // never stored: nothing held
                }
            }
        };
        match &write.rows {
            Some(data) => {
                let s = prepare(tx, statements, STORE_HELD)?;
                tx.execute(&s, &[&id, data])?;
            }
            None => {
                let s = prepare(tx, statements, DROP_HELD)?;
                tx.execute(&s, &[&id])?;
            }
        }
    }
    Ok(())
}
