//! The delivery queue: what is due (due retries first), delivery outcomes
//! (acknowledged state and queue entry in one transaction), parked keys.

use super::keys::read_states;
use super::scans::DEQUEUE;
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

const DUE_RETRIES: &str = concat!(
    "SELECT q.business_unit, q.account, q.sub_account, q.next_attempt_at FROM queue q
     WHERE q.state = 'retrying' AND q.next_attempt_at <= $3 AND ",
    not_paused!(),
    " ORDER BY q.next_attempt_at LIMIT $1"
);
const BY_DUE: &str = concat!(
    "SELECT q.business_unit, q.account, q.sub_account, q.next_attempt_at FROM queue q
     WHERE q.state <> 'parked' AND ",
    not_paused!(),
    " ORDER BY q.next_attempt_at LIMIT $1"
);
const HISTORY: &str = "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
   SELECT b, a, s, $7, kind, event_type, detail
   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
        AS h(b, a, s, kind, event_type, detail, ord)
   ORDER BY ord";
const UPSERT_ACKED: &str = "INSERT INTO acked (business_unit, account, sub_account, first_name, last_name, email, unenrolled, acked_at)
   SELECT b, a, s, fname, lname, email, unenrolled, $8
   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[])
        AS k(b, a, s, fname, lname, email, unenrolled)
   ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
     first_name = COALESCE(excluded.first_name, acked.first_name),
     last_name = COALESCE(excluded.last_name, acked.last_name),
     email = COALESCE(excluded.email, acked.email),
     unenrolled = acked.unenrolled OR excluded.unenrolled,
     acked_at = excluded.acked_at";
const SET_QUEUE: &str = "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at,
                    last_error, last_request, last_response)
   SELECT b, a, s, state, attempts, at, $10, error, request, response
   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::text[], $8::text[], $9::text[])
        AS k(b, a, s, state, attempts, at, error, request, response)
   ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
     state = excluded.state, attempts = excluded.attempts,
     next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
     last_request = COALESCE(excluded.last_request, queue.last_request),
     last_response = COALESCE(excluded.last_response, queue.last_response)";
const BUMP_ACKED_VERSION: &str = "INSERT INTO meta (key, value) VALUES ('acked_version', '1')
   ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text";

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

impl Db {
    pub fn upcoming(
        &self,
        limit: usize,
        paused: &[String],
        now_ms: i64,
    ) -> Result<Vec<(CustomerKey, i64)>> {
        let step = "reading the delivery queue";
        let mut c = self.conn();
        let due_retries = c.prepare(DUE_RETRIES).step(step)?;
        let by_due = c.prepare(BY_DUE).step(step)?;
        let limit_param = limit as i64;
        let row = |r: &::postgres::Row| {
            (
                CustomerKey {
                    business_unit: r.get(0),
                    account: r.get(1),
                    sub_account: r.get(2),
                },
                r.get::<_, i64>(3),
            )
        };
        // Retries that are due first: a backlog of fresh keys (due since they
        // were queued) must not hold back a retry past its time.
        let mut found: Vec<(CustomerKey, i64)> = c
            .client
            .query(&due_retries, &[&limit_param, &paused, &now_ms])
            .step(step)?
            .iter()
            .map(row)
            .collect();
        let retries = found.len();
        for r in c
            .client
            .query(&by_due, &[&limit_param, &paused])
            .step(step)?
            .iter()
        {
            if found.len() >= limit {
                break;
            }
            let next = row(r);
            if !found[..retries].iter().any(|(k, _)| *k == next.0) {
                found.push(next);
            }
        }
        Ok(found)
    }

