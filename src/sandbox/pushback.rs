//! How the simulated Paystar answers under load: a latency with jitter that
//! may grow with the requests open at once, a concurrency capacity and a
//! token-bucket rate beyond which it refuses (429 or 503, with or without
//! `Retry-After`). Pure: the simulator passes the clock, the open requests
//! and the random draw.

use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;

/// How long an answer takes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub base: Duration,
    /// Each answer takes up to this much more or less (uniform).
    pub jitter: Duration,
    /// Each other request open at once adds this much: a Paystar that queues
    /// when loaded.
    pub per_open: Duration,
}

impl Latency {
    pub fn fixed(base: Duration) -> Self {
        Self {
            base,
            ..Self::default()
        }
    }

    /// `POST /_sandbox/paystar/latency {"ms", "jitter_ms", "per_open_ms"}`.
    pub fn from_millis(ms: f64, jitter_ms: f64, per_open_ms: f64) -> Self {
        let d = |ms: f64| Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        Self {
            base: d(ms),
            jitter: d(jitter_ms),
            per_open: d(per_open_ms),
        }
    }

    /// The latency of one answer with `open` requests open (this one
    /// included); `draw` is uniform in [0, 1).
    pub fn pick(&self, open: usize, draw: f64) -> Duration {
        let jitter = self.jitter.as_secs_f64() * (2.0 * draw - 1.0);
        let load = self.per_open.as_secs_f64() * open.saturating_sub(1) as f64;
        let seconds = (self.base.as_secs_f64() + jitter + load).max(0.0);
        Duration::from_micros((seconds * 1e6).round() as u64)
    }

    pub fn is_zero(&self) -> bool {
        self.base.is_zero() && self.jitter.is_zero() && self.per_open.is_zero()
    }
}

/// `POST /_sandbox/paystar/capacity`: when the simulated Paystar refuses.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    /// Requests open at once beyond which a request is refused; `null`: unlimited.
    pub requests: Option<usize>,
    /// A token bucket: requests a second beyond which a request is refused.
    pub rate: Option<f64>,
    /// The bucket's size (default: a tenth of a second's worth, at least one).
    pub burst: Option<f64>,
    /// The refusal's status: 429 or 503.
    pub status: u16,
    /// The refusal's `Retry-After` (seconds or an HTTP date), if any.
    pub retry_after: Option<String>,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            requests: None,
            rate: None,
            burst: None,
            status: 429,
            retry_after: None,
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    OverCapacity,
    OverRate,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::OverCapacity => "over capacity",
            Refused::OverRate => "rate limit exceeded",
        }
    }
}

/// The simulator's capacity and its token bucket.
#[derive(Debug, Default)]
pub struct Gate {
    pub capacity: Capacity,
    bucket: Option<(f64, Instant)>,
}

impl Gate {
    pub fn set(&mut self, capacity: Capacity) {
        self.capacity = capacity;
        self.bucket = None;
    }

    /// Whether a request that finds `open` requests open (itself included)
    /// is taken at `now`; a taken request spends a token.
    pub fn admit(&mut self, open: usize, now: Instant) -> Result<(), Refused> {
        if self.capacity.requests.is_some_and(|c| open > c) {
            return Err(Refused::OverCapacity);
        }
        let Some(rate) = self.capacity.rate.filter(|r| *r > 0.0) else {
            return Ok(());
        };
        let burst = self.capacity.burst.unwrap_or(rate / 10.0).max(1.0);
        let (tokens, at) = self.bucket.unwrap_or((burst, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(burst);
        if tokens < 1.0 {
            self.bucket = Some((tokens, now));
            return Err(Refused::OverRate);
        }
        self.bucket = Some((tokens - 1.0, now));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_jitters_within_its_bounds_and_grows_with_open_requests() {
        let l = Latency::from_millis(150.0, 30.0, 2.0);
        assert_eq!(l.pick(1, 0.0), Duration::from_millis(120));
        assert_eq!(l.pick(1, 0.5), Duration::from_millis(150));
        assert_eq!(l.pick(11, 0.5), Duration::from_millis(170));
        assert!(l.pick(1, 0.999_999) <= Duration::from_millis(180));
        assert_eq!(
            Latency::fixed(Duration::from_micros(5500)).pick(9, 0.7),
            Duration::from_micros(5500)
        );
    }

    #[test]
    fn a_gate_refuses_beyond_its_capacity() {
        let mut g = Gate::default();
        g.set(Capacity {
            requests: Some(2),
            ..Capacity::default()
        });
        let now = Instant::now();
        assert_eq!(g.admit(2, now), Ok(()));
        assert_eq!(g.admit(3, now), Err(Refused::OverCapacity));
    }

    #[test]
    fn a_token_bucket_takes_its_burst_then_its_rate() {
        let mut g = Gate::default();
        g.set(Capacity {
            rate: Some(100.0),
            burst: Some(5.0),
            ..Capacity::default()
        });
        let start = Instant::now();
        let taken = (0..20).filter(|_| g.admit(1, start).is_ok()).count();
        assert_eq!(taken, 5);
        // A second later: 100 more at most, as the bucket holds only 5 at once.
        let mut taken = 0;
        for ms in 0..1000 {
            let now = start + Duration::from_millis(ms + 1);
            taken += (0..3).filter(|_| g.admit(1, now).is_ok()).count();
        }
        assert!((99..=101).contains(&taken), "{taken}");
    }
}
