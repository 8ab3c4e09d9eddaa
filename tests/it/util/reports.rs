//! The reports of a run read back as data ([`Reports`]), and the checks
//! every scenario ends on ([`Reports::assert_consistent`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use connect_provision::report::{RESULTS_HEADER, Summary};
use connect_provision::sandbox::Sandbox;
use serde::Deserialize;
use serde_json::Value;

use super::sandbox::assert_sandbox_matches;

/// One row of results.csv (docs/reports.md: Reports).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ResultRow {
    pub row: u64,
    pub user_id: String,
    pub status: String,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub error: String,
    pub duration_ms: u64,
    /// The address columns (issue #20): empty for rows without an address.
    #[serde(default)]
    pub validated_address_line_1: String,
    #[serde(default)]
    pub validated_postal_code: String,
    #[serde(default)]
    pub long_distance_delivery: String,
}

/// The report directory (`--out`) of a run.
pub struct Reports {
    dir: PathBuf,
}

/// What [`Reports::assert_consistent`] read, checked.
pub struct Consistent {
    pub rows: Vec<ResultRow>,
    pub summary: Summary,
    pub timeline: Vec<BTreeMap<String, String>>,
}

impl Reports {
    /// The reports in `dir`.
    pub fn at(dir: impl AsRef<Path>) -> Reports {
        Reports {
            dir: dir.as_ref().to_owned(),
        }
    }

