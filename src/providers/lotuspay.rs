//! The LotusPay events poller (SPEC §5, DOMAIN §3): walks `GET /events` newest
//! first back to the last checkpoint, retrieves each new event by id (list items
//! may be summaries), records it in the ledger and, for a revoked authorisation,
//! a stop signal, oldest first, then moves the checkpoint, all in one transaction.

use super::{ProviderError, text_at};
use crate::config::{LotusPayConfig, Secret};
use crate::customer::CustomerKey;
use crate::store::{EventOutcome, PollCursor, ProviderEventWrite, SharedStore};
use serde_json::Value;
use std::time::Duration;

pub const PROVIDER: &str = "lotuspay";
/// LotusPay keeps events for 30 days.
pub const WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// A poller that has not succeeded for this long risks losing events: alert.
pub const ALERT_AFTER: Duration = Duration::from_secs(25 * 86_400);
const PAGE: usize = 100;
/// Event types that end a customer's debit authorisation.
const STOP_TYPES: [&str; 4] = [
    "mandate.cancelled",
    "mandate.expired",
    "mandate.failed",
    "customer.inactive",
];
const RETURN_TYPES: [&str; 2] = ["ach_debit.returned", "ach_debit.rejected"];

#[derive(Clone)]
pub struct LotusPay {
    http: reqwest::Client,
    base_url: String,
    secret: Secret,
    config: LotusPayConfig,
    business_unit: String,
}

/// What one poll found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    pub listed: u64,
    pub new: u64,
    pub stops: u64,
    pub ignored: u64,
    pub unmatched: u64,
}

impl LotusPay {
    pub fn new(
        config: &LotusPayConfig,
        base_url: &str,
        secret: Secret,
        business_unit: String,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("paystar-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret,
            config: config.clone(),
            business_unit,
        })
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: String,
    ) -> Result<Value, ProviderError> {
        let fail = |message: String| ProviderError::Api {
            provider: PROVIDER,
            what: what.clone(),
            message,
        };
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .basic_auth(self.secret.expose(), Some(""))
            .query(query)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {}", status.as_u16())));
        }
        let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))
    }

    /// What an event means: stop, ignore, or unmatched, with the customer when known.
    pub fn classify(&self, event: &Value) -> (EventOutcome, String, Option<CustomerKey>) {
        let kind = event["type"].as_str().unwrap_or("");
        let stop_reason = if STOP_TYPES.contains(&kind) {
            Some(kind.to_owned())
        } else if RETURN_TYPES.contains(&kind) {
            match text_at(event, &self.config.return_code_path) {
                Some(code) if self.config.stop_codes.contains(&code) => {
                    Some(format!("{kind} with stop code {code}"))
                }
                Some(code) => {
                    return (
                        EventOutcome::Ignored,
                        format!("{kind}: return code {code} is not a stop code"),
                        None,
                    );
                }
                None => {
                    return (
                        EventOutcome::Ignored,
                        format!("{kind}: no return code at {}", self.config.return_code_path),
                        None,
                    );
                }
            }
        } else {
            None
        };
        let Some(reason) = stop_reason else {
            return (
                EventOutcome::Ignored,
                format!("{kind}: recorded only"),
                None,
            );
        };
        match text_at(event, &self.config.account_path) {
            Some(account) => {
                let sub = text_at(event, &self.config.sub_account_path).unwrap_or_default();
                (
                    EventOutcome::Stop,
                    reason,
                    Some(CustomerKey::new(&self.business_unit, &account, &sub)),
                )
            }
            None => (
                EventOutcome::Unmatched,
                format!(
                    "{reason}, but no account number at {}",
                    self.config.account_path
                ),
                None,
            ),
        }
    }

    /// One poll pass. Repeating it after a crash is harmless: the ledger drops duplicates.
    pub async fn poll_once(
        &self,
        store: &SharedStore,
        now_ms: i64,
    ) -> Result<PollReport, ProviderError> {
        let cursor = store
            .call(|s| s.poll_cursor(PROVIDER))
            .await?
            .unwrap_or_default();
        let edge = now_ms / 1000 - WINDOW.as_secs() as i64;
        let mut listed: Vec<(i64, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        'pages: for page in 1.. {
            let body = self
                .get(
                    "/events",
                    &[("limit", PAGE.to_string()), ("page", page.to_string())],
                    format!("list events page {page}"),
                )
                .await?;
            let items = body["data"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                break;
            }
            for item in items {
                let (Some(id), Some(created)) = (item["id"].as_str(), item["created"].as_i64())
                else {
                    continue;
                };
                if created < edge || cursor.created.is_some_and(|c| created < c) {
                    break 'pages;
                }
                // New events push older ones onto later pages: duplicates, never gaps.
                if seen.insert(id.to_owned()) {
                    listed.push((created, id.to_owned()));
                }
            }
        }
        listed.sort();
        let ids: Vec<String> = listed.iter().map(|(_, id)| id.clone()).collect();
        let known = store.call(move |s| s.known_events(PROVIDER, &ids)).await?;
        let mut writes = Vec::new();
        let mut report = PollReport {
            listed: listed.len() as u64,
            ..PollReport::default()
        };
        for (_, id) in listed.iter().filter(|(_, id)| !known.contains(id)) {
            let event = self
                .get(
                    &format!("/events/{id}"),
                    &[],
                    format!("retrieve event {id}"),
                )
                .await?;
            let (outcome, reason, key) = self.classify(&event);
            match outcome {
                EventOutcome::Stop => report.stops += 1,
                EventOutcome::Ignored | EventOutcome::Fields | EventOutcome::Merchant => {
                    report.ignored += 1
                }
                EventOutcome::Unmatched => report.unmatched += 1,
            }
            writes.push(ProviderEventWrite {
                provider: PROVIDER,
                event_id: id.clone(),
                channel: "poll",
                event_type: event["type"].as_str().unwrap_or("").to_owned(),
                outcome,
                reason,
                key,
                raw: event.to_string(),
                fields: None,
                merchant: None,
            });
        }
        report.new = writes.len() as u64;
        let newest = listed.last().cloned();
        let next = PollCursor {
            created: newest.as_ref().map(|(c, _)| *c).or(cursor.created),
            event_id: newest.map(|(_, id)| id).or(cursor.event_id),
            last_success_ms: Some(now_ms),
        };
        store
            .call(move |s| s.record_poll(PROVIDER, &writes, &next, now_ms))
            .await?;
        Ok(report)
    }
}
