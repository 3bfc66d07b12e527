//! Helpers shared by dcnet's benchmarks (`benches/benches/*.rs`): percentiles, CPU time and
//! table printing. Each benchmark is a plain program (`harness = false`) run by
//! `cargo bench -p dcnet-benches --bench <name> -- [options]`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use dcnet_overlay::Netns;

/// The `q`-quantile (0.0..=1.0) of `samples` by nearest rank; `None` if empty.
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The median of `values` (the upper one of an even count); NaN if empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// User plus system CPU time this process has used so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User plus system CPU time process `pid` (all its threads, living or gone) has used so far,
/// from /proc (clock-tick resolution).
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()?)
    };
    let ticks = field(11)? + field(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// CPU time the calling thread has used so far.
pub fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime only writes the struct it is given.
    let ts = unsafe {
        let mut ts = std::mem::zeroed::<libc::timespec>();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Formats a duration in milliseconds with one decimal, or `-`.
pub fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.1}", d.as_secs_f64() * 1000.0),
    )
}

/// Prints rows as an aligned table under `header`.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("{}", text.join("  "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A process killed (and reaped) when this is dropped.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` inside `netns`, output discarded, killed when the result is dropped (and
/// when this process dies).
pub fn spawn_in(netns: &Netns, program: &str, args: &[&str]) -> Result<Background> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    dcnet_tests::cluster::in_netns(&mut command, netns, true);
    Ok(Background(
        command
            .spawn()
            .with_context(|| format!("starting {program}"))?,
    ))
}

/// Runs `f` with an rtnetlink handle inside `netns` (a namespace of the benchmark's own), on a
/// single-threaded runtime of its own; for the kernel objects a bench sets up around what it
/// measures (routes, rules).
pub fn netlink_in<T, F, Fut>(netns: &Netns, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    netns.run(|| -> Result<T> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(connection);
            f(handle).await
        })
    })?
}

/// Agents of [`mesos_state`].
pub const AGENTS: usize = 200;

/// A Mesos master's state document with `tasks` running Marathon tasks over [`AGENTS`] agents,
/// each its own app with one discovery port; `round` renames the first 1% of them
/// (a task replaced by another, as after a deployment).
pub fn mesos_state(master: &str, tasks: usize, round: usize) -> String {
    let slaves: Vec<serde_json::Value> = (0..AGENTS)
        .map(|a| {
            let ip = format!("10.1.{}.{}", a / 250, a % 250 + 1);
            serde_json::json!({"id": format!("agent-{a}"), "hostname": ip, "pid": format!("slave(1)@{ip}:5051")})
        })
        .collect();
    let changed = (tasks / 100).max(1);
    let task_list: Vec<serde_json::Value> = (0..tasks)
        .map(|t| {
            let name = if t < changed && round > 0 {
                format!("app-{t}-r{round}")
            } else {
                format!("app-{t}")
            };
            let ip = format!("9.{}.{}.{}", t / 65536 % 256, t / 256 % 256, t % 256);
            serde_json::json!({
                "id": format!("{name}.{:08x}-0000-4000-8000-000000000000", t),
                "name": name,
                "framework_id": "marathon-fw",
                "slave_id": format!("agent-{}", t % AGENTS),
                "state": "TASK_RUNNING",
                "resources": {"cpus": 0.1, "mem": 32, "ports": format!("[{p}-{p}]", p = 31000 + t % 1000)},
                "statuses": [{
                    "state": "TASK_RUNNING",
                    "timestamp": 1_700_000_000.0,
                    "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]}
                }],
                "discovery": {"name": name, "visibility": "CLUSTER",
                              "ports": {"ports": [{"number": 80, "protocol": "tcp", "name": "http"}]}}
            })
        })
        .collect();
    serde_json::json!({
        "leader": format!("master@{master}"),
        "hostname": "master",
        "slaves": slaves,
        "frameworks": [{"id": "marathon-fw", "name": "marathon", "hostname": "master",
                        "pid": "scheduler@10.0.0.1:8080", "tasks": task_list}],
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&s, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&s, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&s, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
