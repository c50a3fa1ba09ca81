//! The text tollgate forwards in place of a manifest it judged: each object
//! as one line of JSON, objects separated by a line of `---`.
//!
//! JSON is YAML to the server's reader, so the server reads this text as
//! exactly the objects tollgate judged — provided every character survives
//! its YAML reader (yaml.v2/libyaml) unchanged. Inside a double-quoted scalar
//! libyaml folds line breaks, and it refuses characters YAML does not call
//! printable; so besides what JSON escapes, this writer escapes every
//! character that YAML treats as a line break (U+0085, U+2028, U+2029) or
//! does not print (DEL, the C1 controls, U+FEFF, U+FFFE, U+FFFF). Numbers are
//! written so that yaml.v2 reads the same number: integers in decimal, other
//! floats with a fraction and an exponent it recognises. The differential test
//! against the server's own reader (`tests/manifest_oracle.rs`) holds this
//! writer to that promise.

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// The separator line the server splits manifests on.
pub(crate) const SEPARATOR: &str = "\n---\n";

/// `objects` as the text of a manifest argument.
pub(crate) fn manifest_text(objects: &[Value]) -> String {
    let mut out = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str(SEPARATOR);
        }
        write_value(object, &mut out);
    }
    out
}

fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

/// Integers as integers; a float that holds an integer (below 2^53, where
/// every integer is exact) as that integer, which is how the server's JSON
/// step writes it anyway; any other float with a `.` and a signed exponent.
fn write_number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            let _ = write!(out, "{}", f as i64);
        } else {
            let text = format!("{f:e}");
            let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
            out.push_str(mantissa);
            if !mantissa.contains('.') {
                out.push_str(".0");
            }
            out.push('e');
            if !exponent.starts_with('-') {
                out.push('+');
            }
            out.push_str(exponent);
        }
    }
}

/// Whether YAML's reader would change or refuse `c` written raw inside a
/// double-quoted scalar.
fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '"' | '\\' | '\u{7f}'..='\u{9f}'
        | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if !needs_escape(c) {
            continue;
        }
        out.push_str(&s[start..i]);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => {
                let _ = write!(out, "\\u{:04x}", other as u32);
            }
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_one_line_each_and_parse_back_as_json() {
        let objects = vec![
            json!({"kind": "A", "s": "line\nbreak \u{2028} \u{85} tab\t \"q\" \\ é 😀", "n": [1, -2, 1.5, 1e300, 2.0]}),
            json!({"kind": "B"}),
        ];
        let text = manifest_text(&objects);
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1], "---");
        assert!(!lines[0].contains('\u{2028}') && !lines[0].contains('\u{85}'));
        let back: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back["s"], objects[0]["s"]);
        assert_eq!(back["n"][2], json!(1.5));
        assert_eq!(back["n"][3].as_f64(), Some(1e300));
        assert_eq!(back["n"][4], json!(2), "integral floats as integers");
        assert!(lines[0].contains("1.0e+300"), "{}", lines[0]);
    }
}
