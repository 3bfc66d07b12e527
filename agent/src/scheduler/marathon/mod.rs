//! Marathon's `/v2` REST API, as its clients know it (Marathon 1.x's REST reference): the
//! shapes in [`shape`], the query parameters in [`query`], the calls on apps in `apps`,
//! on tasks in `tasks`, on groups in `groups`, on deployments in `deployments`, the
//! event bus in `events` and its HTTP callback subscribers in `subscriptions`, on the
//! scheduler itself (`/ping`, `/v2/info`, `/v2/leader`) in
//! `server`. Reads are answered by any master from what it applied; changes go to the
//! Raft leader (the scheduler's `forward_changes`).

mod apps;
mod deployments;
mod events;
mod groups;
pub mod query;
mod server;
pub mod shape;
pub(super) mod subscriptions;
mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::plan::{self, World};
use super::service::{Inner, world_parts};
use crate::app;
use crate::facts::Facts;
use crate::facts::launched::TaskStatus;
use crate::facts::node::NodeInfo;
use crate::facts::scheduler as facts;
use shape::TaskView;

type Shared = Arc<Inner>;
type Answer = Result<Response, Refusal>;

/// The `/v2` routes and `/ping`.
pub(super) fn routes(inner: Shared) -> Router {
    Router::new()
        .route("/ping", get(server::ping))
        .route("/v2/info", get(server::info))
        .route("/v2/leader", get(server::leader).delete(server::abdicate))
        .route(
            "/v2/apps",
            get(apps::list).post(apps::create).put(apps::put_many),
        )
        // App ids have slashes: the rest of the path is parsed by hand (`/versions`,
        // `/tasks`, `/restart` at its end).
        .route(
            "/v2/apps/{*path}",
            get(apps::get_path)
                .put(apps::put_path)
                .patch(apps::put_path)
                .post(apps::post_path)
                .delete(apps::delete_path),
        )
        .route("/v2/tasks", get(tasks::list))
        .route("/v2/tasks/delete", post(tasks::delete_given))
        .route("/v2/queue", get(apps::queue))
        .route(
            "/v2/queue/{*path}",
            axum::routing::delete(apps::reset_delay),
        )
        .route("/v2/events", get(events::stream))
        .route(
            "/v2/eventSubscriptions",
            get(subscriptions::list)
                .post(subscriptions::subscribe)
                .delete(subscriptions::unsubscribe),
        )
        .route(
            "/v2/groups",
            get(groups::get_root)
                .post(groups::create)
                .put(groups::put_root),
        )
        .route(
            "/v2/groups/{*path}",
            get(groups::get_path)
                .put(groups::put_path)
                .delete(groups::delete_path),
        )
        .route("/v2/deployments", get(deployments::list))
        .route(
            "/v2/deployments/{id}",
            axum::routing::delete(deployments::delete),
        )
        .with_state(inner)
}

/// An error answer: a status, Marathon's `{"message": ...}` body, and `Retry-After` when
/// waiting helps.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) body: Value,
    pub(super) retry_after: Option<&'static str>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(seconds),
            );
        }
        response
    }
}

pub(super) fn refusal(status: StatusCode, text: impl Into<String>) -> Refusal {
    Refusal {
        status,
        body: json!({"message": text.into()}),
        retry_after: None,
    }
}

/// How long a client should wait before retrying while a new leader adopts tasks.
pub(super) const ADOPTING_RETRY_AFTER_S: &str = "2";

