//! Rows to and from the domain's values: case and document facts, and the
//! day counters, whose columns and SQL lists come from
//! [`DayCounters::NAMES`] (one place declares them).

use chrono::{DateTime, NaiveDate, Utc};

use std::sync::LazyLock;

use sqlx::{ColumnIndex, Decode, FromRow, Row, Type};

use super::{BatchKeys, StoreError};
use crate::domain::event::{
    Channel, OnlineLevel, Outcome, Rated, Rating, Received, Resolved, Signature,
};
use crate::domain::fold::{Closing, Fact};
use crate::domain::time::local_date;
use crate::domain::{
    AppliedIds, BreachState, CaseEvent, CaseKey, CaseState, DayCounters, DocumentKey,
    DocumentState, EventKey, EventKind, Fold, IdDigest, Indicator, StateKey, Units,
};

/// One row of `cases`, without its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct CaseRow {
    pub received_at: Option<DateTime<Utc>>,
    pub received_channel: Option<i16>,
    pub received_level: Option<i16>,
    pub received_electronic: Option<bool>,
    pub received_digitized: Option<bool>,
    pub received_due: Option<NaiveDate>,
    /// Read back only: the writers take it from the state
    /// ([`CaseState::procedure_code`]), without a copy.
    pub received_procedure: Option<String>,
    pub closing_at: Option<DateTime<Utc>>,
    pub closing_kind: Option<i16>,
    pub closing_due: Option<NaiveDate>,
    pub closing_outcome: Option<i16>,
    pub rating_at: Option<DateTime<Utc>>,
    pub rating: Option<i16>,
    pub rating_score: Option<i16>,
    /// Who reported each fact, where not the case's home
    /// ([`crate::domain::fold::Reporters`]).
    pub received_by: Option<String>,
    pub closing_by: Option<String>,
    pub rating_by: Option<String>,
    /// [`CaseState::late`]; `None` for a case stored before it was kept
    /// (derived then from the loading partition's clock, as it was counted).
    pub late: Option<bool>,
    /// [`CaseState::applied`], 8 bytes per id; `None` for a case stored
    /// before ids were kept with it (its earlier ids are in
    /// `seen_event_digests`: [`KeyedCaseRow::older_ids`]).
    pub applied: Option<Vec<u8>>,
}

/// [`CaseState::applied`] as stored: each digest's 8 bytes, big-endian.
pub fn encode_applied(applied: &[IdDigest]) -> Vec<u8> {
    applied.iter().flat_map(|d| d.to_be_bytes()).collect()
}

fn decode_applied(bytes: Option<&[u8]>) -> Result<AppliedIds, String> {
    let bytes = bytes.unwrap_or_default();
    if bytes.len() % 8 != 0 {
        return Err(format!(
            "stored event ids are {} bytes, not 8 each",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect())
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
        row.received_by = s.by.received.as_ref().map(|c| c.to_string());
        row.closing_by = s.by.closing.as_ref().map(|c| c.to_string());
        row.rating_by = s.by.rating.as_ref().map(|c| c.to_string());
        row.late = Some(s.late);
        row.applied = Some(encode_applied(&s.applied));
        row
    }

    /// The row as stored for `s`, the procedure included (to compare with a
    /// row read back).
    pub fn encode_whole(s: &CaseState) -> CaseRow {
        CaseRow {
            received_procedure: s.procedure_code().map(String::from),
            ..CaseRow::encode(s)
        }
    }

    pub fn decode(&self, units: &Units) -> Result<CaseState, String> {
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
                    // Cases stored before the code was kept have none.
                    procedure_code: self.received_procedure.as_deref().unwrap_or("").into(),
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
        let by = |code: &Option<String>| -> Result<Option<crate::domain::UnitCode>, String> {
            code.as_deref()
                .map(|c| {
                    units
                        .commune(c)
                        .cloned()
                        .ok_or_else(|| format!("stored commune `{c}` is no longer configured"))
                })
                .transpose()
        };
        Ok(CaseState {
            received,
            closing,
            rating,
            by: crate::domain::fold::Reporters {
                received: by(&self.received_by)?,
                closing: by(&self.closing_by)?,
                rating: by(&self.rating_by)?,
            },
            late: self.late.unwrap_or(false),
            applied: decode_applied(self.applied.as_deref())?,
        })
    }
}

/// A document's signature as stored: when, whether digital, its ids.
pub fn encode_document(d: &DocumentState) -> (DateTime<Utc>, bool, Vec<u8>) {
    (
        d.signed.at,
        d.signed.value == Signature::Digital,
        encode_applied(&d.applied),
    )
}

/// One row of `documents`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DocumentRow {
    pub commune: String,
    pub document_id: String,
    pub signed_at: DateTime<Utc>,
    pub digital: bool,
    pub applied: Option<Vec<u8>>,
    /// As [`KeyedCaseRow::older_ids`].
    pub older_ids: bool,
}

