//! What the controller tells a managed sidecar about the cluster beyond its
//! rules: the labels of VirtualMachines (for `clone.sourceLabels` and
//! `lifecycle.vmLabels`), what VMs and instancetypes consume (for size
//! budgets). In-flight clone and running-VM counts go straight into the
//! gate's in-flight store.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use tollgate_policy::compile::resource_rules::ClusterView;
use tollgate_policy::resources::sizes::Sizes;
use tollgate_policy::snapshot::ClusterReport;

/// What is known of VMs and instancetypes, by `namespace/name`.
#[derive(Debug, Default)]
pub struct VmLabels {
    known: RwLock<Known>,
}

#[derive(Debug, Default)]
struct Known {
    labels: HashMap<String, BTreeMap<String, String>>,
    sizes: HashMap<String, Sizes>,
    instancetypes: HashMap<String, Sizes>,
    cluster_instancetypes: HashMap<String, Sizes>,
}

impl VmLabels {
    /// Replaces what is known of the VMs' labels.
    pub fn set_vms(&self, vms: HashMap<String, BTreeMap<String, String>>) {
        self.write().labels = vms;
    }

    /// Replaces everything with the controller's report.
    pub fn set_report(&self, report: ClusterReport) {
        *self.write() = Known {
            labels: report.vms.into_iter().collect(),
            sizes: report.vm_sizes.into_iter().collect(),
            instancetypes: report.instancetypes.into_iter().collect(),
            cluster_instancetypes: report.cluster_instancetypes.into_iter().collect(),
        };
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.known.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClusterView for VmLabels {
    fn vm_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.read()
            .labels
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    fn vm_size(&self, namespace: &str, name: &str) -> Option<Sizes> {
        self.read()
            .sizes
            .get(&format!("{namespace}/{name}"))
            .copied()
    }

    fn instancetype(&self, namespace: Option<&str>, name: &str) -> Option<Sizes> {
        let known = self.read();
        match namespace {
            Some(ns) => known.instancetypes.get(&format!("{ns}/{name}")).copied(),
            None => known.cluster_instancetypes.get(name).copied(),
        }
    }
}
