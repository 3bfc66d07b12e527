//! Performance isolation: an app labelled `DCNET_EGRESS_MBPS` sends at most that much per
//! task (a token bucket on the task's own interface), measured with iperf3 run inside the
//! task's namespace and cgroup; its neighbours are not limited, and their latency while it
//! floods is printed beside the idle one.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::facts::launched::TaskState;
use dcnet_tests::cluster::{OVERLAY_AND_LB, TASKS_CGROUP};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use serde_json::{Value, json};

/// An app of one task on node-2 whose task is an iperf3 server.
fn app(id: &str, labels: Value) -> String {
    json!({
        "id": id, "instances": 1, "cpus": 0.01, "mem": 64,
        "cmd": "exec iperf3 -s -p 5201",
        "labels": labels,
        "constraints": [["hostname", "IS", "node-2"]],
        "networks": [{"mode": "container", "name": "dcos"}],
    })
    .to_string()
}

struct Task {
    ip: String,
    netns: String,
    cgroup: std::path::PathBuf,
}

fn task(cluster: &Cluster, app: &str) -> Result<Task> {
    wait_until(&format!("{app} running"), Duration::from_secs(60), || {
        let rows: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        let Some(row) = rows
            .into_iter()
            .find(|r| r.status.app_id == app && r.status.state == TaskState::TaskRunning)
        else {
            return Ok(None);
        };
        let Some(ip) = row.status.ip else {
            return Ok(None);
        };
        Ok(Some(Task {
            ip: ip.to_string(),
            netns: dcnet_agent::launcher::process::netns_name(
                &cluster.task_netns_prefix(),
                &row.status.task_id,
            ),
            cgroup: cluster.nodes[1]
                .cgroup
                .as_ref()
                .context("node-2's cgroup")?
                .path()
                .join(TASKS_CGROUP)
                .join(&row.status.task_id),
        }))
    })
}

/// `program args` in `task`'s namespace and cgroup, as the task.
fn as_task(task: &Task, program: &str, args: &[&str]) -> Result<Command> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &task.netns, program])
        .args(args)
        .stdin(Stdio::null());
    let join = dcnet_agent::launcher::process::join_cgroup(&task.cgroup)
        .context("a cgroup path with a NUL")?;
    // SAFETY: `join` makes only async-signal-safe calls and allocates nothing.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut command, join) };
    Ok(command)
}

/// iperf3 from `from` to `to`'s server for `seconds`: the receiver's bits per second.
fn iperf(from: &Task, to: &Task, seconds: u32) -> Result<f64> {
    let report: Value = wait_until("an iperf3 run", Duration::from_secs(20), || {
        let out = as_task(
            from,
            "iperf3",
            &["-c", &to.ip, "-J", "-t", &seconds.to_string()],
        )?
        .output()?;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // Until the server listens, iperf3 reports the refusal in its JSON.
        Ok((out.status.success() && report.get("error").is_none()).then_some(report))
    })?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("no received rate in {report}"))
}

/// Median round trip of 20 pings from `from` to `to`, in ms.
fn ping(from: &Task, to: &Task) -> Result<f64> {
    let out = as_task(
        from,
        "ping",
        &["-n", "-q", "-c", "20", "-i", "0.05", &to.ip],
    )?
    .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.050/0.061/0.090/0.010 ms
    let avg = text
        .lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .with_context(|| format!("ping printed {text}"))?;
    Ok(avg.parse()?)
}

#[test]
fn a_limited_task_sends_at_its_limit_and_its_neighbours_do_not_wait() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    let mut options = ClusterOptions::nodes(2);
    options.nodes[0] = NodeSpec {
        roles: vec!["master".into(), "agent".into()],
        extra_config: OVERLAY_AND_LB.into(),
        ..NodeSpec::default()
    };
    options.nodes[1].extra_config = OVERLAY_AND_LB.into();
    let cluster = Cluster::start(options)?;
    let result = limits(&cluster);
    cluster.explain(result, 40)
}

fn limits(cluster: &Cluster) -> Result<()> {
    // Refused with the reason on the host network.
    let bad = json!({"id": "/bad", "cmd": "sleep 100", "labels": {"DCNET_EGRESS_MBPS": "50"}});
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.json");
    std::fs::write(&file, bad.to_string())?;
    // Once the scheduler takes apps (the first add waits for it).
    cluster.add_app(1, &app("/quiet", json!({})))?;
    let refused = cluster.cli(1, &["app", "add", file.to_str().context("path")?]);
    match refused {
        Ok(_) => bail!("an egress limit on the host network was accepted"),
        Err(e) => assert!(format!("{e:#}").contains("overlay network"), "{e:#}"),
    }
    cluster.add_app(1, &app("/noisy", json!({"DCNET_EGRESS_MBPS": "50"})))?;
    cluster.add_app(1, &app("/third", json!({})))?;
    let noisy = task(cluster, "/noisy")?;
    let quiet = task(cluster, "/quiet")?;
    let third = task(cluster, "/third")?;

    // The kernel object: a token bucket at the root of the task's interface.
    let qdisc = Command::new("ip")
        .args([
            "netns",
            "exec",
            &noisy.netns,
            "tc",
            "qdisc",
            "show",
            "dev",
            "eth0",
        ])
        .output()?;
    let qdisc = String::from_utf8_lossy(&qdisc.stdout).into_owned();
    assert!(
        qdisc.starts_with("qdisc tbf") && qdisc.contains("rate 50Mbit"),
        "{qdisc}"
    );

    let idle = ping(&quiet, &third)?;
    let limited = iperf(&noisy, &quiet, 3)?;
    println!(
        "the task limited to 50 Mbit/s sent {:.1} Mbit/s",
        limited / 1e6
    );
    assert!(limited <= 55e6, "{limited} bit/s");
    assert!(
        limited >= 35e6,
        "its limit, not a broken path: {limited} bit/s"
    );
    // Its neighbour is not limited.
    let free = iperf(&quiet, &noisy, 2)?;
    println!("its unlimited neighbour sent {:.1} Mbit/s", free / 1e6);
    assert!(free > 100e6, "{free} bit/s");

    // The neighbours' latency while the limited task sends all it can, beside idle.
    let mut flood = as_task(&noisy, "iperf3", &["-c", &quiet.ip, "-t", "5", "-P", "4"])?
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let busy = ping(&quiet, &third);
    let _ = flood.kill();
    let _ = flood.wait();
    println!(
        "neighbour round trip: {idle:.3} ms idle, {:.3} ms while the limited task floods",
        busy?
    );
    Ok(())
}
