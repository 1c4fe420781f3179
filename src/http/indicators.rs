//! Indicators over a window: one commune's, a unit's communes with their
//! roll-up, and one indicator's daily series.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::response::Response;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::extract::{ApiPath, ApiQuery};
use super::views::{answer, indicators, FreshnessView, IndicatorView, UnitView, WindowView};
use super::{ApiError, Shared};
use crate::domain::indicator::Budget;
use crate::domain::{DayCounters, Indicator, Structure, Unit, UnitCode, Window};

#[derive(Deserialize)]
pub(super) struct WindowQuery {
    window: Option<String>,
    /// The unit structure asked for (default: today's).
    as_of: Option<NaiveDate>,
}

#[derive(Deserialize)]
pub(super) struct CommuneQuery {
    window: Option<String>,
    /// The unit structure asked for (default: today's).
    as_of: Option<NaiveDate>,
    /// Add the outlook (a count of the commune's open cases coming due and
    /// its last 30 days: asked for, not on every answer).
    #[serde(default)]
    outlook: bool,
}

#[derive(Serialize)]
pub(super) struct CommuneAnswer<'a> {
    commune: UnitView<'a>,
    /// The unit structure the answer is in.
    as_of: NaiveDate,
    window: WindowView,
    indicators: Vec<IndicatorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outlook: Option<Outlook>,
    freshness: FreshnessView,
}

/// Where each indicator is heading before the window's period ends.
#[derive(Serialize)]
struct Outlook {
    /// The first day after the period (`null` for a rolling window or a
    /// range that is over: no budget to spend, nothing to project).
    period_end: Option<NaiveDate>,
    /// Open cases due from today to the period's end: they will count in
    /// the on-time rate within the period.
    cases_coming_due: i64,
    /// The pace the projection carries forward: the last 30 days.
    pace_days: i64,
    indicators: Vec<IndicatorOutlook>,
}

#[derive(Serialize)]
struct IndicatorOutlook {
    indicator: Indicator,
    /// How many more misses (late cases for the on-time rate, cases that
    /// are not online, signatures by hand, ...) the commune can take in
    /// the period and still meet the target: `misses` (with
    /// `misses_allowed`), `unlimited`, or `out_of_reach` (not met even if
    /// every case still to come is a hit).
    budget: &'static str,
    misses_allowed: Option<i64>,
    /// The period's end at the last 30 days' pace.
    projection: Option<ProjectionView>,
}

#[derive(Serialize)]
struct ProjectionView {
    numerator: i64,
    denominator: i64,
    rate: Option<f64>,
    met: Option<bool>,
}

/// The pace the projections carry forward: the last 30 days.
const PACE_DAYS: i64 = 30;

/// What every outlook of one window, today, is computed from.
struct OutlookFrame {
    /// The first day after the window's period (`None`: rolling, or over).
    end: Option<NaiveDate>,
    /// Days from tomorrow to the period's end.
    remaining: i64,
}

impl OutlookFrame {
    fn new(s: &Shared, window: Window) -> Self {
        let today = s.today();
        let tomorrow = today.succ_opt().unwrap_or(today);
        let end = window.period_end(today);
        OutlookFrame {
            end,
            remaining: end.map_or(0, |end| (end - tomorrow).num_days()),
        }
    }

    /// The outlook of a commune (`code`; `None`: a roll-up, judged by the
    /// default targets) whose counts so far are `c`, last 30 days `recent`,
    /// with `coming_due` open cases due before the period ends.
    fn outlook(
        &self,
        s: &Shared,
        code: Option<&UnitCode>,
        c: &DayCounters,
        recent: &DayCounters,
        coming_due: i64,
    ) -> Outlook {
        let indicators = Indicator::ALL
            .iter()
            .map(|&i| {
                let rule = match code {
                    Some(code) => s.targets.rule(code, i),
                    None => s.targets.default_rule(i),
                };
                let ratio = i.ratio(c);
                let pending = if i == Indicator::OnTimeRate {
                    coming_due
                } else {
                    0
                };
                let budget = rule.target.budget(ratio, pending);
                let projection = self.end.map(|_| {
                    let p = ratio.projected(i.ratio(recent), PACE_DAYS, self.remaining);
                    ProjectionView {
                        numerator: p.numerator,
                        denominator: p.denominator,
                        rate: p.rate(),
                        met: rule.target.is_met(p),
                    }
                });
                IndicatorOutlook {
                    indicator: i,
                    misses_allowed: match budget {
                        Budget::Misses(n) => Some(n),
                        _ => None,
                    },
                    budget: budget.kind(),
                    projection,
                }
            })
            .collect();
        Outlook {
            period_end: self.end,
            cases_coming_due: coming_due,
            pace_days: PACE_DAYS,
            indicators,
        }
    }
}

