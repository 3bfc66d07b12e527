//! The load-balancing decision shared by the hooks: find the VIP, choose a backend, count the
//! connection and remember the socket's backend for the reverse hooks.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use dcnet_ebpf_common::{Backend4, MAX_BACKENDS_PER_VIP, Reverse4Key, Stat, Vip4Addr, Vip4Key};

use crate::maps::{BACKEND_CONNS, BACKENDS4, REVERSE4, VIP_CONNS, VIPS4, count, stat};

/// What a hook does with a destination.
pub enum Decision {
    /// Not a VIP: leave the destination alone.
    Pass,
    /// Send to this backend instead.
    To(Backend4),
    /// A VIP without a backend taking connections: fail the call with ECONNREFUSED.
    Refuse,
}

/// How a backend is chosen among the VIP's set.
#[derive(Clone, Copy)]
pub enum Pick {
    /// Uniformly at random: every TCP connect.
    Random,
    /// By the socket cookie, so every datagram of one socket goes to the same backend.
    Sticky(u64),
}

/// Looks `vip` up and chooses a backend for it.
#[inline(always)]
pub fn choose(vip: &Vip4Key, pick: Pick) -> Decision {
    // SAFETY: VIPS4 is not preallocated (see maps.rs), so the entry stays whole while read.
    let Some(entry) = (unsafe { VIPS4.get(vip) }) else {
        return Decision::Pass;
    };
    let (first, backends, vip_counter) = (entry.first, entry.count, entry.counter);
    if backends == 0 {
        stat(Stat::NoBackend);
        return Decision::Refuse;
    }
    let draw = match pick {
        Pick::Random => bpf_random(),
        Pick::Sticky(cookie) => mix(cookie),
    };
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

#[inline(always)]
fn bpf_random() -> u32 {
    // SAFETY: a helper without arguments, allowed in every program type.
    unsafe { bpf_get_prandom_u32() }
}

/// Spreads a socket cookie (a counter) over 32 bits, so consecutive sockets land on different
/// backends (Fibonacci hashing: the high bits of the product by 2^64/φ).
#[inline(always)]
fn mix(cookie: u64) -> u32 {
    (cookie.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}
