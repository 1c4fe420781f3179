//! Arbitrary bytes as a Kafka record value: decode must never panic, and
//! whatever it accepts must fold without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cchc_pipeline_fuzz::check(data);
});
