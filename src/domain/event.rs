//! The event contract, version 1: decoding and validating one Kafka record
//! value into a [`CaseEvent`], or a [`Rejection`] that says exactly why not.
//!
//! Decoding is typed and borrowing (no `serde_json::Value` tree), never
//! panics whatever the bytes, ignores unknown fields, and refuses to guess at
//! a schema version from the future.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::time::{local_date, local_date_of};
use super::units::{Refusal, UnitCode, Units};

/// The newest schema version this pipeline understands.
pub const SCHEMA_VERSION: i64 = 1;
/// Longest accepted `event_id`, in characters.
pub const MAX_EVENT_ID_CHARS: usize = 128;
/// Highest rating score (Decision 766 scores satisfaction on 18 points).
pub const MAX_SCORE: u8 = 18;

/// A valid version-1 event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseEvent {
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    /// Local (Asia/Ho_Chi_Minh) date of `occurred_at`: the day it counts on.
    pub day: NaiveDate,
    /// The unit the event names: its counters count for it.
    pub commune: UnitCode,
    /// The unit its case is kept under ([`Units::home`]): the commune
    /// itself, but for a unit that merged into another.
    pub home: UnitCode,
    /// Present on every `case.*` event; optional on `document.*`.
    pub case_id: Option<String>,
    pub kind: EventKind,
}

/// What happened, with the facts each kind carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Received(Received),
    Resolved(Resolved),
    Withdrawn,
    Rated(Rated),
    DocumentSigned(DocumentSigned),
}

impl EventKind {
    /// The contract's `event_type` string.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventKind::Received(_) => "case.received",
            EventKind::Resolved(_) => "case.resolved",
            EventKind::Withdrawn => "case.withdrawn",
            EventKind::Rated(_) => "case.rated",
            EventKind::DocumentSigned(_) => "document.signed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    InPerson,
    Online,
    Postal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnlineLevel {
    None,
    Partial,
    Full,
}

/// `case.received`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The procedure (MaTTHC), as sent (shared: the fold keeps a copy of
    /// each receipt it applies).
    pub procedure_code: std::sync::Arc<str>,
    pub channel: Channel,
    pub online_level: OnlineLevel,
    /// Local date of the promised return date (NgayHenTra).
    pub due_date: NaiveDate,
    pub registered_electronically: bool,
    pub digitized: bool,
}

impl Received {
    /// Received online at level partial or full (the old "mức độ 3 và 4").
    pub fn counts_online(&self) -> bool {
        self.channel == Channel::Online
            && matches!(self.online_level, OnlineLevel::Partial | OnlineLevel::Full)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Rejected,
}

/// `case.resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub due_date: NaiveDate,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rating {
    VerySatisfied,
    Satisfied,
    Dissatisfied,
}

impl Rating {
    pub fn is_satisfied(self) -> bool {
        !matches!(self, Rating::Dissatisfied)
    }
}

/// `case.rated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rated {
    pub rating: Rating,
    pub score: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    Digital,
    Handwritten,
}

/// `document.signed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSigned {
    pub document_id: String,
    pub signature: Signature,
    pub document_kind: Option<String>,
}

