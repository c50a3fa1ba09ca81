//! One module per subcommand: its flags, their conversion into the
//! library's configuration, and how it runs.

pub(crate) mod approve;
pub(crate) mod check;
pub(crate) mod controller;
pub(crate) mod copy_binary;
pub(crate) mod crdgen;
pub(crate) mod doctor;
pub(crate) mod explain;
pub(crate) mod import;
pub(crate) mod probe;
pub(crate) mod proxy;
pub(crate) mod scan;
pub(crate) mod test;
pub(crate) mod why;
pub(crate) mod wrap;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tollgate_policy::catalogue::Catalogue;
use tollgate_policy::duration;
use tollgate_runtime::logging;

/// Log flags, for the commands that run as services (`proxy`, `controller`).
#[derive(clap::Args, Debug)]
pub(crate) struct LogArgs {
    /// Log format.
    #[arg(long, value_enum, default_value_t = logging::Format::Json, env = "TOLLGATE_LOG_FORMAT")]
    pub(crate) log_format: logging::Format,
    /// Log filter, e.g. `info` or `tollgate=debug` (RUST_LOG syntax).
    #[arg(long, default_value = "info", env = "TOLLGATE_LOG")]
    pub(crate) log: String,
}

/// How a command prints what it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// For people.
    Text,
    /// One JSON object, for CI.
    Json,
}

/// Where a command learns an MCP server's tools: a file holding its
/// `tools/list` answer, or the server itself.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct ToolSource {
    /// The MCP server's tools: a file with its `tools/list` result (JSON).
    #[arg(long, value_name = "FILE", conflicts_with = "upstream")]
    pub(crate) tools: Option<PathBuf>,
    /// The MCP server's tools, asked from the server at this URL (as MCP
    /// clients write it, e.g. http://127.0.0.1:8081/mcp).
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    pub(crate) upstream: Option<http::Uri>,
    /// The MCP server's tools, asked from a stdio server started as this
    /// command (after `--`) and stopped once it has answered.
    #[arg(last = true, value_name = "COMMAND", conflicts_with = "tools")]
    pub(crate) command: Vec<std::ffi::OsString>,
}

/// Why the tools of an MCP server could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolSourceError {
    /// The `--tools` file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The `--tools` file is not a `tools/list` result.
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: tollgate_policy::catalogue::CatalogueError,
    },
    /// No async runtime for the request.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The server did not answer `tools/list`.
    #[error("cannot list the tools of {url}: {source}")]
    List {
        url: String,
        source: Box<tollgate_sidecar::ListToolsError>,
    },
}

impl ToolSource {
    /// The tools, if a source was given.
    pub(crate) fn read(&self) -> Result<Option<Catalogue>, ToolSourceError> {
        if let Some(path) = &self.tools {
            let text = std::fs::read_to_string(path).map_err(|source| ToolSourceError::Read {
                path: path.display().to_string(),
                source,
            })?;
            return Catalogue::from_json(&text).map(Some).map_err(|source| {
                ToolSourceError::Parse {
                    path: path.display().to_string(),
                    source,
                }
            });
        }
        if !self.command.is_empty() {
            return list_tools_of_command(&self.command)
                .map(|tools| Some(Catalogue::from_tools(&tools)));
        }
        let Some(url) = &self.upstream else {
            return Ok(None);
        };
        list_tools(url).map(|tools| Some(Catalogue::from_tools(&tools)))
    }

    /// Whether a source was given.
    pub(crate) fn given(&self) -> bool {
        self.tools.is_some() || self.upstream.is_some() || !self.command.is_empty()
    }

    /// Where the tools come from, for people.
    pub(crate) fn describe(&self) -> String {
        match (&self.upstream, &self.tools) {
            (Some(url), _) => url.to_string(),
            (None, Some(path)) => path.display().to_string(),
            (None, None) => self
                .command
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// Runs `fut` on a one-shot current-thread runtime (the read-only commands
/// that ask one server: doctor, explain, why, probe). `Err` is their exit
/// code 2, after saying why the runtime could not start.
pub(crate) fn block_on<F: Future>(fut: F) -> Result<F::Output, ExitCode> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Ok(runtime.block_on(fut)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// A runtime for one question to an MCP server.
fn one_shot_runtime() -> Result<tokio::runtime::Runtime, ToolSourceError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ToolSourceError::Runtime)
}

/// The tools of the stdio MCP server `command`, asked the way `wrap` asks.
fn list_tools_of_command(
    command: &[std::ffi::OsString],
) -> Result<Vec<serde_json::Value>, ToolSourceError> {
    one_shot_runtime()?
        .block_on(tollgate_sidecar::list_tools_of_command(
            command.to_vec(),
            Duration::from_secs(30),
        ))
        .map_err(|source| ToolSourceError::List {
            url: command
                .first()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source: Box::new(source),
        })
}

/// The tools of the MCP server at `url`, asked the way the sidecar asks.
pub(crate) fn list_tools(url: &http::Uri) -> Result<Vec<serde_json::Value>, ToolSourceError> {
    one_shot_runtime()?
        .block_on(tollgate_sidecar::list_tools_at(
            url.clone(),
            Duration::from_secs(10),
        ))
        .map_err(|source| ToolSourceError::List {
            url: url.to_string(),
            source: Box::new(source),
        })
}

/// Durations of flags: those of policies (`30s`, `1m`), plus `250ms`.
/// A clap `value_parser`, which only prints its error after the flag's
/// name: a `String` error is clap's convention there, and the one place
/// `tests/layering.rs` allows it.
pub(crate) fn flag_duration(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms")
        && let Ok(ms) = ms.parse::<u64>()
    {
        return Ok(Duration::from_millis(ms));
    }
    duration::parse(s).map_err(|e| format!("{e}, or milliseconds like \"250ms\""))
}

/// Runs `fut` on a runtime with `threads` workers (default: one per core).
/// One worker is a current-thread runtime: a request, its upstream exchange
/// and their wake-ups stay on one thread, which is what a sidecar with a
/// fraction of a core wants.
pub(crate) fn run_async<E: std::error::Error>(
    threads: Option<usize>,
    fut: impl Future<Output = Result<(), E>>,
) -> ExitCode {
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
            let message = error_chain(&e);
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, each once (typed errors often print their
/// source in their own message already).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
