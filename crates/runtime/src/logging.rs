//! Log output: structured lines handed to a writer thread, so a slow stdout
//! never stalls a request.
//!
//! The queue between the two is bounded ([`QUEUE_LINES`]); when stdout
//! cannot keep up and it is full, new lines are dropped rather than block
//! the data path, and counted: [`dropped_lines`] feeds
//! `tollgate_log_lines_dropped_total`, so a lossy audit log is visible. The
//! writer batches: it writes everything queued with one `write(2)`.

use std::io::BufWriter;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines queued for the writer thread at most. At ~400 bytes per audit line
/// this is ~3 MB of backlog in the worst case, and the queue itself costs
/// ~0.3 MB up front (the library's default, 128,000, costs 4 MB).
pub(crate) const QUEUE_LINES: usize = 8192;

/// How lines are formatted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard output (servers: what the kubelet collects).
    Stdout,
    /// Standard error (`tollgate wrap`, whose stdout is the MCP protocol).
    Stderr,
}

/// Installs the global subscriber writing to stdout. Keep the guard alive
/// until exit: dropping it flushes what is queued.
pub fn init(format: Format, filter: &str) -> WorkerGuard {
    init_to(format, filter, Target::Stdout)
}

/// Installs the global subscriber writing to `target`.
pub fn init_to(format: Format, filter: &str, target: Target) -> WorkerGuard {
    // The writer thread flushes after draining its queue, so through this
    // buffer a burst of lines is one `write(2)`, not one per line.
    let builder = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUE_LINES)
        .lossy(true)
        .thread_name("tollgate-log");
    let (writer, guard) = match target {
        Target::Stdout => builder.finish(BufWriter::with_capacity(64 << 10, std::io::stdout())),
        Target::Stderr => builder.finish(BufWriter::with_capacity(64 << 10, std::io::stderr())),
    };
    let _ = DROPPED.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        Format::Text => builder.init(),
    }
    guard
}

/// Lines dropped because the writer could not keep up (0 before [`init`]).
pub(crate) fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// `tollgate_log_lines_dropped_total`, for a metrics registry; keep it
/// current with [`sync_dropped_lines`] before each scrape.
pub fn dropped_lines_counter() -> prometheus::Result<prometheus::IntCounter> {
    prometheus::IntCounter::new(
        "tollgate_log_lines_dropped_total",
        "Log and audit lines dropped because stdout could not keep up.",
    )
}

/// Brings `counter` up to [`dropped_lines`].
pub fn sync_dropped_lines(counter: &prometheus::IntCounter) {
    let (now, seen) = (dropped_lines(), counter.get());
    if now > seen {
        counter.inc_by(now - seen);
    }
}
