//! SIGINT/SIGTERM: the first stops intake and lets requests in flight finish
//! (the run then exits 130); a second aborts at once. The listeners are
//! installed once, before the run starts, so no signal falls between two
//! waits. [`Signals`] is the one listener, for `run` and `sandbox` alike.

use tokio::task::JoinHandle;

use crate::exec::stop::{Stop, StopKind};

/// Watch for signals until the returned task is aborted.
pub fn watch(stop: Stop) -> JoinHandle<()> {
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
        std::process::exit(130);
    })
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
pub(crate) struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub(crate) fn install() -> Signals {
        Signals
    }

    pub(crate) async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
