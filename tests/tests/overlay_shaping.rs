//! Egress bandwidth limits (`dcnet_overlay::shaping`) on a veth between two namespaces of the
//! test: iperf3 from the limited side measures the limit, the qdisc is the kernel's tbf, and
//! lifting the limit gives the link back its default qdisc.

use anyhow::{Context, Result};
use dcnet_tests::TestNamespace;
use serde_json::Value;

/// Two namespaces joined by a veth: `a` (10.98.0.1) and `b` (10.98.0.2).
fn pair(label: &str) -> Result<(TestNamespace, TestNamespace)> {
    let a = TestNamespace::create(&format!("{label}-a"))?;
    let b = TestNamespace::create(&format!("{label}-b"))?;
    let b_netns = b.netns();
    a.netns().netlink(|nl| async move {
        nl.add_veth("eth0", "eth0", Some(b_netns)).await?;
        nl.add_address("eth0", "10.98.0.1".parse().expect("literal"), 24)
            .await?;
        nl.set_up("eth0").await
    })?;
    b.netns().netlink(|nl| async move {
        nl.add_address("eth0", "10.98.0.2".parse().expect("literal"), 24)
            .await?;
        nl.set_up("eth0").await
    })?;
    Ok((a, b))
}

/// iperf3 from `a` to `b` (at `to`) for `seconds`: the receiver's bits per second.
fn iperf(a: &TestNamespace, (b, to): (&TestNamespace, &str), seconds: u32) -> Result<f64> {
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            b.netns().name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            to,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("iperf3 (apt install iperf3, or scripts/setup.sh)")?;
    let result = (|| {
        let out = dcnet_tests::wait_until(
            "iperf3's server",
            std::time::Duration::from_secs(10),
            || {
                let out = a.exec("iperf3", &["-c", to, "-J", "-t", &seconds.to_string()])?;
                // Until the server listens, iperf3 reports "Connection refused" (in its JSON).
                let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                Ok((out.status.success() && report.get("error").is_none()).then_some(report))
            },
        )?;
        let report = out;
        report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .with_context(|| format!("iperf3's received rate in {report}"))
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

#[test]
fn a_limited_interface_sends_at_its_limit_and_no_more() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    let (a, b) = pair("shape")?;
    let kind = |ns: &TestNamespace| -> Result<Option<String>> {
        Ok(ns
            .netns()
            .netlink(|nl| async move { nl.root_qdisc("eth0").await })?)
    };
    assert_eq!(kind(&a)?.as_deref(), Some("noqueue"));
    a.netns()
        .netlink(|nl| async move { nl.set_egress_limit("eth0", Some(50_000_000)).await })?;
    assert_eq!(kind(&a)?.as_deref(), Some("tbf"));
    let limited = iperf(&a, (&b, "10.98.0.2"), 3)?;
    println!("limited to 50 Mbit/s: {:.1} Mbit/s", limited / 1e6);
    assert!(limited <= 55e6, "{limited} bit/s");
    assert!(
        limited >= 40e6,
        "the limit, not a broken link: {limited} bit/s"
    );
    // The other way is not limited.
    let back = iperf(&b, (&a, "10.98.0.1"), 1)?;
    assert!(back > 200e6, "{back} bit/s");
    // Lifted (twice: lifting nothing is no error).
    for _ in 0..2 {
        a.netns()
            .netlink(|nl| async move { nl.set_egress_limit("eth0", None).await })?;
    }
    assert_eq!(kind(&a)?.as_deref(), Some("noqueue"));
    let free = iperf(&a, (&b, "10.98.0.2"), 1)?;
    assert!(free > 200e6, "{free} bit/s");
    Ok(())
}
