//! Tasks in container images (`container.docker.image`): the image comes from the agent's
//! podman store, the container is run by runc, in the network namespace, cgroup and sandbox
//! the launcher gives every task.
//!
//! Why podman and runc, and not `podman run`: podman's store is where Debian users already
//! pull, load and build images (`podman pull`, `podman load`, `podman import`), and
//! `podman image mount` hands out an image's file system with use counts; but a container
//! run by podman belongs to its conmon and its own cgroups, out of the task's cgroup (where
//! the control-plane guard and the VIP hooks see it) and out of the launcher's supervision.
//! runc runs an OCI bundle exactly as described, joins the cgroup path it is given in the
//! cgroup v2 hierarchy also on hybrid hosts (crun refuses those), and stays in the
//! foreground as the task's process, so stopping, adopting and reaping a container task work
//! as for any task.
//!
//! Each task gets a bundle under `<state>/containers/<task id>`: `rootfs` (an overlay whose
//! lower layer is the mounted image and whose writable layer is the bundle's `upper`),
//! `config.json` (from [`spec`]) and `image-id` (what to unmount at the end). runc keeps its
//! own state under `<state>/runc`, so agents sharing a machine never see each other's
//! containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{CONTAINER_SANDBOX, Command, Image};

/// The container runtime of this agent: runc to run, podman's store for images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub runc: PathBuf,
    pub podman: PathBuf,
    /// E.g. `runc 1.1.5, podman 4.3.1`: what the node tells the scheduler it has.
    pub description: String,
}

/// Why a container task could not be prepared or released.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    Image(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {program}: {detail}")]
    Tool { program: String, detail: String },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io {
        action,
        path,
        source,
    }
}

