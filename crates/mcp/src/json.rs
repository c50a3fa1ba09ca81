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
//!
//! It also bounds what a document may cost to hold: nesting deeper than
//! [`MAX_DEPTH`] and more than [`Limits::max_values`] values are refused
//! while parsing, so a 4 MiB body of `[0,0,0,...]` (two million values,
//! ~200 MiB as a tree) is refused after its first [`DEFAULT_MAX_VALUES`]
//! instead of being built.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The deepest nesting accepted (serde_json's own recursion limit is 128;
/// this is checked first so the error says what happened).
pub const MAX_DEPTH: usize = 64;

/// The most values a document may hold by default: ~10 MiB as a tree, and
/// far more than any MCP message carries (a manifest is one string value).
pub const DEFAULT_MAX_VALUES: usize = 100_000;

/// How much of a JSON document the parser will build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most values: every string, number, literal, array, object and
    /// object key counts one.
    pub max_values: usize,
}

impl Limits {
    /// No limit but [`MAX_DEPTH`] (for measuring what the limit saves).
    pub const UNLIMITED: Limits = Limits {
        max_values: usize::MAX,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_values: DEFAULT_MAX_VALUES,
        }
    }
}

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
    /// More values than [`Limits::max_values`].
    #[error("JSON with more than {0} values")]
    TooManyValues(usize),
}

/// Parses `bytes` as exactly one JSON value with no duplicate keys, within
/// the default [`Limits`].
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    parse_strict_with(bytes, Limits::default())
}

/// [`parse_strict`] within `limits`.
pub fn parse_strict_with(bytes: &[u8], limits: Limits) -> Result<Value, StrictJsonError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(StrictJsonError::ByteOrderMark);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let left = Cell::new(limits.max_values);
    let value = StrictSeed {
        depth: 0,
        left: &left,
    }
    .deserialize(&mut de)
    .map_err(|e| classify(e, limits))?;
    // Only whitespace may follow the value.
    de.end()
        .map_err(|e| StrictJsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// Our visitor reports duplicates and depth through serde's custom errors;
/// turn those back into typed errors.
fn classify(e: serde_json::Error, limits: Limits) -> StrictJsonError {
    let text = e.to_string();
    if text.starts_with(TOO_MANY) {
        return StrictJsonError::TooManyValues(limits.max_values);
    }
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
pub(crate) const MAX_EXACT_INTEGER: u64 = 1 << 53;
const TOO_DEEP: &str = "nesting too deep";
const TOO_MANY: &str = "too many values";

/// One value to read, at `depth`, from what is `left` of the value budget.
struct StrictSeed<'a> {
    depth: usize,
    left: &'a Cell<usize>,
}

impl<'a> StrictSeed<'a> {
    /// Spends one value of the budget.
    fn spend<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(TOO_MANY)),
        }
    }

    /// The seed of a child value.
    fn deeper<E: de::Error>(&self) -> Result<StrictSeed<'a>, E> {
        if self.depth >= MAX_DEPTH {
            Err(E::custom(TOO_DEEP))
        } else {
            Ok(StrictSeed {
                depth: self.depth + 1,
                left: self.left,
            })
        }
    }

    fn again(&self) -> StrictSeed<'a> {
        StrictSeed {
            depth: self.depth,
            left: self.left,
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.spend()?;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
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
        let child = self.deeper()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(child.again())? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.deeper()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            child.spend()?;
            let value = map.next_value_seed(child.again())?;
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
    fn values_past_the_limit_are_refused_while_parsing() {
        let limits = Limits { max_values: 5 };
        // The array, then 1, 2, 3, 4: five values.
        assert!(parse_strict_with(b"[1,2,3,4]", limits).is_ok());
        assert_eq!(
            parse_strict_with(b"[1,2,3,4,5]", limits),
            Err(StrictJsonError::TooManyValues(5))
        );
        // Keys count too: the object, "a", 1, "b", 2.
        assert!(parse_strict_with(br#"{"a":1,"b":2}"#, limits).is_ok());
        assert_eq!(
            parse_strict_with(br#"{"a":1,"b":{}}"#, Limits { max_values: 4 }),
            Err(StrictJsonError::TooManyValues(4))
        );
        let zeros = format!("[{}0]", "0,".repeat(DEFAULT_MAX_VALUES));
        assert_eq!(
            parse_strict(zeros.as_bytes()),
            Err(StrictJsonError::TooManyValues(DEFAULT_MAX_VALUES))
        );
    }

    #[test]
    fn valid_surrogate_pairs_and_escapes_are_fine() {
        let v = parse_strict(br#"{"e":"\ud83d\ude00","n":"a\u0000b"}"#).unwrap();
        assert_eq!(v["e"], "😀");
        assert_eq!(v["n"], "a\u{0}b");
    }
}
