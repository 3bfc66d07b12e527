//! Map keys and values shared by the kernel programs (`ebpf/programs`) and the loader (`lb/`).
//!
//! Every type here is `#[repr(C)]` with explicit padding fields, because the kernel program and
//! userspace must agree on the exact byte layout of each map entry. Addresses and ports are kept
//! in network byte order, as `struct bpf_sock_addr` holds them (include/uapi/linux/bpf.h), so the
//! kernel side never converts. Map names are the `UPPER_SNAKE` constants below, identical in the
//! program and the loader.
//!
//! The maps:
//! - [`VIPS4`]: VIP (address, port, protocol) → [`VipEntry`]: where the VIP's backend set lives
//!   in [`BACKENDS4`] and how many backends it has. A set is replaced by writing a new range of
//!   [`BACKENDS4`] and then swapping this one entry, so a connect sees the old set or the new
//!   one, never a mix.
//! - [`BACKENDS4`]: an array of [`Backend4`] slots, handed out in ranges by userspace.
//! - [`REVERSE4`]: (socket cookie, backend) → VIP for UDP sockets, written by `connect4` and
//!   `sendmsg4` (an unconnected socket may talk to several backends) and read by `recvmsg4` and
//!   `getpeername4` to show the VIP to the client. LRU: entries of closed sockets age out.
//! - [`TCP_VIPS4`]: socket cookie → [`SockVip4`], a TCP socket's VIP and backend, read by
//!   `getpeername4` and deleted by `sock_release` when the socket closes: never evicted while
//!   the socket lives, and never full of dead entries. (Measured per short connection against
//!   the alternatives: BPF socket storage cost about 4%, an LRU entry about 2.3%, this about
//!   1.5-2%.)
//! - [`VIP_CONNS`], [`BACKEND_CONNS`]: per-CPU new-connection counters, indexed by
//!   [`VipEntry::counter`] and [`Backend4::counter`].
//! - [`STATS`]: per-CPU counters of the datapath's outcomes, indexed by [`Stat`].
//!
//! The other programs' maps follow, each under its own heading: the control-plane guard
//! (`GUARD*`), the VXLAN filter (`VXLAN_*`), the container fast path (`FASTPATH_*`) and network
//! policies (`POLICY_*`).
//!
//! IPv6 has the same maps with `6` for `4` ([`VIPS6`], [`BACKENDS6`], [`REVERSE6`],
//! [`TCP_VIPS6`]) over parallel types ([`Vip6Key`], [`Backend6`], ...), addresses as four
//! network-order words as `bpf_sock_addr.user_ip6` holds them. Counters are shared.
#![no_std]

/// Name of the IPv4 VIP table: [`Vip4Key`] → [`VipEntry`].
pub const VIPS4: &str = "VIPS4";
/// Name of the IPv4 backend slots: array of [`Backend4`].
pub const BACKENDS4: &str = "BACKENDS4";
/// Name of the reverse table: [`Reverse4Key`] → [`Vip4Addr`].
pub const REVERSE4: &str = "REVERSE4";
/// Name of the TCP socket table: cookie → [`SockVip4`].
pub const TCP_VIPS4: &str = "TCP_VIPS4";
/// Capacity of [`TCP_VIPS4`] and [`TCP_VIPS6`]: TCP connections through VIPs open at once.
pub const TCP_VIPS_MAX_ENTRIES: u32 = 262_144;
/// Name of the per-VIP new-connection counters: per-CPU array of `u64`.
pub const VIP_CONNS: &str = "VIP_CONNS";
/// Name of the per-backend new-connection counters: per-CPU array of `u64`.
pub const BACKEND_CONNS: &str = "BACKEND_CONNS";
/// Name of the datapath outcome counters: per-CPU array of `u64`, indexed by [`Stat`].
pub const STATS: &str = "STATS";

/// Name of the IPv6 VIP table: [`Vip6Key`] → [`VipEntry`] (slots of [`BACKENDS6`]).
pub const VIPS6: &str = "VIPS6";
/// Name of the IPv6 backend slots: array of [`Backend6`].
pub const BACKENDS6: &str = "BACKENDS6";
/// Name of the IPv6 reverse table: [`Reverse6Key`] → [`Vip6Addr`].
pub const REVERSE6: &str = "REVERSE6";
/// Name of the IPv6 TCP socket table: cookie → [`SockVip6`].
pub const TCP_VIPS6: &str = "TCP_VIPS6";

