//! `POST /api/v1/events` end to end, with the real broker and database: the
//! events sent over HTTP are projected exactly once, a retried request
//! changes nothing downstream (the pipeline's repeat rule drops the
//! repeats), and nothing refused (against the contract or outside a
//! producer's scope) reaches the topic.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde_json::Value;

use cchc_pipeline::config::ProducerSettings;
use cchc_pipeline::simulator::Simulator;

use crate::pipeline::{setup, stored, units, wait_caught_up};
use crate::reference::{reference, Fact, Table};
use crate::support::spawn_app;

const TOWN: &str = "demo-producer-token";
const ONE: &str = "thuan-an-producer-token";

async fn post(http: &str, token: &str, lines: &[Vec<u8>]) -> (u16, Value) {
    let body: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect();
    let res = reqwest::Client::new()
        .post(format!("http://{http}/api/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("the API answers");
    let status = res.status().as_u16();
    let bytes = res.bytes().await.expect("the answer");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_over_http_count_once_even_when_every_request_is_sent_twice() {
    let partitions = 3;
    let (setup, store) = setup(partitions, None).await;
    let mut settings = setup.settings(None);
    settings.http.producers.push(ProducerSettings {
        name: "thuan-an".into(),
        token: ONE.into(),
        units: vec!["31471".into()],
    });
    let mut app = spawn_app(settings).await;
    let events: Vec<Vec<u8>> = Simulator::new(
        &units(),
        17,
        NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
        20.0,
    )
    .take(3_000)
    .map(|r| r.value.into_bytes())
    .collect();
    let (own, others): (Vec<Vec<u8>>, Vec<Vec<u8>>) = events
        .iter()
        .cloned()
        .partition(|e| serde_json::from_slice::<Value>(e).unwrap()["commune_code"] == "31471");

    // The town's producer sends the other communes' events in batches of
    // 500, each batch with a line of garbage, and every request twice (as a
    // client does that lost the first answer).
    let mut written = 0;
    for batch in others.chunks(500) {
        let mut lines = batch.to_vec();
        lines.insert(7, b"{\"event_id\": 1}".to_vec());
        for attempt in 0..2 {
            let (status, answer) = post(&app.http, TOWN, &lines).await;
            assert_eq!(status, 200, "attempt {attempt}: {answer}");
            assert_eq!(answer["accepted"], batch.len(), "{answer}");
            assert_eq!(answer["events"][7]["status"], "refused", "{answer}");
            written += batch.len();
        }
    }
    // Phường Thuận An's producer sends its own, and tries another commune's:
    // refused, at once (403) or one by one.
    let (status, answer) = post(&app.http, ONE, &others[..3]).await;
    assert_eq!(status, 403, "{answer}");
    for batch in own.chunks(400) {
        let mut lines = batch.to_vec();
        lines.push(others[0].clone());
        let (status, answer) = post(&app.http, ONE, &lines).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], batch.len(), "{answer}");
        assert_eq!(
            answer["events"][batch.len()]["reason_code"],
            "out_of_scope",
            "{answer}"
        );
        written += batch.len();
    }

    // Only what was accepted reached the topic; the projections count each
    // event once, as the reference model does.
    wait_caught_up(
        &store,
        &setup.topic,
        partitions,
        &mut [&mut app],
        Duration::from_secs(120),
    )
    .await;
    let offsets: i64 = store
        .offsets()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, o)| o.unwrap_or(0))
        .sum();
    assert_eq!(offsets, written as i64, "records on the topic");
    let facts: Vec<Fact> = events.iter().map(|v| Fact::from_json(v)).collect();
    let want: Table = reference(&facts, Utc::now().timestamp_nanos_opt());
    let got = stored(&store).await;
    assert_eq!(got, want, "the projections against the reference model");
    assert_eq!(
        app.metrics.duplicates.get(),
        others.len() as u64,
        "every repeat dropped as a repeat"
    );
    app.stop().await;
}
