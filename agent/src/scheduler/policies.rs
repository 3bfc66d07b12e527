//! Network policies ([`dcnet_policy`]) on the leader's API, kept in Raft by the masters
//! (agents forward `/v2/...`):
//!
//! - `GET /v2/policies`: every policy, each with the apps it selects now and the packets it
//!   denied (`denied`: the sum of what the nodes up publish, [`crate::policy::DENIED_KEY`]);
//! - `GET /v2/policies/{id}`: one;
//! - `POST /v2/policies`: adds one (admin; 409 if its id exists);
//! - `PUT /v2/policies/{id}`: adds or replaces one (admin);
//! - `DELETE /v2/policies/{id}`: removes one (admin).
//!
//! The leader publishes each policy in gossip (`sched/policy/<id>`), where every node reads
//! them to program its datapath; so a policy must fit in one gossip value ([`MAX_POLICY_BYTES`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dcnet_consensus::{Command, Data};
use dcnet_policy::Policy;
use serde_json::json;
use tracing::info;

use super::marathon::{Refusal, read, refusal, require_leader};
use super::service::{Inner, consensus_failure};

/// Raft keys: `policies/<id>`.
pub const PREFIX: &str = "policies/";

/// The largest policy, as JSON: one gossip value carries it.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;

/// The policies in `data`, by id.
pub fn all(data: &Data) -> BTreeMap<String, Policy> {
    super::replicated::prefixed(data, PREFIX)
}

pub(super) fn routes(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v2/policies", get(list).post(add))
        .route("/v2/policies/{id}", get(one).put(replace).delete(remove))
        .with_state(inner)
}

/// The apps with a task now whose id and labels `policy` selects.
fn selected_apps(s: &Inner, policy: &Policy) -> Vec<String> {
    let data = s.consensus().data().borrow().clone();
    super::replicated::apps(&data)
        .into_values()
        .filter(|app| policy.selector.matches(&app.id, &app.labels))
        .map(|app| app.id)
        .collect()
}

/// Packets `id` denied on the nodes up, as they last published.
fn denied(s: &Inner, id: &str) -> u64 {
    s.facts
        .peek()
        .up_nodes()
        .filter_map(|n| n.policy_denied.as_ref()?.get(id))
        .sum()
}

fn shown(s: &Inner, policy: &Policy) -> serde_json::Value {
    let mut value = serde_json::to_value(policy).unwrap_or_default();
    if let Some(o) = value.as_object_mut() {
        o.insert("selects".into(), json!(selected_apps(s, policy)));
        o.insert("denied".into(), json!(denied(s, &policy.id)));
    }
    value
}

async fn list(State(s): State<Arc<Inner>>) -> Result<Response, Refusal> {
    let policies = all(&s.consensus().data().borrow());
    let shown: Vec<_> = policies.values().map(|p| shown(&s, p)).collect();
    read(&s, json!({ "policies": shown }))
}

async fn one(State(s): State<Arc<Inner>>, Path(id): Path<String>) -> Result<Response, Refusal> {
    let policies = all(&s.consensus().data().borrow());
    let policy = policies.get(&id).ok_or_else(|| unknown(&id))?;
    read(&s, shown(&s, policy))
}

fn unknown(id: &str) -> Refusal {
    refusal(
        StatusCode::NOT_FOUND,
        format!("no policy has the id {id:?}; `dcnet policy list` shows them"),
    )
}

/// The policy of a request body, checked.
fn parse(body: &[u8]) -> Result<Policy, Refusal> {
    if body.len() > MAX_POLICY_BYTES {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the policy is {} bytes; at most {MAX_POLICY_BYTES} fit in one gossip value: split it into several policies",
                body.len()
            ),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| refusal(StatusCode::BAD_REQUEST, "the policy is not UTF-8"))?;
    Policy::parse(text).map_err(|e| refusal(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

async fn store(s: &Inner, policy: &Policy) -> Result<(), Refusal> {
    let command = Command::put(
        format!("{PREFIX}{}", policy.id),
        serde_json::to_value(policy).unwrap_or_default(),
    );
    if let Err(e) = s.consensus().write(command).await {
        let (status, message) = consensus_failure(e);
        return Err(refusal(status, message));
    }
    info!(policy = %policy.id, "network policy stored");
    s.poke.notify_one();
    Ok(())
}

async fn add(State(s): State<Arc<Inner>>, body: axum::body::Bytes) -> Result<Response, Refusal> {
    require_leader(&s)?;
    let policy = parse(&body)?;
    if all(&s.consensus().data().borrow()).contains_key(&policy.id) {
        return Err(refusal(
            StatusCode::CONFLICT,
            format!(
                "a policy with the id {:?} exists: replace it with `dcnet policy add --replace`, or remove it first",
                policy.id
            ),
        ));
    }
    store(&s, &policy).await?;
    Ok((StatusCode::CREATED, axum::Json(shown(&s, &policy))).into_response())
}

async fn replace(
    State(s): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    require_leader(&s)?;
    let policy = parse(&body)?;
    if policy.id != id {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            format!(
                "the path names the policy {id:?} but the body is {:?}",
                policy.id
            ),
        ));
    }
    store(&s, &policy).await?;
    Ok(axum::Json(shown(&s, &policy)).into_response())
}

async fn remove(State(s): State<Arc<Inner>>, Path(id): Path<String>) -> Result<Response, Refusal> {
    require_leader(&s)?;
    if !all(&s.consensus().data().borrow()).contains_key(&id) {
        return Err(unknown(&id));
    }
    if let Err(e) = s
        .consensus()
        .write(Command::delete(format!("{PREFIX}{id}")))
        .await
    {
        let (status, message) = consensus_failure(e);
        return Err(refusal(status, message));
    }
    info!(policy = %id, "network policy removed");
    s.poke.notify_one();
    Ok(axum::Json(json!({"message": format!("policy {id} removed")})).into_response())
}
