//! `tollgate proxy`: its flags, and the sidecar configuration they make.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tollgate_sidecar::{
    ApprovalsInCluster, AuditConfig, AuditLevel, CaSource, ControllerTls, IdentityKind,
    IdentitySource, JwksSource, ManagedConfig, NotifyConfig, ProxyConfig, RuleSource,
    SharedStoreConfig, SharedStoreTls, StdioUpstream, Unselected,
};

#[derive(clap::Args)]
pub(crate) struct ProxyArgs {
    #[command(flatten)]
    pub(crate) log: super::LogArgs,
    /// McpToolPolicy file or directory (repeatable); reloaded on change.
    #[arg(
        long = "policy",
        env = "TOLLGATE_POLICY",
        value_delimiter = ',',
        required_unless_present = "controller",
        conflicts_with = "controller"
    )]
    policies: Vec<PathBuf>,
    /// Take rules from the tollgate controller at this https:// URL instead of files.
    #[arg(long, env = "TOLLGATE_CONTROLLER", requires = "token_file")]
    controller: Option<http::Uri>,
    /// The CA (PEM) the controller's certificate must chain to; nothing else is trusted (managed mode).
    #[arg(
        long,
        env = "TOLLGATE_CONTROLLER_CA_FILE",
        conflicts_with = "controller_ca_pem"
    )]
    controller_ca_file: Option<PathBuf>,
    /// The same CA as PEM text (the injection webhook sets it).
    #[arg(long, env = "TOLLGATE_CONTROLLER_CA_PEM", hide_env_values = true)]
    controller_ca_pem: Option<String>,
    /// Reach the controller over plain http:// and verify nothing: whoever answers sets the rules. Local tests only.
    #[arg(long, conflicts_with_all = ["controller_ca_file", "controller_ca_pem"])]
    controller_insecure: bool,
    /// The pod's projected ServiceAccount token (managed mode).
    #[arg(long, env = "TOLLGATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// This pod's name (managed mode; the Downward API sets it).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// This pod's namespace (managed mode; the Downward API sets it).
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// This pod's uid (the Downward API sets it): approval objects name the pod as their owner, so they go with it.
    #[arg(long, env = "POD_UID")]
    pod_uid: Option<String>,
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
    #[arg(
        long,
        env = "TOLLGATE_UPSTREAM",
        required_unless_present = "upstream_command",
        conflicts_with = "upstream_command"
    )]
    upstream: Option<http::Uri>,
    /// Run the MCP server given after `--` as stdio processes, one per MCP session
    /// (docs/stdio.md), instead of reaching --upstream over HTTP.
    #[arg(long)]
    upstream_command: bool,
    /// Most stdio server processes (MCP sessions) at once (--upstream-command).
    #[arg(long, default_value_t = 16, env = "TOLLGATE_MAX_STDIO_SESSIONS")]
    max_stdio_sessions: usize,
    /// End a session, and stop its server process, after this long without a request
    /// (--upstream-command).
    #[arg(long, default_value = "10m", value_parser = super::flag_duration)]
    stdio_idle_timeout: Duration,
    /// Address agents connect to.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TOLLGATE_LISTEN")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9901", env = "TOLLGATE_ADMIN_LISTEN")]
    admin_listen: SocketAddr,
    /// Serve the approval routes (`tollgate approve --admin`) even when --admin-listen is not loopback: whoever reaches them decides.
    #[arg(long)]
    approvals_remote: bool,
    /// POST approval events (requested, approved, rejected, expired) here as JSON, signed (see --approval-webhook-secret-file).
    #[arg(
        long,
        env = "TOLLGATE_APPROVAL_WEBHOOK",
        requires = "approval_webhook_secret_file"
    )]
    approval_webhook: Option<http::Uri>,
    /// The HMAC-SHA256 key that signs approval notifications (header X-Tollgate-Signature-256).
    #[arg(
        long,
        env = "TOLLGATE_APPROVAL_WEBHOOK_SECRET_FILE",
        requires = "approval_webhook"
    )]
    approval_webhook_secret_file: Option<PathBuf>,
    /// Largest client message accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Time allowed to send request headers; also the idle keep-alive timeout.
    #[arg(long, default_value = "30s", value_parser = super::flag_duration)]
    header_read_timeout: Duration,
    /// Time allowed to send a request body.
    #[arg(long, default_value = "30s", value_parser = super::flag_duration)]
    body_read_timeout: Duration,
    /// Time allowed to connect to the upstream.
    #[arg(long, default_value = "5s", value_parser = super::flag_duration)]
    upstream_connect_timeout: Duration,
    /// Time the upstream may take to start a response.
    #[arg(long, default_value = "5m", value_parser = super::flag_duration)]
    upstream_timeout: Duration,
    /// Re-read policy files this often even without change events.
    #[arg(long, default_value = "10s", value_parser = super::flag_duration)]
    reload_interval: Duration,
    /// Most client connections at once; when all are taken, one serving no request
    /// (silent, half-sent, idle) is reclaimed for a new client.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Most server-to-client event streams (GET) open at once.
    #[arg(long, default_value_t = 1024)]
    max_streams: usize,
    /// Most event streams one caller (verified subject, else MCP session) keeps open;
    /// callers with neither share half of --max-streams.
    #[arg(long, default_value_t = 32)]
    max_streams_per_caller: usize,
    /// Most JSON values (keys included) one client message may hold.
    #[arg(long, default_value_t = tollgate_mcp::json::DEFAULT_MAX_VALUES)]
    max_json_values: usize,
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
    #[arg(long, default_value = "250ms", value_parser = super::flag_duration)]
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
    #[arg(long, default_value = "5m", value_parser = super::flag_duration)]
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
    /// A kubeconfig for TokenReviews (--identity kubernetes) and approval objects (--approvals
    /// kubernetes); default: $KUBECONFIG or in-cluster.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where calls held for approval wait: `kubernetes` as McpToolCallApproval objects in the
    /// pod's namespace (needs --controller), `memory` in this process (decided on the admin
    /// listener); `auto`: kubernetes with --controller in a pod or with --kubeconfig, else memory.
    #[arg(long, value_enum, default_value_t = ApprovalsArg::Auto, env = "TOLLGATE_APPROVALS")]
    approvals: ApprovalsArg,
    /// Refuse requests without a bearer token (default: such callers have no subject).
    #[arg(long, env = "TOLLGATE_REQUIRE_IDENTITY")]
    require_identity: bool,
    /// The stdio MCP server and its arguments, after `--` (with --upstream-command).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// `--approvals`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ApprovalsArg {
    Auto,
    Memory,
    Kubernetes,
}

