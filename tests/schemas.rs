//! The published JSON Schemas (docs/schemas) agree with the code: every
//! simulated event is valid under the event schema, the decoder refuses what
//! the schema refuses, and alerts as the pipeline writes them are valid under
//! the alert schema.

use std::path::Path;

use chrono::{NaiveDate, Utc};
use serde_json::{json, Value};

use cchc_pipeline::config::Settings;
use cchc_pipeline::domain::{decode, Alert, BreachState, Indicator, Ratio, Window};
use cchc_pipeline::simulator::Simulator;

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(name);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn settings() -> Settings {
    Settings::load_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml")).unwrap()
}

#[test]
fn every_simulated_event_is_valid_under_the_event_schema() {
    let v = schema("case-event.v1.json");
    let s = settings();
    for r in Simulator::new(
        &s.units,
        3,
        NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
        5.0,
    )
    .take(5_000)
    {
        let event: Value = serde_json::from_str(&r.value).unwrap();
        assert!(v.is_valid(&event), "{event}");
    }
}

#[test]
fn what_the_event_schema_refuses_the_decoder_refuses_too() {
    let v = schema("case-event.v1.json");
    let s = settings();
    let good = json!({"event_id": "e1", "event_type": "case.rated", "schema_version": 1,
        "occurred_at": "2023-03-30T10:44:00+07:00", "commune_code": "31471", "case_id": "c1",
        "data": {"rating": "satisfied", "score": 17}});
    assert!(v.is_valid(&good));
    assert!(decode(Some(good.to_string().as_bytes()), &s.units).is_ok());
    let bad = [
        ("event_id", json!("")),
        ("event_type", json!("case.reopened")),
        ("schema_version", json!(2)),
        ("occurred_at", json!("2023-03-30T10:44:00")),
        ("case_id", Value::Null),
        ("data", json!({"rating": "meh"})),
        ("data", json!({"rating": "satisfied", "score": 19})),
    ];
    for (field, value) in bad {
        let mut e = good.clone();
        if value.is_null() {
            e.as_object_mut().unwrap().remove(field);
        } else {
            e[field] = value;
        }
        assert!(!v.is_valid(&e), "schema accepts {e}");
        assert!(
            decode(Some(e.to_string().as_bytes()), &s.units).is_err(),
            "decoder accepts {e}"
        );
    }
}

#[test]
fn alerts_as_written_are_valid_under_the_alert_schema() {
    let v = schema("indicator-alert.v1.json");
    let s = settings();
    let commune = s.units.commune("31471").unwrap().clone();
    let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
    let windows: Vec<Window> = ["ytd", "qtd", "mtd", "rolling_30d", "2026-01-01..2026-07-01"]
        .iter()
        .map(|w| w.parse().unwrap())
        .collect();
    for ((indicator, state, ratio), window) in [
        (
            Indicator::OnTimeRate,
            BreachState::default(),
            Ratio {
                numerator: 98,
                denominator: 100,
            },
        ),
        (
            Indicator::OnlineRate,
            BreachState {
                in_breach: true,
                transitions: 3,
            },
            Ratio {
                numerator: 80,
                denominator: 100,
            },
        ),
    ]
    .into_iter()
    .flat_map(|case| windows.iter().map(move |w| (case, *w)))
    {
        let rule = s.targets.rule(&commune, indicator);
        let (alert, _) = Alert::evaluate(
            state,
            &commune,
            "Phường Thuận An",
            indicator,
            window,
            window.days(today),
            ratio,
            rule,
            Utc::now(),
        )
        .unwrap();
        let json = serde_json::to_value(&alert).unwrap();
        let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{json}: {errors:?}");
    }
}