/// Why a record is not a valid version-1 event. Each variant has a stable
/// [`code`](Rejection::code) for storage, metrics and filtering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the record has no value")]
    NoValue,
    #[error("the value is not UTF-8 text")]
    NotUtf8,
    #[error("the value is not JSON: {0}")]
    NotJson(String),
    #[error("the value is JSON but not an object")]
    NotAnObject,
    #[error("required field `{0}` is missing or null")]
    MissingField(&'static str),
    #[error("field `{field}` has the wrong type: {detail}")]
    WrongType { field: String, detail: String },
    #[error("field `{field}` is `{value}`, expected {expected}")]
    InvalidValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("unknown event type `{0}`")]
    UnknownEventType(String),
    #[error("unknown commune code `{0}`")]
    UnknownCommune(String),
    #[error("commune `{code}` ended on {to} and was split between {successors}: send the code of the unit that holds the case now")]
    UnitEnded {
        code: String,
        to: NaiveDate,
        successors: String,
    },
    #[error("commune `{code}` exists only from {from}; the event is of {day}")]
    UnitNotYetValid {
        code: String,
        from: NaiveDate,
        day: NaiveDate,
    },
    #[error("timestamp `{field}` has no UTC offset: `{value}`")]
    TimestampWithoutOffset { field: &'static str, value: String },
    #[error("timestamp `{field}` is not RFC 3339: `{value}`")]
    BadTimestamp { field: &'static str, value: String },
    #[error(
        "schema version {0} is newer than this pipeline knows ({SCHEMA_VERSION}); not guessed at"
    )]
    FutureSchemaVersion(i64),
    #[error("schema version {0} does not exist")]
    BadSchemaVersion(i64),
    #[error("event_id must be 1 to {MAX_EVENT_ID_CHARS} characters, got {0}")]
    EventIdLength(usize),
    #[error("a case event needs a non-empty case_id")]
    CaseIdMissing,
    #[error("a case event needs data.due_at (NgayHenTra)")]
    DueAtMissing,
}

impl Rejection {
    /// A stable, snake_case code for this kind of rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::NoValue => "no_value",
            Rejection::NotUtf8 => "not_utf8",
            Rejection::NotJson(_) => "not_json",
            Rejection::NotAnObject => "not_an_object",
            Rejection::MissingField(_) => "missing_field",
            Rejection::WrongType { .. } => "wrong_type",
            Rejection::InvalidValue { .. } => "invalid_value",
            Rejection::UnknownEventType(_) => "unknown_event_type",
            Rejection::UnknownCommune(_) => "unknown_commune",
            Rejection::UnitEnded { .. } => "unit_ended",
            Rejection::UnitNotYetValid { .. } => "unit_not_yet_valid",
            Rejection::TimestampWithoutOffset { .. } => "timestamp_without_offset",
            Rejection::BadTimestamp { .. } => "bad_timestamp",
            Rejection::FutureSchemaVersion(_) => "future_schema_version",
            Rejection::BadSchemaVersion(_) => "bad_schema_version",
            Rejection::EventIdLength(_) => "event_id_length",
            Rejection::CaseIdMissing => "case_id_missing",
            Rejection::DueAtMissing => "due_at_missing",
        }
    }

    /// The field a rejection is about, as the contract names it (none for
    /// a record that is not a JSON object at all).
    pub fn field(&self) -> Option<&str> {
        match self {
            Rejection::MissingField(f) => Some(f),
            Rejection::WrongType { field, .. } => Some(field),
            Rejection::InvalidValue { field, .. }
            | Rejection::TimestampWithoutOffset { field, .. }
            | Rejection::BadTimestamp { field, .. } => Some(field),
            Rejection::UnknownEventType(_) => Some("event_type"),
            Rejection::UnknownCommune(_)
            | Rejection::UnitEnded { .. }
            | Rejection::UnitNotYetValid { .. } => Some("commune_code"),
            Rejection::FutureSchemaVersion(_) | Rejection::BadSchemaVersion(_) => {
                Some("schema_version")
            }
            Rejection::EventIdLength(_) => Some("event_id"),
            Rejection::CaseIdMissing => Some("case_id"),
            Rejection::DueAtMissing => Some("data.due_at"),
            Rejection::NoValue
            | Rejection::NotUtf8
            | Rejection::NotJson(_)
            | Rejection::NotAnObject => None,
        }
    }

    /// Every code, for documentation and metrics.
    pub const CODES: [&'static str; 18] = [
        "no_value",
        "not_utf8",
        "not_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "invalid_value",
        "unknown_event_type",
        "unknown_commune",
        "unit_ended",
        "unit_not_yet_valid",
        "timestamp_without_offset",
        "bad_timestamp",
        "future_schema_version",
        "bad_schema_version",
        "event_id_length",
        "case_id_missing",
        "due_at_missing",
    ];
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(borrow, default)]
    occurred_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    commune_code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    case_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Only the version, for records whose envelope does not parse as version 1:
