//! dcnet's kernel programs: socket-level load balancing in cgroup `sock_addr` hooks, for IPv4
//! (`connect4`, `sendmsg4`, `recvmsg4`, `getpeername4`) and IPv6 (the same with `6`), and a
//! `sock_release` hook that forgets a closing TCP socket's VIP.
//!
//! A connect (TCP, or UDP that connects) or an unconnected UDP send to a VIP is rewritten to a
//! backend before the kernel routes it, so a load-balanced connection costs a few map lookups
//! at connect time and nothing per packet: no NAT, no conntrack entry, no port exhaustion.
//! `recvmsg*` and `getpeername*` map the backend back to the VIP, so clients that check a
//! reply's source (DNS-style UDP clients) or ask for their peer see the VIP.
//!
//! - `maps.rs`: every map, and the counters;
//! - `family.rs`: IPv4 and IPv6 behind one trait, so each hook is written once;
//! - `lb.rs`: the decision: VIP lookup, backend choice, counting, reverse entries.
//!
//! Map layouts are in `dcnet-ebpf-common`; the loader is `dcnet-lb`.
#![no_std]
#![no_main]

mod family;
mod lb;
mod maps;

use aya_ebpf::{
    helpers::{bpf_get_socket_cookie, bpf_set_retval},
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use dcnet_ebpf_common::{PROTO_TCP, PROTO_UDP, Stat};
use family::{Family, V4, V6};
use lb::Decision;

/// Verdicts of cgroup sock_addr programs: 1 lets the call proceed, 0 fails it (with EPERM, or
/// the error set by `bpf_set_retval`, kernel ≥ 5.18).
const ALLOW: i32 = 1;
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;
const AF_INET6: u32 = 10;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    try_connect::<V4>(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    try_sendmsg::<V4>(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    try_recvmsg::<V4>(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    try_getpeername::<V4>(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    try_connect::<V6>(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    try_sendmsg::<V6>(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    try_recvmsg::<V6>(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    try_getpeername::<V6>(&ctx)
}

/// The call's destination (or peer) as a VIP key.
#[inline(always)]
fn destination<F: Family>(ctx: &SockAddrContext) -> F::Key {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for the hook's duration.
    let sa = unsafe { &*ctx.sock_addr };
    let (addr, port) = F::address(sa);
    F::key(addr, port, sa.protocol as u8)
}

/// Points the call at `backend`.
#[inline(always)]
fn rewrite<F: Family>(ctx: &SockAddrContext, backend: &F::Backend) {
    // SAFETY: as in `destination`; connect and sendmsg hooks may rewrite the address.
    let sa = unsafe { &mut *ctx.sock_addr };
    let (addr, port, _) = F::backend_parts(backend);
    F::set_address(sa, addr, port);
}

/// Shows `vip` as the call's address (reverse hooks).
#[inline(always)]
fn show<F: Family>(ctx: &SockAddrContext, vip: &F::VipAddr) {
    // SAFETY: as in `destination`; recvmsg and getpeername hooks may rewrite the address.
    let sa = unsafe { &mut *ctx.sock_addr };
    let (addr, port) = F::vip_parts(vip);
    F::set_address(sa, addr, port);
    maps::stat(Stat::Reversed);
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

#[inline(always)]
fn try_connect<F: Family>(ctx: &SockAddrContext) -> i32 {
    let key = destination::<F>(ctx);
    let Some(entry) = lb::lookup::<F>(&key) else {
        return ALLOW;
    };
    if F::key_parts(&key).2 == PROTO_UDP {
        // A connected UDP socket draws by its cookie, the backend sendmsg would choose for it,
        // and goes into the shared reverse table, where recvmsg and the clean-up of removed
        // backends (userspace, by cookie) find it.
        let cookie = cookie(ctx);
        match lb::choose::<F>(&entry, lb::sticky(cookie)) {
            Decision::Refuse => refuse(),
            Decision::To(backend) => {
                rewrite::<F>(ctx, &backend);
                lb::remember::<F>(cookie, &backend, &key);
                ALLOW
            }
        }
    } else {
        // TCP draws at random per connection; its VIP is kept by cookie until sock_release.
        match lb::choose::<F>(&entry, lb::random()) {
            Decision::Refuse => refuse(),
            Decision::To(backend) => {
                rewrite::<F>(ctx, &backend);
                lb::remember_tcp::<F>(cookie(ctx), &backend, &key);
                ALLOW
            }
        }
    }
}

#[inline(always)]
fn try_sendmsg<F: Family>(ctx: &SockAddrContext) -> i32 {
    let key = destination::<F>(ctx);
    let Some(entry) = lb::lookup::<F>(&key) else {
        return ALLOW;
    };
    let cookie = cookie(ctx);
    match lb::choose::<F>(&entry, lb::sticky(cookie)) {
        Decision::Refuse => refuse(),
        Decision::To(backend) => {
            rewrite::<F>(ctx, &backend);
            if !lb::is_remembered::<F>(cookie, &backend) {
                lb::remember::<F>(cookie, &backend, &key);
            }
            ALLOW
        }
    }
}

/// `recvmsg`: the source of a datagram from a backend this socket reached through a VIP is
/// shown as that VIP.
#[inline(always)]
fn try_recvmsg<F: Family>(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as in `destination`.
    let (addr, port) = F::address(unsafe { &*ctx.sock_addr });
    if let Some(vip) = lb::reverse::<F>(cookie(ctx), addr, port) {
        show::<F>(ctx, &vip);
    }
    // The reverse hooks cannot fail the call: the kernel requires them to return 1.
    ALLOW
}

/// `getpeername`: the peer of a socket connected through a VIP is shown as the VIP, from the
/// TCP table or (connected UDP) the reverse table.
#[inline(always)]
fn try_getpeername<F: Family>(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as in `destination`.
    let sa = unsafe { &*ctx.sock_addr };
    let (addr, port) = F::address(sa);
    let vip = if sa.protocol as u8 == PROTO_UDP {
        lb::reverse::<F>(cookie(ctx), addr, port)
    } else {
        lb::reverse_tcp::<F>(cookie(ctx), addr, port)
    };
    if let Some(vip) = vip {
        show::<F>(ctx, &vip);
    }
    ALLOW
}

/// A socket of the cgroup is released: forget its TCP VIP entry, if it had one.
#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    // SAFETY: the kernel hands the program a valid `bpf_sock` for the hook's duration.
    let sk = unsafe { &*ctx.sock };
    if sk.protocol as u8 == PROTO_TCP {
        // SAFETY: `bpf_get_socket_cookie` takes the program's context in cgroup sock programs.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
        if sk.family == AF_INET6 {
            lb::forget_tcp::<V6>(cookie);
        } else {
            lb::forget_tcp::<V4>(cookie);
        }
    }
    ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL: needed by helpers the datapath uses (`bpf_set_retval`).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
