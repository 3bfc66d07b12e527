//! The load-balancing decision shared by the hooks: look the VIP up, choose a backend, count
//! the connection, and remember the socket's backend for the reverse hooks.

use aya_ebpf::{helpers::bpf_get_prandom_u32, programs::SockAddrContext};
use dcnet_ebpf_common::{
    Backend4, MAX_BACKENDS_PER_VIP, Reverse4Key, SockVip4, Stat, Vip4Addr, Vip4Key, VipEntry,
};

use crate::maps::{BACKEND_CONNS, BACKENDS4, REVERSE4, SOCK_VIP4, VIP_CONNS, VIPS4, count, stat};

/// What a hook does with a connect or datagram to a VIP.
pub enum Decision {
    /// Send to this backend instead.
    To(Backend4),
    /// A VIP without a backend taking connections: fail the call with ECONNREFUSED.
    Refuse,
}

/// The VIP's entry, if `vip` is one. The only work a connect to anything else costs.
#[inline(always)]
pub fn lookup(vip: &Vip4Key) -> Option<VipEntry> {
    // SAFETY: VIPS4 is not preallocated (see maps.rs), so the entry stays whole while copied.
    unsafe { VIPS4.get(vip) }.copied()
}

/// Chooses a backend of `entry` by `draw` (uniform over u32) and counts the connection.
#[inline(always)]
pub fn choose(entry: &VipEntry, draw: u32) -> Decision {
    let (first, backends, vip_counter) = (entry.first, entry.count, entry.counter);
    if backends == 0 {
        stat(Stat::NoBackend);
        return Decision::Refuse;
    }
    // The bound keeps the verifier's range of `offset` small; userspace never writes bigger sets.
    let offset = (draw % backends) & (MAX_BACKENDS_PER_VIP - 1);
    let Some(backend) = BACKENDS4.get(first.wrapping_add(offset)) else {
        stat(Stat::BadSlot);
        return Decision::Refuse;
    };
    let backend = *backend;
    count(&VIP_CONNS, vip_counter);
    count(&BACKEND_CONNS, backend.counter);
    stat(Stat::Translated);
    Decision::To(backend)
}

/// Remembers that socket `cookie` talks to `backend` on behalf of `vip`.
#[inline(always)]
pub fn remember(cookie: u64, backend: &Backend4, vip: &Vip4Key) {
    let key = Reverse4Key {
        cookie,
        addr: backend.addr,
        port: backend.port,
        _pad: 0,
    };
    let value = Vip4Addr {
        addr: vip.addr,
        port: vip.port,
        _pad: 0,
    };
    if REVERSE4.insert(&key, &value, 0).is_err() {
        stat(Stat::ReverseFull);
    }
}

/// Remembers, in the socket itself, that this TCP socket reached `backend` through `vip`.
#[inline(always)]
pub fn remember_in_socket(ctx: &SockAddrContext, backend: &Backend4, vip: &Vip4Key) {
    let mut value = SockVip4 {
        vip: Vip4Addr {
            addr: vip.addr,
            port: vip.port,
            _pad: 0,
        },
        backend_addr: backend.addr,
        backend_port: backend.port,
        _pad: 0,
    };
    // SAFETY: the context's socket is valid for the hook's duration.
    let slot = unsafe { SOCK_VIP4.get_or_insert_ptr_mut(ctx, Some(&mut value)) };
    if slot.is_null() {
        stat(Stat::ReverseFull);
    } else {
        // SAFETY: non-null: this socket's storage. A socket that connects again (after a failed
        // connect) gets its entry overwritten.
        unsafe { *slot = value };
    }
}

/// The VIP this TCP socket reached `addr:port` through, if it did.
#[inline(always)]
pub fn reverse_in_socket(ctx: &SockAddrContext, addr: u32, port: u16) -> Option<Vip4Addr> {
    // SAFETY: the context's socket is valid for the hook's duration.
    let slot = unsafe { SOCK_VIP4.get_ptr_mut(ctx) };
    if slot.is_null() {
        return None;
    }
    // SAFETY: non-null: this socket's storage.
    let value = unsafe { *slot };
    (value.backend_addr == addr && value.backend_port == port).then_some(value.vip)
}

/// Whether socket `cookie` already has its reverse entry for `backend` (sendmsg: only the first
/// datagram to a backend writes it).
#[inline(always)]
pub fn is_remembered(cookie: u64, backend: &Backend4) -> bool {
    let key = Reverse4Key {
        cookie,
        addr: backend.addr,
        port: backend.port,
        _pad: 0,
    };
    REVERSE4.get_ptr(&key).is_some()
}

/// The VIP socket `cookie` reached through `addr:port`, if it did.
#[inline(always)]
pub fn reverse(cookie: u64, addr: u32, port: u16) -> Option<Vip4Addr> {
    let key = Reverse4Key {
        cookie,
        addr,
        port,
        _pad: 0,
    };
    // SAFETY: a copy is taken at once; LRU recycling can at worst give a stale VIP for a socket
    // that is being torn down.
    unsafe { REVERSE4.get(&key) }.copied()
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
