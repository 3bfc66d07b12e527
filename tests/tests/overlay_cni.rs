//! `dcnet-cni` as a container runtime runs it: inside the node's namespace, configuration on
//! stdin, `CNI_*` variables, result or error JSON on stdout.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use dcnet_tests::clients::Cnitool;
use dcnet_tests::cluster::{in_netns, workspace_binary};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, TestNamespace, wait_until};
use serde_json::{Value, json};

const CONF: &str = r#"{"cniVersion":"1.0.0","name":"dcos","type":"dcnet-cni"}"#;

/// What is wrong, the configuration, the environment, and the CNI error code expected.
type ErrorCase<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u64);

struct Cni<'a> {
    cluster: &'a Cluster,
}

impl Cni<'_> {
    /// Runs the plugin in node 1's namespace; returns (exit success, stdout JSON). A
    /// configuration that names no credential file gets the cluster's admin one.
    fn run(&self, conf: &str, env: &[(&str, &str)]) -> Result<(bool, Value)> {
        let conf = match serde_json::from_str::<Value>(conf) {
            Ok(Value::Object(mut map)) if !map.contains_key("credentials") => {
                let path = self.cluster.credentials_path();
                map.insert("credentials".into(), path.display().to_string().into());
                Value::Object(map).to_string()
            }
            _ => conf.to_owned(),
        };
        let conf = conf.as_str();
        let plugin = workspace_binary("dcnet-cni", "DCNET_CNI_BIN", "dcnet-cni")?;
        let mut command = Command::new(plugin);
        command
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        in_netns(&mut command, &self.cluster.nodes[0].netns, true);
        let mut child = command.spawn().context("starting dcnet-cni")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(conf.as_bytes())?;
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("stdout is not JSON: {text:?}"))?
        };
        Ok((out.status.success(), json))
    }
}

fn env<'a>(command: &'a str, id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

