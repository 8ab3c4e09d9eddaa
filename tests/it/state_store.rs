//! The state store behind `--state` (`connect_provision::state`), through
//! its library API: creation in WAL mode, the one-run-at-a-time lock,
//! lookups and upserts, run bookkeeping, stats, export and import.

use std::collections::BTreeMap;
use std::path::Path;

use connect_provision::api::model::CreateUser;
use connect_provision::input::{InputReader, InputSource, ReadOptions};
use connect_provision::intake::Intake;
use connect_provision::outcome::Status;
use connect_provision::report::journal::{RunMeta, sha256_file};
use connect_provision::report::run_dir::write_meta;
use connect_provision::state::{
    PayloadHash, Recorded, StateError, StateStore, StoredStatus, lock_path, payload_hash,
};
use connect_provision::validate::{ValidateOptions, Validator};

use crate::util::{Run, TestDir};

fn t(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(secs).unwrap()
}

fn user(id: &str, first: &str) -> CreateUser {
    CreateUser {
        user_id: id.into(),
        first_name: first.into(),
        last_name: Some("Lee".into()),
        phone_number: Some("+18005550100".into()),
        locale: Some("en-US".into()),
    }
}

fn rec(u: &CreateUser, status: StoredStatus, at: i64) -> Recorded {
    Recorded {
        user_id: u.user_id.clone(),
        payload_hash: payload_hash(u),
        status,
        at: t(at),
        address_hash: None,
        validated_address: None,
    }
}

fn intake_for(path: &Path) -> Intake {
    let reader =
        InputReader::open(InputSource::Path(path.into()), &ReadOptions::default()).unwrap();
    let validator = Validator::new(
        ValidateOptions::default(),
        reader.columns().clone(),
        reader.headers().to_vec(),
    );
    Intake::new(reader, validator)
}

#[test]
fn open_creates_a_private_wal_database() {
    let dir = TestDir::new();
    let path = dir.join("state.db");
    let st = StateStore::open(&path).unwrap();
    assert!(path.exists() && lock_path(&path).exists());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["runs", "users"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "state file mode {mode:o}");
    }
    drop(st);
    // Opening again keeps the data and the schema.
    let mut st = StateStore::open(&path).unwrap();
    assert_eq!(st.lookup("nobody").unwrap(), None);
}

#[test]
fn a_second_open_is_refused_while_the_first_holds_the_lock() {
    let dir = TestDir::new();
    let path = dir.join("state.db");
    let st = StateStore::open(&path).unwrap();
    let err = StateStore::open(&path).unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("state.db.lock")
            && msg.contains("in use by another run"),
        "{msg}"
    );
    // A reader keeps the lock alive after the store is gone.
    let reader = st.reader().unwrap();
    drop(st);
    assert!(matches!(
        StateStore::open(&path),
        Err(StateError::Locked { .. })
    ));
    // Reading without the lock works meanwhile (stats during a run).
    let ro = StateStore::open_read_only(&path).unwrap();
    assert_eq!(ro.stats().unwrap().users, 0);
    drop(reader);
    StateStore::open(&path).unwrap();
}

