//! MCP over HTTP between agents and the upstream: routing, client POSTs,
//! server streams, sessions and the upstream connection. Transports hand
//! parsed calls to the [gate](crate::gate) and act on its decisions; they
//! hold no policy logic.

pub(crate) mod connections;
pub(crate) mod discover;
pub(crate) mod get;
pub(crate) mod headers;
pub(crate) mod lists;
pub(crate) mod open_streams;
pub(crate) mod parse;
pub(crate) mod plan;
pub(crate) mod post;
pub(crate) mod progress;
pub(crate) mod relay;
pub(crate) mod route;
pub(crate) mod sessions;
pub(crate) mod upstream;