/// Names of node 1's links (states and bridge MACs change with ports; names are what counts).
fn host_links(cluster: &Cluster) -> Result<Vec<String>> {
    let ip = std::path::Path::new("/usr/sbin/ip");
    let out = cluster.run_in(0, ip, &["-o", "link", "show"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
        .collect())
}

fn containers(cluster: &Cluster) -> Result<u64> {
    let s: Value = cluster.get(0, "/v1/overlay")?;
    Ok(s["networks"][0]["containers"].as_u64().unwrap_or(0))
}

#[test]
fn cni_add_check_del_version_and_errors() -> Result<()> {
    let mut options = ClusterOptions::nodes(1);
    options.nodes[0] = NodeSpec {
        extra_config: "\n[overlay]\nenabled = true\nlease_settle = \"500ms\"\n".into(),
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options)?;
    wait_until("the overlay lease", Duration::from_secs(20), || {
        let s: Value = cluster.get(0, "/v1/overlay")?;
        Ok((s["networks"][0]["lease"] == "held").then_some(()))
    })?;
    let cni = Cni { cluster: &cluster };
    let ns = TestNamespace::create("cni")?;
    let netns_path = format!("/run/netns/{}", ns.netns().name());
    let id = format!("cni-{}", ns.netns().name());

    // VERSION
    let (ok, v) = cni.run(r#"{"cniVersion":"1.0.0"}"#, &[("CNI_COMMAND", "VERSION")])?;
    assert!(ok);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|s| s.contains(&Value::from("1.0.0")))
    );

    // A credential that may only read: the agent refuses to attach with it.
    let reader_dir = tempfile::tempdir()?;
    let reader = reader_dir.path().join("read-only");
    dcnet_auth::client::write(
        &reader,
        &dcnet_auth::client::CredentialFile {
            token: Some(cluster.token_with(
                dcnet_auth::Role::Read,
                "cni-reader",
                Duration::from_secs(600),
            )?),
            ..Default::default()
        },
    )?;

    // Bad requests: the error object with its code, and nothing left behind.
    let before_links = host_links(&cluster)?;
    let before = containers(&cluster)?;
    let add = env("ADD", &id, &netns_path);
    let cases: Vec<ErrorCase> = vec![
        ("not JSON", "{".into(), add.clone(), 6),
        ("unsupported version", r#"{"cniVersion":"9.0.0","name":"dcos","type":"dcnet-cni"}"#.into(), add.clone(), 1),
        ("no name", r#"{"cniVersion":"1.0.0","type":"dcnet-cni"}"#.into(), add.clone(), 7),
        ("unknown overlay", r#"{"cniVersion":"1.0.0","name":"nope","type":"dcnet-cni"}"#.into(), add.clone(), 7),
        ("no CNI_CONTAINERID", CONF.into(), vec![("CNI_COMMAND", "ADD"), ("CNI_NETNS", &netns_path), ("CNI_IFNAME", "eth0")], 4),
        ("no CNI_COMMAND", CONF.into(), add[1..].to_vec(), 4),
        ("missing namespace", CONF.into(), env("ADD", &id, "/run/netns/dcn-does-not-exist"), 3),
        ("bad interface name", CONF.into(), vec![("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", &id), ("CNI_NETNS", &netns_path), ("CNI_IFNAME", "a/b")], 7),
        ("agent unreachable", r#"{"cniVersion":"1.0.0","name":"dcos","type":"dcnet-cni","agent":"http://127.0.0.1:1"}"#.into(), add.clone(), 11),
        ("no credential file", r#"{"cniVersion":"1.0.0","name":"dcos","type":"dcnet-cni","credentials":"/nonexistent/credentials"}"#.into(), add.clone(), 7),
        ("a read-only credential", format!(r#"{{"cniVersion":"1.0.0","name":"dcos","type":"dcnet-cni","credentials":"{}"}}"#, reader.display()), add.clone(), 7),
    ];
    for (what, conf, vars, code) in &cases {
        let (ok, err) = cni.run(conf, vars)?;
        assert!(!ok, "{what}: must fail");
        assert_eq!(err["code"], *code, "{what}: {err}");
        assert!(
            err["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {err}"
        );
        assert!(err.get("cniVersion").is_some(), "{what}: {err}");
    }
    assert_eq!(host_links(&cluster)?, before_links, "no link left behind");
    assert_eq!(containers(&cluster)?, before, "no address left allocated");
    let inside = ns.run("ip", &["-o", "link", "show"])?;
    assert!(!String::from_utf8_lossy(&inside.stdout).contains("eth0"));

    // ADD
    let (ok, result) = cni.run(CONF, &add)?;
    assert!(ok, "{result}");
    assert_eq!(result["cniVersion"], "1.0.0");
    let address = result["ips"][0]["address"]
        .as_str()
        .context("ips[0].address")?
        .to_owned();
    assert!(address.ends_with("/24"), "{result}");
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["sandbox"], netns_path.as_str());
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    let inside = ns.run("ip", &["-o", "-4", "addr", "show", "eth0"])?;
    assert!(String::from_utf8_lossy(&inside.stdout).contains(&address));
    let gateway = result["ips"][0]["gateway"].as_str().context("gateway")?;
    let ping = ns.run("ping", &["-c", "1", "-W", "2", gateway])?;
    assert!(ping.status.success(), "the container reaches its gateway");

    // A second ADD of the same container and interface is refused, the first stays intact.
    let (ok, err) = cni.run(CONF, &add)?;
    assert!(!ok);
    assert_eq!(err["code"], 7, "{err}");

    // CHECK against the result, and against a wrong one.
    let with_prev = |prev: &Value| {
        let mut conf: Value = serde_json::from_str(CONF).expect("literal");
        conf["prevResult"] = prev.clone();
        conf.to_string()
    };
    let (ok, out) = cni.run(&with_prev(&result), &env("CHECK", &id, &netns_path))?;
    assert!(ok, "{out}");
    let mut wrong = result.clone();
    wrong["ips"][0]["address"] = "9.9.9.9/24".into();
    let (ok, err) = cni.run(&with_prev(&wrong), &env("CHECK", &id, &netns_path))?;
    assert!(!ok);
    assert_eq!(err["code"], 999, "{err}");

    // DEL removes everything; a second DEL (or one without a namespace) succeeds too.
    let (ok, out) = cni.run(CONF, &env("DEL", &id, &netns_path))?;
    assert!(ok, "{out}");
    assert_eq!(
        host_links(&cluster)?,
        before_links,
        "the host side of the veth is gone"
    );
    assert_eq!(containers(&cluster)?, before, "the address is free again");
    let (ok, out) = cni.run(CONF, &env("DEL", &id, ""))?;
    assert!(ok, "{out}");
    let (ok, err) = cni.run(&with_prev(&result), &env("CHECK", &id, &netns_path))?;
    assert!(!ok);
    assert_eq!(err["code"], 3, "{err}");
    Ok(())
}

/// The default route of a namespace: `ip -4 route show default` inside it.
fn default_route(ns: &TestNamespace) -> Result<String> {
    let out = ns.run("ip", &["-4", "route", "show", "default"])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// CNI 1.1 and several interfaces: STATUS, 1.1.0 and 0.4.0 results, a second interface that
/// leaves the first one's default route alone (also when it goes), CHECK of the route, and GC
/// of the plugin's own attachments only.
#[test]
fn cni_1_1_status_gc_versions_and_a_second_interface() -> Result<()> {
    const CONF11: &str = r#"{"cniVersion":"1.1.0","name":"dcos","type":"dcnet-cni"}"#;
    const CONF04: &str = r#"{"cniVersion":"0.4.0","name":"dcos","type":"dcnet-cni"}"#;
    let mut options = ClusterOptions::nodes(1);
    options.nodes[0] = NodeSpec {
        extra_config: "\n[overlay]\nenabled = true\nlease_settle = \"500ms\"\n".into(),
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options)?;
    let cni = Cni { cluster: &cluster };

    // STATUS: not available until the node holds its subnet, then available.
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")];
    let (ok, err) = cni.run(
        r#"{"cniVersion":"1.1.0","name":"nope","type":"dcnet-cni"}"#,
        &status,
    )?;
    assert!(!ok);
    assert_eq!(err["code"], 50, "an unknown network: {err}");
    wait_until("STATUS to say available", Duration::from_secs(20), || {
        let (ok, out) = cni.run(CONF11, &status)?;
        Ok((ok && out.is_null()).then_some(()))
    })?;
    let (ok, err) = cni.run(
        r#"{"cniVersion":"1.1.0","name":"dcos","type":"dcnet-cni","agent":"http://127.0.0.1:1"}"#,
        &status,
    )?;
    assert!(!ok);
    assert_eq!(err["code"], 50, "the agent unreachable: {err}");

    // eth0 at 1.1.0: the default route; net1 at 0.4.0 in the same namespace: none.
    let ns = TestNamespace::create("cni11")?;
    let netns_path = format!("/run/netns/{}", ns.netns().name());
    let id = format!("cni-{}", ns.netns().name());
    let (ok, first) = cni.run(CONF11, &env("ADD", &id, &netns_path))?;
    assert!(ok, "{first}");
    assert_eq!(first["cniVersion"], "1.1.0");
    assert!(first["ips"][0].get("version").is_none(), "{first}");
    assert_eq!(first["routes"][0]["dst"], "0.0.0.0/0", "{first}");
    let gateway = first["ips"][0]["gateway"]
        .as_str()
        .context("gateway")?
        .to_owned();
    let route = default_route(&ns)?;
    assert!(
        route.contains(&format!("via {gateway} dev eth0")),
        "{route}"
    );
    let mut net1 = env("ADD", &id, &netns_path);
    net1[3] = ("CNI_IFNAME", "net1");
    let (ok, second) = cni.run(CONF04, &net1)?;
    assert!(ok, "{second}");
    assert_eq!(second["cniVersion"], "0.4.0");
    assert_eq!(
        second["ips"][0]["version"], "4",
        "0.4.0 names the IP version"
    );
    assert_eq!(second["routes"], Value::Array(vec![]), "{second}");
    assert_eq!(default_route(&ns)?, route, "eth0 keeps the default route");

    // CHECK of net1 at 0.4.0 passes; removing net1 leaves eth0's route.
    let with_prev = |conf: &str, prev: &Value| {
        let mut conf: Value = serde_json::from_str(conf).expect("literal");
        conf["prevResult"] = prev.clone();
        conf.to_string()
    };
    net1[0] = ("CNI_COMMAND", "CHECK");
    let (ok, out) = cni.run(&with_prev(CONF04, &second), &net1)?;
    assert!(ok, "{out}");
    net1[0] = ("CNI_COMMAND", "DEL");
    let (ok, out) = cni.run(CONF04, &net1)?;
    assert!(ok, "{out}");
    assert_eq!(
        default_route(&ns)?,
        route,
        "deleting net1 leaves eth0's route"
    );

    // CHECK notices eth0's default route gone.
    let check = env("CHECK", &id, &netns_path);
    let (ok, out) = cni.run(&with_prev(CONF11, &first), &check)?;
    assert!(ok, "{out}");
    let del = ns.run("ip", &["route", "del", "default"])?;
    assert!(del.status.success(), "{del:?}");
    let (ok, err) = cni.run(&with_prev(CONF11, &first), &check)?;
    assert!(!ok, "CHECK must fail without the route");
    assert!(
        err["msg"]
            .as_str()
            .is_some_and(|m| m.contains("default route")),
        "{err}"
    );

    // GC: a second CNI container, and one attached through the API (the task launcher's
    // way); GC listing the first keeps it and the API's, and detaches the second.
    let ns2 = TestNamespace::create("cni11b")?;
    let netns2 = format!("/run/netns/{}", ns2.netns().name());
    let id2 = format!("cni-{}", ns2.netns().name());
    let (ok, out) = cni.run(CONF11, &env("ADD", &id2, &netns2))?;
    assert!(ok, "{out}");
    let ns3 = TestNamespace::create("cni11c")?;
    let body = serde_json::json!({"container_id": "api-attached", "netns": ns3.netns().name()});
    let (code, text) = cluster.post(0, "/v1/overlay/attach", &body.to_string())?;
    assert_eq!(code, 200, "{text}");
    let before = containers(&cluster)?;
    let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    let keep_first = serde_json::json!({
        "cniVersion": "1.1.0", "name": "dcos", "type": "dcnet-cni",
        "cni.dev/valid-attachments": [{"containerID": id, "ifname": "eth0"}],
    });
    let (ok, out) = cni.run(&keep_first.to_string(), &gc)?;
    assert!(ok && out.is_null(), "{out}");
    assert_eq!(
        containers(&cluster)?,
        before - 1,
        "one attachment collected"
    );
    let gone = ns2.run("ip", &["-o", "link", "show", "eth0"])?;
    assert!(
        !gone.status.success(),
        "the collected container's eth0 is gone"
    );
    for kept in [&ns, &ns3] {
        let out = kept.run("ip", &["-o", "link", "show", "eth0"])?;
        assert!(out.status.success(), "kept: {out:?}");
    }
    // An empty list collects every CNI attachment of the network, and only those.
    let (ok, out) = cni.run(CONF11, &gc)?;
    assert!(ok, "{out}");
    assert_eq!(containers(&cluster)?, before - 2);
    let out = ns3.run("ip", &["-o", "link", "show", "eth0"])?;
    assert!(
        out.status.success(),
        "the API's attachment is not the plugin's to collect"
    );
    let (code, text) = cluster.post(
        0,
        "/v1/overlay/detach",
        r#"{"container_id":"api-attached"}"#,
    )?;
    assert_eq!(code, 200, "{text}");
    Ok(())
}

fn run_text(ns: &TestNamespace, program: &str, args: &[&str]) -> Result<String> {
    let out = ns.run(program, args)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// cnitool (libcni 1.2.3, the library containerd and podman use) drives dcnet-cni chained with
/// Debian's reference plugins: STATUS; ADD, CHECK and DEL at 1.0.0 on a dual-stack network
/// chained with tuning, and on dcos chained with portmap (whose CHECK in Debian's plugins
/// 1.1.1 is broken: containernetworking/plugins#819); a second interface at 1.1.0 on dcos6
/// (IPv6 only) in the same namespace, which leaves eth0's default routes alone; CHECK finding
/// a route deleted by hand; GC removing an attachment the runtime no longer knows.
#[test]
fn cnitool_drives_the_plugin_through_libcni() -> Result<()> {
    let mut options = ClusterOptions::nodes(1);
    options.nodes[0] = NodeSpec {
        extra_config: "\n[overlay]\nenabled = true\nlease_settle = \"500ms\"\n\n\
            [[overlay.networks]]\nname = \"dcos\"\n\n\
            [[overlay.networks]]\nname = \"dcos6\"\n\n\
            [[overlay.networks]]\nname = \"dual\"\nsubnet = \"172.30.0.0/16\"\nsubnet6 = \"fd01:e::/64\"\n"
            .into(),
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options)?;
    wait_until("the three networks leased", Duration::from_secs(20), || {
        let s: Value = cluster.get(0, "/v1/overlay")?;
        let held = s["networks"]
            .as_array()
            .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["lease"] == "held"));
        Ok(held.then_some(()))
    })?;
    let mut cni = Cnitool::new(&cluster, 0)?;
    let dual = cni.network(
        "dcnet-v100",
        "1.0.0",
        &[
            json!({ "type": "dcnet-cni", "network": "dual" }),
            json!({ "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.arp_ignore": "1" } }),
        ],
    )?;
    let mapped = cni.network(
        "dcnet-portmap",
        "1.0.0",
        &[
            json!({ "type": "dcnet-cni", "network": "dcos" }),
            json!({ "type": "portmap", "capabilities": { "portMappings": true }, "snat": false }),
        ],
    )?;
    let v6 = cni.network(
        "dcnet-v110",
        "1.1.0",
        &[json!({ "type": "dcnet-cni", "network": "dcos6" })],
    )?;
    let ns = TestNamespace::create("cnitool")?;
    let path = std::path::PathBuf::from(format!("/run/netns/{}", ns.netns().name()));
    let ports = json!({ "portMappings": [
        { "hostPort": 18080, "containerPort": 8080, "protocol": "tcp" }
    ] });
    let nat = |tool: &str| -> Result<String> {
        let path = std::path::Path::new("/usr/sbin").join(tool);
        let out = cluster.run_in(0, &path, &["-t", "nat", "-S"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };

    let status = cni.run("status", &v6, &path, "eth0", None)?;
    assert!(status.ok, "STATUS: {status:?}");

    // portmap gets dcnet-cni's result: its DNAT to the address on the node, gone with DEL.
    let other = TestNamespace::create("cniport")?;
    let other_path = std::path::PathBuf::from(format!("/run/netns/{}", other.netns().name()));
    let add = cni.run("add", &mapped, &other_path, "eth0", Some(&ports))?;
    assert!(add.ok, "ADD with portmap: {add:?}");
    let mapped_ip = add.json()?["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .context("address")?
        .to_owned();
    let dnat = format!("--to-destination {mapped_ip}:8080");
    assert!(nat("iptables")?.contains(&dnat), "{}", nat("iptables")?);
    let del = cni.run("del", &mapped, &other_path, "eth0", Some(&ports))?;
    assert!(del.ok, "DEL with portmap: {del:?}");
    assert!(
        !nat("iptables")?.contains(&dnat),
        "portmap's DNAT went with DEL"
    );
    assert!(!other.run("ip", &["link", "show", "eth0"])?.status.success());

    // 1.0.0, chained with tuning: both addresses and default routes, the sysctl inside.
    let add = cni.run("add", &dual, &path, "eth0", None)?;
    assert!(add.ok, "ADD: {add:?}");
    let result = add.json()?;
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let address = result["ips"][0]["address"].as_str().context("address")?;
    let address6 = result["ips"][1]["address"].as_str().context("address6")?;
    assert!(
        address.starts_with("172.30.") && address.ends_with("/24"),
        "{result}"
    );
    assert!(
        address6.starts_with("fd01:e:") && address6.ends_with("/80"),
        "{result}"
    );
    let dsts: Vec<&str> = result["routes"]
        .as_array()
        .context("routes")?
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .collect();
    assert_eq!(dsts, ["0.0.0.0/0", "::/0"], "{result}");
    assert_eq!(
        run_text(&ns, "cat", &["/proc/sys/net/ipv4/conf/eth0/arp_ignore"])?,
        "1",
        "tuning ran after dcnet-cni on its interface"
    );
    let check = cni.run("check", &dual, &path, "eth0", None)?;
    assert!(check.ok, "CHECK: {check:?}");
    let route4 = run_text(&ns, "ip", &["-4", "route", "show", "default"])?;
    let route6 = run_text(&ns, "ip", &["-6", "route", "show", "default"])?;
    assert!(
        route4.contains("dev eth0") && route6.contains("dev eth0"),
        "{route4} {route6}"
    );

    // 1.1.0, a second interface on dcos6 (IPv6 only): eth0 keeps both default routes.
    let add6 = cni.run("add", &v6, &path, "net1", None)?;
    assert!(add6.ok, "ADD net1: {add6:?}");
    let result6 = add6.json()?;
    assert_eq!(result6["cniVersion"], "1.1.0", "{result6}");
    let net1 = result6["ips"][0]["address"].as_str().context("address")?;
    assert!(
        net1.starts_with("fd01:b:") && net1.ends_with("/80"),
        "{result6}"
    );
    assert!(result6["ips"][0].get("version").is_none(), "{result6}");
    // libcni prints no empty list.
    assert!(
        result6.get("routes").is_none_or(|r| r == &json!([])),
        "net1 lists no route: {result6}"
    );
    assert_eq!(
        run_text(&ns, "ip", &["-4", "route", "show", "default"])?,
        route4
    );
    assert_eq!(
        run_text(&ns, "ip", &["-6", "route", "show", "default"])?,
        route6
    );
    let gateway6 = result6["ips"][0]["gateway"].as_str().context("gateway")?;
    let ping = ns.run("ping", &["-c", "1", "-W", "2", gateway6])?;
    assert!(ping.status.success(), "dcos6's gateway answers on net1");
    let check6 = cni.run("check", &v6, &path, "net1", None)?;
    assert!(check6.ok, "CHECK net1: {check6:?}");

    // CHECK notices eth0's IPv6 default route deleted by hand.
    assert!(
        ns.run("ip", &["-6", "route", "del", "default"])?
            .status
            .success()
    );
    let broken = cni.run("check", &dual, &path, "eth0", None)?;
    assert!(
        !broken.ok && broken.stderr.contains("default route"),
        "CHECK must find the missing route: {broken:?}"
    );

    let del6 = cni.run("del", &v6, &path, "net1", None)?;
    assert!(del6.ok, "DEL net1: {del6:?}");
    assert!(!ns.run("ip", &["link", "show", "net1"])?.status.success());
    assert_eq!(
        run_text(&ns, "ip", &["-4", "route", "show", "default"])?,
        route4
    );

    // GC: an attachment libcni no longer has in its cache (the runtime forgot it) goes.
    let again = cni.run("add", &v6, &path, "net1", None)?;
    assert!(again.ok, "{again:?}");
    for entry in std::fs::read_dir("/var/lib/cni/results")?.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{v6}-"))
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    let gc = cni.run("gc", &v6, &path, "net1", None)?;
    assert!(gc.ok, "GC: {gc:?}");
    assert!(
        !ns.run("ip", &["link", "show", "net1"])?.status.success(),
        "GC removed the forgotten net1"
    );
    assert!(
        ns.run("ip", &["link", "show", "eth0"])?.status.success(),
        "GC of dcos6 leaves the dual network's eth0"
    );

    let del = cni.run("del", &dual, &path, "eth0", None)?;
    assert!(del.ok, "DEL: {del:?}");
    assert!(!ns.run("ip", &["link", "show", "eth0"])?.status.success());
    let again = cni.run("del", &dual, &path, "eth0", None)?;
    assert!(again.ok, "DEL is idempotent: {again:?}");
    Ok(())
}
