//! `run --dry-run` through the real binary: reading every kind of input,
//! the three reports, and exit codes (README: Input format, Reports, and the
//! exit codes of The nightly recipe). Each test builds its own input in a scratch directory and
//! reads the reports back as data.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::util::{Reports, ResultRow, Run, TestDir, csv_bytes, result_row, sample, status_counts};

const HEADER: &[&str] = &[
    "user_id",
    "first_name",
    "last_name",
    "phone_number",
    "locale",
];

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// `(row, status)` of every result, in row order.
fn statuses(results: &[ResultRow]) -> Vec<(u64, &str)> {
    let mut v: Vec<(u64, &str)> = results.iter().map(|r| (r.row, r.status.as_str())).collect();
    v.sort();
    v
}

/// Windows-1252 bytes of `s`, whose characters must be ASCII or Latin-1
/// letters (U+00A0..=U+00FF, where windows-1252 and Unicode agree).
fn cp1252(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| {
            let n = c as u32;
            assert!(n < 0x80 || (0xA0..=0xFF).contains(&n), "{c:?}");
            n as u8
        })
        .collect()
}

// docs/reports.md: Reports; exit codes as in The nightly recipe. The sample has 8
// invalid and 2 duplicate rows by design.
#[test]
fn sample_customers_dry_run_reports_every_row_once() {
    let t = TestDir::new();
    let input = sample("customers.csv");
    let dir = t.join("out");
    let out = Run::dry(&input).out(&dir).output();
    out.expect_code(1)
        .expect_stdout("dry run: 200 rows")
        .expect_stdout("failures.csv");

    // Every row once; summary.json, failures.csv and timeline.csv agree
    // with results.csv.
    let done = Reports::at(&dir).assert_consistent(200);
    let (results, s) = (&done.rows, &done.summary);
    let by_status = status_counts(results);
    assert_eq!(
        by_status,
        counts(&[("duplicate", 2), ("invalid", 8), ("valid", 190)])
    );
    for r in results {
        assert_eq!(r.attempts, 0, "{r:?}");
        assert_eq!(r.http_status, None, "{r:?}");
        assert_eq!(r.error.is_empty(), r.status == "valid", "{r:?}");
    }

    // A dry run samples no rate and no latency.
    for line in &done.timeline {
        assert_eq!((line["rate"].as_str(), line["p50_ms"].as_str()), ("", ""));
    }

    // summary.json's field names: its shape, read untyped.
    let raw = Reports::at(&dir).summary_json();
    for key in [
        "tool_version",
        "input",
        "dry_run",
        "target",
        "started",
        "finished",
        "elapsed_seconds",
        "rows_read",
        "counts",
        "requests_sent",
        "retries",
        "throttled_429",
        "token_refreshes",
        "achieved_rps",
        "exit_code",
    ] {
        assert!(raw.get(key).is_some(), "summary.json has no {key}: {raw:#}");
    }
    // A dry run has no target: the field is there, as null.
    assert_eq!(raw["target"], serde_json::Value::Null);

    assert_eq!(s.tool_version, connect_provision::VERSION);
    assert!(s.dry_run);
    assert_eq!(s.target, None);
    assert_eq!(s.input.path, input.to_str().unwrap());
    let sha = hex::encode(Sha256::digest(std::fs::read(&input).unwrap()));
    assert_eq!(s.input.sha256, sha);
    assert_eq!(s.exit_code, 1);
    assert_eq!(
        (
            s.requests_sent,
            s.retries,
            s.throttled_429,
            s.token_refreshes
        ),
        (0, 0, 0, 0),
        "engine figures in a dry run"
    );
    assert!(s.elapsed_seconds >= 0.0);
    assert!(s.achieved_rps >= 0.0);
    let started: jiff::Timestamp = s.started.parse().unwrap();
    let finished: jiff::Timestamp = s.finished.parse().unwrap();
    assert!(started <= finished);

    // Every status has a count (zero included).
    let summary_counts = &s.counts;
    for status in [
        "created",
        "exists",
        "invalid",
        "duplicate",
        "rejected",
        "failed",
        "valid",
        "unchanged",
        "changed",
    ] {
        assert_eq!(
            summary_counts.get(status).copied(),
            Some(by_status.get(status).copied().unwrap_or(0)),
            "count of {status}"
        );
    }

    // failures.csv: the invalid rows only (duplicates are not failures).
    let failures = Reports::at(&dir).failures(b',');
    assert_eq!(failures.len(), 1 + 8);
    assert_eq!(
        failures[0].iter().collect::<Vec<_>>(),
        [
            &b"user_id"[..],
            b"first_name",
            b"last_name",
            b"phone_number",
            b"locale",
            b"error_status",
            b"error_message"
        ]
    );
    assert!(failures[1..].iter().all(|r| &r[5] == b"invalid"));
}

