//! Marathon app definitions: the JSON users already write, validated into an [`App`].
//!
//! Validation walks the JSON by hand rather than through a derived deserializer so that every
//! problem is reported at once, each with its JSON path and what is expected, in Marathon's
//! own error shape (`{"message": "Object is not valid", "details": [{"path", "errors"}]}`).
//! Fields dcnet has no use for (`disk`, `fetch`, `backoffSeconds`, ...) are accepted and
//! reported back as ignored, so existing files work unchanged; fields that would change what
//! runs and that dcnet cannot honour (a Docker image, a host port on an overlay) are refused.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::constraint::Constraint;

/// Marathon's default health-check timings (seconds) and failure count.
const HC_GRACE: u32 = 300;
const HC_INTERVAL: u32 = 60;
const HC_TIMEOUT: u32 = 20;
const HC_MAX_FAILURES: u32 = 3;

/// An app as the scheduler keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// Absolute path, e.g. `/web` or `/prod/web`.
    pub id: String,
    pub command: Command,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub env: BTreeMap<String, String>,
    pub network: Network,
    pub ports: Vec<PortSpec>,
    /// Host networking only: use the ports as given instead of assigning free ones.
    pub require_ports: bool,
    pub health_checks: Vec<HealthCheck>,
    pub constraints: Vec<Constraint>,
    pub labels: BTreeMap<String, String>,
    /// How a new version replaces the tasks of the old one.
    #[serde(default)]
    pub upgrade: UpgradeStrategy,
    /// The user the tasks run as; `None`: the launcher's `default_user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Marathon's `acceptedResourceRoles`: the agent roles its tasks may run on (`*`:
    /// private agents; `slave_public`: public ones).
    #[serde(default = "default_roles", skip_serializing_if = "is_default_roles")]
    pub accepted_roles: Vec<String>,
    /// Marathon's `readinessChecks`: what a new task must answer before a deployment counts
    /// it ready (and stops an old one for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness: Vec<ReadinessCheck>,
    /// Marathon's `dependencies`: apps (absolute ids) that must run as asked before this
    /// one's tasks are launched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Marathon's `fetch` (and `uris`): what is downloaded into the sandbox before a task
    /// starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<FetchUri>,
    /// Marathon's `unreachableStrategy.inactiveAfterSeconds`: how long a task whose agent is
    /// down is waited for before it is replaced (0: at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreachable_secs: u32,
    /// Marathon's `taskKillGracePeriodSeconds`: between SIGTERM and SIGKILL when a task is
    /// stopped; `None`: the launcher's `kill_grace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_secs: Option<u32>,
    /// RFC 3339 time of the last change that affects how tasks run (Marathon's
    /// `versionInfo.lastConfigChangeAt`): tasks of another version are replaced.
    pub version: String,
    /// RFC 3339 time of the last change of `instances` alone, if later than `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled_at: Option<String>,
    /// `container.docker.image`: the task runs in this image through the agent's OCI
    /// runtime ([`crate::launcher::container`]); `None`: a process on the node's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
}

/// A container image a task runs in, and what of the node it sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image reference, e.g. `nginx:1.25` or `localhost/web:1`, as the agent's image store
    /// (podman's) names it.
    pub name: String,
    /// `container.type`: `DOCKER` or `MESOS` (Mesos' own containerizer); both run the same way
    /// here, and the API shows the type the app was given.
    pub kind: ContainerKind,
    /// `container.volumes`: host paths bind-mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

/// Marathon's `container.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ContainerKind {
    Docker,
    Mesos,
}

impl ContainerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKind::Docker => "DOCKER",
            ContainerKind::Mesos => "MESOS",
        }
    }
}

/// A host path mounted into a container (`{"containerPath", "hostPath", "mode"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Absolute inside the container; a relative path is under the sandbox
    /// (`/mnt/mesos/sandbox`), as Mesos mounts it.
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

/// Where Mesos mounts a container task's sandbox, and what `MESOS_SANDBOX` says in it.
pub const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";

/// The overlay that Marathon's bridge networking (`BRIDGE`, `container/bridge`) is mapped
/// to: DC/OS's default overlay.
pub const BRIDGE_OVERLAY: &str = "dcos";

/// A readiness check: `GET path` on one of the task's ports, every `interval_secs`, until it
/// answers one of `ready_codes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessCheck {
    pub name: String,
    pub tls: bool,
    pub path: String,
    /// The app's port by name (`portName`), as its index.
    pub port_index: usize,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    pub ready_codes: Vec<u16>,
}

fn parse_readiness(v: Option<&Value>, ports: &[PortSpec], p: &mut Problems) -> Vec<ReadinessCheck> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Vec::new();
    };
    let Some(list) = v.as_array() else {
        p.add(
            "/readinessChecks",
            "expected a list (Marathon takes one check)",
        );
        return Vec::new();
    };
    if list.len() > 1 {
        p.add(
            "/readinessChecks",
            "at most one readiness check, as in Marathon",
        );
    }
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate().take(1) {
        let at = format!("/readinessChecks/{i}");
        let Some(obj) = c.as_object() else {
            p.add(&at, "expected an object");
            continue;
        };
        let tls = match obj
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("HTTP")
        {
            "HTTP" => false,
            "HTTPS" => true,
            other => {
                p.add(
                    &format!("{at}/protocol"),
                    format!("{other:?}: expected HTTP or HTTPS"),
                );
                false
            }
        };
        let path = obj.get("path").and_then(Value::as_str).unwrap_or("/");
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace()) {
            p.add(
                &format!("{at}/path"),
                "expected a URL path such as \"/ready\"",
            );
        }
        let port_name = obj
            .get("portName")
            .and_then(Value::as_str)
            .unwrap_or("http-api");
        let Some(port_index) = ports
            .iter()
            .position(|x| x.name.as_deref() == Some(port_name))
        else {
            p.add(
                &format!("{at}/portName"),
                format!("the app has no port named {port_name:?}: name one of its ports so"),
            );
            continue;
        };
        let seconds = |key: &str, default: u32, p: &mut Problems| match obj.get(key) {
            None => default,
            Some(v) => match v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
            {
                Some(n) => n,
                None => {
                    p.add(
                        &format!("{at}/{key}"),
                        "expected a whole number of seconds above 0",
                    );
                    default
                }
            },
        };
        let ready_codes = match obj.get("httpStatusCodesForReady") {
            None => vec![200],
            Some(v) => match v.as_array().map(|a| {
                a.iter()
                    .map(|c| {
                        c.as_u64()
                            .and_then(|c| u16::try_from(c).ok())
                            .filter(|c| (100..600).contains(c))
                    })
                    .collect::<Option<Vec<u16>>>()
            }) {
                Some(Some(codes)) if !codes.is_empty() => codes,
                _ => {
                    p.add(
                        &format!("{at}/httpStatusCodesForReady"),
                        "expected a list of HTTP status codes, e.g. [200]",
                    );
                    vec![200]
                }
            },
        };
        out.push(ReadinessCheck {
            name: obj
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("readinessCheck")
                .to_owned(),
            tls,
            path: path.to_owned(),
            port_index,
            interval_secs: seconds("intervalSeconds", 30, p),
            timeout_secs: seconds("timeoutSeconds", 10, p),
            ready_codes,
        });
    }
    out
}

/// One URI of an app's `fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchUri {
    pub uri: String,
    /// Extract it when it is an archive (the default).
    pub extract: bool,
    /// Give it the execute bits.
    pub executable: bool,
    /// The file name in the sandbox (default: the URI's last segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

impl FetchUri {
    /// `uri` with Marathon's defaults.
    pub fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_owned(),
            extract: true,
            executable: false,
            output_file: None,
        }
    }

    /// The file it is fetched to in the sandbox.
    pub fn file_name(&self) -> String {
        if let Some(name) = &self.output_file {
            return name.clone();
        }
        let path = self.uri.split(['?', '#']).next().unwrap_or_default();
        path.rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("fetched")
            .to_owned()
    }
}

/// Whether `name` can be a file directly in the sandbox.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn parse_fetch(obj: &Map<String, Value>, p: &mut Problems) -> Vec<FetchUri> {
    let mut out = Vec::new();
    let scheme_ok = |uri: &str| {
        ["http://", "https://", "file://"]
            .iter()
            .any(|s| uri.starts_with(s))
    };
    let bad_scheme =
        "expected an http://, https:// or file:// URI (other fetchers are not supported)";
    for (i, item) in obj
        .get("fetch")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("/fetch/{i}");
        let Some(uri) = item.get("uri").and_then(Value::as_str) else {
            p.add(&format!("{at}/uri"), "is required: the URI to fetch");
            continue;
        };
        if !scheme_ok(uri) {
            p.add(&format!("{at}/uri"), bad_scheme);
            continue;
        }
        let flag = |key: &str, default: bool, p: &mut Problems| match item.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                p.add(&format!("{at}/{key}"), "expected true or false");
                default
            }
        };
        let mut f = FetchUri::new(uri);
        f.extract = flag("extract", true, p);
        f.executable = flag("executable", false, p);
        flag("cache", false, p);
        if let Some(name) = item.get("outputFile").and_then(Value::as_str) {
            if is_plain_file_name(name) {
                f.output_file = Some(name.to_owned());
            } else {
                p.add(
                    &format!("{at}/outputFile"),
                    "expected a file name in the sandbox (no `/`)",
                );
            }
        }
        if !is_plain_file_name(&f.file_name()) {
            p.add(
                &format!("{at}/uri"),
                "its last segment is not a file name; give outputFile",
            );
            continue;
        }
        out.push(f);
    }
    if obj
        .get("fetch")
        .is_some_and(|f| !f.is_array() && !f.is_null())
    {
        p.add("/fetch", "expected a list of {\"uri\": ...}");
    }
    for (i, uri) in obj
        .get("uris")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match uri.as_str() {
            Some(u) if scheme_ok(u) && is_plain_file_name(&FetchUri::new(u).file_name()) => {
                out.push(FetchUri::new(u));
            }
            _ => p.add(&format!("/uris/{i}"), bad_scheme),
        }
    }
    out
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_roles() -> Vec<String> {
    vec!["*".to_owned()]
}

