//! The merge phase: a changed file's new rows, in key order, against the rows it
//! held before, so that only keys whose fingerprint changed are looked up; then the
//! duplicates within the scan and across files are rejected.

use super::{FileFate, ScannedFile, TouchedKey, key_of};
use crate::customer::CustomerKey;
use crate::manifest::{ErrorKind, KeyPrefixes, ManifestError, ManifestRow};
use crate::store::{HeldRows, KeyState, PrevRow, StateError, Store};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

pub(super) struct Merged {
    /// Keys whose desired state changes, sorted by key.
    pub touched: Vec<TouchedKey>,
    /// Rows whose only change is their line number.
    pub relocated: Vec<u32>,
}

/// Merges each replaced file's new rows (`rows` is sorted by key) with the rows it
/// held before: from `previous` where the read phase loaded them, else loaded
/// into it here (a deleted file's); a file whose rows the compact form cannot
/// hold is read from the store row by row and left out of `previous`.
/// A file with `split_from` held rows or more is taken in two halves on two
/// threads ([`crate::halves::split_from`]).
pub(super) fn merge(
    store: &Store,
    files: &[ScannedFile],
    rows: &[ManifestRow],
    prefixes: Option<&KeyPrefixes>,
    kept: &HashSet<CustomerKey>,
    previous: &mut HashMap<i64, HeldRows>,
    split_from: usize,
) -> Result<Merged, StateError> {
    let mut counts = vec![0usize; files.len()];
    for row in rows {
        counts[row.file as usize] += 1;
    }
    // A file holding every row (one big export) needs no list of them.
    let whole = counts.iter().position(|&c| c > 0 && c == rows.len());
    let mut by_file: Vec<Vec<u32>> = match whole {
        Some(_) => vec![Vec::new(); files.len()],
        None => counts.into_iter().map(Vec::with_capacity).collect(),
    };
    if whole.is_none() {
        for (i, row) in rows.iter().enumerate() {
            by_file[row.file as usize].push(i as u32);
        }
    }
    let mut touched: Vec<TouchedKey> = Vec::new();
    let mut relocated: Vec<u32> = Vec::new();
    for (file_idx, file) in files.iter().enumerate() {
        if !file.replaced() {
            continue;
        }
        let run = |fresh| Run {
            rows,
            prefixes,
            kept,
            fresh,
            file_idx: file_idx as u32,
            // Any error in the file (a bad row, a duplicate) may hide a customer
            // that seems to be gone: nothing counts as removed from it in this pass.
            may_remove: file.errors.is_empty(),
            next: 0,
            touched: Vec::new(),
            relocated: Vec::new(),
        };
        let fresh = match whole {
            Some(f) if f == file_idx => Fresh::Span(0, rows.len() as u32),
            _ => Fresh::Listed(&by_file[file_idx]),
        };
        if let Some(stored) = file
            .stored
            .as_ref()
            .filter(|e| !previous.contains_key(&e.id))
            && let Some(held) = store.held_rows(stored.id, stored.rows)?
        {
            previous.insert(stored.id, held);
        }
        let runs = match file.stored.as_ref().map(|e| e.id) {
            None => vec![run(fresh)],
            Some(id) => match previous.get(&id) {
                Some(held) if held.len() >= split_from => {
                    // The held rows' halves, each with the new rows up to the
                    // next half's first key, on two threads.
                    let half = held.len() / 2;
                    let at = held.iter_from(half).next().map(|p| p.key);
                    let cut = at.map_or(fresh.len(), |at| {
                        fresh.partition_point(|i| rows[i as usize].key() < at)
                    });
                    let (head, tail) = fresh.split_at(cut);
                    let (mut first, mut second) = (run(head), run(tail));
                    crate::halves::in_parallel(
                        || held.iter().take(half).for_each(|prev| first.take(prev)),
                        || held.iter_from(half).for_each(|prev| second.take(prev)),
                    );
                    vec![first, second]
                }
                Some(held) => {
                    let mut one = run(fresh);
                    held.iter().for_each(|prev| one.take(prev));
                    vec![one]
                }
                None => {
                    let mut one = run(fresh);
                    store.for_each_file_row(id, |prev| one.take(prev))?;
                    vec![one]
                }
            },
        };
        for run in runs {
            let (t, r) = run.finish();
            // The first file's keys (all of them in a first import) are
            // taken, not copied: a million would briefly be held twice.
            if touched.is_empty() {
                touched = t;
            } else {
                touched.extend(t);
            }
            relocated.extend(r);
        }
    }
    sort_touched(&mut touched, rows);
    Ok(Merged { touched, relocated })
}

/// A file's new rows, as indices into the sorted rows: listed, or every row
/// from the first index to the second.
#[derive(Clone, Copy)]
enum Fresh<'a> {
    Listed(&'a [u32]),
    Span(u32, u32),
}

