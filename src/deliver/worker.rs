//! The delivery worker: takes due keys from the durable queue, sends each key's
//! events in order (ManageCustomer, then UnenrollAutopay), and records outcomes.
//!
//! - Never two requests in flight for one key: a key is claimed until its outcome
//!   is committed.
//! - At most `concurrency` keys in flight, and as many more claimed and waiting
//!   for a slot, so that requests go on while the store records and claims.
//! - Outcomes that finish together are committed in one transaction.
//! - Each attempt computes the key's events from its state at that moment, so a
//!   key whose desired state changed while it waited sends its newest state once.

use super::circuit::{Change, Circuit, EndpointStatus};
use super::client::PaystarClient;
use super::limit::Limiter;
use super::logbook::{LEARNED_KEY, Learning, RetryLog, log_heal, log_pause};
use super::rate::Pacer;
use super::send::{Ready, Sent, deliver_key};
use crate::clock::now_ms;
use crate::customer::CustomerKey;
use crate::providers::payroc::{Pause, current_pause};
use crate::reconcile::Policy;
use crate::store::{KeyState, Outcome, OutcomeResult, SharedStore, StateError};
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The longest the worker waits without looking at the queue.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// At most this many keys claimed (in flight or waiting) at a low concurrency.
const CLAIM_AHEAD: usize = 256;
/// A finished outcome is recorded within this long, with whatever else finished.
const RECORD_WITHIN: Duration = Duration::from_millis(20);
/// Keys are claimed for this much sending ahead, at the rate they are finishing.
const CLAIM_FOR: Duration = Duration::from_millis(20);

