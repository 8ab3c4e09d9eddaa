//! Properties of intake and the dry run, called through the library (README:
//! Input format: a malformed record is an `invalid` row and the run goes on;
//! Reports: every data row in results.csv exactly once).

use std::io::Write;
use std::path::Path;

use clap::Parser;
use connect_provision::cli::{Cli, Command};
use connect_provision::input::{InputReader, InputSource, ReadOptions, encoding_for_label};
use connect_provision::intake::{Intake, Step};
use connect_provision::settings::{Env, RunSettings, resolve_run};
use connect_provision::validate::{ValidateOptions, Validator};
use proptest::prelude::*;

use crate::util::{Reports, assert_each_row_once};

/// No environment at all.
struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _key: &str) -> Option<String> {
        None
    }
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    f
}

/// `run INPUT --dry-run --out OUT` resolved as the binary would, minus the
/// process environment.
fn dry_run_settings(input: &Path, out: &Path, extra: &[&str]) -> RunSettings {
    let mut args = vec![
        "connect-provision",
        "run",
        input.to_str().unwrap(),
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).expect("valid command line");
    let Command::Run(run) = cli.command else {
        unreachable!("parsed a run command")
    };
    resolve_run(&run, &NoEnv, None, jiff::Timestamp::now()).expect("settings resolve")
}

/// Read every step of `bytes`; errors end the loop, panics fail the test.
fn drain(bytes: &[u8], opts: &ReadOptions) -> Result<u64, String> {
    let f = write_temp(bytes);
    let reader = InputReader::open(InputSource::Path(f.path().to_path_buf()), opts)
        .map_err(|e| e.to_string())?;
    let validator = Validator::new(
        ValidateOptions::default(),
        reader.columns().clone(),
        reader.headers().to_vec(),
    );
    let mut intake = Intake::new(reader, validator);
    let mut rows = 0u64;
    loop {
        match intake.next_step() {
            Ok(None) => break,
            Ok(Some(Step::Local(o, _))) => assert_eq!(o.row, rows + 1),
            Ok(Some(Step::Send { row, .. })) => assert_eq!(row, rows + 1),
            Err(e) => return Err(e.to_string()),
        }
        rows += 1;
        // Each data row consumes at least one byte: more rows than bytes is a loop.
        assert!(rows <= bytes.len() as u64 + 1, "more rows than input bytes");
    }
    assert_eq!(intake.reader().rows_read(), rows);
    Ok(rows)
}

fn read_options() -> impl Strategy<Value = ReadOptions> {
    (
        prop_oneof![
            Just(None),
            Just(Some("windows-1252")),
            Just(Some("utf-16le")),
            Just(Some("shift_jis")),
        ],
        prop_oneof![Just(b','), Just(b';'), Just(b'\t')],
        proptest::option::of(0u64..4),
    )
        .prop_map(|(label, delimiter, limit)| ReadOptions {
            encoding: label.and_then(|l| encoding_for_label(l).unwrap()),
            delimiter,
            limit,
            ..ReadOptions::default()
        })
}

/// Arbitrary bytes, or arbitrary bytes after a header that resolves (so the
/// data-row path is exercised too).
fn any_input() -> impl Strategy<Value = Vec<u8>> {
    let body = proptest::collection::vec(any::<u8>(), 0..512);
    prop_oneof![
        body.clone(),
        (
            prop_oneof![
                Just(&b"user_id,first_name\n"[..]),
                Just(&b"\xEF\xBB\xBFuser_id;first_name;locale\r\n"[..]),
                Just(&b"user_id\tfirst_name\tphone_number\n"[..]),
            ],
            body,
        )
            .prop_map(|(head, body)| [head, &body[..]].concat()),
    ]
}

/// One cell's bytes as written to the file: well-quoted text, or raw bytes
/// that may hold quotes, delimiters, newlines or invalid UTF-8.
fn cell() -> impl Strategy<Value = Vec<u8>> {
    let text = "[a-zA-Z0-9 ,\"\r\n;/<%éüß漢😀\u{0}\u{7f}-]{0,10}";
    prop_oneof![
        3 => "[a-zA-Z][a-zA-Z0-9]{0,8}".prop_map(String::into_bytes),
        2 => text.prop_map(|s| {
            let mut q = vec![b'"'];
            q.extend(s.replace('"', "\"\"").into_bytes());
            q.push(b'"');
            q
        }),
        2 => text.prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
        1 => Just(vec![]),
    ]
}

/// A header that resolves, then rows of 0..6 cells (so some are ragged),
/// each ended by LF, CRLF or (the last one) nothing.
fn csv_input() -> impl Strategy<Value = Vec<u8>> {
    let row = (
        proptest::collection::vec(cell(), 1..6),
        prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..])],
    );
    (
        any::<bool>(),
        proptest::collection::vec(row, 0..24),
        any::<bool>(),
    )
        .prop_map(|(bom, rows, last_newline)| {
            let mut out = vec![];
            if bom {
                out.extend_from_slice(b"\xEF\xBB\xBF");
            }
            out.extend_from_slice(b"user_id,first_name,last_name,notes\n");
            let n = rows.len();
            for (i, (cells, eol)) in rows.into_iter().enumerate() {
                out.extend(cells.join(&b','));
                if i + 1 < n || last_newline {
                    out.extend_from_slice(eol);
                }
            }
            out
        })
}

/// Data rows of `bytes` as the csv crate counts them, skipping records that
/// are one empty field (as `InputReader::read_row` does).
fn csv_data_rows(bytes: &[u8]) -> u64 {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    while rdr.read_byte_record(&mut rec).expect("in-memory csv reads") {
        if !(rec.len() == 1 && rec[0].is_empty()) {
            n += 1;
        }
    }
    n
}

/// A dry run through the library's one pipeline.
fn dry_run(
    settings: &connect_provision::settings::RunSettings,
) -> connect_provision::report::Summary {
    use connect_provision::exec::{pipeline, stop::Stop};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ui = connect_provision::progress::Ui::new(true);
    rt.block_on(pipeline::run(settings, None, Stop::new(), &ui))
        .expect("dry run finishes")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    // Whatever the bytes, opening and reading them ends in rows or an error, never a panic.
    #[test]
    fn intake_never_panics(bytes in any_input(), opts in read_options()) {
        let _ = drain(&bytes, &opts);
    }

    // docs/reports.md: Reports ("one line for every data row of the input, exactly once").
    #[test]
    fn dry_run_reports_each_csv_record_once(bytes in csv_input()) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, &bytes).unwrap();
        let out = dir.path().join("out");
        let settings = dry_run_settings(&input, &out, &[]);
        let summary = dry_run(&settings);

        let n = csv_data_rows(&bytes);
        let results = Reports::at(&out).results();
        assert_each_row_once(&results, n);
        prop_assert_eq!(summary.rows_read, n);
        prop_assert_eq!(summary.counts.values().sum::<u64>(), n);
        prop_assert!(matches!(summary.exit_code, 0 | 1));
        for r in &results {
            prop_assert!(
                ["valid", "invalid", "duplicate"].contains(&r.status.as_str()),
                "{:?}", r
            );
        }
        // failures.csv holds exactly the invalid rows, plus its header.
        let failures = Reports::at(&out).failures(b',');
        let invalid = results.iter().filter(|r| r.status == "invalid").count();
        prop_assert_eq!(failures.len(), invalid + 1);
    }
}
