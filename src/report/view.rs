//! report.html of a report directory: the run's summary, its timeline and
//! its top error messages, drawn by `report::html` and written
//! atomically. At the end of a run the recorder's tally gives the errors;
//! `connect-provision report DIR` tallies results.csv instead, so an old or
//! resumed run can be redrawn.

use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use super::errors::{ErrorGroup, ErrorTally};
use super::html::{self, HtmlError, Page};
use super::results::{ResultsError, ResultsReader};
use super::run_dir::RunDir;
use super::{Summary, timeline};

/// Error messages the page lists.
pub(crate) const TOP_ERRORS: usize = 10;

/// Why report.html could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The directory holds no summary.json.
    #[error(
        "{dir} holds no finished run (no summary.json): point at a run's --out, \
         or finish an interrupted run with --resume first"
    )]
    NoSummary {
        /// The report directory.
        dir: PathBuf,
    },
    /// A report file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// summary.json does not parse.
    #[error("{path} is not a summary.json of this tool: {message}")]
    Summary {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        message: String,
    },
    /// results.csv is not one of this tool's.
    #[error("cannot read {path}: {reason}")]
    Results {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A chart could not be drawn.
    #[error(transparent)]
    Html(#[from] HtmlError),
    /// The page could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Write `dir`/report.html for the run `summary` describes, with its
/// `errors` (the top ones, most frequent first) and the timeline.csv beside
/// it. Returns the page's path.
pub(crate) fn write(
    dir: &RunDir,
    summary: &Summary,
    errors: &[ErrorGroup],
) -> Result<PathBuf, ViewError> {
    let timeline_path = dir.timeline();
    let timeline = timeline::read(&timeline_path).map_err(|source| ViewError::Read {
        path: timeline_path,
        source,
    })?;
    let page = html::render(&Page {
        summary,
        timeline: &timeline,
        errors,
    })?;
    let path = dir.page();
    // Private (0600) like the other reports: the page holds error messages
    // with customer data.
    super::write_atomic(&path, page.as_bytes()).map_err(|source| ViewError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// `connect-provision report DIR`: draw report.html again from the files
/// of a finished run (summary.json, timeline.csv and results.csv).
pub(crate) fn rebuild(dir: &Path) -> Result<PathBuf, ViewError> {
    let run_dir = RunDir::at(dir);
    let summary = read_summary(&run_dir.summary(), dir)?;
    let errors = tally_results(&run_dir.results())?;
    write(&run_dir, &summary, &errors.top(TOP_ERRORS))
}

/// The summary.json at `path`, in `dir`.
fn read_summary(path: &Path, dir: &Path) -> Result<Summary, ViewError> {
    let path = path.to_path_buf();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ViewError::NoSummary {
                dir: dir.to_path_buf(),
            });
        }
        Err(source) => return Err(ViewError::Read { path, source }),
    };
    serde_json::from_slice(&bytes).map_err(|e| ViewError::Summary {
        path,
        message: e.to_string(),
    })
}

/// The error messages of results.csv's failing rows.
fn tally_results(path: &Path) -> Result<ErrorTally, ViewError> {
    let results_err = |reason: ResultsError| ViewError::Results {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let f = std::fs::File::open(path).map_err(|e| results_err(ResultsError::Io(e)))?;
    let mut rdr = ResultsReader::checked(BufReader::new(f)).map_err(results_err)?;
    let mut tally = ErrorTally::default();
    while let Some(rec) = rdr
        .next_record()
        .map_err(|e| results_err(ResultsError::Io(e)))?
    {
        if let (Some(row), Some(status)) = (rec.row(), rec.status())
            && status.is_failure()
        {
            tally.add(rec.error(), row);
        }
    }
    Ok(tally)
}
