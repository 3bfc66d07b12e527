//! An app's `fetch` (and legacy `uris`), as the Mesos fetcher does it: each URI is
//! downloaded into the task's sandbox before the task starts (`http`, `https`, `file`),
//! archives are extracted there (`extract`, the default: `.tar`, `.tar.gz`/`.tgz`,
//! `.tar.bz2`/`.tbz2`, `.tar.xz`/`.txz`, and `.zip` where `unzip` is installed), and a
//! file marked `executable` gets the execute bits. A URI that cannot be fetched fails the
//! task with the reason, and the scheduler's backoff applies.
//!
//! Archives are extracted by `tar`/`unzip` as root (the task's user cannot reach its
//! sandbox through the state directory): names with `..` or a leading `/` stay inside
//! (both tools refuse or strip them), GNU tar creates an archive's symbolic links last so
//! none is written through, no owner or mode of the archive is kept, and everything is then
//! handed to the task's user without following links.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::confine::RunAs;
use crate::app::FetchUri;

/// How long one download may take, and the most it may be.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_BYTES: u64 = 4 << 30;

/// Fetches every URI of `fetch` into `sandbox`, owned by `run_as`. Blocking: run it on a
/// blocking thread.
pub fn all(fetch: &[FetchUri], sandbox: &Path, run_as: &RunAs) -> Result<(), String> {
    // The task's user extracts into it (as it will own it when it starts).
    super::confine::hand_over(sandbox, run_as)
        .map_err(|e| format!("handing the sandbox over: {e}"))?;
    for item in fetch {
        one(item, sandbox, run_as).map_err(|why| format!("fetching {}: {why}", item.uri))?;
    }
    Ok(())
}

fn one(item: &FetchUri, sandbox: &Path, run_as: &RunAs) -> Result<(), String> {
    let name = item.file_name();
    let target = sandbox.join(&name);
    // A fresh file: nothing in the sandbox (a link the task left) is written through.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|e| format!("creating {}: {e}", target.display()))?;
    let copied = match item.uri.split_once("://") {
        Some(("file", path)) => {
            let mut file = std::fs::File::open(path).map_err(|e| format!("opening {path}: {e}"))?;
            copy_capped(&mut file, &mut out)?
        }
        Some(("http" | "https", _)) => {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(DOWNLOAD_TIMEOUT))
                .build()
                .into();
            let mut response = agent.get(&item.uri).call().map_err(|e| e.to_string())?;
            copy_capped(&mut response.body_mut().as_reader(), &mut out)?
        }
        _ => return Err("only http, https and file URIs are fetched".into()),
    };
    drop(out);
    std::os::unix::fs::chown(&target, Some(run_as.uid), Some(run_as.gid))
        .map_err(|e| format!("handing {} over: {e}", target.display()))?;
    if item.executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("making {} executable: {e}", target.display()))?;
    }
    if item.extract
        && let Some(kind) = archive_kind(&name)
    {
        extract(kind, &target, sandbox, run_as)?;
    }
    tracing::debug!(uri = %item.uri, bytes = copied, file = %target.display(), "fetched");
    Ok(())
}

