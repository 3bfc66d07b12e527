//! `/v2/apps` and `/v2/queue`: apps listed (filters, embeds), created, changed (`PUT` or
//! `PATCH`, one app or many; `{"version": v}` rolls back), restarted and removed; their
//! versions; and the apps waiting to launch tasks.
//!
//! App ids hold slashes, so `/v2/apps/{*path}` is split here: a path that ends in
//! `/versions[/{v}]`, `/tasks[/{taskId}]` or `/restart` is that sub-resource of the app before
//! it, unless an app has the whole path as its id.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use tracing::info;

use super::query::Query;
use super::shape::{self, AppStatus, Counts};
use super::{
    Answer, Shared, TaskTable, bad_query, deployment, not_found, now_version, parse_body, read,
    refusal, require_leader, validate,
};
use crate::app::{self, App};
use crate::scheduler::replicated;

/// The app in Marathon's shape with its status; its tasks and last failure when `embed`ded.
fn app_json(table: &TaskTable, app: &App, tasks: bool, failure: bool) -> Value {
    let views = table.views(Some(&app.id));
    shape::app(
        app,
        AppStatus {
            counts: Counts::of(&views),
            deployments: table
                .deployments
                .get(&app.id)
                .map_or(&[][..], Vec::as_slice),
            tasks: tasks.then(|| views.iter().map(shape::task).collect()),
            last_task_failure: if failure {
                table.last_failure(&app.id)
            } else {
                None
            },
        },
    )
}

/// `GET /v2/apps?id=&cmd=&label=&embed=`: counts and deployments always, as Marathon.
pub(super) async fn list(State(s): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let q = Query::parse(q.as_deref());
    let filter = q.app_filter().map_err(bad_query)?;
    let embeds = q.embeds();
    let failure = embeds.contains("lastTaskFailure") || embeds.contains("failures");
    let view = s.facts.peek();
    let table = TaskTable::read(&s, &view);
    let list: Vec<Value> = s
        .apps()
        .values()
        .filter(|a| filter.matches(a))
        .map(|a| app_json(&table, a, embeds.contains("tasks"), failure))
        .collect();
    read(&s, json!({ "apps": list }))
}

/// `POST /v2/apps`: 201 with the app, its `Location`, and the deployment that starts it.
/// Fields dcnet accepts but has no use for are named in `X-Dcnet-Ignored-Fields` (the body
/// is Marathon's app, which strict clients parse key by key).
pub(super) async fn create(State(s): State<Shared>, body: axum::body::Bytes) -> Answer {
    require_leader(&s)?;
    let overlays = crate::facts::overlay::networks(&s.facts.peek());
    let parsed = validate(&parse_body(&body)?, None, Some(&overlays))?;
    let id = parsed.app.id.clone();
    let ((), deployment_id) = s.change_apps(|apps| {
        if apps.contains_key(&id) {
            return Err(refusal(
                StatusCode::CONFLICT,
                format!(
                    "An app with id [{id}] already exists; change it with PUT /v2/apps{id} or `dcnet app remove {id}` first"
                ),
            ));
        }
        apps.insert(id.clone(), parsed.app.clone());
        Ok(())
    })
    .await?;
    info!(app = %id, ignored = ?parsed.ignored, "app created");
    let body = shape::app(
        &parsed.app,
        AppStatus {
            counts: Counts::default(),
            deployments: std::slice::from_ref(&deployment_id),
            tasks: None,
            last_task_failure: None,
        },
    );
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v2/apps{id}")) {
        headers.insert(header::LOCATION, location);
    }
    if !parsed.ignored.is_empty()
        && let Ok(names) = HeaderValue::from_str(&parsed.ignored.join(", "))
    {
        headers.insert("x-dcnet-ignored-fields", names);
    }
    Ok(response)
}

/// What a path under `/v2/apps/` names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    App(String),
    Versions(String),
    Version(String, String),
    Tasks(String),
    Task(String, String),
    Restart(String),
}

