//! Reading the folder: which files changed (stat, then SHA-256), parsing those
//! that did (on one thread per core when there are several files), then loading
//! the rows each parsed file held before, so that the merge finds them in memory.

use super::{FileFate, RACY_MS, ScanSettings, ScannedFile};
use crate::manifest::{DiscoveredFile, ManifestError, ParsedFile, parse_file};
use crate::store::{FileEntry, HeldRows, StateError, Store};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The files as read, and the rows the store held for each file parsed.
pub(super) struct Read {
    pub files: Vec<ScannedFile>,
    pub parsed: Vec<(usize, ParsedFile)>,
    pub warnings: Vec<String>,
    /// By file id.
    pub previous: HashMap<i64, HeldRows>,
}

/// Reads every discovered file that may have changed, then loads the rows
/// each parsed file held (one stored value a file, as a rule). They are loaded
/// after the parse, not beside it: a big file's parse takes both cores
/// already, and its rows and those held would otherwise be in memory together
/// with the parse's own buffers.
pub(super) fn read_files(
    store: &Store,
    settings: &ScanSettings<'_>,
    found: &[DiscoveredFile],
    index: &HashMap<String, FileEntry>,
) -> Result<Read, StateError> {
    let mut read = read_each(settings, found, index);
    for file in &read.files {
        if let (FileFate::Parsed { .. }, Some(stored)) = (file.fate, &file.stored)
            && let Some(held) = store.held_rows(stored.id, stored.rows)?
        {
            read.previous.insert(stored.id, held);
        }
    }
    Ok(read)
}

/// Each file's fate, and what was parsed; `previous` is left to the caller.
/// With several files to read and several cores, files are taken in turn by one
/// thread per core (at most [`MAX_READERS`]); the outcome is in folder order either way.
fn read_each(
    settings: &ScanSettings<'_>,
    found: &[DiscoveredFile],
    index: &HashMap<String, FileEntry>,
) -> Read {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let readers = cores.min(MAX_READERS).min(found.len()).max(1);
    let next = AtomicUsize::new(0);
    let take_files = || {
        let mut done = Vec::new();
        loop {
            let position = next.fetch_add(1, Ordering::Relaxed);
            let Some(file) = found.get(position) else {
                return done;
            };
            if let Some(progress) = settings.progress {
                progress(position + 1, found.len(), &file.rel);
            }
            done.push((position, read_one(settings, file, position, index)));
        }
    };
    let mut outcomes = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..readers)
            .map(|n| {
                let take_files = &take_files;
                std::thread::Builder::new()
                    .name(format!("scan-read-{}", n + 1))
                    .spawn_scoped(s, take_files)
                    .expect("cannot start a scan reading thread")
            })
            .collect();
        let mut outcomes = take_files();
        for helper in helpers {
            match helper.join() {
                Ok(more) => outcomes.extend(more),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        outcomes
    });
    outcomes.sort_unstable_by_key(|(position, _)| *position);
    let mut read = Read {
        files: Vec::with_capacity(found.len()),
        parsed: Vec::new(),
        warnings: Vec::new(),
        previous: HashMap::new(),
    };
    for (position, (file, outcome)) in outcomes {
        if let Some(p) = outcome {
            read.warnings.extend(p.warnings.iter().cloned());
            read.parsed.push((position, p));
        }
        read.files.push(file);
    }
    read
}

/// More readers than this gain nothing: the merge and the state read wait for them.
const MAX_READERS: usize = 4;

/// One file: its fate, and its parsed rows if it was parsed.
fn read_one(
    settings: &ScanSettings<'_>,
    found: &DiscoveredFile,
    position: usize,
    index: &HashMap<String, FileEntry>,
) -> (ScannedFile, Option<ParsedFile>) {
    let stored = index.get(&found.rel).filter(|e| e.present).cloned();
    let (fate, sha, outcome) = read_if_changed(found, stored.as_ref(), position as u32, settings);
    let mut errors = Vec::new();
    let fate = match fate {
        Ok(fate) => fate,
        Err(error) => {
            errors.push(error);
            FileFate::Failed
        }
    };
    let file = ScannedFile {
        rel: found.rel.clone(),
        fate,
        former: stored.is_none() && index.contains_key(&found.rel),
        stored,
        stat: Some(found.stat),
        sha256: sha,
        dirty: false,
        errors,
    };
    (file, outcome)
}

/// Decides whether a file needs reading, and reads it if so.
#[allow(clippy::type_complexity)]
fn read_if_changed(
    found: &DiscoveredFile,
    stored: Option<&FileEntry>,
    file_idx: u32,
    settings: &ScanSettings<'_>,
) -> (
    Result<FileFate, ManifestError>,
    Option<[u8; 32]>,
    Option<ParsedFile>,
) {
    let settling = settings.settle_ms > 0
        && found.stat.mtime_ns / 1_000_000 > settings.now_ms - settings.settle_ms;
    if settling || settings.busy.contains(&found.path) {
        return (Ok(FileFate::Deferred), None, None);
    }
    // A file with errors at the last scan is never clean: it is read again
    // until it reads clean. Size, mtime, inode and change time must all match,
    // and neither time may fall near the scan that recorded them.
    let trusted = stored.is_some_and(|e| {
        e.clean
            && e.stat == Some(found.stat)
            && found.stat.mtime_ns.max(found.stat.ctime_ns) / 1_000_000 < e.scanned_at - RACY_MS
    });
    if trusted {
        return (Ok(FileFate::Unchanged { restat: false }), None, None);
    }
    // A new file, or one whose size changed, will be parsed whatever its hash:
    // where nothing needs its hash, it is not hashed at all.
    let certain = stored.is_none_or(|e| e.stat.is_none_or(|s| s.size != found.stat.size));
    if certain && !settings.hash_parsed {
        return parsed_fate(parse_file(found, file_idx, settings.parse), None);
    }
    let sha = match hash_file(found, settings.parse.max_file_size) {
        Ok(sha) => sha,
        Err(error) => return (Err(error), None, None),
    };
    if stored.is_some_and(|e| e.clean && e.sha256 == Some(sha)) {
        return (Ok(FileFate::Unchanged { restat: true }), Some(sha), None);
    }
    parsed_fate(parse_file(found, file_idx, settings.parse), Some(sha))
}

/// A parsed file's fate, with its hash if it was taken.
#[allow(clippy::type_complexity)]
fn parsed_fate(
    parsed: Result<ParsedFile, ManifestError>,
    sha: Option<[u8; 32]>,
) -> (
    Result<FileFate, ManifestError>,
    Option<[u8; 32]>,
    Option<ParsedFile>,
) {
    match parsed {
        Ok(parsed) => {
            let fate = FileFate::Parsed {
                rows: parsed.rows.len() as u64,
                row_errors: !parsed.errors.is_empty(),
            };
            (Ok(fate), sha, Some(parsed))
        }
        Err(error) => (Err(error), sha, None),
    }
}

fn hash_file(found: &DiscoveredFile, max_size: u64) -> Result<[u8; 32], ManifestError> {
    use crate::manifest::open;
    if found.stat.size > max_size {
        return Err(open::too_large(&found.rel, max_size));
    }
    let mut file = open::open(&found.path, &found.rel, max_size)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(err) if err.get_ref().is_some_and(|e| e.is::<open::TooLarge>()) => {
                return Err(ManifestError::file(&found.rel, open::TooLarge.to_string()));
            }
            Err(err) => return Err(open::io_error(&found.rel, &err)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}
