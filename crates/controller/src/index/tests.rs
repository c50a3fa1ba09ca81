//! The index, driven like the watchers drive it, read like the push server
//! and the status writer read it. No cluster, no async.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

fn policy(ns: &str, name: &str, generation: i64, spec: Value) -> PolicyInput {
    PolicyInput {
        namespace: ns.into(),
        name: name.into(),
        generation,
        spec,
        persisted: None,
    }
}

/// A policy as a restarted controller reads it: its status names the
/// generation that was in force.
fn persisted(input: PolicyInput, generation: i64, spec: Value) -> PolicyInput {
    PolicyInput {
        persisted: Some(AcceptedGeneration {
            generation,
            spec: serde_json::to_value(parse_spec(spec).unwrap()).unwrap(),
        }),
        ..input
    }
}

fn broken() -> Value {
    json!({"defaultAction": "Deny", "rules": [{"name": "r", "tools": ["x"], "action": "Allow", "rateLimits": [{"requests": 5, "window": "1 minute"}]}]})
}

fn pod(ns: &str, name: &str, uid: &str, labels: &[(&str, &str)]) -> PodInput {
    PodInput {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn allow(tool: &str, app: Option<&str>) -> Value {
    let mut spec = json!({"defaultAction": "Deny", "rules": [{"name": "r", "tools": [tool], "action": "Allow"}]});
    if let Some(app) = app {
        spec["selector"] = json!({"matchLabels": {"app": app}});
    }
    spec
}

fn names(index: &Index, ns: &str, pod: &str) -> Vec<String> {
    index
        .snapshot(ns, pod)
        .unwrap()
        .snapshot
        .policies
        .iter()
        .map(|p| format!("{}@{}", p.name, p.generation))
        .collect()
}

#[test]
fn each_pod_gets_exactly_the_policies_that_select_it() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "kms", "u1", &[("app", "kms")]));
    index.apply_pod(pod("a", "other", "u2", &[("app", "other")]));
    index.apply_pod(pod("b", "kms", "u3", &[("app", "kms")]));
    index.apply_policy(policy("a", "for-kms", 1, allow("vm_clone", Some("kms"))));
    index.apply_policy(policy("a", "everyone", 1, allow("pods_list", None)));
    assert_eq!(names(&index, "a", "kms"), ["a/everyone@1", "a/for-kms@1"]);
    assert_eq!(names(&index, "a", "other"), ["a/everyone@1"]);
    // Policies never cross namespaces.
    assert!(names(&index, "b", "kms").is_empty());
}

#[test]
fn identical_recomputes_send_nothing() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[("app", "x")]));
    index.apply_policy(policy("a", "pol", 1, allow("t", None)));
    let mut sub = index.subscribe("a", "p").unwrap();
    sub.rx.borrow_and_update();
    // The same generation again (a status or label change on the policy).
    index.apply_policy(policy("a", "pol", 1, allow("t", None)));
    // An unrelated pod and an unrelated policy in another namespace.
    index.apply_pod(pod("a", "q", "u2", &[("app", "y")]));
    index.apply_policy(policy("b", "pol", 1, allow("t", None)));
    // The same pod again.
    index.apply_pod(pod("a", "p", "u", &[("app", "x")]));
    assert!(!sub.rx.has_changed().unwrap());
    // A new generation does send.
    index.apply_policy(policy("a", "pol", 2, allow("t2", None)));
    assert!(sub.rx.has_changed().unwrap());
    assert_eq!(
        sub.rx.borrow_and_update().snapshot.policies[0].generation,
        2
    );
}

