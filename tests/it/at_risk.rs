//! The at-risk alert end to end (`indicator.at_risk`, its end
//! `indicator.at_risk_cleared`): the pipeline, the real broker (alerts read
//! back from the alerts topic) and the real database. A commune whose 30
//! cases were all resolved on time (100%, the on-time target is > 99%) is at
//! risk as soon as one open case is due within the horizon (three calendar
//! days): if it were late, 30/31 = 96.8%. The window is `rolling_30d`,
//! so that the tests do not depend on the date (near a period's end, the
//! cases coming due fall partly after it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, FixedOffset, NaiveTime, TimeZone, Utc};
use serde_json::Value;

use cchc_pipeline::alerts::signature;
use cchc_pipeline::config::WebhookSettings;
use cchc_pipeline::domain::Window;

use crate::alerts::{caught_up, ids, local, repo_config, send, AlertReader, Events, C};
use crate::pipeline::{setup, Pipeline};
use crate::support::{free_port, get_json, spawn_app};

/// An hour ago, local time, but not before today's local midnight: the
/// horizon counts calendar days after the pipeline's today, so the test's
/// events must fall on today's date (in the first hour after midnight, an
/// hour ago is yesterday, and "due in four days" would be three days after
/// today).
fn earlier_today() -> DateTime<FixedOffset> {
    let now = Utc::now().with_timezone(&local());
    let midnight = local()
        .from_local_datetime(&now.date_naive().and_time(NaiveTime::MIN))
        .unwrap();
    (now - Span::hours(1)).max(midnight)
}

/// 30 cases received and resolved on time (due in a week), then
/// nothing open.
fn on_time_history(ev: &mut Events) -> Vec<Value> {
    let due = ev.at + Span::days(7);
    (0..30)
        .flat_map(|_| {
            let received = ev.received(true, due);
            let mut resolved = ev.resolved(true);
            resolved["case_id"] = received["case_id"].clone();
            [received, resolved]
        })
        .collect()
}

/// The resolution, on time, of the case `received`.
fn resolve(ev: &mut Events, received: &Value) -> Value {
    let mut resolved = ev.resolved(true);
    resolved["case_id"] = received["case_id"].clone();
    resolved["data"]["due_at"] = received["data"]["due_at"].clone();
    resolved
}

/// One request a receiver got: signature, timestamp, body.
type Request = (String, String, String);

/// Every request received, by path.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<BTreeMap<String, Vec<Request>>>>);

