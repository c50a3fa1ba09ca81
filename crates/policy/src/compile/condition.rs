//! Argument conditions, compiled once and checked on every call.
//!
//! A condition on a value that is absent is false, except `NotExists`: an
//! allowlist (`namespace In [...]` on an `Allow` rule) therefore fails closed
//! when the agent leaves the argument out, which is what an operator wants
//! when the server would fill in a default the policy cannot see.

use std::fmt::Write as _;

use regex::Regex;
use serde_json::Value;

use super::pointer::Pointer;
use crate::problem::Problem;
use crate::spec::{ArgumentCondition, Operator};

/// The largest compiled regex accepted, so a pattern cannot make every call
/// expensive.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A checked, ready-to-evaluate [`ArgumentCondition`].
#[derive(Debug, Clone)]
pub struct Condition {
    pointer: Pointer,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Matches(Regex),
    Exists,
    NotExists,
    Lt(f64),
    Lte(f64),
    Gt(f64),
    Gte(f64),
    MaxLength(u64),
}

impl Condition {
    /// Checks `spec` and compiles it; `path` is where it sits in the policy,
    /// for the problems.
    pub fn compile(spec: &ArgumentCondition, path: &str) -> Result<Condition, Vec<Problem>> {
        let mut problems = Vec::new();
        let pointer = Pointer::parse(&spec.pointer)
            .map_err(|e| problems.push(Problem::at(format!("{path}.pointer"), e.to_string())))
            .ok();
        let op = spec.operator;
        let wants_values = matches!(op, Operator::In | Operator::NotIn);
        let wants_value = !wants_values && !matches!(op, Operator::Exists | Operator::NotExists);
        if wants_values && spec.value.is_some() {
            problems.push(Problem::at(
                format!("{path}.value"),
                format!("{op:?} takes a list: write `values: [...]` instead of `value`"),
            ));
        }
        if !wants_values && spec.values.is_some() {
            problems.push(Problem::at(
                format!("{path}.values"),
                format!("{op:?} takes one operand: write `value:` instead of `values`"),
            ));
        }
        if !wants_value && spec.value.is_some() && !wants_values {
            problems.push(Problem::at(
                format!("{path}.value"),
                format!("{op:?} takes no operand: remove `value`"),
            ));
        }
        let value = || -> Result<&Value, Problem> {
            spec.value.as_ref().ok_or_else(|| {
                Problem::at(
                    format!("{path}.value"),
                    format!("{op:?} needs an operand: add `value:`"),
                )
            })
        };
        let number = || -> Result<f64, Problem> {
            let v = value()?;
            v.as_f64().ok_or_else(|| {
                Problem::at(
                    format!("{path}.value"),
                    format!(
                        "{op:?} compares numbers: `value` must be a number, not {}",
                        kind(v)
                    ),
                )
            })
        };
        let test = match op {
            Operator::Equals => value().map(|v| Test::Equals(v.clone())),
            Operator::NotEquals => value().map(|v| Test::NotEquals(v.clone())),
            Operator::In | Operator::NotIn => match &spec.values {
                None => Err(Problem::at(
                    format!("{path}.values"),
                    format!("{op:?} needs a list of operands: add `values: [...]`"),
                )),
                Some(values) if values.len() > crate::compile::caps::VALUES => Err(Problem::at(
                    format!("{path}.values"),
                    format!("{} operands; at most {} are allowed", values.len(), crate::compile::caps::VALUES),
                )),
                Some(values) if values.is_empty() => Err(Problem::at(
                    format!("{path}.values"),
                    format!("{op:?} with an empty list is always {}; list at least one value", op == Operator::NotIn),
                )),
                Some(values) if op == Operator::In => Ok(Test::In(values.clone())),
                Some(values) => Ok(Test::NotIn(values.clone())),
            },
            Operator::Matches => value().and_then(|v| {
                let pattern = v.as_str().ok_or_else(|| {
                    Problem::at(
                        format!("{path}.value"),
                        format!("Matches needs a regex string, not {}", kind(v)),
                    )
                })?;
                regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map(Test::Matches)
                    .map_err(|e| {
                        Problem::at(
                            format!("{path}.value"),
                            format!("{pattern:?} is not a valid regex ({}); the syntax is that of the Rust regex crate, without look-around or backreferences", one_line(&e.to_string())),
                        )
                    })
            }),
            Operator::Exists => Ok(Test::Exists),
            Operator::NotExists => Ok(Test::NotExists),
            Operator::Lt => number().map(Test::Lt),
            Operator::Lte => number().map(Test::Lte),
            Operator::Gt => number().map(Test::Gt),
            Operator::Gte => number().map(Test::Gte),
            Operator::MaxLength => value().and_then(|v| {
                v.as_u64().map(Test::MaxLength).ok_or_else(|| {
                    Problem::at(
                        format!("{path}.value"),
                        format!("MaxLength needs a whole number ≥ 0, not {v}"),
                    )
                })
            }),
        };
        match (test, pointer) {
            (Ok(test), Some(pointer)) if problems.is_empty() => Ok(Condition { pointer, test }),
            (Ok(_), _) => Err(problems),
            (Err(p), _) => {
                problems.push(p);
                Err(problems)
            }
        }
    }

