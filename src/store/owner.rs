//! One owner per SQLite state (SPEC §7): the daemon and every writing command
//! hold an exclusive OS lock on a file beside the state for their whole life,
//! so that a second daemon or an `apply` beside a running daemon is refused
//! instead of sending the same changes again. The kernel drops the lock when
//! its holder dies (`kill -9` included), so a stale lock never blocks. The lock
//! file says who holds it, for the refusal. PostgreSQL needs none: its leader
//! lease (§12) plays this role.

use crate::config::{StateBackend, StateConfig};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The held lock: released when dropped or when the process ends.
#[derive(Debug)]
pub struct Owner {
    _file: File,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "state {state} is in use by {holder}: a second writer would send the same changes to Paystar again; let that process finish (a daemon delivers what apply would), or stop it first"
    )]
    Held { state: String, holder: String },
    #[error(
        "state {}: cannot create its owner lock {} (running as {user}); make the state's folder writable by this user",
        state.display(), lock.display()
    )]
    Io {
        state: PathBuf,
        lock: PathBuf,
        user: String,
        #[source]
        source: std::io::Error,
    },
}

/// The lock file of the SQLite state at `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Owner {
    /// Takes the state's lock for `command` (`run`, `apply`, …); `None` for
    /// PostgreSQL. Refuses at once when another process holds it.
    pub fn claim(config: &StateConfig, command: &str) -> Result<Option<Owner>, OwnerError> {
        match &config.backend {
            StateBackend::Sqlite { path } => Self::claim_file(path, command).map(Some),
            StateBackend::Postgres(_) => Ok(None),
        }
    }

    fn claim_file(state: &Path, command: &str) -> Result<Owner, OwnerError> {
        let lock = lock_path(state);
        let io = |source: std::io::Error| OwnerError::Io {
            state: state.to_owned(),
            lock: lock.clone(),
            user: crate::host::user_name(),
            source,
        };
        if let Some(dir) = state.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text.trim();
                return Err(OwnerError::Held {
                    state: state.display().to_string(),
                    holder: if holder.is_empty() {
                        "another paystar-sync process".to_owned()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        let since = crate::clock::now_utc().format("%Y-%m-%d %H:%M:%S UTC");
        let who = format!(
            "`paystar-sync {command}` (pid {} on {}, since {since})",
            std::process::id(),
            crate::host::host_name()
        );
        // Who holds it, for the next process's refusal; the lock is what counts.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(who.as_bytes()).map_err(io)?;
        Ok(Owner { _file: file })
    }
}

/// Whether a process holds the lock of the SQLite state at `path` right now
/// (looked at without taking it, and without creating anything).
pub(super) fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(lock_path(path)) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_first_and_a_dropped_lock_is_free_again() {
        let dir = std::env::temp_dir().join(format!("owner-{}", uuid::Uuid::new_v4()));
        let state = dir.join("s/state.db");
        let first = Owner::claim_file(&state, "run").unwrap();
        let err = Owner::claim_file(&state, "apply").unwrap_err().to_string();
        assert!(err.contains("`paystar-sync run` (pid "), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert!(is_held(&state));
        drop(first);
        assert!(!is_held(&state));
        Owner::claim_file(&state, "apply").unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
