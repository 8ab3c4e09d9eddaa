//! The state store behind `--state PATH`: an embedded SQLite database that
//! remembers, per `user_id`, the hash of the payload last provisioned, its
//! final status (`created` or `exists`) and when, so a nightly run sends only
//! what is new.
//!
//! - **One run at a time.** [`StateStore::open`] takes an exclusive lock on a
//!   sidecar file `PATH.lock` (std `File::try_lock`, an `flock` on Unix) and
//!   holds it until the store and every [`StateReader`] made from it are
//!   dropped. A second open of the same path, from this process or another,
//!   fails with [`StateError::Locked`]. `stats` and `export` may use
//!   [`StateStore::open_read_only`], which takes no lock and so also works
//!   while a run is going.
//! - **WAL, `synchronous=FULL`.** Each [`StateStore::record`] batch is one
//!   transaction, committed once per journal checkpoint (every ~200 ms), so
//!   the fsync that FULL adds to every commit costs at most a few fsyncs a
//!   second, and in exchange a committed batch survives a power loss, like
//!   the results.csv lines the journal fsyncs (NORMAL would only survive a
//!   process crash). WAL lets a [`StateReader`] look rows up in one thread
//!   while the recorder commits in another.
//! - **Bounded memory.** Each connection's page cache is capped
//!   ([`READER_CACHE_KIB`], [`WRITER_CACHE_KIB`]) and nothing is memory
//!   mapped, so resident memory does not grow with the number of users; the
//!   rest of the state stays in the OS page cache.
//! - **Schema.** `users(user_id TEXT PRIMARY KEY, payload_hash BLOB(16),
//!   status TEXT, first_seen INTEGER, last_seen INTEGER) WITHOUT ROWID` (the
//!   user_id is the b-tree key: one seek per lookup, no second index) and
//!   `runs(id, kind, started, finished, input_sha256, reports, counts_json)`.
//!   Times are Unix seconds, UTC. `PRAGMA application_id` marks the file as
//!   ours and `PRAGMA user_version` is the schema version.
//!
//! The state holds user_ids and hashes only: no names, phones or locales.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::model::CreateUser;
use crate::input::{InputError, InputSource};
use crate::intake::{Intake, Step};
use crate::outcome::Status;
use crate::report::journal::{RunMeta, sha256_file};
use crate::report::neutralize;
use crate::rowset::RowSet;

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;
/// `PRAGMA application_id` of a state file: "CPST".
pub const APPLICATION_ID: i64 = 0x4350_5354;
/// Page cache of a [`StateReader`] (and of the store's own lookups), KiB.
pub const READER_CACHE_KIB: i64 = 32 * 1024;
/// Page cache of the writing connection, KiB.
pub const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// Users per transaction while importing (sorted by user_id first, so the
/// inserts walk the b-tree in order).
const IMPORT_BATCH: usize = 50_000;
/// Ids per query in [`StateReader::lookup_many`].
pub const LOOKUP_BATCH: usize = 500;
/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    user_id      TEXT    PRIMARY KEY NOT NULL,
    payload_hash BLOB    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('created', 'exists')),
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id           INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL DEFAULT 'run',
    started      INTEGER NOT NULL,
    finished     INTEGER,
    input_sha256 TEXT    NOT NULL,
    reports      TEXT,
    counts_json  TEXT
);";

const LOOKUP_SQL: &str = "SELECT payload_hash, status, last_seen FROM users WHERE user_id = ?1";

/// Insert or update one user. `first_seen` only ever moves back, `last_seen`
/// only forward; the payload hash is the one of the latest record (an import
/// of an older results.csv does not overwrite a newer hash); `created` is
/// sticky: a user this tool once created stays `created` when a later run
/// finds it `exists` (e.g. resent after a crash).
const UPSERT_SQL: &str = "
INSERT INTO users (user_id, payload_hash, status, first_seen, last_seen)
VALUES (?1, ?2, ?3, ?4, ?4)
ON CONFLICT (user_id) DO UPDATE SET
    payload_hash = CASE WHEN excluded.last_seen >= users.last_seen
                        THEN excluded.payload_hash ELSE users.payload_hash END,
    status       = CASE WHEN users.status = 'created' THEN 'created' ELSE excluded.status END,
    first_seen   = MIN(users.first_seen, excluded.first_seen),
    last_seen    = MAX(users.last_seen, excluded.last_seen)";

// ---------------------------------------------------------------------------
// Payload hash

/// 16 bytes of SHA-256 over a payload: what the state remembers of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadHash(pub [u8; 16]);

impl std::fmt::Display for PayloadHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl PayloadHash {
    fn from_blob(b: &[u8]) -> Option<PayloadHash> {
        b.try_into().ok().map(PayloadHash)
    }
}

/// Domain tag hashed before the payload, so a format change can be versioned.
const PAYLOAD_HASH_TAG: &[u8] = b"connect-provision payload v1\n";

