//! The scheduler itself: `/ping`, `/v2/info`, `/v2/leader`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::{Answer, Shared, leader_address, refusal};

/// `GET /ping`: Marathon's liveness answer, served without a credential.
pub(super) async fn ping() -> &'static str {
    "pong\n"
}

/// `GET /v2/info`: what Marathon says of itself, with dcnet's values where dcnet has the
/// like (no ZooKeeper and no Mesos master: the masters agree by Raft).
pub(super) async fn info(State(s): State<Shared>) -> Answer {
    let view = s.facts.peek();
    let leader = leader_address(&view);
    let (scheme, listen) = s
        .api_url
        .split_once("://")
        .unwrap_or(("http", s.api_url.as_str()));
    let port = listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let (http_port, https_port) = match scheme {
        "https" => (None, port),
        _ => (port, None),
    };
    let elected = s.is_leader();
    super::read(
        &s,
        json!({
            "name": "dcnet",
            "version": env!("CARGO_PKG_VERSION"),
            "buildref": env!("CARGO_PKG_VERSION"),
            "elected": elected,
            "leader": leader,
            "frameworkId": "dcnet",
            "marathon_config": {
                "framework_name": "dcnet",
                "ha": true,
                "hostname": listen.rsplit_once(':').map_or(listen, |(h, _)| h),
                "task_launch_timeout": crate::scheduler::plan::LAUNCH_TIMEOUT_MS,
                "features": [],
                "webui_url": s.api_url,
            },
            "zookeeper_config": {},
            "http_config": {"http_port": http_port, "https_port": https_port},
            "event_subscriber": null,
        }),
    )
}

/// `GET /v2/leader`: `{"leader": "host:port"}`.
pub(super) async fn leader(State(s): State<Shared>) -> Answer {
    let view = s.facts.peek();
    let address = leader_address(&view)
        .ok_or_else(|| refusal(StatusCode::NOT_FOUND, "no scheduler leads at the moment"))?;
    Ok(axum::Json(json!({ "leader": address })).into_response())
}

/// `DELETE /v2/leader`: Marathon's abdication. The Raft leader asks the master whose log
/// has caught up furthest to stand for election, grants it its vote, and answers once the
/// other leads (tasks run on: a new leader takes over the task set kept in Raft).
pub(super) async fn abdicate(State(s): State<Shared>) -> Answer {
    super::require_leader(&s)?;
    match s.consensus().abdicate().await {
        Ok(new) => {
            tracing::info!(new_leader = new, "leadership handed over on request");
            Ok(axum::Json(json!({ "message": "Leadership abdicated" })).into_response())
        }
        Err(e) => {
            let (status, message) = crate::scheduler::service::consensus_failure(e);
            Err(refusal(status, message))
        }
    }
}
