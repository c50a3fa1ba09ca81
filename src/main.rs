//! The `tollgate` command: CLI wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc rather than the C library's allocator: a proxied call makes a
/// few dozen small allocations, which glibc's malloc spends ~10 % of the
/// sidecar's CPU on and musl's (the container image) far more.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tollgate::policy::{Problems, duration, load};
use tollgate::proxy::config::ManagedConfig;
use tollgate::proxy::{
    self, AuditConfig, AuditLevel, IdentitySource, JwksSource, ProxyConfig, RuleSource,
    SharedStoreConfig, SharedStoreTls,
};

/// Policy checks in front of MCP servers.
#[derive(Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "TOLLGATE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `tollgate=debug` (RUST_LOG syntax).
    #[arg(long, global = true, default_value = "info", env = "TOLLGATE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the policy proxy in front of one MCP server.
    Proxy(Box<ProxyArgs>),
    /// Validate McpToolPolicy files; print every problem; exit 1 on any.
    Check {
        /// Policy files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Watch McpToolPolicies and sidecar pods; push each pod's rules to its sidecar.
    Controller(Box<ControllerArgs>),
    /// Print the McpToolPolicy CRD (YAML), or write it into a directory.
    Crdgen {
        /// Write `mcptoolpolicies.tollgate.dev.yaml` into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// McpToolPolicy file or directory (repeatable); reloaded on change.
    #[arg(
        long = "policy",
        env = "TOLLGATE_POLICY",
        value_delimiter = ',',
        required_unless_present = "controller",
        conflicts_with = "controller"
    )]
    policies: Vec<PathBuf>,
    /// Take rules from the tollgate controller at this URL instead of files.
    #[arg(long, env = "TOLLGATE_CONTROLLER", requires = "token_file")]
    controller: Option<http::Uri>,
    /// The pod's projected ServiceAccount token (managed mode).
    #[arg(long, env = "TOLLGATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// This pod's name (managed mode; the Downward API sets it).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// This pod's namespace (managed mode; the Downward API sets it).
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// Keep the last snapshot here so a restarted sidecar enforces it at once (managed mode).
    #[arg(long, env = "TOLLGATE_SNAPSHOT_FILE")]
    snapshot_file: Option<PathBuf>,
    /// Allow tool calls before the first snapshot arrives (default: refuse them).
    #[arg(long)]
    fail_open: bool,
    /// What a pod no policy selects does with tool calls (managed mode).
    #[arg(long, value_enum, default_value_t = Unselected::Deny)]
    unselected: Unselected,
    /// The MCP server, e.g. http://127.0.0.1:8081.
    #[arg(long, env = "TOLLGATE_UPSTREAM")]
    upstream: http::Uri,
    /// Address agents connect to.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TOLLGATE_LISTEN")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9901", env = "TOLLGATE_ADMIN_LISTEN")]
    admin_listen: SocketAddr,
    /// Largest client message accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Time allowed to send request headers; also the idle keep-alive timeout.
    #[arg(long, default_value = "30s", value_parser = flag_duration)]
    header_read_timeout: Duration,
    /// Time allowed to send a request body.
    #[arg(long, default_value = "30s", value_parser = flag_duration)]
    body_read_timeout: Duration,
    /// Time allowed to connect to the upstream.
    #[arg(long, default_value = "5s", value_parser = flag_duration)]
    upstream_connect_timeout: Duration,
    /// Time the upstream may take to start a response.
    #[arg(long, default_value = "5m", value_parser = flag_duration)]
    upstream_timeout: Duration,
    /// Re-read policy files this often even without change events.
    #[arg(long, default_value = "10s", value_parser = flag_duration)]
    reload_interval: Duration,
    /// Most client connections at once.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Which decisions the audit log records.
    #[arg(long, value_enum, default_value_t = AuditLevel::All)]
    audit_log: AuditLevel,
    /// Write tool arguments to the audit log in clear (default: a digest).
    #[arg(long)]
    log_arguments: bool,
    /// Redis for `scope: Shared` rate limits, e.g. redis://redis.tollgate-system:6379/0.
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    redis_url: Option<String>,
    /// PEM CA certificates that sign the Redis server's certificate (rediss:// URLs); without
    /// it, public roots (Mozilla's, built in).
    #[arg(long, env = "TOLLGATE_REDIS_CA_FILE", conflicts_with = "redis_ca_pem")]
    redis_ca_file: Option<PathBuf>,
    /// The same CA certificates as PEM text instead of a file (how the chart passes
    /// redis.tls.caCert to injected sidecars).
    #[arg(
        long,
        env = "TOLLGATE_REDIS_CA_PEM",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    redis_ca_pem: Option<String>,
    /// PEM client certificate chain for Redis with `tls-auth-clients yes` (with --redis-client-key).
    #[arg(
        long,
        env = "TOLLGATE_REDIS_CLIENT_CERT",
        requires = "redis_client_key"
    )]
    redis_client_cert: Option<PathBuf>,
    /// PEM private key of --redis-client-cert.
    #[arg(
        long,
        env = "TOLLGATE_REDIS_CLIENT_KEY",
        requires = "redis_client_cert"
    )]
    redis_client_key: Option<PathBuf>,
    /// How long one Redis operation may take before shared limits follow their onStoreError.
    #[arg(long, default_value = "250ms", value_parser = flag_duration)]
    redis_timeout: Duration,
    /// How callers are identified, for rules' `subjects` and `key.subject` budgets.
    #[arg(long, value_enum, default_value_t = IdentityKind::None, env = "TOLLGATE_IDENTITY")]
    identity: IdentityKind,
    /// The JWKS (RFC 7517 JSON file) that signs callers' JWTs (--identity jwt); re-read when
    /// it changes.
    #[arg(long, env = "TOLLGATE_JWKS_FILE", conflicts_with = "jwks_url")]
    jwks_file: Option<PathBuf>,
    /// Fetch the JWKS from this https:// URL instead (--identity jwt). Without --jwks-file and
    /// --jwks-url, it is discovered from --jwt-issuer (OpenID Connect discovery).
    #[arg(long, env = "TOLLGATE_JWKS_URL")]
    jwks_url: Option<String>,
    /// PEM CA certificates of the identity provider serving the JWKS (default: public roots).
    #[arg(long, env = "TOLLGATE_JWKS_CA_FILE")]
    jwks_ca_file: Option<PathBuf>,
    /// How often a fetched JWKS is fetched again (also soon after a token names an unknown key).
    #[arg(long, default_value = "5m", value_parser = flag_duration)]
    jwks_refresh: Duration,
    /// The `iss` callers' JWTs must carry (--identity jwt).
    #[arg(long, env = "TOLLGATE_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// The `aud` callers' JWTs must carry (--identity jwt).
    #[arg(long, env = "TOLLGATE_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// The audience callers' ServiceAccount tokens must be issued for (--identity kubernetes).
    #[arg(
        long,
        default_value = "tollgate-agents",
        env = "TOLLGATE_TOKEN_AUDIENCE"
    )]
    token_audience: String,
    /// Threads serving requests: 1 (the default) keeps each request and its
    /// upstream exchange on one thread, the cheapest for a sidecar; more
    /// serve more concurrent calls where the pod has the cores.
    #[arg(long, default_value_t = 1, env = "TOLLGATE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: u16,
    /// A kubeconfig for TokenReviews (--identity kubernetes; default: $KUBECONFIG or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Refuse requests without a bearer token (default: such callers have no subject).
    #[arg(long, env = "TOLLGATE_REQUIRE_IDENTITY")]
    require_identity: bool,
}

