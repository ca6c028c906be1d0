//! The state database (SQLite, WAL): manifest files, desired state,
//! acknowledged state and the delivery queue. This module is the only one that
//! knows SQL or the schema.

mod schema;

use crate::customer::{CustomerKey, Fields, FieldsBuf, KeyRef};
use crate::manifest::{ErrorKind, FileStat, ManifestError};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A failure of the state database, with the step that failed. The driver's
/// error is its source (for the chain in logs) and never leaves this module as a type.
#[derive(Debug, thiserror::Error)]
#[error("state database: {step} failed")]
pub struct StateError {
    step: &'static str,
    #[source]
    source: rusqlite::Error,
}

impl From<rusqlite::types::FromSqlError> for StateError {
    fn from(err: rusqlite::types::FromSqlError) -> Self {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
            .into()
    }
}

impl From<rusqlite::Error> for StateError {
    fn from(source: rusqlite::Error) -> Self {
        Self {
            step: "a query",
            source,
        }
    }
}

/// Names the step a driver error happened in.
trait Step<T> {
    fn step(self, step: &'static str) -> Result<T>;
}

impl<T> Step<T> for rusqlite::Result<T> {
    fn step(self, step: &'static str) -> Result<T> {
        self.map_err(|source| StateError { step, source })
    }
}

pub type Result<T> = std::result::Result<T, StateError>;
/// What the driver's own calls return, inside this module.
type DbResult<T> = rusqlite::Result<T>;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("state database {}: cannot create its directory", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {}: cannot open it", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: StateError,
    },
    #[error("state database {} is schema v{found}; this paystar-sync uses v{expected}: run `paystar-sync apply` or the daemon once to upgrade it", path.display())]
    Outdated {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error("state database {} is schema v{found}, written by a newer paystar-sync (this one knows v{expected}); upgrade paystar-sync", path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
}

/// A manifest file as the last committed scan saw it.
#[derive(Clone, Debug)]
pub struct FileEntry {
    pub id: i64,
    pub present: bool,
    pub stat: Option<FileStat>,
    pub sha256: Option<[u8; 32]>,
    /// False when the file must be read again even if unchanged (it took part in a
    /// duplicate-key conflict).
    pub clean: bool,
    pub ok: bool,
    pub rows: u64,
    pub scanned_at: i64,
}

/// A previously committed desired row of one file, as the scan's merge needs it.
pub struct PrevRow<'a> {
    pub key: KeyRef<'a>,
    pub fingerprint: i64,
    pub line: Option<u32>,
    pub removed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRecord {
    pub fields: FieldsBuf,
    pub autopay: Option<bool>,
    pub removed: bool,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// SHA-256 (hex) of the file as last read, and its last Git commit and author.
    pub file_sha256: Option<String>,
    pub git_commit: Option<String>,
    pub git_author: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedRecord {
    /// `None` until a ManageCustomer was acknowledged.
    pub fields: Option<FieldsBuf>,
    pub unenrolled: bool,
    pub acked_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    Pending,
    Retrying,
    Parked,
}

impl QueueState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Pending => "pending",
            QueueState::Retrying => "retrying",
            QueueState::Parked => "parked",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "retrying" => QueueState::Retrying,
            "parked" => QueueState::Parked,
            _ => QueueState::Pending,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRecord {
    pub state: QueueState,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Everything stored about one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    pub desired: Option<DesiredRecord>,
    pub acked: Option<AckedRecord>,
    pub queue: Option<QueueRecord>,
    /// The cause of a held unenroll, waiting for `approve`.
    pub held: Option<String>,
    /// A provider's stop signal: sticky, never held.
    pub stop: Option<StopRecord>,
    /// The newest customer fields a provider reported.
    pub provider: Option<ProviderFieldsRecord>,
}

/// Customer fields a provider reported ("" = not reported), and by which event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderFieldsRecord {
    pub fields: FieldsBuf,
    pub provider: String,
    pub event_id: String,
    /// The event's own time, unix ms.
    pub created_ms: i64,
}

/// A provider said a customer's debit authorisation is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopRecord {
    pub provider: String,
    pub event_id: String,
    pub reason: String,
}

/// The store, shared by async tasks: each call runs on the blocking pool.
#[derive(Clone)]
pub struct SharedStore(std::sync::Arc<std::sync::Mutex<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(store)))
    }

    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> T {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut store)
        })
        .await
        .expect("a store call panicked")
    }
}

/// One file's entry in a scan commit.
pub struct FileWrite<'a> {
    pub path: &'a str,
    pub present: bool,
    pub stat: Option<FileStat>,
    pub sha256: Option<[u8; 32]>,
    pub clean: bool,
    pub ok: bool,
    pub rows: u64,
    /// The file's errors as of this scan; `None` keeps the stored ones.
    pub errors: Option<Vec<&'a ManifestError>>,
}

pub enum DesiredWrite<'a> {
    Live {
        key: KeyRef<'a>,
        fields: Fields<'a>,
        autopay: Option<bool>,
        fingerprint: i64,
        file: &'a str,
        line: u32,
    },
    Removed {
        key: KeyRef<'a>,
    },
}

/// Whether a key's desired state now differs from its acknowledged one.
pub struct QueueWrite<'a> {
    pub key: KeyRef<'a>,
    pub differs: bool,
}

