//! Benchmark of the duplicate filter's set (`src/fpset.rs`, compiled in
//! here as a module): insert N uniformly distributed values (default 10M),
//! look N up (half present), and print ns per operation, the heap the set
//! asked for and the resident memory it added, per value.
//!
//! ```sh
//! cargo run --release --example fpset_bench -- 10000000
//! ```
#![allow(dead_code)]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[path = "../src/fpset.rs"]
mod fpset;
fn kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
fn main() {
    // Resident memory counts memory freed but not yet returned to the OS.
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let base = kib("VmRSS:");
    let t = std::time::Instant::now();
    // FPSET_PRESIZE=1: sized for n first (`FpSet::with_capacity`).
    let mut s = match std::env::var_os("FPSET_PRESIZE") {
        Some(_) => fpset::FpSet::with_capacity(n),
        None => fpset::FpSet::new(),
    };
    for i in 0..n {
        s.insert(mix(i));
    }
    let ins = t.elapsed();
    println!("heap_bytes {:.2} B/value", s.heap_bytes() as f64 / n as f64);
    let t = std::time::Instant::now();
    let mut hits = 0u64;
    for i in 0..n {
        hits += u64::from(s.contains(mix(i + n / 2)));
    }
    let look = t.elapsed();
    println!(
        "n={n} insert {:.0} ns/op, contains {:.0} ns/op (hits {hits}), RSS +{:.1} MiB = {:.2} B/value, HWM {:.1} MiB",
        ins.as_nanos() as f64 / n as f64,
        look.as_nanos() as f64 / n as f64,
        (kib("VmRSS:") - base) as f64 / 1024.0,
        (kib("VmRSS:") - base) as f64 * 1024.0 / n as f64,
        kib("VmHWM:") as f64 / 1024.0
    );
}
