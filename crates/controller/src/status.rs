//! What a policy's `status` should say, and the writer that says it.
//!
//! [`desired`] is a pure function of the index's report, the sidecars'
//! acknowledgements and the status already stored; the writer runs it for
//! every policy whenever something changed and patches only what differs,
//! and only while this replica holds the leader lease.
//!
//! The status also carries the accepted generation's spec
//! (`status.accepted`): the one place a restarted controller, or the next
//! leader, learns what stays in force when the current generation is
//! refused. It lives on the object itself, so it goes with the object, can
//! never belong to an earlier object of the same name, and needs no
//! permission beyond the status the controller already writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::watch;

use tollgate_policy::Problems;
use tollgate_policy::snapshot::AUDIT_WINDOW_SECONDS;
use tollgate_policy::spec::{AcceptedGeneration, AuditResults, McpToolPolicyStatus, RuleWouldDeny};

use crate::acks::{AckBook, AckView, WouldDenyView};
use crate::index::{Index, Key, PolicyReport, policy_name};
use crate::metrics::{ControllerMetrics, WriteResult};
use crate::object::{ClusterPolicyObject, PolicyObject};

/// The field manager of status patches.
pub(crate) const FIELD_MANAGER: &str = "tollgate-controller";
/// The longest condition message written (the API allows 32 KiB).
const MAX_MESSAGE: usize = 8 * 1024;

