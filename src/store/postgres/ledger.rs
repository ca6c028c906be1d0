//! The provider ledger: inbound events (recorded before they are acted on),
//! stops, reported fields, merchant statuses, poll cursors. Events arrive a
//! few at a time (a webhook, a poll's page), so they are written one by one,
//! each statement prepared once per session.

use super::scans::ENQUEUE;
use super::*;
use ::postgres::Transaction;

const LEDGER: &str = "INSERT INTO provider_events (provider, event_id, channel, received_at, event_type, outcome, reason,
                                    business_unit, account, sub_account, raw)
   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
   ON CONFLICT (provider, event_id) DO NOTHING";
const STOP: &str =
    "INSERT INTO stops (business_unit, account, sub_account, provider, event_id, reason, at_ms)
   VALUES ($1, $2, $3, $4, $5, $6, $7)
   ON CONFLICT (business_unit, account, sub_account) DO NOTHING";
const HISTORY: &str =
    "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
   VALUES ($1, $2, $3, $4, $5, $6, $7)";
const NEWEST_FIELDS: &str = "SELECT created_ms, event_id FROM provider_fields
   WHERE business_unit = $1 AND account = $2 AND sub_account = $3";
const SET_FIELDS: &str = "INSERT INTO provider_fields (business_unit, account, sub_account, first_name, last_name, email,
                                    provider, event_id, created_ms, at_ms)
   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
   ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
     first_name = CASE WHEN excluded.first_name = '' THEN provider_fields.first_name ELSE excluded.first_name END,
     last_name = CASE WHEN excluded.last_name = '' THEN provider_fields.last_name ELSE excluded.last_name END,
     email = CASE WHEN excluded.email = '' THEN provider_fields.email ELSE excluded.email END,
     provider = excluded.provider, event_id = excluded.event_id,
     created_ms = excluded.created_ms, at_ms = excluded.at_ms";
const NEWEST_MERCHANT: &str =
    "SELECT event_ms, event_id FROM merchant_statuses WHERE provider = $1 AND account = $2";
const SET_MERCHANT: &str =
    "INSERT INTO merchant_statuses (provider, account, status, event_id, event_ms, at_ms)
   VALUES ($1, $2, $3, $4, $5, $6)
   ON CONFLICT (provider, account) DO UPDATE SET status = excluded.status,
     event_id = excluded.event_id, event_ms = excluded.event_ms, at_ms = excluded.at_ms";
const SET_CURSOR: &str = "INSERT INTO poll_cursors (provider, created, event_id, last_success_ms) VALUES ($1, $2, $3, $4)
   ON CONFLICT (provider) DO UPDATE SET created = excluded.created, event_id = excluded.event_id,
     last_success_ms = excluded.last_success_ms";

/// Records provider events (see `Store::record_provider_events`) in `tx`.
fn record_events(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<&'static str, Statement>,
    events: &[ProviderEventWrite],
    now_ms: i64,
) -> std::result::Result<Vec<bool>, ::postgres::Error> {
    let ledger = prepare(tx, statements, LEDGER)?;
    let stop = prepare(tx, statements, STOP)?;
    let enqueue = prepare(tx, statements, ENQUEUE)?;
    let history = prepare(tx, statements, HISTORY)?;
    let newest = prepare(tx, statements, NEWEST_FIELDS)?;
    let set_fields = prepare(tx, statements, SET_FIELDS)?;
    let merchant_newest = prepare(tx, statements, NEWEST_MERCHANT)?;
    let set_merchant = prepare(tx, statements, SET_MERCHANT)?;
    let mut fresh = Vec::with_capacity(events.len());
    for e in events {
        let k = e.key.as_ref();
        // The newest stored report for what this event reports, if any.
        let stored: Option<(i64, String)> = match (k, &e.fields, &e.merchant) {
            (Some(k), Some(_), _) => tx
                .query_opt(&newest, &[&k.business_unit, &k.account, &k.sub_account])?
                .map(|r| (r.get(0), r.get(1))),
            (_, _, Some(report)) => tx
                .query_opt(&merchant_newest, &[&e.provider, &report.account])?
                .map(|r| (r.get(0), r.get(1))),
            _ => None,
        };
        let LedgerDecision {
            outcome,
            reason,
            apply_fields,
            apply_merchant,
        } = e.decide(stored);
        let inserted = tx.execute(
            &ledger,
            &[
                &e.provider,
                &e.event_id,
                &e.channel,
                &now_ms,
                &e.event_type,
                &outcome.as_str(),
                &reason.as_ref(),
                &k.map(|k| k.business_unit.as_str()),
                &k.map(|k| k.account.as_str()),
                &k.map(|k| k.sub_account.as_str()),
                &e.raw,
            ],
        )? == 1;
        fresh.push(inserted);
        if !inserted {
            continue;
        }
        if let Some(report) = apply_merchant {
            tx.execute(
                &set_merchant,
                &[
                    &e.provider,
                    &report.account,
                    &report.status,
                    &e.event_id,
                    &report.event_ms,
                    &now_ms,
                ],
            )?;
        }
        let Some(k) = k else {
            continue;
        };
        fn key_array(k: &CustomerKey) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
            (
                vec![k.business_unit.as_str()],
                vec![k.account.as_str()],
                vec![k.sub_account.as_str()],
            )
        }
        let provenance = serde_json::json!({ "source": "provider", "provider": e.provider, "eventId": e.event_id, "channel": e.channel });
        if let Some(report) = apply_fields {
            let f = &report.fields;
            tx.execute(
                &set_fields,
                &[
                    &k.business_unit,
                    &k.account,
                    &k.sub_account,
                    &f.first_name,
                    &f.last_name,
                    &f.email,
                    &e.provider,
                    &e.event_id,
                    &report.created_ms,
                    &now_ms,
                ],
            )?;
            let (b, a, s) = key_array(k);
            tx.execute(&enqueue, &[&b, &a, &s, &now_ms])?;
            let detail = serde_json::json!({ "cause": reason, "provenance": provenance });
            tx.execute(
                &history,
                &[
                    &k.business_unit,
                    &k.account,
                    &k.sub_account,
                    &now_ms,
                    &"fields",
                    &None::<&str>,
                    &detail.to_string(),
                ],
            )?;
        }
        if outcome != EventOutcome::Stop {
            continue;
        }
        tx.execute(
            &stop,
            &[
                &k.business_unit,
                &k.account,
                &k.sub_account,
                &e.provider,
                &e.event_id,
                &e.reason,
                &now_ms,
            ],
        )?;
        let (b, a, s) = key_array(k);
        tx.execute(&enqueue, &[&b, &a, &s, &now_ms])?;
        let detail = serde_json::json!({ "cause": e.reason, "provenance": provenance });
        tx.execute(
            &history,
            &[
                &k.business_unit,
                &k.account,
                &k.sub_account,
                &now_ms,
                &"stop",
                &Some("Accounts.UnenrollAutopay"),
                &detail.to_string(),
            ],
        )?;
    }
    Ok(fresh)
}

