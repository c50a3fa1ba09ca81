//! Approvals in file mode: a call a `RequireApproval` rule holds waits for
//! a person, who decides on the sidecar's admin listener
//! (`tollgate approve --admin URL ID`).
//!
//! Rooms: [`store`] is the table and every lifecycle rule (pure, tested
//! without I/O); [`admin`] serves it on the admin listener; [`answer`] is
//! what the agent reads while it waits; [`metrics`] counts. This module ties
//! them together for the gate: find or create the approval of a call's
//! fingerprint, hold the call up to `holdFor` while watching for a
//! decision, and say what happened.
//!
//! The decider's name in file mode is what the person gives the admin
//! listener: anyone who can reach that listener (loopback only, unless
//! `--approvals-remote`) can approve. Who may approve, enforced, is the
//! Kubernetes design (docs/approvals.md).

pub(crate) mod admin;
pub(crate) mod answer;
pub(crate) mod cluster;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod store;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::Notify;

use metrics::{ApprovalMetrics, Outcome as Counted};
use notify::{Event, Notifier};
use store::{DecideError, Decided, Found, Phase, Record, Request, Store, Verdict};

/// How often a held call tells its client it is still waiting.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A held call's progress notifications (MCP `notifications/progress`):
/// the client's `progressToken` and the stream the transport relays them
/// on. Sent when the hold starts and every [`PROGRESS_EVERY`] after.
#[derive(Debug)]
pub(crate) struct Progress {
    token: Value,
    tx: tokio::sync::mpsc::Sender<Value>,
    sent: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub(crate) fn new(token: Value, tx: tokio::sync::mpsc::Sender<Value>) -> Self {
        Progress {
            token,
            tx,
            sent: Default::default(),
        }
    }

    /// One notification for `r`, still pending; dropped if the client reads
    /// too slowly (the next says the same, newer).
    pub(crate) fn tick(&self, r: &Record) {
        let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let message = format!(
            "waiting for a person to approve {} ({}/{} approvals)",
            r.id,
            r.approvals.len(),
            r.min_approvals
        );
        let _ = self.tx.try_send(serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": self.token, "progress": n, "message": message},
        }));
    }
}

/// The sidecar's approvals.
pub(crate) struct Approvals {
    store: Mutex<Store>,
    /// Woken on every decision, for held calls.
    changed: Notify,
    metrics: ApprovalMetrics,
    /// How a person decides, shown to the model (the admin URL).
    admin_url: String,
    /// Where people are told, if anywhere.
    notifier: Option<Arc<Notifier>>,
    /// Managed mode: approvals are `McpToolCallApproval` objects.
    cluster: Option<cluster::ClusterApprovals>,
    /// Managed mode without a Kubernetes client: calls that need an
    /// approval are refused with this (fail closed), the rest run.
    no_client: Option<Arc<tollgate_runtime::kube_client::ClientError>>,
    /// The rules in force: the settings of an approval object no call is
    /// waiting on (its notifications, its retention) are its rule's.
    rules: Option<Arc<crate::rules::store::RuleStore>>,
}

/// What a call waiting for approval ends with.
#[derive(Debug)]
pub(crate) enum Waited {
    /// Approved: the call goes on, holding the approval until
    /// [`Approvals::finish`] says whether it was used.
    Go(Record),
    /// Still pending (new or reused) when the hold ended.
    Pending(Record),
    /// Rejected by a person.
    Rejected(Record),
    /// No room for another approval.
    Full,
    /// The apiserver could not keep the approval (managed mode): refused.
    Unavailable(cluster::ClusterError),
}

impl Approvals {
    pub(crate) fn new(
        metrics: ApprovalMetrics,
        admin_url: String,
        notifier: Option<Notifier>,
    ) -> Self {
        Approvals {
            store: Mutex::new(Store::default()),
            changed: Notify::new(),
            metrics,
            admin_url,
            notifier: notifier.map(Arc::new),
            cluster: None,
            no_client: None,
            rules: None,
        }
    }

