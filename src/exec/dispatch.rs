//! Dispatch: one task per queued row, at most `concurrency` at once. A row
//! task keeps its permit until its outcome is queued for the recorder.
//!
//! Sized automatically (no `--concurrency`), the permits follow the latency
//! both ways ([`Permits`]): every 250 ms [`size_concurrency`] (a background
//! task of the pipeline, beside the dispatcher) sets them to what the rate
//! needs at a robust latency (the median of the last 5 s of 250 ms means, so
//! one slow burst does not size the pool), and never to more than the rate
//! times [`MAX_COVERED_LATENCY`]: a partner that slows down or stops
//! answering gets at most that many requests waiting on it, not thousands.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use crate::exec::feed::{Done, Queued};
use crate::exec::stop::{Stop, StopKind};
use crate::exec::worker::{WorkerCtx, provision};
use crate::outcome::{Outcome, Status};
use crate::settings::ExecSettings;

/// Most requests in flight when concurrency is sized automatically.
const MAX_AUTO_CONCURRENCY: u32 = 2048;

/// Concurrency to start with: enough for `rate` at 100 ms, at least 4.
pub(crate) fn initial_concurrency(exec: &ExecSettings) -> u32 {
    exec.concurrency
        .unwrap_or_else(|| (exec.rate.initial().div_ceil(10) + 4).clamp(4, MAX_AUTO_CONCURRENCY))
}

/// The slowest round trip the automatic concurrency keeps the full rate
/// for: permits never exceed the rate times this (plus a few).
pub(crate) const MAX_COVERED_LATENCY: Duration = Duration::from_secs(2);

/// In-flight requests needed to sustain `rate` at `latency`, with headroom
/// (Little's law, ×1.5), within [4, rate × `MAX_COVERED_LATENCY` + 4].
fn needed_concurrency(rate: u32, latency: Duration) -> u32 {
    let cap = (f64::from(rate) * MAX_COVERED_LATENCY.as_secs_f64()).ceil() as u32 + 4;
    let n = (f64::from(rate) * latency.as_secs_f64() * 1.5).ceil() as u32 + 2;
    n.min(cap).clamp(4, MAX_AUTO_CONCURRENCY)
}

/// The dispatcher's semaphore, resizable both ways. Growing adds permits;
/// shrinking forgets the idle ones at once and the busy ones as their row
/// tasks release them (`debt`).
pub(crate) struct Permits {
    sem: Arc<Semaphore>,
    /// Permits the pool is meant to have.
    target: AtomicU64,
    /// Busy permits to forget when released.
    debt: AtomicU64,
}

impl Permits {
    /// A pool of `n` permits.
    pub(crate) fn new(n: u32) -> Permits {
        Permits {
            sem: Arc::new(Semaphore::new(n as usize)),
            target: AtomicU64::new(u64::from(n)),
            debt: AtomicU64::new(0),
        }
    }

    /// Permits the pool is meant to have.
    pub(crate) fn target(&self) -> u64 {
        self.target.load(Ordering::Relaxed)
    }

    /// Make the pool `want` permits (one caller at a time: the sizer).
    fn resize(&self, want: u64) {
        let have = self.target.swap(want, Ordering::Relaxed);
        if want > have {
            let mut grow = want - have;
            // Busy permits still owed are simply kept.
            let kept = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d.saturating_sub(grow))
                })
                .unwrap_or(0)
                .min(grow);
            grow -= kept;
            self.sem.add_permits(grow as usize);
        } else if want < have {
            let shrink = have - want;
            let idle = self.sem.forget_permits(shrink as usize) as u64;
            self.debt.fetch_add(shrink - idle, Ordering::AcqRel);
        }
    }

    /// A row task is done with `permit`: back to the pool, or forgotten
    /// while the pool is above its target.
    fn release(&self, permit: OwnedSemaphorePermit) {
        let owed = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if owed {
            permit.forget();
        }
    }
}

