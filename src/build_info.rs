//! What this binary is: its version, the commit it was built from, and the
//! state schema versions it keeps (shown by `--version`, `/health`,
//! `/metrics`, `status` and the leader's lease row).

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from (`git describe`; `-dirty` when the
/// checkout had changes), or `unknown`.
pub const COMMIT: &str = env!("PAYSTAR_SYNC_COMMIT");

/// The state schema versions this build keeps: SQLite's and PostgreSQL's.
pub fn schemas() -> (i64, i64) {
    crate::store::schema_versions()
}

/// The build after its name: `0.1.0 (commit 5b90465c1e; state schema: SQLite v9, PostgreSQL v6)`.
pub fn version_line() -> String {
    let (sqlite, postgres) = schemas();
    format!("{VERSION} (commit {COMMIT}; state schema: SQLite v{sqlite}, PostgreSQL v{postgres})")
}

/// One line naming the build: `paystar-sync 0.1.0 (commit …; state schema: …)`.
pub fn describe() -> String {
    format!("paystar-sync {}", version_line())
}

/// The short form a lease row and logs carry: `0.1.0+5b90465c1e`.
pub fn short() -> String {
    format!("{VERSION}+{COMMIT}")
}
