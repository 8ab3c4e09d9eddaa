//! The run's background tasks, owned in one place: the rate adapter
//! (`exec::adapt`), the concurrency sizer (`exec::dispatch`) and the time
//! budget's timer. None is detached: [`Background`] holds them all, and the
//! pipeline stops them at two moments only, each in one call.
//!
//! * [`Until::RowsDone`] — tasks that serve the row tasks (the adapter and
//!   the sizer): stopped by [`Background::rows_done`] once the dispatcher
//!   has drained, so nothing changes the rate or the permits while the
//!   recorder finishes and the summary reads them.
//! * [`Until::RunEnds`] — tasks that may still act on the run until its end
//!   (the time budget may stop it while the last rows are recorded): stopped
//!   by [`Background::shutdown`] when the run returns, with anything left.
//!
//! Dropping a `Background` (an early error return) aborts what it holds.

use std::future::Future;

use tokio::task::JoinSet;

/// How long a background task lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Until {
    /// Until the last row task is done.
    RowsDone,
    /// Until the run ends.
    RunEnds,
}

/// Every background task of a run.
#[derive(Default)]
pub(crate) struct Background {
    /// [`Until::RowsDone`]'s tasks.
    rows: JoinSet<()>,
    /// [`Until::RunEnds`]'s tasks.
    run: JoinSet<()>,
}

impl Background {
    /// No task yet.
    pub(crate) fn new() -> Background {
        Background::default()
    }

    /// Spawn `task`, to be stopped as `until` says (if it has not ended).
    pub(crate) fn spawn<F>(&mut self, until: Until, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let set = match until {
            Until::RowsDone => &mut self.rows,
            Until::RunEnds => &mut self.run,
        };
        set.spawn(task);
    }

    /// The last row task is done: stop the tasks that served the rows, and
    /// wait until they are gone.
    pub(crate) async fn rows_done(&mut self) {
        stop(&mut self.rows).await;
    }

    /// The run ends: stop every task still running, and wait until they are
    /// gone.
    pub(crate) async fn shutdown(mut self) {
        stop(&mut self.rows).await;
        stop(&mut self.run).await;
    }
}

/// Abort every task of `set` and reap them.
async fn stop(set: &mut JoinSet<()>) {
    set.abort_all();
    while let Some(joined) = set.join_next().await {
        if let Err(e) = joined
            && e.is_panic()
        {
            tracing::debug!(error = %e, "a background task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// A task that runs until stopped, and says whether it was dropped.
    fn forever(dropped: &Arc<AtomicBool>) -> impl Future<Output = ()> + Send + 'static {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped.clone());
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        }
    }

    #[tokio::test]
    async fn rows_done_stops_the_rows_tasks_and_shutdown_the_rest() {
        let mut bg = Background::new();
        let (adapter, budget) = (Arc::default(), Arc::default());
        bg.spawn(Until::RowsDone, forever(&adapter));
        bg.spawn(Until::RunEnds, forever(&budget));
        tokio::time::sleep(Duration::from_millis(10)).await;
        bg.rows_done().await;
        assert!(adapter.load(Ordering::SeqCst));
        assert!(!budget.load(Ordering::SeqCst), "the budget runs to the end");
        bg.shutdown().await;
        assert!(budget.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn shutdown_alone_stops_everything_and_a_finished_task_is_fine() {
        let mut bg = Background::new();
        let adapter = Arc::default();
        bg.spawn(Until::RowsDone, forever(&adapter));
        bg.spawn(Until::RunEnds, async {});
        bg.spawn(Until::RunEnds, async { panic!("a bug") });
        bg.shutdown().await;
        assert!(adapter.load(Ordering::SeqCst));
    }
}
