//! `run`: provision the users of a CSV, or validate them with `--dry-run`.

use crate::api::Remote;
use crate::error::Error;
use crate::exec::pipeline::{self, LiveRun};
use crate::exec::stop::Stop;
use crate::exit::Exit;
use crate::report::Summary;
use crate::report::run_dir::{FAILURES, PAGE, RESULTS, SUMMARY, TIMELINE};
use crate::sandbox::Sandbox;
use crate::settings::{LiveSettings, Mode, RunSettings};

/// The lines printed on stdout when a run ends.
fn render_summary(summary: &Summary, out: &std::path::Path) -> String {
    let counts = crate::report::brief(summary.counts.iter().map(|(k, n)| (k.as_str(), *n)));
    let mut what = if summary.dry_run { "dry run" } else { "run" }.to_string();
    if let Some(s) = &summary.shard {
        what.push_str(&format!(" (shard {}/{})", s.index, s.count));
    }
    let mut s = format!(
        "{what}: {} rows in {:.1}s: {}\n",
        summary.rows_read,
        summary.elapsed_seconds,
        if counts.is_empty() {
            "no data rows".to_string()
        } else {
            counts
        }
    );
    if summary.long_distance_delivery > 0 {
        s.push_str(&format!(
            "long-distance addresses: {} (long_distance_delivery=true in {RESULTS})\n",
            summary.long_distance_delivery
        ));
    }
    s.push_str(&format!(
        "reports: {}/ ({PAGE}, {RESULTS}, {FAILURES}, {SUMMARY}, {TIMELINE})\n",
        out.display()
    ));
    if let Some(h) = exit_of(summary).hint() {
        s.push_str(h);
        s.push('\n');
    }
    s
}

/// `run`: a dry run, or a live run against its target (starting the
/// embedded sandbox if asked). Returns the exit code.
pub(crate) async fn run(settings: &RunSettings, ui: &crate::progress::Ui) -> Result<Exit, Error> {
    let stop = Stop::new();
    let connected = match &settings.mode {
        Mode::Dry { .. } => None,
        Mode::Live(live) => Some(Connected::open(live, &stop).await?),
    };
    let live = connected.as_ref().map(Connected::live_run);
    let result = pipeline::run(settings, live, stop, ui).await;
    if let Some(c) = connected {
        c.close().await;
    }
    Ok(report_end(&result?, &settings.out))
}

/// What a live run holds open around the pipeline: the signal listener
/// (a dry run is left to the default handling) and the target.
struct Connected<'a> {
    live: &'a LiveSettings,
    remote: Remote,
    /// `--sandbox`: the embedded sandbox, shut down when the run is over.
    sandbox: Option<Sandbox>,
    signals: tokio::task::JoinHandle<()>,
}

impl<'a> Connected<'a> {
    /// Listen for signals (they trip `stop`), then resolve the target.
    async fn open(live: &'a LiveSettings, stop: &Stop) -> Result<Connected<'a>, Error> {
        let signals = crate::cmd::signals::watch(stop.clone());
        let (remote, sandbox) =
            crate::cmd::target::remote(&live.target, live.credentials.as_ref()).await?;
        Ok(Connected {
            live,
            remote,
            sandbox,
            signals,
        })
    }

    fn live_run(&self) -> LiveRun<'_> {
        LiveRun {
            settings: self.live,
            remote: &self.remote,
        }
    }

    async fn close(self) {
        self.signals.abort();
        if let Some(sb) = self.sandbox {
            sb.shutdown().await;
        }
    }
}

/// Print how the run ended (and the error that ended it); its exit.
fn report_end(summary: &Summary, out: &std::path::Path) -> Exit {
    print!("{}", render_summary(summary, out));
    if let Some(err) = &summary.fatal_error {
        eprintln!("error: {err}");
    }
    exit_of(summary)
}

/// The exit a summary records (its code is always one of ours).
fn exit_of(summary: &Summary) -> Exit {
    Exit::from_code(summary.exit_code).unwrap_or(Exit::Fatal)
}
