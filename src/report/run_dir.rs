//! The run directory (`--out`): the one place that knows its files' names,
//! opens them for a run, fresh or continuing an earlier part, stages and
//! renames what a resume rebuilds, and reads and writes run.json,
//! progress.json and summary.json.
//!
//! | file | written by | read back by |
//! |---|---|---|
//! | results.csv | the recorder, a line per row (the journal) | resume, `state import`, `report DIR` |
//! | failures.csv | the recorder | another run |
//! | timeline.csv | the recorder, a line per second | resume, report.html |
//! | run.json | a fresh live run, before the first request | resume, `state import` |
//! | progress.json | each checkpoint of a live run | resume |
//! | summary.json | the end of a run | `report DIR` |
//! | report.html | the end of a run, `report DIR` | people |
//!
//! `RunDir::fresh` refuses a directory that holds a live run's reports
//! and creates the reports (and run.json, for a live run).
//! `RunDir::resume` checks run.json against the input, reads results.csv
//! once (what the earlier part did, its kept lines copied aside as it
//! goes), rebuilds timeline.csv and results.csv aside and renames each over
//! the old file (the timeline first), and hands back what the run needs:
//! the recorder and the earlier part's `Prior`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use csv::ByteRecord;

use super::journal::{self, Progress, ResumeError, RunMeta, ScanError};
use super::results::Successes;
use super::timeline::{self, Rebase, Second, Timeline};
use super::{
    EngineFigures, RESULTS_HEADER, Recorder, ReportError, Summary, create_private, csv_err,
    write_json_atomic,
};
use crate::input::ERROR_COLUMNS;
use crate::intake::Earlier;
use crate::rowset::RowSet;

/// Every data row's outcome (the journal).
pub(crate) const RESULTS: &str = "results.csv";
/// The failing rows, verbatim.
pub(crate) const FAILURES: &str = "failures.csv";
/// How the run ended.
pub(crate) const SUMMARY: &str = "summary.json";
/// What a resume must match.
pub(crate) const META: &str = "run.json";
/// The request figures at the last checkpoint.
pub(crate) const PROGRESS: &str = "progress.json";
/// A line per second.
pub(crate) const TIMELINE: &str = "timeline.csv";
/// The page for people.
pub(crate) const PAGE: &str = "report.html";

/// A report directory.
#[derive(Clone, Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
}

/// Why a run directory cannot be opened (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// There is no run to resume there, or not this one; or a fresh run
    /// would write over one.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// A report could not be created.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What the earlier parts of a resumed run did (nothing, on a fresh run).
#[derive(Debug, Default)]
pub(crate) struct Prior {
    /// The rows intake skips (successes) or replays (rejections).
    pub(crate) rows: Earlier,
    /// Rows the earlier part's circuit breaker already judged.
    pub(crate) judged: RowSet,
    /// Request figures of the earlier parts.
    pub(crate) figures: EngineFigures,
    /// Their active time.
    pub(crate) elapsed: Duration,
    /// When the run first started (run.json).
    pub(crate) started: Option<jiff::Timestamp>,
    /// The kept lines' successes, for `--state`.
    pub(crate) successes: Successes,
}

/// A live run's journal beside its reports (a dry run keeps none: its
/// reports are reproducible).
pub(crate) enum Journal {
    /// A new run: run.json, written before the first request.
    Fresh(RunMeta),
    /// `--resume`: the run in the directory goes on, if it read the input
    /// with this SHA-256, and this shard (`None`: all rows).
    Resume {
        input_sha256: String,
        shard: Option<String>,
    },
}

impl Journal {
    /// The input's SHA-256.
    pub(crate) fn input_sha256(&self) -> &str {
        match self {
            Journal::Fresh(meta) => &meta.input_sha256,
            Journal::Resume { input_sha256, .. } => input_sha256,
        }
    }
}

/// A run directory opened for a run.
pub(crate) struct Opened {
    /// The reports' only writer.
    pub(crate) recorder: Recorder,
    /// What the earlier parts did.
    pub(crate) prior: Prior,
}

/// The input's side of failures.csv: its header row (repeated before the
/// two error columns) and its delimiter (so the file reads back with the
/// same options).
#[derive(Clone, Copy)]
pub(crate) struct InputLayout<'a> {
    pub(crate) header: &'a ByteRecord,
    pub(crate) delimiter: u8,
}

