//! The delivery worker: takes due keys from the durable queue, sends each key's
//! events in order (ManageCustomer, then UnenrollAutopay), and records outcomes.
//!
//! - Never two requests in flight for one key: a key is claimed until its outcome
//!   is committed.
//! - At most `concurrency` keys in flight.
//! - Outcomes that finish together are committed in one transaction.
//! - Each attempt computes the key's events from its state at that moment, so a
//!   key whose desired state changed while it waited sends its newest state once.

use super::classify::{Attempt, Decision, classify};
use super::client::PaystarClient;
use super::event::PaystarEvent;
use crate::clock::now_ms;
use crate::customer::CustomerKey;
use crate::mask::MaskedAccount;
use crate::providers::payroc::{Pause, current_pause};
use crate::reconcile::{FieldSource, Policy, UnenrollCause};
use crate::store::{
    AckedRecord, Claimed, HistoryEntry, KeyState, Outcome, OutcomeResult, SharedStore, StateError,
};
use crate::telemetry::KeyHash;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The longest the worker waits without looking at the queue.
const IDLE_POLL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub schedule: Vec<Duration>,
    pub policy: Policy,
    /// `providers.payroc.pause`: delivery to these business units waits while it
    /// is in force.
    pub pause: Option<crate::config::PayrocPause>,
    /// How long in-flight requests may finish after shutdown is asked for.
    pub grace: Duration,
}

/// When `run` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Only when cancelled (the daemon).
    Cancelled,
    /// Also when nothing is left to send except parked keys (`apply`).
    Idle,
}

/// Totals of one `run`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub delivered_events: u64,
    pub keys_done: u64,
    pub retries: u64,
    pub parked: u64,
}

pub struct Worker {
    store: SharedStore,
    client: PaystarClient,
    settings: WorkerSettings,
    wake: Arc<Notify>,
    counters: Arc<DeliveryCounters>,
}

/// Delivery outcomes since start, for progress displays and `/metrics` (the
/// daemon registers these counters in its registry).
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Events Paystar acknowledged.
    pub delivered: Counter,
    /// Attempts that will be retried.
    pub retries: Counter,
    /// Customers parked for an operator.
    pub parked: Counter,
}

impl Worker {
    pub fn new(store: SharedStore, client: PaystarClient, settings: WorkerSettings) -> Self {
        Self {
            store,
            client,
            settings,
            wake: Arc::new(Notify::new()),
            counters: Arc::default(),
        }
    }

    /// Counts into `counters` and wakes on `wake`, both kept across reloads.
    pub fn sharing(mut self, counters: Arc<DeliveryCounters>, wake: Arc<Notify>) -> Self {
        self.counters = counters;
        self.wake = wake;
        self
    }

    /// Delivery outcomes so far, shared with progress displays and `/metrics`.
    pub fn counters(&self) -> Arc<DeliveryCounters> {
        self.counters.clone()
    }

    /// Wakes the worker after new work was queued.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub async fn run(&self, until: Until, cancel: CancellationToken) -> Result<Totals, StateError> {
        let mut tasks: JoinSet<(Outcome, u64)> = JoinSet::new();
        let mut in_flight: HashSet<CustomerKey> = HashSet::new();
        let mut totals = Totals::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut finished: Vec<Outcome> = Vec::new();
        let mut pause: Option<Pause> = None;
        loop {
            // One store call records what finished and claims what is due next.
            let free = if deadline.is_none() {
                self.settings.concurrency - tasks.len()
            } else {
                0
            };
            // A finished key is no longer in flight: its outcome commits in the same
            // step, before anything is claimed.
            let outcomes = std::mem::take(&mut finished);
            for outcome in &outcomes {
                in_flight.remove(&outcome.key);
            }
            let busy: Vec<CustomerKey> = in_flight.iter().cloned().collect();
            let policy = self.settings.policy;
            let rule = self.settings.pause.clone();
            let step = self
                .store
                .call(move |s| claim_step(s, &outcomes, policy, rule.as_ref(), &busy, free))
                .await?;
            if step.pause != pause {
                match &step.pause {
                    Some(p) => {
                        tracing::warn!(business_units = %p.business_units.join(","), cause = %p.cause, "delivery paused (providers.payroc.pause); changes stay queued")
                    }
                    None => tracing::info!(
                        "delivery resumed: no Payroc processing account is in a pausing status"
                    ),
                }
                pause = step.pause.clone();
            }
            for (key, state) in step.claimed {
                in_flight.insert(key.clone());
                let client = self.client.clone();
                let settings = self.settings.clone();
                let paused = step
                    .pause
                    .as_ref()
                    .is_some_and(|p| p.business_units.contains(&key.business_unit));
                tasks.spawn(
                    async move { deliver_key(&client, &settings, key, state, paused).await },
                );
            }
            let idle = tasks.is_empty() && !step.more;
            if tasks.is_empty() && (deadline.is_some() || (until == Until::Idle && idle)) {
                return Ok(totals);
            }
            // Also look again now and then: another process (`retry`) may have queued work.
            let sleep_for = step
                .next_due
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
            tokio::select! {
                            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                                let mut batch = vec![joined];
                                while let Some(more) = tasks.try_join_next() {
                                    batch.push(more);
                                }
                                let mut delivered = 0;
                                for joined in batch {
                                    // A panicking delivery is a bug: the stage fails and the daemon restarts.
                                    let (outcome, events) = match joined {
                                        Ok(done) => done,
                                        Err(err) => std::panic::resume_unwind(err.into_panic()),
                                    };
                                    delivered += events;
            match &outcome.result {
                                        OutcomeResult::Done => totals.keys_done += 1,
                                        OutcomeResult::Retry { .. } => {
                                            totals.retries += 1;
                                            self.counters.retries.inc();
                                        }
                                        OutcomeResult::Park { .. } => {
                                            totals.parked += 1;
                                            self.counters.parked.inc();
                                        }
                                    }
                                    finished.push(outcome);
                                }
                                totals.delivered_events += delivered;
            self.counters.delivered.inc_by(delivered);
                                if delivered > 0 && until == Until::Cancelled {
                                    tracing::info!(events = delivered, customers = finished.len(), "acknowledged by Paystar");
                                }
                            }
                            _ = self.wake.notified(), if deadline.is_none() => {}
                            _ = tokio::time::sleep(sleep_for), if deadline.is_none() && tasks.len() < self.settings.concurrency => {}
                            _ = cancel.cancelled(), if deadline.is_none() => {
                                tracing::info!(in_flight = tasks.len(), grace = ?self.settings.grace, "delivery stopping; letting in-flight requests finish");
                                deadline = Some(tokio::time::Instant::now() + self.settings.grace);
                            }
                            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                                tracing::warn!(abandoned = tasks.len(), "grace period over; abandoning in-flight requests (they stay queued and are sent after restart)");
                                tasks.abort_all();
                                return Ok(totals);
                            }
                        }
        }
    }
}

