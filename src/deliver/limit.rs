//! `paystar.concurrency: adaptive`: how many requests may be in flight, learned
//! from Paystar's answers (additive increase, multiplicative decrease), measured
//! per attempt rather than per retried sequence, so that a retried 429 counts
//! as the push-back it is. Pure: the caller passes the clock.
//!
//! - Until Paystar first pushes back (or latency first rises), doubling per
//!   round trip instead (a slow start, as TCP's; its first push-back halves
//!   the limit, back to what Paystar took), unless the limit starts from one
//!   learned before: that one is near the capacity already.
//! - Up by one per interval of one mean round trip in which the limit was
//!   reached and the interval's mean round trip did not rise above the
//!   long-run mean + 2.5 deviations (and at least half the mean): a rise is a
//!   queue building, one slow answer on a busy machine is not.
//! - Down ×0.9 on each 429, 503 or timeout (push-back), and on a rise; a
//!   push-back to a request sent before the last cut does not cut again: it is
//!   the same overload answered late (the doubling's overshoot, which the
//!   halving already undid, or a burst refused together). Requests refused at
//!   once are sent one after another as slots free, so a capacity that drops
//!   is followed within a round trip.
//! - Where Paystar pushed back, that limit is remembered as a ceiling and only
//!   probed above once a minute: each probe that meets a 429 with
//!   `Retry-After` pauses every request, so probing every round trip would
//!   keep the rate far below what Paystar takes. A later push-back below it
//!   lowers it (a token bucket refuses only once its burst is spent, so the
//!   limit where it refused is above the rate it takes); a probe that holds
//!   for [`LIFT_AFTER`] without push-back lifts it: Paystar takes more now.

use std::time::Duration;
use tokio::time::Instant;

/// How often the limit may try to go above a ceiling Paystar set.
const PROBE_EVERY: Duration = Duration::from_secs(60);
/// A probe above the ceiling that holds this long lifts it: longer than a
/// token bucket's burst lasts at a rate one request per round trip above it.
const LIFT_AFTER: Duration = Duration::from_secs(15);
/// The weight of a new round trip in the averages.
const ALPHA: f64 = 0.4;
/// A round trip this many deviations above the mean is a rise…
const RISE: f64 = 2.5;
/// …and at least this share of the mean above it (a steady Paystar has a tiny
/// deviation, and a few milliseconds of jitter are no queue).
const RISE_AT_LEAST: f64 = 0.5;
/// The factor a push-back or a rise applies.
const DECREASE: f64 = 0.9;

#[derive(Debug)]
pub(super) struct Limiter {
    limit: f64,
    max: usize,
    /// Mean and mean deviation of the intervals' mean round trips, in seconds.
    mean: Option<f64>,
    deviation: f64,
    interval_start: Instant,
    reached: bool,
    /// The sum and number of this interval's round trips, in seconds.
    interval_rtt: (f64, u32),
    ceiling: Option<usize>,
    probe_after: Instant,
    /// Since when the limit has been at or above the ceiling without push-back.
    probing_since: Option<Instant>,
    /// Doubling until the first push-back or rise.
    slow_start: bool,
    /// When the limit was last cut: push-backs to requests sent before then
    /// were counted by that cut.
    last_cut: Option<Instant>,
}

/// What an answer changed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Moved {
    Up(usize),
    Down(usize),
}

impl Limiter {
    /// Starts at `start` (the last learned limit, or the configured start),
    /// never above `max`; `learned`: `start` was learned (no slow start).
    pub fn new(start: usize, max: usize, learned: bool, now: Instant) -> Self {
        let max = max.max(1);
        Self {
            limit: start.clamp(1, max) as f64,
            max,
            mean: None,
            deviation: 0.0,
            interval_start: now,
            reached: false,
            interval_rtt: (0.0, 0),
            ceiling: None,
            probe_after: now,
            probing_since: None,
            slow_start: !learned,
            last_cut: None,
        }
    }

    /// Requests that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// `in_flight` requests are running: whether the limit was reached counts.
    pub fn in_flight(&mut self, in_flight: usize) {
        if in_flight >= self.limit() {
            self.reached = true;
        }
    }

