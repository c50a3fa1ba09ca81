//! KubeVirt state the sidecars need and cannot see: how many
//! VirtualMachineClones are in flight (created, not yet `Succeeded` or
//! `Failed`) per namespace, per source VM and overall, and the labels of
//! VirtualMachines (for `clone.sourceLabels`).
//!
//! Watched only when the KubeVirt CRDs exist (checked again every 30 s, so
//! installing KubeVirt later needs no restart). Each change is folded into
//! one [`ClusterReport`] published on a `watch` channel; the push server
//! sends it to every sidecar as a `state` event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use tollgate_policy::resources::sizes::{Demand, Sizes, in_unit, instancetype_sizes, vm_demand};
use tollgate_policy::resources::{CLONE_GROUP, CLONE_KIND, CLONE_RESOURCE, CloneCounts};
use tollgate_policy::snapshot::ClusterReport;
use tollgate_policy::spec::SizeResource;

use crate::cluster_state::ClusterState;
use crate::watch::{Step, Watched};

/// How often the state is re-published without changes.
const REFRESH: Duration = Duration::from_secs(2);

/// Phases after which a clone no longer holds storage snapshots open.
const DONE_PHASES: &[&str] = &["Succeeded", "Failed"];

/// The most objects of one kind kept (VMs, VMIs, instancetypes, disks).
/// Past it, new objects are not remembered: their sizes read as unknown
/// (and size budgets' `whenUnknown` decides), never as zero.
const MAX_OBJECTS: usize = 100_000;

/// The KubeVirt (and storage) kinds followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Clone,
    Vm,
    Vmi,
    Instancetype,
    ClusterInstancetype,
    DataVolume,
    Pvc,
}

/// What is kept of a VM: its labels, what it asks for and which disks it
/// uses.
#[derive(Clone, Debug, Default)]
struct VmSeen {
    labels: BTreeMap<String, String>,
    demand: Demand,
    /// Disks by claim or DataVolume name, with a template's size if the VM
    /// carries one.
    disks: Vec<(String, Option<u64>)>,
    /// A volume the controller cannot size (neither a container disk nor a
    /// claim).
    unknown_disk: bool,
}

#[derive(Default)]
struct Seen {
    /// Whether the clone watch is current (listed, and not re-listing after
    /// it expired); until then sidecars keep counting their own admissions.
    clones_current: Option<watch::Receiver<bool>>,
    /// Whether the VMI watch is current.
    vmis_current: Option<watch::Receiver<bool>>,
    /// `namespace/name` → (in flight, source).
    clones: BTreeMap<String, (bool, Option<String>)>,
    /// `namespace/name` → VM.
    vms: BTreeMap<String, VmSeen>,
    /// `namespace/name` of running VMs (VirtualMachineInstances).
    vmis: BTreeSet<String>,
    /// `namespace/name` → CPU and memory.
    instancetypes: BTreeMap<String, Sizes>,
    /// name → CPU and memory.
    cluster_instancetypes: BTreeMap<String, Sizes>,
    /// `namespace/name` → storage request (MiB) of DataVolumes and PVCs.
    disks: BTreeMap<String, Option<u64>>,
}

fn bounded_insert<V>(map: &mut BTreeMap<String, V>, key: String, value: V) {
    if map.len() < MAX_OBJECTS || map.contains_key(&key) {
        map.insert(key, value);
    }
}