/// a newer version is reported as such rather than as a version-1 error.
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(default)]
    schema_version: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawReceived<'a> {
    #[serde(borrow, default)]
    procedure_code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    online_level: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    due_at: Option<Cow<'a, str>>,
    #[serde(default)]
    registered_electronically: Option<bool>,
    #[serde(default)]
    digitized: Option<bool>,
}

#[derive(Deserialize)]
struct RawResolved<'a> {
    #[serde(borrow, default)]
    due_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    outcome: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawRated<'a> {
    #[serde(borrow, default)]
    rating: Option<Cow<'a, str>>,
    #[serde(default)]
    score: Option<i64>,
}

#[derive(Deserialize)]
struct RawSigned<'a> {
    #[serde(borrow, default)]
    document_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    document_kind: Option<Cow<'a, str>>,
}

/// Anything is accepted as `case.withdrawn` data, as long as it is an object
/// (or absent).
#[derive(Deserialize)]
struct RawEmpty {}

/// The Kafka record key an event value belongs under (the contract: its
/// commune code), if it is a JSON object with a string `commune_code`;
/// whether it is otherwise valid is the pipeline's to judge.
pub fn record_key(value: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Keyed<'a> {
        #[serde(borrow, default)]
        commune_code: Option<Cow<'a, str>>,
    }
    let keyed: Keyed<'_> = serde_json::from_slice(value).ok()?;
    keyed.commune_code.map(Cow::into_owned)
}

/// The unit an event of `day` names, and its case's home (see
/// [`Units::commune_on`]).
fn commune(units: &Units, code: &str, day: NaiveDate) -> Result<(UnitCode, UnitCode), Rejection> {
    let found = units.commune_on(code, day);
    found
        .map(|(c, h)| (c.clone(), h.clone()))
        .map_err(|refusal| match refusal {
            Refusal::Unknown => Rejection::UnknownCommune(clip(code)),
            Refusal::NotYetValid { from } => Rejection::UnitNotYetValid {
                code: clip(code),
                from,
                day,
            },
            Refusal::Ended { to, successors } => Rejection::UnitEnded {
                code: clip(code),
                to,
                successors: successors
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        })
}

/// Decodes and validates one record value against contract version 1.
pub fn decode(value: Option<&[u8]>, units: &Units) -> Result<CaseEvent, Rejection> {
    let bytes = value.ok_or(Rejection::NoValue)?;
    let text = std::str::from_utf8(bytes).map_err(|_| Rejection::NotUtf8)?;
    if !text.trim_start().starts_with('{') {
        // serde would read a JSON array as a struct's fields in order.
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Rejection::NotAnObject,
            Err(e) => Rejection::NotJson(e.to_string()),
        });
    }
    let raw: RawEnvelope<'_> = match parse(text, "") {
        Ok(raw) => raw,
        Err(rejection) => return Err(future_version(text).unwrap_or(rejection)),
    };
    match raw.schema_version {
        None => return Err(Rejection::MissingField("schema_version")),
        Some(SCHEMA_VERSION) => {}
        Some(v) if v > SCHEMA_VERSION => return Err(Rejection::FutureSchemaVersion(v)),
        Some(v) => return Err(Rejection::BadSchemaVersion(v)),
    }
    let event_id = raw.event_id.ok_or(Rejection::MissingField("event_id"))?;
    let id_chars = event_id.chars().count();
    if id_chars == 0 || id_chars > MAX_EVENT_ID_CHARS {
        return Err(Rejection::EventIdLength(id_chars));
    }
    let event_type = raw
        .event_type
        .ok_or(Rejection::MissingField("event_type"))?;
    let occurred_at = raw
        .occurred_at
        .ok_or(Rejection::MissingField("occurred_at"))?;
    let occurred_at = timestamp("occurred_at", &occurred_at)?;
    let commune_code = raw
        .commune_code
        .ok_or(Rejection::MissingField("commune_code"))?;
    // Microseconds: what the store keeps, so that which fact wins cannot
    // change when a case is written and read back. The day is that instant's
    // (a leap second, 23:59:60, rounds into the next second, which may be
    // the next day); it decides which unit the code names.
    let occurred_at = truncate_to_micros(occurred_at.with_timezone(&Utc));
    let day = local_date(occurred_at);
    let (commune, home) = commune(units, &commune_code, day)?;
    let case_id = raw.case_id.filter(|c| !c.is_empty());
    if let Some(c) = &case_id {
        stored_text("case_id", c)?;
    }
    stored_text("event_id", &event_id)?;
    let data = raw.data.map(RawValue::get).unwrap_or("{}");
    if !data.starts_with('{') {
        return Err(Rejection::WrongType {
            field: "data".into(),
            detail: "expected an object".into(),
        });
    }

    let kind = match &*event_type {
        "case.received" => EventKind::Received(received(data)?),
        "case.resolved" => EventKind::Resolved(resolved(data)?),
        "case.withdrawn" => {
            let _: RawEmpty = parse(data, "data")?;
            EventKind::Withdrawn
        }
        "case.rated" => EventKind::Rated(rated(data)?),
        "document.signed" => EventKind::DocumentSigned(signed(data)?),
        other => return Err(Rejection::UnknownEventType(clip(other))),
    };
    if case_id.is_none() && !matches!(kind, EventKind::DocumentSigned(_)) {
        return Err(Rejection::CaseIdMissing);
    }
    Ok(CaseEvent {
        event_id: event_id.into_owned(),
        day,
        occurred_at,
        commune,
        home,
        case_id: case_id.map(Cow::into_owned),
        kind,
    })
}

