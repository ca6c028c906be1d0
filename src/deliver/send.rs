//! Sending one claimed key: its events in order (ManageCustomer, then
//! UnenrollAutopay), each attempt classified, its span and history written,
//! and the outcome with what the delivery saw of the key.

use super::WorkerSettings;
use super::classify::{Attempt, Decision, classify, everyone_waits, pushed_back};
use super::client::PaystarClient;
use super::event::{ACCEPTED_BODY, PaystarEvent};
use crate::clock::now_ms;
use crate::customer::CustomerKey;
use crate::mask::MaskedAccount;
use crate::reconcile::{FieldSource, Manage, Policy, UnenrollCause};
use crate::store::{
    DeliveryLine, HistoryEntry, KeyState, LineProvenance, ManifestVersion, Outcome, OutcomeResult,
};
use crate::telemetry::KeyHash;
use tracing::Instrument;

/// A claimed key waiting for a free slot, with the state it was claimed with.
pub(super) struct Ready {
    pub key: CustomerKey,
    pub state: KeyState,
    /// Only a provider's stop passes a pause.
    pub paused: bool,
}

/// One attempt's round trip and whether Paystar pushed back.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub rtt: std::time::Duration,
    pub pushed_back: bool,
    /// When the worker started the key's task: its requests belong to the
    /// limit of that moment (a cut since then has counted them).
    pub sent: tokio::time::Instant,
    /// When the answer came.
    pub at: tokio::time::Instant,
}

/// What sending one claimed key came to. Moved once per key, like the
/// `(Outcome, u64)` it carries: boxing the outcome would allocate per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Sent {
    /// An outcome to record, the events Paystar acknowledged, and the endpoint
    /// fault that ended it after a first event was acknowledged, if one did.
    Done {
        outcome: Outcome,
        delivered: u64,
        fault: Option<String>,
        /// Paystar asked every request to wait this long (`Retry-After`).
        pause: Option<std::time::Duration>,
        /// Each attempt's round trip, for an adaptive concurrency.
        samples: Vec<Sample>,
    },
    /// Nothing was sent: the lease's gate closed first.
    GateClosed,
    /// The endpoint failed the first request: nothing to record; the key
    /// waits, claimed, for delivery to resume.
    Endpoint { ready: Box<Ready>, reason: String },
}

/// Sends one key's events in order; its outcome carries what the delivery
/// saw of the key.
pub(super) async fn deliver_key(
    client: &PaystarClient,
    settings: &WorkerSettings,
    ready: Ready,
    started: tokio::time::Instant,
) -> Sent {
    let Ready { key, state, paused } = ready;
    let seen = state.clone();
    match send_key(client, settings, key.clone(), state, paused, started).await {
        Sent::Done {
            mut outcome,
            delivered,
            fault,
            pause,
            samples,
        } => {
            outcome.claimed = Some(seen.claimed_after(&outcome, settings.policy, now_ms()));
            Sent::Done {
                outcome,
                delivered,
                fault,
                pause,
                samples,
            }
        }
        Sent::Endpoint { reason, .. } => Sent::Endpoint {
            ready: Box::new(Ready {
                key,
                state: seen,
                paused,
            }),
            reason,
        },
        Sent::GateClosed => Sent::GateClosed,
    }
}

