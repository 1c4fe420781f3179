//! Threshold-breach alerts end to end: the pipeline process, the real broker
//! (alerts read back from the alerts topic) and the real database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, FixedOffset, NaiveTime, TimeZone, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use cchc_pipeline::alerts::signature;
use cchc_pipeline::store::Store;

use cchc_pipeline::config::WebhookSettings;
use cchc_pipeline::domain::Window;

use crate::pipeline::{setup, wait_caught_up, Pipeline, Setup};
use crate::support::{free_port, kafka_bootstrap, spawn_app, unique_name, Running};

const C: &str = "31471";

fn local() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).unwrap()
}

/// Events of commune C, one JSON value each, stamped `at`.
struct Events {
    n: usize,
    at: DateTime<FixedOffset>,
}

impl Events {
    fn new(at: DateTime<FixedOffset>) -> Self {
        Events { n: 0, at }
    }

    fn base(&mut self, kind: &str, data: Value) -> Value {
        self.n += 1;
        json!({
            "event_id": format!("{}-{}", unique_name("e"), self.n), "event_type": kind, "schema_version": 1,
            "occurred_at": self.at.to_rfc3339(), "commune_code": C,
            "case_id": format!("case-{}", self.n), "data": data,
        })
    }

    fn received(&mut self, online: bool, due: DateTime<FixedOffset>) -> Value {
        let (channel, level) = if online {
            ("online", "full")
        } else {
            ("in_person", "none")
        };
        self.base(
            "case.received",
            json!({"procedure_code": "1.0001", "channel": channel, "online_level": level,
            "due_at": due.to_rfc3339(), "registered_electronically": true, "digitized": true}),
        )
    }

    fn resolved(&mut self, on_time: bool) -> Value {
        let due = if on_time {
            self.at + Span::days(1)
        } else {
            self.at - Span::days(1)
        };
        self.base(
            "case.resolved",
            json!({"due_at": due.to_rfc3339(), "outcome": "completed"}),
        )
    }

    /// A receipt of case `case` (an id of its own, so that a later receipt
    /// can correct it), online, registered electronically or not, digitised
    /// or not.
    fn received_as(
        &mut self,
        case: &str,
        electronic: bool,
        digitized: bool,
        due: DateTime<FixedOffset>,
    ) -> Value {
        let mut v = self.received(true, due);
        v["case_id"] = json!(case);
        v["data"]["registered_electronically"] = json!(electronic);
        v["data"]["digitized"] = json!(digitized);
        v
    }

    fn signed(&mut self, document: &str, digital: bool) -> Value {
        let signature = if digital { "digital" } else { "handwritten" };
        let mut v = self.base(
            "document.signed",
            json!({"document_id": document, "signature": signature}),
        );
        v.as_object_mut().unwrap().remove("case_id");
        v
    }

    fn rated(&mut self, satisfied: bool) -> Value {
        self.base(
            "case.rated",
            json!({"rating": if satisfied { "satisfied" } else { "dissatisfied" }}),
        )
    }
}

