//! Units that change (docs/UNITS.md), with the default unit list: the nine
//! units of thị xã Long Mỹ until 30 June 2025, the three Cần Thơ wards they
//! became from 1 July 2025.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::pipeline::{setup, stored, wait_caught_up, Pipeline};
use crate::reference::{DUE, ON_TIME, RATINGS, RECEIVED};
use crate::support::{get_json, kafka_bootstrap, Running};

const CASES: usize = 300;

fn day(s: &str) -> chrono::NaiveDate {
    s.parse().unwrap()
}

/// `value` keyed by its commune, written to `partition`.
async fn send_to(producer: &FutureProducer, topic: &str, partition: i32, value: &Value) {
    let key = value["commune_code"].as_str().unwrap().to_string();
    let payload = value.to_string();
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");
}

/// `values` written to `partition` (at once, 500 at a time).
async fn send_all(producer: &FutureProducer, topic: &str, partition: i32, values: &[Value]) {
    for chunk in values.chunks(500) {
        futures_util::future::join_all(
            chunk.iter().map(|v| send_to(producer, topic, partition, v)),
        )
        .await;
    }
}

/// DOMAIN.md and docs/UNITS.md: a case received on 28 June 2025 by Xã Long
/// Trị (31477, ended 30 June, merged into Phường Long Mỹ 31471) and resolved
/// on 3 July 2025 by Phường Long Mỹ is one case, on whichever partitions its
/// records land (here two, written at once), through a SIGKILL: its
/// receipt counts for Long Trị, its resolution for Long Mỹ, nothing is
/// counted late or twice, and a rating sent later under the old code finds
/// it. Today's structure counts all of it in Phường Long Mỹ; the campaign's
/// (as of 30 June 2025) counts the receipt in Long Trị and shows the
/// resolution apart, beside thị xã Long Mỹ's roll-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_across_the_merger_is_one_case_across_partitions_and_a_sigkill() {
    let (setup, store) = setup(2, None).await;
    let mut pipeline = Pipeline::start(&setup, "merger");
    // The records come before either partition's clock has ticked: whether
    // an open case counts late is kept with the case, so the partition that
    // resolves it takes back what the other counted.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let event = |id: String, kind: &str, at: &str, commune: &str, case: usize, data: Value| {
        json!({"event_id": id, "event_type": kind, "schema_version": 1, "occurred_at": at,
               "commune_code": commune, "case_id": format!("000.00.77.H37-250628-{case:05}"),
               "data": data})
    };
    let receipt = |n: usize| {
        event(
            format!("merger-r-{n}"),
            "case.received",
            "2025-06-28T09:00:00+07:00",
            "31477",
            n,
            json!({"procedure_code": "1.001234", "channel": "online", "online_level": "full",
                   "due_at": "2025-07-05T17:00:00+07:00", "registered_electronically": true}),
        )
    };
    let resolution = |n: usize| {
        event(
            format!("merger-s-{n}"),
            "case.resolved",
            "2025-07-03T10:00:00+07:00",
            "31471",
            n,
            json!({"due_at": "2025-07-05T17:00:00+07:00", "outcome": "completed"}),
        )
    };
    let rating = |n: usize| {
        event(
            format!("merger-q-{n}"),
            "case.rated",
            "2025-07-10T08:00:00+07:00",
            "31477",
            n,
            json!({"rating": "satisfied"}),
        )
    };
    // Receipts on partition 0, resolutions on partition 1, at once; the
    // pipeline killed halfway.
    for half in [0..CASES / 2, CASES / 2..CASES] {
        let receipts = half.clone().map(receipt).collect::<Vec<_>>();
        let resolutions = half.clone().map(resolution).collect::<Vec<_>>();
        let (a, b) = (
            futures_util::future::join_all(
                receipts
                    .iter()
                    .map(|v| send_to(&producer, &setup.topic, 0, v)),
            ),
            futures_util::future::join_all(
                resolutions
                    .iter()
                    .map(|v| send_to(&producer, &setup.topic, 1, v)),
            ),
        );
        futures_util::future::join(a, b).await;
        if half.start == 0 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            pipeline.kill();
            pipeline = Pipeline::start(&setup, "merger-restarted");
        }
    }
    let ratings = (0..CASES).map(rating).collect::<Vec<_>>();
    futures_util::future::join_all(
        ratings
            .iter()
            .map(|v| send_to(&producer, &setup.topic, 0, v)),
    )
    .await;
    wait_caught_up(
        &store,
        &setup.topic,
        2,
        &mut [&mut pipeline],
        Duration::from_secs(120),
    )
    .await;

    // The counters, keyed by the unit each event named.
    let table = stored(&store).await;
    let at = |commune: &str, d: &str| {
        table
            .get(&(commune.to_string(), day(d)))
            .copied()
            .unwrap_or_default()
    };
    let n = CASES as i64;
    let receipts = at("31477", "2025-06-28");
    assert_eq!(receipts[RECEIVED], n, "{table:?}");
    let resolved = at("31471", "2025-07-03");
    assert_eq!((resolved[DUE], resolved[ON_TIME]), (n, n), "{table:?}");
    assert_eq!(at("31477", "2025-07-10")[RATINGS], n, "{table:?}");
    let due: i64 = table.values().map(|c| c[DUE]).sum();
    assert_eq!(due, n, "no case counted late or twice: {table:?}");

    let http = pipeline.http();
    let year = "window=2025-01-01..2026-01-01";
    let of = |body: &Value, indicator: &str| {
        let i = body["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["indicator"] == indicator)
            .unwrap()
            .clone();
        (
            i["numerator"].as_i64().unwrap(),
            i["denominator"].as_i64().unwrap(),
        )
    };
    // Today: Phường Long Mỹ holds the receipts of Long Trị and its own
    // resolutions.
    let long_my = get_json(&format!(
        "http://{http}/api/v1/communes/31471/indicators?{year}"
    ))
    .await;
    assert_eq!(long_my["commune"]["name"], "Phường Long Mỹ", "{long_my}");
    assert_eq!(of(&long_my, "online_rate"), (n, n), "{long_my}");
    assert_eq!(of(&long_my, "on_time_rate"), (n, n), "{long_my}");
    assert_eq!(of(&long_my, "satisfaction_rate"), (n, n), "{long_my}");
    // As of 30 June 2025: the nine units of the town.
    let town = get_json(&format!(
        "http://{http}/api/v1/units/937/communes?{year}&as_of=2025-06-30"
    ))
    .await;
    assert_eq!(town["communes"].as_array().unwrap().len(), 9, "{town}");
    let long_tri = town["communes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["commune"]["code"] == "31477")
        .unwrap();
    assert_eq!(of(long_tri, "online_rate"), (n, n), "{long_tri}");
    assert_eq!(
        of(long_tri, "satisfaction_rate"),
        (n, n),
        "the rating named Long Trị"
    );
    assert_eq!(
        of(long_tri, "on_time_rate"),
        (0, 0),
        "resolved by the ward, not Long Trị"
    );
    let apart = town["apart"].as_array().unwrap();
    assert_eq!(apart.len(), 1, "{town}");
    assert_eq!(apart[0]["unit"]["name"], "Phường Long Mỹ");
    assert_eq!(apart[0]["unit"]["valid_from"], "2025-07-01");
    assert_eq!(apart[0]["in_rollup"], true);
    assert_eq!(of(&apart[0], "on_time_rate"), (n, n));
    assert_eq!(
        of(&town["rollup"], "on_time_rate"),
        (n, n),
        "the town's roll-up counts it"
    );
    let thuan_an = get_json(&format!(
        "http://{http}/api/v1/communes/31471/indicators?{year}&as_of=2025-06-30"
    ))
    .await;
    assert_eq!(thuan_an["commune"]["name"], "Phường Thuận An");
    assert_eq!(of(&thuan_an, "on_time_rate"), (0, 0), "{thuan_an}");
    // A unit asked for when it did not exist.
    let gone = get_json(&format!("http://{http}/api/v1/communes/31477/indicators")).await;
    assert!(
        gone["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended on 2025-06-30"),
        "{gone}"
    );
    let units = get_json(&format!("http://{http}/api/v1/units")).await;
    assert_eq!(units["changes"], json!(["2025-07-01"]));
    assert_eq!(
        units["units"].as_array().unwrap().len(),
        4,
        "Cần Thơ and its three wards: {units}"
    );
}

/// A unit list of the test's own: config/default.toml with its unit file
/// changed by `change` (written next to a copy of the configuration).
fn config_with_units(name: &str, change: impl Fn(String) -> String) -> std::path::PathBuf {
    let repo = crate::pipeline::repo();
    let dir = repo
        .join("var/test")
        .join(crate::support::unique_name(name));
    std::fs::create_dir_all(dir.join("units")).unwrap();
    let csv = std::fs::read_to_string(repo.join("config/units/long-my.csv")).unwrap();
    std::fs::write(dir.join("units/long-my.csv"), change(csv)).unwrap();
    let file = dir.join("config.toml");
    std::fs::copy(repo.join("config/default.toml"), &file).unwrap();
    file
}

/// docs/UNITS.md: an event that names a split unit after its end is a dead
/// letter `unit_ended`, one that names a unit before it exists
/// `unit_not_yet_valid`, both kept whole where an operator finds them; and a
/// new unit file takes effect on a restart without reading the topic again:
/// the counters stay keyed by the code each event named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_units_late_event_is_kept_aside_and_a_new_unit_file_needs_no_replay() {
    let (setup, store) = setup(1, None).await;
    // Xã Tân Phú split between Phường Long Phú 1 and Phường Long Mỹ; a
    // commune that begins on 1 January 2026.
    let split_units = |csv: String| {
        csv.replace(
            "31481,Xã Tân Phú,commune,937,,2025-06-30,31480,",
            "31481,Xã Tân Phú,commune,937,,2025-06-30,31480;31471,",
        ) + "40000,Xã Mới,commune,92,2026-01-01,,,\n"
    };
    let split = config_with_units("split", split_units);
    let mut pipeline = Pipeline::start_with(&setup, "split", &split, &[]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .create()
        .unwrap();
    let receipt = |id: &str, commune: &str, at: &str| {
        json!({"event_id": id, "event_type": "case.received", "schema_version": 1,
               "occurred_at": at, "commune_code": commune, "case_id": id,
               "data": {"procedure_code": "1.001234", "channel": "in_person", "online_level": "none",
                        "due_at": "2026-12-31T17:00:00+07:00", "registered_electronically": false}})
    };
    let records = [
        receipt("tan-phu-before", "31481", "2025-06-30T09:00:00+07:00"),
        receipt("tan-phu-after", "31481", "2025-07-01T09:00:00+07:00"),
        receipt("moi-before", "40000", "2025-12-31T09:00:00+07:00"),
        receipt("moi-after", "40000", "2026-01-02T09:00:00+07:00"),
        receipt("long-tri-after", "31477", "2025-08-01T09:00:00+07:00"),
    ];
    for r in &records {
        send_to(&producer, &setup.topic, 0, r).await;
    }
    wait_caught_up(
        &store,
        &setup.topic,
        1,
        &mut [&mut pipeline],
        Duration::from_secs(60),
    )
    .await;
    let reasons = store.dead_letter_reasons().await.unwrap();
    let codes: Vec<(i64, &str)> = reasons.iter().map(|(_, o, r)| (*o, r.as_str())).collect();
    assert_eq!(
        codes,
        [(1, "unit_ended"), (2, "unit_not_yet_valid")],
        "{reasons:?}"
    );
    let kept = store.dead_letters(0, 10).await.unwrap();
    assert!(
        kept[0].reason.contains("`31480`, `31471`"),
        "{}",
        kept[0].reason
    );
    assert_eq!(
        kept[0].value.as_deref(),
        Some(records[1].to_string().as_bytes())
    );

    // Today, Long Trị's receipt of August 2025 counts in Phường Long Mỹ.
    let http = pipeline.http();
    let year = "window=2025-01-01..2026-01-01";
    let received = |body: &Value| body["indicators"][0]["denominator"].as_i64().unwrap();
    let long_my = get_json(&format!(
        "http://{http}/api/v1/communes/31471/indicators?{year}"
    ))
    .await;
    assert_eq!(received(&long_my), 1, "{long_my}");
    let offsets = store.offsets().await.unwrap();
    pipeline.kill();

    // A new unit file: Long Trị merged into Phường Long Bình instead.
    let moved = config_with_units("moved", |csv| {
        split_units(csv).replace(
            "31477,Xã Long Trị,commune,937,,2025-06-30,31471,",
            "31477,Xã Long Trị,commune,937,,2025-06-30,31473,",
        )
    });
    let mut pipeline = Pipeline::start_with(&setup, "moved", &moved, &[]);
    let http = pipeline.http();
    let long_my = get_json(&format!(
        "http://{http}/api/v1/communes/31471/indicators?{year}"
    ))
    .await;
    let long_binh = get_json(&format!(
        "http://{http}/api/v1/communes/31473/indicators?{year}"
    ))
    .await;
    assert_eq!(
        (received(&long_my), received(&long_binh)),
        (0, 1),
        "{long_binh}"
    );
    assert_eq!(
        store.offsets().await.unwrap(),
        offsets,
        "nothing read again"
    );
    pipeline.assert_running();
}

/// docs/UNITS.md, "Targets and alerts": breaches are evaluated for the unit
/// valid at evaluation time, on everything that counts in it. Phường Long Mỹ
/// (31471) today is fed by its own events (here on partition 1) and by
/// producers still sending Xã Long Trị's code (31477, on partition 0);
/// neither alone reaches the online rate's minimum sample, both together
/// breach it, and the ward's alert carries both; nothing is said of 31477,
/// which no longer exists. Then an outage: partition 0's small backlog would
/// breach the ward again if evaluated beside partition 1's unread one, so
/// the ward waits until every partition that carries its codes is caught
/// up, and no false alarm goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_ward_is_evaluated_whole_across_partitions_and_waits_for_all_of_them() {
    use crate::alerts::{local, AlertReader};
    use crate::support::{spawn_app, unique_name};
    use cchc_pipeline::domain::Window;

    let (setup, store) = setup(2, None).await;
    let mut settings = setup.settings(None);
    settings.alert_windows = vec![Window::YearToDate];
    settings.batch.max_records = 20;
    settings.alerts.catch_up_after_seconds = 2;
    settings.alerts.history_after_hours = 24 * 365;
    let mut reader = AlertReader::new(&setup.alerts_topic);
    let mut app = spawn_app(settings.clone()).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let now = chrono::Utc::now().with_timezone(&local()) - chrono::Duration::minutes(30);
    let due = (now + chrono::Duration::days(5)).to_rfc3339();
    let run = unique_name("w");
    let mut n = 0;
    let mut received = |commune: &str, online: bool| {
        n += 1;
        let (channel, level) = if online {
            ("online", "full")
        } else {
            ("in_person", "none")
        };
        json!({"event_id": format!("{run}-r-{n}"), "event_type": "case.received",
               "schema_version": 1, "occurred_at": now.to_rfc3339(), "commune_code": commune,
               "case_id": format!("{run}-{n}"),
               "data": {"procedure_code": "1.0001", "channel": channel, "online_level": level,
                        "due_at": due, "registered_electronically": true, "digitized": true}})
    };
    let online_of = |alert: &Value| {
        (
            alert["numerator"].as_i64().unwrap(),
            alert["denominator"].as_i64().unwrap(),
        )
    };

    // 12 in-person receipts under each code: 0 of 24 online, one breach.
    send_all(
        &producer,
        &setup.topic,
        0,
        &(0..12)
            .map(|_| received("31477", false))
            .collect::<Vec<_>>(),
    )
    .await;
    send_all(
        &producer,
        &setup.topic,
        1,
        &(0..12)
            .map(|_| received("31471", false))
            .collect::<Vec<_>>(),
    )
    .await;
    let got = reader.until(1, Duration::from_secs(60)).await;
    assert_eq!(
        got,
        [(
            "31471.online_rate.ytd.1".to_string(),
            "indicator.breached".to_string()
        )],
        "{:?}",
        reader.seen
    );
    assert_eq!(online_of(&reader.seen[0]), (0, 24), "both codes counted");
    assert_eq!(reader.seen[0]["commune_name"], "Phường Long Mỹ");
    let breaches = get_json(&format!("http://{}/api/v1/breaches", app.http)).await;
    assert_eq!(
        breaches["breaches"][0]["commune"]["code"], "31471",
        "{breaches}"
    );
    // 60 online under the ward's own code: 60 of 84, recovered.
    send_all(
        &producer,
        &setup.topic,
        1,
        &(0..60).map(|_| received("31471", true)).collect::<Vec<_>>(),
    )
    .await;
    let got = reader.until(2, Duration::from_secs(60)).await;
    assert_eq!(got[1].0, "31471.online_rate.ytd.2", "{:?}", reader.seen);
    assert_eq!(online_of(&reader.seen[1]), (60, 84));
    wait_caught_up(
        &store,
        &setup.topic,
        2,
        &mut [&mut app],
        Duration::from_secs(60),
    )
    .await;
    app.stop().await;

    // The outage: 100 in-person receipts under the old code on partition 0
    // (60 of 184 online, were partition 1's backlog not counted yet);
    // partition 1 holds 5,000 signatures, then 1,000 online receipts.
    send_all(
        &producer,
        &setup.topic,
        0,
        &(0..100)
            .map(|_| received("31477", false))
            .collect::<Vec<_>>(),
    )
    .await;
    let signatures: Vec<Value> = (0..20_000)
        .map(|d| {
            json!({"event_id": format!("{run}-d-{d}"), "event_type": "document.signed",
                   "schema_version": 1, "occurred_at": now.to_rfc3339(), "commune_code": "31471",
                   "data": {"document_id": format!("{run}-doc-{d}"), "signature": "digital",
                            "document_kind": "outgoing"}})
        })
        .collect();
    send_all(&producer, &setup.topic, 1, &signatures).await;
    send_all(
        &producer,
        &setup.topic,
        1,
        &(0..1_000)
            .map(|_| received("31471", true))
            .collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut app = spawn_app(settings).await;
    wait_caught_up(
        &store,
        &setup.topic,
        2,
        &mut [&mut app],
        Duration::from_secs(120),
    )
    .await;
    app.wait_evaluated("the catch-up").await;
    let got = reader.until(2, Duration::from_secs(5)).await;
    assert_eq!(
        got.len(),
        2,
        "no false alarm after the outage: {:?}",
        reader.seen
    );
    let deferred = app
        .metrics
        .breaches_deferred
        .get_or_create(&vec![("why", "backlog")])
        .get();
    assert!(deferred > 0, "partition 1's backlog waited");
    let ward = get_json(&format!(
        "http://{}/api/v1/communes/31471/indicators",
        app.http
    ))
    .await;
    let online = ward["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["indicator"] == "online_rate")
        .unwrap();
    assert_eq!(
        (online["numerator"].as_i64(), online["denominator"].as_i64()),
        (Some(1_060), Some(1_184)),
        "{ward}"
    );
    app.stop().await;
}

/// A database upgraded past migrations 0007, 0008 and 0010 holds case rows
/// whose new columns are NULL (`received_procedure`, `late`, `applied`, the
/// ids of such a row being in the older table). Every case of a ward
/// that others merged into is checked at the commit against its row as
/// loaded: such a row must read as unchanged, or every batch touching the
/// case would be refused and folded again, forever. Here the rows are made
/// as an older version left them, between the receipts and the resolutions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_stored_before_the_reporter_columns_are_resolved_after_the_upgrade() {
    let (setup, store) = setup(1, None).await;
    let mut pipeline = Pipeline::start(&setup, "upgraded");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let event = |id: String, kind: &str, case: usize, data: Value| {
        json!({"event_id": id, "event_type": kind, "schema_version": 1,
               "occurred_at": "2026-03-02T09:00:00+07:00", "commune_code": "31471",
               "case_id": format!("000.00.71.H37-260302-{case:05}"), "data": data})
    };
    let due = json!("2026-03-09T17:00:00+07:00");
    let receipts: Vec<Value> = (0..50)
        .map(|n| {
            event(
                format!("upgraded-r-{n}"),
                "case.received",
                n,
                json!({"procedure_code": "1.001234", "channel": "online", "online_level": "full",
                         "due_at": due, "registered_electronically": true}),
            )
        })
        .collect();
    send_all(&producer, &setup.topic, 0, &receipts).await;
    wait_caught_up(
        &store,
        &setup.topic,
        1,
        &mut [&mut pipeline],
        Duration::from_secs(60),
    )
    .await;
    pipeline.kill();
    let pool = sqlx::PgPool::connect(&setup.database_url).await.unwrap();
    let rows = sqlx::query(
        "UPDATE cases SET received_procedure = NULL, late = NULL, applied = NULL, older_ids = true
         WHERE commune = '31471'",
    )
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(rows, 50);

    let mut pipeline = Pipeline::start(&setup, "upgraded-restarted");
    let resolutions: Vec<Value> = (0..50)
        .map(|n| {
            event(
                format!("upgraded-s-{n}"),
                "case.resolved",
                n,
                json!({"due_at": due, "outcome": "completed"}),
            )
        })
        .collect();
    send_all(&producer, &setup.topic, 0, &resolutions).await;
    wait_caught_up(
        &store,
        &setup.topic,
        1,
        &mut [&mut pipeline],
        Duration::from_secs(60),
    )
    .await;
    let table = stored(&store).await;
    let on = table
        .get(&("31471".to_string(), day("2026-03-02")))
        .copied()
        .unwrap_or_default();
    assert_eq!(
        (on[RECEIVED], on[DUE], on[ON_TIME]),
        (50, 50, 50),
        "{table:?}"
    );
    let late: i64 = sqlx::query_scalar("SELECT count(*) FROM cases WHERE late IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(late, 0, "every row written since sets the columns");
    pipeline.kill();
}
