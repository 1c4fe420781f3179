//! Threshold breaches: when an indicator of a commune, over a window, starts
//! failing its target on a sufficient sample (breached) and when it meets it
//! again (recovered). Only transitions are alerts.

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::Serialize;

use super::indicator::{Budget, Comparator, Indicator, Ratio, Rule, Standing, Window};
use super::time::local_offset;
use super::units::UnitCode;

/// The transitions alerts announce: an indicator failing its target
/// (breached) and meeting it again (recovered), and, for the on-time rate,
/// a commune whose cases coming due would take it below the target if they
/// were all late (at risk) and the end of that (at risk cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Transition {
    #[serde(rename = "indicator.breached")]
    Breached,
    #[serde(rename = "indicator.recovered")]
    Recovered,
    #[serde(rename = "indicator.at_risk")]
    AtRisk,
    #[serde(rename = "indicator.at_risk_cleared")]
    AtRiskCleared,
}

impl Transition {
    /// Every kind, in the order of the list above.
    pub const ALL: [Transition; 4] = [
        Transition::Breached,
        Transition::Recovered,
        Transition::AtRisk,
        Transition::AtRiskCleared,
    ];

    /// The kinds of the schema's first version: what a subscriber that
    /// asks for no kinds gets, so that one written before the at-risk kinds
    /// existed is unaffected by them.
    pub const BREACH_KINDS: [Transition; 2] = [Transition::Breached, Transition::Recovered];

    pub fn event_type(self) -> &'static str {
        match self {
            Transition::Breached => "indicator.breached",
            Transition::Recovered => "indicator.recovered",
            Transition::AtRisk => "indicator.at_risk",
            Transition::AtRiskCleared => "indicator.at_risk_cleared",
        }
    }

    /// The kind named `event_type`, if it is one.
    pub fn from_event_type(event_type: &str) -> Option<Transition> {
        Transition::ALL
            .into_iter()
            .find(|t| t.event_type() == event_type)
    }

    /// Whether this is one of the early-warning kinds.
    pub fn is_risk(self) -> bool {
        matches!(self, Transition::AtRisk | Transition::AtRiskCleared)
    }
}

/// Where one (commune, indicator, window) stands, as stored between batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreachState {
    pub in_breach: bool,
    /// Breach transitions so far: numbers the breach alerts' ids.
    pub transitions: i64,
    /// At risk (see [`Transition::AtRisk`]).
    pub at_risk: bool,
    /// At-risk transitions so far: numbers the at-risk alerts' ids.
    pub risk_transitions: i64,
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

    /// The at-risk transition, if any, when the commune is at risk or not
    /// (`at_risk`, see [`Outlook::at_risk`]).
    pub fn next_risk(self, at_risk: bool) -> Option<Transition> {
        match (self.at_risk, at_risk) {
            (false, true) => Some(Transition::AtRisk),
            (true, false) => Some(Transition::AtRiskCleared),
            _ => None,
        }
    }

    pub fn after(self, t: Transition) -> BreachState {
        match t {
            Transition::Breached | Transition::Recovered => BreachState {
                in_breach: t == Transition::Breached,
                transitions: self.transitions + 1,
                ..self
            },
            Transition::AtRisk | Transition::AtRiskCleared => BreachState {
                at_risk: t == Transition::AtRisk,
                risk_transitions: self.risk_transitions + 1,
                ..self
            },
        }
    }

    /// The n-th transition's alert id: `<commune>.<indicator>.<window>.<n>`
    /// for a breach or recovery, `<commune>.<indicator>.<window>.risk.<n>`
    /// for the at-risk kinds.
    pub fn alert_id(
        commune: &str,
        indicator: Indicator,
        window: &str,
        t: Transition,
        n: i64,
    ) -> String {
        let risk = if t.is_risk() { "risk." } else { "" };
        format!("{commune}.{}.{window}.{risk}{n}", indicator.id())
    }
}

/// The indicator whose cases coming due are watched for the at-risk alert:
/// its denominator grows as open cases fall due.
pub const AT_RISK_INDICATOR: Indicator = Indicator::OnTimeRate;

