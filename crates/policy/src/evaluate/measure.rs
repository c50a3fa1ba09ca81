//! What an object of a call consumes, with what the cluster knows filled
//! in: an instancetype's CPU and memory, a clone source's size (both from
//! the controller, through [`ClusterView`]).
//!
//! Re-applying an object that exists (`resources_create_or_update` of the
//! same namespace and name) is an update, not new consumption: a
//! VirtualMachine, DataVolume or PersistentVolumeClaim consumes only what it
//! grows by over the object as the controller last saw it, and nothing when
//! unchanged. Where the controller does not know the existing object's
//! amount of a resource, the whole new amount counts (a budget never
//! undercounts for want of knowledge). Likewise re-applying a running VM
//! with `running: true`, or `vm_lifecycle start` of one, starts nothing.

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
    if let Some(old) = existing(op, view) {
        out = Sizes {
            cpu: growth(out.cpu, old.cpu),
            memory: growth(out.memory, old.memory),
            storage: growth(out.storage, old.storage),
        };
    }
    out
}

/// Whether the call starts VM `op`: it asks to run it, and the cluster does
/// not already run it.
pub(super) fn starts_vm(op: &Op, view: &dyn ClusterView) -> bool {
    op.starts_vm
        && !matches!(
            (op.namespace.as_deref(), op.name.as_deref()),
            (Some(ns), Some(name)) if view.vm_running(ns, name)
        )
}

/// What the object `op` updates consumes now, if the call may update one (a
/// create-or-update manifest) and the controller knows it.
fn existing(op: &Op, view: &dyn ClusterView) -> Option<Sizes> {
    if !op.verbs.iter().any(|v| v == "patch" || v == "update") {
        return None;
    }
    let (ns, name) = (op.namespace.as_deref()?, op.name.as_deref()?);
    if op.is_vm() {
        view.vm_size(ns, name)
    } else if op.is_disk() {
        view.disk_size(ns, name).map(|storage| Sizes {
            storage: Some(storage),
            ..Sizes::ZERO
        })
    } else {
        None
    }
}

/// What `new` adds over `old`; all of `new` when `old` is unknown.
fn growth(new: Option<u64>, old: Option<u64>) -> Option<u64> {
    match (new, old) {
        (Some(new), Some(old)) => Some(new.saturating_sub(old)),
        (new, _) => new,
    }
}
