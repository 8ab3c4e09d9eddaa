//! Fuzz the input path: raw bytes → `InputReader` (BOM sniffing, transcoding,
//! CSV parsing, header resolution) → `Intake` (validation, duplicates).
//!
//! The first input byte picks the read options (encoding, delimiter, limit,
//! a column mapping); the rest is the file. Beyond "no panic", it checks:
//! rows are numbered 1, 2, 3… with no gap, `rows_read` agrees, the loop
//! ends (never more rows than bytes), and every payload about to be sent
//! obeys the validation rules (trimmed non-empty user_id without control
//! characters, a first name without forbidden characters, E.164 phones).
//!
//! Run: cargo +nightly fuzz run reader -- -max_total_time=60
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use connect_provision::api::model::FORBIDDEN_NAME_CHARS;
use connect_provision::input::{
    ColumnSpec, Field, InputReader, InputSource, ReadOptions, encoding_for_label,
};
use connect_provision::intake::{Intake, Step};
use connect_provision::validate::{ValidateOptions, Validator};
use libfuzzer_sys::fuzz_target;

/// One scratch file per fuzzing process (tmpfs when available).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("connect-provision-fuzz-{}.csv", std::process::id()))
    })
}

fn options(sel: u8) -> (ReadOptions, ValidateOptions) {
    let encoding = match sel & 0b11 {
        0 | 1 => None,
        2 => encoding_for_label("windows-1252").unwrap(),
        _ => encoding_for_label("utf-16le").unwrap(),
    };
    let delimiter = [b',', b';', b'\t', b'|'][usize::from((sel >> 2) & 0b11)];
    let limit = if sel & 0b1_0000 != 0 {
        Some(u64::from(sel >> 5))
    } else {
        None
    };
    let mut columns = ColumnSpec::default();
    if sel & 0b10_0000 != 0 {
        columns.map(Field::UserId, "Customer ID");
        columns.map(Field::FirstName, "Given Name");
    }
    let validate = if sel & 0b100_0000 != 0 {
        ValidateOptions::new("GB", Some("en-GB")).unwrap_or_default()
    } else {
        ValidateOptions::default()
    };
    (
        ReadOptions {
            encoding,
            delimiter,
            columns,
            limit,
        },
        validate,
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (opts, vopts) = options(sel);
    let path = scratch();
    {
        let mut f = std::fs::File::create(path).expect("scratch file");
        f.write_all(body).expect("write scratch file");
    }
    let reader = match InputReader::open(InputSource::Path(path.clone()), &opts) {
        Ok(r) => r,
        Err(e) => {
            // A whole-file error must render as a message.
            let _ = e.to_string();
            return;
        }
    };
    assert!(!reader.headers().is_empty());
    let validator = Validator::new(vopts, reader.columns().clone(), reader.headers().to_vec());
    let mut intake = Intake::new(reader, validator);
    let mut rows = 0u64;
    loop {
        let step = match intake.next_step() {
            Ok(None) => break,
            Ok(Some(step)) => step,
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        };
        rows += 1;
        match step {
            Step::Local(o, _) => {
                assert_eq!(o.row, rows, "rows numbered without gaps");
                assert!(o.error.as_deref().is_some_and(|e| !e.is_empty()));
            }
            Step::Send { row, payload, .. } => {
                assert_eq!(row, rows, "rows numbered without gaps");
                let user = payload.user();
                assert!(!user.user_id.is_empty());
                assert_eq!(user.user_id.trim(), user.user_id);
                assert!(!user.user_id.chars().any(char::is_control));
                assert!(!user.first_name.is_empty());
                for name in std::iter::once(&user.first_name).chain(user.last_name.as_ref()) {
                    assert_eq!(name.trim(), name.as_str());
                    assert!(!name.chars().any(|c| FORBIDDEN_NAME_CHARS.contains(&c)));
                    assert!(!name.chars().any(char::is_control));
                }
                if let Some(p) = &user.phone_number {
                    assert!(p.starts_with('+') && p[1..].bytes().all(|b| b.is_ascii_digit()));
                }
                if let Some(l) = &user.locale {
                    assert!(!l.is_empty() && !l.contains('_'));
                }
            }
        }
        // Each data row consumes at least one byte of input.
        assert!(rows <= body.len() as u64 + 1, "more rows than bytes");
    }
    if let Some(limit) = opts.limit {
        assert!(rows <= limit);
    }
    assert_eq!(intake.reader().rows_read(), rows);
});
