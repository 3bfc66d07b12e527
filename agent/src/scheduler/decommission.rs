//! Decommissioned nodes, on the leader's API (forwarded by agents like `/v2`): a node taken
//! out of service for good, as DC/OS's `dcos node decommission`. The leader stops placing
//! tasks there and treats the tasks it had there as lost (they are placed elsewhere, and the
//! node, if it still runs, stops them); the mark is kept in Raft and never lifted: a node
//! that comes back under the same identity runs nothing. A machine reinstalled with a fresh
//! state directory is a new node.
//!
//! - `GET /v1/decommissioned`: the nodes, with when and by whom;
//! - `PUT /v1/decommissioned/{node}`: decommissions a node by name or id (admin).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use dcnet_consensus::{Command, Data};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use super::marathon::{Refusal, now_version, read, refusal, require_leader};
use super::service::{Inner, consensus_failure};

/// Raft keys: `decommissioned/<node id>`.
pub const PREFIX: &str = "decommissioned/";

/// What is kept of a decommissioned node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decommissioned {
    /// Its name when it was decommissioned.
    pub name: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The decommissioned nodes in `data`, by node id.
pub fn all(data: &Data) -> BTreeMap<String, Decommissioned> {
    super::replicated::prefixed(data, PREFIX)
}

pub(super) fn routes(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/decommissioned", get(list))
        .route("/v1/decommissioned/{node}", put(decommission))
        .with_state(inner)
}

async fn list(State(s): State<Arc<Inner>>) -> Result<axum::response::Response, Refusal> {
    let nodes = all(&s.consensus().data().borrow());
    let rows: Vec<_> = nodes
        .into_iter()
        .map(|(id, d)| json!({"id": id, "name": d.name, "at": d.at}))
        .collect();
    read(&s, json!({ "nodes": rows }))
}

async fn decommission(
    State(s): State<Arc<Inner>>,
    Path(node): Path<String>,
) -> Result<axum::response::Response, Refusal> {
    require_leader(&s)?;
    // By id or by name, among the nodes this master has heard of (a dead one stays in its
    // view for the gossip's dead-node grace period).
    let view = s.facts.peek();
    let found: Vec<(String, String)> = view
        .nodes
        .values()
        .filter_map(|n| {
            let name = n.info.as_deref()?.name.clone();
            (n.id == node || name == node).then(|| (n.id.clone(), name))
        })
        .collect();
    let (id, name) = match &found[..] {
        [one] => one.clone(),
        [] => {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                format!("no node has the name or id {node:?}; `dcnet nodes` lists them"),
            ));
        }
        _ => {
            return Err(refusal(
                StatusCode::CONFLICT,
                format!("several nodes are named {node:?}; give the id (`dcnet nodes`)"),
            ));
        }
    };
    let mark = Decommissioned {
        name: name.clone(),
        at: now_version(),
    };
    let command = Command::put(
        format!("{PREFIX}{id}"),
        serde_json::to_value(&mark).unwrap_or_default(),
    );
    if let Err(e) = s.consensus().write(command).await {
        let (status, message) = consensus_failure(e);
        return Err(refusal(status, message));
    }
    info!(node = %name, %id, "node decommissioned: its tasks move, nothing is placed there again");
    s.poke.notify_one();
    Ok(axum::Json(json!({
        "message": format!("{name} ({id}) is decommissioned: its tasks are placed elsewhere and nothing runs there again")
    }))
    .into_response())
}
