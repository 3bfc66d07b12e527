//! Loads the control-plane guard (`ebpf/programs/src/guard.rs`) and keeps its rules.
//!
//! The guard is attached to the cgroup under which the launcher puts every task: a task's
//! connect or send to a rule's (address prefix, port, protocol) fails, with ECONNREFUSED for a
//! connect and EPERM for a datagram. An IPv4 rule also covers the IPv4-mapped IPv6 form of
//! its addresses, so a dual-stack socket cannot go around it. Rules change as a set: the
//! difference from the last set is applied, entry by entry (each is independent).
//!
//! Tasks outlive the agent, so the guard must too. It is attached with `BPF_PROG_ATTACH` and
//! `BPF_F_ALLOW_MULTI`, which the cgroup holds (a BPF link would go with the agent's file
//! descriptors): the programs, and the maps they use, stay in force while no agent runs. The
//! next agent attaches its own next to them, then retires them ([`Guard::retire_others`]):
//! at no moment is the cgroup unguarded.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{MapData, PerCpuArray};
use aya::{Ebpf, EbpfLoader};
use dcnet_ebpf_common::{
    GUARD_FIXED_BITS, GUARD_MAX_ENTRIES, GUARD_STATS, GUARD4, GUARD6, Guard4, Guard6, GuardStat,
    PROTO_TCP, PROTO_UDP, ip6_words,
};

use crate::Error;

use crate::datapath::{load_sock_addr, per_cpu_sum, take_map};
use crate::vip::Protocol;

/// The guard's object file, produced by `lb/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcnet-guard"));

const PROGRAMS: &[&str] = &[
    "guard_connect4",
    "guard_sendmsg4",
    "guard_connect6",
    "guard_sendmsg6",
];
/// The programs with their attach types.
fn attached() -> Vec<(&'static str, u32)> {
    PROGRAMS
        .iter()
        .copied()
        .zip(ATTACH_TYPES.iter().copied())
        .collect()
}

/// Their attach types, `enum bpf_attach_type` in include/uapi/linux/bpf.h.
const ATTACH_TYPES: &[u32] = &[
    10, // BPF_CGROUP_INET4_CONNECT
    14, // BPF_CGROUP_UDP4_SENDMSG
    11, // BPF_CGROUP_INET6_CONNECT
    15, // BPF_CGROUP_UDP6_SENDMSG
];

/// Traffic the guard refuses: to `addr/prefix`, `port`, `protocol`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Rule {
    addr: IpAddr,
    prefix: u8,
    pub port: u16,
    pub protocol: Protocol,
}

