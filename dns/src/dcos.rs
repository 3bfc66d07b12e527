//! The dcos-dns zones (Spartan's), generated from the same [`Cluster`] as Mesos-DNS's records.
//!
//! Under `thisdcos.directory` (TTL 5):
//! - `<task>.<framework>.agentip.dcos.thisdcos.directory`: the agent's addresses;
//! - `<task>.<framework>.containerip.dcos.thisdcos.directory`: the task's own addresses;
//! - `<task>.<framework>.autoip.dcos.thisdcos.directory`: the agent's if the task maps host
//!   ports, else the task's own;
//! - `leader.dcos.thisdcos.directory`, `master.dcos.thisdcos.directory`: the leading master, and
//!   every master;
//! - `thisnode.thisdcos.directory`: the node answering.
//!
//! And `ready.spartan` → 127.0.0.1, the liveness name resolv.conf managers probe. The
//! `l4lb.thisdcos.directory` zone is served (empty until VIPs fill it) by the caller.
//!
//! Task and framework labels follow the same sanitising rules as the `mesos` zone.

use std::net::IpAddr;

use crate::name::{LabelSpec, domain_fragment};
use crate::records::{Cluster, Record, RecordSet, RecordSource, TaskInfo, distinct};

/// Apex of the dcos-dns zones.
pub const THISDCOS: &str = "thisdcos.directory";
/// Apex of the named-VIP zone, filled by the load balancer.
pub const L4LB: &str = "l4lb.thisdcos.directory";
/// Apex of the liveness zone.
pub const SPARTAN: &str = "spartan";
/// TTL of dcos-dns answers.
pub const DCOS_TTL: u32 = 5;

/// The records of `thisdcos.directory` and of `spartan` (as a [`RecordSource`]).
#[derive(Debug, Clone)]
pub struct DcosRecords {
    pub spec: LabelSpec,
    /// Every master's address, for `master.dcos`.
    pub masters: Vec<IpAddr>,
    /// The answering node's addresses, for `thisnode`.
    pub this_node: Vec<IpAddr>,
}

/// Every record of `thisdcos.directory` and `spartan`.
pub fn generate(
    cluster: &Cluster,
    spec: LabelSpec,
    masters: &[IpAddr],
    this_node: &[IpAddr],
) -> RecordSet {
    let source = DcosRecords {
        spec,
        masters: masters.to_vec(),
        this_node: this_node.to_vec(),
    };
    crate::records::generate_from(cluster, &source)
}

impl RecordSource for DcosRecords {
    fn shared(&self, cluster: &Cluster, out: &mut Vec<Record>) {
        if let Some((leader, _)) = cluster.leader {
            out.push(Record::ip(format!("leader.dcos.{THISDCOS}."), leader));
            out.push(Record::ip(format!("master.dcos.{THISDCOS}."), leader));
        }
        for &master in &self.masters {
            out.push(Record::ip(format!("master.dcos.{THISDCOS}."), master));
        }
        for &ip in &self.this_node {
            out.push(Record::ip(format!("thisnode.{THISDCOS}."), ip));
        }
        out.push(Record::ip(
            format!("ready.{SPARTAN}."),
            IpAddr::from([127, 0, 0, 1]),
        ));
    }

    fn task(&self, framework: &str, task: &TaskInfo, agent_ips: &[IpAddr], out: &mut Vec<Record>) {
        let fname = domain_fragment(framework, self.spec);
        let name = task
            .discovery
            .as_ref()
            .filter(|d| !d.name.is_empty())
            .map_or(task.name.as_str(), |d| d.name.as_str());
        let label = self.spec.label(name);
        if fname.is_empty() || label.is_empty() {
            return;
        }
        let task_ips = distinct(&task.ips);
        let auto_ips = if task.ports.is_empty() && !task_ips.is_empty() {
            &task_ips
        } else {
            agent_ips
        };
        for (kind, ips) in [
            ("agentip", agent_ips),
            ("containerip", &task_ips),
            ("autoip", auto_ips),
        ] {
            let owner = format!("{label}.{fname}.{kind}.dcos.{THISDCOS}.");
            for &ip in ips {
                out.push(Record::ip(owner.clone(), ip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{AgentInfo, FrameworkInfo};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cluster() -> Cluster {
        let task = |name: &str, ips: &[&str], ports: &[u16], running: bool| TaskInfo {
            id: format!("{name}.1"),
            name: name.into(),
            agent_id: "a1".into(),
            is_running: running,
            ips: ips.iter().map(|s| ip(s)).collect(),
            ports: ports.to_vec(),
            healthy: None,
            discovery: None,
        };
        Cluster {
            frameworks: vec![FrameworkInfo {
                name: "Marathon".into(),
                scheduler_ips: vec![],
                scheduler_port: None,
                tasks: vec![
                    task("web", &["9.0.1.2"], &[], true).into(),
                    task("db", &["9.0.1.3"], &[31000], true).into(),
                    task("hostnet", &[], &[31001], true).into(),
                    task("gone", &["9.0.1.9"], &[], false).into(),
                ],
            }],
            agents: vec![AgentInfo {
                id: "a1".into(),
                ips: vec![ip("10.0.0.5")],
                port: Some(5051),
            }],
            leader: Some((ip("10.0.0.1"), 5050)),
        }
    }

    fn get(set: &RecordSet, name: &str) -> Vec<String> {
        set.a
            .get(name)
            .into_iter()
            .flatten()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn task_names_under_each_kind() {
        let set = generate(
            &cluster(),
            LabelSpec::Rfc1123,
            &[ip("10.0.0.2")],
            &[ip("10.0.0.7")],
        );
        // (name, expected)
        let cases = [
            (
                "web.marathon.agentip.dcos.thisdcos.directory.",
                vec!["10.0.0.5"],
            ),
            (
                "web.marathon.containerip.dcos.thisdcos.directory.",
                vec!["9.0.1.2"],
            ),
            // No host ports: autoip is the task's own address.
            (
                "web.marathon.autoip.dcos.thisdcos.directory.",
                vec!["9.0.1.2"],
            ),
            // Host ports: autoip is the agent's.
            (
                "db.marathon.autoip.dcos.thisdcos.directory.",
                vec!["10.0.0.5"],
            ),
            // No address of its own: the agent's.
            (
                "hostnet.marathon.autoip.dcos.thisdcos.directory.",
                vec!["10.0.0.5"],
            ),
            (
                "hostnet.marathon.containerip.dcos.thisdcos.directory.",
                vec![],
            ),
            ("gone.marathon.containerip.dcos.thisdcos.directory.", vec![]),
            ("leader.dcos.thisdcos.directory.", vec!["10.0.0.1"]),
            (
                "master.dcos.thisdcos.directory.",
                vec!["10.0.0.1", "10.0.0.2"],
            ),
            ("thisnode.thisdcos.directory.", vec!["10.0.0.7"]),
        ];
        for (name, want) in cases {
            assert_eq!(get(&set, name), want, "{name}");
        }
    }

    #[test]
    fn ready_spartan_is_loopback() {
        let spartan = generate(&Cluster::default(), LabelSpec::Rfc1123, &[], &[]);
        assert_eq!(get(&spartan, "ready.spartan."), vec!["127.0.0.1"]);
    }
}