async fn send(topic: &str, events: Vec<Value>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for e in events {
        let body = e.to_string();
        producer
            .send(
                FutureRecord::to(topic).key(C).payload(&body),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// Reads the alerts topic from the beginning.
struct AlertReader {
    consumer: StreamConsumer,
    seen: Vec<Value>,
}

impl AlertReader {
    fn new(topic: &str) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka_bootstrap())
            .set("group.id", unique_name("reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        AlertReader {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Waits until `count` alerts in all have arrived, then a little longer to
    /// catch any extra; returns their (alert_id, event_type) in order.
    async fn until(&mut self, count: usize, limit: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + limit;
        let mut quiet_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if self.seen.len() >= count {
                let q = *quiet_until.get_or_insert(now + Duration::from_secs(2));
                if now >= q {
                    break;
                }
            } else if now >= deadline {
                break;
            }
            let wait = Duration::from_millis(200);
            if let Ok(Ok(m)) = tokio::time::timeout(wait, self.consumer.recv()).await {
                let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                assert_eq!(m.key(), Some(C.as_bytes()), "alerts are keyed by commune");
                self.seen.push(v);
            }
        }
        self.seen
            .iter()
            .map(|v| {
                (
                    v["alert_id"].as_str().unwrap().to_string(),
                    v["event_type"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn ids(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (format!("{C}.{a}"), b.to_string()))
        .collect()
}

async fn caught_up(store: &Store, setup: &Setup, pipeline: &mut dyn Running) {
    wait_caught_up(
        store,
        &setup.topic,
        1,
        &mut [pipeline],
        Duration::from_secs(60),
    )
    .await;
}

/// The alerts of both windows evaluated in this test, sorted (alerts of one
/// batch come in no particular order; each id ends with its transition's
/// sequence number, so sorting keeps each key's breach → recovery order).
fn both_windows(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = ["ytd", "rolling_30d"]
        .iter()
        .flat_map(|w| {
            list.iter().map(move |(indicator_seq, kind)| {
                let (indicator, seq) = indicator_seq.split_once('.').unwrap();
                (format!("{C}.{indicator}.{w}.{seq}"), kind.to_string())
            })
        })
        .collect();
    all.sort();
    all
}

/// Adds `new` to the alerts wanted so far and waits until the topic holds
/// exactly those, in both windows.
async fn expect(
    reader: &mut AlertReader,
    want: &mut Vec<(&'static str, &'static str)>,
    new: &[(&'static str, &'static str)],
) {
    want.extend_from_slice(new);
    let mut got = reader.until(2 * want.len(), Duration::from_secs(30)).await;
    got.sort();
    assert_eq!(got, both_windows(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_cross_each_target_both_ways_once_with_strict_targets_and_minimum_samples() {
    let (setup, store) = setup(1, None).await;
    // Two windows: every crossing below happens in both.
    let mut settings = setup.settings(None);
    settings.alert_windows = vec![Window::YearToDate, Window::Rolling30Days];
    let mut pipeline = spawn_app(settings).await;
    let mut reader = AlertReader::new(&setup.alerts_topic);
    let now = Utc::now().with_timezone(&local()) - Span::hours(1);
    let mut ev = Events::new(now);
    let due = now + Span::days(5);
    let mut want = Vec::new();

    // Online rate (>= 70%, minimum sample 20). 19 in-person receipts: 0%
    // online, but below the minimum sample.
    let batch: Vec<Value> = (0..19).map(|_| ev.received(false, due)).collect();
    send(&setup.topic, batch).await;
    caught_up(&store, &setup, &mut pipeline).await;
    assert_eq!(
        reader.until(0, Duration::from_secs(1)).await,
        vec![],
        "no alert below the minimum sample"
    );
    // The 20th: a breach. Then 46 online (46/66 = 69.7%): still in breach.
    let mut batch = vec![ev.received(false, due)];
    batch.extend((0..46).map(|_| ev.received(true, due)));
    send(&setup.topic, batch).await;
    expect(
        &mut reader,
        &mut want,
        &[("online_rate.1", "indicator.breached")],
    )
    .await;
    // One more online: 47/67 = 70.1%, recovered.
    send(&setup.topic, vec![ev.received(true, due)]).await;
    expect(
        &mut reader,
        &mut want,
        &[("online_rate.2", "indicator.recovered")],
    )
    .await;

    // On time (> 99%, strict): 99 of 100 is not above 99%, a breach; 100 of
    // 101 recovers.
    let mut batch: Vec<Value> = (0..99).map(|_| ev.resolved(true)).collect();
    batch.push(ev.resolved(false));
    send(&setup.topic, batch).await;
    expect(
        &mut reader,
        &mut want,
        &[("on_time_rate.1", "indicator.breached")],
    )
    .await;
    send(&setup.topic, vec![ev.resolved(true)]).await;
    expect(
        &mut reader,
        &mut want,
        &[("on_time_rate.2", "indicator.recovered")],
    )
    .await;
    let last = reader.seen.last().unwrap().clone();
    assert_eq!(last["numerator"], 100);
    assert_eq!(last["denominator"], 101);
    assert_eq!(last["target"]["comparator"], ">");
    assert_eq!(last["commune_name"], "Phường Thuận An");

    // Satisfaction (>= 95%): 18 of 20 satisfied is 90%, a breach; 20 more
    // satisfied make 38 of 40, exactly 95%: met again.
    let mut batch: Vec<Value> = (0..18).map(|_| ev.rated(true)).collect();
    batch.extend((0..2).map(|_| ev.rated(false)));
    send(&setup.topic, batch).await;
    expect(
        &mut reader,
        &mut want,
        &[("satisfaction_rate.1", "indicator.breached")],
    )
    .await;
    send(&setup.topic, (0..20).map(|_| ev.rated(true)).collect()).await;
    expect(
        &mut reader,
        &mut want,
        &[("satisfaction_rate.2", "indicator.recovered")],
    )
    .await;

    // Electronic registration (>= 100%): every receipt so far was registered
    // electronically. One that was not (online, so the online rate stays
    // met: 48/68) is a breach; a later receipt of the same case, registered
    // electronically, corrects it: recovered.
    send(
        &setup.topic,
        vec![ev.received_as("paper-1", false, true, due)],
    )
    .await;
    expect(
        &mut reader,
        &mut want,
        &[("electronic_registration_rate.1", "indicator.breached")],
    )
    .await;
    ev.at += Span::minutes(1);
    send(
        &setup.topic,
        vec![ev.received_as("paper-1", true, true, due)],
    )
    .await;
    expect(
        &mut reader,
        &mut want,
        &[("electronic_registration_rate.2", "indicator.recovered")],
    )
    .await;

    // Digital signatures (>= 100%): 20 digital, met from the start, no
    // alert; a handwritten one breaches (20/21); the same document signed
    // again, digitally and later, recovers.
    send(
        &setup.topic,
        (0..20)
            .map(|i| ev.signed(&format!("{i}/QĐ-UBND"), true))
            .collect(),
    )
    .await;
    send(&setup.topic, vec![ev.signed("21/QĐ-UBND", false)]).await;
    expect(
        &mut reader,
        &mut want,
        &[("digital_signature_rate.1", "indicator.breached")],
    )
    .await;
    ev.at += Span::minutes(1);
    send(&setup.topic, vec![ev.signed("21/QĐ-UBND", true)]).await;
    expect(
        &mut reader,
        &mut want,
        &[("digital_signature_rate.2", "indicator.recovered")],
    )
    .await;

    // Digitisation (>= 80%, Decision 766): every receipt so far (68) was
    // digitised. 17 online receipts that were not make 68 of 85, exactly
    // 80%: met; the 18th, 68 of 86, breaches; a later receipt of one of
    // them, digitised after all, makes 69 of 86: recovered.
    let batch: Vec<Value> = (0..17)
        .map(|i| ev.received_as(&format!("scan-{i}"), true, false, due))
        .collect();
    send(&setup.topic, batch).await;
    caught_up(&store, &setup, &mut pipeline).await;
    send(
        &setup.topic,
        vec![ev.received_as("scan-17", true, false, due)],
    )
    .await;
    expect(
        &mut reader,
        &mut want,
        &[("digitization_rate.1", "indicator.breached")],
    )
    .await;
    ev.at += Span::minutes(1);
    send(
        &setup.topic,
        vec![ev.received_as("scan-3", true, true, due)],
    )
    .await;
    expect(
        &mut reader,
        &mut want,
        &[("digitization_rate.2", "indicator.recovered")],
    )
    .await;
    let last = reader.seen.last().unwrap().clone();
    assert_eq!(
        (last["numerator"].clone(), last["denominator"].clone()),
        (json!(69), json!(86))
    );

    let windows: std::collections::BTreeSet<&str> = reader
        .seen
        .iter()
        .map(|a| a["window"].as_str().unwrap())
        .collect();
    assert_eq!(windows, ["rolling_30d", "ytd"].into_iter().collect());
    pipeline.assert_running();
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_cases_passing_their_due_date_at_midnight_breach_on_time_through_the_clock_alone() {
    let (setup, store) = setup(1, None).await;
    // Shift the pipeline's clock to 10 s before the next local midnight.
    let now_local = Utc::now().with_timezone(&local());
    let midnight = local()
        .from_local_datetime(&(now_local.date_naive() + Span::days(1)).and_time(NaiveTime::MIN))
        .unwrap();
    let mut settings = setup.settings(None);
    settings.clock.skew_seconds = (midnight - now_local - Span::seconds(10)).num_seconds();
    let mut pipeline = spawn_app(settings).await;
    let mut reader = AlertReader::new(&setup.alerts_topic);
    // 20 cases received "today" (the shifted date), due today, still open.
    let today_morning = midnight - Span::hours(16);
    let mut ev = Events::new(today_morning);
    let due = midnight - Span::hours(7);
    let batch: Vec<Value> = (0..20).map(|_| ev.received(true, due)).collect();
    send(&setup.topic, batch).await;
    caught_up(&store, &setup, &mut pipeline).await;
    assert_eq!(
        reader.until(0, Duration::from_secs(1)).await,
        vec![],
        "not overdue before midnight"
    );
    // No new event: the clock alone crosses midnight.
    let got = reader.until(1, Duration::from_secs(40)).await;
    assert_eq!(got, ids(&[("on_time_rate.ytd.1", "indicator.breached")]));
    assert_eq!(reader.seen[0]["denominator"], 20);
    assert_eq!(reader.seen[0]["numerator"], 0);
}

fn repo_config() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/default.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_publish_and_restarts_mid_breach_lose_and_repeat_nothing() {
    let (setup, store) = setup(1, None).await;
    let now = Utc::now().with_timezone(&local()) - Span::hours(1);
    let mut ev = Events::new(now);
    let due = now + Span::days(5);

    // A consumer-only process commits the breach to the outbox; it is killed
    // before anything publishes it.
    let mut a = Pipeline::start_with(
        &setup,
        "a",
        &repo_config(),
        &[("CCHC_ALERTS__RELAY", "false")],
    );
    send(
        &setup.topic,
        (0..20).map(|_| ev.received(false, due)).collect(),
    )
    .await;
    caught_up(&store, &setup, &mut a).await;
    let pending = store.unpublished_alerts(10).await.unwrap();
    assert_eq!(pending.len(), 1, "the breach is in the outbox, unpublished");
    a.kill();

    // After the restart it is published, once.
    let mut b = Pipeline::start(&setup, "b");
    let mut reader = AlertReader::new(&setup.alerts_topic);
    assert_eq!(
        reader.until(1, Duration::from_secs(30)).await,
        ids(&[("online_rate.ytd.1", "indicator.breached")])
    );

    // Still in breach across another crash: nothing new.
    send(
        &setup.topic,
        (0..10).map(|_| ev.received(false, due)).collect(),
    )
    .await;
    caught_up(&store, &setup, &mut b).await;
    b.kill();
    let mut c = Pipeline::start(&setup, "c");
    send(
        &setup.topic,
        (0..70).map(|_| ev.received(true, due)).collect(),
    )
    .await;
    caught_up(&store, &setup, &mut c).await;
    let got = reader.until(2, Duration::from_secs(30)).await;
    assert_eq!(
        got,
        ids(&[
            ("online_rate.ytd.1", "indicator.breached"),
            ("online_rate.ytd.2", "indicator.recovered")
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_publishing_before_marking_published_repeats_the_alert_under_its_id() {
    let (setup, store) = setup(1, None).await;
    let now = Utc::now().with_timezone(&local()) - Span::hours(1);
    let mut ev = Events::new(now);
    let due = now + Span::days(5);
    let mut reader = AlertReader::new(&setup.alerts_topic);

    // The process aborts right after the broker acknowledged the alert.
    let mut a = Pipeline::start_with(
        &setup,
        "a",
        &repo_config(),
        &[(cchc_pipeline::fault::CRASH_AT, "relay-published")],
    );
    send(
        &setup.topic,
        (0..20).map(|_| ev.received(false, due)).collect(),
    )
    .await;
    let status = a.wait_for_exit(Duration::from_secs(60));
    assert!(
        !status.success(),
        "the crash point was not reached: {status}"
    );
    assert_eq!(
        reader.until(1, Duration::from_secs(30)).await,
        ids(&[("online_rate.ytd.1", "indicator.breached")]),
        "published before the crash"
    );
    assert_eq!(
        store.unpublished_alerts(10).await.unwrap().len(),
        1,
        "the outbox does not know it was published"
    );

    // After the restart the relay publishes it again: the same alert, under
    // the same id, which a subscriber drops; then the outbox is clear.
    let mut b = Pipeline::start(&setup, "b");
    let got = reader.until(2, Duration::from_secs(30)).await;
    assert_eq!(
        got,
        ids(&[
            ("online_rate.ytd.1", "indicator.breached"),
            ("online_rate.ytd.1", "indicator.breached")
        ])
    );
    assert_eq!(
        reader.seen[0], reader.seen[1],
        "the same alert, byte for byte"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.unpublished_alerts(10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the outbox was never marked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing is lost afterwards: the recovery comes through once.
    send(
        &setup.topic,
        (0..50).map(|_| ev.received(true, due)).collect(),
    )
    .await;
    caught_up(&store, &setup, &mut b).await;
    let got = reader.until(3, Duration::from_secs(30)).await;
    assert_eq!(
        got[2],
        ids(&[("online_rate.ytd.2", "indicator.recovered")])[0]
    );
    assert_eq!(got.len(), 3);
}

/// A webhook receiver that refuses its first `fail` requests.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(u16, String, String)>>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_down_then_failing_its_first_attempts_still_gets_every_alert_signed() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    let receiver = Receiver::default();
    let state = receiver.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut seen = state.seen.lock().unwrap();
                let status = if seen.len() < 2 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                let sig = headers
                    .get("x-cchc-signature")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                seen.push((status.as_u16(), sig, body));
                status
            }
        }),
    );
    // The receiver is down (nothing listens on its port) until the alert
    // has been tried a few times.
    let port = free_port();

    let secret = "a shared secret of the chat bot";
    let (setup, store) = setup(1, None).await;
    let mut settings = setup.settings(None);
    settings.alerts.webhooks.push(WebhookSettings {
        url: format!("http://127.0.0.1:{port}/hook"),
        secret: secret.into(),
    });
    let mut pipeline = spawn_app(settings).await;
    let now = Utc::now().with_timezone(&local()) - Span::hours(1);
    let mut ev = Events::new(now);
    let mut batch: Vec<Value> = (0..19).map(|_| ev.rated(true)).collect();
    batch.push(ev.rated(false));
    send(&setup.topic, batch).await; // 19/20 = 95%: met, no alert
    send(&setup.topic, vec![ev.rated(false)]).await; // 19/21: breach
    caught_up(&store, &setup, &mut pipeline).await;
    let failed = pipeline
        .metrics
        .webhook_attempts
        .get_or_create(&vec![("outcome", "failed")])
        .clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while failed.get() < 2 {
        assert!(
            Instant::now() < deadline,
            "the webhook was not tried while its receiver was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back up, refusing its first two requests.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Retries back off 1, 2, 4, 8 s: the fifth attempt is the first answered 200.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|(status, ..)| *status == 200)
    {
        assert!(
            Instant::now() < deadline,
            "the webhook was never delivered: {:?}",
            receiver.seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![503, 503, 200],
        "two refusals, then delivered once"
    );
    let by_body: BTreeMap<&str, usize> = seen.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.2.as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_body.len(), 1, "the same alert each time");
    for (_, sig, body) in &seen {
        assert_eq!(
            sig,
            &signature(secret, body.as_bytes()),
            "signed with the shared secret"
        );
    }
    let alert: Value = serde_json::from_str(&seen[2].2).unwrap();
    assert_eq!(alert["alert_id"], format!("{C}.satisfaction_rate.ytd.1"));
    let delivered = pipeline
        .metrics
        .webhook_attempts
        .get_or_create(&vec![("outcome", "delivered")])
        .get();
    assert_eq!(delivered, 1);
    pipeline.assert_running();
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscribers_get_alerts_over_server_sent_events() {
    let (setup, store) = setup(1, None).await;
    let mut pipeline = spawn_app(setup.settings(None)).await;
    let client = reqwest::Client::new();
    let url = format!(
        "http://{}/api/v1/alerts/stream?token=demo-read-token",
        pipeline.http
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut response = loop {
        match client.get(&url).send().await {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no SSE endpoint at {url}: {e}"),
        }
    };
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let now = Utc::now().with_timezone(&local()) - Span::hours(1);
    let mut ev = Events::new(now);
    let due = now + Span::days(5);
    send(
        &setup.topic,
        (0..20).map(|_| ev.received(false, due)).collect(),
    )
    .await;
    caught_up(&store, &setup, &mut pipeline).await;
    let mut text = String::new();
    while !text.contains("online_rate.ytd.1") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("an SSE event")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk.expect("stream open")));
    }
    assert!(text.contains("event: alert"), "{text}");
}
