//! Indicators, windows and targets: how day counters become rates, which days
//! a window sums, and whether a rate meets its target.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, NaiveDate};
use serde::{Deserialize, Serialize};

use super::fold::DayCounters;
use super::units::UnitCode;

/// The five indicators of the reform emulation campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    OnlineRate,
    OnTimeRate,
    SatisfactionRate,
    ElectronicRegistrationRate,
    DigitalSignatureRate,
}

impl Indicator {
    pub const ALL: [Indicator; 5] = [
        Indicator::OnlineRate,
        Indicator::OnTimeRate,
        Indicator::SatisfactionRate,
        Indicator::ElectronicRegistrationRate,
        Indicator::DigitalSignatureRate,
    ];

    /// The contract's id, e.g. `on_time_rate`.
    pub fn id(self) -> &'static str {
        match self {
            Indicator::OnlineRate => "online_rate",
            Indicator::OnTimeRate => "on_time_rate",
            Indicator::SatisfactionRate => "satisfaction_rate",
            Indicator::ElectronicRegistrationRate => "electronic_registration_rate",
            Indicator::DigitalSignatureRate => "digital_signature_rate",
        }
    }

    /// Vietnamese label, for people.
    pub fn label_vi(self) -> &'static str {
        match self {
            Indicator::OnlineRate => "Tỷ lệ hồ sơ trực tuyến",
            Indicator::OnTimeRate => "Tỷ lệ giải quyết đúng hạn",
            Indicator::SatisfactionRate => "Tỷ lệ hài lòng",
            Indicator::ElectronicRegistrationRate => {
                "Tỷ lệ tiếp nhận trên phần mềm một cửa điện tử"
            }
            Indicator::DigitalSignatureRate => "Tỷ lệ ký số",
        }
    }

    /// Numerator and denominator of this indicator over some counters.
    pub fn ratio(self, c: &DayCounters) -> Ratio {
        let (numerator, denominator) = match self {
            Indicator::OnlineRate => (c.received_online, c.received),
            Indicator::OnTimeRate => (c.on_time, c.due),
            Indicator::SatisfactionRate => (c.satisfied, c.ratings),
            Indicator::ElectronicRegistrationRate => (c.received_electronic, c.received),
            Indicator::DigitalSignatureRate => (c.digital, c.signatures),
        };
        Ratio {
            numerator,
            denominator,
        }
    }
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Indicator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Indicator::ALL
            .into_iter()
            .find(|i| i.id() == s)
            .ok_or_else(|| {
                format!(
                    "unknown indicator `{s}`; known: {}",
                    Indicator::ALL.map(|i| i.id()).join(", ")
                )
            })
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
                    NaiveDate::parse_from_str(d, "%Y-%m-%d")
                        .map_err(|_| format!("`{d}` is not a date (YYYY-MM-DD)"))
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
    /// Every indicator needs a default rule.
    pub fn new(
        defaults: HashMap<Indicator, Rule>,
        overrides: HashMap<(UnitCode, Indicator), Rule>,
    ) -> Result<Self, String> {
        if let Some(missing) = Indicator::ALL
            .into_iter()
            .find(|i| !defaults.contains_key(i))
        {
            return Err(format!("indicator `{missing}` has no target"));
        }
        Ok(Targets {
            defaults,
            overrides,
        })
    }

    /// The targets of the 2023 Long Mỹ reform emulation campaign, each with a
    /// minimum sample of 20.
    pub fn long_my_2023() -> Self {
        let rule = |c, p| Rule {
            target: Target::from_percent(c, p).expect("valid"),
            min_sample: 20,
        };
        let defaults = HashMap::from([
            (Indicator::OnlineRate, rule(Comparator::AtLeast, 70.0)),
            (Indicator::OnTimeRate, rule(Comparator::Above, 99.0)),
            (Indicator::SatisfactionRate, rule(Comparator::AtLeast, 95.0)),
            (
                Indicator::ElectronicRegistrationRate,
                rule(Comparator::AtLeast, 100.0),
            ),
            (
                Indicator::DigitalSignatureRate,
                rule(Comparator::AtLeast, 100.0),
            ),
        ]);
        Targets {
            defaults,
            overrides: HashMap::new(),
        }
    }

    pub fn rule(&self, commune: &UnitCode, indicator: Indicator) -> Rule {
        self.overrides
            .get(&(commune.clone(), indicator))
            .or_else(|| self.defaults.get(&indicator))
            .copied()
            .expect("every indicator has a default rule (checked in Targets::new)")
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
    }

    #[test]
    fn a_zero_denominator_is_undefined_not_zero_or_one() {
        let r = Ratio {
            numerator: 0,
            denominator: 0,
        };
        assert_eq!(r.rate(), None);
        assert_eq!(
            Targets::long_my_2023()
                .default_rule(Indicator::OnlineRate)
                .standing(r),
            Standing::NoData
        );
    }

    #[test]
    fn above_99_percent_is_strict() {
        let rule = Targets::long_my_2023().default_rule(Indicator::OnTimeRate);
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
        let rule = Targets::long_my_2023().default_rule(Indicator::OnlineRate);
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
        let rule = Targets::long_my_2023().default_rule(Indicator::SatisfactionRate);
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
        };
        let got: Vec<_> = Indicator::ALL
            .iter()
            .map(|i| (i.ratio(&c).numerator, i.ratio(&c).denominator))
            .collect();
        assert_eq!(got, vec![(7, 10), (4, 5), (2, 3), (9, 10), (6, 8)]);
    }
}
