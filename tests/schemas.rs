//! The published JSON Schemas (docs/schemas) agree with the code: every
//! simulated event is valid under the event schema, the decoder refuses what
//! the schema refuses, and alerts of every kind as the pipeline writes them
//! are valid under the alert schema.

use std::path::Path;

use std::collections::BTreeSet;

use chrono::{Days, NaiveDate, Utc};
use serde_json::{json, Value};

use cchc_pipeline::config::Settings;
use cchc_pipeline::domain::{
    decode, Alert, BreachState, Indicator, Outlook, Ratio, Subject, Transition, Window,
};
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
fn alerts_of_every_kind_as_written_are_valid_under_the_alert_schema() {
    let v = schema("indicator-alert.v1.json");
    let s = settings();
    let commune = s.units.commune("31471").unwrap().clone();
    let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
    let windows: Vec<Window> = ["ytd", "qtd", "mtd", "rolling_30d", "2026-01-01..2026-07-01"]
        .iter()
        .map(|w| w.parse().unwrap())
        .collect();
    let ratio = |numerator, denominator| Ratio {
        numerator,
        denominator,
    };
    let at_risk = BreachState {
        at_risk: true,
        risk_transitions: 1,
        ..BreachState::default()
    };
    let in_breach = BreachState {
        in_breach: true,
        transitions: 3,
        ..BreachState::default()
    };
    // (indicator, stored state, counted so far, open cases coming due):
    // each makes one or two transitions of its own kinds.
    let cases = [
        (
            Indicator::OnTimeRate,
            BreachState::default(),
            ratio(98, 100),
            None,
        ),
        (Indicator::OnlineRate, in_breach, ratio(80, 100), None),
        (
            Indicator::OnTimeRate,
            BreachState::default(),
            ratio(30, 30),
            Some(1),
        ),
        (Indicator::OnTimeRate, at_risk, ratio(32, 32), Some(0)),
        (Indicator::OnTimeRate, at_risk, ratio(30, 31), Some(2)),
        (Indicator::OnTimeRate, in_breach, ratio(100, 100), Some(2)),
    ];
    let mut kinds = BTreeSet::new();
    for ((indicator, state, ratio, coming), window) in cases
        .into_iter()
        .flat_map(|case| windows.iter().map(move |w| (case, *w)))
    {
        let rule = s.targets.rule(&commune, indicator);
        let subject = Subject {
            commune: &commune,
            commune_name: "Phường Thuận An",
            indicator,
            window,
            range: window.days(today),
            ratio,
            rule,
            now: Utc::now(),
        };
        let outlook = coming.map(|n| Outlook::new(ratio, rule, 3, today + Days::new(3), n));
        let (alerts, _) = subject.evaluate(state, outlook);
        assert!(
            !alerts.is_empty(),
            "{indicator} {state:?} {ratio:?} {coming:?}"
        );
        for alert in alerts {
            kinds.insert(alert.event_type.event_type());
            let json = serde_json::to_value(&alert).unwrap();
            let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{json}: {errors:?}");
            // The outlook belongs to the at-risk kinds, and only to them.
            let mut other = json.clone();
            match other.as_object_mut().unwrap().remove("outlook") {
                Some(_) => assert!(!v.is_valid(&other), "at-risk without outlook"),
                None => {
                    other["outlook"] = json!({"horizon_days": 3, "due_until": "2026-06-04",
                        "coming_due": 1, "value_if_all_late": 0.5, "misses_allowed": 0});
                    assert!(!v.is_valid(&other), "a breach alert with an outlook");
                }
            }
        }
    }
    let all: BTreeSet<&str> = Transition::ALL.iter().map(|t| t.event_type()).collect();
    assert_eq!(kinds, all, "every kind was written and checked");
    let mut unknown = serde_json::to_value(
        Alert::evaluate(
            BreachState::default(),
            &commune,
            "Phường Thuận An",
            Indicator::OnTimeRate,
            Window::YearToDate,
            Window::YearToDate.days(today),
            ratio(1, 100),
            s.targets.rule(&commune, Indicator::OnTimeRate),
            Utc::now(),
        )
        .unwrap()
        .0,
    )
    .unwrap();
    unknown["event_type"] = json!("indicator.unknown");
    assert!(!v.is_valid(&unknown));
}
