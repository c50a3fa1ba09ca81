//! `tollgate wrap`: its flags, and the stdio wrap they configure.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tollgate_sidecar::{AuditConfig, AuditLevel, SharedStoreConfig, WrapConfig};

#[derive(clap::Args)]
pub(crate) struct WrapArgs {
    /// McpToolPolicy file or directory (repeatable); reloaded on change.
    #[arg(
        long = "policy",
        env = "TOLLGATE_POLICY",
        value_delimiter = ',',
        required = true
    )]
    policies: Vec<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here (default: no admin listener).
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Largest message accepted from the agent (one line), in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Largest message read from the MCP server (one line), in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    max_server_line_bytes: usize,
    /// Time the MCP server may take to answer a request.
    #[arg(long, default_value = "5m", value_parser = super::flag_duration)]
    upstream_timeout: Duration,
    /// Time the MCP server gets to exit once its input closes, and again after SIGTERM.
    #[arg(long, default_value = "5s", value_parser = super::flag_duration)]
    stop_grace: Duration,
    /// Re-read policy files this often even without change events.
    #[arg(long, default_value = "10s", value_parser = super::flag_duration)]
    reload_interval: Duration,
    /// Which decisions the audit log (on stderr) records.
    #[arg(long, value_enum, default_value_t = AuditLevel::All)]
    audit_log: AuditLevel,
    /// Write tool arguments to the audit log in clear (default: a digest).
    #[arg(long)]
    log_arguments: bool,
    /// Redis for `scope: Shared` rate limits (shared with other tollgates).
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    redis_url: Option<String>,
    /// How long one Redis operation may take before shared limits follow their onStoreError.
    #[arg(long, default_value = "250ms", value_parser = super::flag_duration)]
    redis_timeout: Duration,
    /// The MCP server to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

impl From<WrapArgs> for (WrapConfig, AuditConfig) {
    fn from(args: WrapArgs) -> Self {
        let config = WrapConfig {
            admin_listen: args.admin_listen,
            max_line_bytes: args.max_body_bytes,
            max_server_line_bytes: args.max_server_line_bytes,
            response_timeout: args.upstream_timeout,
            stop_grace: args.stop_grace,
            reload_interval: args.reload_interval,
            shared_store: args.redis_url.map(|url| SharedStoreConfig {
                url,
                timeout: args.redis_timeout,
                tls: Default::default(),
            }),
            ..WrapConfig::new(args.policies, args.command)
        };
        let audit = AuditConfig {
            level: args.audit_log,
            log_arguments: args.log_arguments,
        };
        (config, audit)
    }
}

/// Runs the server behind the policy; exits with the server's exit code.
pub(crate) fn run(args: WrapArgs) -> ExitCode {
    let (config, audit) = args.into();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(tollgate_sidecar::wrap(config, audit));
    // Threads blocked on stdin must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
