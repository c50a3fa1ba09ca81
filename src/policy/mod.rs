//! The policy engine: what a `McpToolPolicy` says, whether it is valid, and
//! what it decides for a tool call.
//!
//! Nothing in here does I/O except [`load`], which reads policy files: the
//! sidecar, the controller and `tollgate check` all share these types and
//! the one [`compile`] function, and the evaluator is a pure function of the
//! call, the compiled policies and a rate-limit [`ratelimit::Counter`].

pub mod compile;
pub mod condition;
pub mod duration;
pub mod evaluate;
pub mod inflight;
pub mod load;
pub mod matcher;
pub mod parse;
pub mod problem;
pub mod ratelimit;
pub mod resource_rules;
pub mod resources;
pub mod spec;

#[cfg(test)]
mod resource_tests;
#[cfg(test)]
mod tests;

pub use compile::{CompiledPolicy, compile};
pub use evaluate::{Decision, Effect, Evaluation, PolicySet, Reason, ToolCall};
pub use problem::{Problem, Problems};
pub use spec::McpToolPolicySpec;
