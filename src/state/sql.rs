//! The schema, the SQL text, and the queries [`StateStore`](super::StateStore)
//! and [`StateReader`](super::StateReader) share.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Known, PayloadHash, RunInfo, StateError, StateStats, StoredStatus};
use crate::report::neutralize;

/// Schema version written to `PRAGMA user_version`. 2 added the address
/// columns (issue #20); a version-1 file is migrated by [`MIGRATE_1_TO_2`].
pub(super) const SCHEMA_VERSION: i64 = 2;
/// `PRAGMA application_id` of a state file: "CPST".
pub(super) const APPLICATION_ID: i64 = 0x4350_5354;
/// Ids per query in `StateReader::lookup_many`.
pub const LOOKUP_BATCH: usize = 500;

/// The tables, created by `StateStore::open` in a new file.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    user_id      TEXT    PRIMARY KEY NOT NULL,
    payload_hash BLOB    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('created', 'exists')),
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    address_hash BLOB,
    validated_address TEXT
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

/// Version 1 → 2: each user's last address (its hash as sent, and the
/// partner's validated answer as JSON); NULL for users without one.
pub(super) const MIGRATE_1_TO_2: &str = "
ALTER TABLE users ADD COLUMN address_hash BLOB;
ALTER TABLE users ADD COLUMN validated_address TEXT;";

const LOOKUP_SQL: &str =
    "SELECT payload_hash, status, last_seen, address_hash FROM users WHERE user_id = ?1";

/// Insert or update one user. `first_seen` only ever moves back, `last_seen`
/// only forward; the payload hash is the one of the latest record (an import
/// of an older results.csv does not overwrite a newer hash); `created` is
/// sticky: a user this tool once created stays `created` when a later run
/// finds it `exists` (e.g. resent after a crash). The address columns are
/// the latest record's that has one: a row without an address does not
/// forget the user's.
pub(super) const UPSERT_SQL: &str = "
INSERT INTO users (user_id, payload_hash, status, first_seen, last_seen, address_hash, validated_address)
VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)
ON CONFLICT (user_id) DO UPDATE SET
    payload_hash = CASE WHEN excluded.last_seen >= users.last_seen
                        THEN excluded.payload_hash ELSE users.payload_hash END,
    address_hash = CASE WHEN excluded.address_hash IS NOT NULL AND excluded.last_seen >= users.last_seen
                        THEN excluded.address_hash ELSE users.address_hash END,
    validated_address = CASE WHEN excluded.validated_address IS NOT NULL AND excluded.last_seen >= users.last_seen
                        THEN excluded.validated_address ELSE users.validated_address END,
    status       = CASE WHEN users.status = 'created' THEN 'created' ELSE excluded.status END,
    first_seen   = MIN(users.first_seen, excluded.first_seen),
    last_seen    = MAX(users.last_seen, excluded.last_seen)";

/// One user, by the cached [`LOOKUP_SQL`] statement.
pub(super) fn lookup_in(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<Known>> {
    let mut stmt = conn.prepare_cached(LOOKUP_SQL)?;
    stmt.query_row([user_id], |r| known_from_row(r, 0))
        .optional()
        .map(Option::flatten)
}

/// Columns `payload_hash, status, last_seen, address_hash` from `at`; `None` for a row
/// this version cannot read (treated as unknown: the row is sent, and the
/// answer `exists` re-records it).
fn known_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Known>> {
    let hash = PayloadHash::from_blob(r.get_ref(at)?.as_blob()?);
    let status = StoredStatus::parse(r.get_ref(at + 1)?.as_str()?);
    let last = jiff::Timestamp::from_second(r.get(at + 2)?).unwrap_or_default();
    let address_hash = match r.get_ref(at + 3)? {
        rusqlite::types::ValueRef::Blob(b) => PayloadHash::from_blob(b),
        _ => None,
    };
    Ok(hash.zip(status).map(|(payload_hash, status)| Known {
        payload_hash,
        status,
        last_seen: last,
        address_hash,
    }))
}

/// Many users, one query per [`LOOKUP_BATCH`] ids; answers in the order of `ids`.
pub(super) fn lookup_many_in<S: AsRef<str>>(
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
    sql.push_str(
        "SELECT user_id, payload_hash, status, last_seen, address_hash FROM users WHERE user_id IN (",
    );
    for i in 0..n {
        sql.push_str(if i == 0 { "?" } else { ",?" });
    }
    sql.push(')');
    sql
}

fn ts(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(secs).unwrap_or_default()
}

/// A `runs` row, selected in column order.
pub(super) fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunInfo> {
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

/// Users per status, file sizes, and the last run.
pub(super) fn stats_in(conn: &Connection, path: &Path) -> Result<StateStats, StateError> {
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

/// The users as CSV to `w`, ordered by user_id; returns how many.
pub(super) fn export_from(
    conn: &Connection,
    path: &Path,
    w: impl Write,
) -> Result<u64, StateError> {
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

/// Execute [`UPSERT_SQL`] for one user.
pub(super) fn upsert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    row: UpsertRow<'_>,
) -> rusqlite::Result<()> {
    stmt.execute(params![
        row.user_id,
        &row.hash.0[..],
        row.status.as_str(),
        row.at.as_second(),
        row.address_hash.map(|h| &h.0[..]),
        row.validated_address,
    ])
    .map(drop)
}

/// One user to upsert.
pub(super) struct UpsertRow<'a> {
    pub(super) user_id: &'a str,
    pub(super) hash: &'a PayloadHash,
    pub(super) status: StoredStatus,
    pub(super) at: jiff::Timestamp,
    pub(super) address_hash: Option<&'a PayloadHash>,
    pub(super) validated_address: Option<&'a str>,
}

/// `PATH-wal`, the write-ahead log beside the state file.
fn wal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}