    /// One attempt, decided on at `sent`, answered at `now` after a round
    /// trip of `rtt`, and whether Paystar pushed back (429, 503, a timeout).
    /// Returns the new limit when it moved.
    pub fn answered(
        &mut self,
        sent: Instant,
        rtt: Duration,
        pushed_back: bool,
        now: Instant,
    ) -> Option<Moved> {
        if pushed_back {
            if self.last_cut.is_some_and(|cut| sent < cut) {
                return None;
            }
            // The doubling overshot by up to half: back to the last round's
            // limit, which Paystar took.
            let factor = if self.slow_start { 0.5 } else { DECREASE };
            self.slow_start = false;
            let before = self.limit();
            self.ceiling = Some(self.ceiling.map_or(before, |c| c.min(before)));
            self.probing_since = None;
            self.probe_after = now + PROBE_EVERY;
            self.limit = (self.limit * factor).max(1.0);
            self.last_cut = Some(now);
            self.next_interval(now);
            return (self.limit() != before).then(|| Moved::Down(self.limit()));
        }
        let rtt = rtt.as_secs_f64();
        self.interval_rtt.0 += rtt;
        self.interval_rtt.1 += 1;
        let interval = Duration::from_secs_f64(self.mean.unwrap_or(rtt));
        if now.duration_since(self.interval_start) < interval {
            return None;
        }
        // The interval's mean round trip against the long-run mean: one slow
        // answer on a busy machine is no queue at Paystar.
        let observed = self.interval_rtt.0 / f64::from(self.interval_rtt.1);
        let rose = self.mean.is_some_and(|mean| {
            observed > mean + (RISE * self.deviation).max(RISE_AT_LEAST * mean)
        });
        self.mean = Some(match self.mean {
            None => observed,
            Some(mean) => {
                self.deviation = (1.0 - ALPHA) * self.deviation + ALPHA * (observed - mean).abs();
                (1.0 - ALPHA) * mean + ALPHA * observed
            }
        });
        let before = self.limit();
        if rose {
            self.slow_start = false;
            self.limit = (self.limit * DECREASE).max(1.0);
            self.last_cut = Some(now);
        } else if self.reached && self.slow_start {
            self.limit = (self.limit * 2.0).min(self.max as f64);
        } else if self.reached && before < self.max {
            if self
                .probing_since
                .is_some_and(|since| now.duration_since(since) >= LIFT_AFTER)
            {
                // A probe above the ceiling held: Paystar takes more now.
                self.ceiling = None;
                self.probing_since = None;
            }
            let above_ceiling = self.ceiling.is_some_and(|c| before + 1 >= c);
            if !above_ceiling || now >= self.probe_after {
                self.limit += 1.0;
                if above_ceiling {
                    self.probe_after = now + PROBE_EVERY;
                    self.probing_since.get_or_insert(now);
                }
            }
        }
        self.next_interval(now);
        match self.limit().cmp(&before) {
            std::cmp::Ordering::Greater => Some(Moved::Up(self.limit())),
            std::cmp::Ordering::Less => Some(Moved::Down(self.limit())),
            std::cmp::Ordering::Equal => None,
        }
    }