    /// Whether the condition holds for these call arguments.
    pub fn holds(&self, arguments: &Value) -> bool {
        let found = self.pointer.get(arguments);
        match (&self.test, found) {
            (Test::NotExists, found) => found.is_none(),
            (_, None) => false,
            (Test::Exists, Some(_)) => true,
            (Test::Equals(want), Some(v)) => json_eq(v, want),
            (Test::NotEquals(want), Some(v)) => !json_eq(v, want),
            (Test::In(want), Some(v)) => want.iter().any(|w| json_eq(v, w)),
            (Test::NotIn(want), Some(v)) => !want.iter().any(|w| json_eq(v, w)),
            (Test::Matches(re), Some(v)) => v.as_str().is_some_and(|s| re.is_match(s)),
            (Test::Lt(n), Some(v)) => v.as_f64().is_some_and(|x| x < *n),
            (Test::Lte(n), Some(v)) => v.as_f64().is_some_and(|x| x <= *n),
            (Test::Gt(n), Some(v)) => v.as_f64().is_some_and(|x| x > *n),
            (Test::Gte(n), Some(v)) => v.as_f64().is_some_and(|x| x >= *n),
            (Test::MaxLength(max), Some(v)) => match v {
                Value::String(s) => s.chars().count() as u64 <= *max,
                Value::Array(a) => a.len() as u64 <= *max,
                _ => false,
            },
        }
    }

    /// Says, for a model to read, what this condition requires and what it
    /// got. Values are echoed back to the caller who sent them, shortened.
    pub fn explain(&self, arguments: &Value) -> String {
        let at = if self.pointer.is_empty() {
            "arguments"
        } else {
            self.pointer.as_str()
        };
        let found = self.pointer.get(arguments);
        let mut out = String::new();
        let _ = match &self.test {
            Test::Exists => write!(out, "argument {at} is required"),
            Test::NotExists => write!(out, "argument {at} must not be given"),
            Test::Equals(v) => write!(out, "argument {at} must be {}", short(v)),
            Test::NotEquals(v) => write!(
                out,
                "argument {at} must be given and must not be {}",
                short(v)
            ),
            Test::In(vs) => write!(out, "argument {at} must be one of {}", short_list(vs)),
            Test::NotIn(vs) => write!(
                out,
                "argument {at} must be given and must not be one of {}",
                short_list(vs)
            ),
            Test::Matches(re) => {
                let pattern = re.as_str();
                let inner = pattern
                    .strip_prefix("^(?:")
                    .and_then(|p| p.strip_suffix(")$"))
                    .unwrap_or(pattern);
                write!(out, "argument {at} must match {inner:?}")
            }
            Test::Lt(n) => write!(out, "argument {at} must be a number < {n}"),
            Test::Lte(n) => write!(out, "argument {at} must be a number ≤ {n}"),
            Test::Gt(n) => write!(out, "argument {at} must be a number > {n}"),
            Test::Gte(n) => write!(out, "argument {at} must be a number ≥ {n}"),
            Test::MaxLength(n) => write!(
                out,
                "argument {at} must be at most {n} characters or elements long"
            ),
        };
        match found {
            Some(v) if !matches!(self.test, Test::Exists) => {
                let _ = write!(out, " (got {})", short(v));
            }
            None if !matches!(self.test, Test::NotExists | Test::Exists) => {
                out.push_str(" (it is missing)")
            }
            _ => {}
        }
        out
    }
}

