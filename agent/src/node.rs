//! The membership table (`GET /v1/nodes`, `dcnet nodes`), built from the gossip view and the
//! nodes' [`NodeInfo`] facts.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::facts::node::{NODE_INFO_KEY, NodeInfo};
use crate::gossip::ClusterView;

/// Whether a node is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Up,
    Down,
}

/// One row of the membership table (`GET /v1/nodes`, `dcnet nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// `None` until the node's info has arrived by gossip.
    pub name: Option<String>,
    pub address: Option<IpAddr>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub roles: Vec<String>,
    pub state: NodeState,
    /// RFC 3339 time at which this node last saw the member's heartbeat advance.
    pub last_heard: String,
    /// Seconds since `last_heard`, for people and alerts alike.
    pub last_heard_secs_ago: f64,
    pub generation: u64,
    /// Whether this row is the node answering.
    pub is_self: bool,
}

/// The membership table of `view`, sorted by name then id.
pub fn members(view: &ClusterView, now: SystemTime) -> Vec<Member> {
    let mut rows: Vec<Member> = view
        .nodes
        .values()
        .map(|n| {
            let info: Option<NodeInfo> = n
                .get(NODE_INFO_KEY)
                .and_then(|json| serde_json::from_str(json).ok());
            let (name, address, region, zone, roles) = match info {
                Some(i) => (Some(i.name), Some(i.address), i.region, i.zone, i.roles),
                None => (None, None, None, None, Vec::new()),
            };
            Member {
                id: n.id.clone(),
                name,
                address,
                region,
                zone,
                roles,
                state: if n.is_up {
                    NodeState::Up
                } else {
                    NodeState::Down
                },
                last_heard: humantime::format_rfc3339_millis(n.last_heard).to_string(),
                last_heard_secs_ago: now
                    .duration_since(n.last_heard)
                    .unwrap_or_default()
                    .as_secs_f64(),
                generation: n.generation,
                is_self: n.is_self,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    rows
}
