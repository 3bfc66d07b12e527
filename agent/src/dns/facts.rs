//! Task facts in gossip: what DNS records are generated from, published as one small key per
//! agent, framework and running task (a single gossip value must fit in a datagram, so a whole
//! record set could not travel as one), and the [`Cluster`] rebuilt from any node's replica.
//!
//! ```text
//! dns/generation            publication time (ms since the epoch): the freshest publisher wins
//! dns/leader                IP:PORT of the leading master
//! dns/agent/<agent id>      AgentInfo (JSON)
//! dns/framework/<name>      {"scheduler_ips": [...], "scheduler_port": N}
//! dns/task/<fw>/<id>/<name> TaskInfo plus its framework's name (JSON), running tasks only
//! ```
//!
//! Task ids are unique only within a framework (and not even that in every state document),
//! so a task's key carries its framework and name as well.
//!
//! Several nodes may publish (each master polling the same leader); their views converge, and
//! readers take the newest rather than merging, so a stale publisher cannot resurrect a task.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use dcnet_dns::records::{AgentInfo, Cluster, FrameworkInfo, TaskInfo};
use serde::{Deserialize, Serialize};

use crate::gossip::ClusterView;

/// Prefix of every DNS fact key.
pub const PREFIX: &str = "dns/";
const GENERATION: &str = "dns/generation";
const LEADER: &str = "dns/leader";
const AGENT: &str = "dns/agent/";
const FRAMEWORK: &str = "dns/framework/";
const TASK: &str = "dns/task/";

#[derive(Serialize, Deserialize)]
struct SchedulerFact {
    scheduler_ips: Vec<IpAddr>,
    scheduler_port: Option<u16>,
}

#[derive(Serialize, Deserialize)]
struct TaskFact {
    framework: String,
    #[serde(flatten)]
    task: TaskInfo,
}

/// The keys that publish `cluster` (without the generation, which the publisher adds).
pub fn to_keys(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    if let Some((ip, port)) = cluster.leader {
        keys.insert(LEADER.to_owned(), SocketAddr::new(ip, port).to_string());
    }
    for agent in &cluster.agents {
        keys.insert(format!("{AGENT}{}", agent.id), json(agent));
    }
    for framework in &cluster.frameworks {
        let fact = SchedulerFact {
            scheduler_ips: framework.scheduler_ips.clone(),
            scheduler_port: framework.scheduler_port,
        };
        keys.insert(format!("{FRAMEWORK}{}", framework.name), json(&fact));
        for task in framework.tasks.iter().filter(|t| t.is_running) {
            let fact = TaskFact {
                framework: framework.name.clone(),
                task: task.clone(),
            };
            let key = format!("{TASK}{}/{}/{}", framework.name, task.id, task.name);
            keys.insert(key, json(&fact));
        }
    }
    keys
}

/// The generation key and value for a publication at `millis`.
pub fn generation(millis: u64) -> (String, String) {
    (GENERATION.to_owned(), millis.to_string())
}

/// The cluster `view` describes: the Mesos state of the freshest publisher, if any, and the
/// tasks dcnet's own launchers run (under framework `marathon`). `None` if there is neither.
pub fn from_view(view: &ClusterView) -> Option<Cluster> {
    let mesos = mesos_from_view(view);
    let (agents, tasks) = crate::launcher::facts::tasks_in_view(view);
    if tasks.is_empty() {
        return mesos;
    }
    let mut cluster = mesos.unwrap_or_default();
    cluster.agents.extend(agents);
    let framework = crate::launcher::facts::FRAMEWORK;
    match cluster.frameworks.iter_mut().find(|f| f.name == framework) {
        Some(f) => f.tasks.extend(tasks),
        None => cluster.frameworks.push(FrameworkInfo {
            name: framework.to_owned(),
            tasks,
            ..FrameworkInfo::default()
        }),
    }
    Some(cluster)
}

