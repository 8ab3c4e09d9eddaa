//! The state store behind `--state PATH`: an embedded SQLite database that
//! remembers, per `user_id`, the hash of the payload last provisioned, its
//! final status (`created` or `exists`) and when, so a nightly run sends only
//! what is new.
//!
//! - **One run at a time.** [`StateStore::open`] takes an exclusive lock on a
//!   sidecar file `PATH.lock` (std `File::try_lock`, an `flock` on Unix) and
//!   holds it until the store and every `StateReader` made from it are
//!   dropped. A second open of the same path, from this process or another,
//!   fails with [`StateError::Locked`]. `stats` and `export` may use
//!   [`StateStore::open_read_only`], which takes no lock and so also works
//!   while a run is going.
//! - **WAL, `synchronous=FULL`.** Each [`StateStore::record`] batch is one
//!   transaction, committed once per journal checkpoint (every ~200 ms), so
//!   the fsync that FULL adds to every commit costs at most a few fsyncs a
//!   second, and in exchange a committed batch survives a power loss, like
//!   the results.csv lines the journal fsyncs (NORMAL would only survive a
//!   process crash). WAL lets a `StateReader` look rows up in one thread
//!   while the recorder commits in another.
//! - **Bounded memory.** Each connection's page cache is capped
//!   (`READER_CACHE_KIB`, `WRITER_CACHE_KIB`) and nothing is memory
//!   mapped; the rest of the state stays in the OS page cache. What grows
//!   with the number of users is the run's pre-load (`preload`): a 64-bit
//!   fingerprint of each known payload, about 7 bytes a user.
//! - **Schema.** `users(user_id TEXT PRIMARY KEY, payload_hash BLOB(16),
//!   status TEXT, first_seen INTEGER, last_seen INTEGER, address_hash BLOB,
//!   validated_address TEXT) WITHOUT ROWID` (schema 2; a schema-1 file is
//!   migrated on open by adding the last two) (the
//!   user_id is the b-tree key: one seek per lookup, no second index) and
//!   `runs(id, kind, started, finished, input_sha256, reports, counts_json)`.
//!   Times are Unix seconds, UTC. `PRAGMA application_id` marks the file as
//!   ours and `PRAGMA user_version` is the schema version.
//!
//! The state holds user_ids, hashes and each user's last validated address
//! (street, postal code, long-distance flag, as the partner answered): no
//! names, phones or locales.
//!
//! Layout: this module holds the values and the error; `store` the
//! connections, the lock and [`StateStore`] / `StateReader`; `sql` the
//! schema and the queries they share; `preload` the known payloads in
//! memory; `import` [`StateStore::import`].

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::model::{Address, CreateUser, Payload};
use crate::input::InputError;
use crate::outcome::Status;

mod import;
mod preload;
mod sql;
mod store;

pub use sql::LOOKUP_BATCH;
use sql::SCHEMA_VERSION;
pub(crate) use store::StateReader;
pub use store::{StateStore, lock_path};

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

/// Domain tag hashed before an address.
const ADDRESS_HASH_TAG: &[u8] = b"connect-provision address v1\n";

/// The hash of `address` as it is sent (its JSON fields, blank optionals
/// left out), like [`payload_hash`].
pub(crate) fn address_hash(address: &Address) -> PayloadHash {
    let mut h = Sha256::new();
    h.update(ADDRESS_HASH_TAG);
    // An Address is strings only: serialising it cannot fail.
    h.update(serde_json::to_vec(address).unwrap_or_default());
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    PayloadHash(out)
}

/// What the state remembers of a payload: its user fields' hash (the hash
/// of before addresses, so a state written then still matches) and, for a
/// row with an address, the address's. Together they are the payload's
/// fingerprint: either changing is a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// [`payload_hash`] of the user fields.
    pub user: PayloadHash,
    /// [`address_hash`] of the address, when the row has one.
    pub address: Option<PayloadHash>,
}

/// The fingerprint of `payload`.
pub(crate) fn fingerprint(payload: &Payload) -> Fingerprint {
    Fingerprint {
        user: payload_hash(payload.user()),
        address: payload.address().map(address_hash),
    }
}

// ---------------------------------------------------------------------------
// Values

/// The final status the state remembers: only successes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredStatus {
    /// The run created the user.
    Created,
    /// Connect answered that the user already exists.
    Exists,
}

impl StoredStatus {
    /// The word stored and exported.
    fn as_str(self) -> &'static str {
        match self {
            StoredStatus::Created => "created",
            StoredStatus::Exists => "exists",
        }
    }

    /// Parse the stored word.
    fn parse(s: &str) -> Option<StoredStatus> {
        match s {
            "created" => Some(StoredStatus::Created),
            "exists" => Some(StoredStatus::Exists),
            _ => None,
        }
    }

    /// The status to record for a row outcome: `created` and `exists` only
    /// (`updated`: known before, recorded `exists`; a `created` stays so).
    pub(crate) fn from_outcome(s: Status) -> Option<StoredStatus> {
        match s {
            Status::Created => Some(StoredStatus::Created),
            Status::Exists | Status::Updated => Some(StoredStatus::Exists),
            _ => None,
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
    /// Hash of the payload that was provisioned.
    pub payload_hash: PayloadHash,
    /// How it was provisioned.
    pub status: StoredStatus,
    /// When a run last recorded it.
    pub last_seen: jiff::Timestamp,
    /// Hash of the last address sent for it (`None`: none yet, or a state
    /// from before addresses).
    pub address_hash: Option<PayloadHash>,
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

    /// The row status for a row whose payload has fingerprint `print`:
    /// `changed` when the user fields differ (Connect has no update-user
    /// call, and the upsert is not documented to update names), else
    /// `updated` when the row has an address the state does not hold
    /// (send it again: the upsert attaches it), else `unchanged`.
    pub(crate) fn classify_payload(&self, print: &Fingerprint) -> Status {
        if self.payload_hash != print.user {
            return Status::Changed;
        }
        match print.address {
            Some(a) if self.address_hash != Some(a) => Status::Updated,
            _ => Status::Unchanged,
        }
    }

    /// The results.csv `error` cell for a `changed` row.
    pub(crate) fn changed_message(&self) -> String {
        format!(
            "provisioned {} ({}) with a different payload; Connect has no update call, so it was not sent",
            self.last_seen, self.status
        )
    }
}

/// One success to remember.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The user provisioned.
    pub user_id: String,
    /// Hash of the payload sent.
    pub payload_hash: PayloadHash,
    /// How it was provisioned.
    pub status: StoredStatus,
    /// When.
    pub at: jiff::Timestamp,
    /// Hash of the address sent with it, if any.
    pub address_hash: Option<PayloadHash>,
    /// The partner's validated address (JSON: `address_line_1`,
    /// `postal_code`, `long_distance_delivery`), if it answered one.
    pub validated_address: Option<String>,
}

