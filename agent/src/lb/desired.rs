//! The VIPs a gossip view implies: every running task's discovery ports with `VIP_<n>` labels
//! become backends (the task's first address of the VIP's family and the port's number), with
//! the port's `DCNET_VIP_WEIGHT` (default 1) as weight, 0 for tasks whose health checks fail.
//! A named VIP has an IPv4 address and, when its tasks have IPv6 addresses, an IPv6 one
//! (`fd01:c::/64`) served by those; an IP-literal VIP may be IPv6 (`[fd00::1]:80`), served by
//! the tasks' IPv6 addresses. Tasks on agents that gossip reports down are left out, so their
//! backends are withdrawn on every node as soon as the failure detector decides.
//!
//! Named VIPs get their addresses from [`dcnet_lb::vip::named_addresses`] and
//! [`dcnet_lb::vip::named_addresses6`] over every name in the view, so all nodes agree
//! without talking about it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use super::locality::{self, Locality};

use dcnet_dns::records::Cluster;
use dcnet_lb::vip::{
    Backend, Protocol, Vip, VipError, VipHost, VipLabel, VipName, named_addresses, named_addresses6,
};

/// What the cluster's tasks ask of the load balancer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Desired {
    pub vips: BTreeMap<Vip, Vec<Backend>>,
    /// DNS name and address of every named VIP.
    pub names: BTreeMap<Vip, (VipName, String)>,
    /// Labels that could not be used, with why.
    pub errors: Vec<LabelProblem>,
    /// Where each backend runs, when its agent has a fault domain.
    pub localities: BTreeMap<SocketAddr, Locality>,
    /// Backends given weight 0 because nearer ones take the VIP's connections.
    pub spares: BTreeSet<(Vip, SocketAddr)>,
}

/// Where the client node and the agents are, for zone-aware VIPs.
#[derive(Debug, Clone, Default)]
pub struct Localities {
    /// This node's.
    pub client: Locality,
    /// Each agent's, by agent id.
    pub agents: HashMap<String, Locality>,
}

/// A `VIP_<n>` label that was ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelProblem {
    pub task: String,
    pub error: VipError,
}

