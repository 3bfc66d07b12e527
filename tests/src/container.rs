//! A container for overlay tests: a namespace of the test, attached to a node's overlay through
//! that node's API (the code path of `dcnet-cni` and the task launcher), detached on drop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cluster::Cluster;
use crate::namespace::TestNamespace;

/// What the agent answered to the attach.
#[derive(Debug, Clone, Deserialize)]
pub struct Attached {
    /// IPv4 address with prefix; empty on an IPv6-only network.
    #[serde(default)]
    pub address: String,
    /// IPv4 gateway; unspecified on an IPv6-only network.
    #[serde(default = "unspecified")]
    pub gateway: Ipv4Addr,
    pub address6: Option<String>,
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: u32,
    pub mac: String,
    pub host_veth: String,
    pub nameservers: Vec<IpAddr>,
}

fn unspecified() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

/// A namespace attached to the overlay of one node.
pub struct Container {
    pub ns: TestNamespace,
    pub node: usize,
    pub id: String,
    /// The IPv4 address; unspecified on an IPv6-only network.
    pub ip: Ipv4Addr,
    /// The IPv6 address on an IPv6-only or dual-stack network.
    pub ip6: Option<Ipv6Addr>,
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
        let host = |a: &str| a.split('/').next().unwrap_or("").to_owned();
        let ip = match attached.address.as_str() {
            "" => Ipv4Addr::UNSPECIFIED,
            a => host(a)
                .parse()
                .with_context(|| format!("address {:?}", attached.address))?,
        };
        let ip6 = match &attached.address6 {
            None => None,
            Some(a) => Some(host(a).parse().with_context(|| format!("address6 {a:?}"))?),
        };
        Ok(Self {
            ns,
            node,
            id,
            ip,
            ip6,
            attached,
        })
    }

    /// Detaches through the API; returns the HTTP status and body.
    pub fn detach(&self, cluster: &Cluster) -> Result<(u16, String)> {
        let body = serde_json::json!({ "container_id": self.id });
        cluster.post(self.node, "/v1/overlay/detach", &body.to_string())
    }

    /// Pings `to` (either family) from inside with `size` bytes of payload, fragmentation
    /// forbidden.
    pub fn ping(&self, to: impl Into<IpAddr>, size: usize) -> Result<bool> {
        Ok(self.ping_once(to, size)?.status.success())
    }

    /// Like [`Container::ping`]; the TTL of the reply, `None` if none came.
    pub fn ping_ttl(&self, to: impl Into<IpAddr>, size: usize) -> Result<Option<u8>> {
        let out = self.ping_once(to, size)?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split("ttl=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok()))
    }

    fn ping_once(&self, to: impl Into<IpAddr>, size: usize) -> Result<std::process::Output> {
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
                &to.into().to_string(),
            ],
        )
    }

    /// An echo server on the container's IPv4 address and `port`, serving until the process
    /// ends.
    pub fn echo_server(&self, port: u16) -> Result<()> {
        self.echo_server_on(self.ip.into(), port)
    }

    /// An echo server on `ip` (an address of the container) and `port`.
    pub fn echo_server_on(&self, ip: IpAddr, port: u16) -> Result<()> {
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
