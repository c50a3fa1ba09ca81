//! Tool name (and what the server says the tool does) → the rules that
//! name it.
//!
//! Exact names go through a hash map and globs through one compiled
//! [`GlobSet`], so the cost of a lookup does not grow with the number of
//! rules the way a loop over patterns would (10,000 rules is a supported
//! size; see `benches/engine.rs`). Rules with a `toolSelector` are asked
//! one by one, with the tool's [`Behaviour`]; an unknown answer names the
//! tool (a `Deny` rule fails closed; the evaluator keeps an `Allow` rule
//! from allowing with it).

use std::collections::HashMap;

use foldhash::fast::RandomState;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::behaviour::Behaviour;
use crate::compile::selector::{Selected, ToolTest};

/// Characters that make a tool pattern a glob rather than an exact name.
const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// Whether `pattern` is matched as a glob.
pub(crate) fn is_glob(pattern: &str) -> bool {
    pattern.contains(GLOB_META)
}

/// Compiles one glob the way the matcher will use it, so a pattern can be
/// validated on its own (to report *which* pattern is broken).
pub(crate) fn compile_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .empty_alternates(false)
        .build()
}

/// Maps a tool name to the indices of the rules whose `tools` match it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToolMatcher {
    /// foldhash rather than SipHash: one lookup per call and policy, keys
    /// chosen by the policy (a caller's tool name is only looked up, never
    /// inserted, so flooding is not a concern), seeded per process.
    exact: HashMap<Box<str>, Vec<u32>, RandomState>,
    globs: GlobSet,
    /// Rule index of each glob in `globs`, by glob index.
    glob_rules: Vec<u32>,
    /// Rules with a `toolSelector`: index, selector, and whether the rule
    /// also names tools (then the selector narrows them).
    selectors: Vec<(u32, ToolTest, bool)>,
}

impl ToolMatcher {
    /// Builds the matcher from `(rule index, pattern)` pairs whose globs have
    /// already been validated with [`compile_glob`].
    pub(crate) fn build<'a>(
        patterns: impl IntoIterator<Item = (u32, &'a str)>,
    ) -> Result<Self, globset::Error> {
        let mut exact: HashMap<Box<str>, Vec<u32>, RandomState> = HashMap::default();
        let mut builder = GlobSetBuilder::new();
        let mut glob_rules = Vec::new();
        for (rule, pattern) in patterns {
            if is_glob(pattern) {
                builder.add(compile_glob(pattern)?);
                glob_rules.push(rule);
            } else {
                let rules = exact.entry(pattern.into()).or_default();
                if rules.last() != Some(&rule) {
                    rules.push(rule);
                }
            }
        }
        Ok(ToolMatcher {
            exact,
            globs: builder.build()?,
            glob_rules,
            selectors: Vec::new(),
        })
    }

    /// Adds the rules that select tools by what they do: `(rule index,
    /// selector, whether the rule also has tool patterns)`.
    pub(crate) fn with_selectors(mut self, selectors: Vec<(u32, ToolTest, bool)>) -> Self {
        self.selectors = selectors;
        self
    }

    /// Whether any rule selects tools by what they do (so deciding needs
    /// the upstream's tool list).
    pub(crate) fn selects_by_behaviour(&self) -> bool {
        !self.selectors.is_empty()
    }

    /// Writes the indices of the rules matching `tool` into `out`, ascending
    /// and without duplicates (rule order is evaluation order). `behaviour`
    /// is what the upstream says the tool does; `None` when it did not list
    /// it.
    pub(crate) fn rules_for(&self, tool: &str, behaviour: Option<&Behaviour>, out: &mut Vec<u32>) {
        out.clear();
        if let Some(rules) = self.exact.get(tool) {
            out.extend_from_slice(rules);
        }
        if !self.glob_rules.is_empty() {
            let mut hits = Vec::new();
            self.globs.matches_into(tool, &mut hits);
            out.extend(hits.into_iter().map(|g| self.glob_rules[g]));
            out.sort_unstable();
            out.dedup();
        }
        if self.selectors.is_empty() {
            return;
        }
        for (rule, test, has_tools) in &self.selectors {
            let selected = test.test(tool, behaviour) != Selected::No;
            match (out.binary_search(rule), selected, has_tools) {
                (Ok(at), false, _) => {
                    out.remove(at);
                }
                (Err(at), true, false) => out.insert(at, *rule),
                _ => {}
            }
        }
    }

    /// Whether `name` is one of the exact (non-glob) tool names in the rules.
    pub(crate) fn names_exactly(&self, name: &str) -> bool {
        self.exact.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(m: &ToolMatcher, tool: &str) -> Vec<u32> {
        let mut out = Vec::new();
        m.rules_for(tool, None, &mut out);
        out
    }

    #[test]
    fn exact_and_glob_rules_come_back_in_rule_order() {
        let m = ToolMatcher::build([
            (0, "*_list"),
            (1, "pods_list"),
            (2, "pods_*"),
            (3, "vm_clone"),
        ])
        .unwrap();
        assert_eq!(rules(&m, "pods_list"), vec![0, 1, 2]);
        assert_eq!(rules(&m, "namespaces_list"), vec![0]);
        assert_eq!(rules(&m, "vm_clone"), vec![3]);
        assert_eq!(rules(&m, "vm_clone_x"), Vec::<u32>::new());
    }

    #[test]
    fn globs_match_whole_names_and_classes() {
        let m = ToolMatcher::build([(0, "vm_?lone"), (1, "[rp]ods_get"), (2, "{a,b}_x")]).unwrap();
        assert_eq!(rules(&m, "vm_clone"), vec![0]);
        assert_eq!(rules(&m, "xvm_clone"), Vec::<u32>::new());
        assert_eq!(rules(&m, "pods_get"), vec![1]);
        assert_eq!(rules(&m, "b_x"), vec![2]);
    }

    #[test]
    fn a_rule_listing_a_name_twice_appears_once() {
        let m = ToolMatcher::build([(0, "a"), (0, "a"), (0, "a*")]).unwrap();
        assert_eq!(rules(&m, "a"), vec![0]);
    }

    #[test]
    fn selectors_add_tools_and_narrow_patterns() {
        let test = |v| ToolTest::compile(&serde_json::from_value(v).unwrap(), "s").unwrap();
        let reads = test(serde_json::json!({"readOnly": true}));
        let m = ToolMatcher::build([(0, "pods_*"), (2, "vm_clone")])
            .unwrap()
            .with_selectors(vec![(0, reads.clone(), true), (1, reads, false)]);
        let read =
            Behaviour::from_tool(&serde_json::json!({"annotations": {"readOnlyHint": true}}));
        let write =
            Behaviour::from_tool(&serde_json::json!({"annotations": {"readOnlyHint": false}}));
        let mut out = Vec::new();
        m.rules_for("pods_list", Some(&read), &mut out);
        assert_eq!(out, vec![0, 1]);
        m.rules_for("pods_delete", Some(&write), &mut out);
        assert_eq!(out, Vec::<u32>::new());
        m.rules_for("vm_clone", Some(&write), &mut out);
        assert_eq!(out, vec![2]);
        m.rules_for("events_list", Some(&read), &mut out);
        assert_eq!(out, vec![1]);
        // Unknown: named by both selector rules (the evaluator decides what
        // an unknown answer may do).
        m.rules_for("pods_new", None, &mut out);
        assert_eq!(out, vec![0, 1]);
    }

    #[test]
    fn broken_globs_are_errors() {
        assert!(compile_glob("[abc").is_err());
        assert!(compile_glob("{a,b").is_err());
    }
}
