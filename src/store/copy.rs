//! Moving a whole state between backends (`paystar-sync state copy`): every
//! table, row for row, into a target that holds nothing yet, in one
//! transaction on the target, so a failed copy leaves it empty.

use super::*;

/// How a column's values travel between backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Int,
    Bool,
    Text,
    Bytes,
}

/// One stored value.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

pub(super) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// A column filled from an identity sequence, reset after the copy.
    pub identity: Option<&'static str>,
}

use Kind::{Bool, Bytes, Int, Text};

const KEY: [(&str, Kind); 3] = [
    ("business_unit", Text),
    ("account", Text),
    ("sub_account", Text),
];

macro_rules! key_then {
    ($($col:expr),* $(,)?) => {
        &[KEY[0], KEY[1], KEY[2], $($col),*]
    };
}

/// Every table that holds state, parents before children.
pub(super) const TABLES: &[Table] = &[
    Table {
        name: "files",
        columns: &[
            ("id", Int),
            ("path", Text),
            ("present", Bool),
            ("size", Int),
            ("mtime_ns", Int),
            ("inode", Int),
            ("sha256", Bytes),
            ("clean", Bool),
            ("status", Text),
            ("rows", Int),
            ("scanned_at", Int),
            ("git_commit", Text),
            ("git_author", Text),
            ("ctime_ns", Int),
            ("generation", Int),
        ],
        identity: Some("id"),
    },
    Table {
        name: "file_errors",
        columns: &[
            ("file_id", Int),
            ("seq", Int),
            ("line", Int),
            ("account", Text),
            ("field", Text),
            ("kind", Text),
            ("reason", Text),
        ],
        identity: None,
    },
    Table {
        name: "desired",
        columns: key_then![
            ("first_name", Text),
            ("last_name", Text),
            ("email", Text),
            ("autopay", Bool),
            ("removed", Bool),
            ("file_id", Int),
            ("line", Int),
            ("fingerprint", Int),
            ("updated_at", Int),
        ],
        identity: None,
    },
    Table {
        name: "held_rows",
        columns: &[
            ("file_id", Int),
            ("generation", Int),
            ("sha256", Bytes),
            ("data", Bytes),
        ],
        identity: None,
    },
    Table {
        name: "acked",
        columns: key_then![
            ("first_name", Text),
            ("last_name", Text),
            ("email", Text),
            ("unenrolled", Bool),
            ("acked_at", Int),
        ],
        identity: None,
    },
    Table {
        name: "queue",
        columns: key_then![
            ("state", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("enqueued_at", Int),
            ("last_error", Text),
            ("last_request", Text),
            ("last_response", Text),
        ],
        identity: None,
    },
    Table {
        name: "meta",
        columns: &[("key", Text), ("value", Text)],
        identity: None,
    },
    Table {
        name: "holds",
        columns: key_then![("cause", Text), ("held_at", Int)],
        identity: None,
    },
    Table {
        name: "manifest_versions",
        columns: &[
            ("id", Int),
            ("path", Text),
            ("sha256", Text),
            ("git_commit", Text),
            ("git_author", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "history",
        columns: &[
            ("id", Int),
            KEY[0],
            KEY[1],
            KEY[2],
            ("at_ms", Int),
            ("kind", Text),
            ("event_type", Text),
            ("detail", Text),
            ("manifest_version", Int),
        ],
        identity: Some("id"),
    },
    Table {
        name: "provider_events",
        columns: &[
            ("provider", Text),
            ("event_id", Text),
            ("channel", Text),
            ("received_at", Int),
            ("event_type", Text),
            ("outcome", Text),
            ("reason", Text),
            ("business_unit", Text),
            ("account", Text),
            ("sub_account", Text),
            ("raw", Text),
        ],
        identity: None,
    },
    Table {
        name: "stops",
        columns: key_then![
            ("provider", Text),
            ("event_id", Text),
            ("reason", Text),
            ("at_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "poll_cursors",
        columns: &[
            ("provider", Text),
            ("created", Int),
            ("event_id", Text),
            ("last_success_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "provider_fields",
        columns: key_then![
            ("first_name", Text),
            ("last_name", Text),
            ("email", Text),
            ("provider", Text),
            ("event_id", Text),
            ("created_ms", Int),
            ("at_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "merchant_statuses",
        columns: &[
            ("provider", Text),
            ("account", Text),
            ("status", Text),
            ("event_id", Text),
            ("event_ms", Int),
            ("at_ms", Int),
        ],
        identity: None,
    },
];

impl Table {
    pub(super) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rows per write while copying.
pub(super) const CHUNK: usize = 2_000;

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "the target state {target} is not empty ({rows} rows in {table}); copy only into a state that holds nothing yet"
    )]
    NotEmpty {
        target: String,
        table: &'static str,
        rows: u64,
    },
    #[error("the source and the target are the same state ({0})")]
    Same(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// How many rows each table copied, in copy order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

impl CopyReport {
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// Where rows go: one backend's open transaction.
pub(super) trait Sink {
    fn write(&mut self, table: &Table, rows: &[Vec<Value>]) -> Result<()>;
}

impl Store {
    /// Rows in each table, in copy order.
    fn table_counts(&self) -> Result<Vec<(&'static str, u64)>> {
        TABLES
            .iter()
            .map(|t| {
                let n = match &self.0 {
                    Backend::Sqlite(db) => db.count_rows(t.name)?,
                    Backend::Postgres(db) => db.count_rows(t.name)?,
                };
                Ok((t.name, n))
            })
            .collect()
    }

    /// Where this state lives, in messages.
    pub fn describe(&self) -> String {
        match &self.0 {
            Backend::Sqlite(db) => db.describe(),
            Backend::Postgres(db) => db.target().to_owned(),
        }
    }

    /// Copies every row of `self` into `target`, which must hold nothing.
    pub fn copy_into(&self, target: &mut Store) -> std::result::Result<CopyReport, CopyError> {
        if self.describe() == target.describe() {
            return Err(CopyError::Same(self.describe()));
        }
        if let Some((table, rows)) = target
            .table_counts()?
            .into_iter()
            .find(|(_, rows)| *rows > 0)
        {
            return Err(CopyError::NotEmpty {
                target: target.describe(),
                table,
                rows,
            });
        }
        let source = &self.0;
        let mut report = CopyReport::default();
        let mut each_table = |sink: &mut dyn Sink| -> Result<()> {
            for table in TABLES {
                let mut chunk: Vec<Vec<Value>> = Vec::with_capacity(CHUNK);
                let mut copied = 0u64;
                let mut each = |row: Vec<Value>| -> Result<()> {
                    chunk.push(row);
                    if chunk.len() >= CHUNK {
                        sink.write(table, &chunk)?;
                        copied += chunk.len() as u64;
                        chunk.clear();
                    }
                    Ok(())
                };
                match source {
                    Backend::Sqlite(db) => db.read_table(table, &mut each)?,
                    Backend::Postgres(db) => db.read_table(table, &mut each)?,
                }
                if !chunk.is_empty() {
                    sink.write(table, &chunk)?;
                    copied += chunk.len() as u64;
                }
                report.tables.push((table.name.to_owned(), copied));
            }
            Ok(())
        };
        match &mut target.0 {
            Backend::Sqlite(db) => db.write_tables(&mut each_table)?,
            Backend::Postgres(db) => db.write_tables(&mut each_table)?,
        }
        Ok(report)
    }
}
