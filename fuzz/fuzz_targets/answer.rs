//! Fuzz the partner's answers: any status, `Retry-After` and body of the
//! create-user and address endpoints (the address answer flat or nested),
//! classified; and the token endpoint's answer, with the expiry the token
//! manager computes from it. See `connect_provision::fuzzing::answer_input`
//! for the input's layout.
//!
//! Run: cargo +nightly fuzz run answer -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    connect_provision::fuzzing::answer_input(data);
});
