//! Size budgets, running-VM caps and lifecycle rules end to end in the
//! engine, through [`decide`] — the sequence the sidecar runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::budget::inflight::MemoryInFlight;
use crate::budget::{Stores, Tiered, decide};
use crate::compile::resource_rules::ClusterView;
use crate::evaluate::{Decision, Effect, PolicySet, Reason, ToolCall};
use crate::resources::CloneCounts;
use crate::resources::sizes::Sizes;
use crate::spec;
use crate::testing::{FakeShared, block_on, kms_meta as meta, problems, set};

/// What the controller would have pushed.
#[derive(Default)]
struct View {
    labels: BTreeMap<String, BTreeMap<String, String>>,
    vms: BTreeMap<String, Sizes>,
    cluster_instancetypes: BTreeMap<String, Sizes>,
    /// Whether the controller's VMI watch is current.
    running_current: bool,
    /// VMs with a VirtualMachineInstance.
    running: BTreeSet<String>,
    /// DataVolumes' and PVCs' storage.
    disks: BTreeMap<String, u64>,
}

impl ClusterView for View {
    fn vm_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.labels.get(&format!("{namespace}/{name}")).cloned()
    }
    fn vm_size(&self, namespace: &str, name: &str) -> Option<Sizes> {
        self.vms.get(&format!("{namespace}/{name}")).copied()
    }
    fn instancetype(&self, namespace: Option<&str>, name: &str) -> Option<Sizes> {
        match namespace {
            None => self.cluster_instancetypes.get(name).copied(),
            Some(_) => None,
        }
    }
    fn running_vms_current(&self) -> bool {
        self.running_current
    }
    fn vm_running(&self, namespace: &str, name: &str) -> bool {
        self.running_current && self.running.contains(&format!("{namespace}/{name}"))
    }
    fn disk_size(&self, namespace: &str, name: &str) -> Option<u64> {
        self.disks.get(&format!("{namespace}/{name}")).copied()
    }
}

fn gib(n: u64) -> Option<u64> {
    Some(n * 1024)
}

fn view() -> View {
    let mut v = View {
        running_current: true,
        ..View::default()
    };
    v.vms.insert(
        "vms/db".into(),
        Sizes {
            cpu: Some(8000),
            memory: gib(32),
            storage: gib(400),
        },
    );
    v.vms.insert(
        "vms/small".into(),
        Sizes {
            cpu: Some(1000),
            memory: gib(2),
            storage: gib(20),
        },
    );
    v.cluster_instancetypes.insert(
        "u1.large".into(),
        Sizes {
            cpu: Some(2000),
            memory: gib(8),
            storage: Some(0),
        },
    );
    v.labels.insert(
        "vms/prod-db".into(),
        [("tier".to_owned(), "production".to_owned())].into(),
    );
    v.labels.insert("vms/scratch".into(), BTreeMap::new());
    v
}

struct Sidecar {
    set: PolicySet,
    budgets: Tiered<FakeShared>,
    in_flight: MemoryInFlight,
    view: View,
    t0: Instant,
}

impl Sidecar {
    fn new(rules: &str) -> Sidecar {
        Sidecar {
            set: set(&format!(
                "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p, namespace: vms}}\nspec:\n  defaultAction: Deny\n  rules:\n{rules}"
            )),
            budgets: Tiered::new(Some(FakeShared::default())),
            in_flight: MemoryInFlight::default(),
            view: view(),
            t0: Instant::now(),
        }
    }

    fn call_at(&self, tool: &str, args: Value, after: Duration) -> Decision {
        self.call_by(None, tool, args, after)
    }

