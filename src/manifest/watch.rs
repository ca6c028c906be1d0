//! Watches the manifests folder for changes. Events carry no detail: any change
//! triggers a (debounced) scan, which finds what changed by itself, so renames,
//! atomic saves, swap files and deletions all take the same path.
//!
//! The watch also tracks files that are open for writing (modified, not yet
//! closed): a scan leaves those for later, so a slow writer is never read half-way.

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

/// Files being written right now, as the watch saw them, with their last write.
#[derive(Clone, Default)]
pub struct Writers(Arc<Mutex<HashMap<PathBuf, Instant>>>);

impl Writers {
    fn update(&self, event: &notify::Event) {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event.kind {
            EventKind::Create(CreateKind::File) | EventKind::Modify(ModifyKind::Data(_)) => {
                let now = Instant::now();
                open.extend(event.paths.iter().map(|p| (p.clone(), now)));
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_)) => {
                for path in &event.paths {
                    open.remove(path);
                }
            }
            _ => {}
        }
    }

    /// The files still open for writing. A file with no write for `stale` is
    /// taken as closed, in case its close event was lost.
    pub fn snapshot(&self, stale: Duration) -> Vec<PathBuf> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|_, last| last.elapsed() < stale);
        open.keys().cloned().collect()
    }
}

/// Whether a watch event concerns the manifests folder: a path inside it, or
/// its own entry in the parent folder (a swapped symlink, a renamed folder).
pub fn concerns(root: &Path, event: &notify::Event) -> bool {
    // An event without paths (an overflow) may concern anything.
    event.paths.is_empty() || event.paths.iter().any(|p| p.starts_with(root))
}

pub struct FolderWatch {
    _watcher: RecommendedWatcher,
    /// Where the root pointed when the watch was set up (git-sync swaps a symlink).
    target: Option<PathBuf>,
    pub writers: Writers,
}

impl FolderWatch {
    /// Watches `root` recursively, and its parent so that a swapped symlink root
    /// is noticed. Each change under the root, or to the root's own entry, sends
    /// `()` on `tx`.
    pub fn new(root: &Path, tx: UnboundedSender<()>) -> notify::Result<Self> {
        let writers = Writers::default();
        let seen = writers.clone();
        // notify reports absolute paths, whatever the watched path was given as.
        let watched = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        let mut watcher = notify::recommended_watcher(
            move |event: notify::Result<notify::Event>| match &event {
                // The parent's other entries (a log file, the state folder) are not ours.
                Ok(e) if !concerns(&watched, e) => {}
                Ok(e) => {
                    seen.update(e);
                    let close = matches!(
                        e.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write))
                    );
                    if !matches!(e.kind, EventKind::Access(_)) || close {
                        let _ = tx.send(());
                    }
                }
                Err(_) => {
                    let _ = tx.send(());
                }
            },
        )?;
        watcher.watch(root, RecursiveMode::Recursive)?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Best effort: the parent may not be watchable (permissions); rescans still run.
            let _ = watcher.watch(parent, RecursiveMode::NonRecursive);
        }
        Ok(Self {
            _watcher: watcher,
            target: std::fs::canonicalize(root).ok(),
            writers,
        })
    }

    /// Whether the root now resolves somewhere else than when watched.
    pub fn moved(&self, root: &Path) -> bool {
        std::fs::canonicalize(root).ok() != self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        e.paths = paths.iter().map(PathBuf::from).collect();
        e
    }

    #[test]
    fn only_the_folder_and_its_own_entry_in_the_parent_concern_the_watch() {
        let root = Path::new("/srv/sync/manifests");
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(concerns(
            root,
            &event(write, &["/srv/sync/manifests/a.csv"])
        ));
        assert!(concerns(
            root,
            &event(rename, &["/srv/sync/.tmp-link", "/srv/sync/manifests"])
        ));
        assert!(!concerns(root, &event(write, &["/srv/sync/sync.log"])));
        assert!(!concerns(
            root,
            &event(write, &["/srv/sync/manifests-old/a.csv"])
        ));
        assert!(!concerns(
            root,
            &event(write, &["/srv/sync/state/paystar-sync.db-wal"])
        ));
        assert!(concerns(root, &event(EventKind::Other, &[])));
    }
}