fn copy_capped(from: &mut impl std::io::Read, to: &mut std::fs::File) -> Result<u64, String> {
    let copied = std::io::copy(&mut from.take(MAX_BYTES + 1), to).map_err(|e| e.to_string())?;
    if copied > MAX_BYTES {
        return Err(format!("larger than {} GiB", MAX_BYTES >> 30));
    }
    Ok(copied)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archive {
    Tar,
    Zip,
}

/// What `name` is, by its extension, when it is an archive the fetcher extracts.
fn archive_kind(name: &str) -> Option<Archive> {
    let lower = name.to_ascii_lowercase();
    let tar = [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
    ];
    if tar.iter().any(|ext| lower.ends_with(ext)) {
        Some(Archive::Tar)
    } else if lower.ends_with(".zip") {
        Some(Archive::Zip)
    } else {
        None
    }
}

fn extract(kind: Archive, archive: &Path, into: &Path, run_as: &RunAs) -> Result<(), String> {
    let (program, args): (&str, Vec<PathBuf>) = match kind {
        Archive::Tar => (
            "tar",
            vec![
                "--no-same-owner".into(),
                "--no-same-permissions".into(),
                "--no-overwrite-dir".into(),
                "-xf".into(),
                archive.into(),
                "-C".into(),
                into.into(),
            ],
        ),
        Archive::Zip => (
            "unzip",
            vec![
                "-q".into(),
                "-o".into(),
                archive.into(),
                "-d".into(),
                into.into(),
            ],
        ),
    };
    let output = std::process::Command::new(program)
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {program} to extract it ({e}); install it on the node"))?;
    if !output.status.success() {
        return Err(format!(
            "extracting it with {program}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    hand_over_tree(into, run_as).map_err(|e| format!("handing the extracted files over: {e}"))
}

/// Gives everything under `dir` to `run_as`, without following symbolic links.
fn hand_over_tree(dir: &Path, run_as: &RunAs) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        std::os::unix::fs::lchown(&path, Some(run_as.uid), Some(run_as.gid))?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            hand_over_tree(&path, run_as)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_known_by_their_extension() {
        assert_eq!(archive_kind("a.tgz"), Some(Archive::Tar));
        assert_eq!(archive_kind("A.TAR.XZ"), Some(Archive::Tar));
        assert_eq!(archive_kind("b.zip"), Some(Archive::Zip));
        assert_eq!(archive_kind("tool"), None);
        assert_eq!(archive_kind("notes.tar.txt"), None);
    }

    #[test]
    fn files_are_fetched_extracted_and_made_executable() {
        let src = tempfile::tempdir().unwrap();
        let content = src.path().join("content");
        std::fs::create_dir(&content).unwrap();
        std::fs::write(content.join("data.txt"), "hello").unwrap();
        let archive = src.path().join("bundle.tar.gz");
        let made = std::process::Command::new("tar")
            .args(["-czf"])
            .arg(&archive)
            .args(["-C"])
            .arg(&content)
            .arg("data.txt")
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::write(src.path().join("tool"), "#!/bin/sh\necho hi\n").unwrap();
        let sandbox = tempfile::tempdir().unwrap();
        let me = RunAs::lookup("root").unwrap();
        let items = [
            FetchUri::new(&format!("file://{}", archive.display())),
            FetchUri {
                executable: true,
                ..FetchUri::new(&format!("file://{}", src.path().join("tool").display()))
            },
        ];
        all(&items, sandbox.path(), &me).unwrap();
        assert_eq!(
            std::fs::read_to_string(sandbox.path().join("data.txt")).unwrap(),
            "hello"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sandbox.path().join("tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        // Over HTTP, from a server on loopback.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::Write as _;
            for stream in listener.incoming().take(2).flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
                let found = String::from_utf8_lossy(&buf[..n]).starts_with("GET /script ");
                let reply: &[u8] = if found {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\necho!"
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = stream.write_all(reply);
            }
        });
        all(
            &[FetchUri::new(&format!("http://127.0.0.1:{port}/script"))],
            sandbox.path(),
            &me,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(sandbox.path().join("script")).unwrap(),
            "echo!"
        );
        let err = all(
            &[FetchUri::new(&format!("http://127.0.0.1:{port}/gone"))],
            sandbox.path(),
            &me,
        )
        .unwrap_err();
        assert!(err.contains("404"), "{err}");
        // A missing file fails with the URI and why.
        let err = all(
            &[FetchUri::new("file:///nonexistent/x")],
            sandbox.path(),
            &me,
        )
        .unwrap_err();
        assert!(
            err.contains("file:///nonexistent/x") && err.contains("No such file"),
            "{err}"
        );
    }
}
