//! Run-wide request counters: every worker adds to them, the auto rate
//! controller and the recorder read them. Their own module so that the
//! worker and the pace both depend on it rather than on each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::api::classify::Verdict;
use crate::api::client::{Attempt, TransportKind};
use crate::api::token::TokenManager;
use crate::report::EngineFigures;

/// Run-wide request counters, updated by every worker (relaxed atomics).
#[derive(Debug, Default)]
pub struct EngineCounters {
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

    /// A retry's backoff delay was taken.
    pub(crate) fn retried(&self) {
        bump(&self.retries);
    }

    /// The figures the reports and the bar show; `token_refreshes` comes
    /// from the token manager (none before the first token).
    pub fn snapshot(&self, tokens: Option<&TokenManager>) -> EngineFigures {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EngineFigures {
            requests_sent: get(&self.requests_sent),
            retries: get(&self.retries),
            throttled_429: get(&self.throttled_429),
            token_refreshes: tokens.map_or(0, TokenManager::refreshes),
        }
    }
}
