//! Git provenance of manifest files: the last commit and author that touched each
//! file, when the manifests folder is a Git work tree (GitOps deployments).

use std::path::Path;
use std::process::Command;

/// The last commit that touched a manifest file, and its author.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitProvenance {
    /// Relative to the manifests folder.
    pub file: String,
    pub commit: String,
    /// `Name <email>`.
    pub author: String,
}

/// The provenance of each of `files` (relative to `dir`) that Git knows.
/// Outside a work tree, or without `git`, the answer is empty.
pub fn last_commits(dir: &Path, files: &[&str]) -> Vec<GitProvenance> {
    if files.is_empty() {
        return Vec::new();
    }
    let inside = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"true"));
    if !inside {
        return Vec::new();
    }
    let mut found = Vec::new();
    for file in files {
        let output = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["log", "-1", "--format=%H%x1f%an <%ae>", "--"])
            .arg(file)
            .output();
        let Ok(output) = output else { continue };
        let text = String::from_utf8_lossy(&output.stdout);
        if let Some((commit, author)) = text.trim().split_once('\u{1f}') {
            found.push(GitProvenance {
                file: (*file).to_owned(),
                commit: commit.to_owned(),
                author: author.to_owned(),
            });
        }
    }
    found
}
