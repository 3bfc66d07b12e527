//! The parts of a Mesos master's `/master/state` document that DNS records come from.
//!
//! Every field is optional on the wire (masters of different versions omit different ones), so
//! missing fields default instead of failing the whole document; what must be present for a
//! record is checked where the record is made.

use std::net::IpAddr;

use serde::Deserialize;

/// `GET /master/state`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct State {
    #[serde(default)]
    pub frameworks: Vec<Framework>,
    #[serde(default)]
    pub slaves: Vec<Agent>,
    /// The leading master's PID, `master@IP:PORT`.
    #[serde(default)]
    pub leader: String,
}

/// A framework (scheduler) and its tasks.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Framework {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// The scheduler's PID, `name@IP:PORT`.
    #[serde(default)]
    pub pid: Option<String>,
    #[serde(default)]
    pub hostname: String,
}

/// An agent ("slave" in the document).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Agent {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub hostname: String,
    /// `slave(1)@IP:PORT`.
    #[serde(default)]
    pub pid: Option<String>,
}

/// A task.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Task {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub slave_id: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub statuses: Vec<Status>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub discovery: Option<DiscoveryInfo>,
}

/// A task's resources; only its port ranges matter here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resources {
    /// Mesos' range notation: `[31000-31002, 31010-31010]`.
    #[serde(default)]
    pub ports: Option<String>,
}

/// One status update of a task.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub timestamp: f64,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub container_status: Option<ContainerStatus>,
    /// The result of the task's health checks, when it has any.
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// A key/value label.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Label {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// What the containerizer reported about a task's container.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerStatus {
    #[serde(default)]
    pub network_infos: Vec<NetworkInfo>,
}

/// One network interface of a container.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkInfo {
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    /// Mesos 0.25 reported a single address here.
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// One address of a container interface.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpAddress {
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// A task's service-discovery information (set by frameworks such as Marathon).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscoveryInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ports: DiscoveryPorts,
}

/// `discovery.ports`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscoveryPorts {
    #[serde(default)]
    pub ports: Vec<DiscoveryPort>,
}

/// A named, numbered port of a task.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscoveryPort {
    #[serde(default)]
    pub number: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    /// Labels such as `VIP_0` = `/web:80` (the load balancer's VIPs).
    #[serde(default)]
    pub labels: Labels,
}

/// Mesos' `Labels` message: `{"labels": [{"key": ..., "value": ...}]}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Labels {
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// Where a task's IP addresses may come from (`IPSources` in Mesos-DNS's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    /// The container's network infos (latest running status).
    Netinfo,
    /// The `Docker.NetworkSettings.IPAddress` status label.
    Docker,
    /// The `MesosContainerizer.NetworkSettings.IPAddress` status label.
    Mesos,
    /// The agent's address.
    Host,
}

impl std::str::FromStr for IpSource {
    type Err = String;

    /// `netinfo`, `docker`, `mesos` or `host`, as Mesos-DNS's `IPSources` names them.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "netinfo" => Ok(IpSource::Netinfo),
            "docker" => Ok(IpSource::Docker),
            "mesos" => Ok(IpSource::Mesos),
            "host" => Ok(IpSource::Host),
            other => Err(format!(
                "unknown IP source {other:?}: use netinfo, docker, mesos or host"
            )),
        }
    }
}

const DOCKER_IP_LABEL: &str = "Docker.NetworkSettings.IPAddress";
const MESOS_IP_LABEL: &str = "MesosContainerizer.NetworkSettings.IPAddress";

impl Task {
    /// Whether the task carries discovery info (a non-empty discovery name).
    pub fn has_discovery_info(&self) -> bool {
        self.discovery.as_ref().is_some_and(|d| !d.name.is_empty())
    }

    /// The latest `TASK_RUNNING` status: Mesos does not order statuses, so by timestamp.
    fn latest_running_status(&self) -> Option<&Status> {
        self.statuses
            .iter()
            .filter(|s| s.state == "TASK_RUNNING")
            .max_by(|a, b| a.timestamp.total_cmp(&b.timestamp))
    }

