//! `state snapshot`: a consistent, standalone SQLite copy of the state for the
//! read-only commands (GitOps CI), taken beside a running daemon. Read-only on
//! the source: it takes no owner lock.

use super::*;

pub(super) fn state_snapshot(path: &Path, out: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let store = Store::open_read_only(&config.state)?;
    let bytes = store
        .snapshot_to(out)
        .with_context(|| format!("cannot snapshot {}", config.state.describe()))?;
    println!(
        "wrote {} ({} KiB): a consistent copy of {}; read it with `state: {{ path: {} }}` in plan, validate, status and history",
        out.display(),
        bytes.div_ceil(1024),
        config.state.describe(),
        out.display()
    );
    Ok(Exit::Ok)
}
