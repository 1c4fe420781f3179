//! The report a reform office hands in: for a unit (a commune, or a parent
//! with its communes) and a period (a month, a quarter, a year or a date
//! range), the indicator table (numerators, denominators, rates, targets,
//! met or missed) and the period's alerts; as JSON (the API's answer), CSV
//! and XLSX, with Vietnamese headers and English beside them. The same
//! [`PeriodReport`] feeds every format, so the files hold exactly what the
//! API answers.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_xlsxwriter::{Format, Workbook, XlsxError};
use serde::{Deserialize, Serialize};

use crate::domain::time::{local_date, parse_day};
use crate::domain::{DayCounters, Indicator, Rule, Standing, Targets, UnitKind, Units};
use crate::store::{Store, StoreError};

/// A reporting period: local days `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    /// As asked: `2026`, `2026-Q3`, `2026-07`, or `FROM..TO`.
    pub label: String,
    pub from: NaiveDate,
    /// The first day after the period.
    pub to: NaiveDate,
}

impl FromStr for Period {
    type Err = String;

    /// `YYYY` (a year), `YYYY-Qn` (a quarter), `YYYY-MM` (a month), or
    /// `YYYY-MM-DD..YYYY-MM-DD` (a range, TO excluded).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "period `{s}`: use a year (2026), a quarter (2026-Q3), a month (2026-07) \
                 or FROM..TO (dates, TO excluded)"
            )
        };
        let year = |y: &str| {
            (y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
                .then(|| y.parse::<i32>().ok())
                .flatten()
                .filter(|y| *y >= 1)
        };
        let month_start = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1);
        let (from, to) = if let Some((a, b)) = s.split_once("..") {
            let (from, to) = (parse_day(a).ok_or_else(bad)?, parse_day(b).ok_or_else(bad)?);
            if from >= to {
                return Err(format!("period `{s}` is empty: FROM must be before TO"));
            }
            (from, to)
        } else if let Some(y) = year(s) {
            (
                month_start(y, 1).ok_or_else(bad)?,
                month_start(y + 1, 1).ok_or_else(bad)?,
            )
        } else if let Some((y, q)) = s.split_once("-Q") {
            let y = year(y).ok_or_else(bad)?;
            let q: u32 = match q {
                "1" | "2" | "3" | "4" => q.parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            let from = month_start(y, 3 * q - 2).ok_or_else(bad)?;
            let to = if q == 4 {
                month_start(y + 1, 1)
            } else {
                month_start(y, 3 * q + 1)
            };
            (from, to.ok_or_else(bad)?)
        } else if let Some((y, m)) = s.split_once('-') {
            let y = year(y).ok_or_else(bad)?;
            let m: u32 = (m.len() == 2)
                .then(|| m.parse().ok())
                .flatten()
                .filter(|m| (1..=12).contains(m))
                .ok_or_else(bad)?;
            let from = month_start(y, m).ok_or_else(bad)?;
            let to = if m == 12 {
                month_start(y + 1, 1)
            } else {
                month_start(y, m + 1)
            };
            (from, to.ok_or_else(bad)?)
        } else {
            return Err(bad());
        };
        Ok(Period {
            label: s.to_string(),
            from,
            to,
        })
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// Whether an indicator met its target over the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Met,
    Missed,
    TooFewCases,
    NoData,
}

impl Outcome {
    fn of(standing: Standing) -> Outcome {
        match standing {
            Standing::Met => Outcome::Met,
            Standing::Breached => Outcome::Missed,
            Standing::TooFewCases => Outcome::TooFewCases,
            Standing::NoData => Outcome::NoData,
        }
    }

    /// As the files show it: Vietnamese, English beside it.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Met => "Đạt (met)",
            Outcome::Missed => "Không đạt (missed)",
            Outcome::TooFewCases => "Chưa đủ mẫu (too few cases)",
            Outcome::NoData => "Chưa có số liệu (no data)",
        }
    }
}

