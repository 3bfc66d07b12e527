//! Footprint: where a serving node's memory goes, per task and per name, layer by layer.
//!
//! The scale benchmark measures whole agents (RSS); this one takes the same synthetic Mesos
//! state (N tasks, each its own app, over 200 agents) through the same code in one process and
//! counts the heap bytes each layer keeps, with a counting allocator around mimalloc (the
//! agent's allocator):
//! - the state document and the cluster model parsed from it (the publisher, transient);
//! - the gossip values that publish it (what chitchat holds on every node, once);
//! - a node's gossip view of them, and the task facts its decoder makes of those (what every
//!   node's facts cache keeps; in the agent the view's values are chitchat's own, shared);
//! - DNS: the contributions (what each task's records were made from) and the snapshot (every
//!   name with its records and prepared answers), after the first load, with the peak during
//!   it, and the peak of an update that replaces 1% of the tasks.
//!
//! `cargo bench -p dcnet-benches --bench footprint -- [--sizes 10000,100000]`

use std::alloc::{GlobalAlloc, Layout};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Parser;
use dcnet_agent::facts::Decoder;
use dcnet_agent::facts::mesos::to_keys;
use dcnet_agent::gossip::view::{self, ClusterView, Observed};
use dcnet_benches::{mesos_state, print_table};
use dcnet_dns::contributions::Contributions;
use dcnet_dns::dcos::{self, DcosRecords};
use dcnet_dns::mesos::state::{IpSource, State};
use dcnet_dns::name::LabelSpec;
use dcnet_dns::records::{Cluster, Settings};
use dcnet_dns::zone::{Snapshot, Soa, ZoneInfo};

/// mimalloc, counting the bytes live and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to mimalloc unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: as the caller promised for `layout`.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                + (new_size - layout.size());
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: as the caller promised.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new peak from what is live now.
fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

#[derive(Parser)]
struct Args {
    /// Task counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000])]
    sizes: Vec<usize>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one layer keeps: bytes, and per task.
struct Layer {
    name: &'static str,
    bytes: usize,
    note: String,
}

/// The sources of records a serving node uses (as the agent's DNS replica does).
fn sources() -> (Settings, DcosRecords) {
    let this_node: IpAddr = "10.0.0.9".parse().expect("a literal");
    (
        Settings {
            domain: "mesos".into(),
            spec: LabelSpec::Rfc1123,
            masters: Vec::new(),
            mname: "ns1.mesos".into(),
            listen_ips: vec![this_node],
        },
        DcosRecords {
            spec: LabelSpec::Rfc1123,
            masters: vec!["10.0.0.1".parse().expect("a literal")],
            this_node: vec![this_node],
        },
    )
}

fn zones() -> Vec<ZoneInfo> {
    let zone = |origin: &str| {
        let soa = Soa {
            mname: format!("ns1.{origin}"),
            rname: format!("root.ns1.{origin}"),
            serial: 1,
            refresh: 60,
            retry: 600,
            expire: 86400,
            minimum: 60,
        };
        ZoneInfo::new(origin, soa, vec![], 60, 1)
    };
    vec![
        zone("mesos"),
        zone(dcos::THISDCOS),
        zone(dcos::L4LB),
        zone(dcos::SPARTAN),
    ]
}

fn parse(body: &str) -> Result<Cluster> {
    let state: State = serde_json::from_str(body).context("parsing the synthetic state")?;
    let resolve = |host: &str| dcnet_dns::mesos::literal_only(host);
    Ok(dcnet_dns::mesos::cluster(
        &state,
        &[IpSource::Netinfo, IpSource::Host],
        &resolve,
    ))
}

fn measure(tasks: usize) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    let mb = |b: usize| b as f64 / 1e6;

    let before = live();
    let body = mesos_state("10.0.0.1:5050", tasks, 0);
    layers.push(Layer {
        name: "state document",
        bytes: live() - before,
        note: "the publisher, while it parses".into(),
    });

    let before = live();
    reset_peak();
    let started = Instant::now();
    let cluster = parse(&body)?;
    layers.push(Layer {
        name: "cluster model",
        bytes: live() - before,
        note: format!(
            "parsed in {:.0} ms, peak {:.0} MB",
            started.elapsed().as_secs_f64() * 1e3,
            mb(peak() - before)
        ),
    });

