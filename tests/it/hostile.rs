//! Hostile input, table-driven, through the real binary with `--dry-run`
//! (README: Input format, Reports, Hostile input, secrets and transport).
//!
//! The corpus lives in `tests/hostile/` (regenerate with
//! `python3 tests/hostile/gen.py`); inputs too big to commit (a 1 MiB field,
//! a 10,000-character user_id) are written here at runtime.
//!
//! Every case ends one of two ways:
//! - a whole-file problem: exit 2, exactly one stderr line `error: …` that
//!   names the file and the problem, and no reports;
//! - a finished run (exit 0 or 1): every data record, as the csv crate
//!   counts them, appears in results.csv exactly once with the expected
//!   status, each `invalid` row with a message naming the problem.
//!
//! Never a panic (exit 101) and never a lost row.

use std::path::{Path, PathBuf};

use crate::util::{Reports, ResultRow, Run, TestDir, repo_root};

/// How one hostile input must end.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exit 2, one `error:` line containing this text, no reports.
    FileError(&'static str),
    /// Exit code, then each data row's `(status, text its error contains)`.
    Rows(i32, &'static [(&'static str, &'static str)]),
}

use Expect::{FileError, Rows};

const V: (&str, &str) = ("valid", "");
/// The last row of a file that ends inside a quoted field.
const UNTERMINATED: &str = "unterminated quote: the file ends inside a quoted field";

struct Case {
    file: &'static str,
    args: &'static [&'static str],
    expect: Expect,
}

const fn case(file: &'static str, expect: Expect) -> Case {
    Case {
        file,
        args: &[],
        expect,
    }
}

