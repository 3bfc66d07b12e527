//! Marathon's event bus (`GET /v2/events`, server-sent events): what happened to apps,
//! deployments and tasks, as Marathon names and shapes it. The leader emits the task events
//! (it sees every agent's reports), the master that commits a change the change's events.
//! Pure: the events and the diff of task reports that makes the task events.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::deployments::Deployment;
use crate::app::App;
use crate::facts::launched::{TaskState, TaskStatus};

/// One event: its type (the SSE `event:` line) and its JSON (`eventType` and `timestamp`
/// included, as Marathon sends them).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub data: Value,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn event(kind: &'static str, mut data: Value) -> Event {
    data["eventType"] = json!(kind);
    data["timestamp"] = json!(now());
    Event { kind, data }
}

/// An app created or changed through the API.
pub fn api_post(app: &App) -> Event {
    event(
        "api_post_event",
        json!({"uri": format!("/v2/apps{}", app.id), "appDefinition": app.to_marathon()}),
    )
}

/// An app removed.
pub fn app_terminated(id: &str) -> Event {
    event("app_terminated_event", json!({ "appId": id }))
}

/// Marathon's deployment plan: the apps before and after, and its one step.
fn plan(d: &Deployment, after: &BTreeMap<String, App>) -> Value {
    let before: Vec<Value> = d
        .apps
        .values()
        .filter_map(|s| s.before.as_ref().map(App::to_marathon))
        .collect();
    let target: Vec<Value> = d
        .apps
        .keys()
        .filter_map(|id| after.get(id).map(App::to_marathon))
        .collect();
    let group = |apps: Vec<Value>| json!({"id": "/", "apps": apps, "groups": [], "pods": [], "dependencies": [], "version": d.version});
    json!({
        "id": d.id,
        "version": d.version,
        "original": group(before),
        "target": group(target),
        "steps": super::deployments::steps(d, after)
            .iter()
            .map(|step| json!({"actions": step.iter().map(|id| action(d, id)).collect::<Vec<_>>()}))
            .collect::<Vec<_>>(),
    })
}

fn action(d: &Deployment, id: &str) -> Value {
    json!({"action": d.apps.get(id).map(|s| s.action), "app": id})
}

/// A deployment started (its plan and its step).
pub fn deployment_info(d: &Deployment, after: &BTreeMap<String, App>) -> Event {
    event(
        "deployment_info",
        json!({"plan": plan(d, after),
               "currentStep": {"actions": super::deployments::steps(d, after).first()
                   .map(|step| step.iter().map(|id| action(d, id)).collect::<Vec<_>>())
                   .unwrap_or_default()}}),
    )
}

/// A deployment finished: its apps run as asked.
pub fn deployment_success(d: &Deployment, after: &BTreeMap<String, App>) -> Event {
    event(
        "deployment_success",
        json!({"id": d.id, "plan": plan(d, after)}),
    )
}

/// What the leader last saw of a task, to say what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    state: TaskState,
    alive: Option<bool>,
}

/// The task events between what was `seen` and the `statuses` now (task id → (node id,
/// status)): a `status_update_event` per new state, a `health_status_changed_event` per
/// health check result that changed. `host` gives a node's address. Updates `seen`.
pub fn task_events(
    seen: &mut BTreeMap<String, Seen>,
    statuses: &BTreeMap<String, (String, TaskStatus)>,
    host: &dyn Fn(&str) -> String,
) -> Vec<Event> {
    let mut out = Vec::new();
    for (id, (node, s)) in statuses {
        let alive = s.healthy.filter(|_| !s.health_pending);
        let now = Seen {
            state: s.state,
            alive,
        };
        let before = seen.insert(id.clone(), now);
        if before.map(|b| b.state) != Some(s.state) {
            let ips: Vec<Value> = s
                .ips()
                .into_iter()
                .map(|ip| {
                    json!({"ipAddress": ip.to_string(),
                           "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" }})
                })
                .collect();
            out.push(event(
                "status_update_event",
                json!({
                    "slaveId": node,
                    "taskId": id,
                    "taskStatus": s.state.as_str(),
                    "message": s.message.clone().unwrap_or_default(),
                    "appId": s.app_id,
                    "host": host(node),
                    "ports": s.host_ports.iter().filter(|p| **p != 0).collect::<Vec<_>>(),
                    "ipAddresses": ips,
                    "version": s.version,
                }),
            ));
        }
        if let Some(alive) = alive
            && before.and_then(|b| b.alive) != Some(alive)
        {
            out.push(event(
                "health_status_changed_event",
                json!({"appId": s.app_id, "taskId": id, "instanceId": id,
                       "version": s.version, "alive": alive}),
            ));
        }
    }
    // Tasks no agent reports any more are forgotten (their last state was already said).
    seen.retain(|id, _| statuses.contains_key(id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Network;

    fn status(state: TaskState, healthy: Option<bool>) -> TaskStatus {
        TaskStatus {
            app_id: "/web".into(),
            version: "v1".into(),
            healthy,
            network: Network::Host,
            host_ports: vec![31000],
            ..crate::facts::launched::tests_support::status("web.1", state)
        }
    }

    #[test]
    fn task_events_follow_states_and_health() {
        let host = |n: &str| format!("addr-of-{n}");
        let mut seen = BTreeMap::new();
        let mut statuses = BTreeMap::from([(
            "web.1".to_owned(),
            ("n1".to_owned(), status(TaskState::TaskStaging, None)),
        )]);
        let kinds = |e: Vec<Event>| e.into_iter().map(|e| e.kind).collect::<Vec<_>>();
        let e = task_events(&mut seen, &statuses, &host);
        assert_eq!(e[0].data["taskStatus"], "TASK_STAGING");
        assert_eq!(e[0].data["host"], "addr-of-n1");
        assert_eq!(e[0].data["eventType"], "status_update_event");
        assert!(
            task_events(&mut seen, &statuses, &host).is_empty(),
            "nothing new"
        );
        statuses.get_mut("web.1").unwrap().1 = status(TaskState::TaskRunning, Some(true));
        assert_eq!(
            kinds(task_events(&mut seen, &statuses, &host)),
            ["status_update_event", "health_status_changed_event"]
        );
        statuses.get_mut("web.1").unwrap().1.health_pending = true;
        assert!(
            task_events(&mut seen, &statuses, &host).is_empty(),
            "pending says nothing"
        );
        statuses.get_mut("web.1").unwrap().1 = status(TaskState::TaskRunning, Some(false));
        let e = task_events(&mut seen, &statuses, &host);
        assert_eq!(e[0].data["alive"], false);
        statuses.clear();
        assert!(task_events(&mut seen, &statuses, &host).is_empty());
        assert!(seen.is_empty());
    }
}