fn is_default_roles(roles: &[String]) -> bool {
    roles == ["*"]
}

/// A cycle among the apps' dependencies, if there is one: the ids around it.
pub fn dependency_cycle(apps: &BTreeMap<String, App>) -> Option<Vec<String>> {
    // Depth-first, with the path walked so far.
    fn walk<'a>(
        id: &'a str,
        apps: &'a BTreeMap<String, App>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == id) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(id.to_owned());
            return Some(cycle);
        }
        if !done.insert(id) {
            return None;
        }
        path.push(id);
        for dep in apps
            .get(id)
            .map(|a| a.dependencies.as_slice())
            .unwrap_or_default()
        {
            if let Some(cycle) = walk(dep, apps, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    apps.keys()
        .find_map(|id| walk(id, apps, &mut Vec::new(), &mut done))
}

/// Whether `role` can be a Mesos role: `*`, or a name such as `slave_public`.
pub fn is_role(role: &str) -> bool {
    role == "*"
        || (!role.is_empty()
            && role.len() <= 63
            && !role.starts_with(['.', '-'])
            && role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
}

/// Marathon's `upgradeStrategy`: while a new version rolls out, at least
/// `minimum_health_capacity × instances` tasks stay ready (old ones are stopped only as new
/// ones pass their health checks), and at most `(1 + maximum_over_capacity) × instances` run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpgradeStrategy {
    pub minimum_health_capacity: f64,
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    /// Marathon's defaults: start every new task at once, stop old ones as new ones are ready.
    fn default() -> Self {
        Self {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

impl UpgradeStrategy {
    /// Tasks that must stay ready during a rollout of `instances`.
    pub fn min_ready(&self, instances: u32) -> usize {
        (f64::from(instances) * self.minimum_health_capacity).ceil() as usize
    }

    /// Tasks that may run at once during a rollout of `instances`.
    pub fn max_running(&self, instances: u32) -> usize {
        instances as usize + (f64::from(instances) * self.maximum_over_capacity).floor() as usize
    }
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// `cmd`: a shell command line, run with `sh -c`.
    Shell(String),
    /// `args`: an argument vector, executed directly.
    Args(Vec<String>),
}

/// The network a task joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The agent's own network namespace.
    Host,
    /// An overlay network, by name: the task gets its own namespace and address.
    Container(String),
}

/// A port the app declares: `portDefinitions` (host) or `container.portMappings` (overlay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// The port number: the container port on an overlay; the requested host port (0 = any)
    /// on the host network.
    pub number: u16,
    pub protocol: PortProtocol,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// On an overlay, `portMappings[].hostPort`: the agent's port forwarded to the container
    /// port (0: any free one). `None`: none (the task is reached at its own address). Bridge
    /// networking gives every mapping one, as Marathon does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
}

/// `tcp`, `udp` or both (`udp,tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
    Both,
}

impl PortProtocol {
    /// The protocol as Marathon and Mesos-DNS spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
            PortProtocol::Both => "udp,tcp",
        }
    }
}

/// A health check, run by the agent that runs the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub grace_period_secs: u32,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    /// Consecutive failures after which the task is killed (and replaced); 0 = never.
    pub max_consecutive_failures: u32,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Connect to the task's port `port_index` (or the fixed `port`).
    Tcp {
        port_index: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    /// `GET path` on the task's port `port_index` (or the fixed `port`); 2xx and 3xx are
    /// healthy. Over TLS with `tls` (Marathon's `HTTPS`: the certificate is not verified).
    Http {
        port_index: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        path: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tls: bool,
    },
    /// A shell command in the task's network namespace; exit status 0 is healthy.
    Command { command: String },
}

/// Why an app definition was refused: every problem, each with the JSON path it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub details: Vec<(String, String)>,
}