/// Counts for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub desired: u64,
    pub removed: u64,
    pub acknowledged: u64,
    pub pending: u64,
    pub retrying: u64,
    pub parked: u64,
    /// Unenrolls held by the mass-change guard.
    pub held: u64,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) and migrates the database: the one writer.
    pub fn open(path: &Path) -> std::result::Result<Store, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir {
                path: path.to_owned(),
                source,
            })?;
        }
        let sql = |source: rusqlite::Error| OpenError::Sqlite {
            path: path.to_owned(),
            source: source.into(),
        };
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -32768;",
        )
        .map_err(sql)?;
        migrate(&mut conn, path)?;
        Ok(Store { conn })
    }

    /// Opens an existing database without ever writing to it (`plan`, `validate`,
    /// `status`). A missing database reads as empty.
    pub fn open_read_only(path: &Path) -> std::result::Result<Store, OpenError> {
        if !path.exists() {
            return Self::in_memory().map_err(|source| OpenError::Sqlite {
                path: path.to_owned(),
                source,
            });
        }
        let sql = |source: rusqlite::Error| OpenError::Sqlite {
            path: path.to_owned(),
            source: source.into(),
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(sql)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        check_version(path, found)?;
        Ok(Store { conn })
    }

    /// An empty, migrated database in memory.
    pub fn in_memory() -> Result<Store> {
        let mut conn = Connection::open_in_memory()?;
        for migration in schema::MIGRATIONS {
            conn.execute_batch(migration)?;
        }
        let tx = conn.transaction()?;
        tx.pragma_update(None, "user_version", schema::VERSION)?;
        tx.commit()?;
        Ok(Store { conn })
    }

    pub fn file_index(&self) -> Result<HashMap<String, FileEntry>> {
        self.file_index_in().step("reading the file index")
    }

    fn file_index_in(&self) -> DbResult<HashMap<String, FileEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, path, present, size, mtime_ns, inode, sha256, clean, status, rows, scanned_at FROM files",
        )?;
        let rows = stmt.query_map([], |r| {
            let size: Option<i64> = r.get(3)?;
            let mtime_ns: Option<i64> = r.get(4)?;
            let inode: Option<i64> = r.get(5)?;
            let sha: Option<Vec<u8>> = r.get(6)?;
            Ok((
                r.get::<_, String>(1)?,
                FileEntry {
                    id: r.get(0)?,
                    present: r.get(2)?,
                    stat: match (size, mtime_ns, inode) {
                        (Some(size), Some(mtime_ns), Some(inode)) => Some(FileStat {
                            size: size as u64,
                            mtime_ns,
                            inode: inode as u64,
                        }),
                        _ => None,
                    },
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
             FROM desired INDEXED BY desired_by_file WHERE file_id = ?1
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

    /// Whether the database holds no customers at all (lets a first scan skip lookups).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.is_empty_in()?)
    }

    fn is_empty_in(&self) -> DbResult<bool> {
        let any: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM desired) OR EXISTS (SELECT 1 FROM acked)",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(any.is_none())
    }

    /// Everything stored about each key, in the order given.
    pub fn load_states<'k>(
        &self,
        keys: impl ExactSizeIterator<Item = KeyRef<'k>>,
    ) -> Result<Vec<Option<Box<KeyState>>>> {
        self.load_states_in(keys).step("reading customers' state")
    }

    fn load_states_in<'k>(
        &self,
        keys: impl ExactSizeIterator<Item = KeyRef<'k>>,
    ) -> DbResult<Vec<Option<Box<KeyState>>>> {
        if keys.len() == 0 || self.is_empty_in()? {
            return Ok(keys.map(|_| None).collect());
        }
        let mut queries = StateQueries::new(&self.conn)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let state = queries.read(key)?;
            out.push((state != KeyState::default()).then(|| Box::new(state)));
        }
        Ok(out)
    }

    /// Calls `f` for every queued key with its stored state, in key order.
    pub fn for_each_queued(&self, f: impl FnMut(KeyRef<'_>, KeyState)) -> Result<()> {
        self.for_each_queued_in(f).step("reading the queue")
    }

    fn for_each_queued_in(&self, mut f: impl FnMut(KeyRef<'_>, KeyState)) -> DbResult<()> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT q.business_unit, q.account, q.sub_account,
                    d.first_name, d.last_name, d.email, d.autopay, d.removed, f.path, d.line,
                    f.sha256, f.git_commit, f.git_author,
                    a.first_name, a.last_name, a.email, a.unenrolled, a.acked_at,
                    q.state, q.attempts, q.next_attempt_at, q.last_error,
                    d.business_unit IS NOT NULL, a.business_unit IS NOT NULL, h.cause,
                    s.provider, s.event_id, s.reason,
                    pf.first_name, pf.last_name, pf.email, pf.provider, pf.event_id, pf.created_ms
             FROM queue q
             LEFT JOIN desired d USING (business_unit, account, sub_account)
             LEFT JOIN files f ON f.id = d.file_id
             LEFT JOIN acked a USING (business_unit, account, sub_account)
             LEFT JOIN holds h USING (business_unit, account, sub_account)
             LEFT JOIN stops s USING (business_unit, account, sub_account)
             LEFT JOIN provider_fields pf USING (business_unit, account, sub_account)
             ORDER BY q.business_unit, q.account, q.sub_account",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let has_desired: bool = r.get(22)?;
            let has_acked: bool = r.get(23)?;
            let state = KeyState {
                desired: if has_desired {
                    Some(read_desired_at(r, 3)?)
                } else {
                    None
                },
                acked: if has_acked {
                    Some(read_acked_at(r, 13)?)
                } else {
                    None
                },
                queue: Some(read_queue_at(r, 18)?),
                held: r.get(24)?,
                stop: match r.get::<_, Option<String>>(25)? {
                    Some(provider) => Some(StopRecord {
                        provider,
                        event_id: r.get(26)?,
                        reason: r.get(27)?,
                    }),
                    None => None,
                },
                provider: if r.get_ref(31)?.data_type() == rusqlite::types::Type::Null {
                    None
                } else {
                    Some(read_provider_fields_at(r, 28)?)
                },
            };
            let key = KeyRef {
                business_unit: r.get_ref(0)?.as_str()?,
                account: r.get_ref(1)?.as_str()?,
                sub_account: r.get_ref(2)?.as_str()?,
            };
            f(key, state);
        }
        Ok(())
    }

    /// Commits one scan: files, their errors, desired rows and queue entries, in
    /// one transaction.
    pub fn commit_scan<'w>(
        &mut self,
        now_ms: i64,
        files: &[FileWrite<'_>],
        desired: impl IntoIterator<Item = DesiredWrite<'w>>,
        queue: impl IntoIterator<Item = QueueWrite<'w>>,
        holds: impl IntoIterator<Item = HoldWrite<'w>>,
        meta: &[(&str, String)],
    ) -> Result<()> {
        self.commit_scan_in(now_ms, files, desired, queue, holds, meta)
            .step("committing a scan")
    }

    fn commit_scan_in<'w>(
        &mut self,
        now_ms: i64,
        files: &[FileWrite<'_>],
        desired: impl IntoIterator<Item = DesiredWrite<'w>>,
        queue: impl IntoIterator<Item = QueueWrite<'w>>,
        holds: impl IntoIterator<Item = HoldWrite<'w>>,
        meta: &[(&str, String)],
    ) -> DbResult<()> {
        let tx = self.conn.transaction()?;
        let now = now_ms;
        let mut ids: HashMap<String, i64> = HashMap::new();
        {
            let mut upsert_file = tx.prepare_cached(
                "INSERT INTO files (path, present, size, mtime_ns, inode, sha256, clean, status, rows, scanned_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (path) DO UPDATE SET present = excluded.present, size = excluded.size,
                   mtime_ns = excluded.mtime_ns, inode = excluded.inode, sha256 = excluded.sha256,
                   clean = excluded.clean, status = excluded.status, rows = excluded.rows,
                   scanned_at = excluded.scanned_at
                 RETURNING id",
            )?;
            let mut clear_errors =
                tx.prepare_cached("DELETE FROM file_errors WHERE file_id = ?1")?;
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
        }
        {
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
        }
        {
            // A key that waits keeps its place and backoff; a parked key is given
            // another chance because its desired state changed.
            let mut enqueue = tx.prepare_cached(
                "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)
                 ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
                   state = CASE WHEN state = 'parked' THEN 'pending' ELSE state END,
                   attempts = CASE WHEN state = 'parked' THEN 0 ELSE attempts END,
                   next_attempt_at = CASE WHEN state = 'parked' THEN excluded.next_attempt_at ELSE next_attempt_at END",
            )?;
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
        }
        {
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
                        if release.execute(params![k.business_unit, k.account, k.sub_account])? > 0
                        {
                            let detail = serde_json::json!({ "cause": "the reason for the unenroll went away" }).to_string();
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
        }
        {
            let mut set_meta = tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?;
            for (key, value) in meta {
                set_meta.execute(params![key, value])?;
            }
        }
        tx.commit()
    }

    /// Keys the delivery worker may send, soonest first, with the time each
    /// becomes due. Parked keys are left out, and so are the keys of `paused`
    /// business units, except those with a provider stop Paystar has not
    /// acknowledged yet: a stop is never held back.
    pub fn upcoming(
        &self,
        limit: usize,
        paused: &[String],
        now_ms: i64,
    ) -> Result<Vec<(CustomerKey, i64)>> {
        self.upcoming_in(limit, paused, now_ms)
            .step("reading the delivery queue")
    }

    fn upcoming_in(
        &self,
        limit: usize,
        paused: &[String],
        now_ms: i64,
    ) -> DbResult<Vec<(CustomerKey, i64)>> {
        // A paused business unit's keys wait, except an unacknowledged provider stop.
        const NOT_PAUSED: &str = "(q.business_unit NOT IN (SELECT value FROM json_each(?2))
                    OR (EXISTS (SELECT 1 FROM stops s WHERE s.business_unit = q.business_unit
                                  AND s.account = q.account AND s.sub_account = q.sub_account)
                        AND NOT EXISTS (SELECT 1 FROM acked a WHERE a.business_unit = q.business_unit
                                  AND a.account = q.account AND a.sub_account = q.sub_account AND a.unenrolled)))";
        let paused = serde_json::to_string(paused).unwrap_or_else(|_| "[]".into());
        let row = |r: &rusqlite::Row<'_>| {
            Ok((
                CustomerKey {
                    business_unit: r.get(0)?,
                    account: r.get(1)?,
                    sub_account: r.get(2)?,
                },
                r.get(3)?,
            ))
        };
        // Retries that are due first: a backlog of fresh keys (due since they
        // were queued) must not hold back a retry past its time.
        let mut due_retries = self.conn.prepare_cached(&format!(
            "SELECT q.business_unit, q.account, q.sub_account, q.next_attempt_at FROM queue q INDEXED BY queue_retry_due
             WHERE q.state = 'retrying' AND q.next_attempt_at <= ?3 AND {NOT_PAUSED}
             ORDER BY q.next_attempt_at LIMIT ?1"
        ))?;
        let mut found: Vec<(CustomerKey, i64)> = due_retries
            .query_map(params![limit as i64, paused, now_ms], row)?
            .collect::<DbResult<_>>()?;
        let mut by_due = self.conn.prepare_cached(&format!(
            "SELECT q.business_unit, q.account, q.sub_account, q.next_attempt_at FROM queue q INDEXED BY queue_due
             WHERE q.state <> 'parked' AND {NOT_PAUSED}
             ORDER BY q.next_attempt_at LIMIT ?1"
        ))?;
        let retries = found.len();
        for next in by_due.query_map(params![limit as i64, paused], row)? {
            let next = next?;
            if found.len() >= limit {
                break;
            }
            if !found[..retries].iter().any(|(k, _)| *k == next.0) {
                found.push(next);
            }
        }
        Ok(found)
    }

    /// Records the outcome of delivery attempts in one transaction: what Paystar
    /// acknowledged, and each key's queue entry. After an acknowledgement the key
    /// is compared again with its *current* desired state (`still_differs`), so a
    /// change made while a request was in flight is sent next.
    pub fn record_outcomes(
        &mut self,
        outcomes: &[Outcome],
        still_differs: impl Fn(&KeyState) -> bool,
        now_ms: i64,
    ) -> Result<()> {
        self.record_outcomes_in(outcomes, still_differs, now_ms)
            .step("recording delivery outcomes")
    }

    fn record_outcomes_in(
        &mut self,
        outcomes: &[Outcome],
        still_differs: impl Fn(&KeyState) -> bool,
        now_ms: i64,
    ) -> DbResult<()> {
        let tx = self.conn.transaction()?;
        let mut acked_changed = false;
        {
            let mut upsert_acked = tx.prepare_cached(
                "INSERT INTO acked (business_unit, account, sub_account, first_name, last_name, email, unenrolled, acked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
                   first_name = COALESCE(excluded.first_name, first_name),
                   last_name = COALESCE(excluded.last_name, last_name),
                   email = COALESCE(excluded.email, email),
                   unenrolled = MAX(unenrolled, excluded.unenrolled),
                   acked_at = excluded.acked_at",
            )?;
            let mut dequeue = tx.prepare_cached(
                "DELETE FROM queue WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?;
            let mut set_queue = tx.prepare_cached(
                "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at,
                                    last_error, last_request, last_response)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
                   state = excluded.state, attempts = excluded.attempts,
                   next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
                   last_request = COALESCE(excluded.last_request, last_request),
                   last_response = COALESCE(excluded.last_response, last_response)",
            )?;
            let mut states = StateQueries::new(&tx)?;
            let mut history = tx.prepare_cached(
                "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for o in outcomes {
                let k = o.key.as_ref();
                let key = params![k.business_unit, k.account, k.sub_account];
                for entry in &o.history {
                    history.execute(params![
                        k.business_unit,
                        k.account,
                        k.sub_account,
                        now_ms,
                        entry.kind,
                        entry.event_type,
                        entry.detail
                    ])?;
                }
                if o.acked_fields.is_some() || o.acked_unenroll {
                    acked_changed = true;
                    let f = o.acked_fields.as_ref();
                    upsert_acked.execute(params![
                        k.business_unit,
                        k.account,
                        k.sub_account,
                        f.map(|f| &f.first_name),
                        f.map(|f| &f.last_name),
                        f.map(|f| &f.email),
                        o.acked_unenroll,
                        now_ms
                    ])?;
                }
                let (state, attempts, at, error, request, response) = match &o.result {
                    OutcomeResult::Done => {
                        let state = states.read(k)?;
                        if !still_differs(&state) {
                            dequeue.execute(key)?;
                            continue;
                        }
                        ("pending", 0, now_ms, None, None, None)
                    }
                    OutcomeResult::Retry {
                        attempts,
                        next_attempt_at,
                        error,
                    } => (
                        "retrying",
                        *attempts,
                        *next_attempt_at,
                        Some(error),
                        None,
                        None,
                    ),
                    OutcomeResult::Park {
                        attempts,
                        error,
                        request,
                        response,
                    } => (
                        "parked",
                        *attempts,
                        now_ms,
                        Some(error),
                        Some(request),
                        Some(response),
                    ),
                };
                set_queue.execute(params![
                    k.business_unit,
                    k.account,
                    k.sub_account,
                    state,
                    attempts,
                    at,
                    now_ms,
                    error,
                    request,
                    response
                ])?;
            }
        }
        if acked_changed {
            // Lets a reviewed plan notice that Paystar's acknowledged state moved on.
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('acked_version', '1')
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                [],
            )?;
        }
        tx.commit()
    }

    /// Puts parked keys back in the queue (all of them when `keys` is `None`);
    /// returns how many.
    pub fn retry_parked(&mut self, keys: Option<&[CustomerKey]>, now_ms: i64) -> Result<usize> {
        self.retry_parked_in(keys, now_ms)
            .step("re-queueing parked customers")
    }

    fn retry_parked_in(&mut self, keys: Option<&[CustomerKey]>, now_ms: i64) -> DbResult<usize> {
        let tx = self.conn.transaction()?;
        let mut changed = 0;
        {
            match keys {
                None => {
                    changed += tx.execute(
                        "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = ?1 WHERE state = 'parked'",
                        [now_ms],
                    )?;
                }
                Some(keys) => {
                    let mut one = tx.prepare_cached(
                        "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = ?4
                         WHERE state = 'parked' AND business_unit = ?1 AND account = ?2 AND sub_account = ?3",
                    )?;
                    for k in keys {
                        changed += one.execute(params![
                            k.business_unit,
                            k.account,
                            k.sub_account,
                            now_ms
                        ])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Retrying and parked keys, soonest first, for `status`.
    pub fn troubled(&self, limit: usize) -> Result<Vec<Troubled>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT business_unit, account, sub_account, state, attempts, next_attempt_at, last_error, last_response
             FROM queue WHERE state IN ('retrying', 'parked')
             ORDER BY state, next_attempt_at LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Troubled {
                key: CustomerKey {
                    business_unit: r.get(0)?,
                    account: r.get(1)?,
                    sub_account: r.get(2)?,
                },
                state: QueueState::parse(r.get_ref(3)?.as_str()?),
                attempts: r.get(4)?,
                next_attempt_at: r.get(5)?,
                last_error: r.get(6)?,
                last_response: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// The stored errors of every file still present.
    pub fn present_file_errors(&self) -> Result<Vec<ManifestError>> {
        let ids: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM files WHERE present = 1 ORDER BY path")?
            .query_map([], |r| r.get(0))?
            .collect::<DbResult<_>>()?;
        self.file_errors(&ids)
    }

    /// Releases every held unenroll into the queue; returns how many.
    pub fn approve(&mut self, now_ms: i64) -> Result<usize> {
        self.approve_in(now_ms).step("approving held unenrolls")
    }

    fn approve_in(&mut self, now_ms: i64) -> DbResult<usize> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
             SELECT business_unit, account, sub_account, ?1, 'approved', 'Accounts.UnenrollAutopay',
                    json_object('cause', cause)
             FROM holds",
            [now_ms],
        )?;
        tx.execute(
            "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
             SELECT business_unit, account, sub_account, 'pending', 0, ?1, ?1 FROM holds WHERE true
             ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
               state = CASE WHEN state = 'parked' THEN 'pending' ELSE state END",
            [now_ms],
        )?;
        let count = tx.execute("DELETE FROM holds", [])?;
        tx.commit()?;
        Ok(count)
    }

    /// Held unenrolls by cause, most first.
    pub fn holds_by_cause(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT cause, COUNT(*) FROM holds GROUP BY cause ORDER BY COUNT(*) DESC, cause",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

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

    /// Records the last Git commit and author of manifest files.
    pub fn set_git_provenance(&mut self, files: &[(String, String, String)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE files SET git_commit = ?2, git_author = ?3 WHERE path = ?1",
            )?;
            for (path, commit, author) in files {
                stmt.execute(params![path, commit, author])?;
            }
        }
        Ok(tx.commit()?)
    }

    /// Records provider events in one transaction, each before it is acted on. A
    /// duplicate (same provider and id, by webhook or poll) changes nothing. A new
    /// stop signal is stored (the first one for a key stays) and queues its key.
    /// Returns, per event, whether it was new.
    pub fn record_provider_events(
        &mut self,
        events: &[ProviderEventWrite],
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        self.record_provider_events_in(events, now_ms)
            .step("recording provider events")
    }

    fn record_provider_events_in(
        &mut self,
        events: &[ProviderEventWrite],
        now_ms: i64,
    ) -> DbResult<Vec<bool>> {
        let tx = self.conn.transaction()?;
        let fresh = record_events(&tx, events, now_ms)?;
        tx.commit()?;
        Ok(fresh)
    }

    /// A poll's events and its new checkpoint, in one transaction: a crash
    /// before the commit repeats the poll, and the ledger drops the repeats.
    pub fn record_poll(
        &mut self,
        provider: &str,
        events: &[ProviderEventWrite],
        cursor: &PollCursor,
        now_ms: i64,
    ) -> Result<()> {
        self.record_poll_in(provider, events, cursor, now_ms)
            .step("recording a poll")
    }

    fn record_poll_in(
        &mut self,
        provider: &str,
        events: &[ProviderEventWrite],
        cursor: &PollCursor,
        now_ms: i64,
    ) -> DbResult<()> {
        let tx = self.conn.transaction()?;
        record_events(&tx, events, now_ms)?;
        tx.execute(
            "INSERT INTO poll_cursors (provider, created, event_id, last_success_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (provider) DO UPDATE SET created = excluded.created, event_id = excluded.event_id,
               last_success_ms = excluded.last_success_ms",
            params![provider, cursor.created, cursor.event_id, cursor.last_success_ms],
        )?;
        tx.commit()
    }

    /// Which of `ids` this provider's ledger already holds.
    pub fn known_events(
        &self,
        provider: &str,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT 1 FROM provider_events WHERE provider = ?1 AND event_id = ?2",
        )?;
        let mut known = std::collections::HashSet::new();
        for id in ids {
            if stmt.exists(params![provider, id])? {
                known.insert(id.clone());
            }
        }
        Ok(known)
    }

    pub fn poll_cursor(&self, provider: &str) -> Result<Option<PollCursor>> {
        Ok(self
            .conn
            .query_row(
                "SELECT created, event_id, last_success_ms FROM poll_cursors WHERE provider = ?1",
                [provider],
                |r| {
                    Ok(PollCursor {
                        created: r.get(0)?,
                        event_id: r.get(1)?,
                        last_success_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every merchant-level account's latest status.
    pub fn merchant_statuses(&self) -> Result<Vec<MerchantStatus>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT provider, account, status, event_id, event_ms FROM merchant_statuses ORDER BY provider, account",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(MerchantStatus {
                provider: r.get(0)?,
                account: r.get(1)?,
                status: r.get(2)?,
                event_id: r.get(3)?,
                event_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// One provider's ledger, newest first: event id, outcome and reason.
    pub fn provider_event_outcomes(&self, provider: &str) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT event_id, outcome, reason FROM provider_events WHERE provider = ?1 ORDER BY received_at DESC",
        )?;
        let rows = stmt.query_map([provider], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// Provider events that could not be mapped to a customer, newest first.
    pub fn unmatched_events(&self, limit: usize) -> Result<Vec<(String, String, String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT provider, event_id, event_type, reason FROM provider_events INDEXED BY provider_events_unmatched
             WHERE outcome = 'unmatched' ORDER BY received_at DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// Whether the database accepts writes right now (takes and releases the write lock).
    pub fn check_writable(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?)
    }

    /// When the longest-failing retrying key was first queued, if any key is retrying.
    pub fn oldest_retrying_since(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN(enqueued_at) FROM queue WHERE state = 'retrying'",
            [],
            |r| r.get(0),
        )?)
    }

    /// How many provider events could not be mapped to a customer.
    pub fn unmatched_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM provider_events WHERE outcome = 'unmatched'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)?)
    }

    /// A counter that moves whenever Paystar's acknowledged state changes.
    pub fn acked_version(&self) -> Result<i64> {
        Ok(self
            .meta("acked_version")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// How many customers the manifests hold (tombstones not counted).
    pub fn live_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM desired WHERE removed = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)?)
    }

    pub fn counts(&self) -> Result<Counts> {
        Ok(self.conn.query_row(
            "SELECT
               (SELECT COUNT(*) FROM desired WHERE removed = 0),
               (SELECT COUNT(*) FROM desired WHERE removed = 1),
               (SELECT COUNT(*) FROM acked),
               (SELECT COUNT(*) FROM queue WHERE state = 'pending'),
               (SELECT COUNT(*) FROM queue WHERE state = 'retrying'),
               (SELECT COUNT(*) FROM queue WHERE state = 'parked'),
               (SELECT COUNT(*) FROM holds)",
            [],
            |r| {
                Ok(Counts {
                    desired: r.get::<_, i64>(0)? as u64,
                    removed: r.get::<_, i64>(1)? as u64,
                    acknowledged: r.get::<_, i64>(2)? as u64,
                    pending: r.get::<_, i64>(3)? as u64,
                    retrying: r.get::<_, i64>(4)? as u64,
                    parked: r.get::<_, i64>(5)? as u64,
                    held: r.get::<_, i64>(6)? as u64,
                })
            },
        )?)
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }
}

/// What a provider event means for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// A stop signal for a known customer: unenroll.
    Stop,
    /// New customer fields for a known customer.
    Fields,
    /// A merchant-level status that a pause rule watches.
    Merchant,
    /// Recorded only.
    Ignored,
    /// Could not be mapped to a customer.
    Unmatched,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Stop | EventOutcome::Fields | EventOutcome::Merchant => "applied",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Unmatched => "unmatched",
        }
    }
}

