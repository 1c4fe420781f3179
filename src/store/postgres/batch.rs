//! One batch's transaction in PostgreSQL ([`BatchTx`]): new rows (event id
//! digests, cases, documents) go in with `COPY`, in key order and without
//! `ON CONFLICT` (a row stored already is a unique violation, which aborts
//! the transaction: [`StoreError::StoredAlready`]); updates bind whole
//! columns as arrays (`UNNEST`), one statement per table.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, NaiveDate, Utc};
use rustc_hash::FxHashMap;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Transaction};
use tracing::instrument;
use uuid::Uuid;

use super::super::codec::{
    encode_document, overdue_range, BreachRow, CaseRow, KeyedCaseRow, LoadedRows, SumRow,
    CASE_COLUMNS, CASE_WRITTEN, COUNTER_COLUMNS, DOCUMENT_COLUMNS, INSERT_CASES, REPLACE_CASE,
    SUMS,
};
use super::super::copy::{Bytes, CopyRows};
use super::super::{
    stored_already, BatchKeys, BatchTx, Carrier, Committed, DeadLetter, PartitionWrite, Position,
    StoreError,
};
use super::cache::{CaseCache, Remember, Writer};
use super::id_digest;
use crate::domain::{
    Alert, BreachState, CaseKey, CaseState, DayCounters, DayKey, DocumentKey, DocumentState, Fold,
    StateKey, Units,
};

/// A batch transaction on a PostgreSQL store (see [`BatchTx`]).
pub struct PgBatch {
    tx: Transaction<'static, Postgres>,
    topic: String,
    /// The cases the store's batches wrote ([`super::cache`]): read instead
    /// of the database, and told what this batch wrote once it commits.
    cache: Arc<CaseCache>,
    /// Set by [`BatchTx::position`]: whose batch this is.
    writer: Option<Writer>,
    /// The batch's cases taken from the cache, with the `xmin` (writing
    /// transaction) their rows must still carry when they are updated.
    remembered: FxHashMap<CaseKey, i64>,
    /// Whether the cases written are to be remembered once committed: not
    /// when the cache is off, or a case was loaded with ids kept outside
    /// its row.
    remember: bool,
    /// [`BatchTx::cases_read`].
    cases_read: usize,
}

/// A partition's stored generation, next offset and clock, and the reading
/// transaction's id.
type PositionRow = (i64, Option<i64>, Option<DateTime<Utc>>, i64);

/// A case's key as (commune, case id).
type CaseRef<'a> = (&'a str, &'a str);

impl PgBatch {
    pub(super) fn new(
        tx: Transaction<'static, Postgres>,
        topic: String,
        cache: Arc<CaseCache>,
    ) -> Self {
        PgBatch {
            tx,
            topic,
            remember: cache.enabled(),
            cache,
            writer: None,
            remembered: FxHashMap::default(),
            cases_read: 0,
        }
    }

    /// The stored rows of `keys` (commune, case id), the query ending with
    /// `tail`.
    async fn cases(
        &mut self,
        keys: &[CaseRef<'_>],
        tail: &str,
    ) -> Result<Vec<KeyedCaseRow>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (communes, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        Ok(sqlx::query_as(&format!(
            "SELECT {CASE_COLUMNS} FROM cases
             WHERE (commune, case_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) {tail}"
        ))
        .bind(&communes)
        .bind(&ids)
        .fetch_all(&mut *self.tx)
        .await?)
    }
}

/// The day counters' upsert: every counter column bound as an array, added
/// to the stored row.
static ADD_COUNTERS: LazyLock<String> = LazyLock::new(|| {
    let arrays: Vec<String> = (0..DayCounters::COUNT)
        .map(|i| format!("${}::int8[]", i + 3))
        .collect();
    let sets: Vec<String> = DayCounters::NAMES
        .iter()
        .map(|c| format!("{c} = d.{c} + EXCLUDED.{c}"))
        .collect();
    format!(
        "INSERT INTO day_counters AS d (commune, day, {cols})
         SELECT * FROM UNNEST($1::text[], $2::date[], {arrays})
         ON CONFLICT (commune, day) DO UPDATE SET {sets}",
        cols = *COUNTER_COLUMNS,
        arrays = arrays.join(", "),
        sets = sets.join(", "),
    )
});

impl BatchTx for PgBatch {
    fn cases_read(&self) -> usize {
        self.cases_read
    }