/// Splits `path` (without `/v2/apps`) into the app and what of it. `exists` says whether an
/// app has a given id: an app named `/x/tasks` is itself, not the tasks of `/x`.
fn target(path: &str, exists: impl Fn(&str) -> bool) -> Target {
    let id = app::absolute_id(path.trim_end_matches('/'));
    if exists(&id) {
        return Target::App(id);
    }
    let (head, last) = id.rsplit_once('/').unwrap_or(("", &id));
    let (grand, middle) = head.rsplit_once('/').unwrap_or(("", head));
    let grand = if grand.is_empty() { "/" } else { grand };
    match (middle, last) {
        (_, "versions") if !head.is_empty() => Target::Versions(head.to_owned()),
        (_, "tasks") if !head.is_empty() => Target::Tasks(head.to_owned()),
        (_, "restart") if !head.is_empty() => Target::Restart(head.to_owned()),
        ("versions", v) if exists(grand) => Target::Version(grand.to_owned(), v.to_owned()),
        ("tasks", t) if exists(grand) => Target::Task(grand.to_owned(), t.to_owned()),
        _ => Target::App(id),
    }
}

fn target_of(s: &Shared, path: &str) -> Target {
    let apps = s.apps();
    target(path, |id| apps.contains_key(id))
}

/// `GET /v2/apps/{id}` (tasks, counts, deployments and the last failure embedded, as
/// Marathon), `.../versions`, `.../versions/{v}`, `.../tasks`.
pub(super) async fn get_path(
    State(s): State<Shared>,
    Path(path): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    match target_of(&s, &path) {
        Target::App(id) => {
            let app = s.app(&id)?;
            let view = s.facts.peek();
            let table = TaskTable::read(&s, &view);
            read(&s, json!({ "app": app_json(&table, &app, true, true) }))
        }
        Target::Versions(id) => {
            s.app(&id)?;
            let versions = replicated::versions(&s.consensus().data().borrow(), &id);
            read(&s, json!({ "versions": versions }))
        }
        Target::Version(id, version) => {
            let app = replicated::version(&s.consensus().data().borrow(), &id, &version)
                .ok_or_else(|| {
                    refusal(
                        StatusCode::NOT_FOUND,
                        format!(
                            "App '{id}' has no version {version}; GET /v2/apps{id}/versions lists them"
                        ),
                    )
                })?;
            read(&s, app.to_marathon())
        }
        Target::Tasks(id) => super::tasks::of_app(&s, &id, Query::parse(q.as_deref())),
        Target::Task(id, _) | Target::Restart(id) => Err(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("GET is not a method of this resource of app {id}"),
        )),
    }
}

/// `PUT`/`PATCH /v2/apps/{id}`: a change of the app (created if missing), or a rollback
/// when the body is `{"version": v}`.
pub(super) async fn put_path(
    State(s): State<Shared>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    require_leader(&s)?;
    let Target::App(id) = target_of(&s, &path) else {
        return Err(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("PUT is only a method of /v2/apps/{{app id}}, not of /v2/apps/{path}"),
        ));
    };
    let Value::Object(patch) = parse_body(&body)? else {
        return Err(refusal(StatusCode::BAD_REQUEST, "expected a JSON object"));
    };
    let (answer, existed) = change(&s, vec![(id, patch)]).await?;
    let status = if existed[0] {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(answer)).into_response())
}

/// `PUT /v2/apps` with a list of apps: each changed (or created) as by its own `PUT`, all
/// in one commit.
pub(super) async fn put_many(State(s): State<Shared>, body: axum::body::Bytes) -> Answer {
    require_leader(&s)?;
    let Value::Array(list) = parse_body(&body)? else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "expected a JSON list of apps, each with its \"id\"",
        ));
    };
    let mut changes = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        let Value::Object(patch) = item else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                format!("item {i}: expected a JSON object (an app)"),
            ));
        };
        let Some(id) = patch.get("id").and_then(Value::as_str) else {
            return Err(refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("item {i}: an app in a list must have its \"id\""),
            ));
        };
        changes.push((app::absolute_id(id), patch));
    }
    let (answer, _) = change(&s, changes).await?;
    Ok(axum::Json(answer).into_response())
}

/// A change of one app: its id and the fields to lay over it (all of them for a new app).
pub(super) type AppPatch = (String, Map<String, Value>);

