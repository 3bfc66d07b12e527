//! The VIP model, pure logic: VIPs declared by port labels (`VIP_<n>` = `<name-or-ip>:<port>`),
//! their addresses and DNS names, and the backends behind them.
//!
//! - [`VipLabel::parse`]: one label. An IPv4 literal is the VIP address as is; anything else
//!   (`/web:80`, `web:80`, `/group/api:8080`) is a named VIP.
//! - [`named_addresses`]: the address of every named VIP, in 11.0.0.0/8, computed from the set
//!   of names alone, so every node derives the same addresses from its gossip replica.
//! - [`VipName::dns_name`] gives `<name>.<framework>.l4lb.thisdcos.directory`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use dcnet_dns::name::{LabelSpec, domain_fragment};
use serde::{Deserialize, Serialize};

/// The zone named VIPs are published in.
pub const L4LB_ZONE: &str = "l4lb.thisdcos.directory";
/// The range named VIP addresses come from (design.md §4).
pub const NAMED_VIP_NETWORK: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 0);
const NAMED_VIP_BITS: u32 = 24;
/// The range IPv6 named VIP addresses come from: dcos-l4lb's `fd01:c::/64`. A named VIP
/// whose tasks have IPv6 addresses gets an address here besides its IPv4 one.
pub const NAMED_VIP6_NETWORK: Ipv6Addr = Ipv6Addr::new(0xfd01, 0xc, 0, 0, 0, 0, 0, 0);

/// Transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl FromStr for Protocol {
    type Err = VipError;
    fn from_str(s: &str) -> Result<Self, VipError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(VipError::Protocol(s.to_owned())),
        }
    }
}

/// What is wrong with a VIP label or protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VipError {
    /// The value has no `:<port>` part.
    #[error("VIP label {key}={value:?} has no port: expected <name-or-ip>:<port>, e.g. /web:80")]
    NoPort { key: String, value: String },
    /// The port is not a number in 1..=65535.
    #[error("VIP label {key}={value:?}: {port:?} is not a port (1-65535)")]
    Port {
        key: String,
        value: String,
        port: String,
    },
    /// The name part is empty or has characters a VIP name cannot have.
    #[error(
        "VIP label {key}={value:?}: the name {name:?} is not usable; a VIP name is letters, digits, \
         '-', '_', '.' and '/' (e.g. /web or /group/api)"
    )]
    Name {
        key: String,
        value: String,
        name: String,
    },
    /// Not `tcp` or `udp`.
    #[error("protocol {0:?} is not supported for VIPs: expected tcp or udp")]
    Protocol(String),
    /// A backend weight that is not a whole number in 1..=[`MAX_WEIGHT`].
    #[error(
        "label {WEIGHT_LABEL}={0:?} is not a weight: expected a whole number from 1 to {MAX_WEIGHT}"
    )]
    Weight(String),
}

/// The port label that gives the backends a port declares their weight: new connections go to
/// a VIP's backends in proportion to their weights (default 1).
pub const WEIGHT_LABEL: &str = "DCNET_VIP_WEIGHT";
/// The largest weight: enough for any proportion the datapath's 4,096 slots per VIP can show.
pub const MAX_WEIGHT: u32 = 1000;

/// The weight a port's labels give its backends: [`WEIGHT_LABEL`], else 1.
pub fn weight_of<'a>(
    mut labels: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<u32, VipError> {
    match labels.find(|(k, _)| *k == WEIGHT_LABEL) {
        None => Ok(1),
        Some((_, v)) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|w| (1..=MAX_WEIGHT).contains(w))
            .ok_or_else(|| VipError::Weight(v.clone())),
    }
}

/// A named VIP: a name within a framework, as in `/web` of Marathon.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VipName {
    /// The name without its leading `/` (`web`, `group/api`).
    pub name: String,
    /// The framework whose task declared it (`marathon`).
    pub framework: String,
}

