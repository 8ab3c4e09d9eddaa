//! timeline.csv: one line per second of the run, kept by the recorder.
//!
//! Each line holds what happened in that second: rows recorded per status,
//! requests sent, 429s, retries, token refreshes (the deltas of the run's
//! counters), and a sample of the limiter's rate, the requests in flight and
//! the request latency percentiles (from the engine's histogram, reset each
//! second). Memory stays flat: only the open second is held, and closed
//! lines wait in a small buffer until the next checkpoint writes them.
//!
//! Invariants the reports rely on:
//! - the outcome columns sum to results.csv's counts, and the request
//!   columns to summary.json's figures, over every part of a resumed run;
//! - closed lines are written only at a checkpoint, *after* progress.json,
//!   so after a crash the timeline never counts more requests than
//!   progress.json; on `--resume` ([`Rebase`]) the earlier lines' outcomes
//!   are recounted from the kept lines of results.csv and the missing
//!   request figures are added to their last second.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::EngineFigures;
use crate::outcome::Status;

/// The statuses, in [`Status::ALL`] order. On a line, the first
/// [`MID_STATUSES`] sit between the lead and the tail, and `updated`
/// (issue #20), newer, comes last, after the tail.
pub(crate) const STATUS_NAMES: [&str; 10] = [
    "created",
    "exists",
    "invalid",
    "duplicate",
    "rejected",
    "failed",
    "valid",
    "unchanged",
    "changed",
    "updated",
];

/// The statuses written between the lead and the tail.
const MID_STATUSES: usize = 9;

/// The columns before the statuses.
const LEAD: [&str; 4] = ["second", "unix_time", "part", "sent"];
/// The columns after the statuses.
const TAIL: [&str; 10] = [
    "throttled_429",
    "retries",
    "token_refreshes",
    "rate",
    "in_flight",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "ceiling",
    "noise_429",
];

/// A line written before `ceiling` and `noise_429` (an older build's run,
/// resumed by this one) lacks them.
const OLD_TAIL: usize = 8;
/// A line written before `updated` ends with the tail.
const LAST: usize = 1;

/// One second of the run: a line of timeline.csv.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Second {
    /// Seconds of active run time since the run started (continues across
    /// a resumed run).
    pub(crate) second: u64,
    /// Wall-clock UTC seconds at the start of this second.
    pub(crate) unix_time: i64,
    /// 1 for the first part of the run, 2 after the first `--resume`, …
    pub(crate) part: u32,
    /// Requests sent this second (retries included).
    pub(crate) sent: u64,
    /// Rows recorded this second per status, in [`STATUS_NAMES`] order.
    pub(crate) outcomes: [u64; 10],
    /// 429 answers this second.
    pub(crate) throttled_429: u64,
    /// Retries (backoff waits) this second.
    pub(crate) retries: u64,
    /// Access tokens fetched this second.
    pub(crate) token_refreshes: u64,
    /// The limiter's rate (requests/s); `None` in a dry run.
    pub(crate) rate: Option<f64>,
    /// Requests in flight when the second closed.
    pub(crate) in_flight: u64,
    /// p50, p95, p99 of the latency of requests answered this second (ms);
    /// `None` when none was.
    pub(crate) latency_ms: Option<[f64; 3]>,
    /// `--rate auto`: the rate last pushed back, which the rate holds under.
    pub(crate) ceiling: Option<f64>,
    /// `--rate auto`: 429s this second the controller took for noise (no
    /// cut, no ceiling).
    pub(crate) noise_429: u64,
}

/// What the run reports when a second closes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Sample {
    /// The run's request figures so far, earlier parts included.
    pub(crate) figures: EngineFigures,
    /// The limiter's rate; `None` in a dry run.
    pub(crate) rate: Option<f64>,
    /// Requests in flight.
    pub(crate) in_flight: u64,
    /// Latency percentiles since the last sample (ms).
    pub(crate) latency_ms: Option<[f64; 3]>,
    /// `--rate auto`'s ceiling.
    pub(crate) ceiling: Option<f64>,
    /// 429s taken for noise since the last sample.
    pub(crate) noise_429: u64,
}

impl Second {
    fn figures(&self) -> [u64; 4] {
        [
            self.sent,
            self.throttled_429,
            self.retries,
            self.token_refreshes,
        ]
    }