/// Lays each patch over its app as it is when the change is committed (not as first read),
/// all or nothing. Returns the deployment (the latest version among the apps, its id), and
/// whether each app existed.
pub(super) async fn change(
    s: &Shared,
    patches: Vec<AppPatch>,
) -> Result<(Value, Vec<bool>), super::Refusal> {
    // A change of network is checked against the agents' overlays; a scale is not (an app
    // whose overlay went away can still be scaled down).
    let overlays = crate::facts::overlay::networks(&s.facts.peek());
    let data = s.consensus().data().borrow().clone();
    let now = now_version();
    let ((apps, existed), deployment_id) = s
        .change_apps(|apps| {
            let mut changed = Vec::new();
            let mut existed = Vec::new();
            for (id, patch) in &patches {
                let current = apps.get(id);
                let app = match rollback_to(patch) {
                    Some(version) => {
                        let old = replicated::version(&data, id, version).ok_or_else(|| {
                            refusal(
                                StatusCode::NOT_FOUND,
                                format!(
                                    "App '{id}' has no version {version} to roll back to; GET /v2/apps{id}/versions lists them"
                                ),
                            )
                        })?;
                        // The definition of then, its instance count of now.
                        App {
                            instances: current.map_or(old.instances, |c| c.instances),
                            scaled_at: None,
                            ..old
                        }
                    }
                    None => {
                        let mut merged = current.map_or_else(|| json!({}), App::to_marathon);
                        for (k, v) in patch {
                            merged[k] = v.clone();
                        }
                        let check = (current.is_none() || patch.contains_key("networks"))
                            .then_some(&overlays);
                        let mut app = super::validate_at(&merged, Some(id), check, &now)?.app;
                        if let Some(old) = current
                            && !old.runs_differently(&app)
                        {
                            app.version = old.version.clone();
                            app.scaled_at = if old.instances != app.instances {
                                Some(now.clone())
                            } else {
                                old.scaled_at.clone()
                            };
                        }
                        app
                    }
                };
                existed.push(current.is_some());
                apps.insert(id.clone(), app.clone());
                changed.push(app);
            }
            Ok((changed, existed))
        })
        .await?;
    for app in &apps {
        info!(app = %app.id, instances = app.instances, version = %app.version, "app changed");
    }
    let version = apps
        .iter()
        .map(|a| shape::version(a).to_owned())
        .max()
        .unwrap_or(now);
    Ok((deployment(&version, &deployment_id), existed))
}

/// The version a patch rolls back to: `{"version": v}`, with at most the app's `id` beside.
fn rollback_to(patch: &Map<String, Value>) -> Option<&str> {
    let version = patch.get("version")?.as_str()?;
    patch
        .keys()
        .all(|k| k == "version" || k == "id" || app::STATUS.contains(&k.as_str()))
        .then_some(version)
}

/// `POST /v2/apps/{id}/restart`: every task replaced by a new one, as the app's upgrade
/// strategy allows (a new version of the same definition).
pub(super) async fn post_path(State(s): State<Shared>, Path(path): Path<String>) -> Answer {
    require_leader(&s)?;
    let Target::Restart(id) = target_of(&s, &path) else {
        return Err(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST under /v2/apps/ is only /v2/apps/{app id}/restart; create apps with POST /v2/apps",
        ));
    };
    let now = now_version();
    let ((), deployment_id) = s
        .change_apps(|apps| {
            let app = apps.get_mut(&id).ok_or_else(|| not_found(&id))?;
            app.version = now.clone();
            app.scaled_at = None;
            Ok(())
        })
        .await?;
    info!(app = %id, version = %now, "app restarted");
    Ok(axum::Json(deployment(&now, &deployment_id)).into_response())
}

/// `DELETE /v2/apps/{id}`, `.../tasks?host=&scale=`, `.../tasks/{taskId}?scale=`.
pub(super) async fn delete_path(
    State(s): State<Shared>,
    Path(path): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let q = Query::parse(q.as_deref());
    match target_of(&s, &path) {
        Target::App(id) => {
            require_leader(&s)?;
            let ((), deployment_id) = s
                .change_apps(|apps| apps.remove(&id).map(drop).ok_or_else(|| not_found(&id)))
                .await?;
            info!(app = %id, "app removed");
            Ok(axum::Json(deployment(&now_version(), &deployment_id)).into_response())
        }
        Target::Tasks(id) => super::tasks::kill_of_app(&s, &id, None, &q).await,
        Target::Task(id, task) => super::tasks::kill_of_app(&s, &id, Some(&task), &q).await,
        Target::Versions(id) | Target::Version(id, _) | Target::Restart(id) => Err(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("DELETE is not a method of this resource of app {id}"),
        )),
    }
}