    let before = live();
    let started = Instant::now();
    let keys = to_keys(&cluster);
    let made = started.elapsed();
    let raw: usize = keys.iter().map(|(k, v)| k.len() + v.len()).sum();
    layers.push(Layer {
        name: "gossip values",
        bytes: live() - before,
        note: format!(
            "{:.0} MB of key and value text, made in {:.0} ms",
            mb(raw),
            made.as_secs_f64() * 1e3
        ),
    });

    // A serving node's copy of the publisher's keys (its gossip view) and the facts its
    // decoder makes of them: the agent's own code, sharing and interning as it does.
    let before = live();
    let observed = Observed {
        id: "publisher".into(),
        generation: 1,
        gossip_addr: "10.0.0.1:62501".parse()?,
        heartbeat: 1,
        max_version: keys.len() as u64,
        is_live: true,
        is_self: false,
        keys: Some(view::shared(&keys)),
    };
    let (view, _) = view::next_view(&ClusterView::default(), vec![observed], SystemTime::now());
    let viewed = live() - before;
    layers.push(Layer {
        name: "gossip view",
        bytes: viewed,
        note: "a node's copy of the keys and values above, shared with gossip in the agent".into(),
    });
    let before = live();
    let mut decoder = Decoder::default();
    decoder.apply(&view);
    let tasks = decoder
        .facts()
        .nodes
        .values()
        .map(|n| n.mesos.tasks.len())
        .sum::<usize>();
    layers.push(Layer {
        name: "decoded task facts",
        bytes: live() - before,
        note: format!("{tasks} tasks, by the agent's facts decoder"),
    });
    let decoded = (view, decoder);
    drop((keys, decoded, body));

    let source = sources();
    let mut contributions = Contributions::default();
    let before = live();
    reset_peak();
    let started = Instant::now();
    let snapshot = contributions.update(&Snapshot::default(), zones(), &cluster, &source);
    let load = started.elapsed();
    let load_peak = peak() - before;
    let total = live() - before;
    let names = snapshot.len();
    drop(snapshot);
    let contributed = live() - before;
    layers.push(Layer {
        name: "DNS contributions",
        bytes: contributed,
        note: "what each task's records are made of".into(),
    });
    // Made again for the change below, with the contributions it came from.
    let mut contributions = Contributions::default();
    let snapshot = contributions.update(&Snapshot::default(), zones(), &cluster, &source);
    layers.push(Layer {
        name: "DNS snapshot",
        bytes: total - contributed,
        note: format!(
            "{names} names, {:.0} B/name; first load {:.1} s, peak {:.0} MB",
            (total - contributed) as f64 / names as f64,
            load.as_secs_f64(),
            mb(load_peak)
        ),
    });

    // 1% of the tasks replaced.
    let changed = parse(&mesos_state("10.0.0.1:5050", tasks, 1))?;
    let before = live();
    reset_peak();
    let started = Instant::now();
    let next = contributions.update(&snapshot, zones(), &changed, &source);
    let update = started.elapsed();
    drop(snapshot);
    layers.push(Layer {
        name: "1% change",
        bytes: peak() - before,
        note: format!("peak while updating; {:.0} ms", update.as_secs_f64() * 1e3),
    });
    drop((next, contributions, cluster, changed));
    Ok(layers)
}

fn main() -> Result<()> {
    let args = Args::parse();
    for &tasks in &args.sizes {
        let layers = measure(tasks)?;
        let rows: Vec<Vec<String>> = layers
            .iter()
            .map(|l| {
                vec![
                    l.name.to_owned(),
                    format!("{:.1}", l.bytes as f64 / 1e6),
                    format!("{:.0}", l.bytes as f64 / tasks as f64),
                    l.note.clone(),
                ]
            })
            .collect();
        println!("\nFootprint of {tasks} tasks (heap bytes each layer keeps)\n");
        print_table(&["layer", "MB", "bytes/task", ""], &rows);
    }
    Ok(())
}