/// Write `run.json` in `dir`.
pub fn write_meta(dir: &Path, meta: &RunMeta) -> Result<(), ReportError> {
    RunDir::at(dir).write_meta(meta)
}

impl RunDir {
    /// The report directory at `path`.
    pub(crate) fn at(path: &Path) -> RunDir {
        RunDir {
            path: path.to_path_buf(),
        }
    }

    /// results.csv.
    pub(crate) fn results(&self) -> PathBuf {
        self.path.join(RESULTS)
    }

    /// failures.csv.
    pub(crate) fn failures(&self) -> PathBuf {
        self.path.join(FAILURES)
    }

    /// summary.json.
    pub(crate) fn summary(&self) -> PathBuf {
        self.path.join(SUMMARY)
    }

    /// timeline.csv.
    pub(crate) fn timeline(&self) -> PathBuf {
        self.path.join(TIMELINE)
    }

    /// report.html.
    pub(crate) fn page(&self) -> PathBuf {
        self.path.join(PAGE)
    }

    /// Where `name` is rebuilt before it is renamed over the old file.
    fn staged(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.resume"))
    }

    /// Open `path` for a run that keeps `journal` (`None`: a dry run):
    /// [`RunDir::fresh`], or [`RunDir::resume`].
    pub(crate) fn open(
        path: &Path,
        input: InputLayout<'_>,
        journal: Option<&Journal>,
    ) -> Result<Opened, OpenError> {
        match journal {
            None => RunDir::fresh(path, input, None),
            Some(Journal::Fresh(meta)) => RunDir::fresh(path, input, Some(meta)),
            Some(Journal::Resume {
                input_sha256,
                shard,
            }) => RunDir::resume(path, input, input_sha256, shard.as_deref()),
        }
    }

    /// Open `path` for a new run: refuse it when it holds an earlier live
    /// run's reports (a dry run's are reproducible and may be overwritten),
    /// create it and the reports, then, for a live run, write `meta` as
    /// run.json before the first request.
    pub(crate) fn fresh(
        path: &Path,
        input: InputLayout<'_>,
        meta: Option<&RunMeta>,
    ) -> Result<Opened, OpenError> {
        let dir = RunDir::at(path);
        if dir.path.join(META).exists() {
            return Err(ResumeError::Exists { dir: dir.path }.into());
        }
        dir.create()?;
        let timeline = dir.open_timeline(&[], EngineFigures::default(), Duration::ZERO)?;
        let results_path = dir.results();
        let mut results = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(create_report(&results_path)?);
        results
            .write_record(RESULTS_HEADER)
            .map_err(|e| ReportError::write(&results_path, csv_err(e)))?;
        let failures = dir.open_failures(input)?;
        if let Some(meta) = meta {
            dir.write_meta(meta)?;
        }
        let recorder = Recorder::new(dir, results, Default::default(), failures, timeline);
        Ok(Opened {
            recorder,
            prior: Prior::default(),
        })
    }

