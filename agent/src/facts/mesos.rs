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

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dcnet_dns::records::{AgentInfo, Cluster, TaskInfo};
use dcnet_lb::vip::VipLabel;
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
    /// Shared by the framework's tasks (see the decoder's interning).
    pub framework: Arc<str>,
    #[serde(flatten)]
    pub task: Arc<TaskInfo>,
}

/// Decodes a task's value (`dns/task/...`).
pub fn decode_task(value: &str) -> Result<TaskFact, serde_json::Error> {
    serde_json::from_str(value)
}

/// Whether a running task declares a VIP (a `VIP_<n>` label on one of its discovery ports).
pub fn declares_vips(task: &TaskInfo) -> bool {
    task.is_running
        && task.discovery.as_ref().is_some_and(|d| {
            d.ports
                .iter()
                .any(|p| p.labels.iter().any(|(k, _)| VipLabel::is_vip_key(k)))
        })
}

/// One fact of a [`Cluster`] before it is serialised: its key, and what its value is made of.
/// The publisher compares [`Fact::fingerprint`]s with the last poll's and serialises only the
/// facts that changed (at 100,000 tasks, serialising them all took ~70 ms of every change).
pub struct Fact<'a> {
    pub key: String,
    value: FactValue<'a>,
}

enum FactValue<'a> {
    Leader(SocketAddr),
    Agent(&'a AgentInfo),
    Framework(SchedulerFact),
    Task(&'a str, &'a TaskInfo),
}

/// How a task fact is written: the same JSON as [`TaskFact`], from borrowed parts.
#[derive(Serialize)]
struct TaskFactRef<'a> {
    framework: &'a str,
    #[serde(flatten)]
    task: &'a TaskInfo,
}

/// Fixed, so fingerprints compare across polls.
const FINGERPRINT: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x6661_6374_7072_696e);

impl Fact<'_> {
    /// A digest of the value (what it is made of, not its JSON): a changed value changes it,
    /// but for a 2^-64 chance (such a change would wait for the task's next one).
    pub fn fingerprint(&self) -> u64 {
        match &self.value {
            FactValue::Leader(addr) => FINGERPRINT.hash_one((0u8, addr)),
            FactValue::Agent(agent) => FINGERPRINT.hash_one((1u8, agent)),
            FactValue::Framework(f) => {
                FINGERPRINT.hash_one((2u8, &f.scheduler_ips, f.scheduler_port))
            }
            FactValue::Task(framework, task) => FINGERPRINT.hash_one((3u8, framework, task)),
        }
    }

    /// The value as published.
    pub fn value(&self) -> String {
        match &self.value {
            FactValue::Leader(addr) => addr.to_string(),
            FactValue::Agent(agent) => json(agent),
            FactValue::Framework(f) => json(f),
            FactValue::Task(framework, task) => json(&TaskFactRef { framework, task }),
        }
    }
}

/// The facts that publish `cluster` (without the generation, which the publisher adds).
pub fn facts(cluster: &Cluster) -> Vec<Fact<'_>> {
    let tasks = cluster
        .frameworks
        .iter()
        .map(|f| f.tasks.len())
        .sum::<usize>();
    let mut facts = Vec::with_capacity(1 + cluster.agents.len() + tasks);
    if let Some((ip, port)) = cluster.leader {
        let value = FactValue::Leader(SocketAddr::new(ip, port));
        facts.push(Fact {
            key: LEADER.to_owned(),
            value,
        });
    }
    for agent in &cluster.agents {
        facts.push(Fact {
            key: format!("{AGENT}{}", agent.id),
            value: FactValue::Agent(agent),
        });
    }
    for framework in &cluster.frameworks {
        let fact = SchedulerFact {
            scheduler_ips: framework.scheduler_ips.clone(),
            scheduler_port: framework.scheduler_port,
        };
        facts.push(Fact {
            key: format!("{FRAMEWORK}{}", framework.name),
            value: FactValue::Framework(fact),
        });
        for task in framework.tasks.iter().filter(|t| t.is_running) {
            facts.push(Fact {
                key: format!("{TASK}{}/{}/{}", framework.name, task.id, task.name),
                value: FactValue::Task(&framework.name, task),
            });
        }
    }
    facts
}

/// What a publisher has published, by key: each value's fingerprint.
#[derive(Debug, Default)]
pub struct Published(HashMap<String, u64, foldhash::fast::RandomState>);

impl Published {
    /// The changes that publish `cluster` over what was published (a value for each key to
    /// set, `None` for each key to delete), which it takes as published. Only the facts that
    /// changed are serialised.
    pub fn changes(&mut self, cluster: &Cluster) -> Vec<(String, Option<String>)> {
        let mut wanted = HashMap::with_capacity_and_hasher(self.0.len(), Default::default());
        let mut changes = Vec::new();
        for fact in facts(cluster) {
            let print = fact.fingerprint();
            if self.0.get(&fact.key) != Some(&print) {
                changes.push((fact.key.clone(), Some(fact.value())));
            }
            wanted.insert(fact.key, print);
        }
        for key in self.0.keys() {
            if !wanted.contains_key(key) {
                changes.push((key.clone(), None));
            }
        }
        self.0 = wanted;
        changes
    }
}

/// The keys and values that publish `cluster` (without the generation); a later fact of the
/// same key (a task id repeated in one state) wins, as in gossip.
pub fn to_keys(cluster: &Cluster) -> BTreeMap<String, String> {
    facts(cluster)
        .into_iter()
        .map(|fact| {
            let value = fact.value();
            (fact.key, value)
        })
        .collect()
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

    #[test]
    fn a_publisher_sends_everything_first_then_only_what_changed() {
        let mut published = Published::default();
        let mut state = cluster();
        let first = published.changes(&state);
        let keys: Vec<&str> = first.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys.len(),
            to_keys(&state).len(),
            "everything at first: {keys:?}"
        );
        assert!(published.changes(&state).is_empty(), "nothing again");

        Arc::make_mut(&mut state.frameworks[0].tasks[0]).ports = vec![31001];
        let changed = published.changes(&state);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0, "dns/task/marathon/web.1/web");
        assert!(changed[0].1.as_deref().is_some_and(|v| v.contains("31001")));

        state.frameworks[0].tasks.clear();
        assert_eq!(
            published.changes(&state),
            [("dns/task/marathon/web.1/web".to_owned(), None)],
            "a task gone is a deletion"
        );
    }

    #[test]
    fn a_task_fact_reads_back_as_written_and_its_fingerprint_follows_its_content() {
        let mut state = cluster();
        let keys = to_keys(&state);
        let fact: TaskFact = serde_json::from_str(&keys["dns/task/marathon/web.1/web"]).unwrap();
        assert_eq!(&*fact.framework, "marathon");
        assert_eq!(fact.task, state.frameworks[0].tasks[0]);

        let prints = |state: &Cluster| -> BTreeMap<String, u64> {
            facts(state)
                .into_iter()
                .map(|f| {
                    let print = f.fingerprint();
                    (f.key, print)
                })
                .collect()
        };
        let before = prints(&state);
        assert_eq!(
            before,
            prints(&state.clone()),
            "same content, same fingerprints"
        );
        Arc::make_mut(&mut state.frameworks[0].tasks[0]).healthy = Some(false);
        let after = prints(&state);
        let changed: Vec<&String> = before
            .keys()
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        assert_eq!(changed, ["dns/task/marathon/web.1/web"]);
    }
}
