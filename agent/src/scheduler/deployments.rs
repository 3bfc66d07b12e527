//! Deployments, as Marathon has them: every change of apps is a deployment, listed until
//! what it asked for runs (each app at its new version with its instance count, every task
//! ready; a removed app with no task left). Kept in Raft beside the apps, in the same
//! command as the change, with each app's definition from before it, so `DELETE
//! /v2/deployments/{id}` can roll the change back. A new change to an app supersedes the
//! deployment under way for it (as Marathon's `force=true`; dcnet never locks an app).
//!
//! Pure: what a change's deployment is, whether one is done, and Marathon's shape of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::plan::Tracked;
use crate::app::App;
use crate::facts::launched::{TaskState, TaskStatus};

/// Raft keys: `deployments/<id>`.
pub const PREFIX: &str = "deployments/";

/// What a deployment does to one app (Marathon's action names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    StartApplication,
    ScaleApplication,
    RestartApplication,
    StopApplication,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::StartApplication => "StartApplication",
            Action::ScaleApplication => "ScaleApplication",
            Action::RestartApplication => "RestartApplication",
            Action::StopApplication => "StopApplication",
        }
    }
}

/// One app a deployment changes: how, and its definition before (`None`: it did not exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub action: Action,
    pub before: Option<App>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    /// When the change was made (RFC 3339).
    pub version: String,
    /// By app id.
    pub apps: BTreeMap<String, Step>,
}

/// The deployment of changing `before` into `after`, or `None` when nothing changes.
pub fn of_change(
    id: String,
    version: String,
    before: &BTreeMap<String, App>,
    after: &BTreeMap<String, App>,
) -> Option<Deployment> {
    let mut apps = BTreeMap::new();
    for (app_id, app) in after {
        let action = match before.get(app_id) {
            None => Action::StartApplication,
            Some(old) if old == app => continue,
            Some(old) if old.version != app.version => Action::RestartApplication,
            Some(_) => Action::ScaleApplication,
        };
        apps.insert(
            app_id.clone(),
            Step {
                action,
                before: before.get(app_id).cloned(),
            },
        );
    }
    for (app_id, old) in before {
        if !after.contains_key(app_id) {
            apps.insert(
                app_id.clone(),
                Step {
                    action: Action::StopApplication,
                    before: Some(old.clone()),
                },
            );
        }
    }
    (!apps.is_empty()).then_some(Deployment { id, version, apps })
}

/// Whether what `d` asked of app `id` is done: the app (as it is now, `None` if removed)
/// runs `instances` tasks of its version, all running and not failing a health check, and
/// no task of another version; a removed app has no task left.
pub fn app_done(
    id: &str,
    app: Option<&App>,
    tasks: &BTreeMap<String, Tracked>,
    statuses: &BTreeMap<String, (String, TaskStatus)>,
) -> bool {
    let mut of_app = tasks.values().filter(|t| t.assignment.app.id == id);
    let Some(app) = app else {
        return of_app.next().is_none();
    };
    let mut current = 0;
    for t in of_app {
        if t.assignment.app.version != app.version {
            return false;
        }
        let ready = statuses.get(&t.assignment.task_id).is_some_and(|(_, s)| {
            s.state == TaskState::TaskRunning
                && s.healthy != Some(false)
                && !s.health_pending
                && s.ready != Some(false)
        });
        if !ready {
            return false;
        }
        current += 1;
    }
    current == app.instances as usize
}

/// Whether every app of `d` is done ([`app_done`]).
pub fn done(
    d: &Deployment,
    apps: &BTreeMap<String, App>,
    tasks: &BTreeMap<String, Tracked>,
    statuses: &BTreeMap<String, (String, TaskStatus)>,
) -> bool {
    d.apps
        .keys()
        .all(|id| app_done(id, apps.get(id), tasks, statuses))
}

/// The change that rolls `d` back: each app of it as it was before (an app it started is
/// removed), whatever came since, as Marathon's rollback of a deployment does.
pub fn rollback(d: &Deployment, apps: &BTreeMap<String, App>) -> BTreeMap<String, App> {
    let mut next = apps.clone();
    for (id, step) in &d.apps {
        match &step.before {
            Some(old) => {
                next.insert(id.clone(), old.clone());
            }
            None => {
                next.remove(id);
            }
        }
    }
    next
}

