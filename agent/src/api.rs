//! The agent's local HTTP API (127.0.0.1 by default).
//!
//! - `GET /v1/version`: the agent's version and node id.
//! - `GET /v1/nodes`: the membership table ([`crate::node::Member`] rows).
//! - `GET /v1/kv`: every node's operator keys; `GET /v1/kv/{key}`: one key on every node;
//!   `PUT /v1/kv/{key}` (body = value) and `DELETE /v1/kv/{key}`: this node's own key. In the
//!   spirit of Lashup's KV API, for operators and tests to see replication at work.
//! - `GET /v1/overlay`: leases, peers and the last reconcile; `POST /v1/overlay/attach`,
//!   `/detach`, `/check` and `/gc` (JSON bodies, see [`crate::overlay::service`]): container
//!   attachment, used by `dcnet-cni` and the task launcher. Errors are `{"error": "..."}`.
//! - `GET /v1/vips`: the VIPs this node's load balancer has, with backends, weights, states and
//!   new-connection counts ([`crate::lb::VipStatus`] rows).
//! - `GET /v1/tasks`: every launched task of the live nodes as its agent reports it
//!   ([`TaskRow`] rows), from gossip, so it answers with no scheduler running.
//! - `/v2/...`: Marathon's API, forwarded to the leading scheduler wherever it runs.
//! - `GET /v1/cluster`: this cluster's id, name and DNS domain; `/cluster/v1/links[/{name}]`:
//!   linked clusters ([`crate::scheduler::links`]), forwarded to the leading scheduler.
//! - `GET /v1/auth/whoami`: the caller's subject and role; `/v1/auth/...` otherwise: the
//!   masters' credential API, and `/v1/masters`: the masters' quorum, both forwarded to the
//!   leading scheduler like `/v2`.
//! - `GET /v1/keyring`: this node's gossip keys and every node's (ids only, never key bytes);
//!   `POST /v1/keyring/keys` (`{"key": base64}`) installs a key, `PUT /v1/keyring/primary`
//!   (`{"key": id or base64, "force": false}`) makes one primary, `DELETE
//!   /v1/keyring/keys/{id}[?force=true]` removes one: on this node, checked against what
//!   the live nodes publish so a rotation in the wrong order is refused (see
//!   [`crate::gossip::keyring`]).
//! - `GET /v1/dns/lookup?name=` and `GET /v1/dns/records?app=`: what this node's DNS answers
//!   for a name, and an app's records ([`crate::dns::lookup`]).
//! - `GET /v1/mesos/tasks`: the running tasks of the Mesos master dcnet reads task state from
//!   ([`MesosTaskRow`] rows), when one is configured.
//! - `GET /v1/policy`: the network policies as this node compiles them ([`crate::policy`]).
//! - `/dashboard/`: the web dashboard ([`crate::dashboard`]); its page and scripts are open,
//!   the data they show comes from the routes above, with the viewer's credential.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /health`: liveness (`ok`).
//!
//! Every route but `/v1/version`, `/health` and the dashboard's assets needs a credential
//! ([`crate::auth::http`]): the local API is on loopback, but every local user can reach
//! loopback, and whoever can attach containers or add apps can run code as root.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::facts::{FactsWatch, KEYRING_KEY, KV_PREFIX};
use crate::gossip::Gossip;
use crate::gossip::keyring::{Key, KeyId, Keyring, KeyringError, KeyringFact};
use crate::lb::LbService;
use crate::node;
use crate::overlay::{AttachError, OverlayService};

const MAX_KV_KEY_LEN: usize = 200;
const MAX_KV_VALUE_LEN: usize = 16 * 1024;