impl Seen {
    fn insert(&mut self, kind: Kind, o: &DynamicObject) {
        let spec = o.data.get("spec").cloned().unwrap_or_default();
        match kind {
            Kind::Clone => bounded_insert(&mut self.clones, key(o), clone_entry(o)),
            Kind::Vm => bounded_insert(&mut self.vms, key(o), vm_entry(o, &spec)),
            Kind::Vmi => {
                if vmi_done(o) {
                    self.vmis.remove(&key(o));
                } else if self.vmis.len() < MAX_OBJECTS {
                    self.vmis.insert(key(o));
                }
            }
            Kind::Instancetype => {
                bounded_insert(&mut self.instancetypes, key(o), instancetype_sizes(&spec))
            }
            Kind::ClusterInstancetype => bounded_insert(
                &mut self.cluster_instancetypes,
                o.name_any(),
                instancetype_sizes(&spec),
            ),
            Kind::DataVolume | Kind::Pvc => {
                let size = if kind == Kind::Pvc {
                    spec.pointer("/resources/requests/storage")
                } else {
                    spec.pointer("/storage/resources/requests/storage")
                        .or_else(|| spec.pointer("/pvc/resources/requests/storage"))
                }
                .and_then(|q| q.as_str())
                .and_then(|q| in_unit(SizeResource::Storage, q).ok());
                // A DataVolume and its PVC share a name: keep whichever says.
                let entry = self.disks.get(&key(o)).copied().flatten();
                bounded_insert(&mut self.disks, key(o), size.or(entry));
            }
        }
    }

    fn remove(&mut self, kind: Kind, o: &DynamicObject) {
        let k = key(o);
        match kind {
            Kind::Clone => drop(self.clones.remove(&k)),
            Kind::Vm => drop(self.vms.remove(&k)),
            Kind::Vmi => drop(self.vmis.remove(&k)),
            Kind::Instancetype => drop(self.instancetypes.remove(&k)),
            Kind::ClusterInstancetype => drop(self.cluster_instancetypes.remove(&o.name_any())),
            Kind::DataVolume | Kind::Pvc => drop(self.disks.remove(&k)),
        }
    }

    fn clear(&mut self, kind: Kind) {
        match kind {
            Kind::Clone => self.clones.clear(),
            Kind::Vm => self.vms.clear(),
            Kind::Vmi => self.vmis.clear(),
            Kind::Instancetype => self.instancetypes.clear(),
            Kind::ClusterInstancetype => self.cluster_instancetypes.clear(),
            Kind::DataVolume | Kind::Pvc => self.disks.clear(),
        }
    }

    /// What a VM consumes, as a clone of it would: CPU and memory from its
    /// template or instancetype, storage from its disks.
    fn vm_size(&self, key: &str, vm: &VmSeen) -> Sizes {
        let ns = key.split_once('/').map_or("", |(ns, _)| ns);
        let mut out = vm.demand.own;
        if let Some(it) = &vm.demand.instancetype {
            let found = if it.cluster {
                self.cluster_instancetypes.get(&it.name)
            } else {
                self.instancetypes.get(&format!("{ns}/{}", it.name))
            };
            out.cpu = found.and_then(|s| s.cpu);
            out.memory = found.and_then(|s| s.memory);
        }
        out.storage = if vm.unknown_disk {
            None
        } else {
            vm.disks.iter().try_fold(0u64, |sum, (name, template)| {
                let size = self
                    .disks
                    .get(&format!("{ns}/{name}"))
                    .copied()
                    .flatten()
                    .or(*template)?;
                sum.checked_add(size)
            })
        };
        out
    }

    fn state(&self) -> ClusterReport {
        let mut counts = CloneCounts::default();
        for (key, (in_flight, source)) in &self.clones {
            if !in_flight {
                continue;
            }
            let ns = key.split_once('/').map_or("", |(ns, _)| ns);
            *counts.by_namespace.entry(ns.to_owned()).or_default() += 1;
            if let Some(source) = source {
                *counts
                    .by_source
                    .entry(format!("{ns}/{source}"))
                    .or_default() += 1;
            }
            counts.total += 1;
        }
        for key in &self.vmis {
            let ns = key.split_once('/').map_or("", |(ns, _)| ns);
            *counts
                .running_by_namespace
                .entry(ns.to_owned())
                .or_default() += 1;
            counts.running_total += 1;
        }
        let current = |r: &Option<watch::Receiver<bool>>| r.as_ref().is_some_and(|r| *r.borrow());
        ClusterReport {
            clones_observed: current(&self.clones_current),
            vmis_observed: current(&self.vmis_current),
            clones: counts,
            vms: self
                .vms
                .iter()
                .map(|(k, v)| (k.clone(), v.labels.clone()))
                .collect(),
            vm_sizes: self
                .vms
                .iter()
                .map(|(k, v)| (k.clone(), self.vm_size(k, v)))
                .collect(),
            instancetypes: self.instancetypes.clone(),
            cluster_instancetypes: self.cluster_instancetypes.clone(),
            running_vms: self.vmis.clone(),
            disk_sizes: self
                .disks
                .iter()
                .filter_map(|(k, size)| Some((k.clone(), (*size)?)))
                .collect(),
            observed_at: Timestamp::now().to_string(),
        }
    }
}

