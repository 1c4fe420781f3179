//! The pure core: the event contract, the fold, indicators, windows and
//! targets. No I/O, no async, no clock: time is always an argument. Nothing
//! here imports the rest of the crate.

pub mod breach;
pub mod event;
pub mod fold;
pub mod indicator;
pub mod time;
pub mod units;

pub use breach::{Alert, BreachState, Evaluator, StateKey, Transition};
pub use event::{decode, CaseEvent, EventKind, Rejection};
pub use fold::{
    Applied, CaseKey, CaseState, DayCounters, DayKey, DocumentKey, DocumentState, Fold,
};
pub use indicator::{Comparator, Indicator, Ratio, Rule, Standing, Target, Targets, Window};
pub use units::{Unit, UnitCode, UnitKind, UnitSpec, Units};
