//! The embedded eBPF datapath, loaded with aya and attached to a cgroup made for this test:
//! a client process placed in that cgroup connects to a VIP and reaches the backend; the same
//! client outside the cgroup is not translated. Everything runs in a namespace of the test's
//! own with no route out, so an untranslated connect fails locally.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dcnet_lb::{Datapath, Protocol};
use dcnet_overlay::Netns;
use dcnet_tests::cluster::{in_netns, require_root};
use dcnet_tests::{TestCgroup, TestNamespace};

const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(11, 0, 0, 1), 80);

/// Runs bash in `ns` (and in `cgroup` if given) to send `message` to the VIP over TCP.
fn client(ns: &Netns, cgroup: Option<&TestCgroup>, message: &str) -> std::process::Output {
    let mut command = Command::new("bash");
    command.args([
        "-c",
        &format!("echo {message} > /dev/tcp/{}/{}", VIP.ip(), VIP.port()),
    ]);
    in_netns(&mut command, ns, true);
    if let Some(cgroup) = cgroup {
        cgroup.place(&mut command);
    }
    command.output().unwrap()
}

#[test]
fn connect4_translates_a_vip_for_processes_in_its_cgroup_only() {
    require_root().unwrap();
    let netns = TestNamespace::create("connect4").unwrap();
    let cgroup = TestCgroup::create("connect4").unwrap();
    assert_ne!(cgroup.path(), Path::new(dcnet_tests::cgroup::CGROUP2_ROOT));

    // The backend listens on loopback inside the namespace.
    let listener: TcpListener = netns
        .netns()
        .run(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let backend = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("unexpected {other}"),
    };
    listener.set_nonblocking(false).unwrap();

    let mut datapath = Datapath::load().unwrap();
    datapath.attach(cgroup.path()).unwrap();
    datapath.insert_vip4(VIP, Protocol::Tcp, backend).unwrap();

    // In the cgroup: the connect to the VIP lands on the backend.
    let out = client(netns.netns(), Some(&cgroup), "through-the-vip");
    assert!(
        out.status.success(),
        "client in cgroup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut conn, peer) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got.trim(), "through-the-vip");
    assert!(peer.ip().is_loopback());

    // Outside the cgroup the VIP is just an unroutable address here.
    let out = client(netns.netns(), None, "direct");
    assert!(
        !out.status.success(),
        "an untranslated connect must fail in a namespace without routes"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreachable"), "{stderr}");

    // Removing the VIP stops the translation for the cgroup too.
    datapath.remove_vip4(VIP, Protocol::Tcp).unwrap();
    let out = client(netns.netns(), Some(&cgroup), "after-removal");
    assert!(
        !out.status.success(),
        "connect after the VIP was removed must not reach the backend"
    );

    drop(datapath);
}
