//! dcnet's L4 load balancer, userspace side.
//!
//! - [`datapath`]: loads the kernel programs of `ebpf/programs` (embedded at build time),
//!   attaches them to a cgroup, and writes the VIP maps.
//! - [`error`]: what can fail, with the program, map or cgroup concerned.
//!
//! The kernel programs themselves live in `ebpf/programs`; the map layouts they share with this
//! crate live in `dcnet-ebpf-common`.

pub mod datapath;
pub mod error;

pub use datapath::{Datapath, Protocol};
pub use error::Error;
