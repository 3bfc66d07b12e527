//! The VTEP and its tunnel objects, programmed over netlink in a namespace of the test and
//! checked with iproute2 as an independent reader.

use std::net::Ipv4Addr;

use anyhow::Result;
use dcnet_overlay::vtep::{Change, Peer, TunnelState, VtepConfig, VtepLink};
use dcnet_tests::namespace::TestNamespace;

fn config() -> VtepConfig {
    VtepConfig {
        name: "vtep1024".into(),
        vni: 1024,
        port: 64000,
        local: Ipv4Addr::new(10, 77, 0, 1).into(),
        address: "44.128.0.1/20".parse().unwrap(),
        address6: None,
        mtu: 1450,
        table: 42,
        rule_priority: 32000,
    }
}

fn peers(n: u32, underlay_base: u32) -> Vec<Peer> {
    (2..n + 2)
        .map(|i| Peer {
            node: format!("node-{i}"),
            vtep_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(44, 128, 0, 0)) + i),
            vtep_ip6: None,
            underlay: Ipv4Addr::from(underlay_base + i).into(),
            subnets: vec![format!("9.{}.{}.0/24", i / 256, i % 256).parse().unwrap()],
        })
        .collect()
}

/// Ensures the VTEP of `config`, applies the changes from `from` to `want`, and reads the
/// kernel back; returns what it holds, whether the VTEP was changed, and the refused changes.
fn apply(
    ns: &TestNamespace,
    config: &VtepConfig,
    from: &TunnelState,
    want: &TunnelState,
) -> Result<(TunnelState, bool, Vec<String>)> {
    let (config, changes) = (config.clone(), from.changes_to(want));
    Ok(ns.netns().netlink(|nl| async move {
        let (vtep, changed) = VtepLink::ensure(&nl, &config).await?;
        let applied = vtep.apply(&nl, &changes).await;
        let failed: Vec<String> = applied
            .failed
            .iter()
            .map(|(c, e)| format!("{c}: {e:?}"))
            .collect();
        Ok::<_, dcnet_overlay::Error>((vtep.read(&nl).await?, changed, failed))
    })?)
}

/// A reconcile pass as after drift: reads the kernel, applies what differs from `want`;
/// returns the changes made and what the kernel holds after.
fn repair(
    ns: &TestNamespace,
    config: &VtepConfig,
    want: &TunnelState,
) -> Result<(Vec<Change>, TunnelState)> {
    let (config, want) = (config.clone(), want.clone());
    Ok(ns.netns().netlink(|nl| async move {
        let (vtep, _) = VtepLink::ensure(&nl, &config).await?;
        let changes = vtep.read(&nl).await?.changes_to(&want);
        vtep.apply(&nl, &changes).await;
        Ok::<_, dcnet_overlay::Error>((changes, vtep.read(&nl).await?))
    })?)
}

