//! The `tollgate` command: parse the command line, start logging, run one
//! subcommand. Each subcommand lives in [`cli`], turns its flags into the
//! library's configuration with `TryFrom`, and runs it.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tollgate_runtime::logging;

/// mimalloc rather than the C library's allocator: a proxied call makes a
/// few dozen small allocations, which glibc's malloc spends ~10 % of the
/// sidecar's CPU on and musl's (the container image) far more.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Policy checks in front of MCP servers.
#[derive(Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Json, env = "TOLLGATE_LOG_FORMAT")]
    log_format: logging::Format,
    /// Log filter, e.g. `info` or `tollgate=debug` (RUST_LOG syntax).
    #[arg(long, global = true, default_value = "info", env = "TOLLGATE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the policy proxy in front of one MCP server.
    Proxy(Box<cli::proxy::ProxyArgs>),
    /// Validate McpToolPolicy files; print every problem; exit 1 on any.
    Check(cli::check::CheckArgs),
    /// Watch McpToolPolicies and sidecar pods; push each pod's rules to its sidecar.
    Controller(Box<cli::controller::ControllerArgs>),
    /// Print the McpToolPolicy CRD (YAML), or write it into a directory.
    Crdgen(cli::crdgen::CrdgenArgs),
    /// Approve a held tool call on a sidecar's admin listener (file mode).
    Approve(cli::approve::DecideArgs),
    /// Reject a held tool call on a sidecar's admin listener (file mode); final.
    Reject(cli::approve::DecideArgs),
    /// List the approvals a sidecar keeps (file mode).
    Approvals(cli::approve::ListArgs),
    /// Run a stdio MCP server behind the policy, on this process's stdio
    /// (for desktop clients): `tollgate wrap --policy p.yaml -- npx server`.
    Wrap(Box<cli::wrap::WrapArgs>),
    /// Print a PolicyLayer or Intercept policy as an equivalent McpToolPolicy (YAML).
    Import(cli::import::ImportArgs),
    /// Copy this binary to a path (the init container of in-pod stdio injection).
    #[command(hide = true)]
    CopyBinary(cli::copy_binary::CopyBinaryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `wrap` speaks MCP on stdout: its logs go to stderr.
    let target = match cli.command {
        Command::Wrap(_) => logging::Target::Stderr,
        _ => logging::Target::Stdout,
    };
    let _log_guard = logging::init_to(cli.log_format, &cli.log, target);
    match cli.command {
        Command::Wrap(args) => cli::wrap::run(*args),
        Command::Import(args) => cli::import::run(&args),
        Command::CopyBinary(args) => cli::copy_binary::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Crdgen(args) => cli::crdgen::run(&args),
        Command::Controller(args) => cli::controller::run(*args),
        Command::Proxy(args) => cli::proxy::run(*args),
        Command::Approve(args) => cli::approve::decide(&args, "approve"),
        Command::Reject(args) => cli::approve::decide(&args, "reject"),
        Command::Approvals(args) => cli::approve::list(&args),
    }
}