/// The open cases coming due within the horizon, as the at-risk rule and
/// its alerts see them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outlook {
    /// The horizon, in calendar days after today.
    pub horizon_days: i64,
    /// The last local date counted: today + the horizon, or the last day of
    /// the window's period if that comes first.
    pub due_until: NaiveDate,
    /// Open cases due from today to `due_until`.
    pub coming_due: i64,
    /// The rate if every one of them were late.
    pub value_if_all_late: Option<f64>,
    /// How many of them may be late with the target still met; `null` when
    /// it cannot be met even if all are on time.
    pub misses_allowed: Option<i64>,
    /// On `indicator.at_risk_cleared`: `breached` when the risk came true
    /// (the breach alert follows), `within_target` when the cases coming due
    /// can no longer take the rate below the target, `not_evaluated` when
    /// the at-risk alert was turned off (`alerts.at_risk = false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl Outlook {
    /// The outlook of `ratio` with `coming_due` open cases due by `due_until`.
    pub fn new(
        ratio: Ratio,
        rule: Rule,
        horizon_days: i64,
        due_until: NaiveDate,
        coming_due: i64,
    ) -> Self {
        let misses_allowed = match rule.target.budget(ratio, coming_due) {
            Budget::Misses(n) => Some(n.min(coming_due)),
            Budget::Unlimited => Some(coming_due),
            Budget::OutOfReach => None,
        };
        Outlook {
            horizon_days,
            due_until,
            coming_due,
            value_if_all_late: Self::all_late(ratio, coming_due).rate(),
            misses_allowed,
            reason: None,
        }
    }

    fn all_late(ratio: Ratio, coming_due: i64) -> Ratio {
        Ratio {
            numerator: ratio.numerator,
            denominator: ratio.denominator + coming_due,
        }
    }

    /// At risk: not in breach, some case coming due, and all of them late
    /// would be a breach (the target failed on the minimum sample).
    pub fn at_risk(&self, ratio: Ratio, rule: Rule, in_breach: bool) -> bool {
        !in_breach
            && self.coming_due > 0
            && rule.standing(Self::all_late(ratio, self.coming_due)) == Standing::Breached
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
    /// The cases coming due, on the at-risk kinds only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlook: Option<Outlook>,
}

/// What one evaluation is about: a commune's indicator over a window, with
/// its rule, counters so far and the time of evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub commune: &'a UnitCode,
    pub commune_name: &'a str,
    pub indicator: Indicator,
    pub window: Window,
    pub range: (NaiveDate, NaiveDate),
    pub ratio: Ratio,
    pub rule: Rule,
    pub now: DateTime<Utc>,
}

impl Subject<'_> {
    /// The alert of the n-th transition `t`.
    fn alert(&self, t: Transition, n: i64, outlook: Option<Outlook>) -> Alert {
        let window = self.window.id();
        Alert {
            alert_id: BreachState::alert_id(self.commune.as_str(), self.indicator, &window, t, n),
            event_type: t,
            schema_version: 1,
            commune_code: self.commune.clone(),
            commune_name: self.commune_name.to_string(),
            indicator: self.indicator,
            window,
            window_from: self.range.0,
            window_to: self.range.1,
            value: self.ratio.rate(),
            numerator: self.ratio.numerator,
            denominator: self.ratio.denominator,
            target: AlertTarget {
                comparator: self.rule.target.comparator,
                percent: self.rule.target.percent(),
                min_sample: self.rule.min_sample,
            },
            evaluated_at: self.now.with_timezone(&local_offset()).to_rfc3339(),
            outlook,
        }
    }

    /// Evaluates the subject from its stored `state`: the alerts of its
    /// transitions (none, one or two: an at-risk commune that falls into
    /// breach has its risk cleared, then its breach announced) and the
    /// state to store. `outlook` is given for the at-risk indicator only.
    pub fn evaluate(
        &self,
        state: BreachState,
        outlook: Option<Outlook>,
    ) -> (Vec<Alert>, BreachState) {
        let mut next = state;
        let breach = state.next(self.rule.standing(self.ratio)).map(|t| {
            next = next.after(t);
            self.alert(t, next.transitions, None)
        });
        let risk = outlook.and_then(|outlook| {
            let at_risk = outlook.at_risk(self.ratio, self.rule, next.in_breach);
            let t = next.next_risk(at_risk)?;
            next = next.after(t);
            let reason = (t == Transition::AtRiskCleared).then_some(if next.in_breach {
                "breached"
            } else {
                outlook.reason.unwrap_or("within_target")
            });
            let outlook = Outlook { reason, ..outlook };
            Some(self.alert(t, next.risk_transitions, Some(outlook)))
        });
        // A risk that came true is cleared before its breach is announced;
        // a recovery comes before a new risk.
        let alerts = match (breach, risk) {
            (Some(b), Some(r)) if b.event_type == Transition::Breached => vec![r, b],
            (b, r) => b.into_iter().chain(r).collect(),
        };
        (alerts, next)
    }
}

