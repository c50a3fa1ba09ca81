//! Why a stdio server did not list its tools (`tollgate scan -- COMMAND`).
//!
//! Apart from [`super::discover`] so that [`crate::transport::discover`]'s
//! `ListToolsError` can name it without the two discovery modules naming
//! each other.

use std::time::Duration;

use serde_json::Value;

use crate::stdio::child::Exit;

/// Why a stdio server did not list its tools.
#[derive(Debug, thiserror::Error)]
pub enum StdioDiscoveryError {
    /// No full list in time; the server is stopped.
    #[error("the MCP server did not list its tools within {0:?}")]
    Timeout(Duration),
    /// Its stdin is closed.
    #[error("the MCP server stopped reading its input")]
    StoppedReading,
    /// A JSON-RPC error to one of the requests.
    #[error("the MCP server refused {method}: {error}")]
    Refused { method: String, error: Value },
    /// Its stdout closed first; how it ended, if it has.
    #[error(
        "the MCP server closed its output before answering {method}{}",
        .exit.map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    Closed { method: String, exit: Option<Exit> },
}
