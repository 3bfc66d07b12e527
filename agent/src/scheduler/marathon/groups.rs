//! `/v2/groups`: Marathon's groups are the folders of app ids (`/prod/web` is in `/prod`).
//! dcnet keeps no group objects: a group is there while an app is under it, and `/` always.
//! `GET` shows the tree; `POST` creates a group's apps (ids relative to it) in one commit;
//! `PUT` changes or creates them, or scales every app under the group (`{"scaleBy": f}`);
//! `DELETE` removes every app under it. A group's versions are those of the apps under it:
//! `GET .../versions` lists them, `GET .../versions/{v}` shows the group as it was at v
//! (each app at its latest version by then), and `PUT` with `{"version": v}` (or `PUT
//! .../versions/{v}`, as marathon-python sends it) puts it back so: apps of then at their
//! definition of then (their instance counts of now), apps added since removed.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use tracing::info;

use super::{Answer, Shared, deployment, now_version, parse_body, read, refusal, require_leader};
use crate::app::{self, App};
use crate::scheduler::replicated;

/// Whether `id` is `group` or under it.
fn under(id: &str, group: &str) -> bool {
    group == "/" || id == group || id.starts_with(&format!("{group}/"))
}

/// The group of app id `id`: its id without the last segment.
fn parent(id: &str) -> &str {
    match id.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &id[..i],
    }
}

/// Group `id` in Marathon's shape: its apps, its subgroups (each a group of the same shape),
/// and its version (the latest of its apps'), or `None` when no app is under it.
pub fn tree(apps: &BTreeMap<String, App>, id: &str) -> Option<Value> {
    let inside: Vec<&App> = apps.values().filter(|a| under(&a.id, id)).collect();
    if inside.is_empty() && id != "/" {
        return None;
    }
    let own: Vec<Value> = inside
        .iter()
        .filter(|a| parent(&a.id) == id)
        .map(|a| a.to_marathon())
        .collect();
    // Direct subgroups: the next segment of every deeper app's id.
    let children: BTreeSet<String> = inside
        .iter()
        .filter(|a| parent(&a.id) != id)
        .filter_map(|a| {
            let rest = a.id.strip_prefix(id)?.trim_start_matches('/');
            let first = rest.split('/').next()?;
            Some(if id == "/" {
                format!("/{first}")
            } else {
                format!("{id}/{first}")
            })
        })
        .collect();
    let groups: Vec<Value> = children.iter().filter_map(|g| tree(apps, g)).collect();
    let version = inside
        .iter()
        .map(|a| super::shape::version(a).to_owned())
        .max()
        .unwrap_or_else(now_version);
    Some(json!({
        "id": id,
        "apps": own,
        "groups": groups,
        "pods": [],
        "dependencies": [],
        "version": version,
    }))
}

/// The apps of a group definition, with ids made absolute (relative ones are under their
/// group), its subgroups' included.
pub fn apps_of(
    group: &Map<String, Value>,
    parent_id: &str,
) -> Result<Vec<super::apps::AppPatch>, String> {
    let id = match group.get("id").and_then(Value::as_str) {
        Some(g) if g.starts_with('/') => app::absolute_id(g),
        Some(g) => join(parent_id, g),
        None => parent_id.to_owned(),
    };
    let mut out = Vec::new();
    for (i, a) in group
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Value::Object(a) = a else {
            return Err(format!("apps[{i}] of group {id} is not an object"));
        };
        let Some(app_id) = a.get("id").and_then(Value::as_str) else {
            return Err(format!("apps[{i}] of group {id} has no \"id\""));
        };
        let absolute = if app_id.starts_with('/') {
            app::absolute_id(app_id)
        } else {
            join(&id, app_id)
        };
        let mut a = a.clone();
        a.insert("id".into(), json!(absolute));
        out.push((absolute, a));
    }
    for g in group
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Value::Object(g) = g else {
            return Err(format!("a subgroup of {id} is not an object"));
        };
        out.extend(apps_of(g, &id)?);
    }
    Ok(out)
}

