//! The reports of a run (SPEC "Reports"): results.csv (every data row exactly
//! once), failures.csv (the failing rows verbatim, valid input for another
//! run) and summary.json. The `Recorder` is their only writer.

pub(crate) mod errors;
pub(crate) mod html;
pub mod journal;
pub(crate) mod metrics;
pub(crate) mod recorder;
pub(crate) mod results;
mod sanitize;
mod summary;
pub(crate) mod timeline;
pub mod view;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use csv::ByteRecord;

pub(crate) use sanitize::{create_private, neutralize};
pub(crate) use summary::{
    Counts, Ending, EngineFigures, InputInfo, RateSummary, SummaryParts, brief,
};
pub use summary::{ShardSummary, Summary};

use crate::input::ERROR_COLUMNS;
use crate::outcome::Outcome;

/// Header of results.csv.
pub const RESULTS_HEADER: [&str; 7] = [
    "row",
    "user_id",
    "status",
    "http_status",
    "attempts",
    "error",
    "duration_ms",
];

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The report directory could not be created.
    #[error("cannot create report directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A report file could not be created or written.
    #[error("cannot write report {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl ReportError {
    fn write(path: &Path, e: impl Into<io::Error>) -> Self {
        ReportError::Write {
            path: path.to_path_buf(),
            source: e.into(),
        }
    }
}

fn csv_err(e: csv::Error) -> io::Error {
    io::Error::other(e)
}

/// Writes results.csv and failures.csv row by row, and summary.json at the end.
pub(crate) struct Recorder {
    dir: PathBuf,
    results: csv::Writer<BufWriter<File>>,
    failures: csv::Writer<BufWriter<File>>,
    counts: Counts,
    itoa: itoa::Buffer,
    /// timeline.csv: one line per second.
    pub(crate) timeline: timeline::Timeline,
    /// The failing rows' error messages, for report.html.
    pub(crate) errors: errors::ErrorTally,
}

impl Recorder {
    /// Create `dir` (and parents) and the two CSV reports in it, with their
    /// header rows. `input_header` is the input's header row, which
    /// failures.csv repeats before its two error columns; failures.csv uses
    /// the input's `delimiter` so it reads back with the same options.
    pub(crate) fn create(
        dir: &Path,
        input_header: &ByteRecord,
        delimiter: u8,
    ) -> Result<Recorder, ReportError> {
        Recorder::open(dir, input_header, delimiter, None)
    }

    /// Like [`Recorder::create`], continuing an interrupted run: results.csv
    /// is rebuilt as its header plus the kept lines of the earlier part
    /// (written aside, fsynced, then renamed over the old file), and the
    /// counts start from those lines.
    pub(crate) fn resume(
        dir: &Path,
        input_header: &ByteRecord,
        delimiter: u8,
        state: &journal::ResumeState,
    ) -> Result<Recorder, ReportError> {
        Recorder::open(dir, input_header, delimiter, Some(state))
    }

