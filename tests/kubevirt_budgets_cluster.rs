//! Size budgets, running-VM caps and lifecycle rules on a real
//! kube-apiserver with the KubeVirt CRDs (no KubeVirt): the controller reads
//! VMs, instancetypes and VMIs from the cluster and pushes what they weigh
//! to the sidecar, which judges real kubernetes-mcp-server calls under
//! examples/kubevirt/budgets.yaml. Shared budgets go through a real
//! redis-server.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, ControllerProc};
use support::*;

const PATIENCE: Duration = Duration::from_secs(30);

/// A VM with one DataVolume template of `disk`, and optional labels.
fn vm(ns: &str, name: &str, disk: &str, labels: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec:\n  runStrategy: Halted\n  dataVolumeTemplates: [{{metadata: {{name: {name}-disk}}, spec: {{storage: {{resources: {{requests: {{storage: {disk}}}}}}}}}}}]\n  template: {{spec: {{domain: {{cpu: {{cores: 1}}, memory: {{guest: 1Gi}}}}, volumes: [{{name: root, dataVolume: {{name: {name}-disk}}}}]}}}}\n"
    )
}

struct Setup {
    ns: String,
    url: String,
    sidecar: TollgateProc,
    /// Sidecars of further pods in front of the same server, with their
    /// token directories.
    more: Vec<(TollgateProc, tempfile::TempDir)>,
    controller: ControllerProc,
    _kms: Proc,
    _token: tempfile::TempDir,
    _policy: tempfile::TempDir,
}

/// The example policy (with the vCPU budget at 11 and the running cap at 2,
/// to reach them in a few calls) enforced by a managed sidecar.
async fn setup(cluster: &'static Cluster, prefix: &str) -> Setup {
    setup_with(cluster, prefix, &[]).await
}

/// [`setup`], with further `(from, to)` edits of the example.
async fn setup_with(cluster: &'static Cluster, prefix: &str, edits: &[(&str, &str)]) -> Setup {
    setup_pods(cluster, prefix, edits, 1, &[]).await
}

/// [`setup_with`], with `pods` sidecars (each its own pod) started with
/// `flags` in front of one kubernetes-mcp-server.
async fn setup_pods(
    cluster: &'static Cluster,
    prefix: &str,
    edits: &[(&str, &str)],
    pods: usize,
    flags: &[&str],
) -> Setup {
    cluster.kubevirt_crds();
    let ns = cluster.namespace(prefix);
    let (kms, kms_port) = cluster.kubernetes_mcp_server();
    let controller = ControllerProc::start(cluster, &ns, "c1");
    let mut sidecars = (0..pods).map(|i| {
        controller.managed_sidecar(
            cluster,
            &ns,
            &format!("kms-{i}"),
            &[("app.kubernetes.io/name", "kubernetes-mcp-server")],
            &format!("http://127.0.0.1:{kms_port}"),
            flags,
        )
    });
    let (sidecar, token) = sidecars.next().expect("at least one pod");
    let more: Vec<_> = sidecars.collect();
    let (policy, path) = example_with(
        "examples/kubevirt/budgets.yaml",
        "amount: \"64\"",
        "amount: \"11\"",
    );
    let mut text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("{max: 10, per: Namespace}", "{max: 2, per: Namespace}");
    for (from, to) in edits {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} once in the example"
        );
        text = text.replace(from, to);
    }
    cluster
        .kubectl_stdin(&["-n", &ns, "apply", "-f", "-"], Some(&text))
        .unwrap();
    assert!(
        eventually(
            PATIENCE,
            async || cluster.policy(&ns, "kubevirt-budgets")["status"]["synced"]
                == format!("{pods}/{pods}")
        )
        .await,
        "the sidecars never enforced the policy"
    );
    Setup {
        url: format!("http://{}/mcp", sidecar.listen),
        ns,
        sidecar,
        more,
        controller,
        _kms: kms,
        _token: token,
        _policy: policy,
    }
}