/// What one store step found.
struct Step {
    /// Keys to send now, with their state.
    claimed: Vec<(CustomerKey, KeyState)>,
    /// When the soonest waiting key not claimed becomes due.
    next_due: Option<i64>,
    /// Whether any key not in flight is still queued (due or not).
    more: bool,
    /// The pause in force, if any.
    pause: Option<Pause>,
}

/// Records finished outcomes, then claims up to `free` due keys that are not in
/// flight: one transaction and a few reads, on the store's thread.
fn claim_step(
    store: &mut crate::store::Store,
    outcomes: &[Outcome],
    policy: Policy,
    rule: Option<&crate::config::PayrocPause>,
    busy: &[CustomerKey],
    free: usize,
) -> Result<Step, StateError> {
    if !outcomes.is_empty() {
        store.record_outcomes(outcomes, |state| !state.plan(policy).is_empty(), now_ms())?;
    }
    let pause = current_pause(rule, store)?;
    let paused = pause.as_ref().map_or(&[][..], |p| &p.business_units[..]);
    let crate::store::Claim {
        claimed,
        next_due,
        more,
    } = store.claim(free, paused, now_ms(), busy)?;
    Ok(Step {
        claimed,
        next_due,
        more,
        pause,
    })
}

/// Sends one key's events in order; returns the outcome, with what the
/// delivery saw of the key, and how many events Paystar acknowledged.
async fn deliver_key(
    client: &PaystarClient,
    settings: &WorkerSettings,
    key: CustomerKey,
    state: KeyState,
    paused: bool,
) -> (Outcome, u64) {
    let mut seen = state.clone();
    let (mut outcome, delivered) = send_key(client, settings, key, state, paused).await;
    // Whether the key differs once what Paystar acknowledged applies to the
    // state it was claimed with (the same rule the store applies on a re-read).
    seen.acked = AckedRecord::acknowledge(seen.acked.take(), &outcome, now_ms());
    outcome.claimed = Some(Claimed {
        queue_version: seen.queue.as_ref().map_or(0, |q| q.version),
        differs_after: !seen.plan(settings.policy).is_empty(),
    });
    (outcome, delivered)
}

