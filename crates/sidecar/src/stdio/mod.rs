//! MCP servers that speak stdio: started as child processes and put behind
//! the same gate as HTTP upstreams.
//!
//! - [`child`]: one server process, its lines in and out, its exit;
//! - [`discover`]: a server's tools, asked first-hand (`tollgate scan --`);
//! - [`pending`]: requests waiting for a server's answer, so none waits
//!   forever;
//! - [`wrap`]: `tollgate wrap`, the agent on tollgate's own stdio (desktop
//!   clients);
//! - [`bridge`]: `tollgate proxy --upstream-command`, Streamable HTTP in
//!   front, one server process per MCP session behind.
//!
//! No policy lives here: messages are planned by
//! [`crate::transport::plan`] and decided by the [gate](crate::gate).

pub(crate) mod bridge;
pub(crate) mod child;
pub(crate) mod discover;
pub(crate) mod discover_error;
pub(crate) mod pending;
pub(crate) mod wrap;

use serde_json::Value;
use tollgate_mcp::jsonrpc::{self, UPSTREAM_UNAVAILABLE};

/// The id of a request (not of a notification or a response).
pub(crate) fn request_id(message: &Value) -> Option<Value> {
    message.get("method")?;
    message.get("id").cloned()
}

/// The JSON-RPC error for a request the server will not answer.
pub(crate) fn unavailable(id: &Value, why: &str) -> Value {
    jsonrpc::error_response(id, UPSTREAM_UNAVAILABLE, &format!("tollgate: {why}"), None)
}