impl Rule {
    /// A rule for `addr/prefix` (host bits are cleared; a prefix past the family's width is
    /// taken as a single address).
    pub fn new(addr: IpAddr, prefix: u8, port: u16, protocol: Protocol) -> Self {
        let (addr, prefix) = match addr {
            IpAddr::V4(a) => {
                let prefix = prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::from((u32::from(a) & mask).to_be_bytes()), prefix)
            }
            IpAddr::V6(a) => {
                let prefix = prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::from((u128::from(a) & mask).to_be_bytes()), prefix)
            }
        };
        Self {
            addr,
            prefix,
            port,
            protocol,
        }
    }

    /// One address.
    pub fn host(addr: IpAddr, port: u16, protocol: Protocol) -> Self {
        Self::new(addr, 128, port, protocol)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn proto(&self) -> u8 {
        match self.protocol {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }

    /// The trie keys of this rule: the IPv4 key and its IPv4-mapped IPv6 key, or the IPv6 key.
    fn keys(&self) -> (Option<Key<Guard4>>, Key<Guard6>) {
        let port = self.port.to_be();
        let proto = self.proto();
        match self.addr {
            IpAddr::V4(a) => {
                let v4 = Key::new(
                    GUARD_FIXED_BITS + u32::from(self.prefix),
                    Guard4 {
                        port,
                        proto,
                        _pad: 0,
                        addr: u32::from_ne_bytes(a.octets()),
                    },
                );
                let mapped = Key::new(
                    GUARD_FIXED_BITS + 96 + u32::from(self.prefix),
                    Guard6 {
                        port,
                        proto,
                        _pad: 0,
                        addr: ip6_words(a.to_ipv6_mapped().octets()),
                    },
                );
                (Some(v4), mapped)
            }
            IpAddr::V6(a) => (
                None,
                Key::new(
                    GUARD_FIXED_BITS + u32::from(self.prefix),
                    Guard6 {
                        port,
                        proto,
                        _pad: 0,
                        addr: ip6_words(a.octets()),
                    },
                ),
            ),
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {}/{}",
            self.addr, self.prefix, self.port, self.protocol
        )
    }
}

/// The loaded guard.
pub struct Guard {
    ebpf: Ebpf,
    rules4: LpmTrie<MapData, Guard4, u32>,
    rules6: LpmTrie<MapData, Guard6, u32>,
    stats: PerCpuArray<MapData, u64>,
    rules: BTreeSet<Rule>,
}

impl Guard {
    /// Loads the embedded object and verifies its programs (not yet attached).
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(Error::Load)?;
        load_sock_addr(&mut ebpf, PROGRAMS)?;
        Ok(Self {
            rules4: take_map(&mut ebpf, GUARD4, LpmTrie::try_from)?,
            rules6: take_map(&mut ebpf, GUARD6, LpmTrie::try_from)?,
            stats: take_map(&mut ebpf, GUARD_STATS, PerCpuArray::try_from)?,
            ebpf,
            rules: BTreeSet::new(),
        })
    }

    /// Attaches the hooks to the cgroup v2 directory `cgroup` (every process below it is
    /// guarded), so that they stay attached after this process exits.
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), Error> {
        crate::attach::attach_all(&self.ebpf, &attached(), cgroup)
    }

    /// Detaches from `cgroup` every guard program attached there but this one's (an earlier
    /// run's, left attached on purpose); returns how many.
    pub fn retire_others(&mut self, cgroup: &Path) -> Result<usize, Error> {
        let programs = attached();
        let ours = crate::attach::program_ids(&self.ebpf, &programs)?;
        crate::attach::retire(cgroup, &programs, &ours)
    }

    /// The rules in force.
    pub fn rules(&self) -> &BTreeSet<Rule> {
        &self.rules
    }

    /// Makes `rules` the rules in force; returns how many were added and removed.
    pub fn set_rules(&mut self, rules: BTreeSet<Rule>) -> Result<(usize, usize), Error> {
        if rules.len() > GUARD_MAX_ENTRIES as usize / 2 {
            return Err(Error::Full {
                map: GUARD6,
                capacity: GUARD_MAX_ENTRIES,
            });
        }
        let map_error = |name: &'static str, action: &'static str| {
            move |source| Error::Map {
                name,
                action,
                source,
            }
        };
        // Additions first: for a moment both old and new rules hold, never neither.
        let added: Vec<Rule> = rules.difference(&self.rules).copied().collect();
        for rule in &added {
            let (v4, v6) = rule.keys();
            if let Some(v4) = v4 {
                self.rules4
                    .insert(&v4, 0, 0)
                    .map_err(map_error(GUARD4, "insert"))?;
            }
            self.rules6
                .insert(&v6, 0, 0)
                .map_err(map_error(GUARD6, "insert"))?;
            self.rules.insert(*rule);
        }
        let removed: Vec<Rule> = self.rules.difference(&rules).copied().collect();
        for rule in &removed {
            let (v4, v6) = rule.keys();
            if let Some(v4) = v4 {
                self.rules4
                    .remove(&v4)
                    .map_err(map_error(GUARD4, "remove"))?;
            }
            self.rules6
                .remove(&v6)
                .map_err(map_error(GUARD6, "remove"))?;
            self.rules.remove(rule);
        }
        Ok((added.len(), removed.len()))
    }

    /// The guard's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(GuardStat, u64)>, Error> {
        GuardStat::ALL
            .iter()
            .map(|&stat| Ok((stat, per_cpu_sum(&self.stats, GUARD_STATS, stat as u32)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_normalized() {
        let r = Rule::new("10.1.2.3".parse().unwrap(), 8, 8080, Protocol::Tcp);
        assert_eq!(r.to_string(), "10.0.0.0/8 8080/tcp");
        let h = Rule::host("10.1.2.3".parse().unwrap(), 53, Protocol::Udp);
        assert_eq!(h.to_string(), "10.1.2.3/32 53/udp");
        let v6 = Rule::new("fd00::1:2".parse().unwrap(), 64, 1, Protocol::Tcp);
        assert_eq!(v6.to_string(), "fd00::/64 1/tcp");
        let all = Rule::new("1.2.3.4".parse().unwrap(), 0, 1, Protocol::Tcp);
        assert_eq!(all.to_string(), "0.0.0.0/0 1/tcp");
    }

    #[test]
    fn an_ipv4_rule_also_covers_its_mapped_form() {
        let r = Rule::new("10.1.2.0".parse().unwrap(), 24, 8080, Protocol::Tcp);
        let (v4, v6) = r.keys();
        let v4 = v4.unwrap();
        assert_eq!(v4.prefix_len(), 32 + 24);
        assert_eq!(v6.prefix_len(), 32 + 96 + 24);
        let data = v6.data();
        assert_eq!(data.addr[2], u32::from_ne_bytes([0, 0, 0xff, 0xff]));
        assert_eq!(data.addr[3], u32::from_ne_bytes([10, 1, 2, 0]));
        assert_eq!(data.port, 8080u16.to_be());
    }
}
