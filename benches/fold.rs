//! Decode + fold throughput against a baseline measured in the same run:
//! `serde_json` parsing the same records into `serde_json::Value` and
//! dropping them. Run with `cargo bench --bench fold`; prints events per
//! second for both and their ratio (goal: decode + fold ≥ 1.0× the
//! baseline).
//!
//! The records are the simulator's realistic mix with every tenth record
//! made malformed (a different kind each time: not JSON, wrong type,
//! unknown commune, missing field, bad timestamp, ...), and the fold's
//! clock advances every 2,000 records, as the pipeline's batches do.
//!
//! Measured in paired rounds: each round times one pass of the baseline,
//! of decode + fold and of decode alone, back to back, and the ratios are
//! taken within a round. On a shared machine whose speed drifts by a third
//! from one minute to the next, a ratio of two medians taken minutes apart
//! measures the drift; a ratio within a round measures the code. The
//! figures printed are the medians over the rounds. A fourth line times
//! the fold by itself, over the same events decoded beforehand: what the
//! fold costs without the decoder's traffic through the cache.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

use cchc_pipeline::config::Settings;
use cchc_pipeline::domain::{decode, CaseEvent, Fold, Units};
use cchc_pipeline::simulator::Simulator;

const EVENTS: usize = 100_000;

/// A clock tick every this many records.
const BATCH: usize = 2_000;

/// Timed rounds (after [`WARM_UP`] untimed ones); `FOLD_BENCH_ROUNDS`
/// overrides.
const ROUNDS: usize = 21;
const WARM_UP: usize = 2;

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
fn records() -> (Vec<String>, Vec<DateTime<Utc>>, Units) {
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

fn baseline(values: &[String]) {
    for v in values {
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(v.as_bytes());
        black_box(parsed.is_ok());
    }
}

/// Folds `items` a [`BATCH`] at a time, the clock ticking after each, with
/// `apply` making an item an event and applying it. The fold is sized for
/// its items, as the pipeline sizes a batch's working set for the batch.
fn fold_in_batches<T>(items: &[T], ticks: &[DateTime<Utc>], mut apply: impl FnMut(&mut Fold, &T)) {
    let mut fold = Fold::with_capacity(None, items.len(), items.len());
    for (batch, tick) in items.chunks(BATCH).zip(ticks) {
        for item in batch {
            apply(&mut fold, item);
        }
        fold.advance_clock(*tick);
    }
    black_box(fold.deltas().len());
}

fn decode_and_fold(values: &[String], ticks: &[DateTime<Utc>], units: &Units) {
    fold_in_batches(values, ticks, |fold, v| {
        if let Ok(e) = decode(Some(v.as_bytes()), units) {
            fold.apply(&e);
        }
    });
}

/// The fold by itself, over events decoded beforehand.
fn fold_only(events: &[Option<CaseEvent>], ticks: &[DateTime<Utc>]) {
    fold_in_batches(events, ticks, |fold, e| {
        if let Some(e) = e {
            fold.apply(e);
        }
    });
}

fn decode_only(values: &[String], units: &Units) {
    for v in values {
        black_box(decode(Some(v.as_bytes()), units).is_ok());
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let rounds = std::env::var("FOLD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let (values, ticks, units) = records();
    let invalid = values
        .iter()
        .filter(|v| decode(Some(v.as_bytes()), &units).is_err())
        .count();
    let bytes: usize = values.iter().map(String::len).sum();
    let rate = |d: Duration| EVENTS as f64 / d.as_secs_f64();
    let events: Vec<Option<CaseEvent>> = values
        .iter()
        .map(|v| decode(Some(v.as_bytes()), &units).ok())
        .collect();
    let (mut base, mut fold, mut dec, mut alone) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut fold_ratio, mut dec_ratio, mut alone_ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARM_UP + rounds {
        let b = rate(timed(|| baseline(&values)));
        let f = rate(timed(|| decode_and_fold(&values, &ticks, &units)));
        let d = rate(timed(|| decode_only(&values, &units)));
        let a = rate(timed(|| fold_only(&events, &ticks)));
        if round >= WARM_UP {
            base.push(b);
            fold.push(f);
            dec.push(d);
            alone.push(a);
            fold_ratio.push(f / b);
            dec_ratio.push(d / b);
            alone_ratio.push(a / b);
        }
    }
    let spread = |xs: &[f64]| {
        let (lo, hi) = xs
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.2}–{hi:.2}")
    };
    println!(
        "{} records, mean {} bytes each, {} of them malformed; a clock tick every {}; \
         medians of {} paired rounds",
        EVENTS,
        bytes / EVENTS,
        invalid,
        BATCH,
        rounds
    );
    println!(
        "baseline serde_json::Value  {:>12.0} events/s  1.00x",
        median(base)
    );
    println!(
        "decode only                 {:>12.0} events/s  {:.2}x  (rounds {})",
        median(dec),
        median(dec_ratio.clone()),
        spread(&dec_ratio)
    );
    println!(
        "decode + fold               {:>12.0} events/s  {:.2}x  (rounds {})",
        median(fold),
        median(fold_ratio.clone()),
        spread(&fold_ratio)
    );
    println!(
        "fold alone (pre-decoded)    {:>12.0} events/s  {:.2}x  (rounds {})",
        median(alone),
        median(alone_ratio.clone()),
        spread(&alone_ratio)
    );
}
