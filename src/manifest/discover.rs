//! Finds manifest files under `manifests.dir`, applying the ignore rules of SPEC §3.

use super::error::ManifestError;
use super::open;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Csv,
    /// `*.tsv`: CSV separated by tabs (Excel's "Unicode Text").
    Tsv,
    Xlsx,
}

/// What `stat` says about a file; used to skip unchanged files without reading them.
/// The change time is part of it: a chmod, or a rewrite that keeps the size and
/// sets the mtime back (`touch -d`), changes nothing else here but moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub ctime_ns: i64,
}

impl FileStat {
    /// The stat as a state stores it, column by column; `None` unless every
    /// part was stored (a path that was not a file, or a state from before
    /// the change time was kept).
    pub fn from_stored(
        size: Option<i64>,
        mtime_ns: Option<i64>,
        inode: Option<i64>,
        ctime_ns: Option<i64>,
    ) -> Option<Self> {
        Some(Self {
            size: size? as u64,
            mtime_ns: mtime_ns?,
            inode: inode? as u64,
            ctime_ns: ctime_ns?,
        })
    }

    pub fn of(meta: &fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            inode: meta.ino(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DiscoveredFile {
    /// Path relative to the root, `/`-separated: the file's name in state and reports.
    pub rel: String,
    pub path: PathBuf,
    pub format: Format,
    pub stat: FileStat,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(
        "manifests.dir {path}: cannot read the directory; check that it exists and is readable"
    )]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("manifests.dir {path}: is not a directory")]
    NotADirectory { path: PathBuf },
}

/// Editors' swap files, Excel's lock files (`~$…`), partial downloads and
/// hidden files are never manifests.
pub fn is_ignored(name: &str) -> bool {
    const SUFFIXES: [&str; 6] = [".tmp", ".swp", ".part", ".partial", ".crdownload", "~"];
    name.starts_with('.')
        || name.starts_with('_')
        || name.starts_with("~$")
        || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// What to do with a file that looks like an export but is not a manifest,
/// by its extension; `None` for anything else.
pub fn lookalike_advice(name: &str) -> Option<&'static str> {
    if is_ignored(name) {
        return None;
    }
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "xls" => {
            "an Excel 97-2003 workbook, which is not read: save it as Excel Workbook (.xlsx) or CSV UTF-8 (.csv)"
        }
        "xlsm" | "xlsb" => {
            "an Excel workbook in a format that is not read: save it as Excel Workbook (.xlsx) or CSV UTF-8 (.csv)"
        }
        "ods" => {
            "an OpenDocument spreadsheet, which is not read: save it as Excel 2007-365 (.xlsx) or Text CSV (.csv)"
        }
        "numbers" => {
            "a Numbers document, which is not read: export it as CSV (File > Export To > CSV) or Excel (.xlsx)"
        }
        "txt" => {
            "a text file, which is not read: if it is Excel's \"Unicode Text\" (tab-separated) rename it to .tsv; if it is comma-separated rename it to .csv"
        }
        "json" | "xml" => "not a manifest format: manifests are YAML, CSV, TSV or XLSX files",
        _ => return None,
    })
}

/// The format a file name implies, if it is a manifest at all.
pub fn format_of(name: &str) -> Option<Format> {
    if is_ignored(name) {
        return None;
    }
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "yaml" | "yml" => Some(Format::Yaml),
        "csv" => Some(Format::Csv),
        "tsv" => Some(Format::Tsv),
        "xlsx" => Some(Format::Xlsx),
        _ => None,
    }
}

