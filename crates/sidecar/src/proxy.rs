//! The state every request handler shares: settings, the gate, the
//! upstream, sessions, open streams and caller identities.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http::request::Parts;
use hyper::body::Incoming;
use serde_json::Value;

use tollgate_mcp::json::StrictJsonError;
use tollgate_runtime::admin::Readiness;
use tollgate_runtime::body::{self, ReadError};

use crate::config::ProxyConfig;
use crate::gate::Gate;
use crate::identity::{Identities, IdentityError};
use crate::metrics::{Metrics, Table};
use crate::transport::discover;
use crate::transport::open_streams::{StreamLimits, Streams};
use crate::transport::parse::JsonReader;
use crate::transport::sessions::Sessions;
use crate::transport::upstream::Upstream;

/// Everything a request handler needs. Its parts are reached through
/// methods named for what handlers do with them, so the invariants that
/// tie two parts together (a session table and its gauge, a body and its
/// configured limits) live here and not at every call site.
pub(crate) struct Proxy {
    /// Settings; handlers see only the limits they apply.
    config: ProxyConfig,
    /// Decisions, their metrics and audit.
    gate: Gate,
    /// Metrics of everything else the transports do.
    metrics: Metrics,
    /// The MCP server behind.
    upstream: Upstream,
    /// Sessions the upstream issued.
    sessions: Sessions,
    /// Open server streams.
    streams: Arc<Streams>,
    /// Who is calling.
    identities: Identities,
    /// Reads client messages.
    json: JsonReader,
    /// Makes request spans; `None` (the default) when traces are off.
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

/// What a [`Proxy`] is made of; the session table, the stream limits and
/// the JSON reader follow from `config`.
pub(crate) struct ProxyParts {
    /// Settings.
    pub(crate) config: ProxyConfig,
    /// The gate.
    pub(crate) gate: Gate,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// The MCP server behind.
    pub(crate) upstream: Upstream,
    /// Who is calling.
    pub(crate) identities: Identities,
    /// Makes request spans, when traces are on.
    pub(crate) tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

impl Proxy {
    /// The shared state of a sidecar about to serve.
    pub(crate) fn new(parts: ProxyParts) -> Self {
        let config = parts.config;
        Proxy {
            gate: parts.gate,
            metrics: parts.metrics,
            upstream: parts.upstream,
            sessions: Sessions::new(),
            streams: Arc::new(Streams::new(StreamLimits {
                total: config.max_streams,
                per_caller: config.max_streams_per_caller,
            })),
            identities: parts.identities,
            json: JsonReader::new(config.max_json_values, config.parse_offload_above),
            tracer: parts.tracer,
            config,
        }
    }

    /// Where calls meet the rules.
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Metrics of the transports.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The MCP server behind.
    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The open server-to-client streams.
    pub(crate) fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    /// Makes request spans; `None` when traces are off.
    pub(crate) fn tracer(&self) -> Option<&opentelemetry_sdk::trace::SdkTracer> {
        self.tracer.as_ref()
    }

