//! The `state` section: which backend holds the state, and where.

use super::walk::{self, Walker};
use super::*;

const DEFAULT_SCHEMA: &str = "paystar_sync";
const DEFAULT_POOL_SIZE: u64 = 8;

pub(super) fn build(w: &mut Walker, root: &walk::Section<'_>) -> StateConfig {
    let state = w.section(
        root,
        "state",
        &["backend", "path", "reports_dir", "postgres"],
    );
    let backend = w
        .choice(&state, "backend", &["sqlite", "postgres"])
        .unwrap_or_else(|| "sqlite".to_owned());
    let reports_dir = w.path(&state, "reports_dir");
    let pg_present = w.present(&state, "postgres");
    let pg = w.section(
        &state,
        "postgres",
        &["url", "url_env", "url_file", "schema", "pool_size"],
    );
    if backend == "postgres" {
        if w.present(&state, "path") {
            w.error(
                "state.path",
                "is the SQLite file; with state.backend: postgres remove it (the state lives in state.postgres)",
            );
        }
        let url = w.secret(&pg, "url");
        if url.is_none() && !w.present(&pg, "url") {
            w.error(
                "state.postgres",
                "with state.backend: postgres set url_env (an environment variable holding the connection URL, e.g. PAYSTAR_SYNC_DATABASE_URL) or url_file",
            );
        }
        let schema = w
            .string(&pg, "schema")
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        if !valid_schema(&schema) {
            w.error(
                "state.postgres.schema",
                format!(
                    "{schema:?} must be a PostgreSQL identifier: lowercase letters, digits and _, starting with a letter or _, at most 63 characters"
                ),
            );
        }
        let pool_size = w.uint(&pg, "pool_size", 1, 64).unwrap_or(DEFAULT_POOL_SIZE) as usize;
        let backend = match url {
            Some(url) => StateBackend::Postgres(PostgresConfig {
                url,
                schema,
                pool_size,
                instance_id: super::default_instance_id(),
                liveness: std::time::Duration::from_secs(30),
            }),
            // The error is reported; any value keeps the walk going.
            None => StateBackend::Sqlite {
                path: PathBuf::new(),
            },
        };
        return StateConfig {
            backend,
            reports_dir,
        };
    }
    if pg_present {
        w.error(
            "state.postgres",
            "is read only with state.backend: postgres; add `backend: postgres` to state, or remove state.postgres",
        );
    }
    let path = w
        .path(&state, "path")
        .unwrap_or_else(|| w.base_dir.join("state/paystar-sync.db"));
    let reports_dir = reports_dir.or_else(|| {
        Some(
            path.parent()
                .map(Path::to_owned)
                .unwrap_or_default()
                .join("reports"),
        )
    });
    StateConfig {
        backend: StateBackend::Sqlite { path },
        reports_dir,
    }
}

fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}
