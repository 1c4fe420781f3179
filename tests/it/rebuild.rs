//! `cchc rebuild` against the real broker and database, next to a running
//! pipeline whose API is queried throughout.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cchc_pipeline::store::Store;

use crate::support::Running;

use crate::pipeline::{
    assert_projections, cchc, repo, send_all, setup, units, wait_caught_up, workload, Pipeline,
    Produced,
};

const READ_TOKEN: &str = "demo-read-token";

/// What the API answered while the rebuild ran.
#[derive(Debug, Default)]
struct Served {
    ok: usize,
    failures: Vec<String>,
    /// Requests answered per projection schema, in the order first seen.
    schemas: BTreeMap<String, usize>,
    order: Vec<String>,
}

/// Queries one commune's indicators and `/ready` in a loop until `stop`.
async fn query_until(http: String, commune: String, stop: Arc<AtomicBool>) -> Served {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut served = Served::default();
    while !stop.load(Ordering::Relaxed) {
        let indicators = client
            .get(format!(
                "http://{http}/api/v1/communes/{commune}/indicators?window=ytd"
            ))
            .bearer_auth(READ_TOKEN)
            .send()
            .await;
        match indicators {
            Ok(r) if r.status().is_success() => served.ok += 1,
            Ok(r) => served.failures.push(format!("indicators: {}", r.status())),
            Err(e) => served.failures.push(format!("indicators: {e}")),
        }
        let ready = client.get(format!("http://{http}/ready")).send().await;
        match ready {
            Ok(r) if r.status().is_success() => {
                let body: serde_json::Value =
                    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                let schema = body["projection_schema"].as_str().unwrap().to_string();
                if !served.schemas.contains_key(&schema) {
                    served.order.push(schema.clone());
                }
                *served.schemas.entry(schema).or_default() += 1;
                served.ok += 1;
            }
            Ok(r) => served.failures.push(format!("ready: {}", r.status())),
            Err(e) => served.failures.push(format!("ready: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served
}

/// Runs `cchc rebuild` to completion, with its log in `var/test-logs/`.
fn run_rebuild(setup: &crate::pipeline::Setup, extra: &[&str]) -> std::process::Output {
    let config = repo().join("config/default.toml");
    let mut args = vec!["rebuild", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let log = repo().join(format!("var/test-logs/{}-rebuild.log", setup.topic));
    let output = cchc(setup, &args)
        .stdin(Stdio::null())
        .output()
        .expect("running cchc rebuild");
    std::fs::write(&log, &output.stderr).unwrap();
    assert!(
        output.status.success(),
        "cchc rebuild failed ({}); log: {}\n{}",
        output.status,
        log.display(),
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_replays_into_a_fresh_schema_and_the_running_pipeline_switches_without_downtime()
{
    let (setup, store) = setup(3, None).await;
    let Store::Postgres(pg) = &store else {
        panic!("the rebuild needs PostgreSQL")
    };
    assert_eq!(pg.schema(), "public");
    let mut records = workload(31, 45_000, 0.02);
    let after = records.split_off(records.len() * 5 / 6);
    let during = records.split_off(records.len() * 4 / 5);
    let mut produced = Produced::default();
    let mut pipeline = Pipeline::start(&setup, "live");
    send_all(&setup.topic, records, &mut produced).await;
    wait_caught_up(
        &store,
        &setup.topic,
        3,
        &mut [&mut pipeline],
        Duration::from_secs(120),
    )
    .await;

    // A projection bug, as a rebuild is there to repair: the served counters
    // are wrong, and every later batch only adds to them.
    let commune = units().communes().next().unwrap().code.to_string();
    sqlx::query("UPDATE public.day_counters SET received = received + 1000 WHERE commune = $1")
        .bind(&commune)
        .execute(&pg.pool())
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let querying = tokio::spawn(query_until(pipeline.http(), commune.clone(), stop.clone()));
    // Events keep arriving while the rebuild replays and switches.
    let producing = {
        let topic = setup.topic.clone();
        tokio::spawn(async move {
            send_all(&topic, during, &mut produced).await;
            produced
        })
    };
    let rebuild = {
        let setup = crate::pipeline::Setup {
            topic: setup.topic.clone(),
            alerts_topic: setup.alerts_topic.clone(),
            group: setup.group.clone(),
            database_url: setup.database_url.clone(),
        };
        tokio::task::spawn_blocking(move || run_rebuild(&setup, &["--switch-lag", "500"]))
    };
    let output = rebuild.await.unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("projections rebuilt into schema cchc_gen_2"),
        "{summary}"
    );
    let produced = producing.await.unwrap();

    // The API moves to the new schema on its own, within seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bytes = reqwest::get(format!("http://{}/ready", pipeline.http()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if body["projection_schema"] == "cchc_gen_2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API still serves {body} 20 s after the switch"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        store.refresh_active().await.unwrap().as_deref(),
        Some("cchc_gen_2")
    );
    let mut produced = produced;
    send_all(&setup.topic, after, &mut produced).await;
    // The running consumer followed: every event once in the new schema,
    // including those produced during and after the switch, and the
    // planted error is gone.
    wait_caught_up(
        &store,
        &setup.topic,
        3,
        &mut [&mut pipeline],
        Duration::from_secs(120),
    )
    .await;
    assert_projections(&store, &produced).await;
    pipeline.assert_running();
    let log = std::fs::read_to_string(&pipeline.log).unwrap();
    assert!(
        log.contains("claiming the owned partitions in the new schema"),
        "the live consumer claimed its partitions in the rebuilt schema"
    );

    stop.store(true, Ordering::Relaxed);
    let served = querying.await.unwrap();
    assert!(
        served.failures.is_empty(),
        "the API failed during the rebuild: {:?}",
        &served.failures[..served.failures.len().min(10)]
    );
    assert_eq!(
        served.order,
        ["public", "cchc_gen_2"],
        "served schemas in order: {served:?}"
    );
    assert!(served.ok > 20, "{served:?}");

    // The old schema is left as it was, for comparison or rollback.
    let planted: i64 = sqlx::query_scalar(
        "SELECT sum(received)::int8 FROM public.day_counters WHERE commune = $1",
    )
    .bind(&commune)
    .fetch_one(&pg.pool())
    .await
    .unwrap();
    let rebuilt: i64 = sqlx::query_scalar(
        "SELECT sum(received)::int8 FROM cchc_gen_2.day_counters WHERE commune = $1",
    )
    .bind(&commune)
    .fetch_one(&pg.pool())
    .await
    .unwrap();
    assert!(planted >= rebuilt + 1000, "{planted} vs {rebuilt}");

    // What subscribers were told was carried over: every alert and breach
    // state of the old schema is in the new one.
    for (what, sql) in [
        (
            "alerts",
            "SELECT count(*) FROM public.alert_outbox o WHERE NOT EXISTS
               (SELECT 1 FROM cchc_gen_2.alert_outbox n WHERE n.alert_id = o.alert_id)",
        ),
        (
            "breach states",
            "SELECT count(*) FROM public.breach_states o WHERE NOT EXISTS
               (SELECT 1 FROM cchc_gen_2.breach_states n WHERE (n.commune, n.indicator, n.\"window\")
                  = (o.commune, o.indicator, o.\"window\"))",
        ),
    ] {
        let missing: i64 = sqlx::query_scalar(sql)
            .fetch_one(&pg.pool())
            .await
            .unwrap();
        assert_eq!(missing, 0, "{what} of the old schema missing in the new one");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_continues_from_its_stored_offsets_and_a_restart_starts_over() {
    let (setup, store) = setup(2, None).await;
    let mut produced = Produced::default();
    send_all(&setup.topic, workload(32, 20_000, 0.0), &mut produced).await;

    // Interrupted after its first commits.
    let config = repo().join("config/default.toml");
    let mut child = cchc(
        &setup,
        &[
            "rebuild",
            "--config",
            config.to_str().unwrap(),
            "--switch-lag",
            "0",
        ],
    )
    .env("CCHC_BATCH__MAX_RECORDS", "500")
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let db = sqlx::PgPool::connect(&setup.database_url).await.unwrap();
    let applied = || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT sum(next_offset)::int8 FROM cchc_gen_2.partition_offsets",
        )
        .fetch_one(&db)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied().await == 0 {
        assert!(Instant::now() < deadline, "the rebuild committed nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::support::signal(&child, "-INT");
    assert!(child.wait().unwrap().success());
    let stopped_at = applied().await;
    let total = produced.records as i64;
    assert!(stopped_at < total, "interrupted before the end");

    // Run again: continues into the same schema, and switches.
    let output = run_rebuild(&setup, &["--switch-lag", "0"]);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("schema cchc_gen_2"), "{summary}");
    assert!(summary.contains("resumed"), "{summary}");
    assert!(
        summary.contains(&format!("({} records", total - stopped_at)),
        "the second run projects only what the first left ({stopped_at} of {total}): {summary}"
    );
    assert_eq!(
        store.refresh_active().await.unwrap().as_deref(),
        Some("cchc_gen_2")
    );
    assert_projections(&store, &produced).await;

    // --restart drops nothing active: it builds cchc_gen_3 from offset 0.
    let output = run_rebuild(&setup, &["--restart", "--switch-lag", "0"]);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("schema cchc_gen_3"), "{summary}");
    assert!(
        summary.contains("switched over from cchc_gen_2"),
        "{summary}"
    );
    assert_eq!(
        store.refresh_active().await.unwrap().as_deref(),
        Some("cchc_gen_3")
    );
    assert_projections(&store, &produced).await;
}

#[tokio::test]
async fn a_rebuild_of_a_sqlite_store_is_refused_with_the_reason() {
    let setup = crate::pipeline::Setup {
        topic: "unused".into(),
        alerts_topic: "unused".into(),
        group: "unused".into(),
        database_url: "sqlite://var/test-logs/never-created.sqlite".into(),
    };
    let config = repo().join("config/default.toml");
    let output = cchc(&setup, &["rebuild", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("rebuild needs a PostgreSQL store"), "{log}");
}
