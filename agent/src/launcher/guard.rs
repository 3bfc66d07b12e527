//! What tasks must not reach: every node's control-plane listeners (gossip, the agent's API,
//! the scheduler's API), as the nodes publish them ([`crate::facts::node::Listener`]), turned into
//! the rules of the eBPF guard on the tasks' cgroup ([`dcnet_lb::guard`]).
//!
//! Why eBPF on the cgroup rather than nftables in the node's namespace: a task on the host
//! network shares the node's namespace and addresses with the agent, so only its cgroup tells
//! it apart; a task on an overlay reaches other nodes through forwarding, where a socket's
//! owner is no longer known. A cgroup hook sees every task's socket, on any network, at
//! connect time, and costs one trie lookup per connect.
//!
//! A listener on a specific address is guarded at that address. One on a wildcard address is
//! guarded at its node's address, and on this node at every local address too (loopback,
//! overlay gateways, the VTEP), since all of them reach it from a task here. A loopback
//! listener is only reachable from its own node.

use std::collections::BTreeSet;
use std::net::IpAddr;

use dcnet_lb::Protocol;
use dcnet_lb::guard::Rule;

use crate::facts::Facts;
use crate::facts::node::ListenerProtocol;

/// The guard's rules for the nodes of `facts`, seen from node `local` whose interfaces hold
/// `local_addrs`.
pub fn rules(facts: &Facts, local: &str, local_addrs: &[IpAddr]) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for node in facts.nodes.values() {
        let Some(info) = node.info.as_deref() else {
            continue;
        };
        let is_local = node.id == local;
        for listener in &info.control {
            let protocol = match listener.protocol {
                ListenerProtocol::Tcp => Protocol::Tcp,
                ListenerProtocol::Udp => Protocol::Udp,
            };
            let port = listener.addr.port();
            let mut host = |addr: IpAddr| {
                rules.insert(Rule::host(addr, port, protocol));
            };
            let ip = listener.addr.ip();
            if ip.is_unspecified() {
                host(info.address);
                if is_local {
                    local_addrs.iter().copied().for_each(&mut host);
                    // `connect(0.0.0.0)` and `connect(::)` reach the local host.
                    host(IpAddr::from([0, 0, 0, 0]));
                    host("::".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
                    host("::1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1])));
                    rules.insert(Rule::new(IpAddr::from([127, 0, 0, 0]), 8, port, protocol));
                }
            } else if ip.is_loopback() {
                if is_local {
                    host(ip);
                }
            } else {
                host(ip);
            }
        }
    }
    rules
}

/// The addresses of this host's interfaces (in the agent's namespace).
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| {
            let sa = a.address?;
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use super::*;
    use crate::facts::decode::tests_support::decoded;
    use crate::facts::node::{Listener, NODE_INFO_KEY, NodeInfo};
    use crate::gossip::view::tests_support::view_with;

    fn info(address: &str, control: &[(&str, ListenerProtocol)]) -> String {
        serde_json::to_string(&NodeInfo {
            name: "n".into(),
            address: address.parse().unwrap(),
            region: None,
            zone: None,
            attributes: Default::default(),
            roles: vec!["agent".into()],
            version: "0".into(),
            resources: None,
            control: control
                .iter()
                .map(|(a, p)| Listener {
                    addr: a.parse::<SocketAddr>().unwrap(),
                    protocol: *p,
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn rules_cover_every_node_and_every_local_address_of_wildcards() {
        use ListenerProtocol::{Tcp, Udp};
        let master = info(
            "10.0.0.1",
            &[
                ("0.0.0.0:62501", Udp),
                ("127.0.0.1:62080", Tcp),
                ("10.0.0.1:8080", Tcp),
            ],
        );
        let agent = info(
            "10.0.0.2",
            &[("0.0.0.0:62501", Udp), ("127.0.0.1:62080", Tcp)],
        );
        let view = view_with(&[
            ("a", BTreeMap::from([(NODE_INFO_KEY.to_owned(), master)])),
            ("b", BTreeMap::from([(NODE_INFO_KEY.to_owned(), agent)])),
            ("c", BTreeMap::new()),
        ]);
        let local = ["10.0.0.2".parse().unwrap(), "9.0.1.1".parse().unwrap()];
        let got: BTreeSet<String> = rules(&decoded(&view), "b", &local)
            .iter()
            .map(ToString::to_string)
            .collect();
        let want: BTreeSet<String> = [
            // The master's gossip and scheduler, from anywhere; its loopback API is not ours.
            "10.0.0.1/32 62501/udp",
            "10.0.0.1/32 8080/tcp",
            // This node: gossip on every local address, the API on loopback.
            "10.0.0.2/32 62501/udp",
            "9.0.1.1/32 62501/udp",
            "127.0.0.0/8 62501/udp",
            "0.0.0.0/32 62501/udp",
            "::/128 62501/udp",
            "::1/128 62501/udp",
            "127.0.0.1/32 62080/tcp",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(got, want);
    }
}

// ---------------------------------------------------------------------------------------------
// The keeper

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::facts::node::NodeInfo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

/// How long after a start the rules of the last run are kept on top of what gossip shows:
/// until then the view may lack nodes it has not heard from yet.
const SEED_GRACE: Duration = Duration::from_secs(30);

/// The guard on the tasks' cgroup, kept in step with the cluster.
#[derive(Clone)]
pub struct Keeper {
    guard: Arc<Mutex<dcnet_lb::guard::Guard>>,
    local: String,
    seen: Arc<Mutex<Applied>>,
    /// Where the rules in force are kept for the next run.
    file: PathBuf,
    /// The last run's rules, and when this run started.
    seed: Arc<(BTreeSet<Rule>, Instant)>,
}

/// What the rules in force were made from: each node's published info, this host's
/// addresses, and whether the last run's rules were still added.
#[derive(Default, PartialEq)]
struct Applied {
    infos: BTreeMap<String, Arc<NodeInfo>>,
    addrs: Vec<IpAddr>,
    seeded: bool,
}

/// The rules a run kept in `file` (none if there is no file or it does not parse).
fn load_rules(file: &Path) -> BTreeSet<Rule> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Keeps `rules` in `file` (atomically; nothing is left behind when the disk is full).
fn save_rules(file: &Path, rules: &BTreeSet<Rule>) -> std::io::Result<()> {
    let text = serde_json::to_string(rules).unwrap_or_default();
    crate::state::write_atomically(file, &file.with_extension("tmp"), text.as_bytes(), 0o600)
}

impl Keeper {
    /// Loads the guard with the last run's rules (kept in `file`), attaches it to `cgroup`
    /// (created if missing) before any task can run there, retires the last run's guard still
    /// attached there, and registers its counters.
    pub fn start(
        cgroup: &Path,
        local: &str,
        file: PathBuf,
        registry: &mut Registry,
    ) -> Result<Self, crate::Error> {
        std::fs::create_dir_all(cgroup).map_err(|source| crate::Error::State {
            action: "creating the tasks' cgroup",
            path: cgroup.to_path_buf(),
            source,
        })?;
        let seed = load_rules(&file);
        let mut guard = dcnet_lb::guard::Guard::load().map_err(crate::Error::Lb)?;
        guard.set_rules(seed.clone()).map_err(crate::Error::Lb)?;
        // Ours first, then the last run's go: the cgroup is never without a guard.
        guard.attach(cgroup).map_err(crate::Error::Lb)?;
        let retired = guard.retire_others(cgroup).map_err(crate::Error::Lb)?;
        info!(cgroup = %cgroup.display(), rules = seed.len(), retired,
              "control-plane guard attached to the tasks' cgroup");
        let keeper = Self {
            guard: Arc::new(Mutex::new(guard)),
            local: local.to_owned(),
            seen: Arc::new(Mutex::new(Applied::default())),
            file,
            seed: Arc::new((seed, Instant::now())),
        };
        registry.register_collector(Box::new(keeper.clone()));
        Ok(keeper)
    }

    /// Applies the rules of `facts` if a node's info or this host's addresses changed.
    pub fn follow(&self, facts: &Facts) {
        let now = Applied {
            infos: facts
                .nodes
                .values()
                .filter_map(|n| Some((n.id.clone(), n.info.clone()?)))
                .collect(),
            addrs: local_addresses(),
            seeded: self.seed.1.elapsed() < SEED_GRACE,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return;
        }
        let mut wanted = rules(facts, &self.local, &now.addrs);
        if now.seeded {
            wanted.extend(self.seed.0.iter().copied());
        }
        let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        match guard.set_rules(wanted) {
            Ok((0, 0)) => {}
            Ok((added, removed)) => {
                info!(
                    added,
                    removed,
                    rules = guard.rules().len(),
                    "control-plane guard rules updated"
                )
            }
            Err(e) => {
                // Left as is; tried again at the next change.
                warn!(error = %e, "updating the control-plane guard failed");
                return;
            }
        }
        if let Err(e) = save_rules(&self.file, guard.rules()) {
            warn!(file = %self.file.display(), error = %e, "cannot keep the guard's rules for the next run");
        }
        *seen = now;
    }
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("guard::Keeper")
    }
}

impl Collector for Keeper {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        let counters = match guard.counters() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "reading the control-plane guard's counters failed");
                return Ok(());
            }
        };
        let rules = guard.rules().len();
        drop(guard);
        let mut family = encoder.encode_descriptor(
            "dcnet_guard_refused",
            "Connects (connect_denied) and datagrams (send_denied) of tasks to the control plane refused",
            None,
            MetricType::Counter,
        )?;
        for (stat, n) in counters {
            ConstCounter::new(n).encode(family.encode_family(&[("event", stat.name())])?)?;
        }
        prometheus_client::metrics::gauge::ConstGauge::new(rules as i64).encode(
            encoder.encode_descriptor(
                "dcnet_guard_rules",
                "Rules of the control-plane guard",
                None,
                MetricType::Gauge,
            )?,
        )?;
        Ok(())
    }
}