    /// A call by the verified caller `subject`.
    fn call_by(&self, subject: Option<&str>, tool: &str, args: Value, after: Duration) -> Decision {
        let meta = meta(tool);
        let call = ToolCall {
            tool,
            arguments: &args,
            session: None,
            meta: Some(&meta),
            subject,
            payloads: None,
            approved: false,
        };
        let stores = Stores {
            budgets: &self.budgets,
            in_flight: &self.in_flight,
            view: &self.view,
        };
        block_on(decide(
            &self.set,
            &call,
            stores,
            self.t0 + after,
            SystemTime::now(),
        ))
    }

    fn call(&self, tool: &str, args: Value) -> Decision {
        self.call_at(tool, args, Duration::ZERO)
    }

    fn lifecycle(&self, name: &str, action: &str) -> Decision {
        self.call(
            "vm_lifecycle",
            json!({"namespace": "vms", "name": name, "action": action}),
        )
    }

    fn clone_at(&self, source: &str, target: &str, after: Duration) -> Decision {
        self.call_at(
            "vm_clone",
            json!({"namespace": "vms", "name": source, "targetName": target}),
            after,
        )
    }
}

const CLONE_BUDGET: &str = r#"
    - name: clones
      resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}]
      action: Allow
      budgets:
        - {resource: storage, amount: 500Gi, window: 1h, key: {namespace: true}}
"#;

#[test]
fn a_clone_of_a_big_source_is_refused_before_a_small_one_would_be() {
    let s = Sidecar::new(CLONE_BUDGET);
    // 400Gi of 500Gi.
    assert_eq!(
        s.clone_at("db", "copy-1", Duration::ZERO).effect,
        Effect::Allowed
    );
    let big = s.clone_at("db", "copy-2", Duration::from_secs(60));
    assert_eq!(
        (big.effect, big.reason),
        (Effect::Denied, Reason::RateLimit)
    );
    let message = big.message.unwrap();
    assert!(
        message.contains("this call needs 400Gi of storage; 100Gi of the budget of 500Gi of storage per 1h per namespace remain; retry after 59m"),
        "{message}"
    );
    // Five small ones still fit into the 100Gi left.
    for i in 0..5 {
        assert_eq!(
            s.clone_at("small", &format!("s-{i}"), Duration::from_secs(120))
                .effect,
            Effect::Allowed
        );
    }
    assert_eq!(
        s.clone_at("small", "s-6", Duration::from_secs(120)).effect,
        Effect::Denied
    );
}

#[test]
fn the_budget_refills_as_the_window_slides() {
    let s = Sidecar::new(CLONE_BUDGET);
    assert_eq!(
        s.clone_at("db", "a", Duration::ZERO).effect,
        Effect::Allowed
    );
    let almost = Duration::from_secs(3599);
    assert_eq!(s.clone_at("db", "b", almost).effect, Effect::Denied);
    assert_eq!(
        s.clone_at("db", "b", Duration::from_secs(3600)).effect,
        Effect::Allowed
    );
}

#[test]
fn an_unknown_source_is_denied_unless_the_budget_allows_it() {
    let s = Sidecar::new(CLONE_BUDGET);
    let d = s.clone_at("ghost", "x", Duration::ZERO);
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::Arguments));
    assert!(
        d.message
            .unwrap()
            .contains("the storage of source VM vms/ghost is not known"),
    );
    let s = Sidecar::new(
        &CLONE_BUDGET.replace("namespace: true}", "namespace: true}, whenUnknown: Allow"),
    );
    assert_eq!(
        s.clone_at("ghost", "x", Duration::ZERO).effect,
        Effect::Allowed
    );
}

const VM_BUDGETS: &str = r#"
    - name: vms
      tools: [vm_create, vm_create_from_template]
      action: Allow
    - name: sized
      resources:
        - {group: kubevirt.io, kind: VirtualMachine, verbs: [create, patch]}
        - {group: cdi.kubevirt.io, kind: DataVolume, verbs: [create, patch]}
        - {group: "", kind: PersistentVolumeClaim, verbs: [create, patch]}
      action: Allow
      budgets:
        - {resource: cpu, amount: "5", window: 1h, key: {namespace: true}}
        - {resource: storage, amount: 100Gi, window: 1h, key: {namespace: true}}
