//! Resource rules end to end in the engine: capping what calls create,
//! whichever tool creates it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::*;
use crate::budget::inflight::MemoryInFlight;
use crate::budget::{Stores, Tiered, decide};
use crate::compile::resource_rules::{ClusterView, NoCluster};
use crate::resources::{CloneCounts, ToolMeta};
use crate::testing::{FakeShared, block_on, kms_meta as meta, problems, set};

/// A sidecar's stores, kept across calls.
struct Sidecar {
    set: PolicySet,
    counter: Tiered<FakeShared>,
    in_flight: MemoryInFlight,
    metas: BTreeMap<&'static str, ToolMeta>,
}

impl Sidecar {
    fn new(yaml: &str) -> Sidecar {
        let metas = [
            "vm_clone",
            "resources_create_or_update",
            "pods_delete",
            "namespaces_list",
        ]
        .into_iter()
        .map(|t| (t, meta(t)))
        .collect();
        Sidecar {
            set: set(yaml),
            counter: Tiered::new(Some(FakeShared::default())),
            in_flight: MemoryInFlight::default(),
            metas,
        }
    }

    fn call(&self, tool: &str, args: Value) -> Decision {
        self.call_with(tool, args, &NoCluster)
    }

    fn call_with(&self, tool: &str, args: Value, view: &dyn ClusterView) -> Decision {
        let call = ToolCall {
            tool,
            arguments: &args,
            session: None,
            meta: self.metas.get(tool),
            subject: None,
            payloads: None,
            approved: false,
        };
        let stores = Stores {
            budgets: &self.counter,
            in_flight: &self.in_flight,
            view,
        };
        block_on(decide(
            &self.set,
            &call,
            stores,
            Instant::now(),
            SystemTime::now(),
        ))
    }

    fn clone(&self, ns: &str, source: &str, target: &str) -> Decision {
        self.call(
            "vm_clone",
            json!({"namespace": ns, "name": source, "targetName": target}),
        )
    }

    fn apply(&self, yaml: &str) -> Decision {
        self.call("resources_create_or_update", json!({ "resource": yaml }))
    }
}

fn clones(n: usize, ns: &str) -> String {
    (0..n)
        .map(|i| format!("apiVersion: clone.kubevirt.io/v1{}\nkind: VirtualMachineClone\nmetadata: {{name: c{i}, namespace: {ns}}}\nspec: {{source: {{name: golden-a}}, target: {{name: copy-{i}}}}}\n", if i % 2 == 0 { "beta1" } else { "alpha1" }))
        .collect::<Vec<_>>()
        .join("---\n")
}

const CAP: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: clones}
spec:
  defaultAction: Deny
  hideDenied: true
  rules:
    - name: reads
      tools: [namespaces_list]
      action: Allow
    - name: no-system-clones
      resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}]
      namespaces: {include: [kube-system, kubevirt, "openshift-*"]}
      action: Deny
      message: Never clone into system namespaces.
    - name: clones
      resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone, verbs: [create]}]
      action: Allow
      clone:
        sourceNames: ["golden-*"]
        targetDiffersFromSource: true
      rateLimits:
        - {requests: 30, window: 1m, key: {namespace: true}}
"#;