fn call(url: &str, tool: &str, args: Value) -> Answer {
    Answer::of_result(&agent(url, &["call", tool, &args.to_string()])[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_of_a_big_source_are_refused_before_small_ones_and_instancetypes_count() {
    let cluster = Cluster::get();
    let s = setup(cluster, "sizes").await;
    let ns = &s.ns;
    cluster.apply(&vm(ns, "db", "400Gi", "")).unwrap();
    cluster.apply(&vm(ns, "tiny", "19Gi", "")).unwrap();
    cluster
        .apply("apiVersion: instancetype.kubevirt.io/v1beta1\nkind: VirtualMachineClusterInstancetype\nmetadata: {name: sizes-test.large}\nspec: {cpu: {guest: 2}, memory: {guest: 8Gi}}\n")
        .unwrap();
    let clone = |source: &str, target: &str| {
        call(
            &s.url,
            "vm_clone",
            json!({"namespace": ns, "name": source, "targetName": target}),
        )
    };
    // Until the controller has pushed the VM's size, the clone is refused
    // as unknown (whenUnknown: Deny), never counted as zero.
    let mut first = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            first = clone("db", "db-copy-1");
            first.reason() != Some("arguments")
        })
        .await,
        "the source VM's size never reached the sidecar: {first:?}"
    );
    assert!(first.is_allowed(), "{first:?}");
    // 400Gi of 500Gi spent: another clone of db does not fit.
    let big = clone("db", "db-copy-2");
    assert_eq!(big.reason(), Some("rate_limit"), "{big:?}");
    assert!(
        big.text().contains("this call needs 400Gi of storage; 100Gi of the budget of 500Gi of storage per 1h per namespace remain"),
        "{big:?}"
    );
    // Five clones of the 19Gi VM still fit into the 100Gi left, the sixth
    // does not.
    for i in 0..5 {
        let a = clone("tiny", &format!("tiny-copy-{i}"));
        assert!(a.is_allowed(), "{a:?}");
    }
    assert_eq!(clone("tiny", "tiny-copy-5").reason(), Some("rate_limit"));
    let made = cluster.get_json(&["-n", ns, "virtualmachineclones.clone.kubevirt.io"])["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(made, 6, "exactly the admitted clones exist");

    // The six clones drew their sources' vCPUs too (6 of 11). vm_create
    // with an instancetype counts at the instancetype's 2 vCPU (from the
    // cluster): two more fit, the third does not.
    let create = |name: &str| {
        call(
            &s.url,
            "vm_create",
            json!({"namespace": ns, "name": name, "instancetype": "sizes-test.large", "workload": "quay.io/containerdisks/fedora:latest", "storage": "1Gi"}),
        )
    };
    let mut created = create("new-0");
    assert!(
        eventually(PATIENCE, async || {
            if created.reason() == Some("arguments") {
                created = create("new-0");
            }
            created.reason() != Some("arguments")
        })
        .await,
        "the instancetype never reached the sidecar: {created:?}"
    );
    assert!(!created.is_denied(), "{created:?}");
    assert!(!create("new-1").is_denied());
    let third = create("new-2");
    assert_eq!(third.reason(), Some("rate_limit"), "{third:?}");
    assert!(
        third.text().contains("this call needs 2 vCPU of cpu; 1 vCPU of the budget of 11 vCPU of cpu per 1h per namespace remain"),
        "{third:?}"
    );
    // 400 + 5 x 19 + 2 x 1 Gi of 500Gi spent, 3Gi left; 10 of 11 vCPUs.
    let m = metrics(s.sidecar.admin).await;
    let gib = f64::from(1u32 << 30);
    let of = |name: &str, resource: &str| {
        sample(
            &m,
            &[
                name,
                "kubevirt-budgets/budgets/",
                &format!("resource=\"{resource}\""),
            ],
        )
    };
    assert_eq!(of("tollgate_budget_remaining{", "storage"), Some(3.0 * gib));
    assert_eq!(
        of("tollgate_budget_consumed_total{", "storage"),
        Some(497.0 * gib)
    );
    assert_eq!(of("tollgate_budget_consumed_total{", "cpu"), Some(10.0));
    assert_eq!(of("tollgate_budget_remaining{", "cpu"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_vms_are_counted_from_vmis_and_production_vms_are_not_stopped() {
    let cluster = Cluster::get();
    let mut s = setup(cluster, "running").await;
    let ns = &s.ns.clone();
    cluster
        .apply(&vm(ns, "prod-db", "10Gi", "tier: production"))
        .unwrap();
    cluster.apply(&vm(ns, "scratch", "10Gi", "")).unwrap();
    let vmi = |name: &str| {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{}}\n"
        )
    };
    cluster.apply(&vmi("running-a")).unwrap();
    cluster.apply(&vmi("running-b")).unwrap();
    let lifecycle = |name: &str, action: &str| {
        call(
            &s.url,
            "vm_lifecycle",
            json!({"namespace": ns, "name": name, "action": action}),
        )
    };

    // Two VMIs run and the cap is 2: a start is refused once the
    // controller's count is in (before it, a start cannot be counted and is
    // refused as such, reason `arguments`).
    let mut refused = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            refused = lifecycle("scratch", "start");
            refused.reason() == Some("in_flight")
        })
        .await,
        "starts were never refused: {refused:?}"
    );
    assert!(
        refused
            .text()
            .contains("the cap of 2 running VMs per namespace"),
        "{refused:?}"
    );
    // The VMIs go away: a start fits again.
    cluster
        .kubectl(&[
            "-n",
            ns,
            "delete",
            "virtualmachineinstance",
            "running-a",
            "running-b",
        ])
        .unwrap();
    assert!(
        eventually(PATIENCE, async || lifecycle("scratch", "start")
            .is_allowed())
        .await,
        "deleted VMIs never freed the cap"
    );

    // Stopping a production VM is refused by label; a scratch VM is not
    // (once its labels are known: until then it counts as production).
    assert!(
        eventually(PATIENCE, async || !lifecycle("scratch", "stop").is_denied()).await,
        "the scratch VM's labels never reached the sidecar"
    );
    let stop = lifecycle("prod-db", "stop");
    assert_eq!(stop.reason(), Some("rule"), "{stop:?}");
    assert!(stop.text().contains("ask a person"), "{stop:?}");
    assert_eq!(lifecycle("prod-db", "restart").reason(), Some("rule"));
    assert!(!lifecycle("prod-db", "pause").is_denied());
    // A VM the controller never saw is treated as production.
    assert_eq!(lifecycle("ghost", "stop").reason(), Some("rule"));

    // The controller goes away: its running count grows stale, and a start
    // under the cap fails closed instead of trusting it.
    s.controller.proc.terminate();
    let probe = probe_start(ns);
    let mut stale = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            stale = ask_sidecar(&s, "resources_create_or_update", json!({"resource": probe})).await;
            stale.reason() == Some("arguments")
        })
        .await,
        "a stale running count was trusted: {stale:?}"
    );
    assert!(
        stale.text().contains(
            "the cap of 2 running VMs cannot be checked: the controller's count of running VMs (VirtualMachineInstances) is not current"
        ),
        "{stale:?}"
    );
}

