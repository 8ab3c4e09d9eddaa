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

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::results::{Lines, ResultsReader};
use super::timeline;
use super::{Counts, EngineFigures, ReportError, write_json_atomic};
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
    /// The input is stdin, which cannot be read again.
    #[error("cannot resume a run that reads stdin: give the input as a file")]
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

/// What the earlier part of a run left behind.
#[derive(Debug, Default)]
pub(crate) struct ResumeState {
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
    /// Request figures of the earlier part.
    pub(crate) prior: EngineFigures,
    /// Active time of the earlier part.
    pub(crate) prior_elapsed: std::time::Duration,
    /// When the run first started (run.json).
    pub(crate) started: Option<jiff::Timestamp>,
    /// The earlier parts' timeline, agreeing with the kept lines
    /// ([`timeline::Rebase`]).
    pub(crate) timeline: Vec<timeline::Second>,
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

/// Write `run.json` in `dir`.
pub fn write_meta(dir: &Path, meta: &RunMeta) -> Result<(), ReportError> {
    write_json_atomic(&dir.join("run.json"), meta)
}

/// Write `progress.json` in `dir`.
pub(crate) fn write_progress(dir: &Path, p: Progress) -> Result<(), ReportError> {
    write_json_atomic(&dir.join("progress.json"), &p)
}

/// Refuse to start a fresh run over an earlier live run's reports (a dry
/// run's reports are reproducible and may be overwritten).
pub(crate) fn check_fresh(dir: &Path) -> Result<(), ResumeError> {
    if dir.join("run.json").exists() {
        return Err(ResumeError::Exists {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Load what a resume needs from `dir`, checking the input's hash and the
/// shard (`None`: all rows).
pub(crate) fn load(
    dir: &Path,
    input_sha256: &str,
    shard: Option<&str>,
) -> Result<ResumeState, ResumeError> {
    let meta = read_meta(dir)?;
    if meta.input_sha256 != input_sha256 {
        return Err(ResumeError::InputChanged {
            dir: dir.to_path_buf(),
            was: meta.input_sha256,
            now: input_sha256.to_string(),
        });
    }
    if meta.shard.as_deref() != shard {
        let name = |s: Option<&str>| s.map_or("all rows".to_string(), |s| format!("shard {s}"));
        return Err(ResumeError::ShardChanged {
            dir: dir.to_path_buf(),
            was: name(meta.shard.as_deref()),
            now: name(shard),
        });
    }
    let progress = read_progress(dir);
    let prior_elapsed = std::time::Duration::from_millis(progress.elapsed_ms);
    let old = timeline::read(dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the earlier timeline; it starts again");
        Vec::new()
    });
    let mut rebase = timeline::Rebase::new(old, prior_elapsed);
    let mut state = read_results(&dir.join("results.csv"), &mut rebase)?;
    state.prior = EngineFigures::from(progress);
    state.prior_elapsed = prior_elapsed;
    state.timeline = rebase.finish(&state.prior);
    state.started = meta.started.parse::<jiff::Timestamp>().ok();
    Ok(state)
}

/// `run.json` of `dir`; without one there is nothing to resume.
fn read_meta(dir: &Path) -> Result<RunMeta, ResumeError> {
    let meta_path = dir.join("run.json");
    match std::fs::read(&meta_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ResumeError::Corrupt {
            path: meta_path.clone(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ResumeError::NoRun {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(ResumeError::Read {
            path: meta_path,
            source: e,
        }),
    }
}

/// `progress.json` of `dir`; zero figures when it is missing or unreadable.
fn read_progress(dir: &Path) -> Progress {
    match std::fs::read(dir.join("progress.json")) {
        Ok(bytes) => serde_json::from_slice::<Progress>(&bytes).unwrap_or_default(),
        Err(_) => Progress::default(),
    }
}

/// What the results.csv at `path` says was done; nothing when it is missing.
fn read_results(path: &Path, rebase: &mut timeline::Rebase) -> Result<ResumeState, ResumeError> {
    let read_err = |source| ResumeError::Read {
        path: path.to_path_buf(),
        source,
    };
    match File::open(path) {
        Ok(f) => scan_results(BufReader::new(f), rebase).map_err(read_err),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ResumeState::default()),
        Err(e) => Err(read_err(e)),
    }
}

/// Read results.csv records; a torn last line (a crash mid-write) is
/// dropped, and a row keeps its first final line. `rebase` is told of each
/// line, in order, and whether it is kept.
fn scan_results<R: BufRead>(rdr: R, rebase: &mut timeline::Rebase) -> io::Result<ResumeState> {
    let mut state = ResumeState::default();
    let mut results = ResultsReader::own(rdr)?;
    while let Some(rec) = results.next_record()? {
        let (Some(row), Some(status)) = (rec.row(), rec.status()) else {
            rebase.line(None);
            continue;
        };
        if state.earlier.done.contains(row) || state.earlier.rejected.contains_key(&row) {
            rebase.line(None);
            continue;
        }
        let kept = status.is_done();
        rebase.line(kept.then_some(status));
        match status {
            Status::Created
            | Status::Exists
            | Status::Duplicate
            | Status::Unchanged
            | Status::Changed => {
                state.earlier.done.insert(row);
                state.kept_counts.add(status);
            }
            Status::Rejected => {
                state.judged.insert(row);
                state.earlier.rejected.insert(
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
            Status::Invalid => state.judged.insert(row),
            Status::Failed | Status::Valid => {}
        }
    }
    Ok(state)
}

/// Copy the lines of `state.earlier.done` rows from the old results file `old` to
/// `w` (the first line of each row, as `scan_results` counted it).
pub(crate) fn copy_kept(old: &Path, w: &mut impl Write, state: &ResumeState) -> io::Result<()> {
    let mut lines = Lines::new(BufReader::new(File::open(old)?));
    let mut copied = RowSet::default();
    lines.next_line()?; // header
    while let Some(line) = lines.next_line()? {
        let row = line
            .iter()
            .position(|&b| b == b',')
            .and_then(|i| std::str::from_utf8(&line[..i]).ok())
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(row) = row
            && state.earlier.done.contains(row)
            && !copied.contains(row)
        {
            copied.insert(row);
            w.write_all(line)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_keeps_final_rows_and_drops_a_torn_line() {
        let text = "row,user_id,status,http_status,attempts,error,duration_ms\n\
                    1,u1,created,200,1,,5\n\
                    2,u2,failed,503,6,HTTP 503,900\n\
                    3,u3,rejected,400,1,first_name: bad,4\n\
                    4,u4,invalid,,0,user_id: required,0\n\
                    5,u5,exists,400,2,,7\n\
                    6,u6,crea";
        let s = scan_results(text.as_bytes(), &mut timeline::Rebase::default()).unwrap();
        assert!(s.earlier.done.contains(1) && s.earlier.done.contains(5));
        assert!(
            !s.earlier.done.contains(2)
                && !s.earlier.done.contains(4)
                && !s.earlier.done.contains(6)
        );
        assert_eq!(s.earlier.rejected[&3].error, "first_name: bad");
        assert_eq!(s.kept_counts.get(Status::Created), 1);
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("results.csv");
        std::fs::write(&old, text).unwrap();
        let mut out = Vec::new();
        copy_kept(&old, &mut out, &s).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1,u1,created,200,1,,5\n5,u5,exists,400,2,,7\n"
        );
    }

    #[test]
    fn load_refuses_a_changed_input_and_a_missing_run() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load(dir.path(), "abc", None),
            Err(ResumeError::NoRun { .. })
        ));
        write_meta(
            dir.path(),
            &RunMeta {
                tool_version: "x".into(),
                input_path: "in.csv".into(),
                input_sha256: "abc".into(),
                started: "t".into(),
                shard: Some("2/4".into()),
            },
        )
        .unwrap();
        assert!(matches!(
            load(dir.path(), "def", Some("2/4")),
            Err(ResumeError::InputChanged { .. })
        ));
        for other in [None, Some("1/4"), Some("2/3")] {
            let err = load(dir.path(), "abc", other).unwrap_err();
            assert!(matches!(err, ResumeError::ShardChanged { .. }), "{other:?}");
        }
        let s = load(dir.path(), "abc", Some("2/4")).unwrap();
        assert!(s.earlier.done.is_empty());
        assert!(matches!(
            check_fresh(dir.path()),
            Err(ResumeError::Exists { .. })
        ));
    }
}