"#;

#[test]
fn vm_create_with_an_instancetype_counts_at_its_size() {
    let s = Sidecar::new(VM_BUDGETS);
    let create = |name: &str| {
        s.call(
            "vm_create",
            json!({"namespace": "vms", "name": name, "instancetype": "u1.large", "storage": "10Gi"}),
        )
    };
    // 2 vCPU each: two fit into 5, the third does not.
    assert_eq!(create("a").effect, Effect::Allowed);
    assert_eq!(create("b").effect, Effect::Allowed);
    let third = create("c");
    assert_eq!(third.effect, Effect::Denied);
    assert!(
        third
            .message
            .unwrap()
            .contains("this call needs 2 vCPU of cpu; 1 vCPU of the budget of 5 vCPU of cpu"),
    );
    // An instancetype the controller has not seen: unknown, denied.
    let d = s.call(
        "vm_create",
        json!({"namespace": "other", "name": "x", "instancetype": "huge.9xl"}),
    );
    assert_eq!(d.reason, Reason::Arguments);
    assert!(d.message.unwrap().contains("instancetype \"huge.9xl\""));
}

#[test]
fn manifests_count_their_storage_requests_all_or_nothing() {
    let s = Sidecar::new(VM_BUDGETS);
    let apply = |yaml: &str| s.call("resources_create_or_update", json!({ "resource": yaml }));
    let dv = |name: &str, size: &str| {
        format!(
            "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: {name}, namespace: vms}}\nspec: {{storage: {{resources: {{requests: {{storage: {size}}}}}}}}}\n"
        )
    };
    let pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: p, namespace: vms}\nspec: {resources: {requests: {storage: 30Gi}}}\n";
    assert_eq!(apply(&dv("a", "60Gi")).effect, Effect::Allowed);
    // 30Gi + 20Gi > the 40Gi left: neither is counted.
    let both = format!("{pvc}---\n{}", dv("b", "20Gi"));
    assert_eq!(apply(&both).effect, Effect::Denied);
    assert_eq!(apply(pvc).effect, Effect::Allowed);
    // A VM manifest: 2x2 vCPU from its template, 10Gi from its disk template.
    let vm = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: v, namespace: vms}\nspec:\n  runStrategy: Halted\n  template: {spec: {domain: {cpu: {cores: 2, sockets: 2}, memory: {guest: 4Gi}}}}\n  dataVolumeTemplates: [{metadata: {name: d}, spec: {storage: {resources: {requests: {storage: 10Gi}}}}}]\n";
    assert_eq!(apply(vm).effect, Effect::Allowed);
    let d = apply(&vm.replace("name: v,", "name: w,"));
    assert_eq!(d.effect, Effect::Denied, "4 + 4 vCPU > 5");
    // A VM from a template weighs what the server renders: unknown.
    let d = s.call(
        "vm_create_from_template",
        json!({"namespace": "vms", "template_name": "fedora"}),
    );
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::Arguments));
    // A DataVolume without a size: unknown, denied before anything counts.
    let unsized_dv = "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: u, namespace: other}\nspec: {source: {blank: {}}}\n";
    assert_eq!(apply(unsized_dv).reason, Reason::Arguments);
}

