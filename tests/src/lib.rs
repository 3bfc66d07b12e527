//! The namespace-cluster harness that dcnet's integration tests and demo run on.
//!
//! - [`cluster`]: N nodes, each a network namespace running `dcnet agent`, on an underlay
//!   bridge; waits with deadlines; logs on failure; teardown on drop.
//! - [`container`]: a namespace attached to a node's overlay through the agent's API.
//! - [`cgroup`]: a cgroup per test for the eBPF socket hooks; [`lb`]: backends and the socket
//!   client for the load-balancer tests.
//! - [`namespace`]: a single network namespace for a test; [`fake_master`]: a Mesos master's
//!   state endpoint to serve from it (over HTTPS and with credentials if asked); [`pki`]:
//!   certificates and keys made by a test.
//! - [`flows`]: TCP/UDP servers and probes in a namespace and cgroup, for network policies.
//! - [`clients`]: the client programs users have (marathon-python), run in a node;
//!   [`images`]: a container image built here, and what container tasks leave; [`knot`]:
//!   Knot DNS as a local upstream; [`zookeeper`]: Apache ZooKeeper with masters registered
//!   in it as Mesos registers them.
//!
//! The tests themselves are in `tests/tests/`, named by area (`gossip_`, `agent_`, `lb_`, ...).

pub mod cgroup;
pub mod clients;
pub mod cluster;
pub mod container;
pub mod fake_master;
pub mod flows;
pub mod images;
pub mod knot;
pub mod lb;
pub mod namespace;
pub mod pki;
pub mod zookeeper;

pub use cgroup::TestCgroup;
pub use clients::Browser;
pub use cluster::{Cluster, ClusterOptions, NodeSpec, wait_until};
pub use fake_master::{FakeMaster, MasterGuard};
pub use namespace::TestNamespace;
