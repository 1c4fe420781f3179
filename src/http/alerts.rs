//! Alerts: the communes in breach now, the latest alerts published, and
//! the live stream of new ones.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::extract::ApiQuery;
use super::projections::until_shutdown;
use super::views::{answer, FreshnessView, UnitView};
use super::{ApiError, Shared};
use crate::domain::Transition;

#[derive(Deserialize)]
pub(super) struct RecentQuery {
    limit: Option<i64>,
}

#[derive(Serialize)]
struct RecentAnswer {
    /// As published (docs/schemas/indicator-alert.v1.json).
    alerts: Vec<Box<RawValue>>,
    freshness: FreshnessView,
}

/// `GET /api/v1/alerts`: the latest published alerts, newest first: what a
/// subscriber missed.
pub(super) async fn recent(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<RecentQuery>,
) -> Result<Response, ApiError> {
    let limit = s.limit(q.limit.or(Some(50)))?;
    let alerts = s
        .store
        .recent_alerts(limit)
        .await?
        .into_iter()
        .filter_map(|payload| RawValue::from_string(payload).ok())
        .collect();
    answer(&RecentAnswer {
        alerts,
        freshness: s.freshness().await?,
    })
}

#[derive(Deserialize)]
pub(super) struct BreachesQuery {
    /// A commune, or a parent unit: its communes only.
    unit: Option<String>,
}

#[derive(Serialize)]
struct BreachView<'a> {
    commune: UnitView<'a>,
    indicator: String,
    window: String,
    alert_id: String,
    /// The alert that announced the breach, as published: the figures and
    /// the time it was evaluated.
    alert: Option<Box<RawValue>>,
}

#[derive(Serialize)]
struct BreachesAnswer<'a> {
    unit: Option<UnitView<'a>>,
    communes_in_breach: usize,
    breaches: Vec<BreachView<'a>>,
    communes_at_risk: usize,
    /// At risk now: announced by `indicator.at_risk`, not yet cleared.
    at_risk: Vec<BreachView<'a>>,
    freshness: FreshnessView,
}

/// `GET /api/v1/breaches`: every (commune, indicator, window) in breach
/// now (a breach announced and not yet recovered), and every one at risk
/// now (announced, not yet cleared), by commune, with the alert that
/// announced it: what a reform officer opening the dashboard must see
/// first. At most one of each per commune, indicator and evaluated window,
/// so the lists are bounded by the configuration; they are not paged.
pub(super) async fn breaches(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<BreachesQuery>,
) -> Result<Response, ApiError> {
    let unit = q.unit.as_deref().map(|code| s.unit(code)).transpose()?;
    let scope = unit.map(|u| s.units.scope(&[u.code.to_string()]));
    let covered =
        |commune: &crate::domain::Unit| scope.as_ref().is_none_or(|sc| sc.covers(&commune.code));
    // Units valid today: breach evaluation moved on from a unit that has
    // ended (its counters count in its successor's), and its last alert
    // stands as the last word about it.
    let today = s.today();
    let mut lists = Vec::new();
    for risk in [false, true] {
        let list: Vec<BreachView<'_>> = s
            .store
            .breaches_now(risk)
            .await?
            .into_iter()
            .filter_map(|b| {
                let commune = s.units.get_on(&b.commune, today).filter(|u| covered(u))?;
                Some(BreachView {
                    commune: commune.into(),
                    indicator: b.indicator,
                    window: b.window,
                    alert_id: b.alert_id,
                    alert: b.alert.and_then(|a| RawValue::from_string(a).ok()),
                })
            })
            .collect();
        lists.push(list);
    }
    let communes = |list: &[BreachView<'_>]| {
        let mut codes: Vec<&str> = list.iter().map(|b| b.commune.code.as_str()).collect();
        codes.dedup();
        codes.len()
    };
    let at_risk = lists.pop().expect("two lists");
    let breaches = lists.pop().expect("two lists");
    answer(&BreachesAnswer {
        unit: unit.map(Into::into),
        communes_in_breach: communes(&breaches),
        breaches,
        communes_at_risk: communes(&at_risk),
        at_risk,
        freshness: s.freshness().await?,
    })
}

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    /// Comma-separated alert kinds (`event_type`s); left out, the breach
    /// kinds ([`Transition::BREACH_KINDS`]), as webhooks.
    kinds: Option<String>,
}

/// `GET /api/v1/alerts/stream[?kinds=…]`: every alert of the kinds asked
/// for (by default the breach kinds, so that a subscriber written before
/// the at-risk kinds is unaffected by them) as it is published, as
/// `event: alert` with the alert's JSON. A subscriber too slow to keep up
/// misses alerts rather than holding the relay back; the alerts topic keeps
/// them all.
pub(super) async fn stream(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let kinds: Vec<Transition> = match q.kinds.as_deref() {
        None => Transition::BREACH_KINDS.to_vec(),
        Some(list) => list
            .split(',')
            .map(|k| {
                Transition::from_event_type(k.trim())
                    .ok_or_else(|| ApiError::BadRequest(format!("kinds: unknown alert kind `{k}`")))
            })
            .collect::<Result<_, _>>()?,
    };
    let stream = BroadcastStream::new(s.live.subscribe())
        .filter_map(|m| m.ok())
        .filter(move |payload| crate::alerts::kind_of(payload).is_some_and(|k| kinds.contains(&k)))
        .map(|payload| Ok(Event::default().event("alert").data(&*payload)));
    Ok(Sse::new(until_shutdown(&s, stream)).keep_alive(KeepAlive::default()))
}