    fn open(
        dir: &Path,
        input_header: &ByteRecord,
        delimiter: u8,
        resume: Option<&journal::ResumeState>,
    ) -> Result<Recorder, ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::CreateDir {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let timeline = match resume {
            Some(s) => timeline::Timeline::resume(dir, &s.timeline, s.prior, s.prior_elapsed)?,
            None => timeline::Timeline::create(dir)?,
        };
        let (results, counts) = Recorder::open_results(dir, resume)?;
        let failures = Recorder::open_failures(dir, input_header, delimiter)?;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            results,
            failures,
            counts,
            itoa: itoa::Buffer::new(),
            timeline,
            errors: errors::ErrorTally::default(),
        })
    }

    /// A report file, new and private, buffered.
    fn create_report(p: &Path) -> Result<BufWriter<File>, ReportError> {
        create_private(p)
            .map(|f| BufWriter::with_capacity(64 * 1024, f))
            .map_err(|e| ReportError::write(p, e))
    }

    /// results.csv with its header row, or rebuilt from the kept lines of
    /// the run `resume` continues; the counts it starts from.
    fn open_results(
        dir: &Path,
        resume: Option<&journal::ResumeState>,
    ) -> Result<(csv::Writer<BufWriter<File>>, Counts), ReportError> {
        let results_path = dir.join("results.csv");
        let Some(state) = resume else {
            let mut results = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Recorder::create_report(&results_path)?);
            results
                .write_record(RESULTS_HEADER)
                .map_err(|e| ReportError::write(&results_path, csv_err(e)))?;
            return Ok((results, Counts::default()));
        };
        let w = Recorder::restage_results(dir, &results_path, state)?;
        let results = csv::WriterBuilder::new().has_headers(false).from_writer(w);
        Ok((results, state.kept_counts))
    }

    /// The header plus the kept lines of the earlier part, written aside,
    /// fsynced, then renamed over `results_path`; the writer stays open.
    fn restage_results(
        dir: &Path,
        results_path: &Path,
        state: &journal::ResumeState,
    ) -> Result<BufWriter<File>, ReportError> {
        let staged = dir.join("results.csv.resume");
        let mut w = Recorder::create_report(&staged)?;
        let header = RESULTS_HEADER.join(",") + "\n";
        w.write_all(header.as_bytes())
            .and_then(|()| {
                if results_path.exists() {
                    journal::copy_kept(results_path, &mut w, state)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| w.flush())
            .and_then(|()| w.get_ref().sync_all())
            .and_then(|()| std::fs::rename(&staged, results_path))
            .map_err(|e| ReportError::write(results_path, e))?;
        Ok(w)
    }

    /// failures.csv with its BOM and header row: the input's header, then
    /// the two error columns.
    fn open_failures(
        dir: &Path,
        input_header: &ByteRecord,
        delimiter: u8,
    ) -> Result<csv::Writer<BufWriter<File>>, ReportError> {
        let failures_path = dir.join("failures.csv");
        let mut failures_file = Recorder::create_report(&failures_path)?;
        // A UTF-8 BOM: failures.csv is UTF-8 whatever the input's encoding, and
        // the BOM makes a rerun read it as UTF-8 even under --encoding.
        failures_file
            .write_all(b"\xEF\xBB\xBF")
            .map_err(|e| ReportError::write(&failures_path, e))?;
        let mut failures = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .from_writer(failures_file);
        let mut header = input_header.clone();
        for col in ERROR_COLUMNS {
            header.push_field(col.as_bytes());
        }
        failures
            .write_byte_record(&header)
            .map_err(|e| ReportError::write(&failures_path, csv_err(e)))?;
        Ok(failures)
    }

    /// Write one row's outcome; `raw` is the input record, needed when the
    /// row goes to failures.csv.
    fn record(&mut self, o: &Outcome, raw: Option<&ByteRecord>) -> Result<(), ReportError> {
        self.counts.add(o.status);
        self.timeline.note(o.status);
        if o.status.is_failure() {
            self.errors
                .add(&neutralize(o.error.as_deref().unwrap_or("")), o.row);
        }
        self.write_result(o)
            .map_err(|e| ReportError::write(&self.dir.join("results.csv"), e))?;
        if o.status.is_failure() {
            self.write_failure(o, raw)
                .map_err(|e| ReportError::write(&self.dir.join("failures.csv"), e))?;
        }
        Ok(())
    }

    fn write_result(&mut self, o: &Outcome) -> io::Result<()> {
        let w = &mut self.results;
        w.write_field(self.itoa.format(o.row)).map_err(csv_err)?;
        w.write_field(neutralize(&o.user_id).as_bytes())
            .map_err(csv_err)?;
        w.write_field(o.status.as_str()).map_err(csv_err)?;
        match o.http_status {
            Some(s) => w.write_field(self.itoa.format(s)).map_err(csv_err)?,
            None => w.write_field("").map_err(csv_err)?,
        }
        w.write_field(self.itoa.format(o.attempts))
            .map_err(csv_err)?;
        w.write_field(neutralize(o.error.as_deref().unwrap_or("")).as_bytes())
            .map_err(csv_err)?;
        w.write_field(self.itoa.format(o.duration.as_millis() as u64))
            .map_err(csv_err)?;
        w.write_record(None::<&[u8]>).map_err(csv_err)
    }

    fn write_failure(&mut self, o: &Outcome, raw: Option<&ByteRecord>) -> io::Result<()> {
        let w = &mut self.failures;
        if let Some(raw) = raw {
            for cell in raw.iter() {
                w.write_field(cell).map_err(csv_err)?;
            }
        }
        w.write_field(o.status.as_str()).map_err(csv_err)?;
        w.write_field(neutralize(o.error.as_deref().unwrap_or("")).as_bytes())
            .map_err(csv_err)?;
        w.write_record(None::<&[u8]>).map_err(csv_err)
    }

    /// Rows recorded so far, per status.
    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Push buffered rows to the OS.
    fn flush(&mut self) -> Result<(), ReportError> {
        self.results
            .flush()
            .map_err(|e| ReportError::write(&self.dir.join("results.csv"), e))?;
        self.failures
            .flush()
            .map_err(|e| ReportError::write(&self.dir.join("failures.csv"), e))?;
        self.timeline.write_pending(false);
        Ok(())
    }

    /// Make every row recorded so far durable (flush + fsync both CSVs and
    /// the timeline) and save the request figures to progress.json: the
    /// journal's batch point. progress.json goes first: a crash between the
    /// two then over-counts requests (they were sent) rather than keeping
    /// rows none counted, and the timeline never counts more than it.
    pub(crate) fn checkpoint(&mut self, progress: journal::Progress) -> Result<(), ReportError> {
        journal::write_progress(&self.dir, progress)?;
        self.flush()?;
        self.results
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(|e| ReportError::write(&self.dir.join("results.csv"), e))?;
        self.failures
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(|e| ReportError::write(&self.dir.join("failures.csv"), e))?;
        self.timeline.write_pending(true);
        Ok(())
    }

    /// Flush the CSVs and write summary.json atomically (temp file + rename),
    /// so a crash never leaves a half-written summary. summary.json is
    /// written even when the flush fails (a full disk): it is small, and it
    /// says how the run ended; the flush's error is returned.
    pub(crate) fn finish(mut self, summary: &Summary) -> Result<(), ReportError> {
        let flushed = self.flush();
        write_summary(&self.dir, summary)?;
        flushed
    }
}

/// Write `summary.json` in `dir` via a 0600 temporary file and a rename.
fn write_summary(dir: &Path, summary: &Summary) -> Result<(), ReportError> {
    write_json_atomic(&dir.join("summary.json"), summary)
}

/// Write `value` as JSON to `path` atomically ([`write_atomic`]).
fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> Result<(), ReportError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| ReportError::write(path, e))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(|e| ReportError::write(path, e))
}

