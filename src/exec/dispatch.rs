//! Dispatch: one task per queued row, at most `concurrency` at once (a
//! semaphore that grows with the observed latency when concurrency is
//! sized automatically). A row task keeps its permit until its outcome is
//! queued for the recorder.

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

/// In-flight requests needed to sustain `rate` at `latency`, with headroom.
fn needed_concurrency(rate: u32, latency: Duration) -> u32 {
    let n = (f64::from(rate) * latency.as_secs_f64() * 1.5).ceil() as u32 + 2;
    n.clamp(4, MAX_AUTO_CONCURRENCY)
}

/// Start one task per job, at most `concurrency` at once; grow the limit when
/// the observed latency says `--rate` is out of reach.
pub(crate) async fn dispatch(
    cx: Arc<WorkerCtx>,
    exec: ExecSettings,
    mut job_rx: mpsc::Receiver<Vec<Queued>>,
    outcome_tx: mpsc::Sender<Vec<Done>>,
    stop: Stop,
) {
    let initial = initial_concurrency(&exec);
    let sem = Arc::new(Semaphore::new(initial as usize));
    let current = Arc::new(AtomicU64::new(u64::from(initial)));
    let tracker = TaskTracker::new();
    let grower = exec
        .concurrency
        .is_none()
        .then(|| tokio::spawn(grow_concurrency(cx.clone(), sem.clone(), current.clone())));
    'batches: while let Some(batch) = job_rx.recv().await {
        for queued in batch {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break 'batches;
            };
            tracker.spawn(run_row(
                cx.clone(),
                queued,
                permit,
                outcome_tx.clone(),
                stop.clone(),
            ));
        }
    }
    tracker.close();
    tracker.wait().await;
    if let Some(g) = grower {
        g.abort();
    }
}

/// One row's task: provision it, turn a fatal error or a panic into its one
/// outcome, and queue that for the recorder.
async fn run_row(
    cx: Arc<WorkerCtx>,
    Queued { job, raw, hash }: Queued,
    permit: OwnedSemaphorePermit,
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
            extra: hash,
        }])
        .await
        .is_err()
    {
        tracing::debug!(row, "recorder gone");
    }
    // Held until the outcome is queued: a stalled recorder stops new
    // requests instead of piling up finished rows in memory.
    drop(permit);
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

/// Every 250 ms, compare the permits with what the mean request latency needs
/// to keep the current rate busy, and add the difference. Never shrinks: idle
/// permits cost nothing.
async fn grow_concurrency(cx: Arc<WorkerCtx>, sem: Arc<Semaphore>, current: Arc<AtomicU64>) {
    let mut last = (0u64, 0u64);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sent = cx.counters.requests_sent.load(Ordering::Relaxed);
        let micros = cx.counters.request_micros.load(Ordering::Relaxed);
        let (d_sent, d_micros) = (sent - last.0, micros.saturating_sub(last.1));
        last = (sent, micros);
        if d_sent == 0 {
            continue;
        }
        let mean = Duration::from_micros(d_micros / d_sent);
        let rate = cx.pace.rate().ceil() as u32;
        let want = u64::from(needed_concurrency(rate, mean));
        let have = current.load(Ordering::Relaxed);
        if want > have {
            sem.add_permits((want - have) as usize);
            current.store(want, Ordering::Relaxed);
            tracing::debug!(
                concurrency = want,
                latency_ms = mean.as_millis() as u64,
                "raised concurrency"
            );
        }
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
        let exec = ExecSettings::default();
        assert_eq!(initial_concurrency(&exec), 5);
        let fixed = ExecSettings {
            concurrency: Some(7),
            ..ExecSettings::default()
        };
        assert_eq!(initial_concurrency(&fixed), 7);
    }
}