/// The unit a report is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportUnit {
    pub code: String,
    pub name: String,
    pub kind: UnitKind,
}

/// One line of the indicator table: a commune's indicator against its own
/// target, or the unit's roll-up (its communes summed) against the default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    pub unit_code: String,
    pub unit_name: String,
    /// `commune`, or `rollup` for the unit's communes summed.
    pub level: &'static str,
    pub indicator: Indicator,
    pub label_vi: &'static str,
    pub label_en: &'static str,
    pub numerator: i64,
    pub denominator: i64,
    /// 0 to 1; `None` without a denominator.
    pub rate: Option<f64>,
    pub comparator: &'static str,
    /// 0 to 100.
    pub target_percent: f64,
    pub min_sample: i64,
    pub outcome: Outcome,
}

/// An alert published for one of the report's communes in the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportAlert {
    pub alert_id: String,
    pub event_type: String,
    pub commune_code: String,
    pub commune_name: String,
    pub indicator: String,
    pub window: String,
    pub value: Option<f64>,
    pub numerator: i64,
    pub denominator: i64,
    pub evaluated_at: DateTime<Utc>,
}

/// The report of a unit over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodReport {
    pub unit: ReportUnit,
    pub period: Period,
    pub generated_at: DateTime<Utc>,
    /// Each commune's indicators in configuration order, then the roll-up
    /// (for a parent unit).
    pub rows: Vec<ReportRow>,
    /// Oldest first.
    pub alerts: Vec<ReportAlert>,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("unknown unit `{0}`")]
    UnknownUnit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn row(
    unit_code: &str,
    unit_name: &str,
    level: &'static str,
    indicator: Indicator,
    rule: Rule,
    counters: &DayCounters,
) -> ReportRow {
    let ratio = indicator.ratio(counters);
    ReportRow {
        unit_code: unit_code.to_string(),
        unit_name: unit_name.to_string(),
        level,
        indicator,
        label_vi: indicator.label_vi(),
        label_en: indicator.label_en(),
        numerator: ratio.numerator,
        denominator: ratio.denominator,
        rate: ratio.rate(),
        comparator: rule.target.comparator.symbol(),
        target_percent: rule.target.percent(),
        min_sample: rule.min_sample,
        outcome: Outcome::of(rule.standing(ratio)),
    }
}

/// The report of unit `code` over `period`, from the store.
pub async fn period_report(
    store: &Store,
    units: &Units,
    targets: &Targets,
    code: &str,
    period: Period,
    generated_at: DateTime<Utc>,
) -> Result<PeriodReport, ReportError> {
    let latest = units
        .get(code)
        .ok_or_else(|| ReportError::UnknownUnit(code.to_string()))?;
    // In the units that stood at the period's end (a unit that had ended by
    // then: in those of its last day), an old commune's counters counted in
    // the unit it became (docs/UNITS.md).
    let end = period.to.pred_opt().unwrap_or(period.to);
    let as_of = match latest.valid_to {
        Some(to) if to < end => to,
        _ => end,
    };
    let structure = units.structure(as_of);
    let unit = structure.unit(units, code).unwrap_or(latest);
    let communes: Vec<_> = if unit.kind.receives_cases() {
        vec![unit]
    } else {
        structure.communes_under(units, code).collect()
    };
    let mut sums: std::collections::HashMap<String, DayCounters> = std::collections::HashMap::new();
    for (lo, hi) in units.pieces(period.from, period.to) {
        for (c, counters) in store.window_sums(lo, hi).await? {
            if let Some(target) = structure.attribute(units, &c, lo) {
                *sums.entry(target.to_string()).or_default() += counters;
            }
        }
    }
    let mut rows = Vec::new();
    let mut total = DayCounters::default();
    for c in &communes {
        let counters = sums.get(c.code.as_str()).copied().unwrap_or_default();
        total += counters;
        for &i in Indicator::ALL {
            let rule = targets.rule(&c.code, i);
            rows.push(row(c.code.as_str(), &c.name, "commune", i, rule, &counters));
        }
    }
    if !unit.kind.receives_cases() {
        for &i in Indicator::ALL {
            let rule = targets.default_rule(i);
            rows.push(row(
                unit.code.as_str(),
                &unit.name,
                "rollup",
                i,
                rule,
                &total,
            ));
        }
    }
    let mut alerts: Vec<ReportAlert> = store
        .all_alerts()
        .await?
        .iter()
        .filter_map(|payload| serde_json::from_str::<ReportAlert>(payload).ok())
        .filter(|a| {
            let day = local_date(a.evaluated_at);
            day >= period.from
                && day < period.to
                && communes.iter().any(|c| c.code.as_str() == a.commune_code)
        })
        .collect();
    alerts.sort_by(|a, b| {
        a.evaluated_at
            .cmp(&b.evaluated_at)
            .then(a.alert_id.cmp(&b.alert_id))
    });
    Ok(PeriodReport {
        unit: ReportUnit {
            code: unit.code.to_string(),
            name: unit.name.clone(),
            kind: unit.kind,
        },
        period,
        generated_at,
        rows,
        alerts,
    })
}

