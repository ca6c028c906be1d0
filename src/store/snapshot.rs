//! `paystar-sync state snapshot`: a consistent copy of a state as one SQLite
//! file that stands alone (rollback-journal mode: no `-wal` or `-shm` needed
//! or made beside it), for the read-only commands in CI. From SQLite, one read
//! transaction (`VACUUM INTO`); from PostgreSQL, `state copy`'s machinery into
//! a fresh SQLite state. Written under `OUT.partial` and renamed into place, so
//! `OUT` is whole or absent.

use super::*;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{} exists; remove it or name another file (a snapshot never overwrites)", .0.display())]
    Exists(PathBuf),
    #[error("cannot write the snapshot {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the snapshot")]
    Open(#[from] OpenError),
    #[error("cannot write the snapshot")]
    Copy(#[from] copy::CopyError),
    #[error("cannot write the snapshot")]
    State(#[from] StateError),
}

impl Store {
    /// Writes this state to `out` as a standalone SQLite state of this build's
    /// schema; returns its size in bytes.
    pub fn snapshot_to(&self, out: &Path) -> std::result::Result<u64, SnapshotError> {
        if out.exists() {
            return Err(SnapshotError::Exists(out.to_owned()));
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SnapshotError::Io { path, source }
        };
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut partial = out.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        for leftover in ["", "-wal", "-shm", "-journal"] {
            let mut name = partial.as_os_str().to_owned();
            name.push(leftover);
            match std::fs::remove_file(&name) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(Path::new(&name))(err));
                }
                _ => {}
            }
        }
        match &self.0 {
            Backend::Sqlite(db) => db.vacuum_into(&partial)?,
            Backend::Postgres(_) => {
                let mut target = Store(Backend::Sqlite(sqlite::Db::open(&partial)?));
                self.copy_into(&mut target)?;
            }
        }
        sqlite::Db::seal(&partial)?;
        std::fs::rename(&partial, out).map_err(io(out))?;
        Ok(std::fs::metadata(out).map_err(io(out))?.len())
    }
}
