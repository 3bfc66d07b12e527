//! The agent's configuration: a TOML file (`--config`) whose every setting a flag can override.
//!
//! [`FileConfig`] mirrors the file (unknown keys are refused); [`Overrides`] holds the flags;
//! [`AgentConfig::resolve`] merges them (flag over file over default), validates every value and
//! reads the cluster secret, so a bad setting stops the agent at start with a message that
//! names the file, the key and what is expected.
//!
//! ```toml
//! name = "node-1"                 # default: the host name
//! address = "10.0.0.1"            # underlay address other nodes reach this one at (required)
//! state_dir = "/var/lib/dcnet"
//! region = "us-west-2"
//! zone = "us-west-2a"
//! attributes = { rack_id = "rack-1" }   # what constraints such as ["rack_id", "LIKE", "rack-[12]"] read
//! # fault_domain_detect = "/opt/dcnet/fault-domain"  # instead of region/zone: DC/OS's
//! #   detect script, run at start, printing {"fault_domain":{"region":{"name":..},"zone":{..}}}
//! roles = ["master", "agent"]     # default: ["agent"]
//!
//! [gossip]
//! listen = "0.0.0.0:62501"        # advertised as <address>:<port>
//! seeds = ["10.0.0.2:62501"]
//! secret_file = "/etc/dcnet/cluster-secret"   # required; same content on every node
//! cluster = "dcnet"
//! interval = "400ms"
//! phi_threshold = 6.0
//! dead_node_grace = "1h"
//! tombstone_grace = "10m"
//!
//! [api]
//! listen = "127.0.0.1:62080"
//!
//! [log]
//! level = "info"                  # a tracing filter, e.g. "info,dcnet_agent=debug"
//! format = "text"                 # or "json"
//!
//! [dns]
//! enabled = true
//! listen = ["127.0.0.1:53"]
//! upstreams = ["10.0.0.2"]        # default: the nameservers of /etc/resolv.conf
//! allowed_networks = ["10.0.0.0/8"]   # who may recurse; default: private networks and,
//!                                     # with the overlay on, its networks' subnets
//! domain = "mesos"
//! resolv_conf = "/etc/resolv.conf"    # manage this file; off unless set
//! ttl = 60                        # the domain's TTL, and its SOA (Mesos-DNS's defaults):
//! soa_mname = "ns1.mesos"
//! soa_rname = "root.ns1.mesos"
//! soa_refresh = 60
//! soa_retry = 600
//! soa_expire = 86400
//! soa_minttl = 60
//! rfc952 = false                  # Mesos-DNS's EnforceRFC952: shorter, stricter labels
//! unhealthy_tasks = "hide"        # or "list", as Mesos-DNS lists every running task
//! zone_resolvers = { "consul" = ["10.0.0.5:8600"] }   # forwarders per zone
//! http_listen = "0.0.0.0:8123"    # Mesos-DNS's HTTP API, unauthenticated; off unless set
//!
//! [dns.mesos]                     # read task state from these masters and publish it
//! masters = ["10.0.0.1:5050"]
//! zk = "zk://10.0.0.1:2181/mesos"  # or from the leader ZooKeeper names (masters: fallback)
//! refresh = "5s"
//! state_timeout = "10s"
//! ip_sources = ["netinfo", "mesos", "host"]
//! https = false                   # read the masters over HTTPS
//! ca_file = "/etc/dcnet/mesos-ca.pem"     # CAs of the masters' certificates (HTTPS)
//! cert_file = "/etc/dcnet/mesos.crt"      # client certificate and key (HTTPS), both or neither
//! key_file = "/etc/dcnet/mesos.key"
//! principal = "dcnet"             # HTTP basic, with the secret in secret_file
//! secret_file = "/etc/dcnet/mesos-secret"
//! iam_config_file = "/etc/dcnet/mesos-iam.json"   # or a DC/OS service account
//!
//! [overlay]                       # VXLAN IP-per-container networks; off unless enabled
//! enabled = true
//! vtep_range = "44.128.0.0/20"
//! vtep_subnet6 = "fd01:a::/64"    # VTEP IPv6 addresses: the IPv4 one in the low 32 bits
//! vtep_mtu = 1450                 # underlay MTU minus 50
//! reconcile_interval = "5s"       # read back and repair the kernel this often
//! lease_settle = "4s"             # default: 10 gossip rounds
//! lease_release = "1h"            # free a gone agent's leases after; default dead_node_grace
//! fast_path = true                # containers' traffic past the bridge, in eBPF (tc)
//!
//! [[overlay.networks]]            # default: `dcos` as below and `dcos6`, as DC/OS has them
//! name = "dcos"
//! subnet = "9.0.0.0/8"
//! prefix = 24                     # one /24 per agent
//! subnet6 = "fd01:e::/64"         # optional: dual stack, a /80 per agent paired with its /24
//! prefix6 = 80
//! mtu = 1420
//! egress = true                   # reach beyond the overlay through the node, masqueraded (IPv4)
//!
//! [[overlay.networks]]            # IPv6 only: a network with subnet6 and no subnet
//! name = "dcos6"                  # (dcos6 defaults to fd01:b::/64, prefix6 80)
//! subnet6 = "fd01:b::/64"
//!
//! [lb]                            # Minuteman-style VIPs in eBPF socket hooks; off unless enabled
//! enabled = true
//! cgroup = "/sys/fs/cgroup"       # cgroup v2 directory the hooks attach to; default: the
//!                                 # root of the cgroup v2 mount (every process on the node)
//!
//! [scheduler]                     # Marathon-style apps; runs on master nodes, one leads
//! enabled = true                  # default: true on nodes with the master role
//! listen = "10.0.0.1:8080"        # the /v2 API; default: <address>:8080
//! masters = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]  # the first quorum (1, 3 or 5), by scheduler
//!                                 # address; default: this node alone
//!
//! [launcher]                      # runs the scheduler's tasks; on nodes with the agent role
//! role = "*"                      # "slave_public" for a public agent (apps that accept it only)
//! enabled = true                  # default: true on nodes with the agent role
//! cpus = 4.0                      # what the scheduler may place here; default: this machine's
//! mem = 8192                      # cores and memory (MB)
//! cgroup = "/sys/fs/cgroup/dcnet-tasks"  # parent of one cgroup v2 directory per task, where
//!                                 # the control-plane guard attaches; default: dcnet-tasks
//!                                 # under the cgroup v2 mount
//! default_user = "nobody"         # tasks whose app names no `user` run as this user
//! drain = "2s"                    # a stopping task leaves DNS and the VIPs this long before
//!                                 # SIGTERM, so no node still sends it new connections
//! kill_grace = "5s"               # SIGTERM, then SIGKILL after this long
//! netns_prefix = "dcnet-"         # tasks' namespaces are /run/netns/<prefix><task uuid>
//! containers = true               # container apps (docker.image) with runc and podman's image
//!                                 # store; default: on when both are installed; false: never
//!
//! [auth]                          # credentials on every API, TLS on the scheduler's
//! pki_dir = "/etc/dcnet/pki"      # ca.crt and token.pub on every node; ca.key and token.key
//!                                 # on masters (`dcnet auth init` makes them)
//! insecure = false                # true: no credentials, no TLS (throwaway test clusters)
//!
//! [limits]                        # what one client, or a flood, may hold (defaults shown)
//! http_max_connections = 4096     # per HTTP API; default: a quarter of the fd limit, <= 4096
//! http_max_per_client = 512       # default: an eighth of http_max_connections
//! http_header_timeout = "10s"     # a request's header must arrive within this
//! http_idle_timeout = "60s"       # nothing read or written this long: closed
//! dns_tcp_max_connections = 1024
//! dns_tcp_max_per_client = 64
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Origin};

/// Default gossip port (UDP).
pub const DEFAULT_GOSSIP_PORT: u16 = 62501;
/// Default gossip round. Measured (benches/gossip): a key reaches all of 1,000 nodes in ≤ 4.1
/// rounds (p99) and a dead node is noticed by all in ≤ 10.3 rounds with phi 6, so 400 ms keeps
/// propagation under 2 s and detection around 4 s at that size.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(400);
/// How long a stopping task is announced as killing before it is signalled: a few gossip
/// rounds, for every node's DNS and load balancer to drop it.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(2);
/// Default address of the local HTTP API.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:62080";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dcnet";
/// Shortest accepted cluster secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

// ---------------------------------------------------------------------------------------------
// The file

/// The config file as written; every field optional so flags can supply it instead.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: Option<String>,
    pub address: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub fault_domain_detect: Option<PathBuf>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub gossip: GossipSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub dns: DnsSection,
    #[serde(default)]
    pub overlay: OverlaySection,
    #[serde(default)]
    pub lb: LbSection,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    #[serde(default)]
    pub launcher: LauncherSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub limits: LimitsSection,
}

/// `[limits]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub http_max_connections: Option<usize>,
    pub http_max_per_client: Option<usize>,
    pub http_header_timeout: Option<String>,
    pub http_idle_timeout: Option<String>,
    pub dns_tcp_max_connections: Option<usize>,
    pub dns_tcp_max_per_client: Option<usize>,
}

/// `[auth]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub pki_dir: Option<PathBuf>,
    pub insecure: Option<bool>,
}

/// `[scheduler]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub masters: Option<Vec<String>>,
}

/// `[launcher]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherSection {
    pub enabled: Option<bool>,
    pub cpus: Option<f64>,
    pub mem: Option<f64>,
    pub cgroup: Option<PathBuf>,
    pub drain: Option<String>,
    pub kill_grace: Option<String>,
    pub netns_prefix: Option<String>,
    pub default_user: Option<String>,
    pub role: Option<String>,
    pub containers: Option<bool>,
}

/// `[gossip]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipSection {
    pub listen: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub secret_file: Option<PathBuf>,
    pub cluster: Option<String>,
    pub interval: Option<String>,
    pub phi_threshold: Option<f64>,
    pub dead_node_grace: Option<String>,
    pub tombstone_grace: Option<String>,
}

/// `[api]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub listen: Option<String>,
}

/// `[log]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: Option<String>,
    pub format: Option<String>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })
    }
}