/// Routes served without a credential: liveness, the version, and the dashboard's page and
/// assets ([`crate::dashboard::ROUTES`]), which hold no data.
pub const OPEN_ROUTES: &[&str] = &[
    "/v1/version",
    "/health",
    "/",
    "/dashboard",
    "/dashboard/",
    "/dashboard/app.js",
    "/dashboard/style.css",
    "/dashboard/icon.svg",
];

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub gossip: Arc<Gossip>,
    /// The decoded facts the reads answer from.
    pub facts: FactsWatch,
    /// The client calls to the leading scheduler go through (trusts the cluster CA).
    pub client: ureq::Agent,
    /// The same for the event bus, whose answer never ends.
    pub stream_client: ureq::Agent,
    /// This node's own scheduler's URL, on a master.
    pub local_scheduler: Option<String>,
    pub registry: Arc<Registry>,
    /// `None` when the overlay is off.
    pub overlay: Option<Arc<OverlayService>>,
    /// `None` when the load balancer is off.
    pub lb: Option<Arc<LbService>>,
    /// The gossip keys.
    pub keyring: Keyring,
    /// Mesos-DNS's HTTP API over this node's replica, served under `/mesos_dns/` (`None`
    /// with DNS off).
    pub mesos_dns: Option<Router>,
    /// `/v1/dns/lookup` and `/v1/dns/records` ([`crate::dns::lookup`]; `None` with DNS off).
    pub dns_lookup: Option<Router>,
    /// This cluster's id and name (`GET /v1/cluster`).
    pub cluster: crate::identity::ClusterIdentity,
}

/// The API's routes, each behind `guard`.
pub fn router(state: ApiState, guard: crate::auth::http::Guard) -> Router {
    let mut router = Router::new();
    if let Some(mesos_dns) = state.mesos_dns.clone() {
        // DC/OS's path for it through the admin router.
        router = router.nest_service("/mesos_dns", mesos_dns);
    }
    let router = router
        .route("/health", get(|| async { "ok\n" }))
        .route("/v1/version", get(version))
        .route("/v1/nodes", get(nodes))
        .route("/v1/kv", get(kv_all))
        .route("/v1/kv/{key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/overlay", get(overlay_status))
        .route("/v1/overlay/attach", post(overlay_attach))
        .route("/v1/overlay/detach", post(overlay_detach))
        .route("/v1/overlay/check", post(overlay_check))
        .route("/v1/overlay/gc", post(overlay_gc))
        .route("/v1/vips", get(vips))
        .route("/v1/tasks", get(tasks))
        .route("/v1/mesos/tasks", get(mesos_tasks))
        .route("/v1/policy", get(policy))
        .route("/v2/{*rest}", axum::routing::any(forward))
        .route("/ping", get(forward))
        .route("/v1/auth/whoami", get(whoami))
        .route("/v1/auth/{*rest}", axum::routing::any(forward))
        .route("/v1/masters", axum::routing::any(forward))
        .route("/v1/masters/{*rest}", axum::routing::any(forward))
        .route("/v1/cluster", get(cluster))
        .route("/cluster/v1/{*rest}", axum::routing::any(forward))
        .route("/v1/decommissioned", axum::routing::any(forward))
        .route("/v1/decommissioned/{*rest}", axum::routing::any(forward))
        .route("/v1/keyring", get(keyring_list))
        .route("/v1/keyring/keys", post(keyring_install))
        .route(
            "/v1/keyring/keys/{id}",
            axum::routing::delete(keyring_remove),
        )
        .route("/v1/keyring/primary", axum::routing::put(keyring_use))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::router())
        .route_layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            crate::auth::http::require_credential,
        ))
        .with_state(state.clone());
    match state.dns_lookup {
        // A router of its own (over the DNS replica), behind the same check.
        Some(lookup) => router.merge(lookup.route_layer(axum::middleware::from_fn_with_state(
            guard,
            crate::auth::http::require_credential,
        ))),
        None => router,
    }
}

/// Serves the API on `listener` until `shutdown` completes, within the node's connection
/// limits ([`crate::serve`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    guard: crate::auth::http::Guard,
    limits: crate::serve::Limits,
    metrics: crate::serve::ServeMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::serve::serve(
        listener,
        router(state, guard),
        "agent",
        limits,
        metrics,
        shutdown,
    )
    .await
}

/// Who the caller is, as this node's check sees it.
async fn whoami(identity: Option<Extension<dcnet_auth::Identity>>) -> Response {
    match identity {
        Some(Extension(id)) => axum::Json(serde_json::json!({
            "subject": id.subject,
            "role": id.role,
            "token_id": id.token_id,
        }))
        .into_response(),
        None => axum::Json(serde_json::json!({
            "subject": null,
            "role": "admin",
            "insecure": true,
        }))
        .into_response(),
    }
}

#[derive(Serialize)]
struct Version {
    version: &'static str,
    node_id: String,
}

async fn version(State(s): State<ApiState>) -> axum::Json<Version> {
    axum::Json(Version {
        version: env!("CARGO_PKG_VERSION"),
        node_id: s.gossip.node_id().to_owned(),
    })
}

