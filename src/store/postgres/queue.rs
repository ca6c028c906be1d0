//! The delivery queue: what is due (due retries first), delivery outcomes
//! (acknowledged state and queue entry in one transaction), parked keys.

use super::keys::{RECORD_AND_READ, read_state};
use super::*;

/// A paused business unit's keys wait, except an unacknowledged provider stop.
macro_rules! not_paused {
    () => {
        "(q.business_unit <> ALL($2::text[])
          OR (EXISTS (SELECT 1 FROM stops s WHERE s.business_unit = q.business_unit
                        AND s.account = q.account AND s.sub_account = q.sub_account)
              AND NOT EXISTS (SELECT 1 FROM acked a WHERE a.business_unit = q.business_unit
                        AND a.account = q.account AND a.sub_account = q.sub_account AND a.unenrolled)))"
    };
}

/// Due retries (tagged 0), then every waiting key by due time (tagged 1): one
/// statement. Each arm reads at most [`MOST_UPCOMING`] rows, written as a literal:
/// a generic plan guesses that `LIMIT $1` keeps a tenth of the table, and for a
/// queue of a million keys would sort all of it rather than read the index in order.
const UPCOMING: &str = concat!(
    "(SELECT * FROM (SELECT 0, q.business_unit, q.account, q.sub_account, q.next_attempt_at FROM queue q
      WHERE q.state = 'retrying' AND q.next_attempt_at <= $3 AND ",
    not_paused!(),
    " ORDER BY q.next_attempt_at LIMIT 10000) r ORDER BY next_attempt_at LIMIT $1)
     UNION ALL
     (SELECT * FROM (SELECT 1, q.business_unit, q.account, q.sub_account, q.next_attempt_at FROM queue q
      WHERE q.state <> 'parked' AND ",
    not_paused!(),
    " ORDER BY q.next_attempt_at LIMIT 10000) w ORDER BY next_attempt_at LIMIT $1)"
);

/// The queue entries a batch of outcomes leaves: keys done with, and the rest.
const SET_QUEUE: &str = "WITH d AS (
     DELETE FROM queue q USING unnest($1::text[], $2::text[], $3::text[]) AS k(b, a, s)
     WHERE q.business_unit = k.b AND q.account = k.a AND q.sub_account = k.s)
   INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at,
                      last_error, last_request, last_response)
   SELECT b, a, s, state, attempts, at, $13, error, request, response
   FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::int8[], $10::text[], $11::text[], $12::text[])
        AS k(b, a, s, state, attempts, at, error, request, response)
   ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
     state = excluded.state, attempts = excluded.attempts,
     next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
     last_request = COALESCE(excluded.last_request, queue.last_request),
     last_response = COALESCE(excluded.last_response, queue.last_response),
     version = queue.version + 1";

/// A batch of outcomes whose delivery knew what each key looked like: every
/// write in one statement (so one transaction). A delivered key that no longer
/// differs leaves the queue only if its entry is the one the delivery claimed
/// (same version); an entry another writer queued again meanwhile stays, and
/// one a scan removed meanwhile is queued again to be compared afresh.
const RECORD_CLAIMED: &str = concat!(
    outcome_writes!(),
    ",
   dropped AS (SELECT * FROM unnest($17::text[], $18::text[], $19::text[], $20::int8[]) AS k(b, a, s, version)),
   d AS (
     DELETE FROM queue q USING dropped k
     WHERE q.business_unit = k.b AND q.account = k.a AND q.sub_account = k.s AND q.version = k.version
     RETURNING q.business_unit, q.account, q.sub_account),
   -- An entry that is not the claimed one stays; one a scan removed meanwhile
   -- comes back as pending, so that the key is compared again.
   r AS (
     INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
     SELECT k.b, k.a, k.s, 'pending', 0, $14, $14 FROM dropped k
     WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.business_unit = k.b AND d.account = k.a AND d.sub_account = k.s)
     ON CONFLICT (business_unit, account, sub_account) DO NOTHING)
   INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at,
                      last_error, last_request, last_response)
   SELECT b, a, s, state, attempts, at, $14, error, request, response
   FROM unnest($21::text[], $22::text[], $23::text[], $24::text[], $25::int8[], $26::int8[], $27::text[], $28::text[], $29::text[])
        AS k(b, a, s, state, attempts, at, error, request, response)
   ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
     state = excluded.state, attempts = excluded.attempts,
     next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
     last_request = COALESCE(excluded.last_request, queue.last_request),
     last_response = COALESCE(excluded.last_response, queue.last_response),
     version = queue.version + 1"
);

