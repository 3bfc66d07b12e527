//! Record generation against the Mesos-DNS fixture: every record kind, every IP source order,
//! both label specs. Expectations follow Mesos-DNS's behaviour on the same document (leader
//! rewritten to 144.76.157.37, as Mesos-DNS's own tests do).

use std::net::IpAddr;

use dcnet_dns::mesos::state::{IpSource, State};
use dcnet_dns::mesos::{self, literal_only};
use dcnet_dns::name::LabelSpec;
use dcnet_dns::records::{RecordSet, Settings, generate};

use IpSource::{Docker, Host, Mesos, Netinfo};

fn fixture() -> State {
    let text = include_str!("fixtures/mesos-dns-fake-state.json");
    let mut state: State = serde_json::from_str(text).expect("fixture parses");
    state.leader = "master@144.76.157.37:5050".into();
    state
}

fn settings(spec: LabelSpec) -> Settings {
    Settings {
        domain: "mesos".into(),
        spec,
        masters: vec![("144.76.157.37".parse().unwrap(), 5050)],
        mname: "ns1.mesos".into(),
        listen_ips: vec!["127.0.0.1".parse().unwrap()],
    }
}

fn records(spec: LabelSpec, sources: &[IpSource]) -> RecordSet {
    generate(
        &mesos::cluster(&fixture(), sources, &literal_only),
        &settings(spec),
    )
}

/// The addresses (A and AAAA) of `name`, as strings, sorted.
fn ips(set: &RecordSet, name: &str) -> Vec<String> {
    let mut out: Vec<String> = set
        .a
        .get(name)
        .into_iter()
        .flatten()
        .map(|ip| ip.to_string())
        .collect();
    out.extend(
        set.aaaa
            .get(name)
            .into_iter()
            .flatten()
            .map(|ip| ip.to_string()),
    );
    out.sort();
    out
}

/// The SRV data of `name` as `target:port`, sorted.
fn srv(set: &RecordSet, name: &str) -> Vec<String> {
    let mut out: Vec<String> = set
        .srv
        .get(name)
        .into_iter()
        .flatten()
        .map(|s| format!("{}:{}", s.target, s.port))
        .collect();
    out.sort();
    out
}

fn check(set: &RecordSet, cases: &[(&str, &[&str])], lookup: fn(&RecordSet, &str) -> Vec<String>) {
    for (name, want) in cases {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(lookup(set, name), want, "{name}");
    }
}

#[test]
fn address_records_with_all_sources() {
    let set = records(LabelSpec::Rfc952, &[Netinfo, Docker, Mesos, Host]);
    check(
        &set,
        &[
            // Discovery name "big.dog", Docker label of the latest running status.
            ("big-dog.marathon.mesos.", &["10.3.0.1"]),
            // Two tasks share the discovery name.
            ("liquor-store.marathon.mesos.", &["10.3.0.1", "10.3.0.2"]),
            (
                "liquor-store.marathon.slave.mesos.",
                &["1.2.3.11", "1.2.3.12"],
            ),
            ("car-store.marathon.slave.mesos.", &["1.2.3.11"]),
            // The Mesos containerizer label.
            ("nginx.marathon.mesos.", &["10.3.0.3"]),
            // Killed: no records.
            ("poseidon.marathon.mesos.", &[]),
            ("poseidon.marathon.slave.mesos.", &[]),
            ("master.mesos.", &["144.76.157.37"]),
            ("master0.mesos.", &["144.76.157.37"]),
            ("leader.mesos.", &["144.76.157.37"]),
            (
                "slave.mesos.",
                &["1.2.3.10", "1.2.3.11", "1.2.3.12", "2001:db8::1"],
            ),
            // The framework name, cut to 24 characters by RFC 952, its digit-only parts dropped.
            ("some-box.chronoswithaspaceandmixe.mesos.", &["1.2.3.11"]),
            ("marathon.mesos.", &["1.2.3.11"]),
            // netinfo, the first populated source: every address of every network info.
            (
                "toy-store.ipv6-framework.mesos.",
                &["12.0.1.3", "12.0.1.2", "fd01:b::1:8000:2"],
            ),
            (
                "toy-store-go588-3.ipv6-framework.mesos.",
                &["12.0.1.3", "12.0.1.2", "fd01:b::1:8000:2"],
            ),
            ("toy-store.ipv6-framework.slave.mesos.", &["2001:db8::1"]),
            ("ipv6-framework.mesos.", &["2001:db8::1"]),
            // The server's own name.
            ("ns1.mesos.", &["127.0.0.1"]),
        ],
        ips,
    );
    // Canonical names: name-hash-agenttail.
    assert_eq!(
        ips(&set, "big-dog-4dfjd-0.marathon.mesos."),
        vec!["10.3.0.1"]
    );
    assert_eq!(
        ips(&set, "liquor-store-zasmd-1.marathon.slave.mesos."),
        vec!["1.2.3.12"]
    );
    // The raw discovery name is kept when it is a valid name, as Mesos-DNS does.
    assert_eq!(ips(&set, "big.dog.marathon.mesos."), vec!["10.3.0.1"]);
}