/// One inbound provider event, as the ledger records it.
#[derive(Clone, Debug)]
pub struct ProviderEventWrite {
    pub provider: &'static str,
    pub event_id: String,
    /// `poll` or `webhook`.
    pub channel: &'static str,
    pub event_type: String,
    pub outcome: EventOutcome,
    pub reason: String,
    pub key: Option<CustomerKey>,
    pub raw: String,
    /// Customer fields the event reports, applied unless a newer event's are stored.
    pub fields: Option<FieldReport>,
    /// A merchant account's new status, kept unless a newer event's is stored.
    pub merchant: Option<MerchantReport>,
}

/// A merchant-level account's status as one event reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantReport {
    pub account: String,
    pub status: String,
    /// The event's own time, unix ms.
    pub event_ms: i64,
}

/// A merchant-level account's latest status, and the event that said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantStatus {
    pub provider: String,
    pub account: String,
    pub status: String,
    pub event_id: String,
    pub event_ms: i64,
}

/// Customer fields an event reports ("" = not reported) and the event's own time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldReport {
    pub fields: FieldsBuf,
    /// Unix ms.
    pub created_ms: i64,
}

/// How far a poller got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollCursor {
    /// `created` and id of the newest event processed.
    pub created: Option<i64>,
    pub event_id: Option<String>,
    pub last_success_ms: Option<i64>,
}

