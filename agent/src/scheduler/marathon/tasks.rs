//! Tasks: `GET /v2/tasks` (`?status=`), `GET /v2/apps/{id}/tasks`, and killing them:
//! `DELETE /v2/apps/{id}/tasks[/{taskId}]` (`?host=`, `?scale=`), `POST /v2/tasks/delete`
//! (`{"ids": [...]}`, `?scale=`). A killed task leaves the leader's set and its agent stops
//! it; without `scale` the app gets a new one, with `scale` its instance count goes down.

use std::collections::BTreeSet;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::query::Query;
use super::shape::{self, TaskView};
use super::{
    Answer, Shared, TaskTable, bad_query, deployment, ids, now_version, parse_body, read, refusal,
    require_leader,
};

/// Task states `?status=` selects by, as Marathon names them.
fn status_matches(filter: Option<&str>, view: &TaskView<'_>) -> Result<bool, String> {
    use crate::facts::launched::TaskState as S;
    let state = view.state();
    Ok(match filter {
        None => true,
        Some("running") => state == S::TaskRunning,
        Some("staging") => state == S::TaskStaging,
        Some("killing") => state == S::TaskKilling,
        Some(other) => {
            return Err(format!(
                "status={other:?}: expected running, staging or killing"
            ));
        }
    })
}

/// `GET /v2/tasks`.
pub(super) async fn list(State(s): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let q = Query::parse(q.as_deref());
    let view = s.facts.peek();
    let table = TaskTable::read(&s, &view);
    let mut tasks = Vec::new();
    for v in table.views(None) {
        if status_matches(q.get("status"), &v).map_err(bad_query)? {
            tasks.push(shape::task(&v));
        }
    }
    read(&s, json!({ "tasks": tasks }))
}

/// `GET /v2/apps/{id}/tasks`.
pub(super) fn of_app(s: &Shared, id: &str, q: Query) -> Answer {
    s.app(id)?;
    let view = s.facts.peek();
    let table = TaskTable::read(s, &view);
    let mut tasks = Vec::new();
    for v in table.views(Some(id)) {
        if status_matches(q.get("status"), &v).map_err(bad_query)? {
            tasks.push(shape::task(&v));
        }
    }
    read(s, json!({ "tasks": tasks }))
}

/// Kills the tasks `chosen`; those killed, shown as they were just before (their agents
/// report them stopping shortly after), and the deployment of a scale.
async fn kill(
    s: &Shared,
    chosen: &[TaskView<'_>],
    scale: bool,
) -> Result<(Vec<Value>, Option<String>), super::Refusal> {
    let before: Vec<Value> = chosen.iter().map(shape::task).collect();
    let (killed, deployment) = s.kill_tasks(&ids(chosen), scale).await?;
    let killed: BTreeSet<String> = killed.into_iter().map(|t| t.assignment.task_id).collect();
    let shown = before
        .into_iter()
        .filter(|t| t["id"].as_str().is_some_and(|id| killed.contains(id)))
        .collect();
    Ok((shown, deployment))
}

/// `DELETE /v2/apps/{id}/tasks` (every task, or those on `?host=`) and
/// `DELETE /v2/apps/{id}/tasks/{taskId}`.
pub(super) async fn kill_of_app(s: &Shared, app: &str, task: Option<&str>, q: &Query) -> Answer {
    require_leader(s)?;
    let scale = q.flag("scale").map_err(bad_query)?;
    q.flag("wipe").map_err(bad_query)?;
    s.app(app)?;
    let view = s.facts.peek();
    let table = TaskTable::read(s, &view);
    let views = table.views(Some(app));
    let chosen: Vec<TaskView<'_>> = match (task, q.get("host")) {
        (Some(task), _) => {
            let one: Vec<TaskView<'_>> = views
                .into_iter()
                .filter(|v| v.tracked.assignment.task_id == task)
                .collect();
            if one.is_empty() {
                return Err(refusal(
                    StatusCode::NOT_FOUND,
                    format!(
                        "Task '{task}' does not exist (in app {app}); GET /v2/apps{app}/tasks lists them"
                    ),
                ));
            }
            one
        }
        (None, Some(host)) => views
            .into_iter()
            .filter(|v| v.host() == host || v.tracked.assignment.node_id == host)
            .collect(),
        (None, None) => views,
    };
    let (killed, scaled) = kill(s, &chosen, scale).await?;
    // As Marathon: a kill that scales is a deployment; one that does not, the tasks.
    Ok(match (scale, task) {
        (true, _) => {
            axum::Json(deployment(&now_version(), &scaled.unwrap_or_default())).into_response()
        }
        (false, Some(_)) => {
            axum::Json(json!({ "task": killed.into_iter().next() })).into_response()
        }
        (false, None) => axum::Json(json!({ "tasks": killed })).into_response(),
    })
}

/// `POST /v2/tasks/delete` with `{"ids": [...]}`: tasks of any apps; ids of no task are
/// refused all together, so a typo kills nothing.
pub(super) async fn delete_given(
    State(s): State<Shared>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Answer {
    require_leader(&s)?;
    let q = Query::parse(q.as_deref());
    let scale = q.flag("scale").map_err(bad_query)?;
    q.flag("wipe").map_err(bad_query)?;
    let body = parse_body(&body)?;
    let Some(list) = body["ids"].as_array() else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "expected {\"ids\": [\"<task id>\", ...]}",
        ));
    };
    let wanted: BTreeSet<String> = list
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if wanted.len() != list.len() {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "every item of \"ids\" must be a task id (a string)",
        ));
    }
    let view = s.facts.peek();
    let table = TaskTable::read(&s, &view);
    let chosen: Vec<TaskView<'_>> = table
        .views(None)
        .into_iter()
        .filter(|v| wanted.contains(&v.tracked.assignment.task_id))
        .collect();
    let found = ids(&chosen);
    let unknown: Vec<&String> = wanted.difference(&found).collect();
    if !unknown.is_empty() {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("no task has the id(s) {unknown:?}; GET /v2/tasks lists them"),
        ));
    }
    let (killed, scaled) = kill(&s, &chosen, scale).await?;
    Ok(if scale {
        axum::Json(deployment(&now_version(), &scaled.unwrap_or_default())).into_response()
    } else {
        axum::Json(json!({ "tasks": killed })).into_response()
    })
}
