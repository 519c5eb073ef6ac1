//! How fast a run sends, found out as it goes.
//!
//! - [`Meter`]: letters per second over the last second or so, for sizing claims.
//! - [`Pace`]: a per-process limit that follows a throttling relay without `--rate`, as TCP
//!   follows a congested link: no limit until the relay asks to slow down (421, 4.7.x); then a
//!   cut to a fraction of the rate the relay was accepting (multiplicative decrease, at most
//!   once per [`COOLDOWN`]), and from there a slow climb (additive increase) until it asks
//!   again. The pace settles just under the relay's limit and stays there.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The span a [`Meter`] averages over.
const SPAN: Duration = Duration::from_secs(1);
/// After a cut, the fraction of the accepted rate the pace starts again from.
const CUT: f64 = 0.85;
/// The climb per second after a cut, as a fraction of the rate at the cut.
const CLIMB: f64 = 0.03;
/// No second cut sooner than this: the replies to letters sent before the first cut are
/// still coming in, and say nothing about the new pace.
const COOLDOWN: Duration = Duration::from_millis(700);
/// The slowest pace: one letter every two seconds.
const FLOOR: f64 = 0.5;

/// Events per second over the last [`SPAN`] (or since the first event, if sooner).
#[derive(Default)]
pub struct Meter {
    /// (start of a 10 ms slice, how many in it), oldest first: a fast run adds to the last
    /// slice instead of growing the queue.
    samples: VecDeque<(Instant, u64)>,
    total: u64,
    started: Option<Instant>,
}

const SLICE: Duration = Duration::from_millis(10);

impl Meter {
    pub fn add(&mut self, now: Instant, n: u64) {
        self.started.get_or_insert(now);
        if n == 0 {
            return;
        }
        match self.samples.back_mut() {
            Some((at, count)) if now.duration_since(*at) < SLICE => *count += n,
            _ => self.samples.push_back((now, n)),
        }
        self.total += n;
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        while let Some(&(at, n)) = self.samples.front() {
            if now.duration_since(at) <= SPAN {
                break;
            }
            self.samples.pop_front();
            self.total -= n;
        }
    }

    /// The rate, or None before anything was counted.
    pub fn rate(&mut self, now: Instant) -> Option<f64> {
        let started = self.started?;
        self.trim(now);
        let span = now.duration_since(started).min(SPAN).as_secs_f64();
        Some(self.total as f64 / span.max(0.05))
    }
}

pub struct Pace {
    state: Mutex<State>,
}

struct State {
    /// Letters per second, or None: as fast as the relay answers.
    limit: Option<f64>,
    /// The next letter's slot under the limit.
    next: Instant,
    /// The additive step, in letters per second per second.
    climb: f64,
    last_cut: Option<Instant>,
    /// Letters the relay accepted.
    accepted: Meter,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            state: Mutex::new(State {
                limit: None,
                next: Instant::now(),
                climb: 0.0,
                last_cut: None,
                accepted: Meter::default(),
            }),
        }
    }
}

impl Pace {
    /// Waits for this letter's slot, if the relay ever asked to slow down; gives up early
    /// (false) once `halted` says the run is ending.
    pub async fn wait(&self, halted: impl Fn() -> bool) -> bool {
        let wait = {
            let mut s = self.state.lock().expect("pace");
            let Some(limit) = s.limit else { return true };
            let now = Instant::now();
            let slot = s.next.max(now);
            s.next = slot + Duration::from_secs_f64(1.0 / limit);
            slot - now
        };
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            if halted() {
                return false;
            }
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// The relay took a letter: climb a little.
    pub fn accepted(&self) {
        let mut s = self.state.lock().expect("pace");
        let now = Instant::now();
        s.accepted.add(now, 1);
        if let Some(limit) = s.limit {
            // `climb / limit` per letter is `climb` per second at this pace.
            s.limit = Some(limit + s.climb / limit);
        }
    }

    /// The relay asked to slow down: cut the pace below what it was accepting.
    pub fn throttled(&self) {
        let mut s = self.state.lock().expect("pace");
        let now = Instant::now();
        if s.last_cut.is_some_and(|t| now.duration_since(t) < COOLDOWN) {
            return;
        }
        let accepted = s.accepted.rate(now).unwrap_or(0.0);
        let base = match s.limit {
            Some(limit) => limit.min(accepted.max(limit * CUT)),
            None => accepted,
        };
        let limit = (base * CUT).max(FLOOR);
        s.limit = Some(limit);
        s.climb = (limit * CLIMB).max(0.5);
        s.last_cut = Some(now);
        s.next = s.next.max(now);
    }

    /// The current limit in letters per second, if any.
    pub fn limit(&self) -> Option<f64> {
        self.state.lock().expect("pace").limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_counts_the_last_second() {
        let mut m = Meter::default();
        let t0 = Instant::now();
        assert_eq!(m.rate(t0), None);
        m.add(t0, 0);
        m.add(t0 + Duration::from_millis(500), 50);
        let r = m.rate(t0 + Duration::from_millis(500)).unwrap();
        assert!((r - 100.0).abs() < 1.0, "{r}");
        m.add(t0 + Duration::from_millis(1400), 10);
        let r = m.rate(t0 + Duration::from_millis(1600)).unwrap();
        assert!((r - 10.0).abs() < 1.0, "{r}");
    }

    #[test]
    fn a_cut_lands_under_the_accepted_rate_and_climbs_back() {
        let pace = Pace::default();
        assert_eq!(pace.limit(), None);
        for _ in 0..200 {
            pace.accepted();
        }
        pace.throttled();
        let cut = pace.limit().unwrap();
        assert!(cut > 0.0 && cut <= 200.0 * CUT / 0.05, "{cut}");
        // A second throttled reply right after is about letters sent before the cut.
        pace.throttled();
        assert_eq!(pace.limit(), Some(cut));
        for _ in 0..100 {
            pace.accepted();
        }
        assert!(pace.limit().unwrap() > cut);
    }
}
