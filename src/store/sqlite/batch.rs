//! One batch's transaction in SQLite ([`BatchTx`]). Rows are written and
//! read many to a statement ([`chunks`]): each statement is a trip to
//! sqlx's SQLite worker thread, and one statement per row spent most of a
//! batch's time on those trips. Sets of communes are bound as one JSON
//! array (`json_each`).

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::super::codec::{
    encode_document, overdue_range, BreachRow, CaseRow, DocumentRow, KeyedCaseRow, LoadedRows,
    SumRow, CASE_COLUMNS, CASE_WRITTEN, COUNTER_COLUMNS, DOCUMENT_COLUMNS, INSERT_CASES,
    REPLACE_CASE, SUMS,
};
use super::super::{
    stored_already, BatchKeys, BatchTx, Carrier, Committed, DeadLetter, PartitionWrite, Position,
    StoreError,
};
use crate::domain::{
    Alert, BreachState, CaseKey, CaseState, DayCounters, DayKey, DocumentKey, DocumentState, Fold,
    StateKey, Units,
};

/// A batch transaction on a SQLite store (see [`BatchTx`]).
pub struct SqliteBatch {
    pub(super) tx: Transaction<'static, Sqlite>,
    pub(super) topic: String,
}

/// Rows per statement, largest first: a batch's rows take few statements,
/// and only these few forms are prepared (sqlx caches each statement). 256
/// rows of the widest table (cases, 23 columns) stay well under SQLite's
/// 32,766 parameters.
const STATEMENT_ROWS: [usize; 4] = [256, 32, 4, 1];

/// `rows` split into runs of [`STATEMENT_ROWS`] sizes, largest first.
pub(super) fn chunks<T>(rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    for size in STATEMENT_ROWS {
        while rest.len() >= size {
            let (head, tail) = rest.split_at(size);
            out.push(head);
            rest = tail;
        }
    }
    out
}

/// `(?, ?), (?, ?)`: `rows` tuples of `columns` parameters, bound in order.
pub(super) fn tuples(rows: usize, columns: usize) -> String {
    let one = format!("({})", vec!["?"; columns].join(", "));
    vec![one; rows].join(", ")
}

/// The stored rows of `keys` in `table` (the missing have none), keyed by
/// `commune` and `id`, a statement per [`chunks`] run. The keys come first
/// (`CROSS JOIN` keeps that order): one index probe each.
async fn by_key<'k, K, R>(
    conn: &mut SqliteConnection,
    keys: &'k [K],
    (columns, table, id): (&str, &str, &str),
    key: impl Fn(&'k K) -> (&'k str, &'k str),
) -> Result<Vec<R>, StoreError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let mut rows = Vec::with_capacity(keys.len());
    for run in chunks(keys) {
        let sql = format!(
            "SELECT {columns} FROM (VALUES {}) AS k
             CROSS JOIN {table} ON {table}.commune = k.column1 AND {table}.{id} = k.column2",
            tuples(run.len(), 2)
        );
        let mut query = sqlx::query_as(&sql);
        for k in run {
            let (commune, id) = key(k);
            query = query.bind(commune).bind(id);
        }
        rows.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

/// The stored cases of `keys`.
async fn cases_by_key(
    conn: &mut SqliteConnection,
    keys: &[CaseKey],
) -> Result<Vec<KeyedCaseRow>, StoreError> {
    by_key(conn, keys, (CASE_COLUMNS, "cases", "case_id"), |k| {
        (k.commune.as_str(), k.case_id.as_str())
    })
    .await
}

/// The stored documents of `keys`.
async fn documents_by_key(
    conn: &mut SqliteConnection,
    keys: &[DocumentKey],
) -> Result<Vec<DocumentRow>, StoreError> {
    by_key(
        conn,
        keys,
        (DOCUMENT_COLUMNS, "documents", "document_id"),
        |k| (k.commune.as_str(), k.document_id.as_str()),
    )
    .await
}

/// Day counter changes, added to the stored rows.
fn add_counters_sql(rows: usize) -> String {
    let sets: Vec<String> = DayCounters::NAMES
        .iter()
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO day_counters (commune, day, {cols}) VALUES {values}
         ON CONFLICT (commune, day) DO UPDATE SET {sets}",
        cols = *COUNTER_COLUMNS,
        values = tuples(rows, 2 + DayCounters::COUNT),
        sets = sets.join(", "),
    )
}

