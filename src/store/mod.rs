//! The state layer: one interface ([`Store`]), two backends. `sqlite/` is the
//! embedded default (one file, WAL); `postgres/` keeps the same state in a
//! schema of a PostgreSQL database. Each backend has its own migrations and its
//! own SQL; only this module knows SQL, and its drivers' errors leave it as
//! [`StateError`]. `types` holds what callers write and the plain views they
//! read; `copy` moves a whole state from one backend to another.

mod api;
pub mod copy;
mod held;
pub use held::{HeldEncoder, HeldRows, HeldSize};
mod history;
pub use history::{DeliveryLine, LineProvenance};
mod lease;
mod owner;
pub use owner::{Owner, OwnerError, lock_path};
mod shared;
pub use shared::SharedStore;
mod snapshot;
pub use snapshot::SnapshotError;
mod postgres;
mod sqlite;
mod types;

pub use lease::{LeaseLook, LeaseView, Renewal};
pub use types::*;

use crate::config::{StateBackend, StateConfig};
use std::path::PathBuf;

/// A failure of the state database, with the step that failed. The driver's
/// error is its source (for the chain in logs) and never leaves this module as a type.
#[derive(Debug, thiserror::Error)]
#[error("state database: {step} failed")]
pub struct StateError {
    step: &'static str,
    #[source]
    source: DriverError,
}

/// What a backend's driver reported.
#[derive(Debug, thiserror::Error)]
enum DriverError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] ::postgres::Error),
}

impl StateError {
    /// Whether this write was refused because this session's leader lease is
    /// gone (SPEC §12): the instance must step down, not fail.
    /// A write refused because the state was upgraded past this build
    /// (`postgres::OUTDATED`) counts too: such an instance must not write.
    pub fn is_fenced(&self) -> bool {
        match &self.source {
            DriverError::Postgres(err) => err
                .code()
                .is_some_and(|c| c.code() == postgres::FENCED || c.code() == postgres::OUTDATED),
            DriverError::Sqlite(_) => false,
        }
    }
}

impl StateError {
    /// Whether the session to the database is gone (the server ended it, the
    /// network dropped it, keepalives gave up): reconnecting may cure it.
    pub fn is_connection_lost(&self) -> bool {
        match &self.source {
            DriverError::Postgres(err) => {
                let class = err.code().map(|c| c.code().get(..2).unwrap_or(""));
                err.is_closed()
                    // connection_exception, operator_intervention (admin or crash shutdown)
                    || matches!(class, Some("08" | "57"))
                    || (err.as_db_error().is_none()
                        && std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>()))
            }
            DriverError::Sqlite(_) => false,
        }
    }
}

impl From<DriverError> for StateError {
    fn from(source: DriverError) -> Self {
        Self {
            step: "a query",
            source,
        }
    }
}

impl From<rusqlite::Error> for StateError {
    fn from(err: rusqlite::Error) -> Self {
        DriverError::from(err).into()
    }
}

impl From<rusqlite::types::FromSqlError> for StateError {
    fn from(err: rusqlite::types::FromSqlError) -> Self {
        DriverError::from(err).into()
    }
}

impl From<::postgres::Error> for StateError {
    fn from(err: ::postgres::Error) -> Self {
        DriverError::from(err).into()
    }
}

impl From<rusqlite::types::FromSqlError> for DriverError {
    fn from(err: rusqlite::types::FromSqlError) -> Self {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
            .into()
    }
}

