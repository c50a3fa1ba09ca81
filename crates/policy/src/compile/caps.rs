//! How big a policy may be: list sizes, numbers and message lengths, the same
//! as the CRD schema's `maxItems` (a test keeps them equal) so that a file and
//! a cluster policy are judged alike, and so that one policy cannot make the
//! sidecar keep unbounded state.

/// The most calls one window may admit; the in-memory store keeps one
/// timestamp per admission per bucket.
pub(crate) const MAX_REQUESTS: i64 = 100_000;

/// The longest rule message, so a denial stays readable.
pub const MAX_MESSAGE: usize = 1024;

/// Rules per policy.
pub const RULES: usize = 2000;
/// Tool patterns per rule.
pub const TOOLS: usize = 1000;
/// Argument conditions per rule.
pub(crate) const ARGUMENTS: usize = 64;
/// Rate limits per rule.
pub(crate) const RATE_LIMITS: usize = 16;
/// Key pointers per limit.
pub(crate) const KEY_ARGUMENTS: usize = 8;
/// Operands of `In`/`NotIn`.
pub(crate) const VALUES: usize = 1000;
