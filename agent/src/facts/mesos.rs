//! Mesos task state in gossip (the `dns/` keys): what DNS records are generated from,
//! published by the nodes that poll a Mesos master as one small key per agent, framework and
//! running task (a single gossip value must fit in a datagram, so a whole record set could not
//! travel as one). [`super::cluster`] rebuilds the [`Cluster`] from any node's facts.
//!
//! ```text
//! dns/generation            when the content last changed (ms since the epoch): the publisher
//!                           that saw the latest change wins
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
//! A poll that finds nothing new publishes nothing, the generation included.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dcnet_dns::records::{Cluster, TaskInfo};
use serde::{Deserialize, Serialize};

/// Prefix of every DNS fact key.
pub const PREFIX: &str = "dns/";
pub(crate) const GENERATION: &str = "dns/generation";
pub(crate) const LEADER: &str = "dns/leader";
pub(crate) const AGENT: &str = "dns/agent/";
pub(crate) const FRAMEWORK: &str = "dns/framework/";
pub(crate) const TASK: &str = "dns/task/";

/// A framework's scheduler (`dns/framework/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerFact {
    pub scheduler_ips: Vec<IpAddr>,
    pub scheduler_port: Option<u16>,
}

/// A running task (`dns/task/<framework>/<id>/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFact {
    pub framework: String,
    #[serde(flatten)]
    pub task: Arc<TaskInfo>,
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

/// Plain data structs serialise without fail.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use dcnet_dns::records::{AgentInfo, Discovery, DiscoveryPort, FrameworkInfo};

    use super::*;

    pub(crate) fn cluster() -> Cluster {
        Cluster {
            frameworks: vec![FrameworkInfo {
                name: "marathon".into(),
                scheduler_ips: vec!["10.0.0.2".parse().unwrap()],
                scheduler_port: Some(8080),
                tasks: vec![
                    Arc::new(TaskInfo {
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
                    }),
                    Arc::new(TaskInfo {
                        id: "old.1".into(),
                        name: "old".into(),
                        agent_id: "a1".into(),
                        is_running: false,
                        ..TaskInfo::default()
                    }),
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
    fn keys_hold_running_tasks_only_each_small() {
        let keys = to_keys(&cluster());
        assert!(keys.contains_key("dns/task/marathon/web.1/web"));
        assert!(
            !keys.keys().any(|k| k.contains("old.1")),
            "only running tasks are published"
        );
        assert!(keys.values().all(|v| v.len() < 1024), "each value is small");
    }
}
