//! One task's process: its sandbox directory, network namespace, cgroup, environment, start,
//! exit and stop. Everything that touches the operating system for a task is here.
//!
//! A task runs `sh -c <cmd>` (or its `args`) in a process group of its own, inside its own
//! cgroup when the launcher has one, confined as [`super::confine`] describes (its network
//! namespace on an overlay, a private mount namespace, its user). Its record is kept on disk
//! so a restarted agent finds it again: tasks outlive the agent, as Mesos executors do.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use super::confine::{Confinement, RunAs};
use crate::app::{Command, task_ports};
use crate::facts::scheduler::Assignment;

/// The file of a task's record in its sandbox, where earlier agents kept it: read once, to
/// move it ([`load_all`]).
const LEGACY_RECORD_FILE: &str = "task.json";
/// The directory of the tasks' records, beside their sandboxes under the state directory.
/// Never in a sandbox: a task owns its sandbox directory, so it could replace any file in
/// it, and a record names what the agent kills, deletes and unmounts.
pub const RECORDS_DIR: &str = "task-records";
/// PATH given to tasks (their environment is otherwise only what Mesos would set).
const TASK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the launcher remembers of a task, on disk in `<sandbox>/task.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub assignment: Assignment,
    /// The network namespace (a name under /run/netns) on an overlay.
    pub netns: Option<String>,
    pub ip: Option<IpAddr>,
    /// The IPv6 address on a dual-stack overlay (`ip` is the IPv4 one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    pub pid: Option<u32>,
    /// The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with
    /// the pid, it tells the task's process from a later one that reused the pid.
    pub pid_start: Option<u64>,
    pub cgroup: Option<PathBuf>,
    pub staged_ms: u64,
    pub started_ms: Option<u64>,
    /// The user the task runs as (records of older agents have none: root).
    #[serde(default)]
    pub user: Option<String>,
}

/// Why a task could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the task's command: {0}")]
    Spawn(#[source] std::io::Error),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError {
    let path = path.to_path_buf();
    move |source| LaunchError::Io {
        action,
        path,
        source,
    }
}

/// The directory of a task: its record, stdout and stderr.
pub fn sandbox(root: &Path, task_id: &str) -> PathBuf {
    root.join(task_id)
}

/// The network namespace name of a task (unique cluster-wide: task ids carry a UUID).
pub fn netns_name(prefix: &str, task_id: &str) -> String {
    let tail = task_id.rsplit('.').next().unwrap_or(task_id);
    format!("{prefix}{}", tail.replace('-', ""))
}

/// Where the records are: `<state>/task-records` for the tasks root `<state>/tasks`.
pub fn records_dir(root: &Path) -> PathBuf {
    super::confine::hidden_dir(root).join(RECORDS_DIR)
}

fn record_path(root: &Path, task_id: &str) -> PathBuf {
    records_dir(root).join(format!("{task_id}.json"))
}

/// Whether `id` can name a task's files: one path component, nothing hidden.
fn is_task_id(id: &str) -> bool {
    !id.is_empty() && !id.starts_with('.') && !id.contains(['/', '\0'])
}

/// Writes the record atomically, readable by root only.
pub fn save(root: &Path, record: &Record) -> Result<(), LaunchError> {
    let dir = records_dir(root);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io("creating", &dir))?;
    let id = &record.assignment.task_id;
    let path = record_path(root, id);
    let tmp = dir.join(format!(".{id}.json.tmp"));
    let text = serde_json::to_string_pretty(record).unwrap_or_default();
    crate::state::write_atomically(&path, &tmp, text.as_bytes(), 0o600)
        .map_err(io("writing", &path))
}

/// Every record (unreadable ones are logged and skipped). The first start after an upgrade
/// moves the records older agents kept in the sandboxes, those root wrote (a task cannot
/// make a root-owned file; a task running as root is trusted anyway); later, a `task.json`
/// in a sandbox is only a file of the task's.
pub fn load_all(root: &Path) -> Vec<Record> {
    if !records_dir(root).exists() {
        move_legacy_records(root);
    }
    let Ok(entries) = fs::read_dir(records_dir(root)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(id) = name.strip_suffix(".json").filter(|id| is_task_id(id)) else {
            continue;
        };
        match fs::read_to_string(&path).map(|text| serde_json::from_str::<Record>(&text)) {
            Ok(Ok(record)) if record.assignment.task_id == id => out.push(record),
            Ok(Ok(_)) => {
                tracing::warn!(path = %path.display(), "skipping a task record whose task id is not its file's name")
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a task record that does not parse")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a task record")
            }
        }
    }
    out
}

fn move_legacy_records(root: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path().join(LEGACY_RECORD_FILE);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let record = (meta.is_file() && meta.uid() == 0)
            .then(|| fs::read_to_string(&path).ok())
            .flatten()
            .and_then(|text| serde_json::from_str::<Record>(&text).ok())
            .filter(|r| r.assignment.task_id == name && is_task_id(&name));
        match record {
            Some(record) => match save(root, &record) {
                Ok(()) => {
                    let _ = fs::remove_file(&path);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot move a task record")
                }
            },
            None => {
                tracing::warn!(path = %path.display(), "ignoring a task record in a sandbox that the agent did not write")
            }
        }
    }
    // Made even with nothing moved: the move happens once.
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(records_dir(root));
}

/// Removes the record (the sandbox's logs stay for operators to read).
pub fn forget(root: &Path, task_id: &str) {
    let _ = fs::remove_file(record_path(root, task_id));
}

/// Keeps the `keep` newest sandboxes without a record, removing older ones.
pub fn prune_sandboxes(root: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let mut done: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_none_or(|id| !record_path(root, id).exists())
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    done.sort();
    let excess = done.len().saturating_sub(keep);
    for (_, path) in done.into_iter().take(excess) {
        let _ = fs::remove_dir_all(path);
    }
}

/// The task's environment, as Mesos and Marathon set it, then the app's own `env`.
pub fn environment(
    a: &Assignment,
    host: &str,
    sandbox: &Path,
    user: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), TASK_PATH.into());
    env.insert("USER".into(), user.into());
    env.insert("LOGNAME".into(), user.into());
    env.insert("HOME".into(), sandbox.display().to_string());
    env.insert("HOST".into(), host.into());
    env.insert("MESOS_TASK_ID".into(), a.task_id.clone());
    env.insert("MESOS_SANDBOX".into(), sandbox.display().to_string());
    env.insert("MARATHON_APP_ID".into(), a.app.id.clone());
    env.insert("MARATHON_APP_VERSION".into(), a.app.version.clone());
    let ports = task_ports(&a.app.network, &a.app.ports, &a.host_ports);
    for (i, port) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), port.to_string());
        if let Some(name) = &a.app.ports[i].name {
            env.insert(
                format!("PORT_{}", name.to_ascii_uppercase().replace('-', "_")),
                port.to_string(),
            );
        }
    }
    if let Some(first) = ports.first() {
        env.insert("PORT".into(), first.to_string());
    }
    env.insert(
        "PORTS".into(),
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    for (k, v) in &a.app.labels {
        let key: String = k
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env.insert(format!("MARATHON_APP_LABEL_{key}"), v.clone());
    }
    for (k, v) in &a.app.env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// The program and arguments that run `command`.
pub fn argv(command: &Command) -> Vec<String> {
    match command {
        Command::Shell(cmd) => vec!["sh".into(), "-c".into(), cmd.clone()],
        Command::Args(args) => args.clone(),
    }
}

/// Makes `cmd` run in the task's cgroup (created here) and confinement: for the task and for
/// its COMMAND health checks alike, which are the app's code too.
pub fn confine(
    cmd: &mut tokio::process::Command,
    record: &Record,
    root: &Path,
    run_as: RunAs,
) -> Result<(), LaunchError> {
    if let Some(cgroup) = &record.cgroup {
        fs::create_dir_all(cgroup).map_err(io("creating cgroup", cgroup))?;
        let join = join_cgroup(cgroup).map_err(LaunchError::Spawn)?;
        // SAFETY: `join` makes only async-signal-safe calls and allocates nothing.
        unsafe {
            cmd.pre_exec(join);
        }
    }
    let dir = sandbox(root, &record.assignment.task_id);
    let confinement = Confinement::new(
        record.netns.as_deref(),
        &super::confine::hidden_dir(root),
        &dir,
        run_as,
    )
    .map_err(io("preparing the confinement of", &dir))?;
    // SAFETY: the hook makes only system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(confinement.hook());
    }
    Ok(())
}

/// A started process.
pub struct Started {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub pid_start: Option<u64>,
}

/// Starts the task's process as `run_as`: output appended to `<sandbox>/stdout` and `stderr`,
/// in its own process group, cgroup and confinement.
pub fn spawn(
    record: &Record,
    env: &BTreeMap<String, String>,
    root: &Path,
    run_as: RunAs,
) -> Result<Started, LaunchError> {
    let dir = sandbox(root, &record.assignment.task_id);
    let argv = argv(&record.assignment.app.command);
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().envs(env);
    let owner = run_as.clone();
    confine(&mut cmd, record, root, run_as)?;
    start(cmd, &dir, &owner)
}

/// Starts a container task's runtime process (`runc run`, which confines the container
/// itself), with `PATH` only: signals to its process group reach runc, which passes them
/// on to the container.
pub fn spawn_runtime(
    record: &Record,
    root: &Path,
    mut cmd: tokio::process::Command,
    owner: &RunAs,
) -> Result<Started, LaunchError> {
    cmd.env_clear().env("PATH", TASK_PATH);
    start(cmd, &sandbox(root, &record.assignment.task_id), owner)
}

/// Starts `cmd` in `sandbox`, its output appended to the sandbox's `stdout` and `stderr`
/// (which, with the sandbox, become `owner`'s), in a process group of its own, left running
/// when the agent goes.
fn start(
    mut cmd: tokio::process::Command,
    sandbox: &Path,
    owner: &RunAs,
) -> Result<Started, LaunchError> {
    let (stdout, stderr) = (
        append(&sandbox.join("stdout"))?,
        append(&sandbox.join("stderr"))?,
    );
    super::confine::hand_over(sandbox, owner).map_err(io("handing over", sandbox))?;
    cmd.current_dir(sandbox)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(LaunchError::Spawn)?;
    let pid = child
        .id()
        .ok_or_else(|| LaunchError::Spawn(std::io::Error::other("the child exited at once")))?;
    Ok(Started {
        child,
        pid,
        pid_start: process_start(pid),
    })
}

/// A `pre_exec` hook that moves the new process into `cgroup` before it execs. It makes only
/// async-signal-safe calls (open, write, close) and allocates nothing, as code between fork
/// and exec must.
pub fn join_cgroup(
    cgroup: &Path,
) -> std::io::Result<impl FnMut() -> std::io::Result<()> + Send + Sync + 'static> {
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("NUL in the cgroup path"))?;
    Ok(move || {
        // SAFETY: a valid C string and a buffer of one byte; the descriptor is ours.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writing process itself.
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

fn append(path: &Path) -> Result<File, LaunchError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io("opening", path))
}

/// A process's start time (clock ticks since boot), from /proc/<pid>/stat.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the record's process is still the one it started.
pub fn still_running(record: &Record) -> bool {
    match (record.pid, record.pid_start) {
        (Some(pid), Some(start)) => process_start(pid) == Some(start),
        _ => false,
    }
}

/// Waits for a process that is not our child (adopted after an agent restart) to exit.
pub async fn wait_foreign(pid: u32) -> std::io::Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(e)
        };
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the descriptor, which is neither replaced nor closed under it.
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? };
    // A pidfd becomes readable when the process exits.
    let _guard = fd.readable().await?;
    Ok(())
}

/// Stops a task: SIGTERM to its process group, then after `grace` SIGKILL to the group, or
/// everything in its cgroup (which catches processes that left the group).
pub async fn stop(record: &Record, grace: Duration) {
    if let Some(pid) = record.pid.filter(|_| still_running(record)) {
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while still_running(record) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if still_running(record) {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
    if let Some(cgroup) = &record.cgroup {
        remove_cgroup(cgroup).await;
    }
}

/// Kills whatever is left in `cgroup` and removes it.
pub async fn remove_cgroup(cgroup: &Path) {
    if !cgroup.exists() {
        return;
    }
    let _ = fs::write(cgroup.join("cgroup.kill"), "1");
    for _ in 0..100 {
        match fs::remove_dir(cgroup) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    tracing::warn!(cgroup = %cgroup.display(), "cannot remove a task's cgroup; it still has processes");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::app::parse;

    fn assignment(v: serde_json::Value, host_ports: Vec<u16>) -> Assignment {
        Assignment {
            task_id: "prod_web.6f1c2a9e-0000-4000-8000-1234567890ab".into(),
            node_id: "n".into(),
            app: parse(&v, None, "2026-11-23T00:00:00Z").unwrap().app,
            host_ports,
        }
    }

    #[test]
    fn mesos_environment_on_an_overlay() {
        let a = assignment(
            json!({"id": "/prod/web", "cmd": "x", "env": {"MODE": "demo", "PORT0": "mine"},
                   "labels": {"team-a": "x"},
                   "networks": [{"mode": "container", "name": "dcos"}],
                   "container": {"portMappings": [{"containerPort": 80, "name": "http"},
                                                  {"containerPort": 9000}]}}),
            vec![],
        );
        let env = environment(&a, "10.0.0.5", Path::new("/sb"), "nobody");
        assert_eq!(env["HOST"], "10.0.0.5");
        assert_eq!(env["PORT1"], "9000");
        assert_eq!(env["PORT_HTTP"], "80");
        assert_eq!(env["PORT"], "80");
        assert_eq!(env["PORTS"], "80,9000");
        assert_eq!(env["MARATHON_APP_ID"], "/prod/web");
        assert_eq!(env["MARATHON_APP_LABEL_TEAM_A"], "x");
        assert_eq!(env["MESOS_TASK_ID"], a.task_id);
        assert_eq!(env["MODE"], "demo");
        assert_eq!(env["PORT0"], "mine", "the app's own env has the last word");
    }

    #[test]
    fn host_network_gets_host_ports_and_no_namespace() {
        let a = assignment(
            json!({"id": "/x", "args": ["/bin/echo", "hi"], "ports": [0]}),
            vec![31007],
        );
        let env = environment(&a, "h", Path::new("/sb"), "nobody");
        assert_eq!(env["PORT0"], "31007");
        assert_eq!(
            (env["USER"].as_str(), env["HOME"].as_str()),
            ("nobody", "/sb")
        );
        assert_eq!(argv(&a.app.command), vec!["/bin/echo", "hi"]);
        assert_eq!(
            argv(&Command::Shell("a && b".into())),
            vec!["sh", "-c", "a && b"]
        );
    }

    #[test]
    fn netns_names_are_short_and_unique_per_task() {
        assert_eq!(
            netns_name("dcnet-", "prod_web.6f1c2a9e-0000-4000-8000-1234567890ab"),
            "dcnet-6f1c2a9e0000400080001234567890ab"
        );
    }

    #[test]
    fn our_own_start_time_is_read() {
        let me = std::process::id();
        assert!(process_start(me).is_some());
        let record = Record {
            assignment: assignment(json!({"id": "/x", "cmd": "x"}), vec![]),
            netns: None,
            ip: None,
            ip6: None,
            pid: Some(me),
            pid_start: process_start(me),
            cgroup: None,
            staged_ms: 0,
            started_ms: None,
            user: None,
        };
        assert!(still_running(&record));
        let reused = Record {
            pid_start: Some(1),
            ..record
        };
        assert!(!still_running(&reused), "same pid, other start time");
    }

    #[test]
    fn records_round_trip_and_prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tasks");
        let record = Record {
            assignment: assignment(json!({"id": "/x", "cmd": "x"}), vec![]),
            netns: Some("dcnet-1".into()),
            ip: Some("9.0.0.2".parse().unwrap()),
            ip6: None,
            pid: Some(1),
            pid_start: Some(2),
            cgroup: None,
            staged_ms: 3,
            started_ms: Some(4),
            user: Some("nobody".into()),
        };
        fs::create_dir_all(sandbox(&root, &record.assignment.task_id)).unwrap();
        save(&root, &record).unwrap();
        assert_eq!(load_all(&root), vec![record.clone()]);
        assert!(
            records_dir(&root).starts_with(dir.path()) && !records_dir(&root).starts_with(&root),
            "records are beside the sandboxes, not in one"
        );
        for i in 0..5 {
            fs::create_dir_all(root.join(format!("old.{i}"))).unwrap();
        }
        prune_sandboxes(&root, 2);
        let left = fs::read_dir(&root).unwrap().count();
        assert_eq!(
            left, 3,
            "the live task's sandbox and the 2 newest finished ones"
        );
        forget(&root, &record.assignment.task_id);
        assert!(load_all(&root).is_empty());
    }

    #[test]
    fn records_in_sandboxes_move_once_and_only_those_root_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tasks");
        let record = |id: &str| Record {
            assignment: Assignment {
                task_id: id.into(),
                ..assignment(json!({"id": "/x", "cmd": "x"}), vec![])
            },
            netns: None,
            ip: None,
            ip6: None,
            pid: None,
            pid_start: None,
            cgroup: Some("/sys/fs/cgroup/unified".into()),
            staged_ms: 1,
            started_ms: None,
            user: None,
        };
        let legacy = |r: &Record, owner: Option<u32>| {
            let sb = sandbox(&root, &r.assignment.task_id);
            fs::create_dir_all(&sb).unwrap();
            let path = sb.join(LEGACY_RECORD_FILE);
            fs::write(&path, serde_json::to_string(r).unwrap()).unwrap();
            if let Some(uid) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
            }
        };
        let ours = record("x.1");
        legacy(&ours, None);
        // Replaced by the task (its user owns the file), or naming another task's files.
        legacy(&record("x.2"), Some(65534));
        let mut lying = record("../../etc");
        lying.assignment.task_id = "../../etc".into();
        let sb = sandbox(&root, "x.3");
        fs::create_dir_all(&sb).unwrap();
        fs::write(
            sb.join(LEGACY_RECORD_FILE),
            serde_json::to_string(&lying).unwrap(),
        )
        .unwrap();
        assert_eq!(load_all(&root), vec![ours.clone()]);
        assert!(
            !sandbox(&root, "x.1").join(LEGACY_RECORD_FILE).exists(),
            "moved"
        );
        // Once moved, a task.json in a sandbox is the task's own file.
        legacy(&record("x.4"), None);
        assert_eq!(load_all(&root), vec![ours]);
    }
}
