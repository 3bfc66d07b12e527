//! What schedulers publish in gossip, and how every node reads who leads and what it assigned.
//!
//! ```text
//! sched/leader           {"api", "term", "tasks": N}: this scheduler leads by Raft in `term`
//!                        and has published its N assignments (published after them, so a
//!                        reader that counts N `sched/task/` keys has the whole set; no
//!                        `tasks` while a new leader adopts the running tasks)
//! sched/task/<task id>   Assignment (JSON): run this task on that node
//! sched/link/<name>      LinkFact (JSON): a linked cluster's DNS, for every node's DNS
//! sched/policy/<id>      Policy (JSON): a network policy, for every node's datapath
//! ```
//!
//! The leader is the live node publishing the highest term (Raft elects at most one per
//! term); every node computes the same answer from its own view. A node acts on assignments
//! only while their leader is up and its set is complete, and never on a term older than one
//! it has seen (a deposed leader cannot stop or start anything): with no scheduler, nothing is
//! started or stopped (the data plane outlives the control plane).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::decode::{Facts, NodeFacts};
use crate::app::App;

pub const LEADER_KEY: &str = "sched/leader";
pub const TASK_PREFIX: &str = "sched/task/";
pub const LINK_PREFIX: &str = "sched/link/";
pub const POLICY_PREFIX: &str = "sched/policy/";

/// What every node needs of a linked cluster ([`crate::scheduler::links`]): where its names
/// are asked. Never its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFact {
    pub name: String,
    pub id: String,
    /// Its DNS domain and servers.
    pub domain: String,
    pub dns: Vec<std::net::SocketAddr>,
}

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
    /// The Raft term it leads in.
    #[serde(default)]
    pub term: u64,
    /// How many assignments it published; `None` while it adopts the running tasks.
    pub tasks: Option<usize>,
}

/// The leading scheduler as one node's facts show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Leader<'a> {
    pub node_id: &'a str,
    /// Its API URL.
    pub api: &'a str,
    /// The Raft term it leads in.
    pub term: u64,
    /// Its assignments by task id, when its published set is complete in these facts.
    pub assignments: Option<&'a BTreeMap<String, Arc<Assignment>>>,
}

/// The leading scheduler: the live node that publishes a leader fact with the highest term.
pub fn leader(facts: &Facts) -> Option<Leader<'_>> {
    let (node, fact) = facts
        .up_nodes()
        .filter_map(|n| Some((n, n.leader.as_deref()?)))
        .max_by(|(a, fa), (b, fb)| fa.term.cmp(&fb.term).then_with(|| b.id.cmp(&a.id)))?;
    Some(Leader {
        node_id: &node.id,
        assignments: complete_assignments(node, fact),
        api: &fact.api,
        term: fact.term,
    })
}

/// The linked clusters the leading scheduler publishes; `None` while no scheduler leads (a
/// reader keeps what it had: linked names resolve without a control plane).
pub fn links(facts: &Facts) -> Option<&BTreeMap<String, Arc<LinkFact>>> {
    let leader = leader(facts)?;
    Some(&facts.nodes.get(leader.node_id)?.links)
}

/// The network policies the leading scheduler publishes; `None` while no scheduler leads (a
/// reader keeps enforcing what it had).
pub fn policies(facts: &Facts) -> Option<&BTreeMap<String, Arc<dcnet_policy::Policy>>> {
    let leader = leader(facts)?;
    Some(&facts.nodes.get(leader.node_id)?.policies)
}

/// The node's assignments if every one of them has arrived (and decoded).
fn complete_assignments<'a>(
    node: &'a NodeFacts,
    fact: &LeaderFact,
) -> Option<&'a BTreeMap<String, Arc<Assignment>>> {
    let expected = fact.tasks?;
    let broken = node.malformed.iter().any(|k| k.starts_with(TASK_PREFIX));
    (!broken && node.assignments.len() == expected).then_some(&node.assignments)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::facts::decode::tests_support::decoded as facts;
    use crate::gossip::view::tests_support::view_with;

    fn assignment(id: &str) -> Assignment {
        Assignment {
            task_id: id.into(),
            node_id: "n2".into(),
            app: crate::app::parse(&json!({"id": "/web", "cmd": "x"}), None, "v")
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
    fn the_highest_term_leads_and_its_set_must_be_complete() {
        let a = serde_json::to_string(&assignment("web.1")).unwrap();
        let fact = |api: &str, term: u64, n: Option<usize>| {
            serde_json::to_string(&LeaderFact {
                api: api.into(),
                term,
                tasks: n,
            })
            .unwrap()
        };
        // m1 was deposed (term 3) but still publishes; m2 leads in term 4.
        let view = view_with(&[
            (
                "m1",
                keys(&[
                    (LEADER_KEY, fact("https://a", 3, Some(1))),
                    ("sched/task/web.1", a.clone()),
                ]),
            ),
            (
                "m2",
                keys(&[
                    (LEADER_KEY, fact("https://b", 4, Some(1))),
                    ("sched/task/web.1", a.clone()),
                ]),
            ),
            ("n2", keys(&[])),
        ]);
        let facts_now = facts(&view);
        let l = leader(&facts_now).unwrap();
        assert_eq!((l.node_id, l.api, l.term), ("m2", "https://b", 4));
        assert_eq!(l.assignments.unwrap()["web.1"].node_id, "n2");

        // The leader key says 2 but only one assignment arrived: not complete.
        let view = view_with(&[(
            "m1",
            keys(&[
                (LEADER_KEY, fact("https://a", 5, Some(2))),
                ("sched/task/web.1", a.clone()),
            ]),
        )]);
        assert!(leader(&facts(&view)).unwrap().assignments.is_none());
        // A new leader still adopting: known, with no set.
        let view = view_with(&[("m1", keys(&[(LEADER_KEY, fact("https://a", 6, None))]))]);
        assert!(leader(&facts(&view)).unwrap().assignments.is_none());
        assert!(leader(&facts(&view_with(&[("n2", keys(&[]))]))).is_none());
    }

    #[test]
    fn links_are_the_leaders_and_unknown_without_one() {
        let leading = serde_json::to_string(&LeaderFact {
            api: "https://b".into(),
            term: 4,
            tasks: Some(0),
        })
        .unwrap();
        let deposed = serde_json::to_string(&LeaderFact {
            api: "https://a".into(),
            term: 3,
            tasks: Some(0),
        })
        .unwrap();
        let link = |name: &str| {
            serde_json::to_string(&LinkFact {
                name: name.into(),
                id: "id".into(),
                domain: "mesos".into(),
                dns: vec!["10.0.0.1:53".parse().unwrap()],
            })
            .unwrap()
        };
        let view = view_with(&[
            (
                "m1",
                keys(&[(LEADER_KEY, deposed), ("sched/link/old", link("old"))]),
            ),
            (
                "m2",
                keys(&[(LEADER_KEY, leading), ("sched/link/east", link("east"))]),
            ),
        ]);
        let facts_now = facts(&view);
        let published = links(&facts_now).unwrap();
        assert_eq!(published.keys().collect::<Vec<_>>(), ["east"]);
        assert_eq!(published["east"].dns[0].port(), 53);
        assert!(links(&facts(&view_with(&[("n2", keys(&[]))]))).is_none());
    }
}
