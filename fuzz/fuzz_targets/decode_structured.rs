//! Fuzz bytes spliced into a valid version-1 envelope, to get past the JSON
//! syntax and exercise the field checks, timestamps, event types and data.
//!
//! Input: byte 0 picks the event type; the rest is split on 0xFE into
//! edits. An edit's first byte picks a field (low 5 bits) and what to do
//! with it (high 3 bits); the remaining bytes are the new material.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Some(record) = cchc_pipeline_fuzz::structured(input) {
        cchc_pipeline_fuzz::check(&record);
    }
});
