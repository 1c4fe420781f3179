//! Threshold-breach alerts end to end: the pipeline process, the real broker
//! (alerts read back from the alerts topic) and the real database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Duration as Span, FixedOffset, NaiveTime, TimeZone, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use cchc_pipeline::alerts::signature;
use cchc_pipeline::store::Store;

use cchc_pipeline::config::WebhookSettings;
use cchc_pipeline::domain::time::local_date;
use cchc_pipeline::domain::{Indicator, Standing, Window};

use crate::pipeline::{setup, wait_caught_up, Pipeline, Setup};
use crate::support::{free_port, kafka_bootstrap, spawn_app, unique_name, Running};

pub(crate) const C: &str = "31471";

pub(crate) fn local() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).unwrap()
}

/// Events of commune C, one JSON value each, stamped `at`.
pub(crate) struct Events {
    pub(crate) n: usize,
    pub(crate) at: DateTime<FixedOffset>,
}

impl Events {
    pub(crate) fn new(at: DateTime<FixedOffset>) -> Self {
        Events { n: 0, at }
    }

    pub(crate) fn base(&mut self, kind: &str, data: Value) -> Value {
        self.n += 1;
        json!({
            "event_id": format!("{}-{}", unique_name("e"), self.n), "event_type": kind, "schema_version": 1,
            "occurred_at": self.at.to_rfc3339(), "commune_code": C,
            "case_id": format!("case-{}", self.n), "data": data,
        })
    }