/// Capacity of [`VIPS4`] and [`VIP_CONNS`]: (address, port, protocol) triples.
pub const VIPS4_MAX_ENTRIES: u32 = 32_768;
/// Capacity of [`BACKENDS4`]: backend slots over all VIPs, including a set being replaced.
pub const BACKENDS4_MAX_ENTRIES: u32 = 262_144;
/// Capacity of [`VIPS6`]: as [`VIPS4`]'s, since every named VIP whose tasks have IPv6
/// addresses has an IPv6 VIP too (allocated as used, so the capacity costs nothing idle).
pub const VIPS6_MAX_ENTRIES: u32 = VIPS4_MAX_ENTRIES;
/// Capacity of [`BACKENDS6`].
pub const BACKENDS6_MAX_ENTRIES: u32 = 65_536;
/// Capacity of [`REVERSE6`].
pub const REVERSE6_MAX_ENTRIES: u32 = 65_536;
/// Capacity of [`BACKEND_CONNS`]: distinct (VIP, backend) counters.
pub const BACKEND_CONNS_MAX_ENTRIES: u32 = 65_536;
/// Capacity of [`REVERSE4`]: sockets that talk to a VIP at one time.
pub const REVERSE4_MAX_ENTRIES: u32 = 262_144;
/// Largest backend set of one VIP. Bounds the verifier's view of a slot index.
pub const MAX_BACKENDS_PER_VIP: u32 = 4_096;

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

/// Where a VIP's backends are: slots `first .. first + count` of [`BACKENDS4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipEntry {
    /// First slot of the VIP's set in [`BACKENDS4`].
    pub first: u32,
    /// Number of backends that take new connections; 0 refuses connects at once.
    pub count: u32,
    /// Index of this VIP's counter in [`VIP_CONNS`].
    pub counter: u32,
    pub _pad: u32,
}

/// A backend a connect to a VIP can be sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend4 {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    pub _pad: u16,
    /// Index of this backend's counter in [`BACKEND_CONNS`].
    pub counter: u32,
}

/// A socket's conversation with one backend, for mapping it back to the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reverse4Key {
    /// `bpf_get_socket_cookie` of the client socket.
    pub cookie: u64,
    /// Backend address, network byte order.
    pub addr: u32,
    /// Backend port, network byte order.
    pub port: u16,
    pub _pad: u16,
}

/// A VIP address and port, network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip4Addr {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// A connected socket's VIP and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockVip4 {
    pub vip: Vip4Addr,
    pub backend_addr: u32,
    pub backend_port: u16,
    pub _pad: u16,
}

/// An IPv6 VIP as the socket hooks see it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip6Key {
    /// IPv6 address: four words, each in network byte order, as `user_ip6` holds them.
    pub addr: [u32; 4],
    /// Port, network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// An IPv6 backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend6 {
    pub addr: [u32; 4],
    pub port: u16,
    pub _pad: u16,
    /// Index of this backend's counter in [`BACKEND_CONNS`].
    pub counter: u32,
}

/// An IPv6 socket's conversation with one backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reverse6Key {
    pub cookie: u64,
    pub addr: [u32; 4],
    pub port: u16,
    pub _pad: [u16; 3],
}

/// An IPv6 VIP address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip6Addr {
    pub addr: [u32; 4],
    pub port: u16,
    pub _pad: u16,
}

/// A connected IPv6 socket's VIP and backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockVip6 {
    pub vip: Vip6Addr,
    pub backend_addr: [u32; 4],
    pub backend_port: u16,
    pub _pad: u16,
}

/// The words of an IPv6 address as `bpf_sock_addr.user_ip6` holds them.
pub const fn ip6_words(octets: [u8; 16]) -> [u32; 4] {
    let mut out = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        out[i] = u32::from_ne_bytes([
            octets[i * 4],
            octets[i * 4 + 1],
            octets[i * 4 + 2],
            octets[i * 4 + 3],
        ]);
        i += 1;
    }
    out
}

