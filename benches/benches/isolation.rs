//! Performance isolation benchmark: a neighbour's request/response latency while a noisy task
//! sends all it can, with the noisy task unlimited and with a `DCNET_EGRESS_MBPS` limit (the
//! token bucket of `dcnet_overlay::shaping`), beside idle, in one run.
//!
//! A "node" namespace forwards between three task namespaces, each on its own veth: `noisy`
//! (iperf3 client, 4 streams), `quiet` (the neighbour: `dcnet-conn-load rr`, one connection,
//! 64-byte requests) and `server` (iperf3 server and the request/response server). Both the
//! flood and the neighbour cross the node's link to the server, as two tasks of a node sending
//! out of it do. A veth has no capacity of its own, so that link is given one (`--link-mbps`,
//! a token bucket on the node's side with a 50 ms queue, as a NIC's queue fills): what a noisy
//! task can starve its neighbours of is that link. Cases rotate round by round; the table
//! shows medians and the ratio of the neighbour's latency to idle. (On an idle virtual machine
//! the idle latency includes waking a CPU from idle, tens of µs.)
//!
//! Usage: `cargo bench -p dcnet-benches --bench isolation -- [--seconds 3] [--rounds 3]
//!        [--limit-mbps 50]`

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use dcnet_benches::{median, print_table, spawn_in};
use dcnet_tests::TestNamespace;
use dcnet_tests::cluster::in_netns;

const LOAD: &str = env!("CARGO_BIN_EXE_dcnet-conn-load");

#[derive(clap::Parser)]
struct Options {
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 50)]
    limit_mbps: u64,
    /// Capacity of the node's link to the server.
    #[arg(long, default_value_t = 500)]
    link_mbps: u64,
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Idle,
    Unlimited,
    Limited,
}

/// A task namespace on link k of the node: 10.97.k.2, the node being 10.97.k.1.
fn task(node: &TestNamespace, k: u8, label: &str) -> Result<(TestNamespace, Ipv4Addr)> {
    let ns = TestNamespace::create(label)?;
    let (node_ip, ip) = (Ipv4Addr::new(10, 97, k, 1), Ipv4Addr::new(10, 97, k, 2));
    let host_side = format!("v{k}");
    let inside = ns.netns();
    let h = host_side.clone();
    node.netns().netlink(|nl| async move {
        nl.add_veth(&h, "eth0", Some(inside)).await?;
        nl.add_address(&h, node_ip.into(), 24).await?;
        nl.set_up(&h).await
    })?;
    ns.netns().netlink(|nl| async move {
        nl.add_address("eth0", ip.into(), 24).await?;
        nl.set_up("eth0").await
    })?;
    dcnet_benches::netlink_in(ns.netns(), |handle| async move {
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(node_ip)
            .build();
        handle.route().add(route).execute().await?;
        Ok(())
    })?;
    Ok((ns, ip))
}

fn main() -> Result<()> {
    let options: Options = clap::Parser::parse();
    dcnet_tests::cluster::require_root()?;
    let node = TestNamespace::create("isonode")?;
    node.netns()
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))??;
    let (server, server_ip) = task(&node, 1, "isosrv")?;
    let link = options.link_mbps * 1_000_000;
    node.netns()
        .netlink(|nl| async move { nl.set_egress_limit("v1", Some(link)).await })?;
    let (noisy, _) = task(&node, 2, "isonoisy")?;
    let (quiet, _) = task(&node, 3, "isoquiet")?;
    let _iperf = spawn_in(server.netns(), "iperf3", &["-s", "-p", "5201"])?;
    let rr_addr = format!("{server_ip}:8081");
    let _rr = spawn_in(server.netns(), LOAD, &["serve-rr", &rr_addr])?;
    dcnet_tests::wait_until("the servers", std::time::Duration::from_secs(10), || {
        let ok = |port| {
            quiet.netns().run(move || {
                std::net::TcpStream::connect_timeout(
                    &(server_ip, port).into(),
                    std::time::Duration::from_millis(200),
                )
                .is_ok()
            })
        };
        Ok((ok(5201)? && ok(8081)?).then_some(()))
    })?;

    let cases = [Case::Idle, Case::Unlimited, Case::Limited];
    let mut latency: BTreeMap<Case, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut flood: BTreeMap<Case, Vec<f64>> = BTreeMap::new();
    for round in 0..options.rounds {
        let mut order = cases.to_vec();
        order.rotate_left(round % cases.len());
        for case in order {
            let limit = (case == Case::Limited).then_some(options.limit_mbps * 1_000_000);
            noisy
                .netns()
                .netlink(|nl| async move { nl.set_egress_limit("eth0", limit).await })?;
            let flooding = match case {
                Case::Idle => None,
                _ => {
                    let mut command = Command::new("iperf3");
                    command.args([
                        "-c",
                        &server_ip.to_string(),
                        "-P",
                        "4",
                        "-J",
                        "-t",
                        &(options.seconds + 1.0).ceil().to_string(),
                    ]);
                    in_netns(&mut command, noisy.netns(), true);
                    let child = command
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()?;
                    // Let it ramp up before the neighbour measures.
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    Some(child)
                }
            };
            let mut command = Command::new(LOAD);
            command.args(["rr", &rr_addr, "1", &options.seconds.to_string()]);
            in_netns(&mut command, quiet.netns(), true);
            let out = command.stderr(Stdio::inherit()).output()?;
            if !out.status.success() {
                bail!("the neighbour's client failed");
            }
            let rr: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let entry = latency.entry(case).or_default();
            entry.0.push(rr["p50_us"].as_f64().unwrap_or(f64::NAN));
            entry.1.push(rr["p99_us"].as_f64().unwrap_or(f64::NAN));
            // The flood ends by itself (`-t`), also if this bench stops early.
            if let Some(mut child) = flooding {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    child.stdout.as_mut().context("iperf3's output")?,
                    &mut text,
                )?;
                let _ = child.wait();
                let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let bits = report["end"]["sum_received"]["bits_per_second"]
                    .as_f64()
                    .unwrap_or(f64::NAN);
                flood.entry(case).or_default().push(bits / 1e6);
            }
        }
        eprintln!("round {} of {} done", round + 1, options.rounds);
    }
    let idle_p50 = median(latency[&Case::Idle].0.clone());
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|case| {
            let (p50, p99) = &latency[case];
            let p50 = median(p50.clone());
            vec![
                match case {
                    Case::Idle => "idle".to_owned(),
                    Case::Unlimited => "noisy task unlimited".to_owned(),
                    Case::Limited => format!("noisy task at {} Mbit/s", options.limit_mbps),
                },
                flood
                    .get(case)
                    .map_or("-".into(), |f| format!("{:.0}", median(f.clone()))),
                format!("{p50:.1}"),
                format!("{:.1}", median(p99.clone())),
                format!("{:.2}", p50 / idle_p50),
            ]
        })
        .collect();
    println!(
        "\nthe neighbour's request/response latency over a {} Mbit/s link; medians of {} rounds of {} s",
        options.link_mbps, options.rounds, options.seconds
    );
    print_table(
        &[
            "case",
            "noisy Mbit/s",
            "neighbour p50 us",
            "p99 us",
            "p50 x idle",
        ],
        &rows,
    );
    Ok(())
}
