//! VIP connects through agent restarts: a client connects to a named VIP back to back, as fast
//! as it can, while the agent of its node is restarted again and again (SIGTERM, a pause with
//! no agent, start, wait until its datapath has the VIP and the earlier run's is retired, hold).
//! Every connect is checked: it reached the backend (the backend's greeting) and
//! `getpeername` showed the VIP. Side by side, the same client against the same VIP with the
//! agent left alone (steady), and straight to the backend, for the connect rate.
//!
//! A two-node namespace cluster with the overlay and the load balancer on (each node's hooks
//! on a cgroup made for the bench); a fake Mesos master on node 2 lists one task behind
//! `/web:80` in a container on node 2; the client runs in a container on node 1, in node 1's
//! cgroup.
//!
//! Usage: `cargo bench -p dcnet-benches --bench vip_restarts -- [--restarts 10] [--hold 2]
//!        [--steady-seconds 5]`

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_benches::print_table;
use dcnet_tests::cluster::node_address;
use dcnet_tests::container::Container;
use dcnet_tests::lb::{self, Line};
use dcnet_tests::{Cluster, FakeMaster, TestCgroup, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

#[derive(clap::Parser)]
struct Options {
    /// Agent restarts under load.
    #[arg(long, default_value_t = 10)]
    restarts: u32,
    /// Seconds each run is left alone once ready, before the next restart.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Length of the steady and direct runs.
    #[arg(long, default_value_t = 5.0)]
    steady_seconds: f64,
    // `cargo bench` passes --bench to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

const WEB: &str = "web.marathon.l4lb.thisdcos.directory";

/// A Mesos state with one task on agent 2 at `ip`: TCP 8080 behind `/web:80`.
fn state(master: &str, ip: std::net::Ipv4Addr) -> String {
    json!({
        "leader": format!("master@{master}"),
        "slaves": [{"id": "S1", "hostname": node_address(1).to_string(),
                    "pid": format!("slave(1)@{}:5051", node_address(1))}],
        "frameworks": [{"name": "marathon", "pid": format!("scheduler@{master}"), "tasks": [{
            "id": "web.0", "name": "web", "slave_id": "S1", "state": "TASK_RUNNING",
            "statuses": [{"state": "TASK_RUNNING", "timestamp": 1.0,
                "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip.to_string()}]}]}}],
            "discovery": {"name": "web", "ports": {"ports": [{"number": 8080, "protocol": "tcp",
                "labels": {"labels": [{"key": "VIP_0", "value": "/web:80"}]}}]}},
        }]}],
    })
    .to_string()
}

/// The web VIP's address on node `i` once it has `backend` as its only backend.
fn web_vip(cluster: &Cluster, i: usize, backend: &str) -> Result<Option<SocketAddr>> {
    let vips: Vec<Value> = cluster.get(i, "/v1/vips")?;
    let Some(web) = vips.iter().find(|v| v["name"] == WEB) else {
        return Ok(None);
    };
    let ready = web["backends"].as_array().is_some_and(|b| {
        b.len() == 1 && b[0]["addr"] == backend && b[0]["weight"].as_u64() > Some(0)
    });
    Ok(ready
        .then(|| web["vip"].as_str().and_then(|a| a.parse().ok()))
        .flatten())
}

/// What one client run saw.
#[derive(Default)]
struct Tally {
    connects: usize,
    failed: usize,
    /// Reached the backend but `getpeername` showed something else than `expected_peer`.
    wrong_peer: usize,
    seconds: f64,
    first_error: Option<String>,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.connects as f64 / self.seconds
    }
}

/// A client connecting to `target` back to back until `during` returns; its lines counted.
fn run_client(
    client: &Container,
    cgroup: &TestCgroup,
    target: SocketAddr,
    expected_peer: &str,
    during: impl FnOnce() -> Result<()>,
) -> Result<Tally> {
    let mut command = lb::client_command(
        client.ns.netns().name(),
        Some(cgroup),
        &["tcp", &target.to_string(), "1000000000"],
    )?;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("the client's stdout")?;
    let expected = expected_peer.to_owned();
    // Counted as the lines come: a full pipe would stop the client.
    let reader = std::thread::spawn(move || -> Tally {
        use std::io::BufRead as _;
        let mut t = Tally::default();
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        // Whole lines only: the kill may cut the last one.
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.ends_with('\n') {
            t.connects += 1;
            match Line::parse(line.trim_end()) {
                Ok(Line::Ok { peer, response }) if response == "web" && peer == expected => {}
                Ok(Line::Ok { .. }) => t.wrong_peer += 1,
                _ => {
                    t.failed += 1;
                    t.first_error.get_or_insert(line.trim_end().to_owned());
                }
            }
            line.clear();
        }
        t
    });
    let started = Instant::now();
    let result = during();
    let seconds = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    let mut tally = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the client reader panicked"))?;
    tally.seconds = seconds;
    result.map(|()| tally)
}

fn main() -> Result<()> {
    let o = <Options as clap::Parser>::parse();
    let cgroups: Vec<TestCgroup> = (0..2)
        .map(|i| TestCgroup::create(&format!("vipr{}", i + 1)))
        .collect::<Result<_>>()?;
    let master_addr = format!("{}:5050", node_address(1));
    let options = lb::two_nodes_reading_a_master(&cgroups, &master_addr, "");
    let mut cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0, 1], 1)?;
    let client = Container::attach(&cluster, 0, "vrcli")?;
    // Back-to-back connects to one backend leave a TIME_WAIT socket each: reuse them and widen
    // the ephemeral ports, or the client runs out of ports within seconds (the same for every
    // run here).
    client.ns.netns().run(|| -> Result<()> {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "10000 65000")?;
        std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1")?;
        Ok(())
    })??;
    let backend = Container::attach(&cluster, 1, "vrweb")?;
    let tcp = lb::tcp_backend(
        backend.ns.netns(),
        SocketAddr::from((backend.ip, 8080)),
        "web",
    )?;
    let _master = FakeMaster::start(
        &cluster.nodes[1].netns,
        master_addr.parse()?,
        state(&master_addr, backend.ip),
    )?;
    let backend_text = tcp.to_string();
    let vip = wait_until("the web VIP on node 1", Duration::from_secs(15), || {
        web_vip(&cluster, 0, &backend_text)
    })?;
    let vip_text = vip.to_string();
    let hold = Duration::from_secs_f64(o.hold);
    let steady = Duration::from_secs_f64(o.steady_seconds);

    eprintln!("steady: the VIP with the agent left alone, {steady:?}");
    let steady_tally = run_client(&client, &cgroups[0], vip, &vip_text, || {
        std::thread::sleep(steady);
        Ok(())
    })?;
    eprintln!("direct: the backend itself, {steady:?}");
    let direct_tally = run_client(&client, &cgroups[0], tcp, &backend_text, || {
        std::thread::sleep(steady);
        Ok(())
    })?;
    eprintln!("restarts: {} agent restarts under load", o.restarts);
    let mut gaps = Vec::new();
    let restart_tally = run_client(&client, &cgroups[0], vip, &vip_text, || {
        std::thread::sleep(hold);
        for round in 1..=o.restarts {
            let began = Instant::now();
            let stopped = cluster.stop_agent(0, Signal::SIGTERM, Duration::from_secs(10));
            if !stopped.is_some_and(|s| s.success()) {
                bail!("round {round}: the agent did not stop cleanly: {stopped:?}");
            }
            // Nothing runs for a moment: the last run's programs carry on alone.
            std::thread::sleep(Duration::from_millis(200));
            cluster.start_agent(0)?;
            wait_until(
                &format!("round {round}: one datapath again, with the VIP"),
                Duration::from_secs(15),
                || {
                    let programmed = web_vip(&cluster, 0, &backend_text)?.is_some();
                    Ok((programmed && lb::connect4_programs(&cgroups[0])? == 1).then_some(()))
                },
            )?;
            gaps.push(began.elapsed());
            eprintln!(
                "round {round}: stopped, started and retired the earlier run in {:?}",
                began.elapsed()
            );
            std::thread::sleep(hold);
        }
        Ok(())
    })?;

    let row = |name: &str, t: &Tally| {
        vec![
            name.to_owned(),
            t.connects.to_string(),
            t.failed.to_string(),
            t.wrong_peer.to_string(),
            format!("{:.0}", t.rate()),
            format!("{:.2}", t.rate() / direct_tally.rate()),
        ]
    };
    println!("## VIP connects through agent restarts\n");
    print_table(
        &[
            "run",
            "connects",
            "failed or untranslated",
            "getpeername not the VIP",
            "connects/s",
            "÷ direct",
        ],
        &[
            row(
                &format!("VIP, {} agent restarts", o.restarts),
                &restart_tally,
            ),
            row("VIP, agent left alone", &steady_tally),
            row("direct to the backend", &direct_tally),
        ],
    );
    let mean_gap = gaps.iter().map(Duration::as_secs_f64).sum::<f64>() / gaps.len().max(1) as f64;
    println!(
        "\nOne client thread, connect + greeting + close, back to back, from a container on node 1 \
         to one backend\non node 2 over the overlay. A restart (SIGTERM, 200 ms without an agent, \
         start, VIP programmed, the\nearlier run's programs retired) took {mean_gap:.2} s on \
         average; each run was then held {:.1} s.\nGoal: 0 failed or untranslated of >= 100,000 \
         connects through 10 restarts.",
        o.hold
    );
    if let Some(e) = &restart_tally.first_error {
        println!("first failure during restarts: {e}");
    }
    if restart_tally.failed > 0 || restart_tally.wrong_peer > 0 {
        bail!(
            "{} connects failed and {} showed another peer than the VIP during restarts",
            restart_tally.failed,
            restart_tally.wrong_peer
        );
    }
    Ok(())
}