#[cfg(test)]
#[test]
fn each_arm_of_the_upcoming_query_reads_at_most_what_the_store_asks_for() {
    let cap = format!("LIMIT {MOST_UPCOMING})");
    assert_eq!(UPCOMING.matches(&cap).count(), 2, "{UPCOMING}");
}

/// Deleted queue rows that make the session vacuum the queue: its index scans
/// (what is due next) and counts otherwise walk every dead row a drained
/// backlog left, until autovacuum comes by, up to a minute later.
const VACUUM_AFTER: u64 = 20_000;
/// In a big queue, the share of its rows (one in this many) deleted before the
/// next vacuum: each vacuum reads the queue's indexes whole, so a fixed
/// threshold would make draining a million-row backlog cost fifty of them. Half
/// (eight vacuums for a million, 0.8 s of server time) rather than a fifth (16,
/// 1.4 s): the due-key scans between them were no slower.
const VACUUM_SHARE: u64 = 2;
/// The same once the queue has nothing due: a quiet moment.
const VACUUM_WHEN_IDLE: u64 = 1_000;

/// The queue entries one batch of outcomes leaves, as arrays.
#[derive(Default)]
struct QueueBatch<'a> {
    keys: KeyColumns<'a>,
    state: Vec<&'static str>,
    attempts: Vec<i64>,
    at: Vec<i64>,
    error: Vec<Option<&'a str>>,
    request: Vec<Option<&'a str>>,
    response: Vec<Option<&'a str>>,
}

impl<'a> QueueBatch<'a> {
    /// The queue entry `o` leaves.
    fn push(&mut self, o: &'a Outcome, now_ms: i64) {
        let q = o.result.queue_entry(now_ms);
        self.keys.push(o.key.as_ref());
        self.state.push(q.state.as_str());
        self.attempts.push(i64::from(q.attempts));
        self.at.push(q.next_attempt_at);
        self.error.push(q.error);
        self.request.push(q.request);
        self.response.push(q.response);
    }
}

/// A run of outcomes' history lines (in order) and acknowledgements, as arrays.
#[derive(Default)]
struct OutcomeWrites<'a> {
    history: KeyColumns<'a>,
    kind: Vec<&'static str>,
    event_type: Vec<Option<&'static str>>,
    detail: Vec<&'a str>,
    version: Vec<Option<i64>>,
    acked: KeyColumns<'a>,
    first: Vec<Option<&'a str>>,
    last: Vec<Option<&'a str>>,
    email: Vec<Option<&'a str>>,
    unenrolled: Vec<bool>,
    /// Inserted, not merged: the claim saw no acknowledged row.
    fresh: Vec<bool>,
}

impl<'a> OutcomeWrites<'a> {
    /// The parameters of `outcome_writes!` ($1–$16).
    fn params<'p>(&'p self, now_ms: &'p i64) -> Vec<&'p (dyn ToSql + Sync)> {
        vec![
            &self.history.business_unit,
            &self.history.account,
            &self.history.sub_account,
            &self.kind,
            &self.event_type,
            &self.detail,
            &self.acked.business_unit,
            &self.acked.account,
            &self.acked.sub_account,
            &self.first,
            &self.last,
            &self.email,
            &self.unenrolled,
            now_ms,
            &self.version,
            &self.fresh,
        ]
    }

