//! Indicators, windows and targets: how day counters become rates, which days
//! a window sums, and whether a rate meets its target.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, NaiveDate};
use serde::{Deserialize, Serialize};

use super::counters::DayCounters;
use super::units::UnitCode;

/// What one indicator is: everything the rest of the pipeline needs to count
/// it, show it, store its counters and judge it against a target.
#[derive(Debug, Clone, Copy)]
pub struct Definition {
    /// The contract's id, e.g. `on_time_rate` (API, alerts, configuration).
    pub id: &'static str,
    /// The Vietnamese label, for people.
    pub label_vi: &'static str,
    /// The English label, shown beside it.
    pub label_en: &'static str,
    /// The [`DayCounters`] field counted above the line ...
    pub numerator: &'static str,
    /// ... and below it.
    pub denominator: &'static str,
    ratio: fn(&DayCounters) -> Ratio,
    /// The target when the configuration sets none.
    pub default_comparator: Comparator,
    pub default_percent: f64,
}

/// Declares [`Indicator`] and its [`Definition`]s, one block per indicator.
macro_rules! indicators {
    ($(
        $(#[doc = $doc:literal])+
        $variant:ident {
            id: $id:literal,
            label_vi: $vi:literal,
            label_en: $en:literal,
            ratio: $num:ident / $den:ident,
            default_target: $cmp:ident $pct:literal,
        }
    )+) => {
        /// An indicator of the reform campaign (see its [`Definition`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Indicator {
            $( $(#[doc = $doc])+ $variant, )+
        }

        const DEFINITIONS: &[Definition] = &[$(
            Definition {
                id: $id,
                label_vi: $vi,
                label_en: $en,
                numerator: stringify!($num),
                denominator: stringify!($den),
                ratio: |c| Ratio { numerator: c.$num, denominator: c.$den },
                default_comparator: Comparator::$cmp,
                default_percent: $pct,
            },
        )+];

        impl Indicator {
            /// Every indicator, in declaration order (the order of API answers).
            pub const ALL: &'static [Indicator] = &[$(Indicator::$variant),+];
        }
    };
}

indicators! {
    /// Cases received online at level partial or full (the old "mức độ 3
    /// và 4") ÷ cases received; day = local date of `case.received`.
    OnlineRate {
        id: "online_rate",
        label_vi: "Tỷ lệ hồ sơ trực tuyến",
        label_en: "online rate",
        ratio: received_online / received,
        default_target: AtLeast 70.0,
    }
    /// Cases resolved on time ÷ cases that were due (resolved, or open past
    /// their due date); see the fold for the rule.
    OnTimeRate {
        id: "on_time_rate",
        label_vi: "Tỷ lệ giải quyết đúng hạn",
        label_en: "on-time rate",
        ratio: on_time / due,
        default_target: Above 99.0,
    }
    /// Ratings "satisfied" or "very satisfied" ÷ ratings.
    SatisfactionRate {
        id: "satisfaction_rate",
        label_vi: "Tỷ lệ hài lòng",
        label_en: "satisfaction rate",
        ratio: satisfied / ratings,
        default_target: AtLeast 95.0,
    }
    /// Cases recorded in the electronic one-stop software at intake ÷ cases
    /// received.
    ElectronicRegistrationRate {
        id: "electronic_registration_rate",
        label_vi: "Tỷ lệ tiếp nhận trên phần mềm một cửa điện tử",
        label_en: "electronic registration rate",
        ratio: received_electronic / received,
        default_target: AtLeast 100.0,
    }
    /// Documents signed digitally ÷ documents signed.
    DigitalSignatureRate {
        id: "digital_signature_rate",
        label_vi: "Tỷ lệ ký số",
        label_en: "digital signature rate",
        ratio: digital / signatures,
        default_target: AtLeast 100.0,
    }
    /// Cases whose papers were digitised at intake ÷ cases received
    /// (Decision 766/QĐ-TTg scores full marks from 80%).
    DigitizationRate {
        id: "digitization_rate",
        label_vi: "Tỷ lệ số hóa hồ sơ",
        label_en: "digitisation rate",
        ratio: received_digitized / received,
        default_target: AtLeast 80.0,
    }
}

impl Indicator {
    /// What this indicator is.
    pub fn definition(self) -> &'static Definition {
        &DEFINITIONS[self as usize]
    }

    /// The contract's id, e.g. `on_time_rate`.
    pub fn id(self) -> &'static str {
        self.definition().id
    }

    /// Vietnamese label, for people.
    pub fn label_vi(self) -> &'static str {
        self.definition().label_vi
    }

    /// English label, shown beside the Vietnamese one.
    pub fn label_en(self) -> &'static str {
        self.definition().label_en
    }

    /// Numerator and denominator of this indicator over some counters.
    pub fn ratio(self, c: &DayCounters) -> Ratio {
        (self.definition().ratio)(c)
    }

    /// The rule used when the configuration names no target: the declared
    /// target with a minimum sample of [`DEFAULT_MIN_SAMPLE`].
    pub fn default_rule(self) -> Rule {
        let d = self.definition();
        Rule {
            target: Target::from_percent(d.default_comparator, d.default_percent)
                .expect("declared targets are percentages"),
            min_sample: DEFAULT_MIN_SAMPLE,
        }
    }
}

