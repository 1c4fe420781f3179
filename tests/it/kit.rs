//! The integration kit of docs/INTEGRATION.md, run as a vendor would run it:
//! the curl and Python producers over HTTP, the Java producer (the Kafka
//! client's idempotent producer) straight to the topic, and an NDJSON export
//! checked with `cchc validate` then imported, all into one pipeline with the real
//! broker and database; every valid event counts once, as the reference
//! model counts it. And the page shows each example exactly as the test
//! runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{NaiveDate, Utc};

use cchc_pipeline::simulator::Simulator;

use crate::pipeline::{cchc, repo, setup, stored, units, wait_caught_up};
use crate::reference::{reference, Fact, Table};
use crate::support::{dies_with_test, kafka_bootstrap, spawn_app, unique_name};

const PRODUCER: &str = "demo-producer-token";

fn examples() -> PathBuf {
    repo().join("docs/examples")
}

fn write_ndjson(dir: &Path, name: &str, lines: &[Vec<u8>]) -> PathBuf {
    let file = dir.join(name);
    let text: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect();
    std::fs::write(&file, text).unwrap();
    file
}

fn run(command: &mut Command, what: &str) -> Output {
    let out = dies_with_test(command)
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!(
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The jars of the Java client, as scripts/kafka.sh leaves them.
fn java_classpath() -> String {
    let file = repo().join("var/kafka/client/classpath");
    let cp = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (written by `bash scripts/kafka.sh start`)",
            file.display()
        )
    });
    assert!(cp.contains("kafka-clients"), "{cp}");
    cp.trim().to_string()
}

#[test]
fn the_integration_page_shows_each_example_as_it_is_run() {
    let page = std::fs::read_to_string(repo().join("docs/INTEGRATION.md")).unwrap();
    for example in ["send_events.sh", "send_events.py", "SendEvents.java"] {
        let code = std::fs::read_to_string(examples().join(example)).unwrap();
        assert!(
            page.contains(&code),
            "docs/INTEGRATION.md does not show docs/examples/{example} as it is"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_in_of_the_integration_page_projects_each_event_once() {
    let partitions = 3;
    let (setup, store) = setup(partitions, None).await;
    let app = spawn_app(setup.settings(None)).await;
    let dir = repo().join("var/test/kit").join(unique_name("kit"));
    std::fs::create_dir_all(&dir).unwrap();
    let events: Vec<Vec<u8>> = Simulator::new(
        &units(),
        23,
        NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
        20.0,
    )
    .take(4_800)
    .map(|r| r.value.into_bytes())
    .collect();
    let slices: Vec<&[Vec<u8>]> = events.chunks(1_200).collect();
    let url = format!("http://{}", app.http);

    // curl: every event written (exit 0); the whole file sent again, as
    // after a lost answer, changes nothing downstream.
    let file = write_ndjson(&dir, "curl.ndjson", slices[0]);
    for attempt in ["curl", "curl, again"] {
        let out = run(
            Command::new("bash")
                .arg(examples().join("send_events.sh"))
                .arg(&file)
                .env("CCHC_URL", &url)
                .env("CCHC_TOKEN", PRODUCER),
            attempt,
        );
        assert!(out.status.success(), "{attempt}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("1200 lines sent, 0 events refused"));
    }

    // Python, with two bad lines: the rest written, the two named with
    // their line and reason, exit status 1.
    let mut lines = slices[1].to_vec();
    lines.insert(3, b"{\"event_id\": \"x\"}".to_vec());
    lines.insert(700, b"not json".to_vec());
    let file = write_ndjson(&dir, "python.ndjson", &lines);
    let out = run(
        Command::new("python3")
            .arg(examples().join("send_events.py"))
            .arg(&file)
            .env("CCHC_URL", &url)
            .env("CCHC_TOKEN", PRODUCER),
        "python",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 4: missing_field"), "{stderr}");
    assert!(stderr.contains("line 701: not_json"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1200 events written, 2 refused"));

    // Java, the Kafka client's idempotent producer, straight to the topic.
    let file = write_ndjson(&dir, "java.ndjson", slices[2]);
    let out = run(
        Command::new("java")
            .arg("-cp")
            .arg(java_classpath())
            .arg(examples().join("SendEvents.java"))
            .arg(kafka_bootstrap())
            .arg(&setup.topic)
            .arg(&file),
        "java",
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1200 events written to"));

    // An export checked, then imported.
    let file = write_ndjson(&dir, "export.ndjson", slices[3]);
    let file = file.to_str().unwrap();
    assert!(run(&mut cchc(&setup, &["validate", file]), "validate")
        .status
        .success());
    assert!(run(&mut cchc(&setup, &["import", file]), "import")
        .status
        .success());

    let mut app = app;
    wait_caught_up(
        &store,
        &setup.topic,
        partitions,
        &mut [&mut app],
        Duration::from_secs(120),
    )
    .await;
    let facts: Vec<Fact> = events.iter().map(|v| Fact::from_json(v)).collect();
    let want: Table = reference(&facts, Utc::now().timestamp_nanos_opt());
    let got = stored(&store).await;
    assert_eq!(got, want, "the projections against the reference model");
    assert_eq!(
        app.metrics.duplicates.get(),
        1_200,
        "the file sent twice counts once"
    );
    app.stop().await;
}
