//! Policies compiled against what runs: each app an identity, each task address mapped to its
//! app's identity, and the allowed (direction, subject, peer, port) entries the datapath looks
//! up per new flow. [`Compiled::allows`] is the reference verdict the datapath must agree with.
//!
//! Identities are per app (its labels are the app's). They are derived from the app id (a
//! hash, moved on past collisions in id order), so an app keeps its identity while others come
//! and go: the maps change by what changed. Every node compiles from its own facts and looks
//! up only its own maps, so identities need not agree across nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;
use sha2::Digest as _;

use crate::model::{Peer, Policy, PortSpec, Protocol, Rule};

/// An app's identity in the datapath's maps.
pub type Identity = u32;

/// The identity of "any peer" in an allow entry (a rule without `from`/`to`).
pub const ANY: Identity = u32::MAX;
/// The identity of an address that is no task's: it matches CIDR entries only.
pub const WORLD: Identity = 0;
/// The identity of the enforcing node's own addresses ([`Compiled::set_hosts`]): always let
/// in, since a task's health checks come from its node.
pub const HOST: Identity = 1;

/// A running task as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub app: String,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
}

/// A VIP's backends, by the label that declares it (`/db:5432` or `10.1.2.3:80`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub label: String,
    pub protocol: Protocol,
    pub backends: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

/// The ports an entry allows: every port of every protocol, of one protocol, or one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ports {
    Any,
    Protocol(Protocol),
    Port(Protocol, u16),
}

impl Ports {
    fn of(spec: &PortSpec) -> Self {
        match spec.port {
            Some(port) => Ports::Port(spec.protocol, port),
            None => Ports::Protocol(spec.protocol),
        }
    }

    /// The keys a flow of `protocol` to `port` is looked up under, most specific first.
    pub fn keys(protocol: Protocol, port: u16) -> [Ports; 3] {
        [
            Ports::Port(protocol, port),
            Ports::Protocol(protocol),
            Ports::Any,
        ]
    }
}

/// An allow entry with a peer identity ([`ANY`] for any peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Allow {
    pub direction: Direction,
    pub subject: Identity,
    pub peer: Identity,
    pub ports: Ports,
}

/// An allow entry with a peer network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowNet {
    pub direction: Direction,
    pub subject: Identity,
    pub net: IpNetwork,
    pub ports: Ports,
}

/// Policies against what runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    /// App id → identity, for every app with a running task.
    pub apps: BTreeMap<String, Identity>,
    /// Task address → its app's identity.
    pub addresses: BTreeMap<IpAddr, Identity>,
    /// Identities whose ingress (egress) only allowed flows may take.
    pub isolated: BTreeSet<(Direction, Identity)>,
    pub allow: BTreeSet<Allow>,
    pub allow_net: BTreeSet<AllowNet>,
    /// Per policy id, the identities it selects (for `dcnet policy list` and its counters).
    pub selects: BTreeMap<String, BTreeSet<Identity>>,
}

/// The identity of app `id`: a hash of the id, past the reserved ones and `taken`.
fn identity_of(id: &str, taken: &BTreeSet<Identity>) -> Identity {
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut identity = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    while identity == WORLD || identity == HOST || identity == ANY || taken.contains(&identity) {
        identity = identity.wrapping_add(1);
    }
    identity
}

impl Compiled {
    /// Compiles `policies` against `tasks` and `vips`.
    pub fn new(policies: &[Policy], tasks: &[Task], vips: &[Vip]) -> Self {
        let mut out = Compiled::default();
        // Each app once, with its labels (an app's tasks share them).
        let mut apps: BTreeMap<&str, &BTreeMap<String, String>> = BTreeMap::new();
        for task in tasks {
            apps.entry(&task.app).or_insert(&task.labels);
        }
        let mut taken = BTreeSet::new();
        for id in apps.keys() {
            let identity = identity_of(id, &taken);
            taken.insert(identity);
            out.apps.insert((*id).to_owned(), identity);
        }
        for task in tasks {
            for address in &task.addresses {
                out.addresses.insert(*address, out.apps[&task.app]);
            }
        }
        let identities = out.apps.clone();
        let selected = |s: &crate::model::Selector| -> BTreeSet<Identity> {
            apps.iter()
                .filter(|(id, labels)| s.matches(id, labels))
                .map(|(id, _)| identities[*id])
                .collect()
        };
        for policy in policies {
            let subjects = selected(&policy.selector);
            out.selects.insert(policy.id.clone(), subjects.clone());
            for (direction, rules) in [
                (Direction::Ingress, &policy.ingress),
                (Direction::Egress, &policy.egress),
            ] {
                let Some(rules) = rules else { continue };
                for &subject in &subjects {
                    out.isolated.insert((direction, subject));
                    for rule in rules {
                        out.add_rule(direction, subject, rule, &selected, vips);
                    }
                }
            }
        }
        out
    }

