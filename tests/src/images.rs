//! Container images for tests, built here from Debian's busybox-static and imported into
//! podman's store (nothing is pulled), and the release of what container tasks leave when a
//! test cluster is torn down with its agents killed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use dcnet_agent::launcher::container::{self, Runtime};

/// The test image: busybox with `httpd` serving `/www` on port 80 as its command, user `www`
/// (uid 1000) in its own /etc/passwd only, `GREETING=from-image` in its environment.
pub const BUSYBOX: &str = "localhost/dcnet-test/busybox:1";

/// The busybox binary the image is made of (Debian's busybox-static).
const BUSYBOX_BIN: &str = "/bin/busybox";

/// The runtime container tests need, or why it is missing.
pub fn runtime() -> Result<Runtime> {
    Runtime::detect().map_err(anyhow::Error::msg)
}

/// Imports [`BUSYBOX`] into podman's store unless it is there (idempotent, and safe for tests
/// importing it at once: the same content gets the same id).
pub fn ensure_busybox() -> Result<()> {
    let rt = runtime()?;
    let present = Command::new(&rt.podman)
        .args(["image", "exists", BUSYBOX])
        .status()
        .context("running podman image exists")?;
    if present.success() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("rootfs");
    for sub in ["bin", "etc", "tmp", "www", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    std::fs::copy(BUSYBOX_BIN, root.join("bin/busybox"))
        .with_context(|| format!("copying {BUSYBOX_BIN} (Debian's busybox-static)"))?;
    for applet in [
        "sh", "httpd", "cat", "ls", "id", "sleep", "echo", "wget", "env", "test", "touch", "mkdir",
        "nc",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:1000:1000:www:/www:/bin/sh\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nwww:x:1000:\n")?;
    std::fs::write(root.join("www/index.html"), "hello from the image\n")?;
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()?;
    if !status.success() {
        bail!("tar of the test image's root failed");
    }
    let out = Command::new(&rt.podman)
        .args([
            "import",
            "--change",
            r#"CMD ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]"#,
        ])
        .args([
            "--change",
            "ENV GREETING=from-image",
            "--change",
            "USER www",
        ])
        .arg(&tar)
        .arg(BUSYBOX)
        .output()
        .context("running podman import")?;
    if !out.status.success() {
        bail!("podman import: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Releases the containers an agent with state directory `state` left (its tasks killed with
/// their cgroup): runc's state, the root file systems, the image mounts.
pub fn release_left(state: &Path) {
    let bundles: Vec<PathBuf> = std::fs::read_dir(state.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    if bundles.is_empty() {
        return;
    }
    let Ok(rt) = runtime() else {
        bundles.iter().for_each(|b| container::release_mounts(b));
        return;
    };
    let Ok(tokio) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    for bundle in bundles {
        let Some(id) = bundle
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        tokio.block_on(rt.release(&container::runc_state(state), &bundle, &id));
    }
}