#[test]
fn an_invalid_generation_keeps_the_last_accepted_one_in_force() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[]));
    index.apply_policy(policy("a", "pol", 1, allow("vm_clone", None)));
    let before = index.snapshot("a", "p").unwrap().snapshot.clone();
    let broken = json!({"defaultAction": "Deny", "rules": [{"name": "r", "tools": ["x"], "action": "Allow", "rateLimits": [{"requests": 5, "window": "1 minute"}]}]});
    index.apply_policy(policy("a", "pol", 2, broken));
    assert_eq!(
        index.snapshot("a", "p").unwrap().snapshot,
        before,
        "the sidecar keeps generation 1"
    );
    let report = index.report("a", "pol").unwrap();
    assert_eq!(
        (report.generation, report.accepted_generation),
        (2, Some(1))
    );
    assert_eq!(report.problems.len(), 1);
    assert!(
        report.problems[0]
            .to_string()
            .starts_with("spec.rules[0].rateLimits[0].window: \"1 minute\" is not a duration")
    );
    // Unknown fields too: the watcher reads the spec leniently, the index strictly.
    index.apply_policy(policy(
        "a",
        "pol",
        3,
        json!({"defaultAction": "Deny", "rulez": []}),
    ));
    let report = index.report("a", "pol").unwrap();
    assert!(
        report.problems[0]
            .to_string()
            .contains("unknown field `rulez`"),
        "{:?}",
        report.problems
    );
    // Fixed: generation 4 is in force.
    index.apply_policy(policy("a", "pol", 4, allow("pods_list", None)));
    assert_eq!(names(&index, "a", "p"), ["a/pol@4"]);
    assert!(index.report("a", "pol").unwrap().problems.is_empty());
}

#[test]
fn a_policy_that_was_never_valid_is_in_force_nowhere() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[("app", "x")]));
    index.apply_policy(policy(
        "a",
        "pol",
        1,
        json!({"defaultAction": "Maybe", "selector": {"matchLabels": {"app": "x"}}}),
    ));
    assert!(names(&index, "a", "p").is_empty());
    let report = index.report("a", "pol").unwrap();
    assert_eq!(report.accepted_generation, None);
    // Its selector still tells how many sidecars it is meant for.
    assert_eq!(report.selected.len(), 1);
}

#[test]
fn deleting_a_policy_takes_its_rules_away() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[]));
    index.apply_policy(policy("a", "pol", 1, allow("t", None)));
    let mut sub = index.subscribe("a", "p").unwrap();
    sub.rx.borrow_and_update();
    index.delete_policy("a", "pol");
    assert!(sub.rx.has_changed().unwrap());
    assert!(sub.rx.borrow_and_update().snapshot.policies.is_empty());
}

#[test]
fn relabelling_a_pod_changes_what_it_gets() {
    let mut index = Index::new();
    index.apply_policy(policy("a", "pol", 1, allow("t", Some("kms"))));
    index.apply_pod(pod("a", "p", "u", &[("app", "other")]));
    assert!(names(&index, "a", "p").is_empty());
    index.apply_pod(pod("a", "p", "u", &[("app", "kms")]));
    assert_eq!(names(&index, "a", "p"), ["a/pol@1"]);
}

#[test]
fn a_recreated_pod_ends_the_old_pods_streams() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "old-uid", &[]));
    let mut old = index.subscribe("a", "p").unwrap();
    index.apply_pod(pod("a", "p", "new-uid", &[]));
    assert!(old.rx.changed().now_or_never_closed());
    assert_eq!(index.subscribe("a", "p").unwrap().uid, "new-uid");
    index.delete_pod("a", "p");
    assert!(index.subscribe("a", "p").is_none());
}

#[test]
fn a_relist_forgets_what_is_gone() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[]));
    index.apply_pod(pod("a", "q", "u2", &[]));
    index.apply_policy(policy("a", "keep", 1, allow("t", None)));
    index.apply_policy(policy("a", "gone", 1, allow("t", None)));
    index.relist_policies(vec![policy("a", "keep", 1, allow("t", None))], false);
    index.relist_pods(vec![pod("a", "p", "u", &[])]);
    assert_eq!(names(&index, "a", "p"), ["a/keep@1"]);
    assert!(index.subscribe("a", "q").is_none());
    assert_eq!(index.policy_counts(), (1, 0));
}