#[test]
fn missing_and_foreign_files_are_clear_errors() {
    let dir = TestDir::new();
    let missing = dir.join("nope.db");
    let err = StateStore::open_read_only(&missing).unwrap_err();
    assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.db"));

    let junk = dir.write("junk.db", vec![b'x'; 8192]);
    let err = StateStore::open(&junk).unwrap_err();
    assert!(matches!(err, StateError::NotState { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.db"), "{err}");

    let other = dir.join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    let err = StateStore::open(&other).unwrap_err();
    assert!(matches!(err, StateError::NotState { .. }), "{err:?}");

    let err = StateStore::open(&dir.join("no/such/dir/state.db")).unwrap_err();
    assert!(err.to_string().contains("state.db"), "{err}");
}

#[test]
fn record_then_lookup_and_upsert_keeps_first_seen() {
    let dir = TestDir::new();
    let path = dir.join("state.db");
    let mut st = StateStore::open(&path).unwrap();
    let a = user("a", "Ann");
    let b = user("b", "Bob");
    st.record(&[
        rec(&a, StoredStatus::Created, 1_000),
        rec(&b, StoredStatus::Exists, 1_000),
    ])
    .unwrap();
    let ka = st.lookup("a").unwrap().unwrap();
    assert_eq!(ka.payload_hash, payload_hash(&a));
    assert_eq!(ka.status, StoredStatus::Created);
    assert_eq!(ka.last_seen, t(1_000));
    assert_eq!(ka.classify(&payload_hash(&a)), Status::Unchanged);
    assert_eq!(
        ka.classify(&payload_hash(&user("a", "Anne"))),
        Status::Changed
    );

    // A later run: a's payload changed and it answered exists (created stays
    // sticky); b became created.
    let a2 = user("a", "Anne");
    st.record(&[
        rec(&a2, StoredStatus::Exists, 2_000),
        rec(&b, StoredStatus::Created, 2_000),
    ])
    .unwrap();
    let ka = st.lookup("a").unwrap().unwrap();
    assert_eq!(ka.payload_hash, payload_hash(&a2));
    assert_eq!(ka.status, StoredStatus::Created);
    assert_eq!(ka.last_seen, t(2_000));
    assert_eq!(
        st.lookup("b").unwrap().unwrap().status,
        StoredStatus::Created
    );
    // An older record (an import of an old results.csv) moves first_seen
    // back but does not overwrite the newer hash or last_seen.
    st.record(&[rec(&a, StoredStatus::Created, 500)]).unwrap();
    let ka = st.lookup("a").unwrap().unwrap();
    assert_eq!(ka.payload_hash, payload_hash(&a2));
    assert_eq!(ka.last_seen, t(2_000));

    let mut csv = Vec::new();
    assert_eq!(st.export(&mut csv).unwrap(), 2);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "user_id,status,first_seen,last_seen\n\
         a,created,1970-01-01T00:08:20Z,1970-01-01T00:33:20Z\n\
         b,created,1970-01-01T00:16:40Z,1970-01-01T00:33:20Z\n"
    );

    // lookup_many agrees with lookup, in the order asked, with misses.
    let many = st.lookup_many(&["b", "zz", "a", "b"]).unwrap();
    assert_eq!(
        many,
        vec![
            st.lookup("b").unwrap(),
            None,
            st.lookup("a").unwrap(),
            st.lookup("b").unwrap()
        ]
    );
    // The state survives a reopen.
    drop(st);
    let mut st = StateStore::open(&path).unwrap();
    assert_eq!(
        st.lookup("a").unwrap().unwrap().payload_hash,
        payload_hash(&a2)
    );
}

#[test]
fn a_reader_looks_up_while_the_store_records_from_another_thread() {
    let dir = TestDir::new();
    let mut st = StateStore::open(&dir.join("state.db")).unwrap();
    let users: Vec<CreateUser> = (0..2_000).map(|i| user(&format!("u{i}"), "Ann")).collect();
    st.record(
        &users[..1_000]
            .iter()
            .map(|u| rec(u, StoredStatus::Created, 1))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut reader = st.reader().unwrap();
    let looker = std::thread::spawn(move || {
        let mut known = 0;
        for round in 0..5 {
            for i in 0..1_000 {
                known += reader.lookup(&format!("u{i}")).unwrap().is_some() as usize;
            }
            if round == 2 {
                reader.release().unwrap();
            }
        }
        known
    });
    for chunk in users[1_000..].chunks(50) {
        st.record(
            &chunk
                .iter()
                .map(|u| rec(u, StoredStatus::Exists, 2))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    }
    assert_eq!(looker.join().unwrap(), 5_000);
    assert_eq!(st.stats().unwrap().users, 2_000);
}

#[test]
fn payload_hash_is_stable_and_sensitive_to_every_field() {
    let u = user("u1", "Ann");
    assert_eq!(
        payload_hash(&u),
        PayloadHash([
            0x43, 0xc3, 0xf6, 0xc7, 0xd5, 0x19, 0x21, 0x9e, 0x75, 0x92, 0x8a, 0x60, 0x2c, 0xde,
            0xb8, 0xc6
        ])
    );
    let minimal = CreateUser {
        user_id: "u1".into(),
        first_name: "Ann".into(),
        ..Default::default()
    };
    assert_ne!(payload_hash(&minimal), payload_hash(&u));
    let changes: [fn(&mut CreateUser); 5] = [
        |u| u.user_id.push('x'),
        |u| u.first_name.push('x'),
        |u| u.last_name = None,
        |u| u.phone_number = Some("+18005550199".into()),
        |u| u.locale = Some("fr-CA".into()),
    ];
    for change in changes {
        let mut v = u.clone();
        change(&mut v);
        assert_ne!(payload_hash(&v), payload_hash(&u), "{v:?}");
    }
}

#[test]
fn runs_and_stats() {
    let dir = TestDir::new();
    let path = dir.join("state.db");
    let mut st = StateStore::open(&path).unwrap();
    let s = st.stats().unwrap();
    assert_eq!(s.users, 0);
    assert_eq!(s.users_by_status["created"], 0);
    assert!(s.last_run.is_none());

    let crashed = st.begin_run("aa", Some(&dir.join("r1"))).unwrap();
    let id = st.begin_run("bb", Some(&dir.join("r2"))).unwrap();
    st.record(&[
        rec(&user("a", "Ann"), StoredStatus::Created, 10),
        rec(&user("b", "Bob"), StoredStatus::Exists, 10),
        rec(&user("c", "Cy"), StoredStatus::Created, 10),
    ])
    .unwrap();
    let counts: BTreeMap<String, u64> = [("created".to_string(), 2), ("exists".to_string(), 1)]
        .into_iter()
        .collect();
    st.finish_run(id, &counts).unwrap();

    let s = st.stats().unwrap();
    assert_eq!(s.users, 3);
    assert_eq!(s.users_by_status["created"], 2);
    assert_eq!(s.users_by_status["exists"], 1);
    assert!(s.db_bytes + s.wal_bytes > 0);
    assert_eq!((s.runs, s.unfinished_runs), (2, 1));
    let last = s.last_run.clone().unwrap();
    assert_eq!(last.id, id);
    assert_eq!(last.input_sha256, "bb");
    assert!(last.finished.is_some());
    assert_eq!(last.counts.as_ref(), Some(&counts));
    let unfinished = st.unfinished_runs().unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].id, crashed);
    assert!(unfinished[0].reports.as_deref().unwrap().ends_with("r1"));

    let text = s.to_string();
    assert!(
        text.contains("users: 3") && text.contains("created 2"),
        "{text}"
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["users_by_status"]["exists"], 1);
    assert!(json["last_run"]["started"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn export_has_ids_and_times_only_and_neutralises_formulas() {
    let dir = TestDir::new();
    let mut st = StateStore::open(&dir.join("state.db")).unwrap();
    let mut u = user("=cmd", "Zelda");
    u.last_name = Some("Quartermain".into());
    st.record(&[
        rec(&u, StoredStatus::Created, 1_700_000_000),
        rec(&user("k2", "Ann"), StoredStatus::Exists, 1_700_000_001),
    ])
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(st.export(&mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "user_id,status,first_seen,last_seen\n\
         '=cmd,created,2023-11-14T22:13:20Z,2023-11-14T22:13:20Z\n\
         k2,exists,2023-11-14T22:13:21Z,2023-11-14T22:13:21Z\n"
    );
    for secret in ["Zelda", "Quartermain", "5550100", "en-US"] {
        assert!(!text.contains(secret), "{secret} leaked into the export");
    }
    // Read-only export while the run holds the lock.
    let ro = StateStore::open_read_only(&dir.join("state.db")).unwrap();
    let mut again = Vec::new();
    ro.export(&mut again).unwrap();
    assert_eq!(String::from_utf8(again).unwrap(), text);
}

const INPUT: &str = "user_id,first_name,last_name,phone_number,locale\n\
                     u1,Ann,Lee,(800) 555-0100,en-US\n\
                     u2,Bob,,,\n\
                     u3,,Nobody,,\n\
                     u4,Cy,Dee,,\n\
                     u1,Ann,Again,,\n\
                     u5,Di,,,\n\
                     u6,Ed,,,\n";

const RESULTS: &str = "row,user_id,status,http_status,attempts,error,duration_ms\n\
                       2,u2,exists,400,1,,7\n\
                       1,u1,created,200,1,,5\n\
                       3,u3,invalid,,0,first_name: required,0\n\
                       4,u4,failed,503,6,HTTP 503,900\n\
                       5,u1,duplicate,,0,,0\n\
                       6,u5,unchanged,,0,,0\n\
                       7,u6,crea";

#[test]
fn import_seeds_the_state_from_results_and_the_input() {
    let dir = TestDir::new();
    let input = dir.write("in.csv", INPUT);
    let run = dir.join("reports");
    std::fs::create_dir(&run).unwrap();
    let results = run.join("results.csv");
    std::fs::write(&results, RESULTS).unwrap();
    write_meta(
        &run,
        &RunMeta {
            tool_version: "0".into(),
            input_path: input.display().to_string(),
            input_sha256: sha256_file(&input).unwrap(),
            started: "2026-01-02T03:04:05Z".into(),
            shard: None,
        },
    )
    .unwrap();

    let mut st = StateStore::open(&dir.join("state.db")).unwrap();
    let s = st.import(&results, &mut intake_for(&input)).unwrap();
    assert_eq!((s.created, s.exists, s.not_in_input), (1, 2, 0), "{s:?}");
    assert_eq!(s.results_rows, 6);
    assert!(s.input_verified);
    assert_eq!(s.at.to_string(), "2026-01-02T03:04:05Z");

    // The hash is the one of the payload the run sent (phone in E.164).
    let sent_u1 = CreateUser {
        user_id: "u1".into(),
        first_name: "Ann".into(),
        last_name: Some("Lee".into()),
        phone_number: Some("+18005550100".into()),
        locale: Some("en-US".into()),
    };
    let k1 = st.lookup("u1").unwrap().unwrap();
    assert_eq!(k1.payload_hash, payload_hash(&sent_u1));
    assert_eq!(k1.status, StoredStatus::Created);
    assert_eq!(k1.last_seen, s.at);
    let sent_u2 = CreateUser {
        user_id: "u2".into(),
        first_name: "Bob".into(),
        ..Default::default()
    };
    assert_eq!(
        st.lookup("u2").unwrap().unwrap().payload_hash,
        payload_hash(&sent_u2)
    );
    assert_eq!(
        st.lookup("u5").unwrap().unwrap().status,
        StoredStatus::Exists
    );
    for never in ["u3", "u4", "u6"] {
        assert_eq!(st.lookup(never).unwrap(), None, "{never}");
    }
    let stats = st.stats().unwrap();
    assert_eq!(stats.users, 3);
    assert_eq!(stats.last_run.unwrap().kind, "import");

    // Importing again changes nothing.
    st.import(&results, &mut intake_for(&input)).unwrap();
    assert_eq!(st.stats().unwrap().users, 3);
}

#[test]
fn import_refuses_an_input_that_is_not_the_runs() {
    let dir = TestDir::new();
    let input = dir.write("in.csv", INPUT);
    let other = dir.write("other.csv", INPUT.replace("Bob", "Rob"));
    let run = dir.join("reports");
    std::fs::create_dir(&run).unwrap();
    let results = run.join("results.csv");
    std::fs::write(&results, RESULTS).unwrap();
    write_meta(
        &run,
        &RunMeta {
            tool_version: "0".into(),
            input_path: "in.csv".into(),
            input_sha256: sha256_file(&input).unwrap(),
            started: "2026-01-02T03:04:05Z".into(),
            shard: None,
        },
    )
    .unwrap();
    let mut st = StateStore::open(&dir.join("state.db")).unwrap();
    let err = st.import(&results, &mut intake_for(&other)).unwrap_err();
    assert!(matches!(err, StateError::Import { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("other.csv") && msg.contains("not the input"),
        "{msg}"
    );
    assert_eq!(st.stats().unwrap().users, 0);

    // Without run.json nothing can be verified; an input with none of the
    // rows is still refused.
    std::fs::remove_file(run.join("run.json")).unwrap();
    let unrelated = dir.write("unrelated.csv", "user_id,first_name\nz1,\n");
    let err = st
        .import(&results, &mut intake_for(&unrelated))
        .unwrap_err();
    assert!(err.to_string().contains("none of its"), "{err}");
    assert_eq!(st.stats().unwrap().users, 0);

    // Not a results.csv at all.
    let err = st.import(&input, &mut intake_for(&input)).unwrap_err();
    assert!(err.to_string().contains("not a results.csv"), "{err}");
}

#[test]
fn read_only_open_works_on_a_closed_state_and_refuses_writes() {
    let dir = TestDir::new();
    let path = dir.join("state.db");
    {
        let mut st = StateStore::open(&path).unwrap();
        st.record(&[rec(&user("a", "Ann"), StoredStatus::Created, 1)])
            .unwrap();
    }
    let mut ro = StateStore::open_read_only(&path).unwrap();
    assert_eq!(ro.stats().unwrap().users, 1);
    assert!(ro.lookup("a").unwrap().is_some());
    let err = ro
        .record(&[rec(&user("b", "Bob"), StoredStatus::Created, 1)])
        .unwrap_err();
    assert!(err.to_string().contains("state.db"), "{err}");
    // It took no lock: a run can start meanwhile.
    StateStore::open(&path).unwrap();
}

// `state import` reads its input as `run` does, with the config file's input
// options, and takes the nightly run's own config file as it is: its `state`
// key and run-only values (rate, burst) do not concern an import. (It used to
// resolve a whole dry run and refused such a file: "--state records what live
// runs provisioned; leave it out of a --dry-run".) A bad input option is still
// a usage error.
#[test]
fn import_takes_the_nightly_config_file_as_it_is() {
    let dir = TestDir::new();
    // The export names its columns its own way; the config maps them.
    let input = dir.write("in.csv", "Customer,First\nu1,Ann\nu2,Bob\n");
    let run = dir.join("reports");
    std::fs::create_dir(&run).unwrap();
    let results = run.join("results.csv");
    std::fs::write(
        &results,
        "row,user_id,status,http_status,attempts,error,duration_ms\n\
         1,u1,created,200,1,,5\n\
         2,u2,exists,400,1,,7\n",
    )
    .unwrap();
    let state = dir.join("state.db");
    let config = dir.write(
        "provision.toml",
        format!(
            "state = \"{}\"\nrate = 50\nburst = 0\n[columns]\nuser_id = \"Customer\"\nfirst_name = \"First\"\n",
            state.display()
        ),
    );
    let args = |config: &Path| {
        vec![
            "state".to_string(),
            "import".into(),
            "--state".into(),
            state.display().to_string(),
            "--results".into(),
            results.display().to_string(),
            input.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ]
    };
    Run::cli(args(&config))
        .output()
        .expect_code(0)
        .expect_stdout("created=1 exists=1");
    let bad = dir.write("bad.toml", "encoding = \"no-such-encoding\"\n");
    Run::cli(args(&bad))
        .output()
        .expect_code(2)
        .expect_stderr("no-such-encoding");
}
