//! Run-wide request counters: every worker adds to them, the auto rate
//! controller and the recorder read them. Their own module so that the
//! worker and the pace both depend on it rather than on each other.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::api::classify::Verdict;
use crate::api::client::{Attempt, TransportKind};
use crate::api::token::TokenManager;
use crate::report::EngineFigures;

/// Run-wide request counters, updated by every worker (relaxed atomics).
#[derive(Debug, Default)]
pub(crate) struct EngineCounters {
    /// Requests answered or failed on the wire: with `requests_sent`, the
    /// requests in flight.
    finished: AtomicU64,
    /// Request latencies since the timeline's last second.
    latency: Latency,
    /// `create_user` requests sent, retries included.
    pub(crate) requests_sent: AtomicU64,
    /// Backoff delays taken (retries after a transient failure).
    pub(crate) retries: AtomicU64,
    /// 429 answers.
    pub(crate) throttled_429: AtomicU64,
    /// 401 answers.
    pub unauthorized: AtomicU64,
    /// Attempts that got no HTTP answer (timeouts, connect errors, resets).
    pub transport_errors: AtomicU64,
    /// 503 answers and timeouts: the partner straining (the auto rate backs off).
    pub(crate) overloaded: AtomicU64,
    /// Sum of the time each request took on the wire (µs), limiter waits
    /// excluded: the pipeline sizes its concurrency from the mean.
    pub(crate) request_micros: AtomicU64,
    /// Time the whole pool was held by clustered 429s that carried a
    /// `Retry-After` (µs): the auto rate does not count it as a pool left
    /// idle.
    pub(crate) pool_held_micros: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl EngineCounters {
    /// A request is on its way (counted when sent, so the auto rate sees it
    /// in the tick it went out).
    pub(crate) fn sending(&self) {
        bump(&self.requests_sent);
    }

    /// What one attempt adds once it is over: its time on the wire, and a
    /// 429, a 401, a transport error or the partner straining (503, timeout).
    pub(crate) fn observe(&self, attempt: &Attempt, verdict: &Verdict, rtt: Duration) {
        self.request_micros
            .fetch_add(rtt.as_micros() as u64, Ordering::Relaxed);
        bump(&self.finished);
        self.latency.record(rtt);
        if matches!(
            attempt,
            Attempt::Answered { status: 503, .. }
                | Attempt::Transport {
                    kind: TransportKind::Timeout,
                    ..
                }
        ) {
            bump(&self.overloaded);
        }
        match (attempt, verdict) {
            (Attempt::Transport { .. }, _) => bump(&self.transport_errors),
            (_, Verdict::Unauthorized) => bump(&self.unauthorized),
            (
                _,
                Verdict::Retry {
                    throttled: true, ..
                },
            ) => bump(&self.throttled_429),
            _ => {}
        }
    }

    /// A cluster of 429s with a `Retry-After` held the whole pool `d`
    /// longer than it already was.
    pub(crate) fn pool_held(&self, d: Duration) {
        self.pool_held_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// A retry's backoff delay was taken.
    pub(crate) fn retried(&self) {
        bump(&self.retries);
    }

    /// Requests over (answered or failed on the wire).
    pub(crate) fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Requests sent and not yet over.
    pub(crate) fn in_flight(&self) -> u64 {
        let sent = self.requests_sent.load(Ordering::Relaxed);
        sent.saturating_sub(self.finished.load(Ordering::Relaxed))
    }

    /// p50, p95 and p99 of the latencies since the last call (ms); `None`
    /// when no request was over since.
    pub(crate) fn take_latency(&self) -> Option<[f64; 3]> {
        self.latency.take()
    }

    /// The figures the reports and the bar show; `token_refreshes` comes
    /// from the token manager (none before the first token).
    pub(crate) fn snapshot(&self, tokens: Option<&TokenManager>) -> EngineFigures {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EngineFigures {
            requests_sent: get(&self.requests_sent),
            retries: get(&self.retries),
            throttled_429: get(&self.throttled_429),
            token_refreshes: tokens.map_or(0, TokenManager::refreshes),
        }
    }
}

/// Largest latency the histogram tells apart: 10 minutes, in µs.
const LATENCY_MAX_MICROS: u64 = 600_000_000;

/// Request latencies (µs, two significant digits: a few KiB), taken and
/// reset once a second by the timeline.
#[derive(Debug)]
struct Latency(Mutex<Option<Histogram<u64>>>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Mutex::new(
            Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 2).ok(),
        ))
    }
}

impl Latency {
    fn record(&self, rtt: Duration) {
        if let Ok(mut h) = self.0.lock()
            && let Some(h) = h.as_mut()
        {
            let micros = rtt.as_micros().clamp(1, u128::from(LATENCY_MAX_MICROS));
            h.saturating_record(micros as u64);
        }
    }

    fn take(&self) -> Option<[f64; 3]> {
        let mut guard = self.0.lock().ok()?;
        let h = guard.as_mut()?;
        if h.is_empty() {
            return None;
        }
        let ms = |q| h.value_at_quantile(q) as f64 / 1000.0;
        let p = [ms(0.5), ms(0.95), ms(0.99)];
        h.reset();
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_are_taken_and_reset() {
        let l = Latency::default();
        assert_eq!(l.take(), None);
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let [p50, p95, p99] = l.take().unwrap();
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert!((94.0..=96.0).contains(&p95), "{p95}");
        assert!((98.0..=100.0).contains(&p99), "{p99}");
        assert_eq!(l.take(), None);
        l.record(Duration::from_secs(3600));
        assert!(l.take().unwrap()[2] >= 599_000.0);
    }
}
