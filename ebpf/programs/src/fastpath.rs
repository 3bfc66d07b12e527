//! The container fast path: tc ingress programs that take IPv4 and IPv6 traffic of overlay
//! containers past the node's bridge and forwarding, as Cilium's "BPF host routing" does for
//! veths.
//!
//! - `fastpath_from_container`, on the host side of every container's veth: a packet for a
//!   container on this node goes straight into that container (`bpf_redirect_peer`, no
//!   backlog queue); a packet the node would route into the VTEP is sent to the VTEP directly
//!   (`bpf_fib_lookup` + `bpf_redirect`, or `bpf_redirect_neigh` while the neighbour is not
//!   known). Everything else (the node itself, egress, ARP, IPv6 multicast and link-local
//!   traffic such as neighbour discovery) takes the stack's path.
//! - `fastpath_from_tunnel`, on the VTEP: a decapsulated packet for a container on this node
//!   goes straight into it.
//!
//! What the stack would have done to a forwarded packet is done here too: the TTL (IPv6: hop
//! limit) drops by one (an expiring one is left to the stack, which answers with ICMP), the
//! frame gets the
//! gateway's MAC as source. A packet too big for the VTEP is left to the stack (ICMP "needed
//! fragmentation"). Bridged frames (container to container in one subnet) are delivered as
//! they are. Without these programs the same traffic takes the bridge: the kernel objects
//! (bridge, routes, FDB, neighbours) stay as they are, and detaching is always safe.
//!
//! Built as its own object so that loading it creates only its own maps.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup as FibParams,
    },
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use dcnet_ebpf_common::{Endpoint, FASTPATH_MAX_ENDPOINTS, FastpathConfig, FastpathStat};

#[map]
static FASTPATH_ENDPOINTS: HashMap<u32, Endpoint> =
    HashMap::with_max_entries(FASTPATH_MAX_ENDPOINTS, 0);

#[map]
static FASTPATH_ENDPOINTS6: HashMap<[u8; 16], Endpoint> =
    HashMap::with_max_entries(FASTPATH_MAX_ENDPOINTS, 0);

#[map]
static FASTPATH_CONFIG: Array<FastpathConfig> = Array::with_max_entries(1, 0);

#[map]
static FASTPATH_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FastpathStat::COUNT, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPV6_HLEN: u16 = 40;

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    proto: u16,
}

#[repr(C)]
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
struct Ipv6Hdr {
    vtc_flow: u32,
    payload_len: u16,
    nexthdr: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

#[inline(always)]
fn count(stat: FastpathStat) {
    if let Some(slot) = FASTPATH_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: this CPU's slot of a live map element; per-CPU slots are written only by
        // their own CPU with preemption off.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn pass() -> i32 {
    count(FastpathStat::Passed);
    TC_ACT_OK
}

/// The Ethernet and IPv4 headers of an IPv4 frame whose headers are in the linear part.
#[inline(always)]
fn headers(ctx: &TcContext) -> Option<(*mut EthHdr, *mut Ipv4Hdr)> {
    let start = ctx.data();
    if start + ETH_HLEN + size_of::<Ipv4Hdr>() > ctx.data_end() {
        return None;
    }
    let eth = start as *mut EthHdr;
    // SAFETY: bounds checked above against data_end.
    if unsafe { (*eth).proto } != ETH_P_IP.to_be() {
        return None;
    }
    let ip = (start + ETH_HLEN) as *mut Ipv4Hdr;
    // SAFETY: as above.
    if unsafe { (*ip).version_ihl } >> 4 != 4 {
        return None;
    }
    Some((eth, ip))
}

/// Decrements the TTL as forwarding does, updating the checksum incrementally (RFC 1624): the
/// TTL is the high byte of the 16-bit word it shares with the protocol.
///
/// SAFETY: `ip` points at a bounds-checked IPv4 header.
#[inline(always)]
unsafe fn decrement_ttl(ip: *mut Ipv4Hdr) {
    unsafe {
        let mut check = u32::from(u16::from_be((*ip).check)) + 0x0100;
        check = (check + (check >> 16)) & 0xffff;
        (*ip).check = (check as u16).to_be();
        (*ip).ttl -= 1;
    }
}

/// Delivers into a container of this node. A frame already addressed to the container was
/// bridged (same subnet) and goes as it is; a routed one is rewritten as the gateway sends it.
///
/// SAFETY: `eth` and `ip` point at bounds-checked headers.
#[inline(always)]
unsafe fn to_endpoint(eth: *mut EthHdr, ip: *mut Ipv4Hdr, endpoint: &Endpoint) -> i32 {
    unsafe {
        if (*eth).dst != endpoint.mac {
            if (*ip).ttl <= 1 {
                return pass();
            }
            decrement_ttl(ip);
            (*eth).src = endpoint.gateway_mac;
            (*eth).dst = endpoint.mac;
        }
        count(FastpathStat::ToContainer);
        bpf_redirect_peer(endpoint.ifindex, 0) as i32
    }
}

/// The Ethernet and IPv6 headers of an IPv6 frame whose headers are in the linear part.
#[inline(always)]
fn headers6(ctx: &TcContext) -> Option<(*mut EthHdr, *mut Ipv6Hdr)> {
    let start = ctx.data();
    if start + ETH_HLEN + size_of::<Ipv6Hdr>() > ctx.data_end() {
        return None;
    }
    let eth = start as *mut EthHdr;
    // SAFETY: bounds checked above against data_end.
    if unsafe { (*eth).proto } != ETH_P_IPV6.to_be() {
        return None;
    }
    Some((eth, (start + ETH_HLEN) as *mut Ipv6Hdr))
}

/// Whether the frame is IPv6 (as opposed to IPv4 or anything else).
#[inline(always)]
fn is_ipv6(ctx: &TcContext) -> bool {
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return false;
    }
    // SAFETY: bounds checked above against data_end.
    unsafe { (*(start as *const EthHdr)).proto == ETH_P_IPV6.to_be() }
}