/// How many keys may be claimed, in flight or waiting: twice the concurrency,
/// plus what the slots send in [`CLAIM_FOR`] at `per_second`, up to
/// [`CLAIM_AHEAD`]. While Paystar answers fast, store steps grow to batches of
/// that order rather than one transaction per few requests; against a slow
/// Paystar a key's claimed state is never older than a few requests, so that
/// an edit made meanwhile (autopay back on) is what the next request sees.
fn claim_ahead(concurrency: usize, per_second: f64) -> usize {
    let base = 2 * concurrency;
    let more = (per_second * CLAIM_FOR.as_secs_f64()) as usize;
    (base + more).min(base.max(CLAIM_AHEAD))
}

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
    /// Whether a request may start now: closed once a leader's lease nears its
    /// end (SPEC §12); always open without a lease.
    pub gate: crate::ha::LeaseGate,
    /// `paystar.rate_limit`: the most requests a second, evenly spaced.
    pub rate_limit: Option<f64>,
    /// `paystar.concurrency: adaptive`: learned up to this (`concurrency` is
    /// where it starts the first time).
    pub adaptive: Option<usize>,
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
    /// Whether delivery is paused for a fault of the endpoint itself.
    pub endpoint: EndpointStatus,
    /// Requests that may be in flight now (fixed, or as learned).
    pub limit: prometheus_client::metrics::gauge::Gauge,
    /// Requests in flight now.
    pub in_flight: prometheus_client::metrics::gauge::Gauge,
    /// Answers that pushed back: 429, 503, a timeout.
    pub pushbacks: Counter,
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
        let delivered = self.deliver(until, cancel).await;
        self.counters.in_flight.set(0);
        let (totals, learned) = delivered?;
        // Where an adaptive limit ended: the next run (or leader) starts there.
        if let Some(limit) = learned {
            self.store
                .call(move |s| s.set_meta(LEARNED_KEY, &limit.to_string()))
                .await?;
        }
        Ok(totals)
    }

    /// [`Worker::run`]'s loop; also returns where an adaptive limit ended.
    async fn deliver(
        &self,
        until: Until,
        cancel: CancellationToken,
    ) -> Result<(Totals, Option<usize>), StateError> {
        // A fixed concurrency, or an adaptive one that starts where it was learned.
        let learned = match self.settings.adaptive {
            Some(_) => self
                .store
                .call(|s| s.meta(LEARNED_KEY))
                .await?
                .and_then(|v| v.parse::<usize>().ok()),
            None => None,
        };
        let mut limiter = self.settings.adaptive.map(|max| {
            let start = learned.unwrap_or(self.settings.concurrency);
            tracing::info!(
                start,
                max,
                from = if learned.is_some() {
                    "learned"
                } else {
                    "default"
                },
                "adaptive delivery concurrency"
            );
            Limiter::new(start, max, learned.is_some(), tokio::time::Instant::now())
        });
        let mut learning = Learning::default();
        let concurrency = limiter
            .as_ref()
            .map_or(self.settings.concurrency, Limiter::limit);
        self.counters.limit.set(concurrency as i64);
        // Customers an earlier build parked for a fault of the endpoint (this one
        // pauses instead) go back in the queue: if the fault lasts, it pauses.
        let released = self
            .store
            .call(|s| s.release_parked_for_endpoint("paystar-sync (endpoint fault)", now_ms()))
            .await?;
        if released > 0 {
            tracing::info!(
                customers = released,
                "re-queued customers parked for a fault of the endpoint (a wrong URL, a refused key, DNS, TLS), not of their own"
            );
        }
        let mut circuit = Circuit::default();
        let mut pacer = self.settings.rate_limit.map(Pacer::new);
        let mut retry_log = RetryLog::default();
        let mut tasks: JoinSet<Sent> = JoinSet::new();
        // Keys claimed and not yet recorded: waiting in `ready`, in flight, or
        // finished. They are the step's `busy`: never claimed twice.
        let mut claimed: HashSet<CustomerKey> = HashSet::new();
        let mut ready: VecDeque<Ready> = VecDeque::new();
        let mut finished: Vec<Outcome> = Vec::new();
        let mut step: Option<tokio::task::JoinHandle<Result<Option<Step>, StateError>>> = None;
        // Whether the queue may hold something to claim that the last step did not see.
        let mut look = true;
        let mut more = true;
        let mut next_due: Option<i64> = None;
        let mut totals = Totals::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut pause: Option<Pause> = None;
        // How many keys may be claimed, in flight or waiting (see CLAIM_AHEAD).
        let mut ahead = 2 * concurrency;
        let mut last_step = tokio::time::Instant::now();
        // When the oldest outcome not yet recorded finished.
        let mut finished_since: Option<tokio::time::Instant> = None;
        loop {
            let concurrency = limiter
                .as_ref()
                .map_or(self.settings.concurrency, Limiter::limit);
            let may_send = self.settings.gate.may_send();
            if !may_send {
                // The lease nears its end: what waits stays queued, unsent.
                for waiting in ready.drain(..) {
                    claimed.remove(&waiting.key);
                }
            }
            if until == Until::Idle
                && circuit.failed_probes() > 0
                && tasks.is_empty()
                && step.is_none()
                && finished.is_empty()
            {
                // A one-shot pass does not wait out an endpoint fault that a
                // probe confirmed: everything stays queued, nothing parked.
                return Ok((totals, limiter.as_ref().map(Limiter::limit)));
            }
            if deadline.is_none() && may_send {
                let now = tokio::time::Instant::now();
                let slots = circuit.slots(concurrency, now);
                while tasks.len() < slots && !ready.is_empty() {
                    if pacer.as_mut().is_some_and(|p| !p.take(now)) {
                        break;
                    }
                    let next = ready.pop_front().expect("not empty");
                    circuit.started();
                    let client = self.client.clone();
                    let settings = self.settings.clone();
                    tasks.spawn(async move { deliver_key(&client, &settings, next, now).await });
                }
                if let Some(limiter) = &mut limiter {
                    limiter.in_flight(tasks.len());
                }
                self.counters.in_flight.set(tasks.len() as i64);
            }
            // One store step at a time records what finished and claims what is
            // due next, while requests go on: keys wait in `ready` (up to `ahead`
            // claimed in all, see `claim_ahead`) so that a slot never waits for the store.
            let room = match deadline {
                // While the endpoint fails, one customer waits to probe it.
                None if may_send && circuit.is_open() => usize::from(ready.is_empty()),
                None if may_send => ahead.saturating_sub(tasks.len() + ready.len()),
                _ => 0,
            };
            // A step claims once a quarter of what may be claimed is free, and
            // records once a quarter has finished (or nothing else is in flight):
            // fewer, bigger transactions, and no read of the queue for a few keys.
            let batch = (ahead / 4).max(1);
            let claim =
                look && room > 0 && (room >= batch || tasks.len() + ready.len() < concurrency);
            let record = finished.len() >= batch
                || (!finished.is_empty()
                    && (tasks.is_empty()
                        || finished_since.is_some_and(|t| t.elapsed() >= RECORD_WITHIN)));
            if step.is_none() && (record || claim) {
                let outcomes = std::mem::take(&mut finished);
                finished_since = None;
                let now = tokio::time::Instant::now();
                let per_second = outcomes.len() as f64 / (now - last_step).as_secs_f64().max(1e-3);
                ahead = claim_ahead(concurrency, per_second);
                last_step = now;
                let room = if claim { room } else { 0 };
                // A finished key is no longer claimed: its outcome commits in the
                // same step, before anything is claimed.
                for outcome in &outcomes {
                    claimed.remove(&outcome.key);
                }
                let busy: Vec<CustomerKey> = claimed.iter().cloned().collect();
                let policy = self.settings.policy;
                let rule = self.settings.pause.clone();
                let store = self.store.clone();
                look &= !claim;
                step = Some(tokio::spawn(async move {
                    store
                        .call(move |s| claim_step(s, &outcomes, policy, rule.as_ref(), &busy, room))
                        .await
                }));
            }
            if step.is_none() && finished.is_empty() && tasks.is_empty() {
                let idle = until == Until::Idle && ready.is_empty() && !more;
                if deadline.is_some() || idle {
                    return Ok((totals, limiter.as_ref().map(Limiter::limit)));
                }
            }
            // Also look again now and then: another process (`retry`) may have queued work.
            let sleep_for = next_due
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
            let wake_at = {
                let now = tokio::time::Instant::now();
                let turn = pacer
                    .as_ref()
                    .filter(|_| !ready.is_empty() && tasks.len() < concurrency)
                    .and_then(|p| p.next_at(now));
                match (circuit.wake_at(concurrency, now), turn) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            };
            tokio::select! {
                done = async { step.as_mut().expect("a step runs").await }, if step.is_some() => {
                    step = None;
                    let done = match done {
                        Ok(done) => done?,
                        // A panicking store call is a bug: the stage fails.
                        Err(err) => std::panic::resume_unwind(err.into_panic()),
                    };
                    let Some(done) = done else {
                        // Only recorded: what it recorded may have queued a key again.
                        look = true;
                        continue;
                    };
                    if done.pause != pause {
                        log_pause(done.pause.as_ref());
                        pause = done.pause.clone();
                    }
                    for (key, state) in done.claimed {
                        let paused = done
                            .pause
                            .as_ref()
                            .is_some_and(|p| p.business_units.contains(&key.business_unit));
                        // Once shutdown began, what was claimed stays queued.
                        if deadline.is_none() {
                            claimed.insert(key.clone());
                            ready.push_back(Ready { key, state, paused });
                        }
                    }
                    more = done.more;
                    next_due = done.next_due;
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    let mut batch = vec![joined];
                    while let Some(more) = tasks.try_join_next() {
                        batch.push(more);
                    }
                    let mut delivered = 0;
                    let customers = batch.len();
                    for joined in batch {
                        // A panicking delivery is a bug: the stage fails and the daemon restarts.
                        let sent = match joined {
                            Ok(sent) => sent,
                            Err(err) => std::panic::resume_unwind(err.into_panic()),
                        };
                        let (outcome, events, fault) = match sent {
                            Sent::Done { outcome, delivered, fault, pause, samples } => {
                                if let Some(wait) = pause {
                                    self.pause_everyone(&mut circuit, wait);
                                }
                                for sample in &samples {
                                    circuit.observed(sample.rtt, sample.pushed_back);
                                    if sample.pushed_back {
                                        self.counters.pushbacks.inc();
                                    }
                                }
                                if let Some(limiter) = &mut limiter {
                                    for sample in samples {
                                        if limiter.answered(sample.sent, sample.rtt, sample.pushed_back, sample.at).is_some() {
                                            learning.moved(&self.counters, &self.store, limiter.limit(), sample.at);
                                        }
                                    }
                                }
                                (outcome, delivered, fault)
                            }
                            // Not sent (the lease's gate closed first): it stays queued as it is.
                            Sent::GateClosed => continue,
                            Sent::Endpoint { ready: waiting, reason } => {
                                self.endpoint_failed(&mut circuit, &reason);
                                // It waits first in line to probe, unless delivery is stopping.
                                if deadline.is_none() && self.settings.gate.may_send() {
                                    ready.push_front(*waiting);
                                } else {
                                    claimed.remove(&waiting.key);
                                }
                                continue;
                            }
                        };
                        match fault {
                            Some(reason) => self.endpoint_failed(&mut circuit, &reason),
                            None => log_heal(circuit.answered(&self.counters.endpoint, now_ms())),
                        }
                        delivered += events;
                        self.count(&mut totals, &outcome.result);
                        if let OutcomeResult::Retry { error, .. } = &outcome.result {
                            retry_log.note(error, tokio::time::Instant::now());
                        }
                        finished.push(outcome);
                    }
                    if !finished.is_empty() {
                        finished_since.get_or_insert_with(tokio::time::Instant::now);
                    }
                    totals.delivered_events += delivered;
                    self.counters.delivered.inc_by(delivered);
                    if delivered > 0 && until == Until::Cancelled {
                        tracing::info!(events = delivered, customers, "acknowledged by Paystar");
                    }
                    look = true;
                }
                _ = self.wake.notified(), if deadline.is_none() => look = true,
                // A pause for everyone ends, the endpoint's next probe is due,
                // or the rate limit's next turn comes for a customer waiting.
                _ = tokio::time::sleep_until(wake_at.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_none() && wake_at.is_some() => {}
                // An outcome waits for company at most RECORD_WITHIN.
                _ = tokio::time::sleep_until(finished_since.unwrap_or_else(tokio::time::Instant::now) + RECORD_WITHIN),
                    if step.is_none() && finished_since.is_some() => {}
                _ = tokio::time::sleep(sleep_for), if deadline.is_none() && step.is_none() && !look => look = true,
                _ = cancel.cancelled(), if deadline.is_none() => {
                    tracing::info!(in_flight = tasks.len(), grace = ?self.settings.grace, "delivery stopping; letting in-flight requests finish");
                    deadline = Some(tokio::time::Instant::now() + self.settings.grace);
                    // Keys not yet sent stay queued as they are.
                    for waiting in ready.drain(..) {
                        claimed.remove(&waiting.key);
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    tracing::warn!(abandoned = tasks.len(), "grace period over; abandoning in-flight requests (they stay queued and are sent after restart)");
                    tasks.abort_all();
                    // What finished is still recorded; a step that runs completes.
                    if let Some(running) = step.take() {
                        let _ = running.await;
                    }
                    if !finished.is_empty() {
                        let outcomes = std::mem::take(&mut finished);
                        let policy = self.settings.policy;
                        let rule = self.settings.pause.clone();
                        self.store
                            .call(move |s| claim_step(s, &outcomes, policy, rule.as_ref(), &[], 0))
                            .await?;
                    }
                    return Ok((totals, limiter.as_ref().map(Limiter::limit)));
                }
            }
        }
    }

    /// A request met a fault of the endpoint: said once when delivery pauses,
    /// and at each failed probe.
    fn endpoint_failed(&self, circuit: &mut Circuit, reason: &str) {
        let change = circuit.failed(
            &self.counters.endpoint,
            reason,
            tokio::time::Instant::now(),
            now_ms(),
            &self.settings.schedule,
        );
        match change {
            Change::Opened => tracing::error!(
                %reason,
                "delivery paused: a fault of the endpoint, not of any customer; nothing is parked for it, one request probes on the retry schedule, and delivery resumes by itself once Paystar answers"
            ),
            Change::ProbeFailed { next_in } => {
                tracing::warn!(%reason, next_probe_in = ?next_in, "delivery still paused: the endpoint fails")
            }
            Change::None | Change::Closed { .. } => {}
        }
    }

    /// Paystar asked every request to wait (`Retry-After` on a 429 or 503):
    /// nothing new starts until then; said once per pause.
    fn pause_everyone(&self, circuit: &mut Circuit, wait: Duration) {
        if circuit.pause_everyone(tokio::time::Instant::now(), wait) {
            self.counters.endpoint.backoffs.inc();
            tracing::warn!(
                wait = ?wait,
                "Paystar asked to wait (Retry-After on a 429 or 503): no request starts until then, for any customer"
            );
        }
    }

    /// Counts one outcome.
    fn count(&self, totals: &mut Totals, result: &OutcomeResult) {
        match result {
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
/// flight: one transaction and a few reads, on the store's thread. With no room
/// to claim into (`free` = 0) it only records, and finds nothing (`None`).
fn claim_step(
    store: &mut crate::store::Store,
    outcomes: &[Outcome],
    policy: Policy,
    rule: Option<&crate::config::PayrocPause>,
    busy: &[CustomerKey],
    free: usize,
) -> Result<Option<Step>, StateError> {
    if !outcomes.is_empty() {
        store.record_outcomes(outcomes, |state| !state.plan(policy).is_empty(), now_ms())?;
    }
    if free == 0 {
        return Ok(None);
    }
    let pause = current_pause(rule, store)?;
    let paused = pause.as_ref().map_or(&[][..], |p| &p.business_units[..]);
    let crate::store::Claim {
        claimed,
        next_due,
        more,
    } = store.claim(free, paused, now_ms(), busy)?;
    Ok(Some(Step {
        claimed,
        next_due,
        more,
        pause,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_paystar_keeps_claims_to_twice_the_concurrency_and_a_fast_one_claims_further_ahead() {
        // 8 slots at 100 ms a request: 80 keys a second.
        assert_eq!(claim_ahead(8, 80.0), 17);
        assert_eq!(claim_ahead(8, 0.0), 16);
        // The in-process simulator: thousands a second.
        assert_eq!(claim_ahead(8, 15_000.0), CLAIM_AHEAD);
        assert_eq!(claim_ahead(8, 5_000.0), 116);
        // A concurrency above the cap claims twice itself, as always.
        assert_eq!(claim_ahead(200, 1e9), 400);
    }
}