async fn policy(State(s): State<ApiState>) -> axum::Json<crate::policy::PolicyView> {
    axum::Json(crate::policy::view(&s.facts.peek()))
}

async fn cluster(State(s): State<ApiState>) -> axum::Json<crate::identity::ClusterIdentity> {
    axum::Json(s.cluster.clone())
}

async fn nodes(State(s): State<ApiState>) -> axum::Json<Vec<node::Member>> {
    axum::Json(node::members(&s.gossip.view(), SystemTime::now()))
}

async fn metrics(State(s): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    let mut body = String::new();
    // Marathon's clients ask for JSON (Marathon's own `/metrics` shape); scrapers for text.
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) if json => axum::Json(metrics_json(&body)).into_response(),
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

/// The metrics in the shape of Marathon's `/metrics` (Dropwizard's JSON): each Prometheus
/// sample, named with its labels, under `counters` (`{"count"}`) or `gauges` (`{"value"}`)
/// by its family's type; histograms' samples are gauges.
pub fn metrics_json(text: &str) -> serde_json::Value {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut counters = serde_json::Map::new();
    let mut gauges = serde_json::Map::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name, kind);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let family = name.split('{').next().unwrap_or(name);
        let base = family
            .strip_suffix("_total")
            .or_else(|| family.strip_suffix("_created"))
            .unwrap_or(family);
        if types.get(base).or_else(|| types.get(family)) == Some(&"counter") {
            counters.insert(name.to_owned(), serde_json::json!({ "count": value }));
        } else {
            gauges.insert(name.to_owned(), serde_json::json!({ "value": value }));
        }
    }
    serde_json::json!({
        "version": "4.0.0",
        "gauges": gauges,
        "counters": counters,
        "histograms": {},
        "meters": {},
        "timers": {},
    })
}

#[derive(Serialize)]
struct KvEntry {
    node: String,
    value: String,
}

async fn kv_all(
    State(s): State<ApiState>,
) -> axum::Json<BTreeMap<String, BTreeMap<String, String>>> {
    let facts = s.facts.peek();
    let all = facts
        .nodes
        .values()
        .map(|n| {
            let keys =
                n.kv.iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect();
            (n.id.clone(), keys)
        })
        .collect();
    axum::Json(all)
}

/// A rejected request: status and a message saying what to change.
type Rejection = (StatusCode, String);

async fn kv_get(State(s): State<ApiState>, Path(key): Path<String>) -> Result<Response, Rejection> {
    check_key(&key)?;
    let facts = s.facts.peek();
    let entries: Vec<KvEntry> = facts
        .nodes
        .values()
        .filter_map(|n| {
            Some(KvEntry {
                node: n.id.clone(),
                value: n.kv.get(&key)?.to_string(),
            })
        })
        .collect();
    if entries.is_empty() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no node publishes key {key:?}\n"),
        ));
    }
    Ok(axum::Json(entries).into_response())
}

async fn kv_put(
    State(s): State<ApiState>,
    Path(key): Path<String>,
    value: String,
) -> Result<StatusCode, Rejection> {
    check_key(&key)?;
    if value.len() > MAX_KV_VALUE_LEN {
        let message = format!(
            "value of {} bytes exceeds the limit of {MAX_KV_VALUE_LEN}\n",
            value.len()
        );
        return Err((StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    s.gossip.publish(&format!("{KV_PREFIX}{key}"), &value).await;
    Ok(StatusCode::NO_CONTENT)
}

type JsonError = (StatusCode, axum::Json<serde_json::Value>);

/// A node's keyring as the cluster sees it.
#[derive(Serialize)]
struct NodeKeys {
    node_id: String,
    name: Option<String>,
    up: bool,
    /// `None` if the node publishes no keyring (an older agent).
    keyring: Option<KeyringFact>,
}

fn cluster_keys(s: &ApiState) -> Vec<NodeKeys> {
    let members = node::members(&s.gossip.view(), SystemTime::now());
    let facts = s.facts.peek();
    members
        .into_iter()
        .map(|m| NodeKeys {
            keyring: facts
                .nodes
                .get(&m.id)
                .and_then(|n| n.keyring.as_deref().cloned()),
            node_id: m.id,
            name: m.name,
            up: m.state == node::NodeState::Up,
        })
        .collect()
}

async fn keyring_list(State(s): State<ApiState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "keyring": s.keyring.keys().fact(),
        "nodes": cluster_keys(&s),
    }))
}

