//! The endpoint circuit (SPEC §4, §9): a fault of the endpoint itself (a wrong
//! URL, a refused API key, DNS, TLS; see `classify`) pauses delivery for every
//! customer instead of parking each one. While open, one request at a time
//! probes on the retry schedule; any answer about a customer closes it and
//! delivery goes on by itself. A 429 or 503 whose `Retry-After` asks for a
//! pause stops every request until then, not only that customer's (the rate
//! side of the same gate). [`Circuit`] is the worker's pure state machine;
//! [`EndpointStatus`] is what `/health`, the console and `/metrics` read.

use prometheus_client::metrics::counter::Counter;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What is wrong with the endpoint now, shared with the HTTP server and the
/// console; kept across reloads with the delivery counters.
#[derive(Debug, Default)]
pub struct EndpointStatus {
    problem: Mutex<Option<EndpointProblem>>,
    /// Times delivery paused for an endpoint fault since start.
    pub pauses: Counter,
    /// Times Paystar asked every request to wait (`Retry-After`) since start.
    pub backoffs: Counter,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointProblem {
    /// What the endpoint does and what to check, from `classify`.
    pub reason: String,
    /// When delivery paused (ms since the epoch).
    pub since_ms: i64,
}

impl EndpointStatus {
    /// The fault delivery is paused for, if any.
    pub fn problem(&self) -> Option<EndpointProblem> {
        self.lock().clone()
    }

    /// Records a fault; the first one of an outage counts a pause.
    fn fail(&self, reason: &str, now_ms: i64) {
        let mut problem = self.lock();
        match problem.as_mut() {
            Some(p) => reason.clone_into(&mut p.reason),
            None => {
                self.pauses.inc();
                *problem = Some(EndpointProblem {
                    reason: reason.to_owned(),
                    since_ms: now_ms,
                });
            }
        }
    }

    /// The endpoint answered about a customer: the outage, if there was one, is over.
    fn heal(&self) -> Option<EndpointProblem> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<EndpointProblem>> {
        self.problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The worker's view: closed (send at full concurrency) or open (one probe at
/// a time, when due).
#[derive(Debug, Default)]
pub(super) struct Circuit {
    open: Option<Open>,
    /// Every request waits until then (a `Retry-After` from a 429 or 503).
    paused_until: Option<Instant>,
    /// The mean round trip of answers, in seconds: after a pause, slots
    /// reopen over one of them.
    round_trip: Option<f64>,
}

#[derive(Debug)]
struct Open {
    /// Probes that failed since it opened.
    failed_probes: usize,
    probe_at: Instant,
    probing: bool,
}

/// What a fault or an answer changed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    None,
    Opened,
    ProbeFailed { next_in: Duration },
    Closed { after: Duration },
}

impl Circuit {
    /// How many requests may be in flight now.
    pub fn slots(&self, concurrency: usize, now: Instant) -> usize {
        if self.paused_until.is_some_and(|until| now < until) {
            return 0;
        }
        let slots = match &self.open {
            None => concurrency,
            Some(open) if !open.probing && now >= open.probe_at => 1,
            Some(_) => 0,
        };
        slots.min(self.reopened(concurrency, now).unwrap_or(usize::MAX))
    }

    /// After a pause for everyone, slots reopen one by one over a round trip:
    /// requests go on as spread out as they were, rather than in one burst
    /// that a token bucket would refuse again. `None` once all are open.
    fn reopened(&self, concurrency: usize, now: Instant) -> Option<usize> {
        let (until, over) = self.ramp()?;
        let elapsed = now.checked_duration_since(until)?;
        (elapsed < over).then(|| {
            let share = elapsed.as_secs_f64() / over.as_secs_f64();
            ((concurrency as f64 * share) as usize + 1).min(concurrency)
        })
    }

    /// When the last pause ended, and the round trip slots reopen over.
    fn ramp(&self) -> Option<(Instant, Duration)> {
        Some((
            self.paused_until?,
            Duration::from_secs_f64(self.round_trip?),
        ))
    }