    fn set_figures(&mut self, f: [u64; 4]) {
        [
            self.sent,
            self.throttled_429,
            self.retries,
            self.token_refreshes,
        ] = f;
    }

    /// The line, `\n` included (numbers only: nothing to quote).
    fn write_line(&self, out: &mut String) {
        let _ = write!(
            out,
            "{},{},{},{}",
            self.second, self.unix_time, self.part, self.sent
        );
        for n in &self.outcomes[..MID_STATUSES] {
            let _ = write!(out, ",{n}");
        }
        let _ = write!(
            out,
            ",{},{},{},",
            self.throttled_429, self.retries, self.token_refreshes
        );
        if let Some(r) = self.rate {
            let _ = write!(out, "{r:.1}");
        }
        let _ = write!(out, ",{}", self.in_flight);
        match self.latency_ms {
            Some([a, b, c]) => {
                let _ = write!(out, ",{a:.2},{b:.2},{c:.2},");
            }
            None => out.push_str(",,,,"),
        }
        if let Some(c) = self.ceiling {
            let _ = write!(out, "{c:.1}");
        }
        let _ = writeln!(out, ",{},{}", self.noise_429, self.outcomes[MID_STATUSES]);
    }

    /// A line read back; `None` when it is not one (a torn last line).
    fn parse(line: &str) -> Option<Second> {
        let cells: Vec<&str> = line.trim_end().split(',').collect();
        let head = LEAD.len() + MID_STATUSES;
        let old = cells.len() == head + OLD_TAIL;
        let with_updated = cells.len() == head + TAIL.len() + LAST;
        if cells.len() != head + TAIL.len() && !old && !with_updated {
            return None;
        }
        let int = |i: usize| cells[i].parse::<u64>().ok();
        let float = |i: usize| match cells[i] {
            "" => Some(None),
            s => s.parse::<f64>().ok().filter(|f| f.is_finite()).map(Some),
        };
        let mut outcomes = [0; 10];
        for (k, n) in outcomes[..MID_STATUSES].iter_mut().enumerate() {
            *n = int(LEAD.len() + k)?;
        }
        if with_updated {
            outcomes[MID_STATUSES] = int(head + TAIL.len())?;
        }
        let t = LEAD.len() + MID_STATUSES;
        let latency = match (float(t + 5)?, float(t + 6)?, float(t + 7)?) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        };
        Some(Second {
            second: int(0)?,
            unix_time: cells[1].parse().ok()?,
            part: cells[2].parse().ok()?,
            sent: int(3)?,
            outcomes,
            throttled_429: int(t)?,
            retries: int(t + 1)?,
            token_refreshes: int(t + 2)?,
            rate: float(t + 3)?,
            in_flight: int(t + 4)?,
            latency_ms: latency,
            ceiling: if old { None } else { float(t + 8)? },
            noise_429: if old { 0 } else { int(t + 9)? },
        })
    }
}

fn header_line() -> String {
    let mut h: Vec<&str> = LEAD.to_vec();
    h.extend(&STATUS_NAMES[..MID_STATUSES]);
    h.extend(TAIL);
    h.extend(&STATUS_NAMES[MID_STATUSES..]);
    h.join(",") + "\n"
}

fn figures_array(f: &EngineFigures) -> [u64; 4] {
    [
        f.requests_sent,
        f.throttled_429,
        f.retries,
        f.token_refreshes,
    ]
}

/// The text of a timeline.csv that holds `lines`: the header, then a line
/// per second.
pub(crate) fn text(lines: &[Second]) -> String {
    let mut text = header_line();
    for l in lines {
        l.write_line(&mut text);
    }
    text
}

/// Read the timeline.csv at `path`: every complete line that parses, in
/// order; empty when there is no file.
pub(crate) fn read(path: &Path) -> io::Result<Vec<Second>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    let mut rdr = BufReader::new(f);
    let mut line = String::new();
    loop {
        line.clear();
        if rdr.read_line(&mut line)? == 0 || !line.ends_with('\n') {
            return Ok(lines);
        }
        if let Some(s) = Second::parse(&line) {
            lines.push(s);
        }
    }
}

