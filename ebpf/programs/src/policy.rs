//! Network policies: cgroup skb programs on the tasks' cgroup that let a packet enter
//! (`policy_ingress`) or leave (`policy_egress`) a task only if its flow is allowed.
//!
//! Why cgroup skb hooks and not tc on the host-side veths: they see every packet a task's
//! sockets send or receive, whichever path carried it (the fast path's `bpf_redirect_peer`
//! skips the host-side veth's tc egress), a connect to a VIP is already translated to its
//! backend when its packets leave (policies apply by the backend's identity), and the tasks'
//! cgroup is one attach point for every task of the node.
//!
//! Per packet: the flow (the task's address and port, the peer's, the protocol) is looked up
//! in the flow cache; a flow cached under the current epoch passes. Otherwise the flow is
//! decided as its first packet is: the task's identity (its address in `POLICY_IDENTITIES`; an
//! address that is no task's passes), and if that identity is isolated in this direction, the
//! allow entries for the peer's identity, any peer, or the peer's network, on the port, the
//! protocol or anything (`POLICY_ALLOW`, `POLICY_NETS`). Allowed flows are cached, so replies
//! pass both ways; a cached flow of an older epoch (the rules changed since) is decided again
//! in its first packet's direction, so a change applies to established flows too (a flow no
//! longer allowed stays cached as refused until it idles out). Denied new flows are not
//! cached: a flood of them cannot push allowed flows out of the cache.
//!
//! Always let through: ICMP (errors and neighbour discovery keep allowed flows working; the
//! kernel answers pings outside the task's sockets anyway), a task talking to itself, and
//! packets from this node into a task (its health checks).
//!
//! Built as its own object so that loading it creates only its own maps.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{cgroup_skb, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
    programs::SkBuffContext,
};
use dcnet_ebpf_common::{
    POLICY_ANY, POLICY_EGRESS, POLICY_HOST, POLICY_INGRESS, POLICY_MAX_ADDRESSES, POLICY_MAX_ALLOW,
    POLICY_MAX_FLOWS, POLICY_MAX_ISOLATED, POLICY_MAX_NETS, POLICY_NET_FIXED_BITS,
    POLICY_OTHER_IDLE, POLICY_TCP_IDLE, POLICY_WORLD, PROTO_TCP, PROTO_UDP, PolicyAllow,
    PolicyConfig, PolicyFlow, PolicyFlowState, PolicyIsolated, PolicyNet, PolicyStat,
};

#[map]
static POLICY_IDENTITIES: HashMap<[u32; 4], u32> =
    HashMap::with_max_entries(POLICY_MAX_ADDRESSES, BPF_F_NO_PREALLOC);

#[map]
static POLICY_ISOLATED: PerCpuHashMap<PolicyIsolated, u64> =
    PerCpuHashMap::with_max_entries(POLICY_MAX_ISOLATED, BPF_F_NO_PREALLOC);

#[map]
static POLICY_ALLOW: HashMap<PolicyAllow, u8> =
    HashMap::with_max_entries(POLICY_MAX_ALLOW, BPF_F_NO_PREALLOC);

#[map]
static POLICY_NETS: LpmTrie<PolicyNet, u8> =
    LpmTrie::with_max_entries(POLICY_MAX_NETS, BPF_F_NO_PREALLOC);

#[map]
static POLICY_FLOWS: LruHashMap<PolicyFlow, PolicyFlowState> =
    LruHashMap::with_max_entries(POLICY_MAX_FLOWS, 0);

#[map]
static POLICY_CONFIG: Array<PolicyConfig> = Array::with_max_entries(1, 0);

#[map]
static POLICY_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PolicyStat::COUNT, 0);

/// Verdicts of cgroup skb programs.
const PASS: i32 = 1;
const DROP: i32 = 0;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

#[cgroup_skb(ingress)]
pub fn policy_ingress(ctx: SkBuffContext) -> i32 {
    decide(&ctx, POLICY_INGRESS)
}

#[cgroup_skb(egress)]
pub fn policy_egress(ctx: SkBuffContext) -> i32 {
    decide(&ctx, POLICY_EGRESS)
}

