//! The sidecar data path: a reverse proxy in front of one MCP server that
//! decides every `tools/call`, filters `tools/list`, and forwards everything
//! else.
//!
//! Rooms: [`server`] accepts and routes; [`post`] handles client messages,
//! [`stream`] server streams; [`gate`] is the only place calls meet policy;
//! [`store`] holds the rules in force and [`reload`] feeds it from files;
//! [`metrics`] and [`audit`] record what happened.

pub mod admin;
pub mod audit;
pub mod body;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod discover;
pub mod gate;
pub mod headers;
pub mod identity;
pub mod jwks;
pub mod managed;
pub mod metrics;
pub mod post;
pub mod relay;
pub mod reload;
pub mod server;
pub mod sessions;
pub mod shared;
pub mod store;
pub mod stream;
pub mod streams;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::mcp::{jsonrpc, sse, tools};

pub use audit::{AuditConfig, AuditLevel};
pub use config::{
    IdentitySource, JwksSource, ProxyConfig, RuleSource, SharedStoreConfig, SharedStoreTls,
};

use gate::Gate;
use metrics::Metrics;
use sessions::Sessions;
use store::RuleStore;
use streams::Streams;
use upstream::Upstream;

/// Everything a request handler needs.
pub struct Proxy {
    /// Settings.
    pub config: ProxyConfig,
    /// Decisions, metrics, audit.
    pub gate: Gate,
    /// The MCP server behind.
    pub upstream: Upstream,
    /// Sessions the upstream issued.
    pub sessions: Sessions,
    /// Open server streams.
    pub streams: Arc<Streams>,
    /// Who is calling.
    pub identities: identity::Identities,
}

impl Proxy {
    /// Learns the upstream's tools from the upstream itself, unless known
    /// already or tried less than 5 s ago (a slow or broken upstream must
    /// not slow every call).
    pub async fn ensure_catalog(&self, path: &str) {
        if self.gate.catalog.loaded() {
            return;
        }
        let mut last = self.gate.catalog.discovery.lock().await;
        if self.gate.catalog.loaded() || last.is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        *last = Some(Instant::now());
        match discover::list_tools(&self.upstream, path, Duration::from_secs(5)).await {
            Ok(tools) => {
                self.gate.catalog.learn(&tools);
                tracing::info!(tools = tools.len(), path, "learned the upstream's tools");
            }
            Err(e) => {
                tracing::warn!(error = %e, path, "cannot list the upstream's tools yet; rules on what tools create will fail closed")
            }
        }
    }
}

