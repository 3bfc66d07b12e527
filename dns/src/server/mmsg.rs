//! Batched UDP I/O: `recvmmsg(2)` to take every queued datagram in one system call, and
//! `sendmmsg(2)` to send their replies in another. Under load this turns two system calls per
//! query into two per batch; with one datagram waiting it costs the same as recvfrom/sendto.
//!
//! The buffers, address slots and message headers are allocated once and never resized, so
//! the raw pointers the kernel is given stay valid for the life of the [`Batch`]. All `unsafe`
//! of the server is here.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

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
}

// SAFETY: the raw pointers only point into the Batch's own heap buffers.
unsafe impl Send for Batch {}

impl Batch {
    /// A batch of `capacity` datagrams of up to `slot` bytes each.
    pub fn new(capacity: usize, slot: usize) -> Self {
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
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
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