impl Invalid {
    /// Marathon's error body.
    pub fn to_json(&self) -> Value {
        let mut by_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (path, error) in &self.details {
            by_path.entry(path).or_default().push(error);
        }
        json!({
            "message": "Object is not valid",
            "details": by_path
                .into_iter()
                .map(|(path, errors)| json!({"path": path, "errors": errors}))
                .collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the app definition is not valid:")?;
        for (path, error) in &self.details {
            write!(f, "\n  {path}: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// An app that was accepted, and the fields that were ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub app: App,
    pub ignored: Vec<String>,
}

/// Collects problems while walking the JSON.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: &str, error: impl Into<String>) {
        self.0.push((path.to_owned(), error.into()));
    }
}

/// Top-level fields that dcnet reads.
const KNOWN: &[&str] = &[
    "id",
    "cmd",
    "args",
    "instances",
    "cpus",
    "mem",
    "env",
    "networks",
    "portDefinitions",
    "ports",
    "requirePorts",
    "container",
    "ipAddress",
    "healthChecks",
    "constraints",
    "labels",
    "upgradeStrategy",
    "user",
    "acceptedResourceRoles",
    "taskKillGracePeriodSeconds",
    "version",
    "fetch",
    "uris",
    "dependencies",
    "readinessChecks",
    "unreachableStrategy",
    // Read to be refused when they ask for something ([`refuse_unsupported`]).
    "secrets",
    "residency",
];

/// Fields of an app as the API returns it that say how it is doing, not what it is: a client
/// that sends back an app it read (marathon-python's `update_app` does) sends them too, and
/// Marathon ignores them without a word, as does this.
pub const STATUS: &[&str] = &[
    "versionInfo",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

/// Whether `name` can be a user name (the portable set of useradd, any case).
fn is_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Validates an app definition. `path_id`, from `PUT /v2/apps/{id}`, supplies or must match
/// the `id`; `version` is stamped on the result.
pub fn parse(value: &Value, path_id: Option<&str>, version: &str) -> Result<Parsed, Invalid> {
    let mut p = Problems::default();
    let Some(obj) = value.as_object() else {
        p.add("/", "expected a JSON object (an app definition)");
        return Err(Invalid { details: p.0 });
    };
    let ignored: Vec<String> = obj
        .keys()
        .filter(|k| !KNOWN.contains(&k.as_str()) && !STATUS.contains(&k.as_str()))
        .cloned()
        .collect();

    let id = match (obj.get("id"), path_id) {
        (Some(Value::String(s)), _) => normalize_id(s, &mut p, "/id"),
        (Some(_), _) => {
            p.add("/id", "expected a string such as \"/web\"");
            None
        }
        (None, Some(from_path)) => normalize_id(from_path, &mut p, "/id"),
        (None, None) => {
            p.add("/id", "is required, e.g. \"/web\"");
            None
        }
    };
    if let (Some(id), Some(from_path)) = (&id, path_id)
        && let Some(from_path) = normalize_id(from_path, &mut Problems::default(), "")
        && *id != from_path
    {
        p.add(
            "/id",
            format!("{id:?} does not match the app id in the URL ({from_path:?})"),
        );
    }

    let container = obj.get("container");
    let boxed = container
        .map(|c| parse_container(c, obj.get("ipAddress"), &mut p))
        .unwrap_or_default();
    let has_image = boxed.image.is_some();
    let command = match (obj.get("cmd"), obj.get("args")) {
        (Some(_), Some(_)) => {
            p.add("/cmd", "give either cmd or args, not both");
            None
        }
        (Some(Value::String(s)), None) if s.contains('\0') => {
            p.add(
                "/cmd",
                "contains a NUL byte, which no command line can carry",
            );
            None
        }
        (Some(Value::String(s)), None) if !s.trim().is_empty() => Some(Command::Shell(s.clone())),
        (Some(_), None) => {
            p.add("/cmd", "expected a non-empty shell command line");
            None
        }
        (None, Some(v)) => match string_list(v) {
            Some(args) if args.iter().any(|a| a.contains('\0')) => {
                let i = args.iter().position(|a| a.contains('\0')).unwrap_or(0);
                p.add(
                    &format!("/args/{i}"),
                    "contains a NUL byte, which no argument can carry",
                );
                None
            }
            Some(args) if !args.is_empty() || has_image => Some(Command::Args(args)),
            _ => {
                p.add("/args", "expected a non-empty array of strings");
                None
            }
        },
        // The image's entrypoint and command, as Docker runs it.
        (None, None) if has_image => Some(Command::Args(Vec::new())),
        (None, None) => {
            p.add("/cmd", "is required: the command the task runs (or args)");
            None
        }
    };

    let instances = match obj.get("instances") {
        None => 1,
        Some(v) => match v.as_u64().filter(|n| *n <= 10_000) {
            Some(n) => n as u32,
            None => {
                p.add("/instances", "expected an integer from 0 to 10000");
                0
            }
        },
    };
    let cpus = positive(obj.get("cpus"), 1.0, MAX_CPUS, "/cpus", &mut p, false);
    let mem = positive(obj.get("mem"), 128.0, MAX_MEM_MB, "/mem", &mut p, true);
    let env = string_map(obj.get("env"), "/env", &mut p, true);
    let labels = string_map(obj.get("labels"), "/labels", &mut p, false);
    let upgrade = parse_upgrade(obj.get("upgradeStrategy"), &mut p);
    let user = match obj.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if is_user_name(u) => Some(u.clone()),
        Some(_) => {
            p.add(
                "/user",
                "expected a user name of the nodes (1 to 32 of a-z, 0-9, '_', '-', '.', not starting with '-')",
            );
            None
        }
    };
    let accepted_roles = match obj.get("acceptedResourceRoles") {
        None | Some(Value::Null) => default_roles(),
        Some(v) => match string_list(v) {
            Some(roles) if roles.is_empty() => default_roles(),
            Some(roles) if roles.iter().all(|r| is_role(r)) => roles,
            _ => {
                p.add(
                    "/acceptedResourceRoles",
                    "expected a list of agent roles, e.g. [\"*\"] (private agents, the default) or [\"slave_public\"]",
                );
                default_roles()
            }
        },
    };
    let kill_grace_secs = match obj.get("taskKillGracePeriodSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n <= MAX_KILL_GRACE_SECS => Some(n),
            _ => {
                p.add(
                    "/taskKillGracePeriodSeconds",
                    format!("expected a whole number of seconds, 0 to {MAX_KILL_GRACE_SECS}"),
                );
                None
            }
        },
    };
    refuse_unsupported(obj, &mut p);
    let unreachable_secs = parse_unreachable(obj.get("unreachableStrategy"), &mut p);
    let fetch = parse_fetch(obj, &mut p);
    let dependencies = match obj.get("dependencies") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => match string_list(v) {
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, dep)| {
                    // Relative to the app's group, as in Marathon.
                    let group = id
                        .as_deref()
                        .and_then(|id| id.rsplit_once('/'))
                        .map_or("", |(g, _)| g);
                    let full = if dep.starts_with('/') {
                        dep.clone()
                    } else {
                        format!("{group}/{dep}")
                    };
                    normalize_id(&full, &mut p, &format!("/dependencies/{i}"))
                })
                .collect(),
            None => {
                p.add(
                    "/dependencies",
                    "expected a list of app ids, e.g. [\"/db\"]",
                );
                Vec::new()
            }
        },
    };
    if let Some(own) = &id
        && dependencies.contains(own)
    {
        p.add("/dependencies", "an app cannot depend on itself");
    }
    let network = match (obj.get("networks"), boxed.network) {
        (Some(_), Some(_)) => {
            p.add(
                "/container/docker/network",
                "give the network once: in networks, or (the older way) in container.docker.network",
            );
            None
        }
        (None, Some(legacy)) => Some(legacy),
        // Marathon 1.4's IP per task: `"ipAddress": {"networkName": "dcos"}`.
        (None, None) => match obj.get("ipAddress").filter(|v| !v.is_null()) {
            Some(a) => match a.get("networkName").and_then(Value::as_str) {
                Some(name) if !name.is_empty() => Some(Network::Container(name.to_owned())),
                _ => Some(Network::Container(BRIDGE_OVERLAY.into())),
            },
            None => Some(Network::Host),
        },
        (v, None) => parse_networks(v, &mut p),
    };
    let require_ports = match obj.get("requirePorts") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            p.add("/requirePorts", "expected true or false");
            false
        }
    };
    let ports_path = match &network {
        Some(Network::Container(_)) => "/container/portMappings",
        _ if obj.contains_key("portDefinitions") => "/portDefinitions",
        _ => "/ports",
    };
    let ports = match &network {
        Some(Network::Container(_)) => {
            if obj.contains_key("portDefinitions") {
                p.add(
                    "/portDefinitions",
                    "apps on a container network declare ports in container.portMappings",
                );
            }
            // Marathon's bridge networking forwards a host port to every mapping.
            let bridge = boxed.bridge
                || obj
                    .get("networks")
                    .and_then(|n| n.get(0))
                    .and_then(|n| n.get("mode"))
                    .and_then(Value::as_str)
                    == Some("container/bridge");
            let kind = PortsOf::Overlay { bridge };
            match (
                container.and_then(|c| c.get("portMappings")),
                boxed.mappings,
            ) {
                (Some(m), None) => parse_ports(Some(m), "/container/portMappings", kind, &mut p),
                (None, Some(m)) => {
                    parse_ports(Some(m), "/container/docker/portMappings", kind, &mut p)
                }
                (None, None) => Vec::new(),
                (Some(_), Some(_)) => {
                    p.add(
                        "/container/docker/portMappings",
                        "give the port mappings once: in container.portMappings, or (the older way) in container.docker.portMappings",
                    );
                    Vec::new()
                }
            }
        }
        _ => {
            if container.and_then(|c| c.get("portMappings")).is_some() || boxed.mappings.is_some() {
                p.add(
                    "/container/portMappings",
                    "portMappings need a container network; on the host network use portDefinitions",
                );
            }
            match (obj.get("portDefinitions"), obj.get("ports")) {
                (Some(defs), _) => {
                    parse_ports(Some(defs), "/portDefinitions", PortsOf::Host, &mut p)
                }
                (None, Some(Value::Array(numbers))) => {
                    let defs: Vec<Value> = numbers.iter().map(|n| json!({"port": n})).collect();
                    parse_ports(Some(&Value::Array(defs)), "/ports", PortsOf::Host, &mut p)
                }
                (None, Some(_)) => {
                    p.add("/ports", "expected an array of port numbers");
                    Vec::new()
                }
                (None, None) => Vec::new(),
            }
        }
    };
    check_unique_ports(&ports, ports_path, &network, require_ports, &mut p);
    let health_checks = parse_health_checks(obj.get("healthChecks"), ports.len(), &mut p);
    let readiness = parse_readiness(obj.get("readinessChecks"), &ports, &mut p);
    let constraints = match obj.get("constraints") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                Constraint::parse(c)
                    .map_err(|e| p.add(&format!("/constraints/{i}"), e))
                    .ok()
            })
            .collect(),
        Some(_) => {
            p.add(
                "/constraints",
                "expected an array such as [[\"hostname\", \"UNIQUE\"]]",
            );
            Vec::new()
        }
    };

    let at = format!("/labels/{EGRESS_MBPS_LABEL}");
    match egress_limit(&labels) {
        Err(why) => p.add(&at, why),
        Ok(Some(_)) if network == Some(Network::Host) => p.add(
            &at,
            "an egress limit needs the app's tasks on an overlay network (`networks`: \
             [{\"mode\": \"container\", \"name\": \"dcos\"}]): on the host network they \
             share the node's interfaces",
        ),
        Ok(_) => {}
    }

    if !p.0.is_empty() {
        return Err(Invalid { details: p.0 });
    }
    let (Some(id), Some(command), Some(network)) = (id, command, network) else {
        // Each None above added a problem.
        return Err(Invalid {
            details: vec![("/".into(), "invalid".into())],
        });
    };
    Ok(Parsed {
        app: App {
            id,
            command,
            instances,
            cpus,
            mem,
            env,
            network,
            ports,
            require_ports,
            health_checks,
            constraints,
            labels,
            upgrade,
            user,
            accepted_roles,
            readiness,
            dependencies,
            fetch,
            unreachable_secs,
            kill_grace_secs,
            version: version.to_owned(),
            scaled_at: None,
            image: boxed.image,
        },
        ignored,
    })
}

/// `upgradeStrategy`: two fractions, each defaulting to 1.
fn parse_upgrade(v: Option<&Value>, p: &mut Problems) -> UpgradeStrategy {
    let mut strategy = UpgradeStrategy::default();
    let Some(v) = v else { return strategy };
    let Some(obj) = v.as_object() else {
        p.add(
            "/upgradeStrategy",
            "expected an object such as {\"minimumHealthCapacity\": 0.5, \"maximumOverCapacity\": 0}",
        );
        return strategy;
    };
    for (key, field) in [
        (
            "minimumHealthCapacity",
            &mut strategy.minimum_health_capacity,
        ),
        ("maximumOverCapacity", &mut strategy.maximum_over_capacity),
    ] {
        match obj.get(key).map(Value::as_f64) {
            None => {}
            Some(Some(n)) if (0.0..=1.0).contains(&n) => *field = n,
            Some(_) => p.add(
                &format!("/upgradeStrategy/{key}"),
                "expected a number from 0 to 1",
            ),
        }
    }
    if strategy.minimum_health_capacity == 1.0 && strategy.maximum_over_capacity == 0.0 {
        p.add(
            "/upgradeStrategy",
            "with minimumHealthCapacity 1 and maximumOverCapacity 0 no old task may stop before a \
             new one runs, and no new one may start: lower the first or raise the second",
        );
    }
    strategy
}

/// An app id as an absolute path (`web/` → `/web`), without checking it.
pub fn absolute_id(id: &str) -> String {
    format!("/{}", id.trim_matches('/'))
}

/// Normalises an app id to an absolute path, checking Marathon's rules for each segment.
fn normalize_id(id: &str, p: &mut Problems, path: &str) -> Option<String> {
    let trimmed = id.trim_matches('/');
    if trimmed.is_empty() {
        p.add(
            path,
            format!("{id:?} is not an app id: expected e.g. \"/web\""),
        );
        return None;
    }
    if trimmed.len() + 1 > MAX_ID_LEN {
        p.add(
            path,
            format!(
                "is {} characters long; at most {MAX_ID_LEN}: a task's id (the app's and 37 more) \
                 names its files, cgroup and namespace, which must stay under 255",
                trimmed.len() + 1
            ),
        );
        return None;
    }
    for segment in trimmed.split('/') {
        let ok = !segment.is_empty()
            && segment.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            p.add(
                path,
                format!(
                    "{id:?}: path segment {segment:?} must be lowercase letters, digits, '-' and \
                     '.', not starting or ending with '-' or '.', at most 63 between dots (it \
                     becomes a DNS label)"
                ),
            );
            return None;
        }
    }
    Some(format!("/{trimmed}"))
}

/// Longest app id, its leading '/' included.
pub const MAX_ID_LEN: usize = 200;
/// Largest `cpus` a task may ask for: more than any machine has.
const MAX_CPUS: f64 = 4096.0;
/// A task of a lost agent waits at most a week for it before it is replaced.
const MAX_UNREACHABLE_SECS: u32 = 7 * 24 * 3600;
/// A stopping task waits at most this long for its SIGKILL (an hour).
const MAX_KILL_GRACE_SECS: u32 = 3600;
/// Largest `mem` (MiB) a task may ask for: 64 TiB.
const MAX_MEM_MB: f64 = 64.0 * 1024.0 * 1024.0;