/// What one delivery attempt of a key ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub key: CustomerKey,
    /// The fields of an acknowledged ManageCustomer, if one was acknowledged.
    pub acked_fields: Option<FieldsBuf>,
    /// An UnenrollAutopay was acknowledged.
    pub acked_unenroll: bool,
    pub result: OutcomeResult,
    /// What to add to the customer's history.
    pub history: Vec<HistoryEntry>,
}

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

/// Sets (`Some(cause)`) or releases (`None`) a key's held unenroll.
pub struct HoldWrite<'a> {
    pub key: KeyRef<'a>,
    pub cause: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeResult {
    /// Every event planned for the key was acknowledged.
    Done,
    Retry {
        attempts: u32,
        next_attempt_at: i64,
        error: String,
    },
    Park {
        attempts: u32,
        error: String,
        request: String,
        response: String,
    },
}

/// A retrying or parked key, for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Troubled {
    pub key: CustomerKey,
    pub state: QueueState,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub last_response: Option<String>,
}

/// Records provider events (see [`Store::record_provider_events`]) in `tx`.
fn record_events(
    tx: &rusqlite::Transaction<'_>,
    events: &[ProviderEventWrite],
    now_ms: i64,
) -> DbResult<Vec<bool>> {
    let mut fresh = Vec::with_capacity(events.len());
    {
        let mut ledger = tx.prepare_cached(
            "INSERT INTO provider_events (provider, event_id, channel, received_at, event_type, outcome, reason,
                                          business_unit, account, sub_account, raw)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (provider, event_id) DO NOTHING",
        )?;
        let mut stop = tx.prepare_cached(
            "INSERT INTO stops (business_unit, account, sub_account, provider, event_id, reason, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (business_unit, account, sub_account) DO NOTHING",
        )?;
        let mut enqueue = tx.prepare_cached(
            "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)
             ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
               state = CASE WHEN state = 'parked' THEN 'pending' ELSE state END,
               attempts = CASE WHEN state = 'parked' THEN 0 ELSE attempts END,
               next_attempt_at = CASE WHEN state = 'parked' THEN excluded.next_attempt_at ELSE next_attempt_at END",
        )?;
        let mut history = tx.prepare_cached(
            "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut newest = tx.prepare_cached(
            "SELECT created_ms, event_id FROM provider_fields
             WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
        )?;
        let mut set_fields = tx.prepare_cached(
            "INSERT INTO provider_fields (business_unit, account, sub_account, first_name, last_name, email,
                                          provider, event_id, created_ms, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
               first_name = CASE WHEN excluded.first_name = '' THEN first_name ELSE excluded.first_name END,
               last_name = CASE WHEN excluded.last_name = '' THEN last_name ELSE excluded.last_name END,
               email = CASE WHEN excluded.email = '' THEN email ELSE excluded.email END,
               provider = excluded.provider, event_id = excluded.event_id,
               created_ms = excluded.created_ms, at_ms = excluded.at_ms",
        )?;
        let mut merchant_newest = tx.prepare_cached(
            "SELECT event_ms, event_id FROM merchant_statuses WHERE provider = ?1 AND account = ?2",
        )?;
        let mut set_merchant = tx.prepare_cached(
            "INSERT INTO merchant_statuses (provider, account, status, event_id, event_ms, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (provider, account) DO UPDATE SET status = excluded.status,
               event_id = excluded.event_id, event_ms = excluded.event_ms, at_ms = excluded.at_ms",
        )?;
        for e in events {
            let k = e.key.as_ref();
            // Webhooks arrive out of order: what an event reports is applied only
            // if no newer event's report is stored; an older one is recorded only.
            let newer: Option<(i64, String)> = match (k, &e.fields, &e.merchant) {
                (Some(k), Some(report), _) => newest
                    .query_row(params![k.business_unit, k.account, k.sub_account], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?
                    .filter(|(created, _)| *created > report.created_ms),
                (_, _, Some(report)) => merchant_newest
                    .query_row(params![e.provider, report.account], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?
                    .filter(|(at, _)| *at > report.event_ms),
                _ => None,
            };
            let mut outcome = e.outcome;
            let mut reason = std::borrow::Cow::Borrowed(e.reason.as_str());
            if let Some((_, id)) = &newer {
                if outcome != EventOutcome::Stop {
                    outcome = EventOutcome::Ignored;
                }
                reason = format!("{}; not applied: event {id} is newer", e.reason).into();
            }
            let apply_fields = e.fields.as_ref().filter(|_| newer.is_none());
            let apply_merchant = e.merchant.as_ref().filter(|_| newer.is_none());
            let inserted = ledger.execute(params![
                e.provider,
                e.event_id,
                e.channel,
                now_ms,
                e.event_type,
                outcome.as_str(),
                reason,
                k.map(|k| &k.business_unit),
                k.map(|k| &k.account),
                k.map(|k| &k.sub_account),
                e.raw
            ])? == 1;
            fresh.push(inserted);
            if !inserted {
                continue;
            }
            if let Some(report) = apply_merchant {
                set_merchant.execute(params![
                    e.provider,
                    report.account,
                    report.status,
                    e.event_id,
                    report.event_ms,
                    now_ms
                ])?;
            }
            let Some(k) = k else {
                continue;
            };
            let provenance = serde_json::json!({ "source": "provider", "provider": e.provider, "eventId": e.event_id, "channel": e.channel });
            if let Some(report) = apply_fields {
                let f = &report.fields;
                set_fields.execute(params![
                    k.business_unit,
                    k.account,
                    k.sub_account,
                    f.first_name,
                    f.last_name,
                    f.email,
                    e.provider,
                    e.event_id,
                    report.created_ms,
                    now_ms
                ])?;
                enqueue.execute(params![k.business_unit, k.account, k.sub_account, now_ms])?;
                let detail = serde_json::json!({ "cause": reason, "provenance": provenance });
                history.execute(params![
                    k.business_unit,
                    k.account,
                    k.sub_account,
                    now_ms,
                    "fields",
                    None::<&str>,
                    detail.to_string()
                ])?;
            }
            if outcome != EventOutcome::Stop {
                continue;
            }
            stop.execute(params![
                k.business_unit,
                k.account,
                k.sub_account,
                e.provider,
                e.event_id,
                e.reason,
                now_ms
            ])?;
            enqueue.execute(params![k.business_unit, k.account, k.sub_account, now_ms])?;
            let detail = serde_json::json!({ "cause": e.reason, "provenance": provenance });
            history.execute(params![
                k.business_unit,
                k.account,
                k.sub_account,
                now_ms,
                "stop",
                "Accounts.UnenrollAutopay",
                detail.to_string()
            ])?;
        }
    }
    Ok(fresh)
}

fn check_version(path: &Path, found: i64) -> std::result::Result<(), OpenError> {
    let expected = schema::VERSION;
    if found < expected {
        return Err(OpenError::Outdated {
            path: path.to_owned(),
            found,
            expected,
        });
    }
    if found > expected {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found,
            expected,
        });
    }
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> std::result::Result<(), OpenError> {
    let sql = |source: rusqlite::Error| OpenError::Sqlite {
        path: path.to_owned(),
        source: source.into(),
    };
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    if found > schema::VERSION {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found,
            expected: schema::VERSION,
        });
    }
    for (index, migration) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(migration).map_err(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(())
}