impl VipName {
    /// `<name>.<framework>.l4lb.thisdcos.directory`: `/` dropped from the name (as dcos-l4lb
    /// does: `/group/api` → `groupapi`), each part a DNS label.
    pub fn dns_name(&self) -> String {
        let name = LabelSpec::Rfc1123.label(&self.name.replace('/', ""));
        let framework = domain_fragment(&self.framework, LabelSpec::Rfc1123);
        format!("{name}.{framework}.{L4LB_ZONE}")
    }

    /// The identity hashed into the address: framework and name.
    fn key(&self) -> String {
        format!("{}/{}", self.framework, self.name)
    }
}

impl fmt::Display for VipName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{} ({})", self.name, self.framework)
    }
}

/// The address part of a VIP label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VipHost {
    /// An IP literal (IPv6 in brackets: `[fd00::1]:80`), used as is.
    Ip(IpAddr),
    /// A named VIP; its address comes from [`named_addresses`].
    Named(VipName),
}

/// One `VIP_<n>` label of a task port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VipLabel {
    pub host: VipHost,
    pub port: u16,
}

impl VipLabel {
    /// Whether a label key declares a VIP: `VIP_` followed by a number.
    pub fn is_vip_key(key: &str) -> bool {
        key.strip_prefix("VIP_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Parses the value of label `key` of a task of `framework`.
    pub fn parse(key: &str, value: &str, framework: &str) -> Result<Self, VipError> {
        let value_trimmed = value.trim();
        let (host, port) = value_trimmed
            .rsplit_once(':')
            .ok_or_else(|| VipError::NoPort {
                key: key.into(),
                value: value.into(),
            })?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| VipError::Port {
                key: key.into(),
                value: value.into(),
                port: port.into(),
            })?;
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(Self {
                host: VipHost::Ip(ip.into()),
                port,
            });
        }
        if let Some(ip) = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
        {
            return Ok(Self {
                host: VipHost::Ip(ip.into()),
                port,
            });
        }
        let name = host.trim_start_matches('/');
        let usable = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            && name.chars().any(|c| c.is_ascii_alphanumeric());
        if !usable {
            return Err(VipError::Name {
                key: key.into(),
                value: value.into(),
                name: host.into(),
            });
        }
        Ok(Self {
            host: VipHost::Named(VipName {
                name: name.to_owned(),
                framework: framework.to_owned(),
            }),
            port,
        })
    }
}

/// A VIP as the datapath sees it: address, port and protocol. Its backends are of its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Vip {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// A backend of a VIP. Weight 0: no new connections (unhealthy or terminating task), while
/// existing ones drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
}

/// The address of every named VIP in `names`, in 11.0.0.0/8.
///
/// Each name's address is a hash of its framework and name. Two names hashing to one address
/// are settled in name order, the later one taking the next free address. So every node that
/// sees the same set computes the same addresses, and an address changes only when a name it
/// collided with comes or goes (with n names, a new name collides with probability about
/// n / 2^24: 0.06% at 10,000). Addresses ending in .0 or .255 are skipped, to stay clear of
/// anything that treats them as network or broadcast addresses.
pub fn named_addresses<'a>(
    names: impl IntoIterator<Item = &'a VipName>,
) -> BTreeMap<VipName, Ipv4Addr> {
    settle4(names.into_iter().map(|n| (n, fnv1a(n.key().as_bytes()))))
}

/// [`settle`] in the IPv4 range, skipping addresses ending in .0 and .255.
fn settle4<'a>(names: impl IntoIterator<Item = (&'a VipName, u32)>) -> BTreeMap<VipName, Ipv4Addr> {
    settle(
        names,
        (1 << NAMED_VIP_BITS) - 1,
        |offset| Ipv4Addr::from(u32::from(NAMED_VIP_NETWORK) | offset),
        |addr| {
            let last = addr.octets()[3];
            last != 0 && last != 255
        },
    )
}

/// The IPv6 address of every named VIP in `names`, in [`NAMED_VIP6_NETWORK`]: the same hash
/// in the low 32 bits (settled the same way; the subnet-router anycast address `::` is
/// skipped).
pub fn named_addresses6<'a>(
    names: impl IntoIterator<Item = &'a VipName>,
) -> BTreeMap<VipName, Ipv6Addr> {
    settle(
        names.into_iter().map(|n| (n, fnv1a(n.key().as_bytes()))),
        u32::MAX,
        |offset| Ipv6Addr::from(u128::from(NAMED_VIP6_NETWORK) | u128::from(offset)),
        |addr| *addr != NAMED_VIP6_NETWORK,
    )
}

