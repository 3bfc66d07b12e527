//! The masters and their quorum, on the leader's API (forwarded by agents like `/v2`):
//!
//! - `GET /v1/masters`: the leader, the term, the voters and learners;
//! - `POST /v1/masters` `{"address": "10.0.0.4:8080"}`: adds a master by the address its
//!   scheduler listens at: it first receives the log as a learner, and votes only once it has
//!   caught up (admin);
//! - `DELETE /v1/masters/{address}`: removes one from the quorum (admin).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use dcnet_consensus::{Consensus, Master};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::replicated::raft_id;

/// What the handlers need.
#[derive(Clone)]
pub struct MastersApi {
    pub consensus: Arc<Consensus>,
    /// `https` or `http`: how masters reach each other.
    pub scheme: &'static str,
}

/// The routes (merged into the scheduler's router, behind its credential check).
pub fn router(api: MastersApi) -> Router {
    Router::new()
        .route("/v1/masters", get(list).post(add))
        .route("/v1/masters/{address}", delete(remove))
        .with_state(api)
}

fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"message": message.into()}))).into_response()
}

async fn list(State(api): State<MastersApi>) -> Response {
    let (leader, term) = api.consensus.leader();
    let (nodes, voters) = api.consensus.members();
    let row = |id: &u64, m: &Master| json!({"id": id, "name": m.name, "url": m.url, "voter": voters.contains(id)});
    axum::Json(json!({
        "term": term,
        "leader": leader.map(|(id, m)| row(&id, &m)),
        "masters": nodes.iter().map(|(id, m)| row(id, m)).collect::<Vec<_>>(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMaster {
    address: String,
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    crate::config::parse_master_address(text).ok_or_else(|| {
        format!("{text:?} is not a master's scheduler address (IP or IP:PORT, e.g. 10.0.0.4:8080)")
    })
}

fn failure(e: dcnet_consensus::Error) -> Response {
    let (status, message) = super::service::consensus_failure(e);
    answer(status, message)
}

async fn add(State(api): State<MastersApi>, body: axum::body::Bytes) -> Response {
    let request: NewMaster = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"address\": \"10.0.0.4:8080\"}}: {e}"),
            );
        }
    };
    let address = match parse_address(&request.address) {
        Ok(a) => a,
        Err(why) => return answer(StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    let master = Master {
        name: address.to_string(),
        url: format!("{}://{address}", api.scheme),
    };
    // Returns once it has caught up as a learner and the new quorum is committed.
    match api.consensus.add_master(raft_id(address), master).await {
        Ok(()) => {
            info!(%address, "master added");
            answer(
                StatusCode::OK,
                format!("master {address} added: it votes from now on"),
            )
        }
        Err(e) => failure(e),
    }
}

async fn remove(State(api): State<MastersApi>, Path(address): Path<String>) -> Response {
    let address = match parse_address(&address) {
        Ok(a) => a,
        Err(why) => return answer(StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    let id = raft_id(address);
    if !api.consensus.members().0.contains_key(&id) {
        return answer(
            StatusCode::NOT_FOUND,
            format!("{address} is not a master of this cluster"),
        );
    }
    match api.consensus.remove_master(id).await {
        Ok(()) => {
            info!(%address, "master removed");
            answer(
                StatusCode::OK,
                format!("master {address} removed from the quorum"),
            )
        }
        Err(e) => failure(e),
    }
}