/// Where approvals are kept, from `--approvals` and managed mode.
fn approvals_in_cluster(
    args: &ProxyArgs,
    rules: &RuleSource,
) -> Result<Option<ApprovalsInCluster>, ArgsError> {
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let managed = match rules {
        RuleSource::Controller(m) => Some(m),
        RuleSource::Files(_) => None,
    };
    let wanted = match args.approvals {
        ApprovalsArg::Memory => false,
        ApprovalsArg::Kubernetes => true,
        ApprovalsArg::Auto => managed.is_some() && (in_pod || args.kubeconfig.is_some()),
    };
    match (wanted, managed) {
        (false, _) => Ok(None),
        (true, None) => Err(ArgsError::ApprovalsNeedController),
        (true, Some(m)) => Ok(Some(ApprovalsInCluster {
            kubeconfig: args.kubeconfig.clone(),
            namespace: m.namespace.clone(),
            pod: m.pod.clone(),
            pod_uid: args.pod_uid.clone(),
        })),
    }
}

/// Flags that do not make a working sidecar together.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArgsError {
    /// Managed mode without the pod's name or namespace.
    #[error(
        "--controller needs the pod's {what}: pass --pod-{what} or set POD_{upper} from the Downward API"
    )]
    MissingPod {
        /// `name` or `namespace`.
        what: &'static str,
        /// The environment variable's suffix.
        upper: &'static str,
    },
    /// Approvals in the cluster without managed mode (no pod to bind them to).
    #[error(
        "--approvals kubernetes keeps approvals in the pod's namespace and needs managed mode (--controller, --pod-name, --pod-namespace); without a controller use --approvals memory"
    )]
    ApprovalsNeedController,
    /// Managed mode without the pod's token.
    #[error("--controller needs --token-file")]
    MissingToken,
    /// Managed mode without a way to verify the controller.
    #[error(
        "--controller needs the controller's CA to verify it by: --controller-ca-file, or TOLLGATE_CONTROLLER_CA_PEM (the injection webhook sets it); --controller-insecure with an http:// URL verifies nothing and is for local tests only"
    )]
    NoControllerCa,
    /// `--upstream-command` without a command, or a command without it.
    #[error(
        "--upstream-command runs the MCP server given after `--`, e.g. `tollgate proxy --policy p.yaml --upstream-command -- npx -y my-server`; give both or neither"
    )]
    UpstreamCommand,
    /// `--identity jwt` with no way to get keys.
    #[error(
        "--identity jwt needs the key set that signs your agents' tokens: --jwks-file, --jwks-url, or --jwt-issuer to discover it"
    )]
    NoJwks,
    /// The approval webhook's key cannot be read.
    #[error("reading --approval-webhook-secret-file {}: {source}", path.display())]
    WebhookSecret {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The approval webhook's key is empty.
    #[error("--approval-webhook-secret-file {} is empty; notifications must be signed with a key", .0.display())]
    EmptyWebhookSecret(PathBuf),
}

