//! Events sent over HTTP, for one-stop software that cannot speak Kafka:
//!
//! - `POST /api/v1/events` (a producer token): each event judged as the
//!   pipeline would judge it (the same decoder and unit list) and against
//!   the producer's scope; the valid ones written to the events topic,
//!   keyed by their commune (the unit it became, for a unit that merged), by an idempotent producer with `acks=all`,
//!   before the answer, which gives each event's partition and offset or
//!   the reason it was refused. Nothing is buffered beyond librdkafka's
//!   bounded queue: when Kafka does not take the events within
//!   [`INGEST_DELIVERY_TIMEOUT`] (or the queue is full, or the brokers are
//!   known down), the answer is 503 with `Retry-After`, and the request can
//!   be sent again as it is: a repeated `event_id` changes nothing
//!   downstream (the pipeline's repeat rule).
//! - `POST /api/v1/events/validate` (a read, admin or producer token): the
//!   same judgement, nothing produced (with a producer token, its scope
//!   applies too).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer as _};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::auth::Producer;
use super::extract::ApiQuery;
use super::views::answer;
use super::{ApiError, Shared};
use crate::internal_events::{EventsReceived, InternalEvent};
use crate::kafka::INGEST_DELIVERY_TIMEOUT;
use crate::operate::{check, records, validate, Problem, Shape, ValidateError, OUT_OF_SCOPE};

/// How long a client should wait before sending a request again after a
/// 503 (seconds).
pub const RETRY_AFTER_SECONDS: u64 = 5;

#[derive(Deserialize)]
pub(super) struct ValidateQuery {
    /// How many refused records to list (all are counted).
    limit: Option<i64>,
}

/// The shape of a body, from its `Content-Type`.
fn shape(headers: &HeaderMap) -> Result<Shape, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match media.as_deref() {
        Some("application/x-ndjson") => Ok(Shape::Ndjson),
        Some("application/json") => Ok(Shape::Array),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "send the events as application/x-ndjson (one per line) or application/json (an array), not {}",
            other.unwrap_or("a body without a Content-Type")
        ))),
    }
}

/// `POST /api/v1/events/validate`: counts by reason and the first refused
/// records, with their line, reason code and field.
pub(super) async fn validate_events(
    State(s): State<Shared>,
    producer: Option<Extension<Arc<Producer>>>,
    ApiQuery(q): ApiQuery<ValidateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let keep = s.limit(q.limit)?;
    let shape = shape(&headers)?;
    let scope = producer.as_ref().map(|p| &p.scope);
    // On the runtime's thread: a body is at most `http.max_body_bytes`
    // (1 MiB, some 3,000 events: about 3 ms of decoding).
    match validate(&body[..], &s.units, scope, keep as usize, shape) {
        Ok(v) => answer(&v),
        Err(e) => Err(unreadable(e)),
    }
}

fn unreadable(e: ValidateError) -> ApiError {
    match e {
        ValidateError::NotAnArray(e) => ApiError::BadRequest(format!(
            "an application/json body is an array of events: {e}"
        )),
        ValidateError::Io(_) => ApiError::Internal,
    }
}

/// What became of one event of a `POST /api/v1/events`.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Outcome {
    /// Written to the events topic (acknowledged by all in-sync replicas).
    Accepted {
        event_id: String,
        partition: i32,
        offset: i64,
    },
    /// Not written: why.
    Refused(Problem),
}

/// One event's line and outcome.
#[derive(Debug, Serialize)]
struct EventResult {
    /// 0-based position in the request.
    index: usize,
    /// 1-based line of the body the event is on (starts on).
    line: usize,
    #[serde(flatten)]
    outcome: Outcome,
}

/// The answer of `POST /api/v1/events`.
#[derive(Debug, Serialize)]
struct IngestAnswer {
    topic: String,
    accepted: usize,
    refused: usize,
    /// One per event, in request order.
    events: Vec<EventResult>,
}

/// An event as read, before it is sent.
struct Judged {
    line: usize,
    /// The event as sent, when it is to be written.
    bytes: Vec<u8>,
    /// Its id and commune, or why it is refused.
    verdict: Result<(String, String), Problem>,
}

