//! The sidecar's Prometheus metrics.
//!
//! Every label value comes from a bounded set: policy and rule names are the
//! operator's, decisions and reasons are enums, and tool names are only
//! used when the upstream listed them or a policy names them exactly (see
//! [`crate::rules::catalog`]); anything else is counted as `(unlisted)`. Arguments,
//! ids and sessions never become labels.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use tollgate_policy::budget::{BudgetUsage, TableStats};
use tollgate_policy::spec::SizeResource;
use tollgate_policy::{Decision, Effect};
use tollgate_runtime::label_values;
use tollgate_runtime::labels::ByLabel;
use tollgate_runtime::serve::ConnectionEvent;
use tollgate_runtime::slots::Reclaim;

use crate::would_deny::WouldDenyTally;

label_values! {
    /// Why a client request was refused before any policy decision
    /// (`tollgate_requests_rejected_total{reason}`).
    pub enum Rejection {
        /// Not JSON, not strict JSON, or not JSON-RPC.
        Malformed => "malformed",
        /// `Mcp-Method`/`Mcp-Name` disagree with the body.
        HeaderMismatch => "header_mismatch",
        /// A JSON-RPC message that is not a valid request, notification or response.
        InvalidRequest => "invalid_request",
        /// Not `application/json` in UTF-8.
        ContentType => "content_type",
        /// A compressed body.
        ContentEncoding => "content_encoding",
        /// An HTTP method MCP does not use.
        Method => "method",
        /// A body over `--max-body-bytes`.
        TooLarge => "too_large",
        /// A body that did not arrive within `--body-read-timeout`.
        Timeout => "timeout",
        /// A body whose connection failed while it was read.
        Io => "io",
        /// More values than `--max-json-values`.
        TooComplex => "too_complex",
        /// A GET stream past its caller's share or the proxy's total
        /// (`--max-streams-per-caller`, `--max-streams`).
        TooManyStreams => "too_many_streams",
        /// A legacy session with too many unanswered `tools/list` requests.
        PendingLists => "pending_lists",
    }
}

label_values! {
    /// A bounded table of the sidecar (`tollgate_table_entries{table}`).
    pub enum Table {
        /// MCP sessions the upstream issued.
        Sessions => "sessions",
        /// In-memory rate-limit buckets.
        RateLimitBuckets => "rate_limit_buckets",
        /// Admitted objects remembered until the cluster counts them.
        InFlightRecords => "in_flight_records",
        /// Open server-to-client event streams.
        Streams => "streams",
    }
}

label_values! {
    /// Which bound of a table a new entry met
    /// (`tollgate_table_full_total{table,share}`).
    pub enum Share {
        /// The caller's own share (subject, else session; see the data-path limits doc).
        Caller => "caller",
        /// The whole table.
        Total => "total",
    }
}

label_values! {
    /// How an upstream request failed (`tollgate_upstream_errors_total{kind}`).
    pub enum UpstreamFailure {
        /// Nothing accepted the connection.
        Connect => "connect",
        /// No answer in time.
        Timeout => "timeout",
        /// The exchange broke or the response could not be read.
        Protocol => "protocol",
        /// A stdio server ended before it answered.
        Exited => "exited",
        /// A stdio server wrote a line that is not JSON-RPC, or one over the limit.
        Unreadable => "unreadable",
    }
}

label_values! {
    /// The MCP method of a forwarded request, for upstream latency
    /// (`tollgate_upstream_request_duration_seconds{method}`).
    pub enum McpMethod {
        /// `tools/call`.
        ToolsCall => "tools/call",
        /// `tools/list`.
        ToolsList => "tools/list",
        /// `initialize`.
        Initialize => "initialize",
        /// Any other request or notification.
        Other => "other",
        /// A response from the client.
        Response => "response",
        /// A JSON-RPC batch.
        Batch => "batch",
    }
}

label_values! {
    /// The result of loading rules (`tollgate_policy_reloads_total{result}`).
    pub enum ReloadResult {
        /// New rules are in force.
        Success => "success",
        /// The rules were refused; the previous ones stay.
        Failure => "failure",
    }
}

