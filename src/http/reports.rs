//! `GET /api/v1/units/{code}/report`: a unit's report over a period (the
//! indicator table and the period's alerts), as JSON, CSV or XLSX, from the
//! same [`PeriodReport`] as `cchc report --format`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Utc};
use serde::Deserialize;

use super::extract::{ApiPath, ApiQuery};
use super::views::answer;
use super::{ApiError, Shared};
use crate::operate::period_report::{period_report, Period, PeriodReport, ReportError};

#[derive(Deserialize)]
pub(super) struct ReportQuery {
    /// `2026`, `2026-Q3`, `2026-07` or `FROM..TO`; default: this year.
    period: Option<String>,
    /// `json` (default), `csv` or `xlsx`.
    format: Option<String>,
    /// For `csv`: `indicators` (default) or `alerts`.
    table: Option<String>,
}

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

fn file(report: &PeriodReport, bytes: Vec<u8>, media: &str, extension: &str) -> Response {
    let mut res = bytes.into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(media).expect("a media type"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        report.file_name(extension)
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

/// `GET /api/v1/units/{code}/report`.
pub(super) async fn report(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let period: Period = match q.period.as_deref() {
        Some(p) => p.parse().map_err(ApiError::BadRequest)?,
        None => s
            .today()
            .year()
            .to_string()
            .parse()
            .map_err(ApiError::BadRequest)?,
    };
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv" | "xlsx") {
        return Err(ApiError::BadRequest(format!(
            "unknown format `{format}`; use json, csv or xlsx"
        )));
    }
    let table = q.table.as_deref().unwrap_or("indicators");
    if !matches!(table, "indicators" | "alerts") {
        return Err(ApiError::BadRequest(format!(
            "unknown table `{table}`; use indicators or alerts"
        )));
    }
    let report = period_report(&s.store, &s.units, &s.targets, &code, period, Utc::now())
        .await
        .map_err(|e| match e {
            ReportError::UnknownUnit(_) => ApiError::NotFound(e.to_string()),
            ReportError::Store(e) => e.into(),
        })?;
    match (format, table) {
        ("csv", "alerts") => Ok(file(
            &report,
            report.alerts_csv(),
            "text/csv; charset=utf-8",
            "alerts.csv",
        )),
        ("csv", _) => Ok(file(
            &report,
            report.rows_csv(),
            "text/csv; charset=utf-8",
            "csv",
        )),
        ("xlsx", _) => {
            let bytes = report.xlsx().map_err(|e| {
                tracing::error!(error = %e, "cannot write a report workbook");
                ApiError::Internal
            })?;
            Ok(file(&report, bytes, XLSX, "xlsx"))
        }
        _ => answer(&report),
    }
}
