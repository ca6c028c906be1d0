//! The shared backend: the same state in one schema of a PostgreSQL database.
//! Every write is one transaction, as on SQLite; writes that touch many keys
//! send each statement once per batch of rows (`unnest` over arrays), never
//! once per row. Read-only commands open the session with
//! `default_transaction_read_only`, so the server refuses any write.

mod copy;
mod facts;
mod files;
#[macro_use]
mod keys;
mod lease;
mod ledger;
mod queue;
mod scans;
mod schema;

pub(super) use lease::{FENCED, OUTDATED};
pub(super) use schema::{MIGRATIONS, VERSION};

use super::*;
use crate::config::PostgresConfig;
use crate::customer::{CustomerKey, FieldsBuf, KeyRef};
use ::postgres::types::ToSql;
use ::postgres::{Client, GenericClient, NoTls, Statement};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// Rows per statement in batched writes and reads.
const BATCH: usize = 5_000;

/// Why a PostgreSQL state could not be opened.
pub enum OpenFail {
    /// Read-only, and the schema holds no state yet: it reads as empty.
    Missing,
    Failed(OpenError),
}

/// One PostgreSQL session, with its prepared statements.
pub struct Db {
    /// `None` only while being dropped.
    conn: RefCell<Option<Conn>>,
    target: String,
    /// The state was seen holding customers (lets key reads skip the emptiness check).
    held_rows: std::cell::Cell<bool>,
    /// Queue rows this session deleted since it last vacuumed the queue.
    dead_queue_rows: std::cell::Cell<u64>,
    /// The queue's size as its last vacuum (`tidy_queue`) counted it.
    queue_rows_at_vacuum: std::cell::Cell<u64>,
}

pub(super) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    /// A statement prepared once per session.
    fn prepare(&mut self, sql: &'static str) -> std::result::Result<Statement, ::postgres::Error> {
        prepare(&mut self.client, &mut self.statements, sql)
    }
}

/// A statement prepared once per session, on a client or inside a transaction.
fn prepare(
    client: &mut impl GenericClient,
    statements: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> std::result::Result<Statement, ::postgres::Error> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql)?;
    statements.insert(sql, statement.clone());
    Ok(statement)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The longest one statement may run on the server (the largest batch of a
/// million-row import takes seconds).
const STATEMENT_TIMEOUT_MS: u64 = 120_000;

/// Connects to the server named by the config's URL.
pub(super) fn connect(pg: &PostgresConfig, target: &str) -> std::result::Result<Client, OpenError> {
    let unusable = |message: String| OpenError::Unusable {
        target: target.to_owned(),
        message,
    };
    let url = pg
        .url
        .resolve(&crate::config::process_env)
        .map_err(unusable)?;
    let mut config: ::postgres::Config = url.expose().parse().map_err(|err| {
        unusable(format!(
            "{}: not a PostgreSQL connection URL ({err}); write it as postgres://user:password@host:5432/database",
            pg.url.key()
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    // A silent partition (packets dropped, no reset) is noticed within
    // `liveness`: keepalives probe an idle session, the user timeout bounds how
    // long sent data may go unacknowledged. A statement that the server runs
    // for minutes is stopped there (a lock wait that never ends).
    // The kernel counts keepalive times in whole seconds (0 is refused).
    let seconds = |d: std::time::Duration| std::time::Duration::from_secs(d.as_secs().max(1));
    let liveness = pg.liveness;
    config
        .keepalives(true)
        .keepalives_idle(seconds(liveness / 3))
        .keepalives_interval(seconds(liveness / 6))
        .keepalives_retries(3)
        .tcp_user_timeout(seconds(liveness * 2 / 3));
    if config.get_options().is_none() {
        config.options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
    }
    let name = config.get_application_name().unwrap_or("paystar-sync");
    let name = format!("{name}/{}", pg.instance_id);
    config.application_name(&name);
    let mut client = config.connect(NoTls).map_err(|source| OpenError::Open {
        target: target.to_owned(),
        source: source.into(),
    })?;
    // Before anything else, the session declares the schema its code keeps
    // (the fence of migration v6 refuses writes from sessions that do not).
    client
        .batch_execute(schema::DECLARE)
        .map_err(|source| OpenError::Open {
            target: target.to_owned(),
            source: source.into(),
        })?;
    Ok(client)
}

impl Db {
    /// Connects, and either migrates the schema (creating it if missing) or,
    /// read-only, checks its version and refuses writes for the session.
    pub fn open(pg: &PostgresConfig, read_only: bool) -> std::result::Result<Db, OpenFail> {
        let target = format!("postgres schema {}", pg.schema);
        let mut client = connect(pg, &target).map_err(OpenFail::Failed)?;
        let failed = |source: ::postgres::Error| {
            OpenFail::Failed(OpenError::Open {
                target: target.clone(),
                source: source.into(),
            })
        };
        let schema = quote_ident(&pg.schema);
        if read_only {
            let version = client
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("{schema}.schema_version")],
                )
                .map_err(failed)?;
            if !version.get::<_, bool>(0) {
                return Err(OpenFail::Missing);
            }
            client
                .batch_execute(&format!(
                    "SET search_path TO {schema}; SET default_transaction_read_only = on; {SESSION}"
                ))
                .map_err(failed)?;
            let found: Option<i64> = client
                .query_one("SELECT max(version) FROM schema_version", &[])
                .map_err(failed)?
                .get(0);
            check_version(&target, found.unwrap_or(0), VERSION, false).map_err(OpenFail::Failed)?;
        } else {
            migrate(&mut client, &pg.schema, &target).map_err(OpenFail::Failed)?;
            client.batch_execute(SESSION).map_err(failed)?;
        }
        Ok(Db {
            conn: RefCell::new(Some(Conn {
                client,
                statements: HashMap::new(),
            })),
            target,
            held_rows: std::cell::Cell::new(false),
            dead_queue_rows: std::cell::Cell::new(0),
            queue_rows_at_vacuum: std::cell::Cell::new(0),
        })
    }

    /// The session, for one call.
    fn conn(&self) -> std::cell::RefMut<'_, Conn> {
        std::cell::RefMut::map(self.conn.borrow_mut(), |c| {
            c.as_mut()
                .expect("the session is open until the store is dropped")
        })
    }

    fn conn_mut(&mut self) -> &mut Conn {
        self.conn
            .get_mut()
            .as_mut()
            .expect("the session is open until the store is dropped")
    }

    pub(in crate::store) fn client(&mut self) -> &mut Client {
        &mut self.conn_mut().client
    }

    pub(in crate::store) fn target(&self) -> &str {
        &self.target
    }
}

impl Drop for Db {
    /// The driver ends its session by blocking on its own runtime, which an
    /// async task may not do: there, the session ends on a thread of its own.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            std::thread::spawn(move || drop(conn));
        }
    }
}

