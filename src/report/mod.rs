//! The reports of a run (docs/reports.md "Reports"): results.csv (every data row exactly
//! once), failures.csv (the failing rows verbatim, valid input for another
//! run) and summary.json. The `Recorder` is their only writer.

pub(crate) mod errors;
pub(crate) mod html;
pub mod journal;
pub(crate) mod metrics;
pub(crate) mod recorder;
pub(crate) mod results;
pub mod run_dir;
mod sanitize;
mod summary;
pub(crate) mod timeline;
pub(crate) mod view;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use csv::ByteRecord;

pub(crate) use sanitize::{create_private, neutralize};
pub(crate) use summary::{
    Counts, Ending, EngineFigures, InputInfo, RateSummary, SummaryParts, brief,
};
pub use summary::{ShardSummary, Summary};

use crate::outcome::Outcome;
use run_dir::RunDir;

/// Header of results.csv. The last three (issue #20) are empty for rows
/// without an address; readers take files without them too
/// (`RESULTS_HEADER_V1`).
pub const RESULTS_HEADER: [&str; 10] = [
    "row",
    "user_id",
    "status",
    "http_status",
    "attempts",
    "error",
    "duration_ms",
    "validated_address_line_1",
    "validated_postal_code",
    "long_distance_delivery",
];

/// Columns of a results.csv written before the address columns.
pub(crate) const RESULTS_HEADER_V1: usize = 7;

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
    dir: RunDir,
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
    /// The recorder of the reports `dir` opened ([`RunDir::fresh`],
    /// [`RunDir::resume`]): results.csv (its header, and any kept lines,
    /// written), whose lines `counts` counts, failures.csv and the timeline.
    pub(crate) fn new(
        dir: RunDir,
        results: csv::Writer<BufWriter<File>>,
        counts: Counts,
        failures: csv::Writer<BufWriter<File>>,
        timeline: timeline::Timeline,
    ) -> Recorder {
        Recorder {
            dir,
            results,
            failures,
            counts,
            itoa: itoa::Buffer::new(),
            timeline,
            errors: errors::ErrorTally::default(),
        }
    }

    /// The directory the reports are in.
    pub(crate) fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// Write one row's outcome; `raw` is the input record, needed when the
    /// row goes to failures.csv.
    fn record(&mut self, o: &Outcome, raw: Option<&ByteRecord>) -> Result<(), ReportError> {
        self.counts.add(o.status);
        if o.address
            .as_ref()
            .is_some_and(|a| a.long_distance_delivery == Some(true))
        {
            self.counts.add_long_distance();
        }
        self.timeline.note(o.status);
        if o.status.is_failure() {
            self.errors
                .add(&neutralize(o.error.as_deref().unwrap_or("")), o.row);
        }
        self.write_result(o)
            .map_err(|e| ReportError::write(&self.dir.results(), e))?;
        if o.status.is_failure() {
            self.write_failure(o, raw)
                .map_err(|e| ReportError::write(&self.dir.failures(), e))?;
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
        match o.address.as_deref() {
            // Most rows: the three address columns empty, nothing to neutralise.
            None => {
                for _ in 0..3 {
                    w.write_field([]).map_err(csv_err)?;
                }
            }
            Some(a) => {
                for text in [a.address_line_1.as_deref(), a.postal_code.as_deref()] {
                    w.write_field(neutralize(text.unwrap_or("")).as_bytes())
                        .map_err(csv_err)?;
                }
                let far = match a.long_distance_delivery {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "",
                };
                w.write_field(far).map_err(csv_err)?;
            }
        }
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
            .map_err(|e| ReportError::write(&self.dir.results(), e))?;
        self.failures
            .flush()
            .map_err(|e| ReportError::write(&self.dir.failures(), e))?;
        self.timeline.write_pending(false);
        Ok(())
    }

    /// Make every row recorded so far durable (flush + fsync both CSVs and
    /// the timeline) and save the request figures to progress.json: the
    /// journal's batch point. progress.json goes first: a crash between the
    /// two then over-counts requests (they were sent) rather than keeping
    /// rows none counted, and the timeline never counts more than it.
    pub(crate) fn checkpoint(&mut self, progress: journal::Progress) -> Result<(), ReportError> {
        self.dir.write_progress(progress)?;
        self.flush()?;
        self.results
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(|e| ReportError::write(&self.dir.results(), e))?;
        self.failures
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(|e| ReportError::write(&self.dir.failures(), e))?;
        self.timeline.write_pending(true);
        Ok(())
    }

    /// Flush the CSVs and write summary.json atomically (temp file + rename),
    /// so a crash never leaves a half-written summary. summary.json is
    /// written even when the flush fails (a full disk): it is small, and it
    /// says how the run ended; the flush's error is returned.
    pub(crate) fn finish(mut self, summary: &Summary) -> Result<(), ReportError> {
        let flushed = self.flush();
        self.dir.write_summary(summary)?;
        flushed
    }
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
        let layout = run_dir::InputLayout {
            header: &header,
            delimiter: b',',
        };
        let mut rec = RunDir::fresh(dir.path(), layout, None).unwrap().recorder;
        let ok = Outcome {
            row: 1,
            user_id: "u1".into(),
            status: Status::Created,
            http_status: Some(200),
            attempts: 1,
            error: None,
            duration: Duration::from_millis(12),
            address: None,
        };
        rec.record(&ok, None).unwrap();
        let far = Outcome {
            row: 3,
            user_id: "u3".into(),
            address: Some(Box::new(crate::outcome::ValidatedAddress {
                address_line_1: Some("=1 Ice Rd".into()),
                postal_code: Some("99501".into()),
                long_distance_delivery: Some(true),
            })),
            ..ok.clone()
        };
        rec.record(&far, None).unwrap();
        let bad = Outcome::local(2, "=cmd", Status::Invalid, Some("-bad".into()));
        let raw = ByteRecord::from(vec!["=cmd", "Ann", "+15555550100"]);
        rec.record(&bad, Some(&raw)).unwrap();
        rec.flush().unwrap();
        let results = std::fs::read_to_string(rec.dir().results()).unwrap();
        assert_eq!(
            results,
            "row,user_id,status,http_status,attempts,error,duration_ms,\
             validated_address_line_1,validated_postal_code,long_distance_delivery\n\
             1,u1,created,200,1,,12,,,\n\
             3,u3,created,200,1,,12,'=1 Ice Rd,99501,true\n\
             2,'=cmd,invalid,,0,'-bad,0,,,\n"
        );
        let failures = std::fs::read_to_string(rec.dir().failures()).unwrap();
        assert_eq!(
            failures,
            "\u{FEFF}user_id,first_name,phone_number,error_status,error_message\n\
             =cmd,Ann,+15555550100,invalid,'-bad\n"
        );
        assert_eq!(rec.counts().get(Status::Invalid), 1);
        assert_eq!(rec.counts().long_distance(), 1);
    }
}
