//! `run`: provision the users of a CSV, or validate them with `--dry-run`.

use crate::error::Error;
use crate::exec::pipeline::{self, Sender};
use crate::exec::stop::Stop;
use crate::exit::Exit;
use crate::report::Summary;
use crate::report::run_dir::{FAILURES, PAGE, RESULTS, SUMMARY, TIMELINE};
use crate::settings::{Mode, RunSettings};

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

/// `run`: resolve the target (starting the embedded sandbox if asked), then a
/// dry run or a live run. Returns the exit code.
pub(crate) async fn run(settings: &RunSettings, ui: &crate::progress::Ui) -> Result<Exit, Error> {
    let (target, credentials) = match &settings.mode {
        Mode::DryRun { .. } => {
            let summary = pipeline::run(settings, Sender::DryRun, Stop::new(), ui).await?;
            return Ok(report_end(&summary, settings));
        }
        Mode::Live {
            target,
            credentials,
        } => (target, credentials.as_ref()),
    };
    let stop = Stop::new();
    let signals = crate::cmd::signals::watch(stop.clone());
    let (remote, sandbox) = crate::cmd::target::remote(target, credentials).await?;
    let result = pipeline::run(settings, Sender::Live(remote), stop, ui).await;
    signals.abort();
    if let Some(sb) = sandbox {
        sb.shutdown().await;
    }
    Ok(report_end(&result?, settings))
}

/// Print how the run ended (and the error that ended it); its exit.
fn report_end(summary: &Summary, settings: &RunSettings) -> Exit {
    print!("{}", render_summary(summary, &settings.out));
    if let Some(err) = &summary.fatal_error {
        eprintln!("error: {err}");
    }
    exit_of(summary)
}

/// The exit a summary records (its code is always one of ours).
fn exit_of(summary: &Summary) -> Exit {
    Exit::from_code(summary.exit_code).unwrap_or(Exit::Fatal)
}
