//! Container apps benchmark: what running a task in an image costs, from `POST /v2/apps` to
//! the task answering HTTP, against the same server as a plain process task and against runc
//! alone on a bundle of the same image (the floor: no scheduler, no gossip, no overlay).
//!
//! A namespace cluster of a master (node 1) and an agent (node 2) with the overlay. Each
//! round, alternating:
//! - **process**: an app running busybox httpd from the node (`/bin/busybox`), on the overlay;
//! - **container**: the same server from the test image ([`images::BUSYBOX`]) through podman's
//!   store and runc, on the overlay;
//! - **runc alone**: the same image mounted and started by `runc run --detach` in a namespace
//!   of the bench, with the spec dcnet writes.
//!
//! Measured: start (POST, or runc's start, to the first HTTP answer from node 2's namespace)
//! and stop (DELETE to no process left in the task's cgroup; runc: `delete --force`). A stop
//! of a dcnet task includes the harness's `drain` (1 s) and, for a container whose PID 1 is
//! the server (which ignores SIGTERM, as PID 1 without a handler does), `kill_grace` (1 s)
//! before SIGKILL, as `docker stop` waits for such a container.
//!
//! Usage: `cargo bench -p dcnet-benches --bench containers -- [--rounds 5]`

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::app::{ContainerKind, Image};
use dcnet_agent::launcher::container::{self, ContainerUser, SpecInputs};
use dcnet_benches::{ms, print_table, quantile};
use dcnet_tests::cluster::OVERLAY_AND_LB;
use dcnet_tests::{
    Cluster, ClusterOptions, NodeSpec, TestCgroup, TestNamespace, images, wait_until,
};
use serde_json::json;

#[derive(clap::Parser)]
struct Options {
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    // `cargo bench` passes --bench to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Default)]
struct Samples {
    start: Vec<Duration>,
    stop: Vec<Duration>,
}

fn main() -> Result<()> {
    let options: Options = clap::Parser::parse();
    dcnet_tests::cluster::require_root()?;
    images::ensure_busybox()?;
    let mut options_c = ClusterOptions::nodes(2);
    for (i, node) in options_c.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            extra_config: OVERLAY_AND_LB.into(),
            ..NodeSpec::default()
        };
    }
    let cluster = Cluster::start(options_c)?;
    cluster.wait_for_overlay(&[0, 1], 1)?;
    let (mut process, mut boxed, mut runc) =
        (Samples::default(), Samples::default(), Samples::default());
    for round in 0..options.rounds {
        let (start, stop) = through_dcnet(&cluster, round, false)?;
        process.start.push(start);
        process.stop.push(stop);
        let (start, stop) = through_dcnet(&cluster, round, true)?;
        boxed.start.push(start);
        boxed.stop.push(stop);
        let (start, stop) = runc_alone(round)?;
        runc.start.push(start);
        runc.stop.push(stop);
        eprintln!("round {} of {} done", round + 1, options.rounds);
    }
    let p50 = |s: &[Duration]| quantile(s, 0.5);
    let ratio = |a: &[Duration], b: &[Duration]| match (p50(a), p50(b)) {
        (Some(a), Some(b)) if !b.is_zero() => format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    };
    println!(
        "\nstart: POST (or runc start) to the first HTTP answer; stop: DELETE to no process left \
         (ms, median of {} rounds)\n",
        options.rounds
    );
    let rows = vec![
        vec![
            "process task".into(),
            ms(p50(&process.start)),
            ms(p50(&process.stop)),
            "1.00".into(),
        ],
        vec![
            "container task".into(),
            ms(p50(&boxed.start)),
            ms(p50(&boxed.stop)),
            ratio(&boxed.start, &process.start),
        ],
        vec![
            "runc alone".into(),
            ms(p50(&runc.start)),
            ms(p50(&runc.stop)),
            ratio(&runc.start, &process.start),
        ],
    ];
    print_table(&["", "start", "stop", "start ÷ process"], &rows);
    println!(
        "\ncontainer task start − runc alone: {} ms (the scheduler, gossip, the overlay attach, \
         podman's image inspect and mount)",
        match (p50(&boxed.start), p50(&runc.start)) {
            (Some(a), Some(b)) => format!("{:.1}", (a.as_secs_f64() - b.as_secs_f64()) * 1000.0),
            _ => "-".into(),
        }
    );
    Ok(())
}

