//! Knot DNS (Debian's `knot`) as a local upstream for tests: zone `example.` with
//! `www.example. A 192.0.2.80`, listening on 127.0.0.2 (port 53, or another where a DNS server
//! of the test holds `0.0.0.0:53`) inside a namespace of the test, so forwarded queries never
//! leave the machine. Killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use dcnet_overlay::Netns;

use crate::cluster::{in_netns, wait_until};

/// Where Knot listens, in the namespace it was started in.
pub const ADDRESS: &str = "127.0.0.2";
/// The name it answers, and the address it answers.
pub const NAME: &str = "www.example";
pub const ANSWER: &str = "192.0.2.80";

/// A running knotd.
pub struct Knot(Child);

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts knotd on [`ADDRESS`]:`port` in `netns` with its files in `dir`, and waits until it
/// answers.
pub fn start(netns: &Netns, dir: &Path, port: u16) -> Result<Knot> {
    let zone = dir.join("example.zone");
    std::fs::write(
        &zone,
        format!(
            "$ORIGIN example.\n$TTL 60\n@ SOA ns.example. root.example. 1 60 60 60 60\n@ NS ns.example.\nns A {ADDRESS}\nwww A {ANSWER}\n"
        ),
    )?;
    let conf = dir.join("knot.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n    listen: {ADDRESS}@{port}\n    rundir: {d}\ndatabase:\n    storage: {d}\nzone:\n  - domain: example\n    file: {z}\n",
            d = dir.display(),
            z = zone.display()
        ),
    )?;
    let mut command = Command::new("knotd");
    command
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    in_netns(&mut command, netns, true);
    let knot = Knot(
        command
            .spawn()
            .context("starting knotd (apt install knot, or scripts/setup.sh)")?,
    );
    wait_until("Knot to answer", Duration::from_secs(10), || {
        let mut dig = Command::new("dig");
        dig.args([
            &format!("@{ADDRESS}"),
            "-p",
            &port.to_string(),
            "+short",
            "+time=1",
            "+tries=1",
            NAME,
        ]);
        in_netns(&mut dig, netns, true);
        let out = dig.output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .contains(ANSWER)
            .then_some(()))
    })?;
    Ok(knot)
}