/// The earlier parts' lines of a resumed run, made to agree with what the
/// run keeps of them. Fed the earlier results.csv in file order ([`line`]:
/// each data line's status when that line is kept, `None` when its row is
/// done again in this part). results.csv and the timeline were written in
/// the same order, so the n-th line belongs to the second where the
/// timeline's running count of rows reaches n; lines past the timeline's end
/// (recorded after its last checkpoint) go to its last second, and so do the
/// request figures the timeline is short of ([`finish`]).
///
/// [`line`]: Rebase::line
/// [`finish`]: Rebase::finish
#[derive(Debug, Default)]
pub(crate) struct Rebase {
    lines: Vec<Second>,
    /// Rows each earlier second recorded.
    recorded: Vec<u64>,
    at: usize,
    used: u64,
}

impl Rebase {
    /// Rebase `old`, the earlier timeline (a run without one gets a single
    /// line at the end of its `prior_elapsed`).
    pub(crate) fn new(mut old: Vec<Second>, prior_elapsed: Duration) -> Rebase {
        if old.is_empty() {
            old.push(Second {
                second: prior_elapsed.as_secs().saturating_sub(1),
                part: 1,
                ..Second::default()
            });
        }
        let recorded = old.iter().map(|l| l.outcomes.iter().sum()).collect();
        for l in &mut old {
            l.outcomes = [0; 10];
        }
        Rebase {
            lines: old,
            recorded,
            at: 0,
            used: 0,
        }
    }

    /// The next data line of the earlier results.csv: its status if kept.
    pub(crate) fn line(&mut self, kept: Option<Status>) {
        while self.at + 1 < self.lines.len() && self.used >= self.recorded[self.at] {
            (self.at, self.used) = (self.at + 1, 0);
        }
        self.used += 1;
        if let (Some(st), Some(l)) = (kept, self.lines.get_mut(self.at)) {
            l.outcomes[st.index()] += 1;
        }
    }

    /// The rebased lines, their request figures topped up to `prior`.
    pub(crate) fn finish(mut self, prior: &EngineFigures) -> Vec<Second> {
        let want = figures_array(prior);
        let mut have = [0u64; 4];
        for l in &self.lines {
            for (h, n) in have.iter_mut().zip(l.figures()) {
                *h += n;
            }
        }
        if let Some(last) = self.lines.last_mut() {
            let mut f = last.figures();
            for k in 0..4 {
                f[k] = (f[k] + want[k]).saturating_sub(have[k]);
            }
            last.set_figures(f);
        }
        self.lines
    }
}

/// The timeline being written: the open second, and closed lines waiting
/// for the next checkpoint.
pub(crate) struct Timeline {
    path: PathBuf,
    /// `None` once a write failed: the run goes on without its timeline.
    file: Option<File>,
    part: u32,
    /// When this part started.
    start: Instant,
    started_unix: i64,
    /// The second number of this part's first second.
    first_second: u64,
    /// The open second, `open` seconds after `start`.
    current: Second,
    open: u64,
    /// The figures at the last closed second.
    last: [u64; 4],
    pending: String,
}

impl Timeline {
    /// The timeline written to `file` (at `path`), which holds the header
    /// and the `earlier` lines of a resumed run (already [`Rebase`]d; none
    /// on a fresh run): this part's seconds follow them, and the earlier
    /// parts' request figures (`prior`) and active time (`prior_elapsed`).
    pub(crate) fn new(
        path: PathBuf,
        file: File,
        earlier: &[Second],
        prior: EngineFigures,
        prior_elapsed: Duration,
    ) -> Timeline {
        let part = earlier.iter().map(|l| l.part).max().unwrap_or(0) + 1;
        let first_second = earlier
            .last()
            .map_or(0, |l| l.second + 1)
            .max(prior_elapsed.as_secs());
        let started_unix = jiff::Timestamp::now().as_second();
        Timeline {
            path,
            file: Some(file),
            part,
            start: Instant::now(),
            started_unix,
            first_second,
            current: Second {
                second: first_second,
                unix_time: started_unix,
                part,
                ..Second::default()
            },
            open: 0,
            last: figures_array(&prior),
            pending: String::new(),
        }
    }

    /// A row was recorded now.
    pub(crate) fn note(&mut self, status: Status) {
        self.current.outcomes[status.index()] += 1;
    }