    /// An answer's round trip (refusals, which come at once, are not one).
    pub fn observed(&mut self, rtt: Duration, pushed_back: bool) {
        if !pushed_back {
            let rtt = rtt.as_secs_f64();
            self.round_trip = Some(self.round_trip.map_or(rtt, |mean| 0.8 * mean + 0.2 * rtt));
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// A request started: while open, it is the probe.
    pub fn started(&mut self) {
        if let Some(open) = &mut self.open {
            open.probing = true;
        }
    }

    /// When requests may start again, while they wait: the end of a pause
    /// for everyone, the next slot reopened after one, or the next probe.
    pub fn wake_at(&self, concurrency: usize, now: Instant) -> Option<Instant> {
        let reopen = self.reopened(concurrency, now).and_then(|open| {
            let (until, over) = self.ramp()?;
            Some(until + over.mul_f64(open as f64 / concurrency as f64))
        });
        let pause = self.paused_until.filter(|until| now < *until).or(reopen);
        let probe = self
            .open
            .as_ref()
            .filter(|o| !o.probing)
            .map(|o| o.probe_at);
        match (pause, probe) {
            (Some(p), Some(q)) => Some(p.max(q)),
            (p, q) => p.or(q),
        }
    }

    /// Every request waits `wait` from `now` (the longest pause asked wins);
    /// true when this starts a pause rather than lengthening one.
    pub fn pause_everyone(&mut self, now: Instant, wait: Duration) -> bool {
        let until = now + wait;
        let started = self.paused_until.is_none_or(|u| u <= now);
        if self.paused_until.is_none_or(|u| u < until) {
            self.paused_until = Some(until);
        }
        started
    }

    /// Probes that failed since it opened.
    pub fn failed_probes(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.failed_probes)
    }

    /// A request met an endpoint fault. Requests already in flight when it
    /// opened change nothing; a failed probe waits the schedule's next step.
    pub fn failed(
        &mut self,
        status: &EndpointStatus,
        reason: &str,
        now: Instant,
        now_ms: i64,
        schedule: &[Duration],
    ) -> Change {
        status.fail(reason, now_ms);
        let step = |n: usize| {
            schedule
                .get(n.min(schedule.len().saturating_sub(1)))
                .copied()
                .unwrap_or(Duration::from_secs(1))
        };
        match &mut self.open {
            None => {
                self.open = Some(Open {
                    failed_probes: 0,
                    probe_at: now + step(0),
                    probing: false,
                });
                Change::Opened
            }
            Some(open) if open.probing => {
                open.failed_probes += 1;
                open.probing = false;
                let next_in = step(open.failed_probes);
                open.probe_at = now + next_in;
                Change::ProbeFailed { next_in }
            }
            Some(_) => Change::None,
        }
    }

    /// A request got an answer about its customer (delivered, retried or
    /// parked for that customer): the endpoint works.
    pub fn answered(&mut self, status: &EndpointStatus, now_ms: i64) -> Change {
        self.open = None;
        match status.heal() {
            Some(problem) => Change::Closed {
                after: Duration::from_millis((now_ms - problem.since_ms).max(0) as u64),
            },
            None => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::classify::tests::SCHEDULE;

    #[test]
    fn a_fault_leaves_one_probe_on_the_schedule_and_an_answer_restores_full_concurrency() {
        let status = EndpointStatus::default();
        let mut c = Circuit::default();
        let t0 = Instant::now();
        assert_eq!(c.slots(8, t0), 8);
        assert_eq!(c.failed(&status, "404", t0, 0, &SCHEDULE), Change::Opened);
        // Requests that were in flight fail too: nothing more changes.
        assert_eq!(c.failed(&status, "404", t0, 0, &SCHEDULE), Change::None);
        assert_eq!(status.pauses.get(), 1);
        assert_eq!(c.slots(8, t0), 0);
        let due = t0 + SCHEDULE[0];
        assert_eq!(c.wake_at(8, t0), Some(due));
        assert_eq!(c.slots(8, due), 1);
        c.started();
        assert_eq!(c.slots(8, due), 0, "one probe at a time");
        assert_eq!(c.wake_at(8, due), None);
        assert_eq!(
            c.failed(&status, "404", due, 1_000, &SCHEDULE),
            Change::ProbeFailed {
                next_in: SCHEDULE[1]
            }
        );
        assert_eq!(c.failed_probes(), 1);
        for _ in 0..5 {
            c.started();
            c.failed(&status, "404", due, 1_000, &SCHEDULE);
        }
        // The schedule's last step repeats for ever: never parked, never given up.
        assert_eq!(c.wake_at(8, due), Some(due + SCHEDULE[2]));
        assert_eq!(status.problem().unwrap().since_ms, 0);
        assert_eq!(
            c.answered(&status, 61_000),
            Change::Closed {
                after: Duration::from_secs(61)
            }
        );
        assert_eq!(c.slots(8, due), 8);
        assert_eq!(status.problem(), None);
        assert_eq!(c.answered(&status, 62_000), Change::None);
        assert_eq!(status.pauses.get(), 1);
    }

    #[test]
    fn a_pause_for_everyone_stops_every_slot_until_the_longest_asked_ends() {
        let mut c = Circuit::default();
        let t0 = Instant::now();
        assert!(c.pause_everyone(t0, Duration::from_secs(2)));
        assert_eq!(c.slots(8, t0), 0);
        // A shorter pause asked meanwhile does not shorten it; a longer one lengthens it.
        assert!(!c.pause_everyone(t0, Duration::from_secs(1)));
        assert_eq!(c.wake_at(8, t0), Some(t0 + Duration::from_secs(2)));
        assert!(!c.pause_everyone(t0 + Duration::from_secs(1), Duration::from_secs(3)));
        assert_eq!(c.slots(8, t0 + Duration::from_secs(3)), 0);
        assert_eq!(c.slots(8, t0 + Duration::from_secs(4)), 8);
        assert_eq!(c.wake_at(8, t0 + Duration::from_secs(4)), None);
        assert!(c.pause_everyone(t0 + Duration::from_secs(5), Duration::from_secs(1)));
    }

    #[test]
    fn after_a_pause_slots_reopen_one_by_one_over_a_round_trip() {
        let mut c = Circuit::default();
        let t0 = Instant::now();
        c.observed(Duration::from_millis(100), false);
        c.observed(Duration::from_millis(1), true);
        c.pause_everyone(t0, Duration::from_secs(1));
        let end = t0 + Duration::from_secs(1);
        assert_eq!(c.slots(10, end), 1);
        assert_eq!(c.wake_at(10, end), Some(end + Duration::from_millis(10)));
        assert_eq!(c.slots(10, end + Duration::from_millis(55)), 6);
        assert_eq!(c.slots(10, end + Duration::from_millis(99)), 10);
        assert_eq!(c.slots(10, end + Duration::from_millis(100)), 10);
        assert_eq!(c.wake_at(10, end + Duration::from_millis(100)), None);
        // Without a round trip measured, all reopen at once.
        let mut fresh = Circuit::default();
        fresh.pause_everyone(t0, Duration::from_secs(1));
        assert_eq!(fresh.slots(10, end), 10);
    }
}
