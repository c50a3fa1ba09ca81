//! The controller: watches `McpToolPolicy` objects and the pods that run a
//! tollgate sidecar, compiles each pod's rules in the [`index`], pushes them
//! to the sidecars ([`serve`]), and reports in each policy's status how many
//! selected sidecars enforce it ([`status`], leader only, see [`lease`]).
//!
//! Rooms: [`object`] reads policies leniently, [`index`] judges them
//! strictly; [`auth`] checks sidecar tokens; [`acks`] shares what sidecars
//! acknowledged between replicas; [`metrics`] counts it all.

pub mod acks;
pub mod auth;
pub mod index;
pub mod kubevirt;
pub mod lease;
pub mod metrics;
pub mod object;
pub mod serve;
pub mod status;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::proxy::body::{self, Body};
use crate::proxy::server;
use crate::push::SIDECAR_LABEL;

use index::{Index, Key, PodInput, PolicyInput};
use metrics::ControllerMetrics;
use object::PolicyObject;
use status::Observed;

/// Controller settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Where sidecars connect.
    pub push_listen: SocketAddr,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub admin_listen: SocketAddr,
    /// The controller's own namespace (its Lease and ack ConfigMaps).
    pub namespace: String,
    /// Only this namespace's policies and pods, or all.
    pub watch_namespace: Option<String>,
    /// This replica's name (its pod name in a cluster).
    pub identity: String,
    /// The audience sidecar tokens must be issued for.
    pub audience: String,
    /// The Lease that elects the status writer.
    pub lease_name: String,
    /// A kubeconfig file; otherwise `KUBECONFIG`, `~/.kube/config` or the
    /// in-cluster ServiceAccount.
    pub kubeconfig: Option<PathBuf>,
    /// How often a quiet sidecar stream carries a heartbeat.
    pub heartbeat: Duration,
    /// The sidecar injection webhook, if served.
    pub webhook: Option<WebhookConfig>,
}

/// Whether injected sidecars are native (init containers with
/// `restartPolicy: Always`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeSidecars {
    /// If the apiserver is 1.29 or newer.
    Auto,
    /// Always.
    Always,
    /// Never: a regular container.
    Never,
}

/// Settings of the injection webhook.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Where the apiserver connects (HTTPS).
    pub listen: SocketAddr,
    /// The MutatingWebhookConfiguration whose `caBundle` the controller keeps.
    pub configuration: String,
    /// The webhook Service (its DNS names go into the certificate).
    pub service: String,
    /// The Secret holding the CA and serving certificate.
    pub secret: String,
    /// Read `tls.crt`/`tls.key` from here instead (cert-manager).
    pub cert_dir: Option<PathBuf>,
    /// More names for the certificate (e.g. `127.0.0.1` for local tests).
    pub extra_names: Vec<String>,
    /// Native sidecars or not.
    pub native_sidecars: NativeSidecars,
    /// The injected sidecar: image, pull policy, controller URL, and the
    /// controller's own app name (never injected).
    pub inject: crate::webhook::inject::InjectConfig,
}

/// A started controller.
pub struct Running {
    /// The push listener.
    pub push: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops everything, releasing the lease if held.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Connects to the cluster, starts the watches and both listeners.
pub async fn start(config: ControllerConfig) -> anyhow::Result<Running> {
    let client = client(config.kubeconfig.as_deref()).await?;
    let metrics = ControllerMetrics::new().context("registering metrics")?;
    let index = Arc::new(Mutex::new(Index::new()));
    let observed = Arc::new(Observed::default());
    let acks = Arc::new(acks::AckBook::new(&config.identity));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (policies_ready, policies_ready_rx) = watch::channel(false);
    let (pods_ready, pods_ready_rx) = watch::channel(false);
    let (leader, leader_rx) = watch::channel(false);

    let (policy_api, pod_api): (Api<PolicyObject>, Api<Pod>) = match &config.watch_namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &config.namespace);
    let webhook_listener = match &config.webhook {
        Some(w) => Some(server::bind(w.listen, "--webhook-listen").await?),
        None => None,
    };
    let push_listener = server::bind(config.push_listen, "--push-listen").await?;
    let admin_listener = server::bind(config.admin_listen, "--admin-listen").await?;
    let push = push_listener.local_addr()?;
    let admin = admin_listener.local_addr()?;

    let mut webhook_addr = None;
    let mut tasks = Vec::new();
    if let (Some(w), Some(listener)) = (&config.webhook, webhook_listener) {
        webhook_addr = Some(listener.local_addr()?);
        tasks.extend(
            start_webhook(
                &client,
                &config.namespace,
                w,
                listener,
                &metrics,
                &shutdown_rx,
            )
            .await?,
        );
    }
    tasks.extend([
        tokio::spawn(watch_policies(
            policy_api,
            index.clone(),
            observed.clone(),
            metrics.clone(),
            policies_ready,
            shutdown_rx.clone(),
        )),
        tokio::spawn(watch_pods(
            pod_api,
            index.clone(),
            acks.clone(),
            metrics.clone(),
            pods_ready,
            shutdown_rx.clone(),
        )),
        tokio::spawn(acks::publish(
            acks.clone(),
            configmaps.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(acks::collect(acks.clone(), configmaps, shutdown_rx.clone())),
        tokio::spawn(
            lease::Elector {
                api: Api::<Lease>::namespaced(client.clone(), &config.namespace),
                name: config.lease_name.clone(),
                identity: config.identity.clone(),
                duration: Duration::from_secs(15),
            }
            .run(leader, metrics.clone(), shutdown_rx.clone()),
        ),
    ]);
    let writer = status::Writer {
        client: client.clone(),
        index: index.clone(),
        observed,
        acks: acks.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "tollgate-controller".into(),
                instance: Some(config.identity.clone()),
            },
        ),
    };
    tasks.push(tokio::spawn(writer.run(leader_rx, shutdown_rx.clone())));

