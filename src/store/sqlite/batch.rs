//! One batch's transaction in SQLite ([`BatchTx`]): one prepared statement
//! per row inside the transaction, which is how SQLite is fast; sets of
//! communes are bound as one JSON array (`json_each`), so each read is still
//! one statement.

use std::sync::LazyLock;

use chrono::{NaiveDate, Utc};
use sqlx::{Sqlite, Transaction};

use super::super::codec::{
    encode_document, BreachRow, CaseRow, KeyedCaseRow, SumRow, CASE_COLUMNS, COUNTER_COLUMNS, SUMS,
};
use super::super::{
    stored_already, BatchTx, Carrier, DeadLetter, PartitionWrite, Position, StoreError,
};
use crate::domain::{
    Alert, BreachState, CaseKey, CaseState, DayCounters, DayKey, DocumentKey, DocumentState,
    StateKey,
};

/// A batch transaction on a SQLite store (see [`BatchTx`]).
pub struct SqliteBatch {
    pub(super) tx: Transaction<'static, Sqlite>,
    pub(super) topic: String,
}

/// One day's counter changes, added to the stored row.
static ADD_COUNTERS: LazyLock<String> = LazyLock::new(|| {
    let values: Vec<String> = (0..DayCounters::COUNT)
        .map(|i| format!("?{}", i + 3))
        .collect();
    let sets: Vec<String> = DayCounters::NAMES
        .iter()
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO day_counters (commune, day, {cols}) VALUES (?1, ?2, {values})
         ON CONFLICT (commune, day) DO UPDATE SET {sets}",
        cols = *COUNTER_COLUMNS,
        values = values.join(", "),
        sets = sets.join(", "),
    )
});

/// A set of codes as SQLite reads it with `json_each`.
fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