/// Creates the schema if missing and applies the migrations it lacks, under a
/// transaction-scoped advisory lock so that instances starting together take
/// turns.
fn migrate(client: &mut Client, schema: &str, target: &str) -> std::result::Result<(), OpenError> {
    let failed = |source: ::postgres::Error| OpenError::Open {
        target: target.to_owned(),
        source: source.into(),
    };
    let quoted = quote_ident(schema);
    let mut tx = client.transaction().map_err(failed)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('paystar-sync migrations ' || $1::text))",
        &[&schema],
    )
    .map_err(failed)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         SET LOCAL search_path TO {quoted};
         CREATE TABLE IF NOT EXISTS schema_version (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .map_err(failed)?;
    let found: Option<i64> = tx
        .query_one("SELECT max(version) FROM schema_version", &[])
        .map_err(failed)?
        .get(0);
    let found = found.unwrap_or(0);
    check_version(target, found, VERSION, true)?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(migration).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(index as i64 + 1)],
        )
        .map_err(failed)?;
    }
    tx.commit().map_err(failed)?;
    client
        .batch_execute(&format!("SET search_path TO {quoted};"))
        .map_err(failed)
}

/// Session settings for every connection. The statements are prepared once and
/// their plans do not depend on the values (keys come as arrays): a generic plan
/// saves re-planning many-way joins on every call.
const SESSION: &str = "SET plan_cache_mode = force_generic_plan;";

/// Splits `keys` into runs in which no key repeats, so that one batched upsert
/// never touches a row twice; order is kept.
fn unique_runs<'k>(keys: impl Iterator<Item = KeyRef<'k>>) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut seen: HashSet<KeyRef<'k>> = HashSet::new();
    let mut start = 0;
    let mut len = 0;
    for (i, key) in keys.enumerate() {
        if seen.len() >= BATCH || !seen.insert(key) {
            runs.push(start..i);
            seen.clear();
            seen.insert(key);
            start = i;
        }
        len = i + 1;
    }
    if start < len {
        runs.push(start..len);
    }
    runs
}

/// Key columns of a batch, as arrays for `unnest`.
#[derive(Default)]
struct KeyColumns<'a> {
    business_unit: Vec<&'a str>,
    account: Vec<&'a str>,
    sub_account: Vec<&'a str>,
}

impl<'a> KeyColumns<'a> {
    fn push(&mut self, key: KeyRef<'a>) {
        self.business_unit.push(key.business_unit);
        self.account.push(key.account);
        self.sub_account.push(key.sub_account);
    }

    fn len(&self) -> usize {
        self.business_unit.len()
    }

    fn clear(&mut self) {
        self.business_unit.clear();
        self.account.clear();
        self.sub_account.clear();
    }
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// Stored `bigint` line numbers back into the manifest's `u32`.
fn line(n: Option<i64>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok())
}