/// Write `bytes` to `path` via a 0600 temporary file in the same directory,
/// fsync and rename: readers see the old file or the new, never half.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp.").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;
    use std::time::Duration;

    #[test]
    fn results_and_failures_are_written_with_neutralised_tool_cells() {
        let dir = tempfile::tempdir().unwrap();
        let header = ByteRecord::from(vec!["user_id", "first_name", "phone_number"]);
        let mut rec = Recorder::create(dir.path(), &header, b',').unwrap();
        let ok = Outcome {
            row: 1,
            user_id: "u1".into(),
            status: Status::Created,
            http_status: Some(200),
            attempts: 1,
            error: None,
            duration: Duration::from_millis(12),
        };
        rec.record(&ok, None).unwrap();
        let bad = Outcome::local(2, "=cmd", Status::Invalid, Some("-bad".into()));
        let raw = ByteRecord::from(vec!["=cmd", "Ann", "+15555550100"]);
        rec.record(&bad, Some(&raw)).unwrap();
        rec.flush().unwrap();
        let results = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
        assert_eq!(
            results,
            "row,user_id,status,http_status,attempts,error,duration_ms\n\
             1,u1,created,200,1,,12\n\
             2,'=cmd,invalid,,0,'-bad,0\n"
        );
        let failures = std::fs::read_to_string(dir.path().join("failures.csv")).unwrap();
        assert_eq!(
            failures,
            "\u{FEFF}user_id,first_name,phone_number,error_status,error_message\n\
             =cmd,Ann,+15555550100,invalid,'-bad\n"
        );
        assert_eq!(rec.counts().get(Status::Invalid), 1);
    }
}
