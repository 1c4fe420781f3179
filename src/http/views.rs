//! The parts API answers share: what the projections reflect, a unit, a
//! window, an indicator's standing.

use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::domain::{
    Comparator, DayCounters, Indicator, Standing, Targets, Unit, UnitCode, UnitKind, Window,
};
use crate::store::Freshness;

/// What the projections reflect, in every answer.
#[derive(Debug, Serialize)]
pub struct FreshnessView {
    pub event_time: Option<DateTime<Utc>>,
    pub committed_at: Option<DateTime<Utc>>,
    pub clock: Option<DateTime<Utc>>,
    pub answered_at: DateTime<Utc>,
    pub consumer_lag_records: i64,
}

impl AppState {
    pub(super) async fn freshness(&self) -> Result<FreshnessView, ApiError> {
        let Freshness {
            event_time,
            committed_at,
            clock,
        } = self.cache.freshness(&self.store).await?;
        Ok(FreshnessView {
            event_time,
            committed_at,
            clock,
            answered_at: Utc::now(),
            consumer_lag_records: self.metrics.lag.get(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct UnitView<'a> {
    pub code: &'a UnitCode,
    pub name: &'a str,
    pub kind: UnitKind,
    pub kind_vi: &'static str,
    pub parent: Option<&'a UnitCode>,
    /// The unit's period and successors, for a unit that has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDate>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub successors: &'a [UnitCode],
}

impl<'a> From<&'a Unit> for UnitView<'a> {
    fn from(u: &'a Unit) -> Self {
        UnitView {
            code: &u.code,
            name: &u.name,
            kind: u.kind,
            kind_vi: u.kind.label_vi(),
            parent: u.parent.as_ref(),
            valid_from: u.valid_from,
            valid_to: u.valid_to,
            successors: &u.successors,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WindowView {
    pub id: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl WindowView {
    pub fn new(w: Window, (from, to): (NaiveDate, NaiveDate)) -> Self {
        WindowView {
            id: w.id(),
            from,
            to,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TargetView {
    pub comparator: Comparator,
    pub percent: f64,
    pub min_sample: i64,
}

/// One indicator's standing, as the API shows it.
#[derive(Debug, Serialize)]
pub struct IndicatorView {
    pub indicator: Indicator,
    pub label_vi: &'static str,
    pub label_en: &'static str,
    pub numerator: i64,
    pub denominator: i64,
    pub rate: Option<f64>,
    pub target: TargetView,
    /// `null` when the rate is undefined.
    pub met: Option<bool>,
    pub standing: Standing,
}

/// Every indicator over `c`, against the targets of `commune` (the default
/// targets for a roll-up).
pub fn indicators(
    targets: &Targets,
    commune: Option<&UnitCode>,
    c: &DayCounters,
) -> Vec<IndicatorView> {
    Indicator::ALL
        .iter()
        .map(|&i| {
            let rule = match commune {
                Some(code) => targets.rule(code, i),
                None => targets.default_rule(i),
            };
            let ratio = i.ratio(c);
            IndicatorView {
                indicator: i,
                label_vi: i.label_vi(),
                label_en: i.label_en(),
                numerator: ratio.numerator,
                denominator: ratio.denominator,
                rate: ratio.rate(),
                target: TargetView {
                    comparator: rule.target.comparator,
                    percent: rule.target.percent(),
                    min_sample: rule.min_sample,
                },
                met: rule.target.is_met(ratio),
                standing: rule.standing(ratio),
            }
        })
        .collect()
}

/// A typed answer, serialized as it is built (it may borrow the state).
pub fn answer<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    Ok(Json(value).into_response())
}