#[test]
fn srv_records() {
    let set = records(LabelSpec::Rfc952, &[Netinfo, Docker, Mesos, Host]);
    check(
        &set,
        &[
            (
                "_big-dog._tcp.marathon.mesos.",
                &[
                    "big-dog-4dfjd-0.marathon.mesos.:80",
                    "big-dog-4dfjd-0.marathon.mesos.:443",
                ],
            ),
            ("_poseidon._tcp.marathon.mesos.", &[]),
            ("_leader._tcp.mesos.", &["leader.mesos.:5050"]),
            ("_leader._udp.mesos.", &["leader.mesos.:5050"]),
            (
                "_liquor-store._tcp.marathon.mesos.",
                &[
                    "liquor-store-4dfjd-0.marathon.mesos.:80",
                    "liquor-store-4dfjd-0.marathon.mesos.:443",
                    "liquor-store-zasmd-1.marathon.mesos.:80",
                    "liquor-store-zasmd-1.marathon.mesos.:443",
                ],
            ),
            // Discovery ports are tcp only; port resources stay under .slave. with discovery info.
            ("_liquor-store._udp.marathon.mesos.", &[]),
            ("_liquor-store.marathon.mesos.", &[]),
            (
                "_https._liquor-store._tcp.marathon.mesos.",
                &[
                    "liquor-store-4dfjd-0.marathon.mesos.:443",
                    "liquor-store-zasmd-1.marathon.mesos.:443",
                ],
            ),
            (
                "_http._liquor-store._tcp.marathon.mesos.",
                &[
                    "liquor-store-4dfjd-0.marathon.mesos.:80",
                    "liquor-store-zasmd-1.marathon.mesos.:80",
                ],
            ),
            (
                "_liquor-store._tcp.marathon.slave.mesos.",
                &[
                    "liquor-store-4dfjd-0.marathon.slave.mesos.:31354",
                    "liquor-store-4dfjd-0.marathon.slave.mesos.:31355",
                    "liquor-store-zasmd-1.marathon.slave.mesos.:31737",
                    "liquor-store-zasmd-1.marathon.slave.mesos.:31738",
                ],
            ),
            // Without discovery info: port resources, tcp and udp, with and without .slave.
            (
                "_car-store._tcp.marathon.mesos.",
                &[
                    "car-store-zinaz-0.marathon.slave.mesos.:31364",
                    "car-store-zinaz-0.marathon.slave.mesos.:31365",
                ],
            ),
            (
                "_car-store._udp.marathon.mesos.",
                &[
                    "car-store-zinaz-0.marathon.slave.mesos.:31364",
                    "car-store-zinaz-0.marathon.slave.mesos.:31365",
                ],
            ),
            (
                "_car-store._udp.marathon.slave.mesos.",
                &[
                    "car-store-zinaz-0.marathon.slave.mesos.:31364",
                    "car-store-zinaz-0.marathon.slave.mesos.:31365",
                ],
            ),
            // A task without ports has no SRV.
            ("_nginx._tcp.marathon.mesos.", &[]),
            ("_slave._tcp.mesos.", &["slave.mesos.:5051"]),
            (
                "_framework._tcp.marathon.mesos.",
                &["marathon.mesos.:25501"],
            ),
            (
                "_framework._tcp.ipv6-framework.mesos.",
                &["ipv6-framework.mesos.:25501"],
            ),
        ],
        srv,
    );
}

#[test]
fn ip_sources_are_tried_in_the_configured_order() {
    // (sources, name, expected)
    let cases: &[(&[IpSource], &str, &[&str])] = &[
        (
            &[Host],
            "liquor-store.marathon.mesos.",
            &["1.2.3.11", "1.2.3.12"],
        ),
        (&[Host], "nginx.marathon.mesos.", &["1.2.3.11"]),
        (&[Host], "toy-store.ipv6-framework.mesos.", &["2001:db8::1"]),
        (&[Mesos, Host], "nginx.marathon.mesos.", &["10.3.0.3"]),
        (
            &[Mesos, Host],
            "liquor-store.marathon.mesos.",
            &["1.2.3.11", "1.2.3.12"],
        ),
        (
            &[Docker, Host],
            "liquor-store.marathon.mesos.",
            &["10.3.0.1", "10.3.0.2"],
        ),
        (&[Docker, Host], "nginx.marathon.mesos.", &["1.2.3.11"]),
        (
            &[Netinfo],
            "toy-store.ipv6-framework.mesos.",
            &["12.0.1.3", "12.0.1.2", "fd01:b::1:8000:2"],
        ),
        // Docker's label is absent: the agent's address, and only that.
        (
            &[Docker, Host],
            "toy-store.ipv6-framework.mesos.",
            &["2001:db8::1"],
        ),
        (
            &[Mesos, Host],
            "toy-store.ipv6-framework.mesos.",
            &["2001:db8::1"],
        ),
        // A populated source ends the search: the agent's address is not added.
        (
            &[Netinfo, Host],
            "toy-store.ipv6-framework.mesos.",
            &["12.0.1.3", "12.0.1.2", "fd01:b::1:8000:2"],
        ),
        (&[Netinfo], "nginx.marathon.mesos.", &[]),
        // Mesos-DNS's default order.
        (
            &[Netinfo, Mesos, Host],
            "liquor-store.marathon.mesos.",
            &["1.2.3.11", "1.2.3.12"],
        ),
    ];
    for (sources, name, want) in cases {
        let set = records(LabelSpec::Rfc952, sources);
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(ips(&set, name), want, "{sources:?} {name}");
    }
}