/// The indicator table's columns, Vietnamese with English beside.
pub const ROW_HEADERS: [&str; 12] = [
    "Mã đơn vị (unit code)",
    "Tên đơn vị (unit name)",
    "Cấp (level)",
    "Chỉ số (indicator)",
    "Indicator",
    "Tử số (numerator)",
    "Mẫu số (denominator)",
    "Tỷ lệ (rate)",
    "So sánh (comparator)",
    "Mục tiêu (target)",
    "Mẫu tối thiểu (minimum sample)",
    "Kết quả (result)",
];

/// The alert table's columns.
pub const ALERT_HEADERS: [&str; 10] = [
    "Thời điểm (evaluated at, UTC)",
    "Loại (kind)",
    "Mã xã (commune code)",
    "Xã, phường (commune)",
    "Chỉ số (indicator)",
    "Kỳ (window)",
    "Tỷ lệ (rate)",
    "Tử số (numerator)",
    "Mẫu số (denominator)",
    "Mã cảnh báo (alert id)",
];

fn level_label(level: &str) -> &'static str {
    match level {
        "rollup" => "Tổng hợp (roll-up)",
        _ => "Xã, phường (commune)",
    }
}

fn alert_kind(event_type: &str) -> String {
    match event_type {
        "indicator.breached" => "Không đạt (breached)".into(),
        "indicator.recovered" => "Đạt lại (recovered)".into(),
        "indicator.at_risk" => "Có nguy cơ không đạt (at risk)".into(),
        "indicator.at_risk_cleared" => "Hết nguy cơ (risk cleared)".into(),
        other => other.into(),
    }
}

/// A rate as the CSV shows it: a percentage, two decimals.
fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.2}", r * 100.0))
        .unwrap_or_default()
}

impl PeriodReport {
    /// The indicator table as CSV (UTF-8 with a byte-order mark, so that a
    /// spreadsheet reads the Vietnamese; rates and targets in percent).
    pub fn rows_csv(&self) -> Vec<u8> {
        let mut out = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
        let mut headers = ROW_HEADERS.map(String::from);
        headers[7] = "Tỷ lệ % (rate %)".into();
        headers[9] = "Mục tiêu % (target %)".into();
        let _ = out.write_record(&headers);
        for r in &self.rows {
            let _ = out.write_record([
                r.unit_code.clone(),
                r.unit_name.clone(),
                level_label(r.level).into(),
                r.label_vi.into(),
                r.indicator.id().into(),
                r.numerator.to_string(),
                r.denominator.to_string(),
                percent(r.rate),
                r.comparator.into(),
                r.target_percent.to_string(),
                r.min_sample.to_string(),
                r.outcome.label().into(),
            ]);
        }
        out.into_inner().unwrap_or_default()
    }

