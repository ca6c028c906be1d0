//! One pass over the manifests folder, shared by `validate`, `plan`, `apply` and
//! the daemon: find what changed since the last committed scan, read only those
//! files, and work out which keys' desired state changes.
//!
//! A file whose size, mtime and inode are unchanged (and old enough not to be
//! "racy") is not read at all; one whose content hash is unchanged is not parsed.
//! A changed file's rows are merged, in key order, with the rows it held before,
//! so only keys that actually changed are looked up and diffed.

use crate::customer::{CustomerKey, KeyRef};
use crate::manifest::discover::{DiscoverError, discover};
use crate::manifest::{FileStat, ManifestError, ManifestRow, ParseOptions};
use crate::reconcile::{
    Acked, Desired, GuardTrip, KeyPlan, Policy, RemovalPolicy, UnenrollLimits, plan_key,
};
use crate::store::{FileEntry, HeldRows, KeyState, QueueRecord, StateError, Store};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;

mod changes;
mod commit;
mod guard;
mod held;
mod merge;
mod news;
mod read;

/// A file modified this close (ms) to the scan that recorded it is hashed again
/// even if its stat looks unchanged: coarse mtimes cannot tell two quick writes apart.
const RACY_MS: i64 = 2_000;

pub struct ScanSettings<'a> {
    pub dir: &'a Path,
    pub parse: &'a ParseOptions,
    pub policy: Policy,
    pub now_ms: i64,
    /// A file modified less than this long ago may still be being written: it is
    /// left for a later scan (the daemon rescans once it settles). 0 reads everything.
    pub settle_ms: i64,
    /// Files known to be open for writing (from the folder watch): left for later too.
    pub busy: &'a [std::path::PathBuf],
    /// The mass-change guard's limits (SPEC §6).
    pub limits: UnenrollLimits,
    /// Called before each file is read (progress on a terminal).
    pub progress: Option<FileProgress<'a>>,
    /// Whether a file that is parsed whatever its hash (a new one, or one whose
    /// size changed) is hashed too. A commit records the hash and a reviewed plan
    /// seals it; a dry scan that does neither need not spend the time.
    pub hash_parsed: bool,
}

/// Progress callback: the file's position (from 1), the number of files, its path.
pub type FileProgress<'a> = &'a (dyn Fn(usize, usize, &str) + Sync);

