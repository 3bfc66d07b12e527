//! Mesos-DNS's records, generated from a normalized view of the cluster ([`Cluster`]) that both
//! a Mesos master's state ([`crate::mesos`]) and dcnet's own task model map onto. Pure: host
//! names are resolved by the caller (see [`crate::mesos::cluster`]'s resolver), nothing here does
//! I/O.
//!
//! For domain `mesos` (every name lower-case, fully qualified):
//!
//! | name | type | data |
//! |---|---|---|
//! | `<task>.<fw>.mesos.` and `<task>-<hash>-<agent>.<fw>.mesos.` | A/AAAA | every address of the first IP source that has any (Mesos-DNS's rule) |
//! | the same under `.slave.` | A/AAAA | the agent's addresses |
//! | `_<task>._tcp\|_udp.<fw>[.slave].mesos.` | SRV | `<canonical>.slave.mesos.`, each port resource (only under `.slave.` with discovery info) |
//! | `_<task>._<proto>.<fw>.mesos.`, `_<port>._<task>._<proto>.<fw>.mesos.` | SRV | `<canonical>.mesos.`, each discovery port |
//! | `<fw>.mesos.` / `_framework._tcp.<fw>.mesos.` | A/AAAA / SRV | the scheduler's address / port |
//! | `slave.mesos.` / `_slave._tcp.mesos.` | A/AAAA / SRV | every agent / its port |
//! | `leader.mesos.`, `master.mesos.`, `master<N>.mesos.`, `_leader._tcp\|_udp.mesos.` | A/AAAA, SRV | the masters, in configured order, the leader appended if absent |
//! | the SOA `mname` | A/AAAA | the server's listen addresses |
//!
//! Only running tasks on known agents get records. With discovery info, the discovery name is
//! the task label, and (as Mesos-DNS still does) its raw form too when that is a valid name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::name::{LabelSpec, agent_id_tail, domain_fragment, task_hash};

// ---------------------------------------------------------------------------------------------
// Input

/// What records are generated from.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub frameworks: Vec<FrameworkInfo>,
    pub agents: Vec<AgentInfo>,
    /// The leading master's address and port, if known.
    pub leader: Option<(IpAddr, u16)>,
}

/// A framework and its tasks.
#[derive(Debug, Clone, Default)]
pub struct FrameworkInfo {
    /// As the framework named itself (sanitised here).
    pub name: String,
    /// The scheduler's addresses, and its port if it has one.
    pub scheduler_ips: Vec<IpAddr>,
    pub scheduler_port: Option<u16>,
    /// Shared with whoever else keeps them (the agent's facts, the record contributions).
    pub tasks: Vec<Arc<TaskInfo>>,
}

/// An agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    /// At most one IPv4 and one IPv6 address.
    pub ips: Vec<IpAddr>,
    pub port: Option<u16>,
}

/// A task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: String,
    pub name: String,
    /// Shared: hundreds of tasks run on one agent (see the facts decoder's interning).
    pub agent_id: Arc<str>,
    pub is_running: bool,
    /// Addresses in IP source priority order (the generator keeps the first of each family).
    pub ips: Vec<IpAddr>,
    /// Host ports of the task's port resources.
    pub ports: Vec<u16>,
    /// Health-check result; `None` without health checks. Not used for names; the load
    /// balancer gives unhealthy backends weight 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    pub discovery: Option<Discovery>,
}

/// Service-discovery info of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Discovery {
    pub name: String,
    pub ports: Vec<DiscoveryPort>,
}

/// A discovery port: number, protocol (`tcp`, `udp`; empty for both) and optional name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DiscoveryPort {
    pub number: u16,
    pub protocol: String,
    pub name: String,
    /// The port's labels (`VIP_0` = `/web:80`), in order. Not used for names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
}

/// Settings that shape the names.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Domain without trailing dot, e.g. `mesos`.
    pub domain: String,
    pub spec: LabelSpec,
    /// Configured masters, `(address, port)`, in order.
    pub masters: Vec<(IpAddr, u16)>,
    /// The SOA mname (the server's own name), fully qualified.
    pub mname: String,
    /// The addresses the server answers on, for its own name.
    pub listen_ips: Vec<IpAddr>,
}

