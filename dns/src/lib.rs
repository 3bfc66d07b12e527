//! dcnet's DNS: record generation from task state (Mesos-DNS compatible), the authoritative
//! server for `mesos` and `thisdcos.directory`, and forwarding of every other name.
//!
//! Not built yet: see the DNS issue. The crate exists so the workspace has its final shape.
