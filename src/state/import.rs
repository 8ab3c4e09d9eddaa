//! `state import`: seed the state from an earlier run's results.csv and the
//! input that run read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::sql::UpsertRow;
use super::{Fingerprint, ImportSummary, StateError, StateStore, StoredStatus, fingerprint};
use crate::input::{InputError, InputSource};
use crate::intake::{Intake, Step};
use crate::report::journal::{RunMeta, sha256_file};
use crate::report::results::{ResultsError, Successes};
use crate::report::run_dir::RunDir;

/// Users per transaction while importing (sorted by user_id first, so the
/// inserts walk the b-tree in order).
const IMPORT_BATCH: usize = 50_000;

/// Users waiting for their import transaction.
type Pending = Vec<(String, Fingerprint, StoredStatus)>;

impl StateStore {
    /// Seed the state from an earlier run: `results_csv` (the rows it says
    /// `created`, `exists`, or `unchanged`) together with `intake`, the input
    /// that run read, opened with the same options (encoding, delimiter,
    /// columns, phone region, default locale; no `--limit` beyond the run's
    /// own), so the payload hashes are those the run sent.
    ///
    /// When results.csv has a run.json beside it that names the input's
    /// SHA-256, the input must be that file (checked before anything is
    /// written; stdin is refused then). Users are written in transactions of
    /// 50,000, sorted by user_id; an import cut short can simply be run
    /// again: importing twice changes nothing. The time recorded is the
    /// run's start (run.json), else results.csv's modification time.
    pub fn import(
        &mut self,
        results_csv: &Path,
        intake: &mut Intake,
    ) -> Result<ImportSummary, StateError> {
        let successes = self.read_import_results(results_csv)?;
        self.import_successes(results_csv, &successes, intake)
    }

    /// [`StateStore::import`] of the `successes` already read from
    /// `results_csv` (a resumed run reads its results.csv once).
    pub(crate) fn import_successes(
        &mut self,
        results_csv: &Path,
        successes: &Successes,
        intake: &mut Intake,
    ) -> Result<ImportSummary, StateError> {
        let fail = |message| import_error(&self.path, results_csv, message);
        let mut summary = ImportSummary {
            results_rows: successes.lines,
            skipped_changed: successes.changed,
            ..ImportSummary::default()
        };

        // The run's record, when there is one: its start and input hash.
        let meta = run_meta_beside(results_csv);
        let expected_sha = meta
            .as_ref()
            .map(|m| m.input_sha256.clone())
            .filter(|s| s.len() == 64);
        let source = intake.reader().source().clone();
        summary.input_verified = verify_input(expected_sha.as_deref(), &source, fail)?;
        summary.at = import_time(meta.as_ref(), results_csv);

        let matched = self.import_users(intake, successes, &mut summary)?;
        summary.not_in_input = successes.created.len() + successes.exists.len() - matched;
        if matched == 0 && summary.not_in_input > 0 {
            return Err(import_error(
                &self.path,
                results_csv,
                format!(
                    "none of its {} successful rows is a valid row of {}: is it the input of that run, read with the same options?",
                    summary.not_in_input,
                    source.display()
                ),
            ));
        }

        let sha = expected_sha.unwrap_or_else(|| intake.reader().digest().sha256_hex());
        self.record_import(&sha, results_csv, &summary)?;
        Ok(summary)
    }

    /// The rows `results_csv` calls successes (see [`Successes::read`]).
    fn read_import_results(&self, results_csv: &Path) -> Result<Successes, StateError> {
        let file = File::open(results_csv).map_err(|source| StateError::Io {
            path: results_csv.to_path_buf(),
            op: "open the results to import",
            source,
        })?;
        Successes::read(BufReader::new(file)).map_err(|e| match e {
            ResultsError::Io(source) => StateError::Io {
                path: results_csv.to_path_buf(),
                op: "read the results to import",
                source,
            },
            e => import_error(&self.path, results_csv, e.to_string()),
        })
    }