/// One run (or import) as the `runs` table keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    /// Row id in the `runs` table.
    pub id: i64,
    /// `run` or `import`.
    pub kind: String,
    #[serde(serialize_with = "ser_ts")]
    started: jiff::Timestamp,
    /// `None`: the run has not finished (still going, or it crashed).
    #[serde(serialize_with = "ser_opt_ts")]
    pub finished: Option<jiff::Timestamp>,
    /// SHA-256 of the input CSV, in hex.
    pub input_sha256: String,
    /// Reports directory (a run) or results.csv (an import).
    pub reports: Option<String>,
    /// Counts per status, once finished.
    pub counts: Option<BTreeMap<String, u64>>,
}

/// `connect-provision state stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateStats {
    path: PathBuf,
    /// Users recorded.
    pub users: u64,
    /// Users per stored status (`created`, `exists`); both always present.
    pub users_by_status: BTreeMap<String, u64>,
    /// Size of the database file.
    pub db_bytes: u64,
    /// Size of its write-ahead log (`PATH-wal`; 0 when absent).
    pub wal_bytes: u64,
    /// Runs and imports recorded.
    pub runs: u64,
    /// Runs started and never finished (crashed or still going).
    pub unfinished_runs: u64,
    /// The latest run or import.
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
    pub(crate) skipped_changed: u64,
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
    /// Another process holds the state's lock.
    #[error(
        "state file {} is in use by another run (lock held on {}); wait for it or use another --state",
        .path.display(), .lock.display()
    )]
    Locked {
        /// The state file.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock state file {}: cannot use {}", .path.display(), .lock.display())]
    Lock {
        /// The state file.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The state file does not exist.
    #[error("state file {} does not exist", .path.display())]
    NotFound {
        /// The state file.
        path: PathBuf,
    },
    /// SQLite could not open the file.
    #[error("cannot open state file {}", .path.display())]
    Open {
        /// The state file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not a state file.
    #[error("{} is not a connect-provision state file ({reason})", .path.display())]
    NotState {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The file's schema is newer than this version knows.
    #[error(
        "state file {} was written by a newer connect-provision (schema {found}; this version knows up to {SCHEMA_VERSION})",
        .path.display()
    )]
    TooNew {
        /// The state file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// An SQLite statement failed.
    #[error("state file {}: cannot {op}", .path.display())]
    Sql {
        /// The state file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error("{}: cannot {op}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A results.csv could not be imported.
    #[error("cannot import {} into state file {}: {message}", .results.display(), .path.display())]
    Import {
        /// The state file.
        path: PathBuf,
        /// The results.csv.
        results: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The import's input CSV could not be read.
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A payload with every field set, for the state's unit tests.
    pub(crate) fn user(id: &str) -> CreateUser {
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
    fn classify_and_status_words() {
        let k = Known {
            payload_hash: PayloadHash([1; 16]),
            status: StoredStatus::Created,
            last_seen: jiff::Timestamp::UNIX_EPOCH,
            address_hash: Some(PayloadHash([7; 16])),
        };
        assert_eq!(k.classify(&PayloadHash([1; 16])), Status::Unchanged);
        assert_eq!(k.classify(&PayloadHash([2; 16])), Status::Changed);
        // Issue #20: the address is part of the fingerprint; only an
        // address change with the same user fields is sent again.
        let print = |user: u8, address: Option<u8>| Fingerprint {
            user: PayloadHash([user; 16]),
            address: address.map(|a| PayloadHash([a; 16])),
        };
        assert_eq!(k.classify_payload(&print(1, Some(7))), Status::Unchanged);
        assert_eq!(k.classify_payload(&print(1, None)), Status::Unchanged);
        assert_eq!(k.classify_payload(&print(1, Some(8))), Status::Updated);
        assert_eq!(k.classify_payload(&print(2, Some(8))), Status::Changed);
        assert_eq!(k.classify_payload(&print(2, Some(7))), Status::Changed);
        let no_address = Known {
            address_hash: None,
            ..k
        };
        assert_eq!(
            no_address.classify_payload(&print(1, Some(7))),
            Status::Updated
        );
        assert!(k.changed_message().contains("different payload"));
        for s in [StoredStatus::Created, StoredStatus::Exists] {
            assert_eq!(StoredStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            StoredStatus::from_outcome(Status::Created),
            Some(StoredStatus::Created)
        );
        assert_eq!(
            StoredStatus::from_outcome(Status::Exists),
            Some(StoredStatus::Exists)
        );
        assert_eq!(StoredStatus::from_outcome(Status::Failed), None);
    }
}