/// The cluster as the freshest Mesos-state publisher in `view` describes it (nodes that are
/// down included: DNS keeps answering when the publisher is gone).
fn mesos_from_view(view: &ClusterView) -> Option<Cluster> {
    let publisher = view
        .nodes
        .values()
        .filter_map(|n| Some((n.get(GENERATION)?.parse::<u64>().ok()?, &n.id, n)))
        .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))?
        .2;
    let mut cluster = Cluster {
        leader: publisher
            .get(LEADER)
            .and_then(|l| l.parse::<SocketAddr>().ok())
            .map(|a| (a.ip(), a.port())),
        ..Cluster::default()
    };
    let mut frameworks: BTreeMap<String, FrameworkInfo> = BTreeMap::new();
    let mut tasks: HashMap<String, Vec<TaskInfo>> = HashMap::new();
    for (key, value) in publisher.keys.range(PREFIX.to_owned()..) {
        if !key.starts_with(PREFIX) {
            break;
        }
        if let Some(_id) = key.strip_prefix(AGENT) {
            if let Ok(agent) = serde_json::from_str::<AgentInfo>(value) {
                cluster.agents.push(agent);
            }
        } else if let Some(name) = key.strip_prefix(FRAMEWORK) {
            if let Ok(fact) = serde_json::from_str::<SchedulerFact>(value) {
                frameworks.insert(
                    name.to_owned(),
                    FrameworkInfo {
                        name: name.to_owned(),
                        scheduler_ips: fact.scheduler_ips,
                        scheduler_port: fact.scheduler_port,
                        tasks: Vec::new(),
                    },
                );
            }
        } else if key.starts_with(TASK)
            && let Ok(fact) = serde_json::from_str::<TaskFact>(value)
        {
            tasks.entry(fact.framework).or_default().push(fact.task);
        }
    }
    for (name, list) in tasks {
        frameworks
            .entry(name.clone())
            .or_insert_with(|| FrameworkInfo {
                name,
                ..FrameworkInfo::default()
            })
            .tasks = list;
    }
    cluster.frameworks = frameworks.into_values().collect();
    Some(cluster)
}

/// Plain data structs serialise without fail.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use dcnet_dns::records::{Discovery, DiscoveryPort};

    use super::*;

    fn cluster() -> Cluster {
        Cluster {
            frameworks: vec![FrameworkInfo {
                name: "marathon".into(),
                scheduler_ips: vec!["10.0.0.2".parse().unwrap()],
                scheduler_port: Some(8080),
                tasks: vec![
                    TaskInfo {
                        id: "web.1".into(),
                        name: "web".into(),
                        agent_id: "a1".into(),
                        is_running: true,
                        ips: vec!["9.0.0.2".parse().unwrap()],
                        ports: vec![31000],
                        healthy: Some(true),
                        discovery: Some(Discovery {
                            name: "web".into(),
                            ports: vec![DiscoveryPort {
                                number: 80,
                                protocol: "tcp".into(),
                                name: "http".into(),
                                labels: vec![("VIP_0".into(), "/web:80".into())],
                            }],
                        }),
                    },
                    TaskInfo {
                        id: "old.1".into(),
                        name: "old".into(),
                        agent_id: "a1".into(),
                        is_running: false,
                        ..TaskInfo::default()
                    },
                ],
            }],
            agents: vec![AgentInfo {
                id: "a1".into(),
                ips: vec!["10.0.0.5".parse().unwrap()],
                port: Some(5051),
            }],
            leader: Some(("10.0.0.1".parse().unwrap(), 5050)),
        }
    }

    #[test]
    fn keys_round_trip_running_tasks_only() {
        let keys = to_keys(&cluster());
        assert!(keys.contains_key("dns/task/marathon/web.1/web"));
        assert!(
            !keys.keys().any(|k| k.contains("old.1")),
            "only running tasks are published"
        );
        assert!(keys.values().all(|v| v.len() < 1024), "each value is small");
        let mut want = cluster();
        want.frameworks[0].tasks.retain(|t| t.is_running);
        let rebuilt = rebuild(keys);
        assert_eq!(rebuilt.leader, want.leader);
        assert_eq!(rebuilt.agents, want.agents);
        assert_eq!(rebuilt.frameworks[0].tasks, want.frameworks[0].tasks);
        assert_eq!(rebuilt.frameworks[0].scheduler_port, Some(8080));
    }

    /// A view with one publishing node holding `keys`.
    fn rebuild(mut keys: BTreeMap<String, String>) -> Cluster {
        let (k, v) = generation(1);
        keys.insert(k, v);
        from_view(&crate::gossip::view::tests_support::view_with(&[(
            "n1", keys,
        )]))
        .unwrap()
    }

    #[test]
    fn the_freshest_publisher_wins() {
        let mut fresh = to_keys(&cluster());
        fresh.insert("dns/generation".into(), "200".into());
        let mut stale = to_keys(&Cluster::default());
        stale.insert("dns/generation".into(), "100".into());
        let view =
            crate::gossip::view::tests_support::view_with(&[("stale", stale), ("fresh", fresh)]);
        assert_eq!(from_view(&view).unwrap().frameworks.len(), 1);
        assert!(from_view(&ClusterView::default()).is_none());
    }
}