// README: Input format, Config file and precedence. windows-1252, ';' and
// renamed columns, all from a config file.
#[test]
fn sample_export_reads_with_its_mapping_config() {
    let t = TestDir::new();
    let input = sample("customers_export.csv");
    let config = sample("mapping.toml");
    let dir = t.join("out");
    let out = Run::dry(&input)
        .out(&dir)
        .args(["--config", config.to_str().unwrap()])
        .output();
    out.expect_code(1);
    let results = Reports::at(&dir).assert_consistent(40).rows;
    assert_eq!(
        status_counts(&results),
        counts(&[("invalid", 1), ("valid", 39)])
    );
    assert_eq!(result_row(&results, 23).error, "first_name: required");
    for r in &results {
        assert!(!r.error.contains("UTF-8"), "{r:?}");
    }
    // RX-000025 is José: a non-ASCII name is valid, not an encoding error.
    let jose = result_row(&results, 25);
    assert_eq!(
        (jose.user_id.as_str(), jose.status.as_str()),
        ("RX-000025", "valid")
    );

    // failures.csv is UTF-8: the invalid row's cells come through transcoded,
    // with the input's own header and delimiter.
    let failures = Reports::at(&dir).failures(b';');
    assert_eq!(failures.len(), 2);
    assert_eq!(&failures[0][0], b"Customer ID");
    assert_eq!(&failures[1][0], b"RX-000023");

    // Without the encoding the same accented rows are invalid UTF-8: the
    // config's `encoding` is what made them valid.
    let dir = t.join("no-encoding");
    let out = Run::dry(&input)
        .out(&dir)
        .args([
            "--delimiter",
            ";",
            "--map",
            "user_id=Customer ID",
            "--map",
            "first_name=Given Name",
        ])
        .output();
    out.expect_code(1);
    let jose = result_row(&Reports::at(&dir).results(), 25).clone();
    assert_eq!(jose.status, "invalid");
    assert!(
        jose.error.contains("invalid UTF-8 in column 'Given Name'"),
        "{jose:?}"
    );
}

