//! The embedded default (librdkafka's mock cluster and SQLite): the demo
//! must project every simulated event exactly, even though the mock keeps
//! only the last few megabytes of each partition.

use std::path::PathBuf;

use chrono::{NaiveDate, Utc};

use cchc_pipeline::config::Settings;
use cchc_pipeline::domain::{decode, Fold};
use cchc_pipeline::ingest::Shutdown;
use cchc_pipeline::simulator::Simulator;
use cchc_pipeline::startup::{demo, DemoOptions, SimulateOptions};
use cchc_pipeline::store::Store;

use crate::support::unique_name;

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
    };
    let options = DemoOptions {
        events,
        partitions: 9,
        database_url: url.clone(),
        simulate,
        listen: format!("127.0.0.1:{}", crate::support::free_port()),
        exit_when_done: true,
    };
    let report = demo(settings.clone(), &options, Shutdown::default())
        .await
        .expect("demo");
    assert!(report.contains("Thị xã Long Mỹ"), "{report}");

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
    assert!(
        got == want,
        "SQLite projections differ from the fold of every simulated event"
    );
    let _ = std::fs::remove_dir_all(dir.join(file.file_name().unwrap()));
}
