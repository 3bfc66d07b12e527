//! A container for overlay tests: a namespace of the test, attached to a node's overlay through
//! that node's API (the code path of `dcnet-cni` and the task launcher), detached on drop.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cluster::Cluster;
use crate::namespace::TestNamespace;

/// What the agent answered to the attach.
#[derive(Debug, Clone, Deserialize)]
pub struct Attached {
    pub address: String,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub mac: String,
    pub host_veth: String,
    pub nameservers: Vec<Ipv4Addr>,
}

/// A namespace attached to the overlay of one node.
pub struct Container {
    pub ns: TestNamespace,
    pub node: usize,
    pub id: String,
    pub ip: Ipv4Addr,
    pub attached: Attached,
}

impl Container {
    /// Creates a namespace and attaches it to network `dcos` on node `node`.
    pub fn attach(cluster: &Cluster, node: usize, label: &str) -> Result<Self> {
        Self::attach_to(cluster, node, label, "dcos")
    }

    /// Creates a namespace and attaches it to overlay `network` on node `node`.
    pub fn attach_to(cluster: &Cluster, node: usize, label: &str, network: &str) -> Result<Self> {
        let ns = TestNamespace::create(label)?;
        let id = format!("{}-{label}", ns.netns().name());
        let body = serde_json::json!({
            "container_id": id,
            "netns": ns.netns().name(),
            "network": network,
        });
        let (status, text) = cluster.post(node, "/v1/overlay/attach", &body.to_string())?;
        if status != 200 {
            bail!("attach {label} on node {}: HTTP {status}: {text}", node + 1);
        }
        let attached: Attached = serde_json::from_str(&text).context("attach response")?;
        let ip = attached
            .address
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("address {:?}", attached.address))?;
        Ok(Self {
            ns,
            node,
            id,
            ip,
            attached,
        })
    }

    /// Detaches through the API; returns the HTTP status and body.
    pub fn detach(&self, cluster: &Cluster) -> Result<(u16, String)> {
        let body = serde_json::json!({ "container_id": self.id });
        cluster.post(self.node, "/v1/overlay/detach", &body.to_string())
    }

    /// Pings `to` from inside with `size` bytes of payload, fragmentation forbidden.
    pub fn ping(&self, to: Ipv4Addr, size: usize) -> Result<bool> {
        let out = self.ns.run(
            "ping",
            &[
                "-c",
                "1",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                &size.to_string(),
                &to.to_string(),
            ],
        )?;
        Ok(out.status.success())
    }
}
