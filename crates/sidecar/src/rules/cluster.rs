//! What the controller tells a managed sidecar about the cluster beyond its
//! rules: the labels of VirtualMachines (for `clone.sourceLabels`). In-flight
//! clone counts go straight into the gate's in-flight store.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use tollgate_policy::compile::resource_rules::ClusterView;

/// VirtualMachine labels by `namespace/name`.
#[derive(Debug, Default)]
pub struct VmLabels {
    vms: RwLock<HashMap<String, BTreeMap<String, String>>>,
}

impl VmLabels {
    /// Replaces what is known of the VMs.
    pub fn set_vms(&self, vms: HashMap<String, BTreeMap<String, String>>) {
        *self.vms.write().unwrap_or_else(|e| e.into_inner()) = vms;
    }
}

impl ClusterView for VmLabels {
    fn vm_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.vms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }
}
