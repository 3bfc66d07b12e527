//! Every map of the datapath, in one place (layouts in `dcnet-ebpf-common`, which also says what
//! each one holds). Capacities are defaults the loader may change before loading.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use dcnet_ebpf_common::{
    BACKEND_CONNS_MAX_ENTRIES, BACKENDS4_MAX_ENTRIES, BACKENDS6_MAX_ENTRIES, Backend4, Backend6,
    REVERSE4_MAX_ENTRIES, REVERSE6_MAX_ENTRIES, Reverse4Key, Reverse6Key, SockVip4, SockVip6, Stat,
    TCP_VIPS_MAX_ENTRIES, VIPS4_MAX_ENTRIES, VIPS6_MAX_ENTRIES, Vip4Addr, Vip4Key, Vip6Addr,
    Vip6Key, VipEntry,
};

/// Not preallocated on purpose: with preallocation the kernel recycles a replaced element at
/// once (the per-CPU spare of `htab_map_update_elem`), so a reader could see the fields of two
/// different sets; without it, a replaced element is freed after an RCU grace period and a
/// lookup sees either the old entry or the new one, whole.
#[map]
pub static VIPS4: HashMap<Vip4Key, VipEntry> =
    HashMap::with_max_entries(VIPS4_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static BACKENDS4: Array<Backend4> = Array::with_max_entries(BACKENDS4_MAX_ENTRIES, 0);

#[map]
pub static REVERSE4: LruHashMap<Reverse4Key, Vip4Addr> =
    LruHashMap::with_max_entries(REVERSE4_MAX_ENTRIES, 0);

/// A TCP socket's VIP by socket cookie, from connect to `sock_release`. Preallocated: an insert
/// takes a free element without allocating.
#[map]
pub static TCP_VIPS4: HashMap<u64, SockVip4> = HashMap::with_max_entries(TCP_VIPS_MAX_ENTRIES, 0);

/// As [`VIPS4`], for IPv6.
#[map]
pub static VIPS6: HashMap<Vip6Key, VipEntry> =
    HashMap::with_max_entries(VIPS6_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static BACKENDS6: Array<Backend6> = Array::with_max_entries(BACKENDS6_MAX_ENTRIES, 0);

#[map]
pub static REVERSE6: LruHashMap<Reverse6Key, Vip6Addr> =
    LruHashMap::with_max_entries(REVERSE6_MAX_ENTRIES, 0);

#[map]
pub static TCP_VIPS6: HashMap<u64, SockVip6> = HashMap::with_max_entries(TCP_VIPS_MAX_ENTRIES, 0);

#[map]
pub static VIP_CONNS: PerCpuArray<u64> = PerCpuArray::with_max_entries(VIPS4_MAX_ENTRIES, 0);

#[map]
pub static BACKEND_CONNS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(BACKEND_CONNS_MAX_ENTRIES, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// Adds one to a per-CPU counter. Per-CPU slots are only written by their own CPU with
/// preemption off, so a plain increment is exact.
#[inline(always)]
pub fn count(map: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot of a live map element.
        unsafe { *slot += 1 };
    }
}

/// Counts a datapath outcome in [`STATS`].
#[inline(always)]
pub fn stat(s: Stat) {
    count(&STATS, s as u32);
}
