//! Entry points for the fuzz targets (`fuzz/`, README "Development"): one
//! thin wrapper per parser of outside bytes, so the targets need no other
//! `pub` item. Each runs the parser as the tool runs it and panics when an
//! invariant breaks; none touches the network, and only `results_csv`
//! writes (to memory). Not an API: hidden from the docs, and it may change
//! with any commit.

use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use reqwest::StatusCode;

use crate::api::classify::{Verdict, classify};
use crate::api::client::{Attempt, read_token_answer};
use crate::api::token::{TokenOptions, deadlines};
use crate::cli::{Cli, Command};
use crate::outcome::Status;
use crate::report::errors::ErrorTally;
use crate::report::journal::scan_results;
use crate::report::results::{ResultsReader, Successes};
use crate::report::timeline::Rebase;
use crate::rowset::RowSet;
use crate::sandbox::BodyRoute;
use crate::settings::{ConfigFile, Env};

/// The Retry-After the client honours at most (`api::client`).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// results.csv as `--resume` (the run's own file: kept lines and the rows
/// to skip), `report DIR` (the failing rows' errors) and `state import`
/// (the successes) read it. Checks that a reader never yields a line twice
/// nor one the file does not hold, that resume keeps each row at most once,
/// and that a row is never both created and existing.
pub fn results_csv(data: &[u8]) {
    // Resume: the records, in file order, each a whole line of the file.
    if let Ok(mut rdr) = ResultsReader::own(data) {
        let mut end = 0;
        while let Ok(Some(rec)) = rdr.next_record() {
            let line = rec.line();
            assert_eq!(line.last(), Some(&b'\n'), "a record is a whole line");
            // Each record is a later line of the file than the last.
            loop {
                let rest = &data[end..];
                let len = rest.iter().position(|&b| b == b'\n').map(|i| i + 1);
                let Some(len) = len else {
                    panic!("a record the file does not hold after the last one");
                };
                end += len;
                if &rest[..len] == line {
                    break;
                }
            }
        }
    }
    let mut kept = Vec::new();
    if let Ok(scan) = scan_results(data, &mut Rebase::default(), &mut kept) {
        // Kept lines: one per row, and each row one the scan skips.
        let mut again = b"row\n".to_vec();
        again.extend_from_slice(&kept);
        let mut seen = RowSet::default();
        let mut rdr = ResultsReader::own(&again[..]).expect("reading memory");
        let mut n = 0;
        while let Ok(Some(rec)) = rdr.next_record() {
            n += 1;
            let row = rec.row().expect("a kept line has its row");
            assert!(!seen.contains(row), "row {row} kept twice");
            seen.insert(row);
            assert!(scan.earlier.done.contains(row));
        }
        assert_eq!(n, scan.successes.lines, "every kept line reads back");
        disjoint(data, &scan.successes);
    }
    // report DIR: the failing rows' errors.
    if let Ok(mut rdr) = ResultsReader::checked(data) {
        let mut tally = ErrorTally::default();
        while let Ok(Some(rec)) = rdr.next_record() {
            if let (Some(row), Some(status)) = (rec.row(), rec.status())
                && status.is_failure()
            {
                tally.add(rec.error(), row);
            }
        }
        let _ = tally.top(10);
    }
    // state import.
    match Successes::read(data) {
        Ok(s) => {
            disjoint(data, &s);
            assert!(s.created.len() + s.exists.len() + s.changed <= s.lines);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// No row of `data` is both created and existing in `s`.
fn disjoint(data: &[u8], s: &Successes) {
    let Ok(mut rdr) = ResultsReader::own(data) else {
        return;
    };
    while let Ok(Some(rec)) = rdr.next_record() {
        if let Some(row) = rec.row() {
            assert!(!(s.created.contains(row) && s.exists.contains(row)));
        }
    }
}

/// The environment of a fuzzed config: the secret set, so no secret file
/// is read.
struct FuzzEnv;

impl Env for FuzzEnv {
    fn var(&self, key: &str) -> Option<String> {
        (key == "CONNECT_CLIENT_SECRET").then(|| "fuzz-secret".to_owned())
    }
}

/// A `--config` file (its keys and its `[columns]` mapping), resolved as
/// `run` (dry and live) and `check` resolve it. Every error renders.
pub fn config_toml(text: &str) {
    let path = Path::new("fuzz/provision.toml");
    let cfg = match ConfigFile::parse(text, path) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let now = jiff::Timestamp::UNIX_EPOCH;
    let _ = crate::settings::output_settings(None, false, Some(&cfg));
    for argv in [
        &["connect-provision", "run", "in.csv", "--dry-run"][..],
        &["connect-provision", "run", "in.csv"],
        &["connect-provision", "check"],
    ] {
        let Ok(cli) = Cli::try_parse_from(argv) else {
            panic!("{argv:?} parses");
        };
        let err = match &cli.command {
            Command::Run(args) => {
                crate::settings::resolve_run(args, &FuzzEnv, Some(&cfg), now).err()
            }
            Command::Check(args) => {
                crate::settings::resolve_check(args, &FuzzEnv, Some(&cfg)).err()
            }
            _ => None,
        };
        if let Some(e) = err {
            assert!(!e.to_string().is_empty());
        }
    }
}

/// The partner's answer to a users request (create-user, or with `address`
/// the address endpoint): `status` (100–999), the `Retry-After` header's
/// text, the body. Classified, it always gives a verdict the status table
/// allows (`api::classify`).
pub(crate) fn partner_answer(status: u16, retry_after: Option<&str>, body: &[u8], address: bool) {
    let Ok(code) = StatusCode::from_u16(status) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let attempt = Attempt::answered(code, retry_after, body, address, now);
    let Attempt::Answered {
        retry_after: ra,
        validated,
        ..
    } = &attempt
    else {
        panic!("an answer is an answer");
    };
    assert!(ra.is_none_or(|d| d <= MAX_RETRY_AFTER));
    assert!(validated.is_none() || (address && code.is_success()));
    match classify(&attempt) {
        Verdict::Done(st, s) => {
            assert_eq!(s, status);
            assert!(
                (st == Status::Created && code.is_success())
                    || (st == Status::Exists && matches!(status, 400 | 409))
            );
        }
        Verdict::Final(s, message) => {
            assert_eq!(s, status);
            assert!(!message.is_empty());
            assert!(!code.is_success() && !matches!(status, 401 | 408 | 409 | 429 | 500..=599));
        }
        Verdict::Retry {
            reason,
            http,
            retry_after: r,
            throttled,
        } => {
            assert_eq!(http, Some(status));
            assert!(!reason.is_empty());
            assert_eq!(r, *ra);
            assert_eq!(throttled, status == 429);
            assert!(!code.is_success() && !matches!(status, 401 | 409));
        }
        Verdict::Unauthorized => assert_eq!(status, 401),
    }
}

/// The token endpoint's answer: `status` (100–999), the body. A token it
/// grants gets its expiry and refresh times as the token manager sets them.
pub(crate) fn token_answer(status: u16, retry_after: Option<Duration>, body: &[u8]) {
    let Ok(code) = StatusCode::from_u16(status) else {
        return;
    };
    match read_token_answer(code, retry_after, body) {
        Ok(token) => {
            assert!(code.is_success());
            let now = tokio::time::Instant::now();
            let (expires, refresh) = deadlines(now, token.expires_in, &TokenOptions::default());
            assert!(now <= refresh && now <= expires);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A request body the sandbox reads (which one: `route`), sent twice to one
/// fresh sandbox past its token, limiter and fault stages. Checks the
/// statuses docs/sandbox.md documents and that nothing is created twice.
pub(crate) fn sandbox_body(route: u8, query: Option<&str>, user_id: &str, body: &[u8]) {
    let route = match route % 4 {
        0 => BodyRoute::Token,
        1 => BodyRoute::User,
        2 => BodyRoute::Address,
        _ => BodyRoute::Config,
    };
    let ([first, second], users) = crate::sandbox::answer_twice(route, query, user_id, body);
    match route {
        BodyRoute::Token => {
            assert!(matches!(first, 200 | 400 | 401 | 403), "token: {first}");
            assert_eq!(first, second);
            assert_eq!(users, 0);
        }
        BodyRoute::User => {
            assert!(matches!(first, 200 | 400), "users: {first}");
            assert_eq!(second, 400, "the second create is refused");
            assert_eq!(users, usize::from(first == 200), "created once");
        }
        BodyRoute::Address => {
            assert!(matches!(first, 200 | 400), "addresses: {first}");
            assert_eq!(first, second, "an upsert answers alike twice");
            assert_eq!(users, usize::from(first == 200), "created once");
        }
        BodyRoute::Config => {
            assert!(matches!(first, 200 | 400), "config: {first}");
            assert_eq!(users, 0);
        }
    }
}

/// The `answer` target's input: byte 0 picks the endpoint (bit 0: the
/// address endpoint; bit 1: the token endpoint), bytes 1–2 the status
/// (100 + n mod 900), then the `Retry-After` text up to a `\n`, then the
/// body.
pub fn answer_input(data: &[u8]) {
    let [sel, hi, lo, rest @ ..] = data else {
        return;
    };
    let status = 100 + u16::from_be_bytes([*hi, *lo]) % 900;
    let (header, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let header = header.map(String::from_utf8_lossy);
    if sel & 0b10 != 0 {
        let ra = header.as_deref().and_then(|h| h.trim().parse().ok());
        token_answer(status, ra.map(Duration::from_secs), body);
    } else {
        partner_answer(status, header.as_deref(), body, sel & 1 != 0);
    }
}

/// The `sandbox` target's input: byte 0 picks the route (mod 4: token,
/// users, addresses, config), then the query string (token) or the
/// user_id (addresses) up to a `\n`, then the body.
pub fn sandbox_input(data: &[u8]) {
    let [route, rest @ ..] = data else {
        return;
    };
    let (head, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&rest[..i]), &rest[i + 1..]),
        None => (String::from_utf8_lossy(&[]), rest),
    };
    let query = (!head.is_empty()).then_some(&*head);
    sandbox_body(*route, query, &head, body);
}

#[cfg(test)]
mod tests {
    //! The committed corpus (fuzz/corpus/, crashes found included) as a
    //! regression suite: each input through its target's wrapper, as the
    //! fuzz target hands it on.

    use std::path::PathBuf;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            out.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(!out.is_empty(), "{dir:?} is empty");
        out
    }

    #[test]
    fn results_corpus() {
        for data in corpus("results") {
            super::results_csv(&data);
        }
    }

    #[test]
    fn config_corpus() {
        for data in corpus("config") {
            if let Ok(text) = std::str::from_utf8(&data) {
                super::config_toml(text);
            }
        }
    }

    #[test]
    fn answer_corpus() {
        for data in corpus("answer") {
            super::answer_input(&data);
        }
    }

    #[test]
    fn sandbox_corpus() {
        for data in corpus("sandbox") {
            super::sandbox_input(&data);
        }
    }
}