type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// One case row's parameters, in `write_cases`' column order.
fn bind_case<'q>(
    query: SqliteQuery<'q>,
    partition: i32,
    key: &'q CaseKey,
    state: &'q CaseState,
) -> SqliteQuery<'q> {
    let r = CaseRow::encode(state);
    query
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
        .bind(r.received_by)
        .bind(r.closing_by)
        .bind(r.rating_by)
        .bind(r.late)
        .bind(r.applied)
}

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

    /// The transaction holds SQLite's one write lock (the one writing
    /// connection): nothing else writes until it ends, so nothing needs
    /// locking.
    async fn load(
        &mut self,
        units: &Units,
        partition: i32,
        claim_clock: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        keys: &BatchKeys<'_>,
    ) -> Result<Fold, StoreError> {
        let mut rows = LoadedRows {
            cases: cases_by_key(&mut self.tx, keys.cases).await?,
            ..LoadedRows::default()
        };
        if let Some((from, to)) = overdue_range(claim_clock, now) {
            rows.overdue = sqlx::query_as(&format!(
                "SELECT {CASE_COLUMNS} FROM cases
                 WHERE partition = ?1 AND (?2 IS NULL OR open_due >= ?2) AND open_due < ?3"
            ))
            .bind(partition)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *self.tx)
            .await?;
        }
        rows.documents = documents_by_key(&mut self.tx, keys.documents).await?;
        // Ids applied before they were kept with their case or document.
        for id in rows.older_ids(keys.events) {
            let seen: Option<String> =
                sqlx::query_scalar("SELECT event_id FROM seen_events WHERE event_id = ?1")
                    .bind(id)
                    .fetch_optional(&mut *self.tx)
                    .await?;
            rows.seen.extend(seen);
        }
        rows.into_fold(units, claim_clock, keys)
    }

    async fn add_counters(&mut self, deltas: &[(DayKey, DayCounters)]) -> Result<(), StoreError> {
        let deltas: Vec<_> = deltas.iter().filter(|(_, c)| !c.is_zero()).collect();
        for run in chunks(&deltas) {
            let sql = add_counters_sql(run.len());
            let mut query = sqlx::query(&sql);
            for ((commune, day), c) in run.iter().copied() {
                query = query.bind(commune.as_str()).bind(day);
                for value in c.values() {
                    query = query.bind(value);
                }
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
        let (insert, update) = (INSERT_CASES.as_str(), REPLACE_CASE.as_str());
        for (rows, conflict) in [(stored, update), (new, "")] {
            for run in chunks(rows) {
                let sql = format!(
                    "{insert} VALUES {} {conflict}",
                    tuples(run.len(), 2 + CASE_WRITTEN.len())
                );
                let mut query = sqlx::query(&sql);
                for (key, state) in run {
                    query = bind_case(query, partition, key, state);
                }
                query
                    .execute(&mut *self.tx)
                    .await
                    .map_err(|e| stored_already(e, partition, "a case"))?;
            }
        }
        Ok(())
    }

    async fn write_documents(
        &mut self,
        partition: i32,
        stored: &[(DocumentKey, DocumentState)],
        new: &[(DocumentKey, DocumentState)],
    ) -> Result<(), StoreError> {
        let insert =
            "INSERT INTO documents (commune, document_id, signed_at, digital, applied) VALUES";
        let update = "ON CONFLICT (commune, document_id) DO UPDATE SET
               signed_at = excluded.signed_at, digital = excluded.digital, applied = excluded.applied";
        for (rows, conflict) in [(stored, update), (new, "")] {
            for run in chunks(rows) {
                let sql = format!("{insert} {} {conflict}", tuples(run.len(), 5));
                let mut query = sqlx::query(&sql);
                for (key, doc) in run {
                    let (at, digital, applied) = encode_document(doc);
                    query = query
                        .bind(key.commune.as_str())
                        .bind(&key.document_id)
                        .bind(at)
                        .bind(digital)
                        .bind(applied);
                }
                query
                    .execute(&mut *self.tx)
                    .await
                    .map_err(|e| stored_already(e, partition, "a document"))?;
            }
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
        for run in chunks(communes) {
            let sql = format!(
                "INSERT INTO commune_partitions (commune, partition) VALUES {}
                 ON CONFLICT (commune) DO UPDATE SET partition = excluded.partition",
                tuples(run.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for commune in run {
                query = query.bind(commune).bind(partition);
            }
            query.execute(&mut *self.tx).await?;
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
        for run in chunks(states) {
            let sql = format!(
                "INSERT INTO breach_states (commune, indicator, \"window\", in_breach, transitions, at_risk, risk_transitions)
                 VALUES {}
                 ON CONFLICT (commune, indicator, \"window\") DO UPDATE
                   SET in_breach = excluded.in_breach, transitions = excluded.transitions,
                       at_risk = excluded.at_risk, risk_transitions = excluded.risk_transitions",
                tuples(run.len(), 7)
            );
            let mut query = sqlx::query(&sql);
            for ((commune, indicator, window), state) in run {
                query = query
                    .bind(commune)
                    .bind(indicator.id())
                    .bind(window)
                    .bind(state.in_breach)
                    .bind(state.transitions)
                    .bind(state.at_risk)
                    .bind(state.risk_transitions);
            }
            query.execute(&mut *self.tx).await?;
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

    async fn commit(self) -> Result<Committed, StoreError> {
        self.tx.commit().await?;
        // Every batch reads its cases: none is remembered.
        Ok(Committed::default())
    }
}

#[cfg(test)]
mod tests {
    use super::{chunks, tuples, STATEMENT_ROWS};

    #[test]
    fn rows_go_in_few_statements_of_few_sizes_and_in_order() {
        for n in [0, 1, 3, 4, 31, 32, 255, 256, 257, 300, 1_000, 10_000] {
            let rows: Vec<usize> = (0..n).collect();
            let runs = chunks(&rows);
            assert_eq!(runs.concat(), rows, "{n} rows");
            assert!(runs.iter().all(|r| STATEMENT_ROWS.contains(&r.len())));
            // At most 7 statements of each smaller size.
            assert!(
                runs.len() <= n / 256 + 7 * 3,
                "{n} rows: {} runs",
                runs.len()
            );
        }
        assert_eq!(tuples(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