/// JSON equality where numbers compare by value, so `5` equals `5.0`.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A value shortened for a message: at most 64 characters.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 64 {
        s
    } else {
        let cut: String = s.chars().take(61).collect();
        format!("{cut}...")
    }
}

fn short_list(vs: &[Value]) -> String {
    let shown: Vec<String> = vs.iter().take(8).map(short).collect();
    let more = if vs.len() > 8 {
        format!(", ... ({} more)", vs.len() - 8)
    } else {
        String::new()
    };
    format!("[{}{more}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(
        pointer: &str,
        operator: Operator,
        value: Option<Value>,
        values: Option<Vec<Value>>,
    ) -> Result<Condition, Vec<Problem>> {
        Condition::compile(
            &ArgumentCondition {
                pointer: pointer.into(),
                operator,
                value,
                values,
            },
            "spec.rules[0].arguments[0]",
        )
    }

    /// pointer, operator, value, values, and the expected outcome or hint.
    type Case<T> = (&'static str, Operator, Option<Value>, Option<Vec<Value>>, T);

    fn holds(c: &Condition, args: Value) -> bool {
        c.holds(&args)
    }

    #[test]
    fn every_operator_against_present_values() {
        use Operator::*;
        let args = json!({"ns": "prod", "n": 5, "list": [1, 2, 3], "nested": {"x": "abc"}});
        let cases: Vec<Case<bool>> = vec![
            ("/ns", Equals, Some(json!("prod")), None, true),
            ("/ns", Equals, Some(json!("dev")), None, false),
            ("/n", Equals, Some(json!(5.0)), None, true),
            ("/n", Equals, Some(json!("5")), None, false),
            ("/ns", NotEquals, Some(json!("dev")), None, true),
            ("/ns", NotEquals, Some(json!("prod")), None, false),
            (
                "/ns",
                In,
                None,
                Some(vec![json!("dev"), json!("prod")]),
                true,
            ),
            ("/ns", In, None, Some(vec![json!("dev")]), false),
            ("/ns", NotIn, None, Some(vec![json!("kube-system")]), true),
            ("/ns", NotIn, None, Some(vec![json!("prod")]), false),
            ("/nested/x", Matches, Some(json!("a.c")), None, true),
            ("/nested/x", Matches, Some(json!("b")), None, false),
            ("/n", Matches, Some(json!("5")), None, false),
            ("/ns", Exists, None, None, true),
            ("/ns", NotExists, None, None, false),
            ("/n", Lt, Some(json!(6)), None, true),
            ("/n", Lt, Some(json!(5)), None, false),
            ("/n", Lte, Some(json!(5)), None, true),
            ("/n", Gt, Some(json!(4.5)), None, true),
            ("/n", Gt, Some(json!(5)), None, false),
            ("/n", Gte, Some(json!(5)), None, true),
            ("/ns", Lt, Some(json!(10)), None, false),
            ("/ns", MaxLength, Some(json!(4)), None, true),
            ("/ns", MaxLength, Some(json!(3)), None, false),
            ("/list", MaxLength, Some(json!(3)), None, true),
            ("/list", MaxLength, Some(json!(2)), None, false),
            ("/n", MaxLength, Some(json!(9)), None, false),
            ("", Exists, None, None, true),
        ];
        for (pointer, op, value, values, want) in cases {
            let c = cond(pointer, op, value.clone(), values.clone()).unwrap();
            assert_eq!(
                holds(&c, args.clone()),
                want,
                "{pointer} {op:?} {value:?} {values:?}"
            );
        }
    }

    #[test]
    fn a_missing_value_fails_every_operator_but_not_exists() {
        use Operator::*;
        let args = json!({});
        let all: Vec<(Operator, Option<Value>, Option<Vec<Value>>)> = vec![
            (Equals, Some(json!("x")), None),
            (NotEquals, Some(json!("x")), None),
            (In, None, Some(vec![json!("x")])),
            (NotIn, None, Some(vec![json!("x")])),
            (Matches, Some(json!(".*")), None),
            (Exists, None, None),
            (Lt, Some(json!(1)), None),
            (Lte, Some(json!(1)), None),
            (Gt, Some(json!(1)), None),
            (Gte, Some(json!(1)), None),
            (MaxLength, Some(json!(1)), None),
        ];
        for (op, value, values) in all {
            let c = cond("/missing", op, value, values).unwrap();
            assert!(
                !holds(&c, args.clone()),
                "{op:?} must fail on a missing value"
            );
        }
        assert!(holds(
            &cond("/missing", NotExists, None, None).unwrap(),
            args
        ));
    }

    #[test]
    fn regexes_are_anchored_to_the_whole_string() {
        let c = cond("/name", Operator::Matches, Some(json!("golden-.*")), None).unwrap();
        assert!(holds(&c, json!({"name": "golden-fedora"})));
        assert!(!holds(&c, json!({"name": "evil-golden-fedora"})));
        let alt = cond("/name", Operator::Matches, Some(json!("a|b")), None).unwrap();
        assert!(!holds(&alt, json!({"name": "ab"})));
    }

    #[test]
    fn pointers_follow_rfc6901_escapes() {
        let c = cond("/a~1b/c~0d", Operator::Equals, Some(json!(1)), None).unwrap();
        assert!(holds(&c, json!({"a/b": {"c~d": 1}})));
        let arr = cond("/items/1", Operator::Equals, Some(json!("y")), None).unwrap();
        assert!(holds(&arr, json!({"items": ["x", "y"]})));
    }

    #[test]
    fn malformed_conditions_say_what_to_write() {
        use Operator::*;
        let bad: Vec<Case<&str>> = vec![
            (
                "namespace",
                Equals,
                Some(json!("x")),
                None,
                "start it with '/'",
            ),
            ("/a~2", Equals, Some(json!("x")), None, "'~0'"),
            ("/a", In, Some(json!("x")), None, "write `values: [...]`"),
            ("/a", In, None, None, "add `values: [...]`"),
            ("/a", In, None, Some(vec![]), "list at least one value"),
            ("/a", Equals, None, Some(vec![json!(1)]), "write `value:`"),
            ("/a", Equals, None, None, "add `value:`"),
            ("/a", Exists, Some(json!(1)), None, "remove `value`"),
            (
                "/a",
                Matches,
                Some(json!("(unclosed")),
                None,
                "not a valid regex",
            ),
            ("/a", Matches, Some(json!(5)), None, "regex string"),
            ("/a", Lt, Some(json!("10")), None, "must be a number"),
            ("/a", MaxLength, Some(json!(-1)), None, "whole number"),
        ];
        for (pointer, op, value, values, hint) in bad {
            let problems = cond(pointer, op, value, values).unwrap_err();
            let text = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                text.contains(hint),
                "{pointer} {op:?}: {text:?} should contain {hint:?}"
            );
            assert!(text.starts_with("spec.rules[0].arguments[0]."), "{text}");
        }
    }

    #[test]
    fn explanations_name_the_argument_and_what_was_sent() {
        let c = cond(
            "/namespace",
            Operator::In,
            None,
            Some(vec![json!("a"), json!("b")]),
        )
        .unwrap();
        assert_eq!(
            c.explain(&json!({"namespace": "kube-system"})),
            "argument /namespace must be one of [\"a\", \"b\"] (got \"kube-system\")"
        );
        assert_eq!(
            c.explain(&json!({})),
            "argument /namespace must be one of [\"a\", \"b\"] (it is missing)"
        );
        let m = cond("/name", Operator::Matches, Some(json!("golden-.*")), None).unwrap();
        assert_eq!(
            m.explain(&json!({"name": "x"})),
            "argument /name must match \"golden-.*\" (got \"x\")"
        );
    }
}
