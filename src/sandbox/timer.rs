//! Precise waits for the simulators' injected latency: one OS thread wakes each
//! waiting request at its instant. tokio's timer rounds up to whole
//! milliseconds (an injected 5 ms would be 5–6 ms), and a blocking-pool thread
//! per waiting request costs a thread hand-off per request, which on two cores
//! competes with the client being measured.
//!
//! The thread starts with the first wait and ends after a second with nothing
//! to wait for; a later wait starts it again.

// The thread waits on the OS clock, so instants are the OS clock's too (as the
// thread sleep this replaces was): paused tokio time does not apply here.
#![allow(clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long the thread lingers with nothing to wait for.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct PreciseTimer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Soonest first; the sequence number keeps equal instants apart.
    due: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    running: bool,
}

struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PreciseTimer {
    /// Returns once `duration` has passed, to the OS timer's precision.
    pub async fn sleep(&self, duration: Duration) {
        let at = Instant::now() + duration;
        let (wake, woken) = oneshot::channel();
        if !self.shared.add(Entry { at, seq: 0, wake }) {
            // No thread to be had: tokio's coarser timer still waits.
            return tokio::time::sleep_until(at.into()).await;
        }
        // A sender dropped without sending only happens if the thread panicked.
        if woken.await.is_err() {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

impl Shared {
    /// Adds a wait, starting the thread if it is not running; false if no
    /// thread could be started (the wait is not kept then).
    fn add(self: &Arc<Self>, mut entry: Entry) -> bool {
        let mut state = self.lock();
        let sooner = state
            .due
            .peek()
            .is_none_or(|Reverse(first)| entry.at < first.at);
        entry.seq = state.seq;
        state.seq += 1;
        state.due.push(Reverse(entry));
        if state.running {
            if sooner {
                self.changed.notify_one();
            }
            return true;
        }
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("sandbox-timer".into())
            .spawn(move || shared.run());
        if spawned.is_err() {
            state.due.pop();
            return false;
        }
        state.running = true;
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            while state
                .due
                .peek()
                .is_some_and(|Reverse(first)| first.at <= now)
            {
                let Reverse(entry) = state.due.pop().expect("peeked");
                // The waiting request may be gone (the client hung up): fine.
                let _ = entry.wake.send(());
            }
            let wait = match state.due.peek() {
                Some(Reverse(first)) => first.at - now,
                None => LINGER,
            };
            let (next, timeout) = self
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if timeout.timed_out() && state.due.is_empty() {
                state.running = false;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_end_in_order_of_their_instants_and_never_early() {
        let timer = PreciseTimer::default();
        let start = Instant::now();
        let mut waits = tokio::task::JoinSet::new();
        for (i, ms) in [30u64, 5, 20, 5, 1].into_iter().enumerate() {
            let timer = timer.clone();
            waits.spawn(async move {
                timer.sleep(Duration::from_millis(ms)).await;
                (i, ms, start.elapsed())
            });
        }
        let mut ended = Vec::new();
        while let Some(done) = waits.join_next().await {
            let (i, ms, elapsed) = done.unwrap();
            assert!(
                elapsed >= Duration::from_millis(ms),
                "wait {i} of {ms} ms ended after {elapsed:?}"
            );
            ended.push(ms);
        }
        let mut sorted = ended.clone();
        sorted.sort_unstable();
        assert_eq!(ended, sorted, "waits ended out of order");
    }

    #[tokio::test]
    async fn a_sooner_wait_added_while_the_thread_sleeps_is_not_held_back() {
        let timer = PreciseTimer::default();
        let long = {
            let timer = timer.clone();
            tokio::spawn(async move { timer.sleep(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        let start = Instant::now();
        timer.sleep(Duration::from_millis(2)).await;
        assert!(start.elapsed() < Duration::from_secs(10));
        long.abort();
    }
}
