//! The sidecar data path: a reverse proxy in front of one MCP server that
//! decides every `tools/call`, filters `tools/list`, and forwards everything
//! else.
//!
//! Rooms, by job:
//! - [`transport`]: accepting, routing and relaying MCP over HTTP — no policy;
//! - [`stdio`]: MCP servers that speak stdio, as child processes: `tollgate
//!   wrap` (the agent on tollgate's own stdio) and the bridge behind
//!   `--upstream-command` — no policy either;
//! - [`gate`]: the only place a call meets policy, and the budgets it spends
//!   (in memory, or shared in Redis);
//! - [`rules`]: the rules in force and where they come from (files or the
//!   controller), plus what the upstream and the cluster say;
//! - [`identity`]: who is calling (JWTs, TokenReview);
//! - [`approvals`]: calls a `RequireApproval` rule holds, and the people
//!   who decide them (file mode, on the admin listener);
//! - [`tls`]: which CAs a TLS client of the sidecar trusts;
//! - [`metrics`] and [`audit`]: what happened.

mod approvals;
mod audit;
mod config;
mod decisions;
mod gate;
mod identity;
mod metrics;
mod proxy;
mod rules;
mod start;
mod stdio;
mod tls;
mod traces;
mod transport;
mod would_deny;

pub use approvals::cluster::ClusterSettings as ApprovalsInCluster;
pub use approvals::notify::NotifyConfig;
pub use audit::{AuditConfig, AuditLevel};
pub use config::{
    CaSource, ControllerTls, IdentityKind, IdentitySource, JwksSource, ManagedConfig, ProxyConfig,
    RuleSource, SharedStoreConfig, SharedStoreTls, Unselected,
};
pub use gate::redis::SharedStore;
pub use metrics::Metrics;
pub use rules::cluster::VmLabels;
pub use rules::controller::{Follower, FollowerError};
pub use rules::store::RuleStore;
pub use start::{Running, StartError, run, start};
pub use stdio::bridge::StdioUpstream;
pub use stdio::child::{Exit, SpawnError};
pub use stdio::discover::list_tools_of_command;
pub use stdio::discover_error::StdioDiscoveryError;
pub use stdio::wrap::{WrapConfig, WrapError, wrap};
pub use tls::BadRoots;
pub use transport::discover::{HttpDiscoveryError, ListToolsError, list_tools_at};
/// The session table, public for its benchmark (`benches/sessions.rs`).
pub use transport::sessions::Sessions;
pub use transport::upstream::{UpstreamError, UpstreamUrlError};
