//! dcnet's kernel programs: socket-level load balancing in cgroup `sock_addr` hooks.
//!
//! `connect4` rewrites a connect to a VIP into a connect to a backend before the kernel routes
//! it, so a load-balanced connection costs one map lookup at connect time and nothing per packet
//! (no NAT, no conntrack entry). The maps are declared here and described in
//! `dcnet-ebpf-common`; the loader is `dcnet-lb`.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{cgroup_sock_addr, map},
    maps::HashMap,
    programs::SockAddrContext,
};
use dcnet_ebpf_common::{Backend4, VIPS4_MAX_ENTRIES, Vip4Key};

/// Verdict that lets the syscall proceed (cgroup sock_addr programs: 1 = allow, 0 = EPERM).
const ALLOW: i32 = 1;

#[map]
static VIPS4: HashMap<Vip4Key, Backend4> = HashMap::with_max_entries(VIPS4_MAX_ENTRIES, 0);

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    match try_connect4(&ctx) {
        Ok(verdict) | Err(verdict) => verdict,
    }
}

fn try_connect4(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for the hook's duration.
    let sa = unsafe { &mut *ctx.sock_addr };
    // `user_port` is a 32-bit field holding the port in network order in its low 16 bits
    // (include/uapi/linux/bpf.h); the verifier requires 4-byte reads and writes of it.
    let key = Vip4Key {
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        proto: sa.protocol as u8,
        _pad: 0,
    };
    // SAFETY: entries are plain integers; a concurrent update can at worst yield the old or the
    // new backend, both valid destinations.
    if let Some(backend) = unsafe { VIPS4.get(&key) } {
        sa.user_ip4 = backend.addr;
        sa.user_port = backend.port as u32;
    }
    Ok(ALLOW)
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