#[test]
fn rfc1123_keeps_longer_labels_and_digits() {
    let set = records(LabelSpec::Rfc1123, &[Netinfo, Mesos, Host]);
    assert_eq!(
        ips(&set, "some-box.chronoswithaspaceandmixedcase-2.0.1.mesos."),
        vec!["1.2.3.11"]
    );
    assert_eq!(
        ips(&set, "some-box.chronoswithaspaceandmixe.mesos."),
        Vec::<String>::new()
    );
}

#[test]
fn host_names_are_resolved_by_the_caller() {
    // The "no pid" framework only has a host name.
    let resolve = |host: &str| match host {
        "localhost" => vec!["127.0.0.1".parse::<IpAddr>().unwrap()],
        other => literal_only(other),
    };
    let set = generate(
        &mesos::cluster(&fixture(), &[Host], &resolve),
        &settings(LabelSpec::Rfc1123),
    );
    assert_eq!(ips(&set, "nopid.mesos."), vec!["127.0.0.1"]);
    assert!(
        srv(&set, "_framework._tcp.nopid.mesos.").is_empty(),
        "no port, no SRV"
    );
    let offline = records(LabelSpec::Rfc1123, &[Host]);
    assert!(ips(&offline, "nopid.mesos.").is_empty());
}

#[test]
fn masters_are_numbered_in_configured_order_with_the_leader_appended() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut s = settings(LabelSpec::Rfc1123);
    s.masters = vec![
        (ip("10.0.0.1"), 5050),
        (ip("144.76.157.37"), 5050),
        (ip("10.0.0.3"), 5050),
    ];
    let set = generate(&mesos::cluster(&fixture(), &[Host], &literal_only), &s);
    assert_eq!(ips(&set, "master0.mesos."), vec!["10.0.0.1"]);
    assert_eq!(ips(&set, "master1.mesos."), vec!["144.76.157.37"]);
    assert_eq!(ips(&set, "master2.mesos."), vec!["10.0.0.3"]);
    assert_eq!(
        ips(&set, "master.mesos."),
        vec!["10.0.0.1", "10.0.0.3", "144.76.157.37"]
    );

    // A leader that is not configured gets the next number.
    s.masters = vec![(ip("10.0.0.1"), 5050)];
    let set = generate(&mesos::cluster(&fixture(), &[Host], &literal_only), &s);
    assert_eq!(ips(&set, "master0.mesos."), vec!["10.0.0.1"]);
    assert_eq!(ips(&set, "master1.mesos."), vec!["144.76.157.37"]);
}

#[test]
fn only_running_tasks_are_enumerated() {
    let set = records(LabelSpec::Rfc952, &[Netinfo, Docker, Mesos, Host]);
    let marathon = set
        .enumeration
        .frameworks
        .iter()
        .find(|f| f.name == "marathon")
        .unwrap();
    let names: Vec<&str> = marathon.tasks.iter().map(|t| t.name.as_str()).collect();
    assert!(
        !names.contains(&"poseidon.bc4e3796-2d7a-11e4-b8df-d43d7edb01cd"),
        "{names:?}"
    );
    assert!(names.contains(&"car.store"));
    let car = marathon
        .tasks
        .iter()
        .find(|t| t.name == "car.store")
        .unwrap();
    assert!(
        car.records
            .iter()
            .any(|r| r.rtype == "SRV" && r.host == "car-store-zinaz-0.marathon.slave.mesos.:31364")
    );
    assert!(car.records.iter().all(|r| r.name.ends_with(".mesos.")));
    assert_eq!(set.enumeration.frameworks.len(), 4);
}

#[test]
fn zone_file_lines() {
    let set = records(LabelSpec::Rfc1123, &[Netinfo, Mesos, Host]);
    let mut text = String::new();
    set.write_zone_file(&mut text, 60, 1).unwrap();
    assert!(
        text.contains("leader.mesos.\t60\tIN\tA\t144.76.157.37\n"),
        "{text}"
    );
    assert!(text.contains("_leader._tcp.mesos.\t60\tIN\tSRV\t0 1 5050 leader.mesos.\n"));
    assert!(text.contains("toy-store.ipv6-framework.mesos.\t60\tIN\tAAAA\tfd01:b::1:8000:2\n"));
    assert_eq!(text.lines().count(), set.len());
}