impl Fresh<'_> {
    fn len(self) -> usize {
        match self {
            Fresh::Listed(list) => list.len(),
            Fresh::Span(start, end) => (end - start) as usize,
        }
    }

    /// The `i`th row's index.
    fn at(self, i: usize) -> u32 {
        match self {
            Fresh::Listed(list) => list[i],
            Fresh::Span(start, _) => start + i as u32,
        }
    }

    fn split_at(self, cut: usize) -> (Self, Self) {
        match self {
            Fresh::Listed(list) => {
                let (head, tail) = list.split_at(cut);
                (Fresh::Listed(head), Fresh::Listed(tail))
            }
            Fresh::Span(start, end) => {
                let cut = start + cut as u32;
                (Fresh::Span(start, cut), Fresh::Span(cut, end))
            }
        }
    }

    /// How many rows from the first hold `before` (all those that do come first).
    fn partition_point(self, before: impl Fn(u32) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if before(self.at(mid)) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }
}

/// One run of a file's held rows, in key order, against its new rows from
/// where the run starts (`fresh`, indices into `rows`): the keys it touches and
/// the rows that only moved.
struct Run<'a> {
    rows: &'a [ManifestRow],
    prefixes: Option<&'a KeyPrefixes>,
    kept: &'a HashSet<CustomerKey>,
    fresh: Fresh<'a>,
    file_idx: u32,
    may_remove: bool,
    /// The first new row not yet placed.
    next: usize,
    touched: Vec<TouchedKey>,
    relocated: Vec<u32>,
}

impl Run<'_> {
    /// The next held row.
    fn take(&mut self, prev: PrevRow<'_>) {
        let (rows, fresh) = (self.rows, self.fresh);
        // The row's key against the held one's, from their prefixes where they tell.
        let probe = self
            .prefixes
            .and_then(|p| p.probe(prev.key).map(|probe| (p, probe)));
        let order = |i: u32| {
            let row = &rows[i as usize];
            probe
                .and_then(|(p, probe)| p.of_row(i as usize, row).compare(probe))
                .unwrap_or_else(|| row.key().cmp(&prev.key))
        };
        while self.next < fresh.len() && order(fresh.at(self.next)) == Ordering::Less {
            self.touched.push(TouchedKey::Row(fresh.at(self.next)));
            self.next += 1;
        }
        if self.next < fresh.len() && order(fresh.at(self.next)) == Ordering::Equal {
            let i = fresh.at(self.next);
            let row = &rows[i as usize];
            if prev.removed || prev.fingerprint != row.fingerprint() {
                self.touched.push(TouchedKey::Row(i));
            } else if prev.line != Some(row.line) {
                self.relocated.push(i);
            }
            self.next += 1;
        } else if !prev.removed
            && self.may_remove
            && !self.kept.contains(&prev.key.to_owned())
            && rows.binary_search_by(|r| r.key().cmp(&prev.key)).is_err()
        {
            self.touched.push(TouchedKey::Gone(
                Box::new(prev.key.to_owned()),
                self.file_idx,
            ));
        }
    }

    /// What the run touched, with the new rows after the last held one.
    fn finish(mut self) -> (Vec<TouchedKey>, Vec<u32>) {
        let fresh = self.fresh;
        let rest = (self.next..fresh.len()).map(|i| TouchedKey::Row(fresh.at(i)));
        self.touched.extend(rest);
        (self.touched, self.relocated)
    }
}

/// Puts the keys of all files in key order. `rows` is sorted, so a row's index is
/// its rank, and a removed key (never among `rows`) ranks where it would be
/// inserted, before the row there: the sort compares integers, and key text only
/// for removed keys of equal rank.
fn sort_touched(touched: &mut [TouchedKey], rows: &[ManifestRow]) {
    let rank = |t: &TouchedKey| match t {
        TouchedKey::Row(i) => (u64::from(*i) << 1) | 1,
        TouchedKey::Gone(key, _) => {
            let at = rows.partition_point(|r| r.key() < CustomerKey::as_ref(key));
            (at as u64) << 1
        }
    };
    if touched.windows(2).all(|w| rank(&w[0]) < rank(&w[1])) {
        return; // one file's keys, or files in key order: already sorted
    }
    let mut order: Vec<(u64, u32)> = touched
        .iter()
        .enumerate()
        .map(|(i, t)| (rank(t), i as u32))
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            key_of(&touched[a.1 as usize], rows).cmp(&key_of(&touched[b.1 as usize], rows))
        })
    });
    crate::manifest::permute(touched, order.into_iter().map(|(_, i)| i).collect());
}

