//! The load-balancing decision, written once for both families ([`Family`]): look the VIP up,
//! choose a backend, count the connection, and remember the socket's VIP for the reverse
//! hooks.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use dcnet_ebpf_common::{MAX_BACKENDS_PER_VIP, Stat, VipEntry};

use crate::family::Family;
use crate::maps::{BACKEND_CONNS, VIP_CONNS, count, stat};

/// What a hook does with a connect or datagram to a VIP.
pub enum Decision<B> {
    /// Send to this backend instead.
    To(B),
    /// A VIP without a backend taking connections: fail the call with ECONNREFUSED.
    Refuse,
}

/// The VIP's entry, if `key` is one. The only work a connect to anything else costs.
#[inline(always)]
pub fn lookup<F: Family>(key: &F::Key) -> Option<VipEntry> {
    // SAFETY: the VIP tables are not preallocated (see maps.rs), so an entry stays whole while
    // it is copied.
    unsafe { F::vips().get(key) }.copied()
}

/// Chooses a backend of `entry` by `draw` (uniform over u32) and counts the connection.
#[inline(always)]
pub fn choose<F: Family>(entry: &VipEntry, draw: u32) -> Decision<F::Backend> {
    let (first, backends, vip_counter) = (entry.first, entry.count, entry.counter);
    if backends == 0 {
        stat(Stat::NoBackend);
        return Decision::Refuse;
    }
    // The bound keeps the verifier's range of `offset` small; userspace never writes bigger sets.
    let offset = (draw % backends) & (MAX_BACKENDS_PER_VIP - 1);
    let Some(backend) = F::backends().get(first.wrapping_add(offset)) else {
        stat(Stat::BadSlot);
        return Decision::Refuse;
    };
    let backend = *backend;
    count(&VIP_CONNS, vip_counter);
    count(&BACKEND_CONNS, F::backend_parts(&backend).2);
    stat(Stat::Translated);
    Decision::To(backend)
}

/// Remembers in the shared reverse table that socket `cookie` reached `backend` through `key`.
#[inline(always)]
pub fn remember<F: Family>(cookie: u64, backend: &F::Backend, key: &F::Key) {
    let (addr, port, _) = F::backend_parts(backend);
    let (vip, vip_port, _) = F::key_parts(key);
    if F::reverse()
        .insert(
            &F::rev_key(cookie, addr, port),
            &F::vip_addr(vip, vip_port),
            0,
        )
        .is_err()
    {
        stat(Stat::ReverseFull);
    }
}

/// Whether socket `cookie` already has its reverse entry for `backend` (sendmsg: only the first
/// datagram to a backend writes it).
#[inline(always)]
pub fn is_remembered<F: Family>(cookie: u64, backend: &F::Backend) -> bool {
    let (addr, port, _) = F::backend_parts(backend);
    F::reverse()
        .get_ptr(&F::rev_key(cookie, addr, port))
        .is_some()
}

/// The VIP socket `cookie` reached through `addr:port`, if it did.
#[inline(always)]
pub fn reverse<F: Family>(cookie: u64, addr: F::Addr, port: u16) -> Option<F::VipAddr> {
    // SAFETY: a copy is taken at once; LRU recycling can at worst give a stale VIP for a socket
    // that is being torn down.
    unsafe { F::reverse().get(&F::rev_key(cookie, addr, port)) }.copied()
}

/// Remembers that TCP socket `cookie` reached `backend` through `key` (until `sock_release`).
#[inline(always)]
pub fn remember_tcp<F: Family>(cookie: u64, backend: &F::Backend, key: &F::Key) {
    let (addr, port, _) = F::backend_parts(backend);
    let (vip, vip_port, _) = F::key_parts(key);
    let value = F::sock_vip(F::vip_addr(vip, vip_port), addr, port);
    if F::tcp_vips().insert(&cookie, &value, 0).is_err() {
        stat(Stat::ReverseFull);
    }
}

/// The VIP TCP socket `cookie` reached `addr:port` through, if it did.
#[inline(always)]
pub fn reverse_tcp<F: Family>(cookie: u64, addr: F::Addr, port: u16) -> Option<F::VipAddr> {
    // SAFETY: a copy is taken at once; the entry goes only when its own socket is released.
    let value = unsafe { F::tcp_vips().get(&cookie) }?;
    let (vip, backend, backend_port) = F::sock_vip_parts(value);
    (backend == addr && backend_port == port).then_some(vip)
}

/// Forgets TCP socket `cookie` (it is being released).
#[inline(always)]
pub fn forget_tcp<F: Family>(cookie: u64) {
    // Absent for every socket that did not go through a VIP: not an error.
    let _ = F::tcp_vips().remove(&cookie);
}

/// A uniform draw, for TCP connects.
#[inline(always)]
pub fn random() -> u32 {
    // SAFETY: a helper without arguments, allowed in every program type.
    unsafe { bpf_get_prandom_u32() }
}

/// A socket's own draw, for UDP: every datagram of one socket picks the same backend. Spreads
/// the cookie (a counter) over 32 bits so consecutive sockets land on different backends
/// (Fibonacci hashing: the high bits of the product by 2^64/φ).
#[inline(always)]
pub fn sticky(cookie: u64) -> u32 {
    (cookie.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}