/// A started proxy.
pub struct Running {
    /// Where agents connect.
    pub listen: SocketAddr,
    /// Where the admin endpoints are.
    pub admin: SocketAddr,
    /// The shared state.
    pub proxy: Arc<Proxy>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the grace
    /// period), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Loads the rules, binds both listeners and starts serving.
pub async fn start(config: ProxyConfig, audit: AuditConfig) -> anyhow::Result<Running> {
    let metrics = Metrics::new().context("registering metrics")?;
    let store = Arc::new(RuleStore::new());
    // Shared by the gate and, in managed mode, fed by the controller.
    let in_flight = Arc::new(crate::policy::inflight::MemoryInFlight::default());
    let cluster = Arc::new(cluster::ClusterState::default());
    let follower = match &config.rules {
        RuleSource::Files(paths) => {
            if let reload::Outcome::Refused(problems) = reload::reload(paths, &store, &metrics) {
                anyhow::bail!("the policy files are invalid:\n{problems}");
            }
            None
        }
        RuleSource::Controller(managed) => {
            let follower = managed::Follower::new(
                managed.clone(),
                store.clone(),
                metrics.clone(),
                in_flight.clone(),
                cluster.clone(),
            );
            follower.restore();
            Some(follower)
        }
    };
    let upstream = Upstream::new(
        config.upstream.clone(),
        config.upstream_connect_timeout,
        config.upstream_response_timeout,
    )
    .map_err(anyhow::Error::msg)?;
    let identities = identities(&config).await?;
    let shared = match &config.shared_store {
        Some(s) => {
            Some(shared::SharedStore::connect(s, metrics.clone()).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let listener = server::bind(config.listen, "--listen").await?;
    let admin_listener = server::bind(config.admin_listen, "--admin-listen").await?;
    let listen = listener.local_addr()?;
    let admin = admin_listener.local_addr()?;

    let proxy = Arc::new(Proxy {
        gate: Gate {
            fail_open: matches!(&config.rules, RuleSource::Controller(m) if m.fail_open),
            in_flight,
            cluster,
            shared,
            ..Gate::new(store.clone(), metrics.clone(), audit)
        },
        identities,
        upstream,
        sessions: Sessions::new(),
        streams: Arc::new(Streams::default()),
        config: config.clone(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let p = proxy.clone();
    tasks.push(tokio::spawn(server::serve(
        listener,
        move |req| server::route(p.clone(), req),
        config.max_connections,
        config.header_read_timeout,
        shutdown_rx.clone(),
        config.shutdown_grace,
        {
            let gauge = metrics.connections.clone();
            move |delta| gauge.add(delta)
        },
    )));
    let p = proxy.clone();
    tasks.push(tokio::spawn(server::serve(
        admin_listener,
        move |req| admin::route(p.clone(), req),
        64,
        config.header_read_timeout,
        shutdown_rx.clone(),
        Duration::from_secs(1),
        |_| {},
    )));
    match (&config.rules, follower) {
        (RuleSource::Files(paths), _) => tasks.push(tokio::spawn(reload::watch_files(
            paths.clone(),
            store.clone(),
            metrics.clone(),
            config.reload_interval,
            shutdown_rx.clone(),
        ))),
        (RuleSource::Controller(_), Some(follower)) => {
            tasks.push(tokio::spawn(follower.run(shutdown_rx.clone())))
        }
        (RuleSource::Controller(_), None) => {}
    }

    tasks.push(tokio::spawn(announce_changes(
        proxy.clone(),
        shutdown_rx.clone(),
    )));
    if let (Some(identity::Verifier::Jwt(jwt)), IdentitySource::Jwt { keys, issuer, .. }) =
        (&proxy.identities.verifier, &config.identity)
    {
        metrics.register_jwks();
        let failing = metrics.jwks_reload_failing.clone();
        tasks.push(match keys {
            JwksSource::File(_) => tokio::spawn(identity::watch_jwks(
                jwt.clone(),
                failing,
                config.reload_interval,
                shutdown_rx.clone(),
            )),
            JwksSource::Https {
                url,
                ca_file,
                refresh,
            } => {
                let location = match (url, issuer) {
                    (Some(url), _) => jwks::Location::Url(
                        url.parse()
                            .map_err(|e| anyhow::anyhow!("--jwks-url {url:?}: {e}"))?,
                    ),
                    (None, Some(issuer)) => jwks::Location::Discovered {
                        issuer: issuer.clone(),
                    },
                    (None, None) => anyhow::bail!(
                        "--identity jwt needs --jwks-file, --jwks-url or --jwt-issuer"
                    ),
                };
                let fetcher =
                    jwks::Fetcher::new(location, ca_file.as_deref()).map_err(anyhow::Error::msg)?;
                tokio::spawn(jwks::watch(
                    jwt.clone(),
                    fetcher,
                    *refresh,
                    jwt.wanted.clone(),
                    failing,
                    shutdown_rx.clone(),
                ))
            }
        });
    }
    tasks.push(tokio::spawn(sweep(proxy.clone(), shutdown_rx)));
    let p = proxy.clone();
    tokio::spawn(async move {
        let base = p.upstream.uri_for(None);
        let path = if base.path().trim_end_matches('/').is_empty() {
            "/mcp"
        } else {
            "/"
        };
        p.ensure_catalog(path).await;
    });

    tracing::info!(
        %listen,
        %admin,
        upstream = %config.upstream,
        version = store.current().map(|r| r.set.version().to_owned()).unwrap_or_default(),
        "tollgate proxy ready"
    );
    Ok(Running {
        listen,
        admin,
        proxy,
        shutdown,
        tasks,
    })
}

/// The configured caller verification.
async fn identities(config: &ProxyConfig) -> anyhow::Result<identity::Identities> {
    let verifier = match &config.identity {
        IdentitySource::None => None,
        IdentitySource::Jwt {
            keys,
            issuer,
            audience,
        } => Some(identity::Verifier::Jwt(Arc::new(match keys {
            JwksSource::File(path) => {
                identity::JwtVerifier::from_file(path, issuer.clone(), audience.clone())
                    .map_err(anyhow::Error::msg)?
            }
            JwksSource::Https { .. } => {
                identity::JwtVerifier::awaiting_keys(issuer.clone(), audience.clone())
            }
        }))),
        IdentitySource::Kubernetes {
            audience,
            kubeconfig,
        } => {
            let client = crate::controller::client(kubeconfig.as_deref())
                .await
                .context("--identity kubernetes reviews tokens with the Kubernetes API")?;
            Some(identity::Verifier::Kubernetes(Box::new(
                crate::controller::auth::Authenticator::new(client, audience),
            )))
        }
    };
    if config.require_identity && verifier.is_none() {
        anyhow::bail!("--require-identity needs --identity jwt or --identity kubernetes");
    }
    Ok(identity::Identities {
        verifier,
        required: config.require_identity,
    })
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(config: ProxyConfig, audit: AuditConfig) -> anyhow::Result<()> {
    let running = start(config, audit).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Tells clients with an open stream to re-list tools when the rules
/// change, since what `tools/list` hides may have changed.
async fn announce_changes(proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = proxy.gate.store.subscribe();
    let event = sse::encode(
        Some("message"),
        None,
        &jsonrpc::notification(tools::LIST_CHANGED).to_string(),
    );
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                proxy.streams.broadcast(event.clone());
            }
        }
    }
}

/// Drops idle rate-limit buckets once a minute.
async fn sweep(proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => proxy.gate.counter.sweep(Instant::now()),
        }
    }
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
