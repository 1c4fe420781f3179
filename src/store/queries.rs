//! Read queries for the HTTP API and the operator commands. The SQL is
//! portable (numbered parameters, `CAST`), so each query is written once and
//! run on whichever pool the store has.

use chrono::{DateTime, NaiveDate, Utc};

use super::codec::{SumRow, SUMS};
use super::{Store, StoreError};
use crate::domain::DayCounters;

/// An open case past its due date.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct OverdueCase {
    pub case_id: String,
    /// The procedure (MaTTHC); `None` for a case stored before it was kept.
    pub procedure_code: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
    pub due_date: NaiveDate,
}

/// A (commune, indicator, window) in breach now, with the alert that
/// announced it (absent only if the outbox lost it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreachNow {
    pub commune: String,
    pub indicator: String,
    pub window: String,
    /// The breached alert's id: `<commune>.<indicator>.<window>.<n>`.
    pub alert_id: String,
    /// The alert as published (docs/schemas/indicator-alert.v1.json).
    pub alert: Option<String>,
}

/// An open case coming due.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ComingDueCase {
    pub commune: String,
    pub case_id: String,
    /// The procedure (MaTTHC); `None` for a case stored before it was kept.
    pub procedure_code: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
    pub due_date: NaiveDate,
}

/// What the projections reflect.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Freshness {
    /// The latest `occurred_at` applied.
    pub event_time: Option<DateTime<Utc>>,
    /// When a batch was last committed.
    pub committed_at: Option<DateTime<Utc>>,
    /// The pipeline clock the projections reflect.
    pub clock: Option<DateTime<Utc>>,
}

