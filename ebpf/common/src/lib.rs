//! Map keys and values shared by the kernel programs (`ebpf/programs`) and the loader (`lb/`).
//!
//! Every type here is `#[repr(C)]` with explicit padding fields, because the kernel program and
//! userspace must agree on the exact byte layout of each map entry. Addresses and ports are kept
//! in network byte order, as `struct bpf_sock_addr` holds them (include/uapi/linux/bpf.h), so the
//! kernel side never converts. Map names are the `UPPER_SNAKE` constants below, identical in the
//! program and the loader.
#![no_std]

/// Name of the IPv4 VIP table: [`Vip4Key`] → [`Backend4`].
pub const VIPS4: &str = "VIPS4";
/// Capacity of [`VIPS4`].
pub const VIPS4_MAX_ENTRIES: u32 = 65_536;

/// `IPPROTO_TCP` as `bpf_sock_addr.protocol` reports it.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP` as `bpf_sock_addr.protocol` reports it.
pub const PROTO_UDP: u8 = 17;

/// An IPv4 VIP as the socket hooks see it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip4Key {
    /// IPv4 address, network byte order (the bytes of the address in memory order).
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}

/// The backend a connect to a VIP is sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend4 {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    pub _pad: u16,
}

impl Vip4Key {
    /// Builds a key from host-order parts.
    pub const fn new(octets: [u8; 4], port: u16, proto: u8) -> Self {
        Self {
            addr: u32::from_ne_bytes(octets),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

impl Backend4 {
    /// Builds a backend from host-order parts.
    pub const fn new(octets: [u8; 4], port: u16) -> Self {
        Self {
            addr: u32::from_ne_bytes(octets),
            port: port.to_be(),
            _pad: 0,
        }
    }
}

// SAFETY: plain `#[repr(C)]` integers with explicit padding: every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Vip4Key {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Backend4 {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes_are_network_order() {
        let key = Vip4Key::new([11, 0, 0, 1], 80, PROTO_TCP);
        assert_eq!(key.addr.to_ne_bytes(), [11, 0, 0, 1]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        assert_eq!(core::mem::size_of::<Vip4Key>(), 8);
        assert_eq!(core::mem::size_of::<Backend4>(), 8);
    }
}