fn key(o: &DynamicObject) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

fn clone_entry(o: &DynamicObject) -> (bool, Option<String>) {
    let phase = o
        .data
        .pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or("");
    let source = o
        .data
        .pointer("/spec/source/name")
        .and_then(|s| s.as_str())
        .map(str::to_owned);
    (!DONE_PHASES.contains(&phase), source)
}

/// A VMI that has stopped running.
fn vmi_done(o: &DynamicObject) -> bool {
    matches!(
        o.data.pointer("/status/phase").and_then(|p| p.as_str()),
        Some("Succeeded" | "Failed")
    )
}

fn vm_entry(o: &DynamicObject, spec: &serde_json::Value) -> VmSeen {
    let templates: BTreeMap<String, Option<u64>> = spec
        .get("dataVolumeTemplates")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let name = t.pointer("/metadata/name")?.as_str()?.to_owned();
            let size = t
                .pointer("/spec/storage/resources/requests/storage")
                .or_else(|| t.pointer("/spec/pvc/resources/requests/storage"))
                .and_then(|q| q.as_str())
                .and_then(|q| in_unit(SizeResource::Storage, q).ok());
            Some((name, size))
        })
        .collect();
    let mut disks = Vec::new();
    let mut unknown_disk = false;
    for v in spec
        .pointer("/template/spec/volumes")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let claim = v
            .pointer("/persistentVolumeClaim/claimName")
            .or_else(|| v.pointer("/dataVolume/name"))
            .and_then(|n| n.as_str());
        match claim {
            Some(name) => disks.push((name.to_owned(), templates.get(name).copied().flatten())),
            // Container disks, cloud-init, config maps: no new storage.
            None if v.get("containerDisk").is_some()
                || v.get("cloudInitNoCloud").is_some()
                || v.get("cloudInitConfigDrive").is_some()
                || v.get("configMap").is_some()
                || v.get("secret").is_some()
                || v.get("serviceAccount").is_some()
                || v.get("emptyDisk").is_some() => {}
            None => unknown_disk = true,
        }
    }
    VmSeen {
        labels: o.labels().clone(),
        demand: vm_demand(spec),
        disks,
        unknown_disk,
    }
}

/// Publishes the cluster state until `shutdown`.
pub(crate) async fn run(
    client: Client,
    namespace: Option<String>,
    tx: watch::Sender<Arc<ClusterState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (changed, mut changes) = watch::channel(0u64);
    let clones = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(CLONE_GROUP, "v1beta1", CLONE_KIND),
        CLONE_RESOURCE,
    );
    let kubevirt = |group: &str, version: &str, kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    };
    let vms = kubevirt("kubevirt.io", "v1", "VirtualMachine", "virtualmachines");
    let it = "instancetype.kubevirt.io";
    let followed = [
        (clones.clone(), Kind::Clone, clones),
        (vms.clone(), Kind::Vm, vms.clone()),
        (
            kubevirt(
                "kubevirt.io",
                "v1",
                "VirtualMachineInstance",
                "virtualmachineinstances",
            ),
            Kind::Vmi,
            vms.clone(),
        ),
        (
            kubevirt(
                it,
                "v1beta1",
                "VirtualMachineInstancetype",
                "virtualmachineinstancetypes",
            ),
            Kind::Instancetype,
            kubevirt(
                it,
                "v1beta1",
                "VirtualMachineInstancetype",
                "virtualmachineinstancetypes",
            ),
        ),
        (
            kubevirt(
                it,
                "v1beta1",
                "VirtualMachineClusterInstancetype",
                "virtualmachineclusterinstancetypes",
            ),
            Kind::ClusterInstancetype,
            kubevirt(
                it,
                "v1beta1",
                "VirtualMachineClusterInstancetype",
                "virtualmachineclusterinstancetypes",
            ),
        ),
        (
            kubevirt("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes"),
            Kind::DataVolume,
            kubevirt("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes"),
        ),
        // Claims are sized only for VMs: watched once KubeVirt is there.
        (
            ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(&()),
            Kind::Pvc,
            vms,
        ),
    ];
    let mut tasks = Vec::new();
    for (resource, kind, gate) in followed {
        let (client, namespace, seen, changed, shutdown) = (
            client.clone(),
            namespace.clone(),
            seen.clone(),
            changed.clone(),
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(async move {
            follow(
                client, namespace, resource, gate, kind, seen, changed, shutdown,
            )
            .await;
        }));
    }
    // Re-published every few seconds even without events: each publication
    // is a fresh observation, which is what lets sidecars stop counting the
    // clones they admitted themselves.
    let mut refresh = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = refresh.tick() => {}
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
                // Fold a burst of events into one publication.
                tokio::time::sleep(Duration::from_millis(50)).await;
                changes.borrow_and_update();
            }
        }
        let report = seen.lock().unwrap_or_else(|e| e.into_inner()).state();
        let next = ClusterState::next(report, &tx.borrow());
        tx.send_replace(next);
    }
    for t in tasks {
        t.abort();
    }
}

