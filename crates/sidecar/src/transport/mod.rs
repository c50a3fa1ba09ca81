//! MCP over HTTP between agents and the upstream: routing, client POSTs,
//! server streams, sessions and the upstream connection. Transports hand
//! parsed calls to the [gate](crate::gate) and act on its decisions; they
//! hold no policy logic.

pub mod discover;
pub mod get;
pub mod headers;
pub mod open_streams;
pub mod post;
pub mod relay;
pub mod route;
pub mod sessions;
pub mod upstream;
