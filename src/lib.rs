//! tollgate: a policy check in front of every MCP server.
//!
//! Rooms, each with one job:
//! - [`policy`]: the `McpToolPolicy` model, `compile`, and the pure evaluator;
//! - [`mcp`]: JSON-RPC and MCP wire formats, parsed strictly;
//! - [`proxy`]: the sidecar data path that applies policies to live traffic;
//! - [`controller`]: watches policies and pods, pushes compiled rules to sidecars;
//! - [`webhook`]: injects the sidecar into MCP server pods;
//! - [`push`]: the snapshot format between controller and sidecars;
//! - [`crd`]: the `McpToolPolicy` CRD, generated from the policy types;
//! - [`logging`]: structured log output that never stalls a request.

pub mod controller;
pub mod crd;
pub mod logging;
pub mod mcp;
pub mod policy;
pub mod proxy;
pub mod push;
pub mod webhook;