impl<'a> ScanSettings<'a> {
    /// Settings from the config: every file read as it is, nothing busy.
    pub fn new(config: &'a crate::config::Config, parse: &'a ParseOptions, now_ms: i64) -> Self {
        Self {
            dir: &config.manifests.dir,
            parse,
            policy: config.policy(),
            now_ms,
            settle_ms: 0,
            busy: &[],
            progress: None,
            hash_parsed: true,
            limits: UnenrollLimits {
                max_unenrolls: config.safety.max_unenrolls,
                max_percent: config.safety.max_unenroll_percent,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Store(#[from] StateError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFate {
    /// Not parsed: its stored rows stand. `restat` when its stat changed but its content did not.
    Unchanged { restat: bool },
    /// Read and parsed. A file with any row error removes nothing in this pass.
    Parsed { rows: u64, row_errors: bool },
    /// A file error: every record it held keeps its previous state.
    Failed,
    /// Gone from the folder: its records count as removed.
    Deleted,
    /// Modified too recently to be read safely; left for the next scan.
    Deferred,
}

#[derive(Debug)]
pub struct ScannedFile {
    pub rel: String,
    pub fate: FileFate,
    stored: Option<FileEntry>,
    /// The state knows the path from a file that was gone (its tombstones
    /// may still name it), though `stored` is `None`.
    former: bool,
    stat: Option<FileStat>,
    sha256: Option<[u8; 32]>,
    /// Took part in a duplicate-key conflict: read it again next time.
    dirty: bool,
    /// Errors found by this scan (parsed or failed files).
    errors: Vec<ManifestError>,
}

impl ScannedFile {
    fn replaced(&self) -> bool {
        matches!(self.fate, FileFate::Parsed { .. } | FileFate::Deleted)
    }

    /// A parsed file stored as `id`, with a row error if `error` (tests).
    #[cfg(test)]
    fn parsed_for_test(id: i64, error: bool) -> Self {
        ScannedFile {
            rel: "customers.csv".into(),
            fate: FileFate::Parsed {
                rows: 0,
                row_errors: error,
            },
            stored: Some(FileEntry {
                id,
                present: true,
                stat: None,
                sha256: None,
                clean: true,
                ok: true,
                rows: 0,
                scanned_at: 0,
            }),
            former: false,
            stat: None,
            sha256: None,
            dirty: false,
            errors: if error {
                vec![ManifestError::file("customers.csv", "a bad row")]
            } else {
                Vec::new()
            },
        }
    }
}

enum TouchedKey {
    /// Index into `Scan::rows`.
    Row(u32),
    /// Left every manifest; the index of the file it was last read from. Boxed:
    /// a first import touches every row, and the enum stays 16 bytes.
    Gone(Box<CustomerKey>, u32),
}

/// Where a planned change comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A row read in this scan.
    Row { file: &'a str, line: u32 },
    /// The key left every manifest; it was last in `file`.
    Removed { file: &'a str },
    /// Queued by an earlier scan and not yet acknowledged.
    Waiting {
        file: Option<&'a str>,
        line: Option<u32>,
    },
}

/// One key's planned events.
#[derive(Clone, Copy, Debug)]
pub struct PlannedChange<'a> {
    pub key: KeyRef<'a>,
    pub plan: KeyPlan<'a>,
    pub origin: Origin<'a>,
    /// The key's place in the delivery queue, if it already waits there.
    pub queue: Option<&'a QueueRecord>,
    /// The unenroll in `plan` is held by the mass-change guard, not sent.
    pub unenroll_held: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    pub files: u64,
    pub files_parsed: u64,
    pub files_unchanged: u64,
    pub files_failed: u64,
    pub files_deleted: u64,
    pub files_deferred: u64,
    pub rows_read: u64,
    pub keys_changed: u64,
    pub keys_removed: u64,
}

/// Identifies a reviewed plan (`plan --out`), so that `apply --plan` sends exactly it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// SHA-256 over every manifest file's path and content hash.
    pub manifests: String,
    /// The store's acknowledged-state counter.
    pub acknowledged: i64,
    /// SHA-256 over the exact events, unmasked.
    pub plan: String,
    /// SHA-256 over the plan file's own body (everything but this fingerprint),
    /// so that an edited plan file is refused. Set by `plan --out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Fingerprint {
    /// Why `self` (now) is not the reviewed `plan`, if it is not.
    pub fn mismatch(&self, plan: &Fingerprint) -> Option<&'static str> {
        if self.manifests != plan.manifests {
            Some("the manifests changed since the plan was made")
        } else if self.acknowledged != plan.acknowledged {
            Some("Paystar's acknowledged state changed since the plan was made")
        } else if self.plan != plan.plan {
            Some("the events to send differ from the plan")
        } else {
            None
        }
    }
}

/// The outcome of one scan, not yet committed.
pub struct Scan {
    pub files: Vec<ScannedFile>,
    /// Valid, unique rows of the parsed files, sorted by key.
    rows: Vec<ManifestRow>,
    /// Keys whose desired state changes, sorted by key, with their stored state.
    touched: Vec<TouchedKey>,
    states: Vec<Option<Box<KeyState>>>,
    /// Rows whose only change is their line number.
    relocated: Vec<u32>,
    /// Rows rejected as duplicates of a key another file holds (in order).
    conflicted: Vec<u32>,
    /// The rows each replaced file held before, by file id, where they were
    /// held in memory: the commit stores each file's rows after it from them.
    previous: HashMap<i64, HeldRows>,
    /// Per touched key: its unenroll is held after this scan (new or kept hold).
    held: Vec<bool>,
    /// Hold changes: touched index and the new cause, or `None` to release.
    hold_writes: Vec<(usize, Option<String>)>,
    /// Set when this pass's new unenrolls tripped the mass-change guard.
    pub guard: Option<GuardTrip>,
    /// The guard tripped on a state that held no customer yet (a first import).
    pub first_import: bool,
    /// Every error, new and stored, ordered by file and line.
    pub errors: Vec<ManifestError>,
    /// Files read again that say exactly what they said at the last scan.
    repeated: HashSet<String>,
    pub warnings: Vec<String>,
    pub stats: ScanStats,
    policy: Policy,
    now_ms: i64,
}

pub fn scan(store: &Store, settings: &ScanSettings<'_>) -> Result<Scan, ScanError> {
    let discovery = discover(settings.dir)?;
    let index = store.file_index()?;
    let mut extra_errors = Vec::new();

    let read::Read {
        mut files,
        mut parsed,
        mut warnings,
        mut previous,
    } = read::read_files(store, settings, &discovery.files, &index)?;
    warnings.extend(discovery.lookalikes.iter().cloned());
    if discovery.files.is_empty() && discovery.broken.is_empty() {
        warnings.push(
            "manifests.dir holds no manifests (*.yaml, *.yml, *.csv, *.tsv, *.xlsx); put the customer exports there".into(),
        );
    }
    for error in &discovery.broken {
        let stored = index.get(&error.file).filter(|e| e.present).cloned();
        files.push(ScannedFile {
            rel: error.file.clone(),
            fate: FileFate::Failed,
            stored,
            former: false,
            stat: None,
            sha256: None,
            dirty: false,
            errors: vec![error.clone()],
        });
    }
    for (dir, err) in &discovery.unreadable {
        extra_errors.push(ManifestError::file(
            dir,
            format!("cannot list this directory ({err}); its files keep their previous state"),
        ));
    }
    for (entry, err) in &discovery.unresolved {
        let prefix = format!("{entry}/");
        if index
            .iter()
            .any(|(rel, e)| e.present && rel.starts_with(&prefix))
        {
            extra_errors.push(ManifestError::file(
                entry,
                format!("cannot be resolved ({err}); the files it held keep their previous state"),
            ));
        }
    }
    let mut gone: Vec<(&String, &FileEntry)> = index
        .iter()
        .filter(|(rel, e)| {
            e.present
                && discovery
                    .files
                    .binary_search_by(|f| f.rel.as_str().cmp(rel.as_str()))
                    .is_err()
                && !discovery.hides(rel)
        })
        .collect();
    gone.sort_by(|a, b| a.0.cmp(b.0));
    for (rel, entry) in gone {
        files.push(ScannedFile {
            rel: rel.clone(),
            fate: FileFate::Deleted,
            stored: Some(entry.clone()),
            former: false,
            stat: None,
            sha256: None,
            dirty: false,
            errors: Vec::new(),
        });
    }

    // Parsed rows and errors go to their files; keys of rejected rows keep their state.
    let mut kept: HashSet<CustomerKey> = HashSet::new();
    // The largest file's rows become the scan's row list without a copy.
    let total: usize = parsed.iter().map(|(_, p)| p.rows.len()).sum();
    let largest = (0..parsed.len()).max_by_key(|&i| parsed[i].1.rows.len());
    let mut rows: Vec<ManifestRow> = match largest {
        Some(i) => std::mem::take(&mut parsed[i].1.rows),
        None => Vec::new(),
    };
    rows.reserve(total - rows.len());
    for (file, p) in parsed {
        files[file].errors.extend(p.errors);
        kept.extend(p.rejected_keys);
        rows.extend(p.rows);
    }
    let mut prefixes = crate::manifest::sort_rows(&mut rows);
    let rows_read = rows.len() as u64;
    merge::reject_duplicates(&mut rows, prefixes.as_mut(), &mut files, &mut kept);

    let merge::Merged {
        mut touched,
        relocated,
    } = merge::merge(
        store,
        &files,
        &rows,
        prefixes.as_ref(),
        &kept,
        &mut previous,
        crate::halves::split_from(),
    )?;
    drop(prefixes);
    let mut states = store.load_states(touched.iter().map(|t| key_of(t, &rows)))?;
    let conflicted = merge::drop_conflicts(
        &mut files,
        &rows,
        &mut touched,
        &mut states,
        &mut extra_errors,
    );

    let (held, hold_writes, guard) =
        guard::guard(store, settings, &touched, &states, &rows, &files)?;
    let first_import = guard.is_some() && store.is_empty()?;

    // Files read again because they had errors at the last scan: what they
    // still say is not news (the daemon logs only what changed).
    let rechecked: Vec<i64> = files
        .iter()
        .filter(|f| matches!(f.fate, FileFate::Parsed { .. } | FileFate::Failed))
        .filter_map(|f| f.stored.as_ref().filter(|e| !e.clean).map(|e| e.id))
        .collect();
    let repeated = news::repeated_errors(&files, store.file_errors(&rechecked)?);

    // Errors of unchanged files come from the store; new ones from this scan.
    let unchanged_ids: Vec<i64> = files
        .iter()
        .filter(|f| matches!(f.fate, FileFate::Unchanged { .. } | FileFate::Deferred))
        .filter_map(|f| f.stored.as_ref().map(|e| e.id))
        .collect();
    let mut errors = store.file_errors(&unchanged_ids)?;
    errors.extend(files.iter().flat_map(|f| f.errors.iter().cloned()));
    errors.extend(extra_errors);
    errors.sort_by(|a, b| a.file.cmp(&b.file).then(a.line.cmp(&b.line)));
    errors.dedup();

    let stats = ScanStats {
        files: (discovery.files.len() + discovery.broken.len()) as u64,
        files_parsed: count(&files, |f| matches!(f, FileFate::Parsed { .. })),
        files_unchanged: count(&files, |f| matches!(f, FileFate::Unchanged { .. })),
        files_failed: count(&files, |f| f == FileFate::Failed),
        files_deleted: count(&files, |f| f == FileFate::Deleted),
        files_deferred: count(&files, |f| f == FileFate::Deferred),
        rows_read,
        keys_changed: touched
            .iter()
            .filter(|t| matches!(t, TouchedKey::Row(_)))
            .count() as u64,
        keys_removed: touched
            .iter()
            .filter(|t| matches!(t, TouchedKey::Gone(..)))
            .count() as u64,
    };
    Ok(Scan {
        files,
        rows,
        touched,
        states,
        relocated,
        conflicted,
        previous,
        held,
        hold_writes,
        guard,
        first_import,
        errors,
        repeated,
        warnings,
        stats,
        policy: settings.policy,
        now_ms: settings.now_ms,
    })
}

fn count(files: &[ScannedFile], f: impl Fn(FileFate) -> bool) -> u64 {
    files.iter().filter(|file| f(file.fate)).count() as u64
}

fn key_of<'a>(t: &'a TouchedKey, rows: &'a [ManifestRow]) -> KeyRef<'a> {
    match t {
        TouchedKey::Row(i) => rows[*i as usize].key(),
        TouchedKey::Gone(key, _) => CustomerKey::as_ref(key),
    }
}

fn desired_of<'a>(t: &'a TouchedKey, rows: &'a [ManifestRow]) -> Desired<'a> {
    match t {
        TouchedKey::Row(i) => {
            let row = &rows[*i as usize];
            Desired::Live {
                fields: row.fields(),
                autopay: row.autopay,
            }
        }
        TouchedKey::Gone(..) => Desired::Removed,
    }
}

fn acked_of(state: &Option<Box<KeyState>>) -> Option<Acked<'_>> {
    state.as_ref()?.acked_view()
}