    async fn position(&mut self, partition: i32) -> Result<Option<Position>, StoreError> {
        let row: Option<PositionRow> = sqlx::query_as(
            "SELECT generation, next_offset, clock, pg_current_xact_id()::text::int8
             FROM partition_offsets WHERE topic = $1 AND partition = $2 FOR UPDATE",
        )
        .bind(&self.topic)
        .bind(partition)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|(generation, next_offset, clock, xid)| {
            self.writer = Some(Writer {
                partition,
                generation,
                xid,
            });
            Position {
                generation,
                next_offset,
                clock,
            }
        }))
    }

    /// The batch's cases are read in two statements: those only this
    /// partition writes plainly, and the shared ones (the batch's and the
    /// overdue ones the clock moves) with `FOR UPDATE`, in key order (every
    /// transaction takes its case locks in one ordered statement, so two
    /// never wait on each other).
    #[instrument(name = "store.load", skip_all, fields(partition, cases = keys.cases.len()), err)]
    async fn load(
        &mut self,
        units: &Units,
        partition: i32,
        claim_clock: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        keys: &BatchKeys<'_>,
    ) -> Result<Fold, StoreError> {
        let BatchKeys {
            cases,
            documents,
            events,
            careful,
        } = *keys;
        let mut rows = LoadedRows::default();
        if let Some((from, to)) = overdue_range(claim_clock, now) {
            rows.overdue = sqlx::query_as(&format!(
                "SELECT {CASE_COLUMNS} FROM cases
                 WHERE partition = $1 AND ($2::date IS NULL OR open_due >= $2) AND open_due < $3"
            ))
            .bind(partition)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *self.tx)
            .await?;
        }
        // The cases this partition wrote under its claim need not be read.
        let hits = match self.writer {
            Some(w) if w.partition == partition => {
                self.cache.get(partition, w.generation, w.xid, cases)
            }
            _ => Vec::new(),
        };
        // The others are read when the batch is careful (or nothing is
        // remembered); else they are taken as new, and the commit's `COPY`
        // fails on one stored already (StoredAlready: folded again, careful).
        let read_all = careful || !self.cache.enabled();
        let mut unread = vec![!read_all; cases.len()];
        for (i, _) in &hits {
            unread[*i] = true;
        }
        let shared = |commune: &str| {
            units
                .commune(commune)
                .is_some_and(|c| units.is_shared_home(c))
        };
        let (mut locked, own): (Vec<CaseRef<'_>>, Vec<CaseRef<'_>>) = cases
            .iter()
            .zip(&unread)
            .filter(|(_, unread)| !**unread)
            .map(|(k, _)| (k.commune.as_str(), k.case_id.as_str()))
            .partition(|(commune, _)| shared(commune));
        // An overdue shared case is read again, locked: its locked row comes
        // first in the working set.
        locked.extend(
            rows.overdue
                .iter()
                .filter(|r| shared(&r.commune))
                .map(|r| (r.commune.as_str(), r.case_id.as_str())),
        );
        let mut cases = self
            .cases(&locked, "ORDER BY commune, case_id FOR UPDATE")
            .await?;
        cases.extend(self.cases(&own, "").await?);
        if careful && self.cache.enabled() {
            self.cases_read = cases.len();
        }
        rows.cases = cases;
        if !documents.is_empty() {
            let communes: Vec<&str> = documents.iter().map(|k| k.commune.as_str()).collect();
            let ids: Vec<&str> = documents.iter().map(|k| k.document_id.as_str()).collect();
            rows.documents = sqlx::query_as(&format!(
                "SELECT {DOCUMENT_COLUMNS} FROM documents
                 WHERE (commune, document_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
            ))
            .bind(&communes)
            .bind(&ids)
            .fetch_all(&mut *self.tx)
            .await?;
        }
        let older = rows.older_ids(events);
        if !older.is_empty() {
            let digests: Vec<Uuid> = older.iter().map(|id| id_digest(id)).collect();
            let stored: HashSet<Uuid> =
                sqlx::query_scalar("SELECT digest FROM seen_event_digests WHERE digest = ANY($1)")
                    .bind(&digests)
                    .fetch_all(&mut *self.tx)
                    .await?
                    .into_iter()
                    .collect();
            rows.seen = older
                .iter()
                .zip(&digests)
                .filter(|(_, d)| stored.contains(d))
                .map(|(id, _)| (*id).to_string())
                .collect();
        }
        if rows.cases.iter().chain(&rows.overdue).any(|r| r.older_ids) {
            // Its ids are partly outside its row: read again every time.
            self.remember = false;
        }
        let mut fold = rows.into_fold(units, claim_clock, keys)?;
        for (i, hit) in hits {
            // A row read (an overdue one) comes first: it is as fresh.
            let key = &keys.cases[i];
            if fold.case(key).is_none() {
                fold.load_case(key.clone(), hit.state);
                self.remembered.insert(key.clone(), hit.xmin);
            }
        }
        Ok(fold)
    }

    async fn add_counters(&mut self, deltas: &[(DayKey, DayCounters)]) -> Result<(), StoreError> {
        let deltas: Vec<_> = deltas.iter().filter(|(_, c)| !c.is_zero()).collect();
        if deltas.is_empty() {
            return Ok(());
        }
        let values: Vec<[i64; DayCounters::COUNT]> =
            deltas.iter().map(|(_, c)| c.values()).collect();
        let mut query = sqlx::query(&ADD_COUNTERS)
            .bind(
                deltas
                    .iter()
                    .map(|((c, _), _)| c.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(deltas.iter().map(|((_, d), _)| *d).collect::<Vec<_>>());
        for i in 0..DayCounters::COUNT {
            query = query.bind(values.iter().map(|v| v[i]).collect::<Vec<i64>>());
        }
        query.execute(&mut *self.tx).await?;
        Ok(())
    }

    async fn write_cases(
        &mut self,
        partition: i32,
        stored: &[(CaseKey, CaseState)],
        new: &[(CaseKey, CaseState)],
    ) -> Result<(), StoreError> {
        if !new.is_empty() {
            copy_new_cases(&mut self.tx, partition, new)
                .await
                .map_err(|e| stored_already(e, partition, "a case"))?;
        }
        let (remembered, read): (Vec<_>, Vec<_>) = stored
            .iter()
            .partition(|(k, _)| self.remembered.contains_key(k));
        if !read.is_empty() {
            upsert_cases(&mut self.tx, partition, &read).await?;
        }
        if !remembered.is_empty() {
            let xmins: Vec<i64> = remembered.iter().map(|(k, _)| self.remembered[k]).collect();
            let updated = update_remembered(&mut self.tx, partition, &remembered, xmins).await?;
            if updated != remembered.len() as u64 {
                // Written since by someone else: fold again from the rows.
                self.cache.clear();
                return Err(StoreError::StoredAlready {
                    partition,
                    what: "a case remembered from an earlier batch",
                });
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
        if !new.is_empty() {
            let mut rows = CopyRows::with_capacity(new.len() * 64);
            for (k, d) in new {
                let (at, digital, applied) = encode_document(d);
                rows.col(k.commune.as_str())
                    .col(k.document_id.as_str())
                    .col(at)
                    .col(digital)
                    .col(Bytes(&applied))
                    .end_row();
            }
            copy_in(
                &mut self.tx,
                "COPY documents (commune, document_id, signed_at, digital, applied) FROM STDIN (FORMAT binary)",
                rows,
            )
            .await
            .map_err(|e| stored_already(e, partition, "a document"))?;
        }
        if stored.is_empty() {
            return Ok(());
        }
        let encoded: Vec<_> = stored.iter().map(|(_, d)| encode_document(d)).collect();
        sqlx::query(
            "INSERT INTO documents AS d (commune, document_id, signed_at, digital, applied)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::bool[], $5::bytea[])
             ON CONFLICT (commune, document_id) DO UPDATE
               SET signed_at = EXCLUDED.signed_at, digital = EXCLUDED.digital, applied = EXCLUDED.applied",
        )
        .bind(stored.iter().map(|(k, _)| k.commune.as_str()).collect::<Vec<_>>())
        .bind(stored.iter().map(|(k, _)| k.document_id.as_str()).collect::<Vec<_>>())
        .bind(encoded.iter().map(|e| e.0).collect::<Vec<_>>())
        .bind(encoded.iter().map(|e| e.1).collect::<Vec<_>>())
        .bind(encoded.iter().map(|e| e.2.as_slice()).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn keep_dead_letters(&mut self, d: &[DeadLetter]) -> Result<(), StoreError> {
        if d.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO dead_letters (topic, partition, \"offset\", record_key, value, reason_code, reason)
             SELECT $1, * FROM UNNEST($2::int4[], $3::int8[], $4::bytea[], $5::bytea[], $6::text[], $7::text[])
             ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
        )
        .bind(&self.topic)
        .bind(d.iter().map(|x| x.partition).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.offset).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.key.clone()).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.value.clone()).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.reason_code).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.reason.clone()).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn note_communes(
        &mut self,
        partition: i32,
        communes: &[String],
    ) -> Result<(), StoreError> {
        if communes.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO commune_partitions (commune, partition) SELECT unnest($1::text[]), $2
             ON CONFLICT (commune) DO UPDATE SET partition = excluded.partition",
        )
        .bind(communes)
        .bind(partition)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn communes_of(&mut self, partition: i32) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT commune FROM commune_partitions WHERE partition = $1")
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
             WHERE commune = ANY($1) AND day >= $2 AND day < $3 GROUP BY commune",
            sums = *SUMS
        );
        let rows: Vec<SumRow> = sqlx::query_as(&sql)
            .bind(communes)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(rows.into_iter().map(SumRow::into_pair).collect())
    }

    async fn carriers(&mut self, communes: &[String]) -> Result<Vec<Carrier>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT c.commune, c.partition, COALESCE(o.caught_up, true) AS caught_up
             FROM commune_partitions c
             LEFT JOIN partition_offsets o ON o.topic = $1 AND o.partition = c.partition
             WHERE c.commune = ANY($2)",
        )
        .bind(&self.topic)
        .bind(communes)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn lock_units(&mut self, units: &[String]) -> Result<(), StoreError> {
        if units.is_empty() {
            return Ok(());
        }
        // Transaction-scoped advisory locks, taken in the order given
        // (sorted by every caller): no two batches wait on each other.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('cchc.breach.' || u, 0))
             FROM unnest($1::text[]) WITH ORDINALITY AS t(u, n) ORDER BY n",
        )
        .bind(units)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn coming_due(
        &mut self,
        partitions: &[i32],
        communes: &[String],
        (from, to): (NaiveDate, NaiveDate),
    ) -> Result<Vec<(String, NaiveDate, i64)>, StoreError> {
        // The partitions' open cases by due date (index cases_open_due).
        Ok(sqlx::query_as(
            "SELECT commune, open_due, count(*) FROM cases
             WHERE partition = ANY($1) AND open_due >= $2 AND open_due <= $3 AND commune = ANY($4)
             GROUP BY commune, open_due",
        )
        .bind(partitions)
        .bind(from)
        .bind(to)
        .bind(communes)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn breach_states(
        &mut self,
        communes: &[String],
    ) -> Result<Vec<(StateKey, BreachState)>, StoreError> {
        let rows: Vec<BreachRow> = sqlx::query_as(
            "SELECT commune, indicator, \"window\", in_breach, transitions, at_risk, risk_transitions
             FROM breach_states WHERE commune = ANY($1)",
        )
        .bind(communes)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows.into_iter().filter_map(BreachRow::into_state).collect())
    }

    async fn write_breach_states(
        &mut self,
        states: &[(StateKey, BreachState)],
    ) -> Result<(), StoreError> {
        if states.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO breach_states (commune, indicator, \"window\", in_breach, transitions, at_risk, risk_transitions)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::int8[], $6::bool[], $7::int8[])
             ON CONFLICT (commune, indicator, \"window\") DO UPDATE
               SET in_breach = excluded.in_breach, transitions = excluded.transitions,
                   at_risk = excluded.at_risk, risk_transitions = excluded.risk_transitions",
        )
        .bind(
            states
                .iter()
                .map(|((c, _, _), _)| c.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|((_, i, _), _)| i.id())
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|((_, _, w), _)| w.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(states.iter().map(|(_, s)| s.in_breach).collect::<Vec<_>>())
        .bind(
            states
                .iter()
                .map(|(_, s)| s.transitions)
                .collect::<Vec<_>>(),
        )
        .bind(states.iter().map(|(_, s)| s.at_risk).collect::<Vec<_>>())
        .bind(
            states
                .iter()
                .map(|(_, s)| s.risk_transitions)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn add_to_outbox(&mut self, alerts: &[Alert]) -> Result<(), StoreError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let payloads = alerts
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // WITH ORDINALITY: the outbox's sequence follows the alerts' order.
        sqlx::query(
            "INSERT INTO alert_outbox (alert_id, commune, payload)
             SELECT a, c, p FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(a, c, p, n)
             ORDER BY n ON CONFLICT (alert_id) DO NOTHING",
        )
        .bind(alerts.iter().map(|a| a.alert_id.as_str()).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.commune_code.as_str()).collect::<Vec<_>>())
        .bind(payloads)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn move_position(
        &mut self,
        w: &PartitionWrite,
        evaluated: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE partition_offsets SET next_offset = COALESCE($3, next_offset),
                    clock = COALESCE($4, clock), event_time = GREATEST(event_time, $5),
                    updated_at = now(), caught_up = $6
             WHERE topic = $1 AND partition = $2",
        )
        .bind(&self.topic)
        .bind(w.partition)
        .bind(w.next_offset)
        .bind(w.clock)
        .bind(w.event_time)
        .bind(evaluated)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn commit(self) -> Result<Committed, StoreError> {
        self.tx.commit().await?;
        let remember = match self.writer {
            Some(writer) if self.remember => Some(Remember {
                cache: self.cache,
                writer,
            }),
            _ => None,
        };
        Ok(Committed { remember })
    }
}

/// Sends `rows` through `statement` (a `COPY … FROM STDIN (FORMAT binary)`).
async fn copy_in(
    tx: &mut Transaction<'static, Postgres>,
    statement: &str,
    rows: CopyRows,
) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(rows.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

async fn copy_new_cases(
    tx: &mut Transaction<'static, Postgres>,
    partition: i32,
    cases: &[(CaseKey, CaseState)],
) -> Result<(), sqlx::Error> {
    let mut rows = CopyRows::with_capacity(cases.len() * 160);
    for (k, s) in cases {
        let r = CaseRow::encode(s);
        rows.col(k.commune.as_str())
            .col(k.case_id.as_str())
            .col(partition)
            .col(r.received_at)
            .col(r.received_channel)
            .col(r.received_level)
            .col(r.received_electronic)
            .col(r.received_digitized)
            .col(r.received_due)
            .col(s.procedure_code())
            .col(r.closing_at)
            .col(r.closing_kind)
            .col(r.closing_due)
            .col(r.closing_outcome)
            .col(r.rating_at)
            .col(r.rating)
            .col(r.rating_score)
            .col(s.open_due_date())
            .col(r.received_by.as_deref())
            .col(r.closing_by.as_deref())
            .col(r.rating_by.as_deref())
            .col(r.late)
            .col(Bytes(r.applied.as_deref().unwrap_or_default()))
            .end_row();
    }
    copy_in(
        tx,
        "COPY cases (commune, case_id, partition, received_at, received_channel, received_level,
                     received_electronic, received_digitized, received_due, received_procedure, closing_at,
                     closing_kind, closing_due, closing_outcome, rating_at, rating, rating_score, open_due,
                     received_by, closing_by, rating_by, late, applied) FROM STDIN (FORMAT binary)",
        rows,
    )
    .await
}

/// The batch's stored cases as the rows of `u`: parameters `$1`, `$2` (the
/// keys) and `$4`–`$23` (the facts; `$3` is the writing partition), and as
/// many more as `extra` names (`$24`…), in [`bind_cases`]' order.
fn cases_from(extra: &[(&str, &str)]) -> String {
    let mut arrays = vec![
        "$1::text[], $2::text[], $4::timestamptz[], $5::int2[], $6::int2[], $7::bool[], $8::bool[],
         $9::date[], $10::timestamptz[], $11::int2[], $12::date[], $13::int2[], $14::timestamptz[],
         $15::int2[], $16::int2[], $17::date[], $18::text[], $19::text[], $20::text[], $21::text[],
         $22::bool[], $23::bytea[]"
            .to_string(),
    ];
    let mut names = vec![
        "commune, case_id, received_at, received_channel, received_level, received_electronic,
         received_digitized, received_due, closing_at, closing_kind, closing_due, closing_outcome,
         rating_at, rating, rating_score, open_due, received_procedure, received_by, closing_by,
         rating_by, late, applied"
            .to_string(),
    ];
    for (i, (name, ty)) in extra.iter().enumerate() {
        arrays.push(format!("${}::{ty}[]", 24 + i));
        names.push(name.to_string());
    }
    format!(
        "FROM UNNEST({}) AS u({})",
        arrays.join(", "),
        names.join(", ")
    )
}

/// Each written column of `cases` with its value in [`cases_from`]: the
/// writing partition `$3`, the others from `u`.
fn written_sources() -> impl Iterator<Item = (&'static str, String)> {
    CASE_WRITTEN.iter().map(|c| match *c {
        "partition" => (*c, "$3".to_string()),
        c => (c, format!("u.{c}")),
    })
}

/// The upsert of stored cases read by the batch (their rows locked, or
/// written by this partition alone).
static UPSERT_CASES: LazyLock<String> = LazyLock::new(|| {
    let values: Vec<String> = written_sources().map(|(_, v)| v).collect();
    format!(
        "{insert} SELECT u.commune, u.case_id, {values} {from} {replace}",
        insert = *INSERT_CASES,
        values = values.join(", "),
        from = cases_from(&[]),
        replace = *REPLACE_CASE,
    )
});

/// The update of stored cases taken from the cache: a row only where it is
/// still the version its remembered writer made (`xmin`, 32 bits, `$24`).
static UPDATE_REMEMBERED: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = written_sources()
        .map(|(c, v)| format!("{c} = {v}"))
        .collect();
    format!(
        "UPDATE cases AS c SET {sets} {from}
         WHERE c.commune = u.commune AND c.case_id = u.case_id AND c.xmin::text::int8 = u.xmin",
        sets = sets.join(", "),
        from = cases_from(&[("xmin", "int8")]),
    )
});

/// Binds `$1`–`$23` of [`cases_from`] for `cases`, written by `partition`.
fn bind_cases<'q>(
    sql: &'q str,
    partition: i32,
    cases: &[&'q (CaseKey, CaseState)],
) -> Query<'q, Postgres, PgArguments> {
    let rows: Vec<CaseRow> = cases.iter().map(|(_, s)| CaseRow::encode(s)).collect();
    let open_due: Vec<Option<NaiveDate>> = cases.iter().map(|(_, s)| s.open_due_date()).collect();
    macro_rules! col {
        ($f:ident) => {
            rows.iter().map(|r| r.$f).collect::<Vec<_>>()
        };
    }
    sqlx::query(sql)
        .bind(
            cases
                .iter()
                .map(|(k, _)| k.commune.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            cases
                .iter()
                .map(|(k, _)| k.case_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(partition)
        .bind(col!(received_at))
        .bind(col!(received_channel))
        .bind(col!(received_level))
        .bind(col!(received_electronic))
        .bind(col!(received_digitized))
        .bind(col!(received_due))
        .bind(col!(closing_at))
        .bind(col!(closing_kind))
        .bind(col!(closing_due))
        .bind(col!(closing_outcome))
        .bind(col!(rating_at))
        .bind(col!(rating))
        .bind(col!(rating_score))
        .bind(open_due)
        .bind(
            cases
                .iter()
                .map(|(_, s)| s.procedure_code())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.received_by.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.closing_by.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.rating_by.clone()).collect::<Vec<_>>())
        .bind(col!(late))
        .bind(
            rows.into_iter()
                .map(|r| r.applied.unwrap_or_default())
                .collect::<Vec<_>>(),
        )
}

async fn upsert_cases(
    tx: &mut Transaction<'static, Postgres>,
    partition: i32,
    cases: &[&(CaseKey, CaseState)],
) -> Result<(), sqlx::Error> {
    bind_cases(&UPSERT_CASES, partition, cases)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Updates the remembered `cases` whose rows their writers (`xmins`) left
/// as they were; returns how many it updated.
///
/// Each case is one probe of the primary key. Left to itself, the planner
/// joins a batch's few thousand cases by hashing the whole table, which it
/// judges cheaper while the table is under a few hundred thousand rows (and
/// its statistics lag a replay that grows it): a scan per batch, 80% of the
/// statement's time at 80k cases (docs/BENCHMARKS.md). So hash and merge
/// joins are off for this one statement.
async fn update_remembered(
    tx: &mut Transaction<'static, Postgres>,
    partition: i32,
    cases: &[&(CaseKey, CaseState)],
    xmins: Vec<i64>,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)",
    )
    .execute(&mut **tx)
    .await?;
    let updated = bind_cases(&UPDATE_REMEMBERED, partition, cases)
        .bind(xmins)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    // Back to what the session had (the server's or the role's setting).
    sqlx::query(
        "SELECT set_config(name, reset_val, true) FROM pg_settings
         WHERE name IN ('enable_hashjoin', 'enable_mergejoin')",
    )
    .execute(&mut **tx)
    .await?;
    Ok(updated)
}
