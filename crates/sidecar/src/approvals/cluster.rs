//! Approvals in managed mode: each held call is an `McpToolCallApproval`
//! object in the pod's namespace, so `kubectl get mtca` is the queue and
//! the apiserver (through the controller's webhook) decides who may
//! approve.
//!
//! Who writes what (docs/approvals.md): the sidecar creates the object and
//! writes the transitions it owns — `Pending` on a new object, `Approved`
//! → `Used` when it lets the call through, `Expired` once `expiresAt`
//! passed. People write `status.decision`; the webhook turns that into
//! their vote and the phase. The sidecar never writes a vote.
//!
//! One object per fingerprint at a time: its name is derived from the
//! fingerprint (`<tool>-<fingerprint>-<n>`, `n` counting the approvals of
//! that fingerprint), so identical calls — concurrent, retried, or from a
//! restarted sidecar — create the same name and the apiserver keeps one;
//! the losers of the create reuse it. Taking an approval is a status write
//! conditioned on the object's resourceVersion, so exactly one call rides
//! on it however many wait.
//!
//! Cleaning up: every object is owned by the sidecar's pod (an
//! ownerReference, when the pod's uid is known), so the garbage collector
//! deletes a pod's approvals with the pod; and the sidecar deletes its own
//! pod's final objects (`Used`, `Expired`, `Rejected`) once they are older
//! than the rule's `approval.retention` (copied into `spec.retention`).
//! Retention is the rule's, not a controller flag, because the sidecar
//! already lists and owns these objects with the pod's own RBAC (no
//! controller-wide delete on every namespace's approvals) and because how
//! long a decision must stay readable is a property of what was approved.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use serde_json::json;

use tollgate_policy::approval_crd::{
    ApprovalPhase, FINGERPRINT_LABEL, McpToolCallApproval, McpToolCallApprovalSpec,
};
use tollgate_policy::spec::Approvers;

use super::Waited;
use super::metrics::Outcome as Counted;
use super::notify::Event;
use super::store::{Call, Phase, Record, Request, Vote};

/// How long a rejection answers retries of its call before a retry may ask
/// again (as in file mode).
const KEEP_REJECTED: Duration = Duration::from_secs(15 * 60);
/// Longest one watch request runs (the apiserver caps them near 5 minutes).
const WATCH_SECONDS: u32 = 240;
/// Objects whose outcome this process counted, at most (then it starts over).
const COUNTED: usize = 4096;

/// Where the approvals live and who this sidecar is.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// A kubeconfig (default: `KUBECONFIG` or in-cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The pod's namespace: the objects live here.
    pub namespace: String,
    /// The pod's name: part of every fingerprint, recorded in `spec.pod`.
    pub pod: String,
    /// The pod's uid (`POD_UID`, which the injection webhook sets from the
    /// Downward API): each object names the pod as its owner, so deleting
    /// the pod garbage-collects its approvals. Without it the objects have
    /// no owner and only their retention deletes them.
    pub pod_uid: Option<String>,
}

/// Why the apiserver could not hold a call's approval; the call is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error(
        "the apiserver refused or failed the request for McpToolCallApproval {name:?} in {namespace:?} ({source}); the pod's ServiceAccount needs create/get/list/watch/delete on mcptoolcallapprovals and get/patch on mcptoolcallapprovals/status (bind ClusterRole tollgate-sidecar-approvals, docs/approvals.md)"
    )]
    Api {
        name: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "this sidecar has no Kubernetes client to keep approvals with ({0}); give the pod a ServiceAccount token or run with --approvals memory"
    )]
    NoClient(#[source] Arc<tollgate_runtime::kube_client::ClientError>),
    #[error(
        "McpToolCallApproval {0:?} exists but is for another call (its fingerprint differs); refusing rather than guessing"
    )]
    Foreign(String),
}