/// The outlook of one commune over a window whose counts so far are `c`
/// (with the open cases and recent days of the units it came from).
async fn outlook(
    s: &Shared,
    st: &Structure,
    code: &UnitCode,
    window: Window,
    c: &DayCounters,
) -> Result<Outlook, ApiError> {
    let today = s.today();
    let frame = OutlookFrame::new(s, window);
    let (coming_due, recent) = match frame.end {
        Some(end) => {
            let mut coming_due = 0;
            for source in s.source_codes(st, code.as_str()) {
                coming_due += s.store.open_cases_due(&source, today, end).await?;
            }
            let (from, to) = Window::Rolling30Days.days(today);
            (coming_due, s.sums_in(st, code.as_str(), from, to).await?)
        }
        None => (0, DayCounters::default()),
    };
    Ok(frame.outlook(s, Some(code), c, &recent, coming_due))
}

/// `GET /api/v1/communes/{code}/indicators`: one commune's indicators, and
/// with `outlook=true` where each is heading before the period ends.
pub(super) async fn commune(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<CommuneQuery>,
) -> Result<Response, ApiError> {
    let st = s.structure(q.as_of);
    let unit = s.commune_in(&code, &st)?;
    let (window, range) = s.window(q.window.as_deref())?;
    let c = s.sums_in(&st, &code, range.0, range.1).await?;
    answer(&CommuneAnswer {
        commune: unit.into(),
        as_of: st.as_of(),
        window: WindowView::new(window, range),
        indicators: indicators(&s.targets, Some(&unit.code), &c),
        outlook: match q.outlook {
            true => Some(outlook(&s, &st, &unit.code, window, &c).await?),
            false => None,
        },
        freshness: s.freshness().await?,
    })
}

#[derive(Serialize)]
struct CommuneRow<'a> {
    commune: UnitView<'a>,
    indicators: Vec<IndicatorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outlook: Option<Outlook>,
}

#[derive(Serialize)]
struct Rollup {
    indicators: Vec<IndicatorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outlook: Option<Outlook>,
}

/// Counters of a unit that count in no unit of the structure asked for
/// (a split's history, or a merged unit's own results asked for in the
/// structure before the merge), beside the roll-up they concern.
#[derive(Serialize)]
struct ApartRow<'a> {
    unit: UnitView<'a>,
    /// The units of the structure it concerns (what it became, or came
    /// from), those under this roll-up's unit.
    related: Vec<&'a UnitCode>,
    /// Whether the roll-up counts it: only when every unit it concerns is
    /// under this roll-up's unit.
    in_rollup: bool,
    indicators: Vec<IndicatorView>,
}

#[derive(Serialize)]
struct UnitAnswer<'a> {
    unit: UnitView<'a>,
    /// The unit structure the answer is in.
    as_of: NaiveDate,
    window: WindowView,
    communes: Vec<CommuneRow<'a>>,
    /// Not attributable to any commune of the structure (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    apart: Vec<ApartRow<'a>>,
    rollup: Rollup,
    freshness: FreshnessView,
}

