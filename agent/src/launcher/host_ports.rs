//! Host ports of tasks on an overlay (`portMappings[].hostPort`, and every mapping of bridge
//! networking): the agent's address and port forwarded to the task's address and container
//! port, by DNAT in an nftables table the launcher owns in the node's namespace.
//!
//! The table is replaced whole, in one `nft -f` transaction ([`crate::nft`]), whenever the set
//! of forwards changes, so it never holds a half-applied state and a restarted agent rewrites it from
//! the tasks it adopts. Connections from other nodes and from outside come in through
//! `prerouting`; the node's own through `output`. A container reaching a host port of its
//! own node is not translated back (no hairpin masquerade): it uses the task's address or a
//! VIP, as tasks do on the overlay.

use std::net::IpAddr;

use crate::app::{Network, PortProtocol};

use super::process::Record;

/// The launcher's nftables table.
pub const TABLE: &str = "dcnet_host_ports";

/// One host port forwarded to a task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Forward {
    pub host_port: u16,
    pub protocol: PortProtocol,
    pub task_ip: IpAddr,
    pub container_port: u16,
}

/// The forwards of a task on an overlay whose mappings got host ports.
pub fn forwards(record: &Record) -> Vec<Forward> {
    let a = &record.assignment;
    let (Network::Container(_), Some(ip)) = (&a.app.network, record.ip) else {
        return Vec::new();
    };
    a.app
        .ports
        .iter()
        .zip(&a.host_ports)
        .filter(|(_, host)| **host != 0)
        .map(|(p, host)| Forward {
            host_port: *host,
            protocol: p.protocol,
            task_ip: ip,
            container_port: p.number,
        })
        .collect()
}

/// The nftables script that makes the table hold exactly `forwards` on `node` (the agent's
/// address); with none, it removes the table.
pub fn ruleset(node: IpAddr, forwards: &[Forward]) -> String {
    let mut out = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
    if forwards.is_empty() {
        return out;
    }
    let mut rules = String::new();
    for f in forwards {
        // A forward across address families cannot be translated.
        if node.is_ipv4() != f.task_ip.is_ipv4() {
            continue;
        }
        let (family, to) = match f.task_ip {
            IpAddr::V4(ip) => ("ip", format!("{ip}:{}", f.container_port)),
            IpAddr::V6(ip) => ("ip6", format!("[{ip}]:{}", f.container_port)),
        };
        let protocols: &[&str] = match f.protocol {
            PortProtocol::Tcp => &["tcp"],
            PortProtocol::Udp => &["udp"],
            PortProtocol::Both => &["tcp", "udp"],
        };
        for proto in protocols {
            rules.push_str(&format!(
                "    {family} daddr {node} {proto} dport {} dnat {family} to {to}\n",
                f.host_port
            ));
        }
    }
    out.push_str(&format!(
        "table inet {TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n  chain output {{\n    type nat hook output priority -100; policy accept;\n{rules}  }}\n}}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_become_one_atomic_table() {
        let f = |host_port, protocol, container_port| Forward {
            host_port,
            protocol,
            task_ip: "9.0.1.2".parse().unwrap(),
            container_port,
        };
        let node: IpAddr = "10.0.0.5".parse().unwrap();
        let script = ruleset(
            node,
            &[
                f(31000, PortProtocol::Tcp, 80),
                f(31001, PortProtocol::Both, 53),
            ],
        );
        assert!(script.starts_with(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n")));
        for rule in [
            "ip daddr 10.0.0.5 tcp dport 31000 dnat ip to 9.0.1.2:80",
            "ip daddr 10.0.0.5 tcp dport 31001 dnat ip to 9.0.1.2:53",
            "ip daddr 10.0.0.5 udp dport 31001 dnat ip to 9.0.1.2:53",
        ] {
            assert_eq!(
                script.matches(rule).count(),
                2,
                "{rule} in prerouting and output:\n{script}"
            );
        }
        // No forwards: the table goes.
        assert_eq!(
            ruleset(node, &[]),
            format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
        );
        // Across families nothing is written.
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert!(!ruleset(v6, &[f(31000, PortProtocol::Tcp, 80)]).contains("dnat"));
    }
}
