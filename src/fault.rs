//! Fault injection for the crash tests: `FAULT_INJECT_CRASH_AT=<point>` (not
//! `CCHC_*`, which is configuration) makes the process abort (as SIGKILL
//! would, nothing flushed or closed) when it reaches that point. Unset in any real deployment; reading it costs one
//! comparison per call once the variable has been read.
//!
//! Points:
//! - `relay-published`: the broker has acknowledged a batch of alerts and the
//!   outbox does not yet say so; the window in which a crash must neither lose
//!   nor duplicate an alert (beyond what its stable id lets a subscriber drop).

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const CRASH_AT: &str = "FAULT_INJECT_CRASH_AT";

/// Aborts the process if [`CRASH_AT`] names `point`.
pub fn crash_point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT).ok());
    if at.as_deref() == Some(point) {
        eprintln!("{CRASH_AT}={point}: aborting the process here");
        std::process::abort();
    }
}
