//! The shape of a policy, checked against the CRD's own schema before serde
//! reads it: every unknown field (with the field probably meant), every
//! value of the wrong type, every unknown enum value (`deny` → `Deny`) and
//! every missing field, in one pass — serde stops at the first.
//!
//! The schema is the one `tollgate crdgen` writes for the apiserver, derived
//! from the same Rust types serde reads, so the two cannot drift apart. This
//! pass only finds problems; it decides nothing: a document with none is
//! still read by serde and judged by `compile`, the one source of truth for
//! validity. A document with some is *repaired* — unknown fields dropped,
//! wrong values replaced by neutral stand-ins — so that `compile` can still
//! report the problems of everything else in it (see [`crate::parse`]).

use serde_json::{Map, Value};

use crate::problem::{Problem, missing_field};
use crate::suggest::nearest;

/// What the pass found, and the document with every problem taken out.
#[derive(Debug)]
pub(crate) struct Walked {
    /// The problems, in document order.
    pub problems: Vec<Problem>,
    /// The document with unknown fields removed and wrong values replaced.
    pub repaired: Value,
    /// Paths whose value is a stand-in: problems `compile` reports there,
    /// or below, are about the stand-in, not about what the user wrote.
    pub replaced: Vec<String>,
    /// Those of `replaced` whose value was made up (not merely re-cased).
    stood_in: Vec<String>,
}

/// Walks `value` (at `path`) against `schema`, an OpenAPI v3 schema as the
/// CRD holds it.
pub(crate) fn walk(value: &Value, schema: &Value, path: &str) -> Walked {
    let mut walker = Walked {
        problems: Vec::new(),
        repaired: Value::Null,
        replaced: Vec::new(),
        stood_in: Vec::new(),
    };
    walker.repaired = walker.node(value, schema, path).unwrap_or(Value::Null);
    walker
}

/// Whether `path` is `prefix` or lies below it (`a.b[0]` is below `a.b`).
pub(crate) fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

