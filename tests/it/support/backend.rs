//! Which state backend the suite runs on: SQLite by default, PostgreSQL with
//! `PAYSTAR_SYNC_TEST_BACKEND=postgres` (the server at
//! `PAYSTAR_SYNC_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! Each project gets its own schema, dropped when the project is. Where no
//! server answers, the suite says so loudly and runs on SQLite, except under
//! `CI=true`, where that is a failure.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The state block every test config starts from; rewritten for PostgreSQL.
/// What a session that writes the state declares (migration v6's fence
/// refuses writes from sessions that do not), as the binary's sessions do.
pub const DECLARE: &str = "SET paystar_sync.schema = '6';";

pub const SQLITE_STATE: &str = "state:\n  path: state/paystar-sync.db\n";

pub enum TestState {
    Sqlite,
    Postgres { url: String, schema: String },
}

/// Runs `f` on a thread of its own: the PostgreSQL driver blocks on a runtime
/// of its own, which an async test may not do.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn connect(url: &str) -> Result<postgres::Client, postgres::Error> {
    off_runtime(|| postgres::Client::connect(url, postgres::NoTls))
}

fn database_url() -> String {
    paystar_sync::config::process_env("PAYSTAR_SYNC_TEST_DATABASE_URL")
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

pub fn postgres_requested() -> bool {
    paystar_sync::config::process_env("PAYSTAR_SYNC_TEST_BACKEND").is_some_and(|b| b == "postgres")
}

/// A PostgreSQL server for a test, or why there is none (under `CI=true`
/// there must be one).
pub fn postgres_server() -> Option<String> {
    let url = database_url();
    match off_runtime(|| connect(&url).map(drop)) {
        Ok(()) => Some(url),
        Err(err) => {
            assert!(
                paystar_sync::config::process_env("CI").as_deref() != Some("true"),
                "CI=true and no PostgreSQL answers at {url}: {err}"
            );
            eprintln!(
                "SKIPPED on PostgreSQL: no server answers at {url} ({err}); set PAYSTAR_SYNC_TEST_DATABASE_URL or `apt-get install postgresql`"
            );
            None
        }
    }
}

impl TestState {
    /// The backend this run asked for, with a fresh schema for PostgreSQL.
    pub fn new() -> Self {
        if !postgres_requested() {
            return TestState::Sqlite;
        }
        match postgres_server() {
            Some(url) => TestState::Postgres {
                url,
                schema: fresh_schema(),
            },
            None => TestState::Sqlite,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestState::Postgres { .. })
    }

    /// A fresh PostgreSQL schema, whatever this run's backend.
    pub fn postgres() -> Option<Self> {
        Some(TestState::Postgres {
            url: postgres_server()?,
            schema: fresh_schema(),
        })
    }

    /// The config's state block for this backend; the URL is read from a file
    /// in the project.
    pub fn block(&self, root: &Path) -> String {
        match self {
            TestState::Sqlite => SQLITE_STATE.to_owned(),
            TestState::Postgres { url, schema } => {
                let file = root.join("database-url");
                // The session is named after the schema, so a test can find it.
                let sep = if url.contains('?') { '&' } else { '?' };
                std::fs::write(&file, format!("{url}{sep}application_name={schema}"))
                    .expect("write the database URL");
                format!(
                    "state:\n  backend: postgres\n  reports_dir: state/reports\n  postgres:\n    url_file: {}\n    schema: {schema}\n",
                    file.display()
                )
            }
        }
    }

    /// Runs SQL against the state directly, as an operator's mistake would.
    pub fn execute(&self, root: &Path, sql: &str) {
        match self {
            TestState::Sqlite => {
                let conn = rusqlite::Connection::open(root.join("state/paystar-sync.db")).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .unwrap();
                conn.execute_batch(sql).unwrap();
            }
            TestState::Postgres { url, schema } => off_runtime(|| {
                let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
                client
                    .batch_execute(&format!("SET search_path TO {schema}; {DECLARE} {sql}"))
                    .unwrap();
            }),
        }
    }

    /// Ends this project's PostgreSQL sessions, as a database restart or a
    /// failover does; false on SQLite.
    pub fn cut_sessions(&self) -> bool {
        self.cut_sessions_named(None) > 0
    }

    /// Ends the PostgreSQL sessions of one instance of this project (each
    /// session's `application_name` is `SCHEMA/INSTANCE`), as a network cut
    /// between that instance and the database does; how many were ended.
    pub fn cut_sessions_of(&self, instance: &str) -> u64 {
        self.cut_sessions_named(Some(instance))
    }

    fn cut_sessions_named(&self, instance: Option<&str>) -> u64 {
        let TestState::Postgres { url, schema } = self else {
            return 0;
        };
        let pattern = match instance {
            Some(instance) => format!("{}/{}", like_literal(schema), like_literal(instance)),
            None => format!("{}/%", like_literal(schema)),
        };
        off_runtime(|| {
            let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
            client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE $1",
                    &[&pattern],
                )
                .unwrap()
                .get::<_, i64>(0) as u64
        })
    }

    /// Waits (at most 20 s) until one of this project's PostgreSQL sessions
    /// waits on a lock; false if none did, or on SQLite.
    pub fn wait_for_a_lock_wait(&self) -> bool {
        let TestState::Postgres { url, schema } = self else {
            return false;
        };
        off_runtime(|| {
            let mut watcher = postgres::Client::connect(url, postgres::NoTls).unwrap();
            let deadline = paystar_sync::clock::now_ms() + 20_000;
            loop {
                let waiting: bool = watcher
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name LIKE $1 AND wait_event_type = 'Lock')",
                        &[&format!("{}/%", like_literal(schema))],
                    )
                    .unwrap()
                    .get(0);
                if waiting || paystar_sync::clock::now_ms() > deadline {
                    return waiting;
                }
            }
        })
    }

    /// Whether any state exists yet (the file, or the schema).
    pub fn exists(&self, root: &Path) -> bool {
        match self {
            TestState::Sqlite => root.join("state/paystar-sync.db").exists(),
            TestState::Postgres { url, schema } => off_runtime(|| {
                let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
                client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                        &[schema],
                    )
                    .unwrap()
                    .get(0)
            }),
        }
    }
}

/// `text` as a LIKE pattern that matches only itself.
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn fresh_schema() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "it_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

impl Drop for TestState {
    fn drop(&mut self) {
        if let TestState::Postgres { url, schema } = self {
            off_runtime(|| {
                if let Ok(mut client) = postgres::Client::connect(url, postgres::NoTls) {
                    let _ =
                        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                }
            });
        }
    }
}
