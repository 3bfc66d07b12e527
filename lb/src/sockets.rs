//! Destroying UDP sockets still connected to a backend that left its VIP, so that clients do
//! not keep sending into a dead backend (a TCP connection to a dead backend fails by itself;
//! a connected UDP socket does not).
//!
//! Through sock_diag (netlink, `CONFIG_INET_DIAG_DESTROY`): a dump of the connected UDP sockets
//! of the calling thread's network namespace, then `SOCK_DESTROY` for each one that is
//! connected to a removed backend *and* reached it through a VIP (its cookie is in the
//! datapath's reverse table), which the kernel turns into `ECONNABORTED` on the socket's next
//! call. A BPF socket iterator with the `bpf_sock_destroy` kfunc would do the same from a
//! program, but aya cannot relocate kfunc calls yet.
//!
//! Sockets live in the namespaces of their processes: the caller runs this in each namespace
//! whose clients use VIPs (the node's own and its containers').

use std::collections::HashSet;
use std::net::SocketAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::{AF_INET, AF_INET6, IPPROTO_UDP, SockDiagDestroy, SockDiagMessage};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

use crate::Error;

/// A connected UDP socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSocketInfo {
    pub cookie: u64,
    pub peer: SocketAddr,
    family: u8,
    id: SocketId,
}

/// Connected UDP sockets (IPv4 and IPv6) of the calling thread's namespace whose peer is in
/// `peers`.
pub fn connected_udp(peers: &HashSet<SocketAddr>) -> Result<Vec<UdpSocketInfo>, Error> {
    let mut found = connected_udp_of(AF_INET, peers)?;
    found.extend(connected_udp_of(AF_INET6, peers)?);
    Ok(found)
}

fn connected_udp_of(family: u8, peers: &HashSet<SocketAddr>) -> Result<Vec<UdpSocketInfo>, Error> {
    let socket = open()?;
    let request = InetRequest {
        family,
        protocol: IPPROTO_UDP,
        extensions: ExtensionFlags::empty(),
        // Connected UDP sockets are in TCP_ESTABLISHED.
        states: StateFlags::ESTABLISHED,
        socket_id: if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        },
    };
    let mut message = NetlinkMessage::new(
        header(NLM_F_REQUEST | NLM_F_DUMP),
        NetlinkPayload::from(SockDiagMessage::InetRequest(request)),
    );
    message.finalize();
    send(&socket, &message)?;

    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let len = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| Error::SockDiag("receive the socket dump", e))?;
        let mut offset = 0;
        while offset < len {
            let reply = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..len])
                .map_err(|e| Error::SockDiag("decode the socket dump", std::io::Error::other(e)))?;
            let step = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Error::SockDiag("dump UDP sockets", e.to_io()));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let id = &r.header.socket_id;
                    let peer = SocketAddr::new(id.destination_address, id.destination_port);
                    if peers.contains(&peer) {
                        found.push(UdpSocketInfo {
                            cookie: cookie(&id.cookie),
                            peer,
                            family,
                            id: id.clone(),
                        });
                    }
                }
                _ => {}
            }
            if step == 0 {
                break;
            }
            offset += step;
        }
    }
}

/// Destroys `sockets` (from [`connected_udp`], in the same namespace). Returns how many the
/// kernel destroyed; a socket closed in the meantime is not an error.
pub fn destroy(sockets: &[UdpSocketInfo]) -> Result<usize, Error> {
    if sockets.is_empty() {
        return Ok(0);
    }
    let socket = open()?;
    let mut destroyed = 0;
    let mut buf = vec![0u8; 8 * 1024];
    for s in sockets {
        let request = InetRequest {
            family: s.family,
            protocol: IPPROTO_UDP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: s.id.clone(),
        };
        let mut message = NetlinkMessage::new(
            header(NLM_F_REQUEST | NLM_F_ACK),
            NetlinkPayload::from(SockDiagDestroy::new(SockDiagMessage::InetRequest(request))),
        );
        message.finalize();
        send(&socket, &message)?;
        let len = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| Error::SockDiag("receive the destroy acknowledgement", e))?;
        let ack = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[..len])
            .map_err(|e| Error::SockDiag("decode the acknowledgement", std::io::Error::other(e)))?;
        match ack.payload {
            NetlinkPayload::Error(e) => match e.code {
                None => destroyed += 1,
                // Gone already.
                Some(code) if code.get() == -libc::ENOENT => {}
                Some(_) => return Err(Error::SockDiag("destroy a UDP socket", e.to_io())),
            },
            _ => destroyed += 1,
        }
    }
    Ok(destroyed)
}

fn open() -> Result<Socket, Error> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)
        .map_err(|e| Error::SockDiag("open a sock_diag socket", e))?;
    socket
        .bind_auto()
        .map_err(|e| Error::SockDiag("bind the sock_diag socket", e))?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(|e| Error::SockDiag("connect the sock_diag socket", e))?;
    Ok(socket)
}

fn header(flags: u16) -> NetlinkHeader {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header
}

fn send<T>(socket: &Socket, message: &NetlinkMessage<T>) -> Result<(), Error>
where
    T: netlink_packet_core::NetlinkSerializable + std::fmt::Debug,
{
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|e| Error::SockDiag("send a sock_diag request", e))?;
    Ok(())
}

/// `inet_diag_sockid.idiag_cookie` is two native-endian u32 halves, low half first.
fn cookie(raw: &[u8; 8]) -> u64 {
    let low = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let high = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    u64::from(low) | (u64::from(high) << 32)
}