/// The committed corpus and what each file must produce.
const CASES: &[Case] = &[
    case("empty.csv", FileError("is empty: a header row is required")),
    case(
        "blank_lines_only.csv",
        FileError("is empty: a header row is required"),
    ),
    case(
        "bom_only.csv",
        FileError("is empty: a header row is required"),
    ),
    case("header_only.csv", Rows(0, &[])),
    case("header_only_no_newline.csv", Rows(0, &[])),
    // Data in the first row: it is read as the header, so user_id is missing.
    case(
        "no_header.csv",
        FileError("missing required column 'user_id'"),
    ),
    case("bom.csv", Rows(0, &[V, V])),
    case("bom_twice.csv", Rows(0, &[V])),
    case("crlf.csv", Rows(0, &[V, V])),
    case("cr_only.csv", Rows(0, &[V, V])),
    case("mixed_line_endings.csv", Rows(0, &[V, V, V])),
    case("blank_lines_between.csv", Rows(0, &[V, V])),
    // The csv crate (like spreadsheets) keeps a quote inside an unquoted
    // field as a literal character; `"Bob"by` reads as `Bobby`.
    case("stray_quotes.csv", Rows(0, &[V, V, V])),
    // The open quote takes in the rows after it: one row with too few fields.
    case(
        "unterminated_quote.csv",
        Rows(1, &[V, ("invalid", UNTERMINATED)]),
    ),
    case(
        "quoted_newline_in_name.csv",
        Rows(1, &[("invalid", "first_name: contains a line break"), V]),
    ),
    // A lone `"` line opens a quote that runs to the end of the file.
    case(
        "lone_quote_lines.csv",
        Rows(1, &[V, ("invalid", UNTERMINATED)]),
    ),
    case(
        "ragged.csv",
        Rows(
            1,
            &[
                V,
                ("invalid", "expected 3 fields, found 2"),
                ("invalid", "expected 3 fields, found 4"),
                ("invalid", "expected 3 fields, found 1"),
                ("invalid", "expected 3 fields, found 2"),
                V,
            ],
        ),
    ),
    case(
        "only_delimiters.csv",
        Rows(
            1,
            &[
                ("invalid", "user_id: required"),
                ("invalid", "user_id: required"),
            ],
        ),
    ),
    case(
        "duplicate_headers.csv",
        FileError("column 'user_id' appears more than once (columns 1 and 3)"),
    ),
    case(
        "duplicate_headers_case.csv",
        FileError("column 'first_name' appears more than once (columns 2 and 3)"),
    ),
    case("blank_header_cells.csv", Rows(0, &[V])),
    case(
        "missing_first_name_column.csv",
        FileError("missing required column 'first_name'"),
    ),
    case(
        "semicolon_read_as_comma.csv",
        FileError("missing required column 'user_id'"),
    ),
    Case {
        file: "semicolon_read_as_comma.csv",
        args: &["--delimiter", ";"],
        expect: Rows(0, &[V]),
    },
    case("header_spaces_and_case.csv", Rows(0, &[V])),
    case(
        "nul_bytes.csv",
        Rows(
            1,
            &[
                V,
                ("invalid", "user_id: contains a control character"),
                ("invalid", "first_name: contains a control character"),
                ("invalid", "last_name: contains a control character"),
                V,
            ],
        ),
    ),
    case(
        "nul_in_header.csv",
        FileError("missing required column 'first_name'"),
    ),
    case(
        "invalid_utf8.csv",
        Rows(
            1,
            &[
                V,
                ("invalid", "invalid UTF-8 in column 'last_name'"),
                ("invalid", "invalid UTF-8 in column 'user_id'"),
                ("invalid", "invalid UTF-8 in column 'first_name'"),
                V,
            ],
        ),
    ),
    case(
        "invalid_utf8_header.csv",
        FileError("the header row is not valid UTF-8 (use --encoding"),
    ),
    // Legacy bytes without --encoding: each such row says what to do.
    case(
        "windows1252.csv",
        Rows(
            1,
            &[
                (
                    "invalid",
                    "invalid UTF-8 in column 'first_name' (use --encoding",
                ),
                V,
                (
                    "invalid",
                    "invalid UTF-8 in column 'first_name' (use --encoding",
                ),
            ],
        ),
    ),
    Case {
        file: "windows1252.csv",
        args: &["--encoding", "windows-1252"],
        expect: Rows(0, &[V, V, V]),
    },
    // A UTF-16 BOM is honoured without --encoding.
    case("utf16le_bom.csv", Rows(0, &[V])),
    case(
        "binary_garbage.csv",
        FileError("missing required column 'user_id'"),
    ),
    // Formula-looking values are data: valid unless a rule forbids a
    // character (`:` and `/` are forbidden in names). results.csv
    // neutralises the user ids (checked below).
    case(
        "formula_injection.csv",
        Rows(
            1,
            &[
                V,
                V,
                ("invalid", "last_name: contains ':'"),
                ("invalid", "first_name: contains '/'"),
                V,
                V,
            ],
        ),
    ),
    // Arabic, Hebrew, CJK, emoji, and bidi/zero-width format characters
    // (Unicode category Cf: U+202E RIGHT-TO-LEFT OVERRIDE, U+200F, U+2067,
    // U+2069, U+200B). The tool refuses only category Cc ("control
    // characters"), so format characters are accepted, the same way in
    // user_id and in names. See `bidi_override_in_user_id_is_refused`.
    case(
        "unicode_rtl.csv",
        Rows(
            1,
            &[
                V,
                V,
                V,
                V,
                V,
                V,
                (
                    "invalid",
                    "user_id: contains a bidirectional control character (U+202E)",
                ),
                V,
                V,
            ],
        ),
    ),
    case(
        "control_chars.csv",
        Rows(
            1,
            &[
                ("invalid", "first_name: contains a control character"),
                ("invalid", "user_id: contains a control character"),
                // U+0085 (NEL) is Unicode white space: trimmed away.
                V,
                V,
            ],
        ),
    ),
    case(
        "forbidden_name_chars.csv",
        Rows(
            1,
            &[
                ("invalid", "first_name: contains '/'"),
                ("invalid", "first_name: contains '<'"),
                ("invalid", "last_name: contains '$'"),
                ("invalid", "first_name: contains '%'"),
                ("invalid", "first_name: contains '?'"),
                ("invalid", "first_name: contains ':'"),
                V,
            ],
        ),
    ),
    case(
        "whitespace_only_fields.csv",
        Rows(
            1,
            &[
                ("invalid", "user_id: required"),
                ("invalid", "first_name: required"),
                V,
            ],
        ),
    ),
    case(
        "duplicate_ids.csv",
        Rows(
            0,
            &[
                V,
                ("duplicate", "earlier row"),
                // user_ids are case-sensitive: `U1` is another user.
                V,
                ("duplicate", "earlier row"),
            ],
        ),
    ),
    // A line holding only `""` is an empty record; the reader skips it like
    // a blank line (see `csv_data_records`).
    case("empty_quoted_line.csv", Rows(0, &[V, V])),
];