/// The denominator a miss needs, unless configured, to count as a breach.
pub const DEFAULT_MIN_SAMPLE: i64 = 20;

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Indicator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Indicator::ALL
            .iter()
            .copied()
            .find(|i| i.id() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Indicator::ALL.iter().map(|i| i.id()).collect();
                format!("unknown indicator `{s}`; known: {}", known.join(", "))
            })
    }
}

impl Serialize for Indicator {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl<'de> Deserialize<'de> for Indicator {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        id.parse().map_err(serde::de::Error::custom)
    }
}

/// A numerator over a denominator. With a zero denominator the rate is
/// undefined, never 0% or 100%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ratio {
    pub numerator: i64,
    pub denominator: i64,
}

impl Ratio {
    pub fn rate(self) -> Option<f64> {
        (self.denominator > 0).then(|| self.numerator as f64 / self.denominator as f64)
    }
}

/// A span of local days: `ytd`, `qtd`, `mtd`, `rolling_30d`, or `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    YearToDate,
    QuarterToDate,
    MonthToDate,
    Rolling30Days,
    Range { from: NaiveDate, to: NaiveDate },
}

impl Window {
    /// The half-open range of local days `[from, to)` this window covers when
    /// the local date is `today` (today included).
    pub fn days(self, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        let tomorrow = today.checked_add_days(Days::new(1)).unwrap_or(today);
        let from = match self {
            Window::Range { from, to } => return (from, to),
            Window::YearToDate => today.with_ordinal(1),
            Window::QuarterToDate => today
                .with_day(1)
                .and_then(|d| d.with_month(3 * ((today.month() - 1) / 3) + 1)),
            Window::MonthToDate => today.with_day(1),
            Window::Rolling30Days => today.checked_sub_days(Days::new(29)),
        };
        (
            from.expect("first day of a valid date's period exists"),
            tomorrow,
        )
    }

    /// The first day after the period this window runs in, from `today`:
    /// the next year, quarter or month for `ytd`, `qtd` and `mtd`, a
    /// range's end if it is still to come; `None` for a rolling window (it
    /// has no end) or a range that is over.
    pub fn period_end(self, today: NaiveDate) -> Option<NaiveDate> {
        let first = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1);
        let (y, m) = (today.year(), today.month());
        match self {
            Window::YearToDate => first(y + 1, 1),
            Window::QuarterToDate => match m {
                10..=12 => first(y + 1, 1),
                _ => first(y, 3 * ((m - 1) / 3) + 4),
            },
            Window::MonthToDate => match m {
                12 => first(y + 1, 1),
                _ => first(y, m + 1),
            },
            Window::Rolling30Days => None,
            Window::Range { to, .. } => (to > today).then_some(to),
        }
    }

    /// The last due date from `today` to `until` whose miss would still
    /// count in the period this window runs in: `until` for a rolling
    /// window, else `until` or the day before the period's last day,
    /// whichever comes first (a case due on the last day counts as late
    /// only from the next day, in the next period). `None`: a range that is
    /// over.
    pub fn last_day_until(self, today: NaiveDate, until: NaiveDate) -> Option<NaiveDate> {
        match self {
            Window::Rolling30Days => Some(until),
            w => w
                .period_end(today)
                .and_then(|end| end.checked_sub_days(Days::new(2)))
                .map(|last| until.min(last)),
        }
    }

    /// The identifier used in the API and in alerts.
    pub fn id(self) -> String {
        match self {
            Window::YearToDate => "ytd".into(),
            Window::QuarterToDate => "qtd".into(),
            Window::MonthToDate => "mtd".into(),
            Window::Rolling30Days => "rolling_30d".into(),
            Window::Range { from, to } => format!("{from}..{to}"),
        }
    }
}

