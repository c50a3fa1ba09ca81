//! The state every request handler shares: settings, the gate, the
//! upstream, sessions, open streams and caller identities.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_runtime::admin::Readiness;

use crate::config::ProxyConfig;
use crate::gate::Gate;
use crate::identity::Identities;
use crate::metrics::{Metrics, Table};
use crate::transport::discover;
use crate::transport::open_streams::Streams;
use crate::transport::parse::JsonReader;
use crate::transport::sessions::Sessions;
use crate::transport::upstream::Upstream;

/// Everything a request handler needs.
pub struct Proxy {
    /// Settings.
    pub(crate) config: ProxyConfig,
    /// Decisions, their metrics and audit.
    pub(crate) gate: Gate,
    /// Metrics of everything else the transports do.
    pub(crate) metrics: Metrics,
    /// The MCP server behind.
    pub(crate) upstream: Upstream,
    /// Sessions the upstream issued.
    pub(crate) sessions: Sessions,
    /// Open server streams.
    pub(crate) streams: Arc<Streams>,
    /// Who is calling.
    pub(crate) identities: Identities,
    /// Reads client messages.
    pub(crate) json: JsonReader,
    /// Makes request spans; `None` (the default) when traces are off.
    pub(crate) tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

impl Proxy {
    /// Learns the upstream's tools from the upstream itself, unless known
    /// already or tried less than a second ago (a slow or broken upstream
    /// must not slow every call). True once they are known.
    pub async fn ensure_catalog(&self, path: &str) -> bool {
        let catalog = self.gate.catalog();
        if catalog.current() {
            return true;
        }
        let mut last = catalog.discovery.lock().await;
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
