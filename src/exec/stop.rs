//! The run-wide stop switch: SIGINT/SIGTERM, a spent time budget, or a fatal
//! error trip it; the feed stops taking rows, workers stop between attempts,
//! and the first reason decides the exit (130 or 3).

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Why a run stopped early. The first reason recorded wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// SIGINT/SIGTERM or the time budget: exit 130, resumable.
    Interrupted,
    /// Credentials refused, target unreachable, reports unwritable: exit 3.
    Fatal,
}

/// The run-wide stop switch: a cancellation token plus the first reason.
#[derive(Clone, Default)]
pub struct Stop {
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<(StopKind, String)>>>,
}

impl Stop {
    /// A switch that has not been tripped.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Trip the switch (the first caller's reason is kept).
    pub(crate) fn trip(&self, kind: StopKind, reason: impl Into<String>) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some((kind, reason.into()));
        }
        self.cancel.cancel();
    }

    /// Resolves once the switch is tripped.
    pub(crate) async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Whether the switch has been tripped.
    pub(crate) fn is_tripped(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Stop the run as interrupted (a signal, a spent time budget).
    pub(crate) fn interrupt(&self, reason: impl Into<String>) {
        self.trip(StopKind::Interrupted, reason);
    }

    /// The reason it was tripped, if it was.
    pub(crate) fn reason(&self) -> Option<(StopKind, String)> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    fn message(&self) -> String {
        self.reason()
            .map_or_else(|| "run stopped".to_string(), |(_, m)| m)
    }

    /// The error of a row the stop kept from being sent.
    pub(crate) fn not_sent_reason(&self) -> String {
        format!("not sent: {}", self.message())
    }
}