// ---------------------------------------------------------------------------------------------
// Output

/// An SRV record's data (priority 0 and the configured weight are added when serving).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SrvTarget {
    /// Fully qualified target name. Shared: a task's SRV records (`_tcp` and `_udp`, by service
    /// and by port name) point at one or two names of its own, which are kept once.
    pub target: Arc<str>,
    pub port: u16,
}

/// Every record, by lower-case fully qualified name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSet {
    pub a: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    pub aaaa: BTreeMap<String, BTreeSet<Ipv6Addr>>,
    pub srv: BTreeMap<String, BTreeSet<SrvTarget>>,
    /// What each task contributed, for Mesos-DNS's `/v1/enumerate`.
    pub enumeration: Enumeration,
}

/// `/v1/enumerate`: frameworks, their tasks, and each task's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Enumeration {
    pub frameworks: Vec<EnumeratedFramework>,
}

/// One framework of the enumeration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnumeratedFramework {
    pub name: String,
    pub tasks: Vec<EnumeratedTask>,
}

/// One task of the enumeration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnumeratedTask {
    pub name: String,
    pub id: String,
    pub records: Vec<EnumeratedRecord>,
}

/// One record of a task, as Mesos-DNS lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnumeratedRecord {
    pub name: String,
    /// An address, or `target:port` for SRV.
    pub host: String,
    pub rtype: &'static str,
}

