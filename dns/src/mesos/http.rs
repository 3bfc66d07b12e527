//! Mesos-DNS's HTTP API, with its JSON shapes, so existing clients keep working:
//!
//! - `GET /v1/version`: `{"Service":"Mesos-DNS","URL":...,"Version":...}`
//! - `GET /v1/config`: the configuration, with Mesos-DNS's field names
//! - `GET /v1/hosts/{host}`: `[{"host","ip"}]`, one per A/AAAA record; `host` is the name
//!   asked for, lower-cased, `.*` removed, with a trailing dot; an unknown host gives one
//!   record of empty strings
//! - `GET /v1/hosts/{host}/ports`: 501, as in Mesos-DNS
//! - `GET /v1/services/{service}`: `[{"service","host","ip","port"}]`, per SRV record one for
//!   the target's first A and one for its first AAAA (none when it has neither); `service` is
//!   the name as asked for; an unknown service gives one record of empty strings
//! - `GET /v1/enumerate`: frameworks, tasks and their records; `GET /v1/axfr`: the whole zone
//!   (`As`, `AAAAs`, `SRVs`, and the SOA settings). Both 404 when `EnumerationOn` is off: Mesos-DNS
//!   has no such routes then.
//!
//! The drop-in adds `GET /metrics` (Prometheus text). What is served comes from an
//! [`ApiSource`]: the drop-in's last refresh ([`ApiModel`]), or an agent's gossip replica.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::config::MesosDnsConfig;
use crate::records::{self, Cluster, Enumeration, Settings, fqdn};
use crate::zone::Snapshot;

/// What the API serves: the records of the last good state.
#[derive(Debug, Default)]
pub struct ApiModel {
    /// The snapshot DNS answers from.
    pub snapshot: Arc<Snapshot>,
    /// The state it was made from and the settings it was made with, for `/v1/enumerate`. The
    /// enumeration lists every record, so it is made when asked for rather than on every
    /// refresh.
    pub source: Option<Arc<(Cluster, Settings)>>,
}

/// Where the API's answers come from.
pub trait ApiSource: Send + Sync + 'static {
    /// The records DNS answers from now.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Every framework, task and record, made when asked for (it lists every record).
    fn enumeration(&self) -> Enumeration;
}

impl ApiSource for ArcSwap<ApiModel> {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.load().snapshot.clone()
    }

    fn enumeration(&self) -> Enumeration {
        let Some(source) = self.load().source.clone() else {
            return Enumeration::default();
        };
        let (cluster, settings) = &*source;
        records::generate(cluster, settings).enumeration
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The configuration `/v1/config` shows, and the domain and SOA settings.
    pub config: Arc<MesosDnsConfig>,
    pub source: Arc<dyn ApiSource>,
    /// Served at `/metrics` if given.
    pub registry: Option<Arc<Registry>>,
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    let router = Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(config))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/hosts/{host}/ports", get(ports))
        .route("/v1/services/{service}", get(services))
        .route("/v1/enumerate", get(enumerate))
        .route("/v1/axfr", get(axfr));
    let router = if state.registry.is_some() {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router.with_state(state)
}