/// The octets of an IPv6 address from its `user_ip6` words.
pub const fn ip6_octets(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

impl Vip6Key {
    /// Builds a key from host-order parts.
    pub const fn new(octets: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr: ip6_words(octets),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

impl Backend6 {
    /// Builds a backend from host-order parts.
    pub const fn new(octets: [u8; 16], port: u16, counter: u32) -> Self {
        Self {
            addr: ip6_words(octets),
            port: port.to_be(),
            _pad: 0,
            counter,
        }
    }
}

/// Outcomes the datapath counts in [`STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// A connect or first datagram to a VIP was sent to a backend.
    Translated = 0,
    /// A VIP had no backend taking connections: refused with ECONNREFUSED.
    NoBackend = 1,
    /// A VIP's slot range pointed outside [`BACKENDS4`] (a userspace bug): refused.
    BadSlot = 2,
    /// [`REVERSE4`] could not be written: the VIP will not show in replies of that socket.
    ReverseFull = 3,
    /// A reply or peer address was mapped back to its VIP.
    Reversed = 4,
}

impl Stat {
    /// Every outcome, in index order.
    pub const ALL: [Stat; 5] = [
        Stat::Translated,
        Stat::NoBackend,
        Stat::BadSlot,
        Stat::ReverseFull,
        Stat::Reversed,
    ];
    /// Capacity of [`STATS`].
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The outcome's name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Translated => "translated",
            Stat::NoBackend => "no_backend",
            Stat::BadSlot => "bad_slot",
            Stat::ReverseFull => "reverse_full",
            Stat::Reversed => "reversed",
        }
    }
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
    pub const fn new(octets: [u8; 4], port: u16, counter: u32) -> Self {
        Self {
            addr: u32::from_ne_bytes(octets),
            port: port.to_be(),
            _pad: 0,
            counter,
        }
    }
}

impl Vip4Addr {
    /// Builds a VIP address from host-order parts.
    pub const fn new(octets: [u8; 4], port: u16) -> Self {
        Self {
            addr: u32::from_ne_bytes(octets),
            port: port.to_be(),
            _pad: 0,
        }
    }
}

// SAFETY (all impls below): plain `#[repr(C)]` integers with explicit padding, so every bit
// pattern is a valid value.
// ---------------------------------------------------------------------------------------------
// The control-plane guard (`ebpf/programs/src/guard.rs`, loaded by `dcnet_lb::guard`)

/// Name of the guard's IPv4 rules: LPM trie of [`Guard4`] → `u32` (unused, 0). A connect or
/// send from a task to a matching (port, protocol, address prefix) is refused.
pub const GUARD4: &str = "GUARD4";
/// Name of the guard's IPv6 rules: LPM trie of [`Guard6`] → `u32`.
pub const GUARD6: &str = "GUARD6";
/// Name of the guard's counters: per-CPU array of `u64`, indexed by [`GuardStat`].
pub const GUARD_STATS: &str = "GUARD_STATS";
/// Capacity of [`GUARD4`] and [`GUARD6`]: rules (a few per node of the cluster).
pub const GUARD_MAX_ENTRIES: u32 = 16_384;
/// Bits of a guard key before the address (port, protocol, padding): always matched whole, so
/// a rule's LPM prefix length is this plus its address prefix.
pub const GUARD_FIXED_BITS: u32 = 32;

/// A guard rule's data: port and protocol first, then the address, so that an LPM prefix over
/// it matches the port and protocol exactly and the address by prefix. Network byte order, as
/// in `bpf_sock_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guard4 {
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
    pub addr: u32,
}

/// As [`Guard4`], for IPv6 (four network-order words).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guard6 {
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
    pub addr: [u32; 4],
}

/// The guard's counters, indexes of [`GUARD_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardStat {
    /// A task's connect to a control-plane listener was refused (ECONNREFUSED).
    ConnectDenied = 0,
    /// A task's unconnected datagram to a control-plane listener was refused (EPERM).
    SendDenied = 1,
}