    /// Continue the run in `path` (`--resume`), after checking that it read
    /// the same input (`input_sha256`) and shard (`None`: all rows).
    /// results.csv is read once: the earlier part's rows and figures, its
    /// timeline rebased on the lines kept, and those lines copied aside.
    /// The timeline, then results.csv (its header plus the kept lines), are
    /// rebuilt aside, fsynced and renamed over the old files; the counts
    /// start from the kept lines, and failures.csv starts anew.
    pub(crate) fn resume(
        path: &Path,
        input: InputLayout<'_>,
        input_sha256: &str,
        shard: Option<&str>,
    ) -> Result<Opened, OpenError> {
        let dir = RunDir::at(path);
        let meta = dir.read_meta()?;
        meta.check(&dir.path, input_sha256, shard)?;
        let progress = dir.read_progress();
        let old = timeline::read(&dir.timeline()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the earlier timeline; it starts again");
            Vec::new()
        });
        let mut rebase = Rebase::new(old, progress.elapsed());
        dir.create()?;
        let (scan, staged) = dir.scan_results(&mut rebase)?;
        tracing::info!(
            done = scan.earlier.done.len(),
            rejected = scan.earlier.rejected.len(),
            "resuming: rows already final are skipped"
        );
        let figures = EngineFigures::from(progress);
        let timeline = dir.open_timeline(&rebase.finish(&figures), figures, progress.elapsed())?;
        let results = dir.rename_staged(staged)?;
        let failures = dir.open_failures(input)?;
        let prior = Prior {
            rows: scan.earlier,
            judged: scan.judged,
            figures,
            elapsed: progress.elapsed(),
            started: meta.started(),
            successes: scan.successes,
        };
        let results = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(results);
        let recorder = Recorder::new(dir, results, scan.kept_counts, failures, timeline);
        Ok(Opened { recorder, prior })
    }

    /// Create the directory (and its parents).
    fn create(&self) -> Result<(), ReportError> {
        std::fs::create_dir_all(&self.path).map_err(|e| ReportError::CreateDir {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Scan the old results.csv ([`journal::scan_results`]; nothing when it
    /// is missing), writing its header and kept lines to the staged file,
    /// which stays open.
    fn scan_results(
        &self,
        rebase: &mut Rebase,
    ) -> Result<(journal::Scan, BufWriter<File>), OpenError> {
        let results_path = self.results();
        let staged = self.staged(RESULTS);
        let mut w = create_report(&staged)?;
        let header = RESULTS_HEADER.join(",") + "\n";
        w.write_all(header.as_bytes())
            .map_err(|e| ReportError::write(&results_path, e))?;
        let scanned = match File::open(&results_path) {
            Ok(f) => journal::scan_results(BufReader::new(f), rebase, &mut w),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(journal::Scan::default()),
            Err(e) => Err(ScanError::Read(e)),
        };
        match scanned {
            Ok(scan) => Ok((scan, w)),
            Err(e) => {
                drop(w);
                let _ = std::fs::remove_file(&staged);
                Err(match e {
                    ScanError::Read(source) => ResumeError::Read {
                        path: results_path,
                        source,
                    }
                    .into(),
                    ScanError::Write(e) => ReportError::write(&results_path, e).into(),
                })
            }
        }
    }

    /// Make the staged results.csv durable and rename it over the old one;
    /// the writer stays open.
    fn rename_staged(&self, mut w: BufWriter<File>) -> Result<BufWriter<File>, ReportError> {
        let results_path = self.results();
        w.flush()
            .and_then(|()| w.get_ref().sync_all())
            .and_then(|()| std::fs::rename(self.staged(RESULTS), &results_path))
            .map_err(|e| ReportError::write(&results_path, e))?;
        Ok(w)
    }

    /// timeline.csv with its header and the `earlier` lines (already
    /// [`Rebase`]d), written aside, fsynced and renamed over the file; this
    /// part's seconds follow them.
    fn open_timeline(
        &self,
        earlier: &[Second],
        prior: EngineFigures,
        prior_elapsed: Duration,
    ) -> Result<Timeline, ReportError> {
        let path = self.timeline();
        let staged = self.staged(TIMELINE);
        let file = create_private(&staged)
            .and_then(|mut f| {
                f.write_all(timeline::text(earlier).as_bytes())?;
                f.sync_data()?;
                std::fs::rename(&staged, &path)?;
                OpenOptions::new().append(true).open(&path)
            })
            .map_err(|e| ReportError::write(&path, e))?;
        Ok(Timeline::new(path, file, earlier, prior, prior_elapsed))
    }

    /// failures.csv with its BOM and header row: the input's header, then
    /// the two error columns.
    fn open_failures(
        &self,
        input: InputLayout<'_>,
    ) -> Result<csv::Writer<BufWriter<File>>, ReportError> {
        let failures_path = self.failures();
        let mut failures_file = create_report(&failures_path)?;
        // A UTF-8 BOM: failures.csv is UTF-8 whatever the input's encoding, and
        // the BOM makes a rerun read it as UTF-8 even under --encoding.
        failures_file
            .write_all(b"\xEF\xBB\xBF")
            .map_err(|e| ReportError::write(&failures_path, e))?;
        let mut failures = csv::WriterBuilder::new()
            .delimiter(input.delimiter)
            .flexible(true)
            .from_writer(failures_file);
        let mut header = input.header.clone();
        for col in ERROR_COLUMNS {
            header.push_field(col.as_bytes());
        }
        failures
            .write_byte_record(&header)
            .map_err(|e| ReportError::write(&failures_path, csv_err(e)))?;
        Ok(failures)
    }

    /// Write run.json.
    pub(crate) fn write_meta(&self, meta: &RunMeta) -> Result<(), ReportError> {
        write_json_atomic(&self.path.join(META), meta)
    }

    /// run.json; without one there is nothing to resume.
    pub(crate) fn read_meta(&self) -> Result<RunMeta, ResumeError> {
        let meta_path = self.path.join(META);
        match std::fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ResumeError::Corrupt {
                path: meta_path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ResumeError::NoRun {
                dir: self.path.clone(),
            }),
            Err(e) => Err(ResumeError::Read {
                path: meta_path,
                source: e,
            }),
        }
    }

    /// Write progress.json.
    pub(crate) fn write_progress(&self, p: Progress) -> Result<(), ReportError> {
        write_json_atomic(&self.path.join(PROGRESS), &p)
    }

    /// progress.json; zero figures when it is missing or unreadable.
    fn read_progress(&self) -> Progress {
        match std::fs::read(self.path.join(PROGRESS)) {
            Ok(bytes) => serde_json::from_slice::<Progress>(&bytes).unwrap_or_default(),
            Err(_) => Progress::default(),
        }
    }

    /// Write summary.json (a temporary file and a rename).
    pub(crate) fn write_summary(&self, summary: &Summary) -> Result<(), ReportError> {
        write_json_atomic(&self.summary(), summary)
    }
}

/// A report file, new and private, buffered.
fn create_report(p: &Path) -> Result<BufWriter<File>, ReportError> {
    create_private(p)
        .map(|f| BufWriter::with_capacity(64 * 1024, f))
        .map_err(|e| ReportError::write(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(header: &ByteRecord) -> InputLayout<'_> {
        InputLayout {
            header,
            delimiter: b',',
        }
    }

    fn meta(shard: Option<&str>) -> RunMeta {
        RunMeta {
            tool_version: "x".into(),
            input_path: "in.csv".into(),
            input_sha256: "abc".into(),
            started: "2026-01-02T03:04:05Z".into(),
            shard: shard.map(str::to_string),
        }
    }

    #[test]
    fn resume_refuses_a_missing_run_a_changed_input_and_a_fresh_run_over_one() {
        let dir = tempfile::tempdir().unwrap();
        let header = ByteRecord::from(vec!["user_id"]);
        let resume = |sha, shard| RunDir::resume(dir.path(), layout(&header), sha, shard);
        assert!(matches!(
            resume("abc", None),
            Err(OpenError::Resume(ResumeError::NoRun { .. }))
        ));
        write_meta(dir.path(), &meta(Some("2/4"))).unwrap();
        assert!(matches!(
            resume("def", Some("2/4")),
            Err(OpenError::Resume(ResumeError::InputChanged { .. }))
        ));
        assert!(matches!(
            resume("abc", None),
            Err(OpenError::Resume(ResumeError::ShardChanged { .. }))
        ));
        let Ok(opened) = resume("abc", Some("2/4")) else {
            panic!("resume")
        };
        assert!(opened.prior.rows.done.is_empty());
        assert!(opened.prior.started.is_some());
        assert!(matches!(
            RunDir::fresh(dir.path(), layout(&header), None),
            Err(OpenError::Resume(ResumeError::Exists { .. }))
        ));
    }

    #[test]
    fn resume_keeps_the_final_lines_and_rebuilds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let header = ByteRecord::from(vec!["user_id"]);
        write_meta(dir.path(), &meta(None)).unwrap();
        std::fs::write(
            dir.path().join(RESULTS),
            "row,user_id,status,http_status,attempts,error,duration_ms\n\
             1,u1,created,200,1,,5\n\
             2,u2,failed,503,6,HTTP 503,900\n\
             3,u3,exists,400,2,,7\n\
             4,u4,crea",
        )
        .unwrap();
        let Ok(opened) = RunDir::resume(dir.path(), layout(&header), "abc", None) else {
            panic!("resume")
        };
        assert_eq!(opened.recorder.counts().total(), 2);
        assert!(opened.prior.successes.created.contains(1));
        assert!(opened.prior.successes.exists.contains(3));
        drop(opened);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(RESULTS)).unwrap(),
            // Written by a build before the address columns: resumed under
            // today's header, the kept lines padded (issue #20).
            "row,user_id,status,http_status,attempts,error,duration_ms,\
             validated_address_line_1,validated_postal_code,long_distance_delivery\n\
             1,u1,created,200,1,,5,,,\n\
             3,u3,exists,400,2,,7,,,\n"
        );
        assert!(!dir.path().join("results.csv.resume").exists());
        let lines = timeline::read(&dir.path().join(TIMELINE)).unwrap();
        assert_eq!(lines.len(), 1);
    }
}
