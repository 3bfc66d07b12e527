//! The launcher's loop: follows the leading scheduler's assignments for this node, starts and
//! stops tasks, runs their health checks and publishes their statuses.
//!
//! It acts only on a complete assignment set from a live leader: with no scheduler, tasks
//! keep running as they are (and a task that ends stays ended until a scheduler decides).
//! Tasks outlive the agent: on start it adopts the processes its records name, if they are
//! still the same processes, and reports the others as lost.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dcnet_overlay::api::{AttachRequest, DetachRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::confine::RunAs;
use super::container;
use super::guard::Keeper;
use super::health::{self, Confined, Outcome, Target, Tracker, Verdict};
use super::host_ports;
use super::process::{self, Record};
use crate::app::{Network, task_ports};
use crate::config::LauncherSettings;
use crate::facts::launched::{PREFIX, TaskState, TaskStatus};
use crate::facts::scheduler::{Assignment, leader};
use crate::facts::{Facts, FactsWatch};
use crate::gossip::Gossip;
use crate::lifecycle::{Services, Stage, Stopping};
use crate::overlay::OverlayService;

/// Finished tasks' sandboxes (logs) kept on disk.
const KEEP_SANDBOXES: usize = 50;

/// Attaches the control-plane guard to the tasks' cgroup, adopts the tasks left by an earlier
/// run and follows the scheduler until the control stage stops. The tasks keep running then;
/// the next start adopts them.
pub fn start(
    settings: LauncherSettings,
    (gossip, facts): (Arc<Gossip>, FactsWatch),
    (overlay, policy): (
        Option<Arc<OverlayService>>,
        Option<crate::policy::enforce::Enforcement>,
    ),
    root: PathBuf,
    host: IpAddr,
    (registry, services): (&mut prometheus_client::registry::Registry, &mut Services),
) -> Result<(), crate::Error> {
    let guard = match &settings.cgroup {
        Some(cgroup) => {
            let file = super::confine::hidden_dir(&root).join("guard-rules.json");
            let keeper = Keeper::start(cgroup, gossip.node_id(), file, registry)?;
            keeper.follow(&facts.peek());
            Some(keeper)
        }
        None => None,
    };
    std::fs::create_dir_all(&root).map_err(|source| crate::Error::State {
        action: "creating",
        path: root.clone(),
        source,
    })?;
    let (events_tx, events) = mpsc::channel(256);
    let (health_tx, health) = mpsc::channel(256);
    let launcher = Launcher {
        node_id: gossip.node_id().to_owned(),
        settings,
        gossip,
        overlay,
        policy,
        root,
        host,
        tasks: BTreeMap::new(),
        published: BTreeMap::new(),
        events_tx,
        health_tx,
        guard,
        term: 0,
        nft: crate::nft::program(),
        host_ports: None,
    };
    let stop = services.stopping(Stage::Control);
    services.spawn(
        Stage::Control,
        "launcher",
        launcher.run(facts, events, health, stop),
    );
    Ok(())
}

enum Event {
    Exited {
        task_id: String,
        message: String,
        success: bool,
    },
    Stopped {
        task_id: String,
    },
    /// Its readiness check passed.
    Ready {
        task_id: String,
    },
}

/// A task of this node.
struct Local {
    record: Record,
    state: TaskState,
    tracker: Option<Tracker>,
    message: Option<String>,
    /// With a readiness check: whether it passed.
    ready: Option<bool>,
    /// Health-check loops and the exit waiter, aborted when the task ends.
    jobs: Vec<JoinHandle<()>>,
    stopping: bool,
}

impl Drop for Local {
    fn drop(&mut self) {
        for job in &self.jobs {
            job.abort();
        }
    }
}