impl FromStr for Window {
    type Err = String;
    /// `ytd`, `qtd`, `mtd`, `rolling_30d`, or `YYYY-MM-DD..YYYY-MM-DD`
    /// (end exclusive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ytd" => Ok(Window::YearToDate),
            "qtd" => Ok(Window::QuarterToDate),
            "mtd" => Ok(Window::MonthToDate),
            "rolling_30d" => Ok(Window::Rolling30Days),
            _ => {
                let (a, b) = s.split_once("..").ok_or_else(|| {
                    format!("unknown window `{s}`; use ytd, qtd, mtd, rolling_30d or FROM..TO (dates, TO excluded)")
                })?;
                let date = |d: &str| {
                    super::time::parse_day(d)
                        .ok_or_else(|| format!("`{d}` is not a date (YYYY-MM-DD)"))
                };
                let (from, to) = (date(a)?, date(b)?);
                if from >= to {
                    return Err(format!("window `{s}` is empty: FROM must be before TO"));
                }
                Ok(Window::Range { from, to })
            }
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// How a rate is compared with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Comparator {
    /// `>=`: at least the target.
    #[serde(rename = ">=")]
    AtLeast,
    /// `>`: strictly above the target.
    #[serde(rename = ">")]
    Above,
}

impl Comparator {
    pub fn symbol(self) -> &'static str {
        match self {
            Comparator::AtLeast => ">=",
            Comparator::Above => ">",
        }
    }
}

/// A target such as "> 99%". The threshold is kept in parts per million so
/// comparisons are exact integer arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    pub comparator: Comparator,
    pub ppm: u32,
}

impl Target {
    /// A target from a percentage (0 to 100, at most four decimals).
    pub fn from_percent(comparator: Comparator, percent: f64) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&percent) || !percent.is_finite() {
            return Err(format!("target {percent}% is not between 0 and 100"));
        }
        Ok(Target {
            comparator,
            ppm: (percent * 10_000.0).round() as u32,
        })
    }

    pub fn percent(self) -> f64 {
        self.ppm as f64 / 10_000.0
    }

    /// Whether the ratio meets the target; `None` when the rate is undefined.
    pub fn is_met(self, r: Ratio) -> Option<bool> {
        if r.denominator <= 0 {
            return None;
        }
        let lhs = r.numerator as i128 * 1_000_000;
        let rhs = self.ppm as i128 * r.denominator as i128;
        Some(match self.comparator {
            Comparator::AtLeast => lhs >= rhs,
            Comparator::Above => lhs > rhs,
        })
    }
}

/// How many more misses a ratio can take and still meet its target (see
/// [`Target::budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// At most this many more misses.
    Misses(i64),
    /// Met whatever comes (a target of 0%).
    Unlimited,
    /// Not met even if every case still to come is a hit.
    OutOfReach,
}

impl Budget {
    /// `misses`, `unlimited` or `out_of_reach`.
    pub fn kind(self) -> &'static str {
        match self {
            Budget::Misses(_) => "misses",
            Budget::Unlimited => "unlimited",
            Budget::OutOfReach => "out_of_reach",
        }
    }
}

