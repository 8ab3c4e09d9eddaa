//! The run's journal, so an interrupted run can be resumed (`--resume`).
//!
//! results.csv *is* the journal: the recorder appends each final row to it
//! and flushes + fsyncs in batches, so a crash loses at most the rows of the
//! last batch (they are sent again and end `created` or `exists`). Beside it:
//! - `run.json`, written before the first request: the input's path and
//!   SHA-256, so a resume against a changed file is refused;
//! - `progress.json`, rewritten atomically with every batch: the request
//!   figures so far, so summary.json covers the whole run after a resume.
//!
//! On `--resume`, rows already final (`created`, `exists`, `duplicate`,
//! `unchanged`, `changed`, `rejected`) are skipped; `invalid` rows are simply
//! validated again; `failed` rows and rows never recorded are sent. A row
//! number set is a bitset: 10M rows cost 1.25 MB.
//!
//! This module holds what the records say ([`RunMeta`], `Progress`, the
//! resume scan of results.csv); where they are and how they are opened,
//! staged and renamed is `report::run_dir`'s.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::results::{ResultRecord, ResultsReader, Successes};
use super::timeline;
use super::{Counts, EngineFigures, RESULTS_HEADER};
use crate::intake::{Earlier, Rejected};
use crate::outcome::Status;
use crate::rowset::RowSet;

/// `run.json`: what a resume must match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Version of the tool that started the run.
    pub tool_version: String,
    /// The input as given.
    pub input_path: String,
    /// SHA-256 of the input's bytes, in hex.
    pub input_sha256: String,
    /// When the run started (RFC 3339).
    pub started: String,
    /// `--shard K/N` of the run, if it was one shard's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// `progress.json`: request figures and active time so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Progress {
    requests_sent: u64,
    retries: u64,
    throttled_429: u64,
    token_refreshes: u64,
    /// Time spent running, over all parts of the run.
    #[serde(default)]
    elapsed_ms: u64,
}

impl From<Progress> for EngineFigures {
    fn from(p: Progress) -> Self {
        EngineFigures {
            requests_sent: p.requests_sent,
            retries: p.retries,
            throttled_429: p.throttled_429,
            token_refreshes: p.token_refreshes,
        }
    }
}

impl Progress {
    /// Time spent running, over all parts of the run.
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.elapsed_ms)
    }

    /// Figures of a run that has been active for `elapsed`.
    pub(crate) fn new(e: EngineFigures, elapsed: std::time::Duration) -> Self {
        Progress {
            requests_sent: e.requests_sent,
            retries: e.retries,
            throttled_429: e.throttled_429,
            token_refreshes: e.token_refreshes,
            elapsed_ms: elapsed.as_millis() as u64,
        }
    }
}

/// Why a resume is refused (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The directory has no run.json.
    #[error(
        "nothing to resume in {dir}: it has no run.json (was the run started there, and not as a dry run?)"
    )]
    NoRun {
        /// The report directory.
        dir: PathBuf,
    },
    /// A file of the earlier run could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file of the earlier run does not parse.
    #[error("{path} is not a run record of this tool: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        message: String,
    },
    /// The input's SHA-256 is not the one the run started with.
    #[error(
        "the input changed since the run in {dir} started (SHA-256 was {was}, is {now}); \
         resume with the same file, or start a new run with another --out"
    )]
    InputChanged {
        /// The report directory.
        dir: PathBuf,
        /// The SHA-256 in run.json.
        was: String,
        /// The input's SHA-256 now.
        now: String,
    },
    /// The run handled another shard (or none, or all).
    #[error(
        "the run in {dir} handled {was}, not {now}: resume it with the same --shard, \
         or start this shard with its own --out"
    )]
    ShardChanged {
        /// The report directory.
        dir: PathBuf,
        /// The earlier part's shard (`all rows` when none).
        was: String,
        /// This part's.
        now: String,
    },
    /// The input is stdin or a pipe, which cannot be read again.
    #[error("cannot resume a run that reads stdin or a pipe: give the input as a regular file")]
    Stdin,
    /// A new run was pointed at a directory that already holds one.
    #[error(
        "{dir} already holds a run's reports; add --resume to continue it, or choose another --out"
    )]
    Exists {
        /// The report directory.
        dir: PathBuf,
    },
}

