//! The API against a real (SQLite) store filled by the real projector.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{NaiveDate, Utc};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use axum::Router;

use super::openapi::{
    with_indicator_ids, ALERT_SCHEMA_ANCHOR, COMMITTED as OPENAPI, OPENAPI_ANCHOR,
};
use super::views::indicators;
use super::*;
use crate::config::Settings;
use crate::domain::time::local_date;
use crate::domain::{Indicator, UnitKind};
use crate::metrics::Metrics;
use crate::projector::{ChangeNote, PartitionBatch, Projector, Record};
use crate::simulator::Simulator;

const READ: &str = "demo-read-token";
const ADMIN: &str = "demo-admin-token";
/// The configured producer for the town (its nine communes).
const PRODUCER: &str = "demo-producer-token";
/// A producer for Phường Thuận An (31471) only.
const ONE_COMMUNE: &str = "thuan-an-producer-token";

/// A router over a SQLite store holding `events` simulated events and one
/// dead letter, with the projector that filled it (its batches reach the
/// projections stream) and a producer to `bootstrap`.
struct Harness {
    app: Router,
    projector: Projector,
    settings: Settings,
    cache: Arc<QueryCache>,
    /// What the relay sends live subscribers.
    live: LiveAlerts,
}

/// The tests' read cache keeps answers far longer than any test runs, so
/// that a fresh answer after a batch can only come from the batch's note.
const LONG_TTL: Duration = Duration::from_secs(600);

fn simulated(settings: &Settings, from: usize, n: usize) -> Vec<Record> {
    let year = chrono::Datelike::year(&Utc::now());
    let start = NaiveDate::from_ymd_opt(year, 1, 1).unwrap();
    Simulator::new(&settings.units, 5, start, 5.0)
        .skip(from)
        .take(n)
        .enumerate()
        .map(|(k, r)| Record {
            partition: 0,
            offset: (from + k) as i64,
            key: Some(r.key.into_bytes()),
            value: Some(r.value.into_bytes()),
            written_ms: None,
        })
        .collect()
}

impl Harness {
    async fn new(events: usize, bootstrap: &str) -> Harness {
        Harness::with_settings(events, bootstrap, |_| {}).await
    }

    /// As [`Harness::new`], with the settings changed by `change` first.
    async fn with_settings(
        events: usize,
        bootstrap: &str,
        change: impl FnOnce(&mut Settings),
    ) -> Harness {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let mut settings = Settings::load_file(&file).unwrap();
        change(&mut settings);
        // Besides the configured producer for the town: one for a single
        // commune.
        settings
            .http
            .producers
            .push(crate::config::ProducerSettings {
                name: "thuan-an".into(),
                token: ONE_COMMUNE.into(),
                units: vec!["31471".into()],
            });
        // A file, as the demo's: queries read through their own read-only
        // connections, writes (a dead letter marked resent) through the
        // writing one. (scripts/test.sh clears var/test/ before a run.)
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("var/test/http");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{:016x}.sqlite", rand::random::<u64>()));
        let store = Store::connect(&format!("sqlite://{}", file.display()), 1, "t")
            .await
            .unwrap();
        let mut records = simulated(&settings, 0, events);
        records.push(Record {
            partition: 0,
            offset: events as i64,
            key: None,
            value: Some(b"not json".to_vec()),
            written_ms: None,
        });
        let metrics = Arc::new(Metrics::default());
        let projector = Projector::new(
            store.clone(),
            settings.units.clone(),
            Some(settings.evaluator()),
            metrics.clone(),
        );
        let h = Harness {
            app: Router::new(),
            projector: projector.clone(),
            settings: settings.clone(),
            cache: Arc::new(QueryCache::new(&projector.changes())),
            live: tokio::sync::broadcast::channel(4).0,
        };
        h.project(records).await;
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("message.timeout.ms", "10000")
            .create()
            .unwrap();
        let mut kafka = settings.kafka.clone();
        kafka.bootstrap_servers = bootstrap.to_string();
        let ingest = Ingest::new(&kafka).unwrap();
        // The state the application serves from, with a read cache that
        // keeps answers far longer than any test runs.
        let mut state = AppState::new(
            &settings,
            Feeds {
                store,
                live: h.live.clone(),
                changes: projector.changes(),
                metrics,
                producer,
                ingest,
                shutdown: Default::default(),
            },
        );
        state.events_topic = "t".into();
        state.cache = Arc::new(QueryCache::with_limits(
            &projector.changes(),
            LONG_TTL,
            cache::DEFAULT_CAPACITY,
        ));
        let cache = state.cache.clone();
        Harness {
            app: router(state),
            cache,
            ..h
        }
    }

    /// Projects `records` as one batch of partition 0 (none: a clock tick).
    async fn project(&self, records: Vec<Record>) {
        let claim = self.projector.store().claim(0).await.unwrap();
        self.projector
            .project_partition(
                &PartitionBatch {
                    partition: 0,
                    claim,
                    records: self.projector.decode_records(records),
                    behind: Some(0),
                },
                Utc::now(),
            )
            .await
            .unwrap();
    }
}

async fn app(events: usize) -> Router {
    Harness::new(events, "127.0.0.1:1").await.app
}

fn request(method: &str, uri: &str, token: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    req.body(Body::from(body)).unwrap()
}

