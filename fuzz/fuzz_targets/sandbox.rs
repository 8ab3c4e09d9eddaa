//! Fuzz the sandbox's request bodies: token (with its query string),
//! create-user, the address upsert (with its user_id) and `/_sandbox/config`,
//! each sent twice to a fresh sandbox. See
//! `connect_provision::fuzzing::sandbox_input` for the input's layout.
//!
//! Run: cargo +nightly fuzz run sandbox -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    connect_provision::fuzzing::sandbox_input(data);
});