#[test]
fn clones_are_judged_whichever_tool_creates_them() {
    let s = Sidecar::new(CAP);
    let d = s.clone("vms", "golden-fedora", "copy");
    assert_eq!(
        (d.effect, d.rule.as_deref()),
        (Effect::Allowed, Some("clones"))
    );
    // The same clone through the generic tool, in the other API version.
    let d = s.apply(&clones(1, "vms").replace("v1beta1", "v1alpha1"));
    assert_eq!(
        (d.effect, d.rule.as_deref()),
        (Effect::Allowed, Some("clones"))
    );

    let d = s.clone("kube-system", "golden-fedora", "copy");
    assert_eq!(
        (d.effect, d.reason, d.rule.as_deref()),
        (Effect::Denied, Reason::Rule, Some("no-system-clones"))
    );
    assert_eq!(
        d.message.as_deref(),
        Some(
            "Denied by tollgate policy \"clones\", rule \"no-system-clones\": create VirtualMachineClone in namespace \"kube-system\" from \"golden-fedora\" to \"copy\" is denied. Never clone into system namespaces."
        )
    );
    assert_eq!(
        s.apply(&clones(1, "openshift-infra")).rule.as_deref(),
        Some("no-system-clones")
    );

    let d = s.clone("vms", "prod-db", "copy");
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::Arguments));
    assert!(
        d.message
            .unwrap()
            .contains("source VM \"prod-db\" must match \"golden-*\"")
    );
    let d = s.clone("vms", "golden-a", "golden-a");
    assert!(
        d.message
            .unwrap()
            .contains("the target must not be the source VM itself")
    );

    // Other tools and other objects stay denied.
    assert_eq!(
        s.call("pods_delete", json!({"namespace": "vms", "name": "x"}))
            .reason,
        Reason::Default
    );
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: vms}\n";
    assert_eq!(s.apply(cm).reason, Reason::Default);
    // A clone smuggled next to another object: not all of the call is allowed.
    assert_eq!(
        s.apply(&format!("{}---\n{cm}", clones(1, "vms"))).reason,
        Reason::Default
    );
}

#[test]
fn every_document_counts_against_the_cap_and_a_batch_is_all_or_nothing() {
    let s = Sidecar::new(CAP);
    for i in 0..25 {
        assert_eq!(
            s.clone("vms", "golden-a", &format!("c{i}")).effect,
            Effect::Allowed
        );
    }
    // 10 in one call do not fit in the 5 left: none go through.
    let d = s.apply(&clones(10, "vms"));
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::RateLimit));
    assert!(
        d.message
            .as_deref()
            .unwrap()
            .contains("rate limit of 30 VirtualMachineClones per 1m per namespace reached"),
        "{d:?}"
    );
    assert_eq!(s.apply(&clones(5, "vms")).effect, Effect::Allowed);
    assert_eq!(
        s.clone("vms", "golden-a", "one-more").reason,
        Reason::RateLimit
    );
    // Another namespace has its own budget.
    assert_eq!(s.apply(&clones(10, "dev")).effect, Effect::Allowed);
}

#[test]
fn a_manifest_that_cannot_be_read_is_denied_when_resource_rules_apply() {
    let s = Sidecar::new(CAP);
    for bad in [
        "kind: [",
        "apiVersion: v1\nkind: A\nkind: B\n",
        "- not\n- objects\n",
    ] {
        let d = s.apply(bad);
        assert_eq!(
            (d.effect, d.reason),
            (Effect::Denied, Reason::Arguments),
            "{bad}"
        );
        assert!(
            d.message
                .unwrap()
                .contains("cannot tell which Kubernetes objects this call creates")
        );
    }
    // A policy without resource rules does not read manifests at all.
    let plain = Sidecar::new(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec: {defaultAction: Allow}\n",
    );
    assert_eq!(plain.apply("kind: [").effect, Effect::Allowed);
}

const IN_FLIGHT: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: flight}
spec:
  defaultAction: Deny
  rules:
    - name: clones
      resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}]
      action: Allow
      inFlight:
        - {max: 5, per: Namespace}
        - {max: 2, per: Source}
      rateLimits: [{requests: 100, window: 1m}]
"#;