/// How `tollgate proxy` identifies callers.
#[derive(Clone, Copy, ValueEnum)]
enum IdentityKind {
    /// Do not read tokens.
    None,
    /// Bearer JWTs signed by a key in --jwks-file.
    Jwt,
    /// Kubernetes ServiceAccount tokens, checked with TokenReview (needs `create tokenreviews`).
    Kubernetes,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Address sidecars connect to.
    #[arg(long, default_value = "0.0.0.0:9443", env = "TOLLGATE_PUSH_LISTEN")]
    push_listen: SocketAddr,
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
    #[arg(long, default_value = tollgate::push::DEFAULT_AUDIENCE)]
    audience: String,
    /// The Lease that elects the replica writing policy status.
    #[arg(long, default_value = "tollgate-controller")]
    lease_name: String,
    /// A kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Heartbeat interval on quiet sidecar streams.
    #[arg(long, default_value = "10s", value_parser = flag_duration)]
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
    /// The Secret (in --namespace) holding the webhook CA and certificate.
    #[arg(long, default_value = "tollgate-webhook-tls")]
    webhook_secret: String,
    /// Read the webhook's tls.crt/tls.key from this directory (cert-manager) instead.
    #[arg(long)]
    webhook_cert_dir: Option<PathBuf>,
    /// Another name (DNS or IP) for the webhook certificate (repeatable).
    #[arg(long = "webhook-dns-name")]
    webhook_dns_names: Vec<String>,
    /// The sidecar image the webhook injects.
    #[arg(long, default_value = "tollgate:0.1.0", env = "TOLLGATE_SIDECAR_IMAGE")]
    sidecar_image: String,
    /// The injected sidecar's imagePullPolicy.
    #[arg(long)]
    sidecar_pull_policy: Option<String>,
    /// Where injected sidecars find the controller (default http://tollgate.<namespace>.svc:9443).
    #[arg(long)]
    sidecar_controller_url: Option<String>,
    /// Inject native sidecars (init containers with restartPolicy Always).
    #[arg(long, value_enum, default_value_t = Native::Auto)]
    native_sidecars: Native,
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

#[derive(Clone, Copy, ValueEnum)]
enum Native {
    /// If the apiserver is 1.29 or newer.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// What a managed sidecar does when no policy selects its pod.
#[derive(Clone, Copy, ValueEnum)]
enum Unselected {
    /// Refuse every tool call until a policy selects the pod.
    Deny,
    /// Let every tool call through.
    Allow,
}

/// Durations of flags: those of policies (`30s`, `1m`), plus `250ms`.
fn flag_duration(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms")
        && let Ok(ms) = ms.parse::<u64>()
    {
        return Ok(Duration::from_millis(ms));
    }
    duration::parse(s).map_err(|e| format!("{e}, or milliseconds like \"250ms\""))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = tollgate::logging::init(
        match cli.log_format {
            LogFormat::Json => tollgate::logging::Format::Json,
            LogFormat::Text => tollgate::logging::Format::Text,
        },
        &cli.log,
    );
    match cli.command {
        Command::Check { paths } => check(&paths),
        Command::Crdgen { out } => crdgen(out.as_deref()),
        Command::Controller(args) => {
            let identity = args.identity.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| format!("tollgate-controller-{}", std::process::id()))
            });
            run_async(
                None,
                tollgate::controller::run(tollgate::controller::ControllerConfig {
                    push_listen: args.push_listen,
                    admin_listen: args.admin_listen,
                    namespace: args.namespace.clone(),
                    watch_namespace: args.watch_namespace,
                    identity,
                    audience: args.audience.clone(),
                    lease_name: args.lease_name,
                    kubeconfig: args.kubeconfig,
                    heartbeat: args.heartbeat,
                    webhook: args.webhook_listen.map(|listen| {
                        tollgate::controller::WebhookConfig {
                            listen,
                            configuration: args.webhook_configuration.clone(),
                            service: args.webhook_service.clone(),
                            secret: args.webhook_secret.clone(),
                            cert_dir: args.webhook_cert_dir.clone(),
                            extra_names: args.webhook_dns_names.clone(),
                            native_sidecars: match args.native_sidecars {
                                Native::Auto => tollgate::controller::NativeSidecars::Auto,
                                Native::Always => tollgate::controller::NativeSidecars::Always,
                                Native::Never => tollgate::controller::NativeSidecars::Never,
                            },
                            inject: tollgate::webhook::inject::InjectConfig {
                                image: args.sidecar_image.clone(),
                                pull_policy: args.sidecar_pull_policy.clone(),
                                controller_url: args.sidecar_controller_url.clone().unwrap_or_else(
                                    || format!("http://tollgate.{}.svc:9443", args.namespace),
                                ),
                                audience: args.audience.clone(),
                                native_sidecars: false,
                                controller_name: args.controller_name.clone(),
                                extra_args: args.sidecar_args.clone(),
                                extra_env: args.sidecar_env.clone(),
                            },
                        }
                    }),
                }),
            )
        }
        Command::Proxy(args) => {
            let (rules, identity) =
                match rule_source(&args).and_then(|r| Ok((r, identity_source(&args)?))) {
                    Ok(r) => r,
                    Err(message) => {
                        eprintln!("error: {message}");
                        return ExitCode::from(2);
                    }
                };
            let config = ProxyConfig {
                max_body_bytes: args.max_body_bytes,
                header_read_timeout: args.header_read_timeout,
                body_read_timeout: args.body_read_timeout,
                upstream_connect_timeout: args.upstream_connect_timeout,
                upstream_response_timeout: args.upstream_timeout,
                reload_interval: args.reload_interval,
                max_connections: args.max_connections,
                identity,
                require_identity: args.require_identity,
                shared_store: args.redis_url.clone().map(|url| SharedStoreConfig {
                    url,
                    timeout: args.redis_timeout,
                    tls: SharedStoreTls {
                        ca_file: args.redis_ca_file.clone(),
                        ca_pem: args.redis_ca_pem.clone(),
                        client_cert_file: args.redis_client_cert.clone(),
                        client_key_file: args.redis_client_key.clone(),
                    },
                }),
                ..ProxyConfig::new(rules, args.upstream, args.listen, args.admin_listen)
            };
            let audit = AuditConfig {
                level: args.audit_log,
                log_arguments: args.log_arguments,
            };
            run_async(
                Some(usize::from(args.worker_threads)),
                proxy::run(config, audit),
            )
        }
    }
}