    fn add_rule(
        &mut self,
        direction: Direction,
        subject: Identity,
        rule: &Rule,
        selected: &impl Fn(&crate::model::Selector) -> BTreeSet<Identity>,
        vips: &[Vip],
    ) {
        let peers = match direction {
            Direction::Ingress => &rule.from,
            Direction::Egress => &rule.to,
        };
        let ports: Vec<Ports> = if rule.ports.is_empty() {
            vec![Ports::Any]
        } else {
            rule.ports.iter().map(Ports::of).collect()
        };
        if peers.is_empty() {
            for &ports in &ports {
                self.allow.insert(Allow {
                    direction,
                    subject,
                    peer: ANY,
                    ports,
                });
            }
            return;
        }
        for peer in peers {
            match peer {
                Peer::Apps(selector) => {
                    for identity in selected(selector) {
                        for &ports in &ports {
                            self.allow.insert(Allow {
                                direction,
                                subject,
                                peer: identity,
                                ports,
                            });
                        }
                    }
                }
                Peer::Cidr { cidr } => {
                    for &ports in &ports {
                        self.allow_net.insert(AllowNet {
                            direction,
                            subject,
                            net: *cidr,
                            ports,
                        });
                    }
                }
                // A VIP's backends, at their own port unless the rule names ports.
                // A named VIP may be written with or without its leading `/`, and has an IPv4
                // and an IPv6 entry when its tasks have both.
                Peer::Vip { vip: label } => {
                    let same =
                        |v: &&Vip| v.label.trim_start_matches('/') == label.trim_start_matches('/');
                    for backend in vips
                        .iter()
                        .filter(same)
                        .flat_map(|v| v.backends.iter().map(move |b| (v.protocol, b)))
                    {
                        let (protocol, backend) = backend;
                        let at: Vec<Ports> = if rule.ports.is_empty() {
                            vec![Ports::Port(protocol, backend.port())]
                        } else {
                            ports.clone()
                        };
                        for ports in at {
                            match self.addresses.get(&backend.ip()) {
                                Some(&identity) => {
                                    self.allow.insert(Allow {
                                        direction,
                                        subject,
                                        peer: identity,
                                        ports,
                                    });
                                }
                                None => {
                                    self.allow_net.insert(AllowNet {
                                        direction,
                                        subject,
                                        net: IpNetwork::from(backend.ip()),
                                        ports,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Gives the enforcing node's own `addresses` the [`HOST`] identity (an address a task
    /// has stays the task's).
    pub fn set_hosts(&mut self, addresses: impl IntoIterator<Item = IpAddr>) {
        self.addresses.retain(|_, identity| *identity != HOST);
        for address in addresses {
            self.addresses.entry(address).or_insert(HOST);
        }
    }

    /// The identity of `address` ([`WORLD`] if no task has it).
    pub fn identity(&self, address: IpAddr) -> Identity {
        self.addresses.get(&address).copied().unwrap_or(WORLD)
    }

    /// Whether a new flow from `src` to `dst` (`protocol`, destination `port`) may pass the
    /// `direction` hook: egress is checked for the sending task, ingress for the receiving one.
    /// A task talking to itself and its node talking to it always may.
    pub fn allows(
        &self,
        direction: Direction,
        (src, dst): (IpAddr, IpAddr),
        protocol: Protocol,
        port: u16,
    ) -> bool {
        let (subject, peer) = match direction {
            Direction::Ingress => (dst, src),
            Direction::Egress => (src, dst),
        };
        let subject = self.identity(subject);
        if subject == WORLD
            || subject == HOST
            || src == dst
            || !self.isolated.contains(&(direction, subject))
        {
            return true;
        }
        let peer_identity = self.identity(peer);
        if direction == Direction::Ingress && peer_identity == HOST {
            return true;
        }
        Ports::keys(protocol, port).into_iter().any(|ports| {
            let by_identity = |p| {
                self.allow.contains(&Allow {
                    direction,
                    subject,
                    peer: p,
                    ports,
                })
            };
            by_identity(ANY)
                || (peer_identity != WORLD && by_identity(peer_identity))
                || self.allow_net.iter().any(|a| {
                    a.direction == direction
                        && a.subject == subject
                        && a.ports == ports
                        && a.net.contains(peer)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn task(app: &str, labels: &[(&str, &str)], addresses: &[&str]) -> Task {
        Task {
            app: app.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            addresses: addresses.iter().map(|a| ip(a)).collect(),
        }
    }

    fn world() -> Vec<Task> {
        vec![
            task("/web", &[("tier", "front")], &["9.0.1.2", "fd01:b::1:2"]),
            task("/web", &[("tier", "front")], &["9.0.2.2"]),
            task("/client", &[], &["9.0.1.3"]),
            task("/other", &[("role", "lb")], &["9.0.2.3"]),
            task("/db", &[], &["9.0.3.2"]),
        ]
    }

    fn policies(json: &[&str]) -> Vec<Policy> {
        json.iter().map(|j| Policy::parse(j).unwrap()).collect()
    }

    const TCP: Protocol = Protocol::Tcp;
    const UDP: Protocol = Protocol::Udp;

    #[test]
    fn without_policies_everything_passes() {
        let c = Compiled::new(&[], &world(), &[]);
        assert!(c.allows(Direction::Ingress, (ip("9.0.1.3"), ip("9.0.1.2")), TCP, 80));
        assert!(c.isolated.is_empty());
        assert_eq!(c.apps.len(), 4);
        assert_eq!(c.identity(ip("9.0.1.2")), c.identity(ip("9.0.2.2")));
        assert_eq!(c.identity(ip("fd01:b::1:2")), c.apps["/web"]);
        assert_eq!(c.identity(ip("1.1.1.1")), WORLD);
    }

    #[test]
    fn the_node_itself_may_always_reach_its_tasks_and_a_task_itself() {
        let mut c = Compiled::new(
            &policies(&[r#"{"id": "closed", "selector": {"apps": ["/web"]},
                "ingress": [], "egress": []}"#]),
            &world(),
            &[],
        );
        c.set_hosts([ip("9.0.1.1"), ip("10.0.0.5"), ip("9.0.1.2")]);
        assert_eq!(c.identity(ip("9.0.1.1")), HOST);
        // A task's address stays the task's.
        assert_eq!(c.identity(ip("9.0.1.2")), c.apps["/web"]);
        assert!(c.allows(Direction::Ingress, (ip("9.0.1.1"), ip("9.0.1.2")), TCP, 80));
        assert!(c.allows(Direction::Ingress, (ip("9.0.1.2"), ip("9.0.1.2")), TCP, 80));
        assert!(!c.allows(Direction::Ingress, (ip("9.0.1.3"), ip("9.0.1.2")), TCP, 80));
        // Only into the task: what the task sends its node is up to its egress rules.
        assert!(!c.allows(Direction::Egress, (ip("9.0.1.2"), ip("9.0.1.1")), UDP, 53));
        c.set_hosts([ip("10.0.0.6")]);
        assert_eq!(c.identity(ip("9.0.1.1")), WORLD);
    }

    #[test]
    fn a_selected_app_takes_only_what_is_allowed() {
        let c = Compiled::new(
            &policies(&[r#"{"id": "web-in", "selector": {"apps": ["/web"]},
                "ingress": [{"from": [{"apps": ["/client"]}, {"labels": {"role": "lb"}}],
                             "ports": [{"protocol": "tcp", "port": 80}]},
                            {"from": [{"cidr": "10.200.0.0/24"}], "ports": [{"protocol": "udp"}]}]}"#]),
            &world(),
            &[],
        );
        let inbound = |src: &str, dst: &str, proto, port| {
            c.allows(Direction::Ingress, (ip(src), ip(dst)), proto, port)
        };
        // Allowed apps, on the allowed port, to every task and address of /web.
        assert!(inbound("9.0.1.3", "9.0.1.2", TCP, 80));
        assert!(inbound("9.0.1.3", "9.0.2.2", TCP, 80));
        assert!(inbound("9.0.2.3", "fd01:b::1:2", TCP, 80));
        // Another port, another protocol, another app, an outsider: no.
        assert!(!inbound("9.0.1.3", "9.0.1.2", TCP, 81));
        assert!(!inbound("9.0.1.3", "9.0.1.2", UDP, 80));
        assert!(!inbound("9.0.3.2", "9.0.1.2", TCP, 80));
        assert!(!inbound("1.2.3.4", "9.0.1.2", TCP, 80));
        // The CIDR rule: any UDP port from the underlay.
        assert!(inbound("10.200.0.7", "9.0.1.2", UDP, 5353));
        assert!(!inbound("10.200.0.7", "9.0.1.2", TCP, 80));
        // Egress is not isolated by an ingress-only policy; other apps are open.
        assert!(c.allows(Direction::Egress, (ip("9.0.1.2"), ip("1.1.1.1")), TCP, 443));
        assert!(inbound("9.0.1.2", "9.0.3.2", TCP, 5432));
        assert_eq!(c.selects["web-in"], [c.apps["/web"]].into());
    }

    #[test]
    fn empty_rules_deny_all_and_a_rule_without_peers_allows_any() {
        let c = Compiled::new(
            &policies(&[
                r#"{"id": "db-closed", "selector": {"apps": ["/db"]}, "ingress": []}"#,
                r#"{"id": "client-out", "selector": {"apps": ["/client"]},
                    "egress": [{"ports": [{"protocol": "udp", "port": 53}]}]}"#,
            ]),
            &world(),
            &[],
        );
        assert!(!c.allows(
            Direction::Ingress,
            (ip("9.0.1.2"), ip("9.0.3.2")),
            TCP,
            5432
        ));
        assert!(c.allows(Direction::Egress, (ip("9.0.1.3"), ip("10.0.0.53")), UDP, 53));
        assert!(!c.allows(Direction::Egress, (ip("9.0.1.3"), ip("9.0.1.2")), TCP, 80));
    }

    #[test]
    fn policies_add_up_and_a_vip_allows_its_backends() {
        let vips = [Vip {
            label: "/db:5432".into(),
            protocol: TCP,
            backends: vec![
                "9.0.3.2:5432".parse().unwrap(),
                "10.0.9.9:5432".parse().unwrap(),
            ],
        }];
        let c = Compiled::new(
            &policies(&[
                r#"{"id": "a", "selector": {"labels": {"tier": "front"}},
                    "egress": [{"to": [{"vip": "db:5432"}]}]}"#,
                r#"{"id": "b", "selector": {"apps": ["/web"]},
                    "egress": [{"to": [{"cidr": "192.0.2.0/24"}], "ports": [{"port": 443}]}]}"#,
            ]),
            &world(),
            &vips,
        );
        let out =
            |dst: &str, port| c.allows(Direction::Egress, (ip("9.0.2.2"), ip(dst)), TCP, port);
        // Through the VIP (the connection arrives translated: the backend's address and port).
        assert!(out("9.0.3.2", 5432));
        assert!(
            out("10.0.9.9", 5432),
            "a backend that is no task, by its address"
        );
        assert!(!out("9.0.3.2", 22));
        // The second policy adds to the first.
        assert!(out("192.0.2.10", 443));
        assert!(!out("192.0.2.10", 80));
        assert!(!out("9.0.1.3", 80));
    }

    #[test]
    fn identities_stay_while_other_apps_come_and_go() {
        let before = Compiled::new(&[], &world(), &[]);
        let mut more = world();
        more.push(task("/new", &[], &["9.0.4.2"]));
        let after = Compiled::new(&[], &more[1..], &[]);
        for app in ["/web", "/client", "/db"] {
            assert_eq!(before.apps[app], after.apps[app], "{app}");
        }
        assert!(!before.apps.values().any(|&i| i == WORLD || i == ANY));
    }
}