/// A new row whose key is still held by a file this scan did not replace is a
/// duplicate across files: both are rejected and the key keeps its state.
/// Gives the rejected rows (indices into `rows`, in order).
pub(super) fn drop_conflicts(
    files: &mut [ScannedFile],
    rows: &[ManifestRow],
    touched: &mut Vec<TouchedKey>,
    states: &mut Vec<Option<Box<KeyState>>>,
    extra_errors: &mut Vec<ManifestError>,
) -> Vec<u32> {
    let mut rejected = Vec::new();
    let replaced: HashSet<String> = files
        .iter()
        .filter(|f| f.replaced())
        .map(|f| f.rel.clone())
        .collect();
    let mut conflicts: Vec<(usize, String, Option<u32>)> = Vec::new();
    for (i, t) in touched.iter().enumerate() {
        if let (TouchedKey::Row(_), Some(state)) = (t, &states[i])
            && let Some(d) = state.desired.as_ref().filter(|d| !d.removed)
            && let Some(other) = d.file.as_deref().filter(|f| !replaced.contains(*f))
        {
            conflicts.push((i, other.to_owned(), d.line));
        }
    }
    if !conflicts.is_empty() {
        let mut drop_at = vec![false; touched.len()];
        for (i, other, other_line) in conflicts {
            drop_at[i] = true;
            let TouchedKey::Row(r) = touched[i] else {
                continue;
            };
            rejected.push(r);
            let row = &rows[r as usize];
            let here = files[row.file as usize].rel.clone();
            let there = match other_line {
                Some(line) => format!("{other}:{line}"),
                None => other.clone(),
            };
            let message = |elsewhere: &str| {
                format!(
                    "customer {} also appears at {elsewhere}; every occurrence is rejected and the customer keeps its previous state",
                    row.key()
                )
            };
            let error = duplicate_error(&here, Some(row.line), row.key().account, message(&there));
            files[row.file as usize].errors.push(error);
            files[row.file as usize].dirty = true;
            let error = duplicate_error(
                &other,
                other_line,
                row.key().account,
                message(&format!("{here}:{}", row.line)),
            );
            // The other file was not read: its occurrence is its error all the
            // same, stored with it as a scan from scratch would store it.
            match files.iter_mut().find(|f| f.rel == other) {
                Some(f) if matches!(f.fate, FileFate::Unchanged { .. }) => {
                    f.dirty = true;
                    f.errors.push(error);
                }
                Some(f) => {
                    f.dirty = true;
                    extra_errors.push(error);
                }
                None => extra_errors.push(error),
            }
        }
        let mut flags = drop_at.iter();
        touched.retain(|_| !*flags.next().expect("one flag per key"));
        let mut flags = drop_at.iter();
        states.retain(|_| !*flags.next().expect("one flag per key"));
    }
    rejected
}

/// Removes every row whose key appears more than once, reporting each location.
pub(super) fn reject_duplicates(
    rows: &mut Vec<ManifestRow>,
    mut prefixes: Option<&mut KeyPrefixes>,
    files: &mut [ScannedFile],
    kept: &mut HashSet<CustomerKey>,
) {
    // Neighbours whose prefixes differ have different keys: their text is not read.
    let same_key = |a: usize, b: usize, prefixes: Option<&KeyPrefixes>| {
        let told = prefixes.and_then(|p| p.of_row(a, &rows[a]).compare(p.of_row(b, &rows[b])));
        match told {
            Some(order) => order == Ordering::Equal,
            None => rows[a].key() == rows[b].key(),
        }
    };
    let mut dup = vec![false; rows.len()];
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        while end < rows.len() && same_key(end, start, prefixes.as_deref()) {
            end += 1;
        }
        if end - start > 1 {
            let group = &rows[start..end];
            let places: Vec<String> = group
                .iter()
                .map(|r| format!("{}:{}", files[r.file as usize].rel, r.line))
                .collect();
            for (i, row) in group.iter().enumerate() {
                let others: Vec<&str> = places
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| p.as_str())
                    .collect();
                let reason = format!(
                    "customer {} also appears at {}; every occurrence is rejected and the customer keeps its previous state",
                    row.key(),
                    others.join(", ")
                );
                let error = duplicate_error(
                    &files[row.file as usize].rel,
                    Some(row.line),
                    row.key().account,
                    reason,
                );
                files[row.file as usize].errors.push(error);
                files[row.file as usize].dirty = true;
            }
            kept.insert(group[0].key().to_owned());
            dup[start..end].fill(true);
        }
        start = end;
    }
    if let Some(prefixes) = prefixes.as_mut() {
        prefixes.retain(|i| !dup[i]);
    }
    let mut flags = dup.iter();
    rows.retain(|_| !*flags.next().expect("one flag per row"));
}

fn duplicate_error(file: &str, line: Option<u32>, account: &str, reason: String) -> ManifestError {
    ManifestError {
        file: file.to_owned(),
        line,
        account: Some(account.to_owned()),
        field: Some("accountNumber".into()),
        kind: ErrorKind::Duplicate,
        reason,
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
