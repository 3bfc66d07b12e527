//! Keeps the node's resolv.conf pointing at the local DNS listeners that work.
//!
//! Every few seconds each local listener is asked for `ready.spartan`; those that answer are the
//! nameservers. If none answers, the upstreams are, so the node keeps resolving while dcnet's
//! DNS is down. `options timeout:1 attempts:3` keeps a dead entry cheap. The existing `search`
//! and `domain` lines are kept. The file is written atomically (a temporary file renamed over
//! it) and not at all when its contents would not change. Only the path configured in
//! `dns.resolv_conf` is ever touched.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lifecycle::Stopping;
use tracing::{info, warn};

/// How often the listeners are probed.
const EVERY: Duration = Duration::from_secs(5);
/// glibc reads at most this many nameservers.
const MAX_NAMESERVERS: usize = 3;
const HEADER: &str = "# Written by dcnet (dns.resolv_conf): local DNS listeners first, upstreams if none answers.\n# Edits are overwritten; change dcnet's configuration instead.\n";

/// The resolv.conf for these probe results. Listeners must be on port 53 to be usable (the
/// file cannot name a port); `existing` is the current file, for its search domains.
pub fn render(live_listeners: &[SocketAddr], upstreams: &[SocketAddr], existing: &str) -> String {
    let usable = |addrs: &[SocketAddr]| -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = addrs
            .iter()
            .filter(|a| a.port() == 53)
            .map(SocketAddr::ip)
            .collect();
        ips.dedup();
        ips.truncate(MAX_NAMESERVERS);
        ips
    };
    let mut nameservers = usable(live_listeners);
    if nameservers.is_empty() {
        nameservers = usable(upstreams);
    }
    let mut out = String::from(HEADER);
    for line in existing.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("search ") || trimmed.starts_with("domain ") {
            out.push_str(trimmed);
            out.push('\n');
        }
    }
    for ip in nameservers {
        out.push_str(&format!("nameserver {ip}\n"));
    }
    out.push_str("options timeout:1 attempts:3\n");
    out
}

/// Runs the manager for `path` until `stop`.
pub async fn manage(
    path: PathBuf,
    listeners: Vec<SocketAddr>,
    upstreams: Vec<SocketAddr>,
    stop: Stopping,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let (target, listeners, upstreams) = (path.clone(), listeners.clone(), upstreams.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let live: Vec<SocketAddr> = listeners
                .iter()
                .copied()
                .filter(|&l| answers_ready(l))
                .collect();
            let existing = std::fs::read_to_string(&target).unwrap_or_default();
            let wanted = render(&live, &upstreams, &existing);
            if wanted == existing {
                return Ok(None);
            }
            write_atomically(&target, &wanted).map(|()| Some(live.len()))
        })
        .await;
        match outcome {
            Ok(Ok(Some(live))) => {
                info!(path = %path.display(), live_listeners = live, "resolv.conf updated")
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => warn!(path = %path.display(), error = %e, "cannot write resolv.conf"),
            Err(e) => warn!(error = %e, "resolv.conf manager failed"),
        }
    }
}

/// Whether the listener answers `ready.spartan` with 127.0.0.1 within half a second.
fn answers_ready(listener: SocketAddr) -> bool {
    let bind: SocketAddr = if listener.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        "[::]:0".parse().expect("literal")
    };
    let Ok(socket) = UdpSocket::bind(bind) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(500)));
    let id = rand::random::<u16>();
    let query = dcnet_dns::answer::build_query(
        id,
        "ready.spartan.",
        hickory_proto::rr::RecordType::A,
        None,
    );
    if socket.send_to(&query, listener).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let Ok((len, _)) = socket.recv_from(&mut buf) else {
        return false;
    };
    hickory_proto::op::Message::from_vec(&buf[..len]).is_ok_and(|m| {
        m.metadata.id == id && m.answers.iter().any(|a| a.data.to_string() == "127.0.0.1")
    })
}

/// Replaces `path` with `contents` so readers see the old or the new file, never a mix.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.dcnet-tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("resolv.conf")
    ));
    // Every process on the node reads it.
    crate::state::write_atomically(path, &tmp, contents.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn live_listeners_first_then_upstreams() {
        let text = render(&addrs(&["127.0.0.1:53"]), &addrs(&["10.0.0.2:53"]), "");
        assert!(text.contains("nameserver 127.0.0.1\n"));
        assert!(
            !text.contains("10.0.0.2"),
            "upstreams only when no listener answers"
        );
        assert!(text.ends_with("options timeout:1 attempts:3\n"));

        let fallback = render(&[], &addrs(&["10.0.0.2:53", "10.0.0.3:53"]), "");
        assert!(
            fallback.contains("nameserver 10.0.0.2\nnameserver 10.0.0.3\n"),
            "{fallback}"
        );
    }

    #[test]
    fn search_lines_are_kept_and_other_lines_replaced() {
        let existing = "# old\nsearch corp.example\nnameserver 8.8.8.8\noptions rotate\n";
        let text = render(&addrs(&["127.0.0.1:53"]), &[], existing);
        assert!(text.contains("search corp.example\n"));
        assert!(!text.contains("8.8.8.8") && !text.contains("rotate"));
    }

    #[test]
    fn only_port_53_and_at_most_three() {
        let text = render(
            &addrs(&[
                "127.0.0.1:5353",
                "198.51.100.1:53",
                "198.51.100.2:53",
                "198.51.100.3:53",
                "127.0.0.1:53",
            ]),
            &[],
            "",
        );
        let servers: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        assert_eq!(
            servers,
            vec![
                "nameserver 198.51.100.1",
                "nameserver 198.51.100.2",
                "nameserver 198.51.100.3"
            ]
        );
    }

    #[test]
    fn rendering_is_stable_so_unchanged_files_are_not_rewritten() {
        let first = render(&addrs(&["127.0.0.1:53"]), &[], "search a.b\n");
        assert_eq!(render(&addrs(&["127.0.0.1:53"]), &[], &first), first);
    }
}
