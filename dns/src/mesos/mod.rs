//! A Mesos master as the source of DNS records (Mesos-DNS's input).
//!
//! - [`config`]: Mesos-DNS's `config.json`.
//! - [`state`]: the `/master/state` document.
//! - [`fetch`]: reading it from the leading master; [`detect`]: finding that master through
//!   ZooKeeper.
//! - [`service`]: the drop-in replacement for Mesos-DNS; [`http`]: its HTTP API.
//! - [`cluster`]: maps it onto [`crate::records::Cluster`], resolving host names through a
//!   caller-supplied function (IP literals need none), so that generation stays pure.

pub mod config;
pub mod detect;
pub mod fetch;
pub mod http;
pub mod service;
pub mod state;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::records::{self, Cluster, Discovery, DiscoveryPort, distinct};
use state::{IpSource, State, split_pid};

/// Turns a host name or IP literal into addresses.
pub type Resolve<'a> = &'a dyn Fn(&str) -> Vec<IpAddr>;

/// Resolves IP literals only: what tests and an offline node can rely on.
pub fn literal_only(host: &str) -> Vec<IpAddr> {
    host.parse().map(|ip| vec![ip]).unwrap_or_default()
}

/// The cluster a master's state describes, task addresses taken from `sources` in order.
pub fn cluster(state: &State, sources: &[IpSource], resolve: Resolve<'_>) -> Cluster {
    let agents: Vec<records::AgentInfo> = state
        .slaves
        .iter()
        .map(|agent| {
            let (host, port) = match agent.pid.as_deref().and_then(split_pid) {
                Some((host, port)) => (host, Some(port)),
                None => (agent.hostname.as_str(), None),
            };
            records::AgentInfo {
                id: agent.id.clone(),
                ips: distinct(&resolve(host)),
                port,
            }
        })
        .collect();

    // By id, for the tasks: the first agent of an id, as a search in order would find.
    let mut by_id: HashMap<&str, &[IpAddr]> = HashMap::with_capacity(agents.len());
    for agent in &agents {
        by_id
            .entry(agent.id.as_str())
            .or_insert(agent.ips.as_slice());
    }
    // Each agent id once, shared by its tasks.
    let mut agent_ids: HashMap<&str, Arc<str>> = HashMap::with_capacity(agents.len());
    let frameworks = state
        .frameworks
        .iter()
        .map(|f| {
            let (host, port) = match f.pid.as_deref().and_then(split_pid) {
                Some((host, port)) => (host, Some(port)),
                None => (f.hostname.as_str(), None),
            };
            let tasks = f
                .tasks
                .iter()
                .map(|task| {
                    let agent_ips = by_id
                        .get(task.slave_id.as_str())
                        .copied()
                        .unwrap_or_default();
                    records::TaskInfo {
                        id: task.id.clone(),
                        name: task.name.clone(),
                        agent_id: agent_ids
                            .entry(task.slave_id.as_str())
                            .or_insert_with(|| Arc::from(task.slave_id.as_str()))
                            .clone(),
                        is_running: task.state == "TASK_RUNNING",
                        ips: task.ips(sources, agent_ips),
                        ports: task.ports(),
                        healthy: task.healthy(),
                        discovery: task.discovery.as_ref().map(|d| Discovery {
                            name: d.name.clone(),
                            ports: d
                                .ports
                                .ports
                                .iter()
                                .map(|p| DiscoveryPort {
                                    number: p.number,
                                    protocol: p.protocol.clone(),
                                    name: p.name.clone(),
                                    labels: p
                                        .labels
                                        .labels
                                        .iter()
                                        .map(|l| (l.key.clone(), l.value.clone()))
                                        .collect(),
                                })
                                .collect(),
                        }),
                    }
                })
                .map(std::sync::Arc::new)
                .collect();
            records::FrameworkInfo {
                name: f.name.clone(),
                scheduler_ips: resolve(host),
                scheduler_port: port,
                tasks,
            }
        })
        .collect();

    let leader =
        split_pid(&state.leader).and_then(|(host, port)| Some((*resolve(host).first()?, port)));
    Cluster {
        frameworks,
        agents,
        leader,
    }
}