#[test]
fn a_relist_publishes_each_snapshot_once_with_all_of_the_list() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[]));
    index.apply_policy(policy("a", "one", 1, allow("t", None)));
    let mut sub = index.subscribe("a", "p").unwrap();
    sub.rx.borrow_and_update();
    // While the watch was away: "one" changed, "two" appeared, "three" came
    // and went. The sidecar sees the end result in one snapshot.
    index.relist_policies(
        vec![
            policy("a", "one", 2, allow("t2", None)),
            policy("a", "two", 1, allow("t", None)),
        ],
        false,
    );
    assert!(sub.rx.has_changed().unwrap());
    let names: Vec<String> = sub
        .rx
        .borrow_and_update()
        .snapshot
        .policies
        .iter()
        .map(|p| format!("{}@{}", p.name, p.generation))
        .collect();
    assert_eq!(names, ["a/one@2", "a/two@1"]);
    // The same list again changes nothing.
    index.relist_policies(
        vec![
            policy("a", "one", 2, allow("t2", None)),
            policy("a", "two", 1, allow("t", None)),
        ],
        false,
    );
    assert!(!sub.rx.has_changed().unwrap());
}

#[test]
fn a_restarted_index_restores_the_accepted_generation_from_status() {
    // Generation 1 was accepted and its copy written to status; generation
    // 2 was refused. A new controller (or leader) sees only this object.
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[]));
    index.relist_policies(
        vec![
            persisted(policy("a", "cap", 2, broken()), 1, allow("vm_clone", None)),
            policy("a", "other", 1, allow("pods_list", None)),
        ],
        false,
    );
    assert_eq!(names(&index, "a", "p"), ["a/cap@1", "a/other@1"]);
    let report = index.report("a", "cap").unwrap();
    assert_eq!(
        (report.generation, report.accepted_generation),
        (2, Some(1))
    );
    assert_eq!(report.problems.len(), 1);
    assert_eq!(
        report.accepted_spec,
        Some(serde_json::to_value(parse_spec(allow("vm_clone", None)).unwrap()).unwrap()),
        "the status writer keeps writing the same copy"
    );
}

#[test]
fn a_persisted_copy_is_used_only_when_it_is_older_and_compiles() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[]));
    // The current generation compiles: it wins over any copy.
    index.apply_policy(persisted(
        policy("a", "ok", 3, allow("new", None)),
        2,
        allow("old", None),
    ));
    assert_eq!(names(&index, "a", "p"), ["a/ok@3"]);
    // A copy claiming the current (refused) generation or a later one is
    // not what was accepted.
    index.apply_policy(PolicyInput {
        persisted: Some(AcceptedGeneration {
            generation: 5,
            spec: allow("x", None),
        }),
        ..policy("a", "odd", 5, broken())
    });
    // A copy that does not compile here is dropped.
    index.apply_policy(PolicyInput {
        persisted: Some(AcceptedGeneration {
            generation: 1,
            spec: broken(),
        }),
        ..policy("a", "stale", 2, broken())
    });
    assert_eq!(names(&index, "a", "p"), ["a/ok@3"]);
    assert_eq!(index.report("a", "odd").unwrap().accepted_generation, None);
    assert_eq!(
        index.report("a", "stale").unwrap().accepted_generation,
        None
    );
}

#[test]
fn a_copy_written_later_for_the_same_generation_is_restored() {
    // This replica saw generation 2 (refused) before the leader wrote what
    // it had accepted; the status update arrives as the same generation.
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u", &[]));
    index.apply_policy(policy("a", "cap", 2, broken()));
    assert!(names(&index, "a", "p").is_empty());
    index.apply_policy(persisted(
        policy("a", "cap", 2, broken()),
        1,
        allow("vm_clone", None),
    ));
    assert_eq!(names(&index, "a", "p"), ["a/cap@1"]);
}

