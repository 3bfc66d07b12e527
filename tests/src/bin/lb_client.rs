//! A socket client for the load-balancer tests, run inside a test's namespace and cgroup (the
//! eBPF hooks act per cgroup, so the client must be a process of its own). One line of output
//! per attempt, parsed by the tests (ADDR is `IP:PORT` or `NAME:PORT`, resolved once):
//!
//! - `dcnet-lb-client tcp ADDR N`: N connects; each reads what the server sends until EOF.
//!   `ok PEER RESPONSE` (PEER as `getpeername` reports it) or `err KIND ELAPSED_US`.
//! - `dcnet-lb-client http ADDR N [PATH]`: N connects, each `GET PATH` (default `/`) over
//!   HTTP/1.0: `ok PEER BODY` (the body's first line) or `err KIND ELAPSED_US`.
//! - `dcnet-lb-client udp ADDR N`: one unconnected socket sends N datagrams with `sendto` and
//!   reads each reply with `recvfrom`: `ok SOURCE RESPONSE`.
//! - `dcnet-lb-client udp-connected ADDR N`: one connected socket, N datagrams:
//!   `ok PEER RESPONSE`.
//! - `dcnet-lb-client udp-hold ADDR`: one connected UDP socket; for every line read on stdin
//!   sends it and prints `ok PEER RESPONSE` or `err KIND ERRNO` (a long-lived UDP client).
//! - `dcnet-lb-client tcp-hold ADDR`: one connect; reads the server's first line and prints
//!   `ok PEER LINE`, then for every line read on stdin sends it and prints the answer as
//!   `echo ANSWER` (a long-lived connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, addr) = match args.as_slice() {
        [mode, addr, ..] => (mode.as_str(), addr),
        _ => bail!(
            "usage: dcnet-lb-client tcp|http|udp|udp-connected|udp-hold|tcp-hold ADDR [N] [PATH]"
        ),
    };
    // An address, or a name resolved through the namespace's resolv.conf (glibc).
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => addr
            .to_socket_addrs()
            .with_context(|| format!("resolving {addr:?}"))?
            .next()
            .with_context(|| format!("{addr:?} has no address"))?,
    };
    let n: usize = match args.get(2) {
        Some(n) => n.parse().with_context(|| format!("count {n:?}"))?,
        None => 1,
    };
    let mut out = std::io::stdout().lock();
    match mode {
        "tcp" => {
            for _ in 0..n {
                let started = Instant::now();
                match tcp_once(addr) {
                    Ok((peer, response)) => writeln!(out, "ok {peer} {response}")?,
                    Err(e) => {
                        writeln!(out, "err {:?} {}", e.kind(), started.elapsed().as_micros())?
                    }
                }
            }
        }
        "http" => {
            let path = args.get(3).map_or("/", String::as_str);
            for _ in 0..n {
                let started = Instant::now();
                match http_once(addr, path) {
                    Ok((peer, body)) => writeln!(out, "ok {peer} {body}")?,
                    Err(e) => {
                        writeln!(out, "err {:?} {}", e.kind(), started.elapsed().as_micros())?
                    }
                }
            }
        }
        "udp" => {
            let socket = UdpSocket::bind(any(addr))?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            let mut buf = [0u8; 512];
            for i in 0..n {
                let started = Instant::now();
                let result = socket
                    .send_to(format!("ping {i}").as_bytes(), addr)
                    .and_then(|_| socket.recv_from(&mut buf));
                match result {
                    Ok((len, from)) => writeln!(
                        out,
                        "ok {from} {}",
                        String::from_utf8_lossy(&buf[..len]).trim()
                    )?,
                    Err(e) => {
                        writeln!(out, "err {:?} {}", e.kind(), started.elapsed().as_micros())?
                    }
                }
            }
        }
        "udp-connected" => {
            let socket = UdpSocket::bind(any(addr))?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            let started = Instant::now();
            if let Err(e) = socket.connect(addr) {
                writeln!(out, "err {:?} {}", e.kind(), started.elapsed().as_micros())?;
                return Ok(());
            }
            for i in 0..n {
                match exchange(&socket, format!("ping {i}").as_bytes()) {
                    Ok((peer, answer)) => writeln!(out, "ok {peer} {answer}")?,
                    Err(e) => writeln!(out, "err {:?} 0", e.kind())?,
                }
                out.flush()?;
            }
        }
        "udp-hold" => {
            let socket = UdpSocket::bind(any(addr))?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            socket.connect(addr)?;
            for line in std::io::stdin().lock().lines() {
                match exchange(&socket, line?.as_bytes()) {
                    Ok((peer, answer)) => writeln!(out, "ok {peer} {answer}")?,
                    Err(e) => {
                        writeln!(out, "err {:?} {}", e.kind(), e.raw_os_error().unwrap_or(0))?
                    }
                }
                out.flush()?;
            }
        }
        "tcp-hold" => {
            let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut greeting = String::new();
            reader.read_line(&mut greeting)?;
            writeln!(out, "ok {} {}", stream.peer_addr()?, greeting.trim())?;
            out.flush()?;
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                stream.write_all(format!("{line}\n").as_bytes())?;
                let mut echo = String::new();
                reader.read_line(&mut echo)?;
                writeln!(out, "echo {}", echo.trim())?;
                out.flush()?;
            }
        }
        other => {
            bail!("unknown mode {other:?}: expected tcp, udp, udp-connected, udp-hold or tcp-hold")
        }
    }
    Ok(())
}

/// Sends `payload` on a connected UDP socket and reads the answer: the peer `getpeername`
/// reports and the answer's text.
fn exchange(socket: &UdpSocket, payload: &[u8]) -> std::io::Result<(SocketAddr, String)> {
    let mut buf = [0u8; 512];
    socket.send(payload)?;
    let len = socket.recv(&mut buf)?;
    let answer = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
    Ok((socket.peer_addr()?, answer))
}

/// The wildcard address of `addr`'s family, to bind a client socket to.
fn any(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

fn http_once(addr: SocketAddr, path: &str) -> std::io::Result<(SocketAddr, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let peer = stream.peer_addr()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other("no HTTP answer"));
    };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default().replace(' ', "_");
        return Err(std::io::Error::other(status));
    }
    Ok((
        peer,
        body.lines().next().unwrap_or_default().trim().to_owned(),
    ))
}

fn tcp_once(addr: SocketAddr) -> std::io::Result<(SocketAddr, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let peer = stream.peer_addr()?;
    // Nothing to send: the server sees EOF and closes after its greeting.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok((peer, response.trim().to_owned()))
}
