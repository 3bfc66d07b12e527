//! `dcnet`: the per-node agent and the operator commands. Parses the command line, sets up
//! logging, and hands over to `dcnet_agent`; exit code 2 means bad configuration or usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dcnet_agent::config::{AgentConfig, DEFAULT_API_LISTEN, LogFormat, Overrides};
use dcnet_agent::{cli, daemon};

// glibc's allocator showed up as half of a DNS update's time (updates copy and drop many small
// entries); mimalloc halves what an update costs (see benches/benches/dns.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dcnet",
    version,
    about = "Networking for container clusters: DNS, overlay and L4 load balancing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent.
    Agent(Box<AgentArgs>),
    /// Show the cluster's nodes as the local agent sees them.
    Nodes(ClientArgs),
    /// A node's service: decommission it for good, list the decommissioned ones.
    Node(NodeArgs),
    /// Show the load balancer's VIPs, backends and connection counts on this node.
    Vips(ClientArgs),
    /// The load balancer's datapath on this node.
    Lb(LbArgs),
    /// DNS: a drop-in Mesos-DNS (`--mesos-dns-config`), and DNS tools.
    Dns(DnsArgs),
    /// Marathon-style apps: add, list, scale and remove them (through the leading scheduler).
    App(AppArgs),
    /// Tasks: what runs where, as the agents report it; kill one.
    Task(TaskArgs),
    /// Deployments: the changes of apps under way; roll one back.
    Deployment(DeploymentArgs),
    /// Credentials: the cluster's keys, tokens and basic users.
    Auth(AuthArgs),
    /// The masters' quorum: list, add or remove a master.
    Master(MasterArgs),
    /// Gossip encryption keys: list, generate, install, use, remove (rotation without downtime).
    Keyring(KeyringArgs),
    /// Linked clusters: link, list, unlink, and switch the CLI's context between them.
    Cluster(ClusterArgs),
    /// Network policies: which apps may reach which (through the leading scheduler).
    Policy(PolicyArgs),
}

