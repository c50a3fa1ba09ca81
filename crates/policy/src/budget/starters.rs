//! Which caller was let start which VM, for `runningVMs` per caller.
//!
//! Nothing in the cluster says who started a VM, so the in-flight store
//! remembers the VMs each caller's admitted starts named, indexed both by
//! VM and by caller: a caller's running count is read from its own entries,
//! never by scanning everyone's. A VM is forgotten once it was seen running
//! and then not, or when it was never seen running [`STARTING_FOR`] after
//! its start (KubeVirt may take a while to make the VMI, and a VM forgotten
//! before would run uncounted).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::ratelimit::BucketKey;

/// How long a VM a caller was let start is remembered without being seen
/// running (its VMI may come late, or never if the start failed).
pub(crate) const STARTING_FOR: Duration = Duration::from_secs(600);

/// One VM's starter.
#[derive(Debug)]
struct Start {
    caller: BucketKey,
    ticket: u64,
    at: SystemTime,
    /// Whether the controller has seen it run since.
    seen_running: bool,
}

/// The starters of VMs, by VM and by caller.
#[derive(Debug, Default)]
pub(crate) struct Starters {
    /// `namespace/name` → who started it.
    by_vm: HashMap<String, Start>,
    /// Caller → the VMs it started.
    by_caller: HashMap<BucketKey, HashSet<String>>,
}

impl Starters {
    /// How many VMs are remembered.
    pub(crate) fn len(&self) -> usize {
        self.by_vm.len()
    }

    /// How many VMs `caller` is remembered to have started.
    pub(crate) fn of(&self, caller: &BucketKey) -> usize {
        self.by_caller.get(caller).map_or(0, HashSet::len)
    }

    /// How many of `caller`'s VMs are in `running`.
    pub(crate) fn running(&self, caller: &BucketKey, running: &HashSet<String>) -> usize {
        self.by_caller.get(caller).map_or(0, |vms| {
            vms.iter().filter(|vm| running.contains(*vm)).count()
        })
    }

    /// `caller` was let start `vm` by `ticket` at `at`; a VM started by
    /// someone else before is now this caller's.
    pub(crate) fn insert(&mut self, vm: &str, caller: BucketKey, ticket: u64, at: SystemTime) {
        let start = Start {
            caller,
            ticket,
            at,
            seen_running: false,
        };
        if let Some(before) = self.by_vm.insert(vm.to_owned(), start) {
            self.unindex(&before.caller, vm);
        }
        self.by_caller
            .entry(caller)
            .or_default()
            .insert(vm.to_owned());
    }

    /// Forgets the starts of `ticket` (its call was refused after all).
    pub(crate) fn release(&mut self, ticket: u64) {
        self.forget_where(|_, s| s.ticket == ticket);
    }

    /// The VMs seen running as of `observed_at`: forgets those that ran and
    /// stopped, and those that never ran within [`STARTING_FOR`].
    pub(crate) fn observe(&mut self, running: &HashSet<String>, observed_at: SystemTime) {
        for (vm, s) in &mut self.by_vm {
            if running.contains(vm) {
                s.seen_running = true;
            }
        }
        self.forget_where(|vm, s| {
            let starting = observed_at
                .duration_since(s.at)
                .map_or(true, |d| d < STARTING_FOR);
            !running.contains(vm) && (s.seen_running || !starting)
        });
    }

    fn forget_where(&mut self, gone: impl Fn(&str, &Start) -> bool) {
        let forgotten: Vec<(String, BucketKey)> = self
            .by_vm
            .iter()
            .filter(|(vm, s)| gone(vm, s))
            .map(|(vm, s)| (vm.clone(), s.caller))
            .collect();
        for (vm, caller) in forgotten {
            self.by_vm.remove(&vm);
            self.unindex(&caller, &vm);
        }
    }

    fn unindex(&mut self, caller: &BucketKey, vm: &str) {
        if let Some(vms) = self.by_caller.get_mut(caller) {
            vms.remove(vm);
            if vms.is_empty() {
                self.by_caller.remove(caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn key(who: &str) -> BucketKey {
        BucketKey::of([who.as_bytes()])
    }

    fn set(vms: &[&str]) -> HashSet<String> {
        vms.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn a_vm_belongs_to_its_last_starter_and_both_indexes_agree() {
        let mut s = Starters::default();
        s.insert("vms/a", key("ann"), 1, at(0));
        s.insert("vms/b", key("ann"), 2, at(0));
        s.insert("vms/a", key("bob"), 3, at(1));
        assert_eq!((s.of(&key("ann")), s.of(&key("bob")), s.len()), (1, 1, 2));
        let running = set(&["vms/a", "vms/b"]);
        assert_eq!(s.running(&key("ann"), &running), 1);
        assert_eq!(s.running(&key("bob"), &running), 1);
        s.release(3);
        assert_eq!((s.of(&key("bob")), s.len()), (0, 1));
    }

    #[test]
    fn a_vm_is_forgotten_once_it_ran_and_stopped_or_never_ran_in_time() {
        let mut s = Starters::default();
        s.insert("vms/slow", key("ann"), 1, at(0));
        s.insert("vms/quick", key("ann"), 2, at(0));
        // quick runs; slow's VMI is not there yet, long after SETTLE.
        s.observe(&set(&["vms/quick"]), at(60));
        assert_eq!(s.of(&key("ann")), 2);
        // slow runs at last: counted.
        s.observe(&set(&["vms/quick", "vms/slow"]), at(120));
        assert_eq!(s.running(&key("ann"), &set(&["vms/quick", "vms/slow"])), 2);
        // quick stops: forgotten.
        s.observe(&set(&["vms/slow"]), at(130));
        assert_eq!(s.of(&key("ann")), 1);
        // A start that never runs is forgotten after STARTING_FOR.
        s.insert("vms/never", key("bob"), 3, at(200));
        s.observe(
            &set(&["vms/slow"]),
            at(200) + STARTING_FOR - Duration::from_secs(1),
        );
        assert_eq!(s.of(&key("bob")), 1);
        s.observe(&set(&["vms/slow"]), at(200) + STARTING_FOR);
        assert_eq!(s.of(&key("bob")), 0);
        assert_eq!(s.len(), 1);
    }
}
