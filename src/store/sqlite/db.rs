//! Opening the state database, migrations, and whole-database facts (counts,
//! meta).

use super::*;

fn migrate(conn: &mut Connection, path: &Path) -> std::result::Result<(), OpenError> {
    let target = path.display().to_string();
    let sql = |source: rusqlite::Error| OpenError::Open {
        target: target.clone(),
        source: source.into(),
    };
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    check_version(&target, found, VERSION, true)?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(migration).map_err(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(())
}

/// `file:PATH?immutable=1`, with the characters a URI gives meaning escaped.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// How many prepared statements one connection keeps: more than the store has.
const STATEMENT_CACHE: usize = 128;

impl Db {
    /// Opens (creating if needed) and migrates the database: the one writer.
    pub fn open(path: &Path) -> std::result::Result<Db, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| match source.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    OpenError::NotWritable {
                        path: dir.to_owned(),
                        what: "folder".to_owned(),
                        user: crate::host::user_name(),
                    }
                }
                _ => OpenError::Dir {
                    path: path.to_owned(),
                    source,
                },
            })?;
        }
        // The machine's reason before SQLite's words, where there is one.
        Self::open_writer(path).map_err(|err| super::diagnose::environment(path).unwrap_or(err))
    }

    fn open_writer(path: &Path) -> std::result::Result<Db, OpenError> {
        let sql = |source: rusqlite::Error| OpenError::Open {
            target: path.display().to_string(),
            source: source.into(),
        };
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -32768;",
        )
        .map_err(sql)?;
        // Every statement the daemon runs stays prepared (rusqlite keeps 16).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn, path)?;
        Ok(Db { conn })
    }

    /// Opens an existing database without ever writing to it (`plan`,
    /// `validate`, `status`), and without creating anything beside it. A
    /// missing database reads as empty; one that holds no schema is refused as
    /// an incomplete copy. A database no process
    /// writes and whose WAL is gone (a stopped daemon's, a snapshot, a copy)
    /// is opened immutable: SQLite then creates no `-wal` or `-shm`, and a
    /// folder this user cannot write is no obstacle.
    pub fn open_read_only(path: &Path) -> std::result::Result<Db, OpenError> {
        let target = path.display().to_string();
        let Ok(meta) = std::fs::metadata(path) else {
            return Self::in_memory().map_err(|source| OpenError::Open { target, source });
        };
        let sql = |source: rusqlite::Error| OpenError::Open {
            target: target.clone(),
            source: source.into(),
        };
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let settled = !Path::new(&wal).exists() && !crate::store::owner::is_held(path);
        if settled && meta.len() == 0 {
            // Everything a live state holds can be in its WAL: cp without it
            // copies an empty file.
            return Err(OpenError::Incomplete { target });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if settled {
            Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
        } else {
            Connection::open_with_flags(path, flags)
        }
        .map_err(sql)?;
        // A read-only session reads most pages once: a file's held rows in key
        // order, then a few thousand customers' states. A small page cache costs
        // no time there and keeps `plan`'s peak memory down (3 MB at 100,000).
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -256;")
            .map_err(sql)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        // Never advice to migrate from a read-only command: it may run in CI on a copy.
        match found {
            0 => Err(OpenError::Incomplete { target }),
            found if found < VERSION => Err(OpenError::Older {
                target,
                found,
                expected: VERSION,
            }),
            found => {
                check_version(&target, found, VERSION, false)?;
                Ok(Db { conn })
            }
        }
    }

    /// Writes a consistent copy of this database to `out` (one read
    /// transaction; `VACUUM INTO`).
    pub(in crate::store) fn vacuum_into(&self, out: &Path) -> Result<()> {
        self.conn
            .execute("VACUUM INTO ?1", [out.to_string_lossy()])
            .step("writing the snapshot")?;
        Ok(())
    }

    /// Makes the SQLite file at `path` stand alone: rollback-journal mode (no
    /// `-wal` or `-shm` needed beside it), checked whole.
    pub(in crate::store) fn seal(path: &Path) -> Result<()> {
        let conn = Connection::open(path).step("sealing the snapshot")?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .step("sealing the snapshot")?;
        debug_assert_eq!(mode, "delete");
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .step("checking the snapshot")?;
        if check != "ok" {
            return Err(StateError {
                step: "checking the snapshot",
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(check),
                )
                .into(),
            });
        }
        conn.close()
            .map_err(|(_, e)| e)
            .step("sealing the snapshot")?;
        Ok(())
    }

    /// An empty, migrated database in memory.
    pub fn in_memory() -> Result<Db> {
        let mut conn = Connection::open_in_memory()?;
        for migration in MIGRATIONS {
            conn.execute_batch(migration)?;
        }
        let tx = conn.transaction()?;
        tx.pragma_update(None, "user_version", VERSION)?;
        tx.commit()?;
        Ok(Db { conn })
    }

    /// Whether the database holds no customers at all (lets a first scan skip lookups).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.is_empty_in()?)
    }

    pub(super) fn is_empty_in(&self) -> DbResult<bool> {
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

    /// Whether the database accepts writes right now (takes and releases the write lock).
    pub fn check_writable(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?)
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
