//! tollgate: a policy check in front of every MCP server.
//!
//! Rooms, each with one job (see docs/architecture.md):
//! - [`policy`]: the `McpToolPolicy` model, `compile`, and the pure evaluator;
//! - [`mcp`]: JSON-RPC and MCP wire formats, parsed strictly;
//! - [`proxy`]: the sidecar data path that applies policies to live traffic;
//! - [`crd`]: the `McpToolPolicy` CRD, generated from the policy types.

pub mod controller;
pub mod crd;
pub mod mcp;
pub mod policy;
pub mod proxy;
pub mod push;
pub mod webhook;