/// Directories searched for the runtime's programs besides `PATH` (an agent started by an
/// init system may have a short one).
const PROGRAM_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Finds `name` on `PATH` or in the usual directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(PROGRAM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn first_line_version(program: &Path) -> Option<String> {
    let out = std::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    // "runc version 1.1.5+ds1", "podman version 4.3.1"
    line.split_whitespace().nth(2).map(str::to_owned)
}

impl Runtime {
    /// Finds runc and podman on this node.
    pub fn detect() -> Result<Self, String> {
        let missing = |name: &str| {
            format!(
                "{name} is not installed on this node (container apps need runc and podman: \
                 `apt-get install runc podman`)"
            )
        };
        let runc = find_program("runc").ok_or_else(|| missing("runc"))?;
        let podman = find_program("podman").ok_or_else(|| missing("podman"))?;
        let runc_version = first_line_version(&runc)
            .ok_or_else(|| format!("{} --version does not answer", runc.display()))?;
        let podman_version = first_line_version(&podman)
            .ok_or_else(|| format!("{} --version does not answer", podman.display()))?;
        Ok(Self {
            runc,
            podman,
            description: format!("runc {runc_version}, podman {podman_version}"),
        })
    }

    async fn tool(&self, program: &Path, args: &[&str]) -> Result<String, ContainerError> {
        let out = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| ContainerError::Tool {
                program: program.display().to_string(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(ContainerError::Tool {
                program: format!("{} {}", program.display(), args.join(" ")),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The image's id and settings, from podman's store.
    pub async fn inspect(&self, name: &str) -> Result<(String, ImageConfig), ContainerError> {
        let text = self
            .tool(
                &self.podman,
                &["image", "inspect", "--format", "json", name],
            )
            .await
            .map_err(|e| match e {
                ContainerError::Tool { detail, .. } => ContainerError::Image(format!(
                    "image {name:?} is not in this agent's podman store ({detail}); dcnet never \
                     pulls: put it there with `podman pull`, `podman load` or `podman import`"
                )),
                other => other,
            })?;
        parse_inspect(&text).map_err(|e| ContainerError::Image(format!("image {name:?}: {e}")))
    }

    /// Prepares the bundle of a task in `bundle`: mounts the image and the task's root file
    /// system over it, which it returns.
    pub async fn prepare(&self, bundle: &Path, image_id: &str) -> Result<PathBuf, ContainerError> {
        let (rootfs, upper, work) = (
            bundle.join("rootfs"),
            bundle.join("upper"),
            bundle.join("work"),
        );
        for dir in [&rootfs, &upper, &work] {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        // Written first: whatever is mounted from here on can be found and released.
        let id_file = bundle.join("image-id");
        std::fs::write(&id_file, image_id).map_err(io("writing", &id_file))?;
        let image = self
            .tool(&self.podman, &["image", "mount", image_id])
            .await?;
        let options = format!(
            "lowerdir={image},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| io("mounting the task's root file system at", &rootfs)(e.into()))?;
        Ok(rootfs)
    }

    /// Writes the bundle's `config.json`.
    pub fn write_spec(bundle: &Path, spec: &Value) -> Result<(), ContainerError> {
        let config = bundle.join("config.json");
        let text = serde_json::to_vec_pretty(spec).unwrap_or_default();
        std::fs::write(&config, text).map_err(io("writing", &config))
    }

    /// The command that runs the container `id` of `bundle` in the foreground: its process
    /// is the task's process, signals to it reach the container.
    pub fn run_command(&self, state: &Path, bundle: &Path, id: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.runc);
        cmd.arg("--root")
            .arg(state)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id);
        cmd
    }

    /// The command that runs `argv` in the running container `id` (COMMAND health checks).
    pub fn exec_command(&self, state: &Path, id: &str, argv: &[String]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.runc);
        cmd.arg("--root").arg(state).args(["exec", id]).args(argv);
        cmd
    }

    /// Releases what [`Runtime::prepare`] and a run left: runc's state of the container (and
    /// its cgroups), the root file system, the image mount, the bundle. Each step is tried
    /// whatever happened to the others, and again at the next start if the agent dies here.
    pub async fn release(&self, state: &Path, bundle: &Path, id: &str) {
        let state_arg = state.display().to_string();
        if let Err(e) = self
            .tool(&self.runc, &["--root", &state_arg, "delete", "--force", id])
            .await
        {
            // Never created, or already deleted: nothing of it is left.
            tracing::debug!(container = %id, error = %e, "runc delete");
        }
        release_mounts(bundle);
        if let Ok(image_id) = std::fs::read_to_string(bundle.join("image-id"))
            && let Err(e) = self
                .tool(&self.podman, &["image", "unmount", image_id.trim()])
                .await
        {
            tracing::warn!(container = %id, error = %e, "cannot unmount the task's image");
        }
        if let Err(e) = std::fs::remove_dir_all(bundle)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(bundle = %bundle.display(), error = %e, "cannot remove a container bundle");
        }
    }
}

/// Unmounts a bundle's root file system (lazily: a process still in it keeps it until it ends).
pub fn release_mounts(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            tracing::warn!(rootfs = %rootfs.display(), error = %e, "cannot unmount a container's root file system")
        }
    }
}

/// Where a task's bundle lives under the agent's state directory.
pub fn bundle_dir(state: &Path, task_id: &str) -> PathBuf {
    state.join("containers").join(task_id)
}

/// Where runc keeps its state of this agent's containers.
pub fn runc_state(state: &Path) -> PathBuf {
    state.join("runc")
}

/// An image's own settings (the `Config` of the OCI image configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// The id and settings in `podman image inspect --format json`'s answer.
pub fn parse_inspect(text: &str) -> Result<(String, ImageConfig), String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Inspected {
        id: String,
        #[serde(default)]
        config: Option<ImageConfig>,
    }
    let list: Vec<Inspected> =
        serde_json::from_str(text).map_err(|e| format!("podman's answer does not parse: {e}"))?;
    let first = list
        .into_iter()
        .next()
        .ok_or_else(|| "podman answered no image".to_owned())?;
    if first.id.is_empty() || !first.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("podman answered an image id {:?}", first.id));
    }
    Ok((first.id, first.config.unwrap_or_default()))
}

