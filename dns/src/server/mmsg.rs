//! Batched UDP I/O: `recvmmsg(2)` to take every queued datagram in one system call, and
//! `sendmmsg(2)` to send their replies in another. Under load this turns two system calls per
//! query into two per batch; with one datagram waiting it costs the same as recvfrom/sendto.
//!
//! On a wildcard socket (`0.0.0.0`, `::`) the kernel would pick a reply's source address by
//! routing, which need not be the address the query was sent to (a container asking its node's
//! underlay address is answered from the bridge's), and a client drops such a reply. So such a
//! socket asks for IP_PKTINFO / IPV6_PKTINFO, and each reply is sent from the address its query
//! came to, as Knot and Unbound do.
//!
//! The buffers, address slots and message headers are allocated once and never resized, so
//! the raw pointers the kernel is given stay valid for the life of the [`Batch`]. All `unsafe`
//! of the server is here.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Room for one packet-info control message (aligned for `cmsghdr`).
type Control = [u64; 8];

/// Where a query arrived: the address it was sent to, and the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub destination: IpAddr,
    pub ifindex: u32,
}

/// Asks the kernel to report each datagram's destination address on `socket` (bound to a
/// wildcard address of `family`).
pub fn enable_pktinfo(socket: &UdpSocket, ipv6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: a valid fd and a c_int option of the declared size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The arrival a received header's control messages report, if any.
///
/// # Safety
/// `header` must be a header the kernel filled, whose control buffer is still live.
unsafe fn arrival(header: &libc::msghdr) -> Option<Arrival> {
    // SAFETY: the caller's; the CMSG macros stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>());
                return Some(Arrival {
                    destination: Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)).into(),
                    ifindex: info.ipi_ifindex as u32,
                });
            }
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>());
                return Some(Arrival {
                    destination: Ipv6Addr::from(info.ipi6_addr.s6_addr).into(),
                    ifindex: info.ipi6_ifindex,
                });
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// Fills `control` with a packet-info message that sends from `from`, and points `header`
/// at it.
fn set_source(header: &mut libc::msghdr, control: &mut Control, from: Arrival) {
    header.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE of a small struct fits the 64-byte control buffer (checked below),
    // and the header points at that buffer.
    unsafe {
        match from.destination {
            IpAddr::V4(ip) => {
                let space = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                debug_assert!(space <= size_of::<Control>());
                header.msg_controllen = space as _;
                let cmsg = libc::CMSG_FIRSTHDR(header);
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    // 0: the route decides the interface; the source is what matters.
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
            }
            IpAddr::V6(ip) => {
                let space = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                debug_assert!(space <= size_of::<Control>());
                header.msg_controllen = space as _;
                let cmsg = libc::CMSG_FIRSTHDR(header);
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                // A link-local source needs its interface; any other is found by the route.
                let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: if link_local { from.ifindex } else { 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
            }
        }
    }
}

/// Sends one datagram to `to`, from the address `from` says when given (replies that leave
/// the batch: forwarded answers).
pub fn send_from(
    socket: &UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
    from: Option<Arrival>,
) -> io::Result<()> {
    let Some(from) = from else {
        return socket.send_to(bytes, to).map(drop);
    };
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let namelen = write_sockaddr(to, &mut name);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut control: Control = [0; 8];
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut header: libc::msghdr = unsafe { zeroed() };
    header.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    header.msg_namelen = namelen;
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    set_source(&mut header, &mut control, from);
    // SAFETY: the header points at live locals of the declared sizes; the kernel only reads
    // the payload.
    let r = unsafe { libc::sendmsg(socket.as_raw_fd(), &header, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn write_sockaddr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// A receive batch and the replies to it.
pub struct Batch {
    capacity: usize,
    slot: usize,
    buffers: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    received: usize,
    /// Replies: (datagram index, start, end) into `out`.
    replies: Vec<(usize, usize, usize)>,
    out: Vec<u8>,
    send_iovecs: Vec<libc::iovec>,
    send_headers: Vec<libc::mmsghdr>,
    /// Whether datagrams carry where they arrived (a wildcard socket), and the room for it.
    pktinfo: bool,
    controls: Vec<Control>,
    send_controls: Vec<Control>,
}

// SAFETY: the raw pointers only point into the Batch's own heap buffers.
unsafe impl Send for Batch {}

impl Batch {
    /// A batch of `capacity` datagrams of up to `slot` bytes each; `pktinfo` when the socket
    /// is bound to a wildcard address and has [`enable_pktinfo`].
    pub fn new(capacity: usize, slot: usize, pktinfo: bool) -> Self {
        let mut batch = Batch {
            capacity,
            slot,
            buffers: vec![0; capacity * slot],
            // SAFETY: all-zero bytes are a valid sockaddr_storage, iovec and mmsghdr.
            names: vec![unsafe { zeroed() }; capacity],
            iovecs: vec![unsafe { zeroed() }; capacity],
            headers: vec![unsafe { zeroed() }; capacity],
            received: 0,
            replies: Vec::with_capacity(capacity),
            out: Vec::with_capacity(capacity * 512),
            send_iovecs: vec![unsafe { zeroed() }; capacity],
            send_headers: vec![unsafe { zeroed() }; capacity],
            pktinfo,
            controls: vec![[0; 8]; if pktinfo { capacity } else { 0 }],
            send_controls: vec![[0; 8]; if pktinfo { capacity } else { 0 }],
        };
        for i in 0..capacity {
            batch.iovecs[i] = libc::iovec {
                iov_base: batch.buffers[i * slot..].as_mut_ptr().cast(),
                iov_len: slot,
            };
        }
        batch
    }

    /// Blocks until at least one datagram arrives (or the socket's read timeout passes), then
    /// takes every datagram already queued, up to the capacity. Returns how many.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received = 0;
        self.replies.clear();
        self.out.clear();
        for i in 0..self.capacity {
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            if self.pktinfo {
                header.msg_control = self.controls[i].as_mut_ptr().cast();
                header.msg_controllen = size_of::<Control>() as _;
            } else {
                header.msg_control = std::ptr::null_mut();
                header.msg_controllen = 0;
            }
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at live slots of this batch, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.capacity as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// The bytes of datagram `i` of the last receive.
    pub fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.headers[i].msg_len as usize).min(self.slot);
        &self.buffers[i * self.slot..i * self.slot + len]
    }

    /// The sender of datagram `i`.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        let storage = &self.names[i];
        let len = self.headers[i].msg_hdr.msg_namelen as usize;
        match i32::from(storage.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, and it is that long.
                let sin = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Where datagram `i` arrived, on a socket with packet info.
    pub fn arrival(&self, i: usize) -> Option<Arrival> {
        if !self.pktinfo || i >= self.received {
            return None;
        }
        // SAFETY: the header was filled by the last receive; its control buffer is ours.
        unsafe { arrival(&self.headers[i].msg_hdr) }
    }

    /// Queues `bytes` as the reply to datagram `i`.
    pub fn reply(&mut self, i: usize, bytes: &[u8]) {
        let start = self.out.len();
        self.out.extend_from_slice(bytes);
        self.replies.push((i, start, self.out.len()));
    }

    /// Sends every queued reply. Replies the kernel will not take are dropped (and counted in
    /// the return value), as a plain sendto failure would drop one.
    pub fn flush(&mut self, socket: &UdpSocket) -> usize {
        let n = self.replies.len();
        for (k, &(i, start, end)) in self.replies.iter().enumerate() {
            self.send_iovecs[k] = libc::iovec {
                iov_base: self.out[start..].as_mut_ptr().cast(),
                iov_len: end - start,
            };
            let header = &mut self.send_headers[k].msg_hdr;
            header.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = self.headers[i].msg_hdr.msg_namelen;
            header.msg_iov = &mut self.send_iovecs[k];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            if self.pktinfo {
                // SAFETY: as in `arrival`.
                if let Some(from) = unsafe { arrival(&self.headers[i].msg_hdr) } {
                    set_source(header, &mut self.send_controls[k], from);
                }
            }
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: headers `sent..n` point at live buffers of this batch.
            let r = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.send_headers[sent..].as_mut_ptr(),
                    (n - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                break;
            }
            sent += r as usize;
        }
        self.replies.clear();
        n - sent
    }
}