    /// Looks up rules' approval settings in `rules`.
    pub(crate) fn with_rules(self, rules: Arc<crate::rules::store::RuleStore>) -> Self {
        Approvals {
            rules: Some(rules),
            ..self
        }
    }

    /// The approval settings of rule `rule` of policy `policy` in force.
    pub(crate) fn settings_of(
        &self,
        policy: &str,
        rule: &str,
    ) -> Option<Arc<tollgate_policy::compile::approval::Approval>> {
        let rules = self.rules.as_ref()?.current()?;
        let p = rules.set.policies().iter().find(|p| &*p.name == policy)?;
        p.rules()
            .iter()
            .find(|r| &*r.name == rule)?
            .approval
            .clone()
    }

    /// Approvals were to be kept in the cluster but no client could be
    /// built: every call that needs one is refused, saying why.
    pub(crate) fn without_client(self, e: tollgate_runtime::kube_client::ClientError) -> Self {
        Approvals {
            no_client: Some(Arc::new(e)),
            ..self
        }
    }

    /// Keeps approvals as objects in the cluster instead of in memory.
    pub(crate) fn in_cluster(self, cluster: cluster::ClusterApprovals) -> Self {
        Approvals {
            cluster: Some(cluster),
            ..self
        }
    }

    /// The pod approvals are bound to (managed mode).
    pub(crate) fn pod(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.pod())
    }

    /// How a person decides approval `id`, for the agent's answer.
    pub(crate) fn how_to_decide(&self, id: &str) -> String {
        match &self.cluster {
            Some(c) => c.how_to_decide(id),
            None => format!("tollgate approve --admin {} {id}", self.admin_url),
        }
    }

    /// Managed mode: marks overdue objects `Expired`, refreshes the
    /// pending gauge.
    pub(crate) async fn sweep_cluster(&self) {
        if let Some(c) = &self.cluster {
            c.sweep(self).await;
        }
    }

    fn notify(&self, event: Event, r: &Record) {
        if let Some(n) = &self.notifier {
            n.send(event, r);
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds or creates the approval of `make()`'s fingerprint and, while
    /// it is pending, waits for a decision up to `hold`.
    pub(crate) async fn wait(
        &self,
        make: impl Fn() -> Request,
        progress: Option<&Progress>,
    ) -> Waited {
        if let Some(c) = &self.cluster {
            return c.wait(self, make(), progress).await;
        }
        if let Some(e) = &self.no_client {
            return Waited::Unavailable(cluster::ClusterError::NoClient(e.clone()));
        }
        let deadline = Instant::now() + make().settings.hold_for;
        loop {
            // Registered before looking, so a decision in between wakes us.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (found, expired) = self.table().request(make(), SystemTime::now());
            self.count_expired(&expired);
            match found {
                Found::Taken(r) => return Waited::Go(r),
                Found::Rejected(r) => return Waited::Rejected(r),
                Found::Full => return Waited::Full,
                Found::Created(r) => {
                    self.metrics.count(&r, Counted::Requested);
                    self.metrics.pending(self.table().pending());
                    tracing::info!(
                        target: "tollgate::audit",
                        event = "approval_requested",
                        approval = %r.id,
                        policy = %r.call.policy,
                        rule = %r.call.rule,
                        tool = %r.call.tool,
                        caller = %r.call.caller,
                        arguments_sha256 = %r.call.arguments_sha256,
                        expires_at = r.expires_at,
                        "approval requested"
                    );
                    self.notify(Event::Requested, &r);
                    if Instant::now() >= deadline {
                        return Waited::Pending(r);
                    }
                    if let Some(p) = progress {
                        p.tick(&r);
                    }
                }
                Found::Pending(r) => {
                    if Instant::now() >= deadline {
                        return Waited::Pending(r);
                    }
                    if let Some(p) = progress {
                        p.tick(&r);
                    }
                }
            }
            let until = deadline.min(Instant::now() + PROGRESS_EVERY);
            let _ = tokio::time::timeout_at(until.into(), notified).await;
        }
    }

    /// Settles an approval a call took: `used` if the call went through.
    pub(crate) fn finish(&self, r: &Record, used: bool) {
        if let Some(c) = &self.cluster {
            return c.finish(self, r, used);
        }
        self.table().finish(&r.id, used, SystemTime::now());
        if used {
            self.metrics.count(r, Counted::Used);
            tracing::info!(
                target: "tollgate::audit",
                event = "approval_used",
                approval = %r.id,
                policy = %r.call.policy,
                rule = %r.call.rule,
                tool = %r.call.tool,
                caller = %r.call.caller,
                "approved call let through"
            );
        } else {
            // Approved again: a held call may take it.
            self.changed.notify_waiters();
        }
    }

    /// A person's decision, from the admin listener.
    pub(crate) fn decide(
        &self,
        id: &str,
        by: &str,
        groups: &[String],
        verdict: Verdict,
        reason: Option<String>,
    ) -> Result<Decided, DecideError> {
        let decided = self
            .table()
            .decide(id, by, groups, verdict, reason, SystemTime::now())?;
        let r = &decided.record;
        tracing::info!(
            target: "tollgate::audit",
            event = "approval_decided",
            approval = %r.id,
            verdict = ?verdict,
            by,
            phase = ?r.phase,
            approvals = r.approvals.len(),
            min_approvals = r.min_approvals,
            policy = %r.call.policy,
            rule = %r.call.rule,
            caller = %r.call.caller,
            "approval decided"
        );
        if decided.settled {
            let (outcome, event) = match r.phase {
                Phase::Rejected => (Counted::Rejected, Event::Rejected),
                _ => (Counted::Approved, Event::Approved),
            };
            self.notify(event, r);
            self.metrics.count(r, outcome);
            let waited = SystemTime::now()
                .duration_since(r.created)
                .unwrap_or(Duration::ZERO);
            self.metrics.decision_took(waited);
            self.metrics.pending(self.table().pending());
            self.changed.notify_waiters();
        }
        Ok(decided)
    }

    /// Every approval kept.
    pub(crate) fn list(&self) -> Vec<Record> {
        self.sweep();
        self.table().list()
    }

    /// One approval.
    pub(crate) fn get(&self, id: &str) -> Option<Record> {
        self.sweep();
        self.table().get(id)
    }

    /// Expires overdue approvals (counted), forgets old final ones.
    pub(crate) fn sweep(&self) {
        let expired = self.table().expire(SystemTime::now());
        self.count_expired(&expired);
    }

    fn count_expired(&self, expired: &[Record]) {
        for r in expired {
            self.metrics.count(r, Counted::Expired);
            self.notify(Event::Expired, r);
            tracing::info!(
                target: "tollgate::audit",
                event = "approval_expired",
                approval = %r.id,
                policy = %r.call.policy,
                rule = %r.call.rule,
                "approval expired"
            );
        }
        if !expired.is_empty() {
            self.metrics.pending(self.table().pending());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A managed sidecar without a ServiceAccount token still starts, and
    /// refuses (never holds in memory, never lets through) calls that need
    /// an approval.
    #[tokio::test]
    async fn without_a_client_calls_that_need_approval_are_refused() {
        let metrics = ApprovalMetrics::register(&prometheus::Registry::new()).unwrap();
        let path = "/nonexistent/tollgate-kubeconfig";
        let source = kube::config::Kubeconfig::read_from(path).unwrap_err();
        let e = tollgate_runtime::kube_client::ClientError::Kubeconfig {
            path: path.into(),
            source,
        };
        let approvals = Approvals::new(metrics, String::new(), None).without_client(e);
        let settings = store::tests::settings(1, &[]);
        match approvals
            .wait(|| store::tests::req("x", settings.clone()), None)
            .await
        {
            Waited::Unavailable(e) => assert!(e.to_string().contains("--approvals memory"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(approvals.list().is_empty(), "nothing was kept in memory");
    }
}
