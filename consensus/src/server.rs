//! The masters' side of [`crate::network`]: `POST /raft/append`, `/raft/vote` and
//! `/raft/snapshot`, JSON in and out, and `/raft/elect` (a leader handing over asks this
//! master to stand for election). The caller mounts it behind its own check that the
//! peer is a master.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::{Raft, TypeConfig};

/// Largest message accepted: a snapshot chunk ([`crate::SNAPSHOT_CHUNK`]) and its envelope.
const BODY_LIMIT: usize = 8 << 20;

/// The routes, answering for `raft`.
pub fn router(raft: Raft) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/elect", post(elect))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(raft)
}

async fn append(
    State(raft): State<Raft>,
    axum::Json(rpc): axum::Json<AppendEntriesRequest<TypeConfig>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::to_value(raft.append_entries(rpc).await).unwrap_or_default())
}

async fn vote(
    State(raft): State<Raft>,
    axum::Json(rpc): axum::Json<VoteRequest<crate::NodeId>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::to_value(raft.vote(rpc).await).unwrap_or_default())
}

async fn snapshot(
    State(raft): State<Raft>,
    axum::Json(rpc): axum::Json<InstallSnapshotRequest<TypeConfig>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::to_value(raft.install_snapshot(rpc).await).unwrap_or_default())
}

async fn elect(State(raft): State<Raft>) -> axum::http::StatusCode {
    match raft.trigger().elect().await {
        Ok(()) => axum::http::StatusCode::ACCEPTED,
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
    }
}
