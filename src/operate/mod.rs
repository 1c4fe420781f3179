//! Operator commands, one module each: produce simulated events, import a
//! newline-delimited JSON export (backfill), check an export against the
//! contract, print the indicator report, make a unit's report over a
//! period (JSON, CSV, XLSX), list and resend dead letters. Every Kafka client comes from `kafka`, so
//! they work against a secured cluster as `cchc run` does.

mod dead_letters;
mod import;
pub mod period_report;
mod report;
mod simulate;
mod validate;

pub use dead_letters::{list_dead_letters, resend_dead_letter};
pub use import::{import, ImportReport};
pub use period_report::{period_report, Period, PeriodReport, ReportError};
pub use report::{report, report_from};
pub use simulate::{simulate, simulate_to_file, SimulateOptions};
pub use validate::{
    check, records, validate, Problem, Refusal, Shape, ValidateError, Validation, OUT_OF_SCOPE,
};