fn read_desired(r: &rusqlite::Row<'_>) -> DbResult<DesiredRecord> {
    read_desired_at(r, 0)
}

fn read_desired_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<DesiredRecord> {
    let sha: Option<Vec<u8>> = r.get(at + 7)?;
    Ok(DesiredRecord {
        file_sha256: sha.map(|h| h.iter().map(|b| format!("{b:02x}")).collect()),
        git_commit: r.get(at + 8)?,
        git_author: r.get(at + 9)?,
        fields: FieldsBuf {
            first_name: r.get(at)?,
            last_name: r.get(at + 1)?,
            email: r.get(at + 2)?,
        },
        autopay: r.get(at + 3)?,
        removed: r.get(at + 4)?,
        file: r.get(at + 5)?,
        line: r.get(at + 6)?,
    })
}

fn read_acked(r: &rusqlite::Row<'_>) -> DbResult<AckedRecord> {
    read_acked_at(r, 0)
}

fn read_acked_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<AckedRecord> {
    let first: Option<String> = r.get(at)?;
    let last: Option<String> = r.get(at + 1)?;
    let email: Option<String> = r.get(at + 2)?;
    Ok(AckedRecord {
        fields: match (first, last, email) {
            (Some(first_name), Some(last_name), Some(email)) => Some(FieldsBuf {
                first_name,
                last_name,
                email,
            }),
            _ => None,
        },
        unenrolled: r.get(at + 3)?,
        acked_at: r.get(at + 4)?,
    })
}