    pub(crate) fn received(&mut self, online: bool, due: DateTime<FixedOffset>) -> Value {
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

    pub(crate) fn resolved(&mut self, on_time: bool) -> Value {
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

pub(crate) async fn send(topic: &str, events: Vec<Value>) {
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
pub(crate) struct AlertReader {
    consumer: StreamConsumer,
    pub(crate) seen: Vec<Value>,
    /// The `event_type` header of each record seen.
    pub(crate) kinds: Vec<Option<String>>,
}

impl AlertReader {
    pub(crate) fn new(topic: &str) -> Self {
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
            kinds: Vec::new(),
        }
    }

    /// Waits until `count` alerts in all have arrived, then a little longer to
    /// catch any extra; returns their (alert_id, event_type) in order.
    pub(crate) async fn until(&mut self, count: usize, limit: Duration) -> Vec<(String, String)> {
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
                let kind = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "event_type")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                self.kinds.push(kind);
                assert_eq!(
                    m.key(),
                    v["commune_code"].as_str().map(str::as_bytes),
                    "alerts are keyed by commune"
                );
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

pub(crate) fn ids(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (format!("{C}.{a}"), b.to_string()))
        .collect()
}

pub(crate) async fn caught_up(store: &Store, setup: &Setup, pipeline: &mut dyn Running) {
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
    // 31471 names Phường Long Mỹ today (Phường Thuận An until 2025).
    assert_eq!(last["commune_name"], "Phường Long Mỹ");

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
    // A rolling window: whatever the date (on 31 December a case due that
    // day, late, would count in the next year's ytd).
    settings.alert_windows = vec![Window::Rolling30Days];
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
        reader.until(1, Duration::from_secs(5)).await,
        ids(&[("on_time_rate.rolling_30d.risk.1", "indicator.at_risk")]),
        "not overdue before midnight, but at risk: 20 cases due today, 0/20 if all late"
    );
    assert_eq!(reader.seen[0]["outlook"]["coming_due"], 20);
    // No new event: the clock alone crosses midnight. The risk came true.
    let got = reader.until(3, Duration::from_secs(40)).await;
    assert_eq!(
        got,
        ids(&[
            ("on_time_rate.rolling_30d.risk.1", "indicator.at_risk"),
            (
                "on_time_rate.rolling_30d.risk.2",
                "indicator.at_risk_cleared"
            ),
            ("on_time_rate.rolling_30d.1", "indicator.breached"),
        ])
    );
    assert_eq!(reader.seen[1]["outlook"]["reason"], "breached");
    assert_eq!(reader.seen[2]["denominator"], 20);
    assert_eq!(reader.seen[2]["numerator"], 0);
}

pub(crate) fn repo_config() -> std::path::PathBuf {
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

/// A webhook receiver that refuses its first two requests; it keeps what
/// each one was: (status answered, signature, timestamp, body).
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub(crate) seen: Arc<Mutex<Vec<Received>>>,
}

/// One request the receiver got: status answered, signature, timestamp, body.
pub(crate) type Received = (u16, String, String, String);

/// Runs the receiver's example verifier of docs/examples/verify_webhook.py
/// on one request; whether it took it as genuine and fresh.
fn python_verifies(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &str,
    now: Option<i64>,
) -> bool {
    use std::io::Write;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/verify_webhook.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("running python3");
    let request = json!({"secret": secret, "timestamp": timestamp, "signature": signature, "body": body, "now": now});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    child.wait().unwrap().success()
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
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                let (sig, at) = (header("x-cchc-signature"), header("x-cchc-timestamp"));
                seen.push((status.as_u16(), sig, at, body));
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
        kinds: None,
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
        *m.entry(s.3.as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_body.len(), 1, "the same alert each time");
    for (_, sig, at, body) in &seen {
        let signed_at: i64 = at.parse().expect("a timestamp in seconds");
        assert!(
            (Utc::now().timestamp() - signed_at).abs() < 120,
            "signed now: {at}"
        );
        assert_eq!(
            sig,
            &signature(secret, signed_at, body.as_bytes()),
            "the timestamp and the body signed with the shared secret"
        );
        // What the receiver's documented verifier says of it.
        assert!(python_verifies(secret, at, sig, body, None));
        assert!(!python_verifies(
            secret,
            at,
            sig,
            &body.replace("31471", "31472"),
            None
        ));
        assert!(!python_verifies("another secret", at, sig, body, None));
        assert!(
            !python_verifies(secret, at, sig, body, Some(signed_at + 600)),
            "replayed ten minutes later"
        );
    }
    assert_ne!(seen[0].2, seen[2].2, "each attempt signed at its own time");
    let alert: Value = serde_json::from_str(&seen[2].3).unwrap();
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

/// The catch-up scenarios: a commune with 100 cases resolved on time (its
/// on-time rate met), then a pipeline stopped while 1,000 more cases are
/// received, fall due and are resolved (the receipts produced first, the
/// resolutions after them, so the backlog spans many batches), and `late`
/// of them resolved after their due date. Returns the alerts seen after the
/// restart, once caught up, and the pipeline's deferred-batch count.
async fn outage(catch_up_after_seconds: u32, late: usize) -> (Vec<(String, String)>, u64) {
    let (setup, store) = setup(1, None).await;
    let mut settings = setup.settings(None);
    settings.batch.max_records = 200;
    settings.alerts.catch_up_after_seconds = catch_up_after_seconds;
    // Only the backlog rule: these events are not history.
    settings.alerts.history_after_hours = 24 * 365;
    let mut reader = AlertReader::new(&setup.alerts_topic);
    let mut pipeline = spawn_app(settings.clone()).await;
    let now = Utc::now().with_timezone(&local());
    let mut ev = Events::new(now - Span::hours(2));
    let baseline: Vec<Value> = (0..100)
        .flat_map(|_| {
            // Due beyond the at-risk horizon: the baseline is no risk.
            let received = ev.received(true, now + Span::days(5));
            let mut resolved = ev.resolved(true);
            resolved["case_id"] = received["case_id"].clone();
            [received, resolved]
        })
        .collect();
    send(&setup.topic, baseline).await;
    caught_up(&store, &setup, &mut pipeline).await;
    assert_eq!(reader.until(0, Duration::from_secs(2)).await, vec![]);
    pipeline.stop().await;

    // While it is down: cases due yesterday (local), received the day before.
    let yesterday = now.date_naive() - Span::days(1);
    let at = |h: u32| {
        local()
            .from_local_datetime(&yesterday.and_hms_opt(h, 0, 0).unwrap())
            .unwrap()
    };
    let mut received = Vec::new();
    let mut resolutions = Vec::new();
    for n in 0..1_000 {
        let mut ev = Events::new(at(8) - Span::days(1));
        ev.n = 1_000 + 2 * n;
        let r = ev.received(true, at(17));
        // Late: resolved today, after the due date; on time: an hour before it.
        ev.at = if n < late { now } else { at(16) };
        let mut done = ev.base(
            "case.resolved",
            json!({"due_at": at(17).to_rfc3339(), "outcome": "completed"}),
        );
        done["case_id"] = r["case_id"].clone();
        received.push(r);
        resolutions.push(done);
    }
    received.extend(resolutions);
    send(&setup.topic, received).await;
    // Older than the backlog bound by the time the pipeline is back.
    tokio::time::sleep(Duration::from_secs(
        u64::from(catch_up_after_seconds.min(5)) + 1,
    ))
    .await;

    let mut pipeline = spawn_app(settings).await;
    caught_up(&store, &setup, &mut pipeline).await;
    pipeline.wait_evaluated("the catch-up").await;
    let got = reader.until(0, Duration::from_secs(3)).await;
    let deferred = pipeline
        .metrics
        .breaches_deferred
        .get_or_create(&vec![("why", "backlog")])
        .get();
    pipeline.stop().await;
    (got, deferred)
}

/// DOMAIN.md: an alert describes the caught-up state. Without the catch-up
/// rule (its bound beyond the outage), reading the backlog raises the false
/// alarm the rule is there to stop: the receipts count as late until their
/// resolutions are read, the on-time rate dips, breaches and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_cases_resolved_on_time_in_the_backlog_raise_no_alert() {
    let (got, deferred) = outage(2, 0).await;
    assert_eq!(got, vec![], "no alert after catching up");
    assert!(
        deferred > 0,
        "the backlog's batches waited for the caught-up state"
    );

    let (got, _) = outage(100_000, 0).await;
    assert_eq!(
        got,
        ids(&[
            ("on_time_rate.ytd.1", "indicator.breached"),
            ("on_time_rate.ytd.2", "indicator.recovered")
        ]),
        "without the rule: the false alarm, and its recovery"
    );
}

/// A real miss hidden in the backlog is announced once, after the catch-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_hidden_in_a_backlog_breaches_exactly_once_after_the_catch_up() {
    let (got, deferred) = outage(2, 20).await;
    assert!(deferred > 0);
    assert_eq!(got, ids(&[("on_time_rate.ytd.1", "indicator.breached")]));
}

/// A backfill: a year's history imported (`cchc import`) into an empty
/// store while the pipeline runs. Its batches are history (every event older
/// than a day), so breaches wait until the import is read; then each
/// indicator that misses its target at the end is announced once, and
/// nothing else: no breach that the rest of the year took back. Without the
/// rule (its bound beyond the year), the same import announces breaches that
/// recover before its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_year_of_history_announces_only_the_breaches_that_hold_at_the_end() {
    let (got, want, deferred) = import_history(24).await;
    assert!(!want.is_empty(), "the simulated year misses some targets");
    assert_eq!(got, want);
    assert!(deferred > 0, "the import's batches waited as history");

