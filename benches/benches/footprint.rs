//! Footprint: where a serving node's memory goes, per task and per name, layer by layer.
//!
//! The scale benchmark measures whole agents (RSS); this one takes the same synthetic Mesos
//! state (N tasks, each its own app, over 200 agents) through the same code in one process and
//! counts the heap bytes each layer keeps, with a counting allocator around mimalloc (the
//! agent's allocator):
//! - the state document and the cluster model parsed from it (the publisher, transient);
//! - the gossip values that publish it (what chitchat holds on every node, once);
//! - a node's gossip view of them, and the facts its decoder makes of those (what every node's
//!   facts cache keeps; in the agent the view's values are chitchat's own, shared);
//! - the agent's DNS replica made of those facts: the contributions (what each task's records
//!   were made from) and the snapshot (every name with its records and prepared answers), after
//!   the first load, with the peak during it, and the peak of a change that replaces 1% of the
//!   tasks, from the gossip view to the records.
//!
//! `cargo bench -p dcnet-benches --bench footprint -- [--sizes 10000,100000]`

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Parser;
use dcnet_agent::dns::replica::Replica;
use dcnet_agent::facts::Decoder;
use dcnet_agent::facts::mesos::{generation, to_keys};
use dcnet_agent::gossip::view::{self, ClusterView, Observed};
use dcnet_agent::lb::service::NamedVips;
use dcnet_benches::{mesos_state, print_table};
use dcnet_dns::mesos::state::{IpSource, State};
use dcnet_dns::records::Cluster;

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
    let mut keys = to_keys(&cluster);
    keys.extend([generation(1)]);
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

    // What a serving node keeps of it: its gossip view of the publisher's keys, the facts its
    // decoder makes of those and the DNS replica made of the facts; the agent's own code.
    let before = live();
    let observe = |keys: &BTreeMap<String, String>| Observed {
        id: "publisher".into(),
        generation: 1,
        gossip_addr: "10.0.0.1:62501".parse().expect("a literal"),
        heartbeat: 1,
        max_version: keys.len() as u64,
        is_live: true,
        is_self: false,
        keys: Some(view::shared(keys)),
    };
    let (view, _) = view::next_view(
        &ClusterView::default(),
        vec![observe(&keys)],
        SystemTime::now(),
    );
    layers.push(Layer {
        name: "gossip view",
        bytes: live() - before,
        note: "a node's copy of the keys and values above, shared with gossip in the agent".into(),
    });
    let before = live();
    let mut decoder = Decoder::default();
    decoder.apply(&view);
    let facts = Arc::new(decoder.facts().clone());
    let mesos = &facts.nodes["publisher"].mesos;
    layers.push(Layer {
        name: "decoded facts",
        bytes: live() - before,
        note: format!(
            "{} tasks, {} of them kept decoded (those that declare VIPs)",
            mesos.tasks().count(),
            mesos.vip_tasks.len()
        ),
    });
    drop(body);

    let replica = || {
        Replica::new(
            "mesos".into(),
            dcnet_agent::config::ZoneSettings::defaults("mesos"),
            "10.0.0.9".parse().expect("a literal"),
        )
    };
    let before = live();
    let mut first = replica();
    first.update(&facts, &NamedVips::new());
    let snapshot = first.current().clone();
    drop(first);
    let snapshot_bytes = live() - before;
    let names = snapshot.len();
    drop(snapshot);

    let before = live();
    reset_peak();
    let started = Instant::now();
    let mut replica = replica();
    replica.update(&facts, &NamedVips::new());
    let load = started.elapsed();
    let load_peak = peak() - before;
    let total = live() - before;
    layers.push(Layer {
        name: "DNS contributions",
        bytes: total - snapshot_bytes,
        note: "what each task's records were made from (its gossip value, shared)".into(),
    });
    layers.push(Layer {
        name: "DNS snapshot",
        bytes: snapshot_bytes,
        note: format!(
            "{names} names, {:.0} B/name; first load {:.1} s, peak {:.0} MB",
            snapshot_bytes as f64 / names as f64,
            load.as_secs_f64(),
            mb(load_peak)
        ),
    });

    // 1% of the tasks replaced: a new view, its facts, the replica's update.
    let mut changed = to_keys(&parse(&mesos_state("10.0.0.1:5050", tasks, 1))?);
    changed.extend([generation(2)]);
    let before = live();
    reset_peak();
    let started = Instant::now();
    let (next, _) = view::next_view(&view, vec![observe(&changed)], SystemTime::now());
    decoder.apply(&next);
    let next_facts = decoder.facts().clone();
    let decoding = started.elapsed();
    replica.update(&next_facts, &NamedVips::new());
    let update = started.elapsed();
    layers.push(Layer {
        name: "1% change",
        bytes: peak() - before,
        note: format!(
            "peak while updating; facts {:.0} ms, then records {:.0} ms",
            decoding.as_secs_f64() * 1e3,
            (update - decoding).as_secs_f64() * 1e3
        ),
    });
    drop((
        replica, facts, next_facts, decoder, view, next, keys, changed, cluster,
    ));
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