impl RecordSet {
    /// Adds an address record; returns whether it was new.
    pub fn add_ip(&mut self, name: &str, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.a.entry(name.to_owned()).or_default().insert(v4),
            IpAddr::V6(v6) => self.aaaa.entry(name.to_owned()).or_default().insert(v6),
        }
    }

    /// Adds an SRV record; returns whether it was new.
    pub fn add_srv(&mut self, name: &str, target: &str, port: u16) -> bool {
        self.srv
            .entry(name.to_owned())
            .or_default()
            .insert(SrvTarget {
                target: Arc::from(target),
                port,
            })
    }

    /// Number of individual records.
    pub fn len(&self) -> usize {
        self.a.values().map(BTreeSet::len).sum::<usize>()
            + self.aaaa.values().map(BTreeSet::len).sum::<usize>()
            + self.srv.values().map(BTreeSet::len).sum::<usize>()
    }

    /// Whether there are no records at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every record in master-file format (RFC 1035 §5), sorted by name then type,
    /// SRV with priority 0 and `srv_weight`.
    pub fn write_zone_file(
        &self,
        out: &mut impl std::fmt::Write,
        ttl: u32,
        srv_weight: u16,
    ) -> std::fmt::Result {
        let mut lines: Vec<(&str, u8, String)> = Vec::with_capacity(self.len());
        for (name, ips) in &self.a {
            lines.extend(ips.iter().map(|ip| (name.as_str(), 0, format!("A\t{ip}"))));
        }
        for (name, ips) in &self.aaaa {
            lines.extend(
                ips.iter()
                    .map(|ip| (name.as_str(), 1, format!("AAAA\t{ip}"))),
            );
        }
        for (name, targets) in &self.srv {
            lines.extend(targets.iter().map(|t| {
                (
                    name.as_str(),
                    2,
                    format!("SRV\t0 {srv_weight} {} {}", t.port, t.target),
                )
            }));
        }
        lines.sort();
        for (name, _, data) in lines {
            writeln!(out, "{name}\t{ttl}\tIN\t{data}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Generation

/// One record: its owner (lower-case, fully qualified) and its data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    pub name: String,
    pub data: RecordData,
}

/// A record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv(SrvTarget),
}

impl Record {
    /// An A or AAAA record.
    pub fn ip(name: String, ip: IpAddr) -> Self {
        let data = match ip {
            IpAddr::V4(v4) => RecordData::A(v4),
            IpAddr::V6(v6) => RecordData::Aaaa(v6),
        };
        Self { name, data }
    }

    /// An SRV record; `target` is shared (see [`SrvTarget::target`]).
    pub fn srv(name: String, target: &Arc<str>, port: u16) -> Self {
        let target = SrvTarget {
            target: target.clone(),
            port,
        };
        Self {
            name,
            data: RecordData::Srv(target),
        }
    }
}

impl RecordSet {
    /// Adds a record; returns whether it was new.
    pub fn add(&mut self, record: &Record) -> bool {
        match &record.data {
            RecordData::A(ip) => self.add_ip(&record.name, IpAddr::V4(*ip)),
            RecordData::Aaaa(ip) => self.add_ip(&record.name, IpAddr::V6(*ip)),
            RecordData::Srv(t) => self.add_srv(&record.name, &t.target, t.port),
        }
    }
}

/// What records are made of a cluster: those of the cluster as a whole, and each task's own.
/// The `mesos` zone's are made by its [`Settings`], dcos-dns's by [`crate::dcos::DcosRecords`];
/// a pair of sources makes both.
pub trait RecordSource {
    /// Records of the cluster as a whole: frameworks, agents, masters, the server itself.
    fn shared(&self, cluster: &Cluster, out: &mut Vec<Record>);

    /// The records of one running task on a known agent, made from nothing but the task, its
    /// framework's name and the agent's addresses (the first of each family), so that a task
    /// whose inputs did not change keeps its records.
    fn task(&self, framework: &str, task: &TaskInfo, agent_ips: &[IpAddr], out: &mut Vec<Record>);
}

impl<A: RecordSource, B: RecordSource> RecordSource for (A, B) {
    fn shared(&self, cluster: &Cluster, out: &mut Vec<Record>) {
        self.0.shared(cluster, out);
        self.1.shared(cluster, out);
    }

    fn task(&self, framework: &str, task: &TaskInfo, agent_ips: &[IpAddr], out: &mut Vec<Record>) {
        self.0.task(framework, task, agent_ips, out);
        self.1.task(framework, task, agent_ips, out);
    }
}

impl<T: RecordSource + ?Sized> RecordSource for &T {
    fn shared(&self, cluster: &Cluster, out: &mut Vec<Record>) {
        (**self).shared(cluster, out);
    }

    fn task(&self, framework: &str, task: &TaskInfo, agent_ips: &[IpAddr], out: &mut Vec<Record>) {
        (**self).task(framework, task, agent_ips, out);
    }
}

/// Every address of each agent, by id (looked up once per task on every
/// update, hence the quick hasher).
pub fn agent_addresses(
    cluster: &Cluster,
) -> HashMap<&str, Vec<IpAddr>, foldhash::fast::RandomState> {
    cluster
        .agents
        .iter()
        .map(|a| (a.id.as_str(), distinct(&a.ips)))
        .collect()
}

/// Generates every record of `cluster` for the `mesos` zone.
pub fn generate(cluster: &Cluster, settings: &Settings) -> RecordSet {
    generate_from(cluster, settings)
}

/// Every record `source` makes of `cluster`, with the enumeration of every running task on a
/// known agent and the records it added.
pub fn generate_from(cluster: &Cluster, source: &impl RecordSource) -> RecordSet {
    let mut set = RecordSet::default();
    let mut records = Vec::new();
    source.shared(cluster, &mut records);
    for record in records.drain(..) {
        set.add(&record);
    }
    let agents = agent_addresses(cluster);
    for f in &cluster.frameworks {
        let mut enumerated = EnumeratedFramework {
            name: f.name.clone(),
            tasks: Vec::new(),
        };
        for task in &f.tasks {
            let Some(agent_ips) = agents.get(&*task.agent_id) else {
                continue;
            };
            if !task.is_running {
                continue;
            }
            source.task(&f.name, task, agent_ips, &mut records);
            // As Mesos-DNS lists them: each record once, under the first task that made it.
            let listed = records
                .drain(..)
                .filter(|r| set.add(r))
                .map(|r| EnumeratedRecord {
                    host: match &r.data {
                        RecordData::A(ip) => ip.to_string(),
                        RecordData::Aaaa(ip) => ip.to_string(),
                        RecordData::Srv(t) => format!("{}:{}", t.target, t.port),
                    },
                    rtype: match r.data {
                        RecordData::A(_) => "A",
                        RecordData::Aaaa(_) => "AAAA",
                        RecordData::Srv(_) => "SRV",
                    },
                    name: r.name,
                })
                .collect();
            enumerated.tasks.push(EnumeratedTask {
                name: task.name.clone(),
                id: task.id.clone(),
                records: listed,
            });
        }
        set.enumeration.frameworks.push(enumerated);
    }
    set
}

/// The `mesos` zone's records.
impl RecordSource for Settings {
    fn shared(&self, cluster: &Cluster, out: &mut Vec<Record>) {
        let tail = self.tail();
        self.frameworks(cluster, &tail, out);
        self.agents(cluster, &tail, out);
        self.listener(out);
        self.masters(cluster, &tail, out);
    }

    fn task(&self, framework: &str, task: &TaskInfo, agent_ips: &[IpAddr], out: &mut Vec<Record>) {
        let fname = domain_fragment(framework, self.spec);
        if fname.is_empty() {
            return;
        }
        let tail = self.tail();
        for label in task_labels(task, self.spec) {
            self.task_records(task, &label, &fname, &tail, agent_ips, out);
        }
    }
}

impl Settings {
    /// `.<domain>.`
    fn tail(&self) -> String {
        format!(
            ".{}.",
            self.domain.trim_end_matches('.').to_ascii_lowercase()
        )
    }

    fn frameworks(&self, cluster: &Cluster, tail: &str, out: &mut Vec<Record>) {
        for f in &cluster.frameworks {
            let fname = domain_fragment(&f.name, self.spec);
            if fname.is_empty() || f.scheduler_ips.is_empty() {
                continue;
            }
            let name = format!("{fname}{tail}");
            for ip in distinct(&f.scheduler_ips) {
                out.push(Record::ip(name.clone(), ip));
            }
            if let Some(port) = f.scheduler_port {
                let target = Arc::from(name.as_str());
                out.push(Record::srv(
                    format!("_framework._tcp.{name}"),
                    &target,
                    port,
                ));
            }
        }
    }

    fn agents(&self, cluster: &Cluster, tail: &str, out: &mut Vec<Record>) {
        let name = format!("slave{tail}");
        let target: Arc<str> = Arc::from(name.as_str());
        for agent in &cluster.agents {
            let ips = distinct(&agent.ips);
            for &ip in &ips {
                out.push(Record::ip(name.clone(), ip));
            }
            if let (Some(port), false) = (agent.port, ips.is_empty()) {
                out.push(Record::srv(format!("_slave._tcp{tail}"), &target, port));
            }
        }
    }

    fn listener(&self, out: &mut Vec<Record>) {
        let mname = fqdn(&self.mname);
        for &ip in &self.listen_ips {
            out.push(Record::ip(mname.clone(), ip));
        }
    }

    fn masters(&self, cluster: &Cluster, tail: &str, out: &mut Vec<Record>) {
        let Some((leader_ip, leader_port)) = cluster.leader else {
            return;
        };
        let leader = format!("leader{tail}");
        let all = format!("master{tail}");
        out.push(Record::ip(leader.clone(), leader_ip));
        out.push(Record::ip(all.clone(), leader_ip));
        let target: Arc<str> = Arc::from(leader.as_str());
        for proto in ["_tcp", "_udp"] {
            out.push(Record::srv(
                format!("_leader.{proto}{tail}"),
                &target,
                leader_port,
            ));
        }
        // masterN follows the configured order, so a new leader does not renumber them; the
        // leader gets the next index if it is not configured.
        let mut listed = vec![leader_ip];
        let mut index = 0;
        let mut leader_numbered = false;
        for &(ip, port) in &self.masters {
            let is_leader = (ip, port) == (leader_ip, leader_port);
            if is_leader {
                if leader_numbered {
                    continue;
                }
                leader_numbered = true;
            } else if listed.contains(&ip) {
                continue; // listed twice
            } else {
                listed.push(ip);
                out.push(Record::ip(all.clone(), ip));
            }
            out.push(Record::ip(format!("master{index}{tail}"), ip));
            index += 1;
        }
        if !leader_numbered {
            out.push(Record::ip(format!("master{index}{tail}"), leader_ip));
        }
    }

    fn task_records(
        &self,
        task: &TaskInfo,
        label: &str,
        fname: &str,
        tail: &str,
        agent_ips: &[IpAddr],
        out: &mut Vec<Record>,
    ) {
        let canonical = format!(
            "{label}-{}-{}.{fname}",
            task_hash(&task.id),
            agent_id_tail(&task.agent_id)
        );
        let short = format!("{label}.{fname}");
        for ip in distinct(&task.ips) {
            out.push(Record::ip(format!("{short}{tail}"), ip));
            out.push(Record::ip(format!("{canonical}{tail}"), ip));
        }
        for &ip in agent_ips {
            out.push(Record::ip(format!("{short}.slave{tail}"), ip));
            out.push(Record::ip(format!("{canonical}.slave{tail}"), ip));
        }

        // Port resources point at the agent; without discovery info also outside `.slave.`.
        let has_discovery = task.discovery.as_ref().is_some_and(|d| !d.name.is_empty());
        let agent_target: Arc<str> = Arc::from(format!("{canonical}.slave{tail}"));
        for &port in &task.ports {
            for proto in ["_tcp", "_udp"] {
                out.push(Record::srv(
                    format!("_{label}.{proto}.{fname}.slave{tail}"),
                    &agent_target,
                    port,
                ));
                if !has_discovery {
                    out.push(Record::srv(
                        format!("_{label}.{proto}.{fname}{tail}"),
                        &agent_target,
                        port,
                    ));
                }
            }
        }
        // Discovery ports point at the task itself, and by name when named.
        let Some(discovery) = task.discovery.as_ref().filter(|_| has_discovery) else {
            return;
        };
        let task_target: Arc<str> = Arc::from(format!("{canonical}{tail}"));
        for port in &discovery.ports {
            let proto = self.spec.label(&port.protocol);
            let protos: Vec<String> = if proto.is_empty() {
                vec!["_tcp".into(), "_udp".into()]
            } else {
                vec![format!("_{proto}")]
            };
            let port_name = self.spec.label(&port.name);
            for proto in &protos {
                let name = format!("_{label}.{proto}.{fname}{tail}");
                out.push(Record::srv(name.clone(), &task_target, port.number));
                if !port_name.is_empty() {
                    out.push(Record::srv(
                        format!("_{port_name}.{name}"),
                        &task_target,
                        port.number,
                    ));
                }
            }
        }
    }
}

/// The labels a task's records are made under: its sanitised name, or with discovery info the
/// sanitised discovery name preceded, as Mesos-DNS still does, by the raw discovery name when
/// that is itself a valid (possibly dotted) DNS name.
fn task_labels(task: &TaskInfo, spec: LabelSpec) -> Vec<String> {
    let Some(discovery) = task.discovery.as_ref().filter(|d| !d.name.is_empty()) else {
        let label = spec.label(&task.name);
        return if label.is_empty() {
            vec![]
        } else {
            vec![label]
        };
    };
    let mut labels = Vec::new();
    let raw = discovery.name.to_ascii_lowercase();
    let raw_is_valid = raw.split('.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if raw_is_valid {
        labels.push(raw);
    }
    let label = spec.label(&discovery.name);
    if !label.is_empty() && !labels.contains(&label) {
        labels.push(label);
    }
    labels
}

/// `ips` in their order, each once: a host name may resolve to an address twice, and
/// Mesos-DNS answers every address of a host, agent or task once.
pub fn distinct(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(ips.len());
    for &ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// `name` lower-cased with a trailing dot.
pub fn fqdn(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}
