//! Case and document facts to and from table columns.

use chrono::{DateTime, NaiveDate, Utc};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{PartitionWrite, StoreError};
use crate::domain::event::{
    Channel, OnlineLevel, Outcome, Rated, Rating, Received, Resolved, Signature,
};
use crate::domain::fold::{Closing, Fact};
use crate::domain::time::local_date;
use crate::domain::{
    Alert, BreachState, CaseKey, CaseState, DayCounters, DocumentKey, DocumentState, Evaluator,
    Fold, Indicator, StateKey, Units,
};

/// One row of `cases`, without its key.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct CaseRow {
    pub received_at: Option<DateTime<Utc>>,
    pub received_channel: Option<i16>,
    pub received_level: Option<i16>,
    pub received_electronic: Option<bool>,
    pub received_digitized: Option<bool>,
    pub received_due: Option<NaiveDate>,
    pub closing_at: Option<DateTime<Utc>>,
    pub closing_kind: Option<i16>,
    pub closing_due: Option<NaiveDate>,
    pub closing_outcome: Option<i16>,
    pub rating_at: Option<DateTime<Utc>>,
    pub rating: Option<i16>,
    pub rating_score: Option<i16>,
}

const RESOLVED: i16 = 1;
const WITHDRAWN: i16 = 2;

impl CaseRow {
    pub fn encode(s: &CaseState) -> CaseRow {
        let mut row = CaseRow::default();
        if let Some(r) = &s.received {
            row.received_at = Some(r.at);
            row.received_channel = Some(match r.value.channel {
                Channel::InPerson => 0,
                Channel::Online => 1,
                Channel::Postal => 2,
            });
            row.received_level = Some(match r.value.online_level {
                OnlineLevel::None => 0,
                OnlineLevel::Partial => 1,
                OnlineLevel::Full => 2,
            });
            row.received_electronic = Some(r.value.registered_electronically);
            row.received_digitized = Some(r.value.digitized);
            row.received_due = Some(r.value.due_date);
        }
        if let Some(c) = &s.closing {
            row.closing_at = Some(c.at);
            match c.value {
                Closing::Resolved(res) => {
                    row.closing_kind = Some(RESOLVED);
                    row.closing_due = Some(res.due_date);
                    row.closing_outcome = Some(match res.outcome {
                        Outcome::Completed => 0,
                        Outcome::Rejected => 1,
                    });
                }
                Closing::Withdrawn => row.closing_kind = Some(WITHDRAWN),
            }
        }
        if let Some(r) = &s.rating {
            row.rating_at = Some(r.at);
            row.rating = Some(match r.value.rating {
                Rating::VerySatisfied => 0,
                Rating::Satisfied => 1,
                Rating::Dissatisfied => 2,
            });
            row.rating_score = r.value.score.map(i16::from);
        }
        row
    }

    pub fn decode(&self) -> Result<CaseState, String> {
        let bad = |what: &str, v: Option<i16>| format!("stored case has an invalid {what}: {v:?}");
        let received = match self.received_at {
            None => None,
            Some(at) => Some(Fact {
                at,
                value: Received {
                    channel: match self.received_channel {
                        Some(0) => Channel::InPerson,
                        Some(1) => Channel::Online,
                        Some(2) => Channel::Postal,
                        v => return Err(bad("channel", v)),
                    },
                    online_level: match self.received_level {
                        Some(0) => OnlineLevel::None,
                        Some(1) => OnlineLevel::Partial,
                        Some(2) => OnlineLevel::Full,
                        v => return Err(bad("online level", v)),
                    },
                    due_date: self
                        .received_due
                        .ok_or("stored received case has no due date")?,
                    registered_electronically: self.received_electronic.unwrap_or(false),
                    digitized: self.received_digitized.unwrap_or(false),
                },
            }),
        };
        let closing = match self.closing_at {
            None => None,
            Some(at) => Some(Fact {
                at,
                value: match self.closing_kind {
                    Some(RESOLVED) => Closing::Resolved(Resolved {
                        due_date: self
                            .closing_due
                            .ok_or("stored resolution has no due date")?,
                        outcome: match self.closing_outcome {
                            Some(0) => Outcome::Completed,
                            Some(1) => Outcome::Rejected,
                            v => return Err(bad("outcome", v)),
                        },
                    }),
                    Some(WITHDRAWN) => Closing::Withdrawn,
                    v => return Err(bad("closing kind", v)),
                },
            }),
        };
        let rating = match self.rating_at {
            None => None,
            Some(at) => Some(Fact {
                at,
                value: Rated {
                    rating: match self.rating {
                        Some(0) => Rating::VerySatisfied,
                        Some(1) => Rating::Satisfied,
                        Some(2) => Rating::Dissatisfied,
                        v => return Err(bad("rating", v)),
                    },
                    score: self.rating_score.map(|s| s as u8),
                },
            }),
        };
        Ok(CaseState {
            received,
            closing,
            rating,
        })
    }
}

pub fn encode_document(d: &DocumentState) -> (DateTime<Utc>, bool) {
    (d.signed.at, d.signed.value == Signature::Digital)
}