    let (cluster_tx, cluster_rx) = watch::channel(Arc::new(crate::push::ClusterState::default()));
    tasks.push(tokio::spawn(kubevirt::run(
        client.clone(),
        config.watch_namespace.clone(),
        cluster_tx,
        shutdown_rx.clone(),
    )));
    let service = Arc::new(serve::PushService {
        cluster: cluster_rx,
        index: index.clone(),
        auth: auth::Authenticator::new(client, &config.audience),
        acks,
        metrics: metrics.clone(),
        heartbeat: config.heartbeat,
    });
    tasks.push(tokio::spawn(server::serve(
        push_listener,
        move |req| serve::route(service.clone(), req),
        65_536,
        Duration::from_secs(30),
        shutdown_rx.clone(),
        Duration::from_secs(1),
        |_| {},
    )));
    let admin_state = Arc::new(Admin {
        metrics: metrics.clone(),
        ready: [policies_ready_rx, pods_ready_rx],
    });
    tasks.push(tokio::spawn(server::serve(
        admin_listener,
        move |req| admin_route(admin_state.clone(), req),
        64,
        Duration::from_secs(30),
        shutdown_rx,
        Duration::from_secs(1),
        |_| {},
    )));
    let webhook_addr = webhook_addr.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%push, %admin, webhook = %webhook_addr, identity = %config.identity, watch_namespace = ?config.watch_namespace, "tollgate controller started");
    Ok(Running {
        push,
        admin,
        shutdown,
        tasks,
    })
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(config: ControllerConfig) -> anyhow::Result<()> {
    let running = start(config).await?;
    crate::proxy::shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Sets up the webhook's certificate and starts serving it.
async fn start_webhook(
    client: &Client,
    namespace: &str,
    w: &WebhookConfig,
    listener: tokio::net::TcpListener,
    metrics: &ControllerMetrics,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    use crate::webhook::{certs, server as webhook_server};
    let mut tasks = Vec::new();
    let resolver = match &w.cert_dir {
        Some(dir) => {
            let cert = std::fs::read_to_string(dir.join("tls.crt"))
                .with_context(|| format!("reading {}/tls.crt", dir.display()))?;
            let key = std::fs::read_to_string(dir.join("tls.key"))
                .with_context(|| format!("reading {}/tls.key", dir.display()))?;
            let resolver = Arc::new(certs::Resolver::new(&cert, &key)?);
            tasks.push(tokio::spawn(certs::follow_files(
                dir.clone(),
                resolver.clone(),
                shutdown.clone(),
            )));
            resolver
        }
        None => {
            let mut names = vec![
                w.service.clone(),
                format!("{}.{namespace}", w.service),
                format!("{}.{namespace}.svc", w.service),
                format!("{}.{namespace}.svc.cluster.local", w.service),
            ];
            names.extend(w.extra_names.iter().cloned());
            let keeper = certs::Keeper {
                secrets: Api::namespaced(client.clone(), namespace),
                webhooks: Api::all(client.clone()),
                secret: w.secret.clone(),
                configuration: w.configuration.clone(),
                names,
            };
            let bundle = keeper.ensure().await.with_context(|| {
                format!(
                    "preparing the webhook certificate in Secret {namespace}/{}",
                    w.secret
                )
            })?;
            if let Err(e) = keeper.publish_ca(&bundle.ca_cert).await {
                tracing::warn!(error = %e, "cannot publish the webhook CA yet; retrying");
            }
            let resolver = Arc::new(certs::Resolver::new(&bundle.cert, &bundle.key)?);
            tasks.push(tokio::spawn(keeper.run(
                resolver.clone(),
                bundle,
                Duration::from_secs(60),
                shutdown.clone(),
            )));
            resolver
        }
    };
    let native = match w.native_sidecars {
        NativeSidecars::Always => true,
        NativeSidecars::Never => false,
        NativeSidecars::Auto => match client.apiserver_version().await {
            Ok(v) => {
                let minor: u32 = v.minor.trim_end_matches('+').parse().unwrap_or(0);
                v.major == "1" && minor >= 29
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the apiserver version; injecting regular sidecar containers");
                false
            }
        },
    };
    let webhook = Arc::new(webhook_server::Webhook {
        config: crate::webhook::inject::InjectConfig {
            native_sidecars: native,
            ..w.inject.clone()
        },
        requests: metrics.webhook_requests.clone(),
    });
    tracing::info!(native_sidecars = native, image = %w.inject.image, "injection webhook ready");
    tasks.push(tokio::spawn(webhook_server::serve(
        listener,
        resolver,
        webhook,
        shutdown.clone(),
    )));
    Ok(tasks)
}

/// A client from `kubeconfig`, else the usual places (KUBECONFIG, ~/.kube/config,
/// in-cluster).
pub(crate) async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a pod with a ServiceAccount",
        )?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

