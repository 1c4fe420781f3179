//! The outlook of one commune's indicators: how many more misses each can
//! take before the period ends, and where it is heading at the recent pace.

use serde_json::json;

use super::*;

const C: &str = "31480";

fn record(offset: i64, value: Value) -> Record {
    Record {
        partition: 0,
        offset,
        key: Some(C.as_bytes().to_vec()),
        value: Some(value.to_string().into_bytes()),
        written_ms: None,
    }
}

#[tokio::test]
async fn the_late_case_budget_counts_the_cases_coming_due_before_the_period_ends() {
    let h = Harness::new(1, "127.0.0.1:1").await;
    let offset = crate::domain::time::local_offset();
    let now = Utc::now().with_timezone(&offset);
    // Today's end, local time: 200 cases received now, due today.
    let due = now
        .date_naive()
        .and_hms_opt(23, 0, 0)
        .unwrap()
        .and_local_timezone(offset)
        .unwrap();
    let mut records = Vec::new();
    for n in 0..200 {
        records.push(record(1 + n, json!({
            "event_id": format!("outlook-r-{n}"), "event_type": "case.received", "schema_version": 1,
            "occurred_at": now.to_rfc3339(), "commune_code": C, "case_id": format!("outlook-{n}"),
            "data": {"procedure_code": "1.0001", "channel": "online", "online_level": "full",
                     "due_at": due.to_rfc3339(), "registered_electronically": true, "digitized": true}})));
    }
    // 150 resolved on time; 50 still open, coming due today.
    for n in 0..150 {
        records.push(record(201 + n, json!({
            "event_id": format!("outlook-s-{n}"), "event_type": "case.resolved", "schema_version": 1,
            "occurred_at": now.to_rfc3339(), "commune_code": C, "case_id": format!("outlook-{n}"),
            "data": {"due_at": due.to_rfc3339(), "outcome": "completed"}})));
    }
    h.project(records).await;

    let (status, body) = get(
        &h.app,
        &format!("/api/v1/communes/{C}/indicators?window=ytd&outlook=true"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let outlook = &body["outlook"];
    let year = chrono::Datelike::year(&now);
    assert_eq!(outlook["period_end"], format!("{}-01-01", year + 1));
    assert_eq!(outlook["cases_coming_due"], 50, "{outlook}");
    let of = |id: &str| {
        outlook["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["indicator"] == id)
            .unwrap()
            .clone()
    };
    // On time: 150/150 so far, 50 coming due. Above 99% over the 200: at
    // most one of the 50 may be late (199/200 = 99.5%; 198/200 is not above 99%).
    let on_time = of("on_time_rate");
    assert_eq!(on_time["budget"], "misses", "{on_time}");
    assert_eq!(on_time["misses_allowed"], 1, "{on_time}");
    // Online: 200/200 against at least 70%: 85 more cases received in
    // person would leave 200/285 = 70.2%; the 86th 200/286 = 69.9%.
    assert_eq!(of("online_rate")["misses_allowed"], 85);
    // Ratings: none yet, nothing missed.
    assert_eq!(of("satisfaction_rate")["misses_allowed"], 0);
    // The projection carries the last 30 days' pace to the year's end.
    let p = &on_time["projection"];
    assert!(p["denominator"].as_i64().unwrap() >= 150, "{p}");
    assert_eq!(p["met"], true, "{p}");

    // The town's communes with outlook=true: the same outlook for this
    // commune, and the roll-up's over all of them.
    let (status, town) = get(&h.app, "/api/v1/units/92/communes?window=ytd&outlook=true").await;
    assert_eq!(status, StatusCode::OK, "{town}");
    let row = town["communes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["commune"]["code"] == C)
        .unwrap();
    assert_eq!(row["outlook"], *outlook);
    let rollup = &town["rollup"]["outlook"];
    assert_eq!(rollup["period_end"], outlook["period_end"]);
    assert!(
        rollup["cases_coming_due"].as_i64().unwrap() >= 50,
        "{rollup}"
    );
    let (_, plain) = get(&h.app, "/api/v1/units/92/communes?window=ytd").await;
    assert_eq!(plain["rollup"].get("outlook"), None);
    assert_eq!(plain["communes"][0].get("outlook"), None);

    // Asked for only: the plain answer has none.
    let (_, plain) = get(
        &h.app,
        &format!("/api/v1/communes/{C}/indicators?window=ytd"),
    )
    .await;
    assert_eq!(plain.get("outlook"), None);

    // A rolling window has no end: no budget beyond what is counted, no projection.
    let (_, body) = get(
        &h.app,
        &format!("/api/v1/communes/{C}/indicators?window=rolling_30d&outlook=true"),
    )
    .await;
    assert_eq!(body["outlook"]["period_end"], Value::Null);
    assert_eq!(body["outlook"]["cases_coming_due"], 0);
    let on_time = &body["outlook"]["indicators"][1];
    assert_eq!(on_time["indicator"], "on_time_rate");
    assert_eq!(on_time["projection"], Value::Null);
    assert_eq!(
        on_time["misses_allowed"], 1,
        "150/150 with one more late: 150/151 = 99.3% > 99%"
    );
}

fn received(
    offset: i64,
    n: i64,
    at: chrono::DateTime<chrono::FixedOffset>,
    due: chrono::DateTime<chrono::FixedOffset>,
) -> Record {
    record(
        offset,
        json!({
        "event_id": format!("due-r-{n}"), "event_type": "case.received", "schema_version": 1,
        "occurred_at": at.to_rfc3339(), "commune_code": C, "case_id": format!("due-{n}"),
        "data": {"procedure_code": "1.0001", "channel": "in_person", "online_level": "none",
                 "due_at": due.to_rfc3339(), "registered_electronically": true, "digitized": false}}),
    )
}

/// Cases of C due in 5, 0, 1, 3 and 1 days, still open, and one due
/// today that is resolved.
async fn cases_coming_due() -> Harness {
    let h = Harness::new(1, "127.0.0.1:1").await;
    let offset = crate::domain::time::local_offset();
    let now = Utc::now().with_timezone(&offset);
    let day = |n: i64| {
        (now.date_naive() + chrono::Days::new(n as u64))
            .and_hms_opt(17, 0, 0)
            .unwrap()
            .and_local_timezone(offset)
            .unwrap()
    };
    // Due in 5, 0, 1, 3 and 1 days; one due today is resolved.
    let mut records: Vec<Record> = [5, 0, 1, 3, 1, 0]
        .iter()
        .enumerate()
        .map(|(n, &d)| received(1 + n as i64, n as i64, now, day(d)))
        .collect();
    records.push(record(
        20,
        json!({
        "event_id": "due-s-5", "event_type": "case.resolved", "schema_version": 1,
        "occurred_at": now.to_rfc3339(), "commune_code": C, "case_id": "due-5",
        "data": {"due_at": day(0).to_rfc3339(), "outcome": "completed"}}),
    ));
    h.project(records).await;
    h
}

#[tokio::test]
async fn the_cases_coming_due_are_listed_by_day_oldest_due_first() {
    let h = cases_coming_due().await;
    let (status, body) = get(&h.app, &format!("/api/v1/units/{C}/coming-due")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["horizon_days"], 3);
    let listed: Vec<(&str, i64)> = body["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["case_id"].as_str().unwrap(),
                c["days_left"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("due-1", 0), ("due-2", 1), ("due-4", 1), ("due-3", 3)]
    );
    for case in body["cases"].as_array().unwrap() {
        assert_eq!(
            case["procedure_code"], "1.0001",
            "the receipt's procedure: {case}"
        );
    }
    let counts = &body["communes"][0];
    assert_eq!(
        (
            counts["due_today"].as_i64(),
            counts["due_tomorrow"].as_i64(),
            counts["due_later"].as_i64()
        ),
        (Some(1), Some(2), Some(1))
    );
    assert_eq!(body["total"], 4);

    // Today only; a page of two (truncated); the town's communes include it.
    let (_, today) = get(&h.app, &format!("/api/v1/units/{C}/coming-due?horizon=0")).await;
    assert_eq!(today["total"], 1);
    let (_, town) = get(&h.app, "/api/v1/units/92/coming-due?horizon=7").await;
    let ours: Vec<&Value> = town["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["commune"] == C)
        .collect();
    assert_eq!(ours.len(), 5, "{town}");
    for (uri, status) in [
        ("/api/v1/units/99999/coming-due", StatusCode::NOT_FOUND),
        (
            "/api/v1/units/92/coming-due?horizon=32",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/units/92/coming-due?horizon=-1",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(get(&h.app, uri).await.0, status, "{uri}");
    }
}

#[tokio::test]
async fn a_commune_at_risk_is_listed_now_with_its_alert_and_its_budget_beside_its_cases_coming_due()
{
    let h = Harness::new(1, "127.0.0.1:1").await;
    let offset = crate::domain::time::local_offset();
    let now = Utc::now().with_timezone(&offset);
    // 30 cases resolved on time, then one open, due tomorrow: 30/31 if late.
    let mut records = Vec::new();
    for n in 0..30 {
        records.push(received(2 * n, n, now, now + chrono::Duration::days(7)));
        records.push(record(
            2 * n + 1,
            json!({
            "event_id": format!("risk-s-{n}"), "event_type": "case.resolved", "schema_version": 1,
            "occurred_at": now.to_rfc3339(), "commune_code": C, "case_id": format!("due-{n}"),
            "data": {"due_at": (now + chrono::Duration::days(7)).to_rfc3339(), "outcome": "completed"}}),
        ));
    }
    records.push(received(60, 30, now, now + chrono::Duration::days(1)));
    h.project(records).await;

    let (status, body) = get(&h.app, &format!("/api/v1/breaches?unit={C}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["communes_at_risk"], 1, "{body}");
    let risk = &body["at_risk"][0];
    assert_eq!(risk["indicator"], "on_time_rate");
    assert_eq!(risk["alert_id"], format!("{C}.on_time_rate.ytd.risk.1"));
    assert_eq!(risk["alert"]["event_type"], "indicator.at_risk");
    assert_eq!(risk["alert"]["outlook"]["coming_due"], 1);
    // Its other indicators fail (in person, not digitised); on time does not.
    assert!(body["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["indicator"] != "on_time_rate"));

    let (_, due) = get(&h.app, &format!("/api/v1/units/{C}/coming-due")).await;
    let on_time = &due["communes"][0]["on_time"];
    assert_eq!(
        (
            on_time["numerator"].as_i64(),
            on_time["denominator"].as_i64(),
            on_time["coming_due"].as_i64(),
            on_time["misses_allowed"].as_i64(),
            on_time["at_risk"].as_bool(),
        ),
        (Some(30), Some(30), Some(1), Some(0), Some(true)),
        "{due}"
    );
    assert_eq!(
        on_time["value_if_all_late"],
        risk["alert"]["outlook"]["value_if_all_late"]
    );
    // Over a range that is over, no budget.
    let (_, past) = get(
        &h.app,
        &format!("/api/v1/units/{C}/coming-due?window=2020-01-01..2020-02-01"),
    )
    .await;
    assert_eq!(past["communes"][0]["on_time"], Value::Null, "{past}");
}

#[tokio::test]
async fn the_cases_coming_due_page_through_to_the_end_without_a_repeat() {
    let h = cases_coming_due().await;
    // Pages of one follow each other to the end, without a repeat.
    let mut paged = Vec::new();
    let mut uri = format!("/api/v1/units/{C}/coming-due?limit=1");
    loop {
        let (status, page) = get(&h.app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for c in page["cases"].as_array().unwrap() {
            paged.push(c["case_id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(page["truncated"], true);
                uri = format!("/api/v1/units/{C}/coming-due?limit=1&after={next}");
            }
            None => {
                assert_eq!(page["truncated"], false);
                break;
            }
        }
    }
    assert_eq!(paged, ["due-1", "due-2", "due-4", "due-3"]);
    assert_eq!(
        get(&h.app, &format!("/api/v1/units/{C}/coming-due?after=soon"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}
