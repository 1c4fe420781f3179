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
use crate::domain::{DayCounters, Indicator};

#[derive(Deserialize)]
pub(super) struct WindowQuery {
    window: Option<String>,
}

#[derive(Serialize)]
pub(super) struct CommuneAnswer<'a> {
    commune: UnitView<'a>,
    window: WindowView,
    indicators: Vec<IndicatorView>,
    freshness: FreshnessView,
}

/// `GET /api/v1/communes/{code}/indicators`: one commune's indicators.
pub(super) async fn commune(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> Result<Response, ApiError> {
    let unit = s.commune(&code)?;
    let (window, range) = s.window(q.window.as_deref())?;
    let c = s
        .cache
        .commune_sums(&s.store, &code, range.0, range.1)
        .await?;
    answer(&CommuneAnswer {
        commune: unit.into(),
        window: WindowView::new(window, range),
        indicators: indicators(&s.targets, Some(&unit.code), &c),
        freshness: s.freshness().await?,
    })
}

#[derive(Serialize)]
struct CommuneRow<'a> {
    commune: UnitView<'a>,
    indicators: Vec<IndicatorView>,
}

#[derive(Serialize)]
struct Rollup {
    indicators: Vec<IndicatorView>,
}

#[derive(Serialize)]
struct UnitAnswer<'a> {
    unit: UnitView<'a>,
    window: WindowView,
    communes: Vec<CommuneRow<'a>>,
    rollup: Rollup,
    freshness: FreshnessView,
}

/// `GET /api/v1/units/{code}/communes`: the communes under a unit, and
/// their roll-up (sums of numerators and denominators, not an average of
/// rates).
pub(super) async fn unit_communes(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> Result<Response, ApiError> {
    let parent = s
        .units
        .get(&code)
        .ok_or_else(|| ApiError::NotFound(format!("unknown unit `{code}`")))?;
    let (window, range) = s.window(q.window.as_deref())?;
    let sums: HashMap<String, DayCounters> = s
        .store
        .window_sums(range.0, range.1)
        .await?
        .into_iter()
        .collect();
    let mut total = DayCounters::default();
    let communes = s
        .units
        .communes_under(&code)
        .map(|u| {
            let c = sums.get(u.code.as_str()).copied().unwrap_or_default();
            total += c;
            CommuneRow {
                commune: u.into(),
                indicators: indicators(&s.targets, Some(&u.code), &c),
            }
        })
        .collect();
    answer(&UnitAnswer {
        unit: parent.into(),
        window: WindowView::new(window, range),
        communes,
        rollup: Rollup {
            indicators: indicators(&s.targets, None, &total),
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
    let codes: Vec<String> = match s.units.get(&code) {
        Some(u) if u.kind.receives_cases() => vec![code.clone()],
        Some(_) => s
            .units
            .communes_under(&code)
            .map(|u| u.code.to_string())
            .collect(),
        None => return Err(ApiError::NotFound(format!("unknown unit `{code}`"))),
    };
    let mut by_day: BTreeMap<NaiveDate, DayCounters> = BTreeMap::new();
    for c in &codes {
        for (day, counters) in s.store.daily(c, range.0, range.1).await? {
            *by_day.entry(day).or_default() += counters;
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
        indicator,
        window: WindowView::new(window, range),
        days,
        freshness: s.freshness().await?,
    })
}