/// What the earlier part's results.csv says, read once on `--resume`
/// ([`scan_results`]).
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The rows intake skips (successes) or replays (rejections); the
    /// successes' results.csv lines are kept as they are.
    pub(crate) earlier: Earlier,
    /// Rows the earlier part recorded `rejected` or `invalid`. Their outcomes
    /// come back in this part (replayed, or validated again), but the earlier
    /// part's circuit breaker already judged them: counting them again would
    /// fill its window with old errors while the successes are skipped.
    pub(crate) judged: RowSet,
    /// Counts of the kept lines.
    pub(crate) kept_counts: Counts,
    /// The kept lines' successes, as `state import` would read them back.
    pub(crate) successes: Successes,
}

/// Why results.csv could not be scanned: reading the old file, or writing
/// its kept lines.
#[derive(Debug)]
pub(crate) enum ScanError {
    Read(io::Error),
    Write(io::Error),
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl RunMeta {
    /// Refuse to resume the run in `dir` with another input (`input_sha256`)
    /// or another shard (`None`: all rows).
    pub(crate) fn check(
        &self,
        dir: &Path,
        input_sha256: &str,
        shard: Option<&str>,
    ) -> Result<(), ResumeError> {
        if self.input_sha256 != input_sha256 {
            return Err(ResumeError::InputChanged {
                dir: dir.to_path_buf(),
                was: self.input_sha256.clone(),
                now: input_sha256.to_string(),
            });
        }
        if self.shard.as_deref() != shard {
            let name = |s: Option<&str>| s.map_or("all rows".to_string(), |s| format!("shard {s}"));
            return Err(ResumeError::ShardChanged {
                dir: dir.to_path_buf(),
                was: name(self.shard.as_deref()),
                now: name(shard),
            });
        }
        Ok(())
    }

    /// When the run first started; `None` when run.json's time does not parse.
    pub(crate) fn started(&self) -> Option<jiff::Timestamp> {
        self.started.parse().ok()
    }
}

/// Read results.csv records; a torn last line (a crash mid-write) is
/// dropped, and a row keeps its first final line, which is copied verbatim
/// to `kept`. `rebase` is told of each line, in order, and whether it is
/// kept.
pub(crate) fn scan_results<R: BufRead, W: Write>(
    rdr: R,
    rebase: &mut timeline::Rebase,
    kept: &mut W,
) -> Result<Scan, ScanError> {
    let mut scan = Scan::default();
    let mut results = ResultsReader::own(rdr).map_err(ScanError::Read)?;
    while let Some(rec) = results.next_record().map_err(ScanError::Read)? {
        let (Some(row), Some(status)) = (rec.row(), rec.status()) else {
            rebase.line(None);
            continue;
        };
        if scan.earlier.done.contains(row) || scan.earlier.rejected.contains_key(&row) {
            rebase.line(None);
            continue;
        }
        let is_kept = status.is_done();
        rebase.line(is_kept.then_some(status));
        if is_kept {
            write_kept(kept, &rec).map_err(ScanError::Write)?;
            scan.successes.lines += 1;
            scan.successes.note(row, status);
            if rec.long_distance() == Some(true) {
                scan.kept_counts.add_long_distance();
            }
        }
        match status {
            Status::Created
            | Status::Exists
            | Status::Duplicate
            | Status::Unchanged
            | Status::Changed
            | Status::Updated => {
                scan.earlier.done.insert(row);
                scan.kept_counts.add(status);
            }
            Status::Rejected => {
                scan.judged.insert(row);
                scan.earlier.rejected.insert(
                    row,
                    Rejected {
                        user_id: rec.user_id().to_string(),
                        http_status: rec.http_status(),
                        attempts: rec.attempts().unwrap_or(0),
                        error: rec.error().to_string(),
                    },
                );
            }
            // Validated again, or sent again.
            Status::Invalid => scan.judged.insert(row),
            Status::Failed | Status::Valid => {}
        }
    }
    Ok(scan)
}

/// Copy a kept line verbatim, a line of an older build (without the
/// address columns) padded with empty ones so the file stays rectangular
/// under the current header.
fn write_kept<W: Write>(kept: &mut W, rec: &ResultRecord<'_>) -> std::io::Result<()> {
    let line = rec.line();
    let missing = RESULTS_HEADER.len().saturating_sub(rec.width());
    if missing == 0 {
        return kept.write_all(line);
    }
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    kept.write_all(body)?;
    kept.write_all(",".repeat(missing).as_bytes())?;
    kept.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_results_csv_is_kept_padded_and_long_distance_counted() {
        let text = "row,user_id,status,http_status,attempts,error,duration_ms\n\
                    1,u1,created,200,1,,5\n\
                    2,u2,failed,503,6,HTTP 503,900\n";
        let mut kept = Vec::new();
        let Ok(s) = scan_results(text.as_bytes(), &mut timeline::Rebase::default(), &mut kept)
        else {
            panic!("scan")
        };
        assert!(s.earlier.done.contains(1) && !s.earlier.done.contains(2));
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            "1,u1,created,200,1,,5,,,\n"
        );

        let text = "row,user_id,status,http_status,attempts,error,duration_ms,\
                    validated_address_line_1,validated_postal_code,long_distance_delivery\n\
                    1,u1,created,200,1,,5,1 Ice Rd,99501,true\n\
                    2,u2,created,200,1,,5,,,\n\
                    3,u3,created,200,1,,5,2 Main St,94105,false\n";
        let mut kept = Vec::new();
        let Ok(s) = scan_results(text.as_bytes(), &mut timeline::Rebase::default(), &mut kept)
        else {
            panic!("scan")
        };
        assert_eq!(s.kept_counts.get(Status::Created), 3);
        assert_eq!(s.kept_counts.long_distance(), 1);
        assert!(
            String::from_utf8(kept)
                .unwrap()
                .starts_with("1,u1,created,200,1,,5,1 Ice Rd,99501,true\n")
        );
    }