/// Corpus files whose expectation is a known bug, checked by an ignored test.
const KNOWN_BUGS: &[&str] = &["unterminated_quote_at_eof.csv"];

fn corpus(name: &str) -> PathBuf {
    repo_root().join("tests/hostile").join(name)
}

/// Data records of `bytes` as the csv crate counts them with `delimiter`
/// (header excluded), decoding a UTF-16 file first. Records holding one
/// empty field (a `""` line) are excluded: the tool skips them like blank
/// lines, which the csv crate skips itself.
fn csv_data_records(bytes: &[u8], delimiter: u8) -> u64 {
    let decoded;
    let bytes = match encoding_rs::Encoding::for_bom(bytes) {
        Some((enc, _)) if enc != encoding_rs::UTF_8 => {
            decoded = enc.decode(bytes).0.into_owned().into_bytes();
            &decoded[..]
        }
        _ => bytes,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes);
    let n = rdr
        .byte_records()
        .map(|r| r.expect("the csv crate reads every corpus file"))
        .filter(|r| !(r.len() == 1 && r[0].is_empty()))
        .count() as u64;
    n.saturating_sub(1)
}

fn delimiter_of(args: &[&str]) -> u8 {
    args.iter()
        .position(|a| *a == "--delimiter")
        .map_or(b',', |i| args[i + 1].as_bytes()[0])
}

/// Run one input and check it ends as `expect`; returns the results.
#[track_caller]
fn check(t: &TestDir, label: &str, input: &Path, args: &[&str], expect: Expect) -> Vec<ResultRow> {
    let dir = t.join(format!("out-{label}"));
    let out = Run::dry(input)
        .out(&dir)
        .arg("--no-progress")
        .args(args)
        .output();
    assert_ne!(out.code(), 101, "{label}: panic\n{out}");
    assert!(!out.stderr().contains("panicked"), "{label}\n{out}");
    match expect {
        FileError(needle) => {
            out.expect_code(2);
            let stderr = out.stderr();
            assert_eq!(stderr.lines().count(), 1, "{label}: one line\n{out}");
            assert!(stderr.starts_with("error: "), "{label}\n{out}");
            assert!(stderr.contains(needle), "{label}: wants {needle:?}\n{out}");
            let name = input.file_name().unwrap().to_str().unwrap();
            assert!(stderr.contains(name), "{label}: names the file\n{out}");
            assert!(
                !dir.join("results.csv").exists(),
                "{label}: no reports for an unusable input"
            );
            vec![]
        }
        Rows(code, want) => {
            out.expect_code(code);
            let bytes = std::fs::read(input).unwrap();
            let n = csv_data_records(&bytes, delimiter_of(args));
            assert_eq!(n, want.len() as u64, "{label}: the table's row count");
            let results = Reports::at(&dir).assert_consistent(n).rows;
            let mut sorted = results.clone();
            sorted.sort_by_key(|r| r.row);
            for (r, (status, needle)) in sorted.iter().zip(want) {
                assert_eq!(r.status, *status, "{label}: row {}: {r:?}", r.row);
                assert!(
                    r.error.contains(needle),
                    "{label}: row {} error should contain {needle:?}: {r:?}",
                    r.row
                );
                if r.status == "invalid" {
                    assert!(!r.error.is_empty(), "{label}: {r:?}");
                    assert!(!r.error.contains('\n'), "{label}: one-line error {r:?}");
                }
            }
            let summary = Reports::at(&dir).summary();
            assert_eq!(summary.rows_read, n, "{label}");
            assert_eq!(i32::from(summary.exit_code), code, "{label}");
            // failures.csv: the header plus each invalid row, itself readable.
            let invalid = results.iter().filter(|r| r.status == "invalid").count();
            let failures = Reports::at(&dir).failures(delimiter_of(args));
            assert_eq!(failures.len(), invalid + 1, "{label}: failures.csv rows");
            results
        }
    }
}

