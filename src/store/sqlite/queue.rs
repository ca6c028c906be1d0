//! The delivery queue: what is due (due retries first), delivery outcomes
//! (acknowledged state and queue entry in one transaction), parked keys.

use super::history::ManifestVersions;
use super::keys::StateQueries;
use super::*;

impl Db {
    /// Keys the delivery worker may send, soonest first, with the time each
    /// becomes due. Parked keys are left out, and so are the keys of `paused`
    /// business units, except those with a provider stop Paystar has not
    /// acknowledged yet: a stop is never held back.
    pub fn upcoming(
        &self,
        limit: usize,
        paused: &[String],
        now_ms: i64,
    ) -> Result<Vec<(CustomerKey, i64)>> {
        self.upcoming_in(limit, paused, now_ms)
            .step("reading the delivery queue")
    }

    fn upcoming_in(
        &self,
        limit: usize,
        paused: &[String],
        now_ms: i64,
    ) -> DbResult<Vec<(CustomerKey, i64)>> {
        // A paused business unit's keys wait, except an unacknowledged provider stop.
        const NOT_PAUSED: &str = "(q.business_unit NOT IN (SELECT value FROM json_each(?1))
                    OR (EXISTS (SELECT 1 FROM stops s WHERE s.business_unit = q.business_unit
                                  AND s.account = q.account AND s.sub_account = q.sub_account)
                        AND NOT EXISTS (SELECT 1 FROM acked a WHERE a.business_unit = q.business_unit
                                  AND a.account = q.account AND a.sub_account = q.sub_account AND a.unenrolled)))";
        // Nothing paused (the usual case): the condition holds for every key,
        // and a statement without `json_each` is not prepared again on every step.
        let not_paused = if paused.is_empty() {
            "(?1 IS NOT NULL)"
        } else {
            NOT_PAUSED
        };
        let paused = serde_json::to_string(paused).unwrap_or_else(|_| "[]".into());
        let row = |r: &rusqlite::Row<'_>| {
            Ok((
                CustomerKey {
                    business_unit: r.get(0)?,
                    account: r.get(1)?,
                    sub_account: r.get(2)?,
                },
                r.get(3)?,
            ))
        };
        // Retries that are due first: a backlog of fresh keys (due since they
        // were queued) must not hold back a retry past its time. The limit and
        // the time are applied while reading, not bound: SQLite prepares a
        // statement again whenever a value its plan may depend on is bound anew.
        let mut due_retries = self.conn.prepare_cached(&format!(
            "SELECT q.business_unit, q.account, q.sub_account, q.next_attempt_at FROM queue q INDEXED BY queue_retry_due
             WHERE q.state = 'retrying' AND {not_paused}
             ORDER BY q.next_attempt_at LIMIT {MOST_UPCOMING}"
        ))?;
        let mut retries: Vec<(CustomerKey, i64)> = Vec::new();
        for next in due_retries.query_map(params![paused], row)? {
            let next = next?;
            if next.1 > now_ms || retries.len() >= limit {
                break;
            }
            retries.push(next);
        }
        let mut by_due = self.conn.prepare_cached(&format!(
            "SELECT q.business_unit, q.account, q.sub_account, q.next_attempt_at FROM queue q INDEXED BY queue_due
             WHERE q.state <> 'parked' AND {not_paused}
             ORDER BY q.next_attempt_at LIMIT {MOST_UPCOMING}"
        ))?;
        let waiting: Vec<(CustomerKey, i64)> = by_due
            .query_map(params![paused], row)?
            .take(limit)
            .collect::<DbResult<_>>()?;
        Ok(retries_first(retries, waiting, limit))
    }

    /// Records the outcome of delivery attempts in one transaction: what Paystar
    /// acknowledged, and each key's queue entry. After an acknowledgement the key
    /// is compared again with its *current* desired state (`still_differs`), so a
    /// change made while a request was in flight is sent next.
    pub fn record_outcomes(
        &mut self,
        outcomes: &[Outcome],
        still_differs: impl Fn(&KeyState) -> bool,
        now_ms: i64,
    ) -> Result<()> {
        self.record_outcomes_in(outcomes, still_differs, now_ms)
            .step("recording delivery outcomes")
    }

    fn record_outcomes_in(
        &mut self,
        outcomes: &[Outcome],
        still_differs: impl Fn(&KeyState) -> bool,
        now_ms: i64,
    ) -> DbResult<()> {
        let tx = self.conn.transaction()?;
        let mut acked_changed = false;
        {
            let mut upsert_acked = tx.prepare_cached(
                "INSERT INTO acked (business_unit, account, sub_account, first_name, last_name, email, unenrolled, acked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
                   first_name = COALESCE(excluded.first_name, first_name),
                   last_name = COALESCE(excluded.last_name, last_name),
                   email = COALESCE(excluded.email, email),
                   unenrolled = MAX(unenrolled, excluded.unenrolled),
                   acked_at = excluded.acked_at",
            )?;
            let mut dequeue = tx.prepare_cached(
                "DELETE FROM queue WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?;
            let mut set_queue = tx.prepare_cached(
                "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at,
                                    last_error, last_request, last_response)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
                   state = excluded.state, attempts = excluded.attempts,
                   next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
                   last_request = COALESCE(excluded.last_request, last_request),
                   last_response = COALESCE(excluded.last_response, last_response),
                   version = version + 1",
            )?;
            let mut states = StateQueries::new(&tx)?;
            // A delivered key leaves the queue only if its entry is the one the
            // delivery claimed; one a scan removed meanwhile comes back to be
            // compared afresh.
            let mut dequeue_claimed = tx.prepare_cached(
                "DELETE FROM queue WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3 AND version = ?4",
            )?;
            let mut requeue = tx.prepare_cached(
                "INSERT INTO queue (business_unit, account, sub_account, state, attempts, next_attempt_at, enqueued_at)
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)
                 ON CONFLICT (business_unit, account, sub_account) DO NOTHING",
            )?;
            let mut history = tx.prepare_cached(
                "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail,
                                      manifest_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut versions = ManifestVersions::default();
            for o in outcomes {
                let k = o.key.as_ref();
                let key = params![k.business_unit, k.account, k.sub_account];
                for entry in &o.history {
                    let version = match &entry.manifest {
                        Some(v) => Some(versions.id(&tx, v)?),
                        None => None,
                    };
                    history.execute(params![
                        k.business_unit,
                        k.account,
                        k.sub_account,
                        now_ms,
                        entry.kind,
                        entry.event_type,
                        entry.detail,
                        version
                    ])?;
                }
                if o.acked_fields.is_some() || o.acked_unenroll {
                    acked_changed = true;
                    let f = o.acked_fields.as_ref();
                    upsert_acked.execute(params![
                        k.business_unit,
                        k.account,
                        k.sub_account,
                        f.map(|f| &f.first_name),
                        f.map(|f| &f.last_name),
                        f.map(|f| &f.email),
                        o.acked_unenroll,
                        now_ms
                    ])?;
                }
                if o.result == OutcomeResult::Done {
                    match o.claimed {
                        // What the delivery saw settles it, without a read.
                        Some(c) if !c.differs_after => {
                            let at =
                                params![k.business_unit, k.account, k.sub_account, c.queue_version];
                            if dequeue_claimed.execute(at)? == 0 {
                                requeue.execute(params![
                                    k.business_unit,
                                    k.account,
                                    k.sub_account,
                                    now_ms
                                ])?;
                            }
                            continue;
                        }
                        Some(_) => {}
                        None if !still_differs(&states.read(k)?) => {
                            dequeue.execute(key)?;
                            continue;
                        }
                        None => {}
                    }
                }
                let q = o.result.queue_entry(now_ms);
                set_queue.execute(params![
                    k.business_unit,
                    k.account,
                    k.sub_account,
                    q.state.as_str(),
                    q.attempts,
                    q.next_attempt_at,
                    now_ms,
                    q.error,
                    q.request,
                    q.response
                ])?;
            }
        }
        if acked_changed {
            // Lets a reviewed plan notice that Paystar's acknowledged state moved on.
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('acked_version', '1')
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                [],
            )?;
        }
        tx.commit()
    }

    /// Puts parked keys back in the queue (all of them when `keys` is `None`);
    /// returns how many.
    pub fn retry_parked(
        &mut self,
        keys: Option<&[CustomerKey]>,
        actor: &str,
        now_ms: i64,
    ) -> Result<usize> {
        self.retry_parked_in(keys, actor, now_ms)
            .step("re-queueing parked customers")
    }

    fn retry_parked_in(
        &mut self,
        keys: Option<&[CustomerKey]>,
        actor: &str,
        now_ms: i64,
    ) -> DbResult<usize> {
        const RETRIED: &str =
            "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, detail)
             SELECT business_unit, account, sub_account, ?1, 'retried', json_object('actor', ?2)
             FROM queue WHERE state = 'parked'";
        const REQUEUE: &str = "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = ?1, version = version + 1 WHERE state = 'parked'";
        const ONE: &str = " AND business_unit = ?3 AND account = ?4 AND sub_account = ?5";
        let tx = self.conn.transaction()?;
        let mut changed = 0;
        match keys {
            None => {
                tx.execute(RETRIED, params![now_ms, actor])?;
                changed += tx.execute(REQUEUE, [now_ms])?;
            }
            Some(keys) => {
                let mut history = tx.prepare_cached(&format!("{RETRIED}{ONE}"))?;
                let mut one = tx.prepare_cached(&format!("{REQUEUE}{ONE}"))?;
                for k in keys {
                    let at = params![now_ms, actor, k.business_unit, k.account, k.sub_account];
                    history.execute(at)?;
                    changed += one.execute(at)?;
                }
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Re-queues customers parked for a fault of the endpoint
    /// ([`ENDPOINT_PARK_PATTERNS`]), each with a `retried` history line.
    pub fn release_parked_for_endpoint(&mut self, actor: &str, now_ms: i64) -> Result<usize> {
        let matches = ENDPOINT_PARK_PATTERNS
            .iter()
            .map(|p| format!("last_error LIKE '{p}'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let run = |tx: &rusqlite::Transaction<'_>| -> DbResult<usize> {
            tx.execute(
                &format!(
                    "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, detail)
                     SELECT business_unit, account, sub_account, ?1, 'retried', json_object('actor', ?2)
                     FROM queue WHERE state = 'parked' AND ({matches})"
                ),
                params![now_ms, actor],
            )?;
            tx.execute(
                &format!(
                    "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = ?1, version = version + 1
                     WHERE state = 'parked' AND ({matches})"
                ),
                [now_ms],
            )
        };
        let released = (|| -> DbResult<usize> {
            let tx = self.conn.transaction()?;
            let n = run(&tx)?;
            tx.commit()?;
            Ok(n)
        })();
        released.step("re-queueing customers parked for an endpoint fault")
    }

    /// Retrying and parked keys, soonest first, for `status`.
    pub fn troubled(&self, limit: usize) -> Result<Vec<Troubled>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT business_unit, account, sub_account, state, attempts, next_attempt_at, last_error, last_response
             FROM queue WHERE state IN ('retrying', 'parked')
             ORDER BY state, next_attempt_at LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Troubled {
                key: CustomerKey {
                    business_unit: r.get(0)?,
                    account: r.get(1)?,
                    sub_account: r.get(2)?,
                },
                state: QueueState::parse(r.get_ref(3)?.as_str()?),
                attempts: r.get(4)?,
                next_attempt_at: r.get(5)?,
                last_error: r.get(6)?,
                last_response: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// When the longest-failing retrying key was first queued, if any key is retrying.
    pub fn oldest_retrying_since(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN(enqueued_at) FROM queue WHERE state = 'retrying'",
            [],
            |r| r.get(0),
        )?)
    }
}