/// The hash of `user` as it is sent: SHA-256 of a version tag followed by
/// the exact JSON body of `POST /v2/fulfillment/users` (`serde_json`, fields
/// in declaration order, blank optionals left out), truncated to 16 bytes.
/// Stable across platforms and runs; the pipeline and `state import` must
/// both use this function. A field added to [`CreateUser`] changes the hash
/// only of rows that carry it.
pub fn payload_hash(user: &CreateUser) -> PayloadHash {
    struct HashWriter(Sha256);
    impl Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(Sha256::new());
    w.0.update(PAYLOAD_HASH_TAG);
    serde_json::to_writer(&mut w, user).expect("a CreateUser always serialises");
    let full = w.0.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    PayloadHash(out)
}

// ---------------------------------------------------------------------------
// Values

/// The final status the state remembers: only successes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredStatus {
    Created,
    Exists,
}

impl StoredStatus {
    /// The word stored and exported.
    pub fn as_str(self) -> &'static str {
        match self {
            StoredStatus::Created => "created",
            StoredStatus::Exists => "exists",
        }
    }

    /// Parse the stored word.
    pub fn parse(s: &str) -> Option<StoredStatus> {
        match s {
            "created" => Some(StoredStatus::Created),
            "exists" => Some(StoredStatus::Exists),
            _ => None,
        }
    }

    /// The status to record for a row outcome: `created` and `exists` only.
    pub fn from_outcome(s: Status) -> Option<StoredStatus> {
        match s {
            Status::Created => Some(StoredStatus::Created),
            Status::Exists => Some(StoredStatus::Exists),
            _ => None,
        }
    }

    /// Back to the row status.
    pub fn to_outcome(self) -> Status {
        match self {
            StoredStatus::Created => Status::Created,
            StoredStatus::Exists => Status::Exists,
        }
    }
}

impl std::fmt::Display for StoredStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the state knows of a user_id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub payload_hash: PayloadHash,
    pub status: StoredStatus,
    /// When a run last recorded it.
    pub last_seen: jiff::Timestamp,
}

impl Known {
    /// The row status for a row whose payload hashes to `hash`:
    /// `unchanged` when it is the one provisioned, `changed` otherwise.
    pub fn classify(&self, hash: &PayloadHash) -> Status {
        if self.payload_hash == *hash {
            Status::Unchanged
        } else {
            Status::Changed
        }
    }

    /// The results.csv `error` cell for a `changed` row.
    pub fn changed_message(&self) -> String {
        format!(
            "provisioned {} ({}) with a different payload; Connect has no update call, so it was not sent",
            self.last_seen, self.status
        )
    }
}

/// One success to remember.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub user_id: String,
    pub payload_hash: PayloadHash,
    pub status: StoredStatus,
    pub at: jiff::Timestamp,
}

/// One run (or import) as the `runs` table keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub id: i64,
    /// `run` or `import`.
    pub kind: String,
    #[serde(serialize_with = "ser_ts")]
    pub started: jiff::Timestamp,
    /// `None`: the run has not finished (still going, or it crashed).
    #[serde(serialize_with = "ser_opt_ts")]
    pub finished: Option<jiff::Timestamp>,
    pub input_sha256: String,
    /// Reports directory (a run) or results.csv (an import).
    pub reports: Option<String>,
    pub counts: Option<BTreeMap<String, u64>>,
}

/// `connect-provision state stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateStats {
    pub path: PathBuf,
    pub users: u64,
    /// Users per stored status (`created`, `exists`); both always present.
    pub users_by_status: BTreeMap<String, u64>,
    /// Size of the database file.
    pub db_bytes: u64,
    /// Size of its write-ahead log (`PATH-wal`; 0 when absent).
    pub wal_bytes: u64,
    pub runs: u64,
    /// Runs started and never finished (crashed or still going).
    pub unfinished_runs: u64,
    pub last_run: Option<RunInfo>,
}

impl std::fmt::Display for StateStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "state file: {}", self.path.display())?;
        write!(f, "users: {}", self.users)?;
        for (k, v) in &self.users_by_status {
            write!(f, "  {k}: {v}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "size: {} bytes (database {}, write-ahead log {})",
            self.db_bytes + self.wal_bytes,
            self.db_bytes,
            self.wal_bytes
        )?;
        writeln!(
            f,
            "runs: {} ({} unfinished)",
            self.runs, self.unfinished_runs
        )?;
        match &self.last_run {
            None => writeln!(f, "last run: none"),
            Some(r) => {
                write!(f, "last run: #{} {} started {}", r.id, r.kind, r.started)?;
                match r.finished {
                    Some(t) => write!(f, ", finished {t}")?,
                    None => write!(f, ", not finished")?,
                }
                if let Some(c) = &r.counts {
                    let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    write!(f, "; {}", parts.join(", "))?;
                }
                writeln!(f)
            }
        }
    }
}

/// What `state import` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Data lines of results.csv read.
    pub results_rows: u64,
    /// Users recorded `created`.
    pub created: u64,
    /// Users recorded `exists` (results `exists`, and `unchanged` rows of a
    /// run that itself used a state).
    pub exists: u64,
    /// `changed` rows: provisioned with a payload the results do not tell; not recorded.
    pub skipped_changed: u64,
    /// Rows results.csv calls a success that the input did not produce as a
    /// valid row to send (a different input, or different read options).
    pub not_in_input: u64,
    /// Whether the input was checked against the SHA-256 in the run's run.json.
    pub input_verified: bool,
    /// The `at` recorded: the run's start (run.json), else results.csv's mtime.
    #[serde(serialize_with = "ser_ts")]
    pub at: jiff::Timestamp,
}

