//! Network policies on a node: what this node compiles from gossip (the leading scheduler's
//! policies, the running tasks, their apps' labels, the VIPs) with [`dcnet_policy`], shown at
//! `GET /v1/policy` and enforced by [`enforce`] in eBPF on the tasks' cgroup.

pub mod enforce;

use std::collections::BTreeMap;

use dcnet_policy::{Compiled, Direction, Policy, Task, Vip};
use serde::Serialize;

use crate::facts::Facts;
use crate::facts::launched::TaskState;

/// The running dcnet tasks of the live nodes, with their apps' labels (from the leader's
/// assignments; none when no scheduler leads). Tasks a Mesos master runs have no labels here
/// and are left to the policies' CIDR rules.
pub fn tasks(facts: &Facts) -> Vec<Task> {
    let assignments = crate::facts::scheduler::leader(facts).and_then(|l| l.assignments);
    facts
        .up_nodes()
        .flat_map(|n| n.launched.values())
        .filter(|t| t.state == TaskState::TaskRunning)
        .map(|t| Task {
            app: t.app_id.clone(),
            labels: assignments
                .and_then(|a| a.get(&t.task_id))
                .map(|a| a.app.labels.clone())
                .unwrap_or_default(),
            addresses: t.ips(),
        })
        .collect()
}

/// The gossip key under which a node publishes the packets denied per policy (JSON: id →
/// count), for the scheduler's policy list.
pub const DENIED_KEY: &str = "policy/denied";

/// The VIPs of the cluster with their backends, by the label that declares them
/// (`/name:port`, or `IP:port`), as the load balancer programs them.
pub fn vips(facts: &Facts) -> Vec<Vip> {
    let desired = crate::lb::service::desired_from_facts(facts);
    desired
        .vips
        .iter()
        .map(|(vip, backends)| Vip {
            label: match desired.names.get(vip) {
                Some((name, _)) => format!("/{}:{}", name.name, vip.addr.port()),
                None => vip.addr.to_string(),
            },
            protocol: match vip.protocol {
                dcnet_lb::Protocol::Tcp => dcnet_policy::Protocol::Tcp,
                dcnet_lb::Protocol::Udp => dcnet_policy::Protocol::Udp,
            },
            backends: backends.iter().map(|b| b.addr).collect(),
        })
        .collect()
}

/// The policies compiled against what runs; `None` while no scheduler leads.
pub fn compile(facts: &Facts) -> Option<(Vec<Policy>, Compiled)> {
    compile_with(facts, &tasks(facts))
}

/// The policies of `facts` compiled against `tasks`; `None` while no scheduler leads.
pub fn compile_with(facts: &Facts, tasks: &[Task]) -> Option<(Vec<Policy>, Compiled)> {
    let policies = crate::facts::scheduler::policies(facts)?;
    let list: Vec<Policy> = policies.values().map(|p| (**p).clone()).collect();
    // The load balancer computes the VIPs on the same changes; done again here only when a
    // policy names one.
    let vips = if list.iter().any(Policy::names_vips) {
        vips(facts)
    } else {
        Vec::new()
    };
    let compiled = Compiled::new(&list, tasks, &vips);
    Some((list, compiled))
}

/// `GET /v1/policy`.
#[derive(Debug, Serialize)]
pub struct PolicyView {
    /// Whether a scheduler leads (without one, nothing is known of the policies).
    pub known: bool,
    pub policies: Vec<String>,
    /// Per app with a running task: its identity, and the directions policies isolate.
    pub apps: BTreeMap<String, AppView>,
    pub allow_entries: usize,
}

#[derive(Debug, Serialize)]
pub struct AppView {
    pub identity: u32,
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
}

/// This node's view of the policies.
pub fn view(facts: &Facts) -> PolicyView {
    let Some((policies, compiled)) = compile(facts) else {
        return PolicyView {
            known: false,
            policies: Vec::new(),
            apps: BTreeMap::new(),
            allow_entries: 0,
        };
    };
    let apps = compiled
        .apps
        .iter()
        .map(|(app, &identity)| {
            let isolated = |d| compiled.isolated.contains(&(d, identity));
            (
                app.clone(),
                AppView {
                    identity,
                    ingress_isolated: isolated(Direction::Ingress),
                    egress_isolated: isolated(Direction::Egress),
                },
            )
        })
        .collect();
    PolicyView {
        known: true,
        policies: policies.into_iter().map(|p| p.id).collect(),
        apps,
        allow_entries: compiled.allow.len() + compiled.allow_net.len(),
    }
}