/// [`to_endpoint`] for IPv6: the hop limit has no checksum to keep.
///
/// SAFETY: `eth` and `ip` point at bounds-checked headers.
#[inline(always)]
unsafe fn to_endpoint6(eth: *mut EthHdr, ip: *mut Ipv6Hdr, endpoint: &Endpoint) -> i32 {
    unsafe {
        if (*eth).dst != endpoint.mac {
            if (*ip).hop_limit <= 1 {
                return pass();
            }
            (*ip).hop_limit -= 1;
            (*eth).src = endpoint.gateway_mac;
            (*eth).dst = endpoint.mac;
        }
        count(FastpathStat::ToContainer);
        bpf_redirect_peer(endpoint.ifindex, 0) as i32
    }
}

/// An address as the FIB lookup takes it: the 16 bytes as four native words.
#[inline(always)]
fn words(bytes: &[u8; 16]) -> [u32; 4] {
    let word = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

#[classifier]
pub fn fastpath_from_tunnel(ctx: TcContext) -> i32 {
    if is_ipv6(&ctx) {
        let Some((eth, ip)) = headers6(&ctx) else {
            return pass();
        };
        // SAFETY: `ip` was bounds checked; the lookup's value is copied out at once.
        let endpoint = match unsafe { FASTPATH_ENDPOINTS6.get(&(*ip).dst) } {
            Some(endpoint) => *endpoint,
            None => return pass(),
        };
        // SAFETY: bounds-checked headers.
        return unsafe { to_endpoint6(eth, ip, &endpoint) };
    }
    let Some((eth, ip)) = headers(&ctx) else {
        return pass();
    };
    // SAFETY: `ip` was bounds checked; the lookup's value is copied out at once.
    let endpoint = match unsafe { FASTPATH_ENDPOINTS.get(&(*ip).dst) } {
        Some(endpoint) => *endpoint,
        None => return pass(),
    };
    // SAFETY: bounds-checked headers.
    unsafe { to_endpoint(eth, ip, &endpoint) }
}

#[classifier]
pub fn fastpath_from_container(ctx: TcContext) -> i32 {
    if is_ipv6(&ctx) {
        return from_container6(&ctx);
    }
    let Some((eth, ip)) = headers(&ctx) else {
        return pass();
    };
    // SAFETY: `ip` was bounds checked.
    let (src, dst, ttl, tos, protocol, tot_len) = unsafe {
        (
            (*ip).src,
            (*ip).dst,
            (*ip).ttl,
            (*ip).tos,
            (*ip).protocol,
            (*ip).tot_len,
        )
    };
    // SAFETY: the lookup's value is copied out at once.
    if let Some(endpoint) = unsafe { FASTPATH_ENDPOINTS.get(&dst) }.copied() {
        // SAFETY: bounds-checked headers.
        return unsafe { to_endpoint(eth, ip, &endpoint) };
    }
    let vtep = match FASTPATH_CONFIG.get(0) {
        Some(config) if config.vtep_ifindex != 0 => config.vtep_ifindex,
        _ => return pass(),
    };
    if ttl <= 1 {
        return pass();
    }
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = protocol;
    fib.__bindgen_anon_1.tot_len = u16::from_be(tot_len);
    // SAFETY: the context's skb is valid for the program's run.
    fib.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    fib.__bindgen_anon_2.tos = tos;
    fib.__bindgen_anon_3.ipv4_src = src;
    fib.__bindgen_anon_4.ipv4_dst = dst;
    let rc = fib_lookup(&ctx, &mut fib);
    if fib.ifindex != vtep {
        return pass();
    }
    // Packet pointers are re-derived: the verifier forgets them across helper calls.
    let Some((eth, ip)) = headers(&ctx) else {
        return pass();
    };
    // SAFETY: bounds-checked headers.
    unsafe { to_tunnel(rc, &fib, vtep, eth, || decrement_ttl(ip)) }
}

/// Looks the packet's next hop up in the kernel's FIB, policy rules included.
#[inline(always)]
fn fib_lookup(ctx: &TcContext, fib: &mut FibParams) -> u32 {
    // SAFETY: `fib` is a live, correctly sized lookup structure; the skb is the program's.
    let rc =
        unsafe { bpf_fib_lookup(ctx.skb.skb as *mut _, fib, size_of::<FibParams>() as i32, 0) };
    rc as u32
}

/// Sends a packet the FIB routed into the VTEP there: with the next hop's MACs when the lookup
/// knew them, else through `bpf_redirect_neigh`, which resolves the neighbour. `forwarded`
/// lowers the TTL or hop limit first, as forwarding does.
///
/// SAFETY: `eth` points at a bounds-checked header, and `forwarded` writes only bounds-checked
/// ones.
#[inline(always)]
unsafe fn to_tunnel(
    rc: u32,
    fib: &FibParams,
    vtep: u32,
    eth: *mut EthHdr,
    forwarded: impl FnOnce(),
) -> i32 {
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            forwarded();
            // SAFETY: as the caller promises.
            unsafe {
                (*eth).src = fib.smac;
                (*eth).dst = fib.dmac;
            }
            count(FastpathStat::ToTunnel);
            // SAFETY: a redirect to an interface index; the kernel checks it.
            unsafe { bpf_redirect(vtep, 0) as i32 }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            forwarded();
            count(FastpathStat::ToTunnelNeigh);
            // SAFETY: a null parameter block makes the kernel look the next hop up again.
            unsafe { bpf_redirect_neigh(vtep, core::ptr::null_mut(), 0, 0) as i32 }
        }
        _ => pass(),
    }
}