#[test]
fn re_applying_an_existing_vm_counts_only_what_it_grows_by() {
    let mut s = Sidecar::new(VM_BUDGETS);
    let vm = |cores: u32, disk: &str| {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: v, namespace: vms}}\nspec:\n  runStrategy: Halted\n  template: {{spec: {{domain: {{cpu: {{cores: {cores}}}, memory: {{guest: 4Gi}}}}}}}}\n  dataVolumeTemplates: [{{metadata: {{name: d}}, spec: {{storage: {{resources: {{requests: {{storage: {disk}}}}}}}}}}}]\n"
        )
    };
    let apply =
        |s: &Sidecar, yaml: &str| s.call("resources_create_or_update", json!({ "resource": yaml }));
    // New: 4 of 5 vCPUs, 40Gi of 100Gi.
    assert_eq!(apply(&s, &vm(4, "40Gi")).effect, Effect::Allowed);
    // The controller now sees the VM.
    let seen = |s: &mut Sidecar, vcpus: u64, disk_gib: u64| {
        let size = Sizes {
            cpu: Some(vcpus * 1000),
            memory: gib(4),
            storage: gib(disk_gib),
        };
        s.view.vms.insert("vms/v".into(), size);
    };
    seen(&mut s, 4, 40);
    // Unchanged, re-applied three times: nothing counts (counted as new, the
    // second would already pass the 5 vCPUs).
    for _ in 0..3 {
        let d = apply(&s, &vm(4, "40Gi"));
        assert_eq!(d.effect, Effect::Allowed, "{d:?}");
    }
    // Grown by 1 vCPU and 20Gi: exactly what is left of the vCPUs.
    assert_eq!(apply(&s, &vm(5, "60Gi")).effect, Effect::Allowed);
    seen(&mut s, 5, 60);
    // Grown again by 1 vCPU: the budget is spent.
    let d = apply(&s, &vm(6, "60Gi"));
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::RateLimit));
    assert!(
        d.message
            .as_deref()
            .unwrap_or("")
            .contains("this call needs 1 vCPU"),
        "{d:?}"
    );
    // A VM the controller does not know is new: counted whole.
    let d = apply(&s, &vm(1, "1Gi").replace("name: v,", "name: w,"));
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::RateLimit));
}

#[test]
fn re_applying_an_existing_disk_counts_only_what_it_grows_by() {
    let mut s = Sidecar::new(VM_BUDGETS);
    let dv = |name: &str, size: &str| {
        format!(
            "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: {name}, namespace: vms}}\nspec: {{storage: {{resources: {{requests: {{storage: {size}}}}}}}}}\n"
        )
    };
    let pvc = |name: &str, size: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: vms}}\nspec: {{resources: {{requests: {{storage: {size}}}}}}}\n"
        )
    };
    let apply =
        |s: &Sidecar, yaml: &str| s.call("resources_create_or_update", json!({ "resource": yaml }));
    // New: 60Gi and 30Gi of the 100Gi.
    assert_eq!(apply(&s, &dv("a", "60Gi")).effect, Effect::Allowed);
    assert_eq!(apply(&s, &pvc("p", "30Gi")).effect, Effect::Allowed);
    // The controller now sees both.
    s.view.disks.insert("vms/a".into(), 60 * 1024);
    s.view.disks.insert("vms/p".into(), 30 * 1024);
    // Unchanged, re-applied three times: nothing counts (counted whole, the
    // first would already pass the 100Gi).
    for _ in 0..3 {
        let d = apply(&s, &format!("{}---\n{}", dv("a", "60Gi"), pvc("p", "30Gi")));
        assert_eq!(d.effect, Effect::Allowed, "{d:?}");
    }
    // The claim grown by 10Gi: exactly what is left.
    assert_eq!(apply(&s, &pvc("p", "40Gi")).effect, Effect::Allowed);
    s.view.disks.insert("vms/p".into(), 40 * 1024);
    // Grown by 1Gi more: the budget is spent, and the denial names the 1Gi.
    let d = apply(&s, &pvc("p", "41Gi"));
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::RateLimit));
    assert!(
        d.message.as_deref().unwrap_or("").contains("needs 1Gi"),
        "{d:?}"
    );
    // A disk the controller does not know is new: counted whole.
    let d = apply(&s, &dv("b", "1Gi"));
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::RateLimit));
}

