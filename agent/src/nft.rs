//! The nftables tables dcnet owns in a node's namespace (the launcher's host ports, the
//! overlay's egress): each is replaced whole by one `nft -f` transaction, so it never holds a
//! half-applied state, and read back with `nft list table` to notice a hand edit.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// Where `nft` is: `PATH`, then the system directories a service's `PATH` may lack.
pub fn program() -> Option<PathBuf> {
    crate::launcher::container::find_program("nft")
}

/// Applies `script` with `nft`, atomically; `what` names the table in the error.
pub async fn apply(nft: &Path, what: &str, script: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running {}: {e}", nft.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft refused the {what} table ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The table `family table` as `nft list table` prints it, `None` if it does not exist.
pub async fn list(nft: &Path, family: &str, table: &str) -> Result<Option<String>, String> {
    let out = tokio::process::Command::new(nft)
        .args(["list", "table", family, table])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", nft.display()))?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such file or directory") {
        return Ok(None);
    }
    Err(format!(
        "nft list table {family} {table} ({}): {}",
        out.status,
        stderr.trim()
    ))
}
