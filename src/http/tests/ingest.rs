//! `POST /api/v1/events` against librdkafka's mock cluster: events written
//! keyed by their commune before the answer, refusals with their reasons,
//! producer scopes, bounds, and 503 with `Retry-After` while the broker is
//! down. (The pipeline's side, a retried request changing nothing
//! downstream, is tested against the real broker and database in
//! tests/it/ingest.rs.)

use super::*;

/// `n` simulated events of `commune` (or of any commune), as sent.
fn events_of(settings: &Settings, commune: Option<&str>, n: usize) -> Vec<Vec<u8>> {
    simulated(settings, 0, 5_000)
        .into_iter()
        .filter(|r| commune.is_none_or(|c| r.key.as_deref() == Some(c.as_bytes())))
        .take(n)
        .map(|r| r.value.unwrap())
        .collect()
}

fn ndjson(lines: &[Vec<u8>]) -> String {
    lines
        .iter()
        .map(|l| String::from_utf8(l.clone()).unwrap() + "\n")
        .collect()
}

async fn post_events(
    app: &Router,
    token: &str,
    media: &str,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = request(
        "POST",
        "/api/v1/events",
        Some(token),
        body.as_bytes().to_vec(),
    );
    req.headers_mut()
        .insert(header::CONTENT_TYPE, media.parse().unwrap());
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

async fn metrics_text(app: &Router) -> String {
    let res = app
        .clone()
        .oneshot(request("GET", "/metrics", None, vec![]))
        .await
        .unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn mock_harness() -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Harness,
) {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("t", 3, 1).unwrap();
    let h = Harness::new(1, &mock.bootstrap_servers()).await;
    (mock, h)
}

#[tokio::test]
async fn valid_events_are_written_keyed_by_their_commune_before_the_answer_and_the_others_refused()
{
    let (mock, h) = mock_harness().await;
    let good = events_of(&h.settings, None, 3);
    let unknown = String::from_utf8(good[0].clone())
        .unwrap()
        .replace(r#""commune_code":"#, r#""commune_code":"99999","was":"#);
    let body = format!(
        "{}\nnot json\n{}\n\n{}",
        String::from_utf8(good[0].clone()).unwrap(),
        String::from_utf8(good[1].clone()).unwrap() + "\n" + &unknown,
        String::from_utf8(good[2].clone()).unwrap(),
    );
    let (status, _, answer) = post_events(&h.app, PRODUCER, "application/x-ndjson", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["topic"], "t");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["refused"].as_u64()),
        (Some(3), Some(2)),
        "{answer}"
    );
    let events = answer["events"].as_array().unwrap();
    let summary: Vec<(u64, &str, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["status"].as_str().unwrap(),
                e["reason_code"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "accepted", None),
            (2, "refused", Some("not_json")),
            (3, "accepted", None),
            (4, "refused", Some("unknown_commune")),
            (6, "accepted", None),
        ],
        "{answer}"
    );
    assert_eq!(events[3]["field"], "commune_code");
    assert_eq!(events[3]["index"], 3);
    // Each accepted event is at the partition and offset given, keyed by
    // its commune, byte for byte as sent.
    let bootstrap = mock.bootstrap_servers();
    for (event, sent) in [
        (&events[0], &good[0]),
        (&events[2], &good[1]),
        (&events[4], &good[2]),
    ] {
        let sent_value: Value = serde_json::from_slice(sent).unwrap();
        assert_eq!(event["event_id"], sent_value["event_id"]);
        let partition = event["partition"].as_i64().unwrap() as i32;
        let offset = event["offset"].as_i64().unwrap();
        let (key, value) = tokio::task::spawn_blocking({
            let bootstrap = bootstrap.clone();
            move || read_record(&bootstrap, partition, offset)
        })
        .await
        .unwrap();
        assert_eq!(
            key.as_deref(),
            sent_value["commune_code"].as_str().map(str::as_bytes)
        );
        assert_eq!(&value, sent);
    }
    // The same events as a JSON array: written again (the pipeline drops
    // the repeats), numbered by the line each starts on.
    let array = format!(
        "[\n{},\n{}\n]",
        String::from_utf8(good[0].clone()).unwrap(),
        String::from_utf8(good[1].clone()).unwrap()
    );
    let (status, _, answer) =
        post_events(&h.app, PRODUCER, "application/json; charset=utf-8", &array).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["events"][1]["line"], 3, "{answer}");
    let text = metrics_text(&h.app).await;
    for line in [
        r#"cchc_http_events_total{producer="demo-long-my",outcome="accepted"} 5"#,
        r#"cchc_http_events_total{producer="demo-long-my",outcome="refused"} 2"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn a_producer_sends_only_for_the_units_of_its_scope() {
    let (_mock, h) = mock_harness().await;
    let own = events_of(&h.settings, Some("31471"), 2);
    let other = events_of(&h.settings, Some("31473"), 2);

    // Only another commune's events: 403, nothing written.
    let (status, _, answer) =
        post_events(&h.app, ONE_COMMUNE, "application/x-ndjson", &ndjson(&other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thuan-an"),
        "{answer}"
    );

    // Mixed: its own written, the other's refused one by one.
    let mixed = [own[0].clone(), other[0].clone(), own[1].clone()];
    let (status, _, answer) =
        post_events(&h.app, ONE_COMMUNE, "application/x-ndjson", &ndjson(&mixed)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let statuses: Vec<&str> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["reason_code"]
                .as_str()
                .unwrap_or(e["status"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        statuses,
        ["accepted", "out_of_scope", "accepted"],
        "{answer}"
    );
    assert_eq!(answer["events"][1]["field"], "commune_code");

    // The town's producer covers both communes (a parent unit's scope).
    let both = [own[0].clone(), other[0].clone()];
    let (status, _, answer) =
        post_events(&h.app, PRODUCER, "application/x-ndjson", &ndjson(&both)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");

    // Checking (nothing written) with a producer token applies its scope;
    // with a read token, only the contract.
    for (token, refused) in [(ONE_COMMUNE, 1), (READ, 0)] {
        let mut req = request(
            "POST",
            "/api/v1/events/validate",
            Some(token),
            ndjson(&mixed).into_bytes(),
        );
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-ndjson".parse().unwrap(),
        );
        let res = h.app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(v["refused"], refused, "{token}: {v}");
        if refused > 0 {
            assert_eq!(v["by_reason"]["out_of_scope"], 1, "{v}");
        }
    }

    // A read or admin token cannot send; a producer token cannot read.
    for token in [READ, ADMIN] {
        let (status, _, answer) =
            post_events(&h.app, token, "application/x-ndjson", &ndjson(&own)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    }
    let (status, _) = call(
        &h.app,
        "GET",
        "/api/v1/communes/31471/indicators",
        Some(ONE_COMMUNE),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let text = metrics_text(&h.app).await;
    assert!(
        text.contains(r#"cchc_http_events_total{producer="thuan-an",outcome="out_of_scope"} 3"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_request_without_events_with_too_many_or_all_refused_writes_nothing() {
    let (_mock, h) = mock_harness().await;
    let (status, _, answer) = post_events(&h.app, PRODUCER, "application/x-ndjson", "\n\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, _, answer) = post_events(&h.app, PRODUCER, "application/json", "{\"a\": 1}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, _, answer) = post_events(&h.app, PRODUCER, "text/plain", "{}").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    let too_many = "{}\n".repeat(h.settings.http.max_events + 1);
    let (status, _, answer) =
        post_events(&h.app, PRODUCER, "application/x-ndjson", &too_many).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http.max_events"),
        "{answer}"
    );
    // Every event refused against the contract: 422, each with its reason.
    let (status, _, answer) =
        post_events(&h.app, PRODUCER, "application/x-ndjson", "{}\n[1]\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["accepted"], 0);
    assert_eq!(
        answer["events"][1]["reason_code"], "not_an_object",
        "{answer}"
    );
}

#[tokio::test]
async fn while_the_broker_is_down_the_answer_is_503_with_retry_after_and_the_same_request_goes_through_later(
) {
    let (mock, h) = mock_harness().await;
    let body = ndjson(&events_of(&h.settings, None, 4));
    let (status, _, answer) = post_events(&h.app, PRODUCER, "application/x-ndjson", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    mock.broker_down(1).unwrap();
    let started = std::time::Instant::now();
    let (status, headers, answer) =
        post_events(&h.app, PRODUCER, "application/x-ndjson", &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "5");
    assert_eq!(answer["error"]["code"], "unavailable");
    assert!(
        started.elapsed() < REQUEST_TIMEOUT,
        "answered within the request deadline"
    );
    // Known down now: the next request is answered without waiting out the
    // delivery timeout (a look at the topic, at most 2 s).
    let (status, _, _) = post_events(&h.app, PRODUCER, "application/x-ndjson", &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    mock.broker_up(1).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, answer) =
            post_events(&h.app, PRODUCER, "application/x-ndjson", &body).await;
        if status == StatusCode::OK {
            assert_eq!(answer["accepted"], 4, "{answer}");
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert!(
            std::time::Instant::now() < deadline,
            "still 503 after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = metrics_text(&h.app).await;
    assert!(
        text.contains(r#"cchc_http_events_total{producer="demo-long-my",outcome="not_sent"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_full_producer_queue_is_answered_503_at_once_rather_than_buffered() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("t", 3, 1).unwrap();
    // A queue of 5 events, and a broker that takes 20 s to answer: the
    // first request's events fill the queue and wait.
    let h = Harness::with_settings(1, &mock.bootstrap_servers(), |s| {
        s.kafka
            .properties
            .insert("queue.buffering.max.messages".into(), "5".into());
    })
    .await;
    let (status, _, answer) = post_events(
        &h.app,
        PRODUCER,
        "application/x-ndjson",
        &ndjson(&events_of(&h.settings, None, 3)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    mock.broker_round_trip_time(1, Duration::from_secs(20))
        .unwrap();
    let slow = tokio::spawn({
        let app = h.app.clone();
        let body = ndjson(&events_of(&h.settings, None, 5));
        async move { post_events(&app, PRODUCER, "application/x-ndjson", &body).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (status, headers, answer) = post_events(
        &h.app,
        PRODUCER,
        "application/x-ndjson",
        &ndjson(&events_of(&h.settings, None, 5)),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once: {:?}",
        started.elapsed()
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not taking events as fast"),
        "{answer}"
    );
    // The slow one is not kept waiting past the delivery timeout either.
    let (status, _, _) = slow.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