impl GuardStat {
    pub const ALL: [GuardStat; 2] = [GuardStat::ConnectDenied, GuardStat::SendDenied];
    /// Capacity of [`GUARD_STATS`].
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The counter's name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            GuardStat::ConnectDenied => "connect_denied",
            GuardStat::SendDenied => "send_denied",
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Guard4 {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Guard6 {}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Vip4Key {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for VipEntry {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Backend4 {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Reverse4Key {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Vip4Addr {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockVip4 {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockVip6 {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Vip6Key {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Backend6 {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Reverse6Key {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Vip6Addr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes_are_network_order() {
        let key = Vip4Key::new([11, 0, 0, 1], 80, PROTO_TCP);
        assert_eq!(key.addr.to_ne_bytes(), [11, 0, 0, 1]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        let backend = Backend4::new([9, 0, 1, 2], 8080, 7);
        assert_eq!(backend.port.to_ne_bytes(), 8080u16.to_be_bytes());
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<Vip4Key>(), 8);
        assert_eq!(size_of::<VipEntry>(), 16);
        assert_eq!(size_of::<Backend4>(), 12);
        assert_eq!(size_of::<Reverse4Key>(), 16);
        assert_eq!(size_of::<Vip4Addr>(), 8);
        assert_eq!(size_of::<SockVip4>(), 16);
        assert_eq!(size_of::<Vip6Key>(), 20);
        assert_eq!(size_of::<Backend6>(), 24);
        assert_eq!(size_of::<Reverse6Key>(), 32);
        assert_eq!(size_of::<Vip6Addr>(), 20);
        assert_eq!(size_of::<SockVip6>(), 40);
        assert_eq!(size_of::<Endpoint>(), 16);
        assert_eq!(size_of::<FastpathConfig>(), 4);
        assert_eq!(size_of::<PolicyIsolated>(), 8);
        assert_eq!(size_of::<PolicyAllow>(), 12);
        assert_eq!(size_of::<PolicyNet>(), 24);
        assert_eq!(size_of::<PolicyFlow>(), 40);
        assert_eq!(size_of::<PolicyFlowState>(), 12);
        assert_eq!(size_of::<PolicyConfig>(), 4);
    }

    #[test]
    fn ipv6_words_round_trip_in_memory_order() {
        let octets = [0xfd, 0, 0, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let words = ip6_words(octets);
        assert_eq!(words[0].to_ne_bytes(), [0xfd, 0, 0, 0x11]);
        assert_eq!(ip6_octets(words), octets);
        assert_eq!(
            Vip6Key::new(octets, 80, PROTO_TCP).port.to_ne_bytes(),
            [0, 80]
        );
    }

    #[test]
    fn stats_are_indexed_in_order() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32);
        }
    }
}

/// Name of the VXLAN filter's peers: hash of an IPv4 underlay address (network byte order, as
/// in the packet) → `u8` (1). Only these may send to the VXLAN port.
pub const VXLAN_PEERS: &str = "VXLAN_PEERS";
/// Name of the VXLAN filter's IPv6 peers: hash of an IPv6 underlay address (its 16 bytes) →
/// `u8` (1).
pub const VXLAN_PEERS6: &str = "VXLAN_PEERS6";
/// Name of the VXLAN filter's settings: array of one `u32`, the VXLAN UDP port (host order).
pub const VXLAN_CONFIG: &str = "VXLAN_CONFIG";
/// Name of the VXLAN filter's counters: per-CPU array of `u64`, indexed by [`VxlanStat`].
pub const VXLAN_STATS: &str = "VXLAN_STATS";
/// Capacity of [`VXLAN_PEERS`] and [`VXLAN_PEERS6`]: nodes of a cluster.
pub const VXLAN_MAX_PEERS: u32 = 65_536;

/// The VXLAN filter's counters, indexes of [`VXLAN_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VxlanStat {
    /// A VXLAN datagram from a peer, let through.
    Passed = 0,
    /// A VXLAN datagram from an address that is no peer, dropped.
    Dropped = 1,
}

impl VxlanStat {
    pub const ALL: [VxlanStat; 2] = [VxlanStat::Passed, VxlanStat::Dropped];
    /// Capacity of [`VXLAN_STATS`].
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The counter's name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            VxlanStat::Passed => "passed",
            VxlanStat::Dropped => "dropped",
        }
    }
}

/// Name of the fast path's local endpoints: hash of a container's IPv4 address (network byte
/// order, as in the packet) → [`Endpoint`]: where on this node that address lives.
pub const FASTPATH_ENDPOINTS: &str = "FASTPATH_ENDPOINTS";
/// Name of the fast path's IPv6 endpoints: hash of a container's IPv6 address (its 16 bytes)
/// → [`Endpoint`].
pub const FASTPATH_ENDPOINTS6: &str = "FASTPATH_ENDPOINTS6";
/// Name of the fast path's settings: array of one [`FastpathConfig`].
pub const FASTPATH_CONFIG: &str = "FASTPATH_CONFIG";
/// Name of the fast path's counters: per-CPU array of `u64`, indexed by [`FastpathStat`].
pub const FASTPATH_STATS: &str = "FASTPATH_STATS";
/// Capacity of [`FASTPATH_ENDPOINTS`]: container interfaces on one node.
pub const FASTPATH_MAX_ENDPOINTS: u32 = 16_384;

/// A container interface on this node, as the fast path delivers to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Index of the host side of the container's veth pair (its peer is the container's
    /// interface, where `bpf_redirect_peer` delivers).
    pub ifindex: u32,
    /// The container interface's MAC (destination of frames delivered to it).
    pub mac: [u8; 6],
    /// The MAC of the container's gateway, the overlay bridge (source of routed frames, as the
    /// bridge would have sent them).
    pub gateway_mac: [u8; 6],
}

/// The fast path's settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FastpathConfig {
    /// Index of the VTEP: the only device frames from containers are redirected to; anything
    /// routed elsewhere (the node, the underlay, egress) takes the stack's path.
    pub vtep_ifindex: u32,
}

/// The fast path's counters, indexes of [`FASTPATH_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastpathStat {
    /// Delivered straight into a container on this node (`bpf_redirect_peer`).
    ToContainer = 0,
    /// Sent from a container straight to the VTEP, its neighbour known (`bpf_redirect`).
    ToTunnel = 1,
    /// Sent from a container to the VTEP, the neighbour resolved by the kernel
    /// (`bpf_redirect_neigh`).
    ToTunnelNeigh = 2,
    /// Left to the stack: not IPv4, not for the overlay, TTL expiring, or too big.
    Passed = 3,
}

impl FastpathStat {
    pub const ALL: [FastpathStat; 4] = [
        FastpathStat::ToContainer,
        FastpathStat::ToTunnel,
        FastpathStat::ToTunnelNeigh,
        FastpathStat::Passed,
    ];
    /// Capacity of [`FASTPATH_STATS`].
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The counter's name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            FastpathStat::ToContainer => "to_container",
            FastpathStat::ToTunnel => "to_tunnel",
            FastpathStat::ToTunnelNeigh => "to_tunnel_neigh",
            FastpathStat::Passed => "passed",
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Endpoint {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FastpathConfig {}

// ---------------------------------------------------------------------------------------------
// Network policies (`ebpf/programs/src/policy.rs`, loaded by `dcnet_lb::policy`)
//
// Addresses are 16 bytes for both families (IPv4 as its IPv4-mapped IPv6 form, `::ffff:a.b.c.d`),
// as four words in memory order ([`ip6_words`]): one set of maps serves both. Ports are in
// network byte order, as in the packet.

/// Name of the identities: hash of an address ([`ip6_words`] form) → identity (`u32`): a
/// task's address → its app's identity, and this node's own addresses → [`POLICY_HOST`].
pub const POLICY_IDENTITIES: &str = "POLICY_IDENTITIES";
/// Name of the isolated identities: per-CPU hash of [`PolicyIsolated`] → `u64`, the packets
/// denied to that (identity, direction). Only allowed flows may enter (leave) an identity
/// present here.
pub const POLICY_ISOLATED: &str = "POLICY_ISOLATED";
/// Name of the allow entries by peer identity: hash of [`PolicyAllow`] → `u8` (1).
pub const POLICY_ALLOW: &str = "POLICY_ALLOW";
/// Name of the allow entries by peer network: LPM trie of [`PolicyNet`] → `u8` (1).
pub const POLICY_NETS: &str = "POLICY_NETS";
/// Name of the flow cache: LRU hash of [`PolicyFlow`] → [`PolicyFlowState`]: flows a hook let
/// through, so their later packets, both ways, pass on one lookup.
pub const POLICY_FLOWS: &str = "POLICY_FLOWS";
/// Name of the settings: array of one [`PolicyConfig`].
pub const POLICY_CONFIG: &str = "POLICY_CONFIG";
/// Name of the counters: per-CPU array of `u64`, indexed by [`PolicyStat`].
pub const POLICY_STATS: &str = "POLICY_STATS";

/// Capacity of [`POLICY_IDENTITIES`]: task addresses of the cluster and this node's own.
pub const POLICY_MAX_ADDRESSES: u32 = 262_144;
/// Capacity of [`POLICY_ISOLATED`]: (identity, direction) pairs.
pub const POLICY_MAX_ISOLATED: u32 = 65_536;
/// Capacity of [`POLICY_ALLOW`].
pub const POLICY_MAX_ALLOW: u32 = 524_288;
/// Capacity of [`POLICY_NETS`].
pub const POLICY_MAX_NETS: u32 = 65_536;
/// Capacity of [`POLICY_FLOWS`]: flows of this node's tasks at once.
pub const POLICY_MAX_FLOWS: u32 = 262_144;
/// Bits of a [`PolicyNet`] before the address (direction, protocol, port, subject): always
/// matched whole, so an entry's LPM prefix length is this plus its address prefix (IPv4
/// networks: plus 96, their mapped form).
pub const POLICY_NET_FIXED_BITS: u32 = 64;

/// The identity of an address that is no task's nor this node's: only network entries match it.
pub const POLICY_WORLD: u32 = 0;
/// The identity of this node's own addresses: always let in (health checks come from there).
pub const POLICY_HOST: u32 = 1;
/// The peer of an allow entry that allows any peer.
pub const POLICY_ANY: u32 = u32::MAX;

/// [`PolicyIsolated::direction`] and friends: a packet entering a task.
pub const POLICY_INGRESS: u8 = 0;
/// A packet leaving a task.
pub const POLICY_EGRESS: u8 = 1;

/// An identity isolated in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyIsolated {
    pub identity: u32,
    pub direction: u8,
    pub _pad: [u8; 3],
}

/// An allowed (direction, subject, peer, port): `proto` 0 allows every protocol, `port` 0
/// every port of `proto`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyAllow {
    pub subject: u32,
    pub peer: u32,
    pub port: u16,
    pub proto: u8,
    pub direction: u8,
}

/// An allowed peer network: the fixed fields first, matched whole, then the address by prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyNet {
    pub direction: u8,
    pub proto: u8,
    pub port: u16,
    pub subject: u32,
    pub addr: [u32; 4],
}

/// A flow as its task sees it: its own address and port, the peer's, the protocol. A packet
/// leaving and one entering the task have the same key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyFlow {
    pub local: [u32; 4],
    pub remote: [u32; 4],
    pub local_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// What the flow cache keeps of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyFlowState {
    /// The [`PolicyConfig::epoch`] its verdict was reached under: a flow of an older epoch is
    /// decided again, as its first packet was.
    pub epoch: u32,
    /// When a packet of it was last seen, in units of 2^30 ns (about a second).
    pub seen: u32,
    /// The direction of its first packet ([`POLICY_INGRESS`] or [`POLICY_EGRESS`]).
    pub origin: u8,
    /// 1 if its packets pass, 0 if it was refused after a change of the rules.
    pub allowed: u8,
    pub _pad: [u8; 2],
}

/// The policy programs' settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyConfig {
    /// Raised by userspace after every change of the rules.
    pub epoch: u32,
}

/// Idle time after which a cached TCP flow is decided anew, in [`PolicyFlowState::seen`] units
/// (6 hours, as a stateful firewall keeps an established TCP connection).
pub const POLICY_TCP_IDLE: u32 = 20_117;
/// The same for UDP and other protocols (60 s).
pub const POLICY_OTHER_IDLE: u32 = 56;

/// The policy programs' counters, indexes of [`POLICY_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyStat {
    /// A new flow was let through (and cached).
    Allowed = 0,
    /// A packet was dropped (of a new flow, or of a revoked one).
    Denied = 1,
    /// A cached flow was decided again after a change of the rules, and refused.
    Revoked = 2,
}

impl PolicyStat {
    pub const ALL: [PolicyStat; 3] = [PolicyStat::Allowed, PolicyStat::Denied, PolicyStat::Revoked];
    /// Capacity of [`POLICY_STATS`].
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The counter's name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            PolicyStat::Allowed => "allowed",
            PolicyStat::Denied => "denied",
            PolicyStat::Revoked => "revoked",
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyIsolated {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyAllow {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyNet {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyFlow {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyFlowState {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyConfig {}
