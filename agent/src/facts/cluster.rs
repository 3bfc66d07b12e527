//! The cluster DNS and the load balancer serve: the Mesos state of the freshest publisher, if
//! any, and the tasks dcnet's own launchers run (under framework `marathon`).
//!
//! Of the Mesos tasks, the [`Cluster`] holds only those that declare VIPs (all the load
//! balancer reads); the others stay encoded in the facts ([`MesosFacts::tasks`](super::MesosFacts::tasks)), where DNS
//! reads them ([`mesos_tasks`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use dcnet_dns::records::{AgentInfo, Cluster, FrameworkInfo, TaskInfo};

use super::decode::{Facts, NodeFacts};
use super::launched;

/// The cluster `facts` describe, with the launched tasks and the Mesos tasks that declare VIPs;
/// `None` with neither a Mesos publisher nor launched tasks.
pub fn cluster(facts: &Facts) -> Option<Cluster> {
    let (mut cluster, tasks) = cluster_and_launched(facts)?;
    if let Some(f) = cluster
        .frameworks
        .iter_mut()
        .find(|f| f.name == launched::FRAMEWORK)
    {
        f.tasks.extend(tasks);
    }
    Some(cluster)
}

/// As [`cluster`], with the launched tasks apart (their agents and framework are in the
/// cluster): DNS takes them as inputs beside the encoded Mesos tasks.
pub fn cluster_and_launched(facts: &Facts) -> Option<(Cluster, Vec<Arc<TaskInfo>>)> {
    let mesos = facts.mesos_publisher().map(mesos_cluster);
    let (agents, tasks) = launched_tasks(facts);
    if tasks.is_empty() {
        return mesos.map(|cluster| (cluster, tasks));
    }
    let mut cluster = mesos.unwrap_or_default();
    cluster.agents.extend(agents);
    let framework = launched::FRAMEWORK;
    if !cluster.frameworks.iter().any(|f| f.name == framework) {
        cluster.frameworks.push(FrameworkInfo {
            name: framework.to_owned(),
            ..FrameworkInfo::default()
        });
    }
    Some((cluster, tasks))
}

/// The cluster as one publisher's Mesos facts describe it.
fn mesos_cluster(publisher: &NodeFacts) -> Cluster {
    let mesos = &publisher.mesos;
    let mut frameworks: BTreeMap<&str, FrameworkInfo> = mesos
        .frameworks
        .iter()
        .map(|(name, f)| {
            let info = FrameworkInfo {
                name: name.clone(),
                scheduler_ips: f.scheduler_ips.clone(),
                scheduler_port: f.scheduler_port,
                tasks: Vec::new(),
            };
            (name.as_str(), info)
        })
        .collect();
    for fact in mesos.vip_tasks.values() {
        frameworks
            .entry(&fact.framework)
            .or_insert_with(|| FrameworkInfo {
                name: fact.framework.to_string(),
                ..FrameworkInfo::default()
            })
            .tasks
            .push(fact.task.clone());
    }
    Cluster {
        leader: mesos.leader.map(|a| (a.ip(), a.port())),
        agents: mesos.agents.values().map(|a| (**a).clone()).collect(),
        frameworks: frameworks.into_values().collect(),
    }
}

/// The running Mesos tasks of the freshest publisher, encoded: gossip key and value (see
/// [`MesosFacts::tasks`](super::MesosFacts::tasks)).
pub fn mesos_tasks(facts: &Facts) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
    facts
        .mesos_publisher()
        .into_iter()
        .flat_map(|p| p.mesos.tasks())
}

/// Every launched task of the nodes that are up, with the agents running them. Tasks of a node
/// that is down are left out: the scheduler replaces them.
pub fn launched_tasks(facts: &Facts) -> (Vec<AgentInfo>, Vec<Arc<TaskInfo>>) {
    let mut agents = Vec::new();
    let mut tasks = Vec::new();
    for node in facts.up_nodes() {
        if node.launched.is_empty() {
            continue;
        }
        tasks.extend(
            node.launched
                .values()
                .map(|s| Arc::new(s.to_task_info(&node.id))),
        );
        if let Some(info) = &node.info {
            agents.push(AgentInfo {
                id: node.id.clone(),
                ips: vec![info.address],
                port: None,
            });
        }
    }
    (agents, tasks)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::facts::decode::tests_support::decoded;
    use crate::facts::mesos::{generation, tests::cluster as mesos_state, to_keys};
    use crate::gossip::view::tests_support::view_with;

    fn facts(nodes: &[(&str, BTreeMap<String, String>)]) -> Facts {
        decoded(&view_with(nodes))
    }

    fn published(at: u64, state: &Cluster) -> BTreeMap<String, String> {
        let mut keys = to_keys(state);
        let (k, v) = generation(at);
        keys.insert(k, v);
        keys
    }

    #[test]
    fn the_published_state_comes_back_running_tasks_only() {
        let mut want = mesos_state();
        want.frameworks[0].tasks.retain(|t| t.is_running);
        let got = cluster(&facts(&[("n1", published(1, &mesos_state()))])).unwrap();
        assert_eq!(got.leader, want.leader);
        assert_eq!(got.agents, want.agents);
        assert_eq!(got.frameworks[0].tasks, want.frameworks[0].tasks);
        assert_eq!(got.frameworks[0].scheduler_port, Some(8080));
    }

    #[test]
    fn the_freshest_publisher_wins() {
        let facts = facts(&[
            ("stale", published(100, &Cluster::default())),
            ("fresh", published(200, &mesos_state())),
        ]);
        assert_eq!(cluster(&facts).unwrap().frameworks.len(), 1);
        assert!(cluster(&Facts::default()).is_none());
    }
}