/// The sidecar's configuration and audit settings from its flags.
pub(crate) struct Proxy {
    config: ProxyConfig,
    audit: AuditConfig,
    worker_threads: usize,
}

impl TryFrom<ProxyArgs> for Proxy {
    type Error = ArgsError;

    fn try_from(args: ProxyArgs) -> Result<Self, ArgsError> {
        let rules = rule_source(&args)?;
        let approvals_in_cluster = approvals_in_cluster(&args, &rules)?;
        let identity = identity_source(&args)?;
        let approval_webhook = match (&args.approval_webhook, &args.approval_webhook_secret_file) {
            (Some(url), Some(path)) => {
                let secret = std::fs::read(path).map_err(|source| ArgsError::WebhookSecret {
                    path: path.clone(),
                    source,
                })?;
                let secret = secret.trim_ascii().to_vec();
                if secret.is_empty() {
                    return Err(ArgsError::EmptyWebhookSecret(path.clone()));
                }
                Some(NotifyConfig {
                    url: url.clone(),
                    secret,
                })
            }
            _ => None,
        };
        let stdio = match (args.upstream_command, args.command.is_empty()) {
            (true, false) => Some(StdioUpstream {
                max_sessions: args.max_stdio_sessions,
                idle_timeout: args.stdio_idle_timeout,
                response_timeout: args.upstream_timeout,
                ..StdioUpstream::new(args.command.clone())
            }),
            (false, true) => None,
            _ => return Err(ArgsError::UpstreamCommand),
        };
        // With --upstream-command the proxy reaches its servers in-process;
        // this URL only names them in logs.
        let upstream = args
            .upstream
            .clone()
            .unwrap_or_else(|| http::Uri::from_static("http://stdio.tollgate"));
        let config = ProxyConfig {
            max_body_bytes: args.max_body_bytes,
            header_read_timeout: args.header_read_timeout,
            body_read_timeout: args.body_read_timeout,
            upstream_connect_timeout: args.upstream_connect_timeout,
            upstream_response_timeout: args.upstream_timeout,
            reload_interval: args.reload_interval,
            max_connections: args.max_connections,
            max_streams: args.max_streams,
            max_streams_per_caller: args.max_streams_per_caller,
            max_json_values: args.max_json_values,
            identity,
            require_identity: args.require_identity,
            shared_store: args.redis_url.map(|url| SharedStoreConfig {
                url,
                timeout: args.redis_timeout,
                tls: SharedStoreTls {
                    ca_file: args.redis_ca_file,
                    ca_pem: args.redis_ca_pem,
                    client_cert_file: args.redis_client_cert,
                    client_key_file: args.redis_client_key,
                },
            }),
            approvals_remote: args.approvals_remote,
            approval_webhook,
            approvals_in_cluster,
            stdio,
            ..ProxyConfig::new(rules, upstream, args.listen, args.admin_listen)
        };
        Ok(Proxy {
            config,
            audit: AuditConfig {
                level: args.audit_log,
                log_arguments: args.log_arguments,
            },
            worker_threads: usize::from(args.worker_threads),
        })
    }
}

fn rule_source(args: &ProxyArgs) -> Result<RuleSource, ArgsError> {
    let Some(controller) = args.controller.clone() else {
        return Ok(RuleSource::Files(args.policies.clone()));
    };
    let need = |v: &Option<String>, what: &'static str, upper: &'static str| {
        v.clone()
            .filter(|s| !s.is_empty())
            .ok_or(ArgsError::MissingPod { what, upper })
    };
    let namespace = need(&args.pod_namespace, "namespace", "NAMESPACE")?;
    let pod = need(&args.pod_name, "name", "NAME")?;
    let controller_tls = match (
        &args.controller_ca_file,
        &args.controller_ca_pem,
        args.controller_insecure,
    ) {
        (_, _, true) => ControllerTls::Insecure,
        (Some(path), _, false) => ControllerTls::Verify(CaSource::File(path.clone())),
        (None, Some(pem), false) if !pem.trim().is_empty() => {
            ControllerTls::Verify(CaSource::Pem(pem.clone()))
        }
        (None, _, false) => return Err(ArgsError::NoControllerCa),
    };
    Ok(RuleSource::Controller(ManagedConfig {
        controller,
        controller_tls,
        token_file: args.token_file.clone().ok_or(ArgsError::MissingToken)?,
        namespace,
        pod,
        snapshot_file: args.snapshot_file.clone(),
        fail_open: args.fail_open,
        unselected: args.unselected,
    }))
}

fn identity_source(args: &ProxyArgs) -> Result<IdentitySource, ArgsError> {
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
                (None, None, None) => return Err(ArgsError::NoJwks),
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

pub(crate) fn run(args: ProxyArgs) -> ExitCode {
    match Proxy::try_from(args) {
        Ok(p) => super::run_async(
            Some(p.worker_threads),
            tollgate_sidecar::run(p.config, p.audit),
        ),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