/// Lists every manifest under `root`, sorted by relative path. The root may be a
/// symlink (git-sync swaps one atomically); symlinked files and directories inside
/// are followed once each. Unreadable subdirectories are reported, not fatal, and
/// so is anything with a manifest's name that is not a regular file.
pub fn discover(root: &Path) -> Result<Discovery, DiscoverError> {
    let meta = fs::metadata(root).map_err(|source| DiscoverError::Root {
        path: root.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DiscoverError::NotADirectory {
            path: root.to_owned(),
        });
    }
    let mut found = Discovery::default();
    let mut seen_dirs = HashSet::new();
    if let Ok(canonical) = fs::canonicalize(root) {
        seen_dirs.insert(canonical);
    }
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if dir == root => {
                return Err(DiscoverError::Root {
                    path: root.to_owned(),
                    source: err,
                });
            }
            Err(err) => {
                found
                    .unreadable
                    .push((prefix.trim_end_matches('/').to_owned(), err));
                continue;
            }
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if is_ignored(&name) {
                continue;
            }
            let path = entry.path();
            let rel = format!("{prefix}{name}");
            let format = format_of(&name);
            // `metadata` follows symlinks.
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                Err(err) => {
                    let link = fs::symlink_metadata(&path).ok();
                    if link.is_none() && err.kind() == io::ErrorKind::NotFound {
                        continue; // removed between listing and stat: gone
                    }
                    match format {
                        Some(_) if err.kind() == io::ErrorKind::NotFound => found.broken.push(
                            ManifestError::file(
                                &rel,
                                "is a dangling symbolic link; its customers keep their previous state (point the link at a file, or remove it to remove them)",
                            ),
                        ),
                        Some(_) => found.broken.push(open::io_error(&rel, &err)),
                        // A subfolder that cannot be resolved: whatever it held stays.
                        None => found.unresolved.push((rel, err)),
                    }
                    continue;
                }
            };
            match format {
                Some(format) if meta.is_file() => found.files.push(DiscoveredFile {
                    rel,
                    path,
                    format,
                    stat: FileStat::of(&meta),
                }),
                Some(_) => found
                    .broken
                    .push(open::not_a_file(&rel, open::describe(meta.file_type()))),
                None if meta.is_dir() => {
                    let fresh = fs::canonicalize(&path)
                        .map(|c| seen_dirs.insert(c))
                        .unwrap_or(false);
                    if fresh {
                        stack.push((path, format!("{rel}/")));
                    }
                }
                None => {
                    if let Some(advice) = lookalike_advice(&name) {
                        found.lookalikes.push(format!("{rel}: is {advice}"));
                    }
                }
            }
        }
    }
    found.lookalikes.sort();
    found.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    found.broken.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(found)
}

#[derive(Debug, Default)]
pub struct Discovery {
    pub files: Vec<DiscoveredFile>,
    /// Subdirectories that could not be listed: their files are treated as unreadable,
    /// never as deleted.
    pub unreadable: Vec<(String, io::Error)>,
    /// Paths with a manifest's name that are not readable regular files (a
    /// directory, FIFO, socket, device, dangling link or link loop): file errors,
    /// sorted by path. What they held keeps its previous state.
    pub broken: Vec<ManifestError>,
    /// Entries without a manifest's name that cannot be resolved (a dangling or
    /// looping link where a subfolder may have been): files stored under them
    /// keep their previous state.
    pub unresolved: Vec<(String, io::Error)>,
    /// Warnings for files that look like exports but are not manifests
    /// (`.xls`, `.ods`, `.numbers`, `.txt`, `.json`, `.xml`), sorted.
    pub lookalikes: Vec<String>,
}

impl Discovery {
    /// Whether a stored file's path lies where this discovery could not look, so
    /// that its absence says nothing.
    pub fn hides(&self, rel: &str) -> bool {
        self.broken.iter().any(|e| e.file == rel)
            || self
                .unreadable
                .iter()
                .chain(&self.unresolved)
                .any(|(dir, _)| rel.starts_with(dir.as_str()) && rel[dir.len()..].starts_with('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_files_partial_downloads_and_hidden_files_are_ignored() {
        for name in [
            ".customers.csv",
            "_draft.yaml",
            "a.csv~",
            "a.csv.tmp",
            "a.yaml.swp",
            "a.csv.part",
            "a.csv.partial",
            "a.csv.crdownload",
            "~$2026-11-export.csv",
            "~$customers.xlsx",
        ] {
            assert_eq!(format_of(name), None, "{name}");
        }
        assert_eq!(format_of("a.YAML"), Some(Format::Yaml));
        assert_eq!(format_of("a.yml"), Some(Format::Yaml));
        assert_eq!(format_of("Export.CSV"), Some(Format::Csv));
        assert_eq!(format_of("notes.txt"), None);
        assert_eq!(format_of("Export.TSV"), Some(Format::Tsv));
        assert_eq!(format_of("Book1.xlsx"), Some(Format::Xlsx));
    }

    #[test]
    fn exports_that_are_not_manifests_get_advice_and_lock_files_do_not() {
        for name in ["a.xls", "a.ODS", "a.numbers", "a.txt", "a.json", "a.xml"] {
            assert!(lookalike_advice(name).is_some(), "{name}");
        }
        for name in ["~$a.xls", "a.pdf", "README", ".a.txt", "a.csv"] {
            assert_eq!(lookalike_advice(name), None, "{name}");
        }
    }
}
