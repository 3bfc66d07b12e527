//! Reading `/master/state` from fake masters in a namespace of the test's own: the leader is
//! found through a follower, and the same state read again is not parsed again; masters behind
//! HTTPS (a CA file, a required client certificate), HTTP basic credentials and a DC/OS IAM
//! login are read as Mesos-DNS reads them, and every wrong setting says what is wrong.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dcnet_dns::mesos::fetch::{Fetched, MasterAccess, MasterAuth, MasterClient, fetch_state};
use dcnet_tests::pki::{TestPki, rsa_key_pair};
use dcnet_tests::{FakeMaster, MasterGuard, TestNamespace};

const FIXTURE: &str = include_str!("../../dns/tests/fixtures/mesos-dns-fake-state.json");

fn state_led_by(leader: &str) -> String {
    FIXTURE.replace("master@1.2.3.4:5050", &format!("master@{leader}"))
}

#[test]
fn the_same_state_is_read_but_not_parsed_again() {
    let ns = TestNamespace::create("fetch").unwrap();
    let leader_addr: SocketAddr = "127.0.0.1:5050".parse().unwrap();
    let follower_addr: SocketAddr = "127.0.0.1:5052".parse().unwrap();
    let leader =
        FakeMaster::start(ns.netns(), leader_addr, state_led_by("127.0.0.1:5050")).unwrap();
    // A follower answers first and names the leader.
    let follower_state = state_led_by("127.0.0.1:5050").replace("\"frameworks\"", "\"other\"");
    let _follower = FakeMaster::start(ns.netns(), follower_addr, follower_state).unwrap();
    let masters = [follower_addr, leader_addr];
    let client = MasterClient::plain(Duration::from_secs(5));
    let fetch = |last| {
        ns.netns()
            .run(|| fetch_state(&client, &masters, last))
            .unwrap()
            .unwrap_or_else(|e| panic!("fetching: {e}"))
    };

    let Fetched::State { state, seen } = fetch(None) else {
        panic!("nothing seen before: the state is parsed");
    };
    assert_eq!(
        seen.leader, leader_addr,
        "read from the leader the follower named"
    );
    let frameworks = state.frameworks.len();
    assert!(frameworks > 0);

    match fetch(Some(seen)) {
        Fetched::Unchanged(again) => assert_eq!(again, seen),
        Fetched::State { .. } => panic!("the same bytes were parsed again"),
    }
    assert_eq!(leader.requests(), 2, "the leader was read both times");

    // One framework fewer: other bytes, parsed.
    let mut changed: serde_json::Value =
        serde_json::from_str(&state_led_by("127.0.0.1:5050")).unwrap();
    changed["frameworks"].as_array_mut().unwrap().pop();
    leader.set_body(changed.to_string());
    match fetch(Some(seen)) {
        Fetched::State { state, seen: now } => {
            assert_eq!(state.frameworks.len(), frameworks - 1);
            assert_ne!(now, seen);
        }
        Fetched::Unchanged(_) => panic!("a changed state was taken for the same"),
    }
}

