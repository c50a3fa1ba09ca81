//! Sidecar settings, with the defaults a production pod starts from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

/// Where the sidecar's rules come from.
#[derive(Clone, Debug)]
pub enum RuleSource {
    /// McpToolPolicy files or directories, watched for changes.
    Files(Vec<PathBuf>),
    /// Snapshots pushed by the tollgate controller.
    Controller(ManagedConfig),
}

/// A sidecar managed by the controller.
#[derive(Clone, Debug)]
pub struct ManagedConfig {
    /// The controller's push endpoint, e.g. `https://tollgate.tollgate-system.svc:9443`.
    pub controller: Uri,
    /// How the controller is verified.
    pub controller_tls: ControllerTls,
    /// The pod's projected ServiceAccount token (re-read on every connect:
    /// the kubelet rotates it).
    pub token_file: PathBuf,
    /// This pod's namespace.
    pub namespace: String,
    /// This pod's name.
    pub pod: String,
    /// Where the last snapshot is kept, so a restarted sidecar enforces it
    /// before the controller answers.
    pub snapshot_file: Option<PathBuf>,
    /// Allow tool calls before the first snapshot (default: refuse them).
    pub fail_open: bool,
    /// What to do when no policy selects this pod.
    pub unselected: Unselected,
}

/// How a managed sidecar knows it talks to the controller: the rules it
/// enforces come from whoever answers.
#[derive(Clone, Debug)]
pub enum ControllerTls {
    /// `https://`, the certificate verified against exactly these CAs (the
    /// controller's own, which the injection webhook hands the sidecar) —
    /// never the public roots.
    Verify(CaSource),
    /// Plain `http://`, nothing verified: `--controller-insecure`, for local
    /// tests only.
    Insecure,
}

/// Where a CA bundle (PEM) comes from.
#[derive(Clone, Debug)]
pub enum CaSource {
    /// A file, read at start.
    File(PathBuf),
    /// The PEM text itself (from the environment, for injected sidecars).
    Pem(String),
}

/// What a managed sidecar does with tool calls when no policy selects its pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Unselected {
    /// Refuse every tool call until a policy selects the pod.
    #[default]
    Deny,
    /// Let every tool call through.
    Allow,
}

/// How the sidecar tells callers apart, as `--identity` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IdentityKind {
    /// Do not read tokens.
    #[default]
    None,
    /// Bearer JWTs signed by a key of a JWKS (file, URL or discovered).
    Jwt,
    /// Kubernetes ServiceAccount tokens, checked with TokenReview (needs `create tokenreviews`).
    Kubernetes,
}

/// How the sidecar tells callers apart (see `proxy::identity`).
#[derive(Clone, Debug, Default)]
pub enum IdentitySource {
    /// Tokens are not read; calls have no subject.
    #[default]
    None,
    /// Bearer JWTs verified against a JWKS file.
    Jwt {
        /// Where the key set (RFC 7517 JSON) comes from.
        keys: JwksSource,
        /// The required `iss`, if any.
        issuer: Option<String>,
        /// The required `aud`, if any.
        audience: Option<String>,
    },
    /// Kubernetes ServiceAccount tokens, verified with TokenReview.
    Kubernetes {
        /// The audience tokens must be issued for.
        audience: String,
        /// The kubeconfig to reach the API with (default: in-cluster).
        kubeconfig: Option<PathBuf>,
    },
}

/// Where the keys that sign agents' JWTs come from.
#[derive(Clone, Debug)]
pub enum JwksSource {
    /// A file, re-read when it changes.
    File(PathBuf),
    /// Fetched over HTTPS and refreshed.
    Https {
        /// A JWKS URL; `None` discovers it from the issuer
        /// (`{iss}/.well-known/openid-configuration`).
        url: Option<String>,
        /// CAs of the identity provider's certificate (default: public roots).
        ca_file: Option<PathBuf>,
        /// How often the keys are fetched again.
        refresh: Duration,
    },
}

/// Where `scope: Shared` budgets live.
#[derive(Clone, Debug)]
pub struct SharedStoreConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// How long one Redis operation may take before the limit follows its
    /// `onStoreError`.
    pub timeout: Duration,
    /// TLS settings for a `rediss://` URL.
    pub tls: SharedStoreTls,
}