#[inline(always)]
fn count(stat: PolicyStat) {
    if let Some(slot) = POLICY_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: this CPU's slot of a live map element; per-CPU slots are written only by
        // their own CPU with preemption off.
        unsafe { *slot += 1 };
    }
}

/// What a packet's headers say of its flow.
struct Packet {
    src: [u32; 4],
    dst: [u32; 4],
    src_port: u16,
    dst_port: u16,
    proto: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    check: u16,
    src: u32,
    dst: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    vtc_flow: u32,
    payload_len: u16,
    nexthdr: u8,
    hop_limit: u8,
    src: [u32; 4],
    dst: [u32; 4],
}

/// The packet's addresses, protocol and (TCP, UDP) ports; `None` if it is neither IPv4 nor
/// IPv6 or too short. The hooks see the packet from its network header on; each header is
/// copied out in one load.
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Option<Packet> {
    let protocol = ctx.skb.protocol();
    let (src, dst, proto, l4) = if protocol == u32::from(ETH_P_IP.to_be()) {
        let ip: Ipv4Hdr = ctx.load(0).ok()?;
        let mapped = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        (
            [0, 0, mapped, ip.src],
            [0, 0, mapped, ip.dst],
            ip.protocol,
            usize::from(ip.version_ihl & 0x0f) * 4,
        )
    } else if protocol == u32::from(ETH_P_IPV6.to_be()) {
        // Extension headers are not walked: a packet with them is decided as a protocol of
        // its own (only entries for any protocol match it).
        let ip: Ipv6Hdr = ctx.load(0).ok()?;
        (ip.src, ip.dst, ip.nexthdr, 40)
    } else {
        return None;
    };
    let (src_port, dst_port) = if proto == PROTO_TCP || proto == PROTO_UDP {
        let ports: [u16; 2] = ctx.load(l4).ok()?;
        (ports[0], ports[1])
    } else {
        (0, 0)
    };
    Some(Packet {
        src,
        dst,
        src_port,
        dst_port,
        proto,
    })
}

/// Now, in units of 2^30 ns; the coarse clock (a tick's resolution) is plenty for idle times
/// of a minute and more.
#[inline(always)]
fn now() -> u32 {
    // SAFETY: a helper every program type may call.
    (unsafe { bpf_ktime_get_coarse_ns() } >> 30) as u32
}

/// The identity of a task address, if it is one.
#[inline(always)]
fn identity(address: &[u32; 4]) -> Option<u32> {
    // SAFETY: a plain value copied out at once; the map is not preallocated, so an entry
    // replaced meanwhile stays whole until an RCU grace period after this program.
    unsafe { POLICY_IDENTITIES.get(address) }.copied()
}

#[inline(always)]
fn epoch() -> u32 {
    POLICY_CONFIG.get(0).map_or(0, |c| c.epoch)
}