impl Target {
    /// How many more misses `r` can take and still meet the target, when
    /// `pending` cases are yet to enter the denominator within the period
    /// (each a hit unless it is one of the misses; misses beyond them are
    /// cases not known yet, each adding to the denominator only). A ratio
    /// without a denominator is not a miss.
    pub fn budget(self, r: Ratio, pending: i64) -> Budget {
        let after = |x: i64| {
            if x <= pending {
                Ratio {
                    numerator: r.numerator + pending - x,
                    denominator: r.denominator + pending,
                }
            } else {
                Ratio {
                    numerator: r.numerator,
                    denominator: r.denominator + x,
                }
            }
        };
        let meets = |x: i64| self.is_met(after(x)).unwrap_or(true);
        // Far beyond any count of cases.
        const FAR: i64 = 1 << 50;
        if !meets(0) {
            return Budget::OutOfReach;
        }
        if meets(FAR) {
            return Budget::Unlimited;
        }
        // The most misses: met at `lo`, not at `hi` (the ratio only falls as
        // misses grow).
        let (mut lo, mut hi) = (0, FAR);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if meets(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Budget::Misses(lo)
    }
}

impl Ratio {
    /// This ratio carried to the end of its period at a recent pace: the
    /// counts so far plus `recent`'s (over its `recent_days`) scaled to the
    /// `remaining_days`, rounded to whole cases.
    pub fn projected(self, recent: Ratio, recent_days: i64, remaining_days: i64) -> Ratio {
        let scale = |n: i64| {
            if recent_days <= 0 {
                0
            } else {
                (n as f64 * remaining_days.max(0) as f64 / recent_days as f64).round() as i64
            }
        };
        Ratio {
            numerator: self.numerator + scale(recent.numerator),
            denominator: self.denominator + scale(recent.denominator),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}%", self.comparator.symbol(), self.percent())
    }
}

/// The target of one indicator and the sample it needs before a miss counts
/// as a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub target: Target,
    pub min_sample: i64,
}

/// Where an indicator stands against its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// No denominator: the rate is undefined.
    NoData,
    /// Fails the target, but the denominator is below the minimum sample.
    TooFewCases,
    Met,
    /// Fails the target on a sufficient sample.
    Breached,
}

impl Rule {
    pub fn standing(self, r: Ratio) -> Standing {
        match self.target.is_met(r) {
            None => Standing::NoData,
            Some(true) => Standing::Met,
            Some(false) if r.denominator < self.min_sample => Standing::TooFewCases,
            Some(false) => Standing::Breached,
        }
    }
}

/// Targets per indicator with per-commune overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    defaults: HashMap<Indicator, Rule>,
    overrides: HashMap<(UnitCode, Indicator), Rule>,
}

impl Targets {
    /// An indicator without a default rule gets its declared one.
    pub fn new(
        mut defaults: HashMap<Indicator, Rule>,
        overrides: HashMap<(UnitCode, Indicator), Rule>,
    ) -> Self {
        for &i in Indicator::ALL {
            defaults.entry(i).or_insert_with(|| i.default_rule());
        }
        Targets {
            defaults,
            overrides,
        }
    }

    /// The declared targets (those of the 2023 Long Mỹ reform emulation
    /// campaign, and Decision 766's 80% for digitisation), each with the
    /// default minimum sample.
    pub fn declared() -> Self {
        Targets::new(HashMap::new(), HashMap::new())
    }

    pub fn rule(&self, commune: &UnitCode, indicator: Indicator) -> Rule {
        self.overrides
            .get(&(commune.clone(), indicator))
            .copied()
            .unwrap_or_else(|| self.default_rule(indicator))
    }