/// Start one task per job, at most as many at once as `permits` allows
/// (resized by [`size_concurrency`], which the pipeline runs beside it
/// without `--concurrency`); returns once the last row task is done.
pub(crate) async fn dispatch(
    cx: Arc<WorkerCtx>,
    permits: Arc<Permits>,
    mut job_rx: mpsc::Receiver<Vec<Queued>>,
    outcome_tx: mpsc::Sender<Vec<Done>>,
    stop: Stop,
) {
    let tracker = TaskTracker::new();
    'batches: while let Some(batch) = job_rx.recv().await {
        for queued in batch {
            let Ok(permit) = permits.sem.clone().acquire_owned().await else {
                break 'batches;
            };
            tracker.spawn(run_row(
                cx.clone(),
                queued,
                (permit, permits.clone()),
                outcome_tx.clone(),
                stop.clone(),
            ));
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// One row's task: provision it, turn a fatal error or a panic into its one
/// outcome, and queue that for the recorder.
async fn run_row(
    cx: Arc<WorkerCtx>,
    Queued { job, raw, tag }: Queued,
    (permit, permits): (OwnedSemaphorePermit, Arc<Permits>),
    tx: mpsc::Sender<Vec<Done>>,
    stop: Stop,
) {
    let (row, user_id) = (job.row, job.user_id.clone());
    // A panicking row must still produce its one outcome.
    let joined = CatchUnwind(Box::pin(provision(job, &cx))).await;
    let outcome = match joined {
        Ok(Ok(o)) => o,
        Ok(Err(fatal)) => {
            let msg = crate::error::chain(&fatal);
            tracing::error!(error = %msg, "stopping the run");
            stop.trip(StopKind::Fatal, msg.clone());
            failed(row, user_id, msg)
        }
        Err(()) => {
            let msg = "internal error while sending (a bug: please report it)".to_string();
            tracing::error!(row, error = %msg);
            failed(row, user_id, msg)
        }
    };
    let raw = outcome.status.is_failure().then_some(raw);
    if tx
        .send(vec![Done {
            outcome,
            raw,
            extra: tag,
        }])
        .await
        .is_err()
    {
        tracing::debug!(row, "recorder gone");
    }
    // Held until the outcome is queued: a stalled recorder stops new
    // requests instead of piling up finished rows in memory.
    permits.release(permit);
}

/// Turns a panic inside the wrapped future into `Err(())`, so the row still
/// gets its outcome (one task per row instead of a task plus a join).
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

fn failed(row: u64, user_id: String, msg: String) -> Outcome {
    Outcome::local(row, user_id, Status::Failed, Some(msg))
}

/// How often the automatic concurrency is resized.
const SIZE_EVERY: Duration = Duration::from_millis(250);

/// How many `SIZE_EVERY` means the latency estimate looks back over (5 s).
const LATENCY_BUCKETS: usize = 20;

/// Every [`SIZE_EVERY`], set the permits to what the current rate needs at
/// the median of the last 5 s of mean round trips: it grows when the
/// latency rises for good and shrinks when it falls back, while a single
/// slow burst (one bucket) moves it little. Runs until aborted.
pub(crate) async fn size_concurrency(cx: Arc<WorkerCtx>, permits: Arc<Permits>) {
    let mut latency = LatencyWindow::default();
    let mut last = (0u64, 0u64);
    loop {
        tokio::time::sleep(SIZE_EVERY).await;
        let finished = cx.counters.finished();
        let micros = cx.counters.request_micros.load(Ordering::Relaxed);
        let (d_done, d_micros) = (finished - last.0, micros.saturating_sub(last.1));
        last = (finished, micros);
        if d_done == 0 {
            continue;
        }
        let Some(estimate) = latency.push(Duration::from_micros(d_micros / d_done)) else {
            continue;
        };
        let rate = cx.pace.rate().ceil() as u32;
        let want = u64::from(needed_concurrency(rate, estimate));
        if want != permits.target() {
            permits.resize(want);
            tracing::debug!(
                concurrency = want,
                latency_ms = estimate.as_millis() as u64,
                "resized concurrency"
            );
        }
    }
}

/// The mean round trips of the last [`LATENCY_BUCKETS`] intervals that saw
/// requests finish.
#[derive(Debug, Default)]
struct LatencyWindow(VecDeque<Duration>);

impl LatencyWindow {
    /// Add one interval's mean; returns the median of the window.
    fn push(&mut self, mean: Duration) -> Option<Duration> {
        if self.0.len() == LATENCY_BUCKETS {
            self.0.pop_front();
        }
        self.0.push_back(mean);
        let mut sorted: Vec<Duration> = self.0.iter().copied().collect();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_covers_rate_times_latency() {
        assert_eq!(needed_concurrency(200, Duration::from_millis(100)), 32);
        assert_eq!(needed_concurrency(10, Duration::from_millis(5)), 4);
        assert_eq!(
            needed_concurrency(100_000, Duration::from_secs(1)),
            MAX_AUTO_CONCURRENCY
        );
        // A partner that takes 8 s, or stops answering: two seconds' worth.
        assert_eq!(needed_concurrency(200, Duration::from_secs(8)), 404);
        assert_eq!(needed_concurrency(200, Duration::from_secs(30)), 404);
        let exec = ExecSettings::default();
        assert_eq!(initial_concurrency(&exec), 5);
        let fixed = ExecSettings {
            concurrency: Some(7),
            ..ExecSettings::default()
        };
        assert_eq!(initial_concurrency(&fixed), 7);
    }

    #[test]
    fn one_slow_burst_does_not_size_the_pool() {
        let mut w = LatencyWindow::default();
        let ms = Duration::from_millis;
        for _ in 0..10 {
            w.push(ms(50));
        }
        assert_eq!(w.push(ms(8000)), Some(ms(50)));
        // A latency that rose for good takes over within the window…
        let mut last = None;
        for _ in 0..LATENCY_BUCKETS {
            last = w.push(ms(300));
        }
        assert_eq!(last, Some(ms(300)));
        // …and one that fell back is followed down.
        for _ in 0..LATENCY_BUCKETS / 2 + 1 {
            last = w.push(ms(20));
        }
        assert_eq!(last, Some(ms(20)));
    }

    #[tokio::test]
    async fn permits_shrink_idle_at_once_and_busy_ones_as_they_come_back() {
        let p = Permits::new(10);
        let busy: Vec<_> = (0..6)
            .map(|_| p.sem.clone().try_acquire_owned().expect("a permit"))
            .collect();
        p.resize(3);
        // The 4 idle permits are gone; 3 of the 6 busy ones are owed.
        assert_eq!(p.sem.available_permits(), 0);
        assert_eq!(p.target(), 3);
        for permit in busy {
            p.release(permit);
        }
        assert_eq!(p.sem.available_permits(), 3);
        // Growing back while permits are owed keeps them instead of adding.
        let busy: Vec<_> = (0..3)
            .map(|_| p.sem.clone().try_acquire_owned().expect("a permit"))
            .collect();
        p.resize(1);
        p.resize(5);
        for permit in busy {
            p.release(permit);
        }
        assert_eq!(p.sem.available_permits(), 5);
    }
}