fn ip(ns: &TestNamespace, args: &[&str]) -> String {
    let out = ns.run("ip", args).expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn vtep_is_created_as_dcos_overlay_creates_it() -> Result<()> {
    let ns = TestNamespace::create("vtep")?;
    let (_, changed) = ns
        .netns()
        .netlink(|nl| async move { VtepLink::ensure(&nl, &config()).await })?;
    assert!(changed);
    let details = ip(&ns, &["-d", "link", "show", "vtep1024"]);
    for want in [
        "vxlan id 1024",
        "local 10.77.0.1",
        "dstport 64000",
        "nolearning",
        "mtu 1450",
        "70:b3:d5:80:00:01",
    ] {
        assert!(details.contains(want), "{want:?} missing from:\n{details}");
    }
    assert!(ip(&ns, &["-4", "addr", "show", "vtep1024"]).contains("44.128.0.1/20"));

    // Idempotent: a second pass changes nothing.
    let (_, changed) = ns
        .netns()
        .netlink(|nl| async move { VtepLink::ensure(&nl, &config()).await })?;
    assert!(!changed);

    // A VTEP with the wrong parameters (made by hand) is replaced.
    ip(&ns, &["link", "del", "vtep1024"]);
    ip(
        &ns,
        &[
            "link",
            "add",
            "vtep1024",
            "type",
            "vxlan",
            "id",
            "7",
            "dstport",
            "4789",
            "local",
            "10.77.0.1",
        ],
    );
    let (_, changed) = ns
        .netns()
        .netlink(|nl| async move { VtepLink::ensure(&nl, &config()).await })?;
    assert!(changed);
    assert!(ip(&ns, &["-d", "link", "show", "vtep1024"]).contains("vxlan id 1024"));
    Ok(())
}

#[test]
fn tunnel_objects_round_trip_and_drift_is_found() -> Result<()> {
    let ns = TestNamespace::create("tunnel")?;
    let peers = peers(50, u32::from(Ipv4Addr::new(10, 77, 0, 0)));
    let want = TunnelState::desired(&peers);
    let (read, _, failed) = apply(&ns, &config(), &TunnelState::default(), &want)?;
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(read, want);
    assert_eq!(read.len(), 200);

    // iproute2 sees the same objects.
    let neigh = ip(&ns, &["neigh", "show", "dev", "vtep1024", "44.128.0.2"]);
    assert!(
        neigh.contains("lladdr 70:b3:d5:80:00:02 PERMANENT"),
        "{neigh}"
    );
    let fdb = ns.run("bridge", &["fdb", "show", "dev", "vtep1024"])?;
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(
        fdb.contains("70:b3:d5:80:00:02 dst 10.77.0.2 self permanent"),
        "{fdb}"
    );
    let route = ip(&ns, &["route", "show", "table", "42", "9.0.2.0/24"]);
    assert!(
        route.contains("via 44.128.0.2 dev vtep1024 proto 220 onlink"),
        "{route}"
    );
    let rules = ip(&ns, &["rule", "show", "pref", "32000"]);
    assert!(rules.contains("to 9.0.2.0/24 lookup 42"), "{rules}");

    // Damage by hand: one object of each kind deleted, one FDB entry re-pointed.
    ip(&ns, &["neigh", "del", "44.128.0.3", "dev", "vtep1024"]);
    ip(&ns, &["route", "del", "9.0.4.0/24", "table", "42"]);
    ip(
        &ns,
        &[
            "rule",
            "del",
            "to",
            "9.0.5.0/24",
            "lookup",
            "42",
            "pref",
            "32000",
        ],
    );
    let out = ns.run(
        "bridge",
        &[
            "fdb",
            "replace",
            "70:b3:d5:80:00:06",
            "dev",
            "vtep1024",
            "dst",
            "10.99.0.6",
            "self",
            "permanent",
        ],
    )?;
    assert!(out.status.success());
    let (changes, repaired) = repair(&ns, &config(), &want)?;
    let shown: Vec<String> = changes.iter().map(Change::to_string).collect();
    assert_eq!(
        shown,
        [
            "delete fdb 70:b3:d5:80:00:06 dst 10.99.0.6",
            "set fdb 70:b3:d5:80:00:06 dst 10.77.0.6",
            "set neighbour 44.128.0.3 lladdr 70:b3:d5:80:00:03",
            "set route 9.0.4.0/24 via 44.128.0.4",
            "add rule to 9.0.5.0/24",
        ]
    );
    assert_eq!(repaired, want);

    // Everything removed when the peers are gone.
    let (empty, _, failed) = apply(&ns, &config(), &want, &TunnelState::default())?;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(empty.is_empty(), "{empty:?}");
    assert!(ip(&ns, &["rule", "show", "pref", "32000"]).is_empty());
    Ok(())
}

/// IPv6 overlays: the VTEP's IPv6 address, and per peer an IPv6 neighbour, route and rule
/// beside the IPv4 ones, all read back as written, repaired when deleted by hand, and removed.
#[test]
fn ipv6_tunnel_objects_round_trip_beside_the_ipv4_ones() -> Result<()> {
    let ns = TestNamespace::create("tunnel6")?;
    let range6: ipnetwork::Ipv6Network = "fd01:a::/64".parse()?;
    let address6 = ipnetwork::Ipv6Network::new(
        dcnet_overlay::vtep::address6(range6, Ipv4Addr::new(44, 128, 0, 1)),
        64,
    )?;
    let dual = VtepConfig {
        address6: Some(address6),
        ..config()
    };
    let peers: Vec<Peer> = peers(20, u32::from(Ipv4Addr::new(10, 77, 0, 0)))
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            p.vtep_ip6 = Some(dcnet_overlay::vtep::address6(range6, p.vtep_ip));
            p.subnets
                .push(format!("fd01:b:0:0:{:x}::/80", i + 2).parse().unwrap());
            p
        })
        .collect();
    let want = TunnelState::desired(&peers);
    assert_eq!(want.len(), 20 * 7);
    let (read, _, failed) = apply(&ns, &dual, &TunnelState::default(), &want)?;
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(read, want);

    let addr = ip(&ns, &["-6", "addr", "show", "vtep1024"]);
    // Without duplicate address detection: usable at once, never tentative.
    assert!(
        addr.contains("fd01:a::2c80:1/64 scope global nodad \n"),
        "{addr}"
    );
    let neigh = ip(
        &ns,
        &["-6", "neigh", "show", "dev", "vtep1024", "fd01:a::2c80:2"],
    );
    assert!(
        neigh.contains("lladdr 70:b3:d5:80:00:02 PERMANENT"),
        "{neigh}"
    );
    let route = ip(
        &ns,
        &["-6", "route", "show", "table", "42", "fd01:b:0:0:2::/80"],
    );
    assert!(
        route.contains("via fd01:a::2c80:2 dev vtep1024 proto 220"),
        "{route}"
    );
    let rules = ip(&ns, &["-6", "rule", "show", "pref", "32000"]);
    assert!(rules.contains("to fd01:b:0:0:2::/80 lookup 42"), "{rules}");

    // Damage by hand, then repair.
    ip(
        &ns,
        &["-6", "neigh", "del", "fd01:a::2c80:3", "dev", "vtep1024"],
    );
    ip(
        &ns,
        &["-6", "route", "del", "fd01:b:0:0:4::/80", "table", "42"],
    );
    ip(
        &ns,
        &[
            "-6",
            "rule",
            "del",
            "to",
            "fd01:b:0:0:5::/80",
            "lookup",
            "42",
            "pref",
            "32000",
        ],
    );
    let (changes, repaired) = repair(&ns, &dual, &want)?;
    let shown: Vec<String> = changes.iter().map(Change::to_string).collect();
    assert_eq!(
        shown,
        [
            "set neighbour fd01:a::2c80:3 lladdr 70:b3:d5:80:00:03",
            "set route fd01:b:0:0:4::/80 via fd01:a::2c80:4",
            "add rule to fd01:b:0:0:5::/80",
        ]
    );
    assert_eq!(repaired, want);

    let (empty, _, failed) = apply(&ns, &dual, &want, &TunnelState::default())?;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(empty.is_empty(), "{empty:?}");
    assert!(ip(&ns, &["-6", "rule", "show", "pref", "32000"]).is_empty());
    Ok(())
}

