//! Controller settings: what `tollgate controller`'s flags become.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::webhook::inject::InjectConfig;

/// Controller settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Where sidecars connect (HTTPS).
    pub push_listen: SocketAddr,
    /// The certificate of the push and webhook listeners.
    pub tls: TlsConfig,
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

/// The controller's serving certificate (push server and webhook).
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// The Service sidecars reach the push server by (its DNS names go into
    /// the certificate).
    pub push_service: String,
    /// The Secret (in the controller's namespace) holding the CA and the
    /// serving certificate.
    pub secret: String,
    /// Read `tls.crt`, `tls.key` and `ca.crt` from here instead (cert-manager).
    pub cert_dir: Option<PathBuf>,
    /// More names for the certificate (e.g. `127.0.0.1` for local tests).
    pub extra_names: Vec<String>,
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
    /// Native sidecars or not.
    pub native_sidecars: NativeSidecars,
    /// The injected sidecar: image, pull policy, controller URL, and the
    /// controller's own app name (never injected). The CA sidecars verify
    /// the controller by is filled in at start.
    pub inject: InjectConfig,
}
