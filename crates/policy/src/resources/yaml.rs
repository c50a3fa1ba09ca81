//! One YAML document into a JSON value, read as yaml.v2 reads it where the
//! two can agree, refused where they cannot.
//!
//! The values of plain scalars follow YAML 1.1, as yaml.v2 does (`yes` is a
//! boolean, `010` is octal); serde-saphyr is configured for that. Mapping
//! keys are where a JSON-shaped reading of YAML goes wrong: yaml.v2 infers a
//! type for a plain key too, and the server's JSON step writes `off:` as the
//! key `"false"` and `0x10:` as `"16"`, where reading the key as text gives
//! `"off"` and `"0x10"`. So every key is read with type inference, and a key
//! that is not a string to YAML 1.1 is refused with a message saying to
//! quote it. Anchors, aliases and merge keys are refused by the reader's
//! options; what is left means the same to both readers (a differential test
//! against the server's reader holds this module to it).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Reads one document (or none) of `text`.
pub(crate) fn documents(
    text: &str,
    options: serde_saphyr::Options,
) -> Result<Vec<Value>, serde_saphyr::Error> {
    let docs: Vec<Document> = serde_saphyr::from_multiple_with_options(text, options)?;
    Ok(docs.into_iter().map(|d| d.0).collect())
}

/// A document, deserialized with [`ValueVisitor`].
struct Document(Value);

impl<'de> de::Deserialize<'de> for Document {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(Document)
    }
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        std::str::from_utf8(v)
            .map(|s| Value::String(s.to_owned()))
            .map_err(|_| E::custom("binary data that is not UTF-8 text"))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(ValueSeed)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key, which must be a string to YAML 1.1.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl KeyVisitor {
    fn refuse<E: de::Error>(read_as: String) -> E {
        E::custom(format!(
            "a mapping key that the server's YAML 1.1 reader reads as {read_as}, not as text; quote the key"
        ))
    }
}

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string mapping key")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Err(Self::refuse(format!("the boolean {v}")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Err(Self::refuse(format!("the number {v}")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Err(Self::refuse(format!("the number {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Err(Self::refuse(format!("the number {v}")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(Self::refuse("null".into()))
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Err(Self::refuse("null".into()))
    }
}