    fn next_interval(&mut self, now: Instant) {
        self.interval_start = now;
        self.reached = false;
        self.interval_rtt = (0.0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer at `now` to a request sent one round trip before.
    fn answer(l: &mut Limiter, rtt: Duration, pushed_back: bool, now: Instant) -> Option<Moved> {
        l.answered(now - rtt, rtt, pushed_back, now)
    }

    const RTT: Duration = Duration::from_millis(100);

    /// Runs `rounds` round trips with every slot busy; `push_back` decides
    /// from the limit whether Paystar answers 429.
    fn run(l: &mut Limiter, t: &mut Instant, rounds: usize, push_back: impl Fn(usize) -> bool) {
        for _ in 0..rounds {
            *t += RTT;
            l.in_flight(l.limit());
            let limit = l.limit();
            answer(l, RTT, push_back(limit), *t);
        }
    }

    #[test]
    fn the_limit_climbs_by_one_per_round_trip_while_every_slot_is_busy_up_to_the_max() {
        let mut t = Instant::now();
        let mut l = Limiter::new(1, 10, true, t);
        run(&mut l, &mut t, 5, |_| false);
        assert_eq!(l.limit(), 6);
        run(&mut l, &mut t, 50, |_| false);
        assert_eq!(l.limit(), 10);
    }

    #[test]
    fn a_fresh_limit_doubles_per_round_trip_until_the_first_push_back_then_climbs_by_one() {
        let mut t = Instant::now();
        let mut l = Limiter::new(8, 256, false, t);
        run(&mut l, &mut t, 2, |_| false);
        assert_eq!(l.limit(), 32);
        // Paystar takes 40: the doubling meets it, halves back, and from there
        // the limit creeps up by one.
        run(&mut l, &mut t, 1, |limit| limit > 40);
        assert_eq!(l.limit(), 64);
        run(&mut l, &mut t, 1, |limit| limit > 40);
        assert_eq!(l.limit(), 32);
        run(&mut l, &mut t, 30, |limit| limit > 40);
        assert!((36..=40).contains(&l.limit()), "{}", l.limit());
    }

    #[test]
    fn the_burst_that_ends_a_slow_start_halves_once_and_a_push_back_cuts_only_if_sent_after_the_last_cut()
     {
        let mut t = Instant::now();
        let mut l = Limiter::new(32, 256, false, t);
        t += RTT;
        answer(&mut l, RTT, false, t);
        for _ in 0..12 {
            answer(&mut l, Duration::from_millis(1), true, t);
        }
        assert_eq!(l.limit(), 16);
        // Two sent together after the cut and refused together: one cut.
        t += RTT;
        answer(&mut l, Duration::from_millis(1), true, t);
        answer(&mut l, Duration::from_millis(1), true, t);
        assert_eq!(l.limit(), 14);
        // Sent after that cut: another.
        t += Duration::from_millis(5);
        answer(&mut l, Duration::from_millis(1), true, t);
        assert_eq!(l.limit(), 12);
    }

    #[test]
    fn an_idle_limit_does_not_climb() {
        let mut t = Instant::now();
        let mut l = Limiter::new(4, 100, true, t);
        for _ in 0..20 {
            t += RTT;
            l.in_flight(1);
            answer(&mut l, RTT, false, t);
        }
        assert_eq!(l.limit(), 4);
    }

    #[test]
    fn push_back_cuts_by_a_tenth_and_the_ceiling_is_probed_once_a_minute() {
        let mut t = Instant::now();
        let mut l = Limiter::new(1, 200, true, t);
        // Paystar takes 20 at a time: above, it answers 429.
        let capacity = |limit: usize| limit > 20;
        run(&mut l, &mut t, 100, capacity);
        let settled = l.limit();
        assert!((17..=20).contains(&settled), "{settled}");
        // A minute of round trips probes above the ceiling about once.
        let mut above = 0;
        for _ in 0..600 {
            t += RTT;
            l.in_flight(l.limit());
            let limit = l.limit();
            above += usize::from(limit > 20);
            answer(&mut l, RTT, capacity(limit), t);
        }
        assert!(
            above <= 3,
            "{above} round trips above the capacity in a minute"
        );
        assert!((17..=20).contains(&l.limit()), "{}", l.limit());
    }

    #[test]
    fn a_round_trip_far_above_the_mean_brings_the_limit_down() {
        let mut t = Instant::now();
        let mut l = Limiter::new(10, 100, true, t);
        for i in 0..10 {
            t += RTT;
            l.in_flight(0);
            // A little spread, so that the deviation is not zero.
            answer(&mut l, RTT + Duration::from_millis(i % 3), false, t);
        }
        t += Duration::from_secs(2);
        assert_eq!(
            answer(&mut l, Duration::from_secs(2), false, t),
            Some(Moved::Down(9))
        );
    }

    #[test]
    fn a_probe_above_the_ceiling_that_holds_lifts_it() {
        let mut t = Instant::now();
        let mut l = Limiter::new(1, 200, true, t);
        // Paystar took 20, then takes 40: the minute's probe finds it and the
        // limit climbs by one per round trip again.
        run(&mut l, &mut t, 60, |limit| limit > 20);
        assert!(l.limit() <= 20, "{}", l.limit());
        run(&mut l, &mut t, 1200, |limit| limit > 40);
        assert!((36..=40).contains(&l.limit()), "{}", l.limit());
    }
}
