//! Container apps end to end, in a 3-node namespace cluster: node 1 is the master, node 2 an
//! agent with runc and podman, node 3 an agent with `containers = false`. The image is built
//! here from Debian's busybox-static and imported into podman's store ([`images::BUSYBOX`]):
//! httpd on port 80 as its command, user `www` known only in the image.
//!
//! - DC/OS's Docker hello-world (the older format: `docker.network: BRIDGE`,
//!   `docker.portMappings`, no `cmd`) runs on the overlay from the image's own command and
//!   user, passes HTTP and COMMAND (run inside the container) health checks, and answers
//!   through its VIP from a client container on node 2, and at node 2's host ports from
//!   outside the cluster and from another node;
//! - what runs is checked in the kernel: the container's processes are in the task's cgroup,
//!   in the task's network namespace, as uid 1000, with the image as their root;
//! - an app with `cmd`, `env` and volumes (a read-only host path, a relative one in the
//!   sandbox) writes what it sees into its sandbox; the control plane stays out of its reach;
//! - an agent without a runtime says so in `/v2/queue`; a missing image fails the task with
//!   a message naming podman;
//! - the agent is SIGKILLed and restarted under a running container, which it adopts; removing
//!   the apps leaves no process, mount, bundle or runc state behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::facts::launched::TaskState;
use dcnet_tests::cluster::OVERLAY_AND_LB;
use dcnet_tests::container::Container;
use dcnet_tests::lb::{self, Line};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, images, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

fn hello_world() -> String {
    format!(
        r#"{{
  "id": "/hello-world",
  "instances": 2, "cpus": 0.05, "mem": 32,
  "container": {{"type": "DOCKER", "volumes": [],
    "docker": {{"image": "{image}", "network": "BRIDGE", "forcePullImage": false,
      "portMappings": [{{"containerPort": 80, "hostPort": 0, "protocol": "tcp",
                         "labels": {{"VIP_0": "/hello:80"}}}}]}}}},
  "healthChecks": [
    {{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 10,
      "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 3}},
    {{"protocol": "COMMAND", "command": {{"value": "test -f /www/index.html"}},
      "gracePeriodSeconds": 10, "intervalSeconds": 1, "timeoutSeconds": 5,
      "maxConsecutiveFailures": 3}}]
}}"#,
        image = images::BUSYBOX
    )
}

fn inspector(data: &Path) -> String {
    let cmd = "cd $MESOS_SANDBOX && echo $GREETING > greeting && echo $MODE > mode && \
               id -u > uid && cat /data/hello > data-seen && \
               (touch /data/new 2> ro-error; echo $? > ro-exit) && \
               echo kept > scratch/mine && \
               (wget -q -T 2 -O- http://10.200.0.1:8080/ping > /dev/null 2>&1; echo $? > control-exit) && \
               echo done > finished && exec sleep 1000";
    format!(
        r#"{{
  "id": "/inspector", "cmd": "{cmd}", "user": "www",
  "instances": 1, "cpus": 0.05, "mem": 32, "env": {{"MODE": "from-app"}},
  "networks": [{{"mode": "container", "name": "dcos"}}],
  "container": {{"type": "MESOS", "docker": {{"image": "{image}"}},
    "volumes": [{{"containerPath": "/data", "hostPath": "{data}", "mode": "RO"}},
                {{"containerPath": "scratch", "hostPath": "{data}/scratch", "mode": "RW"}}]}}
}}"#,
        image = images::BUSYBOX,
        data = data.display()
    )
}

fn start_cluster() -> Result<Cluster> {
    let mut options = ClusterOptions::nodes(3);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: OVERLAY_AND_LB.into(),
            launcher_config: if i == 2 {
                "containers = false\n".into()
            } else {
                String::new()
            },
            ..NodeSpec::default()
        };
    }
    let cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0, 1, 2], 2)?;
    Ok(cluster)
}

fn tasks_of(cluster: &Cluster, app: &str) -> Result<Vec<TaskRow>> {
    let rows: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
    Ok(rows
        .into_iter()
        .filter(|r| r.status.app_id == app)
        .collect())
}

