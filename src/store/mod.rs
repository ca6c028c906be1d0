//! The state layer (SQLite, WAL), by concern: `db` (open, migrations, counts),
//! `files` (the manifest file index), `scans` (committing a scan), `keys`
//! (desired and acknowledged state as plain views), `queue` (what is due,
//! outcomes), `ledger` (provider events, stops, fields, cursors), `holds`,
//! `history`. Only this module knows SQL or the schema; its driver's errors
//! leave it as [`StateError`].

mod db;
mod files;
mod history;
mod holds;
mod keys;
mod ledger;
mod queue;
mod scans;
mod schema;

pub use db::{Counts, OpenError};
pub use files::{FileEntry, FileWrite, PrevRow};
pub use history::{HistoryEntry, HistoryRecord};
pub use holds::HoldCause;
pub use keys::{AckedRecord, DesiredRecord, KeyState, ProviderFieldsRecord, StopRecord};
pub use ledger::{
    EventOutcome, FieldReport, LedgerEntry, MerchantReport, MerchantStatus, PollCursor,
    ProviderEventWrite, UnmatchedEvent,
};
pub use queue::{Outcome, OutcomeResult, QueueRecord, QueueState, Troubled};
pub use scans::{DesiredWrite, HoldWrite, QueueWrite};

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

pub struct Store {
    conn: Connection,
}
