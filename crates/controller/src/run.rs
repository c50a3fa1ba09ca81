//! Starting a controller: connect, start the watches, the lease, the status
//! writer, the KubeVirt view, and the push, admin and webhook listeners.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use tollgate_runtime::admin::{AdminState, Readiness};
use tollgate_runtime::otel::Telemetry;
use tollgate_runtime::serve;
use tollgate_runtime::token_review::Authenticator;

use crate::acks;
use crate::certs;
use crate::config::{ControllerConfig, NativeSidecars, TlsConfig, WebhookConfig};
use crate::index::Index;
use crate::metrics::ControllerMetrics;
use crate::object::{ClusterPolicyObject, PolicyObject};
use crate::status::{self, Observed};
use crate::watch::{Synced, watch_namespaces, watch_pods, watch_policies};
use crate::webhook::server as webhook_server;
use crate::{https, kubevirt, lease, push};

/// Why a controller could not start, said so the operator knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No Kubernetes client.
    #[error(transparent)]
    Client(#[from] tollgate_runtime::kube_client::ClientError),
    /// The metrics could not be registered (a bug, not a setting).
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener could not be opened.
    #[error(transparent)]
    Bind(#[from] serve::BindError),
    /// The `OTEL_*` environment asks for traces tollgate cannot export.
    #[error("traces: {0}")]
    Traces(#[from] tollgate_runtime::otel::OtelError),
    /// The address of a bound listener could not be read.
    #[error("reading a listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The certificate files (cert-manager) cannot be read.
    #[error("reading {}: {source}", path.display())]
    CertFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The serving certificate is unusable or cannot be kept.
    #[error("preparing the serving certificate{context}: {source}")]
    Certificate {
        /// Where, e.g. ` in Secret tollgate-system/tollgate-webhook-tls`.
        context: String,
        /// Why.
        source: certs::CertError,
    },
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
pub async fn start(config: ControllerConfig) -> Result<Running, StartError> {
    let client = tollgate_runtime::kube_client::client(config.kubeconfig.as_deref()).await?;
    let metrics = ControllerMetrics::new()?;
    let index = Arc::new(Mutex::new(Index::new()));
    let observed = Arc::new(Observed::default());
    let acks = Arc::new(acks::AckBook::new(&config.identity));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (policies_ready, policies_ready_rx) = watch::channel(false);
    let (pods_ready, pods_ready_rx) = watch::channel(false);
    let (cluster_ready, cluster_ready_rx) = watch::channel(false);
    let (namespaces_ready, namespaces_ready_rx) = watch::channel(false);
    let (leader, leader_rx) = watch::channel(false);

    let (policy_api, pod_api): (Api<PolicyObject>, Api<Pod>) = match &config.watch_namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // Cluster policies are cluster-scoped: watched whole even by a
    // controller of one namespace, which applies them to its own pods.
    let cluster_policy_api: Api<ClusterPolicyObject> = Api::all(client.clone());
    let namespaces = match &config.watch_namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &config.namespace);
    let webhook_listener = match &config.webhook {
        Some(w) => Some(serve::bind(w.listen, "--webhook-listen").await?),
        None => None,
    };
    let push_listener = serve::bind(config.push_listen, "--push-listen").await?;
    let admin_listener = serve::bind(config.admin_listen, "--admin-listen").await?;
    let push = push_listener.local_addr().map_err(StartError::LocalAddr)?;
    let admin = admin_listener.local_addr().map_err(StartError::LocalAddr)?;

    let mut webhook_addr = None;
    let mut tasks = Vec::new();
    let serving = serving_certificate(&client, &config, &shutdown_rx).await?;
    tasks.extend(serving.tasks);
    if let (Some(w), Some(listener)) = (&config.webhook, webhook_listener) {
        webhook_addr = Some(listener.local_addr().map_err(StartError::LocalAddr)?);
        tasks.push(
            start_webhook(
                &client,
                w,
                listener,
                serving.resolver.clone(),
                serving.ca_cert,
                &metrics,
                &shutdown_rx,
            )
            .await,
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
        tokio::spawn(watch_policies(
            cluster_policy_api,
            index.clone(),
            observed.clone(),
            metrics.clone(),
            cluster_ready,
            shutdown_rx.clone(),
        )),
        tokio::spawn(watch_namespaces(
            Api::<Namespace>::all(client.clone()),
            namespaces,
            index.clone(),
            metrics.clone(),
            namespaces_ready,
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
            own_pod(&client, &config).await,
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
        cluster_statuses: config.watch_namespace.is_none(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "tollgate-controller".into(),
                instance: Some(config.identity.clone()),
            },
        ),
    };
    tasks.push(tokio::spawn(writer.run(leader_rx, shutdown_rx.clone())));
    tasks.push(tokio::spawn(crate::notify_secrets::run(
        client.clone(),
        index.clone(),
        shutdown_rx.clone(),
    )));

    let (cluster_tx, cluster_rx) =
        watch::channel(Arc::new(crate::cluster_state::ClusterState::default()));
    tasks.push(tokio::spawn(kubevirt::run(
        client.clone(),
        config.watch_namespace.clone(),
        cluster_tx,
        shutdown_rx.clone(),
    )));
    let synced = Synced::new(vec![
        ("policy", policies_ready_rx),
        ("cluster policy", cluster_ready_rx),
        ("namespace", namespaces_ready_rx),
        ("pod", pods_ready_rx),
    ]);
    let service = Arc::new(push::PushService {
        synced: synced.clone(),
        cluster: cluster_rx,
        index: index.clone(),
        auth: Authenticator::new(client, &config.audience),
        acks,
        metrics: metrics.clone(),
        heartbeat: config.heartbeat,
    });
    tasks.push(tokio::spawn(https::serve(
        push_listener,
        serving.resolver,
        move |req| push::route(service.clone(), req),
        65_536,
        Duration::from_secs(30),
        shutdown_rx.clone(),
    )));
    let admin_state = Arc::new(Admin {
        metrics: metrics.clone(),
        synced,
    });
    tasks.push(tokio::spawn(serve::serve(
        admin_listener,
        move |req| tollgate_runtime::admin::route(admin_state.clone(), req),
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
pub async fn run(config: ControllerConfig) -> Result<(), StartError> {
    // Global, so the watches and the push server reach it without a handle
    // threaded through; set here, not in `start`, which tests run several
    // of in one process.
    let telemetry = Telemetry::from_env("tollgate-controller")?;
    if let Some(t) = &telemetry {
        t.install_global();
    }
    let running = start(config).await?;
    tollgate_runtime::shutdown::signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    if let Some(t) = telemetry {
        t.shutdown(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// The serving certificate of the push and webhook listeners, and the CA
/// sidecars are handed to verify it.
struct Serving {
    resolver: Arc<certs::Resolver>,
    ca_cert: String,
    tasks: Vec<JoinHandle<()>>,
}

/// Reads the certificate from `--tls-cert-dir` (cert-manager), or keeps one
/// in `--tls-secret` for the controller's Service names.
async fn serving_certificate(
    client: &Client,
    config: &ControllerConfig,
    shutdown: &watch::Receiver<bool>,
) -> Result<Serving, StartError> {
    let TlsConfig {
        push_service,
        secret,
        cert_dir,
        extra_names,
    } = &config.tls;
    let namespace = &config.namespace;
    if let Some(dir) = cert_dir {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| StartError::CertFile { path, source })
        };
        let (cert, key, ca_cert) = (read("tls.crt")?, read("tls.key")?, read("ca.crt")?);
        let resolver = Arc::new(certs::Resolver::new(&cert, &key).map_err(|source| {
            StartError::Certificate {
                context: format!(" from {}", dir.display()),
                source,
            }
        })?);
        let follow = tokio::spawn(certs::follow_files(
            dir.clone(),
            resolver.clone(),
            shutdown.clone(),
        ));
        return Ok(Serving {
            resolver,
            ca_cert,
            tasks: vec![follow],
        });
    }
    let service_names = |service: &str| {
        [
            service.to_owned(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ]
    };
    let mut names = service_names(push_service).to_vec();
    if let Some(w) = &config.webhook {
        names.extend(service_names(&w.service));
    }
    names.extend(extra_names.iter().cloned());
    let keeper = certs::Keeper {
        secrets: Api::namespaced(client.clone(), namespace),
        webhooks: Api::all(client.clone()),
        secret: secret.clone(),
        configuration: config.webhook.as_ref().map(|w| w.configuration.clone()),
        names,
    };
    let in_secret = || format!(" in Secret {namespace}/{secret}");
    let bundle = keeper
        .ensure()
        .await
        .map_err(|source| StartError::Certificate {
            context: in_secret(),
            source,
        })?;
    if let Err(e) = keeper.publish_ca(&bundle.ca_cert).await {
        tracing::warn!(error = %e, "cannot publish the CA in the webhook's caBundle yet; retrying");
    }
    let resolver = Arc::new(
        certs::Resolver::new(&bundle.cert, &bundle.key).map_err(|source| {
            StartError::Certificate {
                context: in_secret(),
                source,
            }
        })?,
    );
    let ca_cert = bundle.ca_cert.clone();
    let keep = tokio::spawn(keeper.run(
        resolver.clone(),
        bundle,
        Duration::from_secs(60),
        shutdown.clone(),
    ));
    Ok(Serving {
        resolver,
        ca_cert,
        tasks: vec![keep],
    })
}

/// Starts serving the injection webhook.
async fn start_webhook(
    client: &Client,
    w: &WebhookConfig,
    listener: tokio::net::TcpListener,
    resolver: Arc<certs::Resolver>,
    controller_ca: String,
    metrics: &ControllerMetrics,
    shutdown: &watch::Receiver<bool>,
) -> JoinHandle<()> {
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
            controller_ca,
            ..w.inject.clone()
        },
        requests: metrics.webhook_requests(),
        client: Some(client.clone()),
    });
    tracing::info!(native_sidecars = native, image = %w.inject.image, "injection webhook ready");
    tokio::spawn(webhook_server::serve(
        listener,
        resolver,
        webhook,
        shutdown.clone(),
    ))
}

/// This replica's own Pod as an owner, when it runs in one (its identity
/// is its pod name, from the Downward API): what it creates at run time then
/// goes with the Pod.
async fn own_pod(client: &Client, config: &ControllerConfig) -> Option<OwnerReference> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &config.namespace);
    match pods.get_opt(&config.identity).await {
        Ok(Some(pod)) => Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.metadata.name?,
            uid: pod.metadata.uid?,
            ..Default::default()
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read this replica's own pod; its acknowledgement ConfigMap will not be garbage-collected with it");
            None
        }
    }
}

/// What the controller's admin listener reports.
struct Admin {
    metrics: ControllerMetrics,
    synced: Synced,
}

impl AdminState for Admin {
    fn metrics(&self) -> Vec<u8> {
        self.metrics.encode()
    }

    fn readiness(&self) -> Readiness {
        let synced = self.synced.check();
        self.metrics.ready(synced.is_ok());
        match synced {
            Ok(()) => Readiness::Ready("policies and pods listed and indexed".into()),
            Err(why) => Readiness::NotReady(why.to_string()),
        }
    }
}
