//! The controller's Prometheus metrics (`tollgate_controller_*`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Push latencies: from the index producing a snapshot to sending or to
/// the sidecar acknowledging it.
const PUSH_BUCKETS: &[f64] = &[
    1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Handles to the controller's metrics.
#[derive(Clone)]
pub struct ControllerMetrics {
    registry: Registry,
    /// `tollgate_controller_watch_events_total{kind,event}`: objects applied to the index.
    pub watch_events: IntCounterVec,
    /// `tollgate_controller_policies{state}`: accepted and invalid policies.
    pub policies: IntGaugeVec,
    /// `tollgate_controller_sidecar_pods`: pods with a sidecar the index knows.
    pub sidecar_pods: IntGauge,
    /// `tollgate_controller_streams`: sidecars connected to this replica.
    pub streams: IntGauge,
    /// `tollgate_controller_snapshots_sent_total`.
    pub snapshots_sent: IntCounter,
    /// `tollgate_controller_push_seconds`: snapshot produced → sent.
    pub push_seconds: Histogram,
    /// `tollgate_controller_ack_seconds`: snapshot produced → acknowledged.
    pub ack_seconds: Histogram,
    /// `tollgate_controller_acks_total`.
    pub acks: IntCounter,
    /// `tollgate_controller_auth_failures_total{reason}`.
    pub auth_failures: IntCounterVec,
    /// `tollgate_controller_status_writes_total{result}`.
    pub status_writes: IntCounterVec,
    /// `tollgate_controller_leader`: 1 while this replica writes status.
    pub leader: IntGauge,
    /// `tollgate_controller_ready`: 1 once the watches have listed everything.
    pub ready: IntGauge,
    /// `tollgate_webhook_requests_total{route,result}`: admission reviews
    /// answered (`injected`, `skipped`, `denied`, `error`).
    pub webhook_requests: IntCounterVec,
    /// `tollgate_log_lines_dropped_total`.
    log_lines_dropped: IntCounter,
}

impl ControllerMetrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = ControllerMetrics {
            watch_events: IntCounterVec::new(
                Opts::new(
                    "tollgate_controller_watch_events_total",
                    "Watch events applied to the index.",
                ),
                &["kind", "event"],
            )?,
            policies: IntGaugeVec::new(
                Opts::new("tollgate_controller_policies", "McpToolPolicies by state."),
                &["state"],
            )?,
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
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "tollgate_controller_auth_failures_total",
                    "Sidecar requests refused, by reason.",
                ),
                &["reason"],
            )?,
            status_writes: IntCounterVec::new(
                Opts::new(
                    "tollgate_controller_status_writes_total",
                    "Status patches, by result.",
                ),
                &["result"],
            )?,
            leader: IntGauge::new(
                "tollgate_controller_leader",
                "1 while this replica holds the lease and writes status.",
            )?,
            ready: IntGauge::new(
                "tollgate_controller_ready",
                "1 once the watches have listed everything.",
            )?,
            webhook_requests: IntCounterVec::new(
                Opts::new(
                    "tollgate_webhook_requests_total",
                    "Pod admission reviews answered, by webhook and result.",
                ),
                &["route", "result"],
            )?,
            log_lines_dropped: tollgate_runtime::logging::dropped_lines_counter()?,
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.watch_events.clone()),
            Box::new(m.policies.clone()),
            Box::new(m.sidecar_pods.clone()),
            Box::new(m.streams.clone()),
            Box::new(m.snapshots_sent.clone()),
            Box::new(m.push_seconds.clone()),
            Box::new(m.ack_seconds.clone()),
            Box::new(m.acks.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.status_writes.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.webhook_requests.clone()),
            Box::new(m.log_lines_dropped.clone()),
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Vec<u8> {
        tollgate_runtime::logging::sync_dropped_lines(&self.log_lines_dropped);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
