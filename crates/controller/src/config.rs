//! Controller settings: what `tollgate controller`'s flags become.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::webhook::inject::InjectConfig;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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
    pub inject: InjectConfig,
}