/// `[dns]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    pub enabled: Option<bool>,
    pub listen: Option<Vec<String>>,
    pub upstreams: Option<Vec<String>>,
    pub allowed_networks: Option<Vec<String>>,
    pub domain: Option<String>,
    pub resolv_conf: Option<PathBuf>,
    pub ttl: Option<u32>,
    pub soa_mname: Option<String>,
    pub soa_rname: Option<String>,
    pub soa_refresh: Option<u32>,
    pub soa_retry: Option<u32>,
    pub soa_expire: Option<u32>,
    pub soa_minttl: Option<u32>,
    pub rfc952: Option<bool>,
    pub unhealthy_tasks: Option<String>,
    pub zone_resolvers: Option<BTreeMap<String, Vec<String>>>,
    pub http_listen: Option<String>,
    #[serde(default)]
    pub mesos: MesosSection,
}

/// `[dns.mesos]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MesosSection {
    pub masters: Option<Vec<String>>,
    pub zk: Option<String>,
    pub refresh: Option<String>,
    pub state_timeout: Option<String>,
    pub ip_sources: Option<Vec<String>>,
    pub https: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub principal: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub iam_config_file: Option<PathBuf>,
}

/// `[overlay]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlaySection {
    pub enabled: Option<bool>,
    pub vtep_range: Option<String>,
    pub vtep_subnet6: Option<String>,
    pub vtep_mtu: Option<u32>,
    pub reconcile_interval: Option<String>,
    pub lease_settle: Option<String>,
    pub lease_release: Option<String>,
    pub fast_path: Option<bool>,
    pub networks: Option<Vec<OverlayNetworkSection>>,
}

/// `[lb]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbSection {
    pub enabled: Option<bool>,
    pub cgroup: Option<PathBuf>,
}

/// One `[[overlay.networks]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayNetworkSection {
    pub name: String,
    pub subnet: Option<String>,
    pub prefix: Option<u8>,
    pub subnet6: Option<String>,
    pub prefix6: Option<u8>,
    pub mtu: Option<u32>,
    pub egress: Option<bool>,
}

/// Settings given as flags; each wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub name: Option<String>,
    pub address: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub roles: Vec<String>,
    pub gossip_listen: Option<String>,
    pub seeds: Vec<String>,
    pub secret_file: Option<PathBuf>,
    pub api_listen: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The resolved configuration

/// A node's roles: masters run the control plane (scheduler, state source), agents run tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Roles {
    pub master: bool,
    pub agent: bool,
}

impl Roles {
    /// Role names in their canonical order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.master {
            names.push("master");
        }
        if self.agent {
            names.push("agent");
        }
        names
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The cluster secret: the key that authenticates every gossip datagram.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps key bytes; callers check the length.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Gossip settings, validated.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    pub listen: SocketAddr,
    /// The address peers reach this node at: the node address with the listen port.
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub secret: Secret,
    pub cluster: String,
    pub interval: Duration,
    pub phi_threshold: f64,
    pub dead_node_grace: Duration,
    pub tombstone_grace: Duration,
}

/// DNS settings, validated.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub enabled: bool,
    pub listen: Vec<SocketAddr>,
    pub upstreams: Vec<SocketAddr>,
    pub allowed_networks: Vec<ipnetwork::IpNetwork>,
    pub domain: String,
    pub resolv_conf: Option<PathBuf>,
    /// The domain's TTL, SOA, label rules and task listing.
    pub zone: ZoneSettings,
    /// Forwarders per zone (longest zone first), before `upstreams`.
    pub zone_resolvers: Vec<(String, Vec<SocketAddr>)>,
    /// Where Mesos-DNS's HTTP API is served without credentials, if anywhere.
    pub http_listen: Option<SocketAddr>,
    /// Masters to read task state from; empty on nodes that only serve.
    pub mesos_masters: Vec<SocketAddr>,
    /// ZooKeeper to find the leading master through (`mesos_masters` are then the fallback).
    pub mesos_zk: Option<dcnet_dns::mesos::detect::ZkUrl>,
    pub mesos_refresh: Duration,
    pub mesos_state_timeout: Duration,
    pub ip_sources: Vec<dcnet_dns::mesos::state::IpSource>,
    /// How the masters are read (HTTPS, client certificate, credentials).
    pub mesos_access: dcnet_dns::mesos::fetch::MasterAccess,
    /// DNS over TCP: connections at once, in all and per client (`[limits]`).
    pub tcp_max_connections: usize,
    pub tcp_max_per_client: usize,
}

/// The Mesos domain as a node serves it: Mesos-DNS's `TTL`, `SOA*` and `EnforceRFC952`
/// settings, and whether tasks failing their health checks are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    pub ttl: u32,
    pub soa_mname: String,
    pub soa_rname: String,
    pub soa_refresh: u32,
    pub soa_retry: u32,
    pub soa_expire: u32,
    pub soa_minttl: u32,
    pub rfc952: bool,
    /// List running tasks whose health checks fail (Mesos-DNS does); by default they are
    /// left out, so clients are not sent to them.
    pub list_unhealthy: bool,
}

impl ZoneSettings {
    /// Mesos-DNS's defaults ([`dcnet_dns::mesos::config::MesosDnsConfig`]'s) for `domain`.
    pub fn defaults(domain: &str) -> Self {
        let mesos_dns = dcnet_dns::mesos::config::MesosDnsConfig::default();
        Self {
            ttl: mesos_dns.ttl,
            soa_mname: format!("ns1.{domain}"),
            soa_rname: format!("root.ns1.{domain}"),
            soa_refresh: mesos_dns.soa_refresh,
            soa_retry: mesos_dns.soa_retry,
            soa_expire: mesos_dns.soa_expire,
            soa_minttl: mesos_dns.soa_minttl,
            rfc952: mesos_dns.enforce_rfc952,
            list_unhealthy: false,
        }
    }
}

/// Overlay settings, validated.
#[derive(Debug, Clone)]
pub struct OverlaySettings {
    pub enabled: bool,
    /// Range the VTEP addresses come from.
    pub vtep_range: ipnetwork::Ipv4Network,
    /// Range of the VTEPs' IPv6 addresses (see [`dcnet_overlay::vtep::address6`]); used when
    /// a network has IPv6 subnets.
    pub vtep_subnet6: ipnetwork::Ipv6Network,
    pub vtep_mtu: u32,
    /// How often the kernel is read back and repaired, besides on every change.
    pub reconcile_interval: Duration,
    /// How long a lease claim waits for conflicting claims before it is used.
    pub lease_settle: Duration,
    /// How long an agent may be gone before its leases are free again.
    pub lease_release: Duration,
    /// Containers' traffic past the bridge in eBPF (tc programs on the VTEP and the veths).
    pub fast_path: bool,
    pub networks: Vec<OverlayNetwork>,
}

/// Load-balancer settings, validated.
#[derive(Debug, Clone)]
pub struct LbSettings {
    pub enabled: bool,
    /// The cgroup v2 directory the socket hooks attach to.
    pub cgroup: PathBuf,
}

/// Scheduler settings, validated.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub enabled: bool,
    /// Where the Marathon-style `/v2` API listens.
    pub listen: SocketAddr,
    /// The masters that form the cluster's first quorum, by their scheduler address (this
    /// node's own by default: a cluster of one). A master not among them waits to be added
    /// with `dcnet master add`.
    pub masters: Vec<SocketAddr>,
}

/// Task launcher settings, validated.
#[derive(Debug, Clone)]
pub struct LauncherSettings {
    pub enabled: bool,
    /// Resources the scheduler may place on this node.
    pub cpus: f64,
    /// In MB.
    pub mem: f64,
    /// Parent cgroup v2 directory of the tasks' own cgroups.
    pub cgroup: Option<PathBuf>,
    /// How long a stopping task is out of DNS and the VIPs before its SIGTERM.
    pub drain: Duration,
    /// How long a task has between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Start of the tasks' network namespace names (the rest is the task's UUID).
    pub netns_prefix: String,
    /// The user a task runs as when its app names none.
    pub default_user: String,
    /// The Mesos role of this agent's resources: `*` (private, the default) or e.g.
    /// `slave_public` (DC/OS's public agents); apps accept roles with
    /// `acceptedResourceRoles`.
    pub role: String,
    /// The runtime container apps run with (runc and podman, found on this node); `None`:
    /// this agent runs no container apps (the scheduler places them elsewhere and says why).
    pub containers: Option<crate::launcher::container::Runtime>,
    /// The cgroup v2 mount the tasks' cgroups are under (runc names cgroups relative to it).
    pub cgroup2_mount: Option<PathBuf>,
}

/// Default port of the scheduler's `/v2` API (Marathon's).
pub const DEFAULT_SCHEDULER_PORT: u16 = 8080;

/// One named overlay network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayNetwork {
    pub name: String,
    /// The IPv4 range, unless the network is IPv6 only.
    pub subnet: Option<ipnetwork::Ipv4Network>,
    /// Prefix of each agent's share (24: one /24 per agent).
    pub prefix: u8,
    /// The IPv6 range of an IPv6-only or dual-stack network.
    pub subnet6: Option<ipnetwork::Ipv6Network>,
    /// Prefix of each agent's IPv6 share (80).
    pub prefix6: u8,
    /// MTU of the containers' interfaces.
    pub mtu: u32,
    /// Containers reach addresses beyond the overlay through their node, masqueraded.
    pub egress: bool,
}

impl OverlayNetwork {
    /// The network's pools; the configuration checked that they make one.
    pub fn pools(
        &self,
    ) -> Result<dcnet_overlay::ipam::NetworkPools, dcnet_overlay::ipam::NetworkError> {
        dcnet_overlay::ipam::NetworkPools::new(
            self.subnet.map(|s| (s, self.prefix)),
            self.subnet6.map(|s| (s, self.prefix6)),
        )
    }

    /// Its ranges, IPv4 first.
    pub fn ranges(&self) -> Vec<ipnetwork::IpNetwork> {
        self.subnet
            .map(ipnetwork::IpNetwork::V4)
            .into_iter()
            .chain(self.subnet6.map(ipnetwork::IpNetwork::V6))
            .collect()
    }

