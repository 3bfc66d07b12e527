//! The container fast path on a node ([`dcnet_lb::fastpath`]): loaded once the VTEP exists,
//! attached to the VTEP and to every attached container's host-side veth, its endpoint table
//! kept as the node's attachments are.
//!
//! The links are pinned (`<state_dir>/bpf/fastpath/<interface>`): while the agent restarts
//! its programs carry on, and the next run puts its own programs into the same links.
//!
//! A full pass asks the kernel which programs each interface has and reads the endpoint table
//! back, attaching again and rewriting what differs (counted as repairs); an incremental pass
//! (after an attach or a detach) only adds what is new. Without the programs (not loadable
//! here, or `[overlay] fast_path = false`) the same traffic takes the bridge.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dcnet_lb::fastpath::{Endpoint, Fastpath, FastpathStat};
use dcnet_overlay::container::gateway_mac;
use dcnet_overlay::vtep::Mac;
use serde::Serialize;

use crate::error::error_chain;
use tracing::{info, warn};

/// The directory of the BPF filesystem where the links are pinned, one per interface.
pub const PINS: &str = "fastpath";

/// A container interface of this node, as the fast path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub host_veth: String,
    /// One of the container's addresses (a dual-stack container has one endpoint of each).
    pub address: IpAddr,
    pub mac: Mac,
    /// The bridge's first address, which its MAC derives from.
    pub gateway: IpAddr,
}

/// The fast path as `GET /v1/overlay` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FastpathStatus {
    /// Interfaces a program is attached to (the VTEP and containers' veths).
    pub interfaces: usize,
    /// Container addresses delivered to directly.
    pub endpoints: usize,
    /// Packets by outcome (see [`FastpathStat`]).
    pub packets: BTreeMap<&'static str, u64>,
    /// Programs attached again or endpoint tables rewritten after they were changed by hand.
    pub repairs: u64,
    /// The programs' kernel ids (`bpftool prog show id N`, `bpftool link` lists their links).
    pub programs: BTreeMap<&'static str, u32>,
}

/// What a pass did, for the overlay's metrics.
#[derive(Debug, Default)]
pub struct Pass {
    pub repairs: u64,
    pub failures: u64,
}

enum State {
    Off,
    NotYet,
    Loaded {
        fastpath: Box<Fastpath>,
        repairs: u64,
    },
    /// Loading failed (said once); traffic takes the bridge.
    Unavailable,
}

/// Owns the loaded fast path.
pub struct Keeper {
    state: Mutex<State>,
    /// Where the links are pinned (on a BPF filesystem), if they can be.
    pins: Option<PathBuf>,
}

