//! Threshold breaches: when an indicator of a commune, over a window, starts
//! failing its target on a sufficient sample (breached) and when it meets it
//! again (recovered). Only transitions are alerts.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::indicator::{Comparator, Indicator, Ratio, Rule, Standing, Window};
use super::time::local_offset;
use super::units::UnitCode;

/// The two transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Transition {
    #[serde(rename = "indicator.breached")]
    Breached,
    #[serde(rename = "indicator.recovered")]
    Recovered,
}

impl Transition {
    pub fn event_type(self) -> &'static str {
        match self {
            Transition::Breached => "indicator.breached",
            Transition::Recovered => "indicator.recovered",
        }
    }
}

/// Where one (commune, indicator, window) stands, as stored between batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreachState {
    pub in_breach: bool,
    /// Transitions so far: numbers the alert ids.
    pub transitions: i64,
}

impl BreachState {
    /// The transition a new standing makes, if any. A breach needs a failed
    /// target on at least the minimum sample; recovery needs the target met.
    /// An undefined rate or a failure on too small a sample changes nothing.
    pub fn next(self, standing: Standing) -> Option<Transition> {
        match (self.in_breach, standing) {
            (false, Standing::Breached) => Some(Transition::Breached),
            (true, Standing::Met) => Some(Transition::Recovered),
            _ => None,
        }
    }

    pub fn after(self, t: Transition) -> BreachState {
        BreachState {
            in_breach: t == Transition::Breached,
            transitions: self.transitions + 1,
        }
    }
}

/// A target as carried in an alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AlertTarget {
    pub comparator: Comparator,
    pub percent: f64,
    pub min_sample: i64,
}

/// An alert event (`cchc.indicator-alerts.v1`, schema
/// `docs/schemas/indicator-alert.v1.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Stable: the same transition always has the same id, so a subscriber
    /// can drop a repeat (and a rebuild produces the same ids).
    pub alert_id: String,
    pub event_type: Transition,
    pub schema_version: u32,
    pub commune_code: UnitCode,
    pub commune_name: String,
    pub indicator: Indicator,
    pub window: String,
    pub window_from: NaiveDate,
    pub window_to: NaiveDate,
    /// The rate, 0 to 1.
    pub value: Option<f64>,
    pub numerator: i64,
    pub denominator: i64,
    pub target: AlertTarget,
    pub evaluated_at: String,
}

