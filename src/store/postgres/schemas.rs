//! The projection schemas of a PostgreSQL store and `cchc rebuild`'s
//! switch between them: the control row (`cchc_control.projection`) names
//! the schema served; a rebuild fills a fresh one and switches over in one
//! transaction that fences the old schema's writers.

use sqlx::{ConnectOptions, Connection, PgConnection};

use super::{connect_options, PgStore};

use crate::store::StoreError;

/// Where the projection control row lives; not itself rebuilt.
pub(super) const CONTROL_SCHEMA: &str = "cchc_control";
/// The prefix of the schemas `cchc rebuild` creates: `cchc_gen_2`, `cchc_gen_3`, …
pub const GENERATION_PREFIX: &str = "cchc_gen_";

/// A schema for a rebuild, as prepared by [`PgStore::prepare_rebuild`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildTarget {
    /// The schema being filled.
    pub schema: String,
    /// The schema served now, to be replaced.
    pub active: String,
    /// An interrupted rebuild into `schema` is continued from its stored offsets.
    pub resumed: bool,
}

/// What a switch-over did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchReport {
    pub from: String,
    pub to: String,
    /// Alert history, breach states and webhook deliveries carried over.
    pub alerts: i64,
    pub breach_states: i64,
    pub webhook_deliveries: i64,
}

impl PgStore {
    /// Prepares the schema a rebuild fills: the one an interrupted rebuild
    /// left (unless `restart`, which drops it), or a new `cchc_gen_N`. Returns
    /// a store on that schema, which does not follow switches.
    pub async fn prepare_rebuild(
        url: &str,
        max_connections: u32,
        topic: &str,
        restart: bool,
    ) -> Result<(PgStore, RebuildTarget), StoreError> {
        let options = connect_options(url)?;
        let mut conn = options.connect().await?;
        ensure_control(&mut conn).await?;
        let mut tx = conn.begin().await?;
        let (active, building): (String, Option<String>) = sqlx::query_as(&format!(
            "SELECT active_schema, building_schema FROM {CONTROL_SCHEMA}.projection FOR UPDATE"
        ))
        .fetch_one(&mut *tx)
        .await?;
        let resume = match building {
            Some(b) if !restart => Some(b),
            Some(b) => {
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&b)?))
                    .execute(&mut *tx)
                    .await?;
                None
            }
            None => None,
        };
        let (schema, resumed) = match resume {
            Some(b) => (b, true),
            None => {
                let existing: Vec<String> = sqlx::query_scalar(
                    "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
                )
                .bind(GENERATION_PREFIX)
                .fetch_all(&mut *tx)
                .await?;
                let next = existing
                    .iter()
                    .filter_map(|n| n.strip_prefix(GENERATION_PREFIX)?.parse::<u32>().ok())
                    .max()
                    .unwrap_or(1)
                    + 1;
                let schema = format!("{GENERATION_PREFIX}{next}");
                sqlx::query(&format!("CREATE SCHEMA {}", ident(&schema)?))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!(
                    "UPDATE {CONTROL_SCHEMA}.projection SET building_schema = $1, building_started_at = now()"
                ))
                .bind(&schema)
                .execute(&mut *tx)
                .await?;
                (schema, false)
            }
        };
        tx.commit().await?;
        let store = Self::open(options, max_connections, topic, schema.clone(), false).await?;
        Ok((
            store,
            RebuildTarget {
                schema,
                active,
                resumed,
            },
        ))
    }

    /// Makes this (rebuilt) store's schema the active one, in one
    /// transaction: the members still writing to the old schema are fenced
    /// (their next commit is refused, and they follow the switch), and
    /// what subscribers have been told is carried over (alert outbox, breach
    /// states, webhook deliveries, dead letters' resend marks), so that the
    /// first evaluation on the new schema emits exactly the differences.
    /// Readers are never blocked; writers to the old schema wait for it.
    pub async fn switch_over(&self, expected_active: &str) -> Result<SwitchReport, StoreError> {
        let to = self.schema();
        let new = ident(&to)?;
        let old = ident(expected_active)?;
        let mut tx = self.pool().begin().await?;
        let (active, building): (String, Option<String>) = sqlx::query_as(&format!(
            "SELECT active_schema, building_schema FROM {CONTROL_SCHEMA}.projection FOR UPDATE"
        ))
        .fetch_one(&mut *tx)
        .await?;
        if active != expected_active || building.as_deref() != Some(to.as_str()) {
            return Err(StoreError::Corrupt(format!(
                "the projections changed during the rebuild (active schema {active}, \
                 building {building:?}; expected {expected_active} and {to}): run the rebuild again"
            )));
        }
        // In the order a batch commit takes them, so that the two wait for
        // each other instead of deadlocking.
        sqlx::query(&format!(
            "LOCK TABLE {old}.partition_offsets, {old}.day_counters, {old}.breach_states,
                        {old}.alert_outbox, {old}.webhook_deliveries, {old}.dead_letters
             IN EXCLUSIVE MODE"
        ))
        .execute(&mut *tx)
        .await?;
        // Every generation of the new schema above every one of the old, so
        // that no claim made in one can pass for a claim made in the other;
        // partitions the rebuild never claimed start from their beginning.
        let statements = [
            format!("UPDATE {old}.partition_offsets SET generation = generation + 1"),
            format!(
                "UPDATE {new}.partition_offsets SET generation = generation + 1 +
                   (SELECT COALESCE(max(generation), 0) FROM {old}.partition_offsets)"
            ),
            format!(
                "INSERT INTO {new}.partition_offsets (topic, partition, next_offset, generation)
                 SELECT topic, partition, NULL,
                        (SELECT COALESCE(max(generation), 0) + 1 FROM {old}.partition_offsets)
                 FROM {old}.partition_offsets
                 ON CONFLICT (topic, partition) DO NOTHING"
            ),
            format!("DELETE FROM {new}.webhook_deliveries"),
            format!("DELETE FROM {new}.alert_outbox"),
            format!("DELETE FROM {new}.breach_states"),
        ];
        for sql in &statements {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        // What subscribers have been told, in foreign-key order.
        let mut carried = Vec::new();
        for (table, columns) in [
            (
                "breach_states",
                "commune, indicator, \"window\", in_breach, transitions, at_risk, risk_transitions",
            ),
            (
                "alert_outbox",
                "seq, alert_id, commune, payload, created_at, published_at",
            ),
            (
                "webhook_deliveries",
                "alert_seq, url, attempts, next_attempt, delivered_at, last_error",
            ),
        ] {
            let rows = sqlx::query(&format!(
                "INSERT INTO {new}.{table} ({columns}) SELECT {columns} FROM {old}.{table}"
            ))
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            carried.push(rows);
        }
        let [breach_states, alerts, webhook_deliveries] = carried[..] else {
            unreachable!("three tables")
        };
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{new}.alert_outbox', 'seq'),
                           COALESCE((SELECT max(seq) FROM {new}.alert_outbox), 0) + 1, false)"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE {new}.dead_letters d SET resent_at = o.resent_at FROM {old}.dead_letters o
             WHERE o.resent_at IS NOT NULL AND o.topic = d.topic AND o.partition = d.partition
               AND o.\"offset\" = d.\"offset\""
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE {CONTROL_SCHEMA}.projection SET active_schema = $1, previous_schema = $2,
                    building_schema = NULL, building_started_at = NULL, switched_at = now()"
        ))
        .bind(&to)
        .bind(expected_active)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SwitchReport {
            from: expected_active.to_string(),
            to,
            alerts,
            breach_states,
            webhook_deliveries,
        })
    }
}