impl Keeper {
    /// `bpffs`: a directory of the state directory for a BPF filesystem (mounted there if
    /// needed); the links are pinned in its `fastpath/` so they outlive the agent.
    pub fn new(enabled: bool, bpffs: &Path) -> Self {
        if !enabled {
            // Turned off: links an earlier run pinned go (a pin is their last holder).
            let removed = std::fs::read_dir(bpffs.join(PINS))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| std::fs::remove_file(e.path()).is_ok())
                .count();
            if removed > 0 {
                info!(
                    removed,
                    "overlay: fast path off; an earlier run's links removed"
                );
            }
        }
        let pins = enabled
            .then(|| match dcnet_lb::pins::ensure(bpffs) {
                Ok(_) => Some(bpffs.join(PINS)),
                Err(e) => {
                    warn!(error = %error_chain(&e), "overlay: no BPF filesystem for the fast path's links; they go with the agent (the bridge carries the traffic while it restarts)");
                    None
                }
            })
            .flatten();
        Self {
            state: Mutex::new(if enabled { State::NotYet } else { State::Off }),
            pins,
        }
    }

    /// Brings the programs and the endpoint table to `endpoints`; `vtep` is the tunnel device
    /// once it exists (nothing is loaded before). `full` reads the kernel back.
    pub fn sync(&self, vtep: Option<&str>, endpoints: &[LocalEndpoint], full: bool) -> Pass {
        let mut pass = Pass::default();
        let Ok(mut state) = self.state.lock() else {
            return pass;
        };
        if matches!(*state, State::NotYet) {
            let Some(vtep) = vtep else {
                return pass;
            };
            *state = match Fastpath::load(self.pins.as_deref()) {
                Ok(fastpath) => {
                    info!(%vtep, "overlay: container fast path loaded");
                    State::Loaded {
                        fastpath: Box::new(fastpath),
                        repairs: 0,
                    }
                }
                Err(e) => {
                    warn!(error = %error_chain(&e), "overlay: cannot load the container fast path; containers' traffic takes the bridge");
                    State::Unavailable
                }
            };
        }
        let State::Loaded { fastpath, repairs } = &mut *state else {
            return pass;
        };
        // The endpoints first, then the programs: a program that replaces an earlier run's
        // (adopted from its pinned link) finds the table it needs.
        let mut wanted = BTreeMap::new();
        let mut present: Vec<(&LocalEndpoint, u32)> = Vec::new();
        for e in endpoints {
            // A veth that is not there (being made, or gone) waits for the next pass.
            let Ok(ifindex) = dcnet_lb::fastpath::ifindex(&e.host_veth) else {
                continue;
            };
            if !present.iter().any(|(p, _)| p.host_veth == e.host_veth) {
                present.push((e, ifindex));
            }
            wanted.insert(
                e.address,
                Endpoint {
                    ifindex,
                    mac: e.mac.0,
                    gateway_mac: gateway_mac(e.gateway),
                },
            );
        }
        if full {
            match fastpath.verify_endpoints() {
                Ok(true) => {
                    warn!("overlay: the fast path's endpoint table was changed by hand; rewritten");
                    pass.repairs += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    pass.failures += 1;
                    warn!(error = %error_chain(&e), "overlay: cannot read the fast path's endpoints back");
                }
            }
        }
        if let Err(e) = fastpath.set_endpoints(&wanted) {
            pass.failures += 1;
            warn!(error = %error_chain(&e), "overlay: cannot update the fast path's endpoints");
        }
        let mut repaired = |what: &str, interface: &str| {
            warn!(%interface, "overlay: fast path {what} was removed by hand; attached again");
            pass.repairs += 1;
        };
        if let Some(vtep) = vtep {
            let known = fastpath.attached_ifindex(vtep);
            match fastpath.set_tunnel(vtep) {
                Ok(true) if known.is_some() && full => repaired("program on the VTEP", vtep),
                Ok(_) => {}
                Err(e) => {
                    pass.failures += 1;
                    warn!(error = %error_chain(&e), "overlay: cannot attach the fast path to the VTEP");
                }
            }
        }
        for (e, ifindex) in present {
            let known = fastpath.attached_ifindex(&e.host_veth) == Some(ifindex);
            // Attached earlier to this very interface: a full pass checks it is still there.
            if known && !full {
                continue;
            }
            match fastpath.attach_container(&e.host_veth) {
                Ok(true) if known => repaired("program on a container veth", &e.host_veth),
                Ok(_) => {}
                Err(err) => {
                    pass.failures += 1;
                    warn!(interface = %e.host_veth, error = %error_chain(&err), "overlay: cannot attach the fast path to a container");
                }
            }
        }
        let stale: Vec<String> = fastpath
            .interfaces()
            .filter(|(interface, _)| {
                Some(*interface) != vtep && !endpoints.iter().any(|e| e.host_veth == *interface)
            })
            .map(|(interface, _)| interface.to_owned())
            .collect();
        for interface in stale {
            fastpath.forget_container(&interface);
        }
        if full && vtep.is_some() {
            let removed = fastpath.remove_stale_pins();
            if removed > 0 {
                info!(
                    removed,
                    "overlay: pinned fast path links of interfaces that are gone removed"
                );
            }
        }
        *repairs += pass.repairs;
        pass
    }

    /// `None` unless the programs are loaded.
    pub fn status(&self) -> Option<FastpathStatus> {
        let state = self.state.lock().ok()?;
        let State::Loaded { fastpath, repairs } = &*state else {
            return None;
        };
        let packets = fastpath
            .counters()
            .ok()?
            .into_iter()
            .map(|(stat, n): (FastpathStat, u64)| (stat.name(), n))
            .collect();
        Some(FastpathStatus {
            interfaces: fastpath.interfaces().count(),
            endpoints: fastpath.endpoint_count(),
            packets,
            repairs: *repairs,
            programs: fastpath.program_ids().into_iter().collect(),
        })
    }
}
