//! `/v2/deployments`: the changes under way ([`crate::scheduler::deployments`]); `DELETE`
//! rolls one back (a new deployment that puts its apps back as they were), or with
//! `?force=true` only forgets it, leaving the apps as they are.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use tracing::info;

use super::query::Query;
use super::{Answer, Shared, bad_query, deployment, now_version, read, refusal, require_leader};
use crate::scheduler::deployments as model;
use crate::scheduler::replicated;
use crate::scheduler::service::world_parts;

/// `GET /v2/deployments`.
pub(super) async fn list(State(s): State<Shared>) -> Answer {
    let data = s.consensus().data().borrow().clone();
    let apps = replicated::apps(&data);
    let tasks = replicated::tasks(&data).map(|(t, _)| t).unwrap_or_default();
    let statuses = world_parts(&s.facts.peek(), &data).statuses;
    let done = |id: &str| model::app_done(id, apps.get(id), &tasks, &statuses);
    let list: Vec<_> = replicated::deployments(&data)
        .values()
        .map(|d| model::to_marathon(d, &apps, &done))
        .collect();
    read(&s, json!(list))
}

/// `DELETE /v2/deployments/{id}` (`?force=true`).
pub(super) async fn delete(
    State(s): State<Shared>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    require_leader(&s)?;
    let force = Query::parse(q.as_deref())
        .flag("force")
        .map_err(bad_query)?;
    let key = format!("{}{id}", model::PREFIX);
    let data = s.consensus().data().borrow().clone();
    let Some(d) = replicated::deployments(&data).remove(&key) else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!(
                "DeploymentPlan {id} does not exist (it may have finished); GET /v2/deployments lists those under way"
            ),
        ));
    };
    if force {
        let mut command = dcnet_consensus::Command::default();
        command
            .expect
            .insert(key.clone(), data.entries.get(&key).cloned());
        command.set.insert(key, None);
        s.consensus().write(command).await.map_err(|e| {
            let (status, message) = crate::scheduler::service::consensus_failure(e);
            refusal(status, message)
        })?;
        info!(deployment = %id, "deployment forgotten; its apps stay as they are");
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    // Rolled back from the apps as they are when the rollback commits; the rollback is a
    // deployment of its own, which supersedes this one.
    let ((), rollback) = s
        .change_apps(|apps| {
            *apps = model::rollback(&d, apps);
            Ok(())
        })
        .await?;
    info!(deployment = %id, %rollback, "deployment rolled back");
    Ok(axum::Json(deployment(&now_version(), &rollback)).into_response())
}