    pub fn has_ipv6(&self) -> bool {
        self.subnet6.is_some()
    }
}

/// The agent's validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub address: IpAddr,
    pub state_dir: PathBuf,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// Attributes placement constraints can name.
    pub attributes: BTreeMap<String, String>,
    pub roles: Roles,
    pub gossip: GossipSettings,
    pub api_listen: SocketAddr,
    pub log_level: String,
    pub log_format: LogFormat,
    pub dns: DnsSettings,
    pub overlay: OverlaySettings,
    pub lb: LbSettings,
    pub scheduler: SchedulerSettings,
    pub launcher: LauncherSettings,
    pub auth: AuthSettings,
    /// What the HTTP APIs let a client, or all of them, hold.
    pub http_limits: crate::serve::Limits,
}

/// Authentication settings, validated.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// No credentials, no TLS (test clusters only; warned about at every start).
    pub insecure: bool,
    /// The cluster's key material ([`dcnet_auth::pki`]).
    pub pki_dir: PathBuf,
}

/// Merges one setting: the flag's value if given, else the file's.
struct Pick<'a> {
    file: Option<&'a Path>,
}

impl Pick<'_> {
    fn origin(&self, key: &'static str, flag: &'static str, from_flag: bool) -> Origin {
        Origin {
            file: self.file.map(Path::to_path_buf),
            key,
            flag: from_flag.then_some(flag),
        }
    }

    fn one<T>(
        &self,
        key: &'static str,
        flag: &'static str,
        from_flag: Option<T>,
        from_file: Option<T>,
    ) -> (Option<T>, Origin) {
        match from_flag {
            Some(v) => (Some(v), self.origin(key, flag, true)),
            None => (from_file, self.origin(key, flag, false)),
        }
    }

    fn list(
        &self,
        key: &'static str,
        flag: &'static str,
        from_flag: Vec<String>,
        from_file: Option<Vec<String>>,
    ) -> (Option<Vec<String>>, Origin) {
        self.one(
            key,
            flag,
            (!from_flag.is_empty()).then_some(from_flag),
            from_file,
        )
    }
}

fn invalid(origin: Origin, value: impl Into<String>, expected: impl Into<String>) -> Error {
    Error::ConfigInvalid {
        origin,
        value: value.into(),
        expected: expected.into(),
    }
}

impl AgentConfig {
    /// Reads `config_file` (if any), applies `overrides`, fills defaults and validates.
    pub fn load(config_file: Option<&Path>, overrides: Overrides) -> Result<Self, Error> {
        let file = match config_file {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Self::resolve(config_file, file, overrides)
    }

    /// Merges an already parsed file with the flags; `config_file` only names it in errors.
    pub fn resolve(
        config_file: Option<&Path>,
        file: FileConfig,
        o: Overrides,
    ) -> Result<Self, Error> {
        let p = Pick { file: config_file };

        let (name, origin) = p.one("name", "--name", o.name, file.name);
        let name = match name {
            Some(name) => validate_node_name(&name, origin)?,
            None => default_node_name(origin)?,
        };

        let (address, origin) = p.one("address", "--address", o.address, file.address);
        let address_text = address.ok_or_else(|| Error::ConfigMissing {
            origin: origin.clone(),
            hint: "the underlay IP address other nodes reach this node at, e.g. `address = \"10.0.0.5\"` or --address 10.0.0.5",
        })?;
        let address: IpAddr = address_text.parse().map_err(|_| {
            invalid(
                origin.clone(),
                &address_text,
                "an IPv4 or IPv6 address such as 10.0.0.5",
            )
        })?;
        if address.is_unspecified() || address.is_multicast() {
            return Err(invalid(
                origin,
                &address_text,
                "a unicast address of this node (not 0.0.0.0, ::, or multicast)",
            ));
        }

        let (state_dir, origin) = p.one("state_dir", "--state-dir", o.state_dir, file.state_dir);
        let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if state_dir.as_os_str().is_empty() {
            return Err(invalid(origin, "", "a directory path"));
        }

        let (region, region_origin) = p.one("region", "--region", o.region, file.region);
        let (zone, zone_origin) = p.one("zone", "--zone", o.zone, file.zone);
        let (region, zone) = match &file.fault_domain_detect {
            None => (
                region
                    .map(|r| validate_label(r, region_origin))
                    .transpose()?,
                zone.map(|z| validate_label(z, zone_origin)).transpose()?,
            ),
            Some(script) => {
                let origin = p.origin("fault_domain_detect", "", false);
                if region.is_some() || zone.is_some() {
                    return Err(invalid(
                        origin,
                        script.display().to_string(),
                        "either a detect script or region/zone, not both (the script says both)",
                    ));
                }
                let domain = crate::fault_domain::detect(script).map_err(|why| {
                    invalid(
                        origin.clone(),
                        script.display().to_string(),
                        format!("a fault domain detect script that works, but {why}"),
                    )
                })?;
                (
                    Some(validate_label(domain.region, origin.clone())?),
                    Some(validate_label(domain.zone, origin)?),
                )
            }
        };

        let mut attributes = BTreeMap::new();
        for (name, value) in file.attributes.unwrap_or_default() {
            let origin = p.origin("attributes", "", false);
            if !crate::app::constraint::is_attribute_name(&name) {
                return Err(invalid(
                    origin,
                    name,
                    "an attribute name: 1 to 63 letters, digits, `-`, `.`, `_`, not starting with `@`",
                ));
            }
            if value.is_empty() || value.len() > 255 || value.contains(char::is_control) {
                return Err(invalid(
                    origin,
                    value,
                    format!("a value for attribute {name}: 1 to 255 printable characters"),
                ));
            }
            attributes.insert(name, value);
        }

        let (roles, origin) = p.list("roles", "--role", o.roles, file.roles);
        let roles = parse_roles(roles.unwrap_or_else(|| vec!["agent".into()]), origin)?;

        let gossip = resolve_gossip(
            &p,
            address,
            file.gossip,
            o.gossip_listen,
            o.seeds,
            o.secret_file,
        )?;

        let (api, origin) = p.one("api.listen", "--api-listen", o.api_listen, file.api.listen);
        let api_listen = parse_socket_addr(api.as_deref().unwrap_or(DEFAULT_API_LISTEN), origin)?;

        let (level, origin) = p.one("log.level", "--log-level", o.log_level, file.log.level);
        let log_level = level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(invalid(
                origin,
                log_level,
                "a tracing filter such as `info` or `info,dcnet_agent=debug`",
            ));
        }
        let (format, origin) = p.one("log.format", "--log-format", o.log_format, file.log.format);
        let log_format = match format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid(origin, other, "`text` or `json`")),
        };

        let own_networks = file.dns.allowed_networks.is_none();
        let mut dns = resolve_dns(&p, file.dns)?;
        let overlay = resolve_overlay(&p, file.overlay, address, &gossip)?;
        if own_networks && overlay.enabled {
            // The default also lets this node's containers recurse: DC/OS's overlay
            // (9.0.0.0/8) is no private range.
            for net in overlay.networks.iter().flat_map(|n| n.ranges()) {
                if !dns
                    .allowed_networks
                    .iter()
                    .any(|a| a.contains(net.ip()) && a.prefix() <= net.prefix())
                {
                    dns.allowed_networks.push(net);
                }
            }
        }
        let lb = resolve_lb(&p, file.lb)?;
        let scheduler = resolve_scheduler(&p, file.scheduler, roles, address)?;
        let launcher = resolve_launcher(&p, file.launcher, roles)?;
        let auth = resolve_auth(&p, file.auth, roles, scheduler.enabled)?;
        let (http_limits, dns) = resolve_limits(&p, file.limits, dns)?;

        Ok(Self {
            name,
            address,
            state_dir,
            region,
            zone,
            attributes,
            roles,
            gossip,
            api_listen,
            log_level,
            log_format,
            dns,
            overlay,
            lb,
            scheduler,
            launcher,
            auth,
            http_limits,
        })
    }
}

/// `[limits]`: the HTTP APIs', and DNS over TCP's (set in `dns`).
fn resolve_limits(
    p: &Pick<'_>,
    file: LimitsSection,
    mut dns: DnsSettings,
) -> Result<(crate::serve::Limits, DnsSettings), Error> {
    let count = |key: &'static str, value: Option<usize>| -> Result<Option<usize>, Error> {
        match value {
            Some(0) => Err(invalid(
                p.origin(key, "", false),
                "0",
                "a count of 1 or more",
            )),
            other => Ok(other),
        }
    };
    let mut http = crate::serve::Limits::for_this_process();
    if let Some(n) = count("limits.http_max_connections", file.http_max_connections)? {
        http.max_connections = n;
        http.max_per_client = (n / 8).max(1);
    }
    if let Some(n) = count("limits.http_max_per_client", file.http_max_per_client)? {
        http.max_per_client = n;
    }
    http.header_timeout = parse_duration(
        p.origin("limits.http_header_timeout", "", false),
        file.http_header_timeout,
        http.header_timeout,
    )?;
    http.idle_timeout = parse_duration(
        p.origin("limits.http_idle_timeout", "", false),
        file.http_idle_timeout,
        http.idle_timeout,
    )?;
    if let Some(n) = count(
        "limits.dns_tcp_max_connections",
        file.dns_tcp_max_connections,
    )? {
        dns.tcp_max_connections = n;
    }
    if let Some(n) = count("limits.dns_tcp_max_per_client", file.dns_tcp_max_per_client)? {
        dns.tcp_max_per_client = n;
    }
    Ok((http, dns))
}