/// RFC 3339 in JSON, as summary.json writes times.
fn ser_ts<S: serde::Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

fn ser_opt_ts<S: serde::Serializer>(t: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(t),
        None => s.serialize_none(),
    }
}

// ---------------------------------------------------------------------------
// Errors

/// Why the state store failed. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state file {} is in use by another run (lock held on {}); wait for it or use another --state",
        .path.display(), .lock.display()
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot lock state file {}: cannot use {}", .path.display(), .lock.display())]
    Lock {
        path: PathBuf,
        lock: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {} does not exist", .path.display())]
    NotFound { path: PathBuf },
    #[error("cannot open state file {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{} is not a connect-provision state file ({reason})", .path.display())]
    NotState { path: PathBuf, reason: String },
    #[error(
        "state file {} was written by a newer connect-provision (schema {found}; this version knows up to {SCHEMA_VERSION})",
        .path.display()
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("state file {}: cannot {op}", .path.display())]
    Sql {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: cannot {op}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot import {} into state file {}: {message}", .results.display(), .path.display())]
    Import {
        path: PathBuf,
        results: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Input(#[from] InputError),
}

impl StateError {
    /// A lazy `map_err` for SQLite errors (no allocation unless it fails).
    fn sql<'a>(
        path: &'a Path,
        op: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> StateError + 'a {
        move |source| StateError::Sql {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
}

// ---------------------------------------------------------------------------
// Opening

/// `PATH.lock`, beside the state file.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn wal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Create-or-open `p` with mode 0600 (0600 only applies when it is created).
fn open_private(p: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(p)
}

fn take_lock(path: &Path) -> Result<File, StateError> {
    let lock = lock_path(path);
    let file = open_private(&lock).map_err(|source| StateError::Lock {
        path: path.to_path_buf(),
        lock: lock.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Locked {
            path: path.to_path_buf(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StateError::Lock {
            path: path.to_path_buf(),
            lock,
            source,
        }),
    }
}

/// Check that an opened database is ours (or empty), and of a known schema.
/// Returns the schema version found (0: empty database).
fn check_identity(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    let not_state = |e| open_failure(path, e);
    let app: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(not_state)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(not_state)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(not_state)?;
    if app != APPLICATION_ID && (app != 0 || tables > 0) {
        return Err(StateError::NotState {
            path: path.to_path_buf(),
            reason: "an SQLite database of something else".into(),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: version,
        });
    }
    Ok(version)
}

/// An error while opening: a file that is not a database says so.
fn open_failure(path: &Path, e: rusqlite::Error) -> StateError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StateError::NotState {
            path: path.to_path_buf(),
            reason: "not an SQLite database".into(),
        },
        _ => StateError::Open {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

fn open_conn(path: &Path, flags: OpenFlags, cache_kib: i64) -> Result<Connection, StateError> {
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_failure(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| conn.pragma_update(None, "cache_size", -cache_kib))
        .and_then(|()| conn.pragma_update(None, "mmap_size", 0))
        .map_err(|e| open_failure(path, e))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// A read-only connection to a state file (lookups, stats, export).
fn open_reader_conn(path: &Path) -> Result<Connection, StateError> {
    let conn = open_conn(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        READER_CACHE_KIB,
    )?;
    let version = check_identity(&conn, path)?;
    if version == 0 {
        return Err(StateError::NotState {
            path: path.to_path_buf(),
            reason: "it has no state tables".into(),
        });
    }
    Ok(conn)
}

// ---------------------------------------------------------------------------
// Shared queries

fn lookup_in(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<Known>> {
    let mut stmt = conn.prepare_cached(LOOKUP_SQL)?;
    stmt.query_row([user_id], |r| known_from_row(r, 0))
        .optional()
        .map(Option::flatten)
}

/// Columns `payload_hash, status, last_seen` from `at`; `None` for a row
/// this version cannot read (treated as unknown: the row is sent, and the
/// answer `exists` re-records it).
fn known_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Known>> {
    let hash = PayloadHash::from_blob(r.get_ref(at)?.as_blob()?);
    let status = StoredStatus::parse(r.get_ref(at + 1)?.as_str()?);
    let last = jiff::Timestamp::from_second(r.get(at + 2)?).unwrap_or_default();
    Ok(hash.zip(status).map(|(payload_hash, status)| Known {
        payload_hash,
        status,
        last_seen: last,
    }))
}

fn lookup_many_in<S: AsRef<str>>(
    conn: &Connection,
    ids: &[S],
) -> rusqlite::Result<Vec<Option<Known>>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(LOOKUP_BATCH);
    for chunk in ids.chunks(LOOKUP_BATCH) {
        let base = out.len();
        out.resize(base + chunk.len(), None);
        first_of.clear();
        for (i, id) in chunk.iter().enumerate() {
            first_of.entry(id.as_ref()).or_insert(base + i);
        }
        let sql = batch_sql(chunk.len());
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(chunk.iter().map(|s| s.as_ref())))?;
        while let Some(r) = rows.next()? {
            let id = r.get_ref(0)?.as_str()?;
            if let Some(&i) = first_of.get(id) {
                out[i] = known_from_row(r, 1)?;
            }
        }
        // Repeated ids within the chunk share the first one's answer.
        for (i, id) in chunk.iter().enumerate() {
            let f = first_of[id.as_ref()];
            if f != base + i {
                out[base + i] = out[f];
            }
        }
    }
    Ok(out)
}

fn batch_sql(n: usize) -> String {
    let mut sql = String::with_capacity(80 + n * 2);
    sql.push_str("SELECT user_id, payload_hash, status, last_seen FROM users WHERE user_id IN (");
    for i in 0..n {
        sql.push_str(if i == 0 { "?" } else { ",?" });
    }
    sql.push(')');
    sql
}

fn ts(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(secs).unwrap_or_default()
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunInfo> {
    let counts: Option<String> = r.get(6)?;
    Ok(RunInfo {
        id: r.get(0)?,
        kind: r.get(1)?,
        started: ts(r.get(2)?),
        finished: r.get::<_, Option<i64>>(3)?.map(ts),
        input_sha256: r.get(4)?,
        reports: r.get(5)?,
        counts: counts.and_then(|c| serde_json::from_str(&c).ok()),
    })
}

fn stats_in(conn: &Connection, path: &Path) -> Result<StateStats, StateError> {
    let sql = StateError::sql;
    let mut by_status: BTreeMap<String, u64> = ["created", "exists"]
        .into_iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    let mut users = 0;
    {
        let mut stmt = conn
            .prepare_cached("SELECT status, count(*) FROM users GROUP BY status")
            .map_err(sql(path, "count users"))?;
        let mut rows = stmt.query([]).map_err(sql(path, "count users"))?;
        while let Some(r) = rows.next().map_err(sql(path, "count users"))? {
            let status: String = r.get(0).map_err(sql(path, "count users"))?;
            let n: i64 = r.get(1).map_err(sql(path, "count users"))?;
            users += n as u64;
            *by_status.entry(status).or_default() += n as u64;
        }
    }
    let (runs, unfinished): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(*) - count(finished) FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql(path, "count runs"))?;
    let last_run = conn
        .query_row(
            "SELECT id, kind, started, finished, input_sha256, reports, counts_json
             FROM runs ORDER BY id DESC LIMIT 1",
            [],
            run_from_row,
        )
        .optional()
        .map_err(sql(path, "read the last run"))?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Ok(StateStats {
        path: path.to_path_buf(),
        users,
        users_by_status: by_status,
        db_bytes: size(path),
        wal_bytes: size(&wal_path(path)),
        runs: runs as u64,
        unfinished_runs: unfinished as u64,
        last_run,
    })
}

fn export_from(conn: &Connection, path: &Path, w: impl Write) -> Result<u64, StateError> {
    let out_err = |e: csv::Error| StateError::Io {
        path: PathBuf::from("<export output>"),
        op: "write the export",
        source: match e.into_kind() {
            csv::ErrorKind::Io(e) => e,
            other => io::Error::other(format!("{other:?}")),
        },
    };
    let mut csv = csv::Writer::from_writer(w);
    csv.write_record(["user_id", "status", "first_seen", "last_seen"])
        .map_err(out_err)?;
    let mut stmt = conn
        .prepare("SELECT user_id, status, first_seen, last_seen FROM users ORDER BY user_id")
        .map_err(StateError::sql(path, "export users"))?;
    let mut rows = stmt
        .query([])
        .map_err(StateError::sql(path, "export users"))?;
    let mut n = 0u64;
    while let Some(r) = rows.next().map_err(StateError::sql(path, "export users"))? {
        let get = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, String, i64, i64)> {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        };
        let (id, status, first, last) = get(r).map_err(StateError::sql(path, "export users"))?;
        csv.write_record([
            neutralize(&id).as_ref(),
            status.as_str(),
            &ts(first).to_string(),
            &ts(last).to_string(),
        ])
        .map_err(out_err)?;
        n += 1;
    }
    csv.flush().map_err(|e| StateError::Io {
        path: PathBuf::from("<export output>"),
        op: "write the export",
        source: e,
    })?;
    Ok(n)
}

fn upsert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    user_id: &str,
    hash: &PayloadHash,
    status: StoredStatus,
    at: jiff::Timestamp,
) -> rusqlite::Result<()> {
    stmt.execute(params![
        user_id,
        &hash.0[..],
        status.as_str(),
        at.as_second()
    ])
    .map(drop)
}

// ---------------------------------------------------------------------------
// The store

/// The lock on `PATH.lock`, released when the last holder is dropped.
#[derive(Debug)]
struct Lock {
    _file: File,
}

/// An open state file. See the module docs.
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
    /// `None` when opened read-only.
    lock: Option<Arc<Lock>>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .field("locked", &self.lock.is_some())
            .finish()
    }
}

impl StateStore {
    /// Open the state file for a run (or an import), creating it if missing
    /// (mode 0600), in WAL mode, and take the run lock on `PATH.lock` for as
    /// long as the store (and any [`StateReader`] of it) lives.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        let lock = take_lock(path)?;
        // Create it ourselves so it is private; SQLite gives -wal/-shm the
        // same mode.
        open_private(path).map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            op: "create the state file",
            source,
        })?;
        let conn = open_conn(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            WRITER_CACHE_KIB,
        )?;
        let version = check_identity(&conn, path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(StateError::sql(path, "switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::NotState {
                path: path.to_path_buf(),
                reason: format!(
                    "its journal mode stays '{mode}': WAL mode is required (is it on a network file system?)"
                ),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(StateError::sql(path, "set synchronous=FULL"))?;
        if version < SCHEMA_VERSION {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA}
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {SCHEMA_VERSION};
                 COMMIT;"
            ))
            .map_err(StateError::sql(path, "create the schema"))?;
        }
        Ok(StateStore {
            conn,
            path: path.to_path_buf(),
            lock: Some(Arc::new(Lock { _file: lock })),
        })
    }

    /// Open an existing state file to read it (`stats`, `export`), without
    /// the run lock, so it works while a run is going. Fails with
    /// [`StateError::NotFound`] when there is no such file. `record`,
    /// `begin_run` and `import` fail on a read-only store.
    pub fn open_read_only(path: &Path) -> Result<StateStore, StateError> {
        if !path.exists() {
            return Err(StateError::NotFound {
                path: path.to_path_buf(),
            });
        }
        Ok(StateStore {
            conn: open_reader_conn(path)?,
            path: path.to_path_buf(),
            lock: None,
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second, read-only connection for lookups from another thread (the
    /// intake) while this store records from the recorder thread. It keeps
    /// the run lock alive until it is dropped too.
    pub fn reader(&self) -> Result<StateReader, StateError> {
        Ok(StateReader {
            conn: open_reader_conn(&self.path)?,
            path: self.path.clone(),
            txn_left: 0,
            _lock: self.lock.clone(),
        })
    }

    /// What the state knows of `user_id`.
    pub fn lookup(&mut self, user_id: &str) -> Result<Option<Known>, StateError> {
        lookup_in(&self.conn, user_id).map_err(StateError::sql(&self.path, "look a user up"))
    }

    /// [`lookup`](Self::lookup) for many ids, one query per
    /// [`LOOKUP_BATCH`] ids; answers in the order of `ids`.
    pub fn lookup_many<S: AsRef<str>>(
        &mut self,
        ids: &[S],
    ) -> Result<Vec<Option<Known>>, StateError> {
        lookup_many_in(&self.conn, ids).map_err(StateError::sql(&self.path, "look users up"))
    }

    /// Remember a batch of successes, in one transaction (durable when this
    /// returns). Upsert: `first_seen` is kept, see [`UPSERT_SQL`].
    pub fn record(&mut self, batch: &[Recorded]) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StateError::sql(path, "record users"))?;
        {
            let mut stmt = tx
                .prepare_cached(UPSERT_SQL)
                .map_err(StateError::sql(path, "record users"))?;
            for r in batch {
                upsert(&mut stmt, &r.user_id, &r.payload_hash, r.status, r.at)
                    .map_err(StateError::sql(path, "record users"))?;
            }
        }
        tx.commit().map_err(StateError::sql(path, "record users"))
    }

    /// Note the start of a run; returns its id for [`finish_run`](Self::finish_run).
    /// `reports` is the run's `--out` directory (so an unfinished run can be
    /// found and resumed).
    pub fn begin_run(
        &mut self,
        input_sha256: &str,
        reports: Option<&Path>,
    ) -> Result<i64, StateError> {
        self.insert_run("run", input_sha256, reports)
    }

    fn insert_run(
        &mut self,
        kind: &str,
        input_sha256: &str,
        reports: Option<&Path>,
    ) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO runs (kind, started, input_sha256, reports) VALUES (?1, ?2, ?3, ?4)",
                params![
                    kind,
                    jiff::Timestamp::now().as_second(),
                    input_sha256,
                    reports.map(|p| p.display().to_string())
                ],
            )
            .map_err(StateError::sql(&self.path, "record the run"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Note the end of run `id` with its counts per status.
    pub fn finish_run(
        &mut self,
        id: i64,
        counts: &BTreeMap<String, u64>,
    ) -> Result<(), StateError> {
        let json = serde_json::to_string(counts).expect("a map of counts always serialises");
        self.conn
            .execute(
                "UPDATE runs SET finished = ?2, counts_json = ?3 WHERE id = ?1",
                params![id, jiff::Timestamp::now().as_second(), json],
            )
            .map_err(StateError::sql(&self.path, "record the end of the run"))?;
        Ok(())
    }

    /// Runs started and never finished, oldest first (a crashed run's last
    /// checkpoint may be missing from the state: resume it, or import its
    /// results.csv).
    pub fn unfinished_runs(&self) -> Result<Vec<RunInfo>, StateError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, kind, started, finished, input_sha256, reports, counts_json
                 FROM runs WHERE finished IS NULL ORDER BY id",
            )
            .map_err(StateError::sql(path, "read the runs"))?;
        let rows = stmt
            .query_map([], run_from_row)
            .map_err(StateError::sql(path, "read the runs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StateError::sql(path, "read the runs"))
    }

    /// Users per status, file sizes, and the last run.
    pub fn stats(&self) -> Result<StateStats, StateError> {
        stats_in(&self.conn, &self.path)
    }

    /// Stream `user_id,status,first_seen,last_seen` (RFC 3339 UTC) as CSV,
    /// ordered by user_id; returns the number of users written. No names or
    /// phones: the state has none. User ids are neutralised against formula
    /// injection like every cell the tool writes.
    pub fn export(&self, w: impl Write) -> Result<u64, StateError> {
        export_from(&self.conn, &self.path, w)
    }

    /// Seed the state from an earlier run: `results_csv` (the rows it says
    /// `created`, `exists`, or `unchanged`) together with `intake`, the input
    /// that run read, opened with the same options (encoding, delimiter,
    /// columns, phone region, default locale; no `--limit` beyond the run's
    /// own), so the payload hashes are those the run sent.
    ///
    /// When results.csv has a run.json beside it that names the input's
    /// SHA-256, the input must be that file (checked before anything is
    /// written; stdin is refused then). Users are written in transactions of
    /// 50,000, sorted by user_id; an import cut short can simply be run
    /// again: importing twice changes nothing. The time recorded is the
    /// run's start (run.json), else results.csv's modification time.
    pub fn import(
        &mut self,
        results_csv: &Path,
        intake: &mut Intake,
    ) -> Result<ImportSummary, StateError> {
        let state_path = self.path.clone();
        let import_err = |message: String| StateError::Import {
            path: state_path.clone(),
            results: results_csv.to_path_buf(),
            message,
        };
        let file = File::open(results_csv).map_err(|source| StateError::Io {
            path: results_csv.to_path_buf(),
            op: "open the results to import",
            source,
        })?;
        let mut summary = ImportSummary::default();
        let sets = read_results(BufReader::new(file), &mut summary).map_err(|e| match e {
            ResultsError::Io(source) => StateError::Io {
                path: results_csv.to_path_buf(),
                op: "read the results to import",
                source,
            },
            ResultsError::Format(m) => import_err(m),
        })?;

        // The run's record, when there is one: its start and input hash.
        let meta = results_csv
            .parent()
            .map(|d| d.join("run.json"))
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<RunMeta>(&b).ok());
        let expected_sha = meta
            .as_ref()
            .map(|m| m.input_sha256.clone())
            .filter(|s| s.len() == 64);
        let source = intake.reader().source().clone();
        let input_name = source.display();
        match (&expected_sha, &source) {
            (Some(want), InputSource::Path(p)) => {
                let got = sha256_file(p).map_err(|e| InputError::Open {
                    path: input_name.clone(),
                    source: e,
                })?;
                if &got != want {
                    return Err(import_err(format!(
                        "{input_name} is not the input of that run (its SHA-256 is {got}; run.json says {want})"
                    )));
                }
                summary.input_verified = true;
            }
            (Some(_), InputSource::Stdin) => {
                return Err(import_err(
                    "give the input as a file, so it can be checked against the run's run.json"
                        .into(),
                ));
            }
            (None, _) => {}
        }
        summary.at = meta
            .as_ref()
            .and_then(|m| m.started.parse::<jiff::Timestamp>().ok())
            .or_else(|| {
                std::fs::metadata(results_csv)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
            })
            .unwrap_or_else(jiff::Timestamp::now);
        let at = summary.at;

        let mut matched = 0u64;
        let mut pending: Vec<(String, PayloadHash, StoredStatus)> =
            Vec::with_capacity(IMPORT_BATCH);
        while let Some(step) = intake.next_step()? {
            let Step::Send { row, user, .. } = step else {
                continue;
            };
            let status = if sets.created.contains(row) {
                StoredStatus::Created
            } else if sets.exists.contains(row) {
                StoredStatus::Exists
            } else {
                continue;
            };
            matched += 1;
            match status {
                StoredStatus::Created => summary.created += 1,
                StoredStatus::Exists => summary.exists += 1,
            }
            let hash = payload_hash(&user);
            pending.push((user.user_id, hash, status));
            if pending.len() == IMPORT_BATCH {
                self.import_batch(&mut pending, at)?;
            }
        }
        self.import_batch(&mut pending, at)?;
        summary.not_in_input = sets.created.len() + sets.exists.len() - matched;
        if matched == 0 && summary.not_in_input > 0 {
            return Err(import_err(format!(
                "none of its {} successful rows is a valid row of {input_name}: is it the input of that run, read with the same options?",
                summary.not_in_input
            )));
        }

        let sha = expected_sha.unwrap_or_else(|| intake.reader().digest().sha256_hex());
        let id = self.insert_run("import", &sha, Some(results_csv))?;
        let counts: BTreeMap<String, u64> = [
            ("created", summary.created),
            ("exists", summary.exists),
            ("skipped_changed", summary.skipped_changed),
            ("not_in_input", summary.not_in_input),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        self.finish_run(id, &counts)?;
        Ok(summary)
    }
}

impl StateStore {
    /// One import transaction: `pending` sorted by user_id, upserted, committed.
    fn import_batch(
        &mut self,
        pending: &mut Vec<(String, PayloadHash, StoredStatus)>,
        at: jiff::Timestamp,
    ) -> Result<(), StateError> {
        if pending.is_empty() {
            return Ok(());
        }
        pending.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StateError::sql(path, "import users"))?;
        {
            let mut stmt = tx
                .prepare_cached(UPSERT_SQL)
                .map_err(StateError::sql(path, "import users"))?;
            for (id, hash, status) in pending.iter() {
                upsert(&mut stmt, id, hash, *status, at)
                    .map_err(StateError::sql(path, "import users"))?;
            }
        }
        tx.commit().map_err(StateError::sql(path, "import users"))?;
        pending.clear();
        Ok(())
    }
}

/// A read-only connection for lookups, usable from another thread than the
/// [`StateStore`] it came from (WAL: it reads while the store commits).
pub struct StateReader {
    conn: Connection,
    path: PathBuf,
    /// Lookups left in the current read transaction (0: none open).
    txn_left: u32,
    _lock: Option<Arc<Lock>>,
}

/// Lookups per read transaction of a [`StateReader`]: starting a WAL read
/// transaction per statement costs more than the lookup itself.
pub const LOOKUPS_PER_READ_TXN: u32 = 1024;

impl std::fmt::Debug for StateReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateReader")
            .field("path", &self.path)
            .finish()
    }
}