/// `GET /v2/queue`: apps with tasks left to launch, and why they wait (placement, backoff,
/// rate limit, upgrade strategy).
pub(super) async fn queue(State(s): State<Shared>) -> Answer {
    let view = s.facts.peek();
    let table = TaskTable::read(&s, &view);
    let (waiting, backoff) = {
        let sched = s.sched.lock().unwrap_or_else(|p| p.into_inner());
        (sched.waiting.clone(), sched.backoff.clone())
    };
    let now = crate::unix_ms();
    let mut items = Vec::new();
    for app in s.apps().values() {
        let current = table
            .views(Some(&app.id))
            .iter()
            .filter(|v| v.tracked.assignment.app.version == app.version)
            .count();
        let missing = (app.instances as usize).saturating_sub(current);
        let why = waiting.get(&app.id);
        if missing == 0 && why.is_none() {
            continue;
        }
        let delay = backoff
            .get(&app.id)
            .and_then(|slots| slots.first())
            .map_or(0, |b| b.not_before_ms.saturating_sub(now));
        // When the app began to wait is not kept: `since` is the time of this answer.
        items.push(shape::queue_item(
            app_json(&table, app, false, false),
            missing,
            delay,
            now,
            why.map(String::as_str),
        ));
    }
    read(&s, json!({ "queue": items }))
}

/// `DELETE /v2/queue/{id}/delay`: the app's restart backoff is cleared, so its waiting
/// slots launch at the next round (their failure counts stay: a task that fails again backs
/// off as long as before).
pub(super) async fn reset_delay(State(s): State<Shared>, Path(path): Path<String>) -> Answer {
    require_leader(&s)?;
    let Some(id) = path.strip_suffix("/delay").map(app::absolute_id) else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "expected DELETE /v2/queue/{app id}/delay",
        ));
    };
    s.app(&id)?;
    let now = crate::unix_ms();
    {
        let mut sched = s.sched.lock().unwrap_or_else(|p| p.into_inner());
        for slot in sched.backoff.get_mut(&id).into_iter().flatten() {
            slot.not_before_ms = slot.not_before_ms.min(now);
        }
    }
    s.poke.notify_one();
    info!(app = %id, "restart backoff reset");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_an_app_or_what_of_it() {
        let apps = ["/web", "/prod/db", "/odd/tasks"];
        let t = |p: &str| target(p, |id| apps.contains(&id));
        assert_eq!(t("web"), Target::App("/web".into()));
        assert_eq!(t("prod/db/"), Target::App("/prod/db".into()));
        assert_eq!(t("web/versions"), Target::Versions("/web".into()));
        assert_eq!(
            t("prod/db/versions/2026-01-01T00:00:00.000Z"),
            Target::Version("/prod/db".into(), "2026-01-01T00:00:00.000Z".into())
        );
        assert_eq!(t("prod/db/tasks"), Target::Tasks("/prod/db".into()));
        assert_eq!(
            t("web/tasks/web.123"),
            Target::Task("/web".into(), "web.123".into())
        );
        assert_eq!(t("web/restart"), Target::Restart("/web".into()));
        assert_eq!(
            t("odd/tasks"),
            Target::App("/odd/tasks".into()),
            "an app's own id"
        );
        assert_eq!(
            t("new"),
            Target::App("/new".into()),
            "one that does not exist yet"
        );
    }

    #[test]
    fn only_a_lone_version_rolls_back() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(rollback_to(&m(json!({"version": "v1"}))), Some("v1"));
        assert_eq!(
            rollback_to(&m(
                json!({"version": "v1", "id": "/web", "tasksRunning": 2})
            )),
            Some("v1")
        );
        assert_eq!(rollback_to(&m(json!({"version": "v1", "cmd": "x"}))), None);
        assert_eq!(rollback_to(&m(json!({"instances": 2}))), None);
    }
}
