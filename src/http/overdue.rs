//! Open cases past their due date, oldest first, paged.

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

pub(super) fn cursor(text: &str) -> Result<(NaiveDate, String), ApiError> {
    let bad = || ApiError::BadRequest("bad cursor".into());
    let (day, id) = text.split_once('/').ok_or_else(bad)?;
    let day = crate::domain::time::parse_day(day).ok_or_else(bad)?;
    Ok((day, id.to_string()))
}