fn resolve_scheduler(
    p: &Pick<'_>,
    file: SchedulerSection,
    roles: Roles,
    address: IpAddr,
) -> Result<SchedulerSettings, Error> {
    let enabled = file.enabled.unwrap_or(roles.master);
    if enabled && !roles.master {
        return Err(invalid(
            p.origin("scheduler.enabled", "", false),
            "true",
            "false on a node without the master role (add \"master\" to roles to run the \
             scheduler here)",
        ));
    }
    let listen = match file.listen {
        Some(text) => parse_socket_addr(&text, p.origin("scheduler.listen", "", false))?,
        None => SocketAddr::new(address, DEFAULT_SCHEDULER_PORT),
    };
    // The address other masters reach this one at (a wildcard listen is reached at the node's).
    let reached = if listen.ip().is_unspecified() {
        SocketAddr::new(address, listen.port())
    } else {
        listen
    };
    let origin = p.origin("scheduler.masters", "", false);
    let masters = match file.masters {
        None => vec![reached],
        Some(list) => {
            let mut masters = Vec::new();
            for text in &list {
                let addr = parse_master_address(text).ok_or_else(|| {
                        invalid(
                            origin.clone(),
                            text,
                            "each master's scheduler address, IP or IP:PORT, e.g. \"10.0.0.1\" or \"10.0.0.1:8080\"",
                        )
                    })?;
                if !masters.contains(&addr) {
                    masters.push(addr);
                }
            }
            if !matches!(masters.len(), 1 | 3 | 5) {
                return Err(invalid(
                    origin,
                    format!("{list:?}"),
                    "1, 3 or 5 masters (a quorum of an even number tolerates no more failures than one master fewer)",
                ));
            }
            masters
        }
    };
    Ok(SchedulerSettings {
        enabled,
        listen,
        masters,
    })
}

/// A master's scheduler address, `IP` (port 8080) or `IP:PORT`.
pub fn parse_master_address(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, DEFAULT_SCHEDULER_PORT))
    })
}

fn resolve_launcher(
    p: &Pick<'_>,
    file: LauncherSection,
    roles: Roles,
) -> Result<LauncherSettings, Error> {
    let enabled = file.enabled.unwrap_or(roles.agent);
    let positive = |key: &'static str, value: Option<f64>, detected: f64| match value {
        None => Ok(detected),
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => Err(invalid(
            p.origin(key, "", false),
            v.to_string(),
            "a number above 0",
        )),
    };
    let cpus = positive(
        "launcher.cpus",
        file.cpus,
        std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
    )?;
    let mem = positive(
        "launcher.mem",
        file.mem,
        total_memory_mb().unwrap_or(1024.0),
    )?;
    let cgroup = match file.cgroup {
        Some(cgroup) => Some(cgroup),
        None if enabled => Some(cgroup2_mount().map(|m| m.join(DEFAULT_TASKS_CGROUP)).ok_or_else(|| {
            invalid(
                p.origin("launcher.cgroup", "", false),
                "(not set)",
                "a cgroup v2 directory for the tasks: no cgroup2 mount found in /proc/self/mounts, so set launcher.cgroup",
            )
        })?),
        None => None,
    };
    if let Some(cgroup) = &cgroup {
        let parent_ok = cgroup
            .parent()
            .is_some_and(|parent| parent.join("cgroup.procs").is_file());
        if !cgroup.join("cgroup.procs").is_file() && !parent_ok {
            return Err(invalid(
                p.origin("launcher.cgroup", "", false),
                cgroup.display().to_string(),
                "a directory of the cgroup v2 hierarchy, or a new one directly under such a \
                 directory",
            ));
        }
    }
    let drain = parse_duration(
        p.origin("launcher.drain", "", false),
        file.drain,
        DEFAULT_DRAIN,
    )?;
    let kill_grace = parse_duration(
        p.origin("launcher.kill_grace", "", false),
        file.kill_grace,
        Duration::from_secs(5),
    )?;
    let netns_prefix = file.netns_prefix.unwrap_or_else(|| "dcnet-".into());
    if netns_prefix.is_empty()
        || netns_prefix.len() > 40
        || !netns_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            p.origin("launcher.netns_prefix", "", false),
            netns_prefix,
            "1 to 40 letters, digits, '-' or '_'",
        ));
    }
    let default_user = file
        .default_user
        .unwrap_or_else(|| DEFAULT_TASK_USER.to_owned());
    if enabled
        && nix::unistd::User::from_name(&default_user)
            .ok()
            .flatten()
            .is_none()
    {
        return Err(invalid(
            p.origin("launcher.default_user", "", false),
            default_user,
            "the name of a user that exists on this node (tasks whose app names no `user` run as it)",
        ));
    }
    let role = file.role.unwrap_or_else(|| "*".to_owned());
    if !crate::app::is_role(&role) {
        return Err(invalid(
            p.origin("launcher.role", "", false),
            role,
            "a Mesos role: `*` (private, the default), `slave_public`, or 1 to 63 letters, \
             digits, `-`, `.`, `_`",
        ));
    }
    // Container apps: on unless turned off; a missing runtime is only an error when asked for.
    let containers = match (enabled, file.containers) {
        (false, _) | (_, Some(false)) => None,
        (true, asked) => match crate::launcher::container::Runtime::detect().and_then(|runtime| {
            // On a hybrid host runc mirrors the task cgroup's path into the cgroup v1
            // hierarchies, where every cgroup holds a file named `tasks`.
            match cgroup
                .as_ref()
                .filter(|c| c.components().any(|p| p.as_os_str() == "tasks"))
            {
                Some(c) if Path::new("/sys/fs/cgroup/cpu").is_dir() => Err(format!(
                    "launcher.cgroup {} has a directory named `tasks`, which runc cannot use on \
                     this host (cgroup v1 has a file of that name): rename it, e.g. to dcnet-tasks",
                    c.display()
                )),
                _ => Ok(runtime),
            }
        }) {
            Ok(runtime) => Some(runtime),
            Err(why) if asked == Some(true) => {
                return Err(invalid(
                    p.origin("launcher.containers", "", false),
                    "true",
                    why,
                ));
            }
            Err(why) => {
                tracing::info!(reason = %why, "this agent runs no container apps");
                None
            }
        },
    };
    Ok(LauncherSettings {
        enabled,
        cpus,
        mem,
        cgroup,
        drain,
        kill_grace,
        netns_prefix,
        default_user,
        role,
        containers,
        cgroup2_mount: cgroup2_mount(),
    })
}

/// The tasks' cgroup under the cgroup v2 mount when `launcher.cgroup` is not set.
pub const DEFAULT_TASKS_CGROUP: &str = "dcnet-tasks";

/// The user tasks run as when their app names none: nobody, so that an app must ask to run
/// as anyone with rights on the node.
pub const DEFAULT_TASK_USER: &str = "nobody";

fn resolve_auth(
    p: &Pick<'_>,
    file: AuthSection,
    roles: Roles,
    scheduler: bool,
) -> Result<AuthSettings, Error> {
    let insecure = file.insecure.unwrap_or(false);
    let pki_dir = file
        .pki_dir
        .unwrap_or_else(|| PathBuf::from(dcnet_auth::pki::DEFAULT_DIR));
    if !insecure {
        // Every node verifies tokens and trusts the CA; a master also signs and issues.
        let mut needed = vec!["ca.crt", "token.pub"];
        if roles.master && scheduler {
            needed.extend(["ca.key", "token.key"]);
        }
        let missing: Vec<&str> = needed
            .into_iter()
            .filter(|f| !pki_dir.join(f).is_file())
            .collect();
        let origin = p.origin("auth.pki_dir", "", false);
        if missing.is_empty() && roles.master && scheduler {
            for key in ["ca.key", "token.key"] {
                check_private(&pki_dir.join(key), &origin)?;
            }
        }
        if !missing.is_empty() {
            return Err(invalid(
                origin,
                pki_dir.display().to_string(),
                format!(
                    "a directory holding {} (missing here): run `dcnet auth init --pki-dir {}` once on the first master and copy ca.crt and token.pub to every node, ca.key and token.key to every master; or set `[auth] insecure = true` on a throwaway test cluster",
                    missing.join(", "),
                    pki_dir.display()
                ),
            ));
        }
    }
    Ok(AuthSettings { insecure, pki_dir })
}

/// This machine's memory in MB, from /proc/meminfo.
fn total_memory_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kb / 1024.0).floor())
}

fn resolve_lb(p: &Pick<'_>, file: LbSection) -> Result<LbSettings, Error> {
    let enabled = file.enabled.unwrap_or(false);
    let cgroup = match file.cgroup {
        Some(path) => path,
        None if enabled => cgroup2_mount().ok_or_else(|| {
            invalid(
                p.origin("lb.cgroup", "", false),
                "(not set)",
                "a cgroup v2 directory: no cgroup2 mount found in /proc/self/mounts, so set \
                 lb.cgroup to one",
            )
        })?,
        None => PathBuf::new(),
    };
    if enabled && !cgroup.join("cgroup.procs").is_file() {
        return Err(invalid(
            p.origin("lb.cgroup", "", false),
            cgroup.display().to_string(),
            "a directory of the cgroup v2 hierarchy (it has a cgroup.procs file)",
        ));
    }
    Ok(LbSettings { enabled, cgroup })
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on most systems).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(dir))
    })
}