#[test]
fn reports_list_selected_pods_with_their_versions() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p1", "u1", &[("app", "kms")]));
    index.apply_pod(pod("a", "p2", "u2", &[("app", "kms")]));
    index.apply_pod(pod("a", "p3", "u3", &[("app", "web")]));
    index.apply_policy(policy("a", "pol", 1, allow("t", Some("kms"))));
    let report = index.report("a", "pol").unwrap();
    let selected: Vec<(&str, &str)> = report
        .selected
        .iter()
        .map(|s| (s.key.1.as_str(), s.uid.as_str()))
        .collect();
    assert_eq!(selected, [("p1", "u1"), ("p2", "u2")]);
    assert_eq!(
        report.selected[0].version,
        index.snapshot("a", "p1").unwrap().snapshot.version
    );
    assert_eq!(report.rules, Some(1));
}

#[test]
fn pods_without_the_sidecar_label_are_not_indexed() {
    let mut p = Pod::default();
    p.metadata.namespace = Some("a".into());
    p.metadata.name = Some("x".into());
    assert!(PodInput::from_pod(&p).is_none());
    p.metadata.labels = Some(BTreeMap::from([(
        SIDECAR_LABEL.to_owned(),
        "true".to_owned(),
    )]));
    assert_eq!(PodInput::from_pod(&p).unwrap().name, "x");
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> NamespaceInput {
    NamespaceInput {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A `ClusterMcpToolPolicy` as its watcher hands it over.
fn cluster(name: &str, generation: i64, mut spec: Value, team: Option<&str>) -> PolicyInput {
    if let Some(team) = team {
        spec["namespaceSelector"] = json!({"matchLabels": {"team": team}});
    }
    policy("", name, generation, spec)
}

#[test]
fn a_cluster_policy_selects_pods_in_the_namespaces_its_selector_matches() {
    let mut index = Index::new();
    index.apply_namespace(namespace("a", &[("team", "vms")]));
    index.apply_namespace(namespace("b", &[("team", "web")]));
    index.apply_pod(pod("a", "p", "u1", &[("app", "kms")]));
    index.apply_pod(pod("a", "q", "u2", &[("app", "web")]));
    index.apply_pod(pod("b", "p", "u3", &[("app", "kms")]));
    index.apply_policy(cluster("baseline", 1, allow("t", Some("kms")), Some("vms")));
    index.apply_policy(policy("a", "own", 1, allow("t", None)));
    // The cluster policy comes first; both are in force on `a/p`.
    assert_eq!(names(&index, "a", "p"), ["baseline@1", "a/own@1"]);
    assert_eq!(names(&index, "a", "q"), ["a/own@1"], "pod selector");
    assert!(names(&index, "b", "p").is_empty(), "namespace selector");
    let report = index.report("", "baseline").unwrap();
    let selected: Vec<&Key> = report.selected.iter().map(|s| &s.key).collect();
    assert_eq!(selected, [&("a".to_owned(), "p".to_owned())]);

    // Relabelling a namespace moves its pods in or out.
    index.apply_namespace(namespace("b", &[("team", "vms")]));
    assert_eq!(names(&index, "b", "p"), ["baseline@1"]);
    index.apply_namespace(namespace("a", &[]));
    assert_eq!(names(&index, "a", "p"), ["a/own@1"]);
    assert_eq!(index.report("", "baseline").unwrap().selected.len(), 1);
    index.delete_policy("", "baseline");
    assert!(names(&index, "b", "p").is_empty());
}

#[test]
fn a_cluster_policy_without_a_namespace_selector_selects_every_namespace() {
    let mut index = Index::new();
    index.relist_namespaces(vec![namespace("a", &[]), namespace("b", &[("x", "y")])]);
    index.apply_pod(pod("a", "p", "u1", &[]));
    index.apply_pod(pod("b", "p", "u2", &[]));
    index.apply_policy(cluster("all", 1, allow("t", None), None));
    assert_eq!(names(&index, "a", "p"), ["all@1"]);
    assert_eq!(names(&index, "b", "p"), ["all@1"]);
    assert_eq!(index.report("", "all").unwrap().selected.len(), 2);
}

#[test]
fn a_pod_in_a_namespace_not_yet_seen_gets_no_rules_until_its_labels_are_known() {
    let mut index = Index::new();
    index.apply_policy(cluster("baseline", 1, allow("t", None), Some("vms")));
    index.apply_policy(policy("a", "own", 1, allow("t", None)));
    index.apply_pod(pod("a", "p", "u1", &[]));
    assert!(
        names(&index, "a", "p").is_empty(),
        "not the namespaced policy alone, which may lack the baseline"
    );
    index.apply_namespace(namespace("a", &[("team", "vms")]));
    assert_eq!(names(&index, "a", "p"), ["baseline@1", "a/own@1"]);
}

#[test]
fn each_kind_relists_only_its_own_policies() {
    let mut index = Index::new();
    index.apply_namespace(namespace("a", &[]));
    index.apply_pod(pod("a", "p", "u1", &[]));
    index.apply_policy(policy("a", "own", 1, allow("t", None)));
    index.relist_policies(vec![cluster("all", 1, allow("t", None), None)], true);
    assert_eq!(names(&index, "a", "p"), ["all@1", "a/own@1"]);
    index.relist_policies(vec![], false);
    assert_eq!(names(&index, "a", "p"), ["all@1"]);
    index.relist_policies(vec![], true);
    assert!(names(&index, "a", "p").is_empty());
    index.relist_namespaces(vec![]);
    index.apply_policy(cluster("all", 2, allow("t", None), None));
    assert!(
        index.report("", "all").unwrap().selected.is_empty(),
        "the namespace is gone"
    );
}

#[test]
fn an_invalid_namespace_selector_is_refused_and_keeps_the_accepted_generation() {
    let mut index = Index::new();
    index.apply_namespace(namespace("a", &[("team", "vms")]));
    index.apply_pod(pod("a", "p", "u1", &[]));
    index.apply_policy(cluster("baseline", 1, allow("t", None), Some("vms")));
    let mut bad = allow("t", None);
    bad["namespaceSelector"] =
        json!({"matchExpressions": [{"key": "team", "operator": "Near", "values": ["x"]}]});
    index.apply_policy(policy("", "baseline", 2, bad));
    let report = index.report("", "baseline").unwrap();
    assert_eq!(report.accepted_generation, Some(1));
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.to_string().contains("namespaceSelector")),
        "{:?}",
        report.problems
    );
    assert_eq!(names(&index, "a", "p"), ["baseline@1"]);
    // status.accepted keeps the whole cluster spec, selector included, and
    // a restarted index restores it.
    let kept = report.accepted_spec.unwrap();
    assert_eq!(kept["namespaceSelector"]["matchLabels"]["team"], "vms");
    let mut fresh = Index::new();
    fresh.apply_namespace(namespace("a", &[("team", "vms")]));
    fresh.apply_pod(pod("a", "p", "u1", &[]));
    let mut refused = policy("", "baseline", 2, json!({"defaultAction": "Maybe"}));
    refused.persisted = Some(AcceptedGeneration {
        generation: 1,
        spec: kept,
    });
    fresh.apply_policy(refused);
    assert_eq!(names(&fresh, "a", "p"), ["baseline@1"]);
}

trait Closed {
    fn now_or_never_closed(self) -> bool;
}

impl<F: std::future::Future<Output = Result<(), watch::error::RecvError>>> Closed for F {
    /// Polls once: true if the channel reports closed.
    fn now_or_never_closed(self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(self);
        matches!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(Err(_)))
    }
}

