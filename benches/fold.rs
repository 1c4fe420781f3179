//! Decode + fold throughput against a baseline measured in the same run:
//! `serde_json` parsing the same records into `serde_json::Value` and
//! dropping them. Run with `cargo bench --bench fold`; prints events per
//! second for both and their ratio (goal: ≥ 0.5× the baseline and ≥ 1M
//! events/s on one core).
//!
//! The records are the simulator's realistic mix with every tenth record
//! made malformed (a different kind each time: not JSON, wrong type,
//! unknown commune, missing field, bad timestamp, ...), and the fold's
//! clock advances every 2,000 records, as the pipeline's batches do.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use criterion::{black_box, Criterion, Throughput};

use cchc_pipeline::config::Settings;
use cchc_pipeline::domain::{decode, Fold};
use cchc_pipeline::simulator::Simulator;

const EVENTS: usize = 100_000;

/// A clock tick every this many records.
const BATCH: usize = 2_000;

/// The `n`-th kind of malformed record, made from a valid one.
fn malformed(valid: &str, n: usize) -> String {
    let mut v: serde_json::Value = serde_json::from_str(valid).expect("valid JSON");
    match n % 8 {
        0 => return valid.replacen("\":", "\" oops:", 1),
        1 => v["schema_version"] = "one".into(),
        2 => v["commune_code"] = "99999".into(),
        3 => {
            v.as_object_mut().expect("object").remove("occurred_at");
        }
        4 => v["occurred_at"] = "2023-03-30T10:44:00".into(),
        5 => v["event_type"] = "case.reopened".into(),
        6 => v["event_id"] = "x".repeat(129).into(),
        _ => v["data"] = serde_json::json!({"channel": "fax"}),
    }
    v.to_string()
}

/// The records, and after each batch of [`BATCH`] the time of its last event.
fn records() -> (
    Vec<String>,
    Vec<DateTime<Utc>>,
    cchc_pipeline::domain::Units,
) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let units = Settings::load_file(&file).expect("config").units;
    let start = NaiveDate::from_ymd_opt(2023, 1, 1).expect("date");
    let mut values = Vec::with_capacity(EVENTS);
    let mut ticks = Vec::new();
    for (n, r) in Simulator::new(&units, 42, start, 20.0)
        .take(EVENTS)
        .enumerate()
    {
        values.push(if n % 10 == 9 {
            malformed(&r.value, n / 10)
        } else {
            r.value
        });
        if n % BATCH == BATCH - 1 {
            ticks.push(r.occurred_at);
        }
    }
    (values, ticks, units)
}

fn main() {
    let (values, ticks, units) = records();
    let invalid = values
        .iter()
        .filter(|v| decode(Some(v.as_bytes()), &units).is_err())
        .count();
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
                let parsed: Result<serde_json::Value, _> = serde_json::from_slice(v.as_bytes());
                black_box(parsed.is_ok());
            }
        });
    });
    group.bench_function("decode_and_fold", |b| {
        b.iter(|| {
            let mut fold = Fold::new(None);
            for (batch, tick) in values.chunks(BATCH).zip(&ticks) {
                for v in batch {
                    if let Ok(e) = decode(Some(v.as_bytes()), &units) {
                        fold.apply(&e);
                    }
                }
                fold.advance_clock(*tick);
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
    println!(
        "\n{} records, mean {} bytes each, {} of them malformed; a clock tick every {}",
        EVENTS,
        bytes / EVENTS,
        invalid,
        BATCH
    );
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
