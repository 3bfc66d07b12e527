//! The `dcnet` binary as an operator meets it: version, refusal of bad configuration with a
//! message naming the file and key (exit code 2), clean shutdown on SIGTERM and SIGINT, and a
//! state directory that one agent at a time may use.

use std::process::Command;
use std::time::Duration;

use dcnet_agent::node::NodeState;
use dcnet_tests::cluster::dcnet_binary;
use dcnet_tests::{Cluster, ClusterOptions, wait_until};
use nix::sys::signal::Signal;

#[test]
fn version_is_printed() {
    let out = Command::new(dcnet_binary().unwrap())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim(), format!("dcnet {}", env!("CARGO_PKG_VERSION")));
}

/// Runs `dcnet agent --config <file with text>` and returns its exit code and stderr.
fn agent_with_config(dir: &tempfile::TempDir, text: &str) -> (Option<i32>, String) {
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(dcnet_binary().unwrap())
        .args(["agent", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    dcnet_tests::cluster::write_private(&secret, "a-cluster-secret-of-some-length\n").unwrap();
    let good = format!(
        "address = \"10.200.0.1\"\nstate_dir = \"{}\"\n[gossip]\nsecret_file = \"{}\"\n",
        dir.path().join("state").display(),
        secret.display()
    );
    let unreadable = dir.path().join("secret-dir");
    std::fs::create_dir(&unreadable).unwrap();
    // (description, config text, words the message must contain)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            format!("{good}gossip_port = 1\n"),
            vec!["agent.toml", "gossip_port"],
        ),
        (
            "malformed address",
            good.replace("10.200.0.1", "10.200.0"),
            vec!["agent.toml", "`address`", "10.200.0", "IPv4 or IPv6"],
        ),
        (
            "malformed listen address",
            format!("{good}listen = \"0.0.0.0:http\"\n"),
            vec!["gossip.listen", "IP:PORT"],
        ),
        (
            "missing secret file",
            good.replace(&secret.display().to_string(), "/nonexistent/secret"),
            vec!["gossip.secret_file", "/nonexistent/secret", "cannot read"],
        ),
        (
            "unreadable secret",
            good.replace(
                &secret.display().to_string(),
                &unreadable.display().to_string(),
            ),
            vec!["gossip.secret_file", "cannot read the cluster secret"],
        ),
    ];
    for (what, text, words) in cases {
        let (code, stderr) = agent_with_config(&dir, &text);
        assert_eq!(code, Some(2), "{what}: exit code; stderr: {stderr}");
        for word in words {
            assert!(stderr.contains(word), "{what}: {stderr:?} lacks {word:?}");
        }
    }

    let out = Command::new(dcnet_binary().unwrap())
        .args(["agent", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("/nonexistent/agent.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn agent_stops_cleanly_on_sigterm_and_sigint_and_guards_its_state_dir() {
    let mut cluster = Cluster::start(ClusterOptions::nodes(1)).unwrap();
    let up = |c: &Cluster| -> anyhow::Result<Option<()>> {
        Ok(c.members(0)?
            .iter()
            .any(|m| m.is_self && m.state == NodeState::Up)
            .then_some(()))
    };
    wait_until(
        "the agent to serve its API",
        Duration::from_secs(15),
        || up(&cluster),
    )
    .unwrap();

    // A second agent on the same state directory is refused, and the first keeps running.
    let out = cluster
        .run_in(
            0,
            cluster.dcnet(),
            &[
                "agent",
                "--config",
                cluster.nodes[0].config_path.to_str().unwrap(),
                "--api-listen",
                "127.0.0.1:1",
            ],
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("in use by another dcnet agent"), "{stderr}");
    assert!(cluster.nodes[0].is_running());

    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let status = cluster
            .stop_agent(0, signal, Duration::from_secs(5))
            .expect("exits within 5 s");
        assert!(status.success(), "{signal}: {status:?}");
        let log = std::fs::read_to_string(&cluster.nodes[0].log_path).unwrap();
        assert!(
            log.trim_end().ends_with("stopped"),
            "{signal}: log ends with {:?}",
            log.lines().last()
        );
        cluster.start_agent(0).unwrap();
        wait_until("the agent to come back", Duration::from_secs(15), || {
            up(&cluster)
        })
        .unwrap();
    }
}

#[test]
fn dns_records_prints_the_records_of_a_mesos_state() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dns/tests/fixtures/mesos-dns-fake-state.json"
    );
    let out = Command::new(dcnet_binary().unwrap())
        .args([
            "dns",
            "records",
            "--state",
            fixture,
            "--ip-sources",
            "docker,host",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("liquor-store.marathon.mesos.\t60\tIN\tA\t10.3.0.1\n"),
        "{text}"
    );
    assert!(
        text.contains("_slave._tcp.mesos.\t60\tIN\tSRV\t0 1 5051 slave.mesos.\n"),
        "{text}"
    );

    let out = Command::new(dcnet_binary().unwrap())
        .args(["dns", "records", "--state", "/nonexistent/state.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read the Mesos state file /nonexistent/state.json")
    );
}
