//! `/v2/eventSubscriptions`: Marathon's HTTP callback subscribers. A callback URL is kept in
//! Raft (`subscriptions/<hex of the URL>`) and the leader POSTs every event of its bus to it
//! (the JSON `/v2/events` sends as `data`), each subscriber on its own queue so a slow or
//! dead one delays no other; a delivery that fails is logged and dropped, as by Marathon.
//!
//! - `GET /v2/eventSubscriptions`: `{"callbackUrls": [...]}`;
//! - `POST /v2/eventSubscriptions?callbackUrl=URL`: subscribes (the `subscribe_event`);
//! - `DELETE /v2/eventSubscriptions?callbackUrl=URL`: unsubscribes (`unsubscribe_event`).
//!
//! Changing them takes the write role, as every `/v2` change: the leader then posts to any
//! `http`/`https` URL it reaches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dcnet_consensus::{Command, Data};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::query::Query;
use super::{Answer, Shared, now_version, read, refusal, require_leader};
use crate::scheduler::events::Event;
use crate::scheduler::service::{Inner, consensus_failure};

/// Raft keys: `subscriptions/<hex of the callback URL>`.
pub const PREFIX: &str = "subscriptions/";
/// Events waiting for one subscriber before newer ones are dropped for it.
const QUEUE: usize = 1024;
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(5);

fn key(url: &str) -> String {
    let hex: String = url.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// The callback URLs kept in `data`.
pub fn all(data: &Data) -> Vec<String> {
    data.prefixed(PREFIX)
        .filter_map(|(_, v)| v.get("callbackUrl")?.as_str().map(str::to_owned))
        .collect()
}

/// Whether `url` can be a callback: `http` or `https`, a host, no spaces.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("callbackUrl {url:?} is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty()
        || url.len() > 2048
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "callbackUrl {url:?} is not a URL such as http://10.0.0.9:8000/events"
        ));
    }
    Ok(())
}

fn callback(q: Option<&str>) -> Result<String, super::Refusal> {
    let q = Query::parse(q);
    let url = q.get("callbackUrl").ok_or_else(|| {
        refusal(
            StatusCode::BAD_REQUEST,
            "give the subscriber as ?callbackUrl=http://host:port/path",
        )
    })?;
    check_url(url).map_err(|e| refusal(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(url.to_owned())
}

pub(super) async fn list(State(s): State<Shared>) -> Answer {
    let urls = all(&s.consensus().data().borrow());
    read(&s, json!({ "callbackUrls": urls }))
}

pub(super) async fn subscribe(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Answer {
    change(&s, q.as_deref(), peer, true).await
}

pub(super) async fn unsubscribe(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Answer {
    change(&s, q.as_deref(), peer, false).await
}

async fn change(s: &Inner, q: Option<&str>, peer: SocketAddr, subscribe: bool) -> Answer {
    require_leader(s)?;
    let url = callback(q)?;
    let command = if subscribe {
        Command::put(key(&url), json!({ "callbackUrl": url }))
    } else {
        Command::delete(key(&url))
    };
    s.consensus().write(command).await.map_err(|e| {
        let (status, message) = consensus_failure(e);
        refusal(status, message)
    })?;
    let kind = if subscribe {
        "subscribe_event"
    } else {
        "unsubscribe_event"
    };
    info!(callback = %url, kind, "event subscribers changed");
    let body = json!({"callbackUrl": url, "clientIp": peer.ip().to_string(),
                      "eventType": kind, "timestamp": now_version()});
    s.emit_raw(kind, body.clone());
    Ok(axum::Json(body).into_response())
}

/// Posts the bus's events to the subscribers while this master leads. Runs for as long as
/// the scheduler does.
pub(crate) async fn deliver(inner: Arc<Inner>, stop: crate::lifecycle::Stopping) {
    let mut bus = inner.events.subscribe();
    let mut queues: BTreeMap<String, mpsc::Sender<Arc<Event>>> = BTreeMap::new();
    let client = match crate::auth::client(None, TIMEOUT, true) {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "no HTTP client for event subscribers; none will be called");
            return;
        }
    };
    loop {
        let received = tokio::select! {
            received = bus.recv() => received,
            () = stop.cancelled() => return,
        };
        let event = match received {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "event subscribers missed events: the bus outran their delivery"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if !inner.is_leader() {
            continue;
        }
        let urls = all(&inner.consensus().data().borrow());
        queues.retain(|url, _| urls.contains(url));
        for url in urls {
            let queue = queues.entry(url.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(post_each(client.clone(), url.clone(), rx));
                tx
            });
            if queue.try_send(event.clone()).is_err() {
                warn!(callback = %url, event = event.kind, "an event subscriber is too far behind; dropping an event for it");
            }
        }
    }
}

/// Posts what comes on `rx` to `url`, one after another, until the subscriber is gone.
async fn post_each(client: ureq::Agent, url: String, mut rx: mpsc::Receiver<Arc<Event>>) {
    while let Some(event) = rx.recv().await {
        let (client, target, body) = (client.clone(), url.clone(), event.data.clone());
        let sent = tokio::task::spawn_blocking(move || {
            client
                .post(&target)
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .map(|r| r.status().as_u16())
        })
        .await;
        match sent {
            Ok(Ok(status)) if (200..300).contains(&status) => {}
            Ok(Ok(status)) => {
                warn!(callback = %url, event = event.kind, status, "an event subscriber refused an event")
            }
            Ok(Err(e)) => {
                warn!(callback = %url, event = event.kind, error = %e, "cannot deliver an event to a subscriber")
            }
            Err(e) => warn!(callback = %url, error = %e, "event delivery stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_http_urls() {
        assert!(check_url("http://10.0.0.9:8000/events").is_ok());
        assert!(check_url("https://hooks.example/marathon?x=1").is_ok());
        for bad in [
            "ftp://h/x",
            "http://",
            "http:///x",
            "http://h/a b",
            "10.0.0.9:8000",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_ne!(key("http://a/"), key("http://b/"));
        assert!(key("http://a/").starts_with(PREFIX));
    }
}