pub fn decode_document(at: DateTime<Utc>, digital: bool) -> DocumentState {
    let value = if digital {
        Signature::Digital
    } else {
        Signature::Handwritten
    };
    DocumentState {
        signed: Fact { at, value },
    }
}

pub const CASE_COLUMNS: &str =
    "commune, case_id, received_at, received_channel, received_level, received_electronic,
    received_digitized, received_due, closing_at, closing_kind, closing_due, closing_outcome,
    rating_at, rating, rating_score";

#[derive(sqlx::FromRow)]
pub struct KeyedCaseRow {
    pub commune: String,
    pub case_id: String,
    #[sqlx(flatten)]
    pub row: CaseRow,
}

/// The nine counter columns, as stored or summed.
#[derive(sqlx::FromRow)]
pub struct Counts {
    received: i64,
    received_online: i64,
    received_electronic: i64,
    due: i64,
    on_time: i64,
    ratings: i64,
    satisfied: i64,
    signatures: i64,
    digital: i64,
}

impl Counts {
    pub fn counters(&self) -> DayCounters {
        DayCounters {
            received: self.received,
            received_online: self.received_online,
            received_electronic: self.received_electronic,
            due: self.due,
            on_time: self.on_time,
            ratings: self.ratings,
            satisfied: self.satisfied,
            signatures: self.signatures,
            digital: self.digital,
        }
    }
}

/// One stored day of one commune.
#[derive(sqlx::FromRow)]
pub struct CounterRow {
    commune: String,
    day: NaiveDate,
    #[sqlx(flatten)]
    counts: Counts,
}

impl CounterRow {
    pub fn into_parts(self) -> (String, NaiveDate, DayCounters) {
        (self.commune, self.day, self.counts.counters())
    }
}

/// Counters summed under some key (a commune, a day).
#[derive(sqlx::FromRow)]
pub struct SumRow {
    pub key: String,
    #[sqlx(flatten)]
    pub counts: Counts,
}

/// The summed counter columns, in portable SQL, named as [`Counts`] expects.
pub const SUMS: &str = "CAST(COALESCE(sum(received), 0) AS BIGINT) AS received,
    CAST(COALESCE(sum(received_online), 0) AS BIGINT) AS received_online,
    CAST(COALESCE(sum(received_electronic), 0) AS BIGINT) AS received_electronic,
    CAST(COALESCE(sum(due), 0) AS BIGINT) AS due,
    CAST(COALESCE(sum(on_time), 0) AS BIGINT) AS on_time,
    CAST(COALESCE(sum(ratings), 0) AS BIGINT) AS ratings,
    CAST(COALESCE(sum(satisfied), 0) AS BIGINT) AS satisfied,
    CAST(COALESCE(sum(signatures), 0) AS BIGINT) AS signatures,
    CAST(COALESCE(sum(digital), 0) AS BIGINT) AS digital";

/// The stored rows of a batch's working set, as both stores read them.
#[derive(Default)]
pub struct LoadedRows {
    pub seen: Vec<String>,
    pub cases: Vec<KeyedCaseRow>,
    /// Open cases that the clock makes overdue (may repeat `cases`).
    pub overdue: Vec<KeyedCaseRow>,
    pub documents: Vec<(String, String, DateTime<Utc>, bool)>,
}

impl LoadedRows {
    /// The working set, with the clock where the stored projections left it.
    pub fn into_fold(
        self,
        units: &Units,
        claim_clock: Option<DateTime<Utc>>,
    ) -> Result<Fold, StoreError> {
        let intern = |code: &str| {
            units.commune(code).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!("stored commune `{code}` is no longer configured"))
            })
        };
        let mut fold = Fold::new(claim_clock);
        for id in self.seen {
            fold.load_seen(id);
        }
        for row in self.cases.into_iter().chain(self.overdue) {
            let key = CaseKey {
                commune: intern(&row.commune)?,
                case_id: row.case_id,
            };
            if fold.case(&key).is_none() {
                fold.load_case(key, row.row.decode().map_err(StoreError::Corrupt)?);
            }
        }
        for (commune, document_id, at, digital) in self.documents {
            fold.load_document(
                DocumentKey {
                    commune: intern(&commune)?,
                    document_id,
                },
                decode_document(at, digital),
            );
        }
        Ok(fold)
    }
}