fn rule_source(args: &ProxyArgs) -> Result<RuleSource, String> {
    let Some(controller) = args.controller.clone() else {
        return Ok(RuleSource::Files(args.policies.clone()));
    };
    let need = |v: &Option<String>, what: &str| {
        v.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            format!("--controller needs the pod's {what}: pass --pod-{what} or set POD_{} from the Downward API", what.to_uppercase())
        })
    };
    Ok(RuleSource::Controller(ManagedConfig {
        controller,
        token_file: args
            .token_file
            .clone()
            .ok_or("--controller needs --token-file")?,
        namespace: need(&args.pod_namespace, "namespace")?,
        pod: need(&args.pod_name, "name")?,
        snapshot_file: args.snapshot_file.clone(),
        fail_open: args.fail_open,
        deny_unselected: matches!(args.unselected, Unselected::Deny),
    }))
}

fn identity_source(args: &ProxyArgs) -> Result<IdentitySource, String> {
    Ok(match args.identity {
        IdentityKind::None => IdentitySource::None,
        IdentityKind::Jwt => IdentitySource::Jwt {
            keys: match (&args.jwks_file, &args.jwks_url, &args.jwt_issuer) {
                (Some(path), _, _) => JwksSource::File(path.clone()),
                (None, url @ Some(_), _) | (None, url @ None, Some(_)) => JwksSource::Https {
                    url: url.clone(),
                    ca_file: args.jwks_ca_file.clone(),
                    refresh: args.jwks_refresh,
                },
                (None, None, None) => {
                    return Err(
                        "--identity jwt needs the key set that signs your agents' tokens: \
                         --jwks-file, --jwks-url, or --jwt-issuer to discover it"
                            .into(),
                    );
                }
            },
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
        },
        IdentityKind::Kubernetes => IdentitySource::Kubernetes {
            audience: args.token_audience.clone(),
            kubeconfig: args.kubeconfig.clone(),
        },
    })
}

fn check(paths: &[PathBuf]) -> ExitCode {
    match load::load(paths) {
        Ok((set, loaded)) => {
            let rules: usize = set.policies().iter().map(|p| p.rules().len()).sum();
            let plural =
                |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
            println!(
                "ok: {} {}, {rules} {}, version {}",
                loaded.len(),
                plural(loaded.len(), "policy", "policies"),
                plural(rules, "rule", "rules"),
                set.version()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            let n = problems.len();
            eprintln!("{}", Problems(problems));
            eprintln!("{n} {}", if n == 1 { "problem" } else { "problems" });
            ExitCode::FAILURE
        }
    }
}

fn crdgen(out: Option<&std::path::Path>) -> ExitCode {
    let yaml = match tollgate::crd::crd_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("error: cannot render the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(dir) = out else {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    };
    let file = dir.join("mcptoolpolicies.tollgate.dev.yaml");
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&file, yaml)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// Runs `fut` on a runtime with `threads` workers (default: one per core).
/// One worker is a current-thread runtime: a request, its upstream exchange
/// and their wake-ups stay on one thread, which is what a sidecar with a
/// fraction of a core wants.
fn run_async(threads: Option<usize>, fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