impl Walked {
    /// The repaired value, or `None` when the field should be dropped.
    fn node(&mut self, value: &Value, schema: &Value, path: &str) -> Option<Value> {
        if value.is_null() {
            let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
            let anything = preserves_unknown(schema) && schema.get("type").is_none();
            if nullable || anything {
                return Some(Value::Null);
            }
        }
        let Some(want) = schema.get("type").and_then(Value::as_str) else {
            // No type: anything goes (`value`, `values` items, a preserved
            // object).
            return Some(value.clone());
        };
        if !has_type(value, want) {
            self.problems.push(Problem::at(
                path,
                format!(
                    "invalid type: {}, expected {}",
                    describe(value),
                    article(want)
                ),
            ));
            return None;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            let got = value.as_str().unwrap_or_default();
            let mut message = format!("unknown variant `{got}`, expected {}", one_of(&names));
            let near = nearest(got, names.iter().copied());
            if let Some(near) = near {
                message.push_str(&format!("; did you mean `{near}`?"));
            }
            // Only the case is wrong: what the user meant is clear, and the
            // rest is judged as if it were written so (`matches` with a
            // broken regex reports the regex too).
            let recased = near.filter(|n| n.eq_ignore_ascii_case(got));
            if recased.is_some() {
                message.push_str(" (values are case-sensitive)");
            }
            self.problems.push(Problem::at(path, message));
            return match recased {
                Some(meant) => {
                    self.replaced.push(path.to_owned());
                    Some(Value::from(meant))
                }
                _ => None,
            };
        }
        match value {
            Value::Object(fields) => Some(Value::Object(self.object(fields, schema, path))),
            Value::Array(items) => {
                let Some(item_schema) = schema.get("items") else {
                    return Some(value.clone());
                };
                let repaired = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at = format!("{path}[{i}]");
                        self.node(item, item_schema, &at)
                            .unwrap_or_else(|| self.stand_in(item_schema, &at, &at))
                    })
                    .collect();
                Some(Value::Array(repaired))
            }
            other => Some(other.clone()),
        }
    }

    fn object(
        &mut self,
        fields: &Map<String, Value>,
        schema: &Value,
        path: &str,
    ) -> Map<String, Value> {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let mut repaired = Map::new();
        for (key, value) in fields {
            let at = join(path, key);
            if let Some(field_schema) = properties.and_then(|p| p.get(key)) {
                if let Some(v) = self.node(value, field_schema, &at) {
                    repaired.insert(key.clone(), v);
                } else if required(schema).any(|r| r == key) || field_schema.get("enum").is_some() {
                    // Left out, an enum would take its default, which may
                    // not fit the fields beside it (`onStoreError` needs
                    // `scope: Shared`).
                    let v = self.stand_in(field_schema, &at, key);
                    repaired.insert(key.clone(), v);
                }
                continue;
            }
            if let Some(value_schema) = additional.filter(|a| a.is_object()) {
                if let Some(v) = self.node(value, value_schema, &at) {
                    repaired.insert(key.clone(), v);
                }
                continue;
            }
            if preserves_unknown(schema) {
                repaired.insert(key.clone(), value.clone());
                continue;
            }
            let mut known: Vec<&str> = properties
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            known.sort_unstable();
            let message = match nearest(key, known.iter().copied()) {
                Some(near) => format!("unknown field `{key}`; did you mean `{near}`?"),
                None if known.is_empty() => format!("unknown field `{key}`"),
                None => format!("unknown field `{key}`, expected {}", one_of(&known)),
            };
            self.problems.push(Problem::at(at, message));
        }
        for key in required(schema) {
            if fields.contains_key(key) {
                continue;
            }
            self.problems.push(Problem::at(path, missing_field(key)));
            if let Some(field_schema) = properties.and_then(|p| p.get(key)) {
                let v = self.stand_in(field_schema, &join(path, key), key);
                repaired.insert(key.to_owned(), v);
            }
        }
        // An operator that stands in must take the operands given, or
        // compile would blame them.
        let operator = join(path, "operator");
        if self.stood_in.contains(&operator) {
            let fits = if repaired.contains_key("values") {
                "In"
            } else if repaired.contains_key("value") {
                "Equals"
            } else {
                "Exists"
            };
            repaired.insert("operator".into(), Value::from(fits));
        }
        repaired
    }

    /// A value of the right type that stands in for a wrong or missing one
    /// at `path` (the field is `name`), chosen so that `compile` finds
    /// nothing wrong with the fields beside it: an `Allow` action has no
    /// rules of its own, and an operator is picked to fit the operands
    /// given (that choice is made by [`crate::parse`], which sees them).
    fn stand_in(&mut self, schema: &Value, path: &str, name: &str) -> Value {
        self.replaced.push(path.to_owned());
        self.stood_in.push(path.to_owned());
        if let Some(first) = schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return match name {
                "action" => Value::from("Allow"),
                "defaultAction" => Value::from("Deny"),
                "scope" => Value::from("Shared"),
                _ => first.clone(),
            };
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => Value::from(""),
            Some("integer" | "number") => Value::from(0),
            Some("boolean") => Value::from(false),
            Some("array") => Value::Array(Vec::new()),
            Some("object") => {
                let mut fields = Map::new();
                let properties = schema.get("properties").and_then(Value::as_object);
                for key in required(schema) {
                    if let Some(s) = properties.and_then(|p| p.get(key)) {
                        let v = self.stand_in(s, &join(path, key), key);
                        fields.insert(key.to_owned(), v);
                    }
                }
                Value::Object(fields)
            }
            _ => Value::Null,
        }
    }
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Whether `value` has the OpenAPI type `want`. Integers must be written as
/// integers: serde does not read `5.0` as an `i64`.
fn has_type(value: &Value, want: &str) -> bool {
    match want {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => true,
    }
}