/// Sends one key's events in order; returns the outcome and how many events
/// Paystar acknowledged.
async fn send_key(
    client: &PaystarClient,
    settings: &WorkerSettings,
    key: CustomerKey,
    state: KeyState,
    paused: bool,
) -> (Outcome, u64) {
    let mut plan = state.plan(settings.policy);
    if paused {
        // Only a provider's stop passes a pause; the rest waits in the queue.
        plan.manage = None;
    }
    let failures = state.queue.as_ref().map_or(0, |q| q.attempts);
    let mut outcome = Outcome {
        key: key.clone(),
        acked_fields: None,
        acked_unenroll: false,
        result: OutcomeResult::Done,
        history: Vec::new(),
        claimed: None,
    };
    let fields_provenance = provenance(&state, settings.policy);
    let attempt_no = failures + 1;
    let record = |kind: &'static str,
                  event: &PaystarEvent,
                  attempt: &Attempt,
                  cause: Option<&str>| {
        HistoryEntry {
        kind,
        event_type: Some(event.event_type.as_str()),
        detail: serde_json::json!({
            "attempt": attempt_no,
            "cause": cause,
            "provenance": match (cause, &state.stop) {
                (Some(c), Some(stop)) if c == UnenrollCause::Provider.as_str() => serde_json::json!({
                    "source": "provider",
                    "provider": stop.provider,
                    "eventId": stop.event_id,
                    "reason": stop.reason,
                }),
                _ => fields_provenance.clone(),
            },
            "request": event.body,
            "response": match attempt {
                Attempt::Response { status, body, .. } => serde_json::json!({ "status": status, "body": body }),
                Attempt::Transport { message, .. } => serde_json::json!({ "error": message }),
            },
        })
        .to_string(),
    }
    };
    let mut delivered = 0;
    let mut events = Vec::with_capacity(2);
    if let Some(manage) = &plan.manage {
        events.push((
            PaystarEvent::manage(key.as_ref(), manage),
            Some(manage.fields.to_owned()),
        ));
    }
    if plan.unenroll.is_some() {
        events.push((PaystarEvent::unenroll(key.as_ref()), None));
    }
    let unenroll_cause = plan.unenroll.map(|c| c.as_str());
    for (event, fields) in events {
        let cause = if fields.is_none() {
            unenroll_cause
        } else {
            None
        };
        let span = tracing::info_span!(
            "paystar.deliver",
            otel.name = "paystar.deliver",
            otel.kind = "client",
            event = event.event_type.as_str(),
            customer.key_hash = %KeyHash(&key),
            attempt = attempt_no,
            outcome = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let attempt = client.send(&event).instrument(span.clone()).await;
        let jitter = fastrand::f64() * 0.4 - 0.2;
        let decision = classify(
            &attempt,
            failures,
            &settings.schedule,
            jitter,
            SystemTime::now(),
        );
        let account = MaskedAccount(&key.account);
        record_attempt(&span, &attempt, &decision);
        match decision {
            Decision::Delivered => {
                outcome
                    .history
                    .push(record("delivered", &event, &attempt, cause));
                tracing::debug!(event = event.event_type.as_str(), business_unit = %key.business_unit, account = %account, "delivered");
                delivered += 1;
                match fields {
                    Some(fields) => outcome.acked_fields = Some(fields),
                    None => outcome.acked_unenroll = true,
                }
            }
            Decision::Retry { after, reason } => {
                outcome
                    .history
                    .push(record("retry", &event, &attempt, cause));
                tracing::warn!(event = event.event_type.as_str(), business_unit = %key.business_unit, account = %account, attempt = failures + 1, retry_in = ?after, error = %reason, "delivery failed; will retry");
                outcome.result = OutcomeResult::Retry {
                    attempts: failures + 1,
                    next_attempt_at: now_ms() + after.as_millis() as i64,
                    error: reason,
                };
                return (outcome, delivered);
            }
            Decision::Park { reason } => {
                outcome
                    .history
                    .push(record("parked", &event, &attempt, cause));
                tracing::error!(event = event.event_type.as_str(), business_unit = %key.business_unit, account = %account, error = %reason, "delivery parked; fix the cause, then run `paystar-sync retry`");
                let response = match &attempt {
                    Attempt::Response { status, body, .. } => format!("HTTP {status}\n{body}"),
                    Attempt::Transport { message, .. } => message.clone(),
                };
                outcome.result = OutcomeResult::Park {
                    attempts: failures + 1,
                    error: reason,
                    request: event.body,
                    response,
                };
                return (outcome, delivered);
            }
        }
    }
    (outcome, delivered)
}

/// What one attempt came to, on its span.
fn record_attempt(span: &tracing::Span, attempt: &Attempt, decision: &Decision) {
    if let Attempt::Response { status, .. } = attempt {
        span.record("http.response.status_code", *status);
    }
    let (outcome, status) = match decision {
        Decision::Delivered => ("delivered", "ok"),
        Decision::Retry { .. } => ("retry", "error"),
        Decision::Park { .. } => ("parked", "error"),
    };
    span.record("outcome", outcome);
    span.record("otel.status_code", status);
}

/// Where a key's desired state came from, for its history.
fn provenance(state: &KeyState, policy: Policy) -> serde_json::Value {
    if let (FieldSource::Provider, Some(p)) = (state.fields_source(policy), &state.provider) {
        return serde_json::json!({
            "source": "provider",
            "provider": p.provider,
            "eventId": p.event_id,
        });
    }
    match &state.desired {
        Some(d) => serde_json::json!({
            "source": "manifest",
            "file": d.file,
            "line": d.line,
            "removed": d.removed,
            "sha256": d.file_sha256,
            "gitCommit": d.git_commit,
            "gitAuthor": d.git_author,
        }),
        None => serde_json::Value::Null,
    }
}