impl BatchTx for SqliteBatch {
    async fn position(&mut self, partition: i32) -> Result<Option<Position>, StoreError> {
        // The one writing connection serializes claims and commits.
        Ok(sqlx::query_as(
            "SELECT generation, next_offset, clock FROM partition_offsets
             WHERE topic = ?1 AND partition = ?2",
        )
        .bind(&self.topic)
        .bind(partition)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    async fn lock_cases(&mut self, keys: &[CaseKey]) -> Result<Vec<KeyedCaseRow>, StoreError> {
        // The transaction holds SQLite's one write lock: nothing else
        // writes until it ends.
        let mut rows = Vec::with_capacity(keys.len());
        for k in keys {
            let row: Option<KeyedCaseRow> = sqlx::query_as(&format!(
                "SELECT {CASE_COLUMNS} FROM cases WHERE commune = ?1 AND case_id = ?2"
            ))
            .bind(k.commune.as_str())
            .bind(&k.case_id)
            .fetch_optional(&mut *self.tx)
            .await?;
            rows.extend(row);
        }
        Ok(rows)
    }

    async fn add_counters(&mut self, deltas: &[(DayKey, DayCounters)]) -> Result<(), StoreError> {
        for ((commune, day), c) in deltas.iter().filter(|(_, c)| !c.is_zero()) {
            let mut query = sqlx::query(&ADD_COUNTERS).bind(commune.as_str()).bind(day);
            for value in c.values() {
                query = query.bind(value);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// As in PostgreSQL: cases taken as new are plainly inserted, so that
    /// one stored since the batch was loaded is refused.
    async fn write_cases(
        &mut self,
        partition: i32,
        stored: &[(CaseKey, CaseState)],
        new: &[(CaseKey, CaseState)],
    ) -> Result<(), StoreError> {
        // A stored row is updated in place, so that what the row alone
        // knows (`older_ids`) stays.
        let insert = "INSERT INTO cases (commune, case_id, partition, received_at, received_channel, received_level,
                                    received_electronic, received_digitized, received_due, closing_at, closing_kind,
                                    closing_due, closing_outcome, rating_at, rating, rating_score, open_due,
                                    received_procedure, received_by, closing_by, rating_by, late, applied)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                         ?19, ?20, ?21, ?22, ?23)";
        let upsert = format!(
            "{insert} ON CONFLICT (commune, case_id) DO UPDATE SET
               partition = excluded.partition, received_at = excluded.received_at,
               received_channel = excluded.received_channel, received_level = excluded.received_level,
               received_electronic = excluded.received_electronic,
               received_digitized = excluded.received_digitized, received_due = excluded.received_due,
               closing_at = excluded.closing_at, closing_kind = excluded.closing_kind,
               closing_due = excluded.closing_due, closing_outcome = excluded.closing_outcome,
               rating_at = excluded.rating_at, rating = excluded.rating,
               rating_score = excluded.rating_score, open_due = excluded.open_due,
               received_procedure = excluded.received_procedure, received_by = excluded.received_by,
               closing_by = excluded.closing_by, rating_by = excluded.rating_by, late = excluded.late,
               applied = excluded.applied"
        );
        let stored = stored.iter().map(|c| (c, upsert.as_str()));
        for ((key, state), sql) in stored.chain(new.iter().map(|c| (c, insert))) {
            let r = CaseRow::encode(state);
            sqlx::query(sql)
                .bind(key.commune.as_str())
                .bind(&key.case_id)
                .bind(partition)
                .bind(r.received_at)
                .bind(r.received_channel)
                .bind(r.received_level)
                .bind(r.received_electronic)
                .bind(r.received_digitized)
                .bind(r.received_due)
                .bind(r.closing_at)
                .bind(r.closing_kind)
                .bind(r.closing_due)
                .bind(r.closing_outcome)
                .bind(r.rating_at)
                .bind(r.rating)
                .bind(r.rating_score)
                .bind(state.open_due_date())
                .bind(state.procedure_code())
                .bind(r.received_by.as_deref())
                .bind(r.closing_by.as_deref())
                .bind(r.rating_by.as_deref())
                .bind(r.late)
                .bind(r.applied)
                .execute(&mut *self.tx)
                .await
                .map_err(|e| stored_already(e, partition, "a case"))?;
        }
        Ok(())
    }

    async fn write_documents(
        &mut self,
        partition: i32,
        stored: &[(DocumentKey, DocumentState)],
        new: &[(DocumentKey, DocumentState)],
    ) -> Result<(), StoreError> {
        let insert = "INSERT INTO documents (commune, document_id, signed_at, digital, applied)
                      VALUES (?1, ?2, ?3, ?4, ?5)";
        let upsert = format!(
            "{insert} ON CONFLICT (commune, document_id) DO UPDATE SET
               signed_at = excluded.signed_at, digital = excluded.digital, applied = excluded.applied"
        );
        let stored = stored.iter().map(|d| (d, upsert.as_str()));
        for ((key, doc), sql) in stored.chain(new.iter().map(|d| (d, insert))) {
            let (at, digital, applied) = encode_document(doc);
            sqlx::query(sql)
                .bind(key.commune.as_str())
                .bind(&key.document_id)
                .bind(at)
                .bind(digital)
                .bind(applied)
                .execute(&mut *self.tx)
                .await
                .map_err(|e| stored_already(e, partition, "a document"))?;
        }
        Ok(())
    }

    async fn keep_dead_letters(&mut self, dead: &[DeadLetter]) -> Result<(), StoreError> {
        for d in dead {
            sqlx::query(
                "INSERT OR IGNORE INTO dead_letters (topic, partition, \"offset\", record_key, value, reason_code, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(&self.topic)
            .bind(d.partition)
            .bind(d.offset)
            .bind(&d.key)
            .bind(&d.value)
            .bind(d.reason_code)
            .bind(&d.reason)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn note_communes(
        &mut self,
        partition: i32,
        communes: &[String],
    ) -> Result<(), StoreError> {
        for commune in communes {
            sqlx::query(
                "INSERT INTO commune_partitions (commune, partition) VALUES (?1, ?2)
                 ON CONFLICT (commune) DO UPDATE SET partition = excluded.partition",
            )
            .bind(commune)
            .bind(partition)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn communes_of(&mut self, partition: i32) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT commune FROM commune_partitions WHERE partition = ?1")
                .bind(partition)
                .fetch_all(&mut *self.tx)
                .await?,
        )
    }

    async fn window_sums(
        &mut self,
        communes: &[String],
        (from, to): (NaiveDate, NaiveDate),
    ) -> Result<Vec<(String, DayCounters)>, StoreError> {
        let sql = format!(
            "SELECT commune AS key, {sums} FROM day_counters
             WHERE commune IN (SELECT value FROM json_each(?1)) AND day >= ?2 AND day < ?3
             GROUP BY commune",
            sums = *SUMS
        );
        let rows: Vec<SumRow> = sqlx::query_as(&sql)
            .bind(json_list(communes))
            .bind(from)
            .bind(to)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(rows.into_iter().map(SumRow::into_pair).collect())
    }

    async fn carriers(&mut self, communes: &[String]) -> Result<Vec<Carrier>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT c.commune, c.partition, COALESCE(o.caught_up, 1) AS caught_up
             FROM commune_partitions c
             LEFT JOIN partition_offsets o ON o.topic = ?1 AND o.partition = c.partition
             WHERE c.commune IN (SELECT value FROM json_each(?2))",
        )
        .bind(&self.topic)
        .bind(json_list(communes))
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn lock_units(&mut self, _units: &[String]) -> Result<(), StoreError> {
        // One writer at a time: the batch took the database's write lock
        // with its first write, so what it reads now is what others
        // committed.
        Ok(())
    }

    async fn coming_due(
        &mut self,
        partitions: &[i32],
        communes: &[String],
        (from, to): (NaiveDate, NaiveDate),
    ) -> Result<Vec<(String, NaiveDate, i64)>, StoreError> {
        let partitions = serde_json::to_string(partitions).expect("a list of numbers");
        Ok(sqlx::query_as(
            "SELECT commune, open_due, count(*) FROM cases
             WHERE partition IN (SELECT value FROM json_each(?1)) AND open_due >= ?2 AND open_due <= ?3
               AND commune IN (SELECT value FROM json_each(?4))
             GROUP BY commune, open_due",
        )
        .bind(partitions)
        .bind(from)
        .bind(to)
        .bind(json_list(communes))
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn breach_states(
        &mut self,
        communes: &[String],
    ) -> Result<Vec<(StateKey, BreachState)>, StoreError> {
        let rows: Vec<BreachRow> = sqlx::query_as(
            "SELECT commune, indicator, \"window\", in_breach, transitions, at_risk, risk_transitions
             FROM breach_states WHERE commune IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(communes))
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows.into_iter().filter_map(BreachRow::into_state).collect())
    }

    async fn write_breach_states(
        &mut self,
        states: &[(StateKey, BreachState)],
    ) -> Result<(), StoreError> {
        for ((commune, indicator, window), state) in states {
            sqlx::query(
                "INSERT INTO breach_states (commune, indicator, \"window\", in_breach, transitions, at_risk, risk_transitions)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (commune, indicator, \"window\") DO UPDATE
                   SET in_breach = excluded.in_breach, transitions = excluded.transitions,
                       at_risk = excluded.at_risk, risk_transitions = excluded.risk_transitions",
            )
            .bind(commune)
            .bind(indicator.id())
            .bind(window)
            .bind(state.in_breach)
            .bind(state.transitions)
            .bind(state.at_risk)
            .bind(state.risk_transitions)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn add_to_outbox(&mut self, alerts: &[Alert]) -> Result<(), StoreError> {
        for alert in alerts {
            let payload =
                serde_json::to_string(alert).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO alert_outbox (alert_id, commune, payload) VALUES (?1, ?2, ?3)
                 ON CONFLICT (alert_id) DO NOTHING",
            )
            .bind(&alert.alert_id)
            .bind(alert.commune_code.as_str())
            .bind(payload)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn move_position(
        &mut self,
        w: &PartitionWrite,
        evaluated: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE partition_offsets SET next_offset = COALESCE(?3, next_offset),
                    clock = COALESCE(?4, clock),
                    event_time = COALESCE(max(event_time, ?5), ?5, event_time), updated_at = ?6,
                    caught_up = ?7
             WHERE topic = ?1 AND partition = ?2",
        )
        .bind(&self.topic)
        .bind(w.partition)
        .bind(w.next_offset)
        .bind(w.clock)
        .bind(w.event_time)
        .bind(Utc::now())
        .bind(evaluated)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }
}
