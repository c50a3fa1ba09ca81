//! The `tollgate` command: CLI wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tollgate::policy::{Problems, duration, load};
use tollgate::proxy::{self, AuditConfig, AuditLevel, ProxyConfig, RuleSource};

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
        required = true,
        env = "TOLLGATE_POLICY",
        value_delimiter = ','
    )]
    policies: Vec<PathBuf>,
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
}

fn flag_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = init_logging(cli.log_format, &cli.log);
    match cli.command {
        Command::Check { paths } => check(&paths),
        Command::Crdgen { out } => crdgen(out.as_deref()),
        Command::Proxy(args) => {
            let config = ProxyConfig {
                max_body_bytes: args.max_body_bytes,
                header_read_timeout: args.header_read_timeout,
                body_read_timeout: args.body_read_timeout,
                upstream_connect_timeout: args.upstream_connect_timeout,
                upstream_response_timeout: args.upstream_timeout,
                reload_interval: args.reload_interval,
                max_connections: args.max_connections,
                ..ProxyConfig::new(
                    RuleSource::Files(args.policies),
                    args.upstream,
                    args.listen,
                    args.admin_listen,
                )
            };
            let audit = AuditConfig {
                level: args.audit_log,
                log_arguments: args.log_arguments,
            };
            run_async(proxy::run(config, audit))
        }
    }
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

fn run_async(fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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

fn init_logging(format: LogFormat, filter: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
