//! Marathon's JSON shapes of the scheduler's objects: tasks, apps with their status, the
//! launch queue, `/v2/info`. Pure, so each shape is tested against what Marathon's clients
//! parse.
//!
//! Strict clients (marathon-python builds each object from its keys and fails on one it does
//! not know) constrain what goes in: only Marathon's own fields, by Marathon's names. What
//! dcnet knows beyond them goes where Marathon keeps the like: why an app waits is in its
//! launch queue item ([`queue_item`]), why a task ended in the app's `lastTaskFailure`.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::app::{App, Network};
use crate::facts::launched::{TaskState, TaskStatus};
use crate::facts::node::NodeInfo;
use crate::scheduler::plan::Tracked;

/// RFC 3339 with milliseconds, as Marathon writes times.
pub fn iso_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A task as the API shows it: what the leader decided, what its agent reports, and the
/// agent.
#[derive(Clone, Copy)]
pub struct TaskView<'a> {
    pub tracked: &'a Tracked,
    pub status: Option<&'a TaskStatus>,
    /// The agent's node facts (`None` if it left the cluster view).
    pub agent: Option<&'a NodeInfo>,
}

impl TaskView<'_> {
    pub fn state(&self) -> TaskState {
        self.status.map_or(TaskState::TaskStaging, |s| s.state)
    }

    /// Whether a health check said yes, no, or has not said yet (`None`, also without checks).
    pub fn health(&self) -> Option<bool> {
        self.status
            .filter(|s| !s.health_pending)
            .and_then(|s| s.healthy)
    }

    /// The agent's address: a name in the cluster would need DNS for agents, which Marathon
    /// clients do not have; the address works everywhere.
    pub fn host(&self) -> String {
        self.agent.map_or_else(
            || self.tracked.assignment.node_id.clone(),
            |a| a.address.to_string(),
        )
    }
}

/// The keys of a task object, in Marathon's order.
pub const TASK_KEYS: &[&str] = &[
    "id",
    "appId",
    "host",
    "slaveId",
    "state",
    "ipAddresses",
    "ports",
    "servicePorts",
    "stagedAt",
    "startedAt",
    "version",
    "healthCheckResults",
    "region",
    "zone",
];

/// A task in Marathon's shape.
pub fn task(v: &TaskView<'_>) -> Value {
    let a = &v.tracked.assignment;
    let mut o = Map::new();
    o.insert("id".into(), json!(a.task_id));
    o.insert("appId".into(), json!(a.app.id));
    o.insert("host".into(), json!(v.host()));
    o.insert("slaveId".into(), json!(a.node_id));
    o.insert("state".into(), json!(v.state().as_str()));
    let ips: Vec<Value> = v
        .status
        .map(|s| s.ips())
        .unwrap_or_default()
        .into_iter()
        .map(|ip| {
            json!({
                "ipAddress": ip.to_string(),
                "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
            })
        })
        .collect();
    o.insert("ipAddresses".into(), json!(ips));
    // Host ports: all of a task's on the host network; on an overlay those its mappings
    // asked for (bridge networking: all), as Marathon lists them.
    let host_ports: Vec<u16> = a.host_ports.iter().copied().filter(|p| *p != 0).collect();
    o.insert("ports".into(), json!(host_ports));
    o.insert("servicePorts".into(), json!(service_ports(&a.app)));
    o.insert("stagedAt".into(), json!(iso_ms(v.tracked.created_ms)));
    o.insert(
        "startedAt".into(),
        json!(v.status.and_then(|s| s.started_ms).map(iso_ms)),
    );
    o.insert("version".into(), json!(a.app.version));
    // Empty until a check has a result, as in Marathon: neither healthy nor unhealthy while
    // starting.
    let checks: Vec<Value> = v
        .health()
        .map(|alive| json!({"alive": alive, "taskId": a.task_id}))
        .into_iter()
        .collect();
    o.insert("healthCheckResults".into(), json!(checks));
    if let Some(agent) = v.agent {
        if let Some(region) = &agent.region {
            o.insert("region".into(), json!(region));
        }
        if let Some(zone) = &agent.zone {
            o.insert("zone".into(), json!(zone));
        }
    }
    Value::Object(o)
}

/// The app's service ports: the ports it declares on the host network (Marathon's
/// `portDefinitions[].port`); none on an overlay, where a VIP label is what balances.
pub fn service_ports(app: &App) -> Vec<u16> {
    match app.network {
        Network::Host => app.ports.iter().map(|p| p.number).collect(),
        Network::Container(_) => Vec::new(),
    }
}