fn join(group: &str, name: &str) -> String {
    if group == "/" {
        app::absolute_id(name)
    } else {
        app::absolute_id(&format!("{group}/{name}"))
    }
}

/// What a `/v2/groups/{path}` names: a group, its versions, or one of them.
enum Target {
    Group(String),
    Versions(String),
    Version(String, String),
}

fn target(path: &str) -> Target {
    let path = path.trim_matches('/');
    if let Some(group) = path
        .strip_suffix("versions")
        .filter(|g| g.is_empty() || g.ends_with('/'))
    {
        return Target::Versions(group_id(Some(group)));
    }
    match path
        .rsplit_once("/versions/")
        .or_else(|| path.strip_prefix("versions/").map(|v| ("", v)))
    {
        Some((group, version)) if !version.is_empty() && !version.contains('/') => {
            Target::Version(group_id(Some(group)), version.to_owned())
        }
        _ => Target::Group(group_id(Some(path))),
    }
}

/// The apps under `group` as they were at `version`: each at its latest version by then
/// (none if it did not exist yet).
fn apps_at(data: &dcnet_consensus::Data, group: &str, version: &str) -> BTreeMap<String, App> {
    replicated::versions_under(data, group)
        .into_iter()
        .filter_map(|(id, versions)| {
            let then = versions.iter().rfind(|v| v.as_str() <= version)?;
            let app = replicated::version(data, &id, then)?;
            Some((id, app))
        })
        .collect()
}

/// The versions of the apps under `group`, newest first.
fn group_versions(data: &dcnet_consensus::Data, group: &str) -> Vec<String> {
    let all: BTreeSet<String> = replicated::versions_under(data, group)
        .into_values()
        .flatten()
        .collect();
    all.into_iter().rev().collect()
}

fn group_id(path: Option<&str>) -> String {
    match path.map(|p| p.trim_matches('/')) {
        None | Some("") => "/".to_owned(),
        Some(p) => format!("/{p}"),
    }
}

/// `GET /v2/groups` and `GET /v2/groups/{id}`.
pub(super) async fn get_root(State(s): State<Shared>) -> Answer {
    get(&s, "/")
}

pub(super) async fn get_path(State(s): State<Shared>, Path(path): Path<String>) -> Answer {
    match target(&path) {
        Target::Group(id) => get(&s, &id),
        Target::Versions(id) => {
            let versions = group_versions(&s.consensus().data().borrow(), &id);
            if versions.is_empty() {
                return Err(missing(&id));
            }
            read(&s, json!(versions))
        }
        Target::Version(id, version) => {
            let apps = apps_at(&s.consensus().data().borrow(), &id, &version);
            let mut group = tree(&apps, &id)
                .filter(|_| !apps.is_empty())
                .ok_or_else(|| {
                    refusal(
                        StatusCode::NOT_FOUND,
                        format!("Group '{id}' has no version {version}; GET /v2/groups{id}/versions lists them"),
                    )
                })?;
            group["version"] = json!(version);
            read(&s, group)
        }
    }
}

fn missing(id: &str) -> super::Refusal {
    refusal(
        StatusCode::NOT_FOUND,
        format!("Group '{id}' does not exist (no app is under it)"),
    )
}

/// Puts the apps under `id` back as they were at `version`.
async fn roll_back(s: &Shared, id: &str, version: &str) -> Answer {
    let then = apps_at(&s.consensus().data().borrow(), id, version);
    if then.is_empty() {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!(
                "Group '{id}' has no version {version}; GET /v2/groups{id}/versions lists them"
            ),
        ));
    }
    let now = now_version();
    let ((), deployment_id) = s
        .change_apps(|apps| {
            apps.retain(|app_id, _| !under(app_id, id) || then.contains_key(app_id));
            for (app_id, old) in &then {
                let instances = apps.get(app_id).map_or(old.instances, |a| a.instances);
                apps.insert(
                    app_id.clone(),
                    App {
                        instances,
                        scaled_at: None,
                        ..old.clone()
                    },
                );
            }
            Ok(())
        })
        .await?;
    info!(group = %id, %version, "group rolled back");
    Ok(axum::Json(deployment(&now, &deployment_id)).into_response())
}