/// Calls the API; every error answer must be `{"error": {"code", "message"}}`
/// JSON, whatever made it.
async fn call_with_headers(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Value) {
    let res = app
        .clone()
        .oneshot(request(method, uri, token, body))
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{method} {uri}: {status} answered {:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{method} {uri}: {status} answered {body}"
        );
    }
    (status, headers, body)
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let (status, _, body) = call_with_headers(app, method, uri, token, body).await;
    (status, body)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    call(app, "GET", uri, Some(READ), vec![]).await
}

/// Whether an answer is the router's own "no such route or method" (as
/// opposed to a handler's 404 for an unknown commune or dead letter).
fn is_no_route(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no such route")))
}

/// A documented path with its parameters filled with sample values.
fn sample_uri(path: &str) -> String {
    path.replace("{code}", "31471")
        .replace("{indicator}", "online_rate")
        .replace("{id}", "999999")
}

/// The status and content type of an answer, without reading its body (a
/// live stream never ends).
async fn head_of(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let res = app
        .clone()
        .oneshot(request(method, uri, token, vec![]))
        .await
        .unwrap();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (res.status(), content_type)
}

fn documented_operations() -> Vec<(String, String, Value)> {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let mut ops: Vec<(String, String, Value)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .iter()
                .map(move |(m, op)| (m.clone(), path.clone(), op.clone()))
        })
        .collect();
    ops.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    ops
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_with_their_tokens() {
    let documented: Vec<(String, String)> = documented_operations()
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    // Each operation names the token it needs: none, a read (or admin)
    // token, or an admin token.
    for (method, path, op) in documented_operations() {
        let access = ROUTES
            .iter()
            .find(|(m, p, _)| *m == method && *p == path)
            .unwrap()
            .2;
        let want = match access {
            Access::Public => Value::Null,
            Access::Read => serde_json::json!([{"bearer": []}]),
            Access::Stream => serde_json::json!([{"bearer": []}, {"query_token": []}]),
            Access::Admin => serde_json::json!([{"admin": []}]),
            Access::Produce => serde_json::json!([{"producer": []}]),
            Access::ReadOrProduce => serde_json::json!([{"bearer": []}, {"producer": []}]),
        };
        assert_eq!(
            op.get("security").cloned().unwrap_or(Value::Null),
            want,
            "{method} {path}: documented security vs {access:?}"
        );
    }
}

/// The router's routes are those of `ROUTES` only if `router` is the one
/// place that adds routes, and only from `ROUTES`: checked on the source.
#[test]
fn the_router_adds_routes_only_from_the_routes_table() {
    let source = include_str!("mod.rs");
    let code = &source[..source.find("#[cfg(test)]").unwrap()];
    assert_eq!(
        code.matches(".route(").count(),
        1,
        "one `.route(` call, in `router`'s loop over ROUTES"
    );
    assert!(code.contains("for &(method, path, access) in ROUTES {"));
    for forbidden in [
        ".nest(",
        ".nest_service(",
        ".route_service(",
        ".fallback_service(",
    ] {
        assert!(!code.contains(forbidden), "{forbidden} bypasses ROUTES");
    }
    // The merged routers are the table's parts.
    assert_eq!(code.matches(".merge(").count(), 5);
    for part in ["read", "stream", "admin", "produce", "check"] {
        assert!(
            code.contains(&format!(".merge({part}.route_layer(")),
            "{part}"
        );
    }
}

#[tokio::test]
async fn every_documented_operation_is_served_with_its_tokens() {
    let app = app(100).await;
    for (method, path, _) in documented_operations() {
        let uri = sample_uri(&path);
        let access = ROUTES
            .iter()
            .find(|(m, p, _)| *m == method && *p == path)
            .map(|r| r.2);
        let method = method.to_uppercase();
        if path.ends_with("/stream") {
            let (status, content_type) = head_of(&app, &method, &uri, Some(READ)).await;
            assert_eq!(status, StatusCode::OK, "{method} {uri}");
            assert_eq!(content_type, "text/event-stream", "{method} {uri}");
        } else {
            let (status, body) = call(&app, &method, &uri, Some(ADMIN), vec![]).await;
            assert!(
                !is_no_route(status, &body),
                "{method} {uri}: {status} {body}"
            );
            assert!(!status.is_server_error(), "{method} {uri}: {status} {body}");
        }
        let (status, _) = head_of(&app, &method, &uri, None).await;
        match access {
            Some(Access::Public) => assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {uri}"),
            Some(Access::Read | Access::Stream) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            }
            Some(Access::Admin | Access::Produce) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
                let (status, _) = head_of(&app, &method, &uri, Some(READ)).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
            }
            Some(Access::ReadOrProduce) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
                for token in [READ, PRODUCER] {
                    let (status, _) = head_of(&app, &method, &uri, Some(token)).await;
                    assert!(
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                        "{method} {uri}: {status}"
                    );
                }
            }
            None => panic!("{method} {path} is documented but not in ROUTES"),
        }
    }
    // And the check can fail: an undocumented path is the router's 404.
    let (status, body) = get(&app, "/api/v1/communes/31471/nothing").await;
    assert!(is_no_route(status, &body), "{status} {body}");
}

