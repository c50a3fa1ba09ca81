//! What an object of a call consumes, with what the cluster knows filled
//! in: an instancetype's CPU and memory, a clone source's size (both from
//! the controller, through [`ClusterView`]).

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
    out
}