/// TLS to Redis (`rediss://`). Without a CA file the server certificate must
/// chain to a public root: the image has no system trust store, so tollgate
/// carries Mozilla's roots (managed Redis services use public CAs).
#[derive(Clone, Debug, Default)]
pub struct SharedStoreTls {
    /// PEM file of the CAs that sign the server's certificate, replacing the
    /// public roots.
    pub ca_file: Option<PathBuf>,
    /// The same as PEM text (from the environment, for injected sidecars).
    pub ca_pem: Option<String>,
    /// PEM client certificate chain and key, for Redis with
    /// `tls-auth-clients yes`: both or neither.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// Everything the proxy needs to run.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The rules.
    pub rules: RuleSource,
    /// The MCP server behind the proxy, e.g. `http://127.0.0.1:8080`.
    pub upstream: Uri,
    /// Where agents connect.
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_listen: SocketAddr,
    /// The largest client message body accepted.
    pub max_body_bytes: usize,
    /// The largest upstream JSON body the proxy reads to filter it.
    pub max_upstream_body_bytes: usize,
    /// How long a client may take to send request headers, and how long an
    /// idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body.
    pub body_read_timeout: Duration,
    /// How long connecting to the upstream may take.
    pub upstream_connect_timeout: Duration,
    /// How long the upstream may take to start answering a request.
    pub upstream_response_timeout: Duration,
    /// How often policy files are re-read even without a change
    /// notification (a safety net for filesystems without inotify).
    pub reload_interval: Duration,
    /// Log tool arguments in the audit log instead of their digest.
    pub log_arguments: bool,
    /// The most client connections served at once; connections serving no
    /// request are reclaimed for new clients when all are taken.
    pub max_connections: usize,
    /// The most server-to-client event streams (GET) open at once; keep it
    /// well under `max_connections`, since each holds a connection.
    pub max_streams: usize,
    /// The most event streams one caller (verified subject, else session)
    /// keeps open; callers with neither share half of `max_streams`.
    pub max_streams_per_caller: usize,
    /// The most JSON values (keys included) a client message may hold.
    pub max_json_values: usize,
    /// Client bodies larger than this are parsed on the blocking pool, not
    /// on the thread serving connections (`usize::MAX`: never).
    pub parse_offload_above: usize,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// How callers are identified.
    pub identity: IdentitySource,
    /// Refuse requests that carry no bearer token.
    pub require_identity: bool,
    /// The Redis for shared budgets, if any.
    pub shared_store: Option<SharedStoreConfig>,
    /// Serve the approval routes (file mode) on an admin listener that is
    /// not bound to loopback: whoever reaches them decides.
    pub approvals_remote: bool,
    /// Where approval notifications go, signed, if anywhere.
    pub approval_webhook: Option<crate::approvals::notify::NotifyConfig>,
    /// Keep approvals as `McpToolCallApproval` objects in the pod's
    /// namespace (managed mode) instead of in memory.
    pub approvals_in_cluster: Option<crate::approvals::cluster::ClusterSettings>,
    /// Run the MCP server as stdio child processes (one per session)
    /// instead of reaching `upstream` over HTTP.
    pub stdio: Option<crate::stdio::bridge::StdioUpstream>,
}

impl ProxyConfig {
    /// A configuration with production defaults for the given endpoints.
    pub fn new(
        rules: RuleSource,
        upstream: Uri,
        listen: SocketAddr,
        admin_listen: SocketAddr,
    ) -> Self {
        ProxyConfig {
            rules,
            upstream,
            listen,
            admin_listen,
            max_body_bytes: 4 << 20,
            max_upstream_body_bytes: 32 << 20,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(300),
            reload_interval: Duration::from_secs(10),
            log_arguments: false,
            max_connections: 4096,
            max_streams: 1024,
            max_streams_per_caller: 32,
            max_json_values: tollgate_mcp::json::DEFAULT_MAX_VALUES,
            parse_offload_above: crate::transport::parse::OFFLOAD_ABOVE,
            shutdown_grace: Duration::from_secs(10),
            identity: IdentitySource::None,
            require_identity: false,
            shared_store: None,
            approvals_remote: false,
            approval_webhook: None,
            approvals_in_cluster: None,
            stdio: None,
        }
    }
}
