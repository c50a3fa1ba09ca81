//! RFC 6901 JSON pointers, split and unescaped once when a policy is
//! compiled rather than on every call.
//!
//! `serde_json::Value::pointer` allocates a `String` per token and looks
//! each one up in an `IndexMap` hashed with SipHash; on the keyed
//! rate-limit path that was most of the pointer's cost. Tool arguments are
//! small objects, so a short one is searched in order instead (the strict
//! reader refuses duplicate keys, so the first match is the only one).
//! [`Pointer::get`] must find exactly what `Value::pointer` finds: a
//! property test compares the two.

use serde_json::{Map, Value};

/// Why a string is not an RFC 6901 JSON pointer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PointerError {
    /// A non-empty pointer must start with '/'.
    #[error("{0:?} is not a JSON pointer; start it with '/', e.g. \"/{0}\"")]
    NoLeadingSlash(String),
    /// '~' escapes only '0' and '1'.
    #[error("{0:?} has a '~' that is not '~0' (for '~') or '~1' (for '/')")]
    BadEscape(String),
}

/// Validates an RFC 6901 JSON pointer.
pub(crate) fn check_pointer(pointer: &str) -> Result<(), PointerError> {
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err(PointerError::NoLeadingSlash(pointer.to_owned()));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(PointerError::BadEscape(pointer.to_owned()));
        }
    }
    Ok(())
}

/// Objects up to this many entries are searched in order.
const SCAN_UP_TO: usize = 8;

/// A checked JSON pointer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pointer {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Token {
    /// The unescaped key.
    key: String,
    /// The array index it names, as serde_json reads one: digits only, no
    /// leading zero (but `0` itself), no sign.
    index: Option<usize>,
}

impl Pointer {
    /// `text`, checked and split.
    pub(crate) fn parse(text: &str) -> Result<Pointer, PointerError> {
        check_pointer(text)?;
        let tokens = text
            .split('/')
            .skip(1)
            .map(|t| {
                let key = t.replace("~1", "/").replace("~0", "~");
                let index = index_of(&key);
                Token { key, index }
            })
            .collect();
        Ok(Pointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it points at the whole document.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// What it points at in `value`, as `Value::pointer` finds it.
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.tokens.iter().try_fold(value, |v, t| match v {
            Value::Object(map) => field(map, &t.key),
            Value::Array(items) => t.index.and_then(|i| items.get(i)),
            _ => None,
        })
    }
}

fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() <= SCAN_UP_TO {
        map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

/// serde_json's reading of an array index.
fn index_of(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn escapes_indexes_and_misses_read_as_serde_json_reads_them() {
        let doc = json!({"a/b": {"c~d": 1}, "items": ["x", "y"], "": {"": 2}, "01": 3});
        for p in [
            "",
            "/a~1b/c~0d",
            "/items/1",
            "/items/01",
            "/items/+1",
            "/items/9",
            "//",
            "/01",
            "/missing/x",
            "/items/1/x",
        ] {
            assert_eq!(
                Pointer::parse(p).unwrap().get(&doc),
                doc.pointer(p),
                "{p:?}"
            );
        }
        assert!(Pointer::parse("nope").is_err());
        assert!(Pointer::parse("/a~2").is_err());
    }

    /// Small JSON documents with keys drawn from a few names, so pointers
    /// hit as often as they miss.
    fn document() -> impl Strategy<Value = Value> {
        // More names than SCAN_UP_TO, so objects are both scanned and
        // hashed.
        let key = prop::sample::select(vec![
            "a", "b", "0", "1", "a/b", "~", "", "10", "c", "d", "e", "f", "g", "h",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 12, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..20).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    fn pointer_text() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "a", "b", "0", "1", "a~1b", "~0", "", "10", "01", "+1", "g", "h",
        ]);
        prop::collection::vec(token, 0..4)
            .prop_map(|ts| ts.iter().map(|t| format!("/{t}")).collect())
    }

    proptest! {
        #[test]
        fn finds_exactly_what_serde_json_finds(doc in document(), p in pointer_text()) {
            let pointer = Pointer::parse(&p).unwrap();
            prop_assert_eq!(pointer.get(&doc), doc.pointer(&p));
        }
    }
}
