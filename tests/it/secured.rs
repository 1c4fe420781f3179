//! The pipeline against a cluster that demands credentials over TLS: the
//! test broker's SASL_SSL listener (`scripts/kafka.sh`: SCRAM-SHA-512, a
//! throw-away CA that signed the broker's certificate for 127.0.0.1), with
//! TLS verification on. Every command that talks to Kafka goes through it
//! with nothing but `kafka.properties`; settings the cluster refuses stop
//! `cchc run` at start, naming them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::NaiveDate;

use cchc_pipeline::simulator::Simulator;
use cchc_pipeline::store::Store;

use crate::pipeline::{
    assert_projections, cchc, repo, setup, units, wait_caught_up, Pipeline, Produced, Setup,
};
use crate::support::unique_name;

/// librdkafka's settings for the SASL_SSL listener, as `scripts/kafka.sh`
/// wrote them (`KAFKA_SASL_CLIENT_PROPERTIES`, default
/// var/kafka/client/client.properties).
fn sasl_settings() -> BTreeMap<String, String> {
    let path = std::env::var("KAFKA_SASL_CLIENT_PROPERTIES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("var/kafka/client/client.properties"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no SASL_SSL client settings at {} ({e}) — start the broker with \
             `bash scripts/kafka.sh start` or run `bash scripts/test.sh`",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// config/default.toml with `[kafka.properties]` for the SASL_SSL listener
/// (`changed` replacing some of them), in a file of its own; and the
/// listener's bootstrap servers.
fn secured_config(changed: &[(&str, &str)]) -> (PathBuf, String) {
    let mut sasl = sasl_settings();
    let bootstrap = sasl.remove("bootstrap.servers").expect("bootstrap.servers");
    for (k, v) in changed {
        sasl.insert(k.to_string(), v.to_string());
    }
    let text = std::fs::read_to_string(repo().join("config/default.toml")).unwrap();
    // Its unit file, where the default names it (relative to config/).
    let units = repo().join("config/units/long-my.csv");
    let mut text = text.replace(
        r#"units_file = "units/long-my.csv""#,
        &format!("units_file = {:?}", units.display().to_string()),
    );
    text.push_str("\n[kafka.properties]\n");
    for (k, v) in &sasl {
        text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    let file = std::env::temp_dir().join(format!("{}.toml", unique_name("secured")));
    std::fs::write(&file, text).unwrap();
    (file, bootstrap)
}

/// `cchc ARGS --config FILE` on the SASL_SSL listener.
fn secured(setup: &Setup, bootstrap: &str, args: &[&str], config: &PathBuf) -> Command {
    let mut command = cchc(setup, args);
    command
        .arg("--config")
        .arg(config)
        .env("CCHC_KAFKA__BOOTSTRAP_SERVERS", bootstrap);
    command
}

fn run_ok(mut command: Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_against_a_cluster_that_demands_credentials_over_tls() {
    let (setup, store) = setup(3, None).await;
    let (config, bootstrap) = secured_config(&[]);
    let mut produced = Produced::default();

    // simulate: events into the topic through the secured listener.
    let events = 3_000;
    run_ok(
        secured(
            &setup,
            &bootstrap,
            &["simulate", "--events", "3000", "--seed", "7"],
            &config,
        ),
        "cchc simulate",
    );
    let start = NaiveDate::from_ymd_opt(chrono::Datelike::year(&chrono::Utc::now()), 1, 1).unwrap();
    let simulated: Vec<Vec<u8>> = Simulator::new(&units(), 7, start, 20.0)
        .take(events)
        .map(|r| r.value.into_bytes())
        .collect();

    // import: a backfill with one line that is no event.
    let backfill: Vec<String> = Simulator::new(&units(), 8, start, 20.0)
        .take(500)
        .map(|r| r.value)
        .collect();
    let file = std::env::temp_dir().join(format!("{}.ndjson", unique_name("backfill")));
    std::fs::write(&file, format!("{}\nnot json\n", backfill.join("\n"))).unwrap();
    let mut import = secured(&setup, &bootstrap, &["import"], &config);
    import.arg(&file);
    run_ok(import, "cchc import");

    // run: the pipeline, its consumer, alert relay and admin client.
    let mut pipeline = Pipeline::start_with(
        &setup,
        "secured",
        &config,
        &[("CCHC_KAFKA__BOOTSTRAP_SERVERS", bootstrap.as_str())],
    );
    wait_caught_up(
        &store,
        &setup.topic,
        3,
        &mut [&mut pipeline],
        Duration::from_secs(120),
    )
    .await;
    let dead = store.dead_letters(0, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "the line that is no event is a dead letter");
    assert_eq!(dead[0].reason_code, "not_json");

    // dead-letters resend: a corrected event in its place.
    let corrected = Simulator::new(&units(), 9, start, 20.0)
        .next()
        .unwrap()
        .value;
    let fix = std::env::temp_dir().join(format!("{}.json", unique_name("corrected")));
    std::fs::write(&fix, &corrected).unwrap();
    let id = dead[0].id.to_string();
    let mut resend = secured(
        &setup,
        &bootstrap,
        &["dead-letters", "resend", &id],
        &config,
    );
    resend.arg("--corrected").arg(&fix);
    run_ok(resend, "cchc dead-letters resend");
    wait_caught_up(
        &store,
        &setup.topic,
        3,
        &mut [&mut pipeline],
        Duration::from_secs(60),
    )
    .await;

    produced.records = events + backfill.len() + 2;
    produced.valid = simulated;
    produced
        .valid
        .extend(backfill.iter().map(|v| v.clone().into_bytes()));
    produced.valid.push(corrected.into_bytes());
    produced
        .dead
        .insert((dead[0].partition, dead[0].offset), "not_json");
    assert_projections(&store, &produced).await;
    let resent = store.dead_letter(dead[0].id).await.unwrap().unwrap();
    assert!(resent.resent_at.is_some(), "marked resent");

    // rebuild: its consumer and the reader of the partitions' ends.
    let summary = run_ok(
        secured(
            &setup,
            &bootstrap,
            &["rebuild", "--switch-lag", "0"],
            &config,
        ),
        "cchc rebuild",
    );
    assert!(summary.contains("switched over from public"), "{summary}");
    assert_eq!(
        store.refresh_active().await.unwrap().as_deref(),
        Some("cchc_gen_2")
    );
    assert_projections(&store, &produced).await;
    crate::support::Running::assert_running(&mut pipeline);

    // The alerts went out through the secured listener too.
    let published: i64 = match &store {
        Store::Postgres(pg) => {
            sqlx::query_scalar("SELECT count(*) FROM alert_outbox WHERE published_at IS NOT NULL")
                .fetch_one(&pg.pool())
                .await
                .unwrap()
        }
        Store::Sqlite(_) => unreachable!("the test store is PostgreSQL"),
    };
    assert!(published > 0, "the relay published through SASL_SSL");
    for f in [config, file, fix] {
        let _ = std::fs::remove_file(f);
    }
}

/// `cchc run` with settings the cluster refuses: a message naming them, and
/// an exit, within seconds.
fn refused_at_start(setup: &Setup, changed: &[(&str, &str)], named: &str) {
    let (config, bootstrap) = secured_config(changed);
    let started = std::time::Instant::now();
    let out = secured(setup, &bootstrap, &["run"], &config)
        .output()
        .expect("running cchc run");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "cchc run went on with {changed:?}:\n{log}"
    );
    assert!(log.contains(named), "the message names {named}:\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped within seconds, not after a retry loop: {:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn wrong_credentials_or_an_untrusted_certificate_stop_cchc_run_at_start_naming_the_setting() {
    let setup = Setup {
        topic: unique_name("refused"),
        alerts_topic: unique_name("refused_alerts"),
        group: unique_name("refused"),
        database_url: "postgres://nobody@127.0.0.1:1/never".into(),
    };
    refused_at_start(
        &setup,
        &[("sasl.password", "not-the-password")],
        "\"sasl.password\"",
    );
    // A CA of its own, which did not sign the broker's certificate.
    let dir = std::env::temp_dir().join(unique_name("other_ca"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=someone else"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    refused_at_start(
        &setup,
        &[("ssl.ca.location", ca.to_str().unwrap())],
        "\"ssl.ca.location\"",
    );
    let _ = std::fs::remove_dir_all(dir);
}
