//! `run`: provision the users of a CSV, or validate them with `--dry-run`.

use std::time::Instant;

use crate::error::Error;
use crate::input::InputReader;
use crate::intake::{Intake, Step};
use crate::outcome::{Outcome, Status};
use crate::report::{Ending, EngineFigures, InputInfo, Recorder, Summary, SummaryParts};
use crate::settings::RunSettings;
use crate::validate::Validator;

/// Open the input and build the intake stage for it.
pub fn open_intake(settings: &RunSettings) -> Result<Intake, Error> {
    let reader = InputReader::open(settings.input.clone(), &settings.read)?;
    let validator = Validator::new(
        settings.validate.clone(),
        reader.columns().clone(),
        reader.headers().to_vec(),
    );
    Ok(Intake::new(reader, validator))
}

/// `run --dry-run`: validate every row and write the reports; no network.
pub fn dry_run(settings: &RunSettings) -> Result<Summary, Error> {
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let mut intake = open_intake(settings)?;
    crate::report::journal::check_fresh(&settings.out)?;
    let mut recorder = Recorder::create(
        &settings.out,
        intake.reader().header_record(),
        settings.read.delimiter,
    )?;
    while let Some(step) = intake.next_step()? {
        match step {
            Step::Local(outcome, raw) => recorder.record(&outcome, Some(raw))?,
            Step::Send { row, user, .. } => recorder.record(
                &Outcome::local(row, user.user_id, Status::Valid, None),
                None,
            )?,
        }
    }
    let reader = intake.reader();
    let summary = Summary::build(SummaryParts {
        input: InputInfo {
            path: reader.source().display(),
            sha256: reader.digest().sha256_hex(),
        },
        dry_run: true,
        target: settings.target.as_ref().map(|t| t.describe()),
        started,
        finished: jiff::Timestamp::now(),
        elapsed: clock.elapsed(),
        rows_read: reader.rows_read(),
        counts: recorder.counts(),
        engine: EngineFigures::default(),
        ending: Ending::Finished,
        fatal_error: None,
    });
    recorder.finish(&summary)?;
    Ok(summary)
}

/// The lines printed on stdout when a run ends.
pub fn render_summary(summary: &Summary, out: &std::path::Path) -> String {
    let counts: Vec<String> = summary
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    let what = if summary.dry_run { "dry run" } else { "run" };
    let mut s = format!(
        "{what}: {} rows in {:.1}s: {}\n",
        summary.rows_read,
        summary.elapsed_seconds,
        if counts.is_empty() {
            "no data rows".to_string()
        } else {
            counts.join(" ")
        }
    );
    s.push_str(&format!(
        "reports: {}/ (results.csv, failures.csv, summary.json)\n",
        out.display()
    ));
    let hint = match summary.exit_code {
        0 => None,
        1 => Some(
            "some rows need fixing: see failures.csv (error_message), fix them and run it again",
        ),
        75 => Some("some rows failed transiently: run failures.csv again later"),
        130 => Some("interrupted: run again with --resume and the same --out to continue"),
        _ => None,
    };
    if let Some(h) = hint {
        s.push_str(h);
        s.push('\n');
    }
    s
}

/// `run`: resolve the target (starting the embedded sandbox if asked), then a
/// dry run or a live run. Returns the exit code.
pub async fn run(settings: &RunSettings, ui: &crate::progress::Ui) -> Result<u8, Error> {
    if settings.dry_run {
        let summary = dry_run(settings)?;
        print!("{}", render_summary(&summary, &settings.out));
        return Ok(summary.exit_code);
    }
    let stop = crate::exec::pipeline::Stop::new();
    let signals = crate::cmd::signals::watch(stop.clone());
    let (remote, sandbox) =
        crate::cmd::target::remote(settings.target.as_ref(), settings.credentials.as_ref()).await?;
    let result = crate::exec::pipeline::run_live(settings, remote, stop, ui).await;
    signals.abort();
    if let Some(sb) = sandbox {
        sb.shutdown().await;
    }
    let summary = result?;
    print!("{}", render_summary(&summary, &settings.out));
    if let Some(err) = &summary.fatal_error {
        eprintln!("error: {err}");
    }
    Ok(summary.exit_code)
}
