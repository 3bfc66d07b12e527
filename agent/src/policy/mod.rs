//! Network policies on a node: what this node compiles from gossip (the leading scheduler's
//! policies, the running tasks, their apps' labels) with [`dcnet_policy`], and shows at
//! `GET /v1/policy`. The eBPF datapath that enforces it is the next step (issue 23); this is
//! the view it will program from.

use std::collections::BTreeMap;

use dcnet_policy::{Compiled, Direction, Task};
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

/// The policies compiled against what runs; `None` while no scheduler leads.
pub fn compile(facts: &Facts) -> Option<(Vec<String>, Compiled)> {
    let policies = crate::facts::scheduler::policies(facts)?;
    let list: Vec<dcnet_policy::Policy> = policies.values().map(|p| (**p).clone()).collect();
    let ids = policies.keys().cloned().collect();
    Some((ids, Compiled::new(&list, &tasks(facts), &[])))
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
        policies,
        apps,
        allow_entries: compiled.allow.len() + compiled.allow_net.len(),
    }
}
