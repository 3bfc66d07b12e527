//! IPv4 and IPv6, as the decision in `lb.rs` needs them: the maps of each family and how its
//! addresses sit in `bpf_sock_addr` (`user_ip4`, or the four words of `user_ip6`). The hooks
//! are written once, generic over [`Family`], and instantiated for [`V4`] and [`V6`].

use aya_ebpf::{
    bindings::bpf_sock_addr,
    maps::{Array, HashMap, LruHashMap},
};
use dcnet_ebpf_common::{
    Backend4, Backend6, Reverse4Key, Reverse6Key, SockVip4, SockVip6, Vip4Addr, Vip4Key, Vip6Addr,
    Vip6Key, VipEntry,
};

use crate::maps::{BACKENDS4, BACKENDS6, REVERSE4, REVERSE6, TCP_VIPS4, TCP_VIPS6, VIPS4, VIPS6};

/// An address family of the datapath.
pub trait Family {
    /// An address as the context holds it (network order).
    type Addr: Copy + PartialEq + 'static;
    type Key: Copy + 'static;
    type Backend: Copy + 'static;
    type VipAddr: Copy + 'static;
    type RevKey: 'static;
    type SockVip: Copy + 'static;

    fn vips() -> &'static HashMap<Self::Key, VipEntry>;
    fn backends() -> &'static Array<Self::Backend>;
    fn reverse() -> &'static LruHashMap<Self::RevKey, Self::VipAddr>;
    fn tcp_vips() -> &'static HashMap<u64, Self::SockVip>;

    /// The call's address and port (the destination, or the peer in the reverse hooks).
    /// `user_port` is a 32-bit field with the port in network order in its low 16 bits; the
    /// verifier requires 4-byte accesses to it and to the address words.
    fn address(sa: &bpf_sock_addr) -> (Self::Addr, u16);
    fn set_address(sa: &mut bpf_sock_addr, addr: Self::Addr, port: u16);

    fn key(addr: Self::Addr, port: u16, proto: u8) -> Self::Key;
    fn key_parts(key: &Self::Key) -> (Self::Addr, u16, u8);
    fn backend_parts(backend: &Self::Backend) -> (Self::Addr, u16, u32);
    fn vip_addr(addr: Self::Addr, port: u16) -> Self::VipAddr;
    fn vip_parts(vip: &Self::VipAddr) -> (Self::Addr, u16);
    fn rev_key(cookie: u64, addr: Self::Addr, port: u16) -> Self::RevKey;
    fn sock_vip(vip: Self::VipAddr, backend: Self::Addr, port: u16) -> Self::SockVip;
    fn sock_vip_parts(v: &Self::SockVip) -> (Self::VipAddr, Self::Addr, u16);
}

pub struct V4;
pub struct V6;

impl Family for V4 {
    type Addr = u32;
    type Key = Vip4Key;
    type Backend = Backend4;
    type VipAddr = Vip4Addr;
    type RevKey = Reverse4Key;
    type SockVip = SockVip4;

