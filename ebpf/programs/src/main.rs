//! dcnet's kernel programs: socket-level load balancing in cgroup `sock_addr` hooks.
//!
//! A connect (TCP, or UDP that connects) or an unconnected UDP send to a VIP is rewritten to a
//! backend before the kernel routes it, so a load-balanced connection costs a few map lookups
//! at connect time and nothing per packet: no NAT, no conntrack entry, no port exhaustion.
//! `recvmsg4` and `getpeername4` map the backend back to the VIP, so clients that check a
//! reply's source (DNS-style UDP clients) or ask for their peer see the VIP.
//!
//! - `maps.rs`: every map, and the counters;
//! - `lb.rs`: the decision: VIP lookup, backend choice, counting, reverse entries.
//!
//! Map layouts are in `dcnet-ebpf-common`; the loader is `dcnet-lb`.
#![no_std]
#![no_main]

mod lb;
mod maps;

use aya_ebpf::{
    helpers::{bpf_get_socket_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use dcnet_ebpf_common::{PROTO_UDP, Stat, Vip4Key};
use lb::Decision;

/// Verdicts of cgroup sock_addr programs: 1 lets the call proceed, 0 fails it (with EPERM, or
/// the error set by `bpf_set_retval`, kernel ≥ 5.18).
const ALLOW: i32 = 1;
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    try_connect4(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    try_sendmsg4(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    try_reverse(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    try_getpeername4(&ctx)
}

/// The destination of the call as a VIP key. `user_port` is a 32-bit field holding the port
/// in network order in its low 16 bits (include/uapi/linux/bpf.h); the verifier requires
/// 4-byte reads and writes of it.
#[inline(always)]
fn destination(ctx: &SockAddrContext) -> Vip4Key {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for the hook's duration.
    let sa = unsafe { &*ctx.sock_addr };
    Vip4Key {
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        proto: sa.protocol as u8,
        _pad: 0,
    }
}

#[inline(always)]
fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: `bpf_get_socket_cookie` takes the program's context in sock_addr programs.
    unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) }
}

#[inline(always)]
fn refuse() -> i32 {
    // SAFETY: a helper of cgroup programs; the value becomes the syscall's error.
    unsafe { bpf_set_retval(-ECONNREFUSED) };
    REJECT
}

fn try_connect4(ctx: &SockAddrContext) -> i32 {
    let vip = destination(ctx);
    let Some(entry) = lb::lookup(&vip) else {
        return ALLOW;
    };
    if vip.proto == PROTO_UDP {
        // A connected UDP socket draws by its cookie, the backend sendmsg4 would choose for it,
        // and goes into the shared reverse table, where recvmsg4 and the clean-up of removed
        // backends (userspace, by cookie) find it.
        let cookie = cookie(ctx);
        match lb::choose(&entry, lb::sticky(cookie)) {
            Decision::Refuse => refuse(),
            Decision::To(backend) => {
                rewrite(ctx, &backend);
                lb::remember(cookie, &backend, &vip);
                ALLOW
            }
        }
    } else {
        // TCP draws at random per connection and keeps its VIP in the socket.
        match lb::choose(&entry, lb::random()) {
            Decision::Refuse => refuse(),
            Decision::To(backend) => {
                rewrite(ctx, &backend);
                lb::remember_in_socket(ctx, &backend, &vip);
                ALLOW
            }
        }
    }
}

fn try_sendmsg4(ctx: &SockAddrContext) -> i32 {
    let vip = destination(ctx);
    let Some(entry) = lb::lookup(&vip) else {
        return ALLOW;
    };
    let cookie = cookie(ctx);
    match lb::choose(&entry, lb::sticky(cookie)) {
        Decision::Refuse => refuse(),
        Decision::To(backend) => {
            rewrite(ctx, &backend);
            if !lb::is_remembered(cookie, &backend) {
                lb::remember(cookie, &backend, &vip);
            }
            ALLOW
        }
    }
}

/// Points the call at `backend`.
#[inline(always)]
fn rewrite(ctx: &SockAddrContext, backend: &dcnet_ebpf_common::Backend4) {
    // SAFETY: as in `destination`; connect4 and sendmsg4 may rewrite the address.
    let sa = unsafe { &mut *ctx.sock_addr };
    sa.user_ip4 = backend.addr;
    sa.user_port = u32::from(backend.port);
}

/// `recvmsg4`: the source of a datagram from a backend this socket reached through a VIP is
/// shown as that VIP.
fn try_reverse(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as in `destination`.
    let sa = unsafe { &mut *ctx.sock_addr };
    if let Some(vip) = lb::reverse(cookie(ctx), sa.user_ip4, sa.user_port as u16) {
        show(sa, &vip);
    }
    // These hooks cannot fail the call: the kernel requires them to return 1.
    ALLOW
}

/// `getpeername4`: the peer of a socket connected through a VIP is shown as the VIP. TCP keeps
/// it in the socket, connected UDP in the reverse table.
fn try_getpeername4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as in `destination`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let (addr, port) = (sa.user_ip4, sa.user_port as u16);
    let vip = if sa.protocol as u8 == PROTO_UDP {
        lb::reverse(cookie(ctx), addr, port)
    } else {
        lb::reverse_in_socket(ctx, addr, port)
    };
    if let Some(vip) = vip {
        show(sa, &vip);
    }
    ALLOW
}

#[inline(always)]
fn show(sa: &mut aya_ebpf::bindings::bpf_sock_addr, vip: &dcnet_ebpf_common::Vip4Addr) {
    sa.user_ip4 = vip.addr;
    sa.user_port = u32::from(vip.port);
    maps::stat(Stat::Reversed);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL: needed by helpers the datapath uses (e.g. `bpf_sock_destroy`).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