/// The VIPs `cluster` implies. `down_agents`: addresses of agents gossip reports down; their
/// tasks' backends are left out. `localities`: backends nearest to the client node take the
/// connections ([`locality::prefer`]), unless a VIP opts out.
pub fn desired(
    cluster: &Cluster,
    down_agents: &HashSet<IpAddr>,
    localities: &Localities,
) -> Desired {
    let agent_ips: BTreeMap<&str, &[IpAddr]> = cluster
        .agents
        .iter()
        .map(|a| (a.id.as_str(), a.ips.as_slice()))
        .collect();
    let mut errors = Vec::new();
    // (host, port, protocol) → backends with where they run, before named hosts have
    // addresses; and the VIPs opted out of locality.
    let mut wanted: BTreeMap<(VipHost, u16, Protocol), Vec<(Backend, Locality)>> = BTreeMap::new();
    let mut anywhere: BTreeSet<(VipHost, u16, Protocol)> = BTreeSet::new();
    for framework in &cluster.frameworks {
        for task in framework.tasks.iter().filter(|t| t.is_running) {
            let Some(discovery) = &task.discovery else {
                continue;
            };
            let on_down_agent = agent_ips
                .get(&*task.agent_id)
                .is_some_and(|ips| ips.iter().any(|ip| down_agents.contains(ip)));
            let ip_of = |v6: bool| task.ips.iter().copied().find(|ip| ip.is_ipv6() == v6);
            let healthy = task.healthy != Some(false);
            let at = localities
                .agents
                .get(&*task.agent_id)
                .cloned()
                .unwrap_or_default();
            for port in &discovery.ports {
                let opted_out = locality::opted_out(port.labels.iter().map(|(k, v)| (k, v)));
                let weight = match dcnet_lb::vip::weight_of(port.labels.iter().map(|(k, v)| (k, v)))
                {
                    Ok(w) => w * u32::from(healthy),
                    Err(error) => {
                        errors.push(LabelProblem {
                            task: task.id.clone(),
                            error,
                        });
                        u32::from(healthy)
                    }
                };
                for (key, value) in port.labels.iter().filter(|(k, _)| VipLabel::is_vip_key(k)) {
                    let label = match VipLabel::parse(key, value, &framework.name) {
                        Ok(label) => label,
                        Err(error) => {
                            errors.push(LabelProblem {
                                task: task.id.clone(),
                                error,
                            });
                            continue;
                        }
                    };
                    for protocol in protocols(&port.protocol) {
                        let key = (label.host.clone(), label.port, protocol);
                        if opted_out {
                            anywhere.insert(key.clone());
                        }
                        let backends = wanted.entry(key).or_default();
                        // The VIP exists as long as a task declares it, even with no backend
                        // to use: connects are then refused at once instead of hanging. An IP
                        // VIP takes backends of its family; a named one of both (its IPv6
                        // address serves the tasks' IPv6 addresses).
                        let families: &[bool] = match label.host {
                            VipHost::Ip(IpAddr::V4(_)) => &[false],
                            VipHost::Ip(IpAddr::V6(_)) => &[true],
                            VipHost::Named(_) => &[false, true],
                        };
                        for &v6 in families {
                            if let (Some(ip), false, 1..) = (ip_of(v6), on_down_agent, port.number)
                            {
                                backends.push((
                                    Backend {
                                        addr: SocketAddr::new(ip, port.number),
                                        weight,
                                    },
                                    at.clone(),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    let named: BTreeSet<&VipName> = wanted
        .keys()
        .filter_map(|(host, _, _)| match host {
            VipHost::Named(n) => Some(n),
            VipHost::Ip(_) => None,
        })
        .collect();
    let addresses = named_addresses(named.iter().copied());
    let addresses6 = named_addresses6(named);
    let mut out = Desired {
        errors,
        ..Desired::default()
    };
    // A named VIP is an IPv4 VIP (always, so connects to it are refused at once without
    // backends) and, when any of its backends is IPv6, an IPv6 VIP too.
    let mut split = Vec::with_capacity(wanted.len());
    for ((host, port, protocol), backends) in wanted {
        match &host {
            VipHost::Ip(ip) => split.push((host.clone(), *ip, port, protocol, backends)),
            VipHost::Named(n) => {
                let (v6, v4): (Vec<_>, Vec<_>) =
                    backends.into_iter().partition(|(b, _)| b.addr.is_ipv6());
                if !v6.is_empty() {
                    split.push((host.clone(), addresses6[n].into(), port, protocol, v6));
                }
                split.push((host.clone(), addresses[n].into(), port, protocol, v4));
            }
        }
    }
    for (host, addr, port, protocol, mut backends) in split {
        let vip = Vip {
            addr: SocketAddr::new(addr, port),
            protocol,
        };
        if !anywhere.contains(&(host.clone(), port, protocol)) {
            let usable: BTreeSet<SocketAddr> = backends
                .iter()
                .filter(|(b, _)| b.weight > 0)
                .map(|(b, _)| b.addr)
                .collect();
            locality::prefer(&localities.client, &mut backends);
            out.spares.extend(
                backends
                    .iter()
                    .filter(|(b, _)| b.weight == 0 && usable.contains(&b.addr))
                    .map(|(b, _)| (vip, b.addr)),
            );
        }
        for (b, at) in &backends {
            if *at != Locality::default() {
                out.localities.insert(b.addr, at.clone());
            }
        }
        let backends = backends.into_iter().map(|(b, _)| b);
        if let VipHost::Named(n) = host {
            let dns = n.dns_name();
            out.names.insert(vip, (n, dns));
        }
        out.vips.entry(vip).or_default().extend(backends);
    }
    out
}

/// Protocols of a discovery port: Mesos leaves it empty for "both" in some frameworks; Marathon
/// writes `tcp`, `udp` or `udp,tcp`.
fn protocols(field: &str) -> Vec<Protocol> {
    let mut out: Vec<Protocol> = field
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    if out.is_empty() {
        out.push(Protocol::Tcp);
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcnet_dns::records::{AgentInfo, Discovery, DiscoveryPort, FrameworkInfo, TaskInfo};

    fn task(id: &str, agent: &str, ip: &str, port: u16, labels: &[(&str, &str)]) -> TaskInfo {
        TaskInfo {
            id: id.into(),
            name: id.split('.').next().unwrap_or(id).into(),
            agent_id: agent.into(),
            is_running: true,
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
            healthy: None,
            discovery: Some(Discovery {
                name: "web".into(),
                ports: vec![DiscoveryPort {
                    number: port,
                    protocol: "tcp".into(),
                    name: "http".into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                }],
            }),
        }
    }

    fn cluster(tasks: Vec<TaskInfo>) -> Cluster {
        Cluster {
            frameworks: vec![FrameworkInfo {
                name: "marathon".into(),
                scheduler_ips: vec![],
                scheduler_port: None,
                tasks: tasks.into_iter().map(Into::into).collect(),
            }],
            agents: vec![
                AgentInfo {
                    id: "a2".into(),
                    ips: vec!["10.0.0.2".parse().unwrap()],
                    port: Some(5051),
                },
                AgentInfo {
                    id: "a3".into(),
                    ips: vec!["10.0.0.3".parse().unwrap()],
                    port: Some(5051),
                },
            ],
            leader: None,
        }
    }

    #[test]
    fn named_and_ip_vips_collect_their_backends() {
        let c = cluster(vec![
            task("web.1", "a2", "9.0.2.2", 80, &[("VIP_0", "/web:80")]),
            task("web.2", "a3", "9.0.3.2", 80, &[("VIP_0", "/web:80")]),
            task(
                "db.1",
                "a3",
                "9.0.3.3",
                5432,
                &[("VIP_0", "10.10.0.1:5432")],
            ),
            task("plain.1", "a3", "9.0.3.4", 8080, &[("OTHER", "x")]),
        ]);
        let d = desired(&c, &HashSet::new(), &Localities::default());
        assert_eq!(d.vips.len(), 2);
        let (web, (name, dns)) = d.names.iter().next().unwrap();
        assert_eq!(name.name, "web");
        assert_eq!(dns, "web.marathon.l4lb.thisdcos.directory");
        assert!(matches!(web.addr.ip(), IpAddr::V4(ip) if ip.octets()[0] == 11));
        assert_eq!(web.addr.port(), 80);
        let backends: Vec<String> = d.vips[web].iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(backends, ["9.0.2.2:80", "9.0.3.2:80"]);
        let db = Vip {
            addr: "10.10.0.1:5432".parse().unwrap(),
            protocol: Protocol::Tcp,
        };
        assert_eq!(d.vips[&db].len(), 1);
        assert!(!d.names.contains_key(&db));
    }

    #[test]
    fn an_ipv6_vip_takes_the_tasks_ipv6_addresses() {
        let mut t = task(
            "api.1",
            "a2",
            "9.0.2.2",
            8080,
            &[("VIP_0", "[fd00::10]:80")],
        );
        t.ips.push("fd00:9::2".parse().unwrap());
        let d = desired(&cluster(vec![t]), &HashSet::new(), &Localities::default());
        let (vip, backends) = d.vips.iter().next().unwrap();
        assert_eq!(vip.addr.to_string(), "[fd00::10]:80");
        assert_eq!(backends[0].addr.to_string(), "[fd00:9::2]:8080");
    }

    #[test]
    fn unhealthy_tasks_get_weight_zero_and_down_agents_lose_their_backends() {
        let mut sick = task("web.2", "a3", "9.0.3.2", 80, &[("VIP_0", "/web:80")]);
        sick.healthy = Some(false);
        let c = cluster(vec![
            task("web.1", "a2", "9.0.2.2", 80, &[("VIP_0", "/web:80")]),
            sick,
        ]);
        let d = desired(&c, &HashSet::new(), &Localities::default());
        let weights: Vec<u32> = d
            .vips
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|b| b.weight)
            .collect();
        assert_eq!(weights, [1, 0]);

        let down: HashSet<IpAddr> = ["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()]
            .into_iter()
            .collect();
        let d = desired(&c, &down, &Localities::default());
        assert_eq!(d.vips.len(), 1, "the VIP stays while tasks declare it");
        assert!(
            d.vips.values().next().unwrap().is_empty(),
            "no backend on a down agent"
        );
    }

    #[test]
    fn named_vips_get_an_ipv6_address_for_tasks_with_ipv6_addresses() {
        let mut dual = task("web.1", "a2", "9.0.2.2", 80, &[("VIP_0", "/web:80")]);
        dual.ips.push("fd01:b::2:8000:2".parse().unwrap());
        let c = cluster(vec![
            dual,
            task("web.2", "a3", "9.0.3.2", 80, &[("VIP_0", "/web:80")]),
            task("api.1", "a3", "9.0.3.3", 8080, &[("VIP_0", "/api:8080")]),
        ]);
        let d = desired(&c, &HashSet::new(), &Localities::default());
        let web = |v6: bool| -> Vec<String> {
            d.vips
                .iter()
                .find(|(vip, _)| vip.addr.is_ipv6() == v6 && vip.addr.port() == 80)
                .map(|(_, b)| b.iter().map(|b| b.addr.to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(web(false), ["9.0.2.2:80", "9.0.3.2:80"]);
        assert_eq!(web(true), ["[fd01:b::2:8000:2]:80"]);
        let v6: Vec<&Vip> = d.vips.keys().filter(|v| v.addr.is_ipv6()).collect();
        assert_eq!(v6.len(), 1, "only web has IPv6 backends: {v6:?}");
        let IpAddr::V6(ip) = v6[0].addr.ip() else {
            unreachable!("filtered")
        };
        assert_eq!(ip.segments()[..4], [0xfd01, 0xc, 0, 0], "{ip}");
        // Both addresses carry the name, for DNS.
        let names: Vec<&str> = d
            .names
            .values()
            .filter(|(n, _)| n.name == "web")
            .map(|(_, dns)| dns.as_str())
            .collect();
        assert_eq!(names, ["web.marathon.l4lb.thisdcos.directory"; 2]);
    }

    #[test]
    fn weights_come_from_the_port_label_and_bad_ones_are_reported() {
        let heavy = task(
            "web.2",
            "a3",
            "9.0.3.2",
            80,
            &[("VIP_0", "/web:80"), ("DCNET_VIP_WEIGHT", "3")],
        );
        let mut sick = task(
            "web.3",
            "a3",
            "9.0.3.3",
            80,
            &[("VIP_0", "/web:80"), ("DCNET_VIP_WEIGHT", "5")],
        );
        sick.healthy = Some(false);
        let bad = task(
            "web.4",
            "a3",
            "9.0.3.4",
            80,
            &[("VIP_0", "/web:80"), ("DCNET_VIP_WEIGHT", "heavy")],
        );
        let c = cluster(vec![
            task("web.1", "a2", "9.0.2.2", 80, &[("VIP_0", "/web:80")]),
            heavy,
            sick,
            bad,
        ]);
        let d = desired(&c, &HashSet::new(), &Localities::default());
        let weights: Vec<u32> = d
            .vips
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|b| b.weight)
            .collect();
        assert_eq!(weights, [1, 3, 0, 1], "the bad label's task keeps weight 1");
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert_eq!(d.errors[0].task, "web.4");
        assert!(d.errors[0].error.to_string().contains("DCNET_VIP_WEIGHT"));
    }

    #[test]
    fn bad_labels_are_reported_not_fatal() {
        let c = cluster(vec![
            task("bad.1", "a2", "9.0.2.2", 80, &[("VIP_0", "/web")]),
            task("web.1", "a2", "9.0.2.3", 80, &[("VIP_1", "/web:80")]),
        ]);
        let d = desired(&c, &HashSet::new(), &Localities::default());
        assert_eq!(d.vips.len(), 1);
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].task, "bad.1");
    }

    #[test]
    fn backends_nearest_the_client_node_take_its_connections() {
        let at = |zone: &str| Locality {
            region: Some("r1".into()),
            zone: Some(zone.into()),
        };
        let localities = Localities {
            client: at("z1"),
            agents: [("a2".to_owned(), at("z1")), ("a3".to_owned(), at("z2"))]
                .into_iter()
                .collect(),
        };
        let c = cluster(vec![
            task("web.1", "a2", "9.0.2.2", 80, &[("VIP_0", "/web:80")]),
            task("web.2", "a3", "9.0.3.2", 80, &[("VIP_0", "/web:80")]),
            task(
                "db.1",
                "a3",
                "9.0.3.3",
                5432,
                &[("VIP_0", "/db:5432"), (locality::LABEL, "any")],
            ),
            task(
                "db.2",
                "a2",
                "9.0.2.3",
                5432,
                &[("VIP_0", "/db:5432"), (locality::LABEL, "any")],
            ),
        ]);
        let d = desired(&c, &HashSet::new(), &localities);
        let weights = |port: u16| -> Vec<(String, u32)> {
            d.vips
                .iter()
                .find(|(v, _)| v.addr.port() == port)
                .map(|(_, b)| b.iter().map(|b| (b.addr.to_string(), b.weight)).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            weights(80),
            [("9.0.2.2:80".to_owned(), 1), ("9.0.3.2:80".to_owned(), 0)],
            "the zone's own backend"
        );
        assert_eq!(d.spares.len(), 1, "{:?}", d.spares);
        assert_eq!(d.localities[&"9.0.3.2:80".parse().unwrap()], at("z2"));
        assert!(
            weights(5432).iter().all(|(_, w)| *w == 1),
            "opted out: every backend"
        );

        // The zone's backend fails its checks: the other zone's spills over.
        let mut c = c;
        let mut sick = task("web.1", "a2", "9.0.2.2", 80, &[("VIP_0", "/web:80")]);
        sick.healthy = Some(false);
        c.frameworks[0].tasks[0] = sick.into();
        let d = desired(&c, &HashSet::new(), &localities);
        let web = d.vips.iter().find(|(v, _)| v.addr.port() == 80).unwrap().1;
        let weights: Vec<u32> = web.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [0, 1]);
        assert!(d.spares.is_empty());
    }

    #[test]
    fn protocols_of_a_port() {
        assert_eq!(protocols("tcp"), [Protocol::Tcp]);
        assert_eq!(protocols("udp,tcp"), [Protocol::Tcp, Protocol::Udp]);
        assert_eq!(protocols(""), [Protocol::Tcp]);
        assert_eq!(protocols("UDP"), [Protocol::Udp]);
    }
}