label_values! {
    /// Why a snapshot from the controller was refused
    /// (`tollgate_snapshots_rejected_total{reason}`); the rules in force stay.
    pub enum SnapshotRejection {
        /// Not a snapshot this sidecar can read.
        Unreadable => "unreadable",
        /// It does not compile here (version skew).
        Invalid => "invalid",
        /// It names another pod.
        OtherPod => "other_pod",
    }
}

label_values! {
    /// Why a caller's token was refused (`tollgate_identity_failures_total{reason}`).
    pub enum IdentityFailure {
        /// No token, and one is required.
        Missing => "missing",
        /// The token does not verify.
        Invalid => "invalid",
        /// The verifier could not be asked.
        Unavailable => "unavailable",
    }
}

/// A size budget's amount in base units: bytes, or CPU cores.
fn base_units(resource: SizeResource, amount: u64) -> f64 {
    match resource {
        SizeResource::Cpu => amount as f64 / 1000.0,
        SizeResource::Storage | SizeResource::Memory => (amount as f64) * f64::from(1u32 << 20),
    }
}

/// Label value for a decision no policy made (no policies, or malformed).
pub(crate) const NO_POLICY: &str = "(none)";
/// Label value for a decision made by `defaultAction`, not a rule.
pub(crate) const NO_RULE: &str = "(default)";
/// Label value for a tool name outside the bounded set.
pub(crate) const UNLISTED_TOOL: &str = "(unlisted)";
/// Label value for a message too broken to have a tool name.
pub(crate) const UNPARSED_TOOL: &str = "(unparsed)";

/// Decision latencies are microseconds; upstream ones milliseconds to minutes.
const DECISION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2,
];
const UPSTREAM_BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// Handles to every metric the proxy updates.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `tollgate_tool_calls_total{policy,rule,tool,decision,reason}`.
    tool_calls: IntCounterVec,
    /// `tollgate_decision_duration_seconds`.
    decision_seconds: Histogram,
    /// `tollgate_upstream_request_duration_seconds{method}`.
    upstream_seconds: ByLabel<McpMethod, Histogram>,
    /// `tollgate_upstream_errors_total{kind}`.
    upstream_errors: ByLabel<UpstreamFailure, IntCounter>,
    /// `tollgate_requests_rejected_total{reason}`.
    rejected: ByLabel<Rejection, IntCounter>,
    /// `tollgate_tools_hidden_total`.
    tools_hidden: IntCounter,
    /// `tollgate_policy_reloads_total{result}`.
    reloads: ByLabel<ReloadResult, IntCounter>,
    /// `tollgate_policy_reload_failing`: 1 while the newest policy files are
    /// refused and older rules stay in force.
    reload_failing: IntGauge,
    /// `tollgate_policy_info{version}`: 1 for the rules in force.
    policy_info: IntGaugeVec,
    /// `tollgate_policy_rules`: rules in force, over all policies.
    policy_rules: IntGauge,
    /// `tollgate_policy_last_reload_timestamp_seconds`.
    last_reload: IntGauge,
    /// `tollgate_sessions`: MCP sessions the proxy knows of.
    sessions: IntGauge,
    /// `tollgate_streams`: open server-to-client event streams.
    streams: IntGauge,
    /// `tollgate_connections`: open client connections.
    connections: IntGauge,
    /// `tollgate_connections_reclaimed_total{reason}`: connections closed
    /// to free their slot.
    connections_reclaimed: ByLabel<Reclaim, IntCounter>,
    /// `tollgate_connections_refused_total`: clients refused because every
    /// slot was serving a request.
    connections_refused: IntCounter,
    /// `tollgate_table_entries{table}`.
    table_entries: ByLabel<Table, IntGauge>,
    /// `tollgate_table_full_total{table,share}`.
    table_full: ByLabel<Table, ByLabel<Share, IntCounter>>,
    /// `tollgate_sidecar_controller_connected`: 1 while the sidecar holds
    /// a stream to the controller (managed mode). Named for the sidecar:
    /// `tollgate_controller_*` are the controller's own metrics.
    controller_connected: IntGauge,
    /// `tollgate_sidecar_controller_last_contact_timestamp_seconds`: when
    /// the controller was last heard from; alert on `time() - this`.
    controller_last_contact: IntGauge,
    /// `tollgate_sidecar_controller_reconnects_total`.
    controller_reconnects: IntCounter,
    /// `tollgate_snapshots_rejected_total{reason}`: controller snapshots
    /// refused, the rules in force kept.
    snapshots_rejected: ByLabel<SnapshotRejection, IntCounter>,
    /// The same, for registration in managed mode.
    snapshots_rejected_vec: IntCounterVec,
    /// `tollgate_ratelimit_store_up`: 1 while Redis answers (shared limits).
    store_up: IntGauge,
    /// `tollgate_ratelimit_store_errors_total`: Redis operations that failed.
    store_errors: IntCounter,
    /// `tollgate_identity_failures_total{reason}`: tokens refused.
    identity_failures: ByLabel<IdentityFailure, IntCounter>,
    /// `tollgate_jwks_reload_failing`: 1 while a changed JWKS file is
    /// refused and the previous keys stay in force (`--identity jwt`).
    jwks_reload_failing: IntGauge,
    /// `tollgate_log_lines_dropped_total`: audit and log lines lost.
    log_lines_dropped: IntCounter,
    /// Audited calls of the last hour, for the controller's policy status.
    would_deny: Arc<WouldDenyTally>,
    /// `tollgate_budget_consumed_total{budget,resource}`.
    budget_consumed: CounterVec,
    /// `tollgate_budget_remaining{budget,resource}`.
    budget_remaining: GaugeVec,
    /// `tollgate_stdio_servers`: stdio MCP server processes running
    /// (`--upstream-command`: one per session).
    stdio_servers: IntGauge,
}

