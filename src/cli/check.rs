//! `state check`: every stored shortcut held to what it stands for, read-only,
//! for an operator who suspects a damaged state.

use super::*;
use crate::manifest::{discover::discover, open};
use sha2::{Digest, Sha256};
use std::io::Read as _;

pub(super) fn state_check(path: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let store = Store::open_read_only(&config.state)?;
    let index = store.file_index()?;
    let mut differences: Vec<String> = Vec::new();
    // 1. Each file's stored held rows against the rows `desired` holds for it.
    let held = store.check_held_rows()?;
    for path in &held.differ {
        differences.push(format!(
            "{path}: its stored held rows are not the rows the state holds for it; the next scan that reads the file stores them again (touch the file, or run apply)"
        ));
    }
    for path in store.stale_held_rows()? {
        differences.push(format!(
            "{path}: its stored held rows are stale (the file's rows or content changed since they were stored, by another writer); scans ignore them and store them again when the file is next read"
        ));
    }
    // 2. The file index's shortcut: a file whose size, mtime, inode and change
    // time match is not read. Its content must be what was recorded.
    let mut trusted = 0;
    match discover(&config.manifests.dir) {
        Ok(found) => {
            for file in &found.files {
                let Some(entry) = index.get(&file.rel).filter(|e| e.present && e.clean) else {
                    continue;
                };
                if entry.stat != Some(file.stat) {
                    continue;
                }
                trusted += 1;
                let Ok(sha) = hash(&file.path, &file.rel, config.manifests.max_file_size) else {
                    continue; // unreadable now: the next scan reads it and says so
                };
                if entry.sha256 != Some(sha) {
                    differences.push(format!(
                        "{}: its size, mtime, inode and change time are as recorded but its content is not, so a scan would not read it; run apply to read every file",
                        file.rel
                    ));
                }
            }
        }
        Err(err) => println!("manifests.dir not checked: {err}"),
    }
    println!(
        "state check: {} file(s) in the index, {} stored value(s) of held rows, {trusted} file(s) a scan would skip unread",
        index.len(),
        held.stored
    );
    match differences.first() {
        None => {
            println!("every stored shortcut agrees with what it stands for");
            Ok(Exit::Ok)
        }
        Some(first) => {
            println!("DIFFERS: {first}");
            if differences.len() > 1 {
                println!("and {} more:", differences.len() - 1);
                for more in &differences[1..] {
                    println!("  {more}");
                }
            }
            Ok(Exit::Failure)
        }
    }
}

fn hash(path: &Path, rel: &str, max: u64) -> Result<[u8; 32], crate::manifest::ManifestError> {
    let mut file = open::open(path, rel, max)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|err| open::io_error(rel, &err))?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}