    /// The alerts as CSV.
    pub fn alerts_csv(&self) -> Vec<u8> {
        let mut out = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
        let mut headers = ALERT_HEADERS.map(String::from);
        headers[6] = "Tỷ lệ % (rate %)".into();
        let _ = out.write_record(&headers);
        for a in &self.alerts {
            let _ = out.write_record([
                a.evaluated_at.to_rfc3339(),
                alert_kind(&a.event_type),
                a.commune_code.clone(),
                a.commune_name.clone(),
                a.indicator.clone(),
                a.window.clone(),
                percent(a.value),
                a.numerator.to_string(),
                a.denominator.to_string(),
                a.alert_id.clone(),
            ]);
        }
        out.into_inner().unwrap_or_default()
    }

    /// The workbook: sheet "Chỉ số" (the indicator table under a title
    /// block) and sheet "Cảnh báo" (the period's alerts). Numbers are
    /// numbers, rates and targets percentages.
    pub fn xlsx(&self) -> Result<Vec<u8>, XlsxError> {
        let mut book = Workbook::new();
        let bold = Format::new().set_bold();
        let pct = Format::new().set_num_format("0.00%");
        let date_time = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
        let sheet = book.add_worksheet().set_name("Chỉ số")?;
        sheet.write_string_with_format(
            0,
            0,
            "Báo cáo chỉ số phục vụ người dân (service indicators report)",
            &bold,
        )?;
        let last = self.period.to.pred_opt().unwrap_or(self.period.to);
        for (r, (k, v)) in [
            (
                "Đơn vị (unit)",
                format!("{} ({})", self.unit.name, self.unit.code),
            ),
            (
                "Kỳ báo cáo (period)",
                format!("{}: {} – {}", self.period.label, self.period.from, last),
            ),
            (
                "Lập lúc (generated at, UTC)",
                self.generated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            sheet.write_string(r as u32 + 1, 0, k)?;
            sheet.write_string(r as u32 + 1, 1, v)?;
        }
        let head = ROW_ONE_BASED_HEADER_ROW - 1;
        for (c, h) in ROW_HEADERS.iter().enumerate() {
            sheet.write_string_with_format(head, c as u16, *h, &bold)?;
        }
        for (n, r) in self.rows.iter().enumerate() {
            let y = head + 1 + n as u32;
            sheet.write_string(y, 0, &r.unit_code)?;
            sheet.write_string(y, 1, &r.unit_name)?;
            sheet.write_string(y, 2, level_label(r.level))?;
            sheet.write_string(y, 3, r.label_vi)?;
            sheet.write_string(y, 4, r.indicator.id())?;
            sheet.write_number(y, 5, r.numerator as f64)?;
            sheet.write_number(y, 6, r.denominator as f64)?;
            if let Some(rate) = r.rate {
                sheet.write_number_with_format(y, 7, rate, &pct)?;
            }
            sheet.write_string(y, 8, r.comparator)?;
            sheet.write_number_with_format(y, 9, r.target_percent / 100.0, &pct)?;
            sheet.write_number(y, 10, r.min_sample as f64)?;
            sheet.write_string(y, 11, r.outcome.label())?;
        }
        sheet.set_column_width(1, 24)?;
        sheet.set_column_width(3, 34)?;
        sheet.set_column_width(11, 26)?;
        let alerts = book.add_worksheet().set_name("Cảnh báo")?;
        for (c, h) in ALERT_HEADERS.iter().enumerate() {
            alerts.write_string_with_format(0, c as u16, *h, &bold)?;
        }
        for (n, a) in self.alerts.iter().enumerate() {
            let y = 1 + n as u32;
            alerts.write_datetime_with_format(y, 0, a.evaluated_at.naive_utc(), &date_time)?;
            alerts.write_string(y, 1, alert_kind(&a.event_type))?;
            alerts.write_string(y, 2, &a.commune_code)?;
            alerts.write_string(y, 3, &a.commune_name)?;
            alerts.write_string(y, 4, &a.indicator)?;
            alerts.write_string(y, 5, &a.window)?;
            if let Some(v) = a.value {
                alerts.write_number_with_format(y, 6, v, &pct)?;
            }
            alerts.write_number(y, 7, a.numerator as f64)?;
            alerts.write_number(y, 8, a.denominator as f64)?;
            alerts.write_string(y, 9, &a.alert_id)?;
        }
        alerts.set_column_width(0, 20)?;
        alerts.set_column_width(3, 24)?;
        book.save_to_buffer()
    }

    /// A file name for it: `report-<unit>-<period>.<extension>`.
    pub fn file_name(&self, extension: &str) -> String {
        let period: String = self
            .period
            .label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("report-{}-{period}.{extension}", self.unit.code)
    }
}

/// A format of `cchc report` beside the terminal table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Json,
    Csv,
    Xlsx,
}