/// Waits for `n` running tasks of `app` (healthy, when `healthy`) on node 2, as node 2 has them.
fn wait_running(cluster: &Cluster, app: &str, n: usize, healthy: bool) -> Result<Vec<TaskRow>> {
    wait_until(
        &format!("{n} running tasks of {app}"),
        Duration::from_secs(60),
        || {
            let rows: Vec<TaskRow> = tasks_of(cluster, app)?
                .into_iter()
                .filter(|r| {
                    r.status.state == TaskState::TaskRunning
                        && (!healthy || r.status.healthy == Some(true))
                })
                .collect();
            let on_node_2 = rows.iter().all(|r| r.node == cluster.nodes[1].name);
            if !on_node_2 {
                bail!("a container task runs outside node 2: {rows:?}");
            }
            let running = cluster.running_tasks(1);
            let in_kernel = rows.iter().all(|r| running.contains(&r.status.task_id));
            Ok((rows.len() == n && in_kernel).then_some(rows))
        },
    )
}

/// The processes in a task's cgroup.
fn task_pids(cluster: &Cluster, task_id: &str) -> Result<Vec<u32>> {
    let cgroup = cluster.nodes[1]
        .cgroup
        .as_ref()
        .context("node 2's cgroup")?;
    let procs = std::fs::read_to_string(
        cgroup
            .path()
            .join(dcnet_tests::cluster::TASKS_CGROUP)
            .join(task_id)
            .join("cgroup.procs"),
    )
    .with_context(|| format!("the cgroup of {task_id}"))?;
    Ok(procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

fn status_field(pid: u32, field: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn sandbox(cluster: &Cluster, task_id: &str) -> PathBuf {
    cluster.nodes[1].state_dir.join("tasks").join(task_id)
}

/// Mounts under node 2's state directory (the containers' root file systems).
fn container_mounts(cluster: &Cluster) -> Result<Vec<String>> {
    let state = cluster.nodes[1].state_dir.display().to_string();
    // The agent's own BPF filesystem (its pinned maps and links) is no container's.
    let bpffs = cluster.nodes[1]
        .state_dir
        .join(dcnet_agent::state::BPF_DIR)
        .display()
        .to_string();
    Ok(std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&state) && *m != bpffs)
        .map(str::to_owned)
        .collect())
}

#[test]
fn container_apps_run_from_local_images_confined_and_leave_nothing() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    images::ensure_busybox().context(
        "container tests need runc, podman and busybox-static (scripts/setup.sh installs them)",
    )?;
    let mut cluster = start_cluster()?;
    let result = scenario(&mut cluster);
    cluster.explain(result, 80)
}

