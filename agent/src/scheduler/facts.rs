//! What schedulers publish in gossip, and how every node reads who leads and what it assigned.
//!
//! ```text
//! sched/candidate        the scheduler's API URL: this master runs a scheduler
//! sched/leader           {"api", "tasks": N}: this scheduler leads and has published its N
//!                        assignments (published after them, so a reader that counts N
//!                        `sched/task/` keys has the whole set)
//! sched/task/<task id>   Assignment (JSON): run this task on that node
//! sched/app/<app id>     App (JSON): standby masters keep a copy on disk for a failover
//! ```
//!
//! The leader is the live candidate with the smallest node id; every node computes the same
//! answer from its own view. A node acts on assignments only while their leader is up and its
//! set is complete: with no scheduler, nothing is started or stopped (the data plane outlives
//! the control plane).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::app::App;
use crate::gossip::{ClusterView, NodeView};

pub const CANDIDATE_KEY: &str = "sched/candidate";
pub const LEADER_KEY: &str = "sched/leader";
pub const TASK_PREFIX: &str = "sched/task/";
pub const APP_PREFIX: &str = "sched/app/";

/// A task the leader wants run on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub task_id: String,
    pub node_id: String,
    pub app: App,
    /// Host ports, one per app port, on the host network; empty on an overlay.
    pub host_ports: Vec<u16>,
}

/// The value of [`LEADER_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderFact {
    pub api: String,
    pub tasks: usize,
}

/// The leading scheduler as one node's view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Leader<'a> {
    pub node_id: &'a str,
    /// Its API URL.
    pub api: &'a str,
    /// Its assignments, when its published set is complete in this view.
    pub assignments: Option<BTreeMap<&'a str, Assignment>>,
}

/// The leading scheduler: the live candidate with the smallest node id.
pub fn leader(view: &ClusterView) -> Option<Leader<'_>> {
    let node = view
        .up_nodes()
        .filter(|n| n.get(CANDIDATE_KEY).is_some())
        .min_by(|a, b| a.id.cmp(&b.id))?;
    Some(Leader {
        node_id: &node.id,
        api: node.get(CANDIDATE_KEY).unwrap_or_default(),
        assignments: complete_assignments(node),
    })
}

/// The node's assignments if it leads and every one of them has arrived.
fn complete_assignments(node: &NodeView) -> Option<BTreeMap<&str, Assignment>> {
    let fact: LeaderFact = serde_json::from_str(node.get(LEADER_KEY)?).ok()?;
    let mut out = BTreeMap::new();
    for (key, value) in node.keys.range(TASK_PREFIX.to_owned()..) {
        let Some(id) = key.strip_prefix(TASK_PREFIX) else {
            break;
        };
        out.insert(id, serde_json::from_str(value).ok()?);
    }
    (out.len() == fact.tasks).then_some(out)
}

/// The apps a node publishes (what standbys copy).
pub fn apps(node: &NodeView) -> BTreeMap<String, App> {
    node.keys
        .range(APP_PREFIX.to_owned()..)
        .take_while(|(k, _)| k.starts_with(APP_PREFIX))
        .filter_map(|(_, v)| serde_json::from_str::<App>(v).ok())
        .map(|a| (a.id.clone(), a))
        .collect()
}

/// The gossip key of an app.
pub fn app_key(id: &str) -> String {
    format!("{APP_PREFIX}{}", id.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gossip::view::tests_support::view_with;

    fn assignment(id: &str) -> Assignment {
        Assignment {
            task_id: id.into(),
            node_id: "n2".into(),
            app: crate::scheduler::app::parse(&json!({"id": "/web", "cmd": "x"}), None, "v")
                .unwrap()
                .app,
            host_ports: vec![],
        }
    }

    fn keys(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn the_smallest_candidate_leads_and_its_set_must_be_complete() {
        let a = serde_json::to_string(&assignment("web.1")).unwrap();
        let leader_fact = |n: usize| {
            serde_json::to_string(&LeaderFact {
                api: "http://a".into(),
                tasks: n,
            })
            .unwrap()
        };
        let view = view_with(&[
            (
                "m1",
                keys(&[
                    (CANDIDATE_KEY, "http://a".into()),
                    (LEADER_KEY, leader_fact(1)),
                    ("sched/task/web.1", a.clone()),
                ]),
            ),
            ("m2", keys(&[(CANDIDATE_KEY, "http://b".into())])),
            ("n2", keys(&[])),
        ]);
        let l = leader(&view).unwrap();
        assert_eq!((l.node_id, l.api), ("m1", "http://a"));
        assert_eq!(l.assignments.unwrap()["web.1"].node_id, "n2");

        // The leader key says 2 but only one assignment arrived: not complete.
        let view = view_with(&[(
            "m1",
            keys(&[
                (CANDIDATE_KEY, "http://a".into()),
                (LEADER_KEY, leader_fact(2)),
                ("sched/task/web.1", a),
            ]),
        )]);
        assert!(leader(&view).unwrap().assignments.is_none());
        assert!(leader(&view_with(&[("n2", keys(&[]))])).is_none());
    }
}