fn received(data: &str) -> Result<Received, Rejection> {
    let raw: RawReceived<'_> = parse(data, "data")?;
    let procedure_code = raw
        .procedure_code
        .ok_or(Rejection::MissingField("data.procedure_code"))?;
    stored_text("data.procedure_code", &procedure_code)?;
    let channel = match raw.channel.as_deref() {
        None => return Err(Rejection::MissingField("data.channel")),
        Some("in_person") => Channel::InPerson,
        Some("online") => Channel::Online,
        Some("postal") => Channel::Postal,
        Some(other) => {
            return Err(invalid(
                "data.channel",
                other,
                "in_person, online or postal",
            ))
        }
    };
    let online_level = match raw.online_level.as_deref() {
        None => return Err(Rejection::MissingField("data.online_level")),
        Some("none") => OnlineLevel::None,
        Some("partial") => OnlineLevel::Partial,
        Some("full") => OnlineLevel::Full,
        Some(other) => return Err(invalid("data.online_level", other, "none, partial or full")),
    };
    let due_at = raw.due_at.ok_or(Rejection::DueAtMissing)?;
    let due_date = local_date_of(&timestamp("data.due_at", &due_at)?);
    let registered_electronically = raw
        .registered_electronically
        .ok_or(Rejection::MissingField("data.registered_electronically"))?;
    Ok(Received {
        procedure_code: procedure_code.into(),
        channel,
        online_level,
        due_date,
        registered_electronically,
        digitized: raw.digitized.unwrap_or(false),
    })
}

fn resolved(data: &str) -> Result<Resolved, Rejection> {
    let raw: RawResolved<'_> = parse(data, "data")?;
    let due_at = raw.due_at.ok_or(Rejection::DueAtMissing)?;
    let due_date = local_date_of(&timestamp("data.due_at", &due_at)?);
    let outcome = match raw.outcome.as_deref() {
        None => return Err(Rejection::MissingField("data.outcome")),
        Some("completed") => Outcome::Completed,
        Some("rejected") => Outcome::Rejected,
        Some(other) => return Err(invalid("data.outcome", other, "completed or rejected")),
    };
    Ok(Resolved { due_date, outcome })
}