struct Launcher {
    node_id: String,
    settings: LauncherSettings,
    gossip: Arc<Gossip>,
    overlay: Option<Arc<OverlayService>>,
    /// Network policies: a task's addresses are admitted before it runs.
    policy: Option<crate::policy::enforce::Enforcement>,
    root: PathBuf,
    host: IpAddr,
    tasks: BTreeMap<String, Local>,
    published: BTreeMap<String, String>,
    events_tx: mpsc::Sender<Event>,
    health_tx: mpsc::Sender<Outcome>,
    guard: Option<Keeper>,
    /// The highest scheduler term followed.
    term: u64,
    /// `nft`, for host ports of overlay tasks; `None` where nftables is not installed.
    nft: Option<PathBuf>,
    /// The host-port table last applied (`None`: not yet since start).
    host_ports: Option<String>,
}

/// Limits what the task of namespace `netns` sends on its `eth0` to `bits` per second.
async fn limit_egress(netns: &str, bits: u64) -> Result<(), String> {
    let name = netns.to_owned();
    tokio::task::spawn_blocking(move || {
        dcnet_overlay::Netns::open(&name)?
            .netlink(|nl| async move { nl.set_egress_limit("eth0", Some(bits)).await })
    })
    .await
    .map_err(|e| format!("limiting the task's egress: {e}"))?
    .map_err(|e| format!("limiting the task's egress to {bits} bit/s: {e}"))
}