#[derive(serde::Deserialize)]
struct KeyBody {
    key: String,
    #[serde(default)]
    force: bool,
}

fn keyring_error(e: KeyringError) -> JsonError {
    let status = match e {
        KeyringError::Write { .. } | KeyringError::Read { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        KeyringError::Unknown { .. } => StatusCode::NOT_FOUND,
        KeyringError::BadKey { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        KeyringError::RemovePrimary { .. } => StatusCode::CONFLICT,
    };
    json_error(status, e)
}

/// A key named by its id, or given whole.
fn key_id(text: &str) -> Result<KeyId, JsonError> {
    text.parse::<KeyId>()
        .or_else(|_| Key::parse(text).map(|k| k.id()))
        .map_err(keyring_error)
}

async fn publish_keys(s: &ApiState) {
    let fact = serde_json::to_string(&s.keyring.keys().fact()).unwrap_or_default();
    s.gossip.publish(KEYRING_KEY, &fact).await;
}

/// Live nodes (other than this one) for which `bad` holds of their published keyring.
fn live_nodes_where(s: &ApiState, bad: impl Fn(&KeyringFact) -> bool) -> Vec<String> {
    cluster_keys(s)
        .into_iter()
        .filter(|n| n.up && n.node_id != s.gossip.node_id())
        .filter(|n| n.keyring.as_ref().is_none_or(&bad))
        .map(|n| n.name.unwrap_or(n.node_id))
        .collect()
}

async fn keyring_install(
    State(s): State<ApiState>,
    axum::Json(body): axum::Json<KeyBody>,
) -> Result<axum::Json<serde_json::Value>, JsonError> {
    let key = Key::parse(&body.key).map_err(keyring_error)?;
    let id = key.id();
    let new = s.keyring.install(key).map_err(keyring_error)?;
    publish_keys(&s).await;
    tracing::info!(key = %id, new, "gossip key installed");
    Ok(axum::Json(
        serde_json::json!({ "key": id.to_string(), "installed": new }),
    ))
}

async fn keyring_use(
    State(s): State<ApiState>,
    axum::Json(body): axum::Json<KeyBody>,
) -> Result<axum::Json<serde_json::Value>, JsonError> {
    let id = key_id(&body.key)?;
    let named = id.to_string();
    let lacking = live_nodes_where(&s, |k| !k.keys.contains(&named));
    if !lacking.is_empty() && !body.force {
        return Err(json_error(
            StatusCode::CONFLICT,
            format!(
                "live nodes do not have key {id} installed, and would drop everything this node sends: {}; install it there first (`dcnet keyring install`), or pass --force",
                lacking.join(", ")
            ),
        ));
    }
    let changed = s.keyring.use_key(id).map_err(keyring_error)?;
    publish_keys(&s).await;
    tracing::info!(key = %id, changed, "gossip key made primary");
    Ok(axum::Json(
        serde_json::json!({ "primary": named, "changed": changed }),
    ))
}

#[derive(serde::Deserialize)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

async fn keyring_remove(
    State(s): State<ApiState>,
    Path(text): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ForceQuery>,
) -> Result<axum::Json<serde_json::Value>, JsonError> {
    let id = key_id(&text)?;
    let named = id.to_string();
    let using = live_nodes_where(&s, |k| k.primary == named);
    if !using.is_empty() && !q.force {
        return Err(json_error(
            StatusCode::CONFLICT,
            format!(
                "live nodes still send with key {id}, and this node would drop all of it: {}; make another key primary there first (`dcnet keyring use`), or pass --force",
                using.join(", ")
            ),
        ));
    }
    s.keyring.remove(id).map_err(keyring_error)?;
    publish_keys(&s).await;
    tracing::info!(key = %id, "gossip key removed");
    Ok(axum::Json(serde_json::json!({ "removed": named })))
}

fn json_error(status: StatusCode, message: impl std::fmt::Display) -> JsonError {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.to_string() })),
    )
}

fn overlay_of(s: &ApiState) -> Result<&Arc<OverlayService>, JsonError> {
    s.overlay.as_ref().ok_or_else(|| {
        json_error(
            StatusCode::NOT_FOUND,
            "the overlay is not enabled on this node: set `[overlay] enabled = true` in its config",
        )
    })
}

