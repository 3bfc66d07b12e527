//! `GET /v2/events`: Marathon's event bus as server-sent events (`event: <type>` and `data:
//! <json>` per event), `?event_type=` (repeatable) to pick some. The stream starts with
//! `event_stream_attached`; a subscriber that falls more than the backlog behind misses the
//! events in between (the stream goes on).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::json;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

use super::query::Query;
use super::{Answer, Shared, now_version};

pub(super) async fn stream(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Answer {
    let q = Query::parse(q.as_deref());
    let wanted: Vec<String> = q.all("event_type").map(str::to_owned).collect();
    let remote = peer.ip().to_string();
    let attached = Event::default().event("event_stream_attached").data(
        json!({"eventType": "event_stream_attached", "timestamp": now_version(),
               "remoteAddress": remote})
        .to_string(),
    );
    let first = wanted
        .iter()
        .all(|w| w == "event_stream_attached")
        .then_some(Ok::<_, Infallible>(attached));
    let events = BroadcastStream::new(s.events.subscribe()).filter_map(move |e| {
        let e = e.ok()?;
        (wanted.is_empty() || wanted.iter().any(|w| w == e.kind))
            .then(|| Ok::<_, Infallible>(Event::default().event(e.kind).data(e.data.to_string())))
    });
    let all = tokio_stream::iter(first).chain(events);
    Ok(Sse::new(all)
        .keep_alive(KeepAlive::default())
        .into_response())
}
