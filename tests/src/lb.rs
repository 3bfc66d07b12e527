//! Load-balancer test helpers: backends that answer with their name, and the socket client
//! (`dcnet-lb-client`) started inside a namespace and a cgroup, with its output parsed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_overlay::Netns;

use crate::TestCgroup;
use crate::cluster::workspace_binary;

/// The socket client binary (built with this crate).
pub fn client_binary() -> Result<std::path::PathBuf> {
    workspace_binary("dcnet-lb-client", "DCNET_LB_CLIENT", "dcnet-tests")
}

/// A client command run by `ip netns exec` (so the namespace's /etc/netns resolv.conf is in
/// place for names) inside `cgroup`, where the socket hooks act.
pub fn client_command(netns: &str, cgroup: Option<&TestCgroup>, args: &[&str]) -> Result<Command> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]);
    command.arg(client_binary()?);
    command.args(args);
    if let Some(cgroup) = cgroup {
        cgroup.place(&mut command);
    }
    Ok(command)
}

/// Runs the client to completion and parses its lines.
pub fn run_client(mut command: Command) -> Result<Vec<Line>> {
    let out = command.output().context("running dcnet-lb-client")?;
    if !out.status.success() {
        bail!(
            "dcnet-lb-client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(Line::parse)
        .collect()
}

/// A long-lived client (`udp-hold`): each [`UdpHold::ask`] sends a line and reads the answer.
/// Killed when dropped.
pub struct UdpHold {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl UdpHold {
    /// Starts `command` (a `udp-hold` client command) with piped stdin and stdout.
    pub fn start(mut command: Command) -> Result<Self> {
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting dcnet-lb-client udp-hold")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends `line` and returns how the client saw the answer.
    pub fn ask(&mut self, line: &str) -> Result<Line> {
        writeln!(self.stdin, "{line}")?;
        let mut answer = String::new();
        self.stdout.read_line(&mut answer)?;
        Line::parse(answer.trim())
    }
}

impl Drop for UdpHold {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One attempt as the client reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Ok { peer: String, response: String },
    Err { kind: String, micros: u64 },
}

impl Line {
    pub fn parse(line: &str) -> Result<Line> {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ok"), Some(peer), response) => Ok(Line::Ok {
                peer: peer.into(),
                response: response.unwrap_or("").into(),
            }),
            (Some("err"), Some(kind), Some(micros)) => Ok(Line::Err {
                kind: kind.into(),
                micros: micros.parse().context("client output: microseconds")?,
            }),
            _ => bail!("unexpected client output {line:?}"),
        }
    }
}

/// Responses per backend name; fails unless every attempt succeeded with `peer` as the peer.
pub fn tally(lines: &[Line], peer: &str) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for line in lines {
        match line {
            Line::Ok { peer: p, response } if p == peer => {
                let name = response.split(':').next().unwrap_or_default().to_owned();
                *counts.entry(name).or_insert(0) += 1;
            }
            other => bail!("an attempt through {peer} went wrong: {other:?}"),
        }
    }
    Ok(counts)
}

/// A TCP backend on `addr` inside `netns`: greets each connection with `name`, then echoes
/// lines as `name:line` until the client's EOF. Serves until the process ends.
pub fn tcp_backend(netns: &Netns, addr: SocketAddr, name: &str) -> Result<SocketAddr> {
    let listener = netns
        .run(move || TcpListener::bind(addr))?
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let name = name.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let name = name.clone();
            std::thread::spawn(move || {
                let _ = stream.write_all(format!("{name}\n").as_bytes());
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(clone) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(clone);
                let mut line = String::new();
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    let _ = stream.write_all(format!("{name}:{line}").as_bytes());
                    line.clear();
                }
            });
        }
    });
    Ok(addr)
}

/// A UDP backend on `addr` inside `netns`: answers every datagram with `name`.
pub fn udp_backend(netns: &Netns, addr: SocketAddr, name: &str) -> Result<SocketAddr> {
    let socket = netns
        .run(move || UdpSocket::bind(addr))?
        .with_context(|| format!("binding {addr}"))?;
    let addr = socket.local_addr()?;
    let name = name.to_owned();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(name.as_bytes(), from);
        }
    });
    Ok(addr)
}

/// The datapath programs attached to `cgroup` for IPv4 connects (bpftool's view): one per
/// agent run that has its hooks there.
pub fn connect4_programs(cgroup: &TestCgroup) -> Result<usize> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup.path())
        .output()
        .context("bpftool (apt install bpftool, or scripts/setup.sh)")?;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(list
        .iter()
        .filter(|p| p["attach_type"] == "cgroup_inet4_connect" && p["name"] == "connect4")
        .count())
}

/// Two nodes with the overlay and the load balancer on, each node's hooks on its own cgroup of
/// `cgroups`; node 1 an agent, node 2 a master reading the (fake) Mesos master at `master`
/// every second.
pub fn two_nodes_reading_a_master(
    cgroups: &[TestCgroup],
    master: &str,
    dns_config: &str,
) -> crate::ClusterOptions {
    let mut options = crate::ClusterOptions::nodes(2);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        let mut extra = format!(
            "\n[overlay]\nenabled = true\nlease_settle = \"1s\"\n\n[lb]\nenabled = true\ncgroup = \"{}\"\n",
            cgroups[i].path().display()
        );
        if i == 1 {
            extra.push_str(&format!(
                "\n[dns.mesos]\nmasters = [\"{master}\"]\nrefresh = \"1s\"\nip_sources = [\"netinfo\", \"host\"]\n"
            ));
        }
        *node = crate::NodeSpec {
            roles: vec![if i == 1 { "master" } else { "agent" }.into()],
            dns_config: dns_config.into(),
            extra_config: extra,
            ..crate::NodeSpec::default()
        };
    }
    options
}
