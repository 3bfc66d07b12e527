//! Loads the VXLAN source filter (`ebpf/programs/src/vxlan_filter.rs`) on a node's underlay
//! interface and keeps its peer set.
//!
//! Attached at tc ingress through a TCX link (kernel ≥ 6.6), which belongs to this process:
//! the filter goes with the agent, and a restarted agent attaches a fresh one. While no agent
//! runs, VXLAN is accepted from any source, as before the filter existed (the overlay keeps
//! working; an agent's absence is not a moment to cut the tunnels).

use std::collections::BTreeSet;
use std::net::IpAddr;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TcAttachType, links::LinkOrder, tc::TcAttachOptions};
use aya::{Ebpf, EbpfLoader};
pub use dcnet_ebpf_common::VxlanStat;
use dcnet_ebpf_common::{VXLAN_CONFIG, VXLAN_PEERS, VXLAN_PEERS6, VXLAN_STATS};

use crate::Error;
use crate::datapath::{per_cpu_sum, take_map};

/// The filter's object file, produced by `lb/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcnet-vxlan-filter"));

const PROGRAM: &str = "vxlan_filter";

/// The loaded, attached filter.
pub struct VxlanFilter {
    _ebpf: Ebpf,
    peers: HashMap<MapData, u32, u8>,
    peers6: HashMap<MapData, [u8; 16], u8>,
    stats: PerCpuArray<MapData, u64>,
    current: BTreeSet<IpAddr>,
}

impl VxlanFilter {
    /// Loads the filter for VXLAN on UDP `port` and attaches it at ingress of `interface`.
    /// Until [`VxlanFilter::set_peers`] is called, every VXLAN datagram is dropped.
    pub fn attach(interface: &str, port: u16) -> Result<Self, Error> {
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(Error::Load)?;
        let mut config: Array<MapData, u32> = take_map(&mut ebpf, VXLAN_CONFIG, Array::try_from)?;
        config
            .set(0, u32::from(port), 0)
            .map_err(|source| Error::Map {
                name: VXLAN_CONFIG,
                action: "write",
                source,
            })?;
        let peers = take_map(&mut ebpf, VXLAN_PEERS, HashMap::try_from)?;
        let peers6 = take_map(&mut ebpf, VXLAN_PEERS6, HashMap::try_from)?;
        let stats = take_map(&mut ebpf, VXLAN_STATS, PerCpuArray::try_from)?;
        let program: &mut SchedClassifier = crate::datapath::program(&mut ebpf, PROGRAM)?;
        program.load().map_err(|source| Error::Program {
            name: PROGRAM,
            action: "load",
            source,
        })?;
        program
            .attach_with_options(
                interface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|source| Error::Program {
                name: PROGRAM,
                action: "attach (tcx ingress)",
                source,
            })?;
        Ok(Self {
            _ebpf: ebpf,
            peers,
            peers6,
            stats,
            current: BTreeSet::new(),
        })
    }

    /// Makes `peers` (of either family) the underlay addresses VXLAN is accepted from;
    /// returns (added, removed).
    pub fn set_peers(&mut self, peers: &BTreeSet<IpAddr>) -> Result<(usize, usize), Error> {
        let added: Vec<IpAddr> = peers.difference(&self.current).copied().collect();
        let removed: Vec<IpAddr> = self.current.difference(peers).copied().collect();
        for &ip in &added {
            let result = match ip {
                // The packet's bytes as the program reads them: network order in a native u32.
                IpAddr::V4(v4) => self.peers.insert(u32::from_ne_bytes(v4.octets()), 1, 0),
                IpAddr::V6(v6) => self.peers6.insert(v6.octets(), 1, 0),
            };
            result.map_err(|source| Error::Map {
                name: peers_map(ip),
                action: "insert",
                source,
            })?;
            self.current.insert(ip);
        }
        for &ip in &removed {
            let result = match ip {
                IpAddr::V4(v4) => self.peers.remove(&u32::from_ne_bytes(v4.octets())),
                IpAddr::V6(v6) => self.peers6.remove(&v6.octets()),
            };
            match result {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(Error::Map {
                        name: peers_map(ip),
                        action: "remove",
                        source,
                    });
                }
            }
            self.current.remove(&ip);
        }
        Ok((added.len(), removed.len()))
    }

    /// How many underlay addresses VXLAN is accepted from.
    pub fn peer_count(&self) -> usize {
        self.current.len()
    }

    /// The filter's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(VxlanStat, u64)>, Error> {
        VxlanStat::ALL
            .iter()
            .map(|&stat| Ok((stat, per_cpu_sum(&self.stats, VXLAN_STATS, stat as u32)?)))
            .collect()
    }
}

fn peers_map(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        VXLAN_PEERS
    } else {
        VXLAN_PEERS6
    }
}
