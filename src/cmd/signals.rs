//! SIGINT/SIGTERM: the first stops intake and lets requests in flight finish
//! (the run then exits 130); a second aborts at once.

use tokio::task::JoinHandle;

use crate::exec::pipeline::{Stop, StopKind};

/// Watch for signals until the returned task is aborted.
pub fn watch(stop: Stop) -> JoinHandle<()> {
    tokio::spawn(async move {
        let first = next_signal().await;
        tracing::warn!(
            signal = first,
            "stopping: no new rows are sent, requests in flight finish; signal again to abort at once"
        );
        stop.trip(StopKind::Interrupted, format!("interrupted by {first}"));
        let second = next_signal().await;
        eprintln!("error: aborted by a second {second}; run again with --resume to continue");
        std::process::exit(130);
    })
}

#[cfg(unix)]
async fn next_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn next_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}