/// The next event of a watch, or `None` once `shutdown` fires or the stream
/// ends. A failed watch call is logged (naming `what` is watched) and
/// skipped: the watcher backs off and relists by itself.
pub(crate) async fn next_event<K>(
    events: &mut (impl futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin),
    shutdown: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<watcher::Event<K>> {
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => return None,
            e = events.next() => e?,
        };
        match event {
            Ok(e) => return Some(e),
            Err(e) => tracing::warn!(error = %e, "watching {what} failed; retrying"),
        }
    }
}

async fn watch_policies(
    api: Api<PolicyObject>,
    index: Arc<Mutex<Index>>,
    observed: Arc<Observed>,
    metrics: ControllerMetrics,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listing: Option<BTreeSet<Key>> = None;
    while let Some(event) = next_event(&mut events, &mut shutdown, "McpToolPolicies").await {
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => listing = Some(BTreeSet::new()),
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                let Some(key) = key_of(&obj.metadata) else {
                    continue;
                };
                metrics
                    .watch_events
                    .with_label_values(&["policy", "apply"])
                    .inc();
                let generation = obj.metadata.generation.unwrap_or(0);
                let started = Instant::now();
                index.apply_policy(PolicyInput {
                    namespace: key.0.clone(),
                    name: key.1.clone(),
                    generation,
                    spec: obj.spec.clone(),
                });
                if let Some(report) = index
                    .report(&key.0, &key.1)
                    .filter(|r| !r.problems.is_empty())
                {
                    tracing::warn!(
                        policy = %format!("{}/{}", key.0, key.1),
                        generation,
                        problems = %crate::policy::Problems(report.problems),
                        "policy refused; its last accepted generation stays in force"
                    );
                }
                tracing::debug!(policy = %format!("{}/{}", key.0, key.1), elapsed = ?started.elapsed(), "policy indexed");
                observed.set(key.clone(), obj.object_ref(&()), obj.status.clone());
                if let Some(seen) = listing.as_mut() {
                    seen.insert(key);
                }
            }
            watcher::Event::Delete(obj) => {
                let Some(key) = key_of(&obj.metadata) else {
                    continue;
                };
                metrics
                    .watch_events
                    .with_label_values(&["policy", "delete"])
                    .inc();
                index.delete_policy(&key.0, &key.1);
                observed.remove(&key);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    index.retain_policies(&seen);
                }
                let _ = ready.send(true);
            }
        }
        let (accepted, invalid) = index.policy_counts();
        metrics
            .policies
            .with_label_values(&["accepted"])
            .set(accepted as i64);
        metrics
            .policies
            .with_label_values(&["invalid"])
            .set(invalid as i64);
    }
}

async fn watch_pods(
    api: Api<Pod>,
    index: Arc<Mutex<Index>>,
    acks: Arc<acks::AckBook>,
    metrics: ControllerMetrics,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = watcher::Config::default().labels(&format!("{SIDECAR_LABEL}=true"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut listing: Option<BTreeSet<Key>> = None;
    while let Some(event) = next_event(&mut events, &mut shutdown, "sidecar pods").await {
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => listing = Some(BTreeSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                metrics
                    .watch_events
                    .with_label_values(&["pod", "apply"])
                    .inc();
                match PodInput::from_pod(&pod) {
                    Some(input) => {
                        if let Some(seen) = listing.as_mut() {
                            seen.insert((input.namespace.clone(), input.name.clone()));
                        }
                        index.apply_pod(input);
                    }
                    None => {
                        if let Some(key) = key_of(&pod.metadata) {
                            index.delete_pod(&key.0, &key.1);
                        }
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                metrics
                    .watch_events
                    .with_label_values(&["pod", "delete"])
                    .inc();
                if let Some(key) = key_of(&pod.metadata) {
                    index.delete_pod(&key.0, &key.1);
                    acks.retain(|k| *k != key);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    index.retain_pods(&seen);
                    acks.retain(|k| seen.contains(k));
                }
                let _ = ready.send(true);
            }
        }
        metrics.sidecar_pods.set(index.pod_count() as i64);
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

struct Admin {
    metrics: ControllerMetrics,
    ready: [watch::Receiver<bool>; 2],
}

async fn admin_route(
    admin: Arc<Admin>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let ready = admin.ready.iter().all(|r| *r.borrow());
    admin.metrics.ready.set(i64::from(ready));
    let text = |status: StatusCode, s: &str| {
        let mut r = Response::new(body::full(s.to_owned()));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let resp = match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(body::full(admin.metrics.encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the policy and pod watches have not listed yet\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    };
    Ok(resp)
}