impl Alert {
    /// Evaluates one (commune, indicator, window): the alert for its
    /// transition, if any, and the state to store.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        state: BreachState,
        commune: &UnitCode,
        commune_name: &str,
        indicator: Indicator,
        window: Window,
        range: (NaiveDate, NaiveDate),
        ratio: Ratio,
        rule: Rule,
        now: DateTime<Utc>,
    ) -> Option<(Alert, BreachState)> {
        let transition = state.next(rule.standing(ratio))?;
        let next = state.after(transition);
        let alert = Alert {
            alert_id: format!(
                "{commune}.{}.{}.{}",
                indicator.id(),
                window.id(),
                next.transitions
            ),
            event_type: transition,
            schema_version: 1,
            commune_code: commune.clone(),
            commune_name: commune_name.to_string(),
            indicator,
            window: window.id(),
            window_from: range.0,
            window_to: range.1,
            value: ratio.rate(),
            numerator: ratio.numerator,
            denominator: ratio.denominator,
            target: AlertTarget {
                comparator: rule.target.comparator,
                percent: rule.target.percent(),
                min_sample: rule.min_sample,
            },
            evaluated_at: now.with_timezone(&local_offset()).to_rfc3339(),
        };
        Some((alert, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Targets;

    fn eval(state: BreachState, n: i64, d: i64, i: Indicator) -> Option<(Alert, BreachState)> {
        let units = crate::domain::units::tests::long_my();
        let c = units.commune("31471").unwrap().clone();
        let today = NaiveDate::from_ymd_opt(2023, 6, 1).unwrap();
        let rule = Targets::declared().default_rule(i);
        let ratio = Ratio {
            numerator: n,
            denominator: d,
        };
        Alert::evaluate(
            state,
            &c,
            "Phường Thuận An",
            i,
            Window::YearToDate,
            Window::YearToDate.days(today),
            ratio,
            rule,
            Utc::now(),
        )
    }

    #[test]
    fn a_miss_on_the_minimum_sample_breaches_and_a_met_target_recovers() {
        let (alert, state) = eval(BreachState::default(), 13, 20, Indicator::OnlineRate).unwrap();
        assert_eq!(alert.event_type, Transition::Breached);
        assert_eq!(alert.alert_id, "31471.online_rate.ytd.1");
        assert!(state.in_breach);
        assert!(
            eval(state, 12, 20, Indicator::OnlineRate).is_none(),
            "still in breach: no new alert"
        );
        let (alert, state) = eval(state, 14, 20, Indicator::OnlineRate).unwrap();
        assert_eq!(alert.event_type, Transition::Recovered);
        assert_eq!(alert.alert_id, "31471.online_rate.ytd.2");
        assert!(!state.in_breach);
    }

    #[test]
    fn a_miss_below_the_minimum_sample_or_without_data_is_no_alert() {
        assert!(eval(BreachState::default(), 0, 19, Indicator::OnlineRate).is_none());
        assert!(eval(BreachState::default(), 0, 0, Indicator::OnlineRate).is_none());
        let breached = BreachState {
            in_breach: true,
            transitions: 1,
        };
        assert!(
            eval(breached, 0, 0, Indicator::OnlineRate).is_none(),
            "no data is not a recovery"
        );
    }

    #[test]
    fn exactly_99_percent_on_time_is_a_breach_because_the_target_is_strict() {
        let (alert, _) = eval(BreachState::default(), 99, 100, Indicator::OnTimeRate).unwrap();
        assert_eq!(alert.event_type, Transition::Breached);
        assert_eq!(alert.target.comparator, Comparator::Above);
    }
}

/// When breaches are evaluated: on the caught-up state only. Reading a
/// backlog (after an outage) or history (a backfill), the counters are
/// right only once the whole of it is read: cases whose resolution is still
/// unread look overdue, a year's first months look like the whole year. So
/// a batch that is not caught up is projected (counters, the API) but not
/// evaluated, and the first batch that is (or a clock tick once the
/// partition is quiet) evaluates every commune of the partition: the alerts
/// sent are the transitions between the state before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Records left unread after a batch whose newest record was written to
    /// the log longer ago than this: a backlog.
    pub backlog_after: chrono::Duration,
    /// A batch whose events all occurred longer ago than this: history.
    pub history_after: chrono::Duration,
}

/// Why a batch was not evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deferral {
    /// A backlog of the log is being read (or the partition's end is not
    /// known yet).
    Backlog,
    /// History is being read: every event of the batch is old.
    History,
}

impl Deferral {
    pub fn id(self) -> &'static str {
        match self {
            Deferral::Backlog => "backlog",
            Deferral::History => "history",
        }
    }
}

/// What [`CatchUp::defers`] looks at in one partition batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPosition {
    /// Records in the batch (none: a clock tick).
    pub records: usize,
    /// Records on the partition after the batch, as far as known (`None`:
    /// the partition's end is not known yet).
    pub behind: Option<i64>,
    /// When the batch's last record was written to the log.
    pub written_at: Option<DateTime<Utc>>,
    /// The latest `occurred_at` among the batch's valid events.
    pub newest_event: Option<DateTime<Utc>>,
}

impl CatchUp {
    /// The default: a backlog is older than a minute, history older than a
    /// day (late events of a few hours, from a counter that syncs later, are
    /// live).
    pub fn default_bounds() -> Self {
        CatchUp {
            backlog_after: chrono::Duration::seconds(60),
            history_after: chrono::Duration::hours(24),
        }
    }

    /// Whether a batch at `now` waits for the caught-up state, and why.
    ///
    /// A backlog: the batch's last record is older than `backlog_after`
    /// (or there is none: a clock tick) and records are left after it, or
    /// the partition's end is not known yet. A fresh last record is live
    /// whatever follows it (anything after it is fresher still). History:
    /// the batch's newest event occurred longer ago than `history_after`.
    pub fn defers(&self, now: DateTime<Utc>, batch: &BatchPosition) -> Option<Deferral> {
        // A written time the clock has not reached counts as now.
        let old = |at: DateTime<Utc>, bound| now.signed_duration_since(at) > bound;
        let stale_tail = match (batch.records, batch.written_at) {
            (0, _) => true,
            (_, Some(at)) => old(at, self.backlog_after),
            (_, None) => false,
        };
        if stale_tail && batch.behind.is_none_or(|n| n > 0) {
            return Some(Deferral::Backlog);
        }
        match batch.newest_event {
            Some(at) if old(at, self.history_after) => Some(Deferral::History),
            _ => None,
        }
    }
}

