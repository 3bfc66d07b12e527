//! Mesos-DNS's HTTP API served by an agent from its own replica, as DC/OS serves it on every
//! master (`:8123`): `[dns] http_listen` puts it on a port of its own, without credentials as
//! Mesos-DNS's; the agent's authenticated API serves the same under `/mesos_dns/` (DC/OS's
//! path through its admin router). `/v1/config` shows this node's DNS settings under
//! Mesos-DNS's keys.

use std::net::IpAddr;
use std::sync::Arc;

use dcnet_dns::mesos::config::{Credentials, MesosAuthentication, MesosDnsConfig};
use dcnet_dns::mesos::fetch::MasterAuth;
use dcnet_dns::mesos::http::{ApiSource, ApiState};
use dcnet_dns::records::Enumeration;
use dcnet_dns::server::SharedSnapshot;
use dcnet_dns::zone::Snapshot;

use crate::config::DnsSettings;
use crate::facts::FactsWatch;

/// The replica as the API's source.
struct Replica {
    snapshot: SharedSnapshot,
    facts: FactsWatch,
    settings: DnsSettings,
    this_node: IpAddr,
}

impl ApiSource for Replica {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    fn enumeration(&self) -> Enumeration {
        super::replica::enumeration(
            &self.facts.peek(),
            &self.settings.domain,
            &self.settings.zone,
            self.this_node,
        )
    }
}

/// The router of the API over this node's replica.
pub fn router(
    settings: &DnsSettings,
    snapshot: SharedSnapshot,
    facts: FactsWatch,
    this_node: IpAddr,
) -> axum::Router {
    let state = ApiState {
        config: Arc::new(config_of(settings)),
        source: Arc::new(Replica {
            snapshot,
            facts,
            settings: settings.clone(),
            this_node,
        }),
        registry: None,
    };
    dcnet_dns::mesos::http::router(state)
}

/// This node's DNS settings under Mesos-DNS's keys: what it serves and how, and where it
/// reads masters from (credentials masked).
pub fn config_of(settings: &DnsSettings) -> MesosDnsConfig {
    let zone = &settings.zone;
    let address = |a: &std::net::SocketAddr| a.to_string();
    let listen = settings.listen.first();
    let (authentication, credentials, iam) = match &settings.mesos_access.auth {
        MasterAuth::None => (
            MesosAuthentication::None,
            Credentials::default(),
            String::new(),
        ),
        MasterAuth::Basic { principal, secret } => (
            MesosAuthentication::Basic,
            Credentials {
                principal: principal.clone(),
                secret: secret.clone(),
            },
            String::new(),
        ),
        MasterAuth::Iam(path) => (
            MesosAuthentication::Iam,
            Credentials::default(),
            path.display().to_string(),
        ),
    };
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let (cert, key) = match &settings.mesos_access.client_cert {
        Some((c, k)) => (c.display().to_string(), k.display().to_string()),
        None => (String::new(), String::new()),
    };
    let defaults = MesosDnsConfig::default();
    MesosDnsConfig {
        refresh_seconds: settings.mesos_refresh.as_secs().max(1),
        port: listen.map_or(53, |a| a.port()),
        listener: listen.map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip()),
        http_port: settings.http_listen.map_or(0, |a| a.port()),
        http_listener: settings
            .http_listen
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip()),
        http_on: settings.http_listen.is_some(),
        state_timeout_seconds: settings.mesos_state_timeout.as_secs().max(1),
        ttl: zone.ttl,
        soa_refresh: zone.soa_refresh,
        soa_retry: zone.soa_retry,
        soa_expire: zone.soa_expire,
        soa_minttl: zone.soa_minttl,
        soa_mname: zone.soa_mname.clone(),
        soa_rname: zone.soa_rname.clone(),
        masters: settings.mesos_masters.iter().map(address).collect(),
        resolvers: settings.upstreams.iter().map(address).collect(),
        zone_resolvers: settings
            .zone_resolvers
            .iter()
            .map(|(z, servers)| (z.clone(), servers.iter().map(address).collect()))
            .collect(),
        ip_sources: settings.ip_sources.clone(),
        zk: settings
            .mesos_zk
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default(),
        domain: settings.domain.clone(),
        external_on: !settings.upstreams.is_empty(),
        enforce_rfc952: zone.rfc952,
        // Agents set RA on forwarded answers only, and keep the standard TC.
        recurse_on: false,
        mesos_https_on: settings.mesos_access.https,
        ca_cert_file: path(&settings.mesos_access.ca_file),
        cert_file: cert,
        key_file: key,
        mesos_credentials: credentials,
        iam_config_file: iam,
        mesos_authentication: authentication,
        ..defaults
    }
}
