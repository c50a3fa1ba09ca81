//! What approvals are counted as: `tollgate_approvals_total{policy,rule,
//! tool,outcome}`, `tollgate_approvals_pending` and
//! `tollgate_approval_decision_duration_seconds`. Labels stay bounded:
//! policy and rule names are the operator's, the tool is the catalog's
//! bounded label, the outcome an enum; ids and callers never are labels.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use tollgate_runtime::label_values;
use tollgate_runtime::labels::LabelValue;

use super::store::Record;

label_values! {
    /// What happened to an approval (`tollgate_approvals_total{outcome}`).
    pub enum Outcome {
        /// A call asked for a new approval.
        Requested => "requested",
        /// Enough people approved.
        Approved => "approved",
        /// A person rejected it.
        Rejected => "rejected",
        /// Not decided, or not used, in time.
        Expired => "expired",
        /// The approved call went through.
        Used => "used",
    }
}

/// Seconds to minutes to days: people decide.
const DECISION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

/// Handles to the approval metrics.
#[derive(Clone)]
pub(crate) struct ApprovalMetrics {
    total: IntCounterVec,
    /// `tollgate_approvals_pending`.
    pending: IntGauge,
    /// `tollgate_approval_decision_duration_seconds`.
    decision_seconds: Histogram,
    /// `tollgate_approval_notifications_total{result}`.
    notifications: IntCounterVec,
}

impl ApprovalMetrics {
    /// Registers the approval metrics in `registry`.
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let total = IntCounterVec::new(
            Opts::new(
                "tollgate_approvals_total",
                "Approvals of held tool calls, by policy, rule, tool and outcome.",
            ),
            &["policy", "rule", "tool", "outcome"],
        )?;
        let pending = IntGauge::new(
            "tollgate_approvals_pending",
            "Approvals waiting for a person.",
        )?;
        let decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_approval_decision_duration_seconds",
                "Time from a call asking for approval to its approval (all of minApprovals) or rejection.",
            )
            .buckets(DECISION_BUCKETS.to_vec()),
        )?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "tollgate_approval_notifications_total",
                "Approval notifications to a rule's own webhook or --approval-webhook, by result (delivered, failed after every retry, dropped, no_key: the rule's key could not be read).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(decision_seconds.clone()))?;
        Ok(ApprovalMetrics {
            total,
            pending,
            decision_seconds,
            notifications,
        })
    }

    /// `n` approvals wait for a person now.
    pub(crate) fn pending(&self, n: usize) {
        self.pending.set(n as i64);
    }

    /// A person (or all of `minApprovals`) decided `waited` after the call
    /// asked.
    pub(crate) fn decision_took(&self, waited: std::time::Duration) {
        self.decision_seconds.observe(waited.as_secs_f64());
    }

    /// The counter the notifier counts its deliveries in.
    pub(crate) fn notifications(&self) -> IntCounterVec {
        self.notifications.clone()
    }

    /// Counts `outcome` for the approval `r`.
    pub(crate) fn count(&self, r: &Record, outcome: Outcome) {
        self.total
            .with_label_values(&[
                &r.call.policy,
                &r.call.rule,
                &r.tool_label,
                outcome.as_str(),
            ])
            .inc();
    }
}
