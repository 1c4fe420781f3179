//! The pure core: the event contract, the fold, the counters and indicators
//! (each declared once), windows and targets, units and breach rules. No
//! I/O, no async, no clock: time is always an argument. Nothing here imports
//! the rest of the crate.

pub mod breach;
pub mod counters;
pub mod event;
pub mod fold;
pub mod indicator;
pub mod time;
pub mod units;

pub use breach::{
    Alert, AlertTarget, BatchPosition, BreachState, CatchUp, Deferral, Evaluator, Outlook,
    StateKey, Subject, Transition, AT_RISK_INDICATOR,
};
pub use counters::DayCounters;
pub use event::{decode, CaseEvent, EventKind, Rejection};
pub use fold::{
    id_digest, Applied, AppliedIds, CaseKey, CaseState, DayKey, DocumentKey, DocumentState,
    EventKey, Fold, IdDigest,
};
pub use indicator::{
    Comparator, Definition, Indicator, Ratio, Rule, Standing, Target, Targets, Window,
};
pub use units::{
    Problem, Refusal, Scope, Segment, Structure, Unit, UnitCode, UnitKind, UnitSpec, Units,
    UnitsError,
};
