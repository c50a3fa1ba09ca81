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

/// `0.1.0 (commit 0123456789ab)`: the commit comes from build.rs.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TOLLGATE_COMMIT"),
    ")"
);

/// Policy checks in front of MCP servers.
#[derive(Parser)]
#[command(name = "tollgate", version = VERSION, about)]
struct Cli {
    /// The log flags of `proxy` and `controller`, still accepted before
    /// the subcommand (`tollgate --log-format json proxy ...`).
    #[arg(long, value_enum, hide = true)]
    log_format: Option<logging::Format>,
    #[arg(long, hide = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the policy proxy in front of one MCP server.
    Proxy(Box<cli::proxy::ProxyArgs>),
    /// Validate policy files; print every problem; exit 1 on any.
    Check(cli::check::CheckArgs),
    /// Run policy tests: calls and the decisions they must get; exit 1 on any mismatch.
    Test(cli::test::TestArgs),
    /// List an MCP server's tools with what each does, or scaffold a policy for them.
    Scan(cli::scan::ScanArgs),
    /// Watch McpToolPolicies and sidecar pods; push each pod's rules to its sidecar.
    Controller(Box<cli::controller::ControllerArgs>),
    /// Print the CRDs (YAML), or write them into a directory.
    Crdgen(cli::crdgen::CrdgenArgs),
    /// Check an installation: CRD, webhook, controller and Lease, uninjected pods, policies. Exit 1 on a failure.
    Doctor(cli::doctor::DoctorArgs),
    /// Which policies govern a pod, and their rules in the order they are judged. Exit 1 when none does.
    Explain(cli::explain::ExplainArgs),
    /// Why a call was denied: the decision record its sidecar keeps. Exit 1 when it keeps none.
    Why(cli::why::WhyArgs),
    /// Approve a held tool call: an McpToolCallApproval in the cluster, or on a sidecar's admin listener (--admin, file mode).
    Approve(cli::approve::DecideArgs),
    /// Reject a held tool call (in the cluster, or --admin in file mode); final.
    Reject(cli::approve::DecideArgs),
    /// List the approvals a sidecar keeps (file mode).
    Approvals(cli::approve::ListArgs),
    /// Run a stdio MCP server behind the policy, on this process's stdio
    /// (for desktop clients): `tollgate wrap --policy p.yaml -- npx server`.
    Wrap(Box<cli::wrap::WrapArgs>),
    /// Print a PolicyLayer or Intercept policy as an equivalent McpToolPolicy (YAML).
    Import(cli::import::ImportArgs),
    /// Probe the controller's readiness and the webhook's TLS endpoint (the chart's `helm test`).
    #[command(hide = true)]
    Probe(cli::probe::ProbeArgs),
    /// Copy this binary to a path (the init container of in-pod stdio injection).
    #[command(hide = true)]
    CopyBinary(cli::copy_binary::CopyBinaryArgs),
}

fn main() -> ExitCode {
    tollgate_runtime::build_info::set_commit(env!("TOLLGATE_COMMIT"));
    let cli = Cli::parse();
    let log = |args: &cli::LogArgs, target| {
        logging::init_to(
            cli.log_format.unwrap_or(args.log_format),
            cli.log.as_deref().unwrap_or(&args.log),
            target,
        )
    };
    match cli.command {
        Command::Wrap(args) => {
            // `wrap` speaks MCP on stdout: its logs go to stderr.
            let _log_guard = log(&args.log, logging::Target::Stderr);
            cli::wrap::run(*args)
        }
        Command::Import(args) => cli::import::run(&args),
        Command::CopyBinary(args) => cli::copy_binary::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Test(args) => cli::test::run(&args),
        Command::Scan(args) => cli::scan::run(&args),
        Command::Crdgen(args) => cli::crdgen::run(&args),
        Command::Doctor(args) => cli::doctor::run(&args),
        Command::Explain(args) => cli::explain::run(&args),
        Command::Why(args) => cli::why::run(&args),
        Command::Probe(args) => cli::probe::run(&args),
        Command::Controller(args) => {
            let _log_guard = log(&args.log, logging::Target::Stdout);
            cli::controller::run(*args)
        }
        Command::Proxy(args) => {
            let _log_guard = log(&args.log, logging::Target::Stdout);
            cli::proxy::run(*args)
        }
        Command::Approve(args) => cli::approve::decide(&args, "approve"),
        Command::Reject(args) => cli::approve::decide(&args, "reject"),
        Command::Approvals(args) => cli::approve::list(&args),
    }
}