/// `GET /api/v1/units/{code}/communes`: the communes under a unit, and
/// their roll-up (sums of numerators and denominators, not an average of
/// rates); with `outlook=true` each one's outlook, as on one commune's
/// indicators (two grouped queries more: the last 30 days, and the open
/// cases coming due before the period ends).
pub(super) async fn unit_communes(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<CommuneQuery>,
) -> Result<Response, ApiError> {
    let st = s.structure(q.as_of);
    let parent = s.unit_in(&code, &st)?;
    let (window, range) = s.window(q.window.as_deref())?;
    let attributed = s.attributed_sums(&st, range.0, range.1).await?;
    let sums = &attributed.by_unit;
    let frame = OutlookFrame::new(&s, window);
    let today = s.today();
    let (recent, coming): (HashMap<String, DayCounters>, HashMap<String, i64>) =
        match (q.outlook, frame.end) {
            (true, Some(end)) => {
                let (from, to) = Window::Rolling30Days.days(today);
                let recent = s.attributed_sums(&st, from, to).await?.by_unit;
                let mut coming: HashMap<String, i64> = HashMap::new();
                for (c, n) in s.store.open_cases_due_by_commune(today, end).await? {
                    if let Some(target) = st.attribute(&s.units, &c, today) {
                        *coming.entry(target.to_string()).or_default() += n;
                    }
                }
                (recent, coming)
            }
            _ => Default::default(),
        };
    let mut total = DayCounters::default();
    let mut total_recent = DayCounters::default();
    let mut total_coming = 0;
    let under: Vec<&Unit> = st.communes_under(&s.units, &code).collect();
    let mut apart = Vec::new();
    for (unit, c) in attributed.apart(&s) {
        let related = st.related(&s.units, unit);
        let inside: Vec<&UnitCode> = related
            .iter()
            .filter(|r| under.iter().any(|u| u == *r))
            .map(|r| &r.code)
            .collect();
        if inside.is_empty() {
            continue;
        }
        let in_rollup = inside.len() == related.len();
        if in_rollup {
            total += c;
        }
        apart.push(ApartRow {
            unit: unit.into(),
            related: inside,
            in_rollup,
            indicators: indicators(&s.targets, Some(&unit.code), &c),
        });
    }
    let communes = under
        .into_iter()
        .map(|u| {
            let c = sums.get(u.code.as_str()).copied().unwrap_or_default();
            let r = recent.get(u.code.as_str()).copied().unwrap_or_default();
            let n = coming.get(u.code.as_str()).copied().unwrap_or_default();
            total += c;
            total_recent += r;
            total_coming += n;
            CommuneRow {
                commune: u.into(),
                indicators: indicators(&s.targets, Some(&u.code), &c),
                outlook: q
                    .outlook
                    .then(|| frame.outlook(&s, Some(&u.code), &c, &r, n)),
            }
        })
        .collect();
    answer(&UnitAnswer {
        unit: parent.into(),
        as_of: st.as_of(),
        window: WindowView::new(window, range),
        communes,
        apart,
        rollup: Rollup {
            indicators: indicators(&s.targets, None, &total),
            outlook: q
                .outlook
                .then(|| frame.outlook(&s, None, &total, &total_recent, total_coming)),
        },
        freshness: s.freshness().await?,
    })
}

#[derive(Serialize)]
struct Day {
    day: NaiveDate,
    numerator: i64,
    denominator: i64,
    rate: Option<f64>,
}

#[derive(Serialize)]
struct SeriesAnswer {
    unit: String,
    as_of: NaiveDate,
    indicator: Indicator,
    window: WindowView,
    days: Vec<Day>,
    freshness: FreshnessView,
}

/// `GET /api/v1/communes/{code}/series/{indicator}`: one indicator per
/// day; a parent unit sums its communes day by day.
pub(super) async fn series(
    State(s): State<Shared>,
    ApiPath((code, indicator)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> Result<Response, ApiError> {
    let indicator: Indicator = indicator.parse().map_err(ApiError::NotFound)?;
    let (window, range) = s.window(q.window.as_deref())?;
    let st = s.structure(q.as_of);
    let unit = s.unit_in(&code, &st)?;
    let communes: Vec<&Unit> = if unit.kind.receives_cases() {
        vec![unit]
    } else {
        st.communes_under(&s.units, &code).collect()
    };
    let mut by_day: BTreeMap<NaiveDate, DayCounters> = BTreeMap::new();
    for commune in communes {
        for seg in st.sources(&s.units, commune.code.as_str()) {
            let Some((lo, hi)) = seg.clip(range.0, range.1) else {
                continue;
            };
            for (day, counters) in s.store.daily(seg.code.as_str(), lo, hi).await? {
                *by_day.entry(day).or_default() += counters;
            }
        }
    }
    let days = by_day
        .iter()
        .map(|(day, c)| {
            let r = indicator.ratio(c);
            Day {
                day: *day,
                numerator: r.numerator,
                denominator: r.denominator,
                rate: r.rate(),
            }
        })
        .collect();
    answer(&SeriesAnswer {
        unit: code,
        as_of: st.as_of(),
        indicator,
        window: WindowView::new(window, range),
        days,
        freshness: s.freshness().await?,
    })
}
