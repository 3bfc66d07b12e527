//! What a launcher publishes about the tasks it runs: one `task/<task id>` key each, holding a
//! [`TaskStatus`]. The scheduler reads them to follow (and, after a failover, adopt) tasks;
//! DNS and the load balancer turn the running ones into records and VIP backends, through
//! [`super::cluster::launched_tasks`].

use std::net::IpAddr;

use dcnet_dns::records::{Discovery, DiscoveryPort, TaskInfo};
use serde::{Deserialize, Serialize};

use crate::app::{Network, PortSpec, task_ports};

pub const PREFIX: &str = "task/";
/// The framework name launched tasks are published under, as Marathon's are in Mesos.
pub const FRAMEWORK: &str = "marathon";

/// A task's lifecycle, in Mesos's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    TaskStaging,
    TaskRunning,
    TaskKilling,
    TaskFinished,
    TaskFailed,
    TaskKilled,
}

impl TaskState {
    /// Whether the task is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::TaskFinished | TaskState::TaskFailed | TaskState::TaskKilled
        )
    }

    /// Mesos's name, e.g. `TASK_RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::TaskStaging => "TASK_STAGING",
            TaskState::TaskRunning => "TASK_RUNNING",
            TaskState::TaskKilling => "TASK_KILLING",
            TaskState::TaskFinished => "TASK_FINISHED",
            TaskState::TaskFailed => "TASK_FAILED",
            TaskState::TaskKilled => "TASK_KILLED",
        }
    }
}

/// A task as its launcher reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: String,
    pub app_id: String,
    /// The app version the task runs.
    pub version: String,
    pub state: TaskState,
    /// `None` without health checks; `Some(false)` until the first check passes.
    pub healthy: Option<bool>,
    /// A health check has no result yet (the task is starting, or failing inside its grace
    /// period): not healthy, but not seen failing either.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub health_pending: bool,
    /// The task's own address on an overlay (its IPv4 one on a dual-stack overlay), or the
    /// node's on the host network.
    pub ip: Option<IpAddr>,
    /// The task's IPv6 address on a dual-stack overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    pub network: Network,
    pub ports: Vec<PortSpec>,
    pub host_ports: Vec<u16>,
    pub cpus: f64,
    pub mem: f64,
    /// When the task was staged and when it started running, ms since the epoch.
    pub staged_ms: u64,
    pub started_ms: Option<u64>,
    /// Why it ended (or why it is being killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// With a readiness check: whether it has passed (`None`: the app has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

impl TaskStatus {
    /// Every address of the task, `ip` first.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.ip.into_iter().collect();
        if let Some(ip6) = self.ip6.map(IpAddr::V6)
            && !ips.contains(&ip6)
        {
            ips.push(ip6);
        }
        ips
    }

    /// The Mesos task name (`/prod/web` → `web.prod`).
    pub fn task_name(&self) -> String {
        crate::app::task_name(&self.app_id)
    }

    /// The task as DNS and the load balancer see it, on agent `agent_id`. Running and not
    /// failing its health checks is what puts a task in DNS; the load balancer gives a task
    /// that fails them weight 0.
    ///
    /// As Mesos describes a task: its port resources (`ports`: `.slave` SRV records, and
    /// whether autoip is the agent's address) are the ports bound on the agent, the host
    /// network's ports or an overlay's mapped host ports; its discovery ports are where the
    /// task itself is reached (the container's own ports on an overlay).
    pub fn to_task_info(&self, agent_id: &str) -> TaskInfo {
        let name = self.task_name();
        let numbers = task_ports(&self.network, &self.ports, &self.host_ports);
        let ports: Vec<DiscoveryPort> = self
            .ports
            .iter()
            .zip(&numbers)
            .map(|(p, number)| DiscoveryPort {
                number: *number,
                protocol: p.protocol.as_str().to_owned(),
                name: p.name.clone().unwrap_or_default(),
                labels: p
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect();
        TaskInfo {
            id: self.task_id.clone(),
            name: name.clone(),
            agent_id: agent_id.into(),
            is_running: self.state == TaskState::TaskRunning,
            ips: self.ips(),
            ports: match self.network {
                Network::Host => numbers,
                Network::Container(_) => self
                    .host_ports
                    .iter()
                    .copied()
                    .filter(|p| *p != 0)
                    .collect(),
            },
            healthy: self.healthy,
            discovery: (!ports.is_empty()).then_some(Discovery { name, ports }),
        }
    }
}

/// Statuses for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::collections::BTreeMap;

    use super::*;
    use crate::app::PortProtocol;

    pub(crate) fn status(id: &str, state: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: id.into(),
            app_id: "/prod/web".into(),
            version: "v".into(),
            state,
            healthy: Some(true),
            health_pending: false,
            ip: Some("9.0.1.2".parse().unwrap()),
            ip6: None,
            network: Network::Container("dcos".into()),
            ports: vec![PortSpec {
                number: 80,
                protocol: PortProtocol::Tcp,
                name: Some("http".into()),
                labels: BTreeMap::from([("VIP_0".into(), "/web:80".into())]),
                host_port: None,
            }],
            host_ports: vec![],
            cpus: 0.1,
            mem: 32.0,
            staged_ms: 1,
            started_ms: Some(2),
            message: None,
            ready: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::status;
    use super::*;

    #[test]
    fn a_running_task_becomes_a_mesos_style_task() {
        let info = status("prod_web.1", TaskState::TaskRunning).to_task_info("node-a");
        assert_eq!(info.name, "web.prod");
        assert!(info.is_running);
        assert_eq!(info.ips, vec!["9.0.1.2".parse::<IpAddr>().unwrap()]);
        let d = info.discovery.unwrap();
        assert_eq!(d.ports[0].number, 80);
        assert_eq!(d.ports[0].labels, vec![("VIP_0".into(), "/web:80".into())]);
        assert!(
            !status("x", TaskState::TaskStaging)
                .to_task_info("a")
                .is_running
        );
    }

    #[test]
    fn host_network_tasks_advertise_their_host_ports() {
        let mut s = status("x", TaskState::TaskRunning);
        s.network = Network::Host;
        s.host_ports = vec![31005];
        let info = s.to_task_info("a");
        assert_eq!(info.ports, vec![31005]);
        assert_eq!(info.discovery.unwrap().ports[0].number, 31005);
    }

    #[test]
    fn overlay_tasks_bind_only_their_mapped_host_ports_on_the_agent() {
        // No host port: nothing on the agent; reached at its own address and port.
        let s = status("x", TaskState::TaskRunning);
        let info = s.to_task_info("a");
        assert!(info.ports.is_empty(), "{:?}", info.ports);
        assert_eq!(info.discovery.unwrap().ports[0].number, 80);
        // A mapped host port: the agent's port, and still the container's for discovery.
        let mut s = status("x", TaskState::TaskRunning);
        s.host_ports = vec![31007];
        let info = s.to_task_info("a");
        assert_eq!(info.ports, vec![31007]);
        assert_eq!(info.discovery.unwrap().ports[0].number, 80);
    }
}
