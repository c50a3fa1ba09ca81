//! The controller's Prometheus metrics (`tollgate_controller_*`).

use std::time::Duration;

use tollgate_runtime::label_values;
use tollgate_runtime::labels::ByLabel;
use tollgate_runtime::token_review::AuthFailure;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Push latencies: from the index producing a snapshot to sending or to
/// the sidecar acknowledging it.
const PUSH_BUCKETS: &[f64] = &[
    1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

label_values! {
    /// What a watch event was about.
    pub enum WatchKind {
        /// An McpToolPolicy.
        Policy => "policy",
        /// A ClusterMcpToolPolicy.
        ClusterPolicy => "cluster_policy",
        /// A pod running a sidecar.
        Pod => "pod",
        /// A namespace (its labels, for cluster policies).
        Namespace => "namespace",
    }
}

label_values! {
    /// What happened to the watched object.
    pub enum WatchEvent {
        /// Created or changed (or listed).
        Apply => "apply",
        /// Deleted.
        Delete => "delete",
    }
}

label_values! {
    /// Whether a policy compiles.
    pub enum PolicyState {
        /// Its newest generation is in force.
        Accepted => "accepted",
        /// Its newest generation was refused.
        Invalid => "invalid",
    }
}

label_values! {
    /// The result of a status patch.
    pub enum WriteResult {
        /// Written.
        Success => "success",
        /// The apiserver refused or did not answer.
        Error => "error",
    }
}

label_values! {
    /// Which webhook answered.
    pub enum WebhookRoute {
        /// The namespace-label webhook.
        Namespace => "namespace",
        /// The pod-label webhook.
        Pod => "pod",
        /// Decisions on held tool calls (`McpToolCallApproval` updates).
        Approval => "approval",
    }
}

label_values! {
    /// What the webhook answered.
    pub enum WebhookResult {
        /// The sidecar was added.
        Injected => "injected",
        /// The pod does not opt in (or already has a sidecar).
        Skipped => "skipped",
        /// The pod opts in but cannot be injected; refused with a message.
        Denied => "denied",
        /// The review could not be read.
        Error => "error",
        /// A person's decision on a held tool call, recorded as their vote.
        Recorded => "recorded",
    }
}

/// `tollgate_webhook_requests_total{route,result}`, resolved.
pub(crate) type WebhookCounters = ByLabel<WebhookRoute, ByLabel<WebhookResult, IntCounter>>;

/// Handles to the controller's metrics.
#[derive(Clone)]
pub(crate) struct ControllerMetrics {
    registry: Registry,
    /// `tollgate_controller_watch_events_total{kind,event}`: objects applied to the index.
    watch_events: ByLabel<WatchKind, ByLabel<WatchEvent, IntCounter>>,
    /// `tollgate_controller_policies{state}`: accepted and invalid policies.
    policies: ByLabel<PolicyState, IntGauge>,
    /// `tollgate_controller_sidecar_pods`: pods with a sidecar the index knows.
    sidecar_pods: IntGauge,
    /// `tollgate_controller_streams`: sidecars connected to this replica.
    streams: IntGauge,
    /// `tollgate_controller_snapshots_sent_total`.
    snapshots_sent: IntCounter,
    /// `tollgate_controller_push_seconds`: snapshot produced → sent.
    push_seconds: Histogram,
    /// `tollgate_controller_ack_seconds`: snapshot produced → acknowledged.
    ack_seconds: Histogram,
    /// `tollgate_controller_acks_total`.
    acks: IntCounter,
    /// `tollgate_controller_auth_failures_total{reason}`.
    auth_failures: ByLabel<AuthFailure, IntCounter>,
    /// `tollgate_controller_status_writes_total{result}`.
    status_writes: ByLabel<WriteResult, IntCounter>,
    /// `tollgate_controller_leader`: 1 while this replica writes status.
    leader: IntGauge,
    /// `tollgate_controller_ready`: 1 once the watches have listed everything.
    ready: IntGauge,
    /// `tollgate_webhook_requests_total{route,result}`: admission reviews
    /// answered (`injected`, `skipped`, `denied`, `error`).
    webhook_requests: WebhookCounters,
    /// `tollgate_log_lines_dropped_total`.
    log_lines_dropped: IntCounter,
}

impl ControllerMetrics {
    /// Pods with a sidecar the index knows, now.
    pub(crate) fn sidecar_pods(&self, n: usize) {
        self.sidecar_pods.set(n as i64);
    }

    /// A sidecar's stream to this replica opened.
    pub(crate) fn stream_opened(&self) {
        self.streams.inc();
    }

    /// A sidecar's stream to this replica closed.
    pub(crate) fn stream_closed(&self) {
        self.streams.dec();
    }

    /// A snapshot went out `waited` after it was produced.
    pub(crate) fn snapshot_sent(&self, waited: Duration) {
        self.snapshots_sent.inc();
        self.push_seconds.observe(waited.as_secs_f64());
    }

    /// A sidecar acknowledged a snapshot; `delivered` is how long after the
    /// snapshot was produced, for the first ack of the current snapshot
    /// (a repeated ack is not a new delivery).
    pub(crate) fn acked(&self, delivered: Option<Duration>) {
        self.acks.inc();
        if let Some(d) = delivered {
            self.ack_seconds.observe(d.as_secs_f64());
        }
    }

    /// Whether this replica holds the Lease (and writes status).
    pub(crate) fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Whether the watches have listed everything.
    pub(crate) fn ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The leader gauge itself, for tests that watch it change.
    #[cfg(test)]
    pub(crate) fn leader_gauge(&self) -> IntGauge {
        self.leader.clone()
    }

    /// Registers every metric.
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let watch_events = IntCounterVec::new(
            Opts::new(
                "tollgate_controller_watch_events_total",
                "Watch events applied to the index.",
            ),
            &["kind", "event"],
        )?;
        let policies = IntGaugeVec::new(
            Opts::new("tollgate_controller_policies", "McpToolPolicies by state."),
            &["state"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "tollgate_controller_auth_failures_total",
                "Sidecar requests refused, by reason.",
            ),
            &["reason"],
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "tollgate_controller_status_writes_total",
                "Status patches, by result.",
            ),
            &["result"],
        )?;
        let webhook_requests = IntCounterVec::new(
            Opts::new(
                "tollgate_webhook_requests_total",
                "Pod admission reviews answered, by webhook and result.",
            ),
            &["route", "result"],
        )?;
        let m = ControllerMetrics {
            watch_events: ByLabel::new(|k| {
                ByLabel::new(|e| watch_events.with_label_values(&[k, e]))
            }),
            policies: ByLabel::new(|st| policies.with_label_values(&[st])),
            auth_failures: ByLabel::new(|r| auth_failures.with_label_values(&[r])),
            status_writes: ByLabel::new(|r| status_writes.with_label_values(&[r])),
            webhook_requests: ByLabel::new(|route| {
                ByLabel::new(|r| webhook_requests.with_label_values(&[route, r]))
            }),
            sidecar_pods: IntGauge::new(
                "tollgate_controller_sidecar_pods",
                "Pods running a tollgate sidecar.",
            )?,
            streams: IntGauge::new(
                "tollgate_controller_streams",
                "Sidecars connected to this replica.",
            )?,
            snapshots_sent: IntCounter::new(
                "tollgate_controller_snapshots_sent_total",
                "Snapshots sent to sidecars.",
            )?,
            push_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tollgate_controller_push_seconds",
                    "Time from a snapshot being computed to it being sent.",
                )
                .buckets(PUSH_BUCKETS.to_vec()),
            )?,
            ack_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tollgate_controller_ack_seconds",
                    "Time from a snapshot being computed to the sidecar acknowledging it.",
                )
                .buckets(PUSH_BUCKETS.to_vec()),
            )?,
            acks: IntCounter::new(
                "tollgate_controller_acks_total",
                "Acknowledgements received.",
            )?,
            leader: IntGauge::new(
                "tollgate_controller_leader",
                "1 while this replica holds the lease and writes status.",
            )?,
            ready: IntGauge::new(
                "tollgate_controller_ready",
                "1 once the watches have listed everything.",
            )?,
            log_lines_dropped: tollgate_runtime::logging::dropped_lines_counter()?,
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(watch_events),
            Box::new(policies),
            Box::new(m.sidecar_pods.clone()),
            Box::new(m.streams.clone()),
            Box::new(m.snapshots_sent.clone()),
            Box::new(m.push_seconds.clone()),
            Box::new(m.ack_seconds.clone()),
            Box::new(m.acks.clone()),
            Box::new(auth_failures),
            Box::new(status_writes),
            Box::new(m.leader.clone()),
            Box::new(m.ready.clone()),
            Box::new(webhook_requests),
            Box::new(m.log_lines_dropped.clone()),
            Box::new(tollgate_runtime::build_info::gauge()?),
        ];
        for c in collectors {
            m.registry.register(c)?;
        }
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    /// Counts a watch event applied to the index.
    pub(crate) fn watch_event(&self, kind: WatchKind, event: WatchEvent) {
        self.watch_events.get(kind).get(event).inc();
    }

    /// Sets how many policies are accepted and invalid.
    pub(crate) fn set_policies(&self, accepted: usize, invalid: usize) {
        self.policies
            .get(PolicyState::Accepted)
            .set(accepted as i64);
        self.policies.get(PolicyState::Invalid).set(invalid as i64);
    }

    /// Counts a refused sidecar request.
    pub(crate) fn auth_failed(&self, reason: AuthFailure) {
        self.auth_failures.get(reason).inc();
    }

    /// Counts a status patch.
    pub(crate) fn status_written(&self, result: WriteResult) {
        self.status_writes.get(result).inc();
    }

    /// The webhook's counters, by route and result.
    pub(crate) fn webhook_requests(&self) -> WebhookCounters {
        self.webhook_requests.clone()
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> Vec<u8> {
        tollgate_runtime::logging::sync_dropped_lines(&self.log_lines_dropped);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