/// [`fastpath_from_container`] for IPv6.
#[inline(always)]
fn from_container6(ctx: &TcContext) -> i32 {
    let Some((eth, ip)) = headers6(ctx) else {
        return pass();
    };
    // SAFETY: `ip` was bounds checked.
    let (src, dst, hop_limit, nexthdr, payload_len, vtc_flow) = unsafe {
        (
            (*ip).src,
            (*ip).dst,
            (*ip).hop_limit,
            (*ip).nexthdr,
            (*ip).payload_len,
            (*ip).vtc_flow,
        )
    };
    // Multicast and link-local (neighbour discovery among them) stay on the link: the stack's.
    if dst[0] == 0xff || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80) {
        return pass();
    }
    // SAFETY: the lookup's value is copied out at once.
    if let Some(endpoint) = unsafe { FASTPATH_ENDPOINTS6.get(&dst) }.copied() {
        // SAFETY: bounds-checked headers.
        return unsafe { to_endpoint6(eth, ip, &endpoint) };
    }
    let vtep = match FASTPATH_CONFIG.get(0) {
        Some(config) if config.vtep_ifindex != 0 => config.vtep_ifindex,
        _ => return pass(),
    };
    if hop_limit <= 1 {
        return pass();
    }
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET6;
    fib.l4_protocol = nexthdr;
    // With the length, the lookup answers "fragmentation needed" for a packet too big for the
    // VTEP: left to the stack, which sends "packet too big".
    fib.__bindgen_anon_1.tot_len = u16::from_be(payload_len).saturating_add(IPV6_HLEN);
    // SAFETY: the context's skb is valid for the program's run.
    fib.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Traffic class and flow label, as the kernel's own lookup keys them.
    fib.__bindgen_anon_2.flowinfo = vtc_flow & 0x0fff_ffffu32.to_be();
    fib.__bindgen_anon_3.ipv6_src = words(&src);
    fib.__bindgen_anon_4.ipv6_dst = words(&dst);
    let rc = fib_lookup(ctx, &mut fib);
    if fib.ifindex != vtep {
        return pass();
    }
    // Packet pointers are re-derived: the verifier forgets them across helper calls.
    let Some((eth, ip)) = headers6(ctx) else {
        return pass();
    };
    // SAFETY: bounds-checked headers.
    unsafe { to_tunnel(rc, &fib, vtep, eth, || (*ip).hop_limit -= 1) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
