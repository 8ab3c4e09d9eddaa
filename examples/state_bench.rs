//! Benchmark of the `--state` store: fill a state with N users (default 1M,
//! `STATE_BENCH_USERS=10000000` for 10M), then look up 1M known ids, in key
//! order and shuffled, one at a time and in batches, with the payload hash
//! the pipeline computes per row; then record a night's 1% new users. Peak
//! RSS (VmHWM) is printed after each phase.
//!
//! ```sh
//! cargo run --release --example state_bench
//! STATE_BENCH_USERS=10000000 cargo run --release --example state_bench
//! ```
//!
//! `STATE_BENCH_DIR` puts the state file somewhere else than a temporary
//! directory (it must be on a local disk).

use std::fmt::Write as _;
use std::time::Instant;

use connect_provision::api::model::CreateUser;
use connect_provision::state::{
    LOOKUP_BATCH, PayloadHash, Recorded, StateStore, StoredStatus, payload_hash,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;

const LOOKUPS: usize = 1_000_000;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mem(phase: &str) {
    println!(
        "  [{phase}] RSS {:.1} MiB, peak RSS (VmHWM) {:.1} MiB",
        status_kib("VmRSS:") as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0
    );
}

fn user(i: u32) -> CreateUser {
    CreateUser {
        user_id: id(i),
        first_name: "Ann".into(),
        last_name: Some(format!("Lee{i}")),
        phone_number: Some(format!("+1800555{:04}", i % 10_000)),
        locale: Some("en-US".into()),
    }
}

fn id(i: u32) -> String {
    format!("C{:010}", i.wrapping_mul(2_654_435_761))
}

fn rate(n: usize, t: std::time::Duration) -> String {
    format!(
        "{:>10.0}/s ({n} in {:.2}s)",
        n as f64 / t.as_secs_f64(),
        t.as_secs_f64()
    )
}

fn main() {
    let users: u32 = std::env::var("STATE_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir_in(
        std::env::var_os("STATE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into),
    )
    .expect("temporary directory");
    let path = tmp.path().join("state.db");
    println!("state {} with {users} users", path.display());

    // Fill, as nightly runs would: batches of 10k upserts, one transaction each.
    let at = jiff::Timestamp::now();
    let t = Instant::now();
    {
        let mut st = StateStore::open(&path).expect("open");
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..users {
            let u = user(i);
            batch.push(Recorded {
                payload_hash: payload_hash(&u),
                user_id: u.user_id,
                status: StoredStatus::Created,
                at,
                address_hash: None,
                validated_address: None,
            });
            if batch.len() == 10_000 {
                st.record(&batch).expect("record");
                batch.clear();
            }
        }
        st.record(&batch).expect("record");
    }
    println!(
        "fill:                 {}",
        rate(users as usize, t.elapsed())
    );
    mem("after fill");

    let mut st = StateStore::open(&path).expect("reopen");
    let stats = st.stats().expect("stats");
    println!(
        "state file: {:.1} MiB (+ WAL {:.1} MiB)",
        stats.db_bytes as f64 / 1048576.0,
        stats.wal_bytes as f64 / 1048576.0
    );
    let mut reader = st.reader().expect("reader");
    if let Some(kib) = std::env::var("STATE_BENCH_CACHE_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        reader.set_cache_kib(kib).expect("cache size");
        println!("reader cache: {kib} KiB");
    }

    let n = LOOKUPS.min(users as usize) as u32;
    // A night's input: the first n users, in id order or shuffled.
    let mut in_order: Vec<u32> = (0..n).collect();
    in_order.sort_by_key(|&i| i.wrapping_mul(2_654_435_761));
    let mut shuffled: Vec<u32> = (0..n).collect();
    shuffled.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(7));

    for (name, order) in [("key order", &in_order), ("shuffled", &shuffled)] {
        // Point lookups, as the intake would do per row.
        let mut buf = String::new();
        let t = Instant::now();
        let mut hits = 0usize;
        for &i in order.iter() {
            buf.clear();
            let _ = write!(buf, "C{:010}", i.wrapping_mul(2_654_435_761));
            hits += reader.lookup(&buf).expect("lookup").is_some() as usize;
        }
        assert_eq!(hits, n as usize);
        println!("point lookup, {name:9}: {}", rate(n as usize, t.elapsed()));

        // The same with the payload hash and classification per row.
        let t = Instant::now();
        let mut unchanged = 0usize;
        for &i in order.iter() {
            let u = user(i);
            let h: PayloadHash = payload_hash(&u);
            if let Some(k) = reader.lookup(&u.user_id).expect("lookup") {
                unchanged += (k.payload_hash == h) as usize;
            }
        }
        assert_eq!(unchanged, n as usize);
        println!(
            "point + build payload + hash, {name:9}: {}",
            rate(n as usize, t.elapsed())
        );

        // Batches of LOOKUP_BATCH.
        let t = Instant::now();
        let mut hits = 0usize;
        let mut ids: Vec<String> = Vec::with_capacity(LOOKUP_BATCH);
        for chunk in order.chunks(LOOKUP_BATCH) {
            ids.clear();
            ids.extend(chunk.iter().map(|&i| id(i)));
            hits += reader
                .lookup_many(&ids)
                .expect("lookup_many")
                .iter()
                .filter(|k| k.is_some())
                .count();
        }
        assert_eq!(hits, n as usize);
        println!("batch lookup, {name:9}: {}", rate(n as usize, t.elapsed()));
        mem(name);
    }

    // Unknown ids (the 1% new rows of a night) cost a lookup too.
    let t = Instant::now();
    let mut misses = 0usize;
    for i in 0..100_000u32 {
        misses += reader
            .lookup(&format!("N{i:09}"))
            .expect("lookup")
            .is_none() as usize;
    }
    assert_eq!(misses, 100_000);
    println!("point lookup, unknown:   {}", rate(100_000, t.elapsed()));

    // A night's 1% new users recorded in checkpoint batches of 100, while the
    // reader keeps looking up (single thread here: interleaved).
    let t = Instant::now();
    let new = (users / 100).max(1);
    let mut batch = Vec::with_capacity(100);
    for i in 0..new {
        let u = user(users + i);
        batch.push(Recorded {
            payload_hash: payload_hash(&u),
            user_id: u.user_id,
            status: StoredStatus::Created,
            at,
            address_hash: None,
            validated_address: None,
        });
        if batch.len() == 100 {
            st.record(&batch).expect("record");
            batch.clear();
            reader.lookup(&id(i)).expect("lookup");
        }
    }
    st.record(&batch).expect("record");
    println!(
        "record 1% new in batches of 100 (synchronous=FULL, one fsync each): {}",
        rate(new as usize, t.elapsed())
    );
    mem("end");
    let t = Instant::now();
    let s = st.stats().expect("stats");
    println!(
        "stats: {} users in {:.2}s",
        s.users,
        t.elapsed().as_secs_f64()
    );
}
