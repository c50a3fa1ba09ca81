//! Starting a sidecar: load the rules (files or controller), bind both
//! listeners, and spawn the tasks that keep rules, keys and budgets fresh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use tollgate_mcp::{jsonrpc, sse, tools};
use tollgate_runtime::otel::Telemetry;
use tollgate_runtime::serve;

use crate::approvals::cluster::ClusterApprovals;
use crate::approvals::metrics::ApprovalMetrics;
use crate::approvals::notify::{Notifier, NotifyKeys};
use crate::approvals::{Approvals, admin as approvals_admin};
use crate::audit::AuditConfig;
use crate::config::{IdentitySource, JwksSource, ProxyConfig, RuleSource};
use crate::gate::redis as shared;
use crate::gate::{Gate, GateParts};
use crate::identity::{self, jwks};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyParts};
use crate::rules::store::RuleStore;
use crate::rules::{cluster, controller as managed, files as reload};
use crate::transport::upstream::Upstream;

/// Why a sidecar could not start, said so the operator knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics could not be registered (a bug, not a setting).
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The policy files do not load.
    #[error("the policy files are invalid:\n{0}")]
    Policies(#[source] tollgate_policy::Problems),
    /// The upstream URL is unusable.
    #[error(transparent)]
    Upstream(#[from] crate::transport::upstream::UpstreamUrlError),
    /// The shared store (Redis) settings are unusable.
    #[error(transparent)]
    SharedStore(#[from] shared::StoreConfigError),
    /// The identity settings are unusable.
    #[error(transparent)]
    Identity(#[from] identity::SetupError),
    /// The key set for JWTs cannot be fetched as configured.
    #[error(transparent)]
    Jwks(#[from] jwks::FetcherError),
    /// The controller cannot be followed as configured.
    #[error(transparent)]
    Controller(#[from] managed::FollowerError),
    /// A listener could not be opened.
    #[error(transparent)]
    Bind(#[from] serve::BindError),
    /// The TLS client for approval notifications could not be built.
    #[error("setting up TLS for approval webhooks: {0}")]
    Notifier(#[source] rustls::Error),
    /// The `OTEL_*` environment asks for traces tollgate cannot export.
    #[error("traces: {0}")]
    Traces(#[from] tollgate_runtime::otel::OtelError),
    /// The address of a bound listener could not be read.
    #[error("reading a listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// A started proxy.
pub struct Running {
    /// Where agents connect.
    pub listen: SocketAddr,
    /// Where the admin endpoints are.
    pub admin: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    telemetry: Option<Telemetry>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the grace
    /// period), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(t) = self.telemetry {
            t.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// Loads the rules, binds both listeners and starts serving.
pub async fn start(config: ProxyConfig, audit: AuditConfig) -> Result<Running, StartError> {
    let metrics = Metrics::new()?;
    let store = Arc::new(RuleStore::new());
    // Shared by the gate and, in managed mode, fed by the controller.
    let in_flight = Arc::new(tollgate_policy::budget::inflight::MemoryInFlight::default());
    let cluster = Arc::new(cluster::VmLabels::default());
    // Rules' own notification keys: handed over by the controller.
    let notify_keys = Arc::new(NotifyKeys::default());
    let follower = match &config.rules {
        RuleSource::Files(paths) => {
            if let reload::Outcome::Refused(problems) = reload::reload(paths, &store, &metrics) {
                return Err(StartError::Policies(problems));
            }
            None
        }
        RuleSource::Controller(managed) => {
            metrics.register_controller();
            let follower = managed::Follower::new(
                managed.clone(),
                store.clone(),
                metrics.clone(),
                in_flight.clone(),
                cluster.clone(),
            )?
            .with_notify_keys(notify_keys.clone());
            follower.restore();
            Some(follower)
        }
    };
    let bridge = config
        .stdio
        .clone()
        .map(|s| crate::stdio::bridge::Bridge::new(s, metrics.clone()));
    let upstream = match &bridge {
        Some(b) => Upstream::stdio(
            crate::stdio::bridge::Connector::new(b.clone()),
            config.upstream_response_timeout,
        ),
        None => Upstream::new(
            config.upstream.clone(),
            config.upstream_connect_timeout,
            config.upstream_response_timeout,
        )?,
    };
    let identities = identities(&config).await?;
    let shared = match &config.shared_store {
        Some(s) => Some(shared::SharedStore::connect(s, metrics.clone())?),
        None => None,
    };
    let listener = serve::bind(config.listen, "--listen").await?;
    let admin_listener = serve::bind(config.admin_listen, "--admin-listen").await?;
    let listen = listener.local_addr().map_err(StartError::LocalAddr)?;
    let admin = admin_listener.local_addr().map_err(StartError::LocalAddr)?;
    let approval_metrics = ApprovalMetrics::register(metrics.registry())?;
    let notifier = Notifier::new(
        config.approval_webhook.clone(),
        notify_keys,
        approval_metrics.notifications(),
    )
    .map_err(StartError::Notifier)?;
    let mut approvals = Approvals::new(approval_metrics, format!("http://{admin}"), Some(notifier))
        .with_rules(store.clone());
    if let Some(settings) = &config.approvals_in_cluster {
        // Not fatal: a pod without a ServiceAccount token still serves the
        // calls that need no approval; those that do are refused.
        approvals = match ClusterApprovals::connect(settings.clone()).await {
            Ok(cluster) => approvals.in_cluster(cluster),
            Err(e) => {
                tracing::error!(error = %e, "cannot keep approvals in the cluster; calls that need an approval are refused");
                approvals.without_client(e)
            }
        };
    }
    let approvals = Arc::new(approvals);
    let serve_approvals = admin.ip().is_loopback() || config.approvals_remote;
    let telemetry = Telemetry::from_env("tollgate-sidecar")?;

    let jwt = identities.jwt().cloned();
    let proxy = Arc::new(Proxy::new(ProxyParts {
        gate: Gate::new(GateParts {
            store: store.clone(),
            shared,
            in_flight,
            cluster,
            metrics: metrics.clone(),
            audit,
            fail_open: matches!(&config.rules, RuleSource::Controller(m) if m.fail_open),
            approvals,
        }),
        metrics: metrics.clone(),
        identities,
        upstream,
        config: config.clone(),
        tracer: telemetry.as_ref().map(|t| t.tracer("tollgate-sidecar")),
    }));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let p = proxy.clone();
    let m = metrics.clone();
    tasks.push(tokio::spawn(serve::serve_with(
        listener,
        move |req| crate::transport::route::route(p.clone(), req),
        serve::ServeOptions {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            grace: config.shutdown_grace,
            reclaim_after: serve::RECLAIM_AFTER,
        },
        shutdown_rx.clone(),
        move |event| m.connection(event),
    )));
    let p = proxy.clone();
    tasks.push(tokio::spawn(serve::serve(
        admin_listener,
        move |req| {
            let p = p.clone();
            async move {
                if req.uri().path().starts_with(crate::decisions::PREFIX) {
                    return Ok(p.gate().recent_route(&req));
                }
                let approvals = p.gate().approvals().clone();
                approvals_admin::route_or(p, approvals, serve_approvals, req).await
            }
        },
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
    if let (Some(jwt), IdentitySource::Jwt { keys, issuer, .. }) = (jwt, &config.identity) {
        metrics.register_jwks();
        let failing = metrics.jwks_reload_failing();
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
                    (Some(url), _) => jwks::Location::Url(url.clone()),
                    (None, Some(issuer)) => jwks::Location::Discovered {
                        issuer: issuer.clone(),
                    },
                    (None, None) => return Err(identity::SetupError::NoKeys.into()),
                };
                let fetcher = jwks::Fetcher::new(location, ca_file.as_deref())?;
                tokio::spawn(jwks::watch(
                    jwt.clone(),
                    fetcher,
                    *refresh,
                    jwt.wanted(),
                    failing,
                    shutdown_rx.clone(),
                ))
            }
        });
    }
    tasks.push(tokio::spawn(learn_catalog(
        proxy.clone(),
        shutdown_rx.clone(),
    )));
    if let Some(b) = bridge {
        tasks.push(tokio::spawn(b.reap(shutdown_rx.clone())));
    }
    if config.approvals_in_cluster.is_some() {
        tasks.push(tokio::spawn(sweep_cluster(
            proxy.clone(),
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(sweep(proxy.clone(), shutdown_rx)));

    tracing::info!(
        %listen,
        %admin,
        upstream = %config.upstream,
        version = store.current().map(|r| r.set.version().to_owned()).unwrap_or_default(),
        traces = telemetry.is_some(),
        "tollgate proxy ready"
    );
    Ok(Running {
        listen,
        admin,
        shutdown,
        tasks,
        telemetry,
    })
}

/// The configured caller verification.
async fn identities(config: &ProxyConfig) -> Result<identity::Identities, identity::SetupError> {
    let verifier = match &config.identity {
        IdentitySource::None => None,
        IdentitySource::Jwt {
            keys,
            issuer,
            audience,
        } => Some(identity::Verifier::Jwt(Arc::new(match keys {
            JwksSource::File(path) => {
                identity::JwtVerifier::from_file(path, issuer.clone(), audience.clone())?
            }
            JwksSource::Https { .. } => {
                identity::JwtVerifier::awaiting_keys(issuer.clone(), audience.clone())
            }
        }))),
        IdentitySource::Kubernetes {
            audience,
            kubeconfig,
        } => {
            let client = tollgate_runtime::kube_client::client(kubeconfig.as_deref())
                .await
                .map_err(identity::SetupError::KubeClient)?;
            Some(identity::Verifier::Kubernetes(Box::new(
                tollgate_runtime::token_review::Authenticator::new(client, audience),
            )))
        }
    };
    if config.require_identity && verifier.is_none() {
        return Err(identity::SetupError::RequireWithoutVerifier);
    }
    Ok(identity::Identities::new(verifier, config.require_identity))
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(config: ProxyConfig, audit: AuditConfig) -> Result<(), StartError> {
    let running = start(config, audit).await?;
    tollgate_runtime::shutdown::signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Tells clients with an open stream to re-list tools when the rules
/// change, since what `tools/list` hides may have changed.
async fn announce_changes(proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = proxy.gate().rules().subscribe();
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
                proxy.streams().broadcast(event.clone());
            }
        }
    }
}

/// Reads the upstream's tool list as soon as the upstream answers: retried
/// quickly at first (a server starting beside the sidecar answers within
/// seconds), then every few seconds, until it is known.
async fn learn_catalog(proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    // Where an MCP client would POST: `/mcp` on a bare upstream, the
    // endpoint itself when `--upstream` names it (`http://h:1/mcp`), and
    // `/mcp` under a prefix (`http://h:1/api` → `/api/mcp`).
    let path = "/mcp";
    let mut wait = Duration::from_millis(100);
    while !proxy.ensure_catalog(path).await {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Drops idle rate-limit buckets once a minute; expires approvals every
/// second (so the pending gauge and the expired count are current).
async fn sweep(proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_buckets = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                proxy.gate().approvals().sweep();
                if last_buckets.elapsed() >= Duration::from_secs(60) {
                    last_buckets = Instant::now();
                    proxy.gate().sweep(last_buckets);
                }
            }
        }
    }
}

/// Managed mode: marks overdue approval objects `Expired` every few seconds
/// (so `kubectl get mtca` shows them so) and refreshes the pending gauge.
async fn sweep_cluster(proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => proxy.gate().approvals().sweep_cluster().await,
        }
    }
}