    /// `run`'s writes; with `trust_fresh`, an acknowledgement the claim saw no
    /// row for is flagged to be inserted.
    fn of(run: &'a [Outcome], versions: &ManifestVersionIds<'_>, trust_fresh: bool) -> Self {
        let mut w = Self::default();
        for o in run {
            for entry in &o.history {
                w.history.push(o.key.as_ref());
                w.kind.push(entry.kind);
                w.event_type.push(entry.event_type);
                w.detail.push(entry.detail.as_str());
                w.version.push(
                    entry
                        .manifest
                        .as_ref()
                        .and_then(|v| versions.get(v).copied()),
                );
            }
            if o.acked_fields.is_some() || o.acked_unenroll {
                let f = o.acked_fields.as_ref();
                w.acked.push(o.key.as_ref());
                w.first.push(f.map(|f| f.first_name.as_str()));
                w.last.push(f.map(|f| f.last_name.as_str()));
                w.email.push(f.map(|f| f.email.as_str()));
                w.unenrolled.push(o.acked_unenroll);
                w.fresh
                    .push(trust_fresh && o.claimed.is_some_and(|c| c.first_ack));
            }
        }
        w
    }
}

/// The id of each manifest version a batch's history lines name.
type ManifestVersionIds<'a> = HashMap<&'a ManifestVersion, i64>;

/// A manifest version's id, the version added if no line named it before.
const MANIFEST_VERSION: &str = "WITH found AS (
     SELECT id FROM manifest_versions WHERE path = $1 AND sha256 IS NOT DISTINCT FROM $2
       AND git_commit IS NOT DISTINCT FROM $3 AND git_author IS NOT DISTINCT FROM $4
     ORDER BY id LIMIT 1),
   added AS (
     INSERT INTO manifest_versions (path, sha256, git_commit, git_author)
     SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM found)
     RETURNING id)
   SELECT id FROM found UNION ALL SELECT id FROM added";

/// The ids of the manifest versions `outcomes`' history lines name: one
/// statement per distinct version (a batch usually names one).
fn manifest_version_ids<'a>(
    client: &mut impl GenericClient,
    statements: &mut HashMap<&'static str, Statement>,
    outcomes: &'a [Outcome],
) -> std::result::Result<ManifestVersionIds<'a>, ::postgres::Error> {
    let mut ids = ManifestVersionIds::new();
    for v in outcomes
        .iter()
        .flat_map(|o| &o.history)
        .filter_map(|e| e.manifest.as_ref())
    {
        if ids.contains_key(v) {
            continue;
        }
        let statement = prepare(client, statements, MANIFEST_VERSION)?;
        let row = client.query_one(
            &statement,
            &[&v.path, &v.sha256, &v.git_commit, &v.git_author],
        )?;
        ids.insert(v, row.get(0));
    }
    Ok(ids)
}

/// One run of distinct keys' outcomes, with the delivery's view: [`RECORD_CLAIMED`].
/// Returns how many queue entries it may have deleted.
fn record_claimed_run(
    client: &mut impl GenericClient,
    record: &Statement,
    run: &[Outcome],
    versions: &ManifestVersionIds<'_>,
    now_ms: i64,
    trust_fresh: bool,
) -> std::result::Result<usize, ::postgres::Error> {
    let w = OutcomeWrites::of(run, versions, trust_fresh);
    let mut dropped = KeyColumns::default();
    let mut versions = Vec::new();
    let mut queue = QueueBatch::default();
    for o in run {
        match o.claimed {
            Some(c) if o.result == OutcomeResult::Done && !c.differs_after => {
                dropped.push(o.key.as_ref());
                versions.push(c.queue_version);
            }
            _ => queue.push(o, now_ms),
        }
    }
    let mut params = w.params(&now_ms);
    params.extend::<[&(dyn ToSql + Sync); 13]>([
        &dropped.business_unit,
        &dropped.account,
        &dropped.sub_account,
        &versions,
        &queue.keys.business_unit,
        &queue.keys.account,
        &queue.keys.sub_account,
        &queue.state,
        &queue.attempts,
        &queue.at,
        &queue.error,
        &queue.request,
        &queue.response,
    ]);
    client.execute(record, &params)?;
    Ok(dropped.business_unit.len())
}