    pub fn record_outcomes(
        &mut self,
        outcomes: &[Outcome],
        still_differs: impl Fn(&KeyState) -> bool,
        now_ms: i64,
    ) -> Result<()> {
        let step = "recording delivery outcomes";
        let Conn { client, statements } = self.conn_mut();
        let mut tx = client.transaction().step(step)?;
        let history = prepare(&mut tx, statements, HISTORY).step(step)?;
        let upsert_acked = prepare(&mut tx, statements, UPSERT_ACKED).step(step)?;
        let set_queue = prepare(&mut tx, statements, SET_QUEUE).step(step)?;
        let dequeue = prepare(&mut tx, statements, DEQUEUE).step(step)?;
        let mut acked_changed = false;
        for run in unique_runs(outcomes.iter().map(|o| o.key.as_ref())) {
            let run = &outcomes[run];
            // History, in outcome order.
            let mut h_keys = KeyColumns::default();
            let (mut kind, mut event_type, mut detail) = (Vec::new(), Vec::new(), Vec::new());
            for o in run {
                for entry in &o.history {
                    h_keys.push(o.key.as_ref());
                    kind.push(entry.kind);
                    event_type.push(entry.event_type);
                    detail.push(entry.detail.as_str());
                }
            }
            if h_keys.len() > 0 {
                tx.execute(
                    &history,
                    &[
                        &h_keys.business_unit,
                        &h_keys.account,
                        &h_keys.sub_account,
                        &kind,
                        &event_type,
                        &detail,
                        &now_ms,
                    ],
                )
                .step(step)?;
            }
            // What Paystar acknowledged.
            let mut a_keys = KeyColumns::default();
            let (mut first, mut last, mut email, mut unenrolled) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for o in run
                .iter()
                .filter(|o| o.acked_fields.is_some() || o.acked_unenroll)
            {
                let f = o.acked_fields.as_ref();
                a_keys.push(o.key.as_ref());
                first.push(f.map(|f| f.first_name.as_str()));
                last.push(f.map(|f| f.last_name.as_str()));
                email.push(f.map(|f| f.email.as_str()));
                unenrolled.push(o.acked_unenroll);
            }
            if a_keys.len() > 0 {
                acked_changed = true;
                tx.execute(
                    &upsert_acked,
                    &[
                        &a_keys.business_unit,
                        &a_keys.account,
                        &a_keys.sub_account,
                        &first,
                        &last,
                        &email,
                        &unenrolled,
                        &now_ms,
                    ],
                )
                .step(step)?;
            }
            // A delivered key is compared again with its current desired state.
            let done: Vec<&Outcome> = run
                .iter()
                .filter(|o| o.result == OutcomeResult::Done)
                .collect();
            let mut differs = Vec::with_capacity(done.len());
            read_states(
                &mut tx,
                statements,
                done.iter().map(|o| o.key.as_ref()),
                |state| differs.push(still_differs(&state)),
            )
            .step(step)?;
            let mut differs = differs.into_iter();
            let mut queue = QueueBatch::default();
            let mut dropped = KeyColumns::default();
            for o in run {
                if o.result == OutcomeResult::Done && !differs.next().unwrap_or(false) {
                    dropped.push(o.key.as_ref());
                    continue;
                }
                let q = o.result.queue_entry(now_ms);
                queue.keys.push(o.key.as_ref());
                queue.state.push(q.state.as_str());
                queue.attempts.push(i64::from(q.attempts));
                queue.at.push(q.next_attempt_at);
                queue.error.push(q.error);
                queue.request.push(q.request);
                queue.response.push(q.response);
            }
            if dropped.len() > 0 {
                tx.execute(
                    &dequeue,
                    &[
                        &dropped.business_unit,
                        &dropped.account,
                        &dropped.sub_account,
                    ],
                )
                .step(step)?;
            }
            if queue.keys.len() > 0 {
                tx.execute(
                    &set_queue,
                    &[
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
            }
        }
        if acked_changed {
            // Lets a reviewed plan notice that Paystar's acknowledged state moved on.
            let bump = prepare(&mut tx, statements, BUMP_ACKED_VERSION).step(step)?;
            tx.execute(&bump, &[]).step(step)?;
        }
        tx.commit().step(step)
    }

    pub fn retry_parked(&mut self, keys: Option<&[CustomerKey]>, now_ms: i64) -> Result<usize> {
        let step = "re-queueing parked customers";
        let client = self.client();
        let n = match keys {
            None => client
                .execute(
                    "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = $1 WHERE state = 'parked'",
                    &[&now_ms],
                )
                .step(step)?,
            Some(keys) => {
                let mut k = KeyColumns::default();
                for key in keys {
                    k.push(key.as_ref());
                }
                client
                    .execute(
                        "UPDATE queue q SET state = 'pending', attempts = 0, next_attempt_at = $4
                         FROM unnest($1::text[], $2::text[], $3::text[]) AS k(b, a, s)
                         WHERE q.state = 'parked' AND q.business_unit = k.b AND q.account = k.a AND q.sub_account = k.s",
                        &[&k.business_unit, &k.account, &k.sub_account, &now_ms],
                    )
                    .step(step)?
            }
        };
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
