//! dcnet's L4 load balancer, userspace side.
//!
//! - [`vip`]: the VIP model (pure): `VIP_<n>` labels, named VIP addresses and DNS names,
//!   backends and weights.
//! - [`slots`]: allocation of the datapath's backend slots and counter ids (pure).
//! - [`datapath`]: loads the kernel programs of `ebpf/programs` (embedded at build time),
//!   attaches them to a cgroup, and programs VIPs: each VIP's backend set is swapped in whole.
//! - `attach`: cgroup programs attached to outlive the agent, and an earlier run's retired.
//! - [`guard`]: the control-plane guard: tasks' connects and sends to the cluster's control
//!   plane are refused, in eBPF hooks on the tasks' cgroup.
//! - [`vxlan_filter`]: drops VXLAN from underlay hosts that are not overlay peers, in a tc
//!   program on the underlay interface.
//! - [`fastpath`]: the container fast path: tc programs on the VTEP and containers' veths that
//!   deliver overlay traffic past the bridge and the node's forwarding.
//! - [`policy`]: network policies enforced in cgroup skb programs on the tasks' cgroup.
//! - [`pins`]: the BPF filesystem directory where the socket tables outlive the agent.
//! - [`sockets`]: destroys UDP sockets still connected to a backend that left (sock_diag).
//! - [`error`]: what can fail, with the program, map or cgroup concerned.
//!
//! The kernel programs themselves live in `ebpf/programs`; the map layouts they share with this
//! crate live in `dcnet-ebpf-common`.

mod attach;
pub mod datapath;
pub mod error;
pub mod fastpath;
pub mod guard;
pub mod pins;
pub mod policy;
pub mod slots;
pub mod sockets;
pub mod vip;
pub mod vxlan_filter;

pub use datapath::Datapath;
pub use error::Error;
pub use vip::{Backend, Protocol, Vip, VipError, VipHost, VipLabel, VipName};