const RUNNING: &str = r#"
    - name: lifecycle
      tools: [vm_lifecycle]
      action: Allow
    - name: running
      resources: [{group: kubevirt.io, kind: VirtualMachine, verbs: [update, patch, create]}]
      action: Allow
      runningVMs: {max: 3, per: Namespace}
    - name: no-prod-stop
      resources: [{group: kubevirt.io, kind: VirtualMachine, verbs: [update]}]
      action: Deny
      lifecycle:
        actions: [stop, restart]
        vmLabels: {matchLabels: {tier: production}}
      message: production VMs are stopped by people, not agents
"#;

#[test]
fn starts_count_against_the_running_vms_seen_in_the_cluster() {
    let s = Sidecar::new(RUNNING);
    let mut counts = CloneCounts::default();
    counts.running_by_namespace.insert("vms".into(), 2);
    counts.running_total = 2;
    s.in_flight.set_cluster(counts, SystemTime::now());
    let start = |name: &str| {
        s.call(
            "vm_lifecycle",
            json!({"namespace": "vms", "name": name, "action": "start"}),
        )
    };
    assert_eq!(start("a").effect, Effect::Allowed);
    let d = start("b");
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::InFlight));
    assert!(d.message.unwrap().contains("3 running VMs per namespace"));
    // Stopping or pausing starts nothing.
    assert_eq!(s.lifecycle("scratch", "stop").effect, Effect::Allowed);
    assert_eq!(
        s.in_flight
            .running(spec::InFlightScope::Namespace, "vms", SystemTime::now()),
        3
    );
}

/// A VM manifest that starts the VM.
const RUNNING_VM: &str = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: a, namespace: vms}\nspec: {running: true, template: {spec: {domain: {cpu: {cores: 1}, memory: {guest: 1Gi}}}}}\n";

#[test]
fn without_a_current_vmi_watch_starts_under_a_cap_are_refused() {
    let mut s = Sidecar::new(RUNNING);
    s.view.running_current = false;
    // The clone watch vouches for its counts; the VMI watch does not.
    s.in_flight.set_observed(
        CloneCounts::default(),
        SystemTime::now(),
        crate::budget::inflight::Covers {
            clones: true,
            running: false,
        },
    );
    let d = s.call(
        "resources_create_or_update",
        json!({ "resource": RUNNING_VM }),
    );
    assert_eq!(d.effect, Effect::Denied, "{d:?}");
    let message = d.message.unwrap();
    assert!(
        message.contains("cap of 3 running VMs cannot be checked")
            && message.contains("not current"),
        "{message}"
    );
    // Stopping starts nothing, so the cap does not apply.
    assert_eq!(s.lifecycle("scratch", "stop").effect, Effect::Allowed);
    s.view.running_current = true;
    assert_eq!(
        s.call(
            "resources_create_or_update",
            json!({ "resource": RUNNING_VM }),
        )
        .effect,
        Effect::Allowed
    );
}

#[test]
fn production_vms_are_not_stopped_and_unknown_ones_are_not_either() {
    let s = Sidecar::new(RUNNING);
    let act = |name: &str, action: &str| {
        s.call(
            "vm_lifecycle",
            json!({"namespace": "vms", "name": name, "action": action}),
        )
    };
    let d = act("prod-db", "stop");
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::Rule));
    assert!(
        d.message
            .unwrap()
            .contains("production VMs are stopped by people")
    );
    assert_eq!(act("prod-db", "restart").effect, Effect::Denied);
    assert_eq!(act("prod-db", "pause").effect, Effect::Allowed);
    assert_eq!(act("scratch", "stop").effect, Effect::Allowed);
    // Labels unknown: whenUnknown defaults to Deny.
    assert_eq!(act("ghost", "stop").effect, Effect::Denied);
}

