//! What an object of a call consumes, with what the cluster knows filled
//! in: an instancetype's CPU and memory, a clone source's size (both from
//! the controller, through [`ClusterView`]).
//!
//! Re-applying a VirtualMachine that exists (`resources_create_or_update`
//! of the same namespace and name) is an update, not new consumption: it
//! consumes only what it grows by over the VM as the controller last saw it,
//! and nothing when unchanged. Where the controller does not know the
//! existing VM's amount of a resource, the whole new amount counts (a
//! budget never undercounts for want of knowledge).

use crate::compile::resource_rules::ClusterView;
use crate::resources::Op;
use crate::resources::sizes::Sizes;

/// What `op` consumes, with what the cluster knows filled in.
pub(super) fn sizes(op: &Op, view: &dyn ClusterView) -> Sizes {
    if op.is_clone() {
        let (Some(ns), Some(source)) = (
            op.namespace.as_deref(),
            op.clone.as_ref().and_then(|c| c.source.as_deref()),
        ) else {
            return Sizes::default();
        };
        return view.vm_size(ns, source).unwrap_or_default();
    }
    let Some(demand) = &op.demand else {
        // Starting a VM (vm_lifecycle) creates nothing new.
        return Sizes::ZERO;
    };
    let mut out = demand.own;
    if let Some(it) = &demand.instancetype {
        let ns = if it.cluster {
            None
        } else {
            op.namespace.as_deref()
        };
        let (cpu, memory) = view
            .instancetype(ns, &it.name)
            .map_or((None, None), |s| (s.cpu, s.memory));
        out.cpu = cpu;
        out.memory = memory;
    }
    if let Some(old) = existing_vm(op, view) {
        out = Sizes {
            cpu: growth(out.cpu, old.cpu),
            memory: growth(out.memory, old.memory),
            storage: growth(out.storage, old.storage),
        };
    }
    out
}

/// What the VirtualMachine `op` updates consumes now, if the call may
/// update one (a create-or-update manifest) and the controller knows it.
fn existing_vm(op: &Op, view: &dyn ClusterView) -> Option<Sizes> {
    if !op.is_vm() || !op.verbs.iter().any(|v| v == "patch" || v == "update") {
        return None;
    }
    view.vm_size(op.namespace.as_deref()?, op.name.as_deref()?)
}

/// What `new` adds over `old`; all of `new` when `old` is unknown.
fn growth(new: Option<u64>, old: Option<u64>) -> Option<u64> {
    match (new, old) {
        (Some(new), Some(old)) => Some(new.saturating_sub(old)),
        (new, _) => new,
    }
}
