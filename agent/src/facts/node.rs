//! What each node says about itself: the `node` key, a [`NodeInfo`] published once at start.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;

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
    /// Attributes placement constraints can name (Mesos agent attributes), e.g. `rack_id`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: f64,
    /// In MB.
    pub mem: f64,
    /// Their Mesos role (`*`: private; `slave_public`: a public agent).
    #[serde(default = "default_role", skip_serializing_if = "is_default_role")]
    pub role: String,
    /// The container runtime, e.g. `runc 1.1.5, podman 4.3.1`; `None`: no container apps here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<String>,
}

fn default_role() -> String {
    "*".to_owned()
}

fn is_default_role(role: &str) -> bool {
    role == "*"
}

impl NodeInfo {
    /// This node's info from its configuration.
    pub fn from_config(config: &AgentConfig) -> Self {
        Self {
            name: config.name.clone(),
            address: config.address,
            region: config.region.clone(),
            zone: config.zone.clone(),
            attributes: config.attributes.clone(),
            roles: config
                .roles
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            resources: config.launcher.enabled.then(|| Resources {
                cpus: config.launcher.cpus,
                mem: config.launcher.mem,
                role: config.launcher.role.clone(),
                containers: config
                    .launcher
                    .containers
                    .as_ref()
                    .map(|r| r.description.clone()),
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
