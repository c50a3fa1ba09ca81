//! What the controller tells a managed sidecar about the cluster beyond its
//! rules: the labels of VirtualMachines (for `clone.sourceLabels` and
//! `lifecycle.vmLabels`), what VMs and instancetypes consume (for size
//! budgets). In-flight clone and running-VM counts go straight into the
//! gate's in-flight store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tollgate_policy::compile::resource_rules::ClusterView;
use tollgate_policy::resources::sizes::Sizes;
use tollgate_policy::snapshot::ClusterReport;

/// How long a report vouching for the running-VM count is trusted. The
/// controller re-publishes its state every 2 s; a sidecar that has heard
/// nothing for this long (controller gone, stream stuck) no longer knows how
/// many VMs run elsewhere.
pub(crate) const RUNNING_VMS_FRESH_FOR: Duration = Duration::from_secs(10);

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
    /// Running VMs, by `namespace/name`: meant only while `running_at` is
    /// fresh.
    running: HashSet<String>,
    /// DataVolumes' and PVCs' storage (MiB).
    disks: HashMap<String, u64>,
    /// When a report whose VirtualMachineInstance watch was current came.
    running_at: Option<Instant>,
}

impl VmLabels {
    /// Replaces what is known of the VMs' labels.
    pub fn set_vms(&self, vms: HashMap<String, BTreeMap<String, String>>) {
        self.write().labels = vms;
    }

    /// Replaces everything with the controller's report.
    pub fn set_report(&self, report: ClusterReport) {
        self.set_report_at(report, Instant::now());
    }

    /// [`Self::set_report`], received at `now`.
    pub fn set_report_at(&self, report: ClusterReport, now: Instant) {
        *self.write() = Known {
            running_at: report.vmis_observed.then_some(now),
            labels: report.vms.into_iter().collect(),
            sizes: report.vm_sizes.into_iter().collect(),
            instancetypes: report.instancetypes.into_iter().collect(),
            cluster_instancetypes: report.cluster_instancetypes.into_iter().collect(),
            running: report.running_vms.into_iter().collect(),
            disks: report.disk_sizes.into_iter().collect(),
        };
    }

    /// The last report, observed again unchanged: only whether the running
    /// VMs are vouched for, and since when, moves.
    pub fn set_freshness(&self, vmis_observed: bool) {
        self.set_freshness_at(vmis_observed, Instant::now());
    }

    /// [`Self::set_freshness`], received at `now`.
    pub fn set_freshness_at(&self, vmis_observed: bool, now: Instant) {
        self.write().running_at = vmis_observed.then_some(now);
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

    fn running_vms_current(&self) -> bool {
        self.running_current_at(Instant::now())
    }

    fn vm_running(&self, namespace: &str, name: &str) -> bool {
        self.running_current_at(Instant::now())
            && self.read().running.contains(&format!("{namespace}/{name}"))
    }

    fn disk_size(&self, namespace: &str, name: &str) -> Option<u64> {
        self.read()
            .disks
            .get(&format!("{namespace}/{name}"))
            .copied()
    }
}

impl VmLabels {
    /// Whether the running-VM count is vouched for at `now`.
    pub fn running_current_at(&self, now: Instant) -> bool {
        self.read()
            .running_at
            .is_some_and(|at| now.saturating_duration_since(at) < RUNNING_VMS_FRESH_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_vms_are_current_only_while_the_vmi_watch_is_and_lately() {
        let view = VmLabels::default();
        let t0 = Instant::now();
        assert!(!view.running_current_at(t0), "nothing heard yet");
        // The clone watch is current, the VMI watch is not: not enough.
        let clones_only = ClusterReport {
            clones_observed: true,
            observed_at: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        };
        view.set_report_at(clones_only.clone(), t0);
        assert!(!view.running_current_at(t0));
        view.set_report_at(
            ClusterReport {
                vmis_observed: true,
                ..clones_only.clone()
            },
            t0,
        );
        assert!(view.running_current_at(t0 + Duration::from_secs(1)));
        assert!(
            !view.running_current_at(t0 + RUNNING_VMS_FRESH_FOR),
            "a controller silent this long vouches for nothing"
        );
        // A VMI watch that went back to re-listing withdraws it at once.
        view.set_report_at(clones_only, t0 + Duration::from_secs(2));
        assert!(!view.running_current_at(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_re_observation_keeps_the_running_count_current_and_the_vms_known() {
        let view = VmLabels::default();
        let t0 = Instant::now();
        view.set_report_at(
            ClusterReport {
                vmis_observed: true,
                running_vms: ["vms/a".to_owned()].into(),
                observed_at: "2026-01-01T00:00:00Z".into(),
                ..Default::default()
            },
            t0,
        );
        let later = t0 + RUNNING_VMS_FRESH_FOR + Duration::from_secs(5);
        assert!(!view.running_current_at(later), "stale without news");
        view.set_freshness_at(true, t0 + Duration::from_secs(8));
        assert!(view.running_current_at(later), "vouched for again at 8 s");
        assert!(view.read().running.contains("vms/a"), "what it knew stands");
        view.set_freshness_at(false, t0 + Duration::from_secs(9));
        assert!(!view.running_current_at(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn a_vm_reads_as_running_only_while_the_vmi_watch_vouches_for_it() {
        let view = VmLabels::default();
        let report = ClusterReport {
            vmis_observed: true,
            running_vms: ["vms/a".to_owned()].into(),
            disk_sizes: [("vms/d".to_owned(), 2048)].into(),
            observed_at: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        };
        view.set_report(report.clone());
        assert!(view.vm_running("vms", "a"));
        assert!(!view.vm_running("vms", "b"));
        assert_eq!(view.disk_size("vms", "d"), Some(2048));
        assert_eq!(view.disk_size("vms", "a"), None);
        // The same names from a report whose VMI watch is not current say
        // nothing: a start of "a" is a start again.
        view.set_report(ClusterReport {
            vmis_observed: false,
            ..report
        });
        assert!(!view.vm_running("vms", "a"));
        assert_eq!(view.disk_size("vms", "d"), Some(2048));
    }
}