/// Sends one key's events in order. Each request starts only while the lease's
/// gate is open: closed before the first, nothing happened; closed after one,
/// the outcome acknowledges what was sent and the key stays queued for the
/// rest. An endpoint fault on the first request leaves the key as it was
/// (`Sent::Endpoint`, whose `ready` the caller fills in).
async fn send_key(
    client: &PaystarClient,
    settings: &WorkerSettings,
    key: CustomerKey,
    state: KeyState,
    paused: bool,
    sent: tokio::time::Instant,
) -> Sent {
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
                  manage: Option<&Manage<'_>>,
                  attempt: &Attempt,
                  cause: Option<&str>| {
        HistoryEntry::delivery(DeliveryLine {
            kind,
            event,
            manage,
            attempt: attempt_no,
            cause,
            provenance: match (cause, &state.stop) {
                (Some(c), Some(stop)) if c == UnenrollCause::Provider.as_str() => {
                    LineProvenance::Other(serde_json::json!({
                        "source": "provider",
                        "provider": stop.provider,
                        "eventId": stop.event_id,
                        "reason": stop.reason,
                    }))
                }
                _ => fields_provenance.clone(),
            },
            response: match attempt {
                Attempt::Response { status, body, .. } if body == ACCEPTED_BODY => {
                    serde_json::json!({ "status": status })
                }
                Attempt::Response { status, body, .. } => {
                    serde_json::json!({ "status": status, "body": body })
                }
                Attempt::Transport { message, .. } => serde_json::json!({ "error": message }),
            },
        })
    };
    let mut delivered = 0;
    let mut samples = Vec::with_capacity(2);
    let mut events = Vec::with_capacity(2);
    if let Some(manage) = &plan.manage {
        events.push((PaystarEvent::manage(key.as_ref(), manage), Some(manage)));
    }
    if plan.unenroll.is_some() {
        events.push((PaystarEvent::unenroll(key.as_ref()), None));
    }
    let unenroll_cause = plan.unenroll.map(|c| c.as_str());
    for (i, (event, manage)) in events.into_iter().enumerate() {
        if !settings.gate.may_send() {
            if i == 0 {
                return Sent::GateClosed;
            }
            break;
        }
        let cause = if manage.is_none() {
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
        let started = tokio::time::Instant::now();
        let attempt = client.send(&event).instrument(span.clone()).await;
        let rtt = started.elapsed();
        samples.push(Sample {
            rtt,
            pushed_back: pushed_back(&attempt),
            sent,
            at: started + rtt,
        });
        let jitter = fastrand::f64() * 0.4 - 0.2;
        let now = crate::clock::now();
        let decision = classify(&attempt, failures, &settings.schedule, jitter, now);
        // Whatever it means for this customer, Paystar may ask everyone to wait.
        let pause = everyone_waits(&attempt, now);
        let account = MaskedAccount(&key.account);
        record_attempt(&span, &attempt, &decision);
        match decision {
            Decision::Delivered => {
                outcome
                    .history
                    .push(record("delivered", &event, manage, &attempt, cause));
                tracing::debug!(event = event.event_type.as_str(), business_unit = %key.business_unit, account = %account, "delivered");
                delivered += 1;
                match manage {
                    Some(m) => outcome.acked_fields = Some(m.fields.to_owned()),
                    None => outcome.acked_unenroll = true,
                }
            }
            Decision::Retry { after, reason } => {
                outcome
                    .history
                    .push(record("retry", &event, manage, &attempt, cause));
                // The worker says retries once a minute, counted (RetryLog).
                tracing::debug!(event = event.event_type.as_str(), business_unit = %key.business_unit, account = %account, attempt = failures + 1, retry_in = ?after, error = %reason, "delivery failed; will retry");
                outcome.result = OutcomeResult::Retry {
                    attempts: failures + 1,
                    next_attempt_at: now_ms() + after.as_millis() as i64,
                    error: reason,
                };
                return Sent::Done {
                    outcome,
                    delivered,
                    fault: None,
                    pause,
                    samples,
                };
            }
            Decision::Endpoint { reason } if i == 0 => {
                // Logged once by the worker for the whole endpoint, not per customer.
                tracing::debug!(event = event.event_type.as_str(), business_unit = %key.business_unit, account = %account, error = %reason, "endpoint fault; the customer stays queued");
                return Sent::Endpoint {
                    ready: Box::new(Ready {
                        key,
                        state: KeyState::default(),
                        paused,
                    }),
                    reason,
                };
            }
            Decision::Endpoint { reason } => {
                // The first event went through, the next met the fault: what was
                // acknowledged is recorded, the rest waits without counting an attempt.
                outcome.result = OutcomeResult::Retry {
                    attempts: failures,
                    next_attempt_at: now_ms(),
                    error: reason.clone(),
                };
                return Sent::Done {
                    outcome,
                    delivered,
                    fault: Some(reason),
                    pause: None,
                    samples,
                };
            }
            Decision::Park { reason } => {
                outcome
                    .history
                    .push(record("parked", &event, manage, &attempt, cause));
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
                return Sent::Done {
                    outcome,
                    delivered,
                    fault: None,
                    pause,
                    samples,
                };
            }
        }
    }
    Sent::Done {
        outcome,
        delivered,
        fault: None,
        pause: None,
        samples,
    }
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
        Decision::Endpoint { .. } => ("endpoint", "error"),
    };
    span.record("outcome", outcome);
    span.record("otel.status_code", status);
}

/// Where a key's desired state came from, for its history.
fn provenance(state: &KeyState, policy: Policy) -> LineProvenance {
    if let (FieldSource::Provider, Some(p)) = (state.fields_source(policy), &state.provider) {
        return LineProvenance::Other(serde_json::json!({
            "source": "provider",
            "provider": p.provider,
            "eventId": p.event_id,
        }));
    }
    match &state.desired {
        Some(d) => match &d.file {
            Some(path) => LineProvenance::Manifest {
                version: ManifestVersion {
                    path: path.clone(),
                    sha256: d.file_sha256.clone(),
                    git_commit: d.git_commit.clone(),
                    git_author: d.git_author.clone(),
                },
                line: d.line,
                removed: d.removed,
            },
            None => LineProvenance::Other(serde_json::json!({
                "source": "manifest",
                "file": null,
                "line": d.line,
                "sha256": d.file_sha256,
                "removed": d.removed,
            })),
        },
        None => LineProvenance::Other(serde_json::Value::Null),
    }
}
