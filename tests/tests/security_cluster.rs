//! Security I, end to end on a 3-node namespace cluster (node 1 the master, nodes 2 and 3
//! agents on an overlay with the load balancer), attacked from where attackers sit: an
//! outsider namespace on the underlay, another node, a task's network namespace, a local
//! unprivileged user, and a task itself.
//!
//! Every refusal is checked on what happened, not only on the status: no marker file, no task
//! cgroup, no app; and the guard's refusals on the errno a real socket got, against the same
//! call from the same namespace outside the tasks' cgroup, which gets through.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::facts::launched::TaskState;
use dcnet_auth::Role;
use dcnet_tests::cluster::OUTSIDER_ADDRESS;
use dcnet_tests::cluster::OVERLAY_AND_LB;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use serde_json::{Value, json};

const SCHEDULER: &str = "https://10.200.0.1:8080";
const AGENT_API: &str = "http://127.0.0.1:62080";

fn start_cluster() -> Result<Cluster> {
    let mut options = ClusterOptions::nodes(3);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            region: Some("r1".into()),
            zone: Some("z1".into()),
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: OVERLAY_AND_LB.into(),
            ..NodeSpec::default()
        };
    }
    let cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[1, 2], 2)?;
    wait_until("a scheduler to lead", Duration::from_secs(30), || {
        Ok(cluster.cli(1, &["app", "list", "--json"]).ok())
    })?;
    Ok(cluster)
}

/// An HTTP call made with curl in namespace `ns`, optionally as uid 65534: (status, body);
/// status 0 when no HTTP answer came.
struct Curl<'a> {
    ns: &'a str,
    nobody: bool,
    ca: Option<&'a Path>,
}

impl Curl<'_> {
    fn call(
        &self,
        method: &str,
        url: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns]);
        if self.nobody {
            cmd.args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ]);
        }
        cmd.args([
            "curl",
            "-sS",
            "-m",
            "5",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(ca) = self.ca {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some(auth) = auth {
            cmd.args(["-H", &format!("authorization: {auth}")]);
        }
        if let Some(body) = body {
            cmd.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ]);
        }
        let out = cmd.arg(url).output().context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
    }
}

/// The app ids the leader has, asked with the admin credential.
fn app_ids(cluster: &Cluster) -> Result<Vec<String>> {
    let apps: Value = serde_json::from_str(&cluster.cli(1, &["app", "list", "--json"])?)?;
    Ok(apps
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect())
}

