//! The sliding-window guard behind the limiter ([`super::Pacing::Window`]):
//! at most ⌊R⌋ requests in any [`SPAN`] as the partner's clock may see them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The sliding window the guard keeps at most ⌊R⌋ requests in: the partner's
/// one second, plus 5 ms for the jitter between our clock and its.
pub(super) const SPAN: Duration = Duration::from_millis(1005);

/// The sliding-window guard: at most `cap` = ⌊rate⌋ (at least 1) requests
/// in any [`SPAN`] *as the partner's clock may see them*.
///
/// A request is booked at its send instant. What the partner counts is its
/// arrival, later by the trip and by any stall on the way (a busy core, a
/// slow hop). Once it is answered, [`Window::settle`] moves its instant to
/// the send plus how much longer its round trip took than the usual spread
/// of recent round trips (their 90th percentile, [`RttSpread`]): a request
/// held up on its way out then counts as arriving late, and the next
/// requests keep their distance from that arrival rather than from the
/// send. Ordinary jitter, which is mostly the partner's time to answer after
/// it counted the request, moves nothing: only the slowest tenth of round
/// trips, and only by their excess over the rest.
///
/// A request answered 429 stays in the window: the partner may have
/// counted it (a spurious 429 comes after the limiter admitted the
/// request). Only when `--rate auto` cuts the rate because the partner
/// pushed back ([`super::Pace::cut_rate`]) do the 429s in the window leave it:
/// those were the partner's limiter refusing, which a strict limiter does
/// not count, so the window then holds what the partner admitted, and the
/// pool does not stall after the cut waiting for refused requests to age out.
///
/// Above [`GUARD_MAX`] requests per second the guard stands aside: no partner
/// limit is that high, and a ring that size would cost more than it guards.
pub(super) struct Window {
    inner: Mutex<WindowState>,
    /// The rate is above `GUARD_MAX`: admit without taking the lock.
    open: AtomicBool,
}

/// The guard's place for one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    /// Sequence number of the booking.
    id: u64,
    booked: Instant,
}

/// Rates above which the window guard is not kept.
const GUARD_MAX: f64 = 10_000.0;

struct WindowState {
    cap: usize,
    /// Estimated arrival instants of the requests of the last `SPAN`, in
    /// booking order, each with whether it was answered 429; `None` for a
    /// request that left the window.
    sent: VecDeque<Option<(Instant, bool)>>,
    /// Requests that count: the entries of `sent` that are `Some`, and `late`.
    live: usize,
    /// Sequence number of `sent[0]`.
    front_id: u64,
    /// Requests settled as arriving late, moved out of `sent` (which stays
    /// in booking order, so that one slow request does not hold the younger
    /// ones behind it): their estimated arrivals, each with how many.
    late: BTreeMap<Instant, usize>,
    spread: RttSpread,
}

impl WindowState {
    /// Drop the entries that aged out or left.
    fn age(&mut self, now: Instant) {
        while let Some(front) = self.sent.front() {
            match front {
                Some((t, _)) if now.saturating_duration_since(*t) < SPAN => break,
                Some(_) => self.live -= 1,
                None => {}
            }
            self.sent.pop_front();
            self.front_id += 1;
        }
        while let Some(entry) = self.late.first_entry() {
            if now.saturating_duration_since(*entry.key()) < SPAN {
                break;
            }
            self.live -= entry.remove();
        }
    }

    /// When the `k`-th oldest request that counts ages out (1-based).
    fn kth_expiry(&self, k: usize) -> Option<Instant> {
        let mut booked = self.sent.iter().flatten().map(|&(t, _)| t).peekable();
        let mut late = self
            .late
            .iter()
            .flat_map(|(&t, &n)| std::iter::repeat_n(t, n))
            .peekable();
        let mut nth = None;
        for _ in 0..k {
            nth = match (booked.peek(), late.peek()) {
                (Some(a), Some(b)) if b < a => late.next(),
                (Some(_), _) => booked.next(),
                (None, _) => late.next(),
            };
        }
        nth.map(|t| t + SPAN)
    }
}

impl Window {
    /// A guard for `rate` requests per second.
    pub(super) fn new(rate: f64) -> Window {
        let cap = window_cap(rate);
        Window {
            inner: Mutex::new(WindowState {
                cap,
                sent: VecDeque::with_capacity(cap.min(4096) + 1),
                live: 0,
                front_id: 0,
                late: BTreeMap::new(),
                spread: RttSpread::default(),
            }),
            open: AtomicBool::new(rate > GUARD_MAX),
        }
    }