impl Alert {
    /// Evaluates one (commune, indicator, window) for a breach or recovery:
    /// the alert for its transition, if any, and the state to store.
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
        let subject = Subject {
            commune,
            commune_name,
            indicator,
            window,
            range,
            ratio,
            rule,
            now,
        };
        let (mut alerts, next) = subject.evaluate(state, None);
        alerts.pop().map(|a| (a, next))
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
            ..BreachState::default()
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
mod at_risk_tests {
    use super::*;
    use crate::domain::indicator::Target;
    use crate::domain::DayCounters;
    use crate::domain::Targets;
    use proptest::prelude::*;

    fn on_time() -> Rule {
        Targets::declared().default_rule(Indicator::OnTimeRate)
    }

    fn ratio(numerator: i64, denominator: i64) -> Ratio {
        Ratio {
            numerator,
            denominator,
        }
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn subject(units: &crate::domain::Units, r: Ratio) -> Subject<'_> {
        let c = units.commune("31471").unwrap();
        Subject {
            commune: c,
            commune_name: "Phường Thuận An",
            indicator: Indicator::OnTimeRate,
            window: Window::YearToDate,
            range: Window::YearToDate.days(day("2026-06-01")),
            ratio: r,
            rule: on_time(),
            now: Utc::now(),
        }
    }

    fn outlook(r: Ratio, coming: i64) -> Outlook {
        Outlook::new(r, on_time(), 3, day("2026-06-04"), coming)
    }

    fn kinds(alerts: &[Alert]) -> Vec<(&str, &str)> {
        alerts
            .iter()
            .map(|a| (a.alert_id.as_str(), a.event_type.event_type()))
            .collect()
    }

    #[test]
    fn one_case_coming_due_is_a_risk_when_its_miss_would_fail_the_target() {
        // 30 of 30 on time: one more, late, is 30/31 = 96.8%, below > 99%.
        let units = crate::domain::units::tests::long_my();
        let r = ratio(30, 30);
        let (alerts, state) =
            subject(&units, r).evaluate(BreachState::default(), Some(outlook(r, 1)));
        assert_eq!(
            kinds(&alerts),
            [("31471.on_time_rate.ytd.risk.1", "indicator.at_risk")]
        );
        let o = alerts[0].outlook.unwrap();
        assert_eq!(
            (o.coming_due, o.misses_allowed, o.reason),
            (1, Some(0), None)
        );
        assert!((o.value_if_all_late.unwrap() - 30.0 / 31.0).abs() < 1e-12);
        assert!(state.at_risk && !state.in_breach);
        // Still at risk: nothing new.
        let (alerts, again) = subject(&units, r).evaluate(state, Some(outlook(r, 2)));
        assert!(alerts.is_empty());
        assert_eq!(again, state);
        // Resolved on time: cleared, within the target.
        let r = ratio(32, 32);
        let (alerts, state) = subject(&units, r).evaluate(state, Some(outlook(r, 0)));
        assert_eq!(
            kinds(&alerts),
            [("31471.on_time_rate.ytd.risk.2", "indicator.at_risk_cleared")]
        );
        assert_eq!(alerts[0].outlook.unwrap().reason, Some("within_target"));
        assert_eq!(state.risk_transitions, 2);
        assert!(!state.at_risk);
    }

