//! Why a state cannot be opened for writing, in the operator's terms, when the
//! reason is the machine rather than SQLite: a file or folder this user may not
//! write (SQLite says "unable to open the database file" or "attempt to write
//! a readonly database"), or a full disk (SQLite says "disk I/O error" from
//! its shared-memory map).

use super::OpenError;
use std::io::ErrorKind;
use std::path::Path;

/// The environment's reason `path` cannot be written, if it has one.
pub(super) fn environment(path: &Path) -> Option<OpenError> {
    let user = crate::host::user_name();
    for file in [path.to_owned(), side(path, "-wal"), side(path, "-shm")] {
        if !file.exists() {
            continue;
        }
        if let Err(err) = std::fs::OpenOptions::new().write(true).open(&file)
            && let Some(why) = classify(&err)
        {
            return Some(why.error(&file, &user, "file"));
        }
    }
    // SQLite writes its -wal and -shm files beside the database.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let probe = dir.join(format!(".paystar-sync-probe-{}", std::process::id()));
    let written = std::fs::write(&probe, vec![0u8; 64 * 1024]);
    let _ = std::fs::remove_file(&probe);
    let err = written.err()?;
    Some(classify(&err)?.error(dir, &user, "folder"))
}

fn side(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[derive(Debug, PartialEq, Eq)]
enum Why {
    NotWritable,
    Full,
}

fn classify(err: &std::io::Error) -> Option<Why> {
    match err.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => Some(Why::NotWritable),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Some(Why::Full),
        _ => None,
    }
}

impl Why {
    fn error(self, path: &Path, user: &str, what: &str) -> OpenError {
        match self {
            Why::NotWritable => OpenError::NotWritable {
                path: path.to_owned(),
                what: what.to_owned(),
                user: user.to_owned(),
            },
            Why::Full => OpenError::DiskFull {
                path: path.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_and_space_errors_are_told_apart_from_the_rest() {
        let err = |kind| std::io::Error::from(kind);
        assert_eq!(
            classify(&err(ErrorKind::PermissionDenied)),
            Some(Why::NotWritable)
        );
        assert_eq!(
            classify(&err(ErrorKind::ReadOnlyFilesystem)),
            Some(Why::NotWritable)
        );
        assert_eq!(classify(&err(ErrorKind::StorageFull)), Some(Why::Full));
        assert_eq!(classify(&err(ErrorKind::NotFound)), None);
        let full = Why::Full.error(Path::new("/var/lib/paystar-sync"), "u", "folder");
        assert!(
            full.to_string()
                .contains("the disk holding /var/lib/paystar-sync is full"),
            "{full}"
        );
        let denied = Why::NotWritable.error(Path::new("/srv/state"), "sync (uid 998)", "folder");
        assert!(
            denied
                .to_string()
                .contains("the folder /srv/state is not writable by sync (uid 998)"),
            "{denied}"
        );
    }

    #[test]
    fn a_writable_folder_has_no_environment_problem() {
        let dir = std::env::temp_dir().join(format!("diagnose-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(environment(&dir.join("state.db")).is_none());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is gone"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
