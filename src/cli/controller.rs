//! `tollgate controller`: its flags, and the controller configuration they
//! make.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tollgate_controller::InjectConfig;
use tollgate_controller::{ControllerConfig, NativeSidecars, TlsConfig, WebhookConfig};
use tollgate_policy::snapshot;

#[derive(clap::Args)]
pub(crate) struct ControllerArgs {
    #[command(flatten)]
    pub(crate) log: super::LogArgs,
    /// Address sidecars connect to (HTTPS, with the certificate below).
    #[arg(long, default_value = "0.0.0.0:9443", env = "TOLLGATE_PUSH_LISTEN")]
    push_listen: SocketAddr,
    /// The Service sidecars reach the push server by (its DNS names go into the certificate).
    #[arg(long, default_value = "tollgate")]
    push_service: String,
    /// The Secret (in --namespace) holding the CA and the serving certificate of the push server and the webhook.
    #[arg(long, alias = "webhook-secret", default_value = "tollgate-tls")]
    tls_secret: String,
    /// Read tls.crt, tls.key and ca.crt from this directory (cert-manager) instead.
    #[arg(long, alias = "webhook-cert-dir")]
    tls_cert_dir: Option<PathBuf>,
    /// Another name (DNS or IP) for the serving certificate (repeatable).
    #[arg(long = "tls-dns-name", alias = "webhook-dns-name")]
    tls_dns_names: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9902", env = "TOLLGATE_ADMIN_LISTEN")]
    admin_listen: SocketAddr,
    /// The controller's namespace: its Lease and acknowledgement ConfigMaps live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tollgate-system")]
    namespace: String,
    /// Watch only this namespace's policies and pods (default: all namespaces).
    #[arg(long)]
    watch_namespace: Option<String>,
    /// This replica's name (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Audience the sidecars' ServiceAccount tokens must be issued for.
    #[arg(long, default_value = snapshot::DEFAULT_AUDIENCE)]
    audience: String,
    /// The Lease that elects the replica writing policy status.
    #[arg(long, default_value = "tollgate-controller")]
    lease_name: String,
    /// A kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Heartbeat interval on quiet sidecar streams.
    #[arg(long, default_value = "10s", value_parser = super::flag_duration)]
    heartbeat: Duration,
    /// Serve the sidecar injection webhook (HTTPS) on this address.
    #[arg(long, env = "TOLLGATE_WEBHOOK_LISTEN")]
    webhook_listen: Option<SocketAddr>,
    /// The MutatingWebhookConfiguration whose caBundle the controller keeps.
    #[arg(long, default_value = "tollgate")]
    webhook_configuration: String,
    /// The webhook's Service name (its DNS names go into the certificate).
    #[arg(long, default_value = "tollgate-webhook")]
    webhook_service: String,
    /// The sidecar image the webhook injects.
    #[arg(long, default_value = "tollgate:0.1.0", env = "TOLLGATE_SIDECAR_IMAGE")]
    sidecar_image: String,
    /// The injected sidecar's imagePullPolicy.
    #[arg(long)]
    sidecar_pull_policy: Option<String>,
    /// Where injected sidecars find the controller (default https://<push-service>.<namespace>.svc:9443).
    #[arg(long)]
    sidecar_controller_url: Option<String>,
    /// Inject native sidecars (init containers with restartPolicy Always).
    #[arg(long, value_enum, default_value_t = NativeSidecars::Auto)]
    native_sidecars: NativeSidecars,
    /// app.kubernetes.io/name of the controller's own pods (never injected).
    #[arg(long, default_value = "tollgate-controller")]
    controller_name: String,
    /// One more `tollgate proxy` flag for injected sidecars, e.g.
    /// --sidecar-arg=--redis-url=redis://tollgate-redis:6379/0 (repeatable).
    #[arg(long = "sidecar-arg", allow_hyphen_values = true)]
    sidecar_args: Vec<String>,
    /// One more environment variable for injected sidecars, NAME=VALUE, e.g.
    /// --sidecar-env=TOLLGATE_REDIS_CA_PEM="$(cat ca.crt)" (repeatable).
    #[arg(long = "sidecar-env", value_parser = env_pair)]
    sidecar_env: Vec<(String, String)>,
}

/// `NAME=VALUE` with a valid environment variable name.
/// A clap `value_parser`, which only prints its error after the flag's
/// name: a `String` error is clap's convention there, and the one place
/// `tests/layering.rs` allows it.
fn env_pair(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{name:?} is not an environment variable name (letters, digits, '_'; not starting with a digit)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

impl From<ControllerArgs> for ControllerConfig {
    fn from(args: ControllerArgs) -> Self {
        let identity = args.identity.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| format!("tollgate-controller-{}", std::process::id()))
        });
        let webhook = args.webhook_listen.map(|listen| WebhookConfig {
            listen,
            configuration: args.webhook_configuration,
            service: args.webhook_service,
            native_sidecars: args.native_sidecars,
            inject: InjectConfig {
                image: args.sidecar_image,
                pull_policy: args.sidecar_pull_policy,
                controller_url: args.sidecar_controller_url.unwrap_or_else(|| {
                    format!("https://{}.{}.svc:9443", args.push_service, args.namespace)
                }),
                controller_ca: String::new(),
                audience: args.audience.clone(),
                native_sidecars: false,
                controller_name: args.controller_name,
                extra_args: args.sidecar_args,
                extra_env: args.sidecar_env,
            },
        });
        ControllerConfig {
            push_listen: args.push_listen,
            tls: TlsConfig {
                push_service: args.push_service,
                secret: args.tls_secret,
                cert_dir: args.tls_cert_dir,
                extra_names: args.tls_dns_names,
            },
            admin_listen: args.admin_listen,
            namespace: args.namespace,
            watch_namespace: args.watch_namespace,
            identity,
            audience: args.audience,
            lease_name: args.lease_name,
            kubeconfig: args.kubeconfig,
            heartbeat: args.heartbeat,
            webhook,
        }
    }
}

pub(crate) fn run(args: ControllerArgs) -> ExitCode {
    super::run_async(None, tollgate_controller::run(args.into()))
}