    /// The health of the task as its latest status with a health result reports it; `None`
    /// when it has no health checks.
    pub fn healthy(&self) -> Option<bool> {
        self.statuses
            .iter()
            .filter(|s| s.healthy.is_some())
            .max_by(|a, b| a.timestamp.total_cmp(&b.timestamp))
            .and_then(|s| s.healthy)
    }

    /// The addresses of the first of `sources` that yields any, in its order (Mesos-DNS's
    /// rule: a task with two network infos and an IPv6 address answers all three; a later
    /// source is not consulted). `agent_ips` serve the `host` source.
    pub fn ips(&self, sources: &[IpSource], agent_ips: &[IpAddr]) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for source in sources {
            if !ips.is_empty() {
                break;
            }
            match source {
                IpSource::Host => ips.extend_from_slice(agent_ips),
                IpSource::Netinfo => {
                    let Some(status) = self.latest_running_status() else {
                        continue;
                    };
                    for info in status
                        .container_status
                        .iter()
                        .flat_map(|c| &c.network_infos)
                    {
                        if info.ip_addresses.is_empty() {
                            ips.extend(
                                info.ip_address
                                    .as_deref()
                                    .and_then(|a| a.parse::<IpAddr>().ok()),
                            );
                        } else {
                            ips.extend(
                                info.ip_addresses.iter().filter_map(|a| {
                                    a.ip_address.as_deref()?.parse::<IpAddr>().ok()
                                }),
                            );
                        }
                    }
                }
                IpSource::Docker | IpSource::Mesos => {
                    let key = if *source == IpSource::Docker {
                        DOCKER_IP_LABEL
                    } else {
                        MESOS_IP_LABEL
                    };
                    let Some(status) = self.latest_running_status() else {
                        continue;
                    };
                    ips.extend(
                        status
                            .labels
                            .iter()
                            .filter(|l| l.key == key)
                            .filter_map(|l| l.value.parse::<IpAddr>().ok()),
                    );
                }
            }
        }
        ips
    }

    /// Every port of the task's port ranges, in order. Malformed ranges are skipped.
    pub fn ports(&self) -> Vec<u16> {
        let Some(ranges) = self.resources.ports.as_deref() else {
            return Vec::new();
        };
        let inner = ranges.trim().trim_start_matches('[').trim_end_matches(']');
        let mut ports = Vec::new();
        for range in inner.split(',') {
            let Some((lo, hi)) = range.trim().split_once('-') else {
                continue;
            };
            let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) else {
                continue;
            };
            ports.extend(lo..=hi);
        }
        ports
    }
}

/// Splits a Mesos PID (`name@HOST:PORT`, IPv6 hosts in brackets) into host and port.
pub fn split_pid(pid: &str) -> Option<(&str, u16)> {
    let (_, address) = pid.split_once('@')?;
    split_host_port(address)
}

/// Splits `HOST:PORT` or `[V6]:PORT`.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_expand() {
        let task = |ports: &str| Task {
            resources: Resources {
                ports: Some(ports.into()),
            },
            ..Task::default()
        };
        assert_eq!(
            task("[31354-31354, 31355-31355]").ports(),
            vec![31354, 31355]
        );
        assert_eq!(task("[31737-31739]").ports(), vec![31737, 31738, 31739]);
        assert_eq!(task("[]").ports(), Vec::<u16>::new());
        assert_eq!(task("[1-2, junk, 5-x, 9-9]").ports(), vec![1, 2, 9]);
        assert_eq!(Task::default().ports(), Vec::<u16>::new());
    }

    #[test]
    fn pids_split() {
        assert_eq!(split_pid("master@1.2.3.4:5050"), Some(("1.2.3.4", 5050)));
        assert_eq!(
            split_pid("slave(1)@[2001:db8::1]:5051"),
            Some(("2001:db8::1", 5051))
        );
        assert_eq!(split_pid("no-at-sign"), None);
        assert_eq!(split_pid("x@host:notaport"), None);
    }
}