#[cfg(test)]
mod catch_up_tests {
    use super::*;

    fn at(minutes_ago: i64) -> Option<DateTime<Utc>> {
        Some(now() - chrono::Duration::minutes(minutes_ago))
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn defers(records: usize, behind: Option<i64>, written: i64, event: i64) -> Option<Deferral> {
        CatchUp::default_bounds().defers(
            now(),
            &BatchPosition {
                records,
                behind,
                written_at: at(written),
                newest_event: at(event),
            },
        )
    }

    #[test]
    fn a_live_batch_is_evaluated_even_with_records_arriving_behind_it() {
        assert_eq!(defers(100, Some(0), 0, 0), None);
        assert_eq!(defers(100, Some(5_000), 0, 1), None, "a live burst");
        assert_eq!(defers(100, None, 0, 0), None, "its end not known yet");
        assert_eq!(
            defers(100, Some(0), 0, 6 * 60),
            None,
            "late by hours is live"
        );
    }

    #[test]
    fn records_left_behind_an_old_tail_are_a_backlog() {
        assert_eq!(defers(2_000, Some(4_000), 30, 30), Some(Deferral::Backlog));
        assert_eq!(defers(2_000, None, 30, 30), Some(Deferral::Backlog));
        // The last of the backlog: nothing behind it, evaluated.
        assert_eq!(defers(2_000, Some(0), 30, 30), None);
    }

    #[test]
    fn a_tick_waits_while_records_are_unread_or_the_end_is_unknown() {
        assert_eq!(defers(0, Some(10), 0, 0), Some(Deferral::Backlog));
        assert_eq!(defers(0, None, 0, 0), Some(Deferral::Backlog));
        let quiet = BatchPosition {
            records: 0,
            behind: Some(0),
            written_at: None,
            newest_event: None,
        };
        assert_eq!(CatchUp::default_bounds().defers(now(), &quiet), None);
    }

    #[test]
    fn a_batch_of_old_events_only_is_history_wherever_it_stands() {
        assert_eq!(defers(500, Some(0), 0, 25 * 60), Some(Deferral::History));
        assert_eq!(
            defers(500, Some(9), 0, 90 * 24 * 60),
            Some(Deferral::History)
        );
        // One live event among them: not history.
        assert_eq!(defers(500, Some(0), 0, 0), None);
    }
}

/// Evaluates breaches for the configured windows and targets, on the
/// caught-up state ([`CatchUp`]).
#[derive(Debug, Clone)]
pub struct Evaluator {
    pub units: super::Units,
    pub targets: super::Targets,
    pub windows: Vec<Window>,
    pub catch_up: CatchUp,
}

/// The stored state of one (commune, indicator, window id).
pub type StateKey = (String, Indicator, String);

impl Evaluator {
    /// Every transition among `communes` when the clock's local date is
    /// `today`: `sums(window, commune)` gives the window's counters, `state`
    /// the stored state. Returns the alerts with the states to store.
    pub fn evaluate(
        &self,
        now: DateTime<Utc>,
        communes: &[String],
        sums: impl Fn(usize, &str) -> super::DayCounters,
        state: impl Fn(&StateKey) -> BreachState,
    ) -> Vec<(Alert, StateKey, BreachState)> {
        let today = super::time::local_date(now);
        let mut out = Vec::new();
        for code in communes {
            let Some(unit) = self.units.get(code).filter(|u| u.kind.receives_cases()) else {
                continue;
            };
            for (w, window) in self.windows.iter().enumerate() {
                let counters = sums(w, code);
                for &indicator in Indicator::ALL {
                    let key = (code.clone(), indicator, window.id());
                    let rule = self.targets.rule(&unit.code, indicator);
                    let ratio = indicator.ratio(&counters);
                    let evaluated = Alert::evaluate(
                        state(&key),
                        &unit.code,
                        &unit.name,
                        indicator,
                        *window,
                        window.days(today),
                        ratio,
                        rule,
                        now,
                    );
                    if let Some((alert, next)) = evaluated {
                        out.push((alert, key, next));
                    }
                }
            }
        }
        out
    }
}