    /// The verified subject of a request's token; `None` for anonymous.
    pub(crate) async fn identify(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<String>, IdentityError> {
        self.identities.identify(headers).await
    }

    /// A client's request body, within `--max-body-bytes` and
    /// `--body-timeout`.
    pub(crate) async fn read_request(
        &self,
        parts: &Parts,
        body: Incoming,
    ) -> Result<Bytes, ReadError> {
        body::read_request(
            parts,
            body,
            self.config.max_body_bytes,
            self.config.body_read_timeout,
        )
        .await
    }

    /// A client message, read as strict JSON within the configured bound
    /// on values (off the serving thread when large).
    pub(crate) async fn parse(&self, bytes: Bytes) -> Result<Value, StrictJsonError> {
        self.json.parse(bytes).await
    }

    /// The most bytes of an upstream JSON response read to filter it, and
    /// how long the upstream may take: the limits on every upstream answer
    /// the proxy reads rather than streams.
    pub(crate) fn upstream_limits(&self) -> (usize, Duration) {
        (
            self.config.max_upstream_body_bytes,
            self.config.upstream_response_timeout,
        )
    }

    /// An upstream response body, within [`upstream_limits`](Self::upstream_limits).
    pub(crate) async fn read_upstream(
        &self,
        body: crate::transport::connections::UpstreamBody,
    ) -> Result<Bytes, ReadError> {
        let (limit, timeout) = self.upstream_limits();
        body::read(body, limit, timeout).await
    }

    /// Whether the upstream issued session `id` and it is still live (and
    /// now fresh again). A session found expired is forgotten, and the
    /// sessions gauge follows.
    pub(crate) fn session_known(&self, id: &str) -> bool {
        let known = self.sessions.touch(id, Instant::now());
        if !known {
            self.count_sessions();
        }
        known
    }

    /// The upstream issued session `id` to the caller `subject`.
    pub(crate) fn session_opened(&self, id: &str, subject: Option<&str>) {
        self.sessions.insert(id, subject, Instant::now());
        self.count_sessions();
    }

    /// The upstream ended session `id`.
    pub(crate) fn session_closed(&self, id: &str) {
        self.sessions.remove(id);
        self.count_sessions();
    }

    fn count_sessions(&self) {
        self.metrics.sessions(self.sessions.len());
    }

    /// Learns the upstream's tools from the upstream itself, unless known
    /// already or tried less than a second ago (a slow or broken upstream
    /// must not slow every call). True once they are known.
    pub(crate) async fn ensure_catalog(&self, path: &str) -> bool {
        if self.gate.catalog().current() {
            return true;
        }
        // Boxed for the same reason as approvals in `Gate::decide`: the
        // discovery's HTTP exchange would otherwise size every call's future.
        Box::pin(self.discover_catalog(path)).await
    }

    /// [`Self::ensure_catalog`] when the tools are not known yet.
    async fn discover_catalog(&self, path: &str) -> bool {
        let catalog = self.gate.catalog();
        let mut last = catalog.discovering().await;
        if catalog.current() {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return catalog.loaded();
        }
        *last = Some(Instant::now());
        let generation = catalog.generation();
        match discover::list_tools(&self.upstream, path, Duration::from_secs(5)).await {
            Ok(tools) => {
                catalog.replace(&tools, generation, path);
                tracing::info!(tools = tools.len(), path, "learned the upstream's tools");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, path, "cannot list the upstream's tools yet; calls that rules on created objects, arguments or what tools do judge are refused until it can");
                catalog.loaded()
            }
        }
    }

    /// The upstream announced that its tool list changed: the catalogue is
    /// stale until read again, which starts now (and is retried for a
    /// while), so rules that select tools by what they do judge the new
    /// list, not the old one.
    pub(crate) fn tools_changed(self: &Arc<Self>) {
        self.gate.catalog().invalidate();
        tracing::info!("the upstream's tool list changed; reading it again");
        let proxy = self.clone();
        tokio::spawn(async move {
            let path = proxy.gate.catalog().path().unwrap_or_else(|| "/mcp".into());
            for _ in 0..30 {
                proxy.ensure_catalog(&path).await;
                if proxy.gate.catalog().current() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

impl tollgate_runtime::admin::AdminState for Proxy {
    fn metrics(&self) -> Vec<u8> {
        let (buckets, records) = self.gate.tables();
        self.metrics.table(Table::RateLimitBuckets, buckets);
        self.metrics.table(Table::InFlightRecords, records);
        self.metrics.table(Table::Sessions, self.sessions.stats());
        self.metrics.table(Table::Streams, self.streams.stats());
        self.metrics.budgets(&self.gate.size_usage());
        self.metrics.encode()
    }

    fn readiness(&self) -> Readiness {
        match self.gate.rules().current() {
            Some(rules) if !self.gate.catalog().loaded() && rules.set.needs_any_catalog() => {
                Readiness::NotReady(
                    "the MCP server's tool list has not been read yet, and the rules need it"
                        .into(),
                )
            }
            Some(rules) => Readiness::Ready(format!("rules {}", rules.set.version())),
            None if self.gate.fails_open() => Readiness::Ready("no rules yet, failing open".into()),
            None => Readiness::NotReady("no rules received from the controller yet".into()),
        }
    }
}
