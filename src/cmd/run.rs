//! `run`: provision the users of a CSV, or validate them with `--dry-run`.

use std::time::Instant;

use csv::ByteRecord;

use crate::error::Error;
use crate::exit::Exit;
use crate::input::InputError;
use crate::intake::{Dedup, Intake};
use crate::outcome::{Outcome, Status};
use crate::report::{Ending, EngineFigures, InputInfo, Recorder, Summary, SummaryParts};
use crate::settings::RunSettings;
use crate::validate::Validated;

/// Rows per batch handed between the dry run's threads.
const BATCH: usize = 1024;

/// A batch of consecutive rows on its way reader → validator → writer.
/// Batches are recycled, so the record buffers are allocated once.
struct Batch {
    first_row: u64,
    len: usize,
    recs: Vec<ByteRecord>,
    validated: Vec<Validated>,
    /// Index of a row cut short by an unterminated quote at EOF.
    unterminated: Option<usize>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            first_row: 0,
            len: 0,
            recs: (0..BATCH).map(|_| ByteRecord::new()).collect(),
            validated: Vec::with_capacity(BATCH),
            unterminated: None,
        }
    }
}

/// `run --dry-run`: validate every row and write the reports; no network.
///
/// Validation (phone parsing above all) is the costly step, so it runs on
/// one thread per core between a reader thread and this (writer) thread.
/// Batch `k` goes to validator `k % n` and is collected from it in the same
/// turn, so rows reach the reports in input order with no reorder buffer;
/// duplicates are decided here, in order.
pub fn dry_run(settings: &RunSettings) -> Result<Summary, Error> {
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let intake = Intake::open(settings)?;
    crate::report::journal::check_fresh(&settings.out)?;
    let mut recorder = Recorder::create(
        &settings.out,
        intake.reader().header_record(),
        settings.read.delimiter,
    )?;
    let (mut reader, validator) = intake.into_parts();
    let source = reader.source().display();
    let digest = reader.digest();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));

    let (rows_read, written) = std::thread::scope(|scope| {
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Batch>();
        let mut to_validators = Vec::with_capacity(workers);
        let mut from_validators = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<Batch>(2);
            let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Batch>(2);
            let validator = &validator;
            scope.spawn(move || {
                for mut batch in in_rx {
                    batch.validated.clear();
                    for rec in &batch.recs[..batch.len] {
                        batch.validated.push(validator.validate(rec));
                    }
                    if out_tx.send(batch).is_err() {
                        break;
                    }
                }
            });
            to_validators.push(in_tx);
            from_validators.push(out_rx);
        }
        let reading = scope.spawn(move || -> Result<u64, InputError> {
            for k in 0.. {
                let mut batch = recycle_rx.try_recv().unwrap_or_else(|_| Batch::new());
                batch.len = 0;
                batch.unterminated = None;
                while batch.len < BATCH {
                    match reader.read_row(&mut batch.recs[batch.len])? {
                        Some(row) => {
                            if batch.len == 0 {
                                batch.first_row = row;
                            }
                            if reader.row_unterminated() {
                                batch.unterminated = Some(batch.len);
                            }
                            batch.len += 1;
                        }
                        None => break,
                    }
                }
                let last = batch.len < BATCH;
                if batch.len > 0 && to_validators[k % workers].send(batch).is_err() {
                    break;
                }
                if last {
                    break;
                }
            }
            Ok(reader.rows_read())
        });

        let mut dedup = Dedup::default();
        let written: Result<(), Error> = (|| {
            for k in 0.. {
                let Ok(mut batch) = from_validators[k % workers].recv() else {
                    break;
                };
                let unterminated = batch.unterminated;
                for (i, mut v) in batch.validated.drain(..).enumerate() {
                    let row = batch.first_row + i as u64;
                    if unterminated == Some(i) {
                        v.result = Err(crate::validate::Invalid::unterminated());
                    }
                    match dedup.decide(row, v) {
                        Ok((row, user)) => recorder.record(
                            &Outcome::local(row, user.user_id, Status::Valid, None),
                            None,
                        )?,
                        Err(outcome) => recorder.record(&outcome, Some(&batch.recs[i]))?,
                    }
                }
                let _ = recycle_tx.send(batch);
            }
            Ok(())
        })();
        // On a write error, dropping the receivers stops the other threads.
        drop(from_validators);
        let rows = reading
            .join()
            .map_err(|_| Error::Fatal("the input reader thread panicked".into()));
        (rows, written)
    });
    written?;
    let rows_read = rows_read??;

    let summary = Summary::build(SummaryParts {
        input: InputInfo {
            path: source,
            sha256: digest.sha256_hex(),
        },
        dry_run: true,
        target: settings.target.as_ref().map(|t| t.describe()),
        started,
        finished: jiff::Timestamp::now(),
        elapsed: clock.elapsed(),
        rows_read,
        counts: recorder.counts(),
        engine: EngineFigures::default(),
        rate: None,
        ending: Ending::Finished,
        fatal_error: None,
    });
    recorder.finish(&summary)?;
    Ok(summary)
}

/// The lines printed on stdout when a run ends.
pub fn render_summary(summary: &Summary, out: &std::path::Path) -> String {
    let counts = crate::report::brief(summary.counts.iter().map(|(k, n)| (k.as_str(), *n)));
    let what = if summary.dry_run { "dry run" } else { "run" };
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
        "reports: {}/ (results.csv, failures.csv, summary.json)\n",
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
pub async fn run(settings: &RunSettings, ui: &crate::progress::Ui) -> Result<Exit, Error> {
    if settings.dry_run {
        let summary = dry_run(settings)?;
        print!("{}", render_summary(&summary, &settings.out));
        return Ok(exit_of(&summary));
    }
    let stop = crate::exec::stop::Stop::new();
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
    Ok(exit_of(&summary))
}

/// The exit a summary records (its code is always one of ours).
fn exit_of(summary: &Summary) -> Exit {
    Exit::from_code(summary.exit_code).unwrap_or(Exit::Fatal)
}
