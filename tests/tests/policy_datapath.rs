//! The network-policy programs against real sockets: loaded with aya, attached to a cgroup made
//! for each test, servers and probes (`tests/clients/flows.py`) placed in that cgroup and in a
//! namespace of the test's own, on addresses of its loopback (each address a task's). Every
//! verdict is compared with the reference, `dcnet_policy::Compiled::allows`.

use std::net::IpAddr;

use anyhow::{Context, Result};
use dcnet_lb::policy::{Enforcer, Rules};
use dcnet_policy::{Compiled, Direction, Policy, Protocol, Task};
use dcnet_tests::flows::Flows;
use dcnet_tests::{TestCgroup, TestNamespace};

struct Setup {
    ns: TestNamespace,
    cgroup: TestCgroup,
    enforcer: Enforcer,
}

const ADDRESSES: &[&str] = &[
    "10.77.0.1",
    "10.77.0.2",
    "10.77.0.3",
    "10.77.0.4",
    "fd77::2",
    "fd77::3",
];

impl Setup {
    fn new(label: &str) -> Result<Self> {
        dcnet_tests::cluster::require_root()?;
        let ns = TestNamespace::create(label)?;
        for a in ADDRESSES {
            let prefix = if a.contains(':') { "/128" } else { "/32" };
            let out = ns.run(
                "ip",
                &["addr", "add", &format!("{a}{prefix}"), "dev", "lo", "nodad"],
            )?;
            anyhow::ensure!(out.status.success(), "adding {a}: {out:?}");
        }
        let cgroup = TestCgroup::create(label)?;
        let mut enforcer = Enforcer::load()?;
        enforcer.attach(cgroup.path())?;
        Ok(Self {
            ns,
            cgroup,
            enforcer,
        })
    }

    fn serve(&self, addr: &str, ports: &[u16]) -> Result<Flows> {
        Flows::serve(self.ns.netns().name(), self.cgroup.path(), addr, ports)
    }

    fn prober(&self) -> Result<Flows> {
        Flows::probe(self.ns.netns().name(), self.cgroup.path())
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a test address")
}

fn tasks() -> Vec<Task> {
    let task = |app: &str, addresses: &[&str]| Task {
        app: app.into(),
        labels: Default::default(),
        addresses: addresses.iter().map(|a| ip(a)).collect(),
    };
    vec![
        task("/web", &["10.77.0.2", "fd77::2"]),
        task("/client", &["10.77.0.3", "fd77::3"]),
        task("/other", &["10.77.0.4"]),
    ]
}

fn compile(policies: &[&str]) -> Compiled {
    let policies: Vec<Policy> = policies
        .iter()
        .map(|p| Policy::parse(p).expect("a test policy"))
        .collect();
    let mut compiled = Compiled::new(&policies, &tasks(), &[]);
    compiled.set_hosts([ip("10.77.0.1")]);
    compiled
}

const WEB_IN: &str = r#"{"id": "web-in", "selector": {"apps": ["/web"]},
  "ingress": [{"from": [{"apps": ["/client"]}],
               "ports": [{"protocol": "tcp", "port": 8080}, {"protocol": "udp", "port": 5353}]},
              {"from": [{"cidr": "10.77.0.4/32"}], "ports": [{"protocol": "tcp", "port": 8081}]}]}"#;

const CLIENT_OUT: &str = r#"{"id": "client-out", "selector": {"apps": ["/client"]},
  "egress": [{"to": [{"apps": ["/web"]}]},
             {"to": [{"cidr": "10.77.0.0/30"}], "ports": [{"protocol": "tcp"}]}]}"#;

