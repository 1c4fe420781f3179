//! The projections as they change: a stream of the projector's change notes.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::{ApiError, AppState, Shared};

/// `stream`, ended when the server stops (a live stream would otherwise
/// hold the graceful shutdown up).
pub(super) fn until_shutdown<T: Stream>(s: &AppState, stream: T) -> impl Stream<Item = T::Item> {
    let shutdown = s.shutdown.clone();
    futures_util::StreamExt::take_until(stream, async move { shutdown.cancelled().await })
}

/// `GET /api/v1/projections/stream`: first `event: freshness` (what the
/// projections reflect now), then `event: changed` after every committed
/// batch and clock tick (a `ChangeNote`: the communes it changed, its event
/// time, clock and commit time), for clients to fetch again what they show.
/// A subscriber too slow to keep up gets `{"missed": n}` instead of the
/// notes it missed.
pub(super) async fn stream(
    State(s): State<Shared>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribed first: no change falls between the freshness and the stream.
    let changes = BroadcastStream::new(s.changes.subscribe()).map(|m| {
        let data = match m {
            Ok(note) => serde_json::to_string(&*note).expect("a change note serializes"),
            Err(BroadcastStreamRecvError::Lagged(n)) => json!({ "missed": n }).to_string(),
        };
        Ok(Event::default().event("changed").data(data))
    });
    let first = Event::default()
        .event("freshness")
        .data(json!({"freshness": s.freshness().await?}).to_string());
    let stream = tokio_stream::once(Ok(first)).chain(changes);
    Ok(Sse::new(until_shutdown(&s, stream)).keep_alive(KeepAlive::default()))
}