/// A VM manifest that starts a VM whose 600Gi disk no budget of 500Gi
/// admits: with room under the running cap it is refused by the budget
/// (`rate_limit`, its running claim taken back), with the cap full by the
/// cap (`in_flight`), without a current count as uncountable
/// (`arguments`) — never forwarded, never spent.
fn probe_start(ns: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: probe, namespace: {ns}}}\nspec:\n  runStrategy: Always\n  dataVolumeTemplates: [{{metadata: {{name: probe-disk}}, spec: {{storage: {{resources: {{requests: {{storage: 600Gi}}}}}}}}}}]\n  template: {{spec: {{domain: {{cpu: {{cores: 1}}, memory: {{guest: 1Gi}}}}, volumes: [{{name: root, dataVolume: {{name: probe-disk}}}}]}}}}\n"
    )
}

/// Asks the sidecar directly (no MCP session: what is measured here is
/// decided by the sidecar itself, never forwarded).
async fn ask_sidecar(s: &Setup, tool: &str, args: Value) -> Answer {
    ask(s.sidecar.listen, &[], fresh_id(), tool, args).await
}

/// Runs `change` (a kubectl call), then polls the sidecar's decision every
/// 10 ms until `changed` holds (at most 10 s). Returns the time from
/// kubectl's return to the changed decision.
async fn time_until(
    what: &str,
    change: impl FnOnce(),
    mut changed: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = std::time::Instant::now();
    change();
    let stored = started.elapsed();
    let seen = std::time::Instant::now();
    let mut observed = false;
    while seen.elapsed() < Duration::from_secs(10) {
        if changed().await {
            observed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = seen.elapsed();
    assert!(observed, "{what}: the sidecar's decision never changed");
    eprintln!(
        "view latency: {what}: decision changed {} ms after kubectl returned (kubectl took {} ms)",
        after.as_millis(),
        stored.as_millis()
    );
    after
}

/// Creates an object, then deletes it, timing each until the sidecar's
/// decision (`probe`'s reason) goes from `reasons[0]` (absent) to
/// `reasons[1]` (present) and back.
async fn both_ways(
    what: &str,
    create: impl FnOnce(),
    delete: impl FnOnce(),
    probe: impl AsyncFn() -> Option<String>,
    reasons: [&str; 2],
) -> Vec<Duration> {
    let [absent, present] = reasons.map(|r| Some(r.to_owned()));
    assert_eq!(probe().await, absent, "{what}: before");
    let created = time_until(&format!("{what} created"), create, async || {
        probe().await == present
    })
    .await;
    let deleted = time_until(&format!("{what} deleted"), delete, async || {
        probe().await == absent
    })
    .await;
    vec![created, deleted]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sidecars_view_follows_vmis_instancetypes_and_source_vms() {
    let cluster = Cluster::get();
    let s = setup(cluster, "latency").await;
    let ns = s.ns.clone();
    let vmi = |name: &str| {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{}}\n"
        )
    };
    cluster.apply(&vmi("run-a")).unwrap();

    // Running VMs, by a probe that starts a VM (see `probe_start`).
    let probe_vm = probe_start(&ns);
    let start_probe = async || {
        ask_sidecar(
            &s,
            "resources_create_or_update",
            json!({"resource": probe_vm}),
        )
        .await
    };
    let mut first = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            first = start_probe().await;
            first.reason() == Some("rate_limit")
        })
        .await,
        "the running count never became current: {first:?}"
    );
    let reason = |a: Answer| a.reason().map(str::to_owned);
    let mut latencies = both_ways(
        "VMI",
        || {
            cluster.apply(&vmi("run-b")).unwrap();
        },
        || {
            cluster
                .kubectl(&["-n", &ns, "delete", "virtualmachineinstance", "run-b"])
                .unwrap();
        },
        async || reason(start_probe().await),
        ["rate_limit", "in_flight"],
    )
    .await;

    // Instancetypes. vm_create with an instancetype of 16 vCPUs, more than
    // the budget of 11: unknown (`arguments`) until the sidecar has it, then
    // refused by the budget (`rate_limit`).
    let it = format!("{ns}.huge");
    let create = async || {
        ask_sidecar(
            &s,
            "vm_create",
            json!({"namespace": ns, "name": "big", "instancetype": it, "workload": "fedora"}),
        )
        .await
    };
    latencies.extend(
        both_ways(
            "instancetype",
            || {
                cluster
                    .apply(&format!("apiVersion: instancetype.kubevirt.io/v1beta1\nkind: VirtualMachineClusterInstancetype\nmetadata: {{name: {it}}}\nspec: {{cpu: {{guest: 16}}, memory: {{guest: 8Gi}}}}\n"))
                    .unwrap();
            },
            || {
                cluster
                    .kubectl(&["delete", "virtualmachineclusterinstancetype", &it])
                    .unwrap();
            },
            async || reason(create().await),
            ["arguments", "rate_limit"],
        )
        .await,
    );

    // Source VMs. A clone of a 600Gi VM: unknown until the sidecar has
    // the VM, then more than the budget.
    let clone = async || {
        ask_sidecar(
            &s,
            "vm_clone",
            json!({"namespace": ns, "name": "big-src", "targetName": "copy"}),
        )
        .await
    };
    latencies.extend(
        both_ways(
            "source VM",
            || {
                cluster.apply(&vm(&ns, "big-src", "600Gi", "")).unwrap();
            },
            || {
                cluster
                    .kubectl(&["-n", &ns, "delete", "virtualmachine", "big-src"])
                    .unwrap();
            },
            async || reason(clone().await),
            ["arguments", "rate_limit"],
        )
        .await,
    );
    let worst = latencies.iter().max().unwrap();
    eprintln!(
        "view latency: worst {} ms over {} changes",
        worst.as_millis(),
        latencies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_applied_vm_counts_only_what_it_grows_by() {
    let cluster = Cluster::get();
    let s = setup(cluster, "reapply").await;
    let ns = &s.ns;
    let manifest = |name: &str, cores: u32| {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  runStrategy: Halted\n  template: {{spec: {{domain: {{cpu: {{cores: {cores}}}, memory: {{guest: 1Gi}}}}, volumes: [{{name: boot, containerDisk: {{image: fedora}}}}]}}}}\n"
        )
    };
    let apply = |name: &str, cores: u32| {
        call(
            &s.url,
            "resources_create_or_update",
            json!({"resource": manifest(name, cores)}),
        )
    };
    let cpu_spent = async || {
        sample(
            &metrics(s.sidecar.admin).await,
            &[
                "tollgate_budget_consumed_total{",
                "kubevirt-budgets/budgets/",
                "resource=\"cpu\"",
            ],
        )
    };
    // New: 4 of the 11 vCPUs.
    let first = apply("grow", 4);
    assert!(first.is_allowed(), "{first:?}");
    assert_eq!(cpu_spent().await, Some(4.0));
    // Once the controller has pushed the VM (its labels travel with its
    // size: a stop is allowed once they are known)...
    assert!(
        eventually(PATIENCE, async || !call(
            &s.url,
            "vm_lifecycle",
            json!({"namespace": ns, "name": "grow", "action": "stop"})
        )
        .is_denied())
        .await,
        "the VM never reached the sidecar"
    );
    // ... re-applying it unchanged is an update that consumes nothing (as
    // new, the second re-apply would pass the 11 vCPUs).
    for _ in 0..3 {
        let again = apply("grow", 4);
        assert!(again.is_allowed(), "{again:?}");
    }
    assert_eq!(cpu_spent().await, Some(4.0));
    // Growing it by 3 vCPUs consumes 3.
    let grown = apply("grow", 7);
    assert!(grown.is_allowed(), "{grown:?}");
    assert_eq!(cpu_spent().await, Some(7.0));
    // A new VM counts whole: 5 vCPUs do not fit into the 4 left.
    let other = apply("other", 5);
    assert_eq!(other.reason(), Some("rate_limit"), "{other:?}");
    assert!(
        other
            .text()
            .contains("this call needs 5 vCPU of cpu; 4 vCPU of the budget of 11 vCPU"),
        "{other:?}"
    );
    let cores = cluster.get_json(&["-n", ns, "virtualmachine", "grow"])["spec"]["template"]["spec"]
        ["domain"]["cpu"]["cores"]
        .clone();
    assert_eq!(cores, 7, "the updates reached the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_applied_disk_draws_its_growth_and_a_running_vm_starts_nothing() {
    let cluster = Cluster::get();
    let s = setup(cluster, "again").await;
    let ns = &s.ns;
    let gib = |n: f64| n * 1024.0 * 1024.0 * 1024.0;
    let data_volume = |size: &str| {
        format!(
            "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: data, namespace: {ns}}}\nspec: {{source: {{blank: {{}}}}, storage: {{resources: {{requests: {{storage: {size}}}}}}}}}\n"
        )
    };
    let apply = |yaml: String| {
        call(
            &s.url,
            "resources_create_or_update",
            json!({"resource": yaml}),
        )
    };
    let storage_spent = async || {
        sample(
            &metrics(s.sidecar.admin).await,
            &[
                "tollgate_budget_consumed_total{",
                "kubevirt-budgets/budgets/",
                "resource=\"storage\"",
            ],
        )
    };

    // A new DataVolume draws its 300Gi of the 500Gi.
    let first = apply(data_volume("300Gi"));
    assert!(first.is_allowed(), "{first:?}");
    assert_eq!(storage_spent().await, Some(gib(300.0)));
    // Re-applied unchanged it is an update: once the controller has pushed
    // its size it draws nothing (drawn whole, 600Gi would not fit, which is
    // what the sidecar answers until then, spending nothing).
    assert!(
        eventually(PATIENCE, async || apply(data_volume("300Gi")).is_allowed()).await,
        "the DataVolume's size never reached the sidecar"
    );
    assert!(apply(data_volume("300Gi")).is_allowed());
    assert_eq!(storage_spent().await, Some(gib(300.0)));
    // Grown to 350Gi, it draws the 50Gi.
    assert!(
        eventually(PATIENCE, async || apply(data_volume("350Gi")).is_allowed()).await,
        "a grown DataVolume never passed"
    );
    assert_eq!(storage_spent().await, Some(gib(350.0)));
    let stored = cluster.get_json(&["-n", ns, "datavolume", "data"])["spec"]["storage"]["resources"]
        ["requests"]["storage"]
        .clone();
    assert_eq!(stored, "350Gi", "the updates reached the cluster");

    // Two VMIs run and the cap is 2: a start of a stopped VM is refused,
    // while starting "live" — it runs — starts nothing and passes, by name
    // or by re-applying it with `runStrategy: Always`.
    let live = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: live, namespace: {ns}}}\nspec:\n  runStrategy: Always\n  template: {{spec: {{domain: {{cpu: {{cores: 1}}, memory: {{guest: 1Gi}}}}, volumes: [{{name: boot, containerDisk: {{image: fedora}}}}]}}}}\n"
    );
    cluster.apply(&live).unwrap();
    cluster.apply(&vm(ns, "scratch", "10Gi", "")).unwrap();
    for name in ["live", "other"] {
        cluster
            .apply(&format!(
                "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{}}\n"
            ))
            .unwrap();
    }
    let start = |name: &str| {
        call(
            &s.url,
            "vm_lifecycle",
            json!({"namespace": ns, "name": name, "action": "start"}),
        )
    };
    let mut refused = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            refused = start("scratch");
            refused.reason() == Some("in_flight")
        })
        .await,
        "the cap was never reached: {refused:?}"
    );
    assert!(
        eventually(PATIENCE, async || start("live").is_allowed()).await,
        "starting a running VM was counted as a start"
    );
    for _ in 0..3 {
        let again = start("live");
        assert!(again.is_allowed(), "{again:?}");
        let applied = apply(live.clone());
        assert!(applied.is_allowed(), "{applied:?}");
    }
    // None of those took a place under the cap.
    let still = start("scratch");
    assert_eq!(still.reason(), Some("in_flight"), "{still:?}");
}

