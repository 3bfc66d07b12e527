//! The task launcher: runs the tasks the leading scheduler assigns to this node, each in its
//! own network namespace on an overlay (or on the host network), and reports them.
//!
//! - the statuses it publishes in gossip are [`crate::facts::launched`], read by DNS and the
//!   load balancer too.
//! - [`confine`]: what a task may see and do: its user, namespaces and mounts;
//!   [`container`]: the same for a task in a container image, through runc.
//! - [`process`]: one task's sandbox, namespace, cgroup, environment, start and stop;
//!   [`fetch`]: what is downloaded into the sandbox first.
//! - [`guard`]: keeps tasks from the control plane (eBPF on the tasks' cgroup);
//!   [`host_ports`]: forwards the agent's ports to overlay tasks that map them (nftables).
//! - [`health`]: TCP, HTTP(S) and COMMAND checks, and what their results add up to.
//! - [`service`]: the loop that follows the scheduler's assignments.

pub mod confine;
pub mod container;
pub mod fetch;
pub mod guard;
pub mod health;
pub mod host_ports;
pub mod process;
pub mod service;

pub use service::start;