fn rated(data: &str) -> Result<Rated, Rejection> {
    let raw: RawRated<'_> = parse(data, "data")?;
    let rating = match raw.rating.as_deref() {
        None => return Err(Rejection::MissingField("data.rating")),
        Some("very_satisfied") => Rating::VerySatisfied,
        Some("satisfied") => Rating::Satisfied,
        Some("dissatisfied") => Rating::Dissatisfied,
        Some(other) => {
            return Err(invalid(
                "data.rating",
                other,
                "very_satisfied, satisfied or dissatisfied",
            ))
        }
    };
    let score = match raw.score {
        None => None,
        Some(s) if (0..=MAX_SCORE as i64).contains(&s) => Some(s as u8),
        Some(s) => {
            return Err(invalid(
                "data.score",
                &s.to_string(),
                "an integer from 0 to 18",
            ))
        }
    };
    Ok(Rated { rating, score })
}

fn signed(data: &str) -> Result<DocumentSigned, Rejection> {
    let raw: RawSigned<'_> = parse(data, "data")?;
    let document_id = raw
        .document_id
        .filter(|d| !d.is_empty())
        .ok_or(Rejection::MissingField("data.document_id"))?;
    stored_text("data.document_id", &document_id)?;
    let signature = match raw.signature.as_deref() {
        None => return Err(Rejection::MissingField("data.signature")),
        Some("digital") => Signature::Digital,
        Some("handwritten") => Signature::Handwritten,
        Some(other) => return Err(invalid("data.signature", other, "digital or handwritten")),
    };
    Ok(DocumentSigned {
        document_id: document_id.into_owned(),
        signature,
        document_kind: raw.document_kind.map(Cow::into_owned),
    })
}

/// Parses `text` as `T`, naming the failing field (prefixed by `at`).
///
/// The fast path is plain serde; only a record that fails is parsed again,
/// tracking the path, to say which field was wrong.
fn parse<'a, T: Deserialize<'a>>(text: &'a str, at: &str) -> Result<T, Rejection> {
    let mut de = serde_json::Deserializer::from_str(text);
    if let Ok(value) = T::deserialize(&mut de) {
        de.end().map_err(|e| Rejection::NotJson(e.to_string()))?;
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let Err(err) = serde_path_to_error::deserialize::<_, T>(&mut de) else {
        unreachable!("the same input failed to parse a moment ago")
    };
    let path = err.path().to_string();
    Err(classify(err.into_inner(), at, &path))
}

fn classify(err: serde_json::Error, at: &str, path: &str) -> Rejection {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => Rejection::NotJson(err.to_string()),
        Category::Data if path == "." || path.is_empty() => {
            if at.is_empty() {
                Rejection::NotAnObject
            } else {
                Rejection::WrongType {
                    field: at.to_string(),
                    detail: strip_position(&err),
                }
            }
        }
        Category::Data => {
            let field = if at.is_empty() {
                path.to_string()
            } else {
                format!("{at}.{path}")
            };
            Rejection::WrongType {
                field,
                detail: strip_position(&err),
            }
        }
    }
}

/// serde's message without its position, clipped: it can quote the input.
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => clip(&text[..i]),
        None => clip(&text),
    }
}

fn future_version(text: &str) -> Option<Rejection> {
    let only: VersionOnly = serde_json::from_str(text).ok()?;
    match only.schema_version? {
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(v) if v > SCHEMA_VERSION => Some(Rejection::FutureSchemaVersion(v)),
            _ => None,
        },
        _ => None,
    }
}

fn timestamp(field: &'static str, value: &str) -> Result<DateTime<FixedOffset>, Rejection> {
    DateTime::parse_from_rfc3339(value).map_err(|_| {
        let naive = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f"));
        if naive.is_ok() {
            Rejection::TimestampWithoutOffset {
                field,
                value: clip(value),
            }
        } else {
            Rejection::BadTimestamp {
                field,
                value: clip(value),
            }
        }
    })
}

