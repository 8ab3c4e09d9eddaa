//! The known payloads, in memory: what lets a `--state` night decide
//! `unchanged` without a lookup, in any input order.
//!
//! One read of the `users` table at the start of a run (in b-tree order,
//! so sequential pages) keeps a 64-bit fingerprint of each stored payload
//! hash in an [`FpSet`] (about 7 bytes a user), and, for users with an
//! address, one of the pair (payload hash, address hash). A row whose
//! fingerprint is there is `unchanged`, exactly as a lookup would decide it;
//! any other row (new, `changed`, `updated`) is looked up in SQLite as
//! before. The payload hash covers the user_id (it is over the JSON body),
//! so a fingerprint names one user's one payload: a row taken for
//! `unchanged` that is not has a fingerprint equal to one of the n stored
//! ones by chance, which for m rows happens with probability at most
//! m·n/2⁶⁴ (~5·10⁻⁶ for a night of 10M rows against 10M users;
//! docs/operations.md "Incremental nightly runs"). SHA-256 cannot be steered to such a match.

use rusqlite::Connection;

use super::{Fingerprint, PayloadHash, StoredStatus};
use crate::fpset::FpSet;

/// Fingerprints of the payloads (and payload-address pairs) the state holds.
#[derive(Debug, Default)]
pub(crate) struct Preloaded {
    users: FpSet,
    addresses: FpSet,
}

/// The fingerprint of a user-fields hash.
fn user_key(h: &PayloadHash) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.0[..8]);
    u64::from_le_bytes(b)
}

/// The fingerprint of a (user-fields hash, address hash) pair: bits of
/// each that `user_key` does not use, so it binds both.
fn pair_key(user: &PayloadHash, address: &PayloadHash) -> u64 {
    let mut u = [0u8; 8];
    u.copy_from_slice(&user.0[8..]);
    let mut a = [0u8; 8];
    a.copy_from_slice(&address.0[..8]);
    u64::from_le_bytes(u) ^ u64::from_le_bytes(a)
}

impl Preloaded {
    /// Read every user's hashes from `conn`. A row a lookup could not read
    /// (a hash of the wrong size, an unknown status) is left out, so it is
    /// looked up, as before.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Preloaded> {
        // Counting is quick (SQLite counts a b-tree's cells page by page,
        // 0.15 s at 10M users), and a set allocated once stays near its
        // size in resident memory (`FpSet::with_capacity`). The address
        // pairs' set, smaller or empty, grows as it goes.
        let users: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
        let mut known = Preloaded {
            users: FpSet::with_capacity(users.try_into().unwrap_or(0)),
            addresses: FpSet::new(),
        };
        let mut stmt = conn.prepare("SELECT payload_hash, status, address_hash FROM users")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let hash = r
                .get_ref(0)?
                .as_blob()
                .ok()
                .and_then(PayloadHash::from_blob);
            let status = r.get_ref(1)?.as_str().ok().and_then(StoredStatus::parse);
            let (Some(hash), Some(_)) = (hash, status) else {
                continue;
            };
            known.users.insert(user_key(&hash));
            if let rusqlite::types::ValueRef::Blob(b) = r.get_ref(2)?
                && let Some(address) = PayloadHash::from_blob(b)
            {
                known.addresses.insert(pair_key(&hash, &address));
            }
        }
        Ok(known)
    }

    /// Whether a row of fingerprint `print` is `unchanged` (see the module
    /// docs); false means "look it up".
    pub(super) fn unchanged(&self, print: &Fingerprint) -> bool {
        self.users.contains(user_key(&print.user))
            && print
                .address
                .is_none_or(|a| self.addresses.contains(pair_key(&print.user, &a)))
    }

    /// Users held.
    pub(super) fn len(&self) -> u64 {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::outcome::Status;
    use crate::state::tests::user;
    use crate::state::{
        Fingerprint, PayloadHash, Recorded, StateStore, StoredStatus, payload_hash,
    };

    // Issue #21: the pre-load decides `unchanged` exactly where a lookup
    // would, and nothing else.
    #[test]
    fn preload_says_unchanged_exactly_where_a_lookup_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = StateStore::open(&dir.path().join("s.db")).unwrap();
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let addr = |b: u8| Some(PayloadHash([b; 16]));
        // u0..u9 without an address, u10..u19 with address 7.
        let recorded: Vec<Recorded> = (0..20)
            .map(|i| Recorded {
                user_id: format!("u{i}"),
                payload_hash: payload_hash(&user(&format!("u{i}"))),
                status: StoredStatus::Created,
                at,
                address_hash: if i >= 10 { addr(7) } else { None },
                validated_address: None,
            })
            .collect();
        st.record(&recorded).unwrap();
        let mut reader = st.reader().unwrap();
        assert_eq!(reader.preload().unwrap(), 20);

        let mut prints = Vec::new();
        for i in 0..25 {
            let id = format!("u{i}");
            let same = payload_hash(&user(&id));
            let mut other = user(&id);
            other.first_name = "Zed".into();
            let other = payload_hash(&other);
            for u in [same, other] {
                for a in [None, addr(7), addr(8)] {
                    prints.push((
                        id.clone(),
                        Fingerprint {
                            user: u,
                            address: a,
                        },
                    ));
                }
            }
        }
        let mut unchanged = 0;
        for (id, print) in &prints {
            let by_lookup = reader
                .lookup(id)
                .unwrap()
                .is_some_and(|k| k.classify_payload(print) == Status::Unchanged);
            assert_eq!(reader.unchanged(print), by_lookup, "{id} {print:?}");
            unchanged += usize::from(by_lookup);
        }
        // The same user fields with no address (u0..u19), or with the
        // stored address (u10..u19).
        assert_eq!(unchanged, 30);
    }
}