    /// A new rate: a lower cap holds from the next send on (the sends
    /// already in the window must age out first).
    pub(super) fn set_rate(&self, rate: f64) {
        self.lock().cap = window_cap(rate);
        self.open.store(rate > GUARD_MAX, Ordering::Relaxed);
    }

    /// Wait until one more request fits in the window, and book it.
    pub(super) async fn admit(&self) -> Option<Slot> {
        if self.open.load(Ordering::Relaxed) {
            return None;
        }
        loop {
            let wake = {
                let mut w = self.lock();
                let now = Instant::now();
                w.age(now);
                if w.live < w.cap {
                    let id = w.front_id + w.sent.len() as u64;
                    w.sent.push_back(Some((now, false)));
                    w.live += 1;
                    return Some(Slot { id, booked: now });
                }
                // The oldest `live - cap + 1` must age out for one more to fit.
                w.kth_expiry(w.live - w.cap + 1).unwrap_or(now + SPAN)
            };
            tokio::time::sleep_until(wake).await;
        }
    }

    /// The request of `slot` was answered after `rtt`, `refused` (429) or
    /// not: a refused one is marked (see [`Window::forget_refused`]); an
    /// accepted one's arrival is estimated as its send plus how much its
    /// round trip exceeded the usual spread.
    pub(super) fn settle(&self, slot: Slot, rtt: Duration, refused: bool) {
        let mut w = self.lock();
        let late = w.spread.observe(rtt);
        let Some(i) = slot.id.checked_sub(w.front_id) else {
            return; // aged out already
        };
        let Some(at) = usize::try_from(i).ok().and_then(|i| w.sent.get_mut(i)) else {
            return;
        };
        match (at.as_mut(), refused) {
            (Some((_, r)), true) => *r = true,
            (Some(_), false) if !late.is_zero() => {
                // It counts from its estimated arrival, out of booking order.
                *at = None;
                *w.late.entry(slot.booked + late).or_default() += 1;
            }
            _ => {}
        }
    }