impl Db {
    pub fn upcoming(
        &self,
        limit: usize,
        paused: &[String],
        now_ms: i64,
    ) -> Result<Vec<(CustomerKey, i64)>> {
        let step = "reading the delivery queue";
        let mut c = self.conn();
        let upcoming = c.prepare(UPCOMING).step(step)?;
        let rows = c
            .client
            .query(&upcoming, &[&(limit as i64), &paused, &now_ms])
            .step(step)?;
        let key = |r: &::postgres::Row| {
            (
                CustomerKey {
                    business_unit: r.get(1),
                    account: r.get(2),
                    sub_account: r.get(3),
                },
                r.get::<_, i64>(4),
            )
        };
        let tagged = |tag: i32| {
            rows.iter()
                .filter(move |r| r.get::<_, i32>(0) == tag)
                .map(key)
        };
        let upcoming = retries_first(tagged(0).collect(), tagged(1), limit);
        drop(c);
        self.tidy_queue(upcoming.is_empty());
        Ok(upcoming)
    }

    /// Counts queue rows this session deleted.
    fn queue_rows_deleted(&self, n: usize) {
        self.dead_queue_rows
            .set(self.dead_queue_rows.get() + n as u64);
    }

    /// Vacuums the queue once enough of it was deleted (see [`VACUUM_AFTER`]).
    /// Maintenance only: a failure is logged, and the next call tries again.
    fn tidy_queue(&self, idle: bool) {
        let dead = self.dead_queue_rows.get();
        let after = VACUUM_AFTER.max(self.queue_rows_at_vacuum.get() / VACUUM_SHARE);
        if dead < after && !(idle && dead >= VACUUM_WHEN_IDLE) {
            return;
        }
        self.dead_queue_rows.set(0);
        let mut c = self.conn();
        let vacuumed = c
            .client
            .batch_execute("VACUUM (ANALYZE, SKIP_LOCKED) queue")
            .and_then(|()| {
                c.client.query_one(
                    "SELECT GREATEST(reltuples, 0)::int8 FROM pg_class WHERE oid = 'queue'::regclass",
                    &[],
                )
            });
        match vacuumed {
            Ok(row) => self
                .queue_rows_at_vacuum
                .set(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)),
            Err(err) => {
                tracing::warn!(error = %err, target = %self.target, "cannot vacuum the delivery queue; autovacuum will")
            }
        }
    }

    pub fn record_outcomes(
        &mut self,
        outcomes: &[Outcome],
        still_differs: impl Fn(&KeyState) -> bool,
        now_ms: i64,
    ) -> Result<()> {
        if outcomes.iter().all(|o| o.claimed.is_some()) {
            return self.record_claimed(outcomes, now_ms);
        }
        let step = "recording delivery outcomes";
        let Conn { client, statements } = self.conn_mut();
        // Outcomes without the delivery's view: the keys are read again. One
        // snapshot for the read and the writes: a queue entry another
        // session changed after the read (a provider stop recorded by another
        // process) makes this transaction fail rather than be overwritten.
        let mut tx = client
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .start()
            .step(step)?;
        let record = prepare(&mut tx, statements, RECORD_AND_READ).step(step)?;
        let set_queue = prepare(&mut tx, statements, SET_QUEUE).step(step)?;
        let versions = manifest_version_ids(&mut tx, statements, outcomes).step(step)?;
        let mut deleted = 0;
        for run in unique_runs(outcomes.iter().map(|o| o.key.as_ref())) {
            let run = &outcomes[run];
            let w = OutcomeWrites::of(run, &versions, false);
            // A delivered key is compared again with its current desired state.
            let mut done = KeyColumns::default();
            for o in run.iter().filter(|o| o.result == OutcomeResult::Done) {
                done.push(o.key.as_ref());
            }
            let mut params = w.params(&now_ms);
            params.extend::<[&(dyn ToSql + Sync); 3]>([
                &done.business_unit,
                &done.account,
                &done.sub_account,
            ]);
            let rows = tx.query(&record, &params).step(step)?;
            let mut states = rows.iter().map(|r| read_state(r, 1));
            let mut differs = run
                .iter()
                .filter(|o| o.result == OutcomeResult::Done)
                .map(|o| {
                    let mut state = states.next().unwrap_or_default();
                    state.acked = AckedRecord::acknowledge(state.acked.take(), o, now_ms);
                    still_differs(&state)
                })
                .collect::<Vec<bool>>()
                .into_iter();
            let mut queue = QueueBatch::default();
            let mut dropped = KeyColumns::default();
            for o in run {
                if o.result == OutcomeResult::Done && !differs.next().unwrap_or(false) {
                    dropped.push(o.key.as_ref());
                    continue;
                }
                queue.push(o, now_ms);
            }
            tx.execute(
                &set_queue,
                &[
                    &dropped.business_unit,
                    &dropped.account,
                    &dropped.sub_account,
                    &queue.keys.business_unit,
                    &queue.keys.account,
                    &queue.keys.sub_account,
                    &queue.state,
                    &queue.attempts,
                    &queue.at,
                    &queue.error,
                    &queue.request,
                    &queue.response,
                    &now_ms,
                ],
            )
            .step(step)?;
            deleted += dropped.business_unit.len();
        }
        tx.commit().step(step)?;
        self.queue_rows_deleted(deleted);
        Ok(())
    }

    /// Outcomes that carry the delivery's view of each key: one statement per
    /// run of distinct keys, no read. A first acknowledgement is inserted; if
    /// a row appeared since the claim (a unique violation, nothing written),
    /// the batch is recorded again merging every acknowledgement.
    fn record_claimed(&mut self, outcomes: &[Outcome], now_ms: i64) -> Result<()> {
        let step = "recording delivery outcomes";
        let deleted = match self.record_claimed_once(outcomes, now_ms, true) {
            Err(err) if err.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION) => {
                tracing::debug!(error = %err, "an acknowledged row appeared since the claim; merging instead");
                self.record_claimed_once(outcomes, now_ms, false)
            }
            recorded => recorded,
        }
        .step(step)?;
        self.queue_rows_deleted(deleted);
        Ok(())
    }

    /// [`Self::record_claimed`] in one transaction; returns how many queue
    /// entries it may have deleted.
    fn record_claimed_once(
        &mut self,
        outcomes: &[Outcome],
        now_ms: i64,
        trust_fresh: bool,
    ) -> std::result::Result<usize, ::postgres::Error> {
        let Conn { client, statements } = self.conn_mut();
        let record = prepare(client, statements, RECORD_CLAIMED)?;
        // A version added here and then not named (the record failed) is harmless:
        // versions are never changed, and the next batch finds it.
        let versions = manifest_version_ids(client, statements, outcomes)?;
        let runs = unique_runs(outcomes.iter().map(|o| o.key.as_ref()));
        // A key repeated in a later run was acknowledged by an earlier one:
        // only a single run's first acknowledgements can be inserted.
        let trust_fresh = trust_fresh && runs.len() == 1;
        // One run (the usual step) is one statement, a transaction of its own.
        if let [run] = &runs[..] {
            let run = &outcomes[run.clone()];
            return record_claimed_run(client, &record, run, &versions, now_ms, trust_fresh);
        }
        let mut tx = client.transaction()?;
        let mut deleted = 0;
        for run in runs {
            let run = &outcomes[run];
            deleted += record_claimed_run(&mut tx, &record, run, &versions, now_ms, trust_fresh)?;
        }
        tx.commit()?;
        Ok(deleted)
    }

    pub fn retry_parked(
        &mut self,
        keys: Option<&[CustomerKey]>,
        actor: &str,
        now_ms: i64,
    ) -> Result<usize> {
        const HISTORY: &str = "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, detail)
             SELECT business_unit, account, sub_account, $1, 'retried', json_build_object('actor', $2::text)::text
             FROM retried ORDER BY business_unit, account, sub_account";
        let step = "re-queueing parked customers";
        let client = self.client();
        let n = match keys {
            None => client
                .execute(
                    &format!(
                        "WITH retried AS (
                           UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = $1, version = version + 1
                           WHERE state = 'parked' RETURNING business_unit, account, sub_account)
                         {HISTORY}"
                    ),
                    &[&now_ms, &actor],
                )
                .step(step)?,
            Some(keys) => {
                let mut k = KeyColumns::default();
                for key in keys {
                    k.push(key.as_ref());
                }
                client
                    .execute(
                        &format!(
                            "WITH retried AS (
                               UPDATE queue q SET state = 'pending', attempts = 0, next_attempt_at = $1, version = q.version + 1
                               FROM unnest($3::text[], $4::text[], $5::text[]) AS k(b, a, s)
                               WHERE q.state = 'parked' AND q.business_unit = k.b AND q.account = k.a AND q.sub_account = k.s
                               RETURNING q.business_unit, q.account, q.sub_account)
                             {HISTORY}"
                        ),
                        &[&now_ms, &actor, &k.business_unit, &k.account, &k.sub_account],
                    )
                    .step(step)?
            }
        };
        Ok(n as usize)
    }

    /// Re-queues customers parked for a fault of the endpoint
    /// ([`ENDPOINT_PARK_PATTERNS`]), each with a `retried` history line.
    pub fn release_parked_for_endpoint(&mut self, actor: &str, now_ms: i64) -> Result<usize> {
        let patterns: Vec<String> = ENDPOINT_PARK_PATTERNS
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        let n = self
            .client()
            .execute(
                "WITH retried AS (
                   UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = $1, version = version + 1
                   WHERE state = 'parked' AND last_error LIKE ANY ($3::text[])
                   RETURNING business_unit, account, sub_account)
                 INSERT INTO history (business_unit, account, sub_account, at_ms, kind, detail)
                 SELECT business_unit, account, sub_account, $1, 'retried', json_build_object('actor', $2::text)::text
                 FROM retried ORDER BY business_unit, account, sub_account",
                &[&now_ms, &actor, &patterns],
            )
            .step("re-queueing customers parked for an endpoint fault")?;
        Ok(n as usize)
    }

    pub fn troubled(&self, limit: usize) -> Result<Vec<Troubled>> {
        let mut c = self.conn();
        let rows = c
            .client
            .query(
                "SELECT business_unit, account, sub_account, state, attempts, next_attempt_at, last_error, last_response
                 FROM queue WHERE state IN ('retrying', 'parked')
                 ORDER BY state, next_attempt_at LIMIT $1",
                &[&(limit as i64)],
            )
            .step("reading troubled customers")?;
        Ok(rows
            .iter()
            .map(|r| Troubled {
                key: CustomerKey {
                    business_unit: r.get(0),
                    account: r.get(1),
                    sub_account: r.get(2),
                },
                state: QueueState::parse(r.get(3)),
                attempts: r.get::<_, i64>(4).clamp(0, u32::MAX as i64) as u32,
                next_attempt_at: r.get(5),
                last_error: r.get(6),
                last_response: r.get(7),
            })
            .collect())
    }

    pub fn oldest_retrying_since(&self) -> Result<Option<i64>> {
        let mut c = self.conn();
        Ok(c.client
            .query_one(
                "SELECT MIN(enqueued_at) FROM queue WHERE state = 'retrying'",
                &[],
            )?
            .get(0))
    }
}