fn notifying(secret: &str) -> Value {
    json!({"defaultAction": "Deny", "rules": [{"name": "r", "tools": ["x"], "action": "RequireApproval",
        "approval": {"notify": {"url": "https://hooks.example/a", "secretRef": {"name": secret, "key": "hmac"}}}}]})
}

fn found(version: &str, keys: &[(&str, &[u8])]) -> SecretRead {
    SecretRead::Found(
        keys.iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    NotifyKey {
                        resource_version: version.into(),
                        key: k8s_openapi::ByteString(v.to_vec()),
                    },
                )
            })
            .collect(),
    )
}

#[test]
fn a_named_secrets_key_reaches_only_the_selected_pods_and_a_rotation_is_pushed() {
    let mut index = Index::new();
    index.apply_pod(pod("a", "p", "u1", &[]));
    index.apply_pod(pod("b", "q", "u2", &[]));
    index.apply_policy(policy("a", "pol", 1, notifying("hook")));
    index.apply_policy(policy("b", "other", 1, allow("x", None)));
    assert_eq!(
        index.secret_refs(),
        BTreeSet::from([("a".to_owned(), "hook".to_owned())]),
        "only the Secrets accepted policies name"
    );
    let report = |index: &Index| index.report("a", "pol").unwrap().notify;
    assert!(
        matches!(report(&index), Some(Err(ref p)) if p[0].contains("not been read yet")),
        "{:?}",
        report(&index)
    );
    let before = index.snapshot("a", "p").unwrap().snapshot.version.clone();
    index.apply_secrets(BTreeMap::from([(
        ("a".into(), "hook".into()),
        found("7", &[("hmac", b"k1"), ("other", b"x")]),
    )]));
    let snap = index.snapshot("a", "p").unwrap().snapshot.clone();
    let keys = &snap.policies[0].notify_keys;
    assert_eq!(
        keys.keys().collect::<Vec<_>>(),
        ["hook/hmac"],
        "the named key only"
    );
    assert_eq!(keys["hook/hmac"].key.0, b"k1");
    assert_ne!(snap.version, before);
    assert_eq!(report(&index), Some(Ok(())));
    let elsewhere = index.snapshot("b", "q").unwrap().snapshot.clone();
    assert!(elsewhere.policies.iter().all(|p| p.notify_keys.is_empty()));
    // Neither the version nor Debug carries the key.
    let debug = format!("{snap:?}");
    assert!(
        debug.contains("<2 bytes>") && !debug.contains("107, 49"),
        "{debug}"
    );

    // Rotated: a new resourceVersion, a new snapshot.
    index.apply_secrets(BTreeMap::from([(
        ("a".into(), "hook".into()),
        found("8", &[("hmac", b"k2")]),
    )]));
    let rotated = index.snapshot("a", "p").unwrap().snapshot.clone();
    assert_ne!(rotated.version, snap.version);
    assert_eq!(rotated.policies[0].notify_keys["hook/hmac"].key.0, b"k2");

    // The key gone: said in the report, and no key in the snapshot.
    index.apply_secrets(BTreeMap::from([(
        ("a".into(), "hook".into()),
        found("9", &[("other", b"x")]),
    )]));
    assert!(
        matches!(report(&index), Some(Err(ref p)) if p[0].contains("has no key \"hmac\"")),
        "{:?}",
        report(&index)
    );
    let gone = index.snapshot("a", "p").unwrap().snapshot.clone();
    assert!(gone.policies[0].notify_keys.is_empty());
    index.apply_secrets(BTreeMap::from([(
        ("a".into(), "hook".into()),
        SecretRead::Unreadable("Secret a/hook not found".into()),
    )]));
    assert_eq!(
        report(&index),
        Some(Err(vec!["Secret a/hook not found".into()]))
    );
    assert_eq!(index.report("b", "other").unwrap().notify, None);
}

#[test]
fn policy_objects_may_not_name_key_files_nor_cluster_policies_secrets() {
    let mut index = Index::new();
    let mut spec = notifying("hook");
    spec["rules"][0]["approval"]["notify"] = json!({"url": "https://hooks.example/a", "secretFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"});
    index.apply_policy(policy("a", "files", 1, spec));
    let r = index.report("a", "files").unwrap();
    assert_eq!(r.accepted_generation, None);
    assert!(
        r.problems[0]
            .to_string()
            .contains("secretFile is for policy files"),
        "{:?}",
        r.problems
    );
    index.apply_policy(policy("", "baseline", 1, notifying("hook")));
    let r = index.report("", "baseline").unwrap();
    assert_eq!(r.accepted_generation, None);
    assert!(
        r.problems[0]
            .to_string()
            .contains("ClusterMcpToolPolicy has no namespace"),
        "{:?}",
        r.problems
    );
    assert!(index.secret_refs().is_empty());
}
