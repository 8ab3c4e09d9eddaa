//! SIGINT/SIGTERM: the first stops intake and lets requests in flight finish
//! (the run then exits 130); a second aborts at once. The listeners are
//! installed once, before the run starts, so no signal falls between two
//! waits. [`Signals`] is the one listener, for `run` and `sandbox` alike.
//!
//! The abort has no exit of its own: the listener rings [`ABORT`], and
//! [`unless_aborted`], wrapped around the command by `crate::run`, gives up
//! on the run there, which then ends as [`Exit::Interrupted`] through `main`
//! like any other.
//!
//! [`Exit::Interrupted`]: crate::exit::Exit::Interrupted

use std::future::Future;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::exec::stop::{Stop, StopKind};

/// Rung by a second signal. Process-wide, as signals are; [`watch`] is
/// started inside the command, and [`unless_aborted`] waits outside it.
static ABORT: Notify = Notify::const_new();

/// Watch for signals until the returned task is aborted.
pub(crate) fn watch(stop: Stop) -> JoinHandle<()> {
    let mut signals = Signals::install();
    tokio::spawn(async move {
        let first = signals.next().await;
        tracing::warn!(
            signal = first,
            "stopping: no new rows are sent, requests in flight finish; signal again to abort at once"
        );
        stop.trip(StopKind::Interrupted, format!("interrupted by {first}"));
        let second = signals.next().await;
        eprintln!("error: aborted by a second {second}; run again with --resume to continue");
        // A permit: kept if the waiter is not polled yet.
        ABORT.notify_one();
    })
}

/// `command`'s output, or `None` as soon as a second signal aborts it.
///
/// An aborted command is abandoned as it stands, as if the process ended
/// there: the future is forgotten, not dropped, so the abort sets nothing
/// winding down (no requests awaited, no last checkpoint; the journal stays
/// as the abort found it, resumable). The caller must leave the runtime as
/// it is too, since dropping it would wait for the recorder thread to finish,
/// and exit.
pub(crate) async fn unless_aborted<T>(command: impl Future<Output = T>) -> Option<T> {
    unless(&ABORT, command).await
}

async fn unless<T>(abort: &Notify, command: impl Future<Output = T>) -> Option<T> {
    let mut command = Box::pin(command);
    tokio::select! {
        out = &mut command => Some(out),
        () = abort.notified() => {
            std::mem::forget(command);
            None
        }
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), listened to from `install` on.
#[cfg(unix)]
pub(crate) struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    pub(crate) fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next signal's name.
    pub(crate) async fn next(&mut self) -> &'static str {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.int) => "SIGINT",
            () = recv(&mut self.term) => "SIGTERM",
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Signals {
        Signals
    }

    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn without_an_abort_the_command_ends_as_it_would() {
        let abort = Notify::new();
        assert_eq!(unless(&abort, async { 7 }).await, Some(7));
    }

    // A second signal that came before anyone waited still aborts.
    #[tokio::test]
    async fn an_abort_gives_up_a_command_that_would_never_end() {
        let abort = Notify::new();
        abort.notify_one();
        let out = tokio::time::timeout(
            Duration::from_secs(5),
            unless(&abort, std::future::pending::<()>()),
        )
        .await;
        assert_eq!(out, Ok(None));
    }

    // Abandoned, not dropped: nothing of the command winds down.
    #[tokio::test]
    async fn an_aborted_command_is_not_dropped() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let abort = Notify::new();
        abort.notify_one();
        let command = async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        };
        assert_eq!(unless(&abort, command).await, None);
        assert!(!dropped.load(Ordering::SeqCst));
    }
}
