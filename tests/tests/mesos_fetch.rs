//! Reading `/master/state` from fake masters in a namespace of the test's own: the leader is
//! found through a follower, and the same state read again is not parsed again.

use std::net::SocketAddr;
use std::time::Duration;

use dcnet_dns::mesos::fetch::{Fetched, fetch_state};
use dcnet_tests::{FakeMaster, TestNamespace};

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
    let fetch = |last| {
        ns.netns()
            .run(|| fetch_state(&masters, Duration::from_secs(5), last))
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