async fn vips(State(s): State<ApiState>) -> Result<Response, JsonError> {
    let lb = s.lb.as_ref().ok_or_else(|| {
        json_error(
            StatusCode::NOT_FOUND,
            "the load balancer is not enabled on this node: set `[lb] enabled = true` in its config",
        )
    })?;
    let status = lb
        .status()
        .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(axum::Json(status).into_response())
}

fn parse_body<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T, JsonError> {
    serde_json::from_str(body).map_err(|e| {
        json_error(
            StatusCode::BAD_REQUEST,
            format!("invalid {what} request: {e}"),
        )
    })
}

fn attach_error(e: AttachError) -> JsonError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_error(status, e)
}

async fn overlay_status(State(s): State<ApiState>) -> Result<Response, JsonError> {
    Ok(axum::Json(overlay_of(&s)?.status()).into_response())
}

async fn overlay_attach(State(s): State<ApiState>, body: String) -> Result<Response, JsonError> {
    let overlay = overlay_of(&s)?;
    let request = parse_body("attach", &body)?;
    let response = overlay.attach(request).await.map_err(attach_error)?;
    Ok(axum::Json(response).into_response())
}

async fn overlay_detach(State(s): State<ApiState>, body: String) -> Result<Response, JsonError> {
    let overlay = overlay_of(&s)?;
    let request = parse_body("detach", &body)?;
    let detached = overlay.detach(request).await.map_err(attach_error)?;
    Ok(axum::Json(serde_json::json!({ "detached": detached })).into_response())
}

async fn overlay_check(State(s): State<ApiState>, body: String) -> Result<Response, JsonError> {
    let overlay = overlay_of(&s)?;
    let request = parse_body("check", &body)?;
    let response = overlay.check(request).await.map_err(attach_error)?;
    Ok(axum::Json(response).into_response())
}

async fn overlay_gc(State(s): State<ApiState>, body: String) -> Result<Response, JsonError> {
    let overlay = overlay_of(&s)?;
    let request = parse_body("gc", &body)?;
    let detached = overlay.gc(request).await.map_err(attach_error)?;
    Ok(axum::Json(serde_json::json!({ "detached": detached })).into_response())
}

async fn kv_delete(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Result<StatusCode, Rejection> {
    check_key(&key)?;
    s.gossip.delete(&format!("{KV_PREFIX}{key}")).await;
    Ok(StatusCode::NO_CONTENT)
}

fn check_key(key: &str) -> Result<(), Rejection> {
    // "." and ".." name no key anyone means, and read as paths to every tool that shows them.
    let ok = !key.is_empty()
        && !key.bytes().all(|b| b == b'.')
        && key.len() <= MAX_KV_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err((
            StatusCode::BAD_REQUEST,
            format!(
                "invalid key {key:?}: use 1 to {MAX_KV_KEY_LEN} characters of letters, digits, `-`, `.` and `_`, not only dots\n"
            ),
        ))
    }
}

/// One launched task, as `GET /v1/tasks` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TaskRow {
    pub node: String,
    pub node_id: String,
    /// The node's fault domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(flatten)]
    pub status: crate::facts::launched::TaskStatus,
}

async fn tasks(State(s): State<ApiState>) -> axum::Json<Vec<TaskRow>> {
    let facts = s.facts.peek();
    let mut rows = Vec::new();
    // Tasks of a node that is down are gone from DNS and the VIPs, and replaced: not listed.
    for node in facts.up_nodes() {
        let name = node
            .info
            .as_ref()
            .map_or_else(|| node.id.clone(), |i| i.name.clone());
        let info = node.info.as_deref();
        for status in node.launched.values() {
            rows.push(TaskRow {
                node: name.clone(),
                node_id: node.id.clone(),
                region: info.and_then(|i| i.region.clone()),
                zone: info.and_then(|i| i.zone.clone()),
                status: (**status).clone(),
            });
        }
    }
    rows.sort_by(|a, b| {
        (&a.status.app_id, &a.node, &a.status.task_id).cmp(&(
            &b.status.app_id,
            &b.node,
            &b.status.task_id,
        ))
    });
    axum::Json(rows)
}

