use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::facts::launched::TaskState;
use crate::facts::launched::tests_support::status;
use crate::facts::mesos::{generation, tests::cluster as mesos_state, to_keys};
use crate::gossip::view::{Observed, next_view};

/// A row for `next_view`: node `id` at `heartbeat`, with `keys` (`None`: unchanged).
fn row(id: &str, heartbeat: u64, live: bool, keys: Option<&BTreeMap<String, String>>) -> Observed {
    Observed {
        id: id.into(),
        generation: 1,
        gossip_addr: "127.0.0.1:1".parse().unwrap(),
        heartbeat,
        max_version: keys.map_or(0, |k| k.len() as u64),
        is_live: live,
        is_self: false,
        keys: keys.map(crate::gossip::view::shared),
    }
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Node `a` holding `keys`, alive, and a decoder that has taken it in.
fn start(keys: &BTreeMap<String, String>) -> (ClusterView, Decoder) {
    let (view, _) = next_view(
        &ClusterView::default(),
        vec![row("a", 1, true, Some(keys))],
        t(1),
    );
    let mut decoder = Decoder::default();
    decoder.apply(&view);
    (view, decoder)
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn info() -> NodeInfo {
    serde_json::from_str(
        r#"{"name":"a","address":"10.0.0.1","roles":["master","agent"],"version":"0"}"#,
    )
    .unwrap()
}

/// One key of every kind, with the values they were made from.
fn every_kind() -> BTreeMap<String, String> {
    let mut keys = to_keys(&mesos_state());
    let (k, v) = generation(7);
    keys.insert(k, v);
    let assignment = Assignment {
        task_id: "web.1".into(),
        node_id: "a".into(),
        app: crate::app::parse(&serde_json::json!({"id": "/web", "cmd": "x"}), None, "v")
            .unwrap()
            .app,
        host_ports: vec![],
    };
    let leader = LeaderFact {
        api: "https://a".into(),
        term: 3,
        tasks: Some(1),
    };
    let keyring = KeyringFact {
        primary: "0a0b0c0d".into(),
        keys: vec!["0a0b0c0d".into()],
    };
    let lease = r#"{"net":"9.0.1.0/24","state":"held","since_ms":1}"#;
    let vtep = r#"{"net":"44.128.0.1/32","state":"held","since_ms":1}"#;
    keys.extend([
        (NODE_INFO_KEY.to_owned(), json(&info())),
        (KEYRING_KEY.to_owned(), json(&keyring)),
        (CREDENTIAL_SET_KEY.to_owned(), "a.b.c".to_owned()),
        (format!("{KV_PREFIX}color"), "blue".to_owned()),
        (
            format!("{}web.1", launched::PREFIX),
            json(&status("web.1", TaskState::TaskRunning)),
        ),
        (LEADER_KEY.to_owned(), json(&leader)),
        (format!("{TASK_PREFIX}web.1"), json(&assignment)),
        (overlay::VTEP_KEY.to_owned(), vtep.to_owned()),
        (overlay::network_key("dcos"), lease.to_owned()),
        ("future/key".to_owned(), "from a newer agent".to_owned()),
    ]);
    keys
}

#[test]
fn every_key_kind_decodes_into_its_typed_fact() {
    let keys = every_kind();
    let (view, _) = next_view(
        &ClusterView::default(),
        vec![row("a", 1, true, Some(&keys))],
        t(1),
    );
    let mut decoder = Decoder::default();
    let changed = decoder.apply(&view);
    for topic in [
        Topics::NODES,
        Topics::MESOS,
        Topics::LAUNCHED,
        Topics::SCHEDULER,
        Topics::OVERLAY,
        Topics::KV,
        Topics::KEYRING,
        Topics::CREDENTIALS,
    ] {
        assert!(changed.contains(topic), "{topic:?} in {changed:?}");
    }
    let a = &decoder.facts().nodes["a"];
    assert_eq!(a.info.as_deref(), Some(&info()));
    assert_eq!(a.keyring.as_ref().unwrap().primary, "0a0b0c0d");
    assert_eq!(a.credential_set.as_deref(), Some("a.b.c"));
    assert_eq!(a.kv["color"].as_ref(), "blue");
    assert_eq!(
        *a.launched["web.1"],
        status("web.1", TaskState::TaskRunning)
    );
    assert_eq!(a.leader.as_ref().unwrap().term, 3);
    assert_eq!(a.assignments["web.1"].node_id, "a");
    assert_eq!(a.vtep.unwrap().net.to_string(), "44.128.0.1/32");
    assert_eq!(a.networks["dcos"].net.to_string(), "9.0.1.0/24");
    let mesos = &a.mesos;
    assert_eq!(mesos.generation, Some(7));
    assert_eq!(mesos.leader, Some("10.0.0.1:5050".parse().unwrap()));
    assert_eq!(mesos.agents["a1"].port, Some(5051));
    assert_eq!(mesos.frameworks["marathon"].scheduler_port, Some(8080));
    let (_, task) = mesos.tasks().next().expect("a task");
    let task = crate::facts::mesos::decode_task(task).unwrap();
    assert_eq!(task.task.id, "web.1");
    assert_eq!(mesos.vip_tasks["dns/task/marathon/web.1/web"], task);
    assert!(a.malformed.is_empty(), "{:?}", a.malformed);
    // Every dcnet key decoded once; the unknown one is counted too but yields nothing.
    assert_eq!(decoder.decoded(), keys.len() as u64);
}

#[test]
fn a_heartbeat_alone_changes_no_fact_and_decodes_nothing() {
    let keys = every_kind();
    let (v1, mut decoder) = start(&keys);
    let versions = decoder.facts().versions();
    let decoded = decoder.decoded();
    // Heartbeats advance, `last_heard` moves, the keys are carried over.
    let mut view = v1;
    for beat in 2..10 {
        (view, _) = next_view(&view, vec![row("a", beat, true, None)], t(beat));
        assert_eq!(decoder.apply(&view), Topics::empty());
    }
    assert_eq!(decoder.facts().versions(), versions);
    assert_eq!(decoder.decoded(), decoded);
}

#[test]
fn a_changed_key_is_decoded_alone_and_a_deleted_one_is_gone() {
    let mut keys = every_kind();
    let (v1, mut decoder) = start(&keys);
    let before = decoder.decoded();
    let kv_version = decoder.facts().versions()[5];

    keys.insert(format!("{KV_PREFIX}color"), "green".into());
    keys.remove(&overlay::network_key("dcos"));
    let mut v2 = v1.clone();
    v2.nodes.get_mut("a").unwrap().keys = Arc::new(crate::gossip::view::shared(&keys));
    assert_eq!(decoder.apply(&v2), Topics::KV | Topics::OVERLAY);
    assert_eq!(decoder.decoded(), before + 1, "only the changed value");
    let a = &decoder.facts().nodes["a"];
    assert_eq!(a.kv["color"].as_ref(), "green");
    assert!(a.networks.is_empty());
    assert_eq!(decoder.facts().versions()[5], kv_version + 1);
}

#[test]
fn liveness_and_departure_change_the_nodes_topic() {
    let keys = every_kind();
    let (v1, mut decoder) = start(&keys);
    let (v2, _) = next_view(&v1, vec![row("a", 1, false, None)], t(5));
    assert_eq!(decoder.apply(&v2), Topics::NODES);
    let a = &decoder.facts().nodes["a"];
    assert!(!a.is_up);
    assert_eq!(
        a.last_heard,
        t(1),
        "when it was last heard, not when it went down"
    );
    // Forgotten: every topic it had facts in changes.
    let changed = decoder.apply(&ClusterView::default());
    assert!(changed.contains(Topics::NODES | Topics::LAUNCHED | Topics::MESOS));
    assert!(decoder.facts().nodes.is_empty());
}

#[test]
fn mesos_changes_only_when_what_readers_get_changes() {
    let state = |at: u64, cluster: &dcnet_dns::records::Cluster| {
        let mut keys = to_keys(cluster);
        let (k, v) = generation(at);
        keys.insert(k, v);
        keys
    };
    let same = mesos_state();
    let rows = |a: u64, b: u64| {
        vec![
            row("a", 1, true, Some(&state(a, &same))),
            row("b", 1, true, Some(&state(b, &same))),
        ]
    };
    let mut decoder = Decoder::default();
    let (v1, _) = next_view(&ClusterView::default(), rows(10, 5), t(1));
    assert!(decoder.apply(&v1).contains(Topics::MESOS));
    // Each poll bumps a generation; the freshest publisher flips from a to b: same content.
    for (a, b) in [(10, 20), (30, 20), (30, 40)] {
        let (v, _) = next_view(&v1, rows(a, b), t(2));
        assert_eq!(decoder.apply(&v), Topics::empty(), "polls at {a}/{b}");
    }
    assert_eq!(decoder.facts().mesos_publisher().unwrap().id, "b");
    // A publisher with other content wins: readers get it.
    let mut other = mesos_state();
    std::sync::Arc::make_mut(&mut other.frameworks[0].tasks[0]).ips =
        vec!["9.0.0.9".parse().unwrap()];
    let (v, _) = next_view(
        &v1,
        vec![
            row("a", 1, true, Some(&state(50, &other))),
            row("b", 1, true, Some(&state(40, &same))),
        ],
        t(3),
    );
    assert_eq!(decoder.apply(&v), Topics::MESOS);
    // A change on the publisher that is not chosen reaches nobody.
    let mut stale = same.clone();
    stale.agents.clear();
    let (v, _) = next_view(
        &v1,
        vec![
            row("a", 1, true, Some(&state(50, &other))),
            row("b", 1, true, Some(&state(40, &stale))),
        ],
        t(4),
    );
    assert_eq!(decoder.apply(&v), Topics::empty());
}

#[test]
fn a_malformed_value_is_no_value_until_it_is_fixed() {
    let mut keys = every_kind();
    let key = format!("{}web.1", launched::PREFIX);
    let (v1, mut decoder) = start(&keys);
    keys.insert(key.clone(), "{not json".into());
    let mut v2 = v1.clone();
    v2.nodes.get_mut("a").unwrap().keys = Arc::new(crate::gossip::view::shared(&keys));
    assert_eq!(decoder.apply(&v2), Topics::LAUNCHED);
    let a = &decoder.facts().nodes["a"];
    assert!(a.launched.is_empty(), "the old status does not linger");
    assert!(a.malformed.contains(&key));
    keys.insert(key.clone(), json(&status("web.1", TaskState::TaskKilled)));
    v2.nodes.get_mut("a").unwrap().keys = Arc::new(crate::gossip::view::shared(&keys));
    decoder.apply(&v2);
    let a = &decoder.facts().nodes["a"];
    assert_eq!(a.launched["web.1"].state, TaskState::TaskKilled);
    assert!(a.malformed.is_empty());
}

#[test]
fn tasks_share_their_agent_id_and_framework_name() {
    let mut state = mesos_state();
    let mut second = (*state.frameworks[0].tasks[0]).clone();
    second.id = "web.2".into();
    state.frameworks[0].tasks.push(Arc::new(second));
    let (_, decoder) = start(&to_keys(&state));
    let tasks: Vec<&TaskFact> = decoder.facts().nodes["a"]
        .mesos
        .vip_tasks
        .values()
        .collect();
    assert_eq!(tasks.len(), 2, "both tasks that declare VIPs decoded");
    assert!(Arc::ptr_eq(&tasks[0].framework, &tasks[1].framework));
    assert!(Arc::ptr_eq(
        &tasks[0].task.agent_id,
        &tasks[1].task.agent_id
    ));
    assert_eq!(&*tasks[1].task.agent_id, "a1");
}

#[test]
fn shared_strings_no_fact_holds_are_dropped_as_the_set_grows() {
    let mut interner = Interner::default();
    let mut kept: Arc<str> = Arc::from("kept");
    interner.share(&mut kept);
    for i in 0..1000 {
        let mut s: Arc<str> = Arc::from(format!("agent-{i}").as_str());
        interner.share(&mut s);
    }
    assert!(
        interner.strings.len() < 200,
        "{} strings kept, most held by nothing",
        interner.strings.len()
    );
    let mut again: Arc<str> = Arc::from("kept");
    interner.share(&mut again);
    assert!(Arc::ptr_eq(&again, &kept), "a held string stays shared");
}

#[test]
fn task_facts_are_keyed_by_the_gossip_key_they_came_from() {
    let keys = to_keys(&mesos_state());
    let (view, decoder) = start(&keys);
    let node = &view.nodes["a"];
    let (key, value) = node
        .keys
        .iter()
        .find(|(k, _)| k.starts_with(crate::facts::mesos::TASK))
        .expect("a task key");
    let facts = decoder.facts();
    let (fact_key, fact_value) = facts.nodes["a"].mesos.tasks().next().expect("a task");
    assert!(Arc::ptr_eq(key, fact_key), "the key is not copied");
    assert!(Arc::ptr_eq(value, fact_value), "the value is not copied");
    let (vip_key, _) = facts.nodes["a"]
        .mesos
        .vip_tasks
        .iter()
        .next()
        .expect("a VIP task");
    assert!(Arc::ptr_eq(key, vip_key), "the key is not copied");
}

#[test]
fn only_tasks_that_declare_vips_are_kept_decoded() {
    let mut state = mesos_state();
    let web = "dns/task/marathon/web.1/web";
    let (view, mut decoder) = start(&to_keys(&state));
    assert!(decoder.facts().nodes["a"].mesos.vip_tasks.contains_key(web));

    // The label goes: the task stays, encoded only.
    let task = Arc::make_mut(&mut state.frameworks[0].tasks[0]);
    task.discovery.as_mut().unwrap().ports[0].labels.clear();
    let mut keys = to_keys(&state);
    let mut next = view.clone();
    next.nodes.get_mut("a").unwrap().keys = Arc::new(crate::gossip::view::shared(&keys));
    decoder.apply(&next);
    let mesos = &decoder.facts().nodes["a"].mesos;
    assert!(mesos.vip_tasks.is_empty());
    assert_eq!(mesos.tasks().map(|(k, _)| &**k).collect::<Vec<_>>(), [web]);

    // A value that does not decode: listed as malformed, still there encoded.
    keys.insert(web.to_owned(), "{".to_owned());
    next.nodes.get_mut("a").unwrap().keys = Arc::new(crate::gossip::view::shared(&keys));
    decoder.apply(&next);
    let a = &decoder.facts().nodes["a"];
    assert!(a.malformed.contains(web));
    assert_eq!(a.mesos.tasks().count(), 1);
    assert!(a.mesos.vip_tasks.is_empty());
}