/// `cchc report --format json|csv|xlsx --period P --unit U [--output F]`:
/// the report from the configured store, written to `output` (default: the
/// standard output for JSON and CSV, `report-<unit>-<period>.xlsx` for
/// XLSX). Returns what to print.
pub async fn write_report(
    settings: &crate::config::Settings,
    unit: &str,
    period: Period,
    format: FileFormat,
    output: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let store = Store::connect(&settings.database.url, 2, &settings.kafka.topic).await?;
    let report = period_report(
        &store,
        &settings.units,
        &settings.targets,
        unit,
        period,
        Utc::now(),
    )
    .await
    .map_err(|e| match e {
        ReportError::UnknownUnit(code) => anyhow::anyhow!(
            "{}: unknown unit `{code}` (units: {})",
            settings.file.display(),
            settings
                .units
                .iter()
                .map(|u| u.code.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ReportError::Store(e) => e.into(),
    })?;
    let (bytes, extension) = match format {
        FileFormat::Json => (serde_json::to_vec_pretty(&report)?, "json"),
        FileFormat::Csv => (report.rows_csv(), "csv"),
        FileFormat::Xlsx => (report.xlsx()?, "xlsx"),
    };
    let file = match (output, format) {
        (Some(file), _) => file.to_path_buf(),
        (None, FileFormat::Xlsx) => report.file_name(extension).into(),
        (None, _) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
    };
    std::fs::write(&file, &bytes).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(format!(
        "{}: {} {}, {} rows, {} alerts\n",
        file.display(),
        report.unit.name,
        report.period,
        report.rows.len(),
        report.alerts.len()
    ))
}

/// The 1-based spreadsheet row of the indicator table's header (the title
/// block is above it).
pub const ROW_ONE_BASED_HEADER_ROW: u32 = 6;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (NaiveDate, NaiveDate) {
        let period: Period = s.parse().unwrap();
        (period.from, period.to)
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn a_period_is_a_year_a_quarter_a_month_or_a_range() {
        assert_eq!(p("2026"), (d(2026, 1, 1), d(2027, 1, 1)));
        assert_eq!(p("2026-Q1"), (d(2026, 1, 1), d(2026, 4, 1)));
        assert_eq!(p("2026-Q3"), (d(2026, 7, 1), d(2026, 10, 1)));
        assert_eq!(p("2026-Q4"), (d(2026, 10, 1), d(2027, 1, 1)));
        assert_eq!(p("2026-02"), (d(2026, 2, 1), d(2026, 3, 1)));
        assert_eq!(p("2026-12"), (d(2026, 12, 1), d(2027, 1, 1)));
        assert_eq!(p("2026-03-15..2026-04-02"), (d(2026, 3, 15), d(2026, 4, 2)));
        for bad in [
            "",
            "26",
            "2026-Q5",
            "2026-Q0",
            "2026-13",
            "2026-1",
            "2026-00",
            "Q3",
            "0000",
            "2026-04-02..2026-03-15",
            "2026-03-15..2026-03-15",
            "2026-02-30..2026-03-01",
            "2026-q3",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }
}
