//! Egress: containers reach addresses outside the overlay through their node, their source
//! rewritten to the node's address on the way out (DC/OS's overlay does the same).
//!
//! nftables masquerade rather than eBPF SNAT: source NAT needs a port allocator and a
//! connection table that also translates the ICMP errors and related flows of every
//! connection back; the kernel's conntrack does all of it, is what the host ports already use
//! ([`crate::launcher::host_ports`]), and a node's egress is not a path where the
//! translation's cost shows next to the link's. The table is `ip dcnet_egress`, replaced
//! whole when the networks change and read back at every reconcile to repair a hand edit.
//!
//! Traffic between overlay addresses (any overlay network, and the VTEPs) is never
//! translated: containers see each other's own addresses. A network with `egress = false`
//! gets no rule: its containers reach only the overlay, their node and what routes back to
//! them.

use ipnetwork::Ipv4Network;

/// The table.
pub const TABLE: &str = "dcnet_egress";
/// Its family.
pub const FAMILY: &str = "ip";

/// The script that makes the table masquerade what `egress` networks send beyond `internal`
/// (every overlay network and the VTEP range); with no such network, it removes the table.
pub fn ruleset(egress: &[Ipv4Network], internal: &[Ipv4Network]) -> String {
    let mut out = format!("table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n");
    if egress.is_empty() {
        return out;
    }
    let inside = internal
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut rules = String::new();
    for net in egress {
        rules.push_str(&format!(
            "    ip saddr {net} ip daddr != {{ {inside} }} masquerade\n"
        ));
    }
    out.push_str(&format!(
        "table {FAMILY} {TABLE} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n}}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_networks_masquerade_beyond_the_overlay() {
        let net = |s: &str| s.parse::<Ipv4Network>().unwrap();
        let internal = [net("9.0.0.0/8"), net("12.0.0.0/16"), net("44.128.0.0/20")];
        let script = ruleset(&[net("9.0.0.0/8")], &internal);
        assert!(script.starts_with("table ip dcnet_egress\ndelete table ip dcnet_egress\n"));
        assert!(
            script.contains(
                "ip saddr 9.0.0.0/8 ip daddr != { 9.0.0.0/8, 12.0.0.0/16, 44.128.0.0/20 } masquerade"
            ),
            "{script}"
        );
        assert!(!script.contains("ip saddr 12.0.0.0/16"), "{script}");
        assert_eq!(
            ruleset(&[], &internal),
            "table ip dcnet_egress\ndelete table ip dcnet_egress\n"
        );
    }
}