impl Db {
    pub fn record_provider_events(
        &mut self,
        events: &[ProviderEventWrite],
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        let step = "recording provider events";
        let Conn { client, statements } = self.conn_mut();
        let mut tx = client.transaction().step(step)?;
        let fresh = record_events(&mut tx, statements, events, now_ms).step(step)?;
        tx.commit().step(step)?;
        Ok(fresh)
    }

    pub fn record_poll(
        &mut self,
        provider: &str,
        events: &[ProviderEventWrite],
        cursor: &PollCursor,
        now_ms: i64,
    ) -> Result<()> {
        let step = "recording a poll";
        let Conn { client, statements } = self.conn_mut();
        let mut tx = client.transaction().step(step)?;
        record_events(&mut tx, statements, events, now_ms).step(step)?;
        let set_cursor = prepare(&mut tx, statements, SET_CURSOR).step(step)?;
        tx.execute(
            &set_cursor,
            &[
                &provider,
                &cursor.created,
                &cursor.event_id,
                &cursor.last_success_ms,
            ],
        )
        .step(step)?;
        tx.commit().step(step)
    }

    pub fn known_events(&self, provider: &str, ids: &[String]) -> Result<HashSet<String>> {
        let mut c = self.conn();
        let rows = c
            .client
            .query(
                "SELECT event_id FROM provider_events WHERE provider = $1 AND event_id = ANY($2)",
                &[&provider, &ids],
            )
            .step("reading the provider ledger")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub fn poll_cursor(&self, provider: &str) -> Result<Option<PollCursor>> {
        let mut c = self.conn();
        Ok(c.client
            .query_opt(
                "SELECT created, event_id, last_success_ms FROM poll_cursors WHERE provider = $1",
                &[&provider],
            )
            .step("reading a poll cursor")?
            .map(|r| PollCursor {
                created: r.get(0),
                event_id: r.get(1),
                last_success_ms: r.get(2),
            }))
    }

    pub fn merchant_statuses(&self) -> Result<Vec<MerchantStatus>> {
        let mut c = self.conn();
        let rows = c.client.query(
            "SELECT provider, account, status, event_id, event_ms FROM merchant_statuses
             ORDER BY provider COLLATE \"C\", account COLLATE \"C\"",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| MerchantStatus {
                provider: r.get(0),
                account: r.get(1),
                status: r.get(2),
                event_id: r.get(3),
                event_ms: r.get(4),
            })
            .collect())
    }

    pub fn provider_event_outcomes(&self, provider: &str) -> Result<Vec<LedgerEntry>> {
        let mut c = self.conn();
        let rows = c.client.query(
            "SELECT event_id, outcome, reason FROM provider_events WHERE provider = $1 ORDER BY received_at DESC",
            &[&provider],
        )?;
        Ok(rows
            .iter()
            .map(|r| LedgerEntry {
                event_id: r.get(0),
                outcome: r.get(1),
                reason: r.get(2),
            })
            .collect())
    }

    pub fn unmatched_events(&self, limit: usize) -> Result<Vec<UnmatchedEvent>> {
        let mut c = self.conn();
        let rows = c.client.query(
            "SELECT provider, event_id, event_type, reason FROM provider_events
             WHERE outcome = 'unmatched' ORDER BY received_at DESC LIMIT $1",
            &[&(limit as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| UnmatchedEvent {
                provider: r.get(0),
                event_id: r.get(1),
                event_type: r.get(2),
                reason: r.get(3),
            })
            .collect())
    }

    pub fn unmatched_count(&self) -> Result<u64> {
        let mut c = self.conn();
        let n: i64 = c
            .client
            .query_one(
                "SELECT COUNT(*) FROM provider_events WHERE outcome = 'unmatched'",
                &[],
            )?
            .get(0);
        Ok(count(n))
    }
}
