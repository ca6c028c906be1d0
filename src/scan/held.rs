//! What each file holds once a scan commits: for every file whose desired rows
//! the commit changes, its rows after the commit in their stored form, worked
//! out from the rows it held before and this scan's rows, so that the next scan
//! of a changed file reads one value instead of its rows. Where that cannot be
//! worked out here, what is stored for the file is dropped (the next scan reads
//! `desired`): the stored rows are never other than `desired`'s.

use super::{FileFate, Scan, TouchedKey};
use crate::customer::CustomerKey;
use crate::manifest::ManifestRow;
use crate::store::{HeldRows, HeldWrite, PrevRow};
use std::collections::HashSet;

impl Scan {
    /// Every file whose desired rows this scan's commit changes, with its rows
    /// after it (encoded as each is reached, one file at a time) or `None`.
    ///
    /// The commit writes every live row of a replaced (parsed or deleted) file
    /// but those rejected as conflicts, turns the keys gone from it into
    /// tombstones, and moves a key another replaced file now holds. A replaced
    /// file's rows after it are therefore: its rows in this scan, and of what
    /// it held, every key no file in this scan holds (a gone key as a
    /// tombstone). The one other change: a tombstone in a file this scan did
    /// not replace, taken by a row of one it did; that file's stored rows go.
    pub(super) fn held_writes(&self) -> impl Iterator<Item = HeldWrite<'_>> {
        let replaced = |f: usize| {
            matches!(
                self.files[f].fate,
                FileFate::Parsed { .. } | FileFate::Deleted
            )
        };
        // Each replaced file's rows but the rejected ones, and its gone keys,
        // both in key order.
        let mut mine: Vec<Vec<u32>> = vec![Vec::new(); self.files.len()];
        let mut conflicted = self.conflicted.iter().peekable();
        for (i, row) in self.rows.iter().enumerate() {
            if conflicted.next_if_eq(&&(i as u32)).is_none() {
                mine[row.file as usize].push(i as u32);
            }
        }
        let mut gone: Vec<Vec<&CustomerKey>> = vec![Vec::new(); self.files.len()];
        for t in &self.touched {
            if let TouchedKey::Gone(key, f) = t {
                gone[*f as usize].push(key);
            }
        }
        let replaced_paths: HashSet<&str> = (0..self.files.len())
            .filter(|&f| replaced(f))
            .map(|f| self.files[f].rel.as_str())
            .collect();
        let mut taken_from: Vec<&str> = Vec::new();
        for (i, t) in self.touched.iter().enumerate() {
            let TouchedKey::Row(r) = t else { continue };
            let Some(desired) = self.states[i].as_ref().and_then(|s| s.desired.as_ref()) else {
                continue;
            };
            let Some(from) = desired.file.as_deref() else {
                continue;
            };
            let here = &self.files[self.rows[*r as usize].file as usize].rel;
            if from != here && !replaced_paths.contains(from) {
                taken_from.push(from);
            }
        }
        taken_from.sort_unstable();
        taken_from.dedup();

        let computed = (0..self.files.len())
            .filter(move |&f| replaced(f))
            .map(move |f| {
                let file = &self.files[f];
                let empty = HeldRows::default();
                let before = match &file.stored {
                    Some(stored) => self.previous.get(&stored.id),
                    // A path the state knew from a file that was gone may still
                    // be named by tombstones this scan did not read.
                    None if file.former => None,
                    None => Some(&empty),
                };
                let rows = before.and_then(|before| after(&self.rows, before, &mine[f], &gone[f]));
                HeldWrite {
                    path: &file.rel,
                    rows,
                }
            });
        let dropped = taken_from
            .into_iter()
            .map(|path| HeldWrite { path, rows: None });
        computed.chain(dropped)
    }
}

/// A file's rows after the commit, encoded: `mine` (its rows in this scan)
/// and, of `before`, every key not among `rows`, those in `gone` as
/// tombstones. `None` where the compact form cannot hold them.
fn after(
    rows: &[ManifestRow],
    before: &HeldRows,
    mine: &[u32],
    gone: &[&CustomerKey],
) -> Option<Vec<u8>> {
    fn live(row: &ManifestRow) -> PrevRow<'_> {
        PrevRow {
            key: row.key(),
            fingerprint: row.fingerprint(),
            line: Some(row.line),
            removed: false,
        }
    }
    let mut out = HeldRows::with_capacity(before.len().max(mine.len()));
    let mut fits = true;
    let mut mine = mine.iter().map(|&i| &rows[i as usize]).peekable();
    let mut gone = gone.iter().peekable();
    for prev in before.iter() {
        while let Some(row) = mine.next_if(|r| r.key() < prev.key) {
            fits &= out.push(live(row));
        }
        if let Some(row) = mine.next_if(|r| r.key() == prev.key) {
            fits &= out.push(live(row));
            continue;
        }
        if rows.binary_search_by(|r| r.key().cmp(&prev.key)).is_ok() {
            continue; // another file of this scan holds it now
        }
        let removed = prev.removed
            || gone
                .next_if(|k| CustomerKey::as_ref(k) == prev.key)
                .is_some();
        fits &= out.push(PrevRow { removed, ..prev });
    }
    for row in mine {
        fits &= out.push(live(row));
    }
    debug_assert!(gone.next().is_none(), "every gone key was held");
    fits.then(|| out.encode())
}
