//! `dcnet agent`: wires configuration, identity, gossip, DNS, the overlay, the load balancer and
//! the local API together and runs them until asked to stop.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Error;
use crate::api::{self, ApiState};
use crate::auth::Auth;
use crate::config::AgentConfig;
use crate::dns::DnsService;
use crate::facts::node::{NODE_INFO_KEY, NodeInfo};
use crate::facts::{self, Topics};
use crate::gossip::keyring::{self, Keyring};
use crate::gossip::{AuthenticatedUdp, Gossip, MembershipMetrics, TransportMetrics};
use crate::identity::NodeIdentity;
use crate::lb::LbService;
use crate::lb::service::NamedVips;
use crate::lifecycle::{Services, Stage};
use crate::overlay::OverlayService;
use crate::scheduler::SchedulerService;
use crate::state::StateDir;

/// How long each stage of services gets to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the agent until `shutdown` completes, then leaves the cluster and returns.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let state = Arc::new(StateDir::open(&config.state_dir)?);
    let identity = NodeIdentity::load_or_create(&state)?;

    // Bind the API first: a node that cannot serve it should not join the cluster.
    let listener = crate::serve::bind(config.api_listen).map_err(|source| Error::ApiBind {
        listen: config.api_listen,
        source,
    })?;

    let mut registry = Registry::default();
    let auth = Auth::load(&config.auth, state.clone(), &mut registry)?;
    let cluster = crate::identity::ClusterIdentity::new(
        auth.ca_pem(),
        &config.gossip.cluster,
        &config.dns.domain,
    );
    let transport_metrics = TransportMetrics::default();
    transport_metrics.register(&mut registry);
    let serve_metrics = crate::serve::ServeMetrics::default();
    serve_metrics.register(&mut registry);
    let membership_metrics = MembershipMetrics::default();
    membership_metrics.register(&mut registry);

    let (keyring, secret_ignored) = Keyring::open(&config.state_dir, &config.gossip.secret)?;
    if secret_ignored {
        warn!(
            file = %config.state_dir.join(keyring::KEYRING_FILE).display(),
            "the cluster secret is not among the gossip keys this node keeps: the keyring file wins (rotate keys with `dcnet keyring`)"
        );
    }
    let transport =
        AuthenticatedUdp::new(keyring.clone(), config.gossip.advertise, transport_metrics);
    let info = serde_json::to_string(&NodeInfo::from_config(&config)).expect("NodeInfo serialises");
    let keys = serde_json::to_string(&keyring.keys().fact()).expect("KeyringFact serialises");
    let gossip = Arc::new(
        Gossip::start(
            &config.gossip,
            &identity,
            (&transport, transport.max_message_len()),
            vec![
                (NODE_INFO_KEY.to_owned(), info),
                (crate::facts::KEYRING_KEY.to_owned(), keys),
            ],
            membership_metrics,
        )
        .await?,
    );

    // Every task of every service runs in `services` and stops with its stage; a failed start
    // drops it, which stops what had started.
    let mut services = Services::default();
    // Every service reads gossip through the decoded facts, waking for its topics only.
    let facts = facts::Cache::start(gossip.watch(), (&mut registry, &mut services));
    let tasks = Topics::NODES | Topics::MESOS | Topics::LAUNCHED;

    // The load balancer tells DNS which named VIPs its datapath has.
    let (named_vips, named_vips_rx) = watch::channel(NamedVips::new());

    let dns = if config.dns.enabled {
        Some(
            DnsService::start(
                config.dns.clone(),
                gossip.clone(),
                // And the linked clusters the leading scheduler publishes.
                facts.watch("dns", tasks | Topics::LINKS),
                config.address,
                named_vips_rx,
                (&mut registry, &mut services),
                (config.http_limits, serve_metrics.clone()),
            )
            .await?,
        )
    } else {
        None
    };

    let overlay = match (config.overlay.enabled, config.address) {
        (true, underlay) => {
            let dns_listen = if config.dns.enabled {
                config.dns.listen.clone()
            } else {
                Vec::new()
            };
            Some(Arc::new(
                OverlayService::start(
                    config.overlay.clone(),
                    gossip.clone(),
                    facts.watch("overlay", Topics::NODES | Topics::OVERLAY),
                    state.clone(),
                    underlay,
                    &dns_listen,
                    (&mut registry, &mut services),
                )
                .await?,
            ))
        }
        (false, _) => None,
    };

    let lb = if config.lb.enabled {
        Some(Arc::new(LbService::start(
            &config.lb,
            &config.state_dir.join(crate::state::BPF_DIR),
            facts.watch("lb", tasks),
            named_vips,
            overlay.clone(),
            (&mut registry, &mut services),
        )?))
    } else {
        None
    };

    // The agent API's router, once built: a master's scheduler API answers the dashboard's
    // node reads from it.
    let node_reads = Arc::new(std::sync::OnceLock::new());
    let scheduler = if config.scheduler.enabled {
        let facts = facts.watch("scheduler", Topics::NODES | Topics::LAUNCHED);
        Some(
            SchedulerService::start(
                &config.scheduler,
                (gossip.clone(), facts, &mut services),
                (state.clone(), config.gossip.interval),
                &auth,
                (&config.name, config.address, config.region.as_deref()),
                (cluster.clone(), node_reads.clone()),
                (config.http_limits, serve_metrics.clone()),
            )
            .await?,
        )
    } else {
        None
    };
    let policy = if let (true, Some(cgroup)) = (config.launcher.enabled, &config.launcher.cgroup) {
        // Before the launcher: no task starts on a node whose policies are not in force.
        Some(crate::policy::enforce::Enforcement::start(
            cgroup,
            &config.state_dir.join(crate::state::BPF_DIR),
            (
                gossip.clone(),
                facts.watch("policy", tasks | Topics::SCHEDULER | Topics::POLICIES),
            ),
            (&mut registry, &mut services),
        )?)
    } else {
        None
    };
    if config.launcher.enabled {
        crate::launcher::start(
            config.launcher.clone(),
            (
                gossip.clone(),
                facts.watch("launcher", Topics::NODES | Topics::SCHEDULER),
            ),
            (overlay.clone(), policy),
            config.state_dir.join("tasks"),
            config.address,
            (&mut registry, &mut services),
        )?;
    }

    auth.follow(facts.watch("auth", Topics::CREDENTIALS), &mut services);
    let api_state = ApiState {
        gossip: gossip.clone(),
        facts: facts.watch("api", Topics::empty()),
        client: auth.client(std::time::Duration::from_secs(10))?,
        stream_client: auth.streaming_client()?,
        local_scheduler: scheduler.as_ref().map(|s| s.api_url().to_owned()),
        registry: Arc::new(registry),
        overlay: overlay.clone(),
        lb: lb.clone(),
        keyring,
        mesos_dns: dns.as_ref().map(DnsService::mesos_api),
        dns_lookup: dns.as_ref().map(DnsService::lookup_api),
        cluster: cluster.clone(),
    };
    let guard = auth.guard("agent", api::OPEN_ROUTES);
    let _ = node_reads.set(api::router(api_state.clone(), guard.clone()));
    let stop_api = services.stopping(Stage::Api);
    let limits = config.http_limits;
    services.spawn(Stage::Api, "API", async move {
        let stopped = async move { stop_api.cancelled().await };
        if let Err(e) = api::serve(listener, api_state, guard, limits, serve_metrics, stopped).await
        {
            warn!(error = %e, "the API server failed");
        }
    });
    info!(name = %config.name, node_id = %identity.id, generation = identity.generation,
          api = %api::url(config.api_listen), "agent running");

    shutdown.await;
    info!("shutting down");
    // The control plane first (tasks keep running for the next start to adopt), then what
    // serves the node, the API, the facts; gossip last, after every reader and writer of it.
    let failed = services.shutdown(SHUTDOWN_GRACE).await;
    if let Some(scheduler) = scheduler {
        scheduler.shutdown().await;
    }
    if let Some(dns) = dns {
        dns.shutdown().await;
    }
    // Leaves the load balancer's datapath attached until the process ends (see LbService).
    drop((overlay, lb, facts));
    gossip.shutdown().await;
    if failed.is_empty() {
        info!("stopped");
    } else {
        warn!(tasks = ?failed, "stopped; some service tasks had to be aborted");
    }
    Ok(())
}