/// What the container runs, as Mesos runs a Docker image: `cmd` through the image's shell
/// (its entrypoint set aside), `args` after the image's entrypoint (in place of its
/// command), neither: the entrypoint and command of the image.
pub fn argv(image: &ImageConfig, command: &Command) -> Result<Vec<String>, String> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let out: Vec<String> = match command {
        Command::Shell(cmd) => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
        Command::Args(args) if !args.is_empty() => {
            entrypoint.into_iter().chain(args.iter().cloned()).collect()
        }
        Command::Args(_) => entrypoint
            .into_iter()
            .chain(image.cmd.clone().unwrap_or_default())
            .collect(),
    };
    if out.is_empty() {
        return Err(
            "the image has neither an entrypoint nor a command: give the app a cmd or args".into(),
        );
    }
    Ok(out)
}

/// A user in a container: ids, and the supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

/// Resolves `user` (`name`, `uid`, `name:group` or `uid:gid`) in the image's `/etc/passwd`
/// and `/etc/group` (their text given), then in the node's user database, as Mesos does.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<ContainerUser, String> {
    let (who, grp) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && (f[0] == who || f[2] == who)).then(|| {
            (
                f[0].to_owned(),
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5].to_owned(),
            )
        })
    });
    let (name, uid, gid, home) = match entry {
        Some((name, Some(uid), Some(gid), home)) => (Some(name), uid, gid, Some(home)),
        _ => match who.parse::<u32>() {
            Ok(uid) => (None, uid, uid, None),
            Err(_) => match nix::unistd::User::from_name(who).ok().flatten() {
                Some(u) => (Some(who.to_owned()), u.uid.as_raw(), u.gid.as_raw(), None),
                None => {
                    return Err(format!(
                        "there is no user {who:?} in the image's /etc/passwd nor on this node"
                    ));
                }
            },
        },
    };
    let gid = match grp {
        None => gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.len() >= 3 && f[0] == g)
                        .then(|| f[2].parse::<u32>().ok())
                        .flatten()
                })
                .ok_or_else(|| format!("there is no group {g:?} in the image's /etc/group"))?,
        },
    };
    let mut groups = vec![gid];
    if let Some(name) = &name {
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    Ok(ContainerUser {
        uid,
        gid,
        groups,
        home,
    })
}