#[tokio::test]
async fn the_served_openapi_document_is_the_one_in_docs() {
    let app = app(1).await;
    let res = app
        .clone()
        .oneshot(request("GET", "/openapi.json", None, vec![]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    let served = res.into_body().collect().await.unwrap().to_bytes();
    let file =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"))
            .unwrap();
    // With the default configuration (the harness's), the same document.
    let served: Value = serde_json::from_slice(&served).unwrap();
    let doc: Value = serde_json::from_slice(&file).unwrap();
    assert_eq!(served, doc);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
}

/// Another server's document states its own page size and names its own
/// units as examples.
#[test]
fn the_served_document_states_the_servers_page_size_and_units() {
    let spec = crate::domain::UnitSpec::new;
    let specs = [
        spec("01", "Thành phố Hà Nội", UnitKind::Province, None),
        spec("00004", "Phường Ba Đình", UnitKind::Ward, Some("01")),
    ];
    let units = Units::parse(&specs).unwrap();
    let doc: Value = serde_json::from_str(&openapi::served(250, 40, &units)).unwrap();
    let params = &doc["components"]["parameters"];
    assert_eq!(params["Limit"]["schema"]["maximum"], 250);
    assert_eq!(params["AlertsLimit"]["schema"]["maximum"], 250);
    assert_eq!(
        doc["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["maxItems"],
        40
    );
    assert_eq!(params["UnitCode"]["examples"]["commune"]["value"], "00004");
    assert_eq!(params["UnitCode"]["examples"]["parent"]["value"], "01");
    assert_eq!(
        params["CommuneCode"]["examples"]["commune"]["value"],
        "00004"
    );
    assert!(params["UnitCode"]["examples"]["parent"]["summary"]
        .as_str()
        .unwrap()
        .contains("Hà Nội"));
}

/// The indicator ids of the committed OpenAPI document and alert schema
/// follow the declarations: when an indicator was added, this rewrites both
/// files (so that nobody edits them by hand) and fails once, asking for the
/// new files to be committed.
#[test]
fn the_committed_documents_list_the_declared_indicators() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (file, anchor) in [
        ("docs/openapi.json", OPENAPI_ANCHOR),
        ("docs/schemas/indicator-alert.v1.json", ALERT_SCHEMA_ANCHOR),
    ] {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let wanted = with_indicator_ids(&text, anchor);
        if wanted != text {
            std::fs::write(&path, &wanted).unwrap();
            stale.push(file);
        }
        let doc: Value = serde_json::from_str(&wanted).unwrap();
        assert!(doc.is_object(), "{file} is still JSON");
    }
    assert!(
        stale.is_empty(),
        "{stale:?} did not list the declared indicators: rewritten from the declarations, commit them"
    );
    let served: Value = serde_json::from_str(openapi::document()).unwrap();
    let ids: Vec<&str> = Indicator::ALL.iter().map(|i| i.id()).collect();
    assert_eq!(
        served["components"]["schemas"]["IndicatorId"]["enum"],
        serde_json::json!(ids)
    );
    assert_eq!(
        OPENAPI,
        openapi::document(),
        "the served document is the committed one"
    );
}

#[tokio::test]
async fn a_commune_answer_has_every_declared_indicator_with_targets_and_freshness() {
    let app = app(3000).await;
    let (status, body) = get(&app, "/api/v1/communes/31471/indicators?window=ytd").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answered: Vec<&str> = body["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["indicator"].as_str().unwrap())
        .collect();
    let declared: Vec<&str> = Indicator::ALL.iter().map(|i| i.id()).collect();
    assert_eq!(answered, declared);
    let digitization = &body["indicators"][5];
    assert_eq!(digitization["label_vi"], "Tỷ lệ số hóa hồ sơ");
    assert_eq!(digitization["label_en"], "digitisation rate");
    assert_eq!(digitization["target"]["percent"], 80.0);
    assert!(digitization["denominator"].as_i64().unwrap() > 0);
    assert_eq!(body["commune"]["name"], "Phường Long Mỹ");
    let online = &body["indicators"][0];
    assert_eq!(online["indicator"], "online_rate");
    assert!(online["denominator"].as_i64().unwrap() > 0);
    assert_eq!(online["target"]["comparator"], ">=");
    assert!(body["freshness"]["event_time"].is_string());
    assert!(body["freshness"]["committed_at"].is_string());
}

#[tokio::test]
async fn the_roll_up_sums_numerators_and_denominators_of_its_communes() {
    let app = app(3000).await;
    let (status, body) = get(&app, "/api/v1/units/92/communes?window=ytd").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let communes = body["communes"].as_array().unwrap();
    // Today's wards (the town and its nine units ended on 30 June 2025).
    assert_eq!(communes.len(), 3);
    for i in 0..Indicator::ALL.len() {
        let sum = |f: &str| {
            communes
                .iter()
                .map(|c| c["indicators"][i][f].as_i64().unwrap())
                .sum::<i64>()
        };
        assert_eq!(
            body["rollup"]["indicators"][i]["numerator"]
                .as_i64()
                .unwrap(),
            sum("numerator")
        );
        assert_eq!(
            body["rollup"]["indicators"][i]["denominator"]
                .as_i64()
                .unwrap(),
            sum("denominator")
        );
    }
}

#[tokio::test]
async fn a_daily_series_adds_up_to_the_window() {
    let app = app(3000).await;
    let (_, series) = get(
        &app,
        "/api/v1/communes/31480/series/satisfaction_rate?window=ytd",
    )
    .await;
    let (_, one) = get(&app, "/api/v1/communes/31480/indicators?window=ytd").await;
    let days = series["days"].as_array().unwrap();
    assert!(!days.is_empty());
    let total: i64 = days
        .iter()
        .map(|d| d["denominator"].as_i64().unwrap())
        .sum();
    assert_eq!(total, one["indicators"][2]["denominator"].as_i64().unwrap());
}

#[tokio::test]
async fn overdue_cases_page_through_without_repeats() {
    let app = app(3000).await;
    let mut seen = Vec::new();
    let mut uri = "/api/v1/communes/31473/overdue?limit=3".to_string();
    loop {
        let (status, body) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for c in body["cases"].as_array().unwrap() {
            assert!(c["days_overdue"].as_i64().unwrap() >= 1);
            seen.push(c["case_id"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(next) => uri = format!("/api/v1/communes/31473/overdue?limit=3&after={next}"),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_never_a_500() {
    let app = app(50).await;
    let cases = [
        (
            "/api/v1/communes/99999/indicators",
            StatusCode::NOT_FOUND,
            "unknown commune",
        ),
        (
            "/api/v1/communes/92/indicators",
            StatusCode::NOT_FOUND,
            "unknown commune",
        ),
        (
            "/api/v1/communes/31477/indicators",
            StatusCode::NOT_FOUND,
            "Xã Long Trị ended on 2025-06-30 (successors: `31471`)",
        ),
        (
            "/api/v1/communes/31471/indicators?as_of=2025-02-30",
            StatusCode::BAD_REQUEST,
            "as_of",
        ),
        (
            "/api/v1/units/00000/communes",
            StatusCode::NOT_FOUND,
            "unknown unit",
        ),
        (
            "/api/v1/communes/31471/indicators?window=last_week",
            StatusCode::BAD_REQUEST,
            "unknown window",
        ),
        (
            "/api/v1/communes/31471/indicators?window=2026-02-30..2026-03-01",
            StatusCode::BAD_REQUEST,
            "not a date",
        ),
        (
            "/api/v1/communes/31471/indicators?window=2026-03-01..2026-01-01",
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "/api/v1/communes/31471/series/speed",
            StatusCode::NOT_FOUND,
            "unknown indicator",
        ),
        (
            "/api/v1/communes/31471/overdue?limit=100000",
            StatusCode::BAD_REQUEST,
            "at most",
        ),
        (
            "/api/v1/communes/31471/overdue?after=garbage",
            StatusCode::BAD_REQUEST,
            "cursor",
        ),
        ("/api/v1/nothing", StatusCode::NOT_FOUND, "no such route"),
    ];
    for (uri, want, text) in cases {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, want, "{uri}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "{uri}: {message}");
    }
}

#[tokio::test]
async fn tokens_guard_the_api_and_the_admin_routes() {
    let app = app(50).await;
    let (status, _) = call(
        &app,
        "GET",
        "/api/v1/communes/31471/indicators",
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &app,
        "GET",
        "/api/v1/communes/31471/indicators",
        Some("wrong"),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &app,
        "GET",
        "/api/v1/admin/dead-letters",
        Some(READ),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(
        &app,
        "GET",
        "/api/v1/admin/dead-letters",
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["dead_letters"][0]["reason_code"], "not_json");
    assert_eq!(body["dead_letters"][0]["value"], "not json");
    let (status, _) = call(&app, "GET", "/health", None, vec![]).await;
    assert_eq!(status, StatusCode::OK, "probes need no token");
}

/// An error answer expected: method, URI, token, body; status, code and
/// a part of the message.
type ErrorCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    StatusCode,
    &'static str,
    &'static str,
);

/// Each case's answer is JSON with its status, code and message (and the
/// `Allow` header of a 405 named in the message).
async fn expect_errors(app: &Router, cases: Vec<ErrorCase>) {
    for (method, uri, token, body, want, code, text) in cases {
        // `call` checks the JSON shape of every error answer.
        let (status, headers, body) = call_with_headers(app, method, uri, token, body).await;
        assert_eq!(status, want, "{method} {uri}: {body}");
        assert_eq!(body["error"]["code"], code, "{method} {uri}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(text), "{method} {uri}: {message}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            let allow = headers[header::ALLOW].to_str().unwrap();
            assert!(
                message.ends_with(&format!("(allowed: {allow})")),
                "{message} names the methods of `Allow: {allow}`"
            );
        }
    }
}

#[tokio::test]
async fn a_bad_query_or_path_parameter_is_a_json_400_naming_it() {
    let app = app(10).await;
    let cases = vec![
        // Query rejections, named by parameter.
        (
            "GET",
            "/api/v1/communes/31471/overdue?limit=ten",
            Some(READ),
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "bad query parameter `limit`",
        ),
        (
            "GET",
            "/api/v1/alerts?limit=1.5",
            Some(READ),
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "bad query parameter `limit`",
        ),
        (
            "GET",
            "/api/v1/admin/dead-letters?after=yesterday",
            Some(ADMIN),
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "bad query parameter `after`",
        ),
        (
            "GET",
            "/api/v1/admin/dead-letters?limit=-",
            Some(ADMIN),
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "bad query parameter `limit`",
        ),
        // A path rejection, named by parameter.
        (
            "POST",
            "/api/v1/admin/dead-letters/abc/resend",
            Some(ADMIN),
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "path parameter `id` must be an integer, not `abc`",
        ),
        (
            "POST",
            "/api/v1/admin/dead-letters/99999999999999999999/resend",
            Some(ADMIN),
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "path parameter `id` must be an integer",
        ),
    ];
    expect_errors(&app, cases).await;
}

#[tokio::test]
async fn an_oversized_body_a_wrong_method_or_route_is_a_json_error_too() {
    let app = app(10).await;
    let big = vec![b'x'; 2 << 20];
    let cases = vec![
        // The body limit (http.max_body_bytes).
        (
            "POST",
            "/api/v1/admin/dead-letters/1/resend",
            Some(ADMIN),
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "larger than the limit of 1048576 bytes",
        ),
        // Wrong methods, on read, admin and public routes.
        (
            "DELETE",
            "/api/v1/communes/31471/indicators",
            Some(READ),
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE is not allowed on /api/v1/communes/31471/indicators",
        ),
        (
            "GET",
            "/api/v1/admin/dead-letters/1/resend",
            Some(ADMIN),
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET is not allowed",
        ),
        (
            "POST",
            "/health",
            None,
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST is not allowed on /health",
        ),
        // Unknown routes.
        (
            "GET",
            "/nothing/here",
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route: GET /nothing/here",
        ),
        (
            "PUT",
            "/api/v1/admin/nothing",
            Some(ADMIN),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route: PUT /api/v1/admin/nothing",
        ),
    ];
    expect_errors(&app, cases).await;
}

/// Reads server-sent events from an answer's body.
struct SseReader {
    body: Body,
    text: String,
}

impl SseReader {
    /// The next event's name and JSON data (within 5 s).
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_string)
                };
                if let (Some(event), Some(data)) = (field("event: "), field("data: ")) {
                    return (event, serde_json::from_str(&data).unwrap());
                }
                continue; // a keep-alive comment
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .expect("an event within 5 s")
                .expect("the stream goes on")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn the_alert_stream_sends_the_kinds_asked_for_and_refuses_an_unknown_one() {
    let h = Harness::new(10, "127.0.0.1:1").await;
    let (status, body) = get(&h.app, "/api/v1/alerts/stream?kinds=indicator.late").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let open = |uri: &'static str| {
        let app = h.app.clone();
        async move {
            let res = app
                .oneshot(request("GET", uri, Some(READ), vec![]))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            SseReader {
                body: res.into_body(),
                text: String::new(),
            }
        }
    };
    let mut risks =
        open("/api/v1/alerts/stream?kinds=indicator.at_risk,indicator.at_risk_cleared").await;
    let mut default = open("/api/v1/alerts/stream").await;
    let mut every = open("/api/v1/alerts/stream?kinds=indicator.breached,indicator.recovered,indicator.at_risk,indicator.at_risk_cleared").await;
    for (id, kind) in [
        ("a.1", "indicator.breached"),
        ("a.risk.1", "indicator.at_risk"),
        ("a.2", "indicator.recovered"),
    ] {
        let payload = serde_json::json!({"alert_id": id, "event_type": kind}).to_string();
        h.live.send(Arc::from(payload.as_str())).unwrap();
    }
    assert_eq!(risks.next().await.1["alert_id"], "a.risk.1");
    // Asked for nothing: the breach kinds, as a subscriber of before.
    assert_eq!(default.next().await.1["alert_id"], "a.1");
    assert_eq!(default.next().await.1["alert_id"], "a.2");
    for id in ["a.1", "a.risk.1", "a.2"] {
        assert_eq!(every.next().await.1["alert_id"], id);
    }
}

#[tokio::test]
async fn the_projections_stream_tells_each_committed_batch() {
    let h = Harness::new(100, "127.0.0.1:1").await;
    let res = h
        .app
        .clone()
        .oneshot(request(
            "GET",
            "/api/v1/projections/stream",
            Some(READ),
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut events = SseReader {
        body: res.into_body(),
        text: String::new(),
    };
    let (event, data) = events.next().await;
    assert_eq!(event, "freshness");
    assert!(data["freshness"]["event_time"].is_string(), "{data}");
    assert!(data["freshness"]["committed_at"].is_string(), "{data}");

    let batch = simulated(&h.settings, 101, 40);
    let mut communes: Vec<String> = batch
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    communes.sort();
    communes.dedup();
    h.project(batch).await;
    let (event, data) = events.next().await;
    assert_eq!(event, "changed");
    assert_eq!(data["partition"], 0);
    assert_eq!(data["records"], 40);
    let told: Vec<String> = serde_json::from_value(data["communes"].clone()).unwrap();
    assert_eq!(told, communes, "the communes of the batch's events");
    assert!(data["event_time"].is_string(), "{data}");
    assert!(data["clock"].is_string(), "{data}");
    assert!(data["committed_at"].is_string(), "{data}");

    // A clock tick (a batch without records) is told too.
    h.project(vec![]).await;
    let (event, data) = events.next().await;
    assert_eq!(event, "changed");
    assert_eq!(data["records"], 0);
    assert!(data["event_time"].is_null(), "{data}");
}

#[tokio::test]
async fn metrics_count_what_the_batches_did_by_outcome() {
    let app = app(200).await;
    let res = app
        .clone()
        .oneshot(request("GET", "/metrics", None, vec![]))
        .await
        .unwrap();
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for line in [
        "cchc_records_total 201",
        "cchc_dead_letters_total{reason=\"not_json\"} 1",
        "cchc_batches_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
}

#[tokio::test]
async fn a_token_in_the_query_opens_the_live_streams_only() {
    let app = app(10).await;
    let query = |uri: &str| format!("{uri}?token={READ}");
    for uri in ["/api/v1/alerts/stream", "/api/v1/projections/stream"] {
        let (status, content_type) = head_of(&app, "GET", &query(uri), None).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "text/event-stream")
        );
    }
    for uri in ["/api/v1/communes/31471/indicators", "/api/v1/alerts"] {
        let (status, body) = call(&app, "GET", &query(uri), None, vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
    }
    let (status, _) = call(
        &app,
        "GET",
        &query("/api/v1/admin/dead-letters"),
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_its_own_or_the_clients() {
    let app = app(10).await;
    let (_, headers, _) = call_with_headers(&app, "GET", "/health", None, vec![]).await;
    let made = headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/api/v1/alerts")
                .header("x-request-id", "from-the-client-7")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["x-request-id"], "from-the-client-7");
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics() {
    let app = app(1).await;
    let (status, content_type) = head_of(&app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
}

#[tokio::test]
async fn admin_answers_carry_freshness() {
    let app = app(20).await;
    let (status, body) = call(
        &app,
        "GET",
        "/api/v1/admin/dead-letters",
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["freshness"]["event_time"].is_string(), "{body}");
    assert!(body["freshness"]["committed_at"].is_string(), "{body}");
}

#[tokio::test]
async fn resending_an_unknown_dead_letter_is_a_json_404_behind_the_admin_token() {
    let app = app(10).await;
    let uri = "/api/v1/admin/dead-letters/424242/resend";
    let (status, _) = call(&app, "POST", uri, None, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, "POST", uri, Some("wrong"), vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&app, "POST", uri, Some(READ), vec![]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(&app, "POST", uri, Some(ADMIN), b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["message"], "no dead letter 424242");
}

/// Reads the record at `offset` of partition `partition` of topic `t`.
fn read_record(bootstrap: &str, partition: i32, offset: i64) -> (Option<Vec<u8>>, Vec<u8>) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "http-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("t", partition, rdkafka::Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            assert_eq!((m.partition(), m.offset()), (partition, offset));
            return (
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            );
        }
    }
    panic!("no record at t/{partition}/{offset}");
}

#[tokio::test]
async fn a_dead_letter_is_listed_then_sent_through_again() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("t", 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let h = Harness::new(10, &bootstrap).await;
    let list = || {
        call(
            &h.app,
            "GET",
            "/api/v1/admin/dead-letters",
            Some(ADMIN),
            vec![],
        )
    };

    let (status, body) = list().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body}");
    assert_eq!(letters[0]["value"], "not json");
    assert!(letters[0]["resent_at"].is_null());
    let id = letters[0]["id"].as_i64().unwrap();
    let uri = format!("/api/v1/admin/dead-letters/{id}/resend");

    // A "correction" that is not a JSON object is refused, nothing sent.
    for bad in [&b"still not json"[..], b"[1, 2]", b"\x00"] {
        let (status, body) = call(&h.app, "POST", &uri, Some(ADMIN), bad.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON object"));
    }
    let (_, body) = list().await;
    assert!(body["dead_letters"][0]["resent_at"].is_null(), "{body}");

    // The corrected event, given as the body, goes to the events topic keyed
    // by its commune.
    let corrected = simulated(&h.settings, 500, 1).remove(0);
    let commune = corrected.key.clone().unwrap();
    let (status, body) = call(
        &h.app,
        "POST",
        &uri,
        Some(ADMIN),
        corrected.value.clone().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id);
    assert_eq!(body["resent_to"]["topic"], "t");
    assert!(body["freshness"]["committed_at"].is_string(), "{body}");
    let partition = body["resent_to"]["partition"].as_i64().unwrap() as i32;
    let offset = body["resent_to"]["offset"].as_i64().unwrap();
    let (key, value) = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || read_record(&bootstrap, partition, offset)
    })
    .await
    .unwrap();
    assert_eq!(key, Some(commune));
    assert_eq!(value, corrected.value.unwrap());

    let (_, body) = list().await;
    assert!(
        body["dead_letters"][0]["resent_at"].is_string(),
        "marked resent: {body}"
    );

    // Without a body: the original bytes, as they were kept.
    let (status, body) = call(&h.app, "POST", &uri, Some(ADMIN), vec![]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offset = body["resent_to"]["offset"].as_i64().unwrap();
    let (_, value) =
        tokio::task::spawn_blocking(move || read_record(&bootstrap, partition, offset))
            .await
            .unwrap();
    assert_eq!(value, b"not json");
}

/// `n` simulated records of `commune` after the first `from` of the feed,
/// numbered from offset `offset` on.
fn simulated_for(settings: &Settings, commune: &str, from: usize, offset: i64) -> Vec<Record> {
    simulated(settings, from, 5000)
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(commune.as_bytes()))
        .take(40)
        .enumerate()
        .map(|(k, r)| Record {
            offset: offset + k as i64,
            ..r
        })
        .collect()
}

#[tokio::test]
async fn a_cached_commune_answer_follows_a_batch_naming_the_commune_only() {
    let h = Harness::new(400, "127.0.0.1:1").await;
    let one = "/api/v1/communes/31471/indicators?window=ytd";
    let other = "/api/v1/communes/31473/indicators?window=ytd";
    let (_, before) = get(&h.app, one).await;
    let (_, other_before) = get(&h.app, other).await;
    // Each ward's answer is its own sums and those of the two units it
    // came from (over this year), each cached.
    assert_eq!(h.cache.len(), 6, "both answers are cached");
    // Served from the cache, the same answer.
    let (_, again) = get(&h.app, one).await;
    assert_eq!(again["indicators"], before["indicators"]);

    let store = h.projector.store().clone();
    let today = local_date(Utc::now());
    let (from, to) = Window::YearToDate.days(today);
    let stored_before = store.commune_sums("31471", from, to).await.unwrap();
    let other_stored = store.commune_sums("31473", from, to).await.unwrap();
    let batch = simulated_for(&h.settings, "31471", 400, 401);
    assert!(!batch.is_empty());
    h.project(batch).await;
    let stored_after = store.commune_sums("31471", from, to).await.unwrap();
    assert_ne!(stored_after, stored_before, "the batch changes the commune");
    assert_eq!(
        store.commune_sums("31473", from, to).await.unwrap(),
        other_stored,
        "and only that one"
    );

    // The note dropped the commune's answer: the next one is the store's.
    let (status, after) = get(&h.app, one).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_ne!(after["indicators"], before["indicators"]);
    assert_eq!(
        after["indicators"],
        serde_json::to_value(indicators(
            &h.settings.targets,
            Some(&h.settings.units.get("31471").unwrap().code),
            &stored_after
        ))
        .unwrap()
    );
    // The note moved the freshness on (no store read: the TTL is long).
    assert!(
        after["freshness"]["committed_at"].as_str() > before["freshness"]["committed_at"].as_str(),
        "{} then {}",
        before["freshness"],
        after["freshness"]
    );
    // The other commune's answer is still the cached one.
    assert!(h.cache.cached_sums(&store, "31473", from, to).is_ok());
    let (_, other_after) = get(&h.app, other).await;
    assert_eq!(other_after["indicators"], other_before["indicators"]);
}

#[tokio::test]
async fn a_read_overtaken_by_a_note_about_its_commune_is_not_kept() {
    let h = Harness::new(400, "127.0.0.1:1").await;
    let store = h.projector.store().clone();
    let (from, to) = Window::YearToDate.days(local_date(Utc::now()));
    let cache = QueryCache::with_limits(&h.projector.changes(), LONG_TTL, 100);

    // A read, then a commit changing the commune before its result is kept.
    let ticket = cache.cached_sums(&store, "31471", from, to).unwrap_err();
    let started = std::time::Instant::now();
    let stale = store.commune_sums("31471", from, to).await.unwrap();
    h.project(simulated_for(&h.settings, "31471", 400, 401))
        .await;
    assert!(!cache.keep_sums(&store, ticket, started, "31471", (from, to), stale));
    assert!(cache.cached_sums(&store, "31471", from, to).is_err());

    // A note about another commune does not void the ticket.
    let ticket = cache.cached_sums(&store, "31471", from, to).unwrap_err();
    let sums = store.commune_sums("31471", from, to).await.unwrap();
    h.project(simulated_for(&h.settings, "31473", 5400, 441))
        .await;
    assert!(cache.keep_sums(&store, ticket, started, "31471", (from, to), sums));
    assert_eq!(cache.cached_sums(&store, "31471", from, to), Ok(sums));
}

#[tokio::test]
async fn cached_sums_expire_after_the_ttl_when_no_note_comes() {
    let h = Harness::new(400, "127.0.0.1:1").await;
    let store = h.projector.store().clone();
    let (from, to) = Window::YearToDate.days(local_date(Utc::now()));
    // Long enough for the commit below on a loaded machine (300 ms was
    // not, with a build beside it).
    let ttl = Duration::from_secs(5);
    let cache = QueryCache::with_limits(&h.projector.changes(), ttl, 100);
    let before = cache.commune_sums(&store, "31471", from, to).await.unwrap();
    let cached_at = std::time::Instant::now();
    assert_eq!(cache.len(), 1);
    // Another member's commit: this process hears no note of it.
    let elsewhere = Projector::new(
        store.clone(),
        h.settings.units.clone(),
        None,
        Default::default(),
    );
    let claim = store.claim(0).await.unwrap();
    elsewhere
        .project_partition(
            &PartitionBatch {
                partition: 0,
                claim,
                records: elsewhere.decode_records(simulated_for(&h.settings, "31471", 400, 401)),
                behind: Some(0),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let stored = store.commune_sums("31471", from, to).await.unwrap();
    assert_ne!(stored, before);
    assert_eq!(cache.cached_sums(&store, "31471", from, to), Ok(before));
    tokio::time::sleep(ttl.saturating_sub(cached_at.elapsed())).await;
    assert!(cache.cached_sums(&store, "31471", from, to).is_err());
    assert_eq!(
        cache.commune_sums(&store, "31471", from, to).await.unwrap(),
        stored
    );
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity_and_a_missed_note_clears_it() {
    let h = Harness::new(50, "127.0.0.1:1").await;
    let store = h.projector.store().clone();
    let cache = QueryCache::with_limits(&h.projector.changes(), LONG_TTL, 10);
    let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    for k in 0..25 {
        let to = day + chrono::Duration::days(k);
        cache.commune_sums(&store, "31471", day, to).await.unwrap();
        assert!(cache.len() <= 10);
    }
    assert!(!cache.is_empty());
    // More notes than the channel keeps: everything is dropped.
    for _ in 0..300 {
        let _ = h.projector.changes().send(Arc::new(ChangeNote {
            partition: 0,
            records: 0,
            communes: vec![],
            event_time: None,
            clock: None,
            committed_at: Utc::now(),
        }));
    }
    assert!(cache
        .cached_sums(&store, "31471", day, day + chrono::Duration::days(24))
        .is_err());
    assert!(cache.is_empty());
}

/// The patterns the OpenAPI document gives `window` and the overdue
/// cursor accept exactly what the server parses (a range's order aside,
/// which JSON Schema cannot state and the document says in words).
mod documented_patterns {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use serde_json::{json, Value};

    use crate::domain::Window;

    fn validator(param: &str) -> &'static jsonschema::Validator {
        static VALIDATORS: LazyLock<[(&str, jsonschema::Validator); 3]> = LazyLock::new(|| {
            let doc: Value = serde_json::from_str(super::openapi::document()).unwrap();
            ["Window", "OverdueAfter", "Period"].map(|p| {
                let schema = &doc["components"]["parameters"][p]["schema"];
                (p, jsonschema::validator_for(schema).unwrap())
            })
        });
        &VALIDATORS.iter().find(|(p, _)| *p == param).unwrap().1
    }

    /// Dates of the right shape, most of them impossible, some leap days.
    fn day() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            "[0-9]{4}-(0[1-9]|1[0-2])-(2[89]|3[01])",
            "(0000|1900|2000|2023|2024|2100|2400)-02-(28|29|30)",
            "[0-9+-]{1,5}-[0-9]{1,2}-[0-9]{1,3}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn window_ranges(a in day(), b in day()) {
            let text = format!("{a}..{b}");
            let documented = validator("Window").is_valid(&json!(text));
            match text.parse::<Window>() {
                Ok(_) => prop_assert!(documented, "{text} is served but not documented"),
                Err(why) => prop_assert!(
                    !documented || why.contains("FROM must be before TO"),
                    "{text} is documented but refused: {why}"
                ),
            }
        }

        #[test]
        fn report_periods(a in day(), b in day(), y in "[0-9]{1,5}", q in "-Q[0-9]|-[0-9]{1,3}|") {
            use crate::operate::Period;
            for text in [format!("{a}..{b}"), format!("{y}{q}")] {
                let documented = validator("Period").is_valid(&json!(text));
                match text.parse::<Period>() {
                    Ok(_) => prop_assert!(documented, "{text} is served but not documented"),
                    Err(why) => prop_assert!(
                        !documented || why.contains("FROM must be before TO"),
                        "{text} is documented but refused: {why}"
                    ),
                }
            }
        }

        #[test]
        fn overdue_cursors(a in day(), id in "[A-Za-z0-9/-]{0,8}") {
            let text = format!("{a}/{id}");
            let documented = validator("OverdueAfter").is_valid(&json!(text));
            prop_assert_eq!(documented, super::super::overdue::cursor(&text).is_ok(), "{}", text);
        }
    }

    #[test]
    fn named_windows() {
        let v = validator("Window");
        for w in ["ytd", "qtd", "mtd", "rolling_30d"] {
            assert!(v.is_valid(&json!(w)) && w.parse::<Window>().is_ok(), "{w}");
        }
        for w in [
            "",
            "YTD",
            "ytd\n",
            "last_week",
            "2026-01-01..",
            "2026-01-01",
        ] {
            assert!(
                !v.is_valid(&json!(w)) && w.parse::<Window>().is_err(),
                "{w:?}"
            );
        }
    }
}

/// `POST /api/v1/events/validate` with a `Content-Type`.
async fn validate_body(app: &Router, media: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut req = request(
        "POST",
        "/api/v1/events/validate?limit=5",
        Some(READ),
        body.as_bytes().to_vec(),
    );
    if let Some(m) = media {
        req.headers_mut()
            .insert(header::CONTENT_TYPE, m.parse().unwrap());
    }
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn events_are_validated_as_the_pipeline_would_judge_them_and_nothing_is_produced() {
    let h = Harness::new(1, "127.0.0.1:1").await;
    let good: Vec<String> = simulated(&h.settings, 10, 2)
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect();
    let unknown = good[1].replace("\"commune_code\":\"", "\"commune_code\":\"9");
    let ndjson = format!("{}\n{unknown}\n\n{}\n", good[0], good[1]);
    let (status, body) = validate_body(&h.app, Some("application/x-ndjson"), &ndjson).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records"], 3);
    assert_eq!(body["valid"], 2);
    assert_eq!(body["by_reason"]["unknown_commune"], 1);
    assert_eq!(body["first_refused"][0]["line"], 2);
    assert_eq!(body["first_refused"][0]["field"], "commune_code");

    let array = format!("[\n{},\n{unknown},\n{}\n]", good[0], good[1]);
    let (status, body) =
        validate_body(&h.app, Some("application/json; charset=utf-8"), &array).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["records"].clone(), body["refused"].clone()),
        (3.into(), 1.into())
    );
    assert_eq!(body["first_refused"][0]["line"], 3);

    let (status, body) = validate_body(&h.app, Some("application/json"), &good[0]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("array"));
    for media in [None, Some("text/plain")] {
        let (status, body) = validate_body(&h.app, media, &ndjson).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }
}

mod breaches;
mod ingest;
mod outlook;
mod reports;
