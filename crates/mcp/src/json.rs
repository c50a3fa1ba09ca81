//! Strict JSON: one reading of every byte sequence, or an error.
//!
//! An intermediary that decides on a message must read it exactly as the
//! server behind it will, and servers disagree on sloppy input: one takes the
//! last of two duplicate keys, another the first; one ignores bytes after the
//! value, another fails. The proxy never has to guess which reading the
//! upstream will pick, because it refuses every input with more than one
//! (duplicate keys at any depth, trailing bytes, invalid UTF-8, lone UTF-16
//! surrogates in escapes, a byte-order mark) and forwards its own
//! re-serialisation of what it decided on.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The deepest nesting accepted (serde_json's own recursion limit is 128;
/// this is checked first so the error says what happened).
pub const MAX_DEPTH: usize = 64;

/// Why a body is not one unambiguous JSON value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StrictJsonError {
    /// Not JSON at all, or bytes after the value.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// The same key twice in one object.
    #[error("duplicate key {0:?} in a JSON object")]
    DuplicateKey(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// An integer above 2^53 in magnitude, which the server would round.
    #[error(
        "the integer {0} is too large for the MCP server to read exactly (servers read JSON numbers as doubles, exact up to 2^53): send it as a string"
    )]
    InexactInteger(String),
    /// A UTF-8 byte-order mark, which JSON texts must not carry.
    #[error("a byte-order mark before the JSON value")]
    ByteOrderMark,
}

/// Parses `bytes` as exactly one JSON value with no duplicate keys.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(StrictJsonError::ByteOrderMark);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed { depth: 0 }
        .deserialize(&mut de)
        .map_err(classify)?;
    // Only whitespace may follow the value.
    de.end()
        .map_err(|e| StrictJsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// Our visitor reports duplicates and depth through serde's custom errors;
/// turn those back into typed errors.
fn classify(e: serde_json::Error) -> StrictJsonError {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix(DUPLICATE_PREFIX) {
        let key = rest.rsplit_once(" at line").map_or(rest, |(k, _)| k);
        return StrictJsonError::DuplicateKey(key.trim_matches('"').to_owned());
    }
    if let Some(rest) = text.strip_prefix(INEXACT_PREFIX) {
        let number = rest.rsplit_once(" at line").map_or(rest, |(n, _)| n);
        return StrictJsonError::InexactInteger(number.to_owned());
    }
    if text.starts_with(TOO_DEEP) || text.starts_with("recursion limit exceeded") {
        return StrictJsonError::TooDeep;
    }
    StrictJsonError::Syntax(text)
}

const DUPLICATE_PREFIX: &str = "duplicate key ";
const INEXACT_PREFIX: &str = "inexact integer ";

/// The largest integer every JSON reader holds exactly: MCP servers read
/// numbers as IEEE doubles (Go's encoding/json, JavaScript), and above 2^53
/// a double rounds — the server would act on another number than the one
/// judged. Larger integers are refused; send them as strings.
pub const MAX_EXACT_INTEGER: u64 = 1 << 53;
const TOO_DEEP: &str = "nesting too deep";

struct StrictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            Err(E::custom(TOO_DEEP))
        } else {
            Ok(self.depth + 1)
        }
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_EXACT_INTEGER {
            return Err(E::custom(format_args!("{INEXACT_PREFIX}{v}")));
        }
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_EXACT_INTEGER {
            return Err(E::custom(format_args!("{INEXACT_PREFIX}{v}")));
        }
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.deeper()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(StrictSeed { depth })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.deeper()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictSeed { depth })?;
            // One hash per key: the entry says whether it was already there.
            match out.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(seen) => {
                    return Err(de::Error::custom(format_args!(
                        "{DUPLICATE_PREFIX}{:?}",
                        seen.key()
                    )));
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_ordinary_json_and_keeps_key_order() {
        let v = parse_strict(br#" {"b": 1, "a": [true, null, 1.5, "x"], "c": {}} "#).unwrap();
        assert_eq!(v, json!({"b": 1, "a": [true, null, 1.5, "x"], "c": {}}));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"b":1,"a":[true,null,1.5,"x"],"c":{}}"#
        );
    }

    #[test]
    fn refuses_every_ambiguous_input() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"method":"tools/list","method":"tools/call"}"#,
                "duplicate",
            ),
            (br#"{"params":{"name":"a","name":"b"}}"#, "duplicate"),
            (br#"[{"a":1,"a":1}]"#, "duplicate"),
            (br#"{"a":1} {"a":2}"#, "invalid"),
            (br#"{"a":1}x"#, "invalid"),
            (br#"{"a":1},"#, "invalid"),
            (b"\xEF\xBB\xBF{}", "byte-order"),
            (b"{\"a\":\"\xff\"}", "invalid"),
            (br#"{"a":"\ud800"}"#, "invalid"),
            (br#"{"a":"\udc00x"}"#, "invalid"),
            (br#"{"a":1,}"#, "invalid"),
            (br#"{'a':1}"#, "invalid"),
            (br#"{"id":9007199254740993}"#, "too large"),
            (br#"{"a":[-9223372036854775808]}"#, "too large"),
            (b"", "invalid"),
            (br#"{"a":NaN}"#, "invalid"),
            (br#"{"a":1e999}"#, "invalid"),
            (b"\x00{}", "invalid"),
            (&[0xFF, 0xFE, b'{', 0, b'}', 0], "invalid"),
        ];
        for (input, kind) in cases {
            let err = parse_strict(input).expect_err(&String::from_utf8_lossy(input));
            assert!(
                err.to_string().contains(kind),
                "{:?}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn duplicate_keys_are_named() {
        assert_eq!(
            parse_strict(br#"{"x":{"k":1,"k":2}}"#),
            Err(StrictJsonError::DuplicateKey("k".into()))
        );
    }

    #[test]
    fn depth_is_bounded_without_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_strict(deep.as_bytes()), Err(StrictJsonError::TooDeep));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_strict(ok.as_bytes()).is_ok());
    }

    #[test]
    fn valid_surrogate_pairs_and_escapes_are_fine() {
        let v = parse_strict(br#"{"e":"\ud83d\ude00","n":"a\u0000b"}"#).unwrap();
        assert_eq!(v["e"], "😀");
        assert_eq!(v["n"], "a\u{0}b");
    }
}