pub(super) fn not_found(id: &str) -> Refusal {
    refusal(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"))
}

/// Validates an app definition; Marathon's 422 with every problem if it is not valid. The
/// app's `user` must exist here: the nodes of a cluster share their users, and a task of a
/// user no node has could only fail. So must its overlay network among `overlays` (the ones
/// the agents have), when given.
fn validate(
    value: &Value,
    path_id: Option<&str>,
    overlays: Option<&BTreeSet<String>>,
) -> Result<app::Parsed, Refusal> {
    validate_at(value, path_id, overlays, &now_version())
}

/// [`validate`], stamping the app with `version`.
fn validate_at(
    value: &Value,
    path_id: Option<&str>,
    overlays: Option<&BTreeSet<String>>,
    version: &str,
) -> Result<app::Parsed, Refusal> {
    let unprocessable = |invalid: app::Invalid| Refusal {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: invalid.to_json(),
        retry_after: None,
    };
    let parsed = app::parse(value, path_id, version).map_err(unprocessable)?;
    if let (app::Network::Container(name), Some(overlays)) = (&parsed.app.network, overlays)
        && !overlays.contains(name)
    {
        let known = if overlays.is_empty() {
            "no agent has an overlay network (set `[overlay] enabled = true` on the agents)"
                .to_owned()
        } else {
            format!(
                "the agents' overlays are: {}",
                overlays.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        return Err(unprocessable(app::Invalid {
            details: vec![(
                "/networks/0/name".into(),
                format!("no agent has an overlay network named {name:?}: {known}"),
            )],
        }));
    }
    // A container's user may be known in its image only (the agent resolves it there first).
    if let Some(user) = &parsed.app.user
        && parsed.app.image.is_none()
        && nix::unistd::User::from_name(user).ok().flatten().is_none()
    {
        return Err(unprocessable(app::Invalid {
            details: vec![(
                "/user".into(),
                format!(
                    "there is no user {user:?} on the scheduler's node; create it on every node, or leave `user` out to run as the agents' default user"
                ),
            )],
        }));
    }
    Ok(parsed)
}

/// Refuses when this scheduler does not lead (the agents' API forwards to the one that does).
/// Refuses unless this scheduler leads by Raft. Enough for every call: Raft has the apps,
/// and a leader still adopting the running tasks shows the ones it is about to adopt.
pub(super) fn require_leader(s: &Inner) -> Result<(), Refusal> {
    if s.is_leader() {
        return Ok(());
    }
    let leader = facts::leader(&s.facts.peek()).map(|l| l.api.to_owned());
    Err(refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        match leader {
            Some(url) => format!("this scheduler is not the leader; the leader is at {url}"),
            None => "no scheduler leads at the moment".to_owned(),
        },
    ))
}

/// A read: served by any master from what it has applied, marked `X-Dcnet-Stale: true`
/// unless this master leads with a quorum's recent acknowledgement (a follower, or a leader
/// cut off on the minority side of a partition, may be behind).
pub(super) fn read(s: &Inner, body: Value) -> Answer {
    let mut response = axum::Json(body).into_response();
    if !s.consensus().leads_recently(Duration::from_secs(1)) {
        response.headers_mut().insert(
            axum::http::HeaderName::from_static("x-dcnet-stale"),
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// A change's answer: its version and deployment, as Marathon's `PUT`, `DELETE` and restart
/// answer.
fn deployment(version: &str, id: &str) -> Value {
    json!({"version": version, "deploymentId": id})
}

pub(super) fn now_version() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn parse_body(body: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            format!("Invalid JSON: {e}; send an app definition such as {{\"id\": \"/web\", \"cmd\": \"...\"}}"),
        )
    })
}

/// A query parameter that is not what the call expects.
fn bad_query(e: String) -> Refusal {
    refusal(StatusCode::BAD_REQUEST, e)
}

/// The tasks as the API shows them, read once per call: the leader's set (or, while a new
/// leader adopts, the tasks it is about to adopt), the agents' reports, and the agents.
struct TaskTable {
    tracked: BTreeMap<String, plan::Tracked>,
    statuses: BTreeMap<String, (String, TaskStatus)>,
    agents: BTreeMap<String, NodeInfo>,
    /// Per app, the deployments under way that change it.
    deployments: BTreeMap<String, Vec<String>>,
}

impl TaskTable {
    fn read(s: &Inner, view: &Facts) -> Self {
        let data = s.consensus().data().borrow().clone();
        let parts = world_parts(view, &data);
        let mut deployments: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in super::replicated::deployments(&data).into_values() {
            for app in d.apps.into_keys() {
                deployments.entry(app).or_default().push(d.id.clone());
            }
        }
        let agents = view
            .nodes
            .values()
            .filter_map(|n| Some((n.id.clone(), n.info.as_deref()?.clone())))
            .collect();
        let tracked = if *s.ready.lock().unwrap_or_else(|p| p.into_inner()) {
            s.sched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .tasks
                .clone()
        } else {
            let apps = s.apps();
            let world = World {
                apps: &apps,
                agents: parts.agents,
                up: parts.up,
                statuses: parts.statuses.clone(),
                now_ms: crate::unix_ms(),
                home_region: s.region.clone(),
                deploying: Default::default(),
                down_since: Default::default(),
            };
            plan::adopt(&apps, &world)
        };
        Self {
            tracked,
            statuses: parts.statuses,
            agents,
            deployments,
        }
    }

    /// The tasks of `app` (all without one), by task id.
    fn views(&self, app: Option<&str>) -> Vec<TaskView<'_>> {
        self.tracked
            .values()
            .filter(|t| app.is_none_or(|a| t.assignment.app.id == a))
            .map(|t| TaskView {
                tracked: t,
                status: self
                    .statuses
                    .get(&t.assignment.task_id)
                    .filter(|(node, _)| *node == t.assignment.node_id)
                    .map(|(_, s)| s),
                agent: self.agents.get(&t.assignment.node_id),
            })
            .collect()
    }

    /// The app's last task that failed (the latest to start among those its agents still
    /// report), in Marathon's `lastTaskFailure` shape.
    fn last_failure(&self, app: &str) -> Option<Value> {
        self.statuses
            .values()
            .filter(|(_, s)| {
                s.app_id == app && s.state == crate::facts::launched::TaskState::TaskFailed
            })
            .max_by_key(|(_, s)| s.started_ms.unwrap_or(s.staged_ms))
            .map(|(node, s)| shape::task_failure(s, node, self.agents.get(node)))
    }
}

/// Ids of the tasks in `views`.
fn ids(views: &[TaskView<'_>]) -> BTreeSet<String> {
    views
        .iter()
        .map(|v| v.tracked.assignment.task_id.clone())
        .collect()
}

/// Marathon's leader answer: `host:port`, without the scheme.
fn leader_address(view: &Facts) -> Option<String> {
    let leader = facts::leader(view)?;
    Some(
        leader
            .api
            .split_once("://")
            .map_or(leader.api, |(_, rest)| rest)
            .to_owned(),
    )
}