#[test]
fn in_flight_caps_count_the_cluster_and_the_sidecars_own_admissions() {
    let s = Sidecar::new(IN_FLIGHT);
    s.in_flight
        .set_cluster(CloneCounts::default(), SystemTime::now());
    assert_eq!(s.clone("vms", "a", "a1").effect, Effect::Allowed);
    assert_eq!(s.clone("vms", "a", "a2").effect, Effect::Allowed);
    let d = s.clone("vms", "a", "a3");
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::InFlight));
    assert!(d.message.unwrap().contains("the cap of 2 VirtualMachineClones in flight per source VM (of \"vms/a\") is reached (2 in flight)"));
    for source in ["b", "c", "d"] {
        assert_eq!(s.clone("vms", source, "x").effect, Effect::Allowed);
    }
    let d = s.clone("vms", "e", "x");
    assert!(
        d.message
            .unwrap()
            .contains("5 VirtualMachineClones in flight per namespace (in \"vms\")")
    );
    // The controller reports all five done.
    s.in_flight.set_cluster(
        CloneCounts::default(),
        SystemTime::now() + Duration::from_secs(10),
    );
    assert_eq!(s.clone("vms", "e", "x").effect, Effect::Allowed);
}

#[test]
fn an_audit_policy_reports_a_full_in_flight_cap_without_holding_slots() {
    let audit = IN_FLIGHT
        .replace("name: flight}", "name: flight-audit}")
        .replace("defaultAction: Deny", "defaultAction: Deny\n  mode: Audit");
    let s = Sidecar::new(&audit);
    s.in_flight
        .set_cluster(CloneCounts::default(), SystemTime::now());
    // Nothing enforces, so every call goes through; the third on one source
    // is reported as what the cap of 2 would have stopped.
    assert_eq!(s.clone("vms", "a", "a1").effect, Effect::Allowed);
    assert_eq!(
        s.in_flight
            .count(spec::InFlightScope::Source, "vms/a", SystemTime::now()),
        0,
        "an audited admission holds no slot"
    );
    let mut counts = CloneCounts::default();
    counts.by_source.insert("vms/a".into(), 2);
    s.in_flight.set_cluster(counts, SystemTime::now());
    let d = s.clone("vms", "a", "a3");
    assert_eq!((d.effect, d.reason), (Effect::Audited, Reason::InFlight));
    assert_eq!(d.policy.as_deref(), Some("flight-audit"));
    assert!(d.message.unwrap().contains("(2 in flight)"));
}

#[test]
fn a_rate_limit_refusal_takes_back_the_in_flight_admission() {
    let s = Sidecar::new(&IN_FLIGHT.replace("requests: 100", "requests: 1"));
    assert_eq!(s.clone("vms", "a", "1").effect, Effect::Allowed);
    assert_eq!(s.clone("vms", "b", "2").reason, Reason::RateLimit);
    assert_eq!(
        s.in_flight
            .count(spec::InFlightScope::Namespace, "vms", SystemTime::now()),
        1
    );
}

struct Labels(BTreeMap<String, BTreeMap<String, String>>);

impl ClusterView for Labels {
    fn vm_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.0.get(&format!("{namespace}/{name}")).cloned()
    }
}

#[test]
fn source_labels_need_the_vm_and_unknown_is_configurable() {
    let yaml = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: labels}
spec:
  defaultAction: Deny
  rules:
    - name: clones
      resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}]
      action: Allow
      clone: {sourceLabels: {matchLabels: {clone: allowed}}}
"#;
    let s = Sidecar::new(yaml);
    let view = Labels(
        [
            (
                "vms/ok".to_owned(),
                [("clone".to_owned(), "allowed".to_owned())].into(),
            ),
            ("vms/no".to_owned(), BTreeMap::new()),
        ]
        .into(),
    );
    assert_eq!(
        s.call_with(
            "vm_clone",
            json!({"namespace": "vms", "name": "ok", "targetName": "t"}),
            &view
        )
        .effect,
        Effect::Allowed
    );
    let d = s.call_with(
        "vm_clone",
        json!({"namespace": "vms", "name": "no", "targetName": "t"}),
        &view,
    );
    assert!(
        d.message
            .unwrap()
            .contains("does not carry the required labels")
    );
    let d = s.call_with(
        "vm_clone",
        json!({"namespace": "vms", "name": "ghost", "targetName": "t"}),
        &view,
    );
    assert!(d.message.unwrap().contains("are not known"));
    let lenient = Sidecar::new(&yaml.replace(
        "matchLabels: {clone: allowed}}",
        "matchLabels: {clone: allowed}}, whenSourceUnknown: Allow",
    ));
    assert_eq!(
        lenient
            .call_with(
                "vm_clone",
                json!({"namespace": "vms", "name": "ghost", "targetName": "t"}),
                &view
            )
            .effect,
        Effect::Allowed
    );
}

