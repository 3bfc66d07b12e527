//! Flows for the network-policy tests (`tests/clients/flows.py`): servers and probes run
//! inside a namespace and a cgroup (the policy programs act on a cgroup's sockets, so both
//! ends are processes placed there, as tasks are). Every process is killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The script's text, for a task's command (`python3 -c "$FLOWS" serve ...`).
pub const SCRIPT: &str = include_str!("../clients/flows.py");

/// `python3 flows.py ARGS` in `netns` (by name, under /run/netns), joining the cgroup v2
/// directory `cgroup` before it runs.
pub fn command(netns: &str, cgroup: &Path, args: &[&str]) -> Result<Command> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/flows.py");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns, "python3"])
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let join = dcnet_agent::launcher::process::join_cgroup(cgroup)
        .context("a cgroup path with a NUL byte")?;
    // SAFETY: `join` makes only async-signal-safe calls and allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, join);
    }
    Ok(command)
}

/// A running flows.py, read line by line.
pub struct Flows {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<std::io::Result<String>>,
}

impl Flows {
    fn start(mut command: Command) -> Result<Self> {
        let mut child = command.spawn().context("starting flows.py")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout: ChildStdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    fn line(&self) -> Result<String> {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .context("no line from flows.py within 20 s")?
            .context("reading flows.py")
    }

    /// TCP and UDP servers on `addr` and each of `ports`, once listening.
    pub fn serve(netns: &str, cgroup: &Path, addr: &str, ports: &[u16]) -> Result<Self> {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut args = vec!["serve", addr];
        args.extend(ports.iter().map(String::as_str));
        let flows = Self::start(command(netns, cgroup, &args)?)?;
        let ready = flows.line()?;
        if ready != "ready" {
            bail!("flows.py serve printed {ready:?}");
        }
        Ok(flows)
    }

    /// A prober: [`Flows::attempt`] tries one flow.
    pub fn probe(netns: &str, cgroup: &Path) -> Result<Self> {
        Self::start(command(netns, cgroup, &["probe"])?)
    }

    /// One attempt from `src` ("-": the routing's choice) to `dst`: "ok" or "err KIND".
    pub fn attempt(&mut self, src: &str, dst: &str, proto: &str, port: u16) -> Result<String> {
        writeln!(self.stdin, "{src} {dst} {proto} {port}").context("flows.py is gone")?;
        self.line()
    }

    /// A held TCP connection from `src` to `dst:port`: its first line ("ok hello PORT" or
    /// "err KIND").
    pub fn hold(
        netns: &str,
        cgroup: &Path,
        src: &str,
        dst: &str,
        port: u16,
    ) -> Result<(Self, String)> {
        let port = port.to_string();
        let flows = Self::start(command(netns, cgroup, &["hold", src, dst, &port])?)?;
        let first = flows.line()?;
        Ok((flows, first))
    }

    /// On a held connection: sends `text`, returns "echo TEXT" or "err KIND".
    pub fn echo(&mut self, text: &str) -> Result<String> {
        writeln!(self.stdin, "{text}").context("flows.py is gone")?;
        self.line()
    }
}

impl Drop for Flows {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