/// The app label that limits what each of its tasks sends, in Mbit/s (paced by a token bucket
/// on the task's interface: `dcnet_overlay::shaping`).
pub const EGRESS_MBPS_LABEL: &str = "DCNET_EGRESS_MBPS";
/// The largest egress limit, in Mbit/s (100 Gbit/s).
const MAX_EGRESS_MBPS: u64 = 100_000;

/// The egress limit `labels` set, in bit/s (`None`: unlimited).
pub fn egress_limit(labels: &BTreeMap<String, String>) -> Result<Option<u64>, String> {
    let Some(value) = labels.get(EGRESS_MBPS_LABEL) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(mbps) if (1..=MAX_EGRESS_MBPS).contains(&mbps) => Ok(Some(mbps * 1_000_000)),
        _ => Err(format!(
            "expected whole Mbit/s from 1 to {MAX_EGRESS_MBPS}, e.g. \"50\", not {value:?}"
        )),
    }
}

/// A positive number with a default, at most `max`; `zero_ok` accepts 0.
fn positive(
    v: Option<&Value>,
    default: f64,
    max: f64,
    path: &str,
    p: &mut Problems,
    zero_ok: bool,
) -> f64 {
    match v {
        None => default,
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() && (n > 0.0 || (zero_ok && n == 0.0)) && n <= max => n,
            _ => {
                let low = if zero_ok { "0 or more" } else { "above 0" };
                p.add(path, format!("expected a number {low}, at most {max}"));
                default
            }
        },
    }
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn string_map(
    v: Option<&Value>,
    path: &str,
    p: &mut Problems,
    env_names: bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return out };
    let Some(obj) = v.as_object() else {
        p.add(path, "expected an object of string values");
        return out;
    };
    for (k, v) in obj {
        match v {
            Value::String(s) => {
                if env_names
                    && (k.is_empty() || k.contains('=') || k.contains('\0') || s.contains('\0'))
                {
                    p.add(
                        &format!("{path}/{k}"),
                        "not a valid environment variable (no '=' or NUL, not empty)",
                    );
                }
                out.insert(k.clone(), s.clone());
            }
            Value::Object(o) if o.contains_key("secret") => p.add(
                &format!("{path}/{k}"),
                "secret references are not supported; give the value as a string",
            ),
            _ => p.add(&format!("{path}/{k}"), "expected a string"),
        }
    }
    out
}

fn parse_networks(v: Option<&Value>, p: &mut Problems) -> Option<Network> {
    let Some(v) = v else {
        return Some(Network::Host);
    };
    let Some(list) = v.as_array() else {
        p.add(
            "/networks",
            "expected an array such as [{\"mode\": \"container\", \"name\": \"dcos\"}]",
        );
        return None;
    };
    match list.as_slice() {
        [] => Some(Network::Host),
        [one] => {
            let mode = one.get("mode").and_then(Value::as_str).unwrap_or("host");
            match mode {
                "host" => Some(Network::Host),
                "container" => match one.get("name").and_then(Value::as_str) {
                    Some(name) if !name.is_empty() => Some(Network::Container(name.to_owned())),
                    _ => {
                        p.add(
                            "/networks/0/name",
                            "a container network needs the overlay's name, e.g. \"dcos\"",
                        );
                        None
                    }
                },
                // Marathon's bridge: here, DC/OS's default overlay.
                "container/bridge" => Some(Network::Container(BRIDGE_OVERLAY.into())),
                other => {
                    p.add(
                        "/networks/0/mode",
                        format!(
                            "{other:?} is not a network mode: expected \"host\" or \"container\""
                        ),
                    );
                    None
                }
            }
        }
        _ => {
            p.add("/networks", "a task joins one network; give exactly one");
            None
        }
    }
}

/// What `container` says: the image and volumes, and the older Marathon places of the network
/// and port mappings (`container.docker.network`, `container.docker.portMappings`).
#[derive(Default)]
struct Boxed<'a> {
    image: Option<Image>,
    network: Option<Network>,
    mappings: Option<&'a Value>,
    /// `docker.network` is `BRIDGE`.
    bridge: bool,
}

/// Whether `name` can be an image reference (`[registry/]path[:tag][@digest]`).
fn is_image_ref(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '/', ':', '@'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
}

/// `ip_address`: the app's `ipAddress`, where the older format names a `USER` network.
fn parse_container<'a>(c: &'a Value, ip_address: Option<&Value>, p: &mut Problems) -> Boxed<'a> {
    let mut out = Boxed::default();
    let Some(obj) = c.as_object() else {
        p.add("/container", "expected an object");
        return out;
    };
    let kind = match obj.get("type").and_then(Value::as_str) {
        None | Some("MESOS") => ContainerKind::Mesos,
        Some("DOCKER") => ContainerKind::Docker,
        Some(other) => {
            p.add(
                "/container/type",
                format!("{other:?} is not a container type: expected \"DOCKER\" or \"MESOS\""),
            );
            ContainerKind::Mesos
        }
    };
    let docker = obj.get("docker").and_then(Value::as_object);
    if obj
        .get("docker")
        .is_some_and(|d| !d.is_object() && !d.is_null())
    {
        p.add(
            "/container/docker",
            "expected an object such as {\"image\": \"nginx\"}",
        );
    }
    let image = match docker.and_then(|d| d.get("image")) {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if is_image_ref(name) => Some(name.clone()),
        Some(_) => {
            p.add(
                "/container/docker/image",
                "expected an image reference such as \"nginx:1.25\" or \"localhost/web:1\"",
            );
            None
        }
    };
    if kind == ContainerKind::Docker
        && image.is_none()
        && docker.is_none_or(|d| !d.contains_key("image"))
    {
        p.add(
            "/container/docker/image",
            "a DOCKER container needs an image, e.g. {\"docker\": {\"image\": \"nginx\"}}",
        );
    }
    if let Some(d) = docker {
        for (key, why) in [
            ("privileged", "privileged containers are not supported"),
            (
                "forcePullImage",
                "dcnet never pulls: images come from each agent's podman store (podman pull or podman load there)",
            ),
        ] {
            if d.get(key).is_some_and(|v| v.as_bool() == Some(true)) {
                p.add(
                    &format!("/container/docker/{key}"),
                    format!("{why}; remove {key} or set it to false"),
                );
            }
        }
        if d.get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            p.add(
                "/container/docker/parameters",
                "docker run parameters are not supported: dcnet runs images with runc, not docker",
            );
        }
        out.network = match d.get("network").and_then(Value::as_str) {
            None => None,
            Some("HOST") => Some(Network::Host),
            Some("BRIDGE") => {
                out.bridge = true;
                Some(Network::Container(BRIDGE_OVERLAY.into()))
            }
            Some("USER") => Some(Network::Container(
                ip_address
                    .and_then(|a| a.get("networkName"))
                    .and_then(Value::as_str)
                    .unwrap_or(BRIDGE_OVERLAY)
                    .to_owned(),
            )),
            Some(other) => {
                p.add(
                    "/container/docker/network",
                    format!("{other:?}: expected \"HOST\", \"BRIDGE\" or \"USER\""),
                );
                None
            }
        };
        out.mappings = d.get("portMappings").filter(|v| !v.is_null());
    }
    let volumes = parse_volumes(obj.get("volumes"), p);
    if !volumes.is_empty() && image.is_none() {
        p.add(
            "/container/volumes",
            "volumes need a container image (container.docker.image): a task without one sees \
             the node's file system, read-only but for its sandbox",
        );
    }
    out.image = image.map(|name| Image {
        name,
        kind,
        volumes,
    });
    out
}

fn parse_volumes(v: Option<&Value>, p: &mut Problems) -> Vec<Volume> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Vec::new();
    };
    let Some(list) = v.as_array() else {
        p.add(
            "/container/volumes",
            "expected a list such as [{\"containerPath\": \"/data\", \"hostPath\": \"/srv/data\", \"mode\": \"RO\"}]",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, one) in list.iter().enumerate() {
        let at = format!("/container/volumes/{i}");
        let Some(o) = one.as_object() else {
            p.add(&at, "expected an object");
            continue;
        };
        if o.contains_key("persistent") || o.contains_key("external") || o.contains_key("secret") {
            p.add(
                &at,
                "persistent, external and secret volumes are not supported; give a hostPath",
            );
            continue;
        }
        let container_path = match o.get("containerPath").and_then(Value::as_str) {
            Some(c) if !c.is_empty() && !c.contains('\0') && !c.split('/').any(|s| s == "..") => c,
            _ => {
                p.add(
                    &format!("{at}/containerPath"),
                    "expected a path without '..': absolute in the container, or relative to the sandbox",
                );
                continue;
            }
        };
        let host_path = match o.get("hostPath").and_then(Value::as_str) {
            Some(h)
                if h.starts_with('/') && !h.contains('\0') && !h.split('/').any(|s| s == "..") =>
            {
                h
            }
            _ => {
                p.add(
                    &format!("{at}/hostPath"),
                    "expected an absolute path on the agent without '..', e.g. \"/srv/data\"",
                );
                continue;
            }
        };
        let read_only = match o.get("mode").and_then(Value::as_str) {
            None | Some("RW") => false,
            Some("RO") => true,
            Some(_) => {
                p.add(&format!("{at}/mode"), "expected \"RO\" or \"RW\"");
                continue;
            }
        };
        out.push(Volume {
            container_path: container_path.to_owned(),
            host_path: host_path.to_owned(),
            read_only,
        });
    }
    out
}

/// Fields that change how or when tasks run and that dcnet does not do yet: refused when
/// they ask for something (an empty list or Marathon's default is accepted, so definitions
/// exported from Marathon keep working), never silently dropped.
fn refuse_unsupported(obj: &Map<String, Value>, p: &mut Problems) {
    let non_empty = |key: &str| {
        obj.get(key).is_some_and(|v| match v {
            Value::Null => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        })
    };
    for (key, why) in [
        ("secrets", "secrets are not supported yet"),
        ("residency", "resident (stateful) tasks are not supported"),
    ] {
        if non_empty(key) {
            p.add(&format!("/{key}"), format!("{why}; remove {key}"));
        }
    }
}