#[derive(Args)]
struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Add a policy from a JSON file (see README, Network policies); admin.
    Add {
        file: PathBuf,
        /// Replace the policy of the same id if there is one.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The policies, their rules and the apps they select.
    List(ClientArgs),
    /// Remove a policy; admin.
    Remove {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// This cluster and the clusters linked to it; `*` marks the one commands talk to.
    List(LocalClientArgs),
    /// Link another cluster (admin): its names resolve here as
    /// `<task>.<framework>.<NAME>.<domain>`, and `--cluster NAME` (or `switch`) points any
    /// command at it.
    Link {
        /// Its API: an agent's (http://IP:62080) or a master's scheduler (https://IP:PORT).
        url: String,
        /// What this cluster calls it: a DNS label.
        #[arg(long)]
        name: String,
        /// Its CA certificate (its `pki/ca.crt`), to verify an https URL.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// A credential for it: a file with its token (`token = "..."` or the token alone),
        /// stored with the link for admins of this cluster to use.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Its DNS servers (IP:PORT); default: port 53 of each of its nodes that is up.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<SocketAddr>,
        #[command(flatten)]
        client: LocalClientArgs,
    },
    /// Remove a link (admin).
    Unlink {
        name: String,
        #[command(flatten)]
        client: LocalClientArgs,
    },
    /// Make later commands talk to the cluster linked as NAME (this user's context), or with
    /// `--local` to this cluster again.
    Switch {
        #[arg(required_unless_present = "local")]
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        local: bool,
        #[command(flatten)]
        client: LocalClientArgs,
    },
}

/// The local agent and credential, for commands that manage links (never redirected by
/// `--cluster` or the context).
#[derive(Args)]
struct LocalClientArgs {
    /// Address of the agent's local API.
    #[arg(long, default_value = DEFAULT_API_LISTEN)]
    api: SocketAddr,
    /// Credential file (default: $DCNET_CREDENTIALS, else /etc/dcnet/credentials for root,
    /// ~/.config/dcnet/credentials for others; $DCNET_TOKEN wins over all).
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl LocalClientArgs {
    fn client(&self) -> anyhow::Result<cli::Client> {
        cli::Client::new(self.api, self.credentials.as_deref())
    }
}

#[derive(Args)]
struct LbArgs {
    #[command(subcommand)]
    command: LbCommand,
}

#[derive(Subcommand)]
enum LbCommand {
    /// Detach the load balancer's programs from the cgroup, also those a stopped agent left
    /// attached on purpose (VIPs are then no longer translated there). Run as root.
    Detach {
        /// The cgroup v2 directory of `[lb] cgroup` (default: the root of the cgroup v2 mount).
        #[arg(long)]
        cgroup: Option<std::path::PathBuf>,
        /// The agent's state directory: the socket tables pinned in its `bpf/` are removed
        /// too, and the BPF filesystem the agent mounted there unmounted.
        #[arg(long, default_value = dcnet_agent::config::DEFAULT_STATE_DIR)]
        state_dir: std::path::PathBuf,
    },
}

#[derive(Args)]
struct KeyringArgs {
    #[command(subcommand)]
    command: KeyringCommand,
}

#[derive(Subcommand)]
enum KeyringCommand {
    /// Each node's gossip keys by id, and the one it sends with.
    List(ClientArgs),
    /// Print a new random key (base64) to install on every node.
    Generate,
    /// Accept a key (base64) on this node, besides the ones it has.
    Install {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send with an installed key (by id or base64) from now on; refused while a live node
    /// lacks it.
    Use {
        key: String,
        /// Even though some live nodes do not have the key.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop accepting a key (by id or base64); refused while a live node sends with it.
    Remove {
        key: String,
        /// Even though some live nodes still send with the key.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Take a node (by name or id) out of service for good: its tasks are placed elsewhere
    /// and nothing is placed there again.
    Decommission {
        node: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The decommissioned nodes.
    Decommissioned(ClientArgs),
}

#[derive(Args)]
struct MasterArgs {
    #[command(subcommand)]
    command: MasterCommand,
}

#[derive(Subcommand)]
enum MasterCommand {
    /// List the masters, who leads and the term.
    List(ClientArgs),
    /// Add a master by its scheduler address (IP or IP:PORT); it catches up, then votes.
    Add {
        address: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a master from the quorum.
    Remove {
        address: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Make the cluster's CA and token keys (once, on the first master) and a first admin
    /// credential.
    Init {
        /// Where the key material goes.
        #[arg(long, default_value = dcnet_auth::pki::DEFAULT_DIR)]
        pki_dir: PathBuf,
        /// Named in the CA certificate.
        #[arg(long, default_value = "dcnet")]
        cluster: String,
        /// Where the admin credential is saved (default: this user's credential file).
        #[arg(long)]
        credentials: Option<PathBuf>,
        /// Subject of the admin credential.
        #[arg(long, default_value = "admin")]
        subject: String,
    },
    /// Tokens: create, list, revoke.
    Token(TokenArgs),
    /// HTTP basic users (Marathon's --http_credentials): set, list, remove.
    User(UserArgs),
    /// Show who the local agent takes you for.
    Whoami(ClientArgs),
}

#[derive(Args)]
struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token (printed once; or saved as a credential file with --save).
    Create {
        #[arg(long)]
        subject: String,
        /// admin (everything) or read (GET only).
        #[arg(long)]
        role: dcnet_auth::Role,
        /// Lifetime, e.g. 30d or 12h (at most a year).
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Save as a credential file (mode 0600) instead of printing.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Sign with the key file here instead of asking the scheduler (root on a master).
        #[arg(long)]
        offline: bool,
        /// The key material, for --offline.
        #[arg(long, default_value = dcnet_auth::pki::DEFAULT_DIR)]
        pki_dir: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the tokens the masters issued.
    List(ClientArgs),
    /// Revoke a token by its id.
    Revoke {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user or change its role and password (generated and printed if not given).
    Set {
        name: String,
        #[arg(long)]
        role: dcnet_auth::Role,
        /// A file holding the password (at least 12 characters).
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the users and their roles.
    List(ClientArgs),
    /// Remove a user.
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct AppArgs {
    #[command(subcommand)]
    command: AppCommand,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Add an app from a Marathon app definition (JSON file).
    Add {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace an app's definition with a file's (`id` names the app); a changed definition
    /// is rolled out as its upgradeStrategy allows.
    Update {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the apps with their running and healthy task counts.
    List(ClientArgs),
    /// Change an app's number of instances.
    Scale {
        id: String,
        instances: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove an app; its tasks are stopped.
    Remove {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace every task of an app, as its upgradeStrategy allows.
    Restart {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List an app's versions (its configurations, oldest first).
    Versions {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Put an app back to one of its versions (`dcnet app versions`).
    Rollback {
        id: String,
        version: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Subcommand)]
enum TaskCommand {
    /// List every task of the cluster with its node, address, state and health.
    List(ClientArgs),
    /// Kill a task: its app gets a new one, or with --scale one instance fewer.
    Kill {
        task: String,
        /// Lower the app's instance count instead of replacing the task.
        #[arg(long)]
        scale: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct DeploymentArgs {
    #[command(subcommand)]
    command: DeploymentCommand,
}

#[derive(Subcommand)]
enum DeploymentCommand {
    /// The changes of apps under way, with their actions.
    List(ClientArgs),
    /// Roll a deployment back (its apps as they were before it), or with --force only
    /// forget it.
    Rollback {
        id: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DnsArgs {
    /// Serve as a drop-in replacement for Mesos-DNS, from its config.json (the file given to
    /// `mesos-dns -config=`).
    #[arg(long, value_name = "FILE")]
    mesos_dns_config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `debug` (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<DnsCommand>,
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Print the records a Mesos master state produces, in master-file format.
    Records(DnsRecordsArgs),
    /// Ask the node's DNS server for a name, e.g. `dcnet dns lookup web.marathon.mesos`.
    Lookup(DnsLookupArgs),
}

#[derive(Args)]
struct DnsLookupArgs {
    name: String,
    /// Record type: A, AAAA, SRV, SOA, NS, ...
    #[arg(long = "type", short = 't', default_value = "A")]
    kind: String,
    /// The DNS server to ask (the agent's own listener by default).
    #[arg(long, default_value = "127.0.0.1:53")]
    server: SocketAddr,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DnsRecordsArgs {
    /// A saved `GET /master/state` document.
    #[arg(long)]
    state: PathBuf,
    #[arg(long, default_value = "mesos")]
    domain: String,
    /// Labels follow RFC 952 (24 characters, starting with a letter) instead of RFC 1123.
    #[arg(long)]
    rfc952: bool,
    /// Where task addresses come from, in order (Mesos-DNS's IPSources).
    #[arg(long, value_delimiter = ',', default_value = "netinfo,mesos,host")]
    ip_sources: Vec<String>,
    #[arg(long, default_value_t = 60)]
    ttl: u32,
}

#[derive(Args)]
struct AgentArgs {
    /// TOML configuration file; flags override its settings.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Underlay address of this node, which peers reach it at.
    #[arg(long)]
    address: Option<String>,
    /// State directory (node id, leases).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    zone: Option<String>,
    /// Role of this node: master and/or agent (repeat the flag for both).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Gossip listen address, IP:PORT (UDP).
    #[arg(long)]
    gossip_listen: Option<String>,
    /// A peer's gossip address to join through (repeatable).
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// File holding the cluster secret.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Local HTTP API listen address.
    #[arg(long)]
    api_listen: Option<String>,
    /// Log filter, e.g. `info` or `info,dcnet_agent=debug` (RUST_LOG wins when set).
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
}

#[derive(Args)]
struct ClientArgs {
    #[command(flatten)]
    local: LocalClientArgs,
    /// Talk to the cluster linked as NAME (`dcnet cluster list`) instead of this one; default:
    /// the context `dcnet cluster switch` chose.
    #[arg(long, value_name = "NAME", env = "DCNET_CLUSTER")]
    cluster: Option<String>,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<cli::Client> {
        let local = self.local.client()?;
        let cluster = match &self.cluster {
            Some(name) => Some(name.clone()),
            None => cli::clusters::current_context()?,
        };
        match cluster {
            Some(name) => local.for_cluster(&name),
            None => Ok(local),
        }
    }
}

fn main() -> ExitCode {
    // Errors on hot failure paths (sends to a dropped peer, refused requests) must stay cheap:
    // with RUST_BACKTRACE=1 in the environment, anyhow would capture a backtrace for each.
    // Panics keep theirs. Set before any thread starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: single-threaded here; nothing reads the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Agent(args) => run_agent(*args),
        Command::Nodes(args) => report(nodes(args)),
        Command::Vips(args) => report(vips(args)),
        Command::Lb(LbArgs {
            command: LbCommand::Detach { cgroup, state_dir },
        }) => report(lb_detach(cgroup, &state_dir)),
        Command::Dns(DnsArgs {
            command: Some(DnsCommand::Records(args)),
            ..
        }) => report(dns_records(args)),
        Command::Dns(DnsArgs {
            command: Some(DnsCommand::Lookup(args)),
            ..
        }) => report(dns_lookup(args)),
        Command::App(AppArgs { command }) => report(match command {
            AppCommand::Add { file, client } => client
                .client()
                .and_then(|c| cli::apps::add(&c, &file, client.local.json)),
            AppCommand::Update { file, client } => client
                .client()
                .and_then(|c| cli::apps::update(&c, &file, client.local.json)),
            AppCommand::List(client) => client
                .client()
                .and_then(|c| cli::apps::list(&c, client.local.json)),
            AppCommand::Scale {
                id,
                instances,
                client,
            } => cli::apps::check_id(&id)
                .and_then(|()| client.client())
                .and_then(|c| cli::apps::scale(&c, &id, instances)),
            AppCommand::Remove { id, client } => cli::apps::check_id(&id)
                .and_then(|()| client.client())
                .and_then(|c| cli::apps::remove(&c, &id)),
            AppCommand::Restart { id, client } => cli::apps::check_id(&id)
                .and_then(|()| client.client())
                .and_then(|c| cli::apps::restart(&c, &id)),
            AppCommand::Versions { id, client } => cli::apps::check_id(&id)
                .and_then(|()| client.client())
                .and_then(|c| cli::apps::versions(&c, &id, client.local.json)),
            AppCommand::Rollback {
                id,
                version,
                client,
            } => cli::apps::check_id(&id)
                .and_then(|()| client.client())
                .and_then(|c| cli::apps::rollback(&c, &id, &version)),
        }),
        Command::Task(TaskArgs { command }) => report(match command {
            TaskCommand::List(client) => client
                .client()
                .and_then(|c| cli::apps::tasks(&c, client.local.json)),
            TaskCommand::Kill {
                task,
                scale,
                client,
            } => client
                .client()
                .and_then(|c| cli::apps::kill(&c, &task, scale)),
        }),
        Command::Deployment(DeploymentArgs { command }) => report(match command {
            DeploymentCommand::List(client) => client
                .client()
                .and_then(|c| cli::apps::deployments(&c, client.local.json)),
            DeploymentCommand::Rollback { id, force, client } => client
                .client()
                .and_then(|c| cli::apps::rollback_deployment(&c, &id, force)),
        }),
        Command::Auth(AuthArgs { command }) => report(auth(command)),
        Command::Node(NodeArgs { command }) => report(match command {
            NodeCommand::Decommission { node, client } => client
                .client()
                .and_then(|c| cli::nodes::decommission(&c, &node)),
            NodeCommand::Decommissioned(client) => client
                .client()
                .and_then(|c| cli::nodes::decommissioned(&c, client.local.json)),
        }),
        Command::Master(MasterArgs { command }) => report(match command {
            MasterCommand::List(client) => client
                .client()
                .and_then(|c| cli::masters::list(&c, client.local.json)),
            MasterCommand::Add { address, client } => client
                .client()
                .and_then(|c| cli::masters::add(&c, &address)),
            MasterCommand::Remove { address, client } => client
                .client()
                .and_then(|c| cli::masters::remove(&c, &address)),
        }),
        Command::Keyring(KeyringArgs { command }) => report(match command {
            KeyringCommand::List(client) => client
                .client()
                .and_then(|c| cli::keyring::list(&c, client.local.json)),
            KeyringCommand::Generate => {
                cli::keyring::generate();
                Ok(())
            }
            KeyringCommand::Install { key, client } => client
                .client()
                .and_then(|c| cli::keyring::install(&c, &key)),
            KeyringCommand::Use { key, force, client } => client
                .client()
                .and_then(|c| cli::keyring::use_key(&c, &key, force)),
            KeyringCommand::Remove { key, force, client } => client
                .client()
                .and_then(|c| cli::keyring::remove(&c, &key, force)),
        }),
        Command::Cluster(ClusterArgs { command }) => report(cluster(command)),
        Command::Policy(PolicyArgs { command }) => report(policy(command)),
        Command::Dns(DnsArgs {
            mesos_dns_config: Some(file),
            log_level,
            ..
        }) => run_mesos_dns(&file, &log_level),
        Command::Dns(_) => {
            eprintln!(
                "dcnet dns: give --mesos-dns-config FILE to serve as Mesos-DNS, or a subcommand (see dcnet dns --help)"
            );
            ExitCode::from(2)
        }
    }
}

fn run_agent(args: AgentArgs) -> ExitCode {
    let memory = dcnet_agent::memory::tune();
    let overrides = Overrides {
        name: args.name,
        address: args.address,
        state_dir: args.state_dir,
        region: args.region,
        zone: args.zone,
        roles: args.roles,
        gossip_listen: args.gossip_listen,
        seeds: args.seeds,
        secret_file: args.secret_file,
        api_listen: args.api_listen,
        log_level: args.log_level,
        log_format: args.log_format,
    };
    let config = match AgentConfig::load(args.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dcnet agent: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    if let Err(e) = &memory.huge_pages_off {
        tracing::warn!(error = %e, "could not turn transparent huge pages off: memory use may be higher");
    }
    if let dcnet_agent::memory::Purge::Unknown(value) = memory.purge {
        tracing::warn!(
            value,
            "mimalloc's purge delay is not where expected; left as it is"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcnet agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agent failed");
            eprintln!("dcnet agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &AgentConfig) {
    init_tracing(&config.log_level, config.log_format);
}

fn init_tracing(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run_mesos_dns(file: &std::path::Path, log_level: &str) -> ExitCode {
    let (config, warnings) = match dcnet_dns::mesos::config::MesosDnsConfig::load(file) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("dcnet dns: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(log_level, LogFormat::Text);
    for warning in warnings {
        tracing::warn!(file = %file.display(), "{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcnet dns: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dcnet_dns::mesos::service::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "dns failed");
            eprintln!("dcnet dns: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn auth(command: AuthCommand) -> anyhow::Result<()> {
    use cli::auth as a;
    match command {
        AuthCommand::Init {
            pki_dir,
            cluster,
            credentials,
            subject,
        } => {
            let credentials = dcnet_auth::client::path(credentials.as_deref());
            a::init(&pki_dir, &cluster, &credentials, &subject)
        }
        AuthCommand::Token(TokenArgs { command }) => match command {
            TokenCommand::Create {
                subject,
                role,
                ttl,
                save,
                offline: true,
                pki_dir,
                ..
            } => a::create_offline(&pki_dir, &subject, role, ttl, save.as_deref()),
            TokenCommand::Create {
                subject,
                role,
                ttl,
                save,
                client,
                ..
            } => a::create(&client.client()?, &subject, role, ttl, save.as_deref()),
            TokenCommand::List(client) => a::list(&client.client()?, client.local.json),
            TokenCommand::Revoke { id, client } => a::revoke(&client.client()?, &id),
        },
        AuthCommand::User(UserArgs { command }) => match command {
            UserCommand::Set {
                name,
                role,
                password_file,
                client,
            } => a::set_user(&client.client()?, &name, role, password_file.as_deref()),
            UserCommand::List(client) => a::users(&client.client()?, client.local.json),
            UserCommand::Remove { name, client } => a::remove_user(&client.client()?, &name),
        },
        AuthCommand::Whoami(client) => a::whoami(&client.client()?),
    }
}

fn nodes(args: ClientArgs) -> anyhow::Result<()> {
    let members: Vec<dcnet_agent::node::Member> = cli::get_json(&args.client()?, "/v1/nodes")?;
    if args.local.json {
        println!("{}", serde_json::to_string_pretty(&members)?);
    } else {
        print!("{}", cli::nodes::render_table(&members));
    }
    Ok(())
}

fn vips(args: ClientArgs) -> anyhow::Result<()> {
    let vips: Vec<dcnet_agent::lb::VipStatus> = cli::get_json(&args.client()?, "/v1/vips")?;
    if args.local.json {
        println!("{}", serde_json::to_string_pretty(&vips)?);
    } else {
        print!("{}", cli::vips::render_table(&vips));
    }
    Ok(())
}

fn lb_detach(
    cgroup: Option<std::path::PathBuf>,
    state_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let cgroup = match cgroup {
        Some(path) => path,
        None => dcnet_agent::config::cgroup2_mount().ok_or_else(|| {
            anyhow::anyhow!(
                "no cgroup v2 mount in /proc/self/mounts: give the cgroup with --cgroup"
            )
        })?,
    };
    let n = dcnet_lb::datapath::detach_all(&cgroup)?;
    println!(
        "{n} load-balancer programs detached from {}",
        cgroup.display()
    );
    let pins = state_dir.join(dcnet_agent::state::BPF_DIR);
    let unpinned = dcnet_lb::pins::unpin(&pins, &dcnet_lb::datapath::SHARED_MAPS)?;
    let unmounted = dcnet_lb::pins::unmount(&pins)?;
    println!(
        "{unpinned} pinned socket tables removed from {}{}",
        pins.display(),
        if unmounted { " (unmounted)" } else { "" }
    );
    Ok(())
}

fn dns_records(args: DnsRecordsArgs) -> anyhow::Result<()> {
    let options = cli::dns::RecordsOptions {
        domain: args.domain,
        rfc952: args.rfc952,
        ip_sources: args.ip_sources,
        ttl: args.ttl,
    };
    print!("{}", cli::dns::records(&args.state, &options)?);
    Ok(())
}

fn dns_lookup(args: DnsLookupArgs) -> anyhow::Result<()> {
    let lookup = cli::dns::lookup(args.server, &args.name, &args.kind)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lookup)?);
    } else {
        print!("{}", cli::dns::render_lookup(&lookup));
    }
    Ok(())
}

fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    let said = match command {
        ClusterCommand::List(args) => {
            let (answer, table) = cli::clusters::list(&args.client()?)?;
            if args.json {
                format!("{}\n", serde_json::to_string_pretty(&answer)?)
            } else {
                table
            }
        }
        ClusterCommand::Link {
            url,
            name,
            ca,
            token_file,
            dns,
            client,
        } => cli::clusters::link(
            &client.client()?,
            &cli::clusters::LinkArgs {
                url: &url,
                name: &name,
                ca: ca.as_deref(),
                token_file: token_file.as_deref(),
                dns: &dns,
            },
        )?,
        ClusterCommand::Unlink { name, client } => cli::clusters::unlink(&client.client()?, &name)?,
        ClusterCommand::Switch { name, client, .. } => {
            cli::clusters::switch(&client.client()?, name.as_deref())?
        }
    };
    print!("{said}");
    Ok(())
}

fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    let said = match command {
        PolicyCommand::Add {
            file,
            replace,
            client,
        } => cli::policies::add(&client.client()?, &file, replace)?,
        PolicyCommand::List(client) => cli::policies::list(&client.client()?, client.local.json)?,
        PolicyCommand::Remove { id, client } => cli::policies::remove(&client.client()?, &id)?,
    };
    print!("{said}");
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}