/// An app's task counts (Marathon's `tasksRunning` and siblings).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub running: usize,
    pub staged: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}

impl Counts {
    pub fn of(tasks: &[TaskView<'_>]) -> Self {
        let mut c = Counts::default();
        for t in tasks {
            match t.state() {
                TaskState::TaskRunning => c.running += 1,
                TaskState::TaskStaging => c.staged += 1,
                _ => {}
            }
            match t.health() {
                Some(true) => c.healthy += 1,
                Some(false) => c.unhealthy += 1,
                None => {}
            }
        }
        c
    }
}

/// What an app object carries besides its definition.
pub struct AppStatus<'a> {
    pub counts: Counts,
    /// Ids of the deployments under way that change it.
    pub deployments: &'a [String],
    /// The tasks, when embedded.
    pub tasks: Option<Vec<Value>>,
    /// The last task of the app that failed, when embedded and known.
    pub last_task_failure: Option<Value>,
}

/// The app's version in Marathon's sense: its last change of any kind, a scale included.
pub fn version(app: &App) -> &str {
    match &app.scaled_at {
        Some(scaled) if *scaled > app.version => scaled,
        _ => &app.version,
    }
}

/// An app in Marathon's shape, with its status.
pub fn app(app: &App, status: AppStatus<'_>) -> Value {
    let mut v = app.to_marathon();
    v["version"] = json!(version(app));
    v["versionInfo"] = json!({
        "lastScalingAt": version(app),
        "lastConfigChangeAt": app.version,
    });
    v["tasksRunning"] = json!(status.counts.running);
    v["tasksStaged"] = json!(status.counts.staged);
    v["tasksHealthy"] = json!(status.counts.healthy);
    v["tasksUnhealthy"] = json!(status.counts.unhealthy);
    let deployments: Vec<Value> = status
        .deployments
        .iter()
        .map(|id| json!({ "id": id }))
        .collect();
    v["deployments"] = json!(deployments);
    if let Some(tasks) = status.tasks {
        v["tasks"] = json!(tasks);
    }
    if let Some(failure) = status.last_task_failure {
        v["lastTaskFailure"] = failure;
    }
    v
}

/// Marathon's `lastTaskFailure` of a task that ended badly, reported by agent `node_id`.
pub fn task_failure(status: &TaskStatus, node_id: &str, agent: Option<&NodeInfo>) -> Value {
    json!({
        "appId": status.app_id,
        "host": agent.map_or_else(|| node_id.to_owned(), |a| a.address.to_string()),
        "message": status.message.clone().unwrap_or_default(),
        "state": status.state.as_str(),
        "taskId": status.task_id,
        "slaveId": node_id,
        "version": status.version,
        "timestamp": iso_ms(status.started_ms.unwrap_or(status.staged_ms)),
    })
}