/// Gives each name the address at its hash offset (within `mask`), or the next free usable
/// one; names in order.
fn settle<'a, A: Copy + Eq + std::hash::Hash>(
    names: impl IntoIterator<Item = (&'a VipName, u32)>,
    mask: u32,
    address: impl Fn(u32) -> A,
    usable: impl Fn(&A) -> bool,
) -> BTreeMap<VipName, A> {
    let names: BTreeMap<&VipName, u32> = names.into_iter().collect();
    let mut taken = HashSet::with_capacity(names.len());
    let mut out = BTreeMap::new();
    for (name, hash) in names {
        let mut offset = hash & mask;
        loop {
            let addr = address(offset);
            if usable(&addr) && taken.insert(addr) {
                out.insert(name.clone(), addr);
                break;
            }
            offset = offset.wrapping_add(1) & mask;
        }
    }
    out
}

/// 32-bit FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_come_from_a_port_label() {
        let labels = |v: &str| vec![(WEIGHT_LABEL.to_owned(), v.to_owned())];
        let weight = |l: &[(String, String)]| weight_of(l.iter().map(|(k, v)| (k, v)));
        assert_eq!(weight(&[]), Ok(1));
        assert_eq!(weight(&labels("3")), Ok(3));
        assert_eq!(weight(&labels(" 1000 ")), Ok(1000));
        for bad in ["0", "1001", "-1", "1.5", "heavy", ""] {
            let e = weight(&labels(bad)).unwrap_err();
            assert!(e.to_string().contains("from 1 to 1000"), "{bad}: {e}");
        }
    }

    fn named(name: &str) -> VipName {
        VipName {
            name: name.into(),
            framework: "marathon".into(),
        }
    }

    #[test]
    fn labels_parse_as_dcos_writes_them() {
        let cases: &[(&str, &str, VipHost, u16)] = &[
            (
                "IP literal",
                "10.0.0.1:5000",
                VipHost::Ip([10, 0, 0, 1].into()),
                5000,
            ),
            (
                "IPv6 literal",
                "[fd00::1]:53",
                VipHost::Ip("fd00::1".parse().unwrap()),
                53,
            ),
            (
                "named with slash",
                "/web:80",
                VipHost::Named(named("web")),
                80,
            ),
            (
                "named without slash",
                "web:80",
                VipHost::Named(named("web")),
                80,
            ),
            (
                "nested",
                "/group/api:8080",
                VipHost::Named(named("group/api")),
                8080,
            ),
            (
                "spaces trimmed",
                " /web:80 ",
                VipHost::Named(named("web")),
                80,
            ),
        ];
        for (what, value, host, port) in cases {
            let label = VipLabel::parse("VIP_0", value, "marathon").unwrap();
            assert_eq!(&label.host, host, "{what}");
            assert_eq!(label.port, *port, "{what}");
        }
    }

    #[test]
    fn bad_labels_name_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("/web", "has no port"),
            ("/web:", "is not a port"),
            ("/web:0", "is not a port"),
            ("/web:65536", "is not a port"),
            ("/web:http", "is not a port"),
            (":80", "is not usable"),
            ("/:80", "is not usable"),
            ("/we b:80", "is not usable"),
            ("fd00::1:80", "is not usable"),
            ("[fd00::zz]:80", "is not usable"),
            ("/---:80", "is not usable"),
        ];
        for (value, expected) in cases {
            let err = VipLabel::parse("VIP_1", value, "marathon").unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(expected) && text.contains("VIP_1"),
                "{value}: {text}"
            );
        }
    }

    #[test]
    fn vip_keys() {
        for (key, is) in [
            ("VIP_0", true),
            ("VIP_12", true),
            ("VIP_", false),
            ("VIP_a", false),
            ("vip_0", false),
            ("HAPROXY_0_VHOST", false),
        ] {
            assert_eq!(VipLabel::is_vip_key(key), is, "{key}");
        }
    }

    #[test]
    fn dns_names_follow_dcos_l4lb() {
        assert_eq!(
            named("web").dns_name(),
            "web.marathon.l4lb.thisdcos.directory"
        );
        assert_eq!(
            named("group/api").dns_name(),
            "groupapi.marathon.l4lb.thisdcos.directory"
        );
        let n = VipName {
            name: "My_App".into(),
            framework: "hello.world".into(),
        };
        assert_eq!(n.dns_name(), "my-app.hello.world.l4lb.thisdcos.directory");
    }

    #[test]
    fn named_addresses_are_stable_and_in_range() {
        let names: Vec<VipName> = (0..2000).map(|i| named(&format!("app-{i}"))).collect();
        let all = named_addresses(&names);
        assert_eq!(all.len(), 2000);
        let distinct: HashSet<_> = all.values().collect();
        assert_eq!(distinct.len(), 2000, "no two names share an address");
        for addr in all.values() {
            assert_eq!(addr.octets()[0], 11);
            assert!(addr.octets()[3] != 0 && addr.octets()[3] != 255);
        }
        // Every node computing from a subset (others gone) or a superset (others added) gets
        // the same address for a name that did not collide.
        let half = named_addresses(&names[..1000]);
        let more: Vec<VipName> = (0..3000).map(|i| named(&format!("app-{i}"))).collect();
        let more = named_addresses(&more);
        let moved = half
            .iter()
            .filter(|(n, a)| all[*n] != **a || more[*n] != **a)
            .count();
        assert_eq!(moved, 0, "no address moved when other names came and went");
        // And the address depends on the framework too.
        let other = VipName {
            name: "app-1".into(),
            framework: "other".into(),
        };
        assert_ne!(named_addresses([&other])[&other], all[&named("app-1")]);
    }

    #[test]
    fn named_ipv6_addresses_are_stable_and_in_range() {
        let names: Vec<VipName> = (0..2000).map(|i| named(&format!("app-{i}"))).collect();
        let all = named_addresses6(&names);
        assert_eq!(all.len(), 2000);
        let distinct: HashSet<_> = all.values().collect();
        assert_eq!(distinct.len(), 2000);
        for addr in all.values() {
            assert_eq!(addr.segments()[..4], [0xfd01, 0xc, 0, 0], "{addr}");
        }
        let half = named_addresses6(&names[..1000]);
        assert!(half.iter().all(|(n, a)| all[n] == *a));
        assert_eq!(
            named_addresses6([&named("app-7")])[&named("app-7")],
            all[&named("app-7")]
        );
    }

    #[test]
    fn colliding_names_are_settled_in_name_order() {
        let (a, b, c) = (named("a"), named("b"), named("c"));
        // a and b hash to one offset; c to the offset b is pushed to.
        let all = settle4([(&b, 0x10_0001), (&a, 0x10_0001), (&c, 0x10_0002)]);
        assert_eq!(
            all[&a],
            Ipv4Addr::new(11, 16, 0, 1),
            "a sorts first and keeps its slot"
        );
        assert_eq!(all[&b], Ipv4Addr::new(11, 16, 0, 2));
        assert_eq!(all[&c], Ipv4Addr::new(11, 16, 0, 3), "c probes past b");
        // Without a, b gets its own slot back: only colliding names move.
        let without_a = settle4([(&b, 0x10_0001), (&c, 0x10_0002)]);
        assert_eq!(without_a[&b], Ipv4Addr::new(11, 16, 0, 1));
        assert_eq!(without_a[&c], Ipv4Addr::new(11, 16, 0, 2));
        // .255 and .0 are skipped, wrapping at the end of the range.
        let edge = settle4([(&a, 0xff_fffe), (&b, 0xff_fffe)]);
        assert_eq!(edge[&a], Ipv4Addr::new(11, 255, 255, 254));
        assert_eq!(edge[&b], Ipv4Addr::new(11, 0, 0, 1));
    }
}
