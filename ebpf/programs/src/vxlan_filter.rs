//! The VXLAN source filter: a tc ingress program on a node's underlay interface that drops
//! every UDP datagram (IPv4 or IPv6) to the VXLAN port whose source is not a current peer.
//! VXLAN has no authentication of its own: without this, any host on the underlay could put
//! frames with a forged overlay source into a node's containers.
//!
//! The agent keeps `VXLAN_PEERS` (IPv4) and `VXLAN_PEERS6` in step with the overlay's peer set.
//! A non-first fragment carries no UDP header and passes; its datagram cannot be reassembled
//! without the first fragment, which is checked. IPv6 extension headers before UDP are walked
//! (up to four), so none can hide the UDP header; an IPv6 packet with more, or with one this
//! does not know, passes only if it is not UDP to the VXLAN port as far as can be seen, and is
//! dropped when its chain is too long to tell.
//!
//! Built as its own object so that loading it creates only its own maps.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use dcnet_ebpf_common::{VXLAN_MAX_PEERS, VxlanStat};

#[map]
static VXLAN_PEERS: HashMap<u32, u8> = HashMap::with_max_entries(VXLAN_MAX_PEERS, 0);

#[map]
static VXLAN_PEERS6: HashMap<[u8; 16], u8> = HashMap::with_max_entries(VXLAN_MAX_PEERS, 0);

#[map]
static VXLAN_CONFIG: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static VXLAN_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(VxlanStat::COUNT, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
const IPV6_HLEN: usize = 40;
/// IPv6 extension headers the walk steps over: hop-by-hop, routing, destination options.
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up (the verifier needs a bound).
const IPV6_MAX_EXTENSIONS: usize = 4;

#[inline(always)]
fn count(stat: VxlanStat) {
    if let Some(slot) = VXLAN_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: this CPU's slot of a live map element; per-CPU slots are written only by
        // their own CPU with preemption off.
        unsafe { *slot += 1 };
    }
}

#[classifier]
pub fn vxlan_filter(ctx: TcContext) -> i32 {
    verdict(&ctx).unwrap_or(TC_ACT_OK)
}

/// `None` for anything that is not a UDP datagram to the VXLAN port (it passes).
#[inline(always)]
fn verdict(ctx: &TcContext) -> Option<i32> {
    let ethertype: u16 = ctx.load::<u16>(12).ok()?;
    match u16::from_be(ethertype) {
        ETH_P_IP => verdict4(ctx),
        ETH_P_IPV6 => verdict6(ctx),
        _ => None,
    }
}

#[inline(always)]
fn vxlan_port() -> Option<u16> {
    let port = *VXLAN_CONFIG.get(0)?;
    (port != 0).then_some(port as u16)
}

#[inline(always)]
fn decide(peer: bool) -> Option<i32> {
    if peer {
        count(VxlanStat::Passed);
        Some(TC_ACT_OK)
    } else {
        count(VxlanStat::Dropped);
        Some(TC_ACT_SHOT)
    }
}

#[inline(always)]
fn verdict6(ctx: &TcContext) -> Option<i32> {
    let mut next: u8 = ctx.load(ETH_HLEN + 6).ok()?;
    let mut offset = ETH_HLEN + IPV6_HLEN;
    let mut walked = 0;
    while next != IPPROTO_UDP {
        if walked == IPV6_MAX_EXTENSIONS {
            // Too long a chain to see whether VXLAN is inside: not from a peer, not taken.
            let source: [u8; 16] = ctx.load(ETH_HLEN + 8).ok()?;
            // SAFETY: a lookup in a map this program owns; tested for presence only.
            return decide(unsafe { VXLAN_PEERS6.get(&source) }.is_some());
        }
        walked += 1;
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                next = ctx.load(offset).ok()?;
                let units: u8 = ctx.load(offset + 1).ok()?;
                offset += (usize::from(units) + 1) * 8;
            }
            IPV6_FRAGMENT => {
                next = ctx.load(offset).ok()?;
                let fragment: u16 = u16::from_be(ctx.load(offset + 2).ok()?);
                // A later fragment has no UDP header where one would be.
                if fragment & 0xfff8 != 0 {
                    return None;
                }
                offset += 8;
            }
            _ => return None,
        }
    }
    let dport: u16 = u16::from_be(ctx.load(offset + 2).ok()?);
    if dport != vxlan_port()? {
        return None;
    }
    let source: [u8; 16] = ctx.load(ETH_HLEN + 8).ok()?;
    // SAFETY: a lookup in a map this program owns; tested for presence only.
    decide(unsafe { VXLAN_PEERS6.get(&source) }.is_some())
}

#[inline(always)]
fn verdict4(ctx: &TcContext) -> Option<i32> {
    let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    if proto != IPPROTO_UDP {
        return None;
    }
    // A later fragment has no UDP header where one would be.
    let fragment: u16 = u16::from_be(ctx.load(ETH_HLEN + 6).ok()?);
    if fragment & 0x1fff != 0 {
        return None;
    }
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let dport: u16 = u16::from_be(ctx.load(ETH_HLEN + ihl + 2).ok()?);
    if dport != vxlan_port()? {
        return None;
    }
    let source: u32 = ctx.load(ETH_HLEN + 12).ok()?;
    // SAFETY: a lookup in a map this program owns; the value is only tested for presence.
    decide(unsafe { VXLAN_PEERS.get(&source) }.is_some())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