#[test]
fn budgets_are_checked_when_compiled() {
    let p = problems(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  rules:
    - name: a
      tools: [x]
      action: Allow
      budgets: [{resource: storage, amount: 1Gi, window: 1h}]
    - name: b
      resources: [{group: kubevirt.io, kind: VirtualMachine}]
      action: Allow
      budgets: [{resource: cpu, amount: lots, window: 1h}, {resource: memory, amount: "0", window: 1h}]
      runningVMs: {max: 5, per: Source}
      lifecycle: {actions: [reboot]}
"#,
    );
    for expected in [
        "spec.rules[0].budgets[0]: size budgets count what a call's objects consume",
        "spec.rules[1].budgets[0].amount: \"lots\" is not a Kubernetes quantity",
        "spec.rules[1].budgets[1].amount: \"0\" admits nothing",
        "spec.rules[1].runningVMs.per: running VMs are counted per Namespace, per Caller or per Cluster",
        "spec.rules[1].lifecycle.actions[0]: \"reboot\" is not one of start, stop, restart, pause, unpause",
    ] {
        assert!(p.contains(expected), "missing {expected:?} in\n{p}");
    }
}

#[test]
fn starting_a_vm_that_already_runs_is_no_new_start() {
    let mut s = Sidecar::new(RUNNING);
    let mut counts = CloneCounts::default();
    counts.running_by_namespace.insert("vms".into(), 3);
    counts.running_total = 3;
    s.in_flight.set_cluster(counts, SystemTime::now());
    s.view.running.insert("vms/a".into());
    let start = |s: &Sidecar, name: &str| {
        s.call(
            "vm_lifecycle",
            json!({"namespace": "vms", "name": name, "action": "start"}),
        )
    };
    // At the cap of 3, starting a stopped VM is refused...
    let d = start(&s, "b");
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::InFlight));
    // ...but starting, or re-applying with `running: true`, the running
    // "a" starts nothing: allowed, and nothing is claimed.
    for _ in 0..3 {
        assert_eq!(start(&s, "a").effect, Effect::Allowed);
        let d = s.call(
            "resources_create_or_update",
            json!({ "resource": RUNNING_VM }),
        );
        assert_eq!(d.effect, Effect::Allowed, "{d:?}");
    }
    assert_eq!(
        s.in_flight
            .running(spec::InFlightScope::Namespace, "vms", SystemTime::now()),
        3
    );
    // Whether "a" runs is known only from a current VMI watch: without one
    // its start is a start again, and refused as uncountable.
    s.view.running_current = false;
    let d = start(&s, "a");
    assert_eq!(d.effect, Effect::Denied, "{d:?}");
    assert!(d.message.unwrap().contains("cannot be checked"));
}

#[test]
fn running_vms_per_caller_count_the_vms_each_caller_started() {
    let s = Sidecar::new(&RUNNING.replace("per: Namespace", "per: Caller"));
    s.in_flight
        .set_cluster(CloneCounts::default(), SystemTime::now());
    s.in_flight.set_running_vms([], SystemTime::now());
    let start = |who: Option<&str>, name: &str| {
        s.call_by(
            who,
            "vm_lifecycle",
            json!({"namespace": "vms", "name": name, "action": "start"}),
            Duration::ZERO,
        )
    };
    // A session is no identity: a new one would be a new caller.
    let d = start(None, "a");
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::Arguments));
    assert!(
        d.message.unwrap().contains("no verified identity"),
        "names the missing identity"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(start(Some("ann"), name).effect, Effect::Allowed);
    }
    let d = start(Some("ann"), "d");
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::InFlight));
    assert!(
        d.message
            .unwrap()
            .contains("3 running VMs per caller (\"ann\")"),
        "names the caller's cap"
    );
    // Bob's cap is his own.
    assert_eq!(start(Some("bob"), "e").effect, Effect::Allowed);
    // Per caller is for running VMs: clones in flight are not attributed.
    let problems = problems(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec:\n  rules:\n    - name: c\n      resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}]\n      action: Allow\n      inFlight: [{max: 1, per: Caller}]\n",
    );
    assert!(
        problems.contains("per Caller is for `runningVMs`"),
        "{problems:?}"
    );
}