/// The deployment's steps, as Marathon plans them and the scheduler carries them out: the
/// apps it starts, scales or restarts in dependency order (an app comes one step after the
/// last app of the deployment it depends on, in `apps`, the definitions it deploys), then the
/// apps it stops.
pub fn steps<'d>(d: &'d Deployment, apps: &BTreeMap<String, App>) -> Vec<Vec<&'d str>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    // Cycles are refused when a change is made; the bound only keeps a broken record finite.
    for _ in 0..=d.apps.len() {
        let mut changed = false;
        for (id, step) in &d.apps {
            if step.action == Action::StopApplication {
                continue;
            }
            let deps = apps
                .get(id)
                .map(|a| a.dependencies.as_slice())
                .unwrap_or_default();
            let own = deps
                .iter()
                .filter_map(|dep| level.get(dep.as_str()).map(|l| l + 1))
                .max()
                .unwrap_or(0);
            if level.get(id.as_str()) != Some(&own) {
                level.insert(id, own);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut out: Vec<Vec<&str>> = Vec::new();
    for (id, l) in level {
        if out.len() <= l {
            out.resize(l + 1, Vec::new());
        }
        out[l].push(id);
    }
    let stops: Vec<&str> = d
        .apps
        .iter()
        .filter(|(_, s)| s.action == Action::StopApplication)
        .map(|(id, _)| id.as_str())
        .collect();
    if !stops.is_empty() {
        out.push(stops);
    }
    out.retain(|step| !step.is_empty());
    out
}

/// Marathon's deployment object: its steps, and the first not yet done as the current one
/// (`done` says whether what it asked of an app is done).
pub fn to_marathon(
    d: &Deployment,
    apps: &BTreeMap<String, App>,
    done: &dyn Fn(&str) -> bool,
) -> Value {
    let steps = steps(d, apps);
    let action = |id: &str| d.apps.get(id).map_or("", |s| s.action.as_str());
    let plan: Vec<Value> = steps
        .iter()
        .map(|step| {
            let actions: Vec<Value> = step
                .iter()
                .map(|id| json!({"action": action(id), "app": id}))
                .collect();
            json!({ "actions": actions })
        })
        .collect();
    let current = steps
        .iter()
        .position(|step| !step.iter().all(|id| done(id)))
        .unwrap_or(steps.len().saturating_sub(1));
    let current_actions: Vec<Value> = steps
        .get(current)
        .into_iter()
        .flatten()
        .map(|id| json!({"action": action(id), "app": id, "readinessCheckResults": []}))
        .collect();
    json!({
        "id": d.id,
        "version": d.version,
        "affectedApps": d.apps.keys().collect::<Vec<_>>(),
        "affectedPods": [],
        "steps": plan,
        "currentActions": current_actions,
        "currentStep": current + 1,
        "totalSteps": steps.len(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::app::parse;
    use crate::facts::scheduler::Assignment;

    fn app(id: &str, instances: u32, version: &str) -> App {
        parse(
            &json!({"id": id, "cmd": "x", "instances": instances}),
            None,
            version,
        )
        .unwrap()
        .app
    }

    fn task(id: &str, app: &App, state: TaskState) -> (Tracked, (String, TaskStatus)) {
        let tracked = Tracked {
            assignment: Assignment {
                task_id: id.into(),
                node_id: "n".into(),
                app: app.clone(),
                host_ports: vec![],
            },
            created_ms: 0,
            failures: 0,
        };
        let status = TaskStatus {
            app_id: app.id.clone(),
            version: app.version.clone(),
            healthy: None,
            ..crate::facts::launched::tests_support::status(id, state)
        };
        (tracked, ("n".into(), status))
    }

    #[test]
    fn a_change_names_each_apps_action() {
        let web1 = app("/web", 2, "v1");
        let before = BTreeMap::from([
            ("/web".into(), web1.clone()),
            ("/db".into(), app("/db", 1, "v1")),
        ]);
        let mut after = before.clone();
        after.insert(
            "/web".into(),
            App {
                instances: 3,
                ..web1.clone()
            },
        );
        after.remove("/db");
        after.insert("/new".into(), app("/new", 1, "v2"));
        let d = of_change("d1".into(), "t".into(), &before, &after).unwrap();
        let actions: Vec<(&str, Action)> =
            d.apps.iter().map(|(k, s)| (k.as_str(), s.action)).collect();
        assert_eq!(
            actions,
            [
                ("/db", Action::StopApplication),
                ("/new", Action::StartApplication),
                ("/web", Action::ScaleApplication)
            ]
        );
        after.insert("/web".into(), app("/web", 3, "v2"));
        let d = of_change("d2".into(), "t".into(), &before, &after).unwrap();
        assert_eq!(d.apps["/web"].action, Action::RestartApplication);
        assert!(of_change("d3".into(), "t".into(), &before, &before).is_none());
        // Rolled back: every app as before, the new one gone.
        assert_eq!(rollback(&d, &after), before);
        let v = to_marathon(&d, &after, &|_| false);
        assert_eq!(v["affectedApps"], json!(["/db", "/new", "/web"]));
        assert_eq!(
            v["steps"][0]["actions"][1],
            json!({"action": "RestartApplication", "app": "/web"})
        );
        assert_eq!(
            v["steps"][1]["actions"],
            json!([{"action": "StopApplication", "app": "/db"}]),
            "stops come last"
        );
        assert_eq!(
            (v["currentStep"].as_u64(), v["totalSteps"].as_u64()),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn dependencies_order_the_steps() {
        let dep = |id: &str, on: &[&str]| {
            parse(
                &json!({"id": id, "cmd": "x", "dependencies": on}),
                None,
                "v",
            )
            .unwrap()
            .app
        };
        let after = BTreeMap::from([
            ("/db".to_owned(), dep("/db", &[])),
            ("/api".to_owned(), dep("/api", &["/db"])),
            ("/web".to_owned(), dep("/web", &["/api", "/cache"])),
            ("/cache".to_owned(), dep("/cache", &["/elsewhere"])),
        ]);
        let d = of_change("d".into(), "t".into(), &BTreeMap::new(), &after).unwrap();
        assert_eq!(
            steps(&d, &after),
            [vec!["/cache", "/db"], vec!["/api"], vec!["/web"]]
        );
        // The first step done: the second is current.
        let v = to_marathon(&d, &after, &|id| id == "/db" || id == "/cache");
        assert_eq!(v["currentStep"], 2);
        assert_eq!(v["currentActions"][0]["app"], "/api");
        assert_eq!(v["totalSteps"], 3);
    }

    #[test]
    fn done_when_every_task_of_the_new_version_is_ready() {
        let v1 = app("/web", 2, "v1");
        let v2 = app("/web", 2, "v2");
        let apps = BTreeMap::from([("/web".to_owned(), v2.clone())]);
        let d = of_change(
            "d".into(),
            "t".into(),
            &BTreeMap::from([("/web".to_owned(), v1.clone())]),
            &apps,
        )
        .unwrap();
        let mut tasks = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        let mut add = |id: &str, a: &App, s: TaskState| {
            let (t, st) = task(id, a, s);
            tasks.insert(id.to_owned(), t);
            statuses.insert(id.to_owned(), st);
        };
        add("old", &v1, TaskState::TaskRunning);
        add("a", &v2, TaskState::TaskRunning);
        add("b", &v2, TaskState::TaskStaging);
        assert!(
            !done(&d, &apps, &tasks, &statuses),
            "an old task runs, a new one stages"
        );
        tasks.remove("old");
        assert!(!done(&d, &apps, &tasks, &statuses), "one still stages");
        statuses.get_mut("b").unwrap().1.state = TaskState::TaskRunning;
        assert!(done(&d, &apps, &tasks, &statuses));
        statuses.get_mut("b").unwrap().1.healthy = Some(false);
        assert!(
            !done(&d, &apps, &tasks, &statuses),
            "failing its health check"
        );
        // A removed app is done when its last task is gone.
        assert!(!app_done("/web", None, &tasks, &statuses));
        assert!(app_done("/web", None, &BTreeMap::new(), &statuses));
    }
}