/// The sidecar's side of approvals kept as objects.
pub(crate) struct ClusterApprovals {
    api: Api<McpToolCallApproval>,
    events: Api<KubeEvent>,
    settings: ClusterSettings,
    /// `(name, outcome)` already counted by this process.
    counted: Mutex<HashSet<(String, &'static str)>>,
}

fn now_rfc3339(t: SystemTime) -> String {
    Timestamp::try_from(t)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

fn epoch_of(rfc3339: &str) -> u64 {
    rfc3339
        .parse::<Timestamp>()
        .map_or(0, |t| t.as_second().max(0) as u64)
}

/// A suffix for Event names: the time in nanoseconds and a counter.
fn unique() -> u128 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos.wrapping_mul(1024)
        + u128::from(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1024)
}

/// A name from the fingerprint: readable (`vm-clone-…`) and the same for
/// every identical call.
pub(crate) fn object_name(tool: &str, fingerprint: &str, n: u64) -> String {
    let mut slug = tollgate_runtime::names::dns_part(tool, 40);
    if slug.is_empty() {
        slug = "call".into();
    }
    format!("{slug}-{fingerprint}-{n}")
}

/// The `n` of a name [`object_name`] made.
fn number_of(name: &str) -> u64 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn phase_of(o: &McpToolCallApproval) -> ApprovalPhase {
    o.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(ApprovalPhase::Pending)
}

fn expired(o: &McpToolCallApproval, now: SystemTime) -> bool {
    epoch_of(&o.spec.expires_at) <= super::store::epoch(now)
}

impl ClusterApprovals {
    pub(crate) async fn connect(
        settings: ClusterSettings,
    ) -> Result<Self, tollgate_runtime::kube_client::ClientError> {
        let client = tollgate_runtime::kube_client::client(settings.kubeconfig.as_deref()).await?;
        Ok(ClusterApprovals {
            api: Api::namespaced(client.clone(), &settings.namespace),
            events: Api::namespaced(client, &settings.namespace),
            settings,
            counted: Mutex::new(HashSet::new()),
        })
    }

    /// The pod every fingerprint of this sidecar is bound to.
    pub(crate) fn pod(&self) -> &str {
        &self.settings.pod
    }

    fn api_error(&self, name: &str) -> impl Fn(kube::Error) -> ClusterError + '_ {
        let name = name.to_owned();
        move |source| ClusterError::Api {
            name: name.clone(),
            namespace: self.settings.namespace.clone(),
            source,
        }
    }

    /// The record a person's answer and the agent's text are made from.
    fn record(&self, o: &McpToolCallApproval, req: &Request) -> Record {
        let status = o.status.clone().unwrap_or_default();
        let vote = |v: &tollgate_policy::approval_crd::ApprovalVote| Vote {
            by: v.user.clone(),
            at: epoch_of(&v.time),
            reason: v.reason.clone(),
        };
        let created = o
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(SystemTime::now(), |t| SystemTime::from(t.0));
        let expires_at = epoch_of(&o.spec.expires_at);
        Record {
            id: o.metadata.name.clone().unwrap_or_default(),
            phase: match phase_of(o) {
                ApprovalPhase::Pending => Phase::Pending,
                ApprovalPhase::Approved => Phase::Approved,
                ApprovalPhase::Rejected => Phase::Rejected,
                ApprovalPhase::Expired => Phase::Expired,
                ApprovalPhase::Used => Phase::Used,
            },
            call: req.call.clone(),
            fingerprint: o.spec.fingerprint.clone(),
            min_approvals: o.spec.min_approvals.max(1) as u32,
            approvals: status.approvals.iter().map(vote).collect(),
            rejection: status.rejection.as_ref().map(vote),
            created_at: super::store::epoch(created),
            expires_at,
            created,
            expires: SystemTime::UNIX_EPOCH + Duration::from_secs(expires_at),
            finished: None,
            requester: req.requester.clone(),
            settings: req.settings.clone(),
            tool_label: req.tool_label.clone(),
        }
    }

