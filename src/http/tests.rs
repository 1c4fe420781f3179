//! The API against a real (SQLite) store filled by the real projector.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{NaiveDate, Utc};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::config::Settings;
use crate::projector::{PartitionBatch, Projector, Record};
use crate::simulator::Simulator;

const READ: &str = "demo-read-token";
const ADMIN: &str = "demo-admin-token";

async fn app(events: usize) -> Router {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let settings = Settings::load_file(&file).unwrap();
    let store = Store::connect("sqlite::memory:", 1, "t").await.unwrap();
    let year = chrono::Datelike::year(&Utc::now());
    let start = NaiveDate::from_ymd_opt(year, 1, 1).unwrap();
    let mut records: Vec<Record> = Simulator::new(&settings.units, 5, start, 5.0)
        .take(events)
        .enumerate()
        .map(|(n, r)| Record {
            partition: 0,
            offset: n as i64,
            key: Some(r.key.into_bytes()),
            value: Some(r.value.into_bytes()),
        })
        .collect();
    records.push(Record {
        partition: 0,
        offset: events as i64,
        key: None,
        value: Some(b"not json".to_vec()),
    });
    let projector = Projector::new(
        store.clone(),
        settings.units.clone(),
        Some(settings.evaluator()),
    );
    let claim = store.claim(0).await.unwrap();
    projector
        .project_partition(
            &PartitionBatch {
                partition: 0,
                claim,
                records,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let producer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .create()
        .unwrap();
    router(AppState {
        store,
        live: tokio::sync::broadcast::channel(4).0,
        metrics: Default::default(),
        units: settings.units.clone(),
        targets: settings.targets.clone(),
        clock: Clock {
            skew: chrono::Duration::zero(),
        },
        http: settings.http.clone(),
        events_topic: "t".into(),
        producer,
        shutdown: Default::default(),
    })
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    call(app, "GET", uri, Some(READ), vec![]).await
}

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
}

#[tokio::test]
async fn every_listed_route_is_served() {
    let app = app(100).await;
    for (method, path) in ROUTES {
        if path.ends_with("/stream") {
            continue; // an endless response; covered by the alerts tests
        }
        let uri = path
            .replace("{code}", "31471")
            .replace("{indicator}", "online_rate")
            .replace("{id}", "999999");
        let (status, body) = call(&app, &method.to_uppercase(), &uri, Some(ADMIN), vec![]).await;
        assert!(
            body["error"]["message"] != "no such route" && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {status} {body}"
        );
    }
}

#[tokio::test]
async fn a_commune_answer_has_five_indicators_with_targets_and_freshness() {
    let app = app(3000).await;
    let (status, body) = get(&app, "/api/v1/communes/31471/indicators?window=ytd").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["indicators"].as_array().unwrap().len(), 5);
    assert_eq!(body["commune"]["name"], "Phường Thuận An");
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
    let (status, body) = get(&app, "/api/v1/units/937/communes?window=ytd").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let communes = body["communes"].as_array().unwrap();
    assert_eq!(communes.len(), 9);
    for i in 0..5 {
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
        "/api/v1/communes/31472/series/satisfaction_rate?window=ytd",
    )
    .await;
    let (_, one) = get(&app, "/api/v1/communes/31472/indicators?window=ytd").await;
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
    let mut uri = "/api/v1/communes/31475/overdue?limit=3".to_string();
    loop {
        let (status, body) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for c in body["cases"].as_array().unwrap() {
            assert!(c["days_overdue"].as_i64().unwrap() >= 1);
            seen.push(c["case_id"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(next) => uri = format!("/api/v1/communes/31475/overdue?limit=3&after={next}"),
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
            "/api/v1/communes/937/indicators",
            StatusCode::NOT_FOUND,
            "unknown commune",
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

#[tokio::test]
async fn an_oversized_request_body_is_refused() {
    let app = app(10).await;
    let (status, _) = call(
        &app,
        "POST",
        "/api/v1/admin/dead-letters/1/resend",
        Some(ADMIN),
        vec![b'x'; 2 << 20],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}