    let (got, want, _) = import_history(24 * 366).await;
    assert!(
        got.iter().any(|(_, kind)| kind == "indicator.recovered"),
        "without the rule, transitions the import takes back: {got:?}"
    );
    assert_ne!(got, want);
}

/// Imports simulated history from 1 January into an empty store with
/// `history_after_hours`; returns the alerts sent (sorted), the breaches
/// that hold at the end by the configured rules, and how many batches
/// waited as history.
async fn import_history(
    history_after_hours: u32,
) -> (Vec<(String, String)>, Vec<(String, String)>, u64) {
    let (setup, store) = setup(3, None).await;
    let mut settings = setup.settings(None);
    settings.alerts.history_after_hours = history_after_hours;
    if history_after_hours > 24 * 365 {
        // Without the rule: its backlog bound off too, since on a loaded
        // machine the pipeline can fall a minute behind the import, and
        // the batches read then would wait for the catch-up.
        settings.alerts.catch_up_after_seconds = 24 * 3600;
    }
    // The nine units of the 2023 campaign as if they still stood: a year of
    // their work, this year, gives the spread of communes (some near their
    // targets) that the catch-up rule is shown on.
    settings.units = crate::support::campaign_units();
    let units = settings.units.clone();
    let start = chrono::NaiveDate::from_ymd_opt(Utc::now().year(), 1, 1).unwrap();
    let file = std::env::temp_dir().join(format!("{}.ndjson", unique_name("history")));
    let lines: Vec<String> = cchc_pipeline::simulator::Simulator::new(&units, 21, start, 20.0)
        .take(40_000)
        .map(|r| r.value)
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut reader = AlertReader::new(&setup.alerts_topic);
    let mut pipeline = spawn_app(settings.clone()).await;
    // The pipeline owns its partitions and has evaluated them (empty)
    // before the import starts, so that, without the history rule, what
    // follows is evaluated as it is read, not as one backlog after a late
    // claim (which the catch-up rule defers whatever `history_after_hours`:
    // on a loaded machine the import can finish before the claims).
    let deadline = Instant::now() + Duration::from_secs(60);
    while pipeline.metrics.partitions.get() < 3 {
        assert!(
            Instant::now() < deadline,
            "the partitions were never claimed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.wait_evaluated("the claims").await;
    let config = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let imported = crate::pipeline::cchc(&setup, &["import", "--config"])
        .arg(&config)
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    wait_caught_up(
        &store,
        &setup.topic,
        3,
        &mut [&mut pipeline],
        Duration::from_secs(120),
    )
    .await;
    pipeline.wait_evaluated("the import").await;
    let mut got = reader.until(0, Duration::from_secs(3)).await;
    got.sort();

    // What holds at the end, from the stored counters, by the configured rules.
    let (from, to) = Window::YearToDate.days(local_date(Utc::now()));
    let mut want = Vec::new();
    for (commune, counters) in store.window_sums(from, to).await.unwrap() {
        let code = units.commune(&commune).unwrap().clone();
        for &indicator in Indicator::ALL {
            let rule = settings.targets.rule(&code, indicator);
            if rule.standing(indicator.ratio(&counters)) == Standing::Breached {
                want.push((
                    format!("{commune}.{}.ytd.1", indicator.id()),
                    "indicator.breached".to_string(),
                ));
            }
        }
    }
    want.sort();
    let deferred = pipeline
        .metrics
        .breaches_deferred
        .get_or_create(&vec![("why", "history")])
        .get();
    pipeline.stop().await;
    (got, want, deferred)
}