/// Polls `probe` every 5 ms (the harness's `wait_until` polls every 100 ms, too coarse to
/// time a start) until it yields a value, for at most 60 s.
fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One app of one instance through the agent's API: (POST to serving, DELETE to gone).
fn through_dcnet(cluster: &Cluster, round: usize, boxed: bool) -> Result<(Duration, Duration)> {
    let id = format!("/bench-{}-{round}", if boxed { "box" } else { "proc" });
    let mut app = json!({
        "id": id, "instances": 1, "cpus": 0.05, "mem": 32,
        "networks": [{"mode": "container", "name": "dcos"}],
        "container": {"portMappings": [{"containerPort": 80}]},
    });
    if boxed {
        app["container"]["type"] = json!("DOCKER");
        app["container"]["docker"] = json!({"image": images::BUSYBOX});
    } else {
        app["cmd"] = json!(
            "mkdir -p www && echo hello > www/index.html && exec /bin/busybox httpd -f -p 80 -h www"
        );
    }
    let started = Instant::now();
    let (status, body) = cluster.post(1, "/v2/apps", &app.to_string())?;
    if status != 201 {
        bail!("POST {id}: {status} {body}");
    }
    let ip = poll(&format!("{id} to serve"), || {
        let rows: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        let Some(ip) = rows
            .iter()
            .find(|r| r.status.app_id == id)
            .and_then(|r| r.status.ip)
        else {
            return Ok(None);
        };
        let out = cluster.curl(1, &["-m", "1", &format!("http://{ip}:80/")])?;
        Ok(out.status.success().then_some(ip))
    })?;
    let start = started.elapsed();
    let removed = Instant::now();
    // The agent's API is on its node's loopback: curl there, with the harness's credential.
    let url = format!("http://127.0.0.1:62080/v2/apps{id}");
    let out = cluster.curl(1, &["-f", "-X", "DELETE", &url])?;
    if !out.status.success() {
        bail!("DELETE {id}: {}", String::from_utf8_lossy(&out.stdout));
    }
    let prefix = format!("{}.", &id[1..]);
    wait_until(
        &format!("{id} ({ip}) to stop"),
        Duration::from_secs(60),
        || {
            let now = cluster.running_tasks(1);
            Ok((!now.iter().any(|t| t.starts_with(&prefix))).then_some(()))
        },
    )?;
    Ok((start, removed.elapsed()))
}

/// The image run by runc alone, with dcnet's spec, in a namespace and cgroup of the bench.
fn runc_alone(round: usize) -> Result<(Duration, Duration)> {
    let rt = images::runtime()?;
    let ns = TestNamespace::create(&format!("runc{round}"))?;
    let cgroup = TestCgroup::create(&format!("runc{round}"))?;
    let dir = tempfile::tempdir()?;
    let (bundle, state, sandbox) = (
        dir.path().join("bundle"),
        dir.path().join("runc"),
        dir.path().join("sandbox"),
    );
    std::fs::create_dir_all(&sandbox)?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let id = format!("bench-runc-{}-{round}", std::process::id());
    let started = Instant::now();
    let result = tokio.block_on(async {
        let (image_id, config) = rt.inspect(images::BUSYBOX).await?;
        rt.prepare(&bundle, &image_id).await?;
        let image = Image {
            name: images::BUSYBOX.into(),
            kind: ContainerKind::Docker,
            volumes: Vec::new(),
        };
        let spec = container::spec(&SpecInputs {
            argv: container::argv(&config, &dcnet_agent::app::Command::Args(Vec::new()))
                .map_err(anyhow::Error::msg)?,
            env: vec!["PATH=/bin".into()],
            user: ContainerUser {
                uid: 1000,
                gid: 1000,
                groups: vec![1000],
                home: None,
            },
            cwd: "/".into(),
            netns: Some(std::path::Path::new("/run/netns").join(ns.netns().name())),
            cgroup: container::cgroups_path(
                &cgroup.path().join("c"),
                std::path::Path::new(dcnet_tests::cgroup::CGROUP2_ROOT),
            ),
            sandbox: &sandbox,
            files: Vec::new(),
            image: &image,
            mem_mb: 32.0,
            hostname: "bench".into(),
        });
        container::Runtime::write_spec(&bundle, &spec)?;
        // The detached container keeps runc's stdio: files, so nothing waits on a pipe.
        let log = std::fs::File::create(dir.path().join("runc.log"))?;
        let status = tokio::process::Command::new(&rt.runc)
            .arg("--root")
            .arg(&state)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .await?;
        if !status.success() {
            let log = std::fs::read_to_string(dir.path().join("runc.log")).unwrap_or_default();
            bail!("runc run: {status}: {log}");
        }
        Ok::<_, anyhow::Error>(())
    });
    let measured = result.and_then(|()| {
        poll("runc's httpd to serve", || {
            let out = ns.exec("curl", &["-s", "-m", "1", "http://127.0.0.1:80/"])?;
            Ok(out.status.success().then_some(()))
        })
        .context("runc alone")
    });
    let start = started.elapsed();
    let stopping = Instant::now();
    tokio.block_on(rt.release(&state, &bundle, &id));
    let stop = stopping.elapsed();
    measured?;
    Ok((start, stop))
}