    /// `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    #[track_caller]
    fn text(&self, name: &str) -> String {
        let path = self.path(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// results.csv parsed, its header checked.
    #[track_caller]
    pub fn results(&self) -> Vec<ResultRow> {
        let path = self.path("results.csv");
        let mut rdr = csv::Reader::from_path(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let header = rdr.headers().expect("results.csv header").clone();
        assert_eq!(
            header.iter().collect::<Vec<_>>(),
            RESULTS_HEADER,
            "{}",
            path.display()
        );
        rdr.deserialize()
            .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .collect()
    }

    /// summary.json as the library's own [`Summary`].
    #[track_caller]
    pub fn summary(&self) -> Summary {
        let text = self.text("summary.json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("summary.json: {e}\n{text}"))
    }

    /// summary.json as untyped JSON, for the tests of its shape (field
    /// names, fields present or absent) rather than its values.
    #[track_caller]
    pub fn summary_json(&self) -> Value {
        let text = self.text("summary.json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("summary.json: {e}\n{text}"))
    }

    /// failures.csv as raw records (UTF-8 BOM stripped; `delimiter` as the
    /// run used it). The first record is the header.
    #[track_caller]
    pub fn failures(&self, delimiter: u8) -> Vec<csv::ByteRecord> {
        let path = self.path("failures.csv");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(body)
            .byte_records()
            .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .collect()
    }

    /// failures.csv of a comma-separated UTF-8 input as text: its header
    /// and its records.
    #[track_caller]
    pub fn failure_records(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut recs = self.failures(b',').into_iter().map(|r| {
            r.iter()
                .map(|f| String::from_utf8(f.to_vec()).expect("UTF-8 failures.csv"))
                .collect::<Vec<String>>()
        });
        let header = recs.next().expect("failures.csv header");
        (header, recs.collect())
    }

    /// results.csv up to its last complete line (a crash may leave a torn
    /// one; a run that never started leaves none).
    fn journal_text(&self) -> String {
        let text = std::fs::read_to_string(self.path("results.csv")).unwrap_or_default();
        match text.rfind('\n') {
            Some(i) => text[..=i].to_string(),
            None => String::new(),
        }
    }

    /// The data rows durably recorded so far.
    pub fn journal_rows(&self) -> u64 {
        (self.journal_text().lines().count() as u64).saturating_sub(1)
    }

    /// The complete rows of results.csv so far, parsed.
    pub fn journal(&self) -> Vec<ResultRow> {
        csv::Reader::from_reader(self.journal_text().as_bytes())
            .deserialize()
            .map(|r| r.expect("a complete results.csv line"))
            .collect()
    }

    /// The data lines of results.csv of rows reported created/exists, verbatim.
    pub fn success_lines(&self) -> BTreeSet<String> {
        self.journal_text()
            .lines()
            .skip(1)
            .filter(|l| l.contains(",created,") || l.contains(",exists,"))
            .map(str::to_string)
            .collect()
    }

    /// timeline.csv parsed back: its per-second columns must sum to
    /// summary.json's counts and request figures exactly, its seconds must
    /// increase, and its parts must count up from 1 without a gap
    /// (docs/reports.md: Reports, `timeline.csv`).
    #[track_caller]
    pub fn timeline(&self) -> Vec<BTreeMap<String, String>> {
        let summary = self.summary();
        let path = self.path("timeline.csv");
        let mut rdr = csv::Reader::from_path(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let lines: Vec<BTreeMap<String, String>> = rdr
            .deserialize()
            .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .collect();
        let sum = |col: &str| -> u64 {
            lines
                .iter()
                .map(|l| {
                    l[col]
                        .parse::<u64>()
                        .unwrap_or_else(|e| panic!("{col}: {e}"))
                })
                .sum()
        };
        for (status, n) in &summary.counts {
            assert_eq!(sum(status), *n, "timeline sum of {status}");
        }
        assert_eq!(sum("sent"), summary.requests_sent, "timeline sum of sent");
        assert_eq!(sum("throttled_429"), summary.throttled_429, "429s");
        assert_eq!(sum("retries"), summary.retries, "retries");
        assert_eq!(sum("token_refreshes"), summary.token_refreshes, "refreshes");
        let seconds: Vec<u64> = lines.iter().map(|l| l["second"].parse().unwrap()).collect();
        assert!(
            seconds.windows(2).all(|w| w[0] < w[1]),
            "seconds must increase: {seconds:?}"
        );
        // 429s taken for noise are some of the 429s (counted when the window
        // they fell in was judged, so not always in the same second).
        assert!(sum("noise_429") <= summary.throttled_429, "noise_429");
        let mut parts: Vec<u32> = lines.iter().map(|l| l["part"].parse().unwrap()).collect();
        parts.dedup();
        assert_eq!(parts, (1..=parts.len() as u32).collect::<Vec<_>>(), "parts");
        lines
    }

    /// The checks a finished run of `n_rows` data rows ends on (README:
    /// Reports; ARCHITECTURE: Invariants):
    /// - results.csv holds every data row 1..=n exactly once;
    /// - summary.json's counts add up to n, match results.csv status by
    ///   status, and `rows_read` is n;
    /// - failures.csv holds one record for each `invalid`, `rejected` and
    ///   `failed` row;
    /// - timeline.csv adds up to summary.json ([`Reports::timeline`]).
    #[track_caller]
    pub fn assert_consistent(&self, n_rows: u64) -> Consistent {
        let rows = self.results();
        assert_each_row_once(&rows, n_rows);
        let summary = self.summary();
        let total: u64 = summary.counts.values().sum();
        assert_eq!(total, n_rows, "summary counts sum: {:?}", summary.counts);
        let counts = status_counts(&rows);
        for (status, v) in &summary.counts {
            assert_eq!(
                *v,
                counts.get(status).copied().unwrap_or(0),
                "count of {status}"
            );
        }
        assert_eq!(summary.rows_read, n_rows, "rows_read");
        let failing: u64 = ["invalid", "rejected", "failed"]
            .iter()
            .map(|s| counts.get(*s).copied().unwrap_or(0))
            .sum();
        let failures = self.failures(b',').len().saturating_sub(1) as u64;
        assert_eq!(
            failures, failing,
            "failures.csv records vs rows that failed"
        );
        let timeline = self.timeline();
        Consistent {
            rows,
            summary,
            timeline,
        }
    }
}

impl Reports {
    /// [`Reports::assert_consistent`] for a live run against `sb`, which
    /// must hold exactly the users of the rows reported created/exists,
    /// none created twice.
    #[track_caller]
    pub fn assert_live(&self, sb: &Sandbox, n_rows: u64) -> Consistent {
        let checked = self.assert_consistent(n_rows);
        assert_sandbox_matches(sb, &checked.rows);
        checked
    }
}

/// Rows per status in `results`.
pub fn status_counts(results: &[ResultRow]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r.status.clone()).or_insert(0) += 1;
    }
    m
}

/// The user ids of the rows with `status`.
pub fn ids_with(rows: &[ResultRow], status: &str) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| r.status == status)
        .map(|r| r.user_id.clone())
        .collect()
}

/// The row with number `row`.
#[track_caller]
pub fn result_row(results: &[ResultRow], row: u64) -> &ResultRow {
    results
        .iter()
        .find(|r| r.row == row)
        .unwrap_or_else(|| panic!("no row {row} in results: {results:#?}"))
}

/// docs/reports.md: Reports ("one line for every data row of the input, exactly
/// once"): every data row 1..=n appears exactly once.
#[track_caller]
pub fn assert_each_row_once(results: &[ResultRow], n_rows: u64) {
    let mut seen = vec![0u32; n_rows as usize + 1];
    for r in results {
        assert!(
            (1..=n_rows).contains(&r.row),
            "row {} outside 1..={n_rows}: {r:?}",
            r.row
        );
        seen[r.row as usize] += 1;
    }
    let wrong: Vec<(usize, u32)> = seen
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, n)| **n != 1)
        .map(|(i, n)| (i, *n))
        .collect();
    assert!(
        wrong.is_empty(),
        "rows not present exactly once (row, times): {wrong:?}"
    );
    assert_eq!(results.len() as u64, n_rows);
}