/// One running task of the Mesos master dcnet reads task state from, as `GET /v1/mesos/tasks`
/// lists it: what the freshest publisher put in gossip.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MesosTaskRow {
    pub framework: String,
    pub task_id: String,
    pub name: String,
    pub agent_id: String,
    /// The Mesos agent's addresses, as the master states them.
    pub agent_ips: Vec<std::net::IpAddr>,
    /// The task's addresses, in IP source order.
    pub ips: Vec<std::net::IpAddr>,
    /// `None` without health checks.
    pub healthy: Option<bool>,
    /// Host ports of its port resources.
    pub ports: Vec<u16>,
}

async fn mesos_tasks(State(s): State<ApiState>) -> axum::Json<Vec<MesosTaskRow>> {
    let facts = s.facts.peek();
    let Some(publisher) = facts.mesos_publisher() else {
        return axum::Json(Vec::new());
    };
    let agents = &publisher.mesos.agents;
    let mut rows: Vec<MesosTaskRow> = crate::facts::cluster::mesos_tasks(&facts)
        // A value that does not decode is listed as malformed by the facts decoder.
        .filter_map(|(_, value)| crate::facts::mesos::decode_task(value).ok())
        .map(|fact| {
            let task = &fact.task;
            MesosTaskRow {
                framework: fact.framework.to_string(),
                task_id: task.id.clone(),
                name: task.name.clone(),
                agent_id: task.agent_id.to_string(),
                agent_ips: agents
                    .get(&*task.agent_id)
                    .map(|a| a.ips.clone())
                    .unwrap_or_default(),
                ips: task.ips.clone(),
                healthy: task.healthy,
                ports: task.ports.clone(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.framework, &a.name, &a.task_id).cmp(&(&b.framework, &b.name, &b.task_id))
    });
    axum::Json(rows)
}

/// Forwards a Marathon (`/v2`) or credential (`/v1/auth`) call to the leading scheduler with
/// the caller's own credential, and its answer back. The scheduler checks the credential
/// again: it trusts no agent to have done so.
async fn forward(
    State(s): State<ApiState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use axum::http::Method;
    // Only what the scheduler's APIs answer; anything else is refused here, not passed on
    // (the client it goes through knows no other methods and would fail with 502).
    const ALLOWED: [Method; 6] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    if !ALLOWED.contains(&method) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD, POST, PUT, PATCH, DELETE")],
            axum::Json(
                serde_json::json!({"message": format!("{method} is not a method of this API")}),
            ),
        )
            .into_response();
    }
    let leader = crate::facts::scheduler::leader(&s.facts.peek()).map(|l| l.api.to_owned());
    // With no leader in sight (this node is cut off), a master still answers reads from what
    // it has, marked stale.
    let leader = leader.or_else(|| {
        (method == axum::http::Method::GET)
            .then(|| s.local_scheduler.clone())
            .flatten()
    });
    let Some(leader) = leader else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"message": "no scheduler is running: start an agent with the master role (its [scheduler] is on by default) and retry"})),
        )
            .into_response();
    };
    if uri.path() == "/v2/events" && method == Method::GET {
        return proxy_events(s.stream_client.clone(), &leader, &uri, &headers).await;
    }
    proxy(
        s.client.clone(),
        &leader,
        method,
        &uri,
        &headers,
        body,
        false,
    )
    .await
}