// The whole corpus, one table.
#[test]
fn hostile_corpus_ends_cleanly() {
    let t = TestDir::new();
    for (i, c) in CASES.iter().enumerate() {
        let label = format!("{i}-{}", c.file);
        let path = corpus(c.file);
        assert!(
            path.exists(),
            "{}: run tests/hostile/gen.py",
            path.display()
        );
        check(&t, &label, &path, c.args, c.expect);
    }
}

// Every committed corpus file is in the table (a new file is not forgotten).
#[test]
fn every_corpus_file_is_in_the_table() {
    let dir = repo_root().join("tests/hostile");
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".csv") {
            assert!(
                CASES.iter().any(|c| c.file == name) || KNOWN_BUGS.contains(&name.as_str()),
                "{name} has no expectation in CASES"
            );
        }
    }
}

// docs/reports.md: Reports (formula injection). The tool's cells are neutralised, the
// input's cells in failures.csv stay verbatim.
#[test]
fn formula_values_are_neutralised_in_results_and_verbatim_in_failures() {
    let t = TestDir::new();
    let results = check(
        &t,
        "formula",
        &corpus("formula_injection.csv"),
        &[],
        CASES
            .iter()
            .find(|c| c.file == "formula_injection.csv")
            .unwrap()
            .expect,
    );
    let id = |row: u64| {
        results
            .iter()
            .find(|r| r.row == row)
            .unwrap()
            .user_id
            .clone()
    };
    assert_eq!(id(1), "'=1+2");
    assert_eq!(id(2), "'+cmd");
    assert_eq!(id(3), "'-2+3");
    assert_eq!(id(4), "'@SUM(A1)");
    // A leading tab is trimmed from the value before it is reported.
    assert_eq!(id(5), "u5");
    for r in &results {
        assert!(
            !r.user_id.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{r:?}"
        );
        assert!(
            !r.error.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{r:?}"
        );
    }
    let failures = Reports::at(t.join("out-formula")).failures(b',');
    assert_eq!(&failures[1][0], b"-2+3");
    assert_eq!(&failures[1][2], b"=HYPERLINK(\"http://x\")");
    assert_eq!(&failures[2][0], b"@SUM(A1)");
    assert_eq!(&failures[2][1], b"=cmd|' /C calc'!A0");
}

// Unicode and RTL text is kept verbatim in the reports; a bidi override in
// a user_id is refused (it would display as another id) but still reported
// as it was.
#[test]
fn unicode_and_rtl_ids_are_reported_verbatim() {
    let t = TestDir::new();
    const BIDI: (&str, &str) = (
        "invalid",
        "user_id: contains a bidirectional control character (U+202E)",
    );
    let results = check(
        &t,
        "rtl",
        &corpus("unicode_rtl.csv"),
        &[],
        Rows(1, &[V, V, V, V, V, V, BIDI, V, V]),
    );
    let r7 = results.iter().find(|r| r.row == 7).unwrap();
    assert_eq!(r7.user_id, "u\u{202E}7");
    let r6 = results.iter().find(|r| r.row == 6).unwrap();
    assert_eq!(r6.status, "valid", "names may carry bidi marks");
}

