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
        Ok(self.ping_once(to, size)?.status.success())
    }

    /// Like [`Container::ping`]; the TTL of the reply, `None` if none came.
    pub fn ping_ttl(&self, to: Ipv4Addr, size: usize) -> Result<Option<u8>> {
        let out = self.ping_once(to, size)?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split("ttl=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok()))
    }

    fn ping_once(&self, to: Ipv4Addr, size: usize) -> Result<std::process::Output> {
        self.ns.run(
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
        )
    }

    /// An echo server on the container's address and `port`, serving until the process ends.
    pub fn echo_server(&self, port: u16) -> Result<()> {
        let ip = self.ip;
        let listener = self
            .ns
            .netns()
            .run(move || std::net::TcpListener::bind((ip, port)))??;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut stream = stream;
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(())
    }
}