/// Streams the leader's event bus (`GET /v2/events`) to the caller as it comes, on a
/// blocking thread that ends when the caller goes (at the next event or keep-alive).
async fn proxy_events(
    agent: ureq::Agent,
    base: &str,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
) -> Response {
    use std::io::Read as _;
    let path = uri.path_and_query().map_or("/v2/events", |p| p.as_str());
    let url = format!("{base}{path}");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<Result<u16, String>>();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let response = with_auth(agent.get(&url), &authorization, false)
            .header(header::ACCEPT, "text/event-stream")
            .call();
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let _ = head_tx.send(Err(format!("the scheduler at {url} did not answer: {e}")));
                return;
            }
        };
        let _ = head_tx.send(Ok(response.status().as_u16()));
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match body.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let chunk = axum::body::Bytes::copy_from_slice(&buf[..n]);
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    match head_rx.await {
        Ok(Ok(status)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/event-stream")],
            axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(serde_json::json!({ "message": e })),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Marks a call a standby master passed to its leader, which then answers it itself
/// (never passes it on again): two masters that each think the other leads, for a moment,
/// cannot bounce a call between them.
pub const FORWARDED: &str = "x-dcnet-forwarded";

/// Sends `method uri` with `body` and the caller's `Authorization` to the scheduler at
/// `base` (its URL), and its answer back: status, body, `Retry-After` (a new leader asks
/// clients to wait) and `X-Dcnet-Stale`. A scheduler that does not answer is a 502.
/// `by_master` marks the call [`FORWARDED`].
pub async fn proxy(
    agent: ureq::Agent,
    base: &str,
    method: axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: axum::body::Bytes,
    by_master: bool,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or("/v2", |p| p.as_str())
        .to_owned();
    let url = format!("{base}{path}");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The status, the headers passed on and the body.
    type Forwarded = (u16, Vec<(header::HeaderName, header::HeaderValue)>, Vec<u8>);
    let forwarded = tokio::task::spawn_blocking(move || -> Result<Forwarded, String> {
        let response = match method.as_str() {
            "GET" => with_auth(agent.get(&url), &authorization, by_master).call(),
            "DELETE" => with_auth(agent.delete(&url), &authorization, by_master).call(),
            "POST" => with_auth(agent.post(&url), &authorization, by_master)
                .content_type("application/json")
                .send(&body[..]),
            "PUT" => with_auth(agent.put(&url), &authorization, by_master)
                .content_type("application/json")
                .send(&body[..]),
            "PATCH" => with_auth(agent.patch(&url), &authorization, by_master)
                .content_type("application/json")
                .send(&body[..]),
            other => return Err(format!("method {other} is not part of the API")),
        };
        let mut response =
            response.map_err(|e| format!("the scheduler at {url} did not answer: {e}"))?;
        let status = response.status().as_u16();
        // What a client acts on: wait before retrying, where a new app is; the answer may be
        // behind; fields the scheduler ignored.
        let passed: Vec<(header::HeaderName, header::HeaderValue)> = [
            header::RETRY_AFTER,
            header::LOCATION,
            header::HeaderName::from_static("x-dcnet-stale"),
            header::HeaderName::from_static("x-dcnet-ignored-fields"),
        ]
        .into_iter()
        .filter_map(|name| {
            let value = response.headers().get(&name)?.to_str().ok()?;
            Some((name, header::HeaderValue::from_str(value).ok()?))
        })
        .collect();
        let body = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| format!("reading the scheduler's answer: {e}"))?;
        Ok((status, passed, body))
    })
    .await;
    match forwarded {
        Ok(Ok((status, passed, body))) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            response.headers_mut().extend(passed);
            response
        }
        Ok(Err(e)) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(serde_json::json!({"message": e})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"message": e.to_string()})),
        )
            .into_response(),
    }
}

/// `request` with the caller's `Authorization`, if it sent one.
fn with_auth<B>(
    request: ureq::RequestBuilder<B>,
    authorization: &Option<String>,
    by_master: bool,
) -> ureq::RequestBuilder<B> {
    let request = match authorization {
        Some(value) => request.header(header::AUTHORIZATION, value),
        None => request,
    };
    if by_master {
        request.header(FORWARDED, "1")
    } else {
        request
    }
}

/// The address the API is reachable at, for log lines and the CLI.
pub fn url(listen: SocketAddr) -> String {
    format!("http://{listen}")
}

#[cfg(test)]
mod metrics_tests {
    #[test]
    fn prometheus_text_becomes_marathons_json() {
        let text = "# HELP a_total Sent.\n# TYPE a counter\na_total{peer=\"x\"} 3\n\
                    # TYPE b gauge\nb 2.5\n# TYPE h histogram\nh_count 4\n# EOF\n";
        let v = super::metrics_json(text);
        assert_eq!(v["counters"]["a_total{peer=\"x\"}"]["count"], 3.0);
        assert_eq!(v["gauges"]["b"]["value"], 2.5);
        assert_eq!(v["gauges"]["h_count"]["value"], 4.0);
        assert_eq!(v["version"], "4.0.0");
    }
}

#[cfg(test)]
mod open_routes_tests {
    #[test]
    fn the_dashboards_assets_are_open_and_nothing_else_is_added() {
        for route in crate::dashboard::ROUTES {
            assert!(
                super::OPEN_ROUTES.contains(route),
                "{route} needs a credential"
            );
        }
        assert_eq!(super::OPEN_ROUTES.len(), crate::dashboard::ROUTES.len() + 2);
    }
}
