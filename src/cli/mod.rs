//! One module per subcommand: its flags, their conversion into the
//! library's configuration, and how it runs.

pub(crate) mod approve;
pub(crate) mod check;
pub(crate) mod controller;
pub(crate) mod copy_binary;
pub(crate) mod crdgen;
pub(crate) mod import;
pub(crate) mod proxy;
pub(crate) mod wrap;

use std::process::ExitCode;
use std::time::Duration;

use tollgate_policy::duration;

/// Durations of flags: those of policies (`30s`, `1m`), plus `250ms`.
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
fn error_chain(e: &dyn std::error::Error) -> String {
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
