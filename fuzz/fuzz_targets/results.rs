//! Fuzz results.csv read back: `--resume` (the kept lines, the rows to
//! skip), `report DIR` (the failing rows' errors) and `state import` (the
//! successes), through `connect_provision::fuzzing::results_csv`, which
//! also checks that no line is yielded twice and no row kept twice.
//!
//! Run: cargo +nightly fuzz run results -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    connect_provision::fuzzing::results_csv(data);
});
