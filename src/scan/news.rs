//! What a scan found that the last one did not: a file read again because it
//! had errors says the same again, and that is not news to log.

use super::ScannedFile;
use crate::manifest::ManifestError;
use std::collections::{HashMap, HashSet};

/// The files whose errors now are exactly their stored ones (`before`, in file
/// order as the store gives them).
pub(super) fn repeated_errors(
    files: &[ScannedFile],
    before: Vec<ManifestError>,
) -> HashSet<String> {
    let mut by_file: HashMap<&str, Vec<&ManifestError>> = HashMap::new();
    for error in &before {
        by_file.entry(error.file.as_str()).or_default().push(error);
    }
    files
        .iter()
        .filter(|f| {
            by_file.get(f.rel.as_str()).is_some_and(|old| {
                let mut old = old.clone();
                let mut now: Vec<&ManifestError> = f.errors.iter().collect();
                old.sort_by(|a, b| a.line.cmp(&b.line).then(a.reason.cmp(&b.reason)));
                now.sort_by(|a, b| a.line.cmp(&b.line).then(a.reason.cmp(&b.reason)));
                old == now
            })
        })
        .map(|f| f.rel.clone())
        .collect()
}