    #[test]
    fn scan_keeps_final_rows_and_drops_a_torn_line() {
        let text = "row,user_id,status,http_status,attempts,error,duration_ms\n\
                    1,u1,created,200,1,,5\n\
                    2,u2,failed,503,6,HTTP 503,900\n\
                    3,u3,rejected,400,1,first_name: bad,4\n\
                    4,u4,invalid,,0,user_id: required,0\n\
                    5,u5,exists,400,2,,7\n\
                    6,u6,crea";
        let mut kept = Vec::new();
        let Ok(s) = scan_results(text.as_bytes(), &mut timeline::Rebase::default(), &mut kept)
        else {
            panic!("scan")
        };
        assert!(s.earlier.done.contains(1) && s.earlier.done.contains(5));
        assert!(
            !s.earlier.done.contains(2)
                && !s.earlier.done.contains(4)
                && !s.earlier.done.contains(6)
        );
        assert_eq!(s.earlier.rejected[&3].error, "first_name: bad");
        assert_eq!(s.kept_counts.get(Status::Created), 1);
        assert!(s.successes.created.contains(1) && s.successes.exists.contains(5));
        assert_eq!(s.successes.lines, 2);
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            // A file from before the address columns: its lines padded.
            "1,u1,created,200,1,,5,,,\n5,u5,exists,400,2,,7,,,\n"
        );
    }

    #[test]
    fn meta_refuses_another_input_or_shard() {
        let meta = RunMeta {
            tool_version: "x".into(),
            input_path: "in.csv".into(),
            input_sha256: "abc".into(),
            started: "t".into(),
            shard: Some("2/4".into()),
        };
        let dir = Path::new("out");
        assert!(matches!(
            meta.check(dir, "def", Some("2/4")),
            Err(ResumeError::InputChanged { .. })
        ));
        for other in [None, Some("1/4"), Some("2/3")] {
            let err = meta.check(dir, "abc", other).unwrap_err();
            assert!(matches!(err, ResumeError::ShardChanged { .. }), "{other:?}");
        }
        assert!(meta.check(dir, "abc", Some("2/4")).is_ok());
        assert_eq!(meta.started(), None);
    }
}