impl Launcher {
    async fn run(
        mut self,
        mut facts: FactsWatch,
        mut events: mpsc::Receiver<Event>,
        mut health: mpsc::Receiver<Outcome>,
        stop: Stopping,
    ) {
        self.adopt_existing().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        loop {
            let view = facts.current();
            if let Some(guard) = &self.guard {
                guard.follow(&view);
            }
            self.follow(&view).await;
            self.sync_host_ports().await;
            self.publish().await;
            tokio::select! {
                changed = facts.changed() => if changed.is_err() { break },
                Some(event) = events.recv() => self.on_event(event).await,
                Some(outcome) = health.recv() => self.on_health(outcome),
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(60) {
                        process::prune_sandboxes(&self.root, KEEP_SANDBOXES);
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        // The tasks stay; their records let the next run adopt them.
        self.tasks.clear();
    }

    /// Takes over the tasks recorded by an earlier run of the agent.
    async fn adopt_existing(&mut self) {
        for record in process::load_all(&self.root) {
            let task_id = record.assignment.task_id.clone();
            let has_readiness = !record.assignment.app.readiness.is_empty();
            let mut local = Local {
                record,
                state: TaskState::TaskRunning,
                tracker: None,
                message: None,
                // Running before this start: it passed its readiness check then, or its
                // deployment has moved on.
                ready: has_readiness.then_some(true),
                jobs: Vec::new(),
                stopping: false,
            };
            if process::still_running(&local.record) {
                let pid = local.record.pid.unwrap_or_default();
                info!(task = %task_id, pid, "adopted a task still running from the last run");
                let tx = self.events_tx.clone();
                let id = task_id.clone();
                local.jobs.push(tokio::spawn(async move {
                    let message = match process::wait_foreign(pid).await {
                        Ok(()) => {
                            "exited (its status is unknown: it was adopted after an agent restart)"
                                .to_owned()
                        }
                        Err(e) => format!("cannot watch the adopted process {pid}: {e}"),
                    };
                    let _ = tx
                        .send(Event::Exited {
                            task_id: id,
                            message,
                            success: false,
                        })
                        .await;
                }));
                self.start_checks(&mut local);
            } else {
                warn!(task = %task_id, "a recorded task's process is gone; reporting it failed");
                local.state = TaskState::TaskFailed;
                local.message = Some("its process was gone when the agent restarted".into());
                self.cleanup(&local.record).await;
            }
            self.tasks.insert(task_id, local);
        }
    }

    /// Starts what the leader assigns here and stops what it no longer does.
    async fn follow(&mut self, view: &Facts) {
        let Some(leader) = leader(view) else { return };
        // Fenced by term: a leader older than one already followed (deposed, not yet aware)
        // never starts or stops anything here.
        if leader.term < self.term {
            return;
        }
        if leader.term > self.term {
            info!(term = leader.term, leader = %leader.node_id, "following a new scheduler term");
            self.term = leader.term;
        }
        let Some(assignments) = leader.assignments else {
            return;
        };
        let mine: BTreeMap<&str, &Assignment> = assignments
            .iter()
            .filter(|(_, a)| a.node_id == self.node_id)
            .map(|(id, a)| (id.as_str(), &**a))
            .collect();
        for (id, a) in &mine {
            if !self.tasks.contains_key(*id) {
                self.launch((*a).clone()).await;
            }
        }
        let unassigned: Vec<String> = self
            .tasks
            .keys()
            .filter(|id| !mine.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in unassigned {
            let Some(local) = self.tasks.get_mut(&id) else {
                continue;
            };
            if local.state.is_terminal() {
                // The scheduler has seen the end (or never knew the task): done with it.
                process::forget(&self.root, &id);
                self.tasks.remove(&id);
            } else if !local.stopping {
                info!(task = %id, "the scheduler no longer wants this task; stopping it");
                self.begin_stop(&id, None);
            }
        }
    }

    async fn launch(&mut self, a: Assignment) {
        let task_id = a.task_id.clone();
        info!(task = %task_id, app = %a.app.id, "launching");
        let dir = process::sandbox(&self.root, &task_id);
        let ready = (!a.app.readiness.is_empty()).then_some(false);
        let mut local = Local {
            record: Record {
                netns: None,
                ip: None,
                ip6: None,
                pid: None,
                pid_start: None,
                cgroup: self.settings.cgroup.as_ref().map(|c| c.join(&task_id)),
                staged_ms: crate::unix_ms(),
                started_ms: None,
                user: Some(
                    a.app
                        .user
                        .clone()
                        .unwrap_or_else(|| self.settings.default_user.clone()),
                ),
                assignment: a,
            },
            state: TaskState::TaskStaging,
            tracker: None,
            message: None,
            ready,
            jobs: Vec::new(),
            stopping: false,
        };
        match self.start_process(&mut local, &dir).await {
            Ok(()) => {
                info!(task = %task_id, pid = ?local.record.pid, ip = ?local.record.ip, "task running");
            }
            Err(message) => {
                warn!(task = %task_id, error = %message, "task failed to start");
                local.state = TaskState::TaskFailed;
                local.message = Some(message);
                self.cleanup(&local.record).await;
            }
        }
        self.tasks.insert(task_id, local);
    }

    async fn start_process(
        &mut self,
        local: &mut Local,
        dir: &std::path::Path,
    ) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let a = local.record.assignment.clone();
        if self.nft.is_none()
            && a.host_ports.iter().any(|p| *p != 0)
            && a.app.network != Network::Host
        {
            return Err(
                "the app maps host ports, which need nftables' nft on this agent \
                        (apt-get install nftables)"
                    .into(),
            );
        }
        match &a.app.network {
            Network::Host => local.record.ip = Some(self.host),
            Network::Container(name) => {
                let overlay = self.overlay.as_ref().ok_or_else(|| {
                    format!("the app joins overlay {name:?} but the overlay is off on this node")
                })?;
                let netns = process::netns_name(&self.settings.netns_prefix, &a.task_id);
                // Recorded before it exists: an agent killed from here on finds the namespace
                // and the address in the record at its next start, and frees them.
                local.record.netns = Some(netns.clone());
                process::save(&self.root, &local.record).map_err(|e| e.to_string())?;
                let attached = overlay
                    .attach(AttachRequest {
                        container_id: a.task_id.clone(),
                        netns: netns.clone(),
                        ifname: "eth0".into(),
                        network: name.clone(),
                        create: true,
                        origin: None,
                    })
                    .await
                    .map_err(|e| format!("attaching to overlay {name:?}: {e}"))?;
                // The IPv4 address first: what Mesos-DNS and Marathon show as the task's IP.
                local.record.ip = attached
                    .address
                    .map(|a| IpAddr::V4(a.ip()))
                    .or(attached.address6.map(|a| IpAddr::V6(a.ip())));
                local.record.ip6 = attached.address.and(attached.address6).map(|a| a.ip());
                // Checked when the app was submitted; a value an older scheduler let through
                // fails the task with the reason rather than running it unlimited.
                let limit = crate::app::definition::egress_limit(&a.app.labels).map_err(|e| {
                    format!("label {}: {e}", crate::app::definition::EGRESS_MBPS_LABEL)
                })?;
                if let Some(bits) = limit {
                    limit_egress(&netns, bits).await?;
                }
                if let Some(policy) = &self.policy {
                    let addresses = [local.record.ip, local.record.ip6.map(IpAddr::V6)]
                        .into_iter()
                        .flatten()
                        .collect();
                    let (policy, app, labels) =
                        (policy.clone(), a.app.id.clone(), a.app.labels.clone());
                    tokio::task::spawn_blocking(move || policy.admit(&app, &labels, addresses))
                        .await
                        .map_err(|e| format!("admitting the task to the network policies: {e}"))?;
                }
            }
        }
        // Saved before the process exists: a crash now still leaves the namespace findable.
        process::save(&self.root, &local.record).map_err(|e| e.to_string())?;
        let started = match &a.app.image {
            Some(image) => self.start_container(local, image, dir).await?,
            None => {
                let run_as = RunAs::lookup(local.record.user.as_deref().unwrap_or("root"))?;
                fetch(&a, dir, &run_as).await?;
                let env = process::environment(&a, &self.host.to_string(), dir, &run_as.name);
                process::spawn(&local.record, &env, &self.root, run_as)
                    .map_err(|e| e.to_string())?
            }
        };
        local.record.pid = Some(started.pid);
        local.record.pid_start = started.pid_start;
        local.record.started_ms = Some(crate::unix_ms());
        process::save(&self.root, &local.record).map_err(|e| e.to_string())?;
        local.state = TaskState::TaskRunning;
        let tx = self.events_tx.clone();
        let task_id = a.task_id.clone();
        let mut child = started.child;
        local.jobs.push(tokio::spawn(async move {
            let (message, success) = match child.wait().await {
                Ok(status) => (format!("exited: {status}"), status.success()),
                Err(e) => (format!("cannot wait for the process: {e}"), false),
            };
            let _ = tx
                .send(Event::Exited {
                    task_id,
                    message,
                    success,
                })
                .await;
        }));
        self.start_checks(local);
        Ok(())
    }

    /// Prepares a container task's bundle from its image and starts runc on it.
    async fn start_container(
        &self,
        local: &mut Local,
        image: &crate::app::Image,
        dir: &std::path::Path,
    ) -> Result<process::Started, String> {
        let runtime = self.settings.containers.as_ref().ok_or_else(|| {
            "this agent runs no container apps: runc or podman is missing, or \
             launcher.containers is false"
                .to_owned()
        })?;
        let a = local.record.assignment.clone();
        let state = super::confine::hidden_dir(&self.root);
        let bundle = container::bundle_dir(&state, &a.task_id);
        let (image_id, config) = runtime
            .inspect(&image.name)
            .await
            .map_err(|e| e.to_string())?;
        let rootfs = runtime
            .prepare(&bundle, &image_id)
            .await
            .map_err(|e| e.to_string())?;
        let read = |path: &str| std::fs::read_to_string(rootfs.join(path)).unwrap_or_default();
        // The app's user, else the image's, else the launcher's default.
        let user_name = a
            .app
            .user
            .clone()
            .or_else(|| config.user.clone().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| self.settings.default_user.clone());
        let user = container::resolve_user(&user_name, &read("etc/passwd"), &read("etc/group"))
            .map_err(|e| format!("{e}; change the app's `user`"))?;
        local.record.user = Some(user_name.clone());
        process::save(&self.root, &local.record).map_err(|e| e.to_string())?;
        let run_as = RunAs {
            name: user_name.clone(),
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
        };
        fetch(&a, dir, &run_as).await?;
        let env = process::environment(&a, &self.host.to_string(), dir, &user_name);
        // The namespace's own resolv.conf and hosts where the overlay wrote them.
        let files = ["resolv.conf", "hosts"]
            .into_iter()
            .zip(["/etc/resolv.conf", "/etc/hosts"])
            .map(|(name, target)| {
                let own = local
                    .record
                    .netns
                    .as_ref()
                    .map(|ns| std::path::Path::new("/etc/netns").join(ns).join(name))
                    .filter(|p| p.is_file());
                (
                    own.unwrap_or_else(|| std::path::Path::new("/etc").join(name)),
                    target,
                )
            })
            .filter(|(source, _)| source.is_file())
            .collect();
        let cgroup = match (&local.record.cgroup, &self.settings.cgroup2_mount) {
            (Some(cgroup), Some(mount)) => container::cgroups_path(cgroup, mount),
            _ => None,
        };
        let inputs = container::SpecInputs {
            argv: container::argv(&config, &a.app.command)?,
            env: container::environment(&config, &env, &a.app.env),
            user,
            cwd: config
                .working_dir
                .clone()
                .filter(|w| w.starts_with('/'))
                .unwrap_or_else(|| crate::app::CONTAINER_SANDBOX.to_owned()),
            netns: local
                .record
                .netns
                .as_ref()
                .map(|ns| std::path::Path::new("/run/netns").join(ns)),
            cgroup,
            sandbox: dir,
            files,
            image,
            mem_mb: a.app.mem,
            hostname: a.app.task_name().chars().take(63).collect(),
        };
        container::Runtime::write_spec(&bundle, &container::spec(&inputs))
            .map_err(|e| e.to_string())?;
        let run = runtime.run_command(&container::runc_state(&state), &bundle, &a.task_id);
        process::spawn_runtime(&local.record, &self.root, run, &run_as).map_err(|e| e.to_string())
    }

    fn start_checks(&self, local: &mut Local) {
        let a = &local.record.assignment;
        if a.app.health_checks.is_empty() && local.ready != Some(false) {
            return;
        }
        if !a.app.health_checks.is_empty() {
            local.tracker = Some(Tracker::new(
                a.app.health_checks.clone(),
                local.record.started_ms.unwrap_or_else(crate::unix_ms),
            ));
        }
        let Some(ip) = local.record.ip else { return };
        let dir = process::sandbox(&self.root, &a.task_id);
        let user = local.record.user.as_deref().unwrap_or("root");
        let container = a.app.image.as_ref().and_then(|_| {
            let state = super::confine::hidden_dir(&self.root);
            let runtime = self.settings.containers.clone()?;
            Some((runtime, container::runc_state(&state)))
        });
        let run_as = match RunAs::lookup(user) {
            Ok(run_as) => run_as,
            // A container's user may exist only in its image: its checks run in it.
            Err(_) if container.is_some() => RunAs {
                name: user.to_owned(),
                uid: 0,
                gid: 0,
                groups: Vec::new(),
            },
            Err(e) => {
                warn!(task = %a.task_id, error = %e, "cannot run the task's health checks");
                return;
            }
        };
        let target = Target {
            task_id: a.task_id.clone(),
            ip,
            ports: task_ports(&a.app.network, &a.app.ports, &a.host_ports),
            env: process::environment(a, &self.host.to_string(), &dir, &run_as.name),
            confined: Some(Confined {
                record: local.record.clone(),
                root: self.root.clone(),
                run_as,
                container,
            }),
        };
        for (i, check) in a.app.health_checks.iter().enumerate() {
            local.jobs.push(tokio::spawn(health::run(
                i,
                check.clone(),
                target.clone(),
                self.health_tx.clone(),
            )));
        }
        if local.ready == Some(false) {
            for check in &a.app.readiness {
                let (check, target, tx) = (check.clone(), target.clone(), self.events_tx.clone());
                let task_id = a.task_id.clone();
                local.jobs.push(tokio::spawn(async move {
                    health::until_ready(check, target).await;
                    let _ = tx.send(Event::Ready { task_id }).await;
                }));
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Exited {
                task_id,
                message,
                success,
            } => {
                let Some(local) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if local.stopping {
                    return;
                }
                info!(task = %task_id, %message, "task ended");
                local.state = if success {
                    TaskState::TaskFinished
                } else {
                    TaskState::TaskFailed
                };
                local.message = Some(message);
                for job in local.jobs.drain(..) {
                    job.abort();
                }
                let record = local.record.clone();
                self.cleanup(&record).await;
            }
            Event::Stopped { task_id } => {
                let Some(local) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                local.stopping = false;
                local.state = if local.message.is_some() {
                    TaskState::TaskFailed
                } else {
                    TaskState::TaskKilled
                };
                info!(task = %task_id, state = local.state.as_str(), "task stopped");
            }
            Event::Ready { task_id } => {
                if let Some(local) = self.tasks.get_mut(&task_id)
                    && local.state == TaskState::TaskRunning
                {
                    local.ready = Some(true);
                    info!(task = %task_id, "task ready");
                }
            }
        }
    }

    fn on_health(&mut self, outcome: Outcome) {
        let Some(local) = self.tasks.get_mut(&outcome.task_id) else {
            return;
        };
        if local.state != TaskState::TaskRunning {
            return;
        }
        let Some(tracker) = local.tracker.as_mut() else {
            return;
        };
        let was = tracker.healthy();
        let verdict = tracker.record(outcome.check, &outcome.result, crate::unix_ms());
        let now = tracker.healthy();
        if was != now {
            info!(task = %outcome.task_id, healthy = ?now, result = ?outcome.result, "health changed");
        }
        if let Verdict::Kill(message) = verdict {
            warn!(task = %outcome.task_id, %message, "killing an unhealthy task");
            let id = outcome.task_id.clone();
            self.begin_stop(&id, Some(message));
        }
    }

    /// Stops a task in the background; `failure` marks it failed rather than killed. A task
    /// that was serving is first announced as killing (out of DNS and the VIPs everywhere)
    /// and signalled only after the drain time, so connections in flight to it are not
    /// refused by a node that has not heard yet.
    fn begin_stop(&mut self, task_id: &str, failure: Option<String>) {
        let Some(local) = self.tasks.get_mut(task_id) else {
            return;
        };
        local.stopping = true;
        let drain = if local.state == TaskState::TaskRunning {
            self.settings.drain
        } else {
            Duration::ZERO
        };
        local.state = TaskState::TaskKilling;
        local.message = failure;
        for job in local.jobs.drain(..) {
            job.abort();
        }
        let record = local.record.clone();
        // The app's taskKillGracePeriodSeconds, else the launcher's.
        let grace = record
            .assignment
            .app
            .kill_grace_secs
            .map_or(self.settings.kill_grace, |s| Duration::from_secs(s.into()));
        let overlay = self.overlay.clone();
        let tx = self.events_tx.clone();
        let id = task_id.to_owned();
        let (runtime, state) = (
            self.settings.containers.clone(),
            super::confine::hidden_dir(&self.root),
        );
        tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            process::stop(&record, grace).await;
            release_container(runtime.as_ref(), &state, &record).await;
            detach(overlay.as_deref(), &record).await;
            let _ = tx.send(Event::Stopped { task_id: id }).await;
        });
    }

    /// Makes the host-port table forward exactly the host ports of the live overlay tasks.
    async fn sync_host_ports(&mut self) {
        let mut forwards: Vec<host_ports::Forward> = self
            .tasks
            .values()
            .filter(|l| {
                matches!(
                    l.state,
                    TaskState::TaskStaging | TaskState::TaskRunning | TaskState::TaskKilling
                )
            })
            .flat_map(|l| host_ports::forwards(&l.record))
            .collect();
        forwards.sort();
        let script = host_ports::ruleset(self.host, &forwards);
        if self.host_ports.as_ref() == Some(&script) {
            return;
        }
        let Some(nft) = &self.nft else {
            // Nothing to forward and no nftables: no table can exist.
            if forwards.is_empty() {
                self.host_ports = Some(script);
            }
            return;
        };
        match crate::nft::apply(nft, "host-port", &script).await {
            Ok(()) => {
                info!(
                    forwards = forwards.len(),
                    "host ports forwarded to overlay tasks"
                );
                self.host_ports = Some(script);
            }
            Err(e) => {
                warn!(error = %e, "cannot update the host-port table; trying again at the next change or second");
                self.host_ports = None;
            }
        }
    }

    /// Releases what an ended task held: its overlay address and namespace, its cgroup.
    async fn cleanup(&self, record: &Record) {
        let state = super::confine::hidden_dir(&self.root);
        release_container(self.settings.containers.as_ref(), &state, record).await;
        detach(self.overlay.as_deref(), record).await;
        // The overlay deletes a namespace it recorded making; one made by an attach that was
        // cut short is only in the task's record.
        if let Some(netns) = &record.netns
            && let Err(e) = dcnet_overlay::Netns::delete_by_name(netns)
        {
            warn!(task = %record.assignment.task_id, %netns, error = %e, "cannot delete the task's namespace");
        }
        if let Some(cgroup) = &record.cgroup {
            process::remove_cgroup(cgroup).await;
        }
    }

    async fn publish(&mut self) {
        let mut wanted = BTreeMap::new();
        for (id, local) in &self.tasks {
            let a = &local.record.assignment;
            let status = TaskStatus {
                task_id: id.clone(),
                app_id: a.app.id.clone(),
                version: a.app.version.clone(),
                state: local.state,
                healthy: local.tracker.as_ref().and_then(Tracker::healthy),
                health_pending: local.tracker.as_ref().is_some_and(Tracker::pending),
                ip: local.record.ip,
                ip6: local.record.ip6,
                network: a.app.network.clone(),
                ports: a.app.ports.clone(),
                host_ports: a.host_ports.clone(),
                cpus: a.app.cpus,
                mem: a.app.mem,
                staged_ms: local.record.staged_ms,
                started_ms: local.record.started_ms,
                message: local.message.clone(),
                ready: local.ready,
            };
            wanted.insert(
                format!("{PREFIX}{id}"),
                serde_json::to_string(&status).unwrap_or_default(),
            );
        }
        for (key, value) in &wanted {
            if self.published.get(key) != Some(value) {
                self.gossip.publish(key, value).await;
            }
        }
        for key in self.published.keys() {
            if !wanted.contains_key(key) {
                self.gossip.delete(key).await;
            }
        }
        self.published = wanted;
    }
}

/// Downloads the app's `fetch` URIs into the sandbox, owned by `run_as`.
async fn fetch(a: &Assignment, dir: &std::path::Path, run_as: &RunAs) -> Result<(), String> {
    if a.app.fetch.is_empty() {
        return Ok(());
    }
    let (fetch, sandbox, user) = (a.app.fetch.clone(), dir.to_path_buf(), run_as.clone());
    tokio::task::spawn_blocking(move || super::fetch::all(&fetch, &sandbox, &user))
        .await
        .map_err(|e| format!("fetching: {e}"))?
}

/// Releases a container task's bundle, image mount and runc state (nothing for other tasks).
async fn release_container(
    runtime: Option<&container::Runtime>,
    state: &std::path::Path,
    record: &Record,
) {
    if record.assignment.app.image.is_none() {
        return;
    }
    let bundle = container::bundle_dir(state, &record.assignment.task_id);
    match runtime {
        Some(runtime) => {
            runtime
                .release(
                    &container::runc_state(state),
                    &bundle,
                    &record.assignment.task_id,
                )
                .await
        }
        // The runtime went away under a running container: free what needs no runtime.
        None => container::release_mounts(&bundle),
    }
}

async fn detach(overlay: Option<&OverlayService>, record: &Record) {
    let (Some(overlay), Some(_)) = (overlay, &record.netns) else {
        return;
    };
    let request = DetachRequest {
        container_id: record.assignment.task_id.clone(),
        ifname: "eth0".into(),
        network: None,
    };
    if let Err(e) = overlay.detach(request).await {
        warn!(task = %record.assignment.task_id, error = %e, "detaching the task from the overlay failed");
    }
}
