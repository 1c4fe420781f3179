//! Open cases past their due date, oldest first, paged; and the open cases
//! coming due within a few days.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{ApiPath, ApiQuery};
use super::views::{answer, FreshnessView, UnitView};
use super::{ApiError, Shared};

#[derive(Deserialize)]
pub(super) struct PageQuery {
    limit: Option<i64>,
    /// Paging cursor from the previous page's `next`: `DUE_DATE/CASE_ID`.
    after: Option<String>,
}

#[derive(Serialize)]
struct OverdueView {
    case_id: String,
    /// The procedure (MaTTHC); null for a case stored before it was kept.
    procedure_code: Option<String>,
    received_at: Option<DateTime<Utc>>,
    due_date: NaiveDate,
    days_overdue: i64,
}

#[derive(Serialize)]
struct OverdueAnswer<'a> {
    commune: UnitView<'a>,
    today: NaiveDate,
    cases: Vec<OverdueView>,
    next: Option<String>,
    freshness: FreshnessView,
}

/// `GET /api/v1/communes/{code}/overdue`.
pub(super) async fn overdue(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let unit = s.commune(&code)?;
    let limit = s.limit(q.limit)?;
    let after = q.after.as_deref().map(cursor).transpose()?;
    let today = s.today();
    let cases = s.store.overdue_cases(&code, today, after, limit).await?;
    let next = (cases.len() as i64 == limit)
        .then(|| {
            cases
                .last()
                .map(|c| format!("{}/{}", c.due_date, c.case_id))
        })
        .flatten();
    let cases = cases
        .into_iter()
        .map(|c| OverdueView {
            days_overdue: (today - c.due_date).num_days(),
            case_id: c.case_id,
            procedure_code: c.procedure_code.filter(|p| !p.is_empty()),
            received_at: c.received_at,
            due_date: c.due_date,
        })
        .collect();
    answer(&OverdueAnswer {
        commune: unit.into(),
        today,
        cases,
        next,
        freshness: s.freshness().await?,
    })
}

/// `DUE_DATE/COMMUNE/CASE_ID` (a case id may hold `/`).
fn coming_due_cursor(text: &str) -> Result<(NaiveDate, String, String), ApiError> {
    let bad = || ApiError::BadRequest("bad cursor".into());
    let (day, rest) = text.split_once('/').ok_or_else(bad)?;
    let (commune, case) = rest.split_once('/').ok_or_else(bad)?;
    let day = crate::domain::time::parse_day(day).ok_or_else(bad)?;
    Ok((day, commune.to_string(), case.to_string()))
}

pub(super) fn cursor(text: &str) -> Result<(NaiveDate, String), ApiError> {
    let bad = || ApiError::BadRequest("bad cursor".into());
    let (day, id) = text.split_once('/').ok_or_else(bad)?;
    let day = crate::domain::time::parse_day(day).ok_or_else(bad)?;
    Ok((day, id.to_string()))
}

#[derive(Deserialize)]
pub(super) struct ComingDueQuery {
    /// Calendar days after today to look ahead (default: the at-risk
    /// alert's horizon, `alerts.at_risk_horizon_days`, 3 unless set).
    horizon: Option<i64>,
    limit: Option<i64>,
    /// Paging cursor from the previous page's `next`:
    /// `DUE_DATE/COMMUNE/CASE_ID`.
    after: Option<String>,
    /// The window whose on-time rate the budget is counted in (default
    /// `ytd`).
    window: Option<String>,
}

/// The longest look ahead.
const MAX_HORIZON: i64 = 31;

#[derive(Serialize)]
struct ComingDueView<'a> {
    commune: &'a str,
    case_id: String,
    /// The procedure (MaTTHC); null for a case stored before it was kept.
    procedure_code: Option<String>,
    received_at: Option<DateTime<Utc>>,
    due_date: NaiveDate,
    /// 0: due today; 1: tomorrow; ...
    days_left: i64,
}

#[derive(Serialize)]
struct CommuneComingDue<'a> {
    commune: UnitView<'a>,
    due_today: usize,
    due_tomorrow: usize,
    due_later: usize,
    /// What those cases mean for the on-time rate over the window.
    on_time: Option<OnTimeBudget>,
    #[serde(skip)]
    due_dates: Vec<NaiveDate>,
}

/// A commune's on-time rate over the window so far, and what the cases
/// coming due within the horizon (and the window's period) can do to it:
/// the figures of the at-risk alert.
#[derive(Serialize)]
struct OnTimeBudget {
    numerator: i64,
    denominator: i64,
    value: Option<f64>,
    target: crate::domain::AlertTarget,
    #[serde(flatten)]
    outlook: crate::domain::Outlook,
    /// Every one of them late would be a breach (and it is not one now).
    at_risk: bool,
}

#[derive(Serialize)]
struct ComingDueAnswer<'a> {
    unit: UnitView<'a>,
    today: NaiveDate,
    horizon_days: i64,
    /// The last day looked at.
    until: NaiveDate,
    total: usize,
    /// Per commune with a case coming due, in configuration order.
    communes: Vec<CommuneComingDue<'a>>,
    /// A page of them, oldest due first (then by commune and case id).
    cases: Vec<ComingDueView<'a>>,
    /// More cases after this page (see `next`).
    truncated: bool,
    /// The cursor of the next page (`after=`), while there is one.
    next: Option<String>,
    freshness: FreshnessView,
}