/// Names the step a driver error happened in.
trait Step<T> {
    fn step(self, step: &'static str) -> Result<T>;
}

impl<T, E: Into<DriverError>> Step<T> for std::result::Result<T, E> {
    fn step(self, step: &'static str) -> Result<T> {
        self.map_err(|err| StateError {
            step,
            source: err.into(),
        })
    }
}

pub type Result<T> = std::result::Result<T, StateError>;

/// Why the state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("state database {}: cannot create its directory", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state database: the {what} {} is not writable by {user}; run paystar-sync as the user that owns it, or give it to this one (chown), or point state.path elsewhere",
        path.display()
    )]
    NotWritable {
        path: PathBuf,
        what: String,
        user: String,
    },
    #[error(
        "state database: the disk holding {} is full; free space there (SQLite needs room for its -wal and -shm files)",
        path.display()
    )]
    DiskFull { path: PathBuf },
    #[error("state database {target}: cannot open it")]
    Open {
        target: String,
        #[source]
        source: StateError,
    },
    #[error("state database {target}: {message}")]
    Unusable { target: String, message: String },
    #[error(
        "state database {target} holds no paystar-sync schema: an incomplete copy? A live state's newest changes are in its -wal file beside it; copy a state with `paystar-sync state snapshot --config FILE OUT`, not cp"
    )]
    Incomplete { target: String },
    #[error(
        "state database {target} is schema v{found}, written by an older paystar-sync (this one reads v{expected}); read it with that release, or snapshot it again (`paystar-sync state snapshot`) once the daemon that writes it runs this release"
    )]
    Older {
        target: String,
        found: i64,
        expected: i64,
    },
    #[error(
        "state database {target} is schema v{found}, written by a newer paystar-sync (this one knows v{expected}); upgrade paystar-sync"
    )]
    TooNew {
        target: String,
        found: i64,
        expected: i64,
    },
}

/// The schema versions this build keeps: SQLite's and PostgreSQL's.
pub fn schema_versions() -> (i64, i64) {
    (sqlite::VERSION, postgres::VERSION)
}

/// Compares a stored schema version with the one this build knows.
fn check_version(
    target: &str,
    found: i64,
    expected: i64,
    allow_older: bool,
) -> std::result::Result<(), OpenError> {
    if found > expected {
        return Err(OpenError::TooNew {
            target: target.to_owned(),
            found,
            expected,
        });
    }
    if found < expected && !allow_older {
        return Err(OpenError::Older {
            target: target.to_owned(),
            found,
            expected,
        });
    }
    Ok(())
}

/// The store: one backend's connection. Calls are synchronous; async tasks go
/// through [`SharedStore`].
pub struct Store(Backend);

enum Backend {
    Sqlite(sqlite::Db),
    Postgres(Box<postgres::Db>),
}

impl Store {
    /// Opens (creating if needed) and migrates the configured state: the one writer.
    pub fn open(config: &StateConfig) -> std::result::Result<Store, OpenError> {
        Ok(Store(match &config.backend {
            StateBackend::Sqlite { path } => Backend::Sqlite(sqlite::Db::open(path)?),
            StateBackend::Postgres(pg) => {
                let db = postgres::Db::open(pg, false).map_err(|fail| match fail {
                    postgres::OpenFail::Failed(err) => err,
                    postgres::OpenFail::Missing => OpenError::Unusable {
                        target: config.describe(),
                        message: "the schema is missing".to_owned(),
                    },
                })?;
                Backend::Postgres(Box::new(db))
            }
        }))
    }

    /// Opens the configured state without ever writing to it (`plan`,
    /// `validate`, `status`, `history`): SQLite read-only, PostgreSQL in
    /// read-only transactions. A state that does not exist yet reads as empty.
    pub fn open_read_only(config: &StateConfig) -> std::result::Result<Store, OpenError> {
        match &config.backend {
            StateBackend::Sqlite { path } => {
                Ok(Store(Backend::Sqlite(sqlite::Db::open_read_only(path)?)))
            }
            StateBackend::Postgres(pg) => match postgres::Db::open(pg, true) {
                Ok(db) => Ok(Store(Backend::Postgres(Box::new(db)))),
                Err(postgres::OpenFail::Missing) => {
                    Store::in_memory().map_err(|source| OpenError::Open {
                        target: config.describe(),
                        source,
                    })
                }
                Err(postgres::OpenFail::Failed(err)) => Err(err),
            },
        }
    }

    /// An empty, migrated state in memory (SQLite).
    pub fn in_memory() -> Result<Store> {
        Ok(Store(Backend::Sqlite(sqlite::Db::in_memory()?)))
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.0 {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}