fn get(s: &Shared, id: &str) -> Answer {
    let group = tree(&s.apps(), id).ok_or_else(|| missing(id))?;
    read(s, group)
}

/// `POST /v2/groups`: a new group's apps, all at once; 409 if the group has apps already.
pub(super) async fn create(State(s): State<Shared>, body: axum::body::Bytes) -> Answer {
    require_leader(&s)?;
    let Value::Object(group) = parse_body(&body)? else {
        return Err(refusal(StatusCode::BAD_REQUEST, "expected a group object"));
    };
    let id = group_id(group.get("id").and_then(Value::as_str));
    if s.apps().keys().any(|a| under(a, &id)) && id != "/" {
        return Err(refusal(
            StatusCode::CONFLICT,
            format!("Group {id} is already created. Use PUT to change this group."),
        ));
    }
    let apps = apps_of(&group, "/").map_err(|e| refusal(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let (answer, _) = super::apps::change(&s, apps).await?;
    info!(group = %id, "group created");
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// `PUT /v2/groups` and `PUT /v2/groups/{id}`: its apps changed or created, or
/// `{"scaleBy": f}`.
pub(super) async fn put_root(State(s): State<Shared>, body: axum::body::Bytes) -> Answer {
    put(&s, "/".to_owned(), body).await
}

pub(super) async fn put_path(
    State(s): State<Shared>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    match target(&path) {
        Target::Group(id) => put(&s, id, body).await,
        Target::Version(id, version) => {
            require_leader(&s)?;
            roll_back(&s, &id, &version).await
        }
        Target::Versions(id) => Err(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("PUT /v2/groups{id}/versions/{{version}} rolls back; the list is read only"),
        )),
    }
}

async fn put(s: &Shared, id: String, body: axum::body::Bytes) -> Answer {
    require_leader(s)?;
    let Value::Object(mut group) = parse_body(&body)? else {
        return Err(refusal(StatusCode::BAD_REQUEST, "expected a group object"));
    };
    if let Some(factor) = group.get("scaleBy") {
        let factor = factor
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .ok_or_else(|| {
                refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "scaleBy: expected a factor of 0 or more, e.g. 2 or 0.5",
                )
            })?;
        let now = now_version();
        let ((), id_of) = s
            .change_apps(|apps| {
                for app in apps.values_mut().filter(|a| under(&a.id, &id)) {
                    let scaled = (f64::from(app.instances) * factor).ceil();
                    app.instances = scaled.min(f64::from(u32::MAX)) as u32;
                    app.scaled_at = Some(now.clone());
                }
                Ok(())
            })
            .await?;
        info!(group = %id, factor, "group scaled");
        return Ok(axum::Json(deployment(&now, &id_of)).into_response());
    }
    if let Some(version) = group.get("version") {
        let version = version.as_str().ok_or_else(|| {
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "version: expected one of GET /v2/groups/{id}/versions",
            )
        })?;
        return roll_back(s, &id, version).await;
    }
    group.insert("id".into(), json!(id));
    let apps = apps_of(&group, "/").map_err(|e| refusal(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let (answer, _) = super::apps::change(s, apps).await?;
    Ok(axum::Json(answer).into_response())
}

/// `DELETE /v2/groups/{id}`: every app under it.
pub(super) async fn delete_path(State(s): State<Shared>, Path(path): Path<String>) -> Answer {
    require_leader(&s)?;
    let id = group_id(Some(&path));
    let ((), deployment_id) = s
        .change_apps(|apps| {
            let before = apps.len();
            apps.retain(|a, _| !under(a, &id));
            if apps.len() == before {
                return Err(refusal(
                    StatusCode::NOT_FOUND,
                    format!("Group '{id}' does not exist (no app is under it)"),
                ));
            }
            Ok(())
        })
        .await?;
    info!(group = %id, "group removed");
    Ok(axum::Json(deployment(&now_version(), &deployment_id)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(ids: &[&str]) -> BTreeMap<String, App> {
        ids.iter()
            .map(|id| {
                let a = app::parse(&json!({"id": id, "cmd": "x"}), None, "v")
                    .unwrap()
                    .app;
                (a.id.clone(), a)
            })
            .collect()
    }

    #[test]
    fn groups_are_the_folders_of_app_ids() {
        let apps = apps(&["/web", "/prod/db", "/prod/api/v1", "/production"]);
        let root = tree(&apps, "/").unwrap();
        let ids = |v: &Value, key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&root, "apps"), ["/production", "/web"]);
        assert_eq!(ids(&root, "groups"), ["/prod"]);
        let prod = tree(&apps, "/prod").unwrap();
        assert_eq!(
            ids(&prod, "apps"),
            ["/prod/db"],
            "/production is not in /prod"
        );
        assert_eq!(ids(&prod, "groups"), ["/prod/api"]);
        assert!(tree(&apps, "/nothing").is_none());
        assert!(tree(&BTreeMap::new(), "/").is_some(), "the root always is");
    }

    #[test]
    fn group_paths_name_the_group_its_versions_or_one_version() {
        assert!(matches!(target("prod/web"), Target::Group(g) if g == "/prod/web"));
        assert!(matches!(target("prod/versions"), Target::Versions(g) if g == "/prod"));
        assert!(matches!(target("versions"), Target::Versions(g) if g == "/"));
        assert!(matches!(target("prod/versions/2026-12-01T10:00:00.000Z"),
                         Target::Version(g, v) if g == "/prod" && v == "2026-12-01T10:00:00.000Z"));
        assert!(matches!(target("myversions"), Target::Group(g) if g == "/myversions"));
    }

    #[test]
    fn a_group_at_a_version_has_each_app_as_it_was_then() {
        let mut data = dcnet_consensus::Data::default();
        let at = |id: &str, version: &str, cmd: &str| {
            let mut a = app::parse(&json!({"id": id, "cmd": cmd}), None, version)
                .unwrap()
                .app;
            a.version = version.to_owned();
            a
        };
        for a in [
            at("/prod/db", "v1", "db1"),
            at("/prod/db", "v3", "db3"),
            at("/prod/web", "v2", "web2"),
            at("/other", "v1", "o"),
        ] {
            data.entries.insert(
                replicated::version_key(&a.id, &a.version),
                serde_json::to_value(&a).unwrap(),
            );
        }
        assert_eq!(group_versions(&data, "/prod"), ["v3", "v2", "v1"]);
        let then = apps_at(&data, "/prod", "v2");
        assert_eq!(then.keys().collect::<Vec<_>>(), ["/prod/db", "/prod/web"]);
        assert_eq!(then["/prod/db"].command, app::Command::Shell("db1".into()));
        let first = apps_at(&data, "/prod", "v1");
        assert_eq!(
            first.keys().collect::<Vec<_>>(),
            ["/prod/db"],
            "/prod/web came later"
        );
        assert_eq!(apps_at(&data, "/", "v1").len(), 2);
    }

    #[test]
    fn group_definitions_make_absolute_app_ids() {
        let g = json!({"id": "/prod", "apps": [{"id": "db", "cmd": "x"}, {"id": "/abs", "cmd": "x"}],
                       "groups": [{"id": "api", "apps": [{"id": "v1", "cmd": "x"}]}]});
        let ids: Vec<String> = apps_of(g.as_object().unwrap(), "/")
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["/prod/db", "/abs", "/prod/api/v1"]);
        let bad = json!({"id": "/x", "apps": [{"cmd": "x"}]});
        assert!(
            apps_of(bad.as_object().unwrap(), "/")
                .unwrap_err()
                .contains("no \"id\"")
        );
    }
}
