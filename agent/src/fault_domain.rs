//! A node's fault domain from DC/OS's detect script (`fault_domain_detect`): an executable
//! that prints `{"fault_domain": {"region": {"name": R}, "zone": {"name": Z}}}`, as DC/OS
//! runs on every node (e.g. from a cloud's metadata service). Run once at start.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long the script may run: a metadata service that does not answer must not hold the
/// node's start for long.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultDomain {
    pub region: String,
    pub zone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    fault_domain: Domain,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Domain {
    region: Named,
    zone: Named,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

/// The example the errors show.
const SHAPE: &str = r#"{"fault_domain": {"region": {"name": "aws/us-east-1"}, "zone": {"name": "aws/us-east-1a"}}}"#;

/// Parses the script's standard output.
pub fn parse(stdout: &str) -> Result<FaultDomain, String> {
    let out: Output = serde_json::from_str(stdout.trim()).map_err(|e| {
        format!("its output is not DC/OS's fault domain JSON ({e}); print e.g. {SHAPE}")
    })?;
    let Domain { region, zone } = out.fault_domain;
    if region.name.is_empty() || zone.name.is_empty() {
        return Err(format!(
            "its region and zone names must not be empty; print e.g. {SHAPE}"
        ));
    }
    Ok(FaultDomain {
        region: region.name,
        zone: zone.name,
    })
}

/// Runs `script` and parses what it prints; the error says what went wrong with it.
pub fn detect(script: &Path) -> Result<FaultDomain, String> {
    let mut child = std::process::Command::new(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it ({e}); give an executable file"))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < DETECT_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it did not finish within {} s",
                    DETECT_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for it failed: {e}")),
        }
    };
    let output = child
        .wait_with_output()
        .map_err(|e| format!("reading its output failed: {e}"))?;
    if !status.success() {
        return Err(format!(
            "it exited with {status}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    parse(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcos_output_parses() {
        let d = parse(SHAPE).unwrap();
        assert_eq!(
            (d.region.as_str(), d.zone.as_str()),
            ("aws/us-east-1", "aws/us-east-1a")
        );
        for bad in [
            "",
            "{}",
            r#"{"fault_domain": {"region": {"name": ""}, "zone": {"name": "z"}}}"#,
        ] {
            assert!(parse(bad).unwrap_err().contains("fault_domain"), "{bad:?}");
        }
    }

    #[test]
    fn a_script_is_run_and_its_failures_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let ok = write("ok", &format!("echo '{SHAPE}'"));
        assert_eq!(detect(&ok).unwrap().zone, "aws/us-east-1a");
        let failing = write("failing", "echo 'no metadata service' >&2; exit 3");
        let e = detect(&failing).unwrap_err();
        assert!(
            e.contains("exit status: 3") && e.contains("no metadata service"),
            "{e}"
        );
        assert!(
            detect(&dir.path().join("missing"))
                .unwrap_err()
                .contains("cannot run it")
        );
    }
}
