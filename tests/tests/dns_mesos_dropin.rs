//! `dcnet dns --mesos-dns-config` as a drop-in for Mesos-DNS, in a namespace of the test: a fake
//! master serves the shared fixture (its leader rewritten to the fake's loopback address), and
//! real clients ask: dig over UDP and TCP, glibc through getent, and the HTTP API. A master that
//! is down is skipped, the state is re-read from the leader another master names, a change of
//! state is applied at the next refresh, and a state that stops parsing keeps the last good
//! records served.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dcnet_tests::cluster::{dcnet_binary, in_netns};
use dcnet_tests::{FakeMaster, TestNamespace, wait_until};

const FIXTURE: &str = include_str!("../../dns/tests/fixtures/mesos-dns-fake-state.json");

/// The fixture, led by `leader` (IP:PORT) instead of 1.2.3.4, which nothing may ever reach.
fn state_led_by(leader: &str) -> String {
    FIXTURE.replace("master@1.2.3.4:5050", &format!("master@{leader}"))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dig(ns: &TestNamespace, args: &[&str]) -> String {
    let mut all = vec!["@127.0.0.1", "+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let out = ns
        .run("dig", &all)
        .expect("dig runs (apt install dnsutils, or scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn http(ns: &TestNamespace, path: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:8123{path}");
    ns.netns()
        .run(|| -> anyhow::Result<serde_json::Value> {
            let mut response = ureq::get(&url).call()?;
            Ok(serde_json::from_str(
                &response.body_mut().read_to_string()?,
            )?)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The HTTP status of GET `path` on the API.
fn status(ns: &TestNamespace, path: &str) -> u16 {
    let url = format!("http://127.0.0.1:8123{path}");
    ns.netns()
        .run(|| {
            ureq::get(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .map(|r| r.status().as_u16())
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

#[test]
fn drop_in_mesos_dns_serves_the_fixture_to_real_clients() {
    let ns = TestNamespace::create("mesosdns").unwrap();
    // 5051 is down; 5052 answers but names 5050 as leader; 5050 leads.
    let leader = FakeMaster::start(
        ns.netns(),
        "127.0.0.1:5050".parse().unwrap(),
        state_led_by("127.0.0.1:5050"),
    )
    .unwrap();
    let follower_state =
        state_led_by("127.0.0.1:5050").replace("\"frameworks\"", "\"frameworks_of_a_follower\"");
    let follower = FakeMaster::start(
        ns.netns(),
        "127.0.0.1:5052".parse().unwrap(),
        follower_state,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Upstreams for other names: one that never answers (listed first), and Knot for example.
    let _silent = ns
        .netns()
        .run(|| std::net::UdpSocket::bind("127.0.0.3:53"))
        .unwrap()
        .unwrap();
    let _knot = dcnet_tests::knot::start(ns.netns(), dir.path(), 53).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{
          "masters": ["127.0.0.1:5051", "127.0.0.1:5052"],
          "refreshSeconds": 1,
          "listener": "127.0.0.1",
          "port": 53,
          "httpport": 8123,
          "IPSources": ["netinfo", "docker", "mesos", "host"],
          "externalOn": true,
          "resolvers": ["127.0.0.3", "127.0.0.2"],
          "timeout": 2,
          "someKeyFromAnotherVersion": true
        }"#,
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("dns.log")).unwrap();
    let mut command = Command::new(dcnet_binary().unwrap());
    command
        .args(["dns", "--mesos-dns-config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log);
    in_netns(&mut command, ns.netns(), true);
    let _dns = Running(command.spawn().unwrap());
    let logs = || std::fs::read_to_string(dir.path().join("dns.log")).unwrap_or_default();

    let ready = wait_until("records from the leader", Duration::from_secs(15), || {
        Ok(dig(&ns, &["+short", "liquor-store.marathon.mesos"])
            .contains("10.3.0.1")
            .then_some(()))
    });
    if let Err(e) = ready {
        panic!("{e}\n{}", logs());
    }
    assert!(
        leader.requests() > 0,
        "the state was re-read from the leader the follower named"
    );
    assert!(follower.requests() > 0);
    assert!(
        logs().contains("someKeyFromAnotherVersion"),
        "unknown keys are warned about"
    );

    // dig over UDP: A, authoritative, both addresses.
    let a = dig(&ns, &["liquor-store.marathon.mesos", "A"]);
    assert!(a.contains("status: NOERROR") && a.contains(" aa"), "{a}");
    assert!(
        a.contains("flags: qr aa rd ra;"),
        "RecurseOn (default): RA set\n{a}"
    );
    assert!(a.contains("10.3.0.1") && a.contains("10.3.0.2"), "{a}");
    // SRV with the targets' addresses as additional records.
    let srv = dig(&ns, &["_liquor-store._tcp.marathon.mesos", "SRV"]);
    assert!(
        srv.contains("liquor-store-4dfjd-0.marathon.mesos."),
        "{srv}"
    );
    assert!(
        srv.contains("ADDITIONAL SECTION") && srv.contains("10.3.0.1"),
        "{srv}"
    );
    // NXDOMAIN with the SOA in authority; the question in the client's case.
    let nx = dig(&ns, &["NoSuch.Marathon.Mesos", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("SOA") && nx.contains("ns1.mesos."),
        "{nx}"
    );
    assert!(nx.contains("NoSuch.Marathon.Mesos."), "{nx}");
    // TCP.
    let tcp = dig(&ns, &["+tcp", "+short", "leader.mesos"]);
    assert_eq!(tcp.trim(), "127.0.0.1");

    // Other names are forwarded: both upstreams asked at once, so the silent one costs nothing.
    let started = std::time::Instant::now();
    let forwarded = dig(&ns, &["www.example", "A"]);
    assert!(
        forwarded.contains("192.0.2.80") && forwarded.contains(" ra"),
        "{forwarded}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "forwarding took {:?}",
        started.elapsed()
    );
    let missing = dig(&ns, &["missing.example", "A"]);
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");

    // glibc, through a resolv.conf that points at the server (ip netns exec mounts it).
    ns.set_resolv_conf("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        .unwrap();
    let out = ns
        .exec("getent", &["hosts", "big-dog.marathon.mesos"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.3.0.1"),
        "{out:?}"
    );

    // The Mesos-DNS HTTP API.
    assert_eq!(http(&ns, "/v1/version")["Service"], "Mesos-DNS");
    assert_eq!(http(&ns, "/v1/config")["Masters"][0], "127.0.0.1:5051");
    let config = http(&ns, "/v1/config");
    for key in [
        "MesosHTTPSOn",
        "CACertFile",
        "MesosCredentials",
        "IAMConfigFile",
        "ZkDetectionTimeout",
    ] {
        assert!(config.get(key).is_some(), "{key} missing in {config}");
    }
    assert!(config["SOASerial"].as_u64().unwrap() > 0, "{config}");
    let hosts = http(&ns, "/v1/hosts/Liquor-Store.marathon.mesos");
    assert_eq!(hosts.as_array().unwrap().len(), 2, "{hosts}");
    assert_eq!(hosts[0]["host"], "liquor-store.marathon.mesos.");
    // Every address of the first IP source that has any (netinfo): two IPv4 and an IPv6.
    let mut toy: Vec<String> = http(&ns, "/v1/hosts/toy-store.ipv6-framework.mesos")
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ip"].as_str().unwrap().to_owned())
        .collect();
    toy.sort();
    assert_eq!(toy, ["12.0.1.2", "12.0.1.3", "fd01:b::1:8000:2"]);
    let aaaa = dig(&ns, &["+short", "toy-store.ipv6-framework.mesos", "AAAA"]);
    assert_eq!(aaaa.trim(), "fd01:b::1:8000:2");
    assert_eq!(
        http(&ns, "/v1/hosts/nosuch.marathon.mesos"),
        serde_json::json!([{"host": "", "ip": ""}]),
        "an unknown host is one empty record, as in Mesos-DNS"
    );
    // Per SRV record, its target's first address; `service` as asked for.
    let services = http(&ns, "/v1/services/_liquor-store._tcp.marathon.mesos");
    let services = services.as_array().unwrap();
    assert_eq!(services.len(), 4, "{services:?}");
    assert!(
        services
            .iter()
            .all(|s| s["service"] == "_liquor-store._tcp.marathon.mesos"),
        "{services:?}"
    );
    assert!(
        services.iter().any(|s| s["port"] == "443"
            && s["ip"] == "10.3.0.1"
            && s["host"] == "liquor-store-4dfjd-0.marathon.mesos."),
        "{services:?}"
    );
    let unknown = http(&ns, "/v1/services/_nothing._tcp.marathon.mesos");
    assert_eq!(
        unknown,
        serde_json::json!([{"service": "", "host": "", "ip": "", "port": ""}])
    );
    assert_eq!(status(&ns, "/v1/hosts/leader.mesos/ports"), 501);
    // Mesos-DNS's own expectations (resolver_test.go's TestHTTP), with this cluster's leader.
    assert_eq!(
        http(&ns, "/v1/services/_leader._tcp.mesos."),
        serde_json::json!([{"service": "_leader._tcp.mesos.", "host": "leader.mesos.",
                            "ip": "127.0.0.1", "port": "5050"}])
    );
    assert_eq!(
        http(&ns, "/v1/hosts/leader.mesos"),
        serde_json::json!([{"host": "leader.mesos.", "ip": "127.0.0.1"}])
    );
    assert_eq!(
        http(&ns, "/v1/version")["URL"],
        "https://github.com/mesosphere/mesos-dns"
    );
    let enumeration = http(&ns, "/v1/enumerate");
    assert!(
        enumeration["frameworks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "marathon")
    );
    let axfr = http(&ns, "/v1/axfr");
    assert!(
        axfr["Records"]["As"]["leader.mesos."][0] == "127.0.0.1",
        "{axfr}"
    );

    // The state changes, one task renamed: the next refresh applies the change, the old name
    // goes away and nothing else moves.
    let old_name = "nginx.marathon.mesos";
    let before = dig(&ns, &["+short", old_name]);
    assert!(!before.trim().is_empty(), "{before}");
    leader.set_body(
        state_led_by("127.0.0.1:5050")
            .replace("\"name\": \"nginx\"", "\"name\": \"renamed-nginx\""),
    );
    wait_until(
        "the renamed task to be answered",
        Duration::from_secs(10),
        || Ok((dig(&ns, &["+short", "renamed-nginx.marathon.mesos"]) == before).then_some(())),
    )
    .unwrap();
    assert!(dig(&ns, &[old_name]).contains("status: NXDOMAIN"));
    assert!(dig(&ns, &["+short", "liquor-store.marathon.mesos"]).contains("10.3.0.1"));
    let hosts = http(&ns, "/v1/hosts/renamed-nginx.marathon.mesos");
    assert!(!hosts.as_array().unwrap().is_empty(), "{hosts}");

    // The leader starts serving garbage: the last good records stay, and it is said so.
    leader.set_body("{ not json".into());
    wait_until(
        "a failed refresh to be logged",
        Duration::from_secs(10),
        || {
            Ok(logs()
                .contains("still serving the last good records")
                .then_some(()))
        },
    )
    .unwrap();
    assert!(dig(&ns, &["+short", "liquor-store.marathon.mesos"]).contains("10.3.0.1"));
    let metrics = ns
        .netns()
        .run(|| {
            ureq::get("http://127.0.0.1:8123/metrics")
                .call()
                .map(|mut r| r.body_mut().read_to_string())
        })
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dcnet_dns_state_refresh_failures_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Starts `dcnet dns` on `config` in `ns`, logging to `<dir>/<log>`.
fn start_dropin(ns: &TestNamespace, config: &std::path::Path, log: &std::path::Path) -> Running {
    let file = std::fs::File::create(log).unwrap();
    let mut command = Command::new(dcnet_binary().unwrap());
    command
        .args(["dns", "--mesos-dns-config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(file);
    in_netns(&mut command, ns.netns(), true);
    Running(command.spawn().unwrap())
}

#[test]
fn drop_in_reads_masters_over_https_as_a_dcos_service_account() {
    use dcnet_tests::MasterGuard;
    use dcnet_tests::pki::{TestPki, rsa_key_pair};

    let ns = TestNamespace::create("mesosdnstls").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "cluster").unwrap();
    let server = pki.server("master", "127.0.0.1".parse().unwrap()).unwrap();
    let client = pki.client("mesos-dns", "mesos-dns").unwrap();
    let (private_pem, public_pem) = rsa_key_pair(dir.path(), "account").unwrap();
    let ca_file = dir.path().join("cluster-ca.pem");
    let master = FakeMaster::start_guarded(
        ns.netns(),
        "127.0.0.1:5050".parse().unwrap(),
        state_led_by("127.0.0.1:5050"),
        MasterGuard {
            tls: Some((server.cert_pem.clone(), server.key_pem.clone())),
            client_ca: Some(std::fs::read_to_string(&ca_file).unwrap()),
            iam: Some(("dcos_mesos_dns".into(), public_pem)),
            ..MasterGuard::default()
        },
    )
    .unwrap();
    let iam_file = dir.path().join("iam.json");
    std::fs::write(
        &iam_file,
        serde_json::json!({
            "uid": "dcos_mesos_dns",
            "private_key": private_pem,
            "login_endpoint": "https://127.0.0.1:5050/acs/api/v1/auth/login",
        })
        .to_string(),
    )
    .unwrap();
    // As DC/OS configures Mesos-DNS on its masters, enumeration off.
    let config = |ca: &std::path::Path| {
        serde_json::json!({
            "masters": ["127.0.0.1:5050"],
            "refreshSeconds": 1,
            "listener": "127.0.0.1",
            "httpport": 8123,
            "externalOn": false,
            "EnumerationOn": false,
            "RecurseOn": false,
            "MesosHTTPSOn": true,
            "CACertFile": ca,
            "CertFile": client.cert_file,
            "KeyFile": client.key_file,
            "MesosAuthentication": "iam",
            "IAMConfigFile": iam_file,
        })
        .to_string()
    };
    let config_file = dir.path().join("config.json");
    std::fs::write(&config_file, config(&ca_file)).unwrap();
    let log = dir.path().join("dns.log");
    let _dns = start_dropin(&ns, &config_file, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // The default IP sources: netinfo, then the Mesos containerizer's label.
    let ready = wait_until("records over HTTPS", Duration::from_secs(15), || {
        Ok(dig(&ns, &["+short", "nginx.marathon.mesos"])
            .contains("10.3.0.3")
            .then_some(()))
    });
    if let Err(e) = ready {
        panic!("{e}\n{}", logs());
    }
    // RecurseOn off: no RA, on the fast path's answers and the general path's.
    for args in [["nginx.marathon.mesos", "A"], ["mesos", "SOA"]] {
        let answer = dig(&ns, &args);
        assert!(answer.contains("flags: qr aa rd;"), "{answer}");
    }
    // Several refreshes, one login.
    let requests = master.requests();
    wait_until("two more refreshes", Duration::from_secs(10), || {
        Ok((master.requests() >= requests + 2).then_some(()))
    })
    .unwrap();
    assert_eq!(master.logins(), 1, "{}", logs());
    assert_eq!(master.refused(), 0);
    // Mesos-DNS has no enumeration routes when it is off.
    assert_eq!(status(&ns, "/v1/enumerate"), 404);
    assert_eq!(status(&ns, "/v1/axfr"), 404);
    let shown = http(&ns, "/v1/config");
    assert_eq!(shown["MesosAuthentication"], "iam");
    assert_eq!(shown["MesosHTTPSOn"], true);

    // A CA file that is not there: the server does not start, and says which file.
    let missing = dir.path().join("no-such-ca.pem");
    let bad_config = dir.path().join("bad.json");
    std::fs::write(&bad_config, config(&missing)).unwrap();
    let bad_log = dir.path().join("bad.log");
    let mut bad = start_dropin(&ns, &bad_config, &bad_log);
    let exited = wait_until(
        "the misconfigured server to exit",
        Duration::from_secs(10),
        || Ok(bad.0.try_wait()?),
    )
    .unwrap();
    assert!(!exited.success());
    let said = std::fs::read_to_string(&bad_log).unwrap();
    assert!(said.contains("no-such-ca.pem"), "{said}");
}

#[test]
fn drop_in_follows_the_leader_zookeeper_names() {
    use dcnet_tests::zookeeper::ZooKeeper;

    let ns = TestNamespace::create("mesosdnszk").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let zk = ZooKeeper::start(ns.netns(), dir.path(), 2181).unwrap();
    // Two masters on two addresses; each state says its own master leads, and B's has a
    // task of its own, so whose state is served shows.
    let (a, b) = (
        "127.0.0.1:5050".parse().unwrap(),
        "127.0.0.2:5050".parse().unwrap(),
    );
    let _master_a = FakeMaster::start(ns.netns(), a, state_led_by("127.0.0.1:5050")).unwrap();
    let _master_b = FakeMaster::start(
        ns.netns(),
        b,
        state_led_by("127.0.0.2:5050").replace("\"name\": \"nginx\"", "\"name\": \"b-nginx\""),
    )
    .unwrap();
    let node_a = zk.register_master("/mesos", a).unwrap();
    zk.register_master("/mesos", b).unwrap();

    // A refresh far away: what changes in between comes from ZooKeeper's watch.
    let config = |path: &str, timeout: u64| {
        serde_json::json!({
            "zk": format!("zk://127.0.0.1:2181{path}"),
            "zkDetectionTimeout": timeout,
            "refreshSeconds": 600,
            "listener": "127.0.0.1",
            "httpport": 8123,
            "externalOn": false,
        })
        .to_string()
    };
    let config_file = dir.path().join("config.json");
    std::fs::write(&config_file, config("/mesos", 30)).unwrap();
    let log = dir.path().join("dns.log");
    let _dns = start_dropin(&ns, &config_file, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let short = |name: &str| dig(&ns, &["+short", name]).trim().to_owned();
    let ready = wait_until("A's records", Duration::from_secs(30), || {
        Ok((short("nginx.marathon.mesos") == "10.3.0.3").then_some(()))
    });
    if let Err(e) = ready {
        panic!("{e}\n{}", logs());
    }
    assert_eq!(short("leader.mesos"), "127.0.0.1");
    // masterN in ZooKeeper's order, the leader first.
    assert_eq!(short("master0.mesos"), "127.0.0.1");
    assert_eq!(short("master1.mesos"), "127.0.0.2");

    // A gives up leadership: B leads, and its state is read at once, not at the refresh.
    zk.delete(&node_a).unwrap();
    let moved = wait_until("B's records", Duration::from_secs(10), || {
        Ok((short("b-nginx.marathon.mesos") == "10.3.0.3").then_some(()))
    });
    if let Err(e) = moved {
        panic!("{e}\n{}", logs());
    }
    assert_eq!(short("leader.mesos"), "127.0.0.2");
    assert!(dig(&ns, &["nginx.marathon.mesos"]).contains("NXDOMAIN"));

    // Nobody registered under the path: no leader within zkDetectionTimeout, and it says so.
    let lonely = dir.path().join("lonely.json");
    std::fs::write(&lonely, config("/nobody", 2)).unwrap();
    let lonely_log = dir.path().join("lonely.log");
    let mut waiting = start_dropin(&ns, &lonely, &lonely_log);
    let exited = wait_until(
        "no leader to be given up on",
        Duration::from_secs(15),
        || Ok(waiting.0.try_wait()?),
    )
    .unwrap();
    assert!(!exited.success());
    let said = std::fs::read_to_string(&lonely_log).unwrap();
    assert!(
        said.contains("no leading Mesos master") && said.contains("zk://127.0.0.1:2181/nobody"),
        "{said}"
    );
}
