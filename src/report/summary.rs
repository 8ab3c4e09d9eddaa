//! summary.json: counts per status and the run's figures, and the exit code
//! that follows from them (the exit-code table in README "The nightly recipe").

use serde::{Deserialize, Serialize};

use crate::exit::Exit;
use crate::outcome::Status;

/// Rows per status, and the addresses the partner flagged long-distance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts([u64; Status::ALL.len()], u64);

impl Counts {
    /// Count one row.
    pub(crate) fn add(&mut self, status: Status) {
        self.0[status.index()] += 1;
    }

    /// Count one validated address flagged `long_distance_delivery`.
    pub(crate) fn add_long_distance(&mut self) {
        self.1 += 1;
    }

    /// Validated addresses flagged `long_distance_delivery`.
    pub(crate) fn long_distance(&self) -> u64 {
        self.1
    }

    /// Rows with `status`.
    pub(crate) fn get(&self, status: Status) -> u64 {
        self.0[status.index()]
    }

    /// All rows counted.
    pub(crate) fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `created=3 exists=1 ...` for non-zero counts.
    pub(crate) fn brief(&self) -> String {
        brief(Status::ALL.map(|st| (st.as_str(), self.get(st))))
    }

    fn to_map(self) -> std::collections::BTreeMap<String, u64> {
        Status::ALL
            .into_iter()
            .map(|st| (st.as_str().to_string(), self.get(st)))
            .collect()
    }
}

/// `k=n` for each non-zero `n`, space-separated, in the order given: the one
/// way the bar, the logs and the end-of-run line print figures.
pub(crate) fn brief<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let mut out = String::new();
    for (k, n) in pairs.into_iter().filter(|(_, n)| *n > 0) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&n.to_string());
    }
    out
}

/// How a run ended, beyond its per-row counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Every row reached a final status.
    Finished,
    /// A signal or the time budget stopped intake (exit 130).
    Interrupted,
    /// Credentials refused or the target unreachable (exit 3).
    Fatal,
}

/// The exit code (README "The nightly recipe") for a run's counts and ending.
fn exit_code(counts: &Counts, ending: Ending) -> u8 {
    exit(counts, ending).code()
}

/// How a run with these counts that ended so exits.
fn exit(counts: &Counts, ending: Ending) -> Exit {
    match ending {
        Ending::Interrupted => Exit::Interrupted,
        Ending::Fatal => Exit::Fatal,
        Ending::Finished => {
            if counts.get(Status::Invalid) > 0 || counts.get(Status::Rejected) > 0 {
                Exit::FixData
            } else if counts.get(Status::Failed) > 0 {
                Exit::RetryLater
            } else {
                Exit::Success
            }
        }
    }
}

/// Figures gathered by the engine (all zero in a dry run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EngineFigures {
    /// Create requests sent, retries included.
    pub requests_sent: u64,
    /// Backoff delays taken (retries after a transient failure).
    pub retries: u64,
    /// Answers 429.
    pub throttled_429: u64,
    /// Access tokens fetched after the first.
    pub token_refreshes: u64,
}

impl EngineFigures {
    /// Figures of two parts of one run, added.
    pub(crate) fn plus(&self, o: &EngineFigures) -> EngineFigures {
        EngineFigures {
            requests_sent: self.requests_sent + o.requests_sent,
            retries: self.retries + o.retries,
            throttled_429: self.throttled_429 + o.throttled_429,
            token_refreshes: self.token_refreshes + o.token_refreshes,
        }
    }
}

/// The rate a live run used, as summary.json gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateSummary {
    /// `fixed` or `auto`.
    pub mode: String,
    /// A rate safe to start the next night from (`--rate-start`): the fixed
    /// rate, or with `auto` the highest rate held without a 429 over the last
    /// minute, below the latest ceiling (exec::adapt::Controller::safe_rate).
    pub final_per_second: f64,
    /// `--rate-max` with `auto`.
    pub max_per_second: Option<u32>,
}

/// The input, as summary.json names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputInfo {
    /// The input as given (`<stdin>` for stdin).
    pub path: String,
    /// SHA-256 of its bytes, in hex.
    pub sha256: String,
}

/// `--shard`, as summary.json names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSummary {
    /// This run's shard, 1-based.
    pub index: u32,
    /// How many shards the input is split into.
    pub count: u32,
}