    /// Waits for the approval of `req`'s call up to its `holdFor`.
    pub(crate) async fn wait(
        &self,
        parent: &super::Approvals,
        req: Request,
        progress: Option<&super::Progress>,
    ) -> Waited {
        let deadline = Instant::now() + req.settings.hold_for;
        loop {
            let o = match self.find_or_create(parent, &req).await {
                Ok(o) => o,
                Err(e) => return Waited::Unavailable(e),
            };
            let record = self.record(&o, &req);
            match phase_of(&o) {
                ApprovalPhase::Rejected => {
                    self.once(parent, o.metadata.uid.clone(), &record, Counted::Rejected);
                    return Waited::Rejected(record);
                }
                ApprovalPhase::Approved => match self.take(&o).await {
                    Ok(true) => {
                        self.once(parent, o.metadata.uid.clone(), &record, Counted::Approved);
                        return Waited::Go(record);
                    }
                    // Another call took it, or it changed: look again.
                    Ok(false) => continue,
                    Err(e) => return Waited::Unavailable(e),
                },
                // find_or_create never answers a spent one; a race did.
                ApprovalPhase::Used | ApprovalPhase::Expired => continue,
                ApprovalPhase::Pending => {
                    if Instant::now() >= deadline {
                        return Waited::Pending(record);
                    }
                    if let Some(p) = progress {
                        p.tick(&record);
                    }
                    let until = deadline.min(Instant::now() + super::PROGRESS_EVERY);
                    self.changed(&o, until).await;
                }
            }
        }
    }

    /// Counts, tells and records (Event) an outcome this process saw, once.
    fn once(&self, parent: &super::Approvals, uid: Option<String>, r: &Record, outcome: Counted) {
        self.once_telling(parent, uid, r, outcome, true);
    }