/// The controller re-publishes its state every 2 s; unchanged, it goes to
/// the sidecar as a re-observation of a few hundred bytes, not the whole
/// state again. That must keep the running count current: past the 10 s a
/// count is trusted without news, a start is still counted, not refused as
/// uncountable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_state_keeps_the_running_count_current() {
    let cluster = Cluster::get();
    let s = setup(cluster, "fresh").await;
    let ns = &s.ns;
    cluster.apply(&vm(ns, "quiet", "1Gi", "")).unwrap();
    let start = || {
        call(
            &s.url,
            "vm_lifecycle",
            json!({"namespace": ns, "name": "quiet", "action": "start"}),
        )
    };
    assert!(
        eventually(PATIENCE, async || start().is_allowed()).await,
        "the running count never became current"
    );
    // Nothing changes in the cluster for longer than a count is trusted
    // without news (the admitted start settles meanwhile).
    tokio::time::sleep(Duration::from_secs(13)).await;
    let still = start();
    assert!(
        still.is_allowed(),
        "a quiet cluster's count went stale: {still:?}"
    );
}

/// `runningVMs: {per: Caller}`: each caller, identified by its
/// ServiceAccount token (TokenReview), may run its own number of VMs —
/// those it was let start that still have a VirtualMachineInstance. The test
/// stands in for KubeVirt by creating and deleting the VMIs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_vms_per_caller_count_what_each_caller_started() {
    let cluster = Cluster::get();
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_owned();
    let s = setup_pods(
        cluster,
        "percaller",
        &[("{max: 2, per: Namespace}", "{max: 2, per: Caller}")],
        1,
        &[
            "--identity",
            "kubernetes",
            "--token-audience",
            "tollgate-agents",
            "--kubeconfig",
            &kubeconfig,
        ],
    )
    .await;
    let ns = &s.ns;
    // kubernetes-mcp-server acts with the caller's bearer token: the agents
    // may start VMs in this namespace, and their tokens are for tollgate
    // and the apiserver both.
    cluster
        .kubectl(&[
            "-n",
            ns,
            "create",
            "role",
            "vm-starter",
            "--verb=get,list,patch,update",
            "--resource=virtualmachines.kubevirt.io",
        ])
        .unwrap();
    for sa in ["agent-a", "agent-b"] {
        cluster
            .kubectl(&["-n", ns, "create", "serviceaccount", sa])
            .unwrap();
        cluster
            .kubectl(&[
                "-n",
                ns,
                "create",
                "rolebinding",
                sa,
                "--role=vm-starter",
                &format!("--serviceaccount={ns}:{sa}"),
            ])
            .unwrap();
    }
    let header = |sa: &str| {
        let token = cluster
            .kubectl(&[
                "-n",
                ns,
                "create",
                "token",
                sa,
                "--audience",
                "tollgate-agents",
                "--audience",
                "https://kubernetes.default.svc.cluster.local",
                "--duration",
                "1h",
            ])
            .unwrap();
        format!("Authorization: Bearer {}", token.trim())
    };
    let (a, b) = (header("agent-a"), header("agent-b"));
    for i in 1..=4 {
        cluster
            .apply(&vm(ns, &format!("vm-{i}"), "1Gi", ""))
            .unwrap();
    }
    let start = |auth: &str, name: &str| {
        let args = json!({"namespace": ns, "name": name, "action": "start"}).to_string();
        let mut flags = vec![];
        if !auth.is_empty() {
            flags.extend(["--header", auth]);
        }
        flags.extend(["call", "vm_lifecycle", &args]);
        Answer::of_result(&agent(&s.url, &flags)[0])
    };
    let vmi = |name: &str| {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{}}\n"
        )
    };

    // Without an identity a caller cannot be counted: refused, saying so.
    let mut anonymous = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            anonymous = start("", "vm-1");
            anonymous.text().contains("no verified identity")
        })
        .await,
        "{anonymous:?}"
    );
    // agent-a starts two VMs (once the controller's running view is
    // current); KubeVirt would make their VMIs.
    let mut first = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            first = start(&a, "vm-1");
            first.is_allowed()
        })
        .await,
        "agent-a's first start never passed: {first:?}"
    );
    let second = start(&a, "vm-2");
    assert!(second.is_allowed(), "{second:?}");
    cluster.apply(&vmi("vm-1")).unwrap();
    cluster.apply(&vmi("vm-2")).unwrap();
    // A third is over agent-a's cap; agent-b has a cap of its own.
    let third = start(&a, "vm-3");
    assert_eq!(third.reason(), Some("in_flight"), "{third:?}");
    assert!(
        third.text().contains(&format!(
            "2 running VMs per caller (\"system:serviceaccount:{ns}:agent-a\")"
        )),
        "{third:?}"
    );
    let other = start(&b, "vm-3");
    assert!(other.is_allowed(), "{other:?}");
    // vm-1 stops: once the controller has seen it go, agent-a may start
    // another.
    cluster
        .kubectl(&["-n", ns, "delete", "virtualmachineinstance", "vm-1"])
        .unwrap();
    assert!(
        eventually(PATIENCE, async || start(&a, "vm-4").is_allowed()).await,
        "a stopped VM never freed its caller's cap"
    );
    let again = start(&a, "vm-1");
    assert_eq!(again.reason(), Some("in_flight"), "{again:?}");
}