/// A dead letter, for operators.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub record_key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub reason_code: String,
    pub reason: String,
    pub kept_at: DateTime<Utc>,
    pub resent_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Each commune's counters summed over the local days `[from, to)`.
    pub async fn window_sums(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(String, DayCounters)>, StoreError> {
        let sql = format!(
            "SELECT commune AS key, {sums} FROM day_counters WHERE day >= $1 AND day < $2 GROUP BY commune",
            sums = *SUMS
        );
        let rows: Vec<SumRow> = on_pool!(read self, |pool| sqlx::query_as(&sql)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(SumRow::into_pair).collect())
    }

    /// One commune's counters summed over the local days `[from, to)`.
    pub async fn commune_sums(
        &self,
        commune: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<DayCounters, StoreError> {
        let sql = format!(
            "SELECT commune AS key, {sums} FROM day_counters
             WHERE commune = $1 AND day >= $2 AND day < $3 GROUP BY commune",
            sums = *SUMS
        );
        let row: Option<SumRow> = on_pool!(read self, |pool| sqlx::query_as(&sql)
            .bind(commune)
            .bind(from)
            .bind(to)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(|r| r.counts.0).unwrap_or_default())
    }

    /// One commune's counters per local day in `[from, to)`, days without
    /// counters left out.
    pub async fn daily(
        &self,
        commune: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, DayCounters)>, StoreError> {
        let sql = format!(
            "SELECT CAST(day AS TEXT) AS key, {sums} FROM day_counters
             WHERE commune = $1 AND day >= $2 AND day < $3 GROUP BY day ORDER BY day",
            sums = *SUMS
        );
        let rows: Vec<SumRow> = on_pool!(read self, |pool| sqlx::query_as(&sql)
            .bind(commune)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|r| {
                let day = NaiveDate::parse_from_str(&r.key, "%Y-%m-%d")
                    .map_err(|e| StoreError::Corrupt(format!("stored day `{}`: {e}", r.key)))?;
                Ok((day, r.counts.0))
            })
            .collect()
    }

    /// Open cases of a commune whose due date is before `today`, oldest due
    /// first, after the case id `after` (for paging).
    pub async fn overdue_cases(
        &self,
        commune: &str,
        today: NaiveDate,
        after: Option<(NaiveDate, String)>,
        limit: i64,
    ) -> Result<Vec<OverdueCase>, StoreError> {
        let (after_due, after_id) = after
            .map(|(d, c)| (Some(d), c))
            .unwrap_or((None, String::new()));
        let sql = "SELECT case_id, received_procedure AS procedure_code, received_at, open_due AS due_date FROM cases
                   WHERE commune = $1 AND open_due IS NOT NULL AND open_due < $2
                     AND ($3 IS NULL OR open_due > $3 OR (open_due = $3 AND case_id > $4))
                   ORDER BY open_due, case_id LIMIT $5";
        let sql = match self {
            Store::Postgres(_) => sql.replace("$3 IS NULL", "$3::date IS NULL"),
            Store::Sqlite(_) => sql.to_string(),
        };
        Ok(on_pool!(read self, |pool| sqlx::query_as(&sql)
            .bind(commune)
            .bind(today)
            .bind(after_due)
            .bind(&after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// The open cases due on the local days `[from, to)`, of one commune
    /// or (`None`) of every commune, oldest due first.
    pub async fn cases_coming_due(
        &self,
        commune: Option<&str>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<ComingDueCase>, StoreError> {
        let sql = "SELECT commune, case_id, received_procedure AS procedure_code, received_at, open_due AS due_date FROM cases
                   WHERE open_due >= $1 AND open_due < $2 AND ($3 IS NULL OR commune = $3)
                   ORDER BY open_due, commune, case_id";
        let sql = match self {
            Store::Postgres(_) => sql.replace("$3 IS NULL", "$3::text IS NULL"),
            Store::Sqlite(_) => sql.to_string(),
        };
        Ok(on_pool!(read self, |pool| sqlx::query_as(&sql)
            .bind(from)
            .bind(to)
            .bind(commune)
            .fetch_all(pool)
            .await?))
    }

    /// How many open cases of a commune are due on the local days
    /// `[from, to)`.
    pub async fn open_cases_due(
        &self,
        commune: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<i64, StoreError> {
        let sql =
            "SELECT count(*) FROM cases WHERE commune = $1 AND open_due >= $2 AND open_due < $3";
        Ok(on_pool!(read self, |pool| sqlx::query_scalar(sql)
            .bind(commune)
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await?))
    }

    /// How many open cases of each commune are due on the local days
    /// `[from, to)` (communes without any left out).
    pub async fn open_cases_due_by_commune(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT commune, count(*) FROM cases WHERE open_due >= $1 AND open_due < $2 GROUP BY commune";
        Ok(on_pool!(read self, |pool| sqlx::query_as(sql)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?))
    }

    /// What the projections of this topic reflect.
    pub async fn freshness(&self) -> Result<Freshness, StoreError> {
        let sql = "SELECT max(event_time) AS event_time, max(updated_at) AS committed_at, max(clock) AS clock
                   FROM partition_offsets WHERE topic = $1";
        Ok(on_pool!(read self, |pool| sqlx::query_as(sql)
            .bind(self.topic())
            .fetch_one(pool)
            .await?))
    }

    /// Dead letters with an id above `after`, oldest first.
    pub async fn dead_letters(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        let sql = "SELECT id, topic, partition, \"offset\", record_key, value, reason_code, reason, kept_at, resent_at
                   FROM dead_letters WHERE id > $1 ORDER BY id LIMIT $2";
        Ok(on_pool!(read self, |pool| sqlx::query_as(sql)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterRow>, StoreError> {
        let sql = "SELECT id, topic, partition, \"offset\", record_key, value, reason_code, reason, kept_at, resent_at
                   FROM dead_letters WHERE id = $1";
        Ok(on_pool!(read self, |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await?))
    }

    /// Every (commune, indicator, window) in breach now (`risk`: at risk
    /// now), in that order, each with the alert that announced it.
    pub async fn breaches_now(&self, risk: bool) -> Result<Vec<BreachNow>, StoreError> {
        let (flag, count, infix) = if risk {
            ("at_risk", "risk_transitions", "risk.")
        } else {
            ("in_breach", "transitions", "")
        };
        let sql = format!(
            "SELECT b.commune, b.indicator, b.\"window\", b.{count}, o.payload
             FROM breach_states b
             LEFT JOIN alert_outbox o ON o.alert_id =
                 b.commune || '.' || b.indicator || '.' || b.\"window\" || '.{infix}' || CAST(b.{count} AS TEXT)
             WHERE b.{flag}
             ORDER BY b.commune, b.indicator, b.\"window\""
        );
        let rows: Vec<(String, String, String, i64, Option<String>)> =
            on_pool!(read self, |pool| sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .map(|(commune, indicator, window, n, alert)| BreachNow {
                alert_id: format!("{commune}.{indicator}.{window}.{infix}{n}"),
                commune,
                indicator,
                window,
                alert,
            })
            .collect())
    }

    /// The payloads of every alert decided (in the outbox), oldest first.
    /// Alerts are transitions, a few per commune and indicator a year: the
    /// reports read them whole and keep a period's.
    pub async fn all_alerts(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT payload FROM alert_outbox ORDER BY seq";
        Ok(on_pool!(read self, |pool| sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await?))
    }

    /// The payloads of the latest published alerts, newest first.
    pub async fn recent_alerts(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT payload FROM alert_outbox WHERE published_at IS NOT NULL ORDER BY seq DESC LIMIT $1";
        Ok(on_pool!(read self, |pool| sqlx::query_scalar(sql)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Records that a dead letter was sent through again.
    pub async fn mark_resent(&self, id: i64) -> Result<(), StoreError> {
        let sql = "UPDATE dead_letters SET resent_at = $2 WHERE id = $1";
        on_pool!(write self, |pool| {
            sqlx::query(sql)
                .bind(id)
                .bind(Utc::now())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