impl Metrics {
    /// Registers the shared-store metrics. Only sidecars with a Redis have
    /// them, so `tollgate_ratelimit_store_up == 0` always means a Redis that
    /// does not answer, never one that was not configured.
    pub fn register_store(&self) {
        let _ = self.registry.register(Box::new(self.store_up.clone()));
        let _ = self.registry.register(Box::new(self.store_errors.clone()));
    }

    /// Registers the controller-connection metrics: only managed sidecars
    /// have a controller, so a file-mode sidecar never shows one as down.
    pub fn register_controller(&self) {
        for c in [
            Box::new(self.controller_connected.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.controller_last_contact.clone()),
            Box::new(self.controller_reconnects.clone()),
            Box::new(self.snapshots_rejected_vec.clone()),
        ] {
            let _ = self.registry.register(c);
        }
    }

    /// The registry, for metrics registered by their own module.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers the stdio server gauge: only proxies that run their
    /// servers (`--upstream-command`) have it.
    pub fn register_stdio(&self) {
        let _ = self.registry.register(Box::new(self.stdio_servers.clone()));
    }

    /// Registers the JWKS metric: only sidecars with `--identity jwt` have it.
    pub fn register_jwks(&self) {
        let _ = self
            .registry
            .register(Box::new(self.jwks_reload_failing.clone()));
    }

    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let tool_calls = IntCounterVec::new(
            Opts::new(
                "tollgate_tool_calls_total",
                "tools/call decisions, by deciding policy and rule.",
            ),
            &["policy", "rule", "tool", "decision", "reason"],
        )?;
        let decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_decision_duration_seconds",
                "Time to decide one tools/call, rate-limit bookkeeping included.",
            )
            .buckets(DECISION_BUCKETS.to_vec()),
        )?;
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_upstream_request_duration_seconds",
                "Time until the upstream MCP server starts its response, by MCP method.",
            )
            .buckets(UPSTREAM_BUCKETS.to_vec()),
            &["method"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "tollgate_upstream_errors_total",
                "Requests the upstream MCP server did not answer.",
            ),
            &["kind"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "tollgate_requests_rejected_total",
                "Client requests refused before any policy decision, by reason.",
            ),
            &["reason"],
        )?;
        let tools_hidden = IntCounter::new(
            "tollgate_tools_hidden_total",
            "Tools removed from tools/list responses.",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new("tollgate_policy_reloads_total", "Policy loads, by result."),
            &["result"],
        )?;
        let reload_failing = IntGauge::new(
            "tollgate_policy_reload_failing",
            "1 while the newest policy is refused and the previous rules stay in force.",
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new(
                "tollgate_policy_info",
                "The version of the rules in force (value 1).",
            ),
            &["version"],
        )?;
        let policy_rules = IntGauge::new(
            "tollgate_policy_rules",
            "Rules in force, over all policies.",
        )?;
        let last_reload = IntGauge::new(
            "tollgate_policy_last_reload_timestamp_seconds",
            "When the rules in force were loaded (Unix time).",
        )?;
        let sessions = IntGauge::new("tollgate_sessions", "MCP sessions the proxy knows of.")?;
        let streams = IntGauge::new("tollgate_streams", "Open server-to-client event streams.")?;
        let connections = IntGauge::new("tollgate_connections", "Open client connections.")?;
        let connections_reclaimed = IntCounterVec::new(
            Opts::new(
                "tollgate_connections_reclaimed_total",
                "Client connections closed to free their slot: headers not sent in time, or unused, stalled or idle when a new client needed the slot.",
            ),
            &["reason"],
        )?;
        let connections_refused = IntCounter::new(
            "tollgate_connections_refused_total",
            "Clients refused with 503 because every connection slot was serving a request.",
        )?;
        let table_entries = IntGaugeVec::new(
            Opts::new(
                "tollgate_table_entries",
                "Entries in each bounded table of the sidecar.",
            ),
            &["table"],
        )?;
        let table_full = IntCounterVec::new(
            Opts::new(
                "tollgate_table_full_total",
                "New table entries that met a full share (the caller's, or the whole table's): refused, or for sessions, the least recently used forgotten.",
            ),
            &["table", "share"],
        )?;
        let controller_connected = IntGauge::new(
            "tollgate_sidecar_controller_connected",
            "1 while the sidecar holds a stream to the controller.",
        )?;
        let controller_last_contact = IntGauge::new(
            "tollgate_sidecar_controller_last_contact_timestamp_seconds",
            "When the controller was last heard from (Unix time).",
        )?;
        let controller_reconnects = IntCounter::new(
            "tollgate_sidecar_controller_reconnects_total",
            "Connections to the controller that ended.",
        )?;
        let jwks_reload_failing = IntGauge::new(
            "tollgate_jwks_reload_failing",
            "1 while a changed JWKS file is refused and the previous keys stay in force.",
        )?;
        let store_up = IntGauge::new(
            "tollgate_ratelimit_store_up",
            "1 while the shared rate-limit store (Redis) answers.",
        )?;
        let store_errors = IntCounter::new(
            "tollgate_ratelimit_store_errors_total",
            "Shared rate-limit store operations that failed.",
        )?;
        let identity_failures = IntCounterVec::new(
            Opts::new(
                "tollgate_identity_failures_total",
                "Caller tokens refused, by reason.",
            ),
            &["reason"],
        )?;
        let log_lines_dropped = tollgate_runtime::logging::dropped_lines_counter()?;
        // Labels: one series per size budget of the policies in force
        // (bounded by the policies' own size caps), and its resource.
        let budget_consumed = CounterVec::new(
            Opts::new(
                "tollgate_budget_consumed_total",
                "What size budgets admitted, in base units: bytes of storage or memory, CPU cores.",
            ),
            &["budget", "resource"],
        )?;
        let budget_remaining = GaugeVec::new(
            Opts::new(
                "tollgate_budget_remaining",
                "What is left of a size budget now, in base units, in its fullest bucket of this sidecar (budgets with scope Pod).",
            ),
            &["budget", "resource"],
        )?;
        let stdio_servers = IntGauge::new(
            "tollgate_stdio_servers",
            "stdio MCP server processes running (one per MCP session).",
        )?;
        let snapshots_rejected = IntCounterVec::new(
            Opts::new(
                "tollgate_snapshots_rejected_total",
                "Controller snapshots refused by this sidecar, by reason; the rules in force stay.",
            ),
            &["reason"],
        )?;
        for c in [
            Box::new(tool_calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(decision_seconds.clone()),
            Box::new(upstream_seconds.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(rejected.clone()),
            Box::new(tools_hidden.clone()),
            Box::new(reloads.clone()),
            Box::new(reload_failing.clone()),
            Box::new(policy_info.clone()),
            Box::new(policy_rules.clone()),
            Box::new(last_reload.clone()),
            Box::new(sessions.clone()),
            Box::new(streams.clone()),
            Box::new(connections.clone()),
            Box::new(connections_reclaimed.clone()),
            Box::new(connections_refused.clone()),
            Box::new(table_entries.clone()),
            Box::new(table_full.clone()),
            Box::new(identity_failures.clone()),
            Box::new(log_lines_dropped.clone()),
            Box::new(tollgate_runtime::build_info::gauge()?),
            Box::new(budget_consumed.clone()),
            Box::new(budget_remaining.clone()),
        ] {
            registry.register(c)?;
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            tool_calls,
            decision_seconds,
            upstream_seconds: ByLabel::new(|l| upstream_seconds.with_label_values(&[l])),
            upstream_errors: ByLabel::new(|l| upstream_errors.with_label_values(&[l])),
            rejected: ByLabel::new(|l| rejected.with_label_values(&[l])),
            tools_hidden,
            reloads: ByLabel::new(|l| reloads.with_label_values(&[l])),
            reload_failing,
            policy_info,
            policy_rules,
            last_reload,
            sessions,
            streams,
            connections,
            connections_reclaimed: ByLabel::new(|l| connections_reclaimed.with_label_values(&[l])),
            connections_refused,
            table_entries: ByLabel::new(|t| table_entries.with_label_values(&[t])),
            table_full: ByLabel::new(|t| {
                ByLabel::new(|share| table_full.with_label_values(&[t, share]))
            }),
            controller_connected,
            controller_last_contact,
            controller_reconnects,
            snapshots_rejected: ByLabel::new(|l| snapshots_rejected.with_label_values(&[l])),
            snapshots_rejected_vec: snapshots_rejected,
            store_up,
            jwks_reload_failing,
            store_errors,
            identity_failures: ByLabel::new(|l| identity_failures.with_label_values(&[l])),
            log_lines_dropped,
            would_deny: Arc::default(),
            budget_consumed,
            budget_remaining,
            stdio_servers,
        })
    }

    /// Brings the size-budget series up to `usage` (before a scrape).
    pub(crate) fn budgets(&self, usage: &[BudgetUsage]) {
        for u in usage {
            let labels = [u.id.0.as_ref(), u.resource.as_str()];
            let counter = self.budget_consumed.with_label_values(&labels);
            let total = base_units(u.resource, u.consumed);
            counter.inc_by((total - counter.get()).max(0.0));
            if let Some(left) = u.remaining {
                self.budget_remaining
                    .with_label_values(&labels)
                    .set(base_units(u.resource, left));
            }
        }
    }

    /// Counts one decision on a tool whose label value is `tool`.
    /// A decision took `elapsed` (for a call held for approval: the time
    /// people took to decide).
    pub(crate) fn decision_took(&self, elapsed: Duration) {
        self.decision_seconds.observe(elapsed.as_secs_f64());
    }

    /// `n` tools were left out of a `tools/list` answer.
    pub(crate) fn tools_hidden(&self, n: u64) {
        self.tools_hidden.inc_by(n);
    }

    /// Whether the newest policy files are refused (older rules in force).
    pub(crate) fn reload_failing(&self, failing: bool) {
        self.reload_failing.set(i64::from(failing));
    }

    /// The upstream's sessions the proxy knows of now.
    pub(crate) fn sessions(&self, n: usize) {
        self.sessions.set(n as i64);
    }

    /// A server-to-client event stream opened.
    pub(crate) fn stream_opened(&self) {
        self.streams.inc();
    }

    /// A server-to-client event stream closed.
    pub(crate) fn stream_closed(&self) {
        self.streams.dec();
    }

    /// The sidecar holds a stream to the controller.
    pub(crate) fn controller_connected(&self) {
        self.controller_connected.set(1);
    }

    /// The stream to the controller ended; the sidecar connects again.
    pub(crate) fn controller_lost(&self) {
        self.controller_connected.set(0);
        self.controller_reconnects.inc();
    }

    /// The controller was heard from at `unix_seconds`.
    pub(crate) fn controller_heard(&self, unix_seconds: i64) {
        self.controller_last_contact.set(unix_seconds);
    }

    /// Whether the shared store (Redis) answers.
    pub(crate) fn store_reachable(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// One operation on the shared store failed.
    pub(crate) fn store_failed(&self) {
        self.store_errors.inc();
    }

    /// The gauge the JWKS watch sets while a changed key set is refused.
    pub(crate) fn jwks_reload_failing(&self) -> IntGauge {
        self.jwks_reload_failing.clone()
    }

    /// Audited calls of the last hour, for the controller's policy status.
    pub(crate) fn would_deny(&self) -> &WouldDenyTally {
        &self.would_deny
    }

    /// The stdio MCP server processes running now.
    pub(crate) fn stdio_servers(&self, n: usize) {
        self.stdio_servers.set(n as i64);
    }

    pub fn count_decision(&self, d: &Decision, tool: &str) {
        if d.effect == Effect::Audited {
            self.would_deny.record(
                d.policy.clone().unwrap_or_else(|| NO_POLICY.into()),
                d.rule.clone().unwrap_or_else(|| NO_RULE.into()),
                unix_now(),
            );
        }
        self.tool_calls
            .with_label_values(&[
                d.policy.as_deref().unwrap_or(NO_POLICY),
                d.rule.as_deref().unwrap_or(NO_RULE),
                tool,
                d.effect.as_str(),
                d.reason.as_str(),
            ])
            .inc();
    }

    /// Counts a request refused before any decision.
    pub fn reject(&self, reason: Rejection) {
        self.rejected.get(reason).inc();
    }

    /// Counts a failed upstream request.
    pub fn upstream_failed(&self, kind: UpstreamFailure) {
        self.upstream_errors.get(kind).inc();
    }

    /// Records how long the upstream took to start answering a request.
    pub fn upstream_answered(&self, method: McpMethod, seconds: f64) {
        self.upstream_seconds.get(method).observe(seconds);
    }

    /// Counts a load of the rules.
    pub fn reloaded(&self, result: ReloadResult) {
        self.reloads.get(result).inc();
    }

    /// Counts a refused controller snapshot.
    pub fn snapshot_rejected(&self, reason: SnapshotRejection) {
        self.snapshots_rejected.get(reason).inc();
    }

    /// Counts what happened to a client connection.
    pub fn connection(&self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Opened => self.connections.inc(),
            ConnectionEvent::Closed => self.connections.dec(),
            ConnectionEvent::Reclaimed(reason) => self.connections_reclaimed.get(reason).inc(),
            ConnectionEvent::Refused => self.connections_refused.inc(),
        }
    }

    /// Records the size of `table` and brings its refusal counters up to
    /// `stats` (the tables count for themselves; this runs before a scrape).
    pub(crate) fn table(&self, table: Table, stats: TableStats) {
        self.table_entries.get(table).set(stats.entries as i64);
        let full = self.table_full.get(table);
        for (share, total) in [
            (Share::Caller, stats.refused_caller),
            (Share::Total, stats.refused_total),
        ] {
            let counter = full.get(share);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Counts a refused caller token.
    pub fn identity_failed(&self, reason: IdentityFailure) {
        self.identity_failures.get(reason).inc();
    }

    /// Records which rules are in force.
    pub fn set_policy(&self, version: &str, rules: usize) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[version]).set(1);
        self.policy_rules.set(rules as i64);
        self.last_reload.set(unix_now() as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        tollgate_runtime::logging::sync_dropped_lines(&self.log_lines_dropped);
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a failure would be a
        // metric with invalid content, which registration already rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Seconds since the Unix epoch (0 on a clock before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