/// summary.json, field for field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// The input read.
    pub input: InputInfo,
    /// Whether nothing was sent.
    pub dry_run: bool,
    /// The target, as named in messages.
    pub target: Option<String>,
    /// When the run started (RFC 3339).
    pub started: String,
    /// When it finished (RFC 3339).
    pub finished: String,
    /// Seconds the run was active.
    pub elapsed_seconds: f64,
    /// Data rows read (with `--shard`: this shard's).
    pub rows_read: u64,
    /// With `--shard`: which shard this run handled; its counts cover only
    /// that shard's rows.
    #[serde(default)]
    pub shard: Option<ShardSummary>,
    /// Rows per final status.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Validated addresses the partner flagged `long_distance_delivery`
    /// (more than 30 minutes from the closest stores). 0 in a summary
    /// written before addresses.
    #[serde(default)]
    pub long_distance_delivery: u64,
    /// Create requests sent, retries included.
    pub requests_sent: u64,
    /// Backoff delays taken (retries after a transient failure).
    pub retries: u64,
    /// Answers 429.
    pub throttled_429: u64,
    /// Access tokens fetched after the first.
    pub token_refreshes: u64,
    /// Requests sent per second of the run's elapsed time.
    pub achieved_rps: f64,
    /// Rows brought to a final status per second.
    pub rows_per_second: f64,
    /// The rate of a live run (absent in a dry run).
    pub rate: Option<RateSummary>,
    /// Whether the run was cut short (signal or time budget).
    pub interrupted: bool,
    /// The error that ended the run, if one did.
    pub fatal_error: Option<String>,
    /// The process's exit code.
    pub exit_code: u8,
}

/// What `Summary::build` needs.
pub(crate) struct SummaryParts<'a> {
    pub(crate) input: InputInfo,
    pub(crate) dry_run: bool,
    pub(crate) target: Option<String>,
    pub(crate) started: jiff::Timestamp,
    pub(crate) finished: jiff::Timestamp,
    pub(crate) elapsed: std::time::Duration,
    pub(crate) rows_read: u64,
    pub(crate) shard: Option<ShardSummary>,
    pub(crate) counts: &'a Counts,
    pub(crate) engine: EngineFigures,
    pub(crate) rate: Option<RateSummary>,
    pub(crate) ending: Ending,
    pub(crate) fatal_error: Option<String>,
}

impl Summary {
    /// Assemble the summary and its exit code.
    pub(crate) fn build(p: SummaryParts<'_>) -> Summary {
        let secs = p.elapsed.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Summary {
            tool_version: crate::VERSION.to_string(),
            input: p.input,
            dry_run: p.dry_run,
            target: p.target,
            started: p.started.to_string(),
            finished: p.finished.to_string(),
            elapsed_seconds: (secs * 1000.0).round() / 1000.0,
            rows_read: p.rows_read,
            shard: p.shard,
            counts: p.counts.to_map(),
            long_distance_delivery: p.counts.long_distance(),
            requests_sent: p.engine.requests_sent,
            retries: p.engine.retries,
            throttled_429: p.engine.throttled_429,
            token_refreshes: p.engine.token_refreshes,
            achieved_rps: (per_sec(p.engine.requests_sent) * 100.0).round() / 100.0,
            rows_per_second: (per_sec(p.counts.total()) * 100.0).round() / 100.0,
            rate: p.rate,
            interrupted: p.ending == Ending::Interrupted,
            fatal_error: p.fatal_error,
            exit_code: exit_code(p.counts, p.ending),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(list: &[(Status, u64)]) -> Counts {
        let mut c = Counts::default();
        for &(st, n) in list {
            for _ in 0..n {
                c.add(st);
            }
        }
        c
    }

    #[test]
    fn exit_codes_follow_the_spec() {
        use Status::*;
        let ok = counts(&[
            (Created, 3),
            (Exists, 1),
            (Duplicate, 1),
            (Unchanged, 1),
            (Changed, 1),
        ]);
        assert_eq!(exit_code(&ok, Ending::Finished), 0);
        assert_eq!(exit_code(&counts(&[(Valid, 5)]), Ending::Finished), 0);
        assert_eq!(
            exit_code(&counts(&[(Created, 3), (Invalid, 1)]), Ending::Finished),
            1
        );
        assert_eq!(
            exit_code(&counts(&[(Rejected, 1), (Failed, 2)]), Ending::Finished),
            1
        );
        assert_eq!(
            exit_code(&counts(&[(Created, 1), (Failed, 2)]), Ending::Finished),
            75
        );
        assert_eq!(exit_code(&ok, Ending::Interrupted), 130);
        assert_eq!(exit_code(&counts(&[(Invalid, 1)]), Ending::Fatal), 3);
    }

    #[test]
    fn brief_lists_non_zero_counts() {
        let c = counts(&[(Status::Created, 2), (Status::Invalid, 1)]);
        assert_eq!(c.brief(), "created=2 invalid=1");
        assert_eq!(c.total(), 3);
    }
}