    /// Like [`Self::once`]; notifies people only when `tell` (not for an
    /// object whose rule is no longer in force: where its notifications went
    /// is unknown, and the sidecar's own webhook may be somebody else's).
    fn once_telling(
        &self,
        parent: &super::Approvals,
        uid: Option<String>,
        r: &Record,
        outcome: Counted,
        tell: bool,
    ) {
        let name = r.id.clone();
        {
            let mut seen = self.counted.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= COUNTED {
                seen.clear();
            }
            if !seen.insert((name, outcome.as_str())) {
                return;
            }
        }
        use tollgate_runtime::labels::LabelValue;
        parent.metrics.count(r, outcome);
        let (event, reason, note) = match outcome {
            Counted::Approved => (
                Some(Event::Approved),
                "Approved",
                format!(
                    "approved by {}",
                    r.approvals
                        .iter()
                        .map(|v| v.by.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Counted::Rejected => (
                Some(Event::Rejected),
                "Rejected",
                format!(
                    "rejected by {}",
                    r.rejection.as_ref().map_or("?", |v| v.by.as_str())
                ),
            ),
            Counted::Expired => (
                Some(Event::Expired),
                "Expired",
                "not decided or used in time".into(),
            ),
            Counted::Used => (None, "Used", "the approved call went through".into()),
            Counted::Requested => (
                Some(Event::Requested),
                "Requested",
                format!("{} asks to call {}", r.call.caller, r.call.tool),
            ),
        };
        if matches!(outcome, Counted::Approved | Counted::Rejected) {
            let waited = SystemTime::now()
                .duration_since(r.created)
                .unwrap_or(Duration::ZERO);
            parent.metrics.decision_took(waited);
        }
        if let Some(event) = event
            && tell
        {
            parent.notify(event, r);
        }
        tracing::info!(
            target: "tollgate::audit",
            event = match outcome {
                Counted::Requested => "approval_requested",
                Counted::Approved | Counted::Rejected => "approval_decided",
                Counted::Expired => "approval_expired",
                Counted::Used => "approval_used",
            },
            approval = %r.id,
            namespace = %self.settings.namespace,
            phase = ?r.phase,
            approvals = r.approvals.len(),
            min_approvals = r.min_approvals,
            policy = %r.call.policy,
            rule = %r.call.rule,
            tool = %r.call.tool,
            caller = %r.call.caller,
            arguments_sha256 = %r.call.arguments_sha256,
            expires_at = r.expires_at,
            "approval {}", outcome.as_str()
        );
        self.event(&r.id, uid, reason, note);
    }

    /// A Kubernetes Event on the object (best effort: an approval never
    /// waits on its Event).
    fn event(&self, name: &str, uid: Option<String>, reason: &str, note: String) {
        let name = name.to_owned();
        let event = KubeEvent {
            metadata: ObjectMeta {
                // Named, not generateName'd: the Event API validates a
                // generateName as a whole name, and `NAME.` ends in a dot.
                name: Some(format!("{name}.{:x}", unique())),
                namespace: Some(self.settings.namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            reporting_controller: Some("tollgate.dev/sidecar".into()),
            reporting_instance: Some(self.settings.pod.clone()),
            action: Some(format!("Approval{reason}")),
            reason: Some(reason.to_owned()),
            note: Some(note.chars().take(1000).collect()),
            type_: Some("Normal".into()),
            regarding: Some(ObjectReference {
                api_version: Some("tollgate.dev/v1alpha1".into()),
                kind: Some("McpToolCallApproval".into()),
                name: Some(name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                uid,
                ..Default::default()
            }),
            ..Default::default()
        };
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) = events.create(&PostParams::default(), &event).await {
                tracing::warn!(approval = %name, error = %e, "cannot record an Event on the approval (the pod's ServiceAccount needs create on events.k8s.io events)");
            }
        });
    }

    /// The live approval of `req`'s fingerprint, created if there is none
    /// (or only spent ones).
    async fn find_or_create(
        &self,
        parent: &super::Approvals,
        req: &Request,
    ) -> Result<McpToolCallApproval, ClusterError> {
        let fp = req.fingerprint.as_str();
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{FINGERPRINT_LABEL}={fp}")))
            .await
            .map_err(self.api_error(fp))?;
        let now = SystemTime::now();
        let latest = list
            .items
            .into_iter()
            .filter(|o| o.spec.fingerprint == fp && o.spec.pod == self.settings.pod)
            .max_by_key(|o| number_of(o.metadata.name.as_deref().unwrap_or("")));
        let next = match latest {
            Some(o) => {
                let n = number_of(o.metadata.name.as_deref().unwrap_or(""));
                match phase_of(&o) {
                    ApprovalPhase::Pending | ApprovalPhase::Approved if expired(&o, now) => {
                        self.expire(parent, &o, req, true).await;
                        n + 1
                    }
                    ApprovalPhase::Pending | ApprovalPhase::Approved => return Ok(o),
                    ApprovalPhase::Rejected if !self.rejection_is_old(&o, now) => return Ok(o),
                    _ => n + 1,
                }
            }
            None => 1,
        };
        let name = object_name(&req.call.tool, fp, next);
        let object = self.object(&name, req, now);
        match self.api.create(&PostParams::default(), &object).await {
            Ok(created) => {
                let mut created = created;
                let status = json!({"status": {
                    "phase": "Pending",
                    "summary": format!("0/{}", req.settings.min_approvals),
                }});
                // Best effort: an object without a phase reads as Pending.
                if let Ok(o) = self
                    .api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    created = o;
                }
                let record = self.record(&created, req);
                self.once(
                    parent,
                    created.metadata.uid.clone(),
                    &record,
                    Counted::Requested,
                );
                Ok(created)
            }
            // Another call (or sidecar) created it first: reuse it.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let o = self.api.get(&name).await.map_err(self.api_error(&name))?;
                if o.spec.fingerprint != fp || o.spec.pod != self.settings.pod {
                    return Err(ClusterError::Foreign(name));
                }
                Ok(o)
            }
            Err(e) => Err(self.api_error(&name)(e)),
        }
    }

    fn rejection_is_old(&self, o: &McpToolCallApproval, now: SystemTime) -> bool {
        let at = o
            .status
            .as_ref()
            .and_then(|s| s.rejection.as_ref())
            .map_or(0, |v| epoch_of(&v.time));
        at + KEEP_REJECTED.as_secs() <= super::store::epoch(now)
    }

    fn object(&self, name: &str, req: &Request, now: SystemTime) -> McpToolCallApproval {
        let s = &req.settings;
        let approvers = (!s.users.is_empty() || !s.groups.is_empty()).then(|| Approvers {
            users: s.users.clone(),
            groups: s.groups.clone(),
        });
        let mut o = McpToolCallApproval::new(
            name,
            McpToolCallApprovalSpec {
                policy: req.call.policy.clone(),
                rule: req.call.rule.clone(),
                pod: self.settings.pod.clone(),
                tool: req.call.tool.clone(),
                arguments: (!req.call.arguments.is_null()).then(|| req.call.arguments.clone()),
                arguments_sha256: req.call.arguments_sha256.clone(),
                caller: req.call.caller.clone(),
                requester: req.requester.clone(),
                fingerprint: req.fingerprint.to_string(),
                min_approvals: i64::from(s.min_approvals),
                approvers,
                expires_at: now_rfc3339(now + s.timeout),
                retention: Some(format!("{}s", s.retention.as_secs().max(1))),
            },
        );
        o.metadata.namespace = Some(self.settings.namespace.clone());
        o.metadata.owner_references = self.owner();
        o.metadata.labels = Some(
            [
                (FINGERPRINT_LABEL.to_owned(), req.fingerprint.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "tollgate".to_owned(),
                ),
            ]
            .into(),
        );
        o
    }

    /// The pod, as the owner of every object it asks for: not a
    /// controller, and not blocking the pod's deletion (which would need
    /// permission on the pod the sidecar does not have).
    fn owner(&self) -> Option<Vec<OwnerReference>> {
        let uid = self.settings.pod_uid.clone().filter(|u| !u.is_empty())?;
        Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: self.settings.pod.clone(),
            uid,
            controller: None,
            block_owner_deletion: None,
        }])
    }

    /// Moves the object to `phase`, on the condition that nobody changed
    /// it since it was read: the new object, or `None` if it changed.
    async fn transition(
        &self,
        o: &McpToolCallApproval,
        phase: ApprovalPhase,
    ) -> Result<Option<McpToolCallApproval>, ClusterError> {
        let name = o.metadata.name.clone().unwrap_or_default();
        let patch = json!({
            "metadata": {"resourceVersion": o.metadata.resource_version},
            "status": {"phase": phase, "finishedAt": now_rfc3339(SystemTime::now())},
        });
        match self
            .api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(done) => Ok(Some(done)),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(self.api_error(&name)(e)),
        }
    }

    /// Marks an approved object `Used`: true if this call took it (exactly
    /// one of any number of waiting calls does).
    async fn take(&self, o: &McpToolCallApproval) -> Result<bool, ClusterError> {
        Ok(self.transition(o, ApprovalPhase::Used).await?.is_some())
    }

    /// Marks an overdue object `Expired`.
    async fn expire(
        &self,
        parent: &super::Approvals,
        o: &McpToolCallApproval,
        req: &Request,
        tell: bool,
    ) {
        match self.transition(o, ApprovalPhase::Expired).await {
            Ok(Some(done)) => {
                let record = self.record(&done, req);
                self.once_telling(
                    parent,
                    done.metadata.uid.clone(),
                    &record,
                    Counted::Expired,
                    tell,
                );
            }
            Ok(None) => {
                tracing::debug!(approval = ?o.metadata.name, "not marked Expired: it changed meanwhile")
            }
            Err(e) => {
                tracing::warn!(approval = ?o.metadata.name, error = %e, "cannot mark an overdue approval Expired")
            }
        }
    }

    /// Settles an approval a call took: counted and recorded as used, or,
    /// when the call was refused after all (a budget), spent anyway — a
    /// `Used` object never becomes `Approved` again, so that no status
    /// write can replay an approval.
    pub(crate) fn finish(&self, parent: &super::Approvals, r: &Record, used: bool) {
        if used {
            self.once(parent, None, r, Counted::Used);
        } else {
            tracing::info!(target: "tollgate::audit", event = "approval_spent", approval = %r.id, namespace = %self.settings.namespace, policy = %r.call.policy, rule = %r.call.rule, tool = %r.call.tool, "an approved call was refused by a budget; its approval is spent");
            self.event(
                &r.id,
                None,
                "Spent",
                "the approved call was refused by a budget; the approval is spent".into(),
            );
        }
    }

    /// How a person decides, for the agent's answer.
    pub(crate) fn how_to_decide(&self, id: &str) -> String {
        format!(
            "kubectl -n {ns} patch mtca {id} --subresource=status --type=merge -p '{{\"status\":{{\"decision\":{{\"verdict\":\"Approve\"}}}}}}', or tollgate approve -n {ns} {id}",
            ns = self.settings.namespace
        )
    }

    /// Deletes a final object whose retention has passed, on the condition
    /// that it did not change since it was read.
    async fn forget(&self, o: &McpToolCallApproval) {
        let name = o.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: o.metadata.uid.clone(),
                resource_version: o.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => tracing::info!(
                target: "tollgate::audit",
                event = "approval_deleted",
                approval = %name,
                namespace = %self.settings.namespace,
                phase = ?phase_of(o),
                policy = %o.spec.policy,
                rule = %o.spec.rule,
                "final approval deleted after its retention"
            ),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(approval = %name, error = %e, "cannot delete a final approval past its retention (the pod's ServiceAccount needs delete on mcptoolcallapprovals)")
            }
        }
    }

    /// Marks this pod's overdue objects `Expired`, so the queue shows them
    /// as such even when no call comes back for them, and deletes its final
    /// objects past their retention.
    pub(crate) async fn sweep(&self, parent: &super::Approvals) {
        let Ok(list) = self.api.list(&ListParams::default()).await else {
            return;
        };
        let now = SystemTime::now();
        let mut pending = 0;
        for o in list
            .items
            .iter()
            .filter(|o| o.spec.pod == self.settings.pod)
        {
            match phase_of(o) {
                ApprovalPhase::Pending | ApprovalPhase::Approved if expired(o, now) => {
                    let (req, known) = request_of(parent, o);
                    self.expire(parent, o, &req, known).await;
                }
                ApprovalPhase::Pending => pending += 1,
                ApprovalPhase::Used | ApprovalPhase::Expired | ApprovalPhase::Rejected
                    if past_retention(o, now) =>
                {
                    self.forget(o).await;
                }
                _ => {}
            }
        }
        parent.metrics.pending(pending);
    }

    /// Returns when the object changes or at `deadline`.
    async fn changed(&self, o: &McpToolCallApproval, deadline: Instant) {
        let name = o.metadata.name.clone().unwrap_or_default();
        let rv = o.metadata.resource_version.clone().unwrap_or_default();
        let left = deadline.saturating_duration_since(Instant::now());
        let seconds = (left.as_secs() as u32 + 1).min(WATCH_SECONDS);
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(seconds);
        let watch = async {
            match self.api.watch(&params, &rv).await {
                Ok(stream) => {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(WatchEvent::Bookmark(_)) => continue,
                            _ => return,
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(approval = %name, error = %e, "watch failed; looking again shortly");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline.into(), watch).await;
    }
}

/// Whether a final object has been kept for its `spec.retention`, counted
/// from when it became final: `finishedAt` for `Used` and `Expired`
/// (`expiresAt` for objects written before it was recorded, which no use or
/// expiry can be later than), the rejection for `Rejected` — kept at least
/// [`KEEP_REJECTED`] so a retry still reads it was rejected.
pub(crate) fn past_retention(o: &McpToolCallApproval, now: SystemTime) -> bool {
    let Some(retention) = o
        .spec
        .retention
        .as_deref()
        .and_then(|r| tollgate_policy::duration::parse(r).ok())
    else {
        return false;
    };
    let status = o.status.clone().unwrap_or_default();
    let (since, keep) = match phase_of(o) {
        ApprovalPhase::Rejected => (
            status.rejection.as_ref().map_or(0, |v| epoch_of(&v.time)),
            retention.max(KEEP_REJECTED),
        ),
        ApprovalPhase::Used | ApprovalPhase::Expired => (
            status
                .finished_at
                .as_deref()
                .map_or_else(|| epoch_of(&o.spec.expires_at), epoch_of),
            retention,
        ),
        ApprovalPhase::Pending | ApprovalPhase::Approved => return false,
    };
    since > 0 && since + keep.as_secs() <= super::store::epoch(now)
}

/// A request rebuilt from an object, for the records of objects no call is
/// waiting on (the sweep): its notifications go where its rule's go, and
/// whether that rule is still in force (if not, nobody is notified).
fn request_of(parent: &super::Approvals, o: &McpToolCallApproval) -> (Request, bool) {
    let approvers = o.spec.approvers.clone().unwrap_or_default();
    let rule = parent.settings_of(&o.spec.policy, &o.spec.rule);
    let known = rule.is_some();
    let notify = rule.and_then(|s| s.notify.clone());
    let request = Request {
        fingerprint: tollgate_policy::Fingerprint::parse(&o.spec.fingerprint).unwrap_or_else(
            || tollgate_policy::Fingerprint::parse(&"0".repeat(32)).expect("32 hex digits"),
        ),
        call: Call {
            policy: o.spec.policy.clone(),
            rule: o.spec.rule.clone(),
            tool: o.spec.tool.clone(),
            arguments: o.spec.arguments.clone().unwrap_or_default(),
            arguments_sha256: o.spec.arguments_sha256.clone(),
            caller: o.spec.caller.clone(),
        },
        requester: o.spec.requester.clone(),
        settings: Arc::new(tollgate_policy::compile::approval::Approval {
            min_approvals: o.spec.min_approvals.max(1) as u32,
            users: approvers.users,
            groups: approvers.groups,
            notify,
            ..Default::default()
        }),
        // Bounded: the object's tool name is not this sidecar's catalog.
        tool_label: crate::metrics::UNLISTED_TOOL.to_owned(),
    };
    (request, known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(phase: ApprovalPhase, retention: Option<&str>) -> McpToolCallApproval {
        let mut o: McpToolCallApproval = serde_json::from_value(json!({
            "apiVersion": "tollgate.dev/v1alpha1", "kind": "McpToolCallApproval",
            "metadata": {"name": "x-1"},
            "spec": {"policy": "ns/p", "rule": "r", "pod": "p", "tool": "x",
                "argumentsSha256": "00", "caller": "anonymous",
                "fingerprint": "0123456789abcdef0123456789abcdef", "minApprovals": 1,
                "expiresAt": "2026-01-01T00:10:00Z"},
        }))
        .unwrap();
        o.spec.retention = retention.map(str::to_owned);
        o.status = Some(serde_json::from_value(json!({"phase": phase})).unwrap());
        o
    }

    fn at(rfc3339: &str) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(epoch_of(rfc3339))
    }

    #[test]
    fn final_objects_are_kept_for_their_retention_from_when_they_became_final() {
        let mut used = object(ApprovalPhase::Used, Some("60s"));
        used.status.as_mut().unwrap().finished_at = Some("2026-01-01T00:01:00Z".into());
        assert!(!past_retention(&used, at("2026-01-01T00:01:59Z")));
        assert!(past_retention(&used, at("2026-01-01T00:02:00Z")));
        // Without finishedAt (an older sidecar's object): from expiresAt.
        let old = object(ApprovalPhase::Expired, Some("60s"));
        assert!(!past_retention(&old, at("2026-01-01T00:10:59Z")));
        assert!(past_retention(&old, at("2026-01-01T00:11:00Z")));
        // A rejection is kept at least 15 minutes.
        let mut rejected = object(ApprovalPhase::Rejected, Some("60s"));
        rejected.status.as_mut().unwrap().rejection = Some(
            serde_json::from_value(json!({"user": "ann", "time": "2026-01-01T00:00:00Z"})).unwrap(),
        );
        assert!(!past_retention(&rejected, at("2026-01-01T00:14:59Z")));
        assert!(past_retention(&rejected, at("2026-01-01T00:15:00Z")));
        // Never a live one, nor one without a retention.
        for phase in [ApprovalPhase::Pending, ApprovalPhase::Approved] {
            assert!(!past_retention(
                &object(phase, Some("1s")),
                at("2027-01-01T00:00:00Z")
            ));
        }
        assert!(!past_retention(
            &object(ApprovalPhase::Used, None),
            at("2027-01-01T00:00:00Z")
        ));
    }

    #[test]
    fn names_are_readable_deterministic_and_numbered() {
        let fp = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            object_name("vm_clone", fp, 1),
            "vm-clone-0123456789abcdef0123456789abcdef-1"
        );
        assert_eq!(object_name("Über/Tool", fp, 2), format!("ber-tool-{fp}-2"));
        assert_eq!(object_name("___", fp, 3), format!("call-{fp}-3"));
        assert_eq!(number_of(&object_name("vm_clone", fp, 17)), 17);
    }
}