impl StateReader {
    /// Open (or renew) the read transaction that lookups share. Its snapshot
    /// is at most [`LOOKUPS_PER_READ_TXN`] lookups old; the reader never
    /// needs to see what this run records (in-file duplicates never reach
    /// the state).
    fn enter(&mut self) -> rusqlite::Result<()> {
        if self.txn_left == 0 {
            self.conn.execute_batch("BEGIN DEFERRED")?;
            self.txn_left = LOOKUPS_PER_READ_TXN;
        }
        Ok(())
    }

    fn leave(&mut self, n: u32) -> rusqlite::Result<()> {
        self.txn_left = self.txn_left.saturating_sub(n);
        if self.txn_left == 0 {
            self.conn.execute_batch("COMMIT")?;
        }
        Ok(())
    }

    /// End the shared read transaction now (e.g. before the intake blocks
    /// for a long time), so its snapshot does not hold the WAL back.
    pub fn release(&mut self) -> Result<(), StateError> {
        if self.txn_left > 0 {
            self.txn_left = 0;
            self.conn
                .execute_batch("COMMIT")
                .map_err(StateError::sql(&self.path, "end a read transaction"))?;
        }
        Ok(())
    }

    /// Resize this connection's page cache (default [`READER_CACHE_KIB`]).
    /// It bounds resident memory; past it, lookups in an order unrelated to
    /// the ids' order read pages from the OS cache.
    pub fn set_cache_kib(&mut self, kib: u32) -> Result<(), StateError> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))
            .map_err(StateError::sql(&self.path, "set the cache size"))
    }

    /// What the state knows of `user_id` (one cached prepared statement).
    pub fn lookup(&mut self, user_id: &str) -> Result<Option<Known>, StateError> {
        self.enter()
            .and_then(|()| lookup_in(&self.conn, user_id))
            .and_then(|k| self.leave(1).map(|()| k))
            .map_err(StateError::sql(&self.path, "look a user up"))
    }

    /// Many ids at once, one query per [`LOOKUP_BATCH`]; answers in the
    /// order of `ids`.
    pub fn lookup_many<S: AsRef<str>>(
        &mut self,
        ids: &[S],
    ) -> Result<Vec<Option<Known>>, StateError> {
        self.enter()
            .and_then(|()| lookup_many_in(&self.conn, ids))
            .and_then(|k| self.leave(LOOKUP_BATCH as u32).map(|()| k))
            .map_err(StateError::sql(&self.path, "look users up"))
    }
}

