//! `ClusterMcpToolPolicy` on a real kube-apiserver: a controller that
//! watches every namespace (as the chart's does) applies a cluster baseline
//! to the sidecar pods of the namespaces its `namespaceSelector` matches,
//! together with each pod's namespaced policies (every policy must allow a
//! call, so the baseline's deny wins), follows namespace relabelling, and
//! reports the baseline's status; the shipped baseline example is applied
//! as it is; a controller of one namespace enforces cluster policies but
//! leaves their status alone.
//!
//! One test in its own binary, so its own apiserver: the cluster-wide
//! controller writes the status of every policy, which would race the
//! namespace-scoped controllers of other tests.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, ControllerProc, ManagedSidecar};
use support::upstream::{Framing, Upstream};
use support::*;

/// Generous: how long a change may take to show before a test gives up.
const PATIENCE: Duration = Duration::from_secs(30);

/// A namespaced policy that allows `pods_list` and `pods_delete`.
fn team(ns: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: team, namespace: {ns}}}\nspec:\n  defaultAction: Deny\n  rules:\n    - {{name: work, tools: [pods_list, pods_delete], action: Allow}}\n"
    )
}

/// A cluster baseline that denies deletes in namespaces labelled
/// `baseline=<label>`; `operator` lets a test break its selector.
fn baseline(name: &str, label: &str, operator: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: ClusterMcpToolPolicy\nmetadata: {{name: {name}}}\nspec:\n  namespaceSelector:\n    matchExpressions: [{{key: baseline, operator: {operator}, values: [{label}]}}]\n  selector: {{matchLabels: {{app: kms}}}}\n  defaultAction: Allow\n  rules:\n    - {{name: no-deletes, tools: [\"*_delete\"], action: Deny, message: nothing is deleted here}}\n"
    )
}

fn cluster_status(cluster: &Cluster, name: &str) -> Value {
    cluster
        .get_json(&["clustermcptoolpolicy", name])
        .get("status")
        .cloned()
        .unwrap_or(Value::Null)
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

async fn wait_for_status(cluster: &Cluster, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = eventually(PATIENCE, async || {
        last = cluster_status(cluster, name);
        pred(&last)
    })
    .await;
    assert!(ok, "status of {name} never matched; last: {last:#}");
    last
}

/// Which policy and rule denied `tool`, or `None` if it was let through.
async fn denied_by(
    up: &Upstream,
    sidecar: &ManagedSidecar,
    tool: &str,
) -> Option<(String, String)> {
    match up.through(sidecar.tg.listen, &[], tool, json!({})).await {
        Answer::Allowed(_) => None,
        denied @ Answer::Denied(_) => {
            let d = denied.denial();
            Some((
                d["policy"].as_str().unwrap_or("?").to_owned(),
                d["rule"].as_str().unwrap_or("(default)").to_owned(),
            ))
        }
        Answer::Other(o) => panic!("{tool}: neither allowed nor denied: {o}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_baseline_joins_namespaced_policies_across_namespaces() {
    let cluster = Cluster::get();
    let home = cluster.namespace("cmtp-home");
    let (a, b) = (cluster.namespace("cmtp-a"), cluster.namespace("cmtp-b"));
    let label = format!("on-{}", std::process::id());
    cluster
        .kubectl(&["label", "namespace", &a, &format!("baseline={label}")])
        .unwrap();
    let mut controller = ControllerProc::start_cluster_wide(cluster, &home, "c1");
    let up = Upstream::start(Framing::Json).await;
    let mut sidecars = Vec::new();
    for ns in [&a, &b] {
        cluster.sidecar_pod(ns, "kms-0", &[("app", "kms")]);
        cluster.apply(&team(ns)).unwrap();
        sidecars.push(ManagedSidecar::start(
            cluster,
            (ns, "kms-0"),
            &controller,
            &up.url(),
        ));
    }
    let (in_a, in_b) = (&sidecars[0], &sidecars[1]);
    assert!(
        eventually(PATIENCE, async || up
            .allows(in_b.tg.listen, "pods_delete")
            .await)
        .await
    );

    // The baseline selects a's pod only; its deny beats a's own allow.
    let applied = std::time::Instant::now();
    cluster
        .apply(&baseline("no-deletes", &label, "In"))
        .unwrap();
    assert!(
        eventually(PATIENCE, async || up
            .denies(in_a.tg.listen, "pods_delete")
            .await)
        .await,
        "the baseline never reached a's sidecar"
    );
    eprintln!(
        "cluster policy apply -> enforced in {:?}",
        applied.elapsed()
    );
    assert_eq!(
        denied_by(&up, in_a, "pods_delete").await,
        Some(("no-deletes".to_owned(), "no-deletes".to_owned()))
    );
    assert_eq!(denied_by(&up, in_a, "pods_list").await, None);
    assert_eq!(
        denied_by(&up, in_a, "vm_clone").await,
        Some((format!("{a}/team"), "(default)".to_owned())),
        "the namespaced policy still applies"
    );
    assert_eq!(
        denied_by(&up, in_b, "pods_delete").await,
        None,
        "b's namespace is not selected"
    );
    let s = wait_for_status(cluster, "no-deletes", |s| s["synced"] == "1/1").await;
    assert_eq!(condition(&s, "Accepted")["status"], "True");
    assert_eq!(condition(&s, "Programmed")["status"], "True");
    assert_eq!(
        (s["rules"].clone(), s["observedGeneration"].clone()),
        (json!(1), json!(1))
    );
    let table = cluster.kubectl(&["get", "cmtp", "no-deletes"]).unwrap();
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(6).eq([
                "no-deletes",
                "Enforce",
                "Allow",
                "1",
                "True",
                "1/1"
            ])),
        "{table}"
    );

    // Labelling b brings its pod in.
    let labelled = std::time::Instant::now();
    cluster
        .kubectl(&["label", "namespace", &b, &format!("baseline={label}")])
        .unwrap();
    assert!(
        eventually(PATIENCE, async || up
            .denies(in_b.tg.listen, "pods_delete")
            .await)
        .await
    );
    eprintln!("namespace label -> enforced in {:?}", labelled.elapsed());
    wait_for_status(cluster, "no-deletes", |s| s["synced"] == "2/2").await;

    // A generation the controller refuses (an operator no selector has):
    // the apiserver takes it, the controller keeps generation 1 in force.
    cluster
        .apply(&baseline("no-deletes", &label, "Near"))
        .unwrap();
    let s = wait_for_status(cluster, "no-deletes", |s| s["observedGeneration"] == 2).await;
    let accepted = condition(&s, "Accepted");
    assert_eq!(accepted["status"], "False", "{s:#}");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("spec.namespaceSelector"),
        "{s:#}"
    );
    assert_eq!(s["accepted"]["generation"], 1);
    assert!(up.denies(in_a.tg.listen, "pods_delete").await);

    // Deleted: deletes are allowed again where the team policy allows them.
    cluster.kubectl(&["delete", "cmtp", "no-deletes"]).unwrap();
    assert!(
        eventually(PATIENCE, async || up
            .allows(in_a.tg.listen, "pods_delete")
            .await)
        .await
    );
    assert!(up.allows(in_b.tg.listen, "pods_delete").await);

    // The shipped example, applied as it is: every namespace.
    let example = repo_file("docs/examples/baseline-no-deletes.yaml");
    cluster
        .kubectl(&["apply", "-f", example.to_str().unwrap()])
        .unwrap();
    for sidecar in [in_a, in_b] {
        assert!(
            eventually(PATIENCE, async || up
                .denies(sidecar.tg.listen, "pods_delete")
                .await)
            .await
        );
        assert_eq!(
            denied_by(&up, sidecar, "configuration_view").await,
            Some(("baseline".to_owned(), "no-credentials".to_owned()))
        );
        assert_eq!(denied_by(&up, sidecar, "pods_list").await, None);
    }
    let s = wait_for_status(cluster, "baseline", |s| s["synced"] == "2/2").await;
    assert_eq!(
        (
            s["rules"].clone(),
            condition(&s, "Accepted")["status"].clone()
        ),
        (json!(3), json!("True"))
    );
    let m = metrics(controller.admin).await;
    assert!(
        sample(
            &m,
            &[
                "tollgate_controller_watch_events_total{",
                "kind=\"cluster_policy\"",
                "event=\"delete\""
            ]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );

    // A controller of one namespace enforces cluster policies on its own
    // pods, but leaves their status to one that sees every pod.
    controller.proc.terminate();
    let scoped = ControllerProc::start(cluster, &a, "c2");
    let in_a = ManagedSidecar::start(cluster, (&a, "kms-0"), &scoped, &up.url());
    in_a.until_ready(PATIENCE).await;
    cluster
        .apply(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ClusterMcpToolPolicy\nmetadata: {{name: scoped}}\nspec:\n  namespaceSelector: {{matchLabels: {{baseline: {label}}}}}\n  defaultAction: Allow\n  rules: [{{name: no-lists, tools: [pods_list], action: Deny}}]\n"
        ))
        .unwrap();
    assert!(
        eventually(PATIENCE, async || denied_by(&up, &in_a, "pods_list")
            .await
            .is_some_and(|(policy, _)| policy == "scoped"))
        .await
    );
    // A status pass of that controller after it indexed `scoped`: the one
    // that writes a policy it learns of later.
    cluster
        .apply(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: probe, namespace: {a}}}\nspec: {{defaultAction: Allow}}\n"
        ))
        .unwrap();
    let probed = eventually(PATIENCE, async || {
        cluster.policy(&a, "probe")["status"]["synced"] == "1/1"
    })
    .await;
    assert!(probed, "{:#}", cluster.policy(&a, "probe"));
    assert_eq!(cluster_status(cluster, "scoped"), Value::Null);
    cluster
        .kubectl(&["delete", "cmtp", "baseline", "scoped"])
        .unwrap();
}