#[test]
fn mappings_cap_servers_that_do_not_describe_their_tools() {
    let s = Sidecar::new(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: truenas}
spec:
  defaultAction: Allow
  resourceMappings:
    - tools: [truenas]
      arguments: [{pointer: /action, operator: Equals, value: vm_clone}]
      group: clone.kubevirt.io
      kind: VirtualMachineClone
      namespace: {value: truenas}
      source: {pointer: /params/vm}
      target: {pointer: /params/name}
  rules:
    - name: cap
      resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}]
      action: Allow
      rateLimits: [{requests: 2, window: 1m}]
"#,
    );
    let clone =
        json!({"category": "vm", "action": "vm_clone", "params": {"vm": "golden", "name": "copy"}});
    assert_eq!(s.call("truenas", clone.clone()).effect, Effect::Allowed);
    assert_eq!(s.call("truenas", clone.clone()).effect, Effect::Allowed);
    assert_eq!(s.call("truenas", clone).reason, Reason::RateLimit);
    // Other actions of the same tool are not clones.
    for _ in 0..5 {
        assert_eq!(
            s.call("truenas", json!({"action": "vm_list"})).effect,
            Effect::Allowed
        );
    }
}

#[test]
fn tools_that_can_create_allowed_objects_are_not_hidden() {
    let s = Sidecar::new(CAP);
    let hides = |tool: &str| s.set.hides(tool, s.metas.get(tool), None);
    assert!(!hides("namespaces_list"));
    assert!(!hides("vm_clone"), "creates VirtualMachineClones");
    assert!(!hides("resources_create_or_update"), "carries manifests");
    assert!(hides("pods_delete"));
    assert!(
        hides("vm_clone_unknown_server"),
        "no description, no mapping"
    );
}

#[test]
fn resource_rules_are_checked_strictly() {
    let doc = |rules: &str| {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p}}\nspec:\n  defaultAction: Deny\n  rules:\n{rules}\n"
        )
    };
    for (rules, want) in [
        (
            "    - {name: a, action: Allow}",
            "or name the objects it governs in `resources`",
        ),
        (
            "    - {name: a, resources: [{group: x}], action: Allow}",
            "name the objects with `kind:`",
        ),
        (
            "    - {name: a, tools: [x], action: Allow, namespaces: {include: [a]}}",
            "add `resources:` to the rule",
        ),
        (
            "    - {name: a, resources: [{group: apps, kind: Deployment}], action: Allow, inFlight: [{max: 1, per: Namespace}]}",
            "in-flight counts are kept for VirtualMachineClones only",
        ),
        (
            "    - {name: a, resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}], action: Deny, inFlight: [{max: 1, per: Namespace}]}",
            "in-flight limits apply to what a rule allows",
        ),
        (
            "    - {name: a, resources: [{group: apps, kind: Deployment}], action: Allow, clone: {sourceNames: [x]}}",
            "`clone` conditions apply to VirtualMachineClone resources",
        ),
        (
            "    - {name: a, tools: [x], action: Allow, rateLimits: [{requests: 1, window: 1m, key: {namespace: true}}]}",
            "count the objects a call creates",
        ),
        (
            "    - {name: a, resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}], action: Allow, namespaces: {exclude: ['[x']}}",
            "is not a valid glob",
        ),
    ] {
        let got = problems(&doc(rules));
        assert!(got.contains(want), "{rules}\n{got}");
    }
}
