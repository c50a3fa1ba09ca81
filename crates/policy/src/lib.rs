//! The policy engine: what a `McpToolPolicy` says, whether it is valid, and
//! what it decides for a tool call.
//!
//! Nothing in here does I/O except [`load`], which reads policy files: the
//! sidecar, the controller and `tollgate check` all share these types and
//! the one [`compile()`] function, and the evaluator is a pure function of the
//! call, the compiled policies and the budgets it spends from.
//!
//! This crate depends on no async runtime, HTTP stack or Kubernetes client
//! (a test in the workspace keeps it so): what it decides can be tested and
//! benchmarked without any of them, on exactly the code production runs.

pub mod approval_crd;
pub mod behaviour;
pub mod budget;
pub mod catalogue;
pub mod compile;
pub mod crd;
pub mod duration;
pub mod evaluate;
pub mod import;
pub mod load;
pub mod parse;
pub mod problem;
pub mod resources;
pub mod risk;
pub mod scenario;
pub mod snapshot;
pub mod spec;
pub mod structure;
pub mod suggest;
pub mod warnings;

#[cfg(test)]
mod approval_tests;
#[cfg(test)]
mod resource_tests;
#[cfg(test)]
mod selector_tests;
#[cfg(test)]
mod size_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use compile::{CompiledPolicy, compile};
pub use evaluate::approval::{Fingerprint, fingerprint};
pub use evaluate::{Decision, Effect, Evaluation, PolicySet, Reason, ToolCall};
pub use problem::{Problem, Problems};
pub use spec::McpToolPolicySpec;