fn resolve_gossip(
    p: &Pick<'_>,
    address: IpAddr,
    file: GossipSection,
    listen_flag: Option<String>,
    seeds_flag: Vec<String>,
    secret_flag: Option<PathBuf>,
) -> Result<GossipSettings, Error> {
    let (listen, origin) = p.one("gossip.listen", "--gossip-listen", listen_flag, file.listen);
    let listen = match listen {
        Some(text) => parse_socket_addr(&text, origin)?,
        // Where the advertised address is reachable: an IPv6 one needs an IPv6 socket.
        None if address.is_ipv6() => SocketAddr::new(
            IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
            DEFAULT_GOSSIP_PORT,
        ),
        None => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), DEFAULT_GOSSIP_PORT),
    };
    let advertise = SocketAddr::new(address, listen.port());

    let (seeds, origin) = p.list("gossip.seeds", "--seed", seeds_flag, file.seeds);
    let seeds = seeds.unwrap_or_default();
    for seed in &seeds {
        validate_seed(seed, origin.clone())?;
    }

    let (secret_file, origin) = p.one(
        "gossip.secret_file",
        "--secret-file",
        secret_flag,
        file.secret_file,
    );
    let secret_file = secret_file.ok_or_else(|| Error::ConfigMissing {
        origin: origin.clone(),
        hint: "a file holding the cluster secret (the same on every node), e.g. `(umask 077; head -c 32 /dev/urandom | base64 > /etc/dcnet/cluster-secret)`",
    })?;
    let secret = read_secret(&secret_file, origin)?;

    let cluster_origin = p.origin("gossip.cluster", "", false);
    let cluster = file.cluster.unwrap_or_else(|| "dcnet".into());
    if cluster.is_empty() || cluster.len() > 64 {
        return Err(invalid(
            cluster_origin,
            cluster,
            "a cluster name of 1 to 64 characters",
        ));
    }

    let duration = |key: &'static str, value: Option<String>, default: Duration| {
        let origin = p.origin(key, "", false);
        match value {
            None => Ok(default),
            Some(text) => match humantime::parse_duration(&text) {
                Ok(d) if !d.is_zero() => Ok(d),
                _ => Err(invalid(
                    origin,
                    text,
                    "a positive duration such as `500ms`, `10s` or `1h`",
                )),
            },
        }
    };
    let interval = duration("gossip.interval", file.interval, DEFAULT_GOSSIP_INTERVAL)?;
    let dead_node_grace = duration(
        "gossip.dead_node_grace",
        file.dead_node_grace,
        Duration::from_secs(3600),
    )?;
    let tombstone_grace = duration(
        "gossip.tombstone_grace",
        file.tombstone_grace,
        Duration::from_secs(600),
    )?;

    let phi_threshold = file.phi_threshold.unwrap_or(6.0);
    if !(phi_threshold.is_finite() && phi_threshold > 0.0) {
        return Err(invalid(
            p.origin("gossip.phi_threshold", "", false),
            phi_threshold.to_string(),
            "a positive number (failure detection after about phi_threshold heartbeat intervals)",
        ));
    }

    Ok(GossipSettings {
        listen,
        advertise,
        seeds,
        secret,
        cluster,
        interval,
        phi_threshold,
        dead_node_grace,
        tombstone_grace,
    })
}