// ---------------------------------------------------------------------------
// results.csv for import

#[derive(Debug, Default)]
struct ResultSets {
    created: RowSet,
    exists: RowSet,
}

enum ResultsError {
    Io(io::Error),
    Format(String),
}

/// The rows results.csv calls `created`, or `exists`/`unchanged`. Reads
/// line by line like the journal does: a torn last line (a crash mid-write)
/// is dropped; a row listed twice keeps its first line.
fn read_results<R: BufRead>(
    mut rdr: R,
    summary: &mut ImportSummary,
) -> Result<ResultSets, ResultsError> {
    let mut sets = ResultSets::default();
    let mut seen = RowSet::default();
    let mut line = Vec::new();
    let mut rec = csv::StringRecord::new();
    let mut width = 0;
    let mut first = true;
    loop {
        line.clear();
        if rdr.read_until(b'\n', &mut line).map_err(ResultsError::Io)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            break; // torn
        }
        let mut csv_rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&line[..]);
        let ok = csv_rdr.read_record(&mut rec).unwrap_or(false);
        if std::mem::take(&mut first) {
            if !ok
                || rec.len() < 3
                || &rec[0] != "row"
                || &rec[1] != "user_id"
                || &rec[2] != "status"
            {
                return Err(ResultsError::Format(
                    "it is not a results.csv of this tool (its header should start row,user_id,status)"
                        .into(),
                ));
            }
            width = rec.len();
            continue;
        }
        if !ok || rec.len() != width {
            continue;
        }
        summary.results_rows += 1;
        let (Some(row), Some(status)) = (rec[0].parse::<u64>().ok(), Status::parse(&rec[2])) else {
            continue;
        };
        if seen.contains(row) {
            continue;
        }
        seen.insert(row);
        match status {
            Status::Created => sets.created.insert(row),
            Status::Exists | Status::Unchanged => sets.exists.insert(row),
            Status::Changed => summary.skipped_changed += 1,
            _ => {}
        }
    }
    if first {
        return Err(ResultsError::Format("it is empty".into()));
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> CreateUser {
        CreateUser {
            user_id: id.into(),
            first_name: "Ann".into(),
            last_name: Some("Lee".into()),
            phone_number: Some("+18005550100".into()),
            locale: Some("en-US".into()),
        }
    }

    #[test]
    fn payload_hash_is_pinned_and_covers_every_field() {
        let u = user("u1");
        // Pinned: a change here makes every nightly run see every user as changed.
        assert_eq!(
            payload_hash(&u).to_string(),
            "43c3f6c7d519219e75928a602cdeb8c6"
        );
        let mut variants = vec![u.clone()];
        let mut v = u.clone();
        v.user_id = "u2".into();
        variants.push(v);
        let mut v = u.clone();
        v.first_name = "Anne".into();
        variants.push(v);
        let mut v = u.clone();
        v.last_name = None;
        variants.push(v);
        let mut v = u.clone();
        v.last_name = Some("Lea".into());
        variants.push(v);
        let mut v = u.clone();
        v.phone_number = Some("+18005550101".into());
        variants.push(v);
        let mut v = u.clone();
        v.phone_number = None;
        variants.push(v);
        let mut v = u.clone();
        v.locale = Some("en-GB".into());
        variants.push(v);
        let mut v = u.clone();
        v.locale = None;
        variants.push(v);
        let hashes: std::collections::HashSet<_> = variants.iter().map(payload_hash).collect();
        assert_eq!(hashes.len(), variants.len());
        assert_eq!(payload_hash(&u), payload_hash(&u.clone()));
    }

    #[test]
    fn payload_hash_is_over_the_sent_json() {
        let u = user("u1");
        let mut h = Sha256::new();
        h.update(PAYLOAD_HASH_TAG);
        h.update(serde_json::to_vec(&u).unwrap());
        assert_eq!(payload_hash(&u).0[..], h.finalize()[..16]);
    }

    #[test]
    fn results_reader_keeps_successes_and_drops_a_torn_line() {
        let text = "row,user_id,status,http_status,attempts,error,duration_ms\n\
                    1,u1,created,200,1,,5\n\
                    2,u2,failed,503,6,HTTP 503,900\n\
                    3,u3,exists,400,1,,4\n\
                    4,u4,unchanged,,0,,0\n\
                    5,u5,changed,,0,differs,0\n\
                    1,u1,failed,503,1,,5\n\
                    6,u6,created,200,1,,";
        let mut s = ImportSummary::default();
        let Ok(sets) = read_results(text.as_bytes(), &mut s) else {
            panic!("parse")
        };
        assert!(sets.created.contains(1) && !sets.created.contains(6));
        assert!(sets.exists.contains(3) && sets.exists.contains(4));
        assert!(!sets.exists.contains(2) && !sets.exists.contains(5));
        assert_eq!(s.skipped_changed, 1);
        assert_eq!(s.results_rows, 6);
        let mut s = ImportSummary::default();
        assert!(matches!(
            read_results("a,b,c\n1,2,3\n".as_bytes(), &mut s),
            Err(ResultsError::Format(_))
        ));
    }

    #[test]
    fn batch_lookup_matches_point_lookups_with_repeats_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = StateStore::open(&dir.path().join("s.db")).unwrap();
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let batch: Vec<Recorded> = (0..1200)
            .map(|i| Recorded {
                user_id: format!("u{i}"),
                payload_hash: payload_hash(&user(&format!("u{i}"))),
                status: if i % 2 == 0 {
                    StoredStatus::Created
                } else {
                    StoredStatus::Exists
                },
                at,
            })
            .collect();
        st.record(&batch).unwrap();
        let ids: Vec<String> = (0..1300)
            .rev()
            .map(|i| format!("u{}", i % 1250))
            .chain(["u3".to_string(), "u3".to_string()])
            .collect();
        let many = st.lookup_many(&ids).unwrap();
        assert_eq!(many.len(), ids.len());
        for (id, got) in ids.iter().zip(&many) {
            assert_eq!(*got, st.lookup(id).unwrap(), "{id}");
        }
        assert!(many.iter().filter(|k| k.is_none()).count() > 0);
        let mut r = st.reader().unwrap();
        assert_eq!(r.lookup_many(&ids).unwrap(), many);
    }

    #[test]
    fn classify_and_status_words() {
        let k = Known {
            payload_hash: PayloadHash([1; 16]),
            status: StoredStatus::Created,
            last_seen: jiff::Timestamp::UNIX_EPOCH,
        };
        assert_eq!(k.classify(&PayloadHash([1; 16])), Status::Unchanged);
        assert_eq!(k.classify(&PayloadHash([2; 16])), Status::Changed);
        assert!(k.changed_message().contains("different payload"));
        for s in [StoredStatus::Created, StoredStatus::Exists] {
            assert_eq!(StoredStatus::parse(s.as_str()), Some(s));
            assert_eq!(StoredStatus::from_outcome(s.to_outcome()), Some(s));
        }
        assert_eq!(StoredStatus::from_outcome(Status::Failed), None);
    }
}
