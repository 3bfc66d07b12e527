//! The README's first command: `dcnet-demo` runs to its end and leaves nothing behind.

use std::process::{Command, Stdio};

use dcnet_tests::cgroup::CGROUP2_ROOT;
use dcnet_tests::cluster::{NETNS_PREFIX, require_root};

#[test]
fn demo_runs_and_cleans_up() -> anyhow::Result<()> {
    require_root()?;
    let child = Command::new(env!("CARGO_BIN_EXE_dcnet-demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shown in [
        "[8/8]",
        "web.marathon.l4lb.thisdcos.directory A:",
        "3 healthy instances again, none on node-3",
        "the 4th instance on node-3",
        "done",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing from:\n{stdout}");
    }
    // What the demo made is named after its pid: namespaces `dcn-<pid>-...`, cgroups
    // `dcnet-test-<pid>-...`.
    let left = |dir: &str, prefix: String| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        left("/run/netns", format!("{NETNS_PREFIX}{pid}-")),
        Vec::<String>::new()
    );
    assert_eq!(
        left(CGROUP2_ROOT, format!("dcnet-test-{pid}-")),
        Vec::<String>::new()
    );
    Ok(())
}