impl DocumentRow {
    pub fn decode(&self) -> Result<DocumentState, String> {
        let value = if self.digital {
            Signature::Digital
        } else {
            Signature::Handwritten
        };
        Ok(DocumentState {
            signed: Fact {
                at: self.signed_at,
                value,
            },
            applied: decode_applied(self.applied.as_deref())?,
        })
    }
}

pub const DOCUMENT_COLUMNS: &str = "commune, document_id, signed_at, digital, applied, older_ids";

pub const CASE_COLUMNS: &str =
    "commune, case_id, received_at, received_channel, received_level, received_electronic,
    received_digitized, received_due, received_procedure, closing_at, closing_kind, closing_due,
    closing_outcome, rating_at, rating, rating_score, received_by, closing_by, rating_by, late,
    applied, older_ids";

/// The columns a case write sets after its key (`commune, case_id`), in the
/// order the upserts of both stores bind them.
pub const CASE_WRITTEN: [&str; 21] = [
    "partition",
    "received_at",
    "received_channel",
    "received_level",
    "received_electronic",
    "received_digitized",
    "received_due",
    "closing_at",
    "closing_kind",
    "closing_due",
    "closing_outcome",
    "rating_at",
    "rating",
    "rating_score",
    "open_due",
    "received_procedure",
    "received_by",
    "closing_by",
    "rating_by",
    "late",
    "applied",
];

/// `INSERT INTO cases (…)` of every column a case write sets, key first.
pub static INSERT_CASES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO cases (commune, case_id, {})",
        CASE_WRITTEN.join(", ")
    )
});

/// What a stored case's upsert replaces: every column but its key (and
/// `older_ids`, which only the row knows).
pub static REPLACE_CASE: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = CASE_WRITTEN
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "ON CONFLICT (commune, case_id) DO UPDATE SET {}",
        sets.join(", ")
    )
});

#[derive(sqlx::FromRow)]
pub struct KeyedCaseRow {
    pub commune: String,
    pub case_id: String,
    #[sqlx(flatten)]
    pub row: CaseRow,
    /// Stored before ids were kept with the row (migration 0010): the ids
    /// applied before then are in the older table of ids, to look up
    /// for the batch's events of this case.
    pub older_ids: bool,
}

/// The counter columns, comma-separated, in declaration order.
pub static COUNTER_COLUMNS: LazyLock<String> = LazyLock::new(|| DayCounters::NAMES.join(", "));

/// The summed counter columns, in portable SQL, named as [`Counts`] reads
/// them.
pub static SUMS: LazyLock<String> = LazyLock::new(|| {
    DayCounters::NAMES
        .iter()
        .map(|c| format!("CAST(COALESCE(sum({c}), 0) AS BIGINT) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
});

/// The counters of a row, read by column name (stored or summed).
#[derive(Debug, Clone, Copy)]
pub struct Counts(pub DayCounters);

impl<'r, R: Row> FromRow<'r, R> for Counts
where
    &'r str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let mut values = [0; DayCounters::COUNT];
        for (value, name) in values.iter_mut().zip(DayCounters::NAMES) {
            *value = row.try_get(name)?;
        }
        Ok(Counts(DayCounters::from_values(values)))
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
        (self.commune, self.day, self.counts.0)
    }
}

/// Counters summed under some key (a commune, a day).
#[derive(sqlx::FromRow)]
pub struct SumRow {
    pub key: String,
    #[sqlx(flatten)]
    pub counts: Counts,
}