fn read_stop(r: &rusqlite::Row<'_>) -> DbResult<StopRecord> {
    Ok(StopRecord {
        provider: r.get(0)?,
        event_id: r.get(1)?,
        reason: r.get(2)?,
    })
}

/// The per-key lookups behind [`KeyState`], prepared once per batch.
struct StateQueries<'c> {
    desired: rusqlite::CachedStatement<'c>,
    acked: rusqlite::CachedStatement<'c>,
    queue: rusqlite::CachedStatement<'c>,
    held: rusqlite::CachedStatement<'c>,
    stop: rusqlite::CachedStatement<'c>,
    provider: rusqlite::CachedStatement<'c>,
}

impl<'c> StateQueries<'c> {
    fn new(conn: &'c Connection) -> DbResult<Self> {
        Ok(Self {
            desired: conn.prepare_cached(
                "SELECT d.first_name, d.last_name, d.email, d.autopay, d.removed, f.path, d.line,
                        f.sha256, f.git_commit, f.git_author
                 FROM desired d LEFT JOIN files f ON f.id = d.file_id
                 WHERE d.business_unit = ?1 AND d.account = ?2 AND d.sub_account = ?3",
            )?,
            acked: conn.prepare_cached(
                "SELECT first_name, last_name, email, unenrolled, acked_at FROM acked
                 WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
            queue: conn.prepare_cached(
                "SELECT state, attempts, next_attempt_at, last_error FROM queue
                 WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
            held: conn.prepare_cached(
                "SELECT cause FROM holds WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
            stop: conn.prepare_cached(
                "SELECT provider, event_id, reason FROM stops
                 WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
            provider: conn.prepare_cached(
                "SELECT first_name, last_name, email, provider, event_id, created_ms FROM provider_fields
                 WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
        })
    }

    /// Everything stored about one key.
    fn read(&mut self, key: KeyRef<'_>) -> DbResult<KeyState> {
        let p = params![key.business_unit, key.account, key.sub_account];
        Ok(KeyState {
            desired: self.desired.query_row(p, read_desired).optional()?,
            acked: self.acked.query_row(p, read_acked).optional()?,
            queue: self.queue.query_row(p, read_queue).optional()?,
            held: self.held.query_row(p, |r| r.get(0)).optional()?,
            stop: self.stop.query_row(p, read_stop).optional()?,
            provider: self
                .provider
                .query_row(p, |r| read_provider_fields_at(r, 0))
                .optional()?,
        })
    }
}

fn read_provider_fields_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<ProviderFieldsRecord> {
    Ok(ProviderFieldsRecord {
        fields: FieldsBuf {
            first_name: r.get(at)?,
            last_name: r.get(at + 1)?,
            email: r.get(at + 2)?,
        },
        provider: r.get(at + 3)?,
        event_id: r.get(at + 4)?,
        created_ms: r.get(at + 5)?,
    })
}

fn read_queue(r: &rusqlite::Row<'_>) -> DbResult<QueueRecord> {
    read_queue_at(r, 0)
}

fn read_queue_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<QueueRecord> {
    Ok(QueueRecord {
        state: QueueState::parse(r.get_ref(at)?.as_str()?),
        attempts: r.get(at + 1)?,
        next_attempt_at: r.get(at + 2)?,
        last_error: r.get(at + 3)?,
    })
}