    /// Whether the open second is over at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) >= Duration::from_secs(self.open + 1)
    }

    /// How long until the open second is over.
    pub(crate) fn until_due(&self, now: Instant) -> Duration {
        (self.start + Duration::from_secs(self.open + 1)).saturating_duration_since(now)
    }

    /// Close the open second with `sample` (and, when the recorder was held
    /// up, the empty seconds since); returns the line closed with the sample.
    pub(crate) fn close(&mut self, now: Instant, sample: &Sample) -> Second {
        let figures = figures_array(&sample.figures);
        let mut delta = [0; 4];
        for k in 0..4 {
            delta[k] = figures[k].saturating_sub(self.last[k]);
        }
        self.last = figures;
        let mut line = std::mem::take(&mut self.current);
        line.set_figures(delta);
        line.rate = sample.rate;
        line.in_flight = sample.in_flight;
        line.latency_ms = sample.latency_ms;
        line.ceiling = sample.ceiling;
        line.noise_429 = sample.noise_429;
        line.write_line(&mut self.pending);
        let elapsed = now.saturating_duration_since(self.start).as_secs();
        self.open += 1;
        while self.open < elapsed {
            self.blank(&line).write_line(&mut self.pending);
            self.open += 1;
        }
        self.current = self.blank(&line);
        line
    }

    /// An empty second at `self.open`, sampled as `like`.
    fn blank(&self, like: &Second) -> Second {
        Second {
            second: self.first_second + self.open,
            unix_time: self.started_unix + self.open as i64,
            part: self.part,
            rate: like.rate,
            in_flight: like.in_flight,
            ..Second::default()
        }
    }

    /// Write the closed lines (after progress.json: see the module doc),
    /// fsynced when `sync`. A failure is logged once and ends the timeline;
    /// the run goes on.
    pub(crate) fn write_pending(&mut self, sync: bool) {
        let Some(f) = &mut self.file else {
            self.pending.clear();
            return;
        };
        let written = f
            .write_all(self.pending.as_bytes())
            .and_then(|()| if sync { f.sync_data() } else { Ok(()) });
        self.pending.clear();
        if let Err(e) = written {
            tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "cannot write the timeline; the run goes on without it"
            );
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-status sums of `lines`.
    fn sum_outcomes(lines: &[Second]) -> [u64; 10] {
        let mut sum = [0; 10];
        for l in lines {
            for (s, n) in sum.iter_mut().zip(l.outcomes) {
                *s += n;
            }
        }
        sum
    }

    /// A timeline at `path` holding `earlier`, as the run directory opens it.
    fn open(
        path: &Path,
        earlier: &[Second],
        prior: EngineFigures,
        prior_elapsed: Duration,
    ) -> Timeline {
        std::fs::write(path, text(earlier)).unwrap();
        let f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        Timeline::new(path.to_path_buf(), f, earlier, prior, prior_elapsed)
    }

    fn figures(sent: u64, t429: u64) -> EngineFigures {
        EngineFigures {
            requests_sent: sent,
            throttled_429: t429,
            ..EngineFigures::default()
        }
    }

    #[test]
    fn status_columns_follow_status_order() {
        let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, STATUS_NAMES);
    }

    #[test]
    fn a_line_reads_back_as_written() {
        let mut s = Second {
            second: 7,
            unix_time: 1_700_000_000,
            part: 2,
            sent: 40,
            throttled_429: 2,
            retries: 3,
            token_refreshes: 1,
            rate: Some(39.5),
            in_flight: 12,
            latency_ms: Some([1.5, 20.25, 80.0]),
            ceiling: Some(41.0),
            noise_429: 1,
            ..Second::default()
        };
        s.outcomes[Status::Created.index()] = 35;
        let mut text = String::new();
        s.write_line(&mut text);
        assert_eq!(Second::parse(&text), Some(s.clone()));
        s.rate = None;
        s.latency_ms = None;
        s.ceiling = None;
        text.clear();
        s.write_line(&mut text);
        assert_eq!(Second::parse(&text), Some(s.clone()));
        assert_eq!(Second::parse("1,2,3"), None);
        assert_eq!(Second::parse(&header_line()), None);
        // A line of a build before `updated` (issue #20) resumes with 0.
        s.outcomes[Status::Updated.index()] = 4;
        text.clear();
        s.write_line(&mut text);
        assert!(text.ends_with(",1,4\n"), "{text}");
        assert_eq!(Second::parse(&text), Some(s.clone()));
        let before_updated = text.trim_end().rsplitn(2, ',').last().unwrap().to_string() + "\n";
        s.outcomes[Status::Updated.index()] = 0;
        assert_eq!(Second::parse(&before_updated), Some(s.clone()));
        // A line of an older build, without ceiling and noise_429, resumes.
        let old = text.trim_end().rsplitn(4, ',').last().unwrap().to_string() + "\n";
        s.noise_429 = 0;
        assert_eq!(Second::parse(&old), Some(s));
    }

    #[test]
    fn closing_fills_skipped_seconds_and_takes_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeline.csv");
        let mut t = open(&path, &[], EngineFigures::default(), Duration::ZERO);
        let t0 = t.start;
        t.note(Status::Created);
        t.note(Status::Invalid);
        let s = Sample {
            figures: figures(5, 1),
            rate: Some(10.0),
            in_flight: 3,
            latency_ms: Some([1.0, 2.0, 3.0]),
            ceiling: Some(12.0),
            noise_429: 1,
        };
        let first = t.close(t0 + Duration::from_millis(3500), &s);
        assert_eq!((first.second, first.sent, first.throttled_429), (0, 5, 1));
        t.note(Status::Created);
        let s2 = Sample {
            figures: figures(9, 1),
            ..s
        };
        t.close(t0 + Duration::from_millis(4100), &s2);
        t.write_pending(false);
        let lines = read(&path).unwrap();
        let seconds: Vec<u64> = lines.iter().map(|l| l.second).collect();
        assert_eq!(seconds, [0, 1, 2, 3]);
        assert_eq!(lines[3].sent, 4);
        assert_eq!(lines[1].latency_ms, None);
        let sums = sum_outcomes(&lines);
        assert_eq!(sums[Status::Created.index()], 2);
        assert_eq!(sums[Status::Invalid.index()], 1);
        assert_eq!(lines.iter().map(|l| l.sent).sum::<u64>(), 9);
    }

    #[test]
    fn rebase_recounts_outcomes_from_the_kept_lines_and_tops_up_figures() {
        let line = |second, created, failed, sent| {
            let mut l = Second {
                second,
                part: 1,
                sent,
                ..Second::default()
            };
            l.outcomes[Status::Created.index()] = created;
            l.outcomes[Status::Failed.index()] = failed;
            l
        };
        // 3 rows in second 0 (one failed), 2 in second 1, then a line past
        // the timeline's end.
        let old = vec![line(0, 2, 1, 4), line(1, 2, 0, 2)];
        let kept = [
            Some(Status::Created),
            None,
            Some(Status::Created),
            Some(Status::Created),
            Some(Status::Created),
            Some(Status::Exists),
        ];
        let prior = figures(10, 0);
        let rebase = |old, kept: &[Option<Status>], secs| {
            let mut r = Rebase::new(old, Duration::from_secs(secs));
            for &k in kept {
                r.line(k);
            }
            r.finish(&prior)
        };
        let out = rebase(old, &kept, 2);
        assert_eq!(out[0].outcomes[Status::Created.index()], 2);
        assert_eq!(out[0].outcomes[Status::Failed.index()], 0);
        assert_eq!(out[1].outcomes[Status::Created.index()], 2);
        assert_eq!(out[1].outcomes[Status::Exists.index()], 1);
        assert_eq!(out.iter().map(|l| l.sent).sum::<u64>(), 10);
        let none = rebase(Vec::new(), &[Some(Status::Created)], 5);
        assert_eq!((none.len(), none[0].second, none[0].sent), (1, 4, 10));
    }

    #[test]
    fn resume_continues_after_the_earlier_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = vec![Second {
            second: 4,
            part: 1,
            ..Second::default()
        }];
        let path = dir.path().join("timeline.csv");
        let mut t = open(&path, &earlier, figures(3, 0), Duration::from_secs(9));
        let t0 = t.start;
        let l = t.close(
            t0 + Duration::from_millis(1000),
            &Sample {
                figures: figures(5, 0),
                ..Sample::default()
            },
        );
        assert_eq!((l.second, l.part, l.sent), (9, 2, 2));
        t.write_pending(true);
        assert_eq!(read(&path).unwrap().len(), 2);
    }
}