/// Creates the control row on first use and returns the active schema.
pub(super) async fn ensure_control(conn: &mut PgConnection) -> Result<String, StoreError> {
    let mut tx = conn.begin().await?;
    // Concurrent first starts would race on CREATE … IF NOT EXISTS.
    sqlx::query("SELECT pg_advisory_xact_lock(42420001)")
        .execute(&mut *tx)
        .await?;
    for sql in [
        format!("CREATE SCHEMA IF NOT EXISTS {CONTROL_SCHEMA}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.projection (
                 singleton           BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                 active_schema       TEXT NOT NULL,
                 previous_schema     TEXT,
                 switched_at         TIMESTAMPTZ,
                 building_schema     TEXT,
                 building_started_at TIMESTAMPTZ
             )"
        ),
        format!(
            "INSERT INTO {CONTROL_SCHEMA}.projection (active_schema) VALUES ('public')
             ON CONFLICT DO NOTHING"
        ),
    ] {
        sqlx::query(&sql).execute(&mut *tx).await?;
    }
    let active: String = sqlx::query_scalar(&format!(
        "SELECT active_schema FROM {CONTROL_SCHEMA}.projection"
    ))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(active)
}

/// A schema name fit to splice into SQL: only names this program makes.
pub(super) fn ident(schema: &str) -> Result<String, StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(schema.to_string())
    } else {
        Err(StoreError::Corrupt(format!(
            "{schema:?} is not a projection schema name"
        )))
    }
}