/// The due dates `[from, to)` of open cases that become overdue when the
/// clock moves from `claim_clock` to `now` (`from` = `None`: since ever),
/// or `None` when the local date has not changed.
pub fn overdue_range(
    claim_clock: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<(Option<NaiveDate>, NaiveDate)> {
    let to = local_date(now);
    let from = claim_clock.map(local_date);
    from.is_none_or(|f| to > f).then_some((from, to))
}

/// The communes a batch changed, with the partition each arrived on, and the
/// set of communes to re-evaluate (those, to start with).
pub fn alert_communes(writes: &[PartitionWrite]) -> (Vec<(String, i32)>, BTreeSet<String>) {
    let mut seen_on = BTreeMap::new();
    for w in writes {
        for ((commune, _), c) in &w.deltas {
            if !c.is_zero() {
                seen_on.insert(commune.to_string(), w.partition);
            }
        }
    }
    let communes = seen_on.keys().cloned().collect();
    (seen_on.into_iter().collect(), communes)
}

/// Runs the evaluator over stored window sums (one list of rows per window)
/// and stored states (commune, indicator id, window id, in breach,
/// transitions).
pub fn evaluate_with(
    evaluator: &Evaluator,
    now: DateTime<Utc>,
    communes: &[String],
    sums: Vec<Vec<(String, DayCounters)>>,
    states: Vec<(String, String, String, bool, i64)>,
) -> Vec<(Alert, StateKey, BreachState)> {
    let sums: HashMap<(usize, String), DayCounters> = sums
        .into_iter()
        .enumerate()
        .flat_map(|(w, rows)| rows.into_iter().map(move |(commune, c)| ((w, commune), c)))
        .collect();
    let states: HashMap<StateKey, BreachState> = states
        .into_iter()
        .filter_map(|(commune, indicator, window, in_breach, transitions)| {
            let indicator: Indicator = indicator.parse().ok()?;
            Some((
                (commune, indicator, window),
                BreachState {
                    in_breach,
                    transitions,
                },
            ))
        })
        .collect();
    evaluator.evaluate(
        now,
        communes,
        |w, c| sums.get(&(w, c.to_string())).copied().unwrap_or_default(),
        |k| states.get(k).copied().unwrap_or_default(),
    )
}

/// Re-evaluates the communes a batch changed (and, when the local date moved,
/// every commune of the partitions written) inside the batch's transaction:
/// breach states and the alert outbox change with the counters. One body for
/// both stores: the SQL is portable and `$tx` is either store's transaction.
macro_rules! evaluate_alerts_in {
    ($tx:expr, $evaluator:expr, $writes:expr) => {{
        use $crate::store::codec::{alert_communes, evaluate_with, SumRow, SUMS};
        let (tx, evaluator, writes) = ($tx, $evaluator, $writes);
        let Some(now) = writes.iter().filter_map(|w| w.clock).max() else {
            return Ok(Vec::new());
        };
        let (seen_on, mut communes) = alert_communes(writes);
        for (commune, partition) in &seen_on {
            sqlx::query(
                "INSERT INTO commune_partitions (commune, partition) VALUES ($1, $2)
                 ON CONFLICT (commune) DO UPDATE SET partition = excluded.partition",
            )
            .bind(commune)
            .bind(partition)
            .execute(&mut **tx)
            .await?;
        }
        for w in writes.iter().filter(|w| w.clock_moved) {
            let more: Vec<String> =
                sqlx::query_scalar("SELECT commune FROM commune_partitions WHERE partition = $1")
                    .bind(w.partition)
                    .fetch_all(&mut **tx)
                    .await?;
            communes.extend(more);
        }
        if communes.is_empty() {
            return Ok(Vec::new());
        }
        let communes: Vec<String> = communes.into_iter().collect();
        let today = $crate::domain::time::local_date(now);
        let sum_sql = format!(
            "SELECT commune AS key, {SUMS} FROM day_counters
             WHERE commune = $1 AND day >= $2 AND day < $3 GROUP BY commune"
        );
        let mut sums = Vec::new();
        for window in &evaluator.windows {
            let (from, to) = window.days(today);
            let mut rows = Vec::new();
            for commune in &communes {
                let row: Option<SumRow> = sqlx::query_as(&sum_sql)
                    .bind(commune)
                    .bind(from)
                    .bind(to)
                    .fetch_optional(&mut **tx)
                    .await?;
                rows.extend(row.map(|r| (r.key, r.counts.counters())));
            }
            sums.push(rows);
        }
        let mut states = Vec::new();
        for commune in &communes {
            let rows: Vec<(String, String, String, bool, i64)> = sqlx::query_as(
                "SELECT commune, indicator, \"window\", in_breach, transitions
                 FROM breach_states WHERE commune = $1",
            )
            .bind(commune)
            .fetch_all(&mut **tx)
            .await?;
            states.extend(rows);
        }
        let mut alerts = Vec::new();
        for (alert, (commune, indicator, window), next) in
            evaluate_with(evaluator, now, &communes, sums, states)
        {
            sqlx::query(
                "INSERT INTO breach_states (commune, indicator, \"window\", in_breach, transitions)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (commune, indicator, \"window\") DO UPDATE
                   SET in_breach = excluded.in_breach, transitions = excluded.transitions",
            )
            .bind(&commune)
            .bind(indicator.id())
            .bind(&window)
            .bind(next.in_breach)
            .bind(next.transitions)
            .execute(&mut **tx)
            .await?;
            let payload =
                serde_json::to_string(&alert).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO alert_outbox (alert_id, commune, payload) VALUES ($1, $2, $3)
                 ON CONFLICT (alert_id) DO NOTHING",
            )
            .bind(&alert.alert_id)
            .bind(&commune)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
            alerts.push(alert);
        }
        Ok(alerts)
    }};
}
pub(crate) use evaluate_alerts_in;
