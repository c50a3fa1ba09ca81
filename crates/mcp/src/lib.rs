//! MCP on the wire: strict JSON, JSON-RPC envelopes, SSE framing, stdio
//! line framing, the tool methods the proxy looks into, and the HTTP header
//! rules of the transports. Parsing and framing only — no policy, no sockets.

pub mod http;
pub mod json;
pub mod jsonrpc;
pub mod sse;
pub mod stdio;
pub mod tools;
