//! Decode + fold throughput against a baseline measured in the same run:
//! `serde_json` parsing the same records into `serde_json::Value` and
//! dropping them. Run with `cargo bench --bench fold`; prints events per
//! second for both and their ratio (goal: ≥ 0.5× the baseline and ≥ 1M
//! events/s on one core).

use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;
use criterion::{black_box, Criterion, Throughput};

use cchc_pipeline::config::Settings;
use cchc_pipeline::domain::{decode, Fold};
use cchc_pipeline::simulator::Simulator;

const EVENTS: usize = 100_000;

fn records() -> (Vec<String>, cchc_pipeline::domain::Units) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let units = Settings::load_file(&file).expect("config").units;
    let start = NaiveDate::from_ymd_opt(2023, 1, 1).expect("date");
    let values = Simulator::new(&units, 42, start, 20.0)
        .take(EVENTS)
        .map(|r| r.value)
        .collect();
    (values, units)
}

fn main() {
    let (values, units) = records();
    let bytes: usize = values.iter().map(String::len).sum();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| {
            for v in &values {
                let parsed: serde_json::Value = serde_json::from_slice(v.as_bytes()).expect("json");
                black_box(parsed);
            }
        });
    });
    group.bench_function("decode_and_fold", |b| {
        b.iter(|| {
            let mut fold = Fold::new(None);
            for v in &values {
                if let Ok(e) = decode(Some(v.as_bytes()), &units) {
                    fold.apply(&e);
                }
            }
            black_box(fold.deltas().len())
        });
    });
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            for v in &values {
                black_box(decode(Some(v.as_bytes()), &units).is_ok());
            }
        });
    });
    group.finish();
    c.final_summary();

    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("criterion/fold");
    let rate = |name: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(name).join("new/estimates.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let nanos = json["median"]["point_estimate"].as_f64()?;
        Some(EVENTS as f64 / (nanos / 1e9))
    };
    println!("\n{} events, mean {} bytes each", EVENTS, bytes / EVENTS);
    if let (Some(base), Some(fold), Some(dec)) = (
        rate("baseline_serde_json_value"),
        rate("decode_and_fold"),
        rate("decode_only"),
    ) {
        println!("baseline serde_json::Value  {:>12.0} events/s  1.00x", base);
        println!(
            "decode only                 {:>12.0} events/s  {:.2}x",
            dec,
            dec / base
        );
        println!(
            "decode + fold               {:>12.0} events/s  {:.2}x",
            fold,
            fold / base
        );
    }
}