fn article(openapi_type: &str) -> &'static str {
    match openapi_type {
        "object" => "a map",
        "array" => "a list",
        "string" => "a string",
        "boolean" => "a boolean",
        "integer" => "an integer",
        "number" => "a number",
        _ => "something else",
    }
}

/// `boolean `true``, `string "5"`, like serde says it, plus what YAML
/// turned a plain word into.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null (an empty value, `~` or `null`)".to_owned(),
        Value::Bool(b) => format!(
            "boolean `{b}` (YAML reads plain yes/no/on/off/y/n as booleans; quote it if you meant a string)"
        ),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".to_owned(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        many => format!("one of {}", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["defaultAction"],
            "properties": {
                "defaultAction": {"type": "string", "enum": ["Allow", "Deny"]},
                "hideDenied": {"type": "boolean"},
                "value": {"nullable": true, "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "rules": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "action"],
                    "properties": {
                        "name": {"type": "string"},
                        "action": {"type": "string", "enum": ["Allow", "Deny"]},
                        "requests": {"type": "integer"},
                        "arguments": {"type": "array", "items": {"type": "object"}}
                    }
                }}
            }
        })
    }

    fn messages(w: &Walked) -> Vec<String> {
        w.problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn every_problem_is_found_in_one_pass() {
        let doc = json!({
            "defaultAction": "deny",
            "hideDenied": "true",
            "rulez": [],
            "labels": {"a": "b", "c": 1},
            "rules": [
                {"name": "a", "action": "Permit", "argument": [], "requests": 5.0},
                {"action": "Allow", "value": null}
            ]
        });
        let w = walk(&doc, &schema(), "spec");
        assert_eq!(
            messages(&w),
            [
                "spec.defaultAction: unknown variant `deny`, expected `Allow` or `Deny`; did you mean `Deny`? (values are case-sensitive)",
                "spec.hideDenied: invalid type: string \"true\", expected a boolean",
                "spec.rulez: unknown field `rulez`; did you mean `rules`?",
                "spec.labels.c: invalid type: integer `1`, expected a string",
                "spec.rules[0].action: unknown variant `Permit`, expected `Allow` or `Deny`",
                "spec.rules[0].argument: unknown field `argument`; did you mean `arguments`?",
                "spec.rules[0].requests: invalid type: floating point `5.0`, expected an integer",
                "spec.rules[1].value: unknown field `value`, expected one of `action`, `arguments`, `name`, `requests`",
                "spec.rules[1]: missing field `name`: add `name:` with a unique rule name",
            ]
        );
        // Unknown fields go, wrong values give way to stand-ins that compile
        // finds nothing wrong with besides themselves.
        assert_eq!(
            w.repaired,
            json!({
                "defaultAction": "Deny",
                "labels": {"a": "b"},
                "rules": [{"name": "a", "action": "Allow"}, {"name": "", "action": "Allow"}]
            })
        );
        assert_eq!(
            w.replaced,
            [
                "spec.defaultAction",
                "spec.rules[0].action",
                "spec.rules[1].name"
            ]
        );
    }

    #[test]
    fn a_correct_document_comes_back_unchanged() {
        let doc = json!({"defaultAction": "Deny", "value": null, "rules": [{"name": "a", "action": "Deny", "arguments": [{}]}]});
        let w = walk(&doc, &schema(), "spec");
        assert!(w.problems.is_empty(), "{:?}", w.problems);
        assert_eq!(w.repaired, doc);
    }

    #[test]
    fn paths_below_a_replaced_one() {
        assert!(is_under("spec.rules[0].name", "spec.rules[0].name"));
        assert!(is_under("spec.rules[0].arguments[1]", "spec.rules[0]"));
        assert!(!is_under("spec.rules[0]x", "spec.rules[0]"));
        assert!(!is_under("spec.rules[10]", "spec.rules[1]"));
    }
}