    /// The partner's limiter refused the requests answered 429: they leave
    /// the window.
    pub(super) fn forget_refused(&self) {
        let mut w = self.lock();
        let mut gone = 0;
        for entry in w.sent.iter_mut() {
            if entry.is_some_and(|(_, refused)| refused) {
                *entry = None;
                gone += 1;
            }
        }
        w.live -= gone;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The spread of recent round trips: their 90th percentile over the last
/// [`RttSpread::SAMPLES`], recomputed every [`RttSpread::EVERY`] answers.
/// A round trip above it is late by the difference.
#[derive(Debug)]
struct RttSpread {
    /// The last round trips, in µs (a ring).
    samples: Vec<u32>,
    next: usize,
    /// Answers since the percentile was last computed.
    since: usize,
    p90: Duration,
}

impl Default for RttSpread {
    fn default() -> Self {
        RttSpread {
            samples: Vec::with_capacity(Self::SAMPLES),
            next: 0,
            since: 0,
            p90: Duration::ZERO,
        }
    }
}

impl RttSpread {
    const SAMPLES: usize = 256;
    const EVERY: usize = 16;

    /// Take one round trip; returns how late it was against the spread so far.
    fn observe(&mut self, rtt: Duration) -> Duration {
        let micros = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        if self.samples.len() < Self::SAMPLES {
            self.samples.push(micros);
        } else {
            self.samples[self.next] = micros;
        }
        self.next = (self.next + 1) % Self::SAMPLES;
        self.since += 1;
        // Early on, every answer updates it: the first ones set the scale.
        if self.since >= Self::EVERY || self.samples.len() <= Self::EVERY {
            self.since = 0;
            let mut sorted = self.samples.clone();
            let k = (sorted.len() * 9 / 10).min(sorted.len() - 1);
            let (_, p90, _) = sorted.select_nth_unstable(k);
            self.p90 = Duration::from_micros(u64::from(*p90));
        }
        rtt.saturating_sub(self.p90)
    }
}

fn window_cap(rate: f64) -> usize {
    (rate.floor() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::super::{Guard, Pace, Pacing};
    use super::*;

    #[tokio::test]
    async fn a_request_held_up_on_its_way_counts_from_its_estimated_arrival() {
        // Cap 1: the next request waits for the first to age out. Settled
        // with a round trip 300 ms slower than the usual ones, the first
        // counts as arriving 300 ms later, and so does the wait.
        let w = Window::new(1.0);
        for _ in 0..100 {
            w.lock().spread.observe(Duration::from_millis(10));
        }
        let start = Instant::now();
        let a = w.admit().await.expect("a slot");
        w.settle(a, Duration::from_millis(310), false);
        w.admit().await;
        assert!(
            start.elapsed() >= SPAN + Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn one_late_request_does_not_hold_the_younger_ones() {
        // Cap 2: a settled 600 ms late, b on time. At the partner a arrives
        // 600 ms after b, so a third request fits once b is a SPAN old: the
        // late one counts from its own arrival, not ahead of b's.
        let w = Window::new(2.0);
        for _ in 0..100 {
            w.lock().spread.observe(Duration::from_millis(10));
        }
        let start = Instant::now();
        let a = w.admit().await.expect("a slot");
        let b = w.admit().await.expect("a slot");
        w.settle(a, Duration::from_millis(610), false);
        w.settle(b, Duration::from_millis(10), false);
        w.admit().await;
        let waited = start.elapsed();
        assert!(
            waited >= SPAN && waited < SPAN + Duration::from_millis(400),
            "{waited:?}"
        );
        // The fourth waits for the late one's arrival to age out.
        w.admit().await;
        assert!(start.elapsed() >= SPAN + Duration::from_millis(600));
    }

    #[tokio::test]
    async fn ordinary_jitter_moves_no_booking() {
        // Round trips of 240 to 360 ms, evenly spread: the slowest is only
        // a few ms above the 90th percentile, so a window of cap 2 frees its
        // first slot a SPAN after the send, not 120 ms later.
        let w = Window::new(2.0);
        for i in 0..256u64 {
            w.lock()
                .spread
                .observe(Duration::from_millis(240 + (i * 37) % 121));
        }
        let start = Instant::now();
        let a = w.admit().await.expect("a slot");
        let b = w.admit().await.expect("a slot");
        w.settle(a, Duration::from_millis(360), false);
        w.settle(b, Duration::from_millis(240), false);
        w.admit().await;
        let waited = start.elapsed();
        assert!(
            waited >= SPAN && waited < SPAN + Duration::from_millis(100),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn refused_requests_leave_the_window_only_on_a_cut() {
        // Cap 2, both slots taken; the partner answered one 429. It may have
        // counted it (a spurious 429): the next request waits for it.
        let pace = Pace::new(2.0, Pacing::Window);
        let Guard::Window(w) = &pace.guard else {
            panic!("the window guard");
        };
        let a = w.admit().await.expect("a slot");
        let _b = w.admit().await.expect("a slot");
        w.settle(a, Duration::from_millis(1), true);
        assert_eq!(w.lock().live, 2);
        // A cut after push-back: its limiter refused it, and the next
        // request goes at once instead of waiting for the refusal to age out.
        pace.cut_rate(2.0);
        assert_eq!(w.lock().live, 1);
        let start = Instant::now();
        w.admit().await;
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        pace.cut_rate(2.0);
        assert_eq!(w.lock().live, 2, "only refused requests leave");
    }

    #[test]
    fn the_spread_follows_a_latency_that_rose() {
        let mut s = RttSpread::default();
        for _ in 0..RttSpread::SAMPLES {
            s.observe(Duration::from_millis(10));
        }
        assert_eq!(
            s.observe(Duration::from_millis(50)),
            Duration::from_millis(40)
        );
        // Once 50 ms is the usual round trip, it is late by nothing.
        for _ in 0..RttSpread::SAMPLES {
            s.observe(Duration::from_millis(50));
        }
        assert_eq!(s.observe(Duration::from_millis(50)), Duration::ZERO);
    }

    #[tokio::test]
    async fn above_guard_max_the_window_stands_aside() {
        let w = Window::new(GUARD_MAX + 1.0);
        assert!(w.admit().await.is_none());
        w.set_rate(100.0);
        assert!(w.admit().await.is_some());
    }

    #[tokio::test]
    async fn the_window_guard_follows_a_lower_rate() {
        let w = Window::new(10.0);
        let start = Instant::now();
        for _ in 0..10 {
            w.admit().await;
        }
        w.set_rate(5.0);
        // The ten must age out down to four before the next fits.
        w.admit().await;
        assert!(start.elapsed() >= SPAN, "{:?}", start.elapsed());
    }
}