    /// Walk the input and record, in batches, the valid rows `sets` names;
    /// counts them in `summary` (whose `at` is the time recorded). Returns
    /// how many rows matched.
    fn import_users(
        &mut self,
        intake: &mut Intake,
        sets: &Successes,
        summary: &mut ImportSummary,
    ) -> Result<u64, StateError> {
        let at = summary.at;
        let mut matched = 0u64;
        let mut pending: Pending = Vec::with_capacity(IMPORT_BATCH);
        while let Some(step) = intake.next_step()? {
            let Step::Send { row, payload, .. } = step else {
                continue;
            };
            let Some(status) = stored_status(sets, row) else {
                continue;
            };
            matched += 1;
            match status {
                StoredStatus::Created => summary.created += 1,
                StoredStatus::Exists => summary.exists += 1,
            }
            let print = fingerprint(&payload);
            pending.push((payload.into_user().user_id, print, status));
            if pending.len() == IMPORT_BATCH {
                self.import_batch(&mut pending, at)?;
            }
        }
        self.import_batch(&mut pending, at)?;
        Ok(matched)
    }

    /// One import transaction: `pending` sorted by user_id, upserted, committed.
    fn import_batch(
        &mut self,
        pending: &mut Pending,
        at: jiff::Timestamp,
    ) -> Result<(), StateError> {
        if pending.is_empty() {
            return Ok(());
        }
        pending.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let rows = pending.iter().map(|(id, print, status)| UpsertRow {
            user_id: id.as_str(),
            hash: &print.user,
            status: *status,
            at,
            address_hash: print.address.as_ref(),
            validated_address: None,
        });
        self.upsert_all("import users", rows)?;
        pending.clear();
        Ok(())
    }

    /// The import's line in `runs`, finished at once with its counts.
    fn record_import(
        &mut self,
        input_sha256: &str,
        results_csv: &Path,
        summary: &ImportSummary,
    ) -> Result<(), StateError> {
        let id = self.insert_run("import", input_sha256, Some(results_csv))?;
        let counts: BTreeMap<String, u64> = [
            ("created", summary.created),
            ("exists", summary.exists),
            ("skipped_changed", summary.skipped_changed),
            ("not_in_input", summary.not_in_input),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        self.finish_run(id, &counts)
    }
}

/// [`StateError::Import`] of `results` into the state file `path`.
fn import_error(path: &Path, results: &Path, message: String) -> StateError {
    StateError::Import {
        path: path.to_path_buf(),
        results: results.to_path_buf(),
        message,
    }
}

/// The run.json beside `results_csv`, when there is one that parses.
fn run_meta_beside(results_csv: &Path) -> Option<RunMeta> {
    results_csv
        .parent()
        .and_then(|d| RunDir::at(d).read_meta().ok())
}

/// Check the input against the SHA-256 its run.json names (`want`), before
/// anything is written; whether it was checked. `fail` words a refusal.
fn verify_input(
    want: Option<&str>,
    source: &InputSource,
    fail: impl Fn(String) -> StateError,
) -> Result<bool, StateError> {
    let input_name = source.display();
    match (want, source) {
        (Some(want), InputSource::Path(p)) if !source.is_stream() => {
            let got = sha256_file(p).map_err(|e| InputError::Open {
                path: input_name.clone(),
                source: e,
            })?;
            if got != want {
                return Err(fail(format!(
                    "{input_name} is not the input of that run (its SHA-256 is {got}; run.json says {want})"
                )));
            }
            Ok(true)
        }
        (Some(_), _) => Err(fail(
            "give the input as a regular file (not stdin or a pipe), so it can be checked against the run's run.json".into(),
        )),
        (None, _) => Ok(false),
    }
}

/// The time an import records: the run's start (run.json), else
/// results.csv's modification time, else now.
fn import_time(meta: Option<&RunMeta>, results_csv: &Path) -> jiff::Timestamp {
    meta.and_then(|m| m.started.parse::<jiff::Timestamp>().ok())
        .or_else(|| {
            std::fs::metadata(results_csv)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
        })
        .unwrap_or_else(jiff::Timestamp::now)
}

/// The status to record for `row` of `sets`, if any.
fn stored_status(sets: &Successes, row: u64) -> Option<StoredStatus> {
    if sets.created.contains(row) {
        Some(StoredStatus::Created)
    } else if sets.exists.contains(row) {
        Some(StoredStatus::Exists)
    } else {
        None
    }
}
