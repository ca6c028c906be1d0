//! The commit phase: a scan's file index, errors, desired rows, queue and holds,
//! written in one transaction.

use super::{FileFate, Scan, ScannedFile, TouchedKey};
use crate::manifest::ManifestError;
use crate::store::{DesiredWrite, FileWrite, HoldWrite, QueueWrite, ScanWrites, StateError, Store};

impl Scan {
    /// Commits this scan: file index, errors, desired rows, queue, holds and
    /// each changed file's held rows, in one transaction. `plan` and `validate` never call this.
    pub fn commit(&self, store: &mut Store) -> Result<(), StateError> {
        let mut file_writes = Vec::new();
        for file in &self.files {
            let stored = file.stored.as_ref();
            let write = |clean, ok, rows, errors| file_write(file, clean, ok, rows, errors);
            match file.fate {
                FileFate::Unchanged { restat } if restat || file.dirty => {
                    let s = stored.expect("an unchanged file was stored");
                    // Its errors: those a conflict with a file read now gave it.
                    let errors = (!file.errors.is_empty()).then(|| file.errors.iter().collect());
                    file_writes.push(write(!file.dirty, s.ok, s.rows, errors));
                }
                FileFate::Unchanged { .. } | FileFate::Deferred => {}
                // A file with any error is stored unclean: it is read and parsed
                // again at every scan until it reads clean, so no error sticks.
                FileFate::Parsed { rows, .. } => {
                    file_writes.push(write(
                        !file.dirty && file.errors.is_empty(),
                        true,
                        rows,
                        Some(file.errors.iter().collect()),
                    ));
                }
                FileFate::Failed => {
                    let rows = stored.map_or(0, |s| s.rows);
                    file_writes.push(write(
                        false,
                        false,
                        rows,
                        Some(file.errors.iter().collect()),
                    ));
                }
                FileFate::Deleted => {
                    let mut w = write(true, true, 0, Some(Vec::new()));
                    w.sha256 = None;
                    file_writes.push(w);
                }
            }
        }
        let row_write = |i: u32| {
            let row = &self.rows[i as usize];
            DesiredWrite::Live {
                key: row.key(),
                fields: row.fields(),
                autopay: row.autopay,
                fingerprint: row.fingerprint(),
                file: &self.files[row.file as usize].rel,
                line: row.line,
            }
        };
        let desired = self
            .touched
            .iter()
            .map(|t| match t {
                TouchedKey::Row(i) => row_write(*i),
                TouchedKey::Gone(key, _) => DesiredWrite::Removed {
                    key: crate::customer::CustomerKey::as_ref(key),
                },
            })
            .chain(self.relocated.iter().map(|&i| row_write(i)));
        let queue = self.touched.iter().enumerate().map(|(i, t)| {
            let mut plan = self.touched_plan(i);
            if self.unenroll_held(i, &plan) {
                plan.unenroll = None;
            }
            QueueWrite {
                key: self.key_of(t),
                differs: !plan.is_empty(),
            }
        });
        let holds = self.hold_writes.iter().map(|(i, cause)| HoldWrite {
            key: self.key_of(&self.touched[*i]),
            cause: cause.clone(),
        });
        let summary = serde_json::json!({ "at_ms": self.now_ms, "stats": self.stats, "errors": self.errors.len() });
        store.commit_scan(
            self.now_ms,
            &file_writes,
            ScanWrites {
                desired,
                queue,
                holds,
                held: self.held_writes(),
            },
            &[("last_scan", summary.to_string())],
        )
    }
}

fn file_write<'a>(
    file: &'a ScannedFile,
    clean: bool,
    ok: bool,
    rows: u64,
    errors: Option<Vec<&'a ManifestError>>,
) -> FileWrite<'a> {
    FileWrite {
        path: &file.rel,
        present: file.fate != FileFate::Deleted,
        stat: file.stat,
        sha256: file.sha256.or(file.stored.as_ref().and_then(|s| s.sha256)),
        clean,
        ok,
        rows,
        errors,
    }
}