/// One read through `client` from `master` in `ns`: the frameworks seen, or the error.
fn read(ns: &TestNamespace, client: &MasterClient, master: SocketAddr) -> Result<usize, String> {
    match ns
        .netns()
        .run(|| fetch_state(client, &[master], None))
        .unwrap()
    {
        Ok(Fetched::State { state, .. }) => Ok(state.frameworks.len()),
        Ok(Fetched::Unchanged(_)) => Err("unchanged without a last read".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn client(access: &MasterAccess) -> MasterClient {
    MasterClient::new(access, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn masters_behind_https_with_a_client_certificate_and_basic_credentials() {
    let ns = TestNamespace::create("fetchtls").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "cluster").unwrap();
    let other = TestPki::new(dir.path(), "other").unwrap();
    let addr: SocketAddr = "127.0.0.1:5050".parse().unwrap();
    let server = pki.server("master", addr.ip()).unwrap();
    let ca_pem = std::fs::read_to_string(dir.path().join("cluster-ca.pem")).unwrap();
    let master = FakeMaster::start_guarded(
        ns.netns(),
        addr,
        state_led_by("127.0.0.1:5050"),
        MasterGuard {
            tls: Some((server.cert_pem.clone(), server.key_pem.clone())),
            client_ca: Some(ca_pem),
            basic: Some(("dns".into(), "s3cret".into())),
            ..MasterGuard::default()
        },
    )
    .unwrap();
    let ours = pki.client("dns-client", "dcnet-dns").unwrap();
    let strangers = other.client("stranger", "dcnet-dns").unwrap();
    let access = MasterAccess {
        https: true,
        ca_file: Some(dir.path().join("cluster-ca.pem")),
        client_cert: Some((ours.cert_file.clone(), ours.key_file.clone())),
        auth: MasterAuth::Basic {
            principal: "dns".into(),
            secret: "s3cret".into(),
        },
    };
    assert!(read(&ns, &client(&access), addr).unwrap() > 0);

    // Each part missing or wrong: refused, and the message says which.
    let cases: Vec<(&str, MasterAccess, &[&str])> = vec![
        (
            "plain HTTP to an HTTPS master",
            MasterAccess {
                https: false,
                ..access.clone()
            },
            &["127.0.0.1:5050"],
        ),
        (
            "no CA file: the public CAs do not know the cluster's",
            MasterAccess {
                ca_file: None,
                ..access.clone()
            },
            &["certificate"],
        ),
        (
            "another CA",
            MasterAccess {
                ca_file: Some(dir.path().join("other-ca.pem")),
                ..access.clone()
            },
            &["certificate"],
        ),
        (
            "no client certificate",
            MasterAccess {
                client_cert: None,
                ..access.clone()
            },
            &["127.0.0.1:5050"],
        ),
        (
            "a client certificate of another CA",
            MasterAccess {
                client_cert: Some((strangers.cert_file.clone(), strangers.key_file.clone())),
                ..access.clone()
            },
            &["127.0.0.1:5050"],
        ),
        (
            "no credentials",
            MasterAccess {
                auth: MasterAuth::None,
                ..access.clone()
            },
            &["401", "wants credentials"],
        ),
        (
            "a wrong secret",
            MasterAccess {
                auth: MasterAuth::Basic {
                    principal: "dns".into(),
                    secret: "guess".into(),
                },
                ..access.clone()
            },
            &["401", "refused these credentials"],
        ),
    ];
    for (what, access, words) in cases {
        let err = read(&ns, &client(&access), addr).expect_err(what);
        for word in words {
            assert!(err.contains(word), "{what}: {err:?} lacks {word:?}");
        }
    }
    assert_eq!(
        master.refused(),
        2,
        "the two credential cases reached the master"
    );

    // Files that cannot be used are refused when the client is made, naming the file.
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let bad: Vec<(MasterAccess, PathBuf)> = vec![
        (
            MasterAccess {
                ca_file: Some(missing.clone()),
                ..access.clone()
            },
            missing.clone(),
        ),
        (
            MasterAccess {
                ca_file: Some(garbage.clone()),
                ..access.clone()
            },
            garbage.clone(),
        ),
        (
            MasterAccess {
                client_cert: Some((ours.cert_file.clone(), garbage.clone())),
                ..access.clone()
            },
            garbage.clone(),
        ),
    ];
    for (access, path) in bad {
        let err = MasterClient::new(&access, Duration::from_secs(1))
            .expect_err("unusable file")
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

#[test]
fn a_dcos_service_account_logs_in_once_and_again_when_its_token_expires() {
    let ns = TestNamespace::create("fetchiam").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_pem) = rsa_key_pair(dir.path(), "account").unwrap();
    let addr: SocketAddr = "127.0.0.1:5050".parse().unwrap();
    let master = FakeMaster::start_guarded(
        ns.netns(),
        addr,
        state_led_by("127.0.0.1:5050"),
        MasterGuard {
            iam: Some(("dcos_mesos_dns".into(), public_pem)),
            ..MasterGuard::default()
        },
    )
    .unwrap();
    let account = |uid: &str, key: &str| {
        let path = dir.path().join(format!("{uid}.json"));
        let file = serde_json::json!({
            "uid": uid,
            "private_key": key,
            "login_endpoint": "http://127.0.0.1:5050/acs/api/v1/auth/login",
        });
        std::fs::write(&path, file.to_string()).unwrap();
        MasterAccess {
            auth: MasterAuth::Iam(path),
            ..MasterAccess::default()
        }
    };
    let iam = client(&account("dcos_mesos_dns", &private_pem));
    assert!(read(&ns, &iam, addr).unwrap() > 0);
    assert!(read(&ns, &iam, addr).unwrap() > 0);
    assert_eq!(master.logins(), 1, "the token is kept between reads");
    master.expire_tokens();
    assert!(
        read(&ns, &iam, addr).unwrap() > 0,
        "a refused token is renewed"
    );
    assert_eq!(master.logins(), 2);

    // Another account, or another key: the login is refused and the read says so.
    let (stranger_pem, _) = rsa_key_pair(dir.path(), "stranger").unwrap();
    for (uid, key) in [
        ("someone_else", private_pem.as_str()),
        ("dcos_mesos_dns", &stranger_pem),
    ] {
        let err = read(&ns, &client(&account(uid, key)), addr).expect_err(uid);
        assert!(
            err.contains("IAM login") && err.contains("refused"),
            "{err}"
        );
    }
    // A file without an RSA key is refused when the client is made.
    let broken = account(
        "dcos_mesos_dns",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let err = MasterClient::new(&broken, Duration::from_secs(1))
        .expect_err("no key")
        .to_string();
    assert!(
        err.contains("private_key") && err.contains("dcos_mesos_dns.json"),
        "{err}"
    );
}
