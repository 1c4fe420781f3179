//! `GET /api/v1/breaches`: the communes in breach now.

use std::collections::BTreeSet;

use super::*;

#[tokio::test]
async fn the_breaches_now_are_the_indicators_that_stand_breached_on_the_evaluated_window() {
    let h = Harness::new(4_000, "127.0.0.1:1").await;
    // The simulated year is history: a clock tick evaluates every commune
    // on the caught-up state.
    h.project(vec![]).await;
    let (status, body) = get(&h.app, "/api/v1/breaches").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: BTreeSet<(String, String)> = body["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["window"], "ytd", "{b}");
            let alert = &b["alert"];
            assert_eq!(alert["event_type"], "indicator.breached", "{b}");
            assert_eq!(alert["alert_id"], b["alert_id"], "{b}");
            assert_eq!(alert["commune_code"], b["commune"]["code"], "{b}");
            (
                b["commune"]["code"].as_str().unwrap().to_string(),
                b["indicator"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // What the indicators route says of each commune, on the same window.
    let mut breached = BTreeSet::new();
    let units = &h.settings.units;
    let today = units.structure(local_date(Utc::now()));
    for commune in today.communes(units) {
        let (_, v) = get(
            &h.app,
            &format!("/api/v1/communes/{}/indicators?window=ytd", commune.code),
        )
        .await;
        for i in v["indicators"].as_array().unwrap() {
            if i["standing"] == "breached" {
                breached.insert((
                    commune.code.to_string(),
                    i["indicator"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    assert!(
        !breached.is_empty(),
        "the simulated year breaches something"
    );
    assert_eq!(listed, breached);
    let communes: BTreeSet<&String> = listed.iter().map(|(c, _)| c).collect();
    assert_eq!(body["communes_in_breach"], communes.len());

    // A commune's own, and a parent's communes; an unknown unit is a 404.
    let (one, _) = listed.iter().next().unwrap();
    let (_, body) = get(&h.app, &format!("/api/v1/breaches?unit={one}")).await;
    assert_eq!(body["unit"]["code"], one.as_str());
    assert!(body["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["commune"]["code"] == one.as_str()));
    let (_, town) = get(&h.app, "/api/v1/breaches?unit=937").await;
    assert_eq!(town["breaches"].as_array().unwrap().len(), listed.len());
    let (status, _) = get(&h.app, "/api/v1/breaches?unit=99999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