/// Over an IPv6 underlay: the VTEP's tunnel source and the FDB entries' destinations are IPv6,
/// and a VTEP made over the other family is replaced.
#[test]
fn a_vtep_over_an_ipv6_underlay_has_ipv6_fdb_destinations() -> Result<()> {
    let ns = TestNamespace::create("vtep6")?;
    let local: std::net::Ipv6Addr = "fd00:77::1".parse()?;
    let over6 = VtepConfig {
        local: local.into(),
        mtu: 1430,
        ..config()
    };
    let peers: Vec<Peer> = peers(3, 0)
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            p.underlay = std::net::Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, i as u16 + 2).into();
            p
        })
        .collect();
    let want = TunnelState::desired(&peers);
    // An IPv4 VTEP first: the IPv6 one replaces it.
    ns.netns()
        .netlink(|nl| async move { VtepLink::ensure(&nl, &config()).await })?;
    let (read, changed, failed) = apply(&ns, &over6, &TunnelState::default(), &want)?;
    assert!(changed, "the IPv4 VTEP was replaced");
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(read, want);
    let details = ip(&ns, &["-d", "link", "show", "vtep1024"]);
    assert!(details.contains("local fd00:77::1"), "{details}");
    assert!(details.contains("mtu 1430"), "{details}");
    let fdb = ns.run("bridge", &["fdb", "show", "dev", "vtep1024"])?;
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(
        fdb.contains("70:b3:d5:80:00:02 dst fd00:77::2 self permanent"),
        "{fdb}"
    );
    // Idempotent.
    let (_, changed, _) = apply(&ns, &over6, &want, &want)?;
    assert!(!changed);
    Ok(())
}