    pub fn default_rule(&self, indicator: Indicator) -> Rule {
        self.defaults[&indicator]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_window_runs_to_the_end_of_its_period() {
        let end = |w: Window, t: &str| w.period_end(d(t));
        assert_eq!(end(Window::YearToDate, "2026-12-31"), Some(d("2027-01-01")));
        assert_eq!(
            end(Window::QuarterToDate, "2026-02-10"),
            Some(d("2026-04-01"))
        );
        assert_eq!(
            end(Window::QuarterToDate, "2026-09-30"),
            Some(d("2026-10-01"))
        );
        assert_eq!(
            end(Window::QuarterToDate, "2026-11-01"),
            Some(d("2027-01-01"))
        );
        assert_eq!(
            end(Window::MonthToDate, "2026-12-05"),
            Some(d("2027-01-01"))
        );
        assert_eq!(
            end(Window::MonthToDate, "2026-02-05"),
            Some(d("2026-03-01"))
        );
        assert_eq!(end(Window::Rolling30Days, "2026-02-05"), None);
        let range = |a: &str, b: &str| Window::Range {
            from: d(a),
            to: d(b),
        };
        assert_eq!(
            end(range("2026-01-01", "2026-03-01"), "2026-02-05"),
            Some(d("2026-03-01"))
        );
        assert_eq!(end(range("2026-01-01", "2026-02-05"), "2026-02-05"), None);
    }

    fn brute_budget(t: Target, r: Ratio, pending: i64, bound: i64) -> Budget {
        let after = |x: i64| {
            let (n, d) = if x <= pending {
                (r.numerator + pending - x, r.denominator + pending)
            } else {
                (r.numerator, r.denominator + x)
            };
            Ratio {
                numerator: n,
                denominator: d,
            }
        };
        let meets = |x| t.is_met(after(x)).unwrap_or(true);
        if !meets(0) {
            return Budget::OutOfReach;
        }
        Budget::Misses((0..=bound).take_while(|&x| meets(x)).last().unwrap())
    }

    proptest::proptest! {
        #[test]
        fn the_budget_is_the_most_misses_that_still_meet_the_target(
            n in 0i64..60, extra in 0i64..60, pending in 0i64..40,
            ppm in 50_000u32..=1_000_000, strict in proptest::bool::ANY,
        ) {
            let comparator = if strict { Comparator::Above } else { Comparator::AtLeast };
            let t = Target { comparator, ppm };
            let r = Ratio { numerator: n, denominator: n + extra };
            // With a target of at least 5%, no more than 20 misses per hit.
            let bound = 20 * (n + pending) + pending + 1;
            proptest::prop_assert_eq!(t.budget(r, pending), brute_budget(t, r, pending, bound));
        }
    }

    #[test]
    fn budgets_at_the_edges() {
        let at_least = |pct: f64| Target::from_percent(Comparator::AtLeast, pct).unwrap();
        let above = |pct: f64| Target::from_percent(Comparator::Above, pct).unwrap();
        let r = |n, d| Ratio {
            numerator: n,
            denominator: d,
        };
        // 99 of 100 on time, target > 99%: already out of reach with nothing pending ...
        assert_eq!(above(99.0).budget(r(99, 100), 0), Budget::OutOfReach);
        // ... but 100 cases coming due, all on time, make it 199/200 > 99%: none may be late.
        assert_eq!(above(99.0).budget(r(99, 100), 100), Budget::Misses(0));
        assert_eq!(above(99.0).budget(r(99, 100), 200), Budget::Misses(1));
        assert_eq!(at_least(70.0).budget(r(7, 10), 0), Budget::Misses(0));
        assert_eq!(at_least(70.0).budget(r(70, 100), 0), Budget::Misses(0));
        assert_eq!(at_least(70.0).budget(r(71, 100), 0), Budget::Misses(1));
        // No cases yet: nothing missed; a 0% target takes any number.
        assert_eq!(at_least(95.0).budget(r(0, 0), 0), Budget::Misses(0));
        assert_eq!(at_least(0.0).budget(r(0, 5), 3), Budget::Unlimited);
        assert_eq!(above(0.0).budget(r(0, 5), 0), Budget::OutOfReach);
    }

    #[test]
    fn a_projection_adds_the_recent_pace_for_the_days_left() {
        let r = |n, d| Ratio {
            numerator: n,
            denominator: d,
        };
        assert_eq!(r(90, 100).projected(r(27, 30), 30, 60), r(144, 160));
        assert_eq!(r(90, 100).projected(r(27, 30), 30, 0), r(90, 100));
        assert_eq!(r(90, 100).projected(r(1, 1), 30, 10), r(90, 100));
        assert_eq!(r(90, 100).projected(r(2, 3), 30, 10), r(91, 101));
    }

    #[test]
    fn windows_cover_the_expected_days() {
        let today = d("2023-08-17");
        assert_eq!(
            Window::YearToDate.days(today),
            (d("2023-01-01"), d("2023-08-18"))
        );
        assert_eq!(
            Window::QuarterToDate.days(today),
            (d("2023-07-01"), d("2023-08-18"))
        );
        assert_eq!(
            Window::MonthToDate.days(today),
            (d("2023-08-01"), d("2023-08-18"))
        );
        assert_eq!(
            Window::Rolling30Days.days(today),
            (d("2023-07-19"), d("2023-08-18"))
        );
        assert_eq!(
            Window::QuarterToDate.days(d("2023-03-31")),
            (d("2023-01-01"), d("2023-04-01"))
        );
        assert_eq!(
            Window::QuarterToDate.days(d("2023-12-31")),
            (d("2023-10-01"), d("2024-01-01"))
        );
    }

    #[test]
    fn windows_parse_from_their_ids_and_ranges() {
        for w in ["ytd", "qtd", "mtd", "rolling_30d", "2023-01-01..2023-07-01"] {
            assert_eq!(w.parse::<Window>().unwrap().id(), w);
        }
        assert!("2023-07-01..2023-01-01".parse::<Window>().is_err());
        assert!("2023-13-01..2024-01-01".parse::<Window>().is_err());
        assert!("last_week".parse::<Window>().is_err());
        assert!("2023-1-01..2024-01-01".parse::<Window>().is_err());
        assert!("+2023-01-01..2024-01-01".parse::<Window>().is_err());
        assert!("2023-02-29..2024-01-01".parse::<Window>().is_err());
        assert!("2024-02-29..2024-03-01".parse::<Window>().is_ok());
    }

    #[test]
    fn a_zero_denominator_is_undefined_not_zero_or_one() {
        let r = Ratio {
            numerator: 0,
            denominator: 0,
        };
        assert_eq!(r.rate(), None);
        assert_eq!(
            Targets::declared()
                .default_rule(Indicator::OnlineRate)
                .standing(r),
            Standing::NoData
        );
    }

    #[test]
    fn above_99_percent_is_strict() {
        let rule = Targets::declared().default_rule(Indicator::OnTimeRate);
        assert_eq!(
            rule.standing(Ratio {
                numerator: 99,
                denominator: 100
            }),
            Standing::Breached
        );
        assert_eq!(
            rule.standing(Ratio {
                numerator: 991,
                denominator: 1000
            }),
            Standing::Met
        );
        assert_eq!(
            rule.standing(Ratio {
                numerator: 100,
                denominator: 100
            }),
            Standing::Met
        );
    }

    #[test]
    fn at_least_70_percent_includes_70() {
        let rule = Targets::declared().default_rule(Indicator::OnlineRate);
        assert_eq!(
            rule.standing(Ratio {
                numerator: 14,
                denominator: 20
            }),
            Standing::Met
        );
        assert_eq!(
            rule.standing(Ratio {
                numerator: 13,
                denominator: 20
            }),
            Standing::Breached
        );
    }

    #[test]
    fn a_miss_below_the_minimum_sample_is_not_a_breach() {
        let rule = Targets::declared().default_rule(Indicator::SatisfactionRate);
        assert_eq!(
            rule.standing(Ratio {
                numerator: 0,
                denominator: 19
            }),
            Standing::TooFewCases
        );
        assert_eq!(
            rule.standing(Ratio {
                numerator: 0,
                denominator: 20
            }),
            Standing::Breached
        );
    }

    #[test]
    fn every_indicator_reads_its_own_counters() {
        let c = DayCounters {
            received: 10,
            received_online: 7,
            received_electronic: 9,
            due: 5,
            on_time: 4,
            ratings: 3,
            satisfied: 2,
            signatures: 8,
            digital: 6,
            received_digitized: 1,
        };
        let got: Vec<_> = Indicator::ALL
            .iter()
            .map(|i| (i.ratio(&c).numerator, i.ratio(&c).denominator))
            .collect();
        assert_eq!(got, vec![(7, 10), (4, 5), (2, 3), (9, 10), (6, 8), (1, 10)]);
    }

    #[test]
    fn each_definition_names_the_counters_its_ratio_reads() {
        let names = DayCounters::NAMES;
        for &i in Indicator::ALL {
            let d = i.definition();
            let n = names.iter().position(|n| *n == d.numerator).unwrap();
            let m = names.iter().position(|n| *n == d.denominator).unwrap();
            let mut values = [0; DayCounters::COUNT];
            values[n] = 3;
            values[m] += 4;
            let r = i.ratio(&DayCounters::from_values(values));
            assert_eq!(
                (r.numerator, r.denominator),
                (3, if n == m { 7 } else { 4 }),
                "{i}"
            );
            assert_eq!(i.id().parse::<Indicator>().unwrap(), i);
            assert_eq!(serde_json::to_value(i).unwrap(), i.id());
        }
        assert_eq!(
            Indicator::DigitizationRate
                .default_rule()
                .target
                .to_string(),
            ">= 80%"
        );
    }
}