    fn vips() -> &'static HashMap<Vip4Key, VipEntry> {
        &VIPS4
    }
    fn backends() -> &'static Array<Backend4> {
        &BACKENDS4
    }
    fn reverse() -> &'static LruHashMap<Reverse4Key, Vip4Addr> {
        &REVERSE4
    }
    fn tcp_vips() -> &'static HashMap<u64, SockVip4> {
        &TCP_VIPS4
    }
    #[inline(always)]
    fn address(sa: &bpf_sock_addr) -> (u32, u16) {
        (sa.user_ip4, sa.user_port as u16)
    }
    #[inline(always)]
    fn set_address(sa: &mut bpf_sock_addr, addr: u32, port: u16) {
        sa.user_ip4 = addr;
        sa.user_port = u32::from(port);
    }
    #[inline(always)]
    fn key(addr: u32, port: u16, proto: u8) -> Vip4Key {
        Vip4Key {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn key_parts(key: &Vip4Key) -> (u32, u16, u8) {
        (key.addr, key.port, key.proto)
    }
    #[inline(always)]
    fn backend_parts(b: &Backend4) -> (u32, u16, u32) {
        (b.addr, b.port, b.counter)
    }
    #[inline(always)]
    fn vip_addr(addr: u32, port: u16) -> Vip4Addr {
        Vip4Addr {
            addr,
            port,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn vip_parts(v: &Vip4Addr) -> (u32, u16) {
        (v.addr, v.port)
    }
    #[inline(always)]
    fn rev_key(cookie: u64, addr: u32, port: u16) -> Reverse4Key {
        Reverse4Key {
            cookie,
            addr,
            port,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn sock_vip(vip: Vip4Addr, backend: u32, port: u16) -> SockVip4 {
        SockVip4 {
            vip,
            backend_addr: backend,
            backend_port: port,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn sock_vip_parts(v: &SockVip4) -> (Vip4Addr, u32, u16) {
        (v.vip, v.backend_addr, v.backend_port)
    }
}

impl Family for V6 {
    type Addr = [u32; 4];
    type Key = Vip6Key;
    type Backend = Backend6;
    type VipAddr = Vip6Addr;
    type RevKey = Reverse6Key;
    type SockVip = SockVip6;

    fn vips() -> &'static HashMap<Vip6Key, VipEntry> {
        &VIPS6
    }
    fn backends() -> &'static Array<Backend6> {
        &BACKENDS6
    }
    fn reverse() -> &'static LruHashMap<Reverse6Key, Vip6Addr> {
        &REVERSE6
    }
    fn tcp_vips() -> &'static HashMap<u64, SockVip6> {
        &TCP_VIPS6
    }
    #[inline(always)]
    fn address(sa: &bpf_sock_addr) -> ([u32; 4], u16) {
        // One 4-byte load per word, as the verifier requires.
        (
            [
                sa.user_ip6[0],
                sa.user_ip6[1],
                sa.user_ip6[2],
                sa.user_ip6[3],
            ],
            sa.user_port as u16,
        )
    }
    #[inline(always)]
    fn set_address(sa: &mut bpf_sock_addr, addr: [u32; 4], port: u16) {
        sa.user_ip6[0] = addr[0];
        sa.user_ip6[1] = addr[1];
        sa.user_ip6[2] = addr[2];
        sa.user_ip6[3] = addr[3];
        sa.user_port = u32::from(port);
    }
    #[inline(always)]
    fn key(addr: [u32; 4], port: u16, proto: u8) -> Vip6Key {
        Vip6Key {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn key_parts(key: &Vip6Key) -> ([u32; 4], u16, u8) {
        (key.addr, key.port, key.proto)
    }
    #[inline(always)]
    fn backend_parts(b: &Backend6) -> ([u32; 4], u16, u32) {
        (b.addr, b.port, b.counter)
    }
    #[inline(always)]
    fn vip_addr(addr: [u32; 4], port: u16) -> Vip6Addr {
        Vip6Addr {
            addr,
            port,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn vip_parts(v: &Vip6Addr) -> ([u32; 4], u16) {
        (v.addr, v.port)
    }
    #[inline(always)]
    fn rev_key(cookie: u64, addr: [u32; 4], port: u16) -> Reverse6Key {
        Reverse6Key {
            cookie,
            addr,
            port,
            _pad: [0; 3],
        }
    }
    #[inline(always)]
    fn sock_vip(vip: Vip6Addr, backend: [u32; 4], port: u16) -> SockVip6 {
        SockVip6 {
            vip,
            backend_addr: backend,
            backend_port: port,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn sock_vip_parts(v: &SockVip6) -> (Vip6Addr, [u32; 4], u16) {
        (v.vip, v.backend_addr, v.backend_port)
    }
}
