//! What each file holds once a scan commits: for every file whose desired rows
//! the commit changes, its rows after the commit in their stored form, worked
//! out from the rows it held before and this scan's rows, so that the next scan
//! of a changed file reads one value instead of its rows. Where that cannot be
//! worked out here, what is stored for the file is dropped (the next scan reads
//! `desired`): the stored rows are never other than `desired`'s.

use super::{FileFate, Scan, TouchedKey};
use crate::customer::CustomerKey;
use crate::manifest::ManifestRow;
use crate::store::{HeldRows, HeldSize, HeldWrite, PrevRow};
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
        // Each replaced file's rows but the rejected ones, in key order: all
        // of them where one file holds every row (a first import, one big
        // export), else listed by file.
        let mut holds = vec![false; self.files.len()];
        for row in &self.rows {
            holds[row.file as usize] = true;
        }
        let holders: Vec<usize> = (0..holds.len()).filter(|&f| holds[f]).collect();
        let mine: Mine<'_> = match holders.as_slice() {
            [] => Mine::All(None, 0, &self.conflicted),
            [one] => Mine::All(Some(*one), self.rows.len(), &self.conflicted),
            _ => {
                let mut lists: Vec<Vec<u32>> = vec![Vec::new(); self.files.len()];
                let mut conflicted = self.conflicted.iter().peekable();
                for (i, row) in self.rows.iter().enumerate() {
                    if conflicted.next_if_eq(&&(i as u32)).is_none() {
                        lists[row.file as usize].push(i as u32);
                    }
                }
                Mine::Listed(lists)
            }
        };
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
                let rows = before.and_then(|before| {
                    let walk = |emit: &mut dyn FnMut(PrevRow<'_>)| {
                        after(&self.rows, before, mine.of(f), &gone[f], emit);
                    };
                    // Counted, then written into a value of exactly that size.
                    let mut size = HeldSize::default();
                    walk(&mut |prev| size.push(prev));
                    let mut encoder = size.encoder()?;
                    walk(&mut |prev| encoder.push(prev));
                    encoder.finish()
                });
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

/// Which rows of the scan each replaced file holds after it.
enum Mine<'a> {
    /// Every row (of the count given) but the rejected ones (in order) is
    /// this file's.
    All(Option<usize>, usize, &'a [u32]),
    /// By file.
    Listed(Vec<Vec<u32>>),
}

impl Mine<'_> {
    /// File `f`'s rows, as indices in key order.
    fn of(&self, f: usize) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            Mine::All(Some(file), count, rejected) if *file == f => {
                let mut rejected = rejected.iter().peekable();
                Box::new((0..*count as u32).filter(move |i| rejected.next_if_eq(&i).is_none()))
            }
            Mine::All(..) => Box::new(std::iter::empty()),
            Mine::Listed(lists) => Box::new(lists[f].iter().copied()),
        }
    }
}

/// A file's rows after the commit, in key order, given to `emit`: `mine` (its
/// rows in this scan) and, of `before`, every key not among `rows`, those in
/// `gone` as tombstones.
fn after(
    rows: &[ManifestRow],
    before: &HeldRows,
    mine: impl Iterator<Item = u32>,
    gone: &[&CustomerKey],
    emit: &mut dyn FnMut(PrevRow<'_>),
) {
    fn live(row: &ManifestRow) -> PrevRow<'_> {
        PrevRow {
            key: row.key(),
            fingerprint: row.fingerprint(),
            line: Some(row.line),
            removed: false,
        }
    }
    let mut mine = mine.map(|i| &rows[i as usize]).peekable();
    let mut gone = gone.iter().peekable();
    for prev in before.iter() {
        while let Some(row) = mine.next_if(|r| r.key() < prev.key) {
            emit(live(row));
        }
        if let Some(row) = mine.next_if(|r| r.key() == prev.key) {
            emit(live(row));
            continue;
        }
        if rows.binary_search_by(|r| r.key().cmp(&prev.key)).is_ok() {
            continue; // another file of this scan holds it now
        }
        let removed = prev.removed
            || gone
                .next_if(|k| CustomerKey::as_ref(k) == prev.key)
                .is_some();
        emit(PrevRow { removed, ..prev });
    }
    for row in mine {
        emit(live(row));
    }
    debug_assert!(gone.next().is_none(), "every gone key was held");
}