/// One app waiting in the launch queue: `count` tasks to launch, `delay` left of a restart
/// backoff (0 when none), and why it waits, if it does.
pub fn queue_item(
    app_json: Value,
    count: usize,
    delay_ms: u64,
    since_ms: u64,
    why: Option<&str>,
) -> Value {
    let mut item = json!({
        "count": count,
        "delay": {
            "timeLeftSeconds": delay_ms.div_ceil(1000),
            "overdue": delay_ms == 0,
        },
        "since": iso_ms(since_ms),
        "app": app_json,
    });
    // Marathon says why offers did not fit in counts per reason; dcnet places on its own
    // and knows the reason in words, given as Marathon's one free-text summary field.
    if let Some(why) = why {
        item["processedOffersSummary"] = json!({
            "processedOffersCount": 0,
            "unusedOffersCount": 0,
            "rejectSummaryLastOffers": [{"reason": why, "declined": 0, "processed": 0}],
        });
    }
    item
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::app::parse;
    use crate::facts::scheduler::Assignment;

    fn tracked(network: &str) -> Tracked {
        let definition = if network == "host" {
            json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 8080}]})
        } else {
            json!({"id": "/web", "cmd": "x", "networks": [{"mode": "container", "name": "dcos"}],
                   "container": {"portMappings": [{"containerPort": 80}]}})
        };
        let app = parse(&definition, None, "2026-01-01T00:00:00.000Z")
            .unwrap()
            .app;
        Tracked {
            assignment: Assignment {
                task_id: "web.1".into(),
                node_id: "node-a".into(),
                app,
                host_ports: if network == "host" {
                    vec![31000]
                } else {
                    vec![]
                },
            },
            created_ms: 1_000,
            failures: 0,
        }
    }

    fn agent() -> NodeInfo {
        NodeInfo {
            name: "node-a".into(),
            address: "10.0.0.7".parse().unwrap(),
            region: Some("us-west".into()),
            zone: Some("us-west-1a".into()),
            attributes: Default::default(),
            roles: vec![],
            version: "x".into(),
            resources: None,
            control: vec![],
        }
    }

    fn status(t: &Tracked, state: TaskState, healthy: Option<bool>) -> TaskStatus {
        let a = &t.assignment;
        TaskStatus {
            task_id: a.task_id.clone(),
            app_id: a.app.id.clone(),
            version: a.app.version.clone(),
            state,
            healthy,
            health_pending: false,
            ip: Some("9.0.1.2".parse().unwrap()),
            ip6: None,
            network: a.app.network.clone(),
            ports: a.app.ports.clone(),
            host_ports: a.host_ports.clone(),
            cpus: 0.1,
            mem: 10.0,
            staged_ms: 1_000,
            started_ms: Some(2_000),
            message: Some("exit status 3".into()),
            ready: None,
        }
    }

    #[test]
    fn a_task_has_marathons_keys_only() {
        let t = tracked("host");
        let s = status(&t, TaskState::TaskRunning, Some(true));
        let a = agent();
        let v = task(&TaskView {
            tracked: &t,
            status: Some(&s),
            agent: Some(&a),
        });
        let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let allowed: BTreeSet<&str> = TASK_KEYS.iter().copied().collect();
        assert_eq!(keys, allowed, "{v}");
        assert_eq!(
            v["host"], "10.0.0.7",
            "the agent's address, not its node name"
        );
        assert_eq!(v["slaveId"], "node-a");
        assert_eq!(v["ports"], json!([31000]));
        assert_eq!(v["servicePorts"], json!([8080]));
        assert_eq!(v["stagedAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(v["startedAt"], "1970-01-01T00:00:02.000Z");
        assert_eq!(
            v["healthCheckResults"],
            json!([{"alive": true, "taskId": "web.1"}])
        );
        assert_eq!(v["zone"], "us-west-1a");
    }

    #[test]
    fn a_task_not_yet_reported_is_staging_on_its_node() {
        let t = tracked("container");
        let v = task(&TaskView {
            tracked: &t,
            status: None,
            agent: None,
        });
        assert_eq!(v["state"], "TASK_STAGING");
        assert_eq!(v["host"], "node-a");
        assert_eq!(v["startedAt"], Value::Null);
        assert_eq!(v["ipAddresses"], json!([]));
        assert_eq!(v["servicePorts"], json!([]));
        assert!(v.get("region").is_none());
    }

    #[test]
    fn counts_follow_states_and_checks() {
        let t = tracked("host");
        let running = status(&t, TaskState::TaskRunning, Some(true));
        let failing = status(&t, TaskState::TaskRunning, Some(false));
        let mut pending = status(&t, TaskState::TaskRunning, Some(false));
        pending.health_pending = true;
        let views = [
            TaskView {
                tracked: &t,
                status: Some(&running),
                agent: None,
            },
            TaskView {
                tracked: &t,
                status: Some(&failing),
                agent: None,
            },
            TaskView {
                tracked: &t,
                status: Some(&pending),
                agent: None,
            },
            TaskView {
                tracked: &t,
                status: None,
                agent: None,
            },
        ];
        assert_eq!(
            Counts::of(&views),
            Counts {
                running: 3,
                staged: 1,
                healthy: 1,
                unhealthy: 1
            }
        );
    }

    #[test]
    fn an_app_says_when_it_was_scaled_and_changed() {
        let mut a = tracked("host").assignment.app;
        let status = || AppStatus {
            counts: Counts::default(),
            deployments: &[],
            tasks: None,
            last_task_failure: None,
        };
        let v = app(&a, status());
        assert_eq!(v["version"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["versionInfo"]["lastScalingAt"], v["version"]);
        assert!(v.get("tasks").is_none());
        a.scaled_at = Some("2026-02-01T00:00:00.000Z".into());
        let v = app(&a, status());
        assert_eq!(v["version"], "2026-02-01T00:00:00.000Z");
        assert_eq!(
            v["versionInfo"]["lastConfigChangeAt"],
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(v["deployments"], json!([]));
    }
}