/// `POST /api/v1/events`: every event judged, the valid ones written to the
/// events topic before the answer.
///
/// Statuses: 200 when at least one event was written (the others refused,
/// each with its reason); 422 when every event was refused against the
/// contract (or some of them as outside the scope); 403 when every event is
/// for a commune outside the producer's scope; 400 for a body without
/// events or an array that is not one; 413 for more than `http.max_events`
/// events (or more than `http.max_body_bytes`); 503 with `Retry-After` when
/// Kafka does not take them (send the request again as it is).
pub(super) async fn ingest(
    State(s): State<Shared>,
    Extension(producer): Extension<Arc<Producer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shape = shape(&headers)?;
    let max = s.http.max_events;
    let mut judged = Vec::new();
    let mut over = false;
    records(&body[..], shape, |line, bytes| {
        if judged.len() == max {
            over = true;
            return;
        }
        let verdict = check(bytes, &s.units, Some(&producer.scope))
            // Keyed by the case's home: across a merge, the old units'
            // records and their successor's share a partition.
            .map(|e| (e.event_id, e.home.as_str().to_string()));
        let bytes = if verdict.is_ok() {
            bytes.to_vec()
        } else {
            Vec::new()
        };
        judged.push(Judged {
            line,
            bytes,
            verdict,
        });
    })
    .map_err(unreadable)?;
    if over {
        return Err(ApiError::TooLarge(format!(
            "at most {max} events per request (http.max_events); send the rest in another"
        )));
    }
    if judged.is_empty() {
        return Err(ApiError::BadRequest("the body holds no events".into()));
    }
    let out_of_scope = judged
        .iter()
        .filter(|j| matches!(&j.verdict, Err(p) if p.reason_code == OUT_OF_SCOPE))
        .count();
    let valid = judged.iter().filter(|j| j.verdict.is_ok()).count();
    let refused = judged.len() - valid - out_of_scope;
    let tally = |accepted: usize, not_sent: usize| EventsReceived {
        producer: &producer.name,
        accepted,
        refused,
        out_of_scope,
        not_sent,
    };
    if out_of_scope == judged.len() {
        tally(0, 0).emit(&s.metrics);
        return Err(ApiError::Forbidden(format!(
            "every event is for a commune outside the units producer `{}` may send for; nothing was written",
            producer.name
        )));
    }
    let sent = if valid > 0 {
        match send(&s, &judged).await {
            Ok(sent) => sent,
            Err(why) => {
                tally(0, valid).emit(&s.metrics);
                return Ok(unavailable(&why));
            }
        }
    } else {
        Vec::new()
    };
    tally(valid, 0).emit(&s.metrics);
    let mut sent = sent.into_iter();
    let events: Vec<EventResult> = judged
        .into_iter()
        .enumerate()
        .map(|(index, j)| EventResult {
            index,
            line: j.line,
            outcome: match j.verdict {
                Ok((event_id, _)) => {
                    let (partition, offset) = sent.next().expect("one delivery per valid event");
                    Outcome::Accepted {
                        event_id,
                        partition,
                        offset,
                    }
                }
                Err(problem) => Outcome::Refused(problem),
            },
        })
        .collect();
    let status = if valid > 0 {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = IngestAnswer {
        topic: s.events_topic.clone(),
        accepted: valid,
        refused: events.len() - valid,
        events,
    };
    Ok((status, Json(body)).into_response())
}

/// Writes the valid events to the topic, each keyed by its case's home (its
/// commune, but for a unit that merged into another: docs/UNITS.md), and
/// waits for every acknowledgement: their (partition, offset) in order, or
/// why Kafka did not take them all.
async fn send(s: &Shared, judged: &[Judged]) -> Result<Vec<(i32, i64)>, String> {
    let ingest = &s.ingest;
    if ingest.reachability.is_down() && !probe(s).await {
        return Err("Kafka does not answer".into());
    }
    let mut deliveries = Vec::new();
    for j in judged {
        let Ok((_, commune)) = &j.verdict else {
            continue;
        };
        let record = FutureRecord::to(&s.events_topic)
            .key(commune.as_str())
            .payload(&j.bytes);
        match ingest.producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err("Kafka is not taking events as fast as they come".into());
            }
            Err((e, _)) => {
                warn!(error = %e, "cannot queue an event sent over HTTP");
                return Err(format!("cannot queue the events: {e}"));
            }
        }
    }
    // librdkafka gives up on a delivery after INGEST_DELIVERY_TIMEOUT, by
    // a timer that runs late on a busy machine; the answer must not wait on
    // it past the request's deadline: what is still unacknowledged then is
    // a 503 (sending the same request again is safe: repeats count once).
    let Ok(results) = tokio::time::timeout(ANSWER_WITHIN, join_all(deliveries)).await else {
        warn!("events sent over HTTP not acknowledged in time");
        return Err(format!(
            "Kafka did not acknowledge the events within {} s",
            ANSWER_WITHIN.as_secs()
        ));
    };
    let mut written = Vec::with_capacity(results.len());
    let mut failed = None;
    for result in results {
        match result {
            Ok(Ok(d)) => written.push((d.partition, d.offset)),
            Ok(Err((e, _))) => failed = Some(e.to_string()),
            Err(_) => failed = Some("the producer stopped".into()),
        }
    }
    match failed {
        None => {
            ingest.reachability.set_down(false);
            Ok(written)
        }
        Some(e) => {
            warn!(error = %e, written = written.len(), "events sent over HTTP not all acknowledged");
            Err(format!(
                "Kafka did not acknowledge every event within {} s ({} of {} were written; {e})",
                INGEST_DELIVERY_TIMEOUT.as_secs(),
                written.len(),
                judged.iter().filter(|j| j.verdict.is_ok()).count()
            ))
        }
    }
}

/// How long a request waits for its deliveries at most: librdkafka's
/// delivery timeout and a margin, well inside the request deadline.
const ANSWER_WITHIN: std::time::Duration =
    INGEST_DELIVERY_TIMEOUT.saturating_add(std::time::Duration::from_secs(2));

/// Whether the brokers answer now (a look at the events topic, at most 2 s),
/// after librdkafka said they were all down.
async fn probe(s: &Shared) -> bool {
    let producer = s.ingest.producer.clone();
    let topic = s.events_topic.clone();
    let answered = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), std::time::Duration::from_secs(2))
            .is_ok()
    })
    .await
    .unwrap_or(false);
    if answered {
        s.ingest.reachability.set_down(false);
    }
    answered
}

/// 503 with `Retry-After`: send the same request again later.
fn unavailable(why: &str) -> Response {
    let mut res = ApiError::Unavailable(format!(
        "{why}; nothing is lost by sending the same request again in {RETRY_AFTER_SECONDS} s          (events written already are recognised as repeats)"
    ))
    .into_response();
    res.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&RETRY_AFTER_SECONDS.to_string()).expect("digits"),
    );
    res
}