/// A `scope: Shared` storage budget is one budget for two pods' sidecars
/// (through real redis-server), in front of the real kubernetes-mcp-server:
/// what one admits, the other cannot, and what is refused never reaches the
/// cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_storage_budget_spans_two_pods_sidecars() {
    let cluster = Cluster::get();
    let redis = support::redis::Redis::start();
    let s = setup_pods(
        cluster,
        "shared",
        &[(
            "{resource: storage, amount: 500Gi, window: 1h,",
            "{resource: storage, amount: 500Gi, window: 1h, scope: Shared,",
        )],
        2,
        &["--redis-url", &redis.url()],
    )
    .await;
    let ns = &s.ns;
    let urls = [s.url.clone(), format!("http://{}/mcp", s.more[0].0.listen)];
    let create = |via: usize, name: &str, size: &str| {
        call(
            &urls[via],
            "resources_create_or_update",
            json!({"resource": format!(
                "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{source: {{blank: {{}}}}, storage: {{resources: {{requests: {{storage: {size}}}}}}}}}\n"
            )}),
        )
    };
    let first = create(0, "one", "300Gi");
    assert!(first.is_allowed(), "{first:?}");
    let refused = create(1, "two", "300Gi");
    assert_eq!(refused.reason(), Some("rate_limit"), "{refused:?}");
    assert!(
        refused.text().contains(
            "this call needs 300Gi of storage; 200Gi of the budget of 500Gi of storage per 1h per namespace remain"
        ),
        "{refused:?}"
    );
    let rest = create(1, "three", "200Gi");
    assert!(rest.is_allowed(), "{rest:?}");
    assert_eq!(create(0, "four", "1Gi").reason(), Some("rate_limit"));
    let names = cluster
        .kubectl(&["-n", ns, "get", "datavolumes", "-o", "name"])
        .unwrap();
    let mut names: Vec<_> = names.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "datavolume.cdi.kubevirt.io/one",
            "datavolume.cdi.kubevirt.io/three"
        ],
        "only what was admitted reached the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_clone_passes_once_the_window_slides() {
    let cluster = Cluster::get();
    let s = setup_with(
        cluster,
        "refill",
        &[(
            "{resource: storage, amount: 500Gi, window: 1h,",
            "{resource: storage, amount: 500Gi, window: 5s,",
        )],
    )
    .await;
    let ns = &s.ns;
    cluster.apply(&vm(ns, "db", "400Gi", "")).unwrap();
    let clone = |target: &str| {
        call(
            &s.url,
            "vm_clone",
            json!({"namespace": ns, "name": "db", "targetName": target}),
        )
    };
    let mut first = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            first = clone("copy-1");
            first.reason() != Some("arguments")
        })
        .await,
        "the source VM's size never reached the sidecar: {first:?}"
    );
    assert!(first.is_allowed(), "{first:?}");
    // Asked straight away (and directly, a refusal is the sidecar's own):
    // the agent's round trip above must not outlast the window.
    let refused_at = std::time::Instant::now();
    let refused = ask_sidecar(
        &s,
        "vm_clone",
        json!({"namespace": ns, "name": "db", "targetName": "copy-2"}),
    )
    .await;
    assert_eq!(refused.reason(), Some("rate_limit"), "{refused:?}");
    assert!(
        refused
            .text()
            .contains("100Gi of the budget of 500Gi of storage per 5s"),
        "{refused:?}"
    );
    // The same clone passes once the 400Gi leave the 5 s window.
    let mut again = Answer::Other("not yet".into());
    assert!(
        eventually(PATIENCE, async || {
            again = clone("copy-2");
            again.is_allowed()
        })
        .await,
        "the window never slid: {again:?}"
    );
    eprintln!(
        "window refill: the refused clone passed {} ms after its refusal (window 5 s)",
        refused_at.elapsed().as_millis()
    );
    let made = cluster.get_json(&["-n", ns, "virtualmachineclones.clone.kubevirt.io"])["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(made, 2, "exactly the admitted clones exist");
}