/// A text the store keeps: PostgreSQL's text cannot hold a NUL character,
/// so one would fail its whole batch, again and again; it is refused here
/// (kept as a dead letter) instead.
fn stored_text(field: &'static str, value: &str) -> Result<(), Rejection> {
    if value.contains('\0') {
        return Err(invalid(
            field,
            value,
            "text without NUL characters (U+0000)",
        ));
    }
    Ok(())
}

fn invalid(field: &'static str, value: &str, expected: &'static str) -> Rejection {
    Rejection::InvalidValue {
        field,
        value: clip(value),
        expected,
    }
}

fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Keeps reasons short whatever the input: at most 64 characters of a value.
/// A value quoted in a reason: at most 64 characters, a NUL spelt `\u0000`.
fn clip(value: &str) -> String {
    let clipped = match value.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &value[..i]),
        None => value.to_string(),
    };
    clipped.replace('\0', "\\u0000")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::units::tests::long_my;

    fn ok(json: &str) -> CaseEvent {
        decode(Some(json.as_bytes()), &long_my()).unwrap()
    }

    fn err(json: &str) -> Rejection {
        decode(Some(json.as_bytes()), &long_my()).unwrap_err()
    }

    const RECEIVED: &str = r#"{"event_id":"0b6f3c1e-2f4e-4f7e-9a51-6f1d2b8e7c11","event_type":"case.received","schema_version":1,"occurred_at":"2023-03-30T10:44:00+07:00","commune_code":"31471","case_id":"000.00.31.H37-230330-0001","data":{"procedure_code":"1.001234","channel":"online","online_level":"full","due_at":"2023-04-04T17:00:00+07:00","registered_electronically":true}}"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(RECEIVED).unwrap();
        let (obj, key) = match field.strip_prefix("data.") {
            Some(k) => (v["data"].as_object_mut().unwrap(), k),
            None => (v.as_object_mut().unwrap(), field),
        };
        if value == "<absent>" {
            obj.remove(key);
        } else {
            obj.insert(key.to_string(), serde_json::from_str(value).unwrap());
        }
        v.to_string()
    }

    #[test]
    fn the_contract_example_decodes() {
        let e = ok(RECEIVED);
        assert_eq!(e.event_id, "0b6f3c1e-2f4e-4f7e-9a51-6f1d2b8e7c11");
        assert_eq!(e.commune.as_str(), "31471");
        assert_eq!(e.day, NaiveDate::from_ymd_opt(2023, 3, 30).unwrap());
        assert_eq!(e.case_id.as_deref(), Some("000.00.31.H37-230330-0001"));
        let EventKind::Received(r) = e.kind else {
            panic!("not received")
        };
        assert!(r.counts_online());
        assert!(r.registered_electronically);
        assert!(!r.digitized, "digitized defaults to false");
        assert_eq!(r.due_date, NaiveDate::from_ymd_opt(2023, 4, 4).unwrap());
    }

    #[test]
    fn a_nul_character_in_a_stored_text_is_refused_and_never_quoted_raw() {
        // PostgreSQL's text cannot hold U+0000: stored, it would fail the
        // batch over and over; refused, the record is a dead letter.
        for (field, value) in [
            ("case_id", r#""a\u0000b""#),
            ("event_id", r#""e\u0000""#),
            ("data.procedure_code", r#""1.0\u00001""#),
        ] {
            let why = err(&with(field, value));
            assert_eq!(why.code(), "invalid_value", "{field}: {why}");
            assert!(!why.to_string().contains('\0'), "{field}: {why:?}");
            assert!(why.to_string().contains("\\u0000"), "{field}: {why}");
        }
        // A quoted value in any other reason is spelt out too.
        let why = err(&with("commune_code", r#""3147\u00001""#));
        assert!(!why.to_string().contains('\0'), "{why:?}");
        let EventKind::Received(r) = ok(RECEIVED).kind else {
            panic!("not received")
        };
        assert_eq!(&*r.procedure_code, "1.001234");
    }

    #[test]
    fn unknown_extra_fields_are_ignored() {
        let e = ok(&with("data.something_new", r#"{"nested":[1,2]}"#));
        assert_eq!(e.commune.as_str(), "31471");
        ok(&with("trace_id", r#""abc""#));
    }

    #[test]
    fn each_kind_of_bad_input_has_its_own_reason() {
        let units = long_my();
        assert_eq!(decode(None, &units).unwrap_err().code(), "no_value");
        assert_eq!(
            decode(Some(&[0xff, 0xfe]), &units).unwrap_err().code(),
            "not_utf8"
        );
        assert_eq!(err("{\"event_id\":").code(), "not_json");
        assert_eq!(err("{} trailing").code(), "not_json");
        assert_eq!(err("[1,2]").code(), "not_an_object");
        assert_eq!(err("42").code(), "not_an_object");
        assert_eq!(
            err(&with("event_id", "<absent>")),
            Rejection::MissingField("event_id")
        );
        assert_eq!(
            err(&with("occurred_at", "null")),
            Rejection::MissingField("occurred_at")
        );
        assert!(matches!(
            err(&with("event_id", "17")),
            Rejection::WrongType { field, .. } if field == "event_id"
        ));
        assert!(matches!(
            err(&with("data.registered_electronically", r#""yes""#)),
            Rejection::WrongType { field, .. } if field == "data.registered_electronically"
        ));
        assert!(matches!(
            err(&with("data", "[]")),
            Rejection::WrongType { field, .. } if field == "data"
        ));
        assert_eq!(
            err(&with("event_type", r#""case.reopened""#)),
            Rejection::UnknownEventType("case.reopened".into())
        );
        assert_eq!(
            err(&with("commune_code", r#""99999""#)),
            Rejection::UnknownCommune("99999".into())
        );
        assert_eq!(
            err(&with("commune_code", r#""937""#)).code(),
            "unknown_commune",
            "a town is not a commune"
        );
        assert_eq!(
            err(&with("occurred_at", r#""2023-03-30T10:44:00""#)).code(),
            "timestamp_without_offset"
        );
        assert_eq!(
            err(&with("data.due_at", r#""2023-04-04 17:00:00""#)).code(),
            "timestamp_without_offset"
        );
        assert_eq!(
            err(&with("occurred_at", r#""yesterday""#)).code(),
            "bad_timestamp"
        );
        assert_eq!(
            err(&with("schema_version", "2")),
            Rejection::FutureSchemaVersion(2)
        );
        assert_eq!(
            err(&with("schema_version", "0")),
            Rejection::BadSchemaVersion(0)
        );
        assert_eq!(
            err(&with("data.due_at", "<absent>")),
            Rejection::DueAtMissing
        );
        assert_eq!(err(&with("event_id", r#""""#)), Rejection::EventIdLength(0));
        assert_eq!(
            err(&with("event_id", &format!("\"{}\"", "é".repeat(129)))),
            Rejection::EventIdLength(129)
        );
        assert_eq!(err(&with("case_id", "<absent>")), Rejection::CaseIdMissing);
        assert_eq!(
            err(&with("data.channel", r#""fax""#)).code(),
            "invalid_value"
        );
    }

    #[test]
    fn a_leap_second_counts_on_the_day_of_the_instant_kept() {
        // Found by the fuzzer: 23:59:60 local on 31 December is kept (to the
        // microsecond) as 00:00:00 on 1 January, and counts there.
        let e = ok(&with("occurred_at", r#""2023-12-31T23:59:60+07:00""#));
        assert_eq!(e.occurred_at.to_rfc3339(), "2023-12-31T17:00:00+00:00");
        assert_eq!(e.day, NaiveDate::from_ymd_opt(2024, 1, 1).unwrap());
    }

    #[test]
    fn a_future_version_is_not_guessed_at_even_when_its_shape_changed() {
        let v2 = r#"{"schema_version":2,"event_id":17,"data":"whatever"}"#;
        assert_eq!(err(v2), Rejection::FutureSchemaVersion(2));
    }

    #[test]
    fn an_event_id_of_128_multibyte_characters_is_accepted() {
        ok(&with("event_id", &format!("\"{}\"", "ệ".repeat(128))));
    }

    #[test]
    fn each_event_type_decodes() {
        let base = |t: &str, data: &str| {
            format!(
                r#"{{"event_id":"e","event_type":"{t}","schema_version":1,"occurred_at":"2023-05-01T08:00:00+07:00","commune_code":"31474","case_id":"c1","data":{data}}}"#
            )
        };
        let resolved = ok(&base(
            "case.resolved",
            r#"{"due_at":"2023-05-02T00:00:00Z","outcome":"rejected"}"#,
        ));
        assert!(matches!(
            resolved.kind,
            EventKind::Resolved(Resolved {
                outcome: Outcome::Rejected,
                ..
            })
        ));
        assert!(matches!(
            ok(&base("case.withdrawn", "{}")).kind,
            EventKind::Withdrawn
        ));
        let rated = ok(&base("case.rated", r#"{"rating":"satisfied","score":17}"#));
        assert_eq!(
            rated.kind,
            EventKind::Rated(Rated {
                rating: Rating::Satisfied,
                score: Some(17)
            })
        );
        assert_eq!(
            err(&base("case.rated", r#"{"rating":"satisfied","score":19}"#)).code(),
            "invalid_value"
        );
        let signed = ok(&base(
            "document.signed",
            r#"{"document_id":"d1","signature":"digital","document_kind":"case_result"}"#,
        ));
        assert!(matches!(
            signed.kind,
            EventKind::DocumentSigned(DocumentSigned {
                signature: Signature::Digital,
                ..
            })
        ));
        assert_eq!(
            err(&base("case.resolved", r#"{"outcome":"completed"}"#)),
            Rejection::DueAtMissing
        );
    }

    #[test]
    fn a_document_event_needs_no_case_id() {
        let json = r#"{"event_id":"e","event_type":"document.signed","schema_version":1,"occurred_at":"2023-05-01T08:00:00+07:00","commune_code":"31474","data":{"document_id":"d1","signature":"handwritten"}}"#;
        assert_eq!(ok(json).case_id, None);
    }

    #[test]
    fn long_garbage_is_clipped_in_the_reason() {
        let r = err(&with(
            "commune_code",
            &format!("\"{}\"", "9".repeat(10_000)),
        ));
        assert!(r.to_string().len() < 200);
    }

    #[test]
    fn a_wrongly_typed_long_value_gives_a_short_reason() {
        let r = err(&with(
            "schema_version",
            &format!("\"{}\"", "x".repeat(5000)),
        ));
        assert_eq!(r.code(), "wrong_type");
        assert!(r.to_string().len() < 200, "{}", r.to_string().len());
    }

    #[test]
    fn event_times_are_kept_to_the_microsecond_as_the_store_keeps_them() {
        let e = ok(&with(
            "occurred_at",
            r#""2023-03-30T10:44:00.123456789+07:00""#,
        ));
        assert_eq!(e.occurred_at.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn the_record_key_is_the_commune_code_when_there_is_one() {
        assert_eq!(record_key(RECEIVED.as_bytes()).as_deref(), Some("31471"));
        assert_eq!(
            record_key(br#"{"commune_code": "31\u00474"}"#).as_deref(),
            Some("31G4")
        );
        assert_eq!(record_key(br#"{"event_id": "e"}"#), None);
        assert_eq!(record_key(br#"{"commune_code": 31471}"#), None);
        assert_eq!(record_key(b"not json"), None);
    }

    #[test]
    fn every_code_is_listed() {
        let mut codes = Rejection::CODES.to_vec();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Rejection::CODES.len());
    }
}
