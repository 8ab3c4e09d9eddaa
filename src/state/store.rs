//! The connections: [`StateStore`] (the run lock, the writing connection)
//! and [`StateReader`] (lookups from another thread).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::preload::Preloaded;
use super::sql::{
    APPLICATION_ID, LOOKUP_BATCH, MIGRATE_1_TO_2, SCHEMA, SCHEMA_VERSION, UPSERT_SQL, UpsertRow,
    export_from, lookup_in, lookup_many_in, run_from_row, stats_in, upsert,
};
use super::{Fingerprint, Known, Recorded, RunInfo, StateError, StateStats};

/// Page cache of a [`StateReader`] (and of the store's own lookups), KiB.
pub(super) const READER_CACHE_KIB: i64 = 32 * 1024;
/// Page cache of the writing connection, KiB.
pub(super) const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// Page cache of [`StateReader::preload`]'s one pass over the users, KiB.
const PRELOAD_CACHE_KIB: i64 = 2 * 1024;
/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `PATH.lock`, beside the state file.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
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

/// The lock on `PATH.lock`, released when the last holder is dropped.
#[derive(Debug)]
struct Lock {
    _file: File,
}

/// An open state file. See the module docs.
pub struct StateStore {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
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
    /// long as the store (and any `StateReader` of it) lives.
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
        if version == 1 {
            // A state file of a build before addresses: add their columns.
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {MIGRATE_1_TO_2}
                 PRAGMA user_version = {SCHEMA_VERSION};
                 COMMIT;"
            ))
            .map_err(StateError::sql(path, "migrate the schema to version 2"))?;
        } else if version < SCHEMA_VERSION {
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

    /// A second, read-only connection for lookups from another thread (the
    /// intake) while this store records from the recorder thread. It keeps
    /// the run lock alive until it is dropped too.
    pub fn reader(&self) -> Result<StateReader, StateError> {
        Ok(StateReader {
            conn: open_reader_conn(&self.path)?,
            path: self.path.clone(),
            txn_left: 0,
            known: None,
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
    /// returns). Upsert: `first_seen` is kept, see `UPSERT_SQL`.
    pub fn record(&mut self, batch: &[Recorded]) -> Result<(), StateError> {
        let rows = batch.iter().map(|r| UpsertRow {
            user_id: r.user_id.as_str(),
            hash: &r.payload_hash,
            status: r.status,
            at: r.at,
            address_hash: r.address_hash.as_ref(),
            validated_address: r.validated_address.as_deref(),
        });
        self.upsert_all("record users", rows)
    }

    /// Upsert `rows` in one transaction, durable when this returns (none: no
    /// transaction). `op` names the work in an error.
    pub(super) fn upsert_all<'a>(
        &mut self,
        op: &'static str,
        rows: impl ExactSizeIterator<Item = UpsertRow<'a>>,
    ) -> Result<(), StateError> {
        if rows.len() == 0 {
            return Ok(());
        }
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StateError::sql(path, op))?;
        {
            let mut stmt = tx
                .prepare_cached(UPSERT_SQL)
                .map_err(StateError::sql(path, op))?;
            for row in rows {
                upsert(&mut stmt, row).map_err(StateError::sql(path, op))?;
            }
        }
        tx.commit().map_err(StateError::sql(path, op))
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

    /// A new, unfinished `runs` row of `kind`; returns its id.
    pub(super) fn insert_run(
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
}

/// A read-only connection for lookups, usable from another thread than the
/// [`StateStore`] it came from (WAL: it reads while the store commits).
pub struct StateReader {
    conn: Connection,
    path: PathBuf,
    /// Lookups left in the current read transaction (0: none open).
    txn_left: u32,
    /// The known payloads in memory, once [`StateReader::preload`] ran.
    known: Option<Preloaded>,
    _lock: Option<Arc<Lock>>,
}

/// Lookups per read transaction of a [`StateReader`]: starting a WAL read
/// transaction per statement costs more than the lookup itself.
pub(super) const LOOKUPS_PER_READ_TXN: u32 = 1024;

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

    /// Read every known payload's fingerprint into memory (about 7 bytes a
    /// user, a few seconds for 10M), so [`StateReader::unchanged`] decides
    /// most rows of a night without a lookup, whatever their order (see
    /// `state::preload`). The table is read in one pass through a small page
    /// cache, which does not stay resident. Returns the users held.
    pub(crate) fn preload(&mut self) -> Result<u64, StateError> {
        self.release()?;
        let path = &self.path;
        self.conn
            .pragma_update(None, "cache_size", -PRELOAD_CACHE_KIB)
            .map_err(StateError::sql(path, "set the cache size"))?;
        let known =
            Preloaded::load(&self.conn).map_err(StateError::sql(path, "read the known users"))?;
        self.conn
            .pragma_update(None, "cache_size", -READER_CACHE_KIB)
            .map_err(StateError::sql(path, "set the cache size"))?;
        let n = known.len();
        self.known = Some(known);
        Ok(n)
    }

    /// Whether a row whose payload has fingerprint `print` is known and
    /// `unchanged`, decided from the pre-load alone (false without one, or
    /// when the row must be looked up: new, `changed` or `updated`).
    pub(crate) fn unchanged(&self, print: &Fingerprint) -> bool {
        self.known.as_ref().is_some_and(|k| k.unchanged(print))
    }

    /// Resize this connection's page cache (default `READER_CACHE_KIB`, 32 MiB).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::user;
    use crate::state::{StoredStatus, payload_hash};

    // Issue #20: a state file of a build before addresses (schema 1) still
    // opens; it is migrated in place and keeps its users.
    #[test]
    fn a_version_1_state_file_opens_and_gains_the_address_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE users (
                    user_id TEXT PRIMARY KEY NOT NULL, payload_hash BLOB NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('created', 'exists')),
                    first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE TABLE runs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL DEFAULT 'run',
                    started INTEGER NOT NULL, finished INTEGER, input_sha256 TEXT NOT NULL,
                    reports TEXT, counts_json TEXT);
                 INSERT INTO users VALUES ('u1', x'01010101010101010101010101010101', 'created', 5, 5);
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        let mut st = StateStore::open(&path).unwrap();
        let known = st.lookup("u1").unwrap().expect("u1 kept");
        assert_eq!(known.payload_hash, crate::state::PayloadHash([1; 16]));
        assert_eq!(known.address_hash, None);
        let at = jiff::Timestamp::from_second(10).unwrap();
        st.record(&[Recorded {
            user_id: "u1".into(),
            payload_hash: crate::state::PayloadHash([1; 16]),
            status: crate::state::StoredStatus::Exists,
            at,
            address_hash: Some(crate::state::PayloadHash([9; 16])),
            validated_address: Some("{}".into()),
        }])
        .unwrap();
        let known = st.lookup("u1").unwrap().expect("u1");
        assert_eq!(known.address_hash, Some(crate::state::PayloadHash([9; 16])));
        assert_eq!(
            known.status,
            crate::state::StoredStatus::Created,
            "created is sticky"
        );
        drop(st);
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
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
                address_hash: None,
                validated_address: None,
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
}
