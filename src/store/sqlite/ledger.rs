//! The provider ledger: inbound events (recorded before they are acted on),
//! stops, reported fields, merchant statuses, poll cursors.

use super::*;

fn record_events(
    tx: &rusqlite::Transaction<'_>,
    events: &[ProviderEventWrite],
    now_ms: i64,
) -> DbResult<Vec<bool>> {
    let mut fresh = Vec::with_capacity(events.len());
    {
        let mut ledger = tx.prepare_cached(
            "INSERT INTO provider_events (provider, event_id, channel, received_at, event_type, outcome, reason,
                                          business_unit, account, sub_account, raw)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (provider, event_id) DO NOTHING",
        )?;
        let mut stop = tx.prepare_cached(
            "INSERT INTO stops (business_unit, account, sub_account, provider, event_id, reason, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (business_unit, account, sub_account) DO NOTHING",
        )?;
        let mut enqueue = tx.prepare_cached(super::scans::ENQUEUE)?;
        let mut history = tx.prepare_cached(
            "INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut newest = tx.prepare_cached(
            "SELECT created_ms, event_id FROM provider_fields
             WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
        )?;
        let mut set_fields = tx.prepare_cached(
            "INSERT INTO provider_fields (business_unit, account, sub_account, first_name, last_name, email,
                                          provider, event_id, created_ms, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
               first_name = CASE WHEN excluded.first_name = '' THEN first_name ELSE excluded.first_name END,
               last_name = CASE WHEN excluded.last_name = '' THEN last_name ELSE excluded.last_name END,
               email = CASE WHEN excluded.email = '' THEN email ELSE excluded.email END,
               provider = excluded.provider, event_id = excluded.event_id,
               created_ms = excluded.created_ms, at_ms = excluded.at_ms",
        )?;
        let mut merchant_newest = tx.prepare_cached(
            "SELECT event_ms, event_id FROM merchant_statuses WHERE provider = ?1 AND account = ?2",
        )?;
        let mut set_merchant = tx.prepare_cached(
            "INSERT INTO merchant_statuses (provider, account, status, event_id, event_ms, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (provider, account) DO UPDATE SET status = excluded.status,
               event_id = excluded.event_id, event_ms = excluded.event_ms, at_ms = excluded.at_ms",
        )?;
        for e in events {
            let k = e.key.as_ref();
            // The newest stored report for what this event reports, if any.
            let stored: Option<(i64, String)> = match (k, &e.fields, &e.merchant) {
                (Some(k), Some(_), _) => newest
                    .query_row(params![k.business_unit, k.account, k.sub_account], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?,
                (_, _, Some(report)) => merchant_newest
                    .query_row(params![e.provider, report.account], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?,
                _ => None,
            };
            let LedgerDecision {
                outcome,
                reason,
                apply_fields,
                apply_merchant,
            } = e.decide(stored);
            let inserted = ledger.execute(params![
                e.provider,
                e.event_id,
                e.channel,
                now_ms,
                e.event_type,
                outcome.as_str(),
                reason,
                k.map(|k| &k.business_unit),
                k.map(|k| &k.account),
                k.map(|k| &k.sub_account),
                e.raw
            ])? == 1;
            fresh.push(inserted);
            if !inserted {
                continue;
            }
            if let Some(report) = apply_merchant {
                set_merchant.execute(params![
                    e.provider,
                    report.account,
                    report.status,
                    e.event_id,
                    report.event_ms,
                    now_ms
                ])?;
            }
            let Some(k) = k else {
                continue;
            };
            let provenance = serde_json::json!({ "source": "provider", "provider": e.provider, "eventId": e.event_id, "channel": e.channel });
            if let Some(report) = apply_fields {
                let f = &report.fields;
                set_fields.execute(params![
                    k.business_unit,
                    k.account,
                    k.sub_account,
                    f.first_name,
                    f.last_name,
                    f.email,
                    e.provider,
                    e.event_id,
                    report.created_ms,
                    now_ms
                ])?;
                enqueue.execute(params![k.business_unit, k.account, k.sub_account, now_ms])?;
                let detail = serde_json::json!({ "cause": reason, "provenance": provenance });
                history.execute(params![
                    k.business_unit,
                    k.account,
                    k.sub_account,
                    now_ms,
                    "fields",
                    None::<&str>,
                    detail.to_string()
                ])?;
            }
            if outcome != EventOutcome::Stop {
                continue;
            }
            stop.execute(params![
                k.business_unit,
                k.account,
                k.sub_account,
                e.provider,
                e.event_id,
                e.reason,
                now_ms
            ])?;
            enqueue.execute(params![k.business_unit, k.account, k.sub_account, now_ms])?;
            let detail = serde_json::json!({ "cause": e.reason, "provenance": provenance });
            history.execute(params![
                k.business_unit,
                k.account,
                k.sub_account,
                now_ms,
                "stop",
                "Accounts.UnenrollAutopay",
                detail.to_string()
            ])?;
        }
    }
    Ok(fresh)
}

impl Db {
    /// Records provider events in one transaction, each before it is acted on. A
    /// duplicate (same provider and id, by webhook or poll) changes nothing. A new
    /// stop signal is stored (the first one for a key stays) and queues its key.
    /// Returns, per event, whether it was new.
    pub fn record_provider_events(
        &mut self,
        events: &[ProviderEventWrite],
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        self.record_provider_events_in(events, now_ms)
            .step("recording provider events")
    }

    fn record_provider_events_in(
        &mut self,
        events: &[ProviderEventWrite],
        now_ms: i64,
    ) -> DbResult<Vec<bool>> {
        let tx = self.conn.transaction()?;
        let fresh = record_events(&tx, events, now_ms)?;
        tx.commit()?;
        Ok(fresh)
    }

    /// A poll's events and its new checkpoint, in one transaction: a crash
    /// before the commit repeats the poll, and the ledger drops the repeats.
    pub fn record_poll(
        &mut self,
        provider: &str,
        events: &[ProviderEventWrite],
        cursor: &PollCursor,
        now_ms: i64,
    ) -> Result<()> {
        self.record_poll_in(provider, events, cursor, now_ms)
            .step("recording a poll")
    }

    fn record_poll_in(
        &mut self,
        provider: &str,
        events: &[ProviderEventWrite],
        cursor: &PollCursor,
        now_ms: i64,
    ) -> DbResult<()> {
        let tx = self.conn.transaction()?;
        record_events(&tx, events, now_ms)?;
        tx.execute(
            "INSERT INTO poll_cursors (provider, created, event_id, last_success_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (provider) DO UPDATE SET created = excluded.created, event_id = excluded.event_id,
               last_success_ms = excluded.last_success_ms",
            params![provider, cursor.created, cursor.event_id, cursor.last_success_ms],
        )?;
        tx.commit()
    }

    /// Which of `ids` this provider's ledger already holds.
    pub fn known_events(
        &self,
        provider: &str,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT 1 FROM provider_events WHERE provider = ?1 AND event_id = ?2",
        )?;
        let mut known = std::collections::HashSet::new();
        for id in ids {
            if stmt.exists(params![provider, id])? {
                known.insert(id.clone());
            }
        }
        Ok(known)
    }

    pub fn poll_cursor(&self, provider: &str) -> Result<Option<PollCursor>> {
        Ok(self
            .conn
            .query_row(
                "SELECT created, event_id, last_success_ms FROM poll_cursors WHERE provider = ?1",
                [provider],
                |r| {
                    Ok(PollCursor {
                        created: r.get(0)?,
                        event_id: r.get(1)?,
                        last_success_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every merchant-level account's latest status.
    pub fn merchant_statuses(&self) -> Result<Vec<MerchantStatus>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT provider, account, status, event_id, event_ms FROM merchant_statuses ORDER BY provider, account",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(MerchantStatus {
                provider: r.get(0)?,
                account: r.get(1)?,
                status: r.get(2)?,
                event_id: r.get(3)?,
                event_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// One provider's ledger, newest first: event id, outcome and reason.
    pub fn provider_event_outcomes(&self, provider: &str) -> Result<Vec<LedgerEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT event_id, outcome, reason FROM provider_events WHERE provider = ?1 ORDER BY received_at DESC",
        )?;
        let rows = stmt.query_map([provider], |r| {
            Ok(LedgerEntry {
                event_id: r.get(0)?,
                outcome: r.get(1)?,
                reason: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// Provider events that could not be mapped to a customer, newest first.
    pub fn unmatched_events(&self, limit: usize) -> Result<Vec<UnmatchedEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT provider, event_id, event_type, reason FROM provider_events INDEXED BY provider_events_unmatched
             WHERE outcome = 'unmatched' ORDER BY received_at DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(UnmatchedEvent {
                provider: r.get(0)?,
                event_id: r.get(1)?,
                event_type: r.get(2)?,
                reason: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<DbResult<_>>()?)
    }

    /// How many provider events could not be mapped to a customer.
    pub fn unmatched_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM provider_events WHERE outcome = 'unmatched'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)?)
    }
}
