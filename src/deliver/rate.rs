//! `paystar.rate_limit` as a token bucket of one: requests start evenly spaced
//! at the configured rate, never in a burst. Pure: the caller passes the clock.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Pacer {
    every: Duration,
    /// When the next request may start.
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(per_second: f64) -> Self {
        Self {
            every: Duration::from_secs_f64(1.0 / per_second),
            next: None,
        }
    }

    /// Takes the turn if it has come.
    pub fn take(&mut self, now: Instant) -> bool {
        match self.next {
            Some(at) if now < at => false,
            // A turn not taken is not saved up: no burst after a quiet spell.
            _ => {
                self.next = Some(now + self.every);
                true
            }
        }
    }

    /// When the next turn comes, if not yet.
    pub fn next_at(&self, now: Instant) -> Option<Instant> {
        self.next.filter(|at| now < *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_come_evenly_at_the_rate_and_are_not_saved_up() {
        let mut p = Pacer::new(20.0);
        let t0 = Instant::now();
        assert!(p.take(t0));
        assert!(!p.take(t0));
        assert_eq!(p.next_at(t0), Some(t0 + Duration::from_millis(50)));
        assert!(!p.take(t0 + Duration::from_millis(49)));
        assert!(p.take(t0 + Duration::from_millis(50)));
        // A second of silence gives one turn, not twenty.
        let later = t0 + Duration::from_secs(2);
        assert!(p.take(later));
        assert!(!p.take(later));
        assert_eq!(p.next_at(later + Duration::from_millis(50)), None);
    }
}