fn resolve_dns(p: &Pick<'_>, file: DnsSection) -> Result<DnsSettings, Error> {
    let origin = |key| p.origin(key, "", false);
    let listen = match file.listen {
        Some(list) => list
            .iter()
            .map(|a| parse_socket_addr(a, origin("dns.listen")))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![SocketAddr::from(([127, 0, 0, 1], 53))],
    };
    let upstreams = match file.upstreams {
        Some(list) => list
            .iter()
            .map(|u| {
                dcnet_dns::mesos::config::parse_resolver(u).ok_or_else(|| {
                    invalid(
                        origin("dns.upstreams"),
                        u,
                        "IP or IP:PORT entries such as 10.0.0.2 or 10.0.0.2:53",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => system_nameservers(),
    };
    let allowed_networks = match file.allowed_networks {
        Some(list) => list
            .iter()
            .map(|n| {
                n.parse().map_err(|_| {
                    invalid(
                        origin("dns.allowed_networks"),
                        n,
                        "networks such as 10.0.0.0/8 or fd00::/8",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => dcnet_dns::forward::ForwarderConfig::private_networks(),
    };
    let domain = file
        .domain
        .unwrap_or_else(|| "mesos".into())
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if domain.is_empty() || domain.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(invalid(
            origin("dns.domain"),
            domain,
            "a domain such as mesos",
        ));
    }
    let defaults = ZoneSettings::defaults(&domain);
    let zone = ZoneSettings {
        ttl: file.ttl.unwrap_or(defaults.ttl),
        soa_mname: file.soa_mname.clone().unwrap_or(defaults.soa_mname),
        soa_rname: file
            .soa_rname
            .clone()
            .map(|r| r.replacen('@', ".", 1))
            .unwrap_or(defaults.soa_rname),
        soa_refresh: file.soa_refresh.unwrap_or(defaults.soa_refresh),
        soa_retry: file.soa_retry.unwrap_or(defaults.soa_retry),
        soa_expire: file.soa_expire.unwrap_or(defaults.soa_expire),
        soa_minttl: file.soa_minttl.unwrap_or(defaults.soa_minttl),
        rfc952: file.rfc952.unwrap_or(false),
        list_unhealthy: match file.unhealthy_tasks.as_deref() {
            None | Some("hide") => false,
            Some("list") => true,
            Some(other) => {
                return Err(invalid(
                    origin("dns.unhealthy_tasks"),
                    other,
                    "\"hide\" (the default) or \"list\"",
                ));
            }
        },
    };
    for (key, name) in [
        ("dns.soa_mname", &zone.soa_mname),
        ("dns.soa_rname", &zone.soa_rname),
    ] {
        if name.is_empty()
            || name
                .trim_end_matches('.')
                .split('.')
                .any(|l| l.is_empty() || l.len() > 63)
        {
            return Err(invalid(
                origin(key),
                name.as_str(),
                "a domain name such as ns1.mesos",
            ));
        }
    }
    let mut zone_resolvers = Vec::new();
    for (zone_name, servers) in file.zone_resolvers.clone().unwrap_or_default() {
        let servers = servers
            .iter()
            .map(|u| {
                dcnet_dns::mesos::config::parse_resolver(u).ok_or_else(|| {
                    invalid(
                        origin("dns.zone_resolvers"),
                        u,
                        "IP or IP:PORT entries such as 10.0.0.5 or 10.0.0.5:8600",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let zone_name = zone_name.trim_end_matches('.').to_ascii_lowercase();
        if zone_name.is_empty() || servers.is_empty() {
            return Err(invalid(
                origin("dns.zone_resolvers"),
                zone_name,
                "a zone with at least one resolver, e.g. { \"consul\" = [\"10.0.0.5:8600\"] }",
            ));
        }
        zone_resolvers.push((zone_name, servers));
    }
    // Most specific first.
    zone_resolvers.sort_by_key(|(z, _)| std::cmp::Reverse(z.len()));
    let http_listen = file
        .http_listen
        .as_deref()
        .map(|a| parse_socket_addr(a, origin("dns.http_listen")))
        .transpose()?;
    let mesos_access = resolve_mesos_access(&origin, &file.mesos)?;
    let mesos_zk = file
        .mesos
        .zk
        .as_deref()
        .map(|url| {
            url.parse::<dcnet_dns::mesos::detect::ZkUrl>()
                .map_err(|problem| invalid(origin("dns.mesos.zk"), url, problem))
        })
        .transpose()?;
    let masters = file
        .mesos
        .masters
        .unwrap_or_default()
        .iter()
        .map(|m| parse_socket_addr(m, origin("dns.mesos.masters")))
        .collect::<Result<Vec<_>, _>>()?;
    let duration = |key: &'static str, value: Option<String>, default: Duration| {
        parse_duration(origin(key), value, default)
    };
    let mesos_refresh = duration(
        "dns.mesos.refresh",
        file.mesos.refresh,
        Duration::from_secs(5),
    )?;
    let mesos_state_timeout = duration(
        "dns.mesos.state_timeout",
        file.mesos.state_timeout,
        Duration::from_secs(10),
    )?;
    use dcnet_dns::mesos::state::IpSource;
    let ip_sources = match file.mesos.ip_sources {
        Some(list) => list
            .iter()
            .map(|s| {
                s.parse::<IpSource>().map_err(|_| {
                    invalid(
                        origin("dns.mesos.ip_sources"),
                        s,
                        "netinfo, docker, mesos or host",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
    };
    Ok(DnsSettings {
        enabled: file.enabled.unwrap_or(true),
        listen,
        upstreams,
        allowed_networks,
        domain,
        resolv_conf: file.resolv_conf,
        zone,
        zone_resolvers,
        http_listen,
        mesos_masters: masters,
        mesos_zk,
        mesos_refresh,
        mesos_state_timeout,
        ip_sources,
        mesos_access,
        tcp_max_connections: dcnet_dns::server::tcp::MAX_CONNECTIONS,
        tcp_max_per_client: dcnet_dns::server::tcp::MAX_PER_CLIENT,
    })
}

/// `[dns.mesos]`'s TLS and authentication keys (the files themselves are read when the
/// publisher's client is made, at start).
fn resolve_mesos_access(
    origin: &dyn Fn(&'static str) -> Origin,
    file: &MesosSection,
) -> Result<dcnet_dns::mesos::fetch::MasterAccess, Error> {
    use dcnet_dns::mesos::fetch::{MasterAccess, MasterAuth};
    let client_cert = match (&file.cert_file, &file.key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::ConfigMissing {
                origin: origin("dns.mesos.key_file"),
                hint: "cert_file is set: give the client certificate's key too",
            });
        }
        (None, Some(_)) => {
            return Err(Error::ConfigMissing {
                origin: origin("dns.mesos.cert_file"),
                hint: "key_file is set: give the client certificate too",
            });
        }
    };
    let auth = match (&file.principal, &file.secret_file, &file.iam_config_file) {
        (None, None, None) => MasterAuth::None,
        (Some(principal), Some(path), None) => {
            let secret = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    origin("dns.mesos.secret_file"),
                    path.display().to_string(),
                    format!("a readable file holding the principal's secret ({e})"),
                )
            })?;
            MasterAuth::Basic {
                principal: principal.clone(),
                secret: secret.trim_end_matches(['\n', '\r']).to_owned(),
            }
        }
        (None, None, Some(path)) => MasterAuth::Iam(path.clone()),
        (Some(_), None, None) => {
            return Err(Error::ConfigMissing {
                origin: origin("dns.mesos.secret_file"),
                hint: "principal is set: give the file holding its secret",
            });
        }
        (None, Some(_), None) => {
            return Err(Error::ConfigMissing {
                origin: origin("dns.mesos.principal"),
                hint: "secret_file is set: give the principal it belongs to",
            });
        }
        (_, _, Some(path)) => {
            return Err(invalid(
                origin("dns.mesos.iam_config_file"),
                path.display().to_string(),
                "either HTTP basic (principal, secret_file) or a service account (iam_config_file), not both",
            ));
        }
    };
    Ok(MasterAccess {
        https: file.https.unwrap_or(false),
        ca_file: file.ca_file.clone(),
        client_cert,
        auth,
    })
}

fn resolve_overlay(
    p: &Pick<'_>,
    file: OverlaySection,
    address: IpAddr,
    gossip: &GossipSettings,
) -> Result<OverlaySettings, Error> {
    let origin = |key| p.origin(key, "", false);
    let enabled = file.enabled.unwrap_or(false);
    let ipv4_range = |key: &'static str, text: String| -> Result<ipnetwork::Ipv4Network, Error> {
        let net: ipnetwork::Ipv4Network = text
            .parse()
            .map_err(|_| invalid(origin(key), &text, "an IPv4 network such as 9.0.0.0/8"))?;
        if net.ip() != net.network() {
            return Err(invalid(
                origin(key),
                &text,
                format!(
                    "the network's first address ({}/{})",
                    net.network(),
                    net.prefix()
                ),
            ));
        }
        Ok(net)
    };
    let vtep_range = ipv4_range(
        "overlay.vtep_range",
        file.vtep_range.unwrap_or_else(|| "44.128.0.0/20".into()),
    )?;
    if vtep_range.prefix() > 30 {
        return Err(invalid(
            origin("overlay.vtep_range"),
            vtep_range.to_string(),
            "a range of /30 or larger",
        ));
    }
    let vtep_subnet6: ipnetwork::Ipv6Network = {
        let text = file.vtep_subnet6.unwrap_or_else(|| "fd01:a::/64".into());
        match text.parse::<ipnetwork::Ipv6Network>() {
            Ok(net) if net.ip() == net.network() && net.prefix() <= 96 => net,
            _ => {
                return Err(invalid(
                    origin("overlay.vtep_subnet6"),
                    &text,
                    "an IPv6 network of /96 or larger given by its first address, such as fd01:a::/64",
                ));
            }
        }
    };
    let mtu = |key: &'static str, value: Option<u32>, default: u32| match value {
        None => Ok(default),
        Some(m) if (576..=9000).contains(&m) => Ok(m),
        Some(m) => Err(invalid(
            origin(key),
            m.to_string(),
            "an MTU from 576 to 9000",
        )),
    };
    // The underlay MTU (1500 by default) less VXLAN's overhead over the underlay's family.
    let overhead = if address.is_ipv4() {
        dcnet_overlay::vtep::VXLAN_OVERHEAD
    } else {
        dcnet_overlay::vtep::VXLAN6_OVERHEAD
    };
    let vtep_mtu = mtu("overlay.vtep_mtu", file.vtep_mtu, 1500 - overhead)?;
    let reconcile_interval = parse_duration(
        origin("overlay.reconcile_interval"),
        file.reconcile_interval,
        Duration::from_secs(5),
    )?;
    // Ten gossip rounds: more than twice the measured p99 propagation up to 1,000 nodes
    // (see dcnet_overlay::ipam::lease for why twice).
    let lease_settle = parse_duration(
        origin("overlay.lease_settle"),
        file.lease_settle,
        gossip.interval * 10,
    )?;
    let lease_release = parse_duration(
        origin("overlay.lease_release"),
        file.lease_release,
        gossip.dead_node_grace,
    )?;
    if lease_release > gossip.dead_node_grace {
        return Err(invalid(
            origin("overlay.lease_release"),
            humantime::format_duration(lease_release).to_string(),
            format!(
                "at most gossip.dead_node_grace ({}): gossip forgets a gone agent's leases then",
                humantime::format_duration(gossip.dead_node_grace)
            ),
        ));
    }
    let networks = file.networks.unwrap_or_else(|| {
        ["dcos", "dcos6"]
            .into_iter()
            .map(|name| OverlayNetworkSection {
                name: name.into(),
                subnet: None,
                prefix: None,
                subnet6: None,
                prefix6: None,
                mtu: None,
                egress: None,
            })
            .collect()
    });
    let mut resolved: Vec<OverlayNetwork> = Vec::new();
    for n in networks {
        // The bridge is named `m-<name>`, and interface names have at most 15 characters.
        let name_ok = !n.name.is_empty()
            && n.name.len() <= 13
            && n.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok || resolved.iter().any(|r| r.name == n.name) {
            return Err(invalid(
                origin("overlay.networks.name"),
                &n.name,
                "a unique name of 1 to 13 characters of [A-Za-z0-9_-]",
            ));
        }
        // Neither range given: `dcos6` is DC/OS's IPv6 overlay, any other name an IPv4 one.
        let (subnet, subnet6) = match (n.subnet, n.subnet6) {
            (None, None) if n.name == "dcos6" => (None, Some("fd01:b::/64".to_owned())),
            (None, None) => (Some("9.0.0.0/8".to_owned()), None),
            given => given,
        };
        let subnet = subnet
            .map(|text| ipv4_range("overlay.networks.subnet", text))
            .transpose()?;
        let prefix = n.prefix.unwrap_or(24);
        if let Some(subnet) = subnet
            && (prefix < subnet.prefix() || prefix > 29)
        {
            return Err(invalid(
                origin("overlay.networks.prefix"),
                prefix.to_string(),
                format!("a prefix from /{} (the subnet's) to /29", subnet.prefix()),
            ));
        }
        let subnet6 = subnet6
            .map(|text| match text.parse::<ipnetwork::Ipv6Network>() {
                Ok(net) if net.ip() == net.network() => Ok(net),
                _ => Err(invalid(
                    origin("overlay.networks.subnet6"),
                    &text,
                    "an IPv6 network given by its first address, such as fd01:b::/64",
                )),
            })
            .transpose()?;
        let prefix6 = n.prefix6.unwrap_or(80);
        if let Some(subnet6) = subnet6
            && (prefix6 < subnet6.prefix() || prefix6 > 120 || prefix6 - subnet6.prefix() > 32)
        {
            return Err(invalid(
                origin("overlay.networks.prefix6"),
                prefix6.to_string(),
                format!(
                    "a prefix from /{} (the subnet6's) to /{} and /120",
                    subnet6.prefix(),
                    subnet6.prefix() + 32
                ),
            ));
        }
        let network = OverlayNetwork {
            name: n.name,
            subnet,
            prefix,
            subnet6,
            prefix6,
            mtu: 0,
            egress: n.egress.unwrap_or(true),
        };
        if let Err(e) = network.pools() {
            return Err(invalid(
                origin("overlay.networks.subnet6"),
                network
                    .ranges()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" and "),
                e.to_string(),
            ));
        }
        for range in network.ranges() {
            if let Some(other) = resolved
                .iter()
                .find(|r| r.ranges().iter().any(|o| overlaps(*o, range)))
            {
                return Err(invalid(
                    origin("overlay.networks.subnet"),
                    range.to_string(),
                    format!("a range that does not overlap network {:?}", other.name),
                ));
            }
            let vtep = [
                ipnetwork::IpNetwork::V4(vtep_range),
                ipnetwork::IpNetwork::V6(vtep_subnet6),
            ];
            if vtep.iter().any(|v| overlaps(*v, range)) {
                return Err(invalid(
                    origin("overlay.networks.subnet"),
                    range.to_string(),
                    "a range that overlaps neither overlay.vtep_range nor overlay.vtep_subnet6",
                ));
            }
            let named_vips = [
                ipnetwork::IpNetwork::new(dcnet_lb::vip::NAMED_VIP_NETWORK.into(), 8),
                ipnetwork::IpNetwork::new(dcnet_lb::vip::NAMED_VIP6_NETWORK.into(), 64),
            ];
            if let Some(vips) = named_vips
                .into_iter()
                .flatten()
                .find(|v| overlaps(*v, range))
            {
                return Err(invalid(
                    origin("overlay.networks.subnet"),
                    range.to_string(),
                    format!("a range that does not overlap the named VIPs' {vips}"),
                ));
            }
        }
        let mtu = mtu("overlay.networks.mtu", n.mtu, 1420)?;
        if mtu > vtep_mtu {
            return Err(invalid(
                origin("overlay.networks.mtu"),
                mtu.to_string(),
                format!("at most overlay.vtep_mtu ({vtep_mtu})"),
            ));
        }
        if network.has_ipv6() && mtu < 1280 {
            return Err(invalid(
                origin("overlay.networks.mtu"),
                mtu.to_string(),
                "at least 1280 on a network with IPv6 (IPv6's minimum)",
            ));
        }
        resolved.push(OverlayNetwork { mtu, ..network });
    }
    Ok(OverlaySettings {
        enabled,
        vtep_range,
        vtep_subnet6,
        vtep_mtu,
        reconcile_interval,
        lease_settle,
        lease_release,
        fast_path: file.fast_path.unwrap_or(true),
        networks: resolved,
    })
}

/// Whether two ranges share an address (never across families).
fn overlaps(a: ipnetwork::IpNetwork, b: ipnetwork::IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// A positive duration such as `5s`, or `default` when absent.
fn parse_duration(
    origin: Origin,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, Error> {
    match value {
        None => Ok(default),
        Some(text) => match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => Err(invalid(
                origin,
                text,
                "a positive duration such as `500ms`, `10s` or `1h`",
            )),
        },
    }
}

/// The nameservers of /etc/resolv.conf that are not loopback (a local resolver may be this very
/// agent), port 53.
fn system_nameservers() -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

fn parse_socket_addr(text: &str, origin: Origin) -> Result<SocketAddr, Error> {
    text.parse()
        .map_err(|_| invalid(origin, text, "IP:PORT, e.g. 0.0.0.0:62501 or [::1]:62080"))
}

/// A seed is `IP:PORT` or `HOST:PORT` (resolved again periodically by the gossip library).
fn validate_seed(seed: &str, origin: Origin) -> Result<(), Error> {
    if seed.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let expected = "a peer's gossip address, IP:PORT or HOST:PORT, e.g. 10.0.0.2:62501";
    let Some((host, port)) = seed.rsplit_once(':') else {
        return Err(invalid(origin, seed, expected));
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    match port.parse::<u16>() {
        Ok(port) if port != 0 && host_ok => Ok(()),
        _ => Err(invalid(origin, seed, expected)),
    }
}

fn read_secret(path: &Path, origin: Origin) -> Result<Secret, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::SecretRead {
        origin: origin.clone(),
        path: path.to_path_buf(),
        source,
    })?;
    check_private(path, &origin)?;
    // A trailing newline from `echo` or an editor is not part of the secret.
    let trimmed = bytes.trim_ascii_end();
    if trimmed.len() < MIN_SECRET_LEN {
        return Err(Error::SecretTooShort {
            origin,
            path: path.to_path_buf(),
            len: trimmed.len(),
            min: MIN_SECRET_LEN,
        });
    }
    Ok(Secret(trimmed.to_vec()))
}

/// Refuses a key file that users other than its owner can read (as ssh refuses a private
/// key): whoever reads the cluster secret or a signing key can act as the cluster.
fn check_private(path: &Path, origin: &Origin) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFileOpen {
            origin: origin.clone(),
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn validate_node_name(name: &str, origin: Origin) -> Result<String, Error> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(invalid(
            origin,
            name,
            "1 to 253 characters of letters, digits, `-`, `.` and `_`",
        ))
    }
}

fn default_node_name(origin: Origin) -> Result<String, Error> {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    validate_node_name(&host, origin).map_err(|_| Error::ConfigMissing {
        origin: Origin {
            file: None,
            key: "name",
            flag: None,
        },
        hint: "the host name cannot serve as the node name; set `name = \"node-1\"` or pass --name",
    })
}

fn validate_label(value: String, origin: Origin) -> Result<String, Error> {
    // DC/OS names them `<provider>/<name>`, e.g. `aws/us-east-1`.
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b));
    if ok {
        Ok(value)
    } else {
        Err(invalid(
            origin,
            value,
            "1 to 63 characters of letters, digits, `-`, `.`, `_` and `/`",
        ))
    }
}

fn parse_roles(names: Vec<String>, origin: Origin) -> Result<Roles, Error> {
    let mut roles = Roles::default();
    for name in &names {
        match name.as_str() {
            "master" => roles.master = true,
            "agent" => roles.agent = true,
            other => return Err(invalid(origin, other, "the roles `master` and/or `agent`")),
        }
    }
    if !(roles.master || roles.agent) {
        return Err(invalid(
            origin,
            "[]",
            "at least one of the roles `master` and `agent`",
        ));
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(dir: &tempfile::TempDir, content: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.path().join("secret");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// The cluster's keys in `dir/pki`, as `dcnet auth init` makes them.
    fn pki(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("pki");
        if !path.exists() {
            dcnet_auth::PkiDir::new(&path).init("test").unwrap();
        }
        path
    }

    fn base(dir: &tempfile::TempDir) -> String {
        format!(
            "name = \"n1\"\naddress = \"10.0.0.1\"\n[auth]\npki_dir = \"{}\"\n[gossip]\nsecret_file = \"{}\"\n",
            pki(dir).display(),
            secret_file(dir, "0123456789abcdef0123\n").display()
        )
    }

    #[test]
    fn auth_needs_the_keys_of_the_role_or_an_explicit_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "0123456789abcdef0123\n");
        let with_auth = |auth: &str| {
            format!(
                "name = \"n1\"\naddress = \"10.0.0.1\"\n[auth]\n{auth}\n[gossip]\nsecret_file = \"{}\"\n",
                secret.display()
            )
        };
        let missing = dir.path().join("nowhere");
        let err = load(&with_auth(&format!("pki_dir = \"{}\"", missing.display())))
            .unwrap_err()
            .to_string();
        for needle in [
            "auth.pki_dir",
            "ca.crt, token.pub",
            "dcnet auth init",
            "insecure",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
        let c = load(&with_auth("insecure = true")).unwrap();
        assert!(c.auth.insecure);

        // An agent needs the public half only; a master also the keys it signs with.
        let agent_only = dir.path().join("agent-pki");
        std::fs::create_dir(&agent_only).unwrap();
        for f in ["ca.crt", "token.pub"] {
            std::fs::copy(pki(&dir).join(f), agent_only.join(f)).unwrap();
        }
        let text = with_auth(&format!("pki_dir = \"{}\"", agent_only.display()));
        assert!(load(&text).is_ok());
        let o = Overrides {
            roles: vec!["master".into()],
            ..Default::default()
        };
        let err = load_with(&text, o).unwrap_err().to_string();
        assert!(err.contains("ca.key, token.key"), "{err}");
    }

    fn load(text: &str) -> Result<AgentConfig, Error> {
        load_with(text, Overrides::default())
    }

    fn load_with(text: &str, o: Overrides) -> Result<AgentConfig, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        AgentConfig::load(Some(&path), o)
    }

    #[test]
    fn containers_on_the_overlay_may_recurse_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let on = |extra: &str| {
            load(&format!("{}{extra}", base(&dir)))
                .unwrap()
                .dns
                .allowed_networks
        };
        let overlay = "[overlay]\nenabled = true\n";
        let nine: ipnetwork::IpNetwork = "9.0.0.0/8".parse().unwrap();
        assert!(on(overlay).contains(&nine), "{:?}", on(overlay));
        assert!(
            on(overlay).contains(&"10.0.0.0/8".parse().unwrap()),
            "the private ranges stay"
        );
        assert!(!on("").contains(&nine), "no overlay, no 9.0.0.0/8");
        let own = on(&format!(
            "{overlay}[dns]\nallowed_networks = [\"10.1.0.0/16\"]\n"
        ));
        assert_eq!(
            own,
            vec!["10.1.0.0/16".parse::<ipnetwork::IpNetwork>().unwrap()],
            "a list given is the list"
        );
    }

    #[test]
    fn the_overlay_has_dcos_and_dcos6_as_dc_os_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&format!("{}[overlay]\nenabled = true\n", base(&dir))).unwrap();
        let networks = &c.overlay.networks;
        assert_eq!(networks.len(), 2);
        assert_eq!(networks[0].name, "dcos");
        assert_eq!(networks[0].ranges(), ["9.0.0.0/8".parse().unwrap()]);
        assert_eq!(networks[1].name, "dcos6");
        assert_eq!(networks[1].ranges(), ["fd01:b::/64".parse().unwrap()]);
        assert_eq!(networks[1].prefix6, 80);
        assert_eq!(c.overlay.vtep_subnet6.to_string(), "fd01:a::/64");
        let dcos6: std::net::IpAddr = "fd01:b::7:0:0:2".parse().unwrap();
        assert!(
            c.dns.allowed_networks.iter().any(|n| n.contains(dcos6)),
            "dcos6 containers may recurse: {:?}",
            c.dns.allowed_networks
        );
        let dual = load(&format!(
            "{}[overlay]\nenabled = true\n[[overlay.networks]]\nname = \"dual\"\nsubnet = \"9.0.0.0/8\"\nsubnet6 = \"fd01:e::/64\"\n",
            base(&dir)
        ))
        .unwrap();
        let pools = dual.overlay.networks[0].pools().unwrap();
        assert_eq!(
            pools.paired6("9.0.1.0/24".parse().unwrap()),
            Some("fd01:e:0:0:1::/80".parse().unwrap())
        );
    }

    #[test]
    fn an_ipv6_underlay_listens_for_gossip_on_ipv6_and_leaves_vxlan_its_70_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}[overlay]\nenabled = true\n", base(&dir))
            .replace("address = \"10.0.0.1\"", "address = \"fd00:dc::1\"");
        let c = load(&text).unwrap();
        assert_eq!(c.gossip.listen, "[::]:62501".parse().unwrap());
        assert_eq!(c.gossip.advertise, "[fd00:dc::1]:62501".parse().unwrap());
        assert_eq!(c.overlay.vtep_mtu, 1430);
        let v4 = load(&format!("{}[overlay]\nenabled = true\n", base(&dir))).unwrap();
        assert_eq!(v4.overlay.vtep_mtu, 1450);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&base(&dir)).unwrap();
        assert_eq!(c.name, "n1");
        assert_eq!(c.gossip.listen, "0.0.0.0:62501".parse().unwrap());
        assert_eq!(c.gossip.advertise, "10.0.0.1:62501".parse().unwrap());
        assert_eq!(c.api_listen, DEFAULT_API_LISTEN.parse().unwrap());
        assert_eq!(
            c.roles,
            Roles {
                master: false,
                agent: true
            }
        );
        assert_eq!(c.gossip.secret.as_bytes(), b"0123456789abcdef0123");
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn a_fault_domain_detect_script_sets_region_and_zone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("detect");
        std::fs::write(
            &script,
            "#!/bin/sh\necho '{\"fault_domain\":{\"region\":{\"name\":\"aws/us-east-1\"},\"zone\":{\"name\":\"aws/us-east-1a\"}}}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!(
            "fault_domain_detect = \"{}\"\n{}",
            script.display(),
            base(&dir)
        );
        let c = load(&text).unwrap();
        assert_eq!(c.region.as_deref(), Some("aws/us-east-1"));
        assert_eq!(c.zone.as_deref(), Some("aws/us-east-1a"));
        let both = format!("region = \"r1\"\n{text}");
        let err = load(&both).unwrap_err().to_string();
        assert!(
            err.contains("fault_domain_detect") && err.contains("not both"),
            "{err}"
        );
        std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("exited with"), "{err}");
    }

    #[test]
    fn limits_have_defaults_and_can_be_set() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&base(&dir)).unwrap();
        assert!(c.http_limits.max_connections >= 64);
        assert_eq!(c.http_limits.header_timeout, Duration::from_secs(10));
        assert_eq!(c.dns.tcp_max_per_client, 64);
        let text = format!(
            "{}\n[limits]\nhttp_max_connections = 100\nhttp_idle_timeout = \"5s\"\ndns_tcp_max_per_client = 8\n",
            base(&dir)
        );
        let c = load(&text).unwrap();
        assert_eq!(c.http_limits.max_connections, 100);
        assert_eq!(c.http_limits.max_per_client, 12, "an eighth, unless set");
        assert_eq!(c.http_limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.dns.tcp_max_per_client, 8);
        let text = format!("{}\n[limits]\nhttp_max_per_client = 0\n", base(&dir));
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("limits.http_max_per_client"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let o = Overrides {
            name: Some("n9".into()),
            gossip_listen: Some("127.0.0.1:7000".into()),
            roles: vec!["master".into(), "agent".into()],
            seeds: vec!["10.0.0.2:7000".into(), "seed.example:7000".into()],
            ..Default::default()
        };
        let c = load_with(&base(&dir), o).unwrap();
        assert_eq!(c.name, "n9");
        assert_eq!(c.gossip.advertise, "10.0.0.1:7000".parse().unwrap());
        assert_eq!(
            c.roles,
            Roles {
                master: true,
                agent: true
            }
        );
        assert_eq!(c.gossip.seeds.len(), 2);
    }

    /// Each bad input, and words its message must contain.
    #[test]
    fn bad_configuration_is_refused_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(&dir);
        let cases: &[(&str, String, &[&str])] = &[
            (
                "unknown top-level key",
                format!("{b}\ncolour = \"red\"\n"),
                &["agent.toml", "colour"],
            ),
            (
                "unknown key in a section",
                format!("{b}listn = \"0.0.0.0:1\"\n"),
                &["agent.toml", "listn"],
            ),
            (
                "malformed gossip listen",
                format!("{b}listen = \"0.0.0.0\"\n"),
                &["gossip.listen", "IP:PORT"],
            ),
            (
                "malformed address",
                b.replace("10.0.0.1", "10.0.0.300"),
                &["`address`", "10.0.0.300"],
            ),
            (
                "unspecified address",
                b.replace("10.0.0.1", "0.0.0.0"),
                &["`address`", "unicast"],
            ),
            (
                "malformed seed",
                format!("{b}seeds = [\"10.0.0.2\"]\n"),
                &["gossip.seeds", "HOST:PORT"],
            ),
            (
                "bad role",
                format!("roles = [\"boss\"]\n{b}"),
                &["`roles`", "boss"],
            ),
            (
                "bad duration",
                format!("{b}interval = \"soon\"\n"),
                &["gossip.interval", "duration"],
            ),
            (
                "bad phi",
                format!("{b}phi_threshold = -1.0\n"),
                &["gossip.phi_threshold"],
            ),
            (
                "bad api listen",
                format!("{b}[api]\nlisten = \"localhost\"\n"),
                &["api.listen"],
            ),
            (
                "bad log format",
                format!("{b}[log]\nformat = \"xml\"\n"),
                &["log.format", "json"],
            ),
            ("bad zone", format!("zone = \"a b\"\n{b}"), &["`zone`"]),
            (
                "missing address",
                b.replace("address = \"10.0.0.1\"\n", ""),
                &["`address`", "required"],
            ),
            (
                "missing secret file",
                b.replace(
                    &format!(
                        "secret_file = \"{}\"\n",
                        dir.path().join("secret").display()
                    ),
                    "",
                ),
                &["gossip.secret_file", "required"],
            ),
            (
                "secret file absent",
                b.replace("/secret", "/nope"),
                &["gossip.secret_file", "nope", "cannot read"],
            ),
            (
                "wrong type",
                format!("{b}phi_threshold = \"high\"\n"),
                &["agent.toml", "phi_threshold"],
            ),
            (
                "bad dns listen",
                format!("{b}[dns]\nlisten = [\"127.0.0.1\"]\n"),
                &["dns.listen", "IP:PORT"],
            ),
            (
                "bad upstream",
                format!("{b}[dns]\nupstreams = [\"dns.google\"]\n"),
                &["dns.upstreams"],
            ),
            (
                "bad network",
                format!("{b}[dns]\nallowed_networks = [\"10.0.0.0/33\"]\n"),
                &["dns.allowed_networks"],
            ),
            (
                "bad master",
                format!("{b}[dns.mesos]\nmasters = [\"master-1\"]\n"),
                &["dns.mesos.masters"],
            ),
            (
                "unhealthy_tasks neither hide nor list",
                format!("{b}[dns]\nunhealthy_tasks = \"maybe\"\n"),
                &["dns.unhealthy_tasks", "maybe", "list"],
            ),
            (
                "a zone resolver that is no address",
                format!("{b}[dns]\nzone_resolvers = {{ consul = [\"consul.local\"] }}\n"),
                &["dns.zone_resolvers", "consul.local"],
            ),
            (
                "a SOA name that is no name",
                format!("{b}[dns]\nsoa_mname = \"a..b\"\n"),
                &["dns.soa_mname"],
            ),
            (
                "an http_listen that is no address",
                format!("{b}[dns]\nhttp_listen = \"everywhere\"\n"),
                &["dns.http_listen"],
            ),
            (
                "client certificate without its key",
                format!("{b}[dns.mesos]\nmasters = [\"10.0.0.1:5050\"]\ncert_file = \"/c.pem\"\n"),
                &["dns.mesos.key_file"],
            ),
            (
                "principal without a secret",
                format!("{b}[dns.mesos]\nmasters = [\"10.0.0.1:5050\"]\nprincipal = \"dns\"\n"),
                &["dns.mesos.secret_file"],
            ),
            (
                "an unreadable secret file",
                format!("{b}[dns.mesos]\nprincipal = \"dns\"\nsecret_file = \"/no/such/secret\"\n"),
                &["dns.mesos.secret_file", "/no/such/secret"],
            ),
            (
                "basic and IAM at once",
                format!(
                    "{b}[dns.mesos]\nprincipal = \"dns\"\nsecret_file = \"/etc/hostname\"\niam_config_file = \"/iam.json\"\n"
                ),
                &["dns.mesos.iam_config_file", "not both"],
            ),
            (
                "unknown dns key",
                format!("{b}[dns]\nlistens = []\n"),
                &["agent.toml", "listens"],
            ),
            (
                "an IPv6 subnet that is no network",
                format!(
                    "{b}[overlay]\nenabled = true\n[[overlay.networks]]\nname = \"v6\"\nsubnet6 = \"fd01:b::1/64\"\n"
                ),
                &["overlay.networks.subnet6", "fd01:b::1/64", "first address"],
            ),
            (
                "an IPv6 prefix more than 32 bits longer than the range's",
                format!(
                    "{b}[overlay]\nenabled = true\n[[overlay.networks]]\nname = \"v6\"\nsubnet6 = \"fd01:b::/64\"\nprefix6 = 100\n"
                ),
                &["overlay.networks.prefix6", "100", "/96"],
            ),
            (
                "a dual-stack network with fewer IPv6 subnets than IPv4 ones",
                format!(
                    "{b}[overlay]\nenabled = true\n[[overlay.networks]]\nname = \"dual\"\nsubnet = \"9.0.0.0/8\"\nsubnet6 = \"fd01:e::/64\"\nprefix6 = 72\n"
                ),
                &["overlay.networks.subnet6", "256 subnets", "65536"],
            ),
            (
                "two networks sharing IPv6 space",
                format!(
                    "{b}[overlay]\nenabled = true\n[[overlay.networks]]\nname = \"a\"\nsubnet6 = \"fd01:b::/64\"\n[[overlay.networks]]\nname = \"b\"\nsubnet6 = \"fd01:b::/48\"\n"
                ),
                &["overlay.networks.subnet", "fd01:b::/48", "\"a\""],
            ),
            (
                "an IPv6 network in the VTEPs' IPv6 range",
                format!(
                    "{b}[overlay]\nenabled = true\n[[overlay.networks]]\nname = \"v6\"\nsubnet6 = \"fd01:a::/64\"\n"
                ),
                &["overlay.vtep_subnet6"],
            ),
            (
                "a VTEP IPv6 range too small to hold IPv4 addresses",
                format!("{b}[overlay]\nenabled = true\nvtep_subnet6 = \"fd01:a::/112\"\n"),
                &["overlay.vtep_subnet6", "/96"],
            ),
            (
                "an IPv6 network in the named VIPs' range",
                format!(
                    "{b}[overlay]\nenabled = true\n[[overlay.networks]]\nname = \"v6\"\nsubnet6 = \"fd01:c::/64\"\n"
                ),
                &["overlay.networks.subnet", "fd01:c::/64", "named VIPs"],
            ),
            (
                "an IPv6 network below IPv6's minimum MTU",
                format!(
                    "{b}[overlay]\nenabled = true\n[[overlay.networks]]\nname = \"dcos6\"\nmtu = 1200\n"
                ),
                &["overlay.networks.mtu", "1280"],
            ),
        ];
        for (what, text, words) in cases {
            let err = load(text).expect_err(what).to_string();
            for word in *words {
                assert!(err.contains(word), "{what}: {err:?} lacks {word:?}");
            }
        }
    }

    #[test]
    fn masters_over_https_with_credentials() {
        use dcnet_dns::mesos::fetch::MasterAuth;
        let dir = tempfile::tempdir().unwrap();
        let b = base(&dir);
        let secret = dir.path().join("mesos-secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let text = format!(
            "{b}[dns.mesos]\nmasters = [\"10.0.0.1:5050\"]\nhttps = true\nca_file = \"/ca.pem\"\n\
             cert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\nprincipal = \"dns\"\n\
             secret_file = \"{}\"\n",
            secret.display()
        );
        let access = load(&text).unwrap().dns.mesos_access;
        assert!(access.https);
        assert_eq!(access.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(
            access.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        assert_eq!(
            access.auth,
            MasterAuth::Basic {
                principal: "dns".into(),
                secret: "s3cret".into()
            },
            "the secret without its newline"
        );
    }

    #[test]
    fn short_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = base(&dir);
        secret_file(&dir, "short\n");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("5 bytes") && err.contains("urandom"), "{err}");
    }

    #[test]
    fn key_files_others_can_read_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let text = base(&dir);
        let secret = dir.path().join("secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A master's signing key, too; an agent does not read it.
        let key = pki(&dir).join("token.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(load(&text).is_ok());
        let master = Overrides {
            roles: vec!["master".into()],
            ..Default::default()
        };
        let err = load_with(&text, master).unwrap_err().to_string();
        assert!(
            err.contains("token.key") && err.contains("chmod 600"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = base(&dir);
        // A directory cannot be read as a file, also for root.
        let path = dir.path().join("secret");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("cannot read the cluster secret"), "{err}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = AgentConfig::load(
            Some(Path::new("/nonexistent/agent.toml")),
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/agent.toml") && err.contains("--config"),
            "{err}"
        );
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let o = Overrides {
            gossip_listen: Some("nope".into()),
            ..Default::default()
        };
        let err = load_with(&base(&dir), o).unwrap_err().to_string();
        assert!(err.starts_with("flag --gossip-listen"), "{err}");
    }
}