/// The status `report` calls for, keeping `lastTransitionTime` of conditions
/// whose status did not change.
pub(crate) fn desired(
    report: &PolicyReport,
    acks: &AckView,
    existing: Option<&McpToolPolicyStatus>,
    now: &Time,
) -> McpToolPolicyStatus {
    let generation = report.generation;
    let in_force = report.accepted_generation == Some(generation);
    let selected = report.selected.len();
    let synced = if in_force {
        report
            .selected
            .iter()
            .filter(|p| {
                acks.get(&p.key)
                    .is_some_and(|(uid, version)| *uid == p.uid && *version == p.version)
            })
            .count()
    } else {
        0
    };
    let accepted = if report.problems.is_empty() {
        condition(
            "Accepted",
            true,
            "Accepted",
            format!("{} rules compiled", report.rules.unwrap_or(0)),
        )
    } else {
        let mut message = Problems(report.problems.clone())
            .to_string()
            .replace('\n', "; ");
        if let Some(g) = report.accepted_generation {
            message = format!("generation {g} stays in force: {message}");
        }
        condition("Accepted", false, "Invalid", message)
    };
    let programmed = if !in_force {
        let message = match report.accepted_generation {
            Some(g) => format!(
                "generation {generation} was refused; sidecars keep enforcing generation {g}"
            ),
            None => {
                format!("generation {generation} was refused and no generation was ever accepted")
            }
        };
        condition("Programmed", false, "Invalid", message)
    } else if selected == 0 {
        condition(
            "Programmed",
            false,
            "NoSidecars",
            if report.namespace.is_empty() {
                "no pod running a tollgate sidecar matches spec.selector in a namespace spec.namespaceSelector matches"
            } else {
                "no pod running a tollgate sidecar matches spec.selector"
            }
            .to_owned(),
        )
    } else if synced < selected {
        condition(
            "Programmed",
            false,
            "Pending",
            format!("{synced} of {selected} selected sidecars enforce generation {generation}"),
        )
    } else {
        condition(
            "Programmed",
            true,
            "Programmed",
            format!("all {selected} selected sidecars enforce generation {generation}"),
        )
    };
    let conditions = [Some(accepted), Some(programmed), notifications(report)]
        .into_iter()
        .flatten()
        .map(|mut c| {
            c.observed_generation = Some(generation);
            c.message
                .truncate(floor_char_boundary(&c.message, MAX_MESSAGE));
            let previous = existing.and_then(|s| s.conditions.iter().find(|p| p.type_ == c.type_));
            c.last_transition_time = match previous {
                Some(p) if p.status == c.status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            c
        })
        .collect();
    McpToolPolicyStatus {
        observed_generation: Some(generation),
        conditions,
        rules: report.rules.map(|r| r as i64),
        selected_sidecars: Some(selected as i64),
        synced_sidecars: Some(synced as i64),
        synced: Some(format!("{synced}/{selected}")),
        accepted: report
            .accepted_generation
            .zip(report.accepted_spec.clone())
            .map(|(generation, spec)| AcceptedGeneration { generation, spec }),
        audit: None,
    }
}

/// `NotificationsReady`, for a policy in force whose rules name Secrets
/// for their notification webhooks: whether the controller could read
/// them. An unreadable key does not refuse the policy — it holds its calls
/// for approval all the same, nothing passes unapproved — but that rule's
/// notifications are not sent (never unsigned, and never to the sidecar's
/// own `--approval-webhook`, which is somebody else's receiver), and this
/// says so.
fn notifications(report: &PolicyReport) -> Option<Condition> {
    Some(match report.notify.as_ref()? {
        Ok(()) => condition(
            "NotificationsReady",
            true,
            "SecretsRead",
            "the notification keys the rules name were read and sent to the selected sidecars"
                .into(),
        ),
        Err(problems) => condition(
            "NotificationsReady",
            false,
            "SecretUnreadable",
            format!(
                "notifications of the rules naming these Secrets are not sent (approvals still wait for people; see kubectl get mtca): {}",
                problems.join("; ")
            ),
        ),
    })
}

/// For an `Audit`-mode policy in force, the calls its selected sidecars
/// (the very pods, by uid) let through in the last hour that `Enforce`
/// would have denied; `None` for any other policy.
pub(crate) fn audit(report: &PolicyReport, reported: &WouldDenyView) -> Option<AuditResults> {
    let mode = report.accepted_spec.as_ref()?.get("mode")?;
    if mode != "Audit" {
        return None;
    }
    // Sidecars name a policy `namespace/name`, a cluster policy `name`.
    let policy = policy_name(&report.namespace, &report.name);
    let mut per_rule: BTreeMap<&str, i64> = BTreeMap::new();
    for pod in &report.selected {
        let Some((uid, counts)) = reported.get(&pod.key) else {
            continue;
        };
        if *uid != pod.uid {
            continue;
        }
        for c in counts.iter().filter(|c| c.policy == policy) {
            *per_rule.entry(&c.rule).or_default() += i64::try_from(c.count).unwrap_or(i64::MAX);
        }
    }
    let mut rules: Vec<RuleWouldDeny> = per_rule
        .into_iter()
        .map(|(rule, would_deny)| RuleWouldDeny {
            rule: rule.to_owned(),
            would_deny,
        })
        .collect();
    rules.sort_by_key(|r| std::cmp::Reverse(r.would_deny));
    Some(AuditResults {
        window: format!("{}h", AUDIT_WINDOW_SECONDS / 3600),
        would_deny: rules.iter().map(|r| r.would_deny).sum(),
        rules,
    })
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// Statuses as last seen on the watched objects, with their references.
#[derive(Default)]
pub(crate) struct Observed {
    objects: Mutex<BTreeMap<Key, (ObjectReference, Option<McpToolPolicyStatus>)>>,
}

impl Observed {
    /// Records what the watcher saw.
    pub(crate) fn set(
        &self,
        key: Key,
        reference: ObjectReference,
        status: Option<McpToolPolicyStatus>,
    ) {
        self.lock().insert(key, (reference, status));
    }

    /// Forgets a deleted policy.
    pub(crate) fn remove(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// Forgets policies a re-list no longer shows.
    pub(crate) fn retain(&self, keep: impl Fn(&Key) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }

    fn get(&self, key: &Key) -> Option<(ObjectReference, Option<McpToolPolicyStatus>)> {
        self.lock().get(key).cloned()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<Key, (ObjectReference, Option<McpToolPolicyStatus>)>>
    {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything the writer works with.
pub(crate) struct Writer {
    /// Client.
    pub client: kube::Client,
    /// The index.
    pub index: Arc<Mutex<Index>>,
    /// Statuses on the objects.
    pub observed: Arc<Observed>,
    /// Acknowledgements from every replica.
    pub acks: Arc<AckBook>,
    /// Metrics.
    pub metrics: ControllerMetrics,
    /// Events.
    pub recorder: Recorder,
    /// Whether to write the status of `ClusterMcpToolPolicy` objects: only
    /// a controller that watches every namespace sees every pod they
    /// select (several `--watch-namespace` controllers would each write
    /// their own part).
    pub cluster_statuses: bool,
}

impl Writer {
    /// Writes statuses while `leader` is true, until `shutdown`.
    pub(crate) async fn run(
        self,
        mut leader: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut index_changes = self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes();
        let mut ack_changes = self.acks.changes();
        // What this replica wrote last, so it does not write it again while
        // the watcher has not yet shown the write back.
        let mut written: HashMap<Key, McpToolPolicyStatus> = HashMap::new();
        loop {
            if !*leader.borrow_and_update() {
                written.clear();
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = leader.changed() => continue,
                }
            }
            self.write_all(&mut written).await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = leader.changed() => {}
                _ = index_changes.changed() => {}
                _ = ack_changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn write_all(&self, written: &mut HashMap<Key, McpToolPolicyStatus>) {
        let reports = self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reports();
        let acks = self.acks.view();
        let would_deny = self.acks.would_deny();
        let now = Time(Timestamp::now());
        let live: std::collections::HashSet<Key> = reports
            .iter()
            .map(|r| (r.namespace.clone(), r.name.clone()))
            .collect();
        written.retain(|k, _| live.contains(k));
        for report in reports {
            if report.namespace.is_empty() && !self.cluster_statuses {
                continue;
            }
            let key = (report.namespace.clone(), report.name.clone());
            let Some((reference, observed)) = self.observed.get(&key) else {
                continue;
            };
            let existing = written.get(&key).cloned().or(observed);
            let mut status = desired(&report, &acks, existing.as_ref(), &now);
            status.audit = audit(&report, &would_deny);
            if existing.as_ref().is_some_and(|e| same(e, &status)) {
                continue;
            }
            match self.patch(&report, &status).await {
                Ok(()) => {
                    self.metrics.status_written(WriteResult::Success);
                    self.announce(&reference, existing.as_ref(), &status).await;
                    written.insert(key, status);
                }
                Err(e) => {
                    self.metrics.status_written(WriteResult::Error);
                    tracing::warn!(policy = %policy_name(&report.namespace, &report.name), error = %e, "status write failed");
                }
            }
        }
    }

    async fn patch(
        &self,
        report: &PolicyReport,
        status: &McpToolPolicyStatus,
    ) -> Result<(), kube::Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if report.namespace.is_empty() {
            let body = serde_json::json!({
                "apiVersion": "tollgate.dev/v1alpha1",
                "kind": "ClusterMcpToolPolicy",
                "status": status,
            });
            let api: Api<ClusterPolicyObject> = Api::all(self.client.clone());
            api.patch_status(&report.name, &params, &Patch::Apply(body))
                .await
                .map(|_| ())
        } else {
            let body = serde_json::json!({
                "apiVersion": "tollgate.dev/v1alpha1",
                "kind": "McpToolPolicy",
                "status": status,
            });
            let api: Api<PolicyObject> = Api::namespaced(self.client.clone(), &report.namespace);
            api.patch_status(&report.name, &params, &Patch::Apply(body))
                .await
                .map(|_| ())
        }
    }

    /// An Event when acceptance changes, so `kubectl describe` tells why.
    async fn announce(
        &self,
        reference: &ObjectReference,
        before: Option<&McpToolPolicyStatus>,
        after: &McpToolPolicyStatus,
    ) {
        let accepted = |s: &McpToolPolicyStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Accepted")
                .map(|c| (c.status.clone(), c.message.clone()))
        };
        let (Some((status, message)), previous) = (accepted(after), before.and_then(accepted))
        else {
            return;
        };
        if previous.as_ref() == Some(&(status.clone(), message.clone())) {
            return;
        }
        let event = if status == "True" {
            if previous.is_none() {
                return;
            }
            Event {
                type_: EventType::Normal,
                reason: "Accepted".into(),
                note: Some(message),
                action: "Compile".into(),
                secondary: None,
            }
        } else {
            let mut note = message;
            note.truncate(floor_char_boundary(&note, 1000));
            Event {
                type_: EventType::Warning,
                reason: "InvalidPolicy".into(),
                note: Some(note),
                action: "Compile".into(),
                secondary: None,
            }
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }
}

/// Equal apart from transition times.
fn same(a: &McpToolPolicyStatus, b: &McpToolPolicyStatus) -> bool {
    let strip = |s: &McpToolPolicyStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::SelectedPod;
    use tollgate_policy::Problem;

    fn report(generation: i64, accepted: Option<i64>, pods: &[(&str, &str)]) -> PolicyReport {
        PolicyReport {
            namespace: "ns".into(),
            name: "p".into(),
            generation,
            accepted_generation: accepted,
            accepted_spec: accepted.map(|g| serde_json::json!({"generation": g})),
            problems: if accepted == Some(generation) {
                vec![]
            } else {
                vec![Problem::at(
                    "spec.rules[0].window",
                    "\"1 minute\" is not a duration",
                )]
            },
            rules: accepted.map(|_| 2),
            selected: pods
                .iter()
                .map(|(name, version)| SelectedPod {
                    key: ("ns".into(), name.to_string()),
                    uid: format!("uid-{name}"),
                    version: version.to_string(),
                })
                .collect(),
            notify: None,
        }
    }

    #[test]
    fn an_unreadable_notification_secret_is_said_without_refusing_the_policy() {
        let mut r = report(3, Some(3), &[("a", "v1")]);
        let plain = desired(&r, &acks(&[("a", "v1")]), None, &at(1));
        assert!(
            plain
                .conditions
                .iter()
                .all(|c| c.type_ != "NotificationsReady"),
            "no condition for a policy naming no Secret"
        );
        r.notify = Some(Err(vec!["Secret ns/hook not found".into()]));
        let s = desired(&r, &acks(&[("a", "v1")]), None, &at(1));
        let n = cond(&s, "NotificationsReady");
        assert_eq!(
            (n.status.as_str(), n.reason.as_str()),
            ("False", "SecretUnreadable")
        );
        assert!(
            n.message.contains("Secret ns/hook not found"),
            "{}",
            n.message
        );
        assert_eq!(cond(&s, "Accepted").status, "True");
        r.notify = Some(Ok(()));
        let s = desired(&r, &acks(&[("a", "v1")]), None, &at(2));
        assert_eq!(cond(&s, "NotificationsReady").status, "True");
    }

    fn acks(entries: &[(&str, &str)]) -> AckView {
        entries
            .iter()
            .map(|(name, version)| {
                (
                    ("ns".into(), name.to_string()),
                    (format!("uid-{name}"), version.to_string()),
                )
            })
            .collect()
    }

    fn cond<'a>(s: &'a McpToolPolicyStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn counts_sidecars_that_acknowledged_the_current_version() {
        let r = report(3, Some(3), &[("a", "v2"), ("b", "v2"), ("c", "v2")]);
        let s = desired(&r, &acks(&[("a", "v2"), ("b", "v1")]), None, &at(100));
        assert_eq!(s.synced.as_deref(), Some("1/3"));
        assert_eq!(
            (
                s.selected_sidecars,
                s.synced_sidecars,
                s.rules,
                s.observed_generation
            ),
            (Some(3), Some(1), Some(2), Some(3))
        );
        let p = cond(&s, "Programmed");
        assert_eq!((p.status.as_str(), p.reason.as_str()), ("False", "Pending"));
        assert_eq!(p.message, "1 of 3 selected sidecars enforce generation 3");
        let s = desired(
            &r,
            &acks(&[("a", "v2"), ("b", "v2"), ("c", "v2")]),
            Some(&s),
            &at(200),
        );
        assert_eq!(s.synced.as_deref(), Some("3/3"));
        let p = cond(&s, "Programmed");
        assert_eq!(
            (p.status.as_str(), p.last_transition_time.clone()),
            ("True", at(200))
        );
        assert_eq!(
            cond(&s, "Accepted").last_transition_time,
            at(100),
            "Accepted did not change"
        );
    }

    #[test]
    fn an_ack_from_a_previous_pod_with_the_same_name_does_not_count() {
        let r = report(1, Some(1), &[("a", "v1")]);
        let mut stale = acks(&[("a", "v1")]);
        stale.insert(
            ("ns".into(), "a".into()),
            ("uid-of-old-pod".into(), "v1".into()),
        );
        assert_eq!(
            desired(&r, &stale, None, &at(1)).synced.as_deref(),
            Some("0/1")
        );
    }

    #[test]
    fn a_refused_generation_is_not_programmed_and_says_what_stays() {
        let r = report(4, Some(3), &[("a", "v3")]);
        let s = desired(&r, &acks(&[("a", "v3")]), None, &at(1));
        let a = cond(&s, "Accepted");
        assert_eq!((a.status.as_str(), a.reason.as_str()), ("False", "Invalid"));
        assert_eq!(
            a.message,
            "generation 3 stays in force: spec.rules[0].window: \"1 minute\" is not a duration"
        );
        let p = cond(&s, "Programmed");
        assert_eq!(
            p.message,
            "generation 4 was refused; sidecars keep enforcing generation 3"
        );
        assert_eq!(s.synced.as_deref(), Some("0/1"));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }

    #[test]
    fn the_generation_in_force_is_kept_in_status() {
        let s = desired(&report(4, Some(3), &[]), &AckView::new(), None, &at(1));
        let kept = s.accepted.expect("status.accepted");
        assert_eq!(kept.generation, 3);
        assert_eq!(kept.spec, serde_json::json!({"generation": 3}));
        let s = desired(&report(1, None, &[]), &AckView::new(), None, &at(1));
        assert_eq!(s.accepted, None, "nothing was ever accepted");
    }

    #[test]
    fn no_selected_sidecars_is_said_plainly() {
        let s = desired(&report(1, Some(1), &[]), &AckView::new(), None, &at(1));
        let p = cond(&s, "Programmed");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "NoSidecars")
        );
        assert_eq!(s.synced.as_deref(), Some("0/0"));
    }

    #[test]
    fn audit_counts_sum_the_selected_pods_of_this_policy_only() {
        use tollgate_policy::snapshot::WouldDeny;
        let wd = |policy: &str, rule: &str, count: u64| WouldDeny {
            policy: policy.into(),
            rule: rule.into(),
            count,
        };
        let mut r = report(1, Some(1), &[("a", "v"), ("b", "v"), ("gone", "v")]);
        r.accepted_spec = Some(serde_json::json!({"mode": "Audit"}));
        let reported = WouldDenyView::from([
            (
                ("ns".into(), "a".into()),
                (
                    "uid-a".into(),
                    vec![
                        wd("ns/p", "r1", 2),
                        wd("ns/other", "r1", 50),
                        wd("other/p", "r1", 50),
                    ],
                ),
            ),
            (
                ("ns".into(), "b".into()),
                (
                    "uid-b".into(),
                    vec![wd("ns/p", "r1", 1), wd("ns/p", "(default)", 7)],
                ),
            ),
            // A previous pod of the same name: not this one's counts.
            (
                ("ns".into(), "gone".into()),
                ("uid-old".into(), vec![wd("ns/p", "r1", 100)]),
            ),
            // Not selected.
            (
                ("ns".into(), "c".into()),
                ("uid-c".into(), vec![wd("ns/p", "r1", 100)]),
            ),
        ]);
        let a = audit(&r, &reported).unwrap();
        assert_eq!(a.window, "1h");
        assert_eq!(a.would_deny, 10);
        let rules: Vec<(&str, i64)> = a
            .rules
            .iter()
            .map(|r| (r.rule.as_str(), r.would_deny))
            .collect();
        assert_eq!(rules, [("(default)", 7), ("r1", 3)]);

        r.accepted_spec = Some(serde_json::json!({"mode": "Enforce"}));
        assert_eq!(audit(&r, &reported), None);
        r.accepted_spec = Some(serde_json::json!({}));
        assert_eq!(audit(&r, &reported), None, "Enforce is the default mode");
    }

    #[test]
    fn a_cluster_policy_without_sidecars_names_both_selectors() {
        let mut r = report(1, Some(1), &[]);
        r.namespace = String::new();
        let s = desired(&r, &AckView::new(), None, &at(1));
        let p = cond(&s, "Programmed");
        assert_eq!(p.reason, "NoSidecars");
        assert!(
            p.message.contains("spec.namespaceSelector"),
            "{}",
            p.message
        );
    }

    #[test]
    fn statuses_differing_only_in_transition_times_are_the_same() {
        let r = report(1, Some(1), &[("a", "v")]);
        let one = desired(&r, &acks(&[("a", "v")]), None, &at(1));
        let two = desired(&r, &acks(&[("a", "v")]), None, &at(2));
        assert!(same(&one, &two));
        let three = desired(&r, &AckView::new(), None, &at(1));
        assert!(!same(&one, &three));
    }
}