// A dry run is where a bad file is meant to be found: however many rows are
// invalid, it judges every one and exits 1. The circuit breaker guards a
// live run's partner, not a dry run.
#[test]
fn a_dry_run_of_a_mostly_invalid_file_is_not_cut_short() {
    let t = TestDir::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for i in 0..1000 {
        // Every row but each tenth has no first_name.
        let name = if i % 10 == 0 { "Ann" } else { "" };
        rows.push(vec![
            format!("u{i}"),
            name.into(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    let mut all: Vec<&[&str]> = vec![HEADER];
    let refs: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    all.extend(refs.iter().map(Vec::as_slice));
    let input = t.write_csv("in.csv", &all);
    let dir = t.join("out");
    let out = Run::dry(&input).out(&dir).output();
    out.expect_code(1).expect_stdout("invalid=900 valid=100");
    let summary = Reports::at(&dir).assert_consistent(1000).summary;
    assert_eq!(summary.exit_code, 1);
    assert_eq!(summary.fatal_error, None);
}

// docs/reports.md: Reports (`valid` is a success), The nightly recipe (exit 0).
#[test]
fn clean_file_is_all_valid_and_exits_0() {
    let t = TestDir::new();
    let input = t.write_csv(
        "in.csv",
        &[
            HEADER,
            &["u1", "john", "smith", "800-555-0100", "EN-us"],
            &["u2", "Zoë", "", "", ""],
            &[" u3 ", " Ann ", "O'Neil", "+1 (415) 555-0155", "fr-CA"],
        ],
    );
    let dir = t.join("out");
    let out = Run::dry(&input).out(&dir).output();
    out.expect_code(0).expect_stdout("valid=3");
    let results = Reports::at(&dir).assert_consistent(3).rows;
    assert!(results.iter().all(|r| r.status == "valid"), "{results:#?}");
    assert_eq!(result_row(&results, 3).user_id, "u3");
    assert_eq!(Reports::at(&dir).failures(b',').len(), 1, "only the header");
    assert_eq!(Reports::at(&dir).summary().exit_code, 0);
}

// README: Input format ("A header row is required"; a file that lacks a
// required column is exit 2).
#[test]
fn empty_input_is_a_one_line_usage_error_naming_the_file() {
    let t = TestDir::new();
    for (name, bytes) in [
        ("empty.csv", &b""[..]),
        ("blank.csv", b"  \n"),
        ("bom-only.csv", b"\xEF\xBB\xBF"),
    ] {
        let input = t.write(name, bytes);
        let dir = t.join(format!("out-{name}"));
        let out = Run::dry(&input).out(&dir).output();
        out.expect_code(2).expect_stderr(name);
        assert_eq!(out.stderr().lines().count(), 1, "{out}");
        assert!(out.stderr().starts_with("error: "), "{out}");
        assert!(!dir.join("results.csv").exists(), "{name}: no reports");
    }
}

#[test]
fn header_only_is_zero_rows_and_exit_0() {
    let t = TestDir::new();
    let input = t.write("in.csv", "user_id,first_name\n");
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(0);
    assert_eq!(
        std::fs::read_to_string(dir.join("results.csv")).unwrap(),
        "row,user_id,status,http_status,attempts,error,duration_ms,\
         validated_address_line_1,validated_postal_code,long_distance_delivery\n"
    );
    assert!(Reports::at(&dir).results().is_empty());
    let s = Reports::at(&dir).summary();
    assert_eq!(s.rows_read, 0);
    assert_eq!(s.exit_code, 0);
}

// README: Input format ("A malformed record ... becomes an `invalid` row":
// a wrong field count).
#[test]
fn ragged_rows_are_invalid_and_the_rest_are_fine() {
    let t = TestDir::new();
    let input = t.write(
        "in.csv",
        "user_id,first_name,last_name\nu1,Ann,Lee\nu2,Bob,Ray,extra\nu3\nu4,Cy,Dee\nu5,Di\n",
    );
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(1);
    let results = Reports::at(&dir).assert_consistent(5).rows;
    assert_eq!(
        statuses(&results),
        [
            (1, "valid"),
            (2, "invalid"),
            (3, "invalid"),
            (4, "valid"),
            (5, "invalid")
        ]
    );
    assert!(
        result_row(&results, 2)
            .error
            .contains("expected 3 fields, found 4")
    );
    assert!(
        result_row(&results, 3)
            .error
            .contains("expected 3 fields, found 1")
    );
    assert!(
        result_row(&results, 5)
            .error
            .contains("expected 3 fields, found 2")
    );
    assert_eq!(result_row(&results, 3).user_id, "u3");
}

/// Data records of `bytes` as the csv crate counts them (the header and
/// blank records excluded), for "every row accounted for".
fn csv_record_count(bytes: &[u8]) -> u64 {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    rdr.byte_records()
        .map(|r| r.unwrap())
        .filter(|r| !(r.len() == 1 && r[0].is_empty()))
        .count() as u64
}

// README: Input format ("A malformed record does not stop the run").
#[test]
fn unterminated_quote_does_not_panic_and_every_row_is_accounted_for() {
    let t = TestDir::new();
    for (name, bytes) in [
        (
            "last.csv",
            &b"user_id,first_name\nu1,Ann\nu2,\"Bob\nu3,Cy\nu4,Di\n"[..],
        ),
        (
            "first.csv",
            b"user_id,first_name\nu1,Ann\n\"u2,Bob\nu3,Cy\n",
        ),
        ("eof.csv", b"user_id,first_name\nu1,Ann\nu2,\"Bob"),
        (
            "mid.csv",
            b"user_id,first_name\nu1,Ann\nu2,B\"o\"b\nu3,\"C\"y\"\n",
        ),
    ] {
        let input = t.write(name, bytes);
        let dir = t.join(format!("out-{name}"));
        let out = Run::dry(&input).out(&dir).output();
        assert!(
            matches!(out.code(), 0 | 1),
            "{name}: a finished run, not a panic or abort\n{out}"
        );
        assert!(!out.stderr().contains("panicked"), "{out}");
        let n = csv_record_count(bytes);
        Reports::at(&dir).assert_consistent(n);
        assert_eq!(Reports::at(&dir).summary().rows_read, n);
        assert_eq!(
            result_row(&Reports::at(&dir).results(), 1).status,
            "valid",
            "{name}"
        );
    }
}

// README: Input format: "A malformed record does not stop the run: it
// becomes an `invalid` row whose message names the problem". Regression: an unterminated quote in
// the last column swallows the rest of the file into one field whose count
// still matches; the row was reported as "contains a control character".
#[test]
fn unterminated_quote_in_last_column_names_the_quoting() {
    let t = TestDir::new();
    let input = t.write(
        "in.csv",
        "user_id,first_name\nu1,Ann\nu2,\"Bob\nu3,Cy\nu4,Di\n",
    );
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(1);
    let row = result_row(&Reports::at(&dir).results(), 2).clone();
    assert_eq!(row.status, "invalid");
    assert!(row.error.contains("quot"), "{row:?}");
}

// README: Input format (invalid UTF-8 is an `invalid` row whose message
// names the column).
#[test]
fn invalid_utf8_in_a_data_row_is_invalid_naming_the_column() {
    let t = TestDir::new();
    let input = t.write(
        "in.csv",
        &b"user_id,first_name,last_name\nu1,Ann,Lee\nu2,Bob,Mu\xFCller\nu3,Jos\xE9,X\nu4,Di,Ng\n"[..],
    );
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(1);
    let results = Reports::at(&dir).assert_consistent(4).rows;
    assert_eq!(
        statuses(&results),
        [(1, "valid"), (2, "invalid"), (3, "invalid"), (4, "valid")]
    );
    assert!(
        result_row(&results, 2)
            .error
            .contains("invalid UTF-8 in column 'last_name'"),
        "{results:#?}"
    );
    assert!(
        result_row(&results, 3)
            .error
            .contains("invalid UTF-8 in column 'first_name'"),
        "{results:#?}"
    );
    // failures.csv keeps the input's bytes verbatim.
    let failures = Reports::at(&dir).failures(b',');
    assert_eq!(&failures[1][2], b"Mu\xFCller");
}

// README: Input format (`--encoding` for legacy exports).
#[test]
fn windows_1252_with_encoding_flag_is_valid_and_transcoded() {
    let t = TestDir::new();
    let mut bytes = cp1252("user_id,first_name,last_name,Straße\n");
    bytes.extend(cp1252(
        "u1,José,Müller,x\nu2,Zoë,Ñúñez,y\nu3,Amélie/Anne,Dubois,z\n",
    ));
    let input = t.write("in.csv", &bytes);
    let dir = t.join("out");
    let out = Run::dry(&input)
        .out(&dir)
        .args(["--encoding", "windows-1252"])
        .output();
    out.expect_code(1);
    let results = Reports::at(&dir).assert_consistent(3).rows;
    assert_eq!(
        statuses(&results),
        [(1, "valid"), (2, "valid"), (3, "invalid")]
    );
    assert!(
        result_row(&results, 3)
            .error
            .starts_with("first_name: contains '/'")
    );
    // failures.csv is UTF-8, header included.
    let failures = Reports::at(&dir).failures(b',');
    assert_eq!(&failures[0][3], "Straße".as_bytes());
    assert_eq!(&failures[1][1], "Amélie/Anne".as_bytes());

    // A WHATWG alias works too.
    let out = Run::dry(&input)
        .out(t.join("latin1"))
        .args(["--encoding", "latin1"])
        .output();
    out.expect_code(1);

    // The same file read as UTF-8: the accented rows are invalid.
    let dir = t.join("utf8");
    let out = Run::dry(&input).out(&dir).output();
    out.expect_code(2)
        .expect_stderr("header row is not valid UTF-8")
        .expect_stderr("--encoding");
    assert!(!dir.join("results.csv").exists());
}

// README: Input format ("UTF-8, with or without a BOM").
#[test]
fn utf8_bom_does_not_hide_the_first_header() {
    let t = TestDir::new();
    let input = t.write("in.csv", "\u{FEFF}user_id,first_name\nu1,Ann\nu2,Zoë\n");
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(0);
    let results = Reports::at(&dir).assert_consistent(2).rows;
    assert_eq!(result_row(&results, 1).user_id, "u1");
    // The SHA-256 covers the raw bytes, BOM included.
    let sha = hex::encode(Sha256::digest(std::fs::read(&input).unwrap()));
    assert_eq!(Reports::at(&dir).summary().input.sha256, sha);
}

// README: Input format (a missing required column is exit 2).
#[test]
fn missing_required_column_is_a_usage_error_naming_it() {
    let t = TestDir::new();
    let input = t.write_csv("in.csv", &[&["user_id", "last_name"], &["u1", "Lee"]]);
    let dir = t.join("out");
    let out = Run::dry(&input).out(&dir).output();
    out.expect_code(2)
        .expect_stderr("first_name")
        .expect_stderr("in.csv");
    assert_eq!(out.error_lines().len(), 1, "{out}");
    assert!(!dir.join("results.csv").exists());

    let input = t.write_csv("in2.csv", &[&["first_name"], &["Ann"]]);
    let out = Run::dry(&input).out(t.join("out2")).output();
    out.expect_code(2).expect_stderr("'user_id'");

    // A --map names the column it expects.
    let out = Run::dry(&input)
        .out(t.join("out3"))
        .args(["--map", "user_id=Customer ID"])
        .output();
    out.expect_code(2).expect_stderr("'Customer ID'");
}

// Regression: usage errors printed their message twice, when an error both
// displayed its cause and returned it as `source()` (`{:#}` in main.rs).
#[test]
fn usage_errors_do_not_repeat_themselves() {
    let t = TestDir::new();
    let input = t.write_csv("in.csv", &[&["user_id", "last_name"], &["u1", "Lee"]]);
    let cases: [(&str, &[&str], &str); 4] = [
        ("columns", &[], "missing required column 'first_name'"),
        (
            "encoding",
            &["--encoding", "nope"],
            "unknown encoding 'nope'",
        ),
        ("region", &["--phone-region", "ZZZ"], "--phone-region 'ZZZ'"),
        (
            "locale",
            &["--default-locale", "en_US_"],
            "--default-locale 'en_US_'",
        ),
    ];
    for (name, extra, needle) in cases {
        let out = Run::dry(&input).out(t.join(name)).args(extra).output();
        out.expect_code(2).expect_stderr(needle);
        assert_eq!(
            out.stderr().matches(needle).count(),
            1,
            "{name}: message repeated\n{out}"
        );
    }
}

// README: Input format ("CRLF or LF line endings; quoted fields may contain
// delimiters, quotes and newlines").
#[test]
fn crlf_and_quoted_embedded_newlines() {
    let t = TestDir::new();
    let input = t.write(
        "in.csv",
        "user_id,first_name,notes\r\n\
         u1,Ann,\"line one\r\nline two\"\r\n\
         u2,\"Bob\nby\",plain\r\n\
         u3,\"Cy, Jr\",\"say \"\"hi\"\"\"\r\n\
         u4,Di,last\r\n",
    );
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(1);
    let results = Reports::at(&dir).assert_consistent(4).rows;
    assert_eq!(
        statuses(&results),
        [(1, "valid"), (2, "invalid"), (3, "valid"), (4, "valid")]
    );
    assert_eq!(
        result_row(&results, 2).error,
        "first_name: contains a line break (an unterminated quote takes in the rows after it: check the quoting)"
    );
    assert_eq!(result_row(&results, 4).user_id, "u4", "no stray CR");
    // The embedded newline survives verbatim in failures.csv.
    let failures = Reports::at(&dir).failures(b',');
    assert_eq!(&failures[1][1], b"Bob\nby");
}

// README: Command line, `run` (`--map FIELD=HEADER`), Input format (extra
// columns are ignored for the payload).
#[test]
fn map_flag_reads_renamed_headers() {
    let t = TestDir::new();
    let input = t.write_csv(
        "in.csv",
        &[
            &["Customer ID", "Given Name", "Surname", "Mobile", "Email"],
            &["c1", "Ann", "Lee", "415-555-0101", "a@example.com"],
            &["c2", "", "Ray", "", "b@example.com"],
        ],
    );
    let maps = [
        "user_id=Customer ID",
        "first_name=given name",
        "last_name=Surname",
        "phone_number=Mobile",
    ];
    let dir = t.join("out");
    let out = Run::dry(&input)
        .out(&dir)
        .args(maps.iter().flat_map(|m| ["--map", m]))
        .output();
    out.expect_code(1);
    let results = Reports::at(&dir).assert_consistent(2).rows;
    assert_eq!(result_row(&results, 1).status, "valid");
    assert_eq!(result_row(&results, 1).user_id, "c1");
    assert_eq!(result_row(&results, 2).error, "first_name: required");

    // Without the map the header is missing its required columns.
    let out = Run::dry(&input).out(t.join("unmapped")).output();
    out.expect_code(2).expect_stderr("user_id");
}

// README: Command line, `run` (`--delimiter`).
#[test]
fn delimiter_flag() {
    let t = TestDir::new();
    let input = t.write(
        "in.csv",
        csv_bytes(
            b';',
            &[
                HEADER,
                &["u1", "Ann", "Lee, Jr", "415-555-0101", "en-US"],
                &["u2", "Bob", "", "", ""],
            ],
        ),
    );
    let dir = t.join("out");
    let out = Run::dry(&input)
        .out(&dir)
        .args(["--delimiter", ";"])
        .output();
    out.expect_code(0);
    Reports::at(&dir).assert_consistent(2);

    // Read with the default ',' the header is one column.
    let out = Run::dry(&input).out(t.join("comma")).output();
    out.expect_code(2).expect_stderr("missing required column");

    // Tab, by name.
    let input = t.write("in.tsv", "user_id\tfirst_name\nu1\tAnn\n");
    let dir = t.join("tab");
    let out = Run::dry(&input)
        .out(&dir)
        .args(["--delimiter", "tab"])
        .output();
    out.expect_code(0);
    Reports::at(&dir).assert_consistent(1);
}

// README: Command line, `run` (`--limit N`: only the first N data rows).
#[test]
fn limit_takes_exactly_the_first_rows() {
    let t = TestDir::new();
    let mut rows: Vec<Vec<String>> = vec![vec!["user_id".into(), "first_name".into()]];
    for i in 1..=10 {
        rows.push(vec![format!("u{i}"), "Ann".into()]);
    }
    let refs: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
    let input = t.write_csv("in.csv", &slices);
    let dir = t.join("out");
    Run::dry(&input)
        .out(&dir)
        .args(["--limit", "3"])
        .output()
        .expect_code(0);
    let results = Reports::at(&dir).assert_consistent(3).rows;
    assert_eq!(
        results
            .iter()
            .map(|r| r.user_id.as_str())
            .collect::<Vec<_>>(),
        ["u1", "u2", "u3"]
    );
    assert_eq!(Reports::at(&dir).summary().rows_read, 3);
}

// README: Input format ("A `user_id` already seen in an earlier row ... is a
// `duplicate`").
#[test]
fn repeated_user_id_is_a_duplicate() {
    let t = TestDir::new();
    let input = t.write_csv(
        "in.csv",
        &[
            &["user_id", "first_name"],
            &["u1", "Ann"],
            &["u2", "Bob"],
            &[" u1 ", "Ann again"],
            &["u3", ""],
            &["u3", "Cy"],
            &["u1", "third"],
        ],
    );
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(1);
    let results = Reports::at(&dir).assert_consistent(6).rows;
    assert_eq!(
        statuses(&results),
        [
            (1, "valid"),
            (2, "valid"),
            (3, "duplicate"),
            (4, "invalid"),
            // An invalid row does not claim its user_id.
            (5, "valid"),
            (6, "duplicate")
        ]
    );
    assert!(result_row(&results, 3).error.contains("earlier row"));
    // Duplicates are not failures.
    assert_eq!(Reports::at(&dir).failures(b',').len(), 2);
}

// docs/reports.md: Reports ("all created with mode 0600").
#[cfg(unix)]
#[test]
fn report_files_are_private() {
    let t = TestDir::new();
    let input = t.write_csv("in.csv", &[&["user_id", "first_name"], &["u1", ""]]);
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(1);
    for f in ["results.csv", "failures.csv", "summary.json"] {
        assert_eq!(crate::util::mode(dir.join(f)), 0o600, "{f}");
    }
    // Also when the files already existed with wider permissions.
    for f in ["results.csv", "failures.csv", "summary.json"] {
        let wide = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644);
        std::fs::set_permissions(dir.join(f), wide).unwrap();
    }
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(1);
    for f in ["results.csv", "failures.csv", "summary.json"] {
        assert_eq!(crate::util::mode(dir.join(f)), 0o600, "{f} rewritten");
    }
}

// docs/reports.md: Reports (formula injection; the input's own cells stay verbatim in
// failures.csv).
#[test]
fn tool_cells_are_neutralised_and_input_cells_stay_verbatim() {
    let t = TestDir::new();
    let hyperlink = r#"=HYPERLINK("http://evil.example/?x","click")"#;
    let input = t.write_csv(
        "in.csv",
        &[
            &["user_id", "first_name", "phone_number"],
            &[hyperlink, "Ann", "+1 415 555 0101"],
            &["@SUM(A1)", "", "+1 415 555 0102"],
            &["-u3", "Cy", "+1 415 555 0103"],
            &["u4", "Di", ""],
        ],
    );
    let dir = t.join("out");
    Run::dry(&input).out(&dir).output().expect_code(1);
    let results = Reports::at(&dir).assert_consistent(4).rows;
    // A user_id starting with '=' is valid input; only the report cell is neutralised.
    let r1 = result_row(&results, 1);
    assert_eq!(r1.status, "valid");
    assert_eq!(r1.user_id, format!("'{hyperlink}"));
    let r2 = result_row(&results, 2);
    assert_eq!(
        (r2.user_id.as_str(), r2.status.as_str()),
        ("'@SUM(A1)", "invalid")
    );
    assert_eq!(result_row(&results, 3).user_id, "'-u3");
    assert_eq!(result_row(&results, 4).user_id, "u4");

    let failures = Reports::at(&dir).failures(b',');
    assert_eq!(failures.len(), 2);
    assert_eq!(&failures[1][0], b"@SUM(A1)");
    assert_eq!(&failures[1][2], b"+1 415 555 0102");
    assert_eq!(&failures[1][3], b"invalid");
    assert_eq!(&failures[1][4], b"first_name: required");
}

// README: The nightly recipe (exit codes 0, 1 and 2, here in a dry run).
#[test]
fn exit_codes_follow_the_data() {
    let t = TestDir::new();
    let cases: [(&str, &str, i32); 5] = [
        ("valid", "user_id,first_name\nu1,Ann\n", 0),
        ("duplicate", "user_id,first_name\nu1,Ann\nu1,Ann\n", 0),
        ("invalid", "user_id,first_name\nu1,Ann\nu2,\n", 1),
        ("header", "user_id,first_name\n", 0),
        ("unusable", "id,name\n1,Ann\n", 2),
    ];
    for (name, text, code) in cases {
        let input = t.write(format!("{name}.csv"), text);
        let dir = t.join(name);
        let out = Run::dry(&input).out(&dir).output();
        out.expect_code(code);
        if code != 2 {
            assert_eq!(
                i32::from(Reports::at(&dir).summary().exit_code),
                code,
                "{name}"
            );
        }
    }
    // An input that cannot be opened.
    let out = Run::dry(t.join("missing.csv"))
        .out(t.join("missing"))
        .output();
    out.expect_code(2).expect_stderr("missing.csv");
}

// README: Command line (`run INPUT`: a CSV file, or `-` for stdin).
#[test]
fn stdin_input() {
    let t = TestDir::new();
    let bytes = "user_id,first_name\nu1,Ann\nu2,\nu3,Zoë\n";
    let dir = t.join("out");
    Run::dry("-").out(&dir).stdin(bytes).output().expect_code(1);
    let results = Reports::at(&dir).assert_consistent(3).rows;
    assert_eq!(
        statuses(&results),
        [(1, "valid"), (2, "invalid"), (3, "valid")]
    );
    let s = Reports::at(&dir).summary();
    assert_eq!(s.input.path, "<stdin>");
    assert_eq!(
        s.input.sha256,
        hex::encode(Sha256::digest(bytes.as_bytes()))
    );
}

/// `(user_id, error)` of the invalid rows, sorted.
fn invalid_rows(results: &[ResultRow]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = results
        .iter()
        .filter(|r| r.status == "invalid")
        .map(|r| (r.user_id.clone(), r.error.clone()))
        .collect();
    v.sort();
    v
}

/// Dry run `input`, then dry run its failures.csv with the same options:
/// the same rows fail with the same messages, and nothing else is there.
fn assert_failures_round_trip(t: &TestDir, input: &Path, delimiter: u8, opts: &[&str]) {
    let first = t.join("first");
    Run::dry(input)
        .out(&first)
        .args(opts)
        .output()
        .expect_code(1);
    let first_results = Reports::at(&first).results();
    let expected = invalid_rows(&first_results);
    assert!(expected.len() >= 5, "{first_results:#?}");

    let failures_path = first.join("failures.csv");
    let failures = std::fs::read(&failures_path).unwrap();
    assert!(
        failures.starts_with(b"\xEF\xBB\xBF"),
        "failures.csv has a UTF-8 BOM"
    );
    let header = Reports::at(&first).failures(delimiter).remove(0);
    assert_eq!(
        header.iter().rev().take(2).collect::<Vec<_>>(),
        [&b"error_message"[..], b"error_status"],
        "failures.csv header, with the input's delimiter"
    );

    let second = t.join("second");
    Run::dry(&failures_path)
        .out(&second)
        .args(opts)
        .output()
        .expect_code(1);
    let second_results = Reports::at(&second)
        .assert_consistent(expected.len() as u64)
        .rows;
    assert!(
        second_results.iter().all(|r| r.status == "invalid"),
        "{second_results:#?}"
    );
    assert_eq!(invalid_rows(&second_results), expected);
    // The rows keep their order, and failures.csv reproduces itself.
    let order = |rs: &[ResultRow]| {
        rs.iter()
            .filter(|r| r.status == "invalid")
            .map(|r| r.user_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&second_results), order(&first_results));
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(second.join("failures.csv")).unwrap()),
        String::from_utf8_lossy(&failures),
        "failures.csv of the rerun is the same file"
    );
}

// README: The nightly recipe ("`failures.csv` is a valid input for another
// run"); Reports.
#[test]
fn failures_csv_round_trips() {
    let t = TestDir::new();
    let mut bytes = csv_bytes(
        b',',
        &[
            &[
                "user_id",
                "first_name",
                "last_name",
                "phone_number",
                "locale",
                "notes",
            ],
            &["ok1", "Ann", "Lee", "415-555-0101", "en-US", "keep"],
            &["bad-first", "", "Lee", "", "", "blank first name"],
            &["bad-char", "Ann/Marie", "Lee", "", "", "x"],
            &["bad-last", "Ann", "<b>", "", "", ""],
            &[
                "bad-phone",
                "Ann",
                "",
                "+1 555-0100",
                "",
                "a \"quoted\" note",
            ],
            &["bad-locale", "Ann", "", "", "en_US", "multi\nline"],
            &["", "Ann", "", "", "", "blank id"],
            &[
                "=formula",
                "",
                "",
                "+1 415 555 0102",
                "",
                "tool cells neutralised",
            ],
            &["ok2", "Bob", "", "", "", ""],
            &["ok1", "Dup", "", "", "", "duplicate, not a failure"],
            &["bad-ctrl\u{1}", "Ann", "", "", "", ""],
        ],
    );
    bytes.extend_from_slice(b"ragged-long,Ann,Lee,,,,extra\nragged-short,Ann\n");
    bytes.extend_from_slice(b"bad-utf8,Jos\xE9,,,,\nok3,Cy,,,,\n");
    let input = t.write("in.csv", &bytes);
    assert_failures_round_trip(&t, &input, b',', &[]);
}

// The same round trip for a legacy export: ';', windows-1252 and renamed
// columns from a config file. failures.csv is UTF-8 with a BOM, which must
// win over the config's `encoding = windows-1252` on the rerun.
#[test]
fn failures_csv_round_trips_through_a_windows_1252_config() {
    let t = TestDir::new();
    let config = t.write(
        "mapping.toml",
        "encoding = \"windows-1252\"\n\
         delimiter = \";\"\n\
         [columns]\n\
         user_id = \"Kunden-Nr\"\n\
         first_name = \"Vorname\"\n\
         last_name = \"Nachname\"\n\
         phone_number = \"Telefon\"\n",
    );
    let text = "Kunden-Nr;Vorname;Nachname;Telefon;Straße\n\
                K-1;José;Müller;415-555-0101;Hauptstraße 1\n\
                K-2;;Müller;;Gärtnerweg\n\
                K-3;Zoë/Anne;Ñúñez;;\n\
                K-4;Björn;Öz<;;\n\
                K-5;Amélie;Dubois;555-0100;\"Rue d'Été; 5\"\n\
                Ü-6;Çelik;;;\n\
                ;Ana;;;\n\
                K-8;Seán;;;;too many\n\
                K-9;Ève\n";
    let input = t.write("export.csv", cp1252(text));
    let cfg = config.to_str().unwrap().to_string();
    assert_failures_round_trip(&t, &input, b';', &["--config", &cfg]);

    // Both runs decode the accents the same way: the UTF-8 failures.csv
    // carries the transcoded names, header included.
    let failures = Reports::at(t.join("second")).failures(b';');
    assert_eq!(&failures[0][4], "Straße".as_bytes());
    let names: Vec<String> = failures[1..]
        .iter()
        .map(|r| String::from_utf8(r[1].to_vec()).unwrap())
        .collect();
    assert!(names.contains(&"Zoë/Anne".to_string()), "{names:?}");
    let results = Reports::at(t.join("first")).results();
    assert_eq!(result_row(&results, 1).status, "valid");
    assert_eq!(result_row(&results, 6).user_id, "Ü-6");
    assert_eq!(result_row(&results, 6).status, "valid");
}