/// The SOA serial of `domain` in `snapshot` (the time of its last change), 0 if not served.
fn serial(snapshot: &Snapshot, domain: &str) -> u32 {
    let origin = fqdn(domain);
    snapshot
        .zones()
        .iter()
        .find(|z| z.origin == origin)
        .map_or(0, |z| z.soa.serial)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Version {
    service: &'static str,
    #[serde(rename = "URL")]
    url: &'static str,
    version: &'static str,
}

async fn version() -> axum::Json<Version> {
    axum::Json(Version {
        service: "Mesos-DNS",
        // Mesos-DNS's own, as clients may compare it; the version is dcnet's.
        url: "https://github.com/mesosphere/mesos-dns",
        version: env!("CARGO_PKG_VERSION"),
    })
}

async fn config(State(s): State<ApiState>) -> axum::Json<serde_json::Value> {
    axum::Json(
        s.config
            .shown(serial(&s.source.snapshot(), &s.config.domain)),
    )
}

/// Mesos-DNS never implemented it; its clients get the same answer.
async fn ports() -> (StatusCode, &'static str) {
    (StatusCode::NOT_IMPLEMENTED, "To be implemented...")
}

/// A name as Mesos-DNS's API takes it: wildcard labels (`.*`) removed, lower-cased, fully
/// qualified.
fn api_name(name: &str) -> String {
    fqdn(&name.replace(".*", ""))
}

#[derive(Serialize)]
struct HostRecord {
    host: String,
    ip: String,
}

/// The A then AAAA addresses of `name`.
fn addresses(snapshot: &Snapshot, name: &str) -> Vec<String> {
    let Some(records) = snapshot.records(name) else {
        return Vec::new();
    };
    let v4 = records.a.iter().map(|ip| ip.to_string());
    let v6 = records.aaaa.iter().map(|ip| ip.to_string());
    v4.chain(v6).collect()
}

async fn hosts(State(s): State<ApiState>, Path(host): Path<String>) -> axum::Json<Vec<HostRecord>> {
    let name = api_name(&host);
    let snapshot = s.source.snapshot();
    let mut out: Vec<HostRecord> = addresses(&snapshot, &name)
        .into_iter()
        .map(|ip| HostRecord {
            host: name.clone(),
            ip,
        })
        .collect();
    if out.is_empty() {
        out.push(HostRecord {
            host: String::new(),
            ip: String::new(),
        });
    }
    axum::Json(out)
}

#[derive(Serialize)]
struct ServiceRecord {
    service: String,
    host: String,
    ip: String,
    port: String,
}

async fn services(
    State(s): State<ApiState>,
    Path(service): Path<String>,
) -> axum::Json<Vec<ServiceRecord>> {
    let name = api_name(&service);
    let snapshot = s.source.snapshot();
    let mut out = Vec::new();
    let records = snapshot.records(&name).unwrap_or_default();
    for srv in &records.srv {
        let target = snapshot.records(&srv.target).unwrap_or_default();
        let first_v4 = target.a.first().map(|ip| ip.to_string());
        let first_v6 = target.aaaa.first().map(|ip| ip.to_string());
        for ip in first_v4.into_iter().chain(first_v6) {
            out.push(ServiceRecord {
                // As asked for, not cleaned: Mesos-DNS echoes its path parameter.
                service: service.clone(),
                host: srv.target.to_string(),
                ip,
                port: srv.port.to_string(),
            });
        }
    }
    if out.is_empty() {
        out.push(ServiceRecord {
            service: String::new(),
            host: String::new(),
            ip: String::new(),
            port: String::new(),
        });
    }
    axum::Json(out)
}

async fn enumerate(State(s): State<ApiState>) -> Result<axum::Json<Enumeration>, StatusCode> {
    if !s.config.enumeration_on {
        return Err(StatusCode::NOT_FOUND);
    }
    // Made on a blocking thread: it lists every record of every task.
    let source = s.source.clone();
    tokio::task::spawn_blocking(move || source.enumeration())
        .await
        .map(axum::Json)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Axfr {
    #[serde(rename = "TTL")]
    ttl: u32,
    serial: u32,
    refresh_seconds: u64,
    mname: String,
    rname: String,
    domain: String,
    records: AxfrRecords,
}

#[derive(Serialize)]
struct AxfrRecords {
    #[serde(rename = "As")]
    a: BTreeMap<String, Vec<String>>,
    #[serde(rename = "AAAAs")]
    aaaa: BTreeMap<String, Vec<String>>,
    #[serde(rename = "SRVs")]
    srv: BTreeMap<String, Vec<String>>,
}

async fn axfr(State(s): State<ApiState>) -> Result<axum::Json<Axfr>, StatusCode> {
    if !s.config.enumeration_on {
        return Err(StatusCode::NOT_FOUND);
    }
    let snapshot = s.source.snapshot();
    let mut records = AxfrRecords {
        a: BTreeMap::new(),
        aaaa: BTreeMap::new(),
        srv: BTreeMap::new(),
    };
    for (name, r) in snapshot.names_with_records() {
        let put = |map: &mut BTreeMap<String, Vec<String>>, values: Vec<String>| {
            if !values.is_empty() {
                map.insert(name.clone(), values);
            }
        };
        put(
            &mut records.a,
            r.a.iter().map(|ip| ip.to_string()).collect(),
        );
        put(
            &mut records.aaaa,
            r.aaaa.iter().map(|ip| ip.to_string()).collect(),
        );
        put(
            &mut records.srv,
            r.srv
                .iter()
                .map(|t| format!("{}:{}", t.target, t.port))
                .collect(),
        );
    }
    Ok(axum::Json(Axfr {
        ttl: s.config.ttl,
        serial: serial(&snapshot, &s.config.domain),
        refresh_seconds: s.config.refresh_seconds,
        mname: fqdn(&s.config.soa_mname),
        rname: fqdn(&s.config.soa_rname),
        domain: s.config.domain.clone(),
        records,
    }))
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    let mut body = String::new();
    if let Some(registry) = &s.registry {
        let _ = prometheus_client::encoding::text::encode(&mut body, registry);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