impl SumRow {
    pub fn into_pair(self) -> (String, DayCounters) {
        (self.key, self.counts.0)
    }
}

/// `SELECT` of every stored day counter, by commune and day (both stores).
pub static ALL_DAY_COUNTERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT commune, day, {} FROM day_counters ORDER BY commune, day",
        *COUNTER_COLUMNS
    )
});

/// One stored breach state.
#[derive(sqlx::FromRow)]
pub struct BreachRow {
    commune: String,
    indicator: String,
    window: String,
    in_breach: bool,
    transitions: i64,
    at_risk: bool,
    risk_transitions: i64,
}

impl BreachRow {
    /// The state, unless its indicator is not one this version knows.
    pub fn into_state(self) -> Option<(StateKey, BreachState)> {
        let indicator: Indicator = self.indicator.parse().ok()?;
        Some((
            (self.commune, indicator, self.window),
            BreachState {
                in_breach: self.in_breach,
                transitions: self.transitions,
                at_risk: self.at_risk,
                risk_transitions: self.risk_transitions,
            },
        ))
    }
}

/// The stored rows of a batch's working set, as both stores read them.
#[derive(Default)]
pub struct LoadedRows {
    pub seen: Vec<String>,
    pub cases: Vec<KeyedCaseRow>,
    /// Open cases that the clock makes overdue (may repeat `cases`).
    pub overdue: Vec<KeyedCaseRow>,
    pub documents: Vec<DocumentRow>,
}

impl LoadedRows {
    /// The ids of `events` whose case or document was stored before ids
    /// were kept with it: to look up among the ids applied before then.
    pub fn older_ids<'e>(&self, events: &'e [CaseEvent]) -> Vec<&'e str> {
        let cases: std::collections::HashSet<(&str, &str)> = self
            .cases
            .iter()
            .filter(|r| r.older_ids)
            .map(|r| (r.commune.as_str(), r.case_id.as_str()))
            .collect();
        let documents: std::collections::HashSet<(&str, &str)> = self
            .documents
            .iter()
            .filter(|r| r.older_ids)
            .map(|r| (r.commune.as_str(), r.document_id.as_str()))
            .collect();
        if cases.is_empty() && documents.is_empty() {
            return Vec::new();
        }
        events
            .iter()
            .filter(|e| match e.key() {
                EventKey::Case(k) => cases.contains(&(k.commune.as_str(), k.case_id.as_str())),
                EventKey::Document(k) => {
                    documents.contains(&(k.commune.as_str(), k.document_id.as_str()))
                }
            })
            .map(|e| e.event_id.as_str())
            .collect()
    }

    /// The working set of a batch about `keys`, with the clock where the
    /// stored projections left it.
    pub fn into_fold(
        self,
        units: &Units,
        claim_clock: Option<DateTime<Utc>>,
        keys: &BatchKeys<'_>,
    ) -> Result<Fold, StoreError> {
        let intern = |code: &str| {
            units.commune(code).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!("stored commune `{code}` is no longer configured"))
            })
        };
        // Room for every case and document the batch can hold (its
        // documents are listed in `keys` only when they are looked up).
        let documents = keys
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::DocumentSigned(_)))
            .count();
        let mut fold = Fold::with_capacity(
            claim_clock,
            keys.cases.len() + self.overdue.len(),
            documents,
        );
        for id in self.seen {
            fold.load_seen(id);
        }
        for row in self.cases.into_iter().chain(self.overdue) {
            let key = CaseKey {
                commune: intern(&row.commune)?,
                case_id: row.case_id,
            };
            if fold.case(&key).is_none() {
                let mut state = row.row.decode(units).map_err(StoreError::Corrupt)?;
                if row.row.late.is_none() {
                    // Stored before `late` was kept: counted late by the
                    // clock of its partition, which is loading it.
                    state.late = state.is_overdue(fold.today());
                }
                fold.load_case(key, state);
            }
        }
        for row in self.documents {
            let state = row.decode().map_err(StoreError::Corrupt)?;
            fold.load_document(
                DocumentKey {
                    commune: intern(&row.commune)?,
                    document_id: row.document_id,
                },
                state,
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