// A 1 MiB field, plain and quoted with embedded newlines and quotes; a
// 10,000-character user_id. Generated here: too big to commit.
#[test]
fn huge_fields_and_ids() {
    let t = TestDir::new();
    let mib = "A".repeat(1 << 20);
    let big = t.write(
        "big_field.csv",
        format!("user_id,first_name,last_name\nu1,{mib},Lee\nu2,Bob,Ray\n"),
    );
    check(&t, "big", &big, &[], Rows(0, &[V, V]));

    let quoted = "A,\n\"\"".repeat(1 << 18);
    let bigq = t.write(
        "big_quoted.csv",
        format!("user_id,first_name,last_name\nu1,\"{quoted}\",Lee\nu2,Bob,Ray\n"),
    );
    check(
        &t,
        "bigq",
        &bigq,
        &[],
        Rows(1, &[("invalid", "first_name: contains a line break"), V]),
    );

    let long_id = "x".repeat(10_000);
    let long = t.write(
        "long_id.csv",
        format!("user_id,first_name\n{long_id},Ann\nu2,Bob\n{long_id},Cy\n"),
    );
    let results = check(
        &t,
        "long",
        &long,
        &[],
        Rows(0, &[V, V, ("duplicate", "earlier row")]),
    );
    assert_eq!(
        results.iter().find(|r| r.row == 1).unwrap().user_id,
        long_id
    );

    // A 1 MiB header cell: still a clear one-line error.
    let bighead = t.write("big_header.csv", format!("user_id,{mib}\nu1,Ann\n"));
    let out = Run::dry(&bighead)
        .out(t.join("out-bighead"))
        .arg("--no-progress")
        .output();
    out.expect_code(2)
        .expect_stderr("missing required column 'first_name'");
    assert_eq!(out.stderr().lines().count(), 1);
}

// Unreadable input: a missing file and a directory are one-line errors.
#[test]
fn unreadable_inputs_are_one_line_errors() {
    let t = TestDir::new();
    for (label, path) in [
        ("missing", t.join("no-such-file.csv")),
        ("directory", t.path().to_path_buf()),
    ] {
        let dir = t.join(format!("out-{label}"));
        let out = Run::dry(&path).out(&dir).arg("--no-progress").output();
        out.expect_code(2);
        assert_eq!(out.stderr().lines().count(), 1, "{label}\n{out}");
        assert!(out.stderr().starts_with("error: "), "{label}\n{out}");
        assert!(!dir.join("results.csv").exists(), "{label}");
    }
}

// README: Input format ("A malformed record ... becomes an `invalid` row"). An
// unterminated quote at the very end of the file is accepted silently: the
// csv crate closes it at EOF, and the row is `valid` with `last_name = Ray`.
#[test]
fn unterminated_quote_at_eof_is_invalid() {
    let t = TestDir::new();
    check(
        &t,
        "eof",
        &corpus("unterminated_quote_at_eof.csv"),
        &[],
        Rows(1, &[V, ("invalid", "quot")]),
    );
}

// Whole-file errors echo header cells: control characters in them reach the
// operator's terminal raw (an ESC sequence can retitle or clear it), and a
// quoted header cell with a line break splits the "one-line" error.
#[test]
fn header_cells_in_errors_are_escaped() {
    let t = TestDir::new();
    let esc = t.write(
        "esc_header.csv",
        &b"\x1b]0;pwned\x07user,first\x1b[2J\nu1,Ann\n"[..],
    );
    let out = Run::dry(&esc)
        .out(t.join("out-esc"))
        .arg("--no-progress")
        .output();
    out.expect_code(2);
    assert!(
        !out.output.stderr.iter().any(|b| *b == 0x1b || *b == 0x07),
        "raw control bytes on stderr\n{out}"
    );
    let nl = t.write("nl_header.csv", "\"user\nid\",first\nu1,Ann\n");
    let out = Run::dry(&nl)
        .out(t.join("out-nl"))
        .arg("--no-progress")
        .output();
    out.expect_code(2);
    assert_eq!(out.stderr().lines().count(), 1, "one line\n{out}");
}

// A decision for the owners rather than a plain bug: bidi controls (U+202A..
// U+202E, U+2066..U+2069) are Unicode format characters (Cf), not control
// characters (Cc), so `user_id: no control characters` lets them through. In
// a user_id they make reports and consoles show a different id than the
// one sent (Trojan-Source style).
#[test]
fn bidi_override_in_user_id_is_refused() {
    let t = TestDir::new();
    let input = t.write("bidi.csv", "user_id,first_name\nu\u{202E}7,Bob\n");
    check(&t, "bidi", &input, &[], Rows(1, &[("invalid", "user_id")]));
}