#[inline(always)]
fn decide(ctx: &SkBuffContext, direction: u8) -> i32 {
    let Some(p) = parse(ctx) else {
        return PASS;
    };
    if p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6 || p.src == p.dst {
        return PASS;
    }
    // The flow as the task sees it.
    let flow = if direction == POLICY_EGRESS {
        PolicyFlow {
            local: p.src,
            remote: p.dst,
            local_port: p.src_port,
            remote_port: p.dst_port,
            proto: p.proto,
            _pad: [0; 3],
        }
    } else {
        PolicyFlow {
            local: p.dst,
            remote: p.src,
            local_port: p.dst_port,
            remote_port: p.src_port,
            proto: p.proto,
            _pad: [0; 3],
        }
    };
    // The cache first: a flow cached under this epoch costs one lookup.
    let epoch = epoch();
    let now = now();
    let idle = if p.proto == PROTO_TCP {
        POLICY_TCP_IDLE
    } else {
        POLICY_OTHER_IDLE
    };
    if let Some(state) = POLICY_FLOWS.get_ptr_mut(&flow) {
        // SAFETY: an element of a live map; its fields are plain integers, and a racing
        // writer on another CPU can only store one of the same values.
        let state = unsafe { &mut *state };
        if now.wrapping_sub(state.seen) <= idle {
            if state.seen != now {
                state.seen = now;
            }
            if state.epoch == epoch && state.allowed != 0 {
                return PASS;
            }
            let Some(subject) = identity(&flow.local) else {
                // No task's address any more: not for policies to decide.
                let _ = POLICY_FLOWS.remove(&flow);
                return PASS;
            };
            if state.epoch != epoch {
                // The rules changed since: decided again as its first packet was. A revoked
                // flow stays in the cache, refused, so that a packet the other way (which
                // alone might look like a flow of its own) does not let it through again.
                let allowed = allowed(&flow, subject, state.origin);
                if !allowed && state.allowed != 0 {
                    count(PolicyStat::Revoked);
                }
                state.allowed = u8::from(allowed);
                state.epoch = epoch;
                if allowed {
                    return PASS;
                }
            }
            deny(subject, state.origin);
            count(PolicyStat::Denied);
            return DROP;
        }
    }
    let Some(subject) = identity(&flow.local) else {
        // Not a task's address (loopback, a process of the cgroup on the node's network).
        return PASS;
    };
    if !allowed(&flow, subject, direction) {
        deny(subject, direction);
        count(PolicyStat::Denied);
        return DROP;
    }
    let state = PolicyFlowState {
        epoch,
        seen: now,
        origin: direction,
        allowed: 1,
        _pad: [0; 2],
    };
    // A full cache evicts its least recently used flow; if the insert fails all the same the
    // flow is decided again at its next packet.
    let _ = POLICY_FLOWS.insert(&flow, &state, 0);
    count(PolicyStat::Allowed);
    PASS
}

/// Counts a denied packet on the (identity, direction) that refused it.
#[inline(always)]
fn deny(subject: u32, direction: u8) {
    let key = PolicyIsolated {
        identity: subject,
        direction,
        _pad: [0; 3],
    };
    if let Some(slot) = POLICY_ISOLATED.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a live element.
        unsafe { *slot += 1 };
    }
}

/// Whether `flow`, seen first in `direction`, may pass: its task is not isolated that way, or
/// an entry allows its peer on its port.
#[inline(always)]
fn allowed(flow: &PolicyFlow, subject: u32, direction: u8) -> bool {
    let isolated = PolicyIsolated {
        identity: subject,
        direction,
        _pad: [0; 3],
    };
    if POLICY_ISOLATED.get_ptr(&isolated).is_none() {
        return true;
    }
    // SAFETY: as for the subject's identity.
    let peer = unsafe { POLICY_IDENTITIES.get(&flow.remote) }
        .copied()
        .unwrap_or(POLICY_WORLD);
    if direction == POLICY_INGRESS && peer == POLICY_HOST {
        return true;
    }
    // The port the flow was opened to: the peer's when it leaves, the task's when it enters.
    let port = if direction == POLICY_EGRESS {
        flow.remote_port
    } else {
        flow.local_port
    };
    let proto = flow.proto;
    allowed_on(flow, subject, peer, direction, proto, port)
        || allowed_on(flow, subject, peer, direction, proto, 0)
        || allowed_on(flow, subject, peer, direction, 0, 0)
}

#[inline(always)]
fn allowed_on(
    flow: &PolicyFlow,
    subject: u32,
    peer: u32,
    direction: u8,
    proto: u8,
    port: u16,
) -> bool {
    let entry = |peer| PolicyAllow {
        subject,
        peer,
        port,
        proto,
        direction,
    };
    if POLICY_ALLOW.get_ptr(&entry(POLICY_ANY)).is_some() {
        return true;
    }
    if peer != POLICY_WORLD && POLICY_ALLOW.get_ptr(&entry(peer)).is_some() {
        return true;
    }
    let net = Key::new(
        POLICY_NET_FIXED_BITS + 128,
        PolicyNet {
            direction,
            proto,
            port,
            subject,
            addr: flow.remote,
        },
    );
    POLICY_NETS.get(&net).is_some()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL: the license of the other programs (no GPL-only helper is needed here).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
