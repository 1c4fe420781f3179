//! How the pipeline reads time. The fold never does (time is an argument);
//! the consumer, the API and the operator commands read it here: the wall
//! clock, shifted by `clock.skew_seconds` (for drills and tests of overdue
//! cases), to the microsecond.

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};

use crate::config::ClockSettings;
use crate::domain::time::local_date;

/// The pipeline's clock: wall time plus a configured skew.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    pub skew: chrono::Duration,
}

impl Clock {
    pub fn new(settings: &ClockSettings) -> Self {
        Clock {
            skew: chrono::Duration::seconds(settings.skew_seconds),
        }
    }

    /// Now, to the microsecond, as the store keeps it: a commit checks the
    /// stored clock against the one its batch started from, so a value that
    /// does not survive a round trip would refuse every clock tick.
    pub fn now(&self) -> DateTime<Utc> {
        (Utc::now() + self.skew).trunc_subsecs(6)
    }

    /// The local (Asia/Ho_Chi_Minh) date now.
    pub fn today(&self) -> NaiveDate {
        local_date(self.now())
    }
}