    #[test]
    fn a_margin_a_small_sample_or_no_case_coming_due_is_no_risk() {
        let units = crate::domain::units::tests::long_my();
        for (r, coming) in [
            (ratio(500, 500), 5), // 500/505 = 99.0099% > 99%
            (ratio(10, 10), 9),   // 10/19: below the minimum sample of 20
            (ratio(30, 30), 0),   // nothing coming due
        ] {
            let (alerts, state) =
                subject(&units, r).evaluate(BreachState::default(), Some(outlook(r, coming)));
            assert!(alerts.is_empty(), "{r:?} + {coming}");
            assert_eq!(state, BreachState::default());
        }
        // 500/506 = 98.8%: at risk.
        let r = ratio(500, 500);
        let (alerts, _) = subject(&units, r).evaluate(BreachState::default(), Some(outlook(r, 6)));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].outlook.unwrap().misses_allowed, Some(5));
    }

    #[test]
    fn a_risk_that_comes_true_is_cleared_before_the_breach_and_a_breach_is_no_risk() {
        let units = crate::domain::units::tests::long_my();
        let at_risk = BreachState {
            at_risk: true,
            risk_transitions: 1,
            ..BreachState::default()
        };
        let r = ratio(30, 31);
        let (alerts, state) = subject(&units, r).evaluate(at_risk, Some(outlook(r, 3)));
        assert_eq!(
            kinds(&alerts),
            [
                ("31471.on_time_rate.ytd.risk.2", "indicator.at_risk_cleared"),
                ("31471.on_time_rate.ytd.1", "indicator.breached"),
            ]
        );
        assert_eq!(alerts[0].outlook.unwrap().reason, Some("breached"));
        assert!(
            alerts[1].outlook.is_none(),
            "a breach alert carries no outlook"
        );
        assert!(state.in_breach && !state.at_risk);
        // In breach with cases coming due: no risk alert while it lasts.
        let (alerts, _) = subject(&units, r).evaluate(state, Some(outlook(r, 10)));
        assert!(alerts.is_empty());
        // Recovered, with a case coming due: the recovery, then the risk.
        let r = ratio(100, 100);
        let (alerts, state) = subject(&units, r).evaluate(state, Some(outlook(r, 2)));
        assert_eq!(
            kinds(&alerts),
            [
                ("31471.on_time_rate.ytd.2", "indicator.recovered"),
                ("31471.on_time_rate.ytd.risk.3", "indicator.at_risk"),
            ]
        );
        assert!(state.at_risk && !state.in_breach);
    }

    #[test]
    fn the_horizon_stops_at_the_end_of_the_windows_period_but_not_for_a_rolling_window() {
        let units = crate::domain::units::tests::long_my();
        let evaluator = Evaluator {
            units,
            targets: Targets::declared(),
            windows: vec![
                Window::YearToDate,
                Window::Rolling30Days,
                Window::MonthToDate,
            ],
            catch_up: CatchUp::default_bounds(),
            at_risk_horizon_days: Some(3),
        };
        let today = day("2026-12-30");
        assert_eq!(
            evaluator.coming_due_days(today),
            Some((today, day("2027-01-02")))
        );
        // A case due on 31 December, late, counts on 1 January: next year's.
        assert_eq!(
            evaluator.due_until(Window::YearToDate, today),
            Some(day("2026-12-30"))
        );
        assert_eq!(
            evaluator.due_until(Window::Rolling30Days, today),
            Some(day("2027-01-02"))
        );
        assert_eq!(
            evaluator.due_until(Window::MonthToDate, day("2026-11-05")),
            Some(day("2026-11-08"))
        );
        assert_eq!(
            evaluator.due_until(Window::MonthToDate, day("2026-11-30")),
            Some(day("2026-11-29")),
            "before today: nothing left to count"
        );
        let off = Evaluator {
            at_risk_horizon_days: None,
            ..evaluator
        };
        assert_eq!(off.coming_due_days(today), None);
    }

    #[test]
    fn a_risk_ends_when_the_alert_is_turned_off_or_the_period_has_no_day_left() {
        let units = crate::domain::units::tests::long_my();
        let mut evaluator = Evaluator {
            units,
            targets: Targets::declared(),
            windows: vec![Window::Range {
                from: day("2026-01-01"),
                to: day("2026-12-02"),
            }],
            catch_up: CatchUp::default_bounds(),
            at_risk_horizon_days: Some(3),
        };
        let at_risk = BreachState {
            at_risk: true,
            risk_transitions: 1,
            ..BreachState::default()
        };
        let communes = ["31471".to_string()];
        let counters = DayCounters {
            due: 30,
            on_time: 30,
            ..DayCounters::default()
        };
        let at = |d: &str| {
            format!("{d}T10:00:00+07:00")
                .parse::<DateTime<chrono::FixedOffset>>()
                .unwrap()
                .to_utc()
        };
        let cleared = |e: &Evaluator, now| {
            let (alerts, states) =
                e.evaluate(now, &communes, |_, _| counters, |_, _, _| 5, |_| at_risk);
            let risk: Vec<_> = alerts.iter().filter(|a| a.event_type.is_risk()).collect();
            assert_eq!(risk.len(), 1, "{alerts:?}");
            assert_eq!(risk[0].event_type, Transition::AtRiskCleared);
            assert!(states.iter().all(|(_, s)| !s.at_risk));
            risk[0].outlook.unwrap().reason
        };
        // 1 December: the range's last day; a miss due today counts on the 2nd, outside it.
        assert_eq!(cleared(&evaluator, at("2026-12-01")), Some("within_target"));
        // Still within the range, five cases coming due: at risk, no change.
        let (alerts, _) = evaluator.evaluate(
            at("2026-11-20"),
            &communes,
            |_, _| counters,
            |_, _, _| 5,
            |_| at_risk,
        );
        assert!(alerts.iter().all(|a| !a.event_type.is_risk()), "{alerts:?}");
        evaluator.at_risk_horizon_days = None;
        assert_eq!(cleared(&evaluator, at("2026-11-20")), Some("not_evaluated"));
        // Off, and not at risk: nothing.
        let (alerts, _) = evaluator.evaluate(
            at("2026-11-20"),
            &communes,
            |_, _| counters,
            |_, _, _| 5,
            |_| BreachState::default(),
        );
        assert!(alerts.iter().all(|a| !a.event_type.is_risk()));
    }

    proptest! {
        /// Against a simple reference: at risk exactly when every case
        /// coming due late would be a breach, and the misses allowed are
        /// the most of them that can be late with the target met.
        #[test]
        fn risk_and_misses_allowed_match_counting_the_misses_one_by_one(
            due in 0i64..400,
            late in 0i64..8,
            coming in 0i64..40,
            percent in prop::sample::select(vec![0.0, 50.0, 80.0, 95.0, 99.0, 100.0]),
            strict in any::<bool>(),
        ) {
            let comparator = if strict { Comparator::Above } else { Comparator::AtLeast };
            let rule = Rule { target: Target::from_percent(comparator, percent).unwrap(), min_sample: 20 };
            let r = ratio((due - late).max(0), due);
            let o = Outlook::new(r, rule, 3, day("2026-06-04"), coming);
            let met = |misses: i64| rule.target.is_met(ratio(r.numerator + coming - misses, due + coming)).unwrap_or(true);
            let all_late = ratio(r.numerator, due + coming);
            let reference_risk = coming > 0
                && due + coming >= 20
                && !rule.target.is_met(all_late).unwrap_or(true);
            prop_assert_eq!(o.at_risk(r, rule, false), reference_risk);
            prop_assert!(!o.at_risk(r, rule, true));
            let reference_allowed = (0..=coming).rev().find(|&m| met(m));
            prop_assert_eq!(o.misses_allowed, reference_allowed);
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
    /// The at-risk alert's horizon in calendar days after today (`None`:
    /// no at-risk alerts).
    pub at_risk_horizon_days: Option<u32>,
}

/// The stored state of one (commune, indicator, window id).
pub type StateKey = (String, Indicator, String);

impl Evaluator {
    /// The local dates whose open cases the at-risk rule counts when the
    /// local date is `today`: today to today + the horizon, both included
    /// (`None`: the at-risk alert is off).
    pub fn coming_due_days(&self, today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
        let horizon = self.at_risk_horizon_days?;
        Some((today, today + Days::new(horizon.into())))
    }

    /// The last date of the horizon that falls in `window`'s period.
    fn due_until(&self, window: Window, today: NaiveDate) -> Option<NaiveDate> {
        let (_, until) = self.coming_due_days(today)?;
        window.last_day_until(today, until)
    }

    /// The at-risk outlook of `subject` (the at-risk indicator) from its
    /// stored state `old`. With no day left in the window's period for a
    /// miss to count in, nothing is coming due; with the alert turned off,
    /// a risk announced before is ended (`not_evaluated`), and otherwise
    /// there is none.
    fn outlook(
        &self,
        subject: &Subject<'_>,
        old: BreachState,
        today: NaiveDate,
        coming_due: impl Fn(NaiveDate, NaiveDate) -> i64,
    ) -> Option<Outlook> {
        let (ratio, rule) = (subject.ratio, subject.rule);
        let Some(horizon) = self.at_risk_horizon_days.map(i64::from) else {
            return old.at_risk.then(|| Outlook {
                reason: Some("not_evaluated"),
                ..Outlook::new(ratio, rule, 0, today, 0)
            });
        };
        Some(match self.due_until(subject.window, today) {
            Some(until) if until >= today => {
                Outlook::new(ratio, rule, horizon, until, coming_due(today, until))
            }
            _ => Outlook::new(ratio, rule, horizon, today, 0),
        })
    }

    /// Every transition among `communes` when the clock's local date is
    /// `today`: `sums(window, commune)` gives the window's counters,
    /// `coming_due(commune, from, to)` the commune's open cases due from
    /// `from` to `to` (both included), `state` the stored state. Returns
    /// the alerts, in order, and the states to store.
    pub fn evaluate(
        &self,
        now: DateTime<Utc>,
        communes: &[String],
        sums: impl Fn(usize, &str) -> super::DayCounters,
        coming_due: impl Fn(&str, NaiveDate, NaiveDate) -> i64,
        state: impl Fn(&StateKey) -> BreachState,
    ) -> (Vec<Alert>, Vec<(StateKey, BreachState)>) {
        let today = super::time::local_date(now);
        let mut alerts = Vec::new();
        let mut states = Vec::new();
        for code in communes {
            let Some(unit) = self
                .units
                .get_on(code, today)
                .filter(|u| u.kind.receives_cases())
            else {
                continue;
            };
            for (w, window) in self.windows.iter().enumerate() {
                let counters = sums(w, code);
                for &indicator in Indicator::ALL {
                    let key = (code.clone(), indicator, window.id());
                    let rule = self.targets.rule(&unit.code, indicator);
                    let subject = Subject {
                        commune: &unit.code,
                        commune_name: &unit.name,
                        indicator,
                        window: *window,
                        range: window.days(today),
                        ratio: indicator.ratio(&counters),
                        rule,
                        now,
                    };
                    let old = state(&key);
                    let outlook = (indicator == AT_RISK_INDICATOR)
                        .then(|| {
                            self.outlook(&subject, old, today, |from, to| {
                                coming_due(code, from, to)
                            })
                        })
                        .flatten();
                    let (new_alerts, next) = subject.evaluate(old, outlook);
                    if next != old {
                        alerts.extend(new_alerts);
                        states.push((key, next));
                    }
                }
            }
        }
        (alerts, states)
    }
}