/// `GET /api/v1/units/{code}/coming-due`: the open cases of a commune (or
/// of a parent's communes) due today, tomorrow and within the horizon
/// (calendar days, as the on-time rule compares dates): what the head of a
/// one-stop shop must resolve this week to stay on time.
pub(super) async fn coming_due(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<ComingDueQuery>,
) -> Result<Response, ApiError> {
    let unit = s.unit(&code)?;
    let horizon = q.horizon.unwrap_or(s.coming_due_horizon.into());
    if !(0..=MAX_HORIZON).contains(&horizon) {
        return Err(ApiError::BadRequest(format!(
            "horizon must be 0 to {MAX_HORIZON} days"
        )));
    }
    let limit = s.limit(q.limit)? as usize;
    let after = q.after.as_deref().map(coming_due_cursor).transpose()?;
    let today = s.today();
    let until = today + chrono::Days::new(horizon as u64);
    let communes: Vec<&crate::domain::Unit> = if unit.kind.receives_cases() {
        vec![unit]
    } else {
        s.units.communes_under(&code).collect()
    };
    // Each commune's place in configuration order, by code.
    let place: std::collections::HashMap<&str, usize> = communes
        .iter()
        .enumerate()
        .map(|(n, c)| (c.code.as_str(), n))
        .collect();
    let only = unit.kind.receives_cases().then_some(code.as_str());
    let mut rows = s
        .store
        .cases_coming_due(only, today, until + chrono::Days::new(1))
        .await?;
    // The page order, by bytes (whatever the database's collation).
    rows.sort_by(|a, b| {
        (a.due_date, &a.commune, &a.case_id).cmp(&(b.due_date, &b.commune, &b.case_id))
    });
    let mut counts: std::collections::BTreeMap<usize, CommuneComingDue<'_>> = Default::default();
    let mut cases = Vec::new();
    let mut total = 0;
    let mut more = false;
    for row in rows {
        let Some(&n) = place.get(row.commune.as_str()) else {
            continue;
        };
        let c = communes[n];
        total += 1;
        let days_left = (row.due_date - today).num_days();
        let x = counts.entry(n).or_insert_with(|| CommuneComingDue {
            commune: c.into(),
            due_today: 0,
            due_tomorrow: 0,
            due_later: 0,
            on_time: None,
            due_dates: Vec::new(),
        });
        x.due_dates.push(row.due_date);
        match days_left {
            0 => x.due_today += 1,
            1 => x.due_tomorrow += 1,
            _ => x.due_later += 1,
        }
        let past = after.as_ref().is_none_or(|(due, commune, case)| {
            (row.due_date, row.commune.as_str(), row.case_id.as_str())
                > (*due, commune.as_str(), case.as_str())
        });
        if past && cases.len() == limit {
            more = true;
        }
        if past && cases.len() < limit {
            cases.push(ComingDueView {
                commune: c.code.as_str(),
                case_id: row.case_id,
                procedure_code: row.procedure_code.filter(|p| !p.is_empty()),
                received_at: row.received_at,
                due_date: row.due_date,
                days_left,
            });
        }
    }
    let mut counts: Vec<CommuneComingDue<'_>> = counts.into_values().collect();
    on_time_budgets(&s, q.window.as_deref(), horizon, &mut counts).await?;
    answer(&ComingDueAnswer {
        unit: unit.into(),
        today,
        horizon_days: horizon,
        until,
        truncated: more,
        next: more
            .then(|| {
                cases
                    .last()
                    .map(|c| format!("{}/{}/{}", c.due_date, c.commune, c.case_id))
            })
            .flatten(),
        total,
        communes: counts,
        cases,
        freshness: s.freshness().await?,
    })
}

/// Fills in each commune's [`OnTimeBudget`] over `window`: the window's
/// counters in one grouped query, the cases coming due (clipped to the
/// window's period) judged by the same rule as the at-risk alert.
async fn on_time_budgets(
    s: &Shared,
    window: Option<&str>,
    horizon: i64,
    counts: &mut [CommuneComingDue<'_>],
) -> Result<(), ApiError> {
    use crate::domain::{AlertTarget, Indicator, Outlook};
    let (window, range) = s.window(window)?;
    let today = s.today();
    let until = today + chrono::Days::new(horizon as u64);
    let sums: std::collections::HashMap<String, crate::domain::DayCounters> = s
        .store
        .window_sums(range.0, range.1)
        .await?
        .into_iter()
        .collect();
    for x in counts.iter_mut() {
        let Some(last) = window.last_day_until(today, until) else {
            continue;
        };
        let unit = s.commune(x.commune.code.as_str())?;
        let code = &unit.code;
        let ratio =
            Indicator::OnTimeRate.ratio(&sums.get(code.as_str()).copied().unwrap_or_default());
        let rule = s.targets.rule(&unit.code, Indicator::OnTimeRate);
        let coming = x.due_dates.iter().filter(|d| **d <= last).count() as i64;
        let outlook = Outlook::new(ratio, rule, horizon, last, coming);
        let in_breach = rule.standing(ratio) == crate::domain::Standing::Breached;
        x.on_time = Some(OnTimeBudget {
            numerator: ratio.numerator,
            denominator: ratio.denominator,
            value: ratio.rate(),
            target: AlertTarget {
                comparator: rule.target.comparator,
                percent: rule.target.percent(),
                min_sample: rule.min_sample,
            },
            at_risk: outlook.at_risk(ratio, rule, in_breach),
            outlook,
        });
    }
    Ok(())
}
