//! The VXLAN source filter: a tc ingress program on a node's underlay interface that drops
//! every IPv4 UDP datagram to the VXLAN port whose source is not a current peer. VXLAN has no
//! authentication of its own: without this, any host on the underlay could put frames with a
//! forged overlay source into a node's containers.
//!
//! The agent keeps `VXLAN_PEERS` in step with the overlay's peer set. A non-first IP fragment
//! carries no UDP header and passes; its datagram cannot be reassembled without the first
//! fragment, which is checked.
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
static VXLAN_CONFIG: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static VXLAN_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(VxlanStat::COUNT, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

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

/// `None` for anything that is not an IPv4 UDP datagram to the VXLAN port (it passes).
#[inline(always)]
fn verdict(ctx: &TcContext) -> Option<i32> {
    let ethertype: u16 = ctx.load::<u16>(12).ok()?;
    if u16::from_be(ethertype) != ETH_P_IP {
        return None;
    }
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
    let port = *VXLAN_CONFIG.get(0)?;
    if u32::from(dport) != port || port == 0 {
        return None;
    }
    let source: u32 = ctx.load(ETH_HLEN + 12).ok()?;
    // SAFETY: a lookup in a map this program owns; the value is only tested for presence.
    if unsafe { VXLAN_PEERS.get(&source) }.is_some() {
        count(VxlanStat::Passed);
        Some(TC_ACT_OK)
    } else {
        count(VxlanStat::Dropped);
        Some(TC_ACT_SHOT)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
