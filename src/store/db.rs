//! Opening the state database, migrations, and whole-database facts (counts,
//! meta).

use super::*;

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