/// Watches one kind once the CRD of `gate` exists.
#[allow(clippy::too_many_arguments)]
async fn follow(
    client: Client,
    namespace: Option<String>,
    resource: ApiResource,
    gate: ApiResource,
    kind: Kind,
    seen: Arc<Mutex<Seen>>,
    changed: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let gv = kube::core::GroupVersion::gv(&gate.group, &gate.version);
        let served = kube::discovery::pinned_group(&client, &gv)
            .await
            .map(|g| {
                g.versioned_resources(&gate.version)
                    .iter()
                    .any(|(r, _)| r.plural == gate.plural)
            })
            .unwrap_or(false);
        if served {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
    tracing::info!(resource = %resource.plural, group = %resource.group, "watching KubeVirt objects");
    // Cluster instancetypes belong to no namespace, whatever is watched.
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) if kind != Kind::ClusterInstancetype => {
            Api::namespaced_with(client, ns, &resource)
        }
        _ => Api::all_with(client, &resource),
    };
    let (ready, current) = watch::channel(false);
    {
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            Kind::Clone => s.clones_current = Some(current),
            Kind::Vmi => s.vmis_current = Some(current),
            _ => {}
        }
    }
    let events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut watched = Watched::new(events, ready, &resource.plural);
    while let Some(step) = watched.next(&mut shutdown).await {
        {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            match step {
                Step::Wait => {}
                Step::Apply(o) => s.insert(kind, &o),
                Step::Delete(o) => s.remove(kind, &o),
                Step::Relist(objects) => {
                    s.clear(kind);
                    for o in &objects {
                        s.insert(kind, o);
                    }
                }
            }
        }
        watched.applied();
        changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clone(ns: &str, name: &str, source: &str, phase: Option<&str>) -> DynamicObject {
        let mut data = json!({"spec": {"source": {"name": source}}});
        if let Some(p) = phase {
            data["status"] = json!({"phase": p});
        }
        let mut o = DynamicObject::new(
            name,
            &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        );
        o.metadata.namespace = Some(ns.into());
        o.data = data;
        o
    }

    #[test]
    fn counts_clones_that_are_not_done() {
        let mut s = Seen::default();
        assert!(
            !s.state().clones_observed,
            "no counts are vouched for before the watch lists"
        );
        let (ready, current) = watch::channel(true);
        s.clones_current = Some(current);
        for o in [
            clone("vms", "a", "golden", None),
            clone("vms", "b", "golden", Some("SnapshotInProgress")),
            clone("vms", "c", "golden", Some("Succeeded")),
            clone("vms", "d", "other", Some("Failed")),
            clone("dev", "e", "golden", Some("CreatingTargetVM")),
        ] {
            s.insert(Kind::Clone, &o);
        }
        let state = s.state();
        assert!(state.clones_observed);
        assert_eq!(state.clones.total, 3);
        assert_eq!(
            state.clones.by_namespace,
            [("dev".to_owned(), 1), ("vms".to_owned(), 2)].into()
        );
        assert_eq!(
            state.clones.by_source,
            [("dev/golden".to_owned(), 1), ("vms/golden".to_owned(), 2)].into()
        );
        ready.send_replace(false);
        assert!(
            !s.state().clones_observed,
            "a clone watch that is re-listing vouches for nothing"
        );
    }

    fn object(ns: Option<&str>, name: &str, data: serde_json::Value) -> DynamicObject {
        let mut o = DynamicObject::new(
            name,
            &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        );
        o.metadata.namespace = ns.map(str::to_owned);
        o.data = data;
        o
    }

    #[test]
    fn a_vm_weighs_its_instancetype_and_its_disks_from_the_cluster() {
        let mut s = Seen::default();
        s.insert(
            Kind::Vm,
            &object(
                Some("vms"),
                "db",
                json!({"spec": {
                    "instancetype": {"kind": "VirtualMachineClusterInstancetype", "name": "u1.large"},
                    "dataVolumeTemplates": [{"metadata": {"name": "db-root"}, "spec": {"storage": {"resources": {"requests": {"storage": "30Gi"}}}}}],
                    "template": {"spec": {"volumes": [
                        {"name": "root", "dataVolume": {"name": "db-root"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}},
                        {"name": "boot", "containerDisk": {"image": "x"}}
                    ]}}
                }}),
            ),
        );
        let size = |s: &Seen| s.state().vm_sizes["vms/db"];
        // Neither the instancetype nor the data claim is known yet.
        assert_eq!(size(&s).cpu, None);
        assert_eq!(size(&s).storage, None);
        s.insert(
            Kind::ClusterInstancetype,
            &object(
                None,
                "u1.large",
                json!({"spec": {"cpu": {"guest": 2}, "memory": {"guest": "8Gi"}}}),
            ),
        );
        s.insert(
            Kind::Pvc,
            &object(
                Some("vms"),
                "db-data",
                json!({"spec": {"resources": {"requests": {"storage": "100Gi"}}}}),
            ),
        );
        assert_eq!(
            size(&s),
            Sizes {
                cpu: Some(2000),
                memory: Some(8 * 1024),
                storage: Some(130 * 1024)
            }
        );
        // A running VMI counts; a finished one does not.
        s.insert(
            Kind::Vmi,
            &object(Some("vms"), "db", json!({"status": {"phase": "Running"}})),
        );
        s.insert(
            Kind::Vmi,
            &object(
                Some("vms"),
                "old",
                json!({"status": {"phase": "Succeeded"}}),
            ),
        );
        assert_eq!(s.state().clones.running_by_namespace["vms"], 1);
        // Sidecars learn which VM runs (a start of it is no new start) and
        // what each known disk requests (a re-apply draws its growth).
        let state = s.state();
        assert_eq!(
            state.running_vms.iter().collect::<Vec<_>>(),
            ["vms/db"],
            "only the running VMI"
        );
        assert_eq!(state.disk_sizes["vms/db-data"], 100 * 1024);
        // A VMI that finishes stops the VM running.
        s.insert(
            Kind::Vmi,
            &object(Some("vms"), "db", json!({"status": {"phase": "Failed"}})),
        );
        assert!(s.state().running_vms.is_empty());
    }

    #[test]
    fn running_counts_are_vouched_for_only_by_a_current_vmi_watch() {
        let mut s = Seen::default();
        let (_clones_ready, clones) = watch::channel(true);
        s.clones_current = Some(clones);
        let state = s.state();
        assert!(state.clones_observed);
        assert!(
            !state.vmis_observed,
            "a current clone watch says nothing about running VMs"
        );
        let (vmis_ready, vmis) = watch::channel(true);
        s.vmis_current = Some(vmis);
        assert!(s.state().vmis_observed);
        // Re-listing after an expired watch: not current until the list is in.
        vmis_ready.send_replace(false);
        assert!(!s.state().vmis_observed);
    }
}
