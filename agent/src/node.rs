//! What each node says about itself in gossip, and the membership table built from it.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::gossip::ClusterView;

/// Gossip key under which every node publishes its [`NodeInfo`] (JSON).
pub const NODE_INFO_KEY: &str = "node";

/// A node's self-description, published once at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Underlay address.
    pub address: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub roles: Vec<String>,
    /// dcnet version the node runs.
    pub version: String,
    /// What the scheduler may place here; `None` where no launcher runs tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The node's control-plane listeners (gossip, its API, the scheduler's API): what tasks
    /// must never reach ([`crate::launcher::guard`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control: Vec<Listener>,
}

/// A listening socket of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub addr: SocketAddr,
    pub protocol: ListenerProtocol,
}

/// The transport of a [`Listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    Tcp,
    Udp,
}

/// A node's resources for tasks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: f64,
    /// In MB.
    pub mem: f64,
}

impl NodeInfo {
    /// This node's info from its configuration.
    pub fn from_config(config: &AgentConfig) -> Self {
        Self {
            name: config.name.clone(),
            address: config.address,
            region: config.region.clone(),
            zone: config.zone.clone(),
            roles: config
                .roles
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            resources: config.launcher.enabled.then_some(Resources {
                cpus: config.launcher.cpus,
                mem: config.launcher.mem,
            }),
            control: control_listeners(config),
        }
    }
}

/// The control-plane listeners a node with `config` opens.
fn control_listeners(config: &AgentConfig) -> Vec<Listener> {
    let mut out = vec![
        Listener {
            addr: config.gossip.listen,
            protocol: ListenerProtocol::Udp,
        },
        Listener {
            addr: config.api_listen,
            protocol: ListenerProtocol::Tcp,
        },
    ];
    if config.scheduler.enabled {
        out.push(Listener {
            addr: config.scheduler.listen,
            protocol: ListenerProtocol::Tcp,
        });
    }
    out
}

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