impl Hooks {
    async fn serve(&self) -> String {
        use axum::http::{HeaderMap, Uri};
        let hooks = self.clone();
        let app =
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
                let hooks = hooks.clone();
                async move {
                    let header = |n: &str| headers[n].to_str().unwrap().to_string();
                    let seen = (header("x-cchc-signature"), header("x-cchc-timestamp"), body);
                    hooks
                        .0
                        .lock()
                        .unwrap()
                        .entry(uri.path().to_string())
                        .or_default()
                        .push(seen);
                    "ok"
                }
            });
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://127.0.0.1:{port}")
    }

    fn kinds(&self, path: &str) -> Vec<String> {
        let all = self.0.lock().unwrap();
        all.get(path)
            .into_iter()
            .flatten()
            .map(|(_, _, body)| {
                let v: Value = serde_json::from_str(body).unwrap();
                v["event_type"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_coming_due_puts_the_commune_at_risk_once_and_its_resolution_clears_it() {
    let (setup, store) = setup(1, None).await;
    let hooks = Hooks::default();
    let base = hooks.serve().await;
    let secret = "a shared secret of the chat bot";
    let mut settings = setup.settings(None);
    // A receiver configured as before the at-risk kinds existed, and one
    // that asks for them.
    settings.alerts.webhooks = vec![
        WebhookSettings {
            url: format!("{base}/v1-only"),
            secret: secret.into(),
            kinds: None,
        },
        WebhookSettings {
            url: format!("{base}/risk"),
            secret: secret.into(),
            kinds: Some(vec![
                "indicator.at_risk".into(),
                "indicator.at_risk_cleared".into(),
            ]),
        },
    ];
    settings.alert_windows = vec![Window::Rolling30Days];
    let mut pipeline = spawn_app(settings).await;
    let mut reader = AlertReader::new(&setup.alerts_topic);
    let now = earlier_today();
    let mut ev = Events::new(now);
    send(&setup.topic, on_time_history(&mut ev)).await;
    caught_up(&store, &setup, &mut pipeline).await;
    assert_eq!(
        reader.until(0, Duration::from_secs(2)).await,
        vec![],
        "30/30 on time, nothing open"
    );

    // A case due in four days: beyond the horizon, no risk.
    let later = ev.received(true, now + Span::days(4));
    send(&setup.topic, vec![later.clone()]).await;
    caught_up(&store, &setup, &mut pipeline).await;
    assert_eq!(reader.until(0, Duration::from_secs(2)).await, vec![]);

    // One due tomorrow: at risk, once; a second one changes nothing.
    let tomorrow = ev.received(true, now + Span::days(1));
    send(&setup.topic, vec![tomorrow.clone()]).await;
    caught_up(&store, &setup, &mut pipeline).await;
    let got = reader.until(1, Duration::from_secs(20)).await;
    assert_eq!(
        got,
        ids(&[("on_time_rate.rolling_30d.risk.1", "indicator.at_risk")])
    );
    let alert = &reader.seen[0];
    assert_eq!(
        reader.kinds[0].as_deref(),
        Some("indicator.at_risk"),
        "the kind in a header"
    );
    assert_eq!(
        (alert["numerator"].as_i64(), alert["denominator"].as_i64()),
        (Some(30), Some(30))
    );
    let outlook = &alert["outlook"];
    assert_eq!(outlook["coming_due"], 1);
    assert_eq!(outlook["misses_allowed"], 0);
    assert_eq!(outlook["horizon_days"], 3);
    assert!((outlook["value_if_all_late"].as_f64().unwrap() - 30.0 / 31.0).abs() < 1e-9);
    let two_days = ev.received(true, now + Span::days(2));
    send(&setup.topic, vec![two_days.clone()]).await;
    caught_up(&store, &setup, &mut pipeline).await;
    assert_eq!(
        reader.until(1, Duration::from_secs(2)).await.len(),
        1,
        "still at risk: nothing new"
    );

    // What the dashboard reads on opening.
    let now_url = format!("http://{}/api/v1/breaches", pipeline.http);
    let standing = get_json(&now_url).await;
    assert_eq!(standing["communes_at_risk"], 1);
    assert_eq!(
        standing["at_risk"][0]["alert_id"],
        format!("{C}.on_time_rate.rolling_30d.risk.1")
    );
    assert_eq!(
        standing["at_risk"][0]["alert"]["event_type"],
        "indicator.at_risk"
    );
    assert_eq!(standing["communes_in_breach"], 0);

    // Both resolved on time: cleared, within the target.
    send(
        &setup.topic,
        vec![resolve(&mut ev, &tomorrow), resolve(&mut ev, &two_days)],
    )
    .await;
    caught_up(&store, &setup, &mut pipeline).await;
    let got = reader.until(2, Duration::from_secs(20)).await;
    assert_eq!(
        got,
        ids(&[
            ("on_time_rate.rolling_30d.risk.1", "indicator.at_risk"),
            (
                "on_time_rate.rolling_30d.risk.2",
                "indicator.at_risk_cleared"
            ),
        ])
    );
    assert_eq!(reader.seen[1]["outlook"]["reason"], "within_target");
    assert_eq!(reader.seen[1]["outlook"]["coming_due"], 0);
    assert_eq!(get_json(&now_url).await["communes_at_risk"], 0);

    // The webhooks: the at-risk receiver got both, signed; the one
    // configured without kinds got none of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hooks.kinds("/risk").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "at-risk webhooks: {:?}",
            hooks.0.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        hooks.kinds("/risk"),
        ["indicator.at_risk", "indicator.at_risk_cleared"]
    );
    assert_eq!(hooks.kinds("/v1-only"), Vec::<String>::new());
    for (sig, at, body) in &hooks.0.lock().unwrap()["/risk"] {
        assert_eq!(
            sig,
            &signature(secret, at.parse().unwrap(), body.as_bytes())
        );
    }
    pipeline.stop().await;
}

/// Exactly once across crashes: the risk committed with its batch and the
/// process SIGKILLed before publishing it is published once by the next
/// process; a restart while at risk announces nothing again; the clearing
/// that follows is the second transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_risk_alert_committed_before_a_sigkill_is_published_once_and_not_repeated_after_restarts(
) {
    let (setup, store) = setup(1, None).await;
    let now = earlier_today();
    let mut ev = Events::new(now);
    const ROLLING: (&str, &str) = ("CCHC_ALERTS__WINDOWS", r#"["rolling_30d"]"#);
    let start = |name: &str, env: &[(&str, &str)]| {
        let env: Vec<(&str, &str)> = env.iter().copied().chain([ROLLING]).collect();
        Pipeline::start_with(&setup, name, &repo_config(), &env)
    };
    let mut a = start("a", &[("CCHC_ALERTS__RELAY", "false")]);
    let soon = ev.received(true, now + Span::days(1));
    let mut batch = on_time_history(&mut ev);
    batch.push(soon.clone());
    send(&setup.topic, batch).await;
    caught_up(&store, &setup, &mut a).await;
    let pending = store.unpublished_alerts(10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| p.alert_id.as_str())
            .collect::<Vec<_>>(),
        [format!("{C}.on_time_rate.rolling_30d.risk.1")],
        "the risk is in the outbox, unpublished"
    );
    a.kill();

    let mut b = start("b", &[]);
    let mut reader = AlertReader::new(&setup.alerts_topic);
    assert_eq!(
        reader.until(1, Duration::from_secs(30)).await,
        ids(&[("on_time_rate.rolling_30d.risk.1", "indicator.at_risk")])
    );
    // Still at risk across another SIGKILL (a claim re-evaluates every
    // commune): nothing new.
    let also = ev.received(true, now + Span::days(2));
    send(&setup.topic, vec![also.clone()]).await;
    caught_up(&store, &setup, &mut b).await;
    b.kill();
    let mut c = start("c", &[]);
    send(
        &setup.topic,
        vec![resolve(&mut ev, &soon), resolve(&mut ev, &also)],
    )
    .await;
    caught_up(&store, &setup, &mut c).await;
    assert_eq!(
        reader.until(2, Duration::from_secs(30)).await,
        ids(&[
            ("on_time_rate.rolling_30d.risk.1", "indicator.at_risk"),
            (
                "on_time_rate.rolling_30d.risk.2",
                "indicator.at_risk_cleared"
            ),
        ])
    );
}

/// A day passing moves the horizon: a case due in four days is beyond it
/// tonight and within it after midnight, with no event in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_alone_puts_a_commune_at_risk_when_its_cases_enter_the_horizon() {
    let (setup, store) = setup(1, None).await;
    let now_local = Utc::now().with_timezone(&local());
    let midnight: DateTime<FixedOffset> = local()
        .from_local_datetime(&(now_local.date_naive() + Span::days(1)).and_time(NaiveTime::MIN))
        .unwrap();
    let mut settings = setup.settings(None);
    settings.clock.skew_seconds = (midnight - now_local - Span::seconds(10)).num_seconds();
    settings.alert_windows = vec![Window::Rolling30Days];
    let mut pipeline = spawn_app(settings).await;
    let mut reader = AlertReader::new(&setup.alerts_topic);
    // "Today" is the shifted date: the day before `midnight`.
    let mut ev = Events::new(midnight - Span::hours(16));
    let mut batch = on_time_history(&mut ev);
    // Due on the fourth day after today: the horizon's day after midnight.
    batch.push(ev.received(true, midnight + Span::days(3) + Span::hours(10)));
    send(&setup.topic, batch).await;
    caught_up(&store, &setup, &mut pipeline).await;
    assert_eq!(
        reader.until(0, Duration::from_secs(1)).await,
        vec![],
        "beyond the horizon tonight"
    );
    let got = reader.until(1, Duration::from_secs(40)).await;
    assert_eq!(
        got,
        ids(&[("on_time_rate.rolling_30d.risk.1", "indicator.at_risk")])
    );
    assert_eq!(reader.seen[0]["outlook"]["coming_due"], 1);
    pipeline.stop().await;
}
