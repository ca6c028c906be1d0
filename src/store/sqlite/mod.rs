//! The embedded backend: one SQLite file in WAL mode, one writer. Every write
//! is one transaction (`BEGIN`…`COMMIT`); readers see the last commit.

mod copy;
mod db;
mod diagnose;
mod files;
mod history;
mod holds;
mod keys;
mod ledger;
mod queue;
mod scans;
mod schema;

pub(super) use schema::{MIGRATIONS, VERSION};

use super::*;
use crate::customer::{CustomerKey, FieldsBuf, KeyRef};
use crate::manifest::{ErrorKind, FileStat, ManifestError};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::collections::HashMap;
use std::path::Path;

/// What the driver's own calls return, inside this backend.
type DbResult<T> = rusqlite::Result<T>;

/// One SQLite connection.
pub struct Db {
    conn: Connection,
}
