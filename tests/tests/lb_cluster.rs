//! The load balancer across a namespace cluster: a (fake) Mesos master lists tasks whose ports
//! carry `VIP_<n>` labels; node 1 publishes them through gossip; every node programs its eBPF
//! datapath, attached to a cgroup made for that node by this test (never the root cgroup).
//! Clients run in containers on the overlay, inside their node's cgroup.
//!
//! Bounds stated here (gossip interval 200 ms, state refresh 1 s):
//! - a task's VIP is programmed on every node within 10 s of the master listing it;
//! - after a node is stopped, no new connection reaches its backends once gossip reports it
//!   down: within 10 s (failure detection is about 1-2 s at this interval).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_tests::cluster::node_address;
use dcnet_tests::container::Container;
use dcnet_tests::lb::{self, Line};
use dcnet_tests::{Cluster, ClusterOptions, FakeMaster, NodeSpec, TestCgroup, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const WEB: &str = "web.marathon.l4lb.thisdcos.directory";

/// A Mesos state with one `web` task per backend: TCP 8080 behind `/web:80`, UDP 5353 behind
/// `/echo:53`. `backends`: (agent index, container IP, healthy).
fn state(master: &str, backends: &[(usize, Ipv4Addr, bool)]) -> String {
    let slaves: Vec<Value> = (0..3)
        .map(|i| {
            json!({
                "id": format!("S{i}"),
                "hostname": node_address(i).to_string(),
                "pid": format!("slave(1)@{}:5051", node_address(i)),
            })
        })
        .collect();
    let tasks: Vec<Value> = backends
        .iter()
        .enumerate()
        .map(|(n, (agent, ip, healthy))| {
            json!({
                "id": format!("web.{n}"),
                "name": "web",
                "slave_id": format!("S{agent}"),
                "state": "TASK_RUNNING",
                "statuses": [{
                    "state": "TASK_RUNNING",
                    "timestamp": 1.0 + n as f64,
                    "healthy": healthy,
                    "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip.to_string()}]}]},
                }],
                "discovery": {"name": "web", "ports": {"ports": [
                    {"number": 8080, "protocol": "tcp", "name": "http",
                     "labels": {"labels": [{"key": "VIP_0", "value": "/web:80"}]}},
                    {"number": 5353, "protocol": "udp", "name": "echo",
                     "labels": {"labels": [{"key": "VIP_1", "value": "/echo:53"}]}},
                ]}},
            })
        })
        .collect();
    json!({
        "leader": format!("master@{master}"),
        "slaves": slaves,
        "frameworks": [{"name": "marathon", "pid": format!("scheduler@{master}"), "tasks": tasks}],
    })
    .to_string()
}

/// The VIPs node `i` has programmed.
fn vips(cluster: &Cluster, i: usize) -> Result<Vec<Value>> {
    cluster.get(i, "/v1/vips")
}

/// The web VIP on node `i`: address and backends (address → weight), once it is there.
fn web_vip(cluster: &Cluster, i: usize) -> Result<Option<(SocketAddr, BTreeMap<String, u64>)>> {
    let vips = vips(cluster, i)?;
    let Some(web) = vips.iter().find(|v| v["name"] == WEB) else {
        return Ok(None);
    };
    let addr = web["vip"].as_str().context("vip")?.parse()?;
    let backends = web["backends"]
        .as_array()
        .context("backends")?
        .iter()
        .map(|b| {
            (
                b["addr"].as_str().unwrap_or_default().to_owned(),
                b["weight"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    Ok(Some((addr, backends)))
}

fn wait_for_backends(
    cluster: &Cluster,
    i: usize,
    what: &str,
    want: &BTreeMap<String, u64>,
) -> Result<(SocketAddr, Duration)> {
    let started = Instant::now();
    let addr = wait_until(what, Duration::from_secs(10), || {
        Ok(web_vip(cluster, i)?
            .filter(|(_, b)| b == want)
            .map(|(a, _)| a))
    })
    .with_context(|| cluster.log_tails(20))?;
    Ok((addr, started.elapsed()))
}

/// The A records of `name` as node `i`'s DNS answers them.
fn dig(cluster: &Cluster, i: usize, name: &str) -> Result<String> {
    let out = cluster.run_in(
        i,
        std::path::Path::new("/usr/bin/dig"),
        &["@127.0.0.1", "+short", "+time=1", "+tries=1", name],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs the socket client in container `c` inside `cgroup`.
fn client(c: &Container, cgroup: &TestCgroup, args: &[&str]) -> Result<Vec<Line>> {
    lb::run_client(lb::client_command(c.ns.netns().name(), Some(cgroup), args)?)
}

fn weights(entries: &[(SocketAddr, u64)]) -> BTreeMap<String, u64> {
    entries.iter().map(|(a, w)| (a.to_string(), *w)).collect()
}

#[test]
fn vips_balance_across_nodes_follow_health_and_membership() -> Result<()> {
    let cgroups: Vec<TestCgroup> = (0..3)
        .map(|i| TestCgroup::create(&format!("lbnode{}", i + 1)))
        .collect::<Result<_>>()?;
    let master_addr = format!("{}:5050", node_address(0));
    let mut options = ClusterOptions::nodes(3);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        let mut extra = format!(
            "\n[overlay]\nenabled = true\nlease_settle = \"1s\"\n\n[lb]\nenabled = true\ncgroup = \"{}\"\n",
            cgroups[i].path().display()
        );
        if i == 0 {
            extra.push_str(&format!(
                "\n[dns.mesos]\nmasters = [\"{master_addr}\"]\nrefresh = \"1s\"\nip_sources = [\"netinfo\", \"host\"]\n"
            ));
        }
        *node = NodeSpec {
            roles: if i == 0 {
                vec!["master".into(), "agent".into()]
            } else {
                vec!["agent".into()]
            },
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: extra,
            ..NodeSpec::default()
        };
    }
    let mut cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0, 1, 2], 2)?;

    // Backends in containers on nodes 2 and 3; the client in a container on node 1.
    let client_c = Container::attach(&cluster, 0, "cli")?;
    let b2 = Container::attach(&cluster, 1, "web2")?;
    let b3 = Container::attach(&cluster, 2, "web3")?;
    let mut tcp = Vec::new();
    for (c, name) in [(&b2, "web2"), (&b3, "web3")] {
        tcp.push(lb::tcp_backend(
            c.ns.netns(),
            SocketAddr::from((c.ip, 8080)),
            name,
        )?);
        lb::udp_backend(c.ns.netns(), SocketAddr::from((c.ip, 5353)), name)?;
    }
    let master = FakeMaster::start(
        &cluster.nodes[0].netns,
        master_addr.parse()?,
        state(&master_addr, &[(1, b2.ip, true), (2, b3.ip, true)]),
    )?;

    // Programmed on every node; the name resolves only where the datapath has the VIP.
    let both = weights(&[(tcp[0], 1), (tcp[1], 1)]);
    let mut vip = None;
    for i in 0..3 {
        let (addr, took) = wait_for_backends(&cluster, i, "the web VIP", &both)?;
        eprintln!(
            "node {}: web VIP {addr} programmed {took:?} after the wait began",
            i + 1
        );
        vip.get_or_insert(addr);
        assert_eq!(vip, Some(addr), "every node computes the same VIP address");
    }
    let vip = vip.context("no VIP")?;
    assert!(matches!(vip.ip(), std::net::IpAddr::V4(ip) if ip.octets()[0] == 11));
    assert_eq!(vip.port(), 80);
    // DNS follows the datapath (after its debounce), never the other way round.
    wait_until(
        "node 3 to answer the VIP's name",
        Duration::from_secs(3),
        || Ok((dig(&cluster, 2, WEB)? == vip.ip().to_string()).then_some(())),
    )?;

    // 300 connects from node 1 by address: both backends, none over twice its share, and
    // getpeername shows the VIP.
    let lines = client(&client_c, &cgroups[0], &["tcp", &vip.to_string(), "300"])?;
    let counts = lb::tally(&lines, &vip.to_string())?;
    eprintln!("300 connects by address: {counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.values().all(|&n| n <= 300), "{counts:?}");
    // By name, resolved through the container's resolv.conf (the node's DNS).
    let lines = client(
        &client_c,
        &cgroups[0],
        &["tcp", &format!("{WEB}:80"), "300"],
    )?;
    let counts = lb::tally(&lines, &vip.to_string())?;
    eprintln!("300 connects by name: {counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.values().all(|&n| n <= 300), "{counts:?}");
    // Per-backend counters on node 1 saw them all.
    let metrics = cluster.get_text(0, "/metrics")?;
    let counted: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("dcnet_lb_vip_connections_total{") && l.contains(&vip.to_string())
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 600, "{metrics}");

    // UDP through the named echo VIP: the reply comes from the VIP.
    let echo = vips(&cluster, 0)?
        .into_iter()
        .find(|v| v["name"] == "echo.marathon.l4lb.thisdcos.directory")
        .context("the echo VIP")?;
    let echo_addr = echo["vip"].as_str().context("echo vip")?.to_owned();
    assert_eq!(echo["protocol"], "udp");
    let lines = client(&client_c, &cgroups[0], &["udp", &echo_addr, "5"])?;
    assert_eq!(lb::tally(&lines, &echo_addr)?.values().sum::<usize>(), 5);

    // Weight 0: web3 fails its health check; no new connection reaches it.
    master.set_body(state(&master_addr, &[(1, b2.ip, true), (2, b3.ip, false)]));
    wait_for_backends(
        &cluster,
        0,
        "web3 at weight 0",
        &weights(&[(tcp[0], 1), (tcp[1], 0)]),
    )?;
    let lines = client(&client_c, &cgroups[0], &["tcp", &vip.to_string(), "100"])?;
    assert_eq!(
        lb::tally(&lines, &vip.to_string())?,
        BTreeMap::from([("web2".to_owned(), 100)])
    );

    wait_for_backends(
        &cluster,
        1,
        "web3 at weight 0 on node 2",
        &weights(&[(tcp[0], 1), (tcp[1], 0)]),
    )?;
    // Hairpin: web2 connects to its own VIP and reaches a backend (itself, web3 draining).
    let lines = client(&b2, &cgroups[1], &["tcp", &vip.to_string(), "20"])?;
    assert_eq!(
        lb::tally(&lines, &vip.to_string())?,
        BTreeMap::from([("web2".to_owned(), 20)])
    );

    // No usable backend: connects are refused at once.
    master.set_body(state(&master_addr, &[(1, b2.ip, false), (2, b3.ip, false)]));
    wait_for_backends(
        &cluster,
        0,
        "both at weight 0",
        &weights(&[(tcp[0], 0), (tcp[1], 0)]),
    )?;
    let lines = client(&client_c, &cgroups[0], &["tcp", &vip.to_string(), "3"])?;
    for line in &lines {
        match line {
            Line::Err { kind, micros } if kind == "ConnectionRefused" && *micros < 100_000 => {}
            other => bail!("expected an immediate refusal, got {other:?}"),
        }
    }

    // A connected UDP client on node 1 that talks to web3 (the only healthy echo backend when
    // it connects), kept while web2 recovers.
    master.set_body(state(&master_addr, &[(1, b2.ip, false), (2, b3.ip, true)]));
    wait_for_backends(
        &cluster,
        0,
        "only web3 healthy",
        &weights(&[(tcp[0], 0), (tcp[1], 1)]),
    )?;
    let mut held = lb::UdpHold::start(lb::client_command(
        client_c.ns.netns().name(),
        Some(&cgroups[0]),
        &["udp-hold", &echo_addr],
    )?)?;
    assert_eq!(
        held.ask("hello")?,
        Line::Ok {
            peer: echo_addr.clone(),
            response: "web3".into()
        }
    );

    // Node 3 stops: its backend leaves every other node's datapath.
    master.set_body(state(&master_addr, &[(1, b2.ip, true), (2, b3.ip, true)]));
    wait_for_backends(&cluster, 0, "both healthy again", &both)?;
    assert_eq!(
        held.ask("still web3")?.clone(),
        Line::Ok {
            peer: echo_addr.clone(),
            response: "web3".into()
        }
    );
    let stopped = Instant::now();
    cluster.stop_agent(2, Signal::SIGKILL, Duration::from_secs(5));
    let (_, _) = wait_for_backends(
        &cluster,
        0,
        "node 3's backend withdrawn",
        &weights(&[(tcp[0], 1)]),
    )?;
    eprintln!(
        "node 3's backend withdrawn {:?} after it stopped",
        stopped.elapsed()
    );
    let lines = client(&client_c, &cgroups[0], &["tcp", &vip.to_string(), "100"])?;
    assert_eq!(
        lb::tally(&lines, &vip.to_string())?,
        BTreeMap::from([("web2".to_owned(), 100)]),
        "no new connection to the stopped node's backend"
    );
    // The UDP socket connected to web3 through the VIP was destroyed on node 1.
    // (A reply that times out while node 3's tunnel is gone does not count: only the errors
    // of a destroyed socket do.)
    let aborted = [libc::EDESTADDRREQ as u64, libc::ECONNABORTED as u64];
    wait_until(
        "the stale UDP socket destroyed",
        Duration::from_secs(10),
        || {
            Ok(match held.ask("after")? {
                Line::Err { micros: errno, .. } if aborted.contains(&errno) => Some(()),
                _ => None,
            })
        },
    )?;
    let lines = client(&client_c, &cgroups[0], &["udp-connected", &echo_addr, "1"])?;
    assert_eq!(
        lb::tally(&lines, &echo_addr)?,
        BTreeMap::from([("web2".to_owned(), 1)])
    );

    // The tasks are gone: the VIP and its name go.
    master.set_body(state(&master_addr, &[]));
    wait_until("the VIP removed", Duration::from_secs(10), || {
        Ok(web_vip(&cluster, 0)?.is_none().then_some(()))
    })?;
    wait_until("the name removed", Duration::from_secs(5), || {
        Ok(dig(&cluster, 0, WEB)?.is_empty().then_some(()))
    })?;

    // Nothing of ours was ever attached to the root cgroup.
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show", dcnet_tests::cgroup::CGROUP2_ROOT])
        .output()
        .context("bpftool (apt install bpftool, or scripts/setup.sh)")?;
    let root = String::from_utf8_lossy(&out.stdout);
    for program in ["connect4", "sendmsg4", "recvmsg4", "getpeername4"] {
        assert!(
            !root.contains(program),
            "{program} attached to the root cgroup:\n{root}"
        );
    }
    drop(master);
    Ok(())
}

/// An agent restarting under a client that connects to a VIP all the time: its datapath
/// outlives it (attached to the cgroup, not to the process), the next run attaches its own
/// beside it and retires it once it has the VIPs, so not one connect goes untranslated; the
/// socket tables are pinned and shared, so every connection shows its VIP; and `dcnet lb
/// detach` takes them all away on purpose.
#[test]
fn vips_are_translated_through_agent_restarts() -> Result<()> {
    let cgroups: Vec<TestCgroup> = (0..2)
        .map(|i| TestCgroup::create(&format!("lbrst{}", i + 1)))
        .collect::<Result<_>>()?;
    let master_addr = format!("{}:5050", node_address(1));
    let options =
        lb::two_nodes_reading_a_master(&cgroups, &master_addr, "listen = [\"0.0.0.0:53\"]\n");
    let mut cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0, 1], 1)?;
    let client_c = Container::attach(&cluster, 0, "rcli")?;
    let backend = Container::attach(&cluster, 1, "rweb")?;
    let tcp = lb::tcp_backend(
        backend.ns.netns(),
        SocketAddr::from((backend.ip, 8080)),
        "web",
    )?;
    // The master's state is read on node 2: node 1's agent restarts without taking it away.
    let _master = FakeMaster::start(
        &cluster.nodes[1].netns,
        master_addr.parse()?,
        state(&master_addr, &[(1, backend.ip, true)]),
    )?;
    let one = weights(&[(tcp, 1)]);
    let (vip, _) = wait_for_backends(&cluster, 0, "the web VIP on node 1", &one)?;
    assert_eq!(lb::connect4_programs(&cgroups[0])?, 1);

    // Connects one after another (a fraction of a millisecond each) for the whole test.
    let mut command = lb::client_command(
        client_c.ns.netns().name(),
        Some(&cgroups[0]),
        &["tcp", &vip.to_string(), "10000000"],
    )?;
    let mut load = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Read as it comes: a full pipe would stop the client.
    let stdout = load.stdout.take().context("the client's stdout")?;
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut text = String::new();
        let _ = std::io::BufReader::new(stdout).read_to_string(&mut text);
        text
    });
    std::thread::sleep(Duration::from_millis(300));
    for round in 1..=10 {
        let stopped = cluster.stop_agent(0, Signal::SIGTERM, Duration::from_secs(10));
        assert!(
            stopped.is_some_and(|s| s.success()),
            "round {round}: {stopped:?}"
        );
        // Nothing runs for a moment: the last run's programs carry on alone.
        std::thread::sleep(Duration::from_millis(200));
        cluster.start_agent(0)?;
        wait_until(
            &format!("round {round}: one datapath again, with the VIP"),
            Duration::from_secs(15),
            || {
                let programmed = web_vip(&cluster, 0)
                    .ok()
                    .flatten()
                    .is_some_and(|(_, b)| b == one);
                Ok((programmed && lb::connect4_programs(&cgroups[0])? == 1).then_some(()))
            },
        )
        .with_context(|| cluster.log_tails(30))?;
    }
    let _ = load.kill();
    let _ = load.wait();
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader of the client's output panicked"))?;
    // Whole lines only: the last may have been cut by the kill.
    let lines: Vec<Line> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| Line::parse(l.trim_end()))
        .collect::<Result<_>>()?;
    let failed: Vec<&Line> = lines
        .iter()
        .filter(|l| matches!(l, Line::Err { .. }))
        .collect();
    eprintln!(
        "{} connects through 10 agent restarts, {} failed",
        lines.len(),
        failed.len()
    );
    assert!(
        lines.len() > 1000,
        "the client ran: {} connects",
        lines.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    // Every one reached the backend. getpeername shows the VIP, except on a connection made
    // through the earlier run's hooks and asked after they were retired (their socket table
    // went with them): the backend's own address, a handful at most.
    let (vip_text, backend_text) = (vip.to_string(), tcp.to_string());
    let mut by_backend_address = 0;
    for line in &lines {
        match line {
            Line::Ok { peer, response } if response == "web" && *peer == vip_text => {}
            Line::Ok { peer, response } if response == "web" && *peer == backend_text => {
                by_backend_address += 1
            }
            other => bail!("a connect through {vip} went wrong: {other:?}"),
        }
    }
    // The socket tables are pinned and shared by every run: a connection made through an
    // earlier run's hooks still shows its VIP after they are retired.
    assert_eq!(
        by_backend_address, 0,
        "getpeername showed the backend's address"
    );
    let pins = cluster.nodes[0].state_dir.join(dcnet_agent::state::BPF_DIR);
    assert!(
        dcnet_lb::pins::is_bpffs(&pins)?,
        "{} is a BPF filesystem",
        pins.display()
    );
    for name in dcnet_lb::datapath::SHARED_MAPS {
        assert!(pins.join(name).exists(), "{name} pinned");
    }

    // On purpose: everything goes, the running agent's too.
    let out = cluster.run_in(
        0,
        cluster.dcnet(),
        &[
            "lb",
            "detach",
            "--cgroup",
            &cgroups[0].path().to_string_lossy(),
            "--state-dir",
            &cluster.nodes[0].state_dir.to_string_lossy(),
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lb::connect4_programs(&cgroups[0])?, 0);
    assert!(!dcnet_lb::pins::is_bpffs(&pins)?, "unmounted");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 pinned socket tables removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines = client(&client_c, &cgroups[0], &["tcp", &vip.to_string(), "1"])?;
    assert!(matches!(lines[..], [Line::Err { .. }]), "{lines:?}");
    Ok(())
}

/// A named VIP whose task has an IPv6 address besides its IPv4 one gets an IPv6 address too
/// (in fd01:c::/64): AAAA beside A for its name, and connects to it reach the task's IPv6
/// address. Client and backend share node 1's bridge, where IPv6 works without an IPv6
/// overlay.
#[test]
fn a_named_vip_of_tasks_with_ipv6_addresses_has_an_ipv6_address() -> Result<()> {
    let cgroups: Vec<TestCgroup> = (0..2)
        .map(|i| TestCgroup::create(&format!("lbsix{}", i + 1)))
        .collect::<Result<_>>()?;
    let master_addr = format!("{}:5050", node_address(1));
    let options =
        lb::two_nodes_reading_a_master(&cgroups, &master_addr, "listen = [\"0.0.0.0:53\"]\n");
    let cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0, 1], 1)?;
    let client_c = Container::attach(&cluster, 0, "sixcli")?;
    let backend = Container::attach(&cluster, 0, "sixweb")?;
    let (backend6, client6) = ("fd00:dc6::2", "fd00:dc6::3");
    for (c, ip) in [(&backend, backend6), (&client_c, client6)] {
        let out = c.ns.run(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        assert!(out.status.success(), "{out:?}");
    }
    let tcp6 = lb::tcp_backend(
        backend.ns.netns(),
        SocketAddr::from((backend6.parse::<std::net::Ipv6Addr>()?, 8080)),
        "web6",
    )?;
    lb::tcp_backend(
        backend.ns.netns(),
        SocketAddr::from((backend.ip, 8080)),
        "web4",
    )?;
    // The task as Mesos lists it: one network info with both addresses, on agent 1.
    let mut state: Value = serde_json::from_str(&state(&master_addr, &[(0, backend.ip, true)]))?;
    state["frameworks"][0]["tasks"][0]["statuses"][0]["container_status"]["network_infos"][0]
        ["ip_addresses"]
        .as_array_mut()
        .context("ip_addresses")?
        .push(json!({"ip_address": backend6}));
    let _master = FakeMaster::start(
        &cluster.nodes[1].netns,
        master_addr.parse()?,
        state.to_string(),
    )?;
    let vip6 = wait_until(
        "the IPv6 web VIP on node 1",
        Duration::from_secs(15),
        || {
            let vips = vips(&cluster, 0)?;
            Ok(vips.iter().find_map(|v| {
                let addr: SocketAddr = v["vip"].as_str()?.parse().ok()?;
                let backends = v["backends"].as_array()?;
                (v["name"] == WEB
                    && addr.is_ipv6()
                    && backends.len() == 1
                    && backends[0]["addr"] == tcp6.to_string())
                .then_some(addr)
            }))
        },
    )
    .with_context(|| cluster.log_tails(20))?;
    let IpAddr::V6(ip6) = vip6.ip() else {
        bail!("{vip6} is not IPv6");
    };
    assert_eq!(ip6.segments()[..4], [0xfd01, 0xc, 0, 0], "{ip6}");
    // DNS: AAAA and A for the name.
    let aaaa = wait_until("AAAA of the web VIP", Duration::from_secs(10), || {
        let out = cluster.run_in(
            0,
            std::path::Path::new("/usr/bin/dig"),
            &["@127.0.0.1", "+short", "+time=1", "+tries=1", "AAAA", WEB],
        )?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((!text.is_empty()).then_some(text))
    })?;
    assert_eq!(aaaa, ip6.to_string());
    assert!(!dig(&cluster, 0, WEB)?.is_empty(), "A beside AAAA");
    // Connects through the IPv6 VIP reach the task's IPv6 address, and show the VIP.
    let lines = client(&client_c, &cgroups[0], &["tcp", &vip6.to_string(), "20"])?;
    let counts = lb::tally(&lines, &vip6.to_string())?;
    assert_eq!(counts.get("web6"), Some(&20), "{counts:?}");
    Ok(())
}