/// Every probe of the grid, and the verdict of the reference for it.
fn grid(compiled: &Compiled) -> Vec<(&'static str, &'static str, &'static str, u16, bool)> {
    let mut out = Vec::new();
    let flows: &[(&str, &str)] = &[
        ("10.77.0.3", "10.77.0.2"),
        ("10.77.0.4", "10.77.0.2"),
        ("10.77.0.1", "10.77.0.2"),
        ("10.77.0.3", "10.77.0.4"),
        ("10.77.0.3", "10.77.0.1"),
        ("10.77.0.2", "10.77.0.3"),
        ("fd77::3", "fd77::2"),
    ];
    for &(src, dst) in flows {
        for proto in ["tcp", "udp"] {
            for port in [8080u16, 8081, 5353] {
                let protocol = if proto == "tcp" {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                let (s, d) = (ip(src), ip(dst));
                let want = compiled.allows(Direction::Egress, (s, d), protocol, port)
                    && compiled.allows(Direction::Ingress, (s, d), protocol, port);
                out.push((src, dst, proto, port, want));
            }
        }
    }
    out
}

fn servers(setup: &Setup) -> Result<Vec<Flows>> {
    [
        "10.77.0.1",
        "10.77.0.2",
        "10.77.0.3",
        "10.77.0.4",
        "fd77::2",
    ]
    .iter()
    .map(|a| setup.serve(a, &[8080, 8081, 5353]))
    .collect()
}

/// Runs the grid; returns the probes whose outcome is not the reference's.
fn disagreements(prober: &mut Flows, compiled: &Compiled) -> Result<Vec<String>> {
    let mut wrong = Vec::new();
    for (src, dst, proto, port, want) in grid(compiled) {
        let got = prober.attempt(src, dst, proto, port)?;
        if (got == "ok") != want {
            wrong.push(format!(
                "{src} -> {dst} {proto}/{port}: {got}, reference says {want}"
            ));
        }
    }
    Ok(wrong)
}

#[test]
fn only_allowed_flows_pass_as_the_reference_decides() -> Result<()> {
    let mut setup = Setup::new("pol-grid")?;
    let _servers = servers(&setup)?;
    let mut prober = setup.prober()?;

    // No policy: everything passes.
    let open = compile(&[]);
    setup.enforcer.apply(Rules::new(&open))?;
    assert!(grid(&open).iter().all(|g| g.4));
    assert_eq!(disagreements(&mut prober, &open)?, Vec::<String>::new());

    // /web takes /client on two ports and 10.77.0.4 on one; /client sends to /web and TCP
    // to 10.77.0.0/30 only. The node (10.77.0.1) always reaches /web.
    let compiled = compile(&[WEB_IN, CLIENT_OUT]);
    let change = setup.enforcer.apply(Rules::new(&compiled))?;
    assert!(change.added > 0, "{change:?}");
    let denied_by_reference = grid(&compiled).iter().filter(|g| !g.4).count();
    assert!(denied_by_reference >= 10, "the grid tests denials too");
    assert_eq!(disagreements(&mut prober, &compiled)?, Vec::<String>::new());
    // A denied egress fails at once, in the sender's own stack.
    assert_eq!(
        prober.attempt("10.77.0.3", "10.77.0.4", "udp", 8080)?,
        "err EPERM"
    );
    // A denied ingress is a dropped SYN: the sender's connect times out.
    assert_eq!(
        prober.attempt("10.77.0.4", "10.77.0.2", "tcp", 8080)?,
        "err timeout"
    );

    // The drops are counted on the (direction, identity) that refused them.
    let denied = setup.enforcer.denied()?;
    let web = compiled.apps["/web"];
    let client = compiled.apps["/client"];
    assert!(denied[&(Direction::Ingress, web)] > 0, "{denied:?}");
    assert!(denied[&(Direction::Egress, client)] > 0, "{denied:?}");
    let counters: std::collections::BTreeMap<&str, u64> = setup
        .enforcer
        .counters()?
        .into_iter()
        .map(|(s, n)| (s.name(), n))
        .collect();
    assert!(
        counters["allowed"] > 0 && counters["denied"] > 0,
        "{counters:?}"
    );
    assert!(setup.enforcer.cached_flows() > 0);

    // Removed: open again.
    setup.enforcer.apply(Rules::new(&open))?;
    assert_eq!(disagreements(&mut prober, &open)?, Vec::<String>::new());
    assert!(setup.enforcer.rules().isolated.is_empty());
    Ok(())
}

#[test]
fn a_change_applies_to_established_flows_too() -> Result<()> {
    let mut setup = Setup::new("pol-est")?;
    let _web = setup.serve("10.77.0.2", &[8080])?;
    let allowed = compile(&[WEB_IN]);
    setup.enforcer.apply(Rules::new(&allowed))?;
    let (mut held, first) = Flows::hold(
        setup.ns.netns().name(),
        setup.cgroup.path(),
        "10.77.0.3",
        "10.77.0.2",
        8080,
    )?;
    assert_eq!(first, "ok hello 8080");
    assert_eq!(held.echo("one")?, "echo one");

    // Another policy that still allows it: the connection goes on (decided again, allowed).
    let epoch = setup.enforcer.epoch();
    let both = compile(&[WEB_IN, CLIENT_OUT]);
    setup.enforcer.apply(Rules::new(&both))?;
    assert!(setup.enforcer.epoch() > epoch);
    assert_eq!(held.echo("two")?, "echo two");

    // /web closed to everyone: the held connection's next packet is refused.
    let closed =
        compile(&[r#"{"id": "web-closed", "selector": {"apps": ["/web"]}, "ingress": []}"#]);
    setup.enforcer.apply(Rules::new(&closed))?;
    let answer = held.echo("three")?;
    // And stays refused: the other side's packets do not open it again.
    let again = held.echo("four")?;
    assert!(again.starts_with("err"), "{again}");
    assert!(answer.starts_with("err"), "{answer}");
    let revoked = setup
        .enforcer
        .counters()?
        .into_iter()
        .find(|(s, _)| s.name() == "revoked")
        .context("a revoked counter")?
        .1;
    assert!(revoked > 0);
    Ok(())
}
