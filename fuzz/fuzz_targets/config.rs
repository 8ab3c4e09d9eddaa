//! Fuzz the `--config` TOML file (its keys and its `[columns]` mapping),
//! parsed and resolved as `run` (dry and live) and `check` resolve it,
//! through `connect_provision::fuzzing::config_toml`.
//!
//! Run: cargo +nightly fuzz run config -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file is read as UTF-8 (`read_to_string`): other bytes never parse.
    if let Ok(text) = std::str::from_utf8(data) {
        connect_provision::fuzzing::config_toml(text);
    }
});