/// Marathon's `unreachableStrategy`: how long after its agent is found down a task is
/// replaced (`inactiveAfterSeconds`; default 0, at once). `expungeAfterSeconds` must not be
/// shorter; the old task is forgotten when it is replaced (its agent stops it if it comes
/// back). `"disabled"` (never replace) is refused: dcnet has no resident tasks.
fn parse_unreachable(v: Option<&Value>, p: &mut Problems) -> u32 {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return 0;
    };
    let Some(obj) = v.as_object() else {
        p.add(
            "/unreachableStrategy",
            "expected {\"inactiveAfterSeconds\": N, \"expungeAfterSeconds\": M}; \"disabled\" (never \
             replace a task) is not supported",
        );
        return 0;
    };
    let seconds = |key: &str, p: &mut Problems| match obj.get(key) {
        None => Some(0),
        Some(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n <= MAX_UNREACHABLE_SECS => Some(n),
            _ => {
                p.add(
                    &format!("/unreachableStrategy/{key}"),
                    format!("expected a whole number of seconds, 0 to {MAX_UNREACHABLE_SECS}"),
                );
                None
            }
        },
    };
    let inactive = seconds("inactiveAfterSeconds", p).unwrap_or(0);
    let expunge = seconds("expungeAfterSeconds", p).unwrap_or(0);
    if obj.contains_key("expungeAfterSeconds") && expunge < inactive {
        p.add(
            "/unreachableStrategy/expungeAfterSeconds",
            "must be at least inactiveAfterSeconds",
        );
    }
    inactive
}

/// Whose ports [`parse_ports`] reads: the host network's (`portDefinitions`) or an overlay's
/// (`portMappings`, with bridge networking's default host ports).
#[derive(Clone, Copy)]
enum PortsOf {
    Host,
    Overlay { bridge: bool },
}

fn parse_ports(v: Option<&Value>, path: &str, of: PortsOf, p: &mut Problems) -> Vec<PortSpec> {
    let Some(v) = v else { return Vec::new() };
    let Some(list) = v.as_array() else {
        p.add(path, "expected an array of port objects");
        return Vec::new();
    };
    let container = matches!(of, PortsOf::Overlay { .. });
    let number_key = if container { "containerPort" } else { "port" };
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{path}/{i}");
        let Some(obj) = entry.as_object() else {
            p.add(&at, "expected an object");
            continue;
        };
        let number = match obj.get(number_key) {
            None => 0,
            Some(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(n) => n,
                None => {
                    p.add(
                        &format!("{at}/{number_key}"),
                        "expected a port number from 0 to 65535",
                    );
                    continue;
                }
            },
        };
        let mut host_port = None;
        if let PortsOf::Overlay { bridge } = of {
            if number == 0 {
                p.add(
                    &format!("{at}/containerPort"),
                    "is required on an overlay: the port the task listens on",
                );
            }
            host_port = match obj.get("hostPort") {
                None | Some(Value::Null) => bridge.then_some(0),
                Some(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(n) => Some(n),
                    None => {
                        p.add(
                            &format!("{at}/hostPort"),
                            "expected a port number from 0 (any free one) to 65535",
                        );
                        None
                    }
                },
            };
        }
        let protocol = match obj.get("protocol").and_then(Value::as_str) {
            None | Some("tcp") => PortProtocol::Tcp,
            Some("udp") => PortProtocol::Udp,
            Some("udp,tcp") | Some("tcp,udp") => PortProtocol::Both,
            Some(other) => {
                p.add(
                    &format!("{at}/protocol"),
                    format!("{other:?}: expected \"tcp\", \"udp\" or \"udp,tcp\""),
                );
                PortProtocol::Tcp
            }
        };
        let name = match obj.get("name") {
            None => None,
            Some(Value::String(s))
                if !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(s.clone())
            }
            Some(_) => {
                p.add(
                    &format!("{at}/name"),
                    "expected a name of letters, digits, '-' and '_'",
                );
                None
            }
        };
        let labels = string_map(obj.get("labels"), &format!("{at}/labels"), p, false);
        out.push(PortSpec {
            number,
            protocol,
            name,
            labels,
            host_port,
        });
    }
    out
}

fn check_unique_ports(
    ports: &[PortSpec],
    path: &str,
    network: &Option<Network>,
    require_ports: bool,
    p: &mut Problems,
) {
    let fixed = matches!(network, Some(Network::Container(_))) || require_ports;
    let mut seen = BTreeMap::new();
    let mut seen_host = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        if let Some(h) = port.host_port.filter(|h| *h != 0)
            && seen_host.insert(h, i).is_some()
        {
            p.add(
                &format!("{path}/{i}/hostPort"),
                format!("host port {h} is mapped twice"),
            );
        }
        if fixed && port.number != 0 && seen.insert(port.number, i).is_some() {
            p.add(
                &format!("{path}/{i}"),
                format!("port {} is declared twice", port.number),
            );
        }
        if let Some(name) = &port.name
            && ports[..i].iter().any(|q| q.name.as_ref() == Some(name))
        {
            p.add(
                &format!("{path}/{i}/name"),
                format!("{name:?} is used twice"),
            );
        }
    }
}

fn parse_health_checks(v: Option<&Value>, port_count: usize, p: &mut Problems) -> Vec<HealthCheck> {
    let Some(v) = v else { return Vec::new() };
    let Some(list) = v.as_array() else {
        p.add("/healthChecks", "expected an array of health checks");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("/healthChecks/{i}");
        let Some(obj) = entry.as_object() else {
            p.add(&at, "expected an object");
            continue;
        };
        let seconds = |key: &str, default: u32, p: &mut Problems| match obj.get(key) {
            None => default,
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => n,
                None => {
                    p.add(&format!("{at}/{key}"), "expected a whole number of seconds");
                    default
                }
            },
        };
        let grace_period_secs = seconds("gracePeriodSeconds", HC_GRACE, p);
        let interval_secs = seconds("intervalSeconds", HC_INTERVAL, p).max(1);
        let timeout_secs = seconds("timeoutSeconds", HC_TIMEOUT, p).max(1);
        let max_consecutive_failures = seconds("maxConsecutiveFailures", HC_MAX_FAILURES, p);
        let port_index = match obj.get("portIndex") {
            None => 0,
            Some(v) => match v.as_u64() {
                Some(n) => n as usize,
                None => {
                    p.add(
                        &format!("{at}/portIndex"),
                        "expected an index into the app's ports",
                    );
                    0
                }
            },
        };
        let protocol = obj
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("HTTP");
        // Marathon's `port`: a fixed port instead of one of the app's, e.g. a sidecar's.
        let port = match obj.get("port") {
            None | Some(Value::Null) => None,
            Some(v) => match v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
            {
                Some(n) if obj.contains_key("portIndex") => {
                    p.add(
                        &format!("{at}/port"),
                        format!("give either port ({n}) or portIndex, not both"),
                    );
                    None
                }
                Some(n) => Some(n),
                None => {
                    p.add(&format!("{at}/port"), "expected a port number, 1 to 65535");
                    None
                }
            },
        };
        let needs_port = |p: &mut Problems| {
            if port.is_none() && port_index >= port_count {
                p.add(
                    &format!("{at}/portIndex"),
                    format!("{port_index} is out of range: the app declares {port_count} port(s)"),
                );
            }
        };
        let kind = match protocol {
            "TCP" | "MESOS_TCP" => {
                needs_port(p);
                CheckKind::Tcp { port_index, port }
            }
            "HTTP" | "MESOS_HTTP" | "HTTPS" | "MESOS_HTTPS" => {
                needs_port(p);
                let path = obj.get("path").and_then(Value::as_str).unwrap_or("/");
                if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace()) {
                    p.add(
                        &format!("{at}/path"),
                        "expected a URL path such as \"/health\"",
                    );
                }
                CheckKind::Http {
                    port_index,
                    port,
                    path: path.to_owned(),
                    tls: protocol.ends_with("HTTPS"),
                }
            }
            "COMMAND" => match obj
                .get("command")
                .and_then(|c| c.get("value"))
                .and_then(Value::as_str)
            {
                Some(c) if !c.trim().is_empty() => CheckKind::Command {
                    command: c.to_owned(),
                },
                _ => {
                    p.add(
                        &format!("{at}/command"),
                        "a COMMAND check needs {\"value\": \"<shell command>\"}",
                    );
                    continue;
                }
            },
            other => {
                p.add(
                    &format!("{at}/protocol"),
                    format!("{other:?}: expected \"TCP\", \"HTTP\", \"HTTPS\" or \"COMMAND\""),
                );
                continue;
            }
        };
        out.push(HealthCheck {
            kind,
            grace_period_secs,
            interval_secs,
            timeout_secs,
            max_consecutive_failures,
        });
    }
    out
}

/// The Mesos task name Marathon gives an app's tasks: the id's segments reversed and joined
/// by dots (`/prod/web` → `web.prod`), which Mesos-DNS turns into names.
pub fn task_name(app_id: &str) -> String {
    let segments: Vec<&str> = app_id.trim_matches('/').split('/').rev().collect();
    segments.join(".")
}

/// The ports a task is reached at, one per declared port: the container's own on an overlay,
/// the assigned host ports on the host network.
pub fn task_ports(network: &Network, ports: &[PortSpec], host_ports: &[u16]) -> Vec<u16> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| match network {
            Network::Container(_) => p.number,
            Network::Host => host_ports.get(i).copied().unwrap_or(p.number),
        })
        .collect()
}

impl App {
    /// The Mesos task name of this app's tasks ([`task_name`]).
    pub fn task_name(&self) -> String {
        task_name(&self.id)
    }

