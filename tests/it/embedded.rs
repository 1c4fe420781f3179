//! The embedded default (librdkafka's mock cluster and SQLite): the demo
//! must project every simulated event exactly, even though the mock keeps
//! only the last few megabytes of each partition.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};

use cchc_pipeline::config::Settings;
use cchc_pipeline::demo::{self, DemoOptions};
use cchc_pipeline::domain::{decode, Fold};
use cchc_pipeline::operate::SimulateOptions;
use cchc_pipeline::shutdown::CancellationToken;
use cchc_pipeline::simulator::Simulator;
use cchc_pipeline::store::Store;

use crate::support::{get_json, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_demo_projects_two_hundred_thousand_events_exactly() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings::load_file(&repo.join("config/default.toml")).unwrap();
    let dir = repo.join("var/test-embedded");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.sqlite", unique_name("demo")));
    let url = format!("sqlite://{}", file.display());
    let start = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
    let events = 200_000;
    let simulate = SimulateOptions {
        events,
        seed: 9,
        start,
        cases_per_day: 20.0,
        partitions: 9,
        rate: None,
    };
    let options = DemoOptions {
        partitions: 9,
        database_url: url.clone(),
        simulate,
        listen: "127.0.0.1:0".into(),
        exit_when_done: true,
    };
    let report = demo::run(settings.clone(), &options, CancellationToken::new())
        .await
        .expect("demo");
    // Today's units: the city over the three wards Long Mỹ became.
    assert!(report.contains("Thành phố Cần Thơ"), "{report}");
    assert!(
        report.starts_with(&format!("{events} events projected in "))
            && report.lines().next().unwrap().contains(", 3 dead letters"),
        "{report}"
    );
    let header = report.lines().nth(2).unwrap();
    for &i in cchc_pipeline::domain::Indicator::ALL {
        assert!(
            header.contains(i.id()),
            "the report has a column for {i}: {report}"
        );
    }

    let mut fold = Fold::new(None);
    for r in Simulator::new(&settings.units, 9, start, 20.0).take(events) {
        fold.apply(&decode(Some(r.value.as_bytes()), &settings.units).unwrap());
    }
    fold.advance_clock(Utc::now());
    let mut want: Vec<_> = fold
        .deltas()
        .iter()
        .filter(|(_, c)| !c.is_zero())
        .map(|((c, d), v)| (c.to_string(), *d, *v))
        .collect();
    want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let store = Store::connect(&url, 1, &settings.kafka.topic)
        .await
        .unwrap();
    let got: Vec<_> = store
        .day_counters()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, _, c)| !c.is_zero())
        .collect();
    assert_eq!(got.len(), want.len());
    // The demo's malformed records, each a dead letter with its reason.
    let mut reasons: Vec<String> = store
        .dead_letters(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason_code)
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["not_json", "timestamp_without_offset", "unknown_commune"]
    );
    assert!(
        got == want,
        "SQLite projections differ from the fold of every simulated event"
    );
    let _ = std::fs::remove_dir_all(dir.join(file.file_name().unwrap()));
}

/// What a newcomer sees: the README's demo command comes up, answers
/// queries, prints alerts, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_serves_queries_prints_alerts_and_stops_on_sigterm() {
    let mut demo = Demo::spawn(30_000, "readme");
    let lines = demo.lines_until("events projected", Duration::from_secs(120));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("alert: ") && l.contains("indicator.breached")),
        "an alert fired: {lines:?}"
    );

    let url = format!(
        "http://{}/api/v1/communes/31471/indicators?window=ytd",
        demo.listen
    );
    let body = get_json(&url).await;
    assert!(
        body["indicators"][0]["denominator"].as_i64().unwrap() > 0,
        "{body}"
    );

    crate::support::signal(&demo.child, "-TERM");
    let status = crate::support::wait_for_exit(&mut demo.child, Duration::from_secs(20))
        .expect("the demo did not stop on SIGTERM");
    assert!(
        status.success(),
        "the demo exits cleanly on SIGTERM: {status}"
    );
}

/// Ctrl-C while the demo is still producing stops it at once, cleanly.
#[tokio::test]
async fn the_demo_stops_on_ctrl_c_while_still_producing() {
    let mut demo = Demo::spawn(600_000, "interrupted");
    // Producing: the API answers and some events are projected.
    let client = reqwest::Client::new();
    let url = format!(
        "http://{}/api/v1/communes/31471/indicators?window=ytd",
        demo.listen
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client.get(&url).bearer_auth("demo-read-token").send().await;
        if let Ok(r) = answer {
            let text = r.text().await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if body["indicators"][0]["denominator"].as_i64().unwrap_or(0) > 0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the demo never projected anything"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crate::support::signal(&demo.child, "-INT");
    let status = crate::support::wait_for_exit(&mut demo.child, Duration::from_secs(15))
        .expect("the demo did not stop on Ctrl-C while producing");
    assert!(status.success(), "{status}");
    let out = demo.lines_until("demo stopped after", Duration::from_secs(5));
    assert!(
        out.iter().any(|l| l.contains("demo stopped after")),
        "{out:?}"
    );
}

/// `cchc demo` as a newcomer runs it, from the repository, with its stdout
/// read line by line, on a port it picks itself and a fresh SQLite file
/// named after `name` in var/test-embedded/ (deleted on drop).
struct Demo {
    child: std::process::Child,
    /// Where its dashboard and API listen, as it printed.
    listen: String,
    db: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Demo {
    fn spawn(events: usize, name: &str) -> Demo {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = repo.join("var/test-embedded");
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join(format!("{}.sqlite", unique_name(name)));
        let events = events.to_string();
        let mut child =
            crate::support::dies_with_test(&mut Command::new(env!("CARGO_BIN_EXE_cchc")))
                .current_dir(&repo)
                .args(["demo", "--events", &events, "--listen", "127.0.0.1:0"])
                .arg("--database")
                .arg(&db)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting cchc demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut demo = Demo {
            child,
            listen: String::new(),
            db,
            lines,
        };
        let printed = demo.lines_until("dashboard: http://", Duration::from_secs(60));
        let dashboard = printed.last().unwrap();
        demo.listen = dashboard["dashboard: http://".len()..]
            .split('/')
            .next()
            .unwrap()
            .to_string();
        demo
    }

    /// The lines printed until one contains `needle` (that one included).
    fn lines_until(&mut self, needle: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        while !lines.last().is_some_and(|l: &String| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => panic!(
                    "the demo never printed `{needle}`; it printed:\n{}",
                    lines.join("\n")
                ),
            }
        }
        lines
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.db);
    }
}
