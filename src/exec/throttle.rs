//! A pool-wide "not before" gate.
//!
//! A cluster of 429s means the *partner's* per-second threshold was
//! exceeded, not one worker's, so one worker backing off alone would let the
//! others keep hitting the wall. A worker that gets a 429 calls
//! `Throttle::throttled`; when another 429 came less than `CLUSTER`
//! before it, the whole pool is held for the delay. Every worker calls
//! `Throttle::wait` before each attempt and so pauses too. A lone 429 holds
//! only its own row: partners answer 429 for reasons other than this
//! client's rate (a quota shared with other integrations, a lock timeout),
//! and pausing every worker for each of those would cost far more than the
//! row's retry.
//!
//! The deadline is one `AtomicU64` (nanoseconds since a base instant, 0 = no
//! hold): the hot path with no hold active is a single relaxed load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Shared "not before" deadline. Cloning shares the same gate.
#[derive(Clone, Debug)]
pub(crate) struct Throttle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// tokio's clock, so it follows `tokio::time::pause` like the sleeps do.
    base: Instant,
    /// Deadline as nanos since `base`; 0 means "never held".
    until: AtomicU64,
    /// The last 429, as nanos since `base` (0: none yet).
    last_429: AtomicU64,
}

/// Two 429s less than this apart hold the whole pool.
pub(crate) const CLUSTER: Duration = Duration::from_millis(500);

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    /// An open gate.
    pub(crate) fn new() -> Self {
        Throttle {
            inner: Arc::new(Inner {
                base: Instant::now(),
                until: AtomicU64::new(0),
                last_429: AtomicU64::new(0),
            }),
        }
    }

    /// A row got a 429 and waits `d` before its retry: when another 429
    /// came within [`CLUSTER`], everyone waits with it. Returns how much
    /// longer the pool is held than it already was (zero for a lone 429).
    pub(crate) fn throttled(&self, d: Duration) -> Duration {
        let now = self.nanos_since_base(Instant::now()).max(1);
        let previous = self.inner.last_429.swap(now, Ordering::AcqRel);
        let clustered = previous != 0 && now.saturating_sub(previous) < nanos(CLUSTER);
        if clustered {
            self.hold_for(d)
        } else {
            Duration::ZERO
        }
    }

    /// Keep everyone waiting until at least `now + d`. Never pulls the
    /// deadline in. Returns how much later the pool now opens.
    pub(crate) fn hold_for(&self, d: Duration) -> Duration {
        let now = self.nanos_since_base(Instant::now());
        let target = now.saturating_add(nanos(d));
        // `max(1)`: 0 is reserved for "no hold".
        let before = self.inner.until.fetch_max(target.max(1), Ordering::AcqRel);
        Duration::from_nanos(target.saturating_sub(before.max(now)))
    }

    /// Time left until the gate opens (zero when open).
    #[cfg(test)]
    fn remaining(&self) -> Duration {
        let until = self.inner.until.load(Ordering::Acquire);
        if until == 0 {
            return Duration::ZERO;
        }
        let now = self.nanos_since_base(Instant::now());
        Duration::from_nanos(until.saturating_sub(now))
    }

    /// Whether a hold was in force at some moment after `t` (its deadline is
    /// later than `t`): a token issued at `t` then sat through a pause.
    pub(crate) fn held_after(&self, t: Instant) -> bool {
        let until = self.inner.until.load(Ordering::Acquire);
        until != 0 && until > self.nanos_since_base(t)
    }

    /// Sleep until the gate is open. Returns at once when no hold is active.
    pub(crate) async fn wait(&self) {
        loop {
            let until = self.inner.until.load(Ordering::Acquire);
            if until == 0 {
                return;
            }
            let deadline = self.inner.base + Duration::from_nanos(until);
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
            // Loop: another worker may have pushed the deadline while we slept.
        }
    }

    fn nanos_since_base(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.inner.base))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_gate_does_not_wait() {
        let t = Throttle::new();
        let start = Instant::now();
        t.wait().await;
        assert!(start.elapsed() < Duration::from_millis(20));
        assert_eq!(t.remaining(), Duration::ZERO);
    }

    #[tokio::test]
    async fn hold_delays_every_waiter() {
        let t = Throttle::new();
        let start = Instant::now();
        t.hold_for(Duration::from_millis(200));
        let (a, b) = (t.clone(), t.clone());
        tokio::join!(a.wait(), b.wait());
        assert!(start.elapsed() >= Duration::from_millis(200));
        // Open again afterwards.
        let again = Instant::now();
        t.wait().await;
        assert!(again.elapsed() < Duration::from_millis(20));
    }

    #[tokio::test]
    async fn held_after_tells_whether_a_pause_came_after_an_instant() {
        let t = Throttle::new();
        let before = Instant::now();
        assert!(!t.held_after(before), "never held");
        t.hold_for(Duration::from_millis(30));
        assert!(t.held_after(before));
        t.wait().await;
        // Issued after the pause ended: it sat through none.
        assert!(!t.held_after(Instant::now()));
    }

    #[tokio::test]
    async fn a_lone_429_holds_only_its_row_and_a_cluster_the_pool() {
        let t = Throttle::new();
        assert_eq!(t.throttled(Duration::from_millis(200)), Duration::ZERO);
        assert_eq!(t.remaining(), Duration::ZERO, "a lone 429");
        let held = t.throttled(Duration::from_millis(200));
        assert!(held > Duration::from_millis(100), "two in a row: {held:?}");
        assert!(t.remaining() > Duration::from_millis(100), "two in a row");
        // A third at once holds the pool hardly longer than it already is.
        let more = t.throttled(Duration::from_millis(200));
        assert!(more < Duration::from_millis(100), "{more:?}");
        t.wait().await;
        // Long after, a 429 is a lone one again.
        tokio::time::sleep(CLUSTER).await;
        assert_eq!(t.throttled(Duration::from_millis(200)), Duration::ZERO);
    }

    #[tokio::test]
    async fn hold_only_moves_forward() {
        let t = Throttle::new();
        let start = Instant::now();
        t.hold_for(Duration::from_millis(300));
        t.hold_for(Duration::from_millis(50));
        assert!(t.remaining() > Duration::from_millis(200));
        t.wait().await;
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn waiter_follows_a_deadline_pushed_while_sleeping() {
        let t = Throttle::new();
        let start = Instant::now();
        t.hold_for(Duration::from_millis(100));
        let pusher = t.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pusher.hold_for(Duration::from_millis(200));
        });
        t.wait().await;
        assert!(start.elapsed() >= Duration::from_millis(250));
    }
}
