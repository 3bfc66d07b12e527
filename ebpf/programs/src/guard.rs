//! The control-plane guard: cgroup `sock_addr` hooks on the tasks' cgroup that refuse a
//! connect (TCP, or UDP that connects) or an unconnected send to any node's control-plane
//! listeners: the scheduler's API, the agent's API, the gossip port.
//!
//! Rules are (port, protocol, address prefix) in an LPM trie per family, kept in step with the
//! cluster by the agent (`dcnet_lb::guard`); a lookup is one trie walk per connect or send.
//! The hooks run on the task's own cgroup before any ancestor's (the load balancer's), so they
//! see the address the task asked for. A task runs without capabilities, so it has no raw
//! sockets to go around them; DNS, the overlay and VIPs are not control-plane ports and pass.
//!
//! Built as its own object (not in `main.rs`) so that loading it creates only its own maps.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_set_retval,
    macros::{cgroup_sock_addr, map},
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::SockAddrContext,
};
use dcnet_ebpf_common::{GUARD_FIXED_BITS, GUARD_MAX_ENTRIES, Guard4, Guard6, GuardStat};

const ALLOW: i32 = 1;
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

#[map]
static GUARD4: LpmTrie<Guard4, u32> =
    LpmTrie::with_max_entries(GUARD_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
static GUARD6: LpmTrie<Guard6, u32> =
    LpmTrie::with_max_entries(GUARD_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
static GUARD_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GuardStat::COUNT, 0);

#[inline(always)]
fn count(stat: GuardStat) {
    if let Some(slot) = GUARD_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: this CPU's slot of a live map element; per-CPU slots are written only by
        // their own CPU with preemption off.
        unsafe { *slot += 1 };
    }
}

/// Whether the call's destination is a guarded listener.
#[inline(always)]
fn is_guarded4(ctx: &SockAddrContext) -> bool {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for the hook's duration.
    let sa = unsafe { &*ctx.sock_addr };
    let key = Key::new(
        GUARD_FIXED_BITS + 32,
        Guard4 {
            port: sa.user_port as u16,
            proto: sa.protocol as u8,
            _pad: 0,
            addr: sa.user_ip4,
        },
    );
    GUARD4.get(&key).is_some()
}

#[inline(always)]
fn is_guarded6(ctx: &SockAddrContext) -> bool {
    // SAFETY: as in `is_guarded4`.
    let sa = unsafe { &*ctx.sock_addr };
    let key = Key::new(
        GUARD_FIXED_BITS + 128,
        Guard6 {
            port: sa.user_port as u16,
            proto: sa.protocol as u8,
            _pad: 0,
            // Word by word: the verifier allows only 4-byte reads of `user_ip6`.
            addr: [
                sa.user_ip6[0],
                sa.user_ip6[1],
                sa.user_ip6[2],
                sa.user_ip6[3],
            ],
        },
    );
    GUARD6.get(&key).is_some()
}

#[inline(always)]
fn deny_connect() -> i32 {
    count(GuardStat::ConnectDenied);
    // SAFETY: a helper of cgroup programs; the value becomes the syscall's error.
    unsafe { bpf_set_retval(-ECONNREFUSED) };
    REJECT
}

#[inline(always)]
fn deny_send() -> i32 {
    count(GuardStat::SendDenied);
    // A refused send fails with EPERM, as a firewall's drop would.
    REJECT
}

#[cgroup_sock_addr(connect4)]
pub fn guard_connect4(ctx: SockAddrContext) -> i32 {
    if is_guarded4(&ctx) {
        deny_connect()
    } else {
        ALLOW
    }
}

#[cgroup_sock_addr(sendmsg4)]
pub fn guard_sendmsg4(ctx: SockAddrContext) -> i32 {
    if is_guarded4(&ctx) {
        deny_send()
    } else {
        ALLOW
    }
}

#[cgroup_sock_addr(connect6)]
pub fn guard_connect6(ctx: SockAddrContext) -> i32 {
    if is_guarded6(&ctx) {
        deny_connect()
    } else {
        ALLOW
    }
}

#[cgroup_sock_addr(sendmsg6)]
pub fn guard_sendmsg6(ctx: SockAddrContext) -> i32 {
    if is_guarded6(&ctx) {
        deny_send()
    } else {
        ALLOW
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL: needed by `bpf_set_retval`.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
