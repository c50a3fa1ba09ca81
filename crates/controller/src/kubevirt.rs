//! KubeVirt state the sidecars need and cannot see: how many
//! VirtualMachineClones are in flight (created, not yet `Succeeded` or
//! `Failed`) per namespace, per source VM and overall, and the labels of
//! VirtualMachines (for `clone.sourceLabels`).
//!
//! Watched only when the KubeVirt CRDs exist (checked again every 30 s, so
//! installing KubeVirt later needs no restart). Each change is folded into
//! one [`ClusterReport`] published on a `watch` channel; the push server
//! sends it to every sidecar as a `state` event.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use tollgate_policy::resources::{CLONE_GROUP, CLONE_KIND, CLONE_RESOURCE, CloneCounts};
use tollgate_policy::snapshot::ClusterReport;

use crate::watch::{Step, Watched};

/// How often the state is re-published without changes.
const REFRESH: Duration = Duration::from_secs(2);

/// Phases after which a clone no longer holds storage snapshots open.
const DONE_PHASES: &[&str] = &["Succeeded", "Failed"];

#[derive(Default)]
struct Seen {
    /// Whether the clone watch is current (listed, and not re-listing after
    /// it expired); until then sidecars keep counting their own admissions.
    clones_current: Option<watch::Receiver<bool>>,
    /// `namespace/name` → (in flight, source).
    clones: BTreeMap<String, (bool, Option<String>)>,
    /// `namespace/name` → labels.
    vms: BTreeMap<String, BTreeMap<String, String>>,
}

impl Seen {
    fn insert(&mut self, is_clone: bool, o: &DynamicObject) {
        if is_clone {
            self.clones.insert(key(o), clone_entry(o));
        } else {
            self.vms.insert(key(o), o.labels().clone());
        }
    }

    fn remove(&mut self, is_clone: bool, o: &DynamicObject) {
        if is_clone {
            self.clones.remove(&key(o));
        } else {
            self.vms.remove(&key(o));
        }
    }

    fn clear(&mut self, is_clone: bool) {
        if is_clone {
            self.clones.clear();
        } else {
            self.vms.clear();
        }
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
        ClusterReport {
            clones_observed: self.clones_current.as_ref().is_some_and(|r| *r.borrow()),
            clones: counts,
            vms: self.vms.clone(),
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

/// Publishes the cluster state until `shutdown`.
pub(crate) async fn run(
    client: Client,
    namespace: Option<String>,
    tx: watch::Sender<Arc<ClusterReport>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (changed, mut changes) = watch::channel(0u64);
    let clones = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(CLONE_GROUP, "v1beta1", CLONE_KIND),
        CLONE_RESOURCE,
    );
    let vms = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    );
    let mut tasks = Vec::new();
    for (resource, is_clone) in [(clones, true), (vms, false)] {
        let (client, namespace, seen, changed, shutdown) = (
            client.clone(),
            namespace.clone(),
            seen.clone(),
            changed.clone(),
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(async move {
            follow(
                client, namespace, resource, is_clone, seen, changed, shutdown,
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
        let state = seen.lock().unwrap_or_else(|e| e.into_inner()).state();
        tx.send_replace(Arc::new(state));
    }
    for t in tasks {
        t.abort();
    }
}

/// Watches one kind once its CRD exists.
async fn follow(
    client: Client,
    namespace: Option<String>,
    resource: ApiResource,
    is_clone: bool,
    seen: Arc<Mutex<Seen>>,
    changed: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let gv = kube::core::GroupVersion::gv(&resource.group, &resource.version);
        let served = kube::discovery::pinned_group(&client, &gv)
            .await
            .map(|g| {
                g.versioned_resources(&resource.version)
                    .iter()
                    .any(|(r, _)| r.plural == resource.plural)
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
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let (ready, current) = watch::channel(false);
    if is_clone {
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .clones_current = Some(current);
    }
    let events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut watched = Watched::new(events, ready, &resource.plural);
    while let Some(step) = watched.next(&mut shutdown).await {
        {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            match step {
                Step::Wait => {}
                Step::Apply(o) => s.insert(is_clone, &o),
                Step::Delete(o) => s.remove(is_clone, &o),
                Step::Relist(objects) => {
                    s.clear(is_clone);
                    for o in &objects {
                        s.insert(is_clone, o);
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
            s.insert(true, &o);
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
}
