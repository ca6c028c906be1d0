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

pub struct FolderWatch {
    _watcher: RecommendedWatcher,
    /// Where the root pointed when the watch was set up (git-sync swaps a symlink).
    target: Option<PathBuf>,
    pub writers: Writers,
}

impl FolderWatch {
    /// Watches `root` recursively, and its parent so that a swapped symlink root
    /// is noticed. Each change sends `()` on `tx`.
    pub fn new(root: &Path, tx: UnboundedSender<()>) -> notify::Result<Self> {
        let writers = Writers::default();
        let seen = writers.clone();
        let mut watcher = notify::recommended_watcher(
            move |event: notify::Result<notify::Event>| match &event {
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