/// Every task cgroup under the nodes' tasks cgroups.
fn task_cgroups(cluster: &Cluster) -> Vec<PathBuf> {
    cluster
        .nodes
        .iter()
        .filter_map(|n| n.cgroup.as_ref())
        .filter_map(|c| std::fs::read_dir(c.path().join(dcnet_tests::cluster::TASKS_CGROUP)).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect()
}

#[test]
fn nobody_without_a_credential_changes_or_reads_anything() -> Result<()> {
    let mut cluster = start_cluster()?;
    cluster.add_outsider()?;
    let result = refusals(&cluster);
    if result.is_err() {
        eprintln!("{}", cluster.log_tails(40));
    }
    result
}

fn refusals(cluster: &Cluster) -> Result<()> {
    let pki = cluster.pki_dir();
    let ca = pki.join("ca.crt");
    let marker = std::env::temp_dir().join(format!("dcnet-marker-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let evil = json!({
        "id": "/evil", "cmd": format!("id > {}; sleep 1000", marker.display()),
        "instances": 2, "cpus": 0.01, "mem": 1, "constraints": [["hostname", "UNIQUE"]],
    })
    .to_string();
    let admin = dcnet_auth::credential::token_header(&cluster.token_with(
        Role::Admin,
        "test-admin",
        Duration::from_secs(600),
    )?);
    let reader = dcnet_auth::credential::token_header(&cluster.token_with(
        Role::Read,
        "test-reader",
        Duration::from_secs(600),
    )?);

    // A task's network namespace: run something to have one.
    let sleeper = json!({"id": "/sleeper", "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 1,
                         "networks": [{"mode": "container", "name": "dcos"}]});
    let file = std::env::temp_dir().join(format!("dcnet-sleeper-{}.json", std::process::id()));
    std::fs::write(&file, sleeper.to_string())?;
    cluster.cli(1, &["app", "add", file.to_str().unwrap_or_default()])?;
    let _ = std::fs::remove_file(&file);
    let task_ns = wait_until("the sleeper's namespace", Duration::from_secs(30), || {
        let tasks: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        Ok(tasks
            .iter()
            .find(|t| t.status.app_id == "/sleeper" && t.status.state == TaskState::TaskRunning)
            .map(|t| {
                let uuid = t.status.task_id.rsplit('.').next().unwrap_or_default();
                format!("{}{}", cluster.task_netns_prefix(), uuid.replace('-', ""))
            }))
    })?;

    let outsider = cluster
        .outsider()
        .context("the outsider namespace")?
        .name()
        .to_owned();
    let other_node = cluster.nodes[2].netns.name().to_owned();
    let positions = [
        ("an outsider on the underlay", outsider.as_str()),
        ("another node", other_node.as_str()),
        ("a task's namespace", task_ns.as_str()),
    ];
    for (who, ns) in positions {
        let curl = Curl {
            ns,
            nobody: false,
            ca: Some(&ca),
        };
        for (method, path, body) in [
            ("POST", "/v2/apps", Some(evil.as_str())),
            ("PUT", "/v2/apps/evil", Some(evil.as_str())),
            ("DELETE", "/v2/apps/sleeper", None),
            ("GET", "/v2/apps", None),
            ("GET", "/v2/tasks", None),
            (
                "POST",
                "/v1/auth/tokens",
                Some(r#"{"subject":"me","role":"admin"}"#),
            ),
        ] {
            let (status, text) = curl.call(method, &format!("{SCHEDULER}{path}"), None, body)?;
            assert_eq!(
                status, 401,
                "{who}: {method} {path} without a credential: {text}"
            );
            assert!(text.contains("needs a credential"), "{who}: {text}");
        }
        // A read credential reads and may not write.
        let (status, text) =
            curl.call("GET", &format!("{SCHEDULER}/v2/apps"), Some(&reader), None)?;
        assert_eq!(status, 200, "{who}: read GET: {text}");
        let (status, text) = curl.call(
            "POST",
            &format!("{SCHEDULER}/v2/apps"),
            Some(&reader),
            Some(&evil),
        )?;
        assert_eq!(status, 403, "{who}: read POST: {text}");
        assert!(text.contains("admin role"), "{text}");
        // Plain HTTP to the TLS port gets no API.
        let (status, _) = Curl { ca: None, ..curl }.call(
            "GET",
            "http://10.200.0.1:8080/v2/apps",
            Some(&reader),
            None,
        )?;
        assert_ne!(status, 200, "{who}: plain HTTP answered");
        // The liveness check stays open.
        let (status, text) = curl.call("GET", &format!("{SCHEDULER}/ping"), None, None)?;
        assert_eq!((status, text.trim()), (200, "pong"), "{who}");
    }

    // A local user who is not root, on a node, through the agent's API.
    let node2 = cluster.nodes[1].netns.name().to_owned();
    let local = Curl {
        ns: &node2,
        nobody: true,
        ca: None,
    };
    for (method, path, body) in [
        ("POST", "/v2/apps", Some(evil.as_str())),
        ("PUT", "/v1/kv/owned", Some("x")),
        ("DELETE", "/v1/kv/owned", None),
        (
            "POST",
            "/v1/overlay/attach",
            Some(r#"{"container_id":"x","netns":"x","network":"dcos"}"#),
        ),
        ("GET", "/v1/tasks", None),
        ("GET", "/v1/kv", None),
        ("GET", "/metrics", None),
    ] {
        let (status, text) = local.call(method, &format!("{AGENT_API}{path}"), None, body)?;
        assert_eq!(status, 401, "local nobody: {method} {path}: {text}");
    }
    let (status, _) = local.call("GET", &format!("{AGENT_API}/v1/version"), None, None)?;
    assert_eq!(status, 200, "the version stays open");
    // The CLI as that user says what it looked for.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node2,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args([
            "env",
            "-u",
            "DCNET_CREDENTIALS",
            "-u",
            "DCNET_TOKEN",
            "HOME=/nonexistent",
        ])
        .arg(cluster.dcnet())
        .args(["app", "list"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no credential was sent")
            && stderr.contains("/nonexistent/.config/dcnet/credentials"),
        "{stderr}"
    );

    // Tokens that must not pass, each with its reason, at the agent and at the scheduler.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let signer = dcnet_auth::PkiDir::new(&pki).signer()?;
    let (expired, _) = signer.issue("old", Role::Admin, Duration::from_secs(3600), now - 7200)?;
    let other = tempfile::tempdir()?;
    let other_pki = dcnet_auth::PkiDir::new(other.path());
    other_pki.init("another")?;
    let (foreign, _) =
        other_pki
            .signer()?
            .issue("mallory", Role::Admin, Duration::from_secs(600), now)?;
    let ours = admin.trim_start_matches("token=");
    let forged = format!(
        "{}.{}",
        ours.split('.').next().unwrap_or_default(),
        foreign.split_once('.').map_or("", |(_, rest)| rest)
    );
    let node2_root = Curl {
        ns: &node2,
        nobody: false,
        ca: Some(&ca),
    };
    for (what, header, reason, words) in [
        ("expired", format!("token={expired}"), "expired", "expired"),
        (
            "another cluster's",
            format!("token={foreign}"),
            "unknown_key",
            "does not know",
        ),
        (
            "forged",
            format!("token={forged}"),
            "bad_signature",
            "signature",
        ),
        (
            "malformed",
            "token=abc".to_owned(),
            "malformed",
            "not a JWT",
        ),
        (
            "unknown scheme",
            "Digest x".to_owned(),
            "malformed",
            "unknown Authorization scheme",
        ),
    ] {
        for url in [
            format!("{AGENT_API}/v1/nodes"),
            format!("{SCHEDULER}/v2/apps"),
        ] {
            let (status, text) = node2_root.call("GET", &url, Some(&header), None)?;
            assert_eq!(status, 401, "{what} token at {url}: {text}");
            let body: Value = serde_json::from_str(&text)?;
            assert_eq!(body["reason"], reason, "{what}: {text}");
            assert!(text.contains(words), "{what}: {text}");
        }
    }

    // A token issued and revoked through the CLI: refused everywhere once the set spreads.
    let issued = cluster.cli(
        1,
        &[
            "auth",
            "token",
            "create",
            "--subject",
            "ci",
            "--role",
            "admin",
            "--ttl",
            "1h",
        ],
    )?;
    let temporary = format!("token={}", issued.trim());
    let (status, _) = node2_root.call(
        "GET",
        &format!("{AGENT_API}/v1/nodes"),
        Some(&temporary),
        None,
    )?;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&cluster.cli(1, &["auth", "token", "list", "--json"])?)?;
    let id = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["subject"] == "ci")
        .and_then(|t| t["id"].as_str())
        .context("the issued token is listed")?
        .to_owned();
    cluster.cli(1, &["auth", "token", "revoke", &id])?;
    let node3 = Curl {
        ns: cluster.nodes[2].netns.name(),
        nobody: false,
        ca: Some(&ca),
    };
    wait_until(
        "node 3 to refuse the revoked token",
        Duration::from_secs(15),
        || {
            let (status, text) = node3.call(
                "GET",
                &format!("{AGENT_API}/v1/nodes"),
                Some(&temporary),
                None,
            )?;
            Ok((status == 401 && text.contains("revoked")).then_some(()))
        },
    )?;
    let (status, text) = node3.call(
        "GET",
        &format!("{SCHEDULER}/v2/apps"),
        Some(&temporary),
        None,
    )?;
    assert_eq!(status, 401, "{text}");

    // HTTP basic, as Marathon's --http_credentials: a read user reads, writes nothing.
    let pw_dir = tempfile::tempdir()?;
    let pw = pw_dir.path().join("pw");
    std::fs::write(&pw, "a long enough password\n")?;
    cluster.cli(
        1,
        &[
            "auth",
            "user",
            "set",
            "viewer",
            "--role",
            "read",
            "--password-file",
            pw.to_str().unwrap_or_default(),
        ],
    )?;
    let basic = dcnet_auth::credential::basic_header("viewer", "a long enough password");
    wait_until(
        "the user to be known on node 3",
        Duration::from_secs(15),
        || {
            let (status, _) =
                node3.call("GET", &format!("{AGENT_API}/v1/nodes"), Some(&basic), None)?;
            Ok((status == 200).then_some(()))
        },
    )?;
    let (status, _) = node3.call("GET", &format!("{SCHEDULER}/v2/apps"), Some(&basic), None)?;
    assert_eq!(status, 200);
    let (status, _) = node3.call(
        "POST",
        &format!("{SCHEDULER}/v2/apps"),
        Some(&basic),
        Some(&evil),
    )?;
    assert_eq!(status, 403);
    let wrong = dcnet_auth::credential::basic_header("viewer", "not the password at all");
    let (status, _) = node3.call("GET", &format!("{SCHEDULER}/v2/apps"), Some(&wrong), None)?;
    assert_eq!(status, 401);

    // With the admin credential the same call works: the refusals above were not for want of
    // a working pipeline. A harmless app runs; the evil one never did.
    let outsider_curl = Curl {
        ns: &outsider,
        nobody: false,
        ca: Some(&ca),
    };
    let harmless = json!({"id": "/harmless", "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 1});
    let (status, text) = outsider_curl.call(
        "POST",
        &format!("{SCHEDULER}/v2/apps"),
        Some(&admin),
        Some(&harmless.to_string()),
    )?;
    assert_eq!(status, 201, "{text}");
    wait_until("the harmless app to run", Duration::from_secs(30), || {
        let tasks: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        Ok(tasks
            .iter()
            .any(|t| t.status.app_id == "/harmless" && t.status.state == TaskState::TaskRunning)
            .then_some(()))
    })?;
    assert_eq!(app_ids(cluster)?, vec!["/harmless", "/sleeper"]);
    assert!(
        !marker.exists(),
        "the refused app ran: {}",
        marker.display()
    );
    let cgroups = task_cgroups(cluster);
    assert_eq!(
        cgroups.len(),
        2,
        "only the two accepted tasks have cgroups: {cgroups:?}"
    );
    assert!(
        cgroups
            .iter()
            .all(|c| !c.display().to_string().contains("evil"))
    );

    // Every refusal was counted where it happened, by route and reason.
    let metrics = cluster.get_text(0, "/metrics")?;
    let count = |needle: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("dcnet_http_refused_total") && l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert!(
        count(r#"api="scheduler",endpoint="/v2/apps",reason="missing""#) >= 6,
        "{metrics}"
    );
    assert!(count(r#"reason="forbidden""#) >= 3, "{metrics}");
    let metrics2 = cluster.get_text(1, "/metrics")?;
    assert!(
        metrics2.contains(r#"dcnet_http_refused_total{api="agent",endpoint="/v1/overlay/attach",reason="missing"} 1"#),
        "{metrics2}"
    );
    let log = std::fs::read_to_string(&cluster.nodes[0].log_path)?;
    assert!(
        log.contains("request refused") && log.contains(&OUTSIDER_ADDRESS.to_string()),
        "refusals are logged with the peer's address"
    );
    Ok(())
}

/// A probe run as a task: tries each target and writes what its sockets said to
/// `probe.json` in its sandbox, every 2 s (the VIP's backends may come later).
const PROBE: &str = r#"
import json, os, socket, time
targets = json.loads(os.environ["TARGETS"])
while True:
    out = {"uid": os.getuid(), "cwd": os.getcwd()}
    try:
        out["state_dir"] = sorted(os.listdir(os.environ["STATE_DIR"]))
        out["tasks_dir"] = sorted(os.listdir(os.path.join(os.environ["STATE_DIR"], "tasks")))
    except OSError as e:
        out["state_dir"] = "errno %d" % e.errno
    for name, (kind, host, port) in targets.items():
        try:
            if kind == "tcp":
                s = socket.create_connection((host, port), timeout=2)
                s.close()
                out[name] = "connected"
            elif kind == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.sendto(b"x", (host, port))
                s.close()
                out[name] = "sent"
            elif kind == "bind":
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("0.0.0.0", port))
                s.close()
                out[name] = "bound"
        except socket.timeout:
            out[name] = "timeout"
        except OSError as e:
            out[name] = "errno %d" % e.errno
    with open("probe.json.tmp", "w") as f:
        json.dump(out, f)
    os.rename("probe.json.tmp", "probe.json")
    time.sleep(2)
"#;

/// A probe app on `network` (overlay `dcos`, or the host) pinned to node 2, run as `user`
/// (the launcher's default, nobody, if `None`) whose uid is `uid`.
fn probe_app(
    id: &str,
    overlay: bool,
    targets: &Value,
    state_dir: &Path,
    user: Option<&str>,
    uid: u32,
) -> Value {
    let mut app = json!({
        "id": id,
        "cmd": "exec python3 -c \"$PROBE\"",
        "cpus": 0.01, "mem": 16,
        "env": {"PROBE": PROBE, "TARGETS": targets.to_string(),
                "STATE_DIR": state_dir.display().to_string(), "EXPECTED_UID": uid.to_string()},
        "constraints": [["hostname", "IS", "node-2"]],
        // The health check is the app's code too: it runs as the task does.
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test \"$(id -u)\" = \"$EXPECTED_UID\" && test -f probe.json"},
                          "gracePeriodSeconds": 30, "intervalSeconds": 1, "maxConsecutiveFailures": 60}],
    });
    if overlay {
        app["networks"] = json!([{"mode": "container", "name": "dcos"}]);
    }
    if let Some(user) = user {
        app["user"] = json!(user);
    }
    app
}

/// The probe of task `app` on node 2, once `ready` holds for it.
fn probe_result(
    cluster: &Cluster,
    app: &str,
    ready: impl Fn(&Value) -> bool,
) -> Result<(TaskRow, Value)> {
    wait_until(
        &format!("the probe of {app}"),
        Duration::from_secs(60),
        || {
            let tasks: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
            let Some(task) = tasks.into_iter().find(|t| t.status.app_id == app) else {
                return Ok(None);
            };
            let file = cluster.nodes[1]
                .state_dir
                .join("tasks")
                .join(&task.status.task_id)
                .join("probe.json");
            let Ok(text) = std::fs::read_to_string(&file) else {
                return Ok(None);
            };
            let probe: Value = serde_json::from_str(&text)?;
            Ok(ready(&probe).then_some((task, probe)))
        },
    )
}

/// A TCP connect, run with `python3 -c` from a namespace as root outside the tasks' cgroup.
const TRY_TCP: &str = r#"
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close(); print("connected")
except OSError as e:
    print("errno %d" % e.errno)
"#;

#[test]
fn tasks_run_as_their_user_and_never_reach_the_control_plane() -> Result<()> {
    let mut cluster = start_cluster()?;
    let result = confinement(&mut cluster);
    if result.is_err() {
        eprintln!("{}", cluster.log_tails(40));
    }
    result
}

fn confinement(cluster: &mut Cluster) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let add = |app: &Value| -> Result<String> {
        let path = dir.path().join("app.json");
        std::fs::write(&path, app.to_string())?;
        cluster.cli(1, &["app", "add", path.to_str().unwrap_or_default()])
    };

    // A user the nodes do not have is refused at the door, with its path.
    let err = add(&json!({"id": "/who", "cmd": "true", "user": "no-such-user-anywhere"}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(422)") && err.contains("/user") && err.contains("no-such-user-anywhere"),
        "{err}"
    );

    // A web server on port 80 of its own namespace, as nobody, behind a VIP.
    add(&json!({
        "id": "/web", "cmd": "exec python3 -m http.server $PORT0", "cpus": 0.01, "mem": 16,
        "networks": [{"mode": "container", "name": "dcos"}],
        "container": {"type": "MESOS", "portMappings": [
            {"containerPort": 80, "name": "http", "labels": {"VIP_0": "/web:80"}}]},
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0,
                          "gracePeriodSeconds": 15, "intervalSeconds": 1, "maxConsecutiveFailures": 3}],
        "constraints": [["hostname", "IS", "node-3"]],
    }))?;
    let web = wait_until("web to be healthy", Duration::from_secs(60), || {
        let tasks: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        Ok(tasks
            .into_iter()
            .find(|t| t.status.app_id == "/web" && t.status.healthy == Some(true)))
    })?;
    let web_ip = web.status.ip.context("web has an address")?.to_string();

    // From a task on the overlay: the masters' and nodes' control plane is out of reach;
    // DNS, another task and a VIP are not.
    let state_dir = &cluster.nodes[1].state_dir;
    let targets = json!({
        "scheduler": ["tcp", "10.200.0.1", 8080],
        "gossip_master": ["udp", "10.200.0.1", 62501],
        "gossip_node2": ["udp", "10.200.0.2", 62501],
        "gossip_node3": ["udp", "10.200.0.3", 62501],
        "dns_master": ["tcp", "10.200.0.1", 53],
        "task": ["tcp", web_ip, 80],
        "vip": ["tcp", "web.marathon.l4lb.thisdcos.directory", 80],
        "low_port": ["bind", "", 81],
    });
    add(&probe_app("/probe", true, &targets, state_dir, None, 65534))?;
    let (task, probe) = probe_result(cluster, "/probe", |p| p["vip"] == "connected")?;
    let expect = [
        ("scheduler", "errno 111"),
        ("gossip_master", "errno 1"),
        ("gossip_node2", "errno 1"),
        ("gossip_node3", "errno 1"),
        ("dns_master", "connected"),
        ("task", "connected"),
        ("vip", "connected"),
        ("low_port", "bound"),
    ];
    for (name, want) in expect {
        assert_eq!(probe[name], want, "{name} from an overlay task: {probe}");
    }
    assert_eq!(probe["uid"], 65534, "runs as nobody: {probe}");
    assert_eq!(
        probe["state_dir"],
        json!(["tasks"]),
        "the state directory is hidden: {probe}"
    );
    assert_eq!(
        probe["tasks_dir"],
        json!([task.status.task_id]),
        "only its own sandbox: {probe}"
    );
    // The same namespace outside the tasks' cgroup reaches the scheduler: the guard, not the
    // network, refused the task.
    let uuid = task
        .status
        .task_id
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .replace('-', "");
    let task_ns = format!("{}{uuid}", cluster.task_netns_prefix());
    let reach = Command::new("ip")
        .args([
            "netns",
            "exec",
            &task_ns,
            "python3",
            "-c",
            TRY_TCP,
            "10.200.0.1",
            "8080",
        ])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&reach.stdout).trim(), "connected");

    // On the host network: the agent's API on loopback and the scheduler are out of reach,
    // the node's DNS is not.
    let host_targets = json!({
        "agent_api": ["tcp", "127.0.0.1", 62080],
        "agent_api_address": ["tcp", "10.200.0.2", 62080],
        "scheduler": ["tcp", "10.200.0.1", 8080],
        "gossip_own": ["udp", "127.0.0.1", 62501],
        "dns": ["tcp", "127.0.0.1", 53],
    });
    // This one names its user.
    let daemon = nix::unistd::User::from_name("daemon")?
        .context("a user `daemon` on this machine")?
        .uid
        .as_raw();
    add(&probe_app(
        "/hostprobe",
        false,
        &host_targets,
        state_dir,
        Some("daemon"),
        daemon,
    ))?;
    let (_, probe) = probe_result(cluster, "/hostprobe", |p| p.get("dns").is_some())?;
    assert_eq!(probe["uid"], daemon, "runs as its app's user: {probe}");
    for (name, want) in [
        ("agent_api", "errno 111"),
        // Nothing listens there (the API is on loopback): refused either way.
        ("agent_api_address", "errno 111"),
        ("scheduler", "errno 111"),
        ("gossip_own", "errno 1"),
        ("dns", "connected"),
    ] {
        assert_eq!(
            probe[name], want,
            "{name} from a host-network task: {probe}"
        );
    }
    let node2 = cluster.nodes[1].netns.name();
    let reach = Command::new("ip")
        .args([
            "netns",
            "exec",
            node2,
            "python3",
            "-c",
            TRY_TCP,
            "127.0.0.1",
            "62080",
        ])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&reach.stdout).trim(),
        "connected",
        "the API listens"
    );

    // The guard counted what it refused.
    let metrics = cluster.get_text(1, "/metrics")?;
    let counted = |event: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with("dcnet_guard_refused_total") && l.contains(event))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(counted("connect_denied") >= 2, "{metrics}");
    assert!(counted("send_denied") >= 3, "{metrics}");

    // The guard outlives the agent (tasks do): with node 2's agent killed, its tasks are
    // still refused, and a restarted agent takes over without a second set of hooks.
    let sandbox = cluster.nodes[1]
        .state_dir
        .join("tasks")
        .join(&task.status.task_id);
    let cgroup = cluster.nodes[1]
        .cgroup
        .as_ref()
        .context("node 2's cgroup")?
        .path()
        .join(dcnet_tests::cluster::TASKS_CGROUP);
    cluster.stop_agent(1, nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    let killed = std::time::SystemTime::now();
    let fresh = wait_until(
        "a probe made with no agent running",
        Duration::from_secs(15),
        || {
            let made = std::fs::metadata(sandbox.join("probe.json"))?.modified()?;
            if made <= killed + Duration::from_millis(2100) {
                return Ok(None);
            }
            let probe: Value =
                serde_json::from_str(&std::fs::read_to_string(sandbox.join("probe.json"))?)?;
            Ok(Some(probe))
        },
    )?;
    assert_eq!(
        fresh["scheduler"], "errno 111",
        "with the agent dead: {fresh}"
    );
    assert_eq!(
        fresh["gossip_master"], "errno 1",
        "with the agent dead: {fresh}"
    );
    cluster.start_agent(1)?;
    let attached = |name: &str| -> Result<usize> {
        let out = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(&cgroup)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).matches(name).count())
    };
    wait_until(
        "one guard on the tasks' cgroup after the restart",
        Duration::from_secs(20),
        || {
            let healthy = cluster.get::<Vec<TaskRow>>(1, "/v1/tasks").is_ok();
            Ok(
                (healthy && attached("guard_connect4")? == 1 && attached("guard_sendmsg6")? == 1)
                    .then_some(()),
            )
        },
    )?;

    // Their COMMAND health checks, run as the tasks run, pass.
    wait_until("the probes to be healthy", Duration::from_secs(30), || {
        let tasks: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        let healthy = |app: &str| {
            tasks
                .iter()
                .any(|t| t.status.app_id == app && t.status.healthy == Some(true))
        };
        Ok((healthy("/probe") && healthy("/hostprobe")).then_some(()))
    })?;

    Ok(())
}

#[test]
fn an_insecure_cluster_says_so_and_serves_without_credentials() -> Result<()> {
    let mut options = ClusterOptions::nodes(1);
    options.insecure = true;
    options.nodes[0].roles = vec!["master".into(), "agent".into()];
    let cluster = Cluster::start(options)?;
    let ns = cluster.nodes[0].netns.name().to_owned();
    let curl = Curl {
        ns: &ns,
        nobody: true,
        ca: None,
    };
    wait_until("the API", Duration::from_secs(20), || {
        let (status, _) = curl.call("GET", &format!("{AGENT_API}/v1/nodes"), None, None)?;
        Ok((status == 200).then_some(()))
    })?;
    wait_until(
        "the insecure scheduler to answer",
        Duration::from_secs(30),
        || {
            let (status, text) = curl.call("GET", "http://10.200.0.1:8080/v2/apps", None, None)?;
            match status {
                200 => Ok(Some(())),
                503 => Ok(None),
                _ => bail!("the insecure scheduler answered {status}: {text}"),
            }
        },
    )?;
    let log = std::fs::read_to_string(&cluster.nodes[0].log_path)?;
    assert!(log.contains("insecure = true"), "a warning at start");
    Ok(())
}