/// The container's environment: the image's, then the task's (Mesos' and Marathon's
/// variables and the app's `env`, which win), with `PATH` from the image unless the app
/// sets one, and the sandbox where the container sees it.
pub fn environment(
    image: &ImageConfig,
    task: &BTreeMap<String, String>,
    app_env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut env: BTreeMap<String, String> = task.clone();
    for pair in image.env.iter().flatten() {
        if let Some((k, v)) = pair.split_once('=')
            && (!env.contains_key(k) || (k == "PATH" && !app_env.contains_key("PATH")))
        {
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    for key in ["MESOS_SANDBOX", "HOME"] {
        if !app_env.contains_key(key) {
            env.insert(key.into(), CONTAINER_SANDBOX.into());
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// What [`spec`] needs besides the image.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: ContainerUser,
    pub cwd: String,
    /// `/run/netns/<ns>`, or `None` on the host network.
    pub netns: Option<PathBuf>,
    /// The task's cgroup, relative to the cgroup v2 mount (runc's `cgroupsPath`).
    pub cgroup: Option<String>,
    pub sandbox: &'a Path,
    /// `(host file, path in the container)`: the task's resolv.conf and hosts.
    pub files: Vec<(PathBuf, &'static str)>,
    pub image: &'a Image,
    pub mem_mb: f64,
    pub hostname: String,
}

/// The OCI runtime configuration of a task's container: Docker's default confinement
/// (namespaces, capabilities, masked paths), the task's network namespace and cgroup, its
/// sandbox at [`CONTAINER_SANDBOX`] and its volumes.
pub fn spec(i: &SpecInputs<'_>) -> Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    // Root in the container gets Docker's default set; another user none.
    let caps: Vec<&str> = if i.user.uid == 0 {
        caps.to_vec()
    } else {
        Vec::new()
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": CONTAINER_SANDBOX, "type": "bind",
               "source": i.sandbox, "options": ["rbind", "rw"]}),
    ];
    for (source, target) in &i.files {
        mounts.push(
            json!({"destination": target, "type": "bind", "source": source,
                           "options": ["bind", "ro"]}),
        );
    }
    for v in &i.image.volumes {
        let target = if v.container_path.starts_with('/') {
            v.container_path.clone()
        } else {
            format!("{CONTAINER_SANDBOX}/{}", v.container_path)
        };
        mounts.push(
            json!({"destination": target, "type": "bind", "source": v.host_path,
                           "options": ["rbind", if v.read_only { "ro" } else { "rw" }]}),
        );
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    let mut sysctl = json!({});
    if let Some(netns) = &i.netns {
        namespaces.push(json!({"type": "network", "path": netns}));
        // Any user may bind any port in the task's own namespace, as for process tasks.
        sysctl = json!({"net.ipv4.ip_unprivileged_port_start": "0"});
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "sysctl": sysctl,
        "resources": {
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": (i.mem_mb * 1024.0 * 1024.0) as i64},
        },
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    });
    if let Some(cgroup) = &i.cgroup {
        linux["cgroupsPath"] = json!(cgroup);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": i.user.uid, "gid": i.user.gid, "additionalGids": i.user.groups},
            "args": i.argv,
            "env": i.env,
            "cwd": i.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            // No rlimits: the task keeps the agent's (raising one needs CAP_SYS_RESOURCE,
            // which an agent in a container may lack).
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

/// The task's cgroup relative to the cgroup v2 mount that holds it, as runc's `cgroupsPath`
/// wants it (runc creates it, and on a hybrid host the cgroup v1 ones of the same path).
pub fn cgroups_path(cgroup: &Path, cgroup2_mount: &Path) -> Option<String> {
    let rel = cgroup.strip_prefix(cgroup2_mount).ok()?;
    Some(format!("/{}", rel.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{ContainerKind, Volume};

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let v = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|s| s.to_string()).collect());
        ImageConfig {
            entrypoint: v(entrypoint),
            cmd: v(cmd),
            env: Some(vec![
                "PATH=/opt/bin:/bin".into(),
                "GREETING=hi".into(),
                "MODE=image".into(),
            ]),
            user: None,
            working_dir: None,
        }
    }

    #[test]
    fn commands_run_as_mesos_runs_docker_images() {
        let img = image(&["/entry"], &["serve", "-p", "80"]);
        assert_eq!(
            argv(&img, &Command::Args(vec![])).unwrap(),
            ["/entry", "serve", "-p", "80"]
        );
        assert_eq!(
            argv(&img, &Command::Args(vec!["x".into()])).unwrap(),
            ["/entry", "x"]
        );
        assert_eq!(
            argv(&img, &Command::Shell("a && b".into())).unwrap(),
            ["/bin/sh", "-c", "a && b"]
        );
        assert_eq!(
            argv(&image(&[], &["httpd"]), &Command::Args(vec![])).unwrap(),
            ["httpd"]
        );
        let err = argv(&image(&[], &[]), &Command::Args(vec![])).unwrap_err();
        assert!(err.contains("give the app a cmd or args"), "{err}");
    }

    #[test]
    fn the_task_environment_wins_but_path_comes_from_the_image() {
        let task: BTreeMap<String, String> = [
            ("PATH", "/usr/bin"),
            ("MODE", "app"),
            ("MESOS_SANDBOX", "/var/lib/x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let env = environment(&image(&[], &["x"]), &task, &BTreeMap::new());
        assert!(env.contains(&"PATH=/opt/bin:/bin".to_owned()), "{env:?}");
        assert!(env.contains(&"MODE=app".to_owned()), "{env:?}");
        assert!(env.contains(&"GREETING=hi".to_owned()), "{env:?}");
        assert!(
            env.contains(&format!("MESOS_SANDBOX={CONTAINER_SANDBOX}")),
            "{env:?}"
        );
        let own_path: BTreeMap<String, String> = [("PATH".to_owned(), "/mine".to_owned())].into();
        let mut task = task;
        task.insert("PATH".into(), "/mine".into());
        let env = environment(&image(&[], &["x"]), &task, &own_path);
        assert!(env.contains(&"PATH=/mine".to_owned()), "{env:?}");
    }

    #[test]
    fn users_resolve_in_the_image_first() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:1000:1001::/www:/bin/sh\n";
        let group = "root:x:0:\nweb:x:1001:\nlogs:x:1002:www,other\n";
        let www = resolve_user("www", passwd, group).unwrap();
        assert_eq!(
            (www.uid, www.gid, www.groups.clone()),
            (1000, 1001, vec![1001, 1002])
        );
        assert_eq!(www.home.as_deref(), Some("/www"));
        assert_eq!(resolve_user("1000", passwd, group).unwrap().uid, 1000);
        let ids = resolve_user("4242:4343", passwd, group).unwrap();
        assert_eq!((ids.uid, ids.gid), (4242, 4343));
        assert_eq!(resolve_user("www:logs", passwd, group).unwrap().gid, 1002);
        // Not in the image: the node's user database, as Mesos does.
        assert_eq!(resolve_user("nobody", "", "").unwrap().uid, 65534);
        assert!(resolve_user("no-such-user-anywhere", passwd, group).is_err());
        assert!(resolve_user("www:nogroup-here", passwd, group).is_err());
    }

    #[test]
    fn inspect_answers_parse() {
        let text = r#"[{"Id": "4df058cd91d9", "Config": {"Env": ["A=1"], "Cmd": ["/bin/httpd"], "User": "www"}}]"#;
        let (id, config) = parse_inspect(text).unwrap();
        assert_eq!(id, "4df058cd91d9");
        assert_eq!(config.cmd, Some(vec!["/bin/httpd".to_owned()]));
        assert_eq!(config.user.as_deref(), Some("www"));
        assert!(parse_inspect("[]").is_err());
        assert!(parse_inspect(r#"[{"Id": "../x"}]"#).is_err());
    }

    #[test]
    fn the_spec_confines_as_docker_does_in_the_tasks_namespace() {
        let image = Image {
            name: "localhost/web:1".into(),
            kind: ContainerKind::Docker,
            volumes: vec![
                Volume {
                    container_path: "data".into(),
                    host_path: "/srv/d".into(),
                    read_only: false,
                },
                Volume {
                    container_path: "/etc/conf".into(),
                    host_path: "/etc/c".into(),
                    read_only: true,
                },
            ],
        };
        let inputs = SpecInputs {
            argv: vec!["/bin/httpd".into()],
            env: vec!["A=1".into()],
            user: ContainerUser {
                uid: 1000,
                gid: 1000,
                groups: vec![1000],
                home: None,
            },
            cwd: "/".into(),
            netns: Some("/run/netns/dcnet-1".into()),
            cgroup: Some("/dcnet-tasks/web.1".into()),
            sandbox: Path::new("/var/lib/dcnet/tasks/web.1"),
            files: vec![("/etc/netns/dcnet-1/resolv.conf".into(), "/etc/resolv.conf")],
            image: &image,
            mem_mb: 64.0,
            hostname: "web".into(),
        };
        let s = spec(&inputs);
        assert_eq!(s["linux"]["cgroupsPath"], "/dcnet-tasks/web.1");
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 * 1024 * 1024);
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/run/netns/dcnet-1"})));
        assert!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .is_empty(),
            "no capabilities for a user"
        );
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        for d in [
            CONTAINER_SANDBOX,
            "/etc/resolv.conf",
            "/mnt/mesos/sandbox/data",
            "/etc/conf",
        ] {
            assert!(dests.contains(&d), "{d} in {dests:?}");
        }
        let conf = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/etc/conf")
            .unwrap();
        assert_eq!(conf["options"], json!(["rbind", "ro"]));
        // On the host network: no network namespace of its own, no sysctl.
        let host = spec(&SpecInputs {
            netns: None,
            ..inputs.clone()
        });
        assert!(
            !host["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        );
        assert_eq!(
            cgroups_path(
                Path::new("/sys/fs/cgroup/unified/a/b"),
                Path::new("/sys/fs/cgroup/unified")
            )
            .as_deref(),
            Some("/a/b")
        );
    }
}