    /// Whether `other` runs tasks differently (anything but the instance count changed).
    pub fn runs_differently(&self, other: &App) -> bool {
        let strip = |a: &App| App {
            instances: 0,
            upgrade: UpgradeStrategy::default(),
            version: String::new(),
            scaled_at: None,
            ..a.clone()
        };
        strip(self) != strip(other)
    }

    /// The app in Marathon's JSON shape, for `GET /v2/apps`.
    pub fn to_marathon(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("id".into(), json!(self.id));
        match &self.command {
            Command::Shell(cmd) => {
                obj.insert("cmd".into(), json!(cmd));
            }
            // An image's own command.
            Command::Args(args) if args.is_empty() => {}
            Command::Args(args) => {
                obj.insert("args".into(), json!(args));
            }
        }
        obj.insert("instances".into(), json!(self.instances));
        obj.insert("cpus".into(), json!(self.cpus));
        obj.insert("mem".into(), json!(self.mem));
        obj.insert("env".into(), json!(self.env));
        obj.insert("labels".into(), json!(self.labels));
        if let Some(user) = &self.user {
            obj.insert("user".into(), json!(user));
        }
        obj.insert("acceptedResourceRoles".into(), json!(self.accepted_roles));
        if let Some(secs) = self.kill_grace_secs {
            obj.insert("taskKillGracePeriodSeconds".into(), json!(secs));
        }
        obj.insert(
            "unreachableStrategy".into(),
            json!({"inactiveAfterSeconds": self.unreachable_secs,
                   "expungeAfterSeconds": self.unreachable_secs}),
        );
        if !self.dependencies.is_empty() {
            obj.insert("dependencies".into(), json!(self.dependencies));
        }
        let readiness: Vec<Value> = self
            .readiness
            .iter()
            .map(|r| {
                json!({"name": r.name, "protocol": if r.tls { "HTTPS" } else { "HTTP" },
                       "path": r.path,
                       "portName": self.ports.get(r.port_index).and_then(|p| p.name.clone()),
                       "intervalSeconds": r.interval_secs, "timeoutSeconds": r.timeout_secs,
                       "httpStatusCodesForReady": r.ready_codes, "preserveLastResponse": false})
            })
            .collect();
        if !readiness.is_empty() {
            obj.insert("readinessChecks".into(), json!(readiness));
        }
        if !self.fetch.is_empty() {
            let items: Vec<Value> = self
                .fetch
                .iter()
                .map(|f| {
                    let mut o = json!({"uri": f.uri, "extract": f.extract,
                                       "executable": f.executable, "cache": false});
                    if let Some(name) = &f.output_file {
                        o["outputFile"] = json!(name);
                    }
                    o
                })
                .collect();
            obj.insert("fetch".into(), json!(items));
        }
        let port_json = |p: &PortSpec, key: &str| {
            let mut o = Map::new();
            o.insert(key.into(), json!(p.number));
            o.insert("protocol".into(), json!(p.protocol.as_str()));
            if let Some(n) = &p.name {
                o.insert("name".into(), json!(n));
            }
            o.insert("labels".into(), json!(p.labels));
            if let Some(host_port) = p.host_port {
                o.insert("hostPort".into(), json!(host_port));
            }
            Value::Object(o)
        };
        match &self.network {
            Network::Host => {
                obj.insert("networks".into(), json!([{"mode": "host"}]));
                let defs: Vec<Value> = self.ports.iter().map(|p| port_json(p, "port")).collect();
                obj.insert("portDefinitions".into(), json!(defs));
                obj.insert("requirePorts".into(), json!(self.require_ports));
            }
            Network::Container(name) => {
                obj.insert(
                    "networks".into(),
                    json!([{"mode": "container", "name": name}]),
                );
                let maps: Vec<Value> = self
                    .ports
                    .iter()
                    .map(|p| port_json(p, "containerPort"))
                    .collect();
                obj.insert("container".into(), json!({"portMappings": maps}));
            }
        }
        let container = obj.entry("container").or_insert_with(|| json!({}));
        match &self.image {
            Some(image) => {
                let volumes: Vec<Value> = image
                    .volumes
                    .iter()
                    .map(|v| {
                        json!({"containerPath": v.container_path, "hostPath": v.host_path,
                                    "mode": if v.read_only { "RO" } else { "RW" }})
                    })
                    .collect();
                container["type"] = json!(image.kind.as_str());
                container["docker"] = json!({"image": image.name, "forcePullImage": false,
                                             "privileged": false, "parameters": []});
                container["volumes"] = json!(volumes);
            }
            None => {
                if container.as_object().is_some_and(|o| o.is_empty()) {
                    obj.remove("container");
                } else {
                    container["type"] = json!("MESOS");
                }
            }
        }
        let checks: Vec<Value> = self
            .health_checks
            .iter()
            .map(|h| {
                let mut o = match &h.kind {
                    CheckKind::Tcp {
                        port: Some(port), ..
                    } => json!({"protocol": "TCP", "port": port}),
                    CheckKind::Tcp { port_index, .. } => {
                        json!({"protocol": "TCP", "portIndex": port_index})
                    }
                    CheckKind::Http {
                        port: Some(port),
                        path,
                        tls,
                        ..
                    } => json!({"protocol": if *tls { "HTTPS" } else { "HTTP" }, "port": port, "path": path}),
                    CheckKind::Http {
                        port_index, path, tls, ..
                    } => json!({"protocol": if *tls { "HTTPS" } else { "HTTP" }, "portIndex": port_index, "path": path}),
                    CheckKind::Command { command } => {
                        json!({"protocol": "COMMAND", "command": {"value": command}})
                    }
                };
                if let Some(o) = o.as_object_mut() {
                    o.insert("gracePeriodSeconds".into(), json!(h.grace_period_secs));
                    o.insert("intervalSeconds".into(), json!(h.interval_secs));
                    o.insert("timeoutSeconds".into(), json!(h.timeout_secs));
                    o.insert(
                        "maxConsecutiveFailures".into(),
                        json!(h.max_consecutive_failures),
                    );
                }
                o
            })
            .collect();
        obj.insert("healthChecks".into(), json!(checks));
        let constraints: Vec<Value> = self.constraints.iter().map(Constraint::to_json).collect();
        obj.insert("constraints".into(), json!(constraints));
        obj.insert(
            "upgradeStrategy".into(),
            json!({
                "minimumHealthCapacity": self.upgrade.minimum_health_capacity,
                "maximumOverCapacity": self.upgrade.maximum_over_capacity,
            }),
        );
        obj.insert("version".into(), json!(self.version));
        Value::Object(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Value) -> App {
        match parse(&v, None, "2026-11-23T00:00:00Z") {
            Ok(p) => p.app,
            Err(e) => panic!("{e}"),
        }
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        parse(&v, None, "v").expect_err("should be refused").details
    }

    fn has(errors: &[(String, String)], path: &str, needle: &str) -> bool {
        errors.iter().any(|(p, e)| p == path && e.contains(needle))
    }

    #[test]
    fn inputs_that_can_never_run_are_refused_with_their_path() {
        let long = format!("/{}", vec!["a".repeat(60); 4].join("/"));
        assert!(long.len() > MAX_ID_LEN);
        let e = errors(json!({"id": long, "cmd": "x"}));
        assert!(has(&e, "/id", "at most 200"), "{e:?}");
        let e = errors(json!({"id": format!("/{}", "b".repeat(64)), "cmd": "x"}));
        assert!(has(&e, "/id", "63"), "{e:?}");
        ok(json!({"id": format!("/{}", "b".repeat(63)), "cmd": "x"}));
        let e = errors(json!({"id": "/x", "cmd": "echo a\0b"}));
        assert!(has(&e, "/cmd", "NUL"), "{e:?}");
        let e = errors(json!({"id": "/x", "args": ["echo", "a\0b"]}));
        assert!(has(&e, "/args/1", "NUL"), "{e:?}");
        let e = errors(json!({"id": "/x", "cmd": "x", "cpus": 1e308, "mem": 1e12}));
        assert!(has(&e, "/cpus", "at most 4096"), "{e:?}");
        assert!(has(&e, "/mem", "at most"), "{e:?}");
    }

    #[test]
    fn an_egress_limit_is_whole_mbits_on_an_overlay() {
        let overlay = json!([{"mode": "container", "name": "dcos"}]);
        let app = ok(json!({"id": "/x", "cmd": "x", "networks": overlay,
                            "labels": {"DCNET_EGRESS_MBPS": "50"}}));
        assert_eq!(egress_limit(&app.labels), Ok(Some(50_000_000)));
        assert_eq!(
            egress_limit(&ok(json!({"id": "/y", "cmd": "x"})).labels),
            Ok(None)
        );
        for bad in ["0", "1.5", "fast", "100001"] {
            let e = errors(json!({"id": "/x", "cmd": "x", "networks": overlay,
                                  "labels": {"DCNET_EGRESS_MBPS": bad}}));
            assert!(
                has(&e, "/labels/DCNET_EGRESS_MBPS", "whole Mbit/s"),
                "{bad}: {e:?}"
            );
        }
        let e = errors(json!({"id": "/x", "cmd": "x", "labels": {"DCNET_EGRESS_MBPS": "50"}}));
        assert!(
            has(&e, "/labels/DCNET_EGRESS_MBPS", "overlay network"),
            "{e:?}"
        );
    }

    #[test]
    fn the_demo_web_app_parses() {
        let app = ok(json!({
            "id": "web",
            "cmd": "python3 -m http.server 80",
            "instances": 3,
            "cpus": 0.1,
            "mem": 32,
            "networks": [{"mode": "container", "name": "dcos"}],
            "container": {"type": "MESOS", "portMappings": [
                {"containerPort": 80, "name": "http", "labels": {"VIP_0": "/web:80"}}
            ]},
            "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0,
                              "gracePeriodSeconds": 5, "intervalSeconds": 1}],
            "constraints": [["@zone", "GROUP_BY", "2"]],
            "upgradeStrategy": {"minimumHealthCapacity": 1}
        }));
        assert_eq!(app.id, "/web");
        assert_eq!(app.instances, 3);
        assert_eq!(app.network, Network::Container("dcos".into()));
        assert_eq!(app.ports[0].number, 80);
        assert_eq!(app.ports[0].labels["VIP_0"], "/web:80");
        assert_eq!(app.health_checks[0].timeout_secs, HC_TIMEOUT);
        assert_eq!(app.health_checks[0].interval_secs, 1);
        assert_eq!(app.task_name(), "web");
        let parsed = parse(&app.to_marathon(), None, "v2").unwrap();
        assert_eq!(
            parsed.app,
            App {
                version: "v2".into(),
                ..app
            },
            "the Marathon shape reads back into the same app"
        );
    }

    #[test]
    fn the_example_apps_parse_without_ignored_fields() {
        for text in [
            include_str!("../../../examples/apps/web.json"),
            include_str!("../../../examples/apps/client.json"),
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let parsed = parse(&value, None, "v").unwrap_or_else(|e| panic!("{e}"));
            assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
        }
    }

    #[test]
    fn defaults_follow_marathon() {
        let app = ok(json!({"id": "/a/b", "cmd": "sleep 1000"}));
        assert_eq!(
            (app.instances, app.cpus, app.mem),
            (1, 1.0, 128.0),
            "Marathon's defaults"
        );
        assert_eq!(app.network, Network::Host);
        assert_eq!(app.task_name(), "b.a");
    }

    #[test]
    fn upgrade_strategy_is_read_and_checked() {
        let app = ok(json!({"id": "/x", "cmd": "true", "instances": 3,
                            "upgradeStrategy": {"minimumHealthCapacity": 0.5}}));
        assert_eq!(app.upgrade.minimum_health_capacity, 0.5);
        assert_eq!(app.upgrade.maximum_over_capacity, 1.0);
        assert_eq!(
            (app.upgrade.min_ready(3), app.upgrade.max_running(3)),
            (2, 6)
        );
        let e = errors(json!({"id": "/x", "cmd": "true",
                              "upgradeStrategy": {"maximumOverCapacity": 2}}));
        assert!(
            has(&e, "/upgradeStrategy/maximumOverCapacity", "0 to 1"),
            "{e:?}"
        );
        let e = errors(json!({"id": "/x", "cmd": "true",
                              "upgradeStrategy": {"maximumOverCapacity": 0}}));
        assert!(has(&e, "/upgradeStrategy", "lower the first"), "{e:?}");
        let changed = ok(json!({"id": "/x", "cmd": "true", "instances": 3}));
        assert!(
            !app.runs_differently(&changed),
            "a new strategy alone does not replace tasks"
        );
    }

    #[test]
    fn unknown_fields_are_reported_as_ignored() {
        let parsed = parse(
            &json!({"id": "/x", "cmd": "true", "disk": 10, "fetch": [], "backoffSeconds": 2}),
            None,
            "v",
        )
        .unwrap();
        assert_eq!(parsed.ignored, vec!["backoffSeconds", "disk"]);
    }

    #[test]
    fn roles_kill_grace_and_check_ports_are_read_and_round_trip() {
        let v = json!({"id": "/x", "cmd": "true", "acceptedResourceRoles": ["slave_public"],
                       "taskKillGracePeriodSeconds": 30,
                       "portDefinitions": [{"port": 0}],
                       "healthChecks": [{"protocol": "HTTP", "port": 9000, "path": "/ok"},
                                        {"protocol": "TCP", "portIndex": 0}]});
        let app = parse(&v, None, "v").unwrap().app;
        assert_eq!(app.accepted_roles, ["slave_public"]);
        assert_eq!(app.kill_grace_secs, Some(30));
        assert!(matches!(
            app.health_checks[0].kind,
            CheckKind::Http {
                port: Some(9000),
                ..
            }
        ));
        let again = parse(&app.to_marathon(), None, "v").unwrap().app;
        assert_eq!(again, app);
        let bad = errors(
            json!({"id": "/x", "cmd": "true", "acceptedResourceRoles": [""],
                                "taskKillGracePeriodSeconds": -1,
                                "healthChecks": [{"protocol": "TCP", "port": 80, "portIndex": 0}]}),
        );
        for path in [
            "/acceptedResourceRoles",
            "/taskKillGracePeriodSeconds",
            "/healthChecks/0/port",
        ] {
            assert!(bad.iter().any(|(p, _)| p == path), "{path} in {bad:?}");
        }
    }

    #[test]
    fn dependencies_are_absolute_and_cycles_are_found() {
        let app = |v: Value| parse(&v, None, "v").unwrap().app;
        let web = app(json!({"id": "/prod/web", "cmd": "x", "dependencies": ["db", "/cache"]}));
        assert_eq!(web.dependencies, ["/prod/db", "/cache"]);
        let db = app(json!({"id": "/prod/db", "cmd": "x"}));
        let mut apps = BTreeMap::from([(web.id.clone(), web), (db.id.clone(), db)]);
        assert_eq!(dependency_cycle(&apps), None);
        let db = app(json!({"id": "/prod/db", "cmd": "x", "dependencies": ["/prod/web"]}));
        apps.insert(db.id.clone(), db);
        let cycle = dependency_cycle(&apps).unwrap();
        assert_eq!(cycle.first(), cycle.last(), "{cycle:?}");
        assert!(
            errors(json!({"id": "/a", "cmd": "x", "dependencies": ["/a"]}))
                .iter()
                .any(|(p, _)| p == "/dependencies")
        );
    }

    #[test]
    fn readiness_checks_name_a_port_and_round_trip() {
        let app = parse(
            &json!({"id": "/x", "cmd": "true", "portDefinitions": [{"port": 0, "name": "api"}],
                    "readinessChecks": [{"name": "r", "protocol": "HTTP", "path": "/ready",
                                         "portName": "api", "intervalSeconds": 2,
                                         "httpStatusCodesForReady": [200, 204]}]}),
            None,
            "v",
        )
        .unwrap()
        .app;
        assert_eq!(app.readiness[0].port_index, 0);
        assert_eq!(app.readiness[0].ready_codes, [200, 204]);
        assert_eq!(parse(&app.to_marathon(), None, "v").unwrap().app, app);
    }

    #[test]
    fn unreachable_strategy_delays_replacement() {
        let app = |v: Value| parse(&v, None, "v");
        let a = app(json!({"id": "/x", "cmd": "true",
                           "unreachableStrategy": {"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600}}))
            .unwrap()
            .app;
        assert_eq!(a.unreachable_secs, 300);
        assert_eq!(parse(&a.to_marathon(), None, "v").unwrap().app, a);
        let e = errors(json!({"id": "/x", "cmd": "true",
                              "unreachableStrategy": {"inactiveAfterSeconds": 300, "expungeAfterSeconds": 60}}));
        assert!(
            has(&e, "/unreachableStrategy/expungeAfterSeconds", "at least"),
            "{e:?}"
        );
    }

    #[test]
    fn fetch_and_uris_are_read() {
        let app = parse(
            &json!({"id": "/x", "cmd": "true",
                    "fetch": [{"uri": "https://h/a/tool?x=1", "executable": true, "extract": false},
                              {"uri": "file:///srv/b.tgz", "outputFile": "b.tgz", "cache": true}],
                    "uris": ["http://h/c.tar.gz"]}),
            None,
            "v",
        )
        .unwrap()
        .app;
        let names: Vec<String> = app.fetch.iter().map(FetchUri::file_name).collect();
        assert_eq!(names, ["tool", "b.tgz", "c.tar.gz"]);
        assert!(app.fetch[0].executable && !app.fetch[0].extract && app.fetch[2].extract);
        assert_eq!(parse(&app.to_marathon(), None, "v").unwrap().app, app);
        let e = errors(json!({"id": "/x", "cmd": "true",
                              "fetch": [{"uri": "http://h/.."}, {"uri": "http://h/a", "outputFile": "../a"}]}));
        assert!(has(&e, "/fetch/0/uri", "outputFile"), "{e:?}");
        assert!(has(&e, "/fetch/1/outputFile", "file name"), "{e:?}");
    }

    #[test]
    fn fields_that_would_change_what_runs_are_refused_not_dropped() {
        let e = errors(json!({"id": "/x", "cmd": "true",
            "fetch": [{"uri": "hdfs://namenode/a.tgz"}],
            "readinessChecks": [{"name": "ready", "portName": "nope"}],
            "unreachableStrategy": "disabled",
            "container": {"type": "MESOS", "volumes": [{"hostPath": "/data", "containerPath": "d"}]}}));
        for path in [
            "/fetch/0/uri",
            "/readinessChecks/0/portName",
            "/unreachableStrategy",
            "/container/volumes",
        ] {
            assert!(e.iter().any(|(p, _)| p == path), "{path} in {e:?}");
        }
        // What Marathon exports by default is accepted.
        let ok = parse(
            &json!({"id": "/x", "cmd": "true", "fetch": [], "dependencies": [],
                               "readinessChecks": [], "unreachableStrategy":
                               {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}}),
            None,
            "v",
        );
        assert!(ok.is_ok_and(|p| p.ignored.is_empty()));
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let e = errors(json!({
            "id": "Web_App",
            "instances": -1,
            "cpus": 0,
            "mem": "lots",
            "env": {"A": 1},
            "networks": [{"mode": "container"}],
        }));
        assert!(has(&e, "/id", "lowercase"), "{e:?}");
        assert!(has(&e, "/cmd", "required"), "{e:?}");
        assert!(has(&e, "/instances", "integer"), "{e:?}");
        assert!(has(&e, "/cpus", "above 0"), "{e:?}");
        assert!(has(&e, "/mem", "0 or more"), "{e:?}");
        assert!(has(&e, "/env/A", "string"), "{e:?}");
        assert!(has(&e, "/networks/0/name", "overlay"), "{e:?}");
        let body = Invalid { details: e }.to_json();
        assert_eq!(body["message"], "Object is not valid");
        assert!(body["details"].as_array().unwrap().len() >= 7);
    }

    #[test]
    fn not_an_object_and_wrong_types() {
        assert!(has(&errors(json!([1, 2])), "/", "JSON object"));
        assert!(has(&errors(json!({"id": 5, "cmd": "x"})), "/id", "string"));
        assert!(has(
            &errors(json!({"id": "/x", "cmd": "x", "args": ["y"]})),
            "/cmd",
            "not both"
        ));
        assert!(has(
            &errors(json!({"id": "/x", "args": []})),
            "/args",
            "non-empty"
        ));
    }

    #[test]
    fn what_dcnet_cannot_run_is_refused() {
        let e = errors(json!({
            "id": "/x", "cmd": "x",
            "container": {"type": "DOCKER", "docker": {"image": "-bad", "privileged": true,
                          "forcePullImage": true, "parameters": [{"key": "cap-add", "value": "ALL"}]},
                          "volumes": [{"containerPath": "/d", "persistent": {"size": 10}},
                                      {"containerPath": "/e", "hostPath": "rel"},
                                      {"containerPath": "../up", "hostPath": "/srv"}]}
        }));
        for (path, needle) in [
            ("/container/docker/image", "image reference"),
            ("/container/docker/privileged", "not supported"),
            ("/container/docker/forcePullImage", "podman"),
            ("/container/docker/parameters", "runc"),
            ("/container/volumes/0", "hostPath"),
            ("/container/volumes/1/hostPath", "absolute"),
            ("/container/volumes/2/containerPath", ".."),
        ] {
            assert!(has(&e, path, needle), "{path} in {e:?}");
        }
        let e = errors(json!({"id": "/x", "container": {"type": "DOCKER", "docker": {}}}));
        assert!(
            has(&e, "/container/docker/image", "needs an image"),
            "{e:?}"
        );
        let e = errors(json!({"id": "/x", "cmd": "x", "container": {"type": "RKT"}}));
        assert!(has(&e, "/container/type", "DOCKER"), "{e:?}");
        let e = errors(json!({
            "id": "/x", "cmd": "x", "networks": [{"mode": "container", "name": "dcos"}],
            "container": {"portMappings": [{"containerPort": 80, "hostPort": 8080},
                                           {"containerPort": 81, "hostPort": 8080},
                                           {"containerPort": 82, "hostPort": -1}]}
        }));
        assert!(
            has(&e, "/container/portMappings/1/hostPort", "mapped twice"),
            "{e:?}"
        );
        assert!(
            has(&e, "/container/portMappings/2/hostPort", "0 (any free one)"),
            "{e:?}"
        );
        let e = errors(json!({
            "id": "/x", "networks": [{"mode": "host"}],
            "container": {"type": "DOCKER", "docker": {"image": "a", "network": "BRIDGE"}}
        }));
        assert!(has(&e, "/container/docker/network", "once"), "{e:?}");
    }

    #[test]
    fn container_apps_as_dcos_users_write_them() {
        // The Docker hello-world of the DC/OS docs, in Marathon's older format.
        let app = ok(json!({
            "id": "/hello-world", "instances": 1, "cpus": 0.1, "mem": 32,
            "container": {"type": "DOCKER", "volumes": [],
                          "docker": {"image": "localhost/hello:1", "network": "BRIDGE",
                                     "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp",
                                                       "labels": {"VIP_0": "/hello:80"}}],
                                     "forcePullImage": false, "privileged": false}}
        }));
        assert_eq!(app.network, Network::Container(BRIDGE_OVERLAY.into()));
        assert_eq!(
            app.command,
            Command::Args(Vec::new()),
            "the image's own command"
        );
        let image = app.image.clone().unwrap();
        assert_eq!(
            (image.name.as_str(), image.kind),
            ("localhost/hello:1", ContainerKind::Docker)
        );
        assert_eq!(app.ports[0].number, 80);
        assert_eq!(app.ports[0].host_port, Some(0), "any free host port");
        assert_eq!(app.ports[0].labels["VIP_0"], "/hello:80");
        let back = app.to_marathon();
        assert!(
            back.get("cmd").is_none() && back.get("args").is_none(),
            "{back}"
        );
        assert_eq!(back["container"]["docker"]["image"], "localhost/hello:1");
        assert_eq!(parse(&back, None, "2026-11-23T00:00:00Z").unwrap().app, app);

        // Marathon 1.5+: networks, container.portMappings, a Mesos container with volumes.
        let app = ok(json!({
            "id": "/db", "args": ["--port", "5432"], "networks": [{"mode": "container/bridge"}],
            "container": {"type": "MESOS", "docker": {"image": "db@sha256:abc"},
                          "portMappings": [{"containerPort": 5432}],
                          "volumes": [{"containerPath": "data", "hostPath": "/srv/db", "mode": "RW"},
                                      {"containerPath": "/etc/db", "hostPath": "/etc/db", "mode": "RO"}]}
        }));
        assert_eq!(app.network, Network::Container(BRIDGE_OVERLAY.into()));
        assert_eq!(
            app.ports[0].host_port,
            Some(0),
            "bridge: a host port by default"
        );
        let image = app.image.clone().unwrap();
        assert_eq!(image.kind, ContainerKind::Mesos);
        assert_eq!(
            image.volumes,
            [
                Volume {
                    container_path: "data".into(),
                    host_path: "/srv/db".into(),
                    read_only: false
                },
                Volume {
                    container_path: "/etc/db".into(),
                    host_path: "/etc/db".into(),
                    read_only: true
                },
            ]
        );
        assert_eq!(
            parse(&app.to_marathon(), None, "2026-11-23T00:00:00Z")
                .unwrap()
                .app,
            app
        );

        // USER networking names its overlay; HOST is the node's network.
        let user = ok(json!({"id": "/u", "container": {"type": "DOCKER",
            "docker": {"image": "a", "network": "USER"}, },
            "ipAddress": {"networkName": "blue"}}));
        assert_eq!(user.network, Network::Container("blue".into()));
        let fixed = ok(
            json!({"id": "/f", "cmd": "x", "networks": [{"mode": "container", "name": "dcos"}],
            "container": {"portMappings": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}}),
        );
        assert_eq!(
            fixed.ports.iter().map(|p| p.host_port).collect::<Vec<_>>(),
            [Some(8080), None],
            "on a named overlay only what asks for a host port gets one"
        );
        assert_eq!(
            parse(&fixed.to_marathon(), None, "2026-11-23T00:00:00Z")
                .unwrap()
                .app,
            fixed
        );
        let host = ok(
            json!({"id": "/h", "cmd": "x", "container": {"type": "DOCKER",
            "docker": {"image": "a", "network": "HOST"}}}),
        );
        assert_eq!(
            (host.network, host.command),
            (Network::Host, Command::Shell("x".into()))
        );
        // Volumes belong to images; without one the task sees the node's file system.
        let e = errors(json!({"id": "/x", "cmd": "true",
            "container": {"type": "MESOS", "volumes": [{"hostPath": "/data", "containerPath": "d"}]}}));
        assert!(
            has(&e, "/container/volumes", "need a container image"),
            "{e:?}"
        );
    }

    #[test]
    fn ports_and_health_checks_are_checked() {
        let e = errors(json!({
            "id": "/x", "cmd": "x",
            "networks": [{"mode": "container", "name": "dcos"}],
            "container": {"portMappings": [
                {"containerPort": 80, "protocol": "sctp"},
                {"containerPort": 80},
                {"containerPort": 70000}
            ]},
            "healthChecks": [
                {"protocol": "TCP", "portIndex": 5},
                {"protocol": "COMMAND"},
                {"protocol": "GRPC"},
                {"protocol": "HTTP", "path": "health"}
            ]
        }));
        assert!(
            has(&e, "/container/portMappings/0/protocol", "sctp"),
            "{e:?}"
        );
        assert!(has(&e, "/container/portMappings/1", "twice"), "{e:?}");
        assert!(
            has(&e, "/container/portMappings/2/containerPort", "65535"),
            "{e:?}"
        );
        assert!(
            has(&e, "/healthChecks/0/portIndex", "out of range"),
            "{e:?}"
        );
        assert!(has(&e, "/healthChecks/1/command", "value"), "{e:?}");
        assert!(has(&e, "/healthChecks/2/protocol", "GRPC"), "{e:?}");
        assert!(has(&e, "/healthChecks/3/path", "URL path"), "{e:?}");
    }

    #[test]
    fn host_ports_from_port_definitions_or_ports() {
        let app = ok(json!({"id": "/x", "cmd": "x", "ports": [0, 0]}));
        assert_eq!(app.ports.len(), 2);
        let app = ok(json!({"id": "/x", "cmd": "x", "requirePorts": true,
                            "portDefinitions": [{"port": 8080, "protocol": "udp,tcp", "name": "api"}]}));
        assert_eq!(app.ports[0].protocol, PortProtocol::Both);
        assert!(app.require_ports);
        assert!(has(
            &errors(json!({"id": "/x", "cmd": "x",
                           "container": {"portMappings": [{"containerPort": 1}]}})),
            "/container/portMappings",
            "container network"
        ));
    }

    #[test]
    fn the_url_id_supplies_or_must_match_the_body() {
        let app = parse(&json!({"cmd": "x"}), Some("/web"), "v").unwrap().app;
        assert_eq!(app.id, "/web");
        let e = parse(&json!({"id": "/other", "cmd": "x"}), Some("web"), "v")
            .unwrap_err()
            .details;
        assert!(has(&e, "/id", "does not match"), "{e:?}");
    }

    #[test]
    fn only_running_fields_make_a_new_version() {
        let a = ok(json!({"id": "/x", "cmd": "x", "instances": 1}));
        let b = ok(json!({"id": "/x", "cmd": "x", "instances": 5}));
        let c = ok(json!({"id": "/x", "cmd": "y", "instances": 1}));
        assert!(!a.runs_differently(&b));
        assert!(a.runs_differently(&c));
    }
}