fn scenario(cluster: &mut Cluster) -> Result<()> {
    let client = Container::attach(cluster, 1, "ctc")?;
    let data = tempfile::tempdir()?;
    std::fs::write(data.path().join("hello"), "from the host\n")?;
    std::fs::create_dir(data.path().join("scratch"))?;
    // The image's user (uid 1000) writes into the RW volume.
    std::os::unix::fs::chown(data.path().join("scratch"), Some(1000), Some(1000))?;

    // DC/OS's hello-world: the image's own command, user and port, behind a VIP.
    cluster.add_app(1, &hello_world())?;
    let rows = wait_running(cluster, "/hello-world", 2, true)?;
    for row in &rows {
        let pids = task_pids(cluster, &row.status.task_id)?;
        let httpd = pids
            .iter()
            .copied()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with("/bin/httpd"))
            })
            .with_context(|| {
                format!("no httpd in the cgroup of {}: {pids:?}", row.status.task_id)
            })?;
        assert_eq!(status_field(httpd, "Uid")?, "1000", "the image's user");
        let netns = std::fs::read_link(format!("/proc/{httpd}/ns/net"))?;
        let task_ns = format!("/run/netns/{}", cluster.task_netns_prefix());
        let same = std::fs::read_dir("/run/netns")?.flatten().any(|e| {
            e.path().display().to_string().starts_with(&task_ns)
                && nix::sys::stat::stat(&e.path()).ok().map(|s| s.st_ino)
                    == nix::sys::stat::stat(&PathBuf::from(format!("/proc/{httpd}/ns/net")))
                        .ok()
                        .map(|s| s.st_ino)
        });
        assert!(same, "httpd is in a task namespace of node 2 ({netns:?})");
        let root_file = std::fs::read_to_string(format!("/proc/{httpd}/root/www/index.html"))?;
        assert_eq!(root_file, "hello from the image\n", "its root is the image");
    }
    let cgroup = cluster.nodes[1]
        .cgroup
        .as_ref()
        .context("node 2's cgroup")?;
    let lines = lb::run_client(lb::client_command(
        client.ns.netns().name(),
        Some(cgroup),
        &[
            "http",
            "hello.marathon.l4lb.thisdcos.directory:80",
            "20",
            "/",
        ],
    )?)?;
    for line in &lines {
        match line {
            Line::Ok { response, .. } if response.trim() == "hello from the image" => {}
            other => bail!("a request through the VIP failed: {other:?}"),
        }
    }
    // Bridge networking: each task's host port on node 2 reaches it, from outside the
    // cluster and from another node.
    let tasks: Value = serde_json::from_str(&cluster.get_text(0, "/v2/apps/hello-world/tasks")?)?;
    let host_ports: BTreeSet<u64> = tasks["tasks"]
        .as_array()
        .context("tasks")?
        .iter()
        .filter_map(|t| t["ports"][0].as_u64())
        .collect();
    assert_eq!(host_ports.len(), 2, "a host port per task: {tasks}");
    let node2 = cluster.nodes[1].address;
    let outsider = cluster.add_outsider()?.name().to_owned();
    for port in &host_ports {
        let url = format!("http://{node2}:{port}/");
        let out = Command::new("ip")
            .args(["netns", "exec", &outsider, "curl", "-s", "-m", "5", &url])
            .output()?;
        let body = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            body, "hello from the image\n",
            "{url} from outside the cluster"
        );
        let out = cluster.curl(0, &["-m", "5", &url])?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from the image\n",
            "{url} from node 1"
        );
    }
    // DNS points at what is reachable: `.slave` SRV at the agent's host ports, autoip at the
    // agent (the task maps host ports), containerip at the tasks.
    let srv = dig(
        cluster,
        0,
        &["+short", "_hello-world._tcp.marathon.slave.mesos", "SRV"],
    )?;
    let srv_ports: BTreeSet<u64> = srv
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    assert_eq!(srv_ports, host_ports, "{srv}");
    assert!(srv.contains(".marathon.slave.mesos."), "{srv}");
    let autoip = dig(
        cluster,
        0,
        &[
            "+short",
            "hello-world.marathon.autoip.dcos.thisdcos.directory",
        ],
    )?;
    assert_eq!(autoip.trim(), node2.to_string(), "{autoip}");
    let containerip = dig(
        cluster,
        0,
        &[
            "+short",
            "hello-world.marathon.containerip.dcos.thisdcos.directory",
        ],
    )?;
    assert!(
        containerip.lines().all(|ip| ip.starts_with("9.")),
        "{containerip}"
    );
    let app: Value = serde_json::from_str(&cluster.get_text(0, "/v2/apps/hello-world")?)?;
    assert_eq!(app["app"]["container"]["docker"]["image"], images::BUSYBOX);
    assert_eq!(app["app"]["container"]["type"], "DOCKER");
    assert!(app["app"].get("cmd").is_none(), "{app}");

    // cmd, env and volumes, as the app's user, confined.
    cluster.add_app(1, &inspector(data.path()))?;
    let rows = wait_running(cluster, "/inspector", 1, false)?;
    let sb = sandbox(cluster, &rows[0].status.task_id);
    wait_until(
        "the inspector to finish looking",
        Duration::from_secs(30),
        || Ok(sb.join("finished").exists().then_some(())),
    )?;
    let read = |name: &str| std::fs::read_to_string(sb.join(name)).map(|s| s.trim().to_owned());
    assert_eq!(read("greeting")?, "from-image", "the image's environment");
    assert_eq!(read("mode")?, "from-app", "the app's env");
    assert_eq!(read("uid")?, "1000", "user www, known in the image only");
    assert_eq!(read("data-seen")?, "from the host");
    assert_ne!(
        read("ro-exit")?,
        "0",
        "the RO volume refused a write: {:?}",
        read("ro-error")
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("scratch/mine"))?,
        "kept\n"
    );
    assert!(!data.path().join("new").exists());
    assert_ne!(
        read("control-exit")?,
        "0",
        "the scheduler's API is out of a container's reach"
    );
    // The launcher's record of the task is not in the sandbox the task owns.
    {
        use std::os::unix::fs::MetadataExt as _;
        let id = &rows[0].status.task_id;
        let record = cluster.nodes[1]
            .state_dir
            .join("task-records")
            .join(format!("{id}.json"));
        let meta = std::fs::metadata(&record).with_context(|| format!("{}", record.display()))?;
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (0, 0o600),
            "root's, private"
        );
        assert!(!sb.join("task.json").exists());
        assert_eq!(
            std::fs::metadata(&sb)?.uid(),
            1000,
            "the sandbox is the task's"
        );
    }

    // Node 3 has no runtime: an app only it could take waits, saying why.
    let pinned = format!(
        r#"{{"id": "/pinned", "instances": 1, "cpus": 0.05, "mem": 16,
            "constraints": [["hostname", "IS", "{}"]],
            "container": {{"type": "DOCKER", "docker": {{"image": "{}"}}}}}}"#,
        cluster.nodes[2].name,
        images::BUSYBOX
    );
    cluster.add_app(1, &pinned)?;
    wait_until(
        "/pinned to wait for a runtime",
        Duration::from_secs(30),
        || {
            let queue: Value = serde_json::from_str(&cluster.get_text(0, "/v2/queue")?)?;
            let text = queue.to_string();
            Ok(text.contains("no container runtime").then_some(()))
        },
    )?;
    cluster.cli(1, &["app", "remove", "/pinned"])?;

    // An image that is not in the store: the task fails and says where images come from.
    let absent = r#"{"id": "/absent", "instances": 1, "cpus": 0.05, "mem": 16,
        "container": {"type": "DOCKER", "docker": {"image": "localhost/dcnet-test/absent:1"}}}"#;
    cluster.add_app(1, absent)?;
    wait_until(
        "/absent to report its failure",
        Duration::from_secs(30),
        || {
            let app: Value = serde_json::from_str(&cluster.get_text(0, "/v2/apps/absent")?)?;
            let message = app["app"]["lastTaskFailure"]["message"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            Ok(message.contains("podman").then_some(()))
        },
    )?;
    cluster.cli(1, &["app", "remove", "/absent"])?;

    // SIGKILL the agent under its containers: the restarted agent adopts them.
    let before: BTreeSet<String> = wait_running(cluster, "/hello-world", 2, true)?
        .into_iter()
        .map(|r| r.status.task_id)
        .collect();
    cluster.stop_agent(1, Signal::SIGKILL, Duration::from_secs(5));
    cluster.start_agent(1)?;
    let after: BTreeSet<String> = wait_running(cluster, "/hello-world", 2, true)?
        .into_iter()
        .map(|r| r.status.task_id)
        .collect();
    if before != after {
        bail!("the containers were replaced, not adopted: {before:?} before, {after:?} after");
    }

    // Removing the apps leaves no process, mount, bundle or runc state.
    let all: Vec<String> = tasks_of(cluster, "/hello-world")?
        .into_iter()
        .chain(tasks_of(cluster, "/inspector")?)
        .map(|r| r.status.task_id)
        .collect();
    cluster.cli(1, &["app", "remove", "/hello-world"])?;
    cluster.cli(1, &["app", "remove", "/inspector"])?;
    wait_until("the containers to be gone", Duration::from_secs(30), || {
        let running = cluster.running_tasks(1);
        if let Some(left) = all.iter().find(|id| running.contains(*id)) {
            bail!("{left} still has processes");
        }
        let mounts = container_mounts(cluster)?;
        if !mounts.is_empty() {
            bail!("still mounted: {mounts:?}");
        }
        let bundles = std::fs::read_dir(cluster.nodes[1].state_dir.join("containers"))
            .map(|d| d.count())
            .unwrap_or(0);
        if bundles > 0 {
            bail!("{bundles} bundles left");
        }
        let table = Command::new("ip")
            .args(["netns", "exec", cluster.nodes[1].netns.name()])
            .args(["nft", "list", "table", "inet", "dcnet_host_ports"])
            .output()?;
        if table.status.success() {
            bail!(
                "the host-port table is left: {}",
                String::from_utf8_lossy(&table.stdout)
            );
        }
        let runc = std::fs::read_dir(cluster.nodes[1].state_dir.join("runc"))
            .map(|d| d.count())
            .unwrap_or(0);
        if runc > 0 {
            bail!("{runc} containers left in runc's state");
        }
        Ok(Some(()))
    })?;
    Ok(())
}

/// `dig @127.0.0.1 args` on node `i`.
fn dig(cluster: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    let mut all = vec!["@127.0.0.1", "+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let out = cluster.run_in(i, Path::new("/usr/bin/dig"), &all)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
