//! Short-connection load, both ends, for the load-balancing benchmark (`benches/lb.rs`). The
//! client is a process of its own because the eBPF hooks act on the cgroup a process is in.
//!
//! - `dcnet-conn-load serve ADDR THREADS`: accepts on ADDR; per connection reads one request,
//!   writes a 64-byte response and closes first (so TIME_WAIT stays on the server side, as
//!   with a web server answering `Connection: close`).
//! - `dcnet-conn-load run ADDR THREADS SECONDS`: each thread loops connect, 64-byte request,
//!   read to EOF, close. Prints one JSON line: connections, errors by kind, seconds, the
//!   connection latency (connect to EOF) p50/p99 in µs, and the client's CPU time per
//!   connection in µs.
//! - `dcnet-conn-load serve-rr ADDR`: accepts on ADDR; per connection (a thread each) answers
//!   every 64-byte request with 64 bytes until the client closes.
//! - `dcnet-conn-load rr ADDR THREADS SECONDS`: each thread opens one connection and loops
//!   a 64-byte request and its answer on it: transactions, their latency p50/p99 in µs.
//! - `dcnet-conn-load ab ADDR_A ADDR_B THREADS SECONDS`: as `run`, but each thread alternates
//!   its connections between A and B, so that both see the same moments of the machine (CPU
//!   steal, other load); prints the mean and median connection time of each and their ratios.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const REQUEST: [u8; 64] = [b'q'; 64];
const RESPONSE: [u8; 64] = [b'r'; 64];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", addr, threads] => serve(addr.parse()?, threads.parse()?),
        ["serve-rr", addr] => serve_rr(addr.parse()?),
        ["rr", addr, threads, seconds] => rr(addr.parse()?, threads.parse()?, seconds.parse()?),
        ["run", addr, threads, seconds] => run(addr.parse()?, threads.parse()?, seconds.parse()?),
        ["ab", a, b, threads, seconds] => {
            ab([a.parse()?, b.parse()?], threads.parse()?, seconds.parse()?)
        }
        _ => bail!(
            "usage: dcnet-conn-load serve ADDR THREADS | run ADDR THREADS SECONDS | \
             serve-rr ADDR | rr ADDR THREADS SECONDS | \
             ab ADDR_A ADDR_B THREADS SECONDS"
        ),
    }
}

fn serve(addr: SocketAddr, threads: usize) -> Result<()> {
    let listener = Arc::new(TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let listener = Arc::clone(&listener);
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                loop {
                    let Ok((mut stream, _)) = listener.accept() else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    if stream.read(&mut buf).is_ok() {
                        let _ = stream.write_all(&RESPONSE);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn serve_rr(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut buf = [0u8; 64];
            while stream.read_exact(&mut buf).is_ok() {
                if stream.write_all(&RESPONSE).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn rr(addr: SocketAddr, threads: usize, seconds: f64) -> Result<()> {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<Vec<Duration>> {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut latencies = Vec::with_capacity(1 << 20);
                let mut buf = [0u8; 64];
                while Instant::now() < end {
                    let t = Instant::now();
                    stream.write_all(&REQUEST)?;
                    stream.read_exact(&mut buf)?;
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(
            w.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
                .context("a request/response connection failed")?,
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().max(1) - 1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let json = serde_json::json!({
        "transactions": all.len(),
        "seconds": elapsed,
        "p50_us": q(0.5),
        "p99_us": q(0.99),
    });
    println!("{json}");
    Ok(())
}

struct Tally {
    connections: u64,
    errors: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

fn run(addr: SocketAddr, threads: usize, seconds: f64) -> Result<()> {
    let cpu_before = dcnet_benches::cpu_time();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut tally = Tally {
                    connections: 0,
                    errors: BTreeMap::new(),
                    latencies: Vec::with_capacity(1 << 18),
                };
                let mut buf = [0u8; 256];
                while Instant::now() < end {
                    let t = Instant::now();
                    match once(addr, &mut buf) {
                        Ok(()) => {
                            tally.connections += 1;
                            tally.latencies.push(t.elapsed());
                        }
                        Err(e) => *tally.errors.entry(format!("{:?}", e.kind())).or_default() += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally {
        connections: 0,
        errors: BTreeMap::new(),
        latencies: Vec::new(),
    };
    for w in workers {
        let t = w
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        total.connections += t.connections;
        for (k, v) in t.errors {
            *total.errors.entry(k).or_default() += v;
        }
        total.latencies.extend(t.latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // CPU time of this process (user + system, which includes the socket hooks and the kernel's
    // connection work done on its behalf): unlike rates, not inflated by time the hypervisor
    // steals from the machine.
    let cpu = (dcnet_benches::cpu_time() - cpu_before).as_secs_f64();
    total.latencies.sort();
    let q = |p: f64| {
        total
            .latencies
            .get(
                ((total.latencies.len() as f64 * p) as usize).min(total.latencies.len().max(1) - 1),
            )
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let json = serde_json::json!({
        "connections": total.connections,
        "errors": total.errors,
        "seconds": elapsed,
        "p50_us": q(0.5),
        "p99_us": q(0.99),
        "cpu_us_per_connection": cpu * 1e6 / (total.connections.max(1) as f64),
    });
    println!("{json}");
    Ok(())
}

fn ab(targets: [SocketAddr; 2], threads: usize, seconds: f64) -> Result<()> {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut times: [Vec<Duration>; 2] = Default::default();
                let mut errors = 0u64;
                let mut buf = [0u8; 256];
                // Threads start on different sides, so A and B are always both in flight.
                let mut side = t % 2;
                while Instant::now() < end {
                    let started = Instant::now();
                    match once(targets[side], &mut buf) {
                        Ok(()) => times[side].push(started.elapsed()),
                        Err(_) => errors += 1,
                    }
                    side ^= 1;
                }
                (times, errors)
            })
        })
        .collect();
    let mut all: [Vec<Duration>; 2] = Default::default();
    let mut errors = 0;
    for w in workers {
        let (times, e) = w
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        for (side, t) in times.into_iter().enumerate() {
            all[side].extend(t);
        }
        errors += e;
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64;
        let median = v.get(v.len() / 2).map_or(0.0, Duration::as_secs_f64);
        (mean * 1e6, median * 1e6, v.len())
    };
    let (a, b) = (stats(&mut all[0]), stats(&mut all[1]));
    let json = serde_json::json!({
        "a": {"mean_us": a.0, "p50_us": a.1, "connections": a.2},
        "b": {"mean_us": b.0, "p50_us": b.1, "connections": b.2},
        "mean_ratio": a.0 / b.0,
        "p50_ratio": a.1 / b.1,
        "errors": errors,
    });
    println!("{json}");
    Ok(())
}

fn once(addr: SocketAddr, buf: &mut [u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(&REQUEST)?;
    let mut got = 0;
    loop {
        match stream.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if got != RESPONSE.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("response of {got} bytes"),
        ));
    }
    Ok(())
}
