//! The sidecar data path: a reverse proxy in front of one MCP server that
//! decides every `tools/call`, filters `tools/list`, and forwards everything
//! else.
//!
//! Rooms, by job:
//! - [`transport`]: accepting, routing and relaying MCP over HTTP — no policy;
//! - [`gate`]: the only place a call meets policy, and the budgets it spends
//!   (in memory, or shared in Redis);
//! - [`rules`]: the rules in force and where they come from (files or the
//!   controller), plus what the upstream and the cluster say;
//! - [`identity`]: who is calling (JWTs, TokenReview);
//! - [`metrics`] and [`audit`]: what happened.

pub mod audit;
pub mod config;
pub mod gate;
pub mod identity;
pub mod metrics;
mod proxy;
pub mod rules;
mod start;
pub mod transport;

pub use audit::{AuditConfig, AuditLevel};
pub use config::{
    IdentityKind, IdentitySource, JwksSource, ManagedConfig, ProxyConfig, RuleSource,
    SharedStoreConfig, SharedStoreTls, Unselected,
};
pub use proxy::Proxy;
pub use start::{Running, StartError, run, start};
