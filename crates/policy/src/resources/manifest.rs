//! Reading the manifests a tool call carries, once, strictly — and the
//! exact objects read, which the proxy forwards instead of the agent's text.
//!
//! kubernetes-mcp-server reads `resources_create_or_update`'s `resource`
//! text its own way: it splits it on lines of exactly `---`, decodes the
//! first YAML document of each piece with yaml.v2 (YAML 1.1), and applies the
//! objects in order. A Rust YAML 1.2 reader disagrees with yaml.v2 on merge
//! keys, on Unicode line breaks inside comments, and more; had tollgate
//! forwarded the agent's text after judging its own reading, the agent would
//! have chosen what tollgate saw and what the server applied separately.
//!
//! So: tollgate reads the text here, judges exactly these objects, and the
//! proxy forwards [`Manifest::canonical_text`] — one JSON object per piece,
//! which the server's reader reads back as the same objects (a differential
//! test against the server's own reader proves it on a generated corpus).
//! Constructs where YAML readers are known to disagree are refused with a
//! message that names them, so an agent's text never silently means
//! something else: merge keys, anchors and aliases, Unicode line breaks and
//! byte-order marks, document markers other than the separator lines,
//! directives, and pieces that hold no object.

use serde_json::Value;

use super::canonical::manifest_text;

/// The largest manifest text accepted, in bytes: far above any real set of
/// manifests an agent sends in one call, and small enough that reading it
/// costs milliseconds, not seconds.
pub(crate) const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// The most objects one call may carry.
pub const MAX_OBJECTS: usize = 500;
/// The deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 32;

/// Why a manifest argument cannot be judged; the call is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Over [`MAX_MANIFEST_BYTES`].
    #[error(
        "the `{argument}` argument is {len} bytes; at most {MAX_MANIFEST_BYTES} are accepted: send fewer objects per call"
    )]
    TooLarge {
        /// The argument.
        argument: String,
        /// Its size.
        len: usize,
    },
    /// Over [`MAX_OBJECTS`].
    #[error("the `{argument}` argument holds more than {MAX_OBJECTS} objects: send fewer per call")]
    TooMany {
        /// The argument.
        argument: String,
    },
    /// A character YAML readers treat differently.
    #[error(
        "the `{argument}` argument contains {what} (U+{code:04X}) at byte {at}; YAML readers disagree about it: remove it or write it as an escape inside a double-quoted string"
    )]
    Character {
        /// The argument.
        argument: String,
        /// What the character is.
        what: &'static str,
        /// Its code point.
        code: u32,
        /// Its byte offset.
        at: usize,
    },
    /// A line that the server's splitter treats differently from YAML.
    #[error(
        "line {line} of the `{argument}` argument starts with {marker:?}; separate documents only with lines of exactly `---`, and use no `...` or `%` directives"
    )]
    Marker {
        /// The argument.
        argument: String,
        /// 1-based line number.
        line: usize,
        /// What it starts with.
        marker: &'static str,
    },
    /// A tab in indentation: YAML forbids it, and the readers disagree on
    /// what to make of it.
    #[error(
        "line {line} of the `{argument}` argument is indented with a tab; indent YAML with spaces"
    )]
    Tab {
        /// The argument.
        argument: String,
        /// 1-based line number.
        line: usize,
    },
    /// An escape the server's YAML reader does not know.
    #[error(
        "the `{argument}` argument uses the escape `\\/` at byte {at}, which the server's YAML reader refuses: write `/`"
    )]
    Escape {
        /// The argument.
        argument: String,
        /// Its byte offset.
        at: usize,
    },
    /// A piece that is not exactly one object.
    #[error("document {index} of the `{argument}` argument {problem}")]
    Document {
        /// The argument.
        argument: String,
        /// 1-based.
        index: usize,
        /// What is wrong, from "document N of ... ".
        problem: String,
    },
    /// Neither text nor an object.
    #[error("the `{argument}` argument is neither a manifest string nor an object")]
    NotAManifest {
        /// The argument.
        argument: String,
    },
}

/// The objects of one manifest argument, as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    objects: Vec<Value>,
    /// Whether the argument was text (forwarded as [`Self::canonical_text`])
    /// or structured JSON (forwarded as the proxy's re-serialisation).
    text: bool,
}

impl Manifest {
    /// Reads a manifest argument: a YAML/JSON string (pieces separated by
    /// lines of `---`), an object, or a list of objects.
    pub fn read(value: &Value, argument: &str) -> Result<Manifest, ManifestError> {
        let (objects, text) = match value {
            Value::String(text) => (read_text(text, argument)?, true),
            Value::Array(items) => (items.clone(), false),
            obj @ Value::Object(_) => (vec![obj.clone()], false),
            _ => {
                return Err(ManifestError::NotAManifest {
                    argument: argument.to_owned(),
                });
            }
        };
        if objects.len() > MAX_OBJECTS {
            return Err(ManifestError::TooMany {
                argument: argument.to_owned(),
            });
        }
        let objects = objects
            .into_iter()
            .enumerate()
            .map(|(i, o)| object(o, argument, i + 1))
            .collect::<Result<_, _>>()?;
        Ok(Manifest { objects, text })
    }

    /// The objects, in order.
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    /// What the proxy forwards in place of the argument: for text, one JSON
    /// object per piece; for structured JSON, the objects themselves.
    pub fn forwarded(&self, original: &Value) -> Value {
        match (self.text, original) {
            (true, _) => Value::String(manifest_text(&self.objects)),
            (false, Value::Array(_)) => Value::Array(self.objects.clone()),
            (false, _) => self.objects.first().cloned().unwrap_or(Value::Null),
        }
    }
}

/// The characters refused anywhere in a manifest: YAML line breaks outside
/// LF and CR (libyaml ends comments at them; a YAML 1.2 reader does not),
/// byte-order marks, and what YAML does not call printable.
fn refused_character(c: char) -> Option<&'static str> {
    match c {
        '\u{85}' => Some("a NEXT LINE character"),
        '\u{2028}' => Some("a LINE SEPARATOR"),
        '\u{2029}' => Some("a PARAGRAPH SEPARATOR"),
        '\u{feff}' => Some("a byte-order mark"),
        '\t' | '\n' | '\r' => None,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => Some("a control character"),
        '\u{fffe}' | '\u{ffff}' => Some("a non-character"),
        _ => None,
    }
}

/// The pieces of `text` as the server splits them: on a line of exactly
/// `---` between LF or CRLF line ends. A first line of `---` opens the text
/// and is dropped, as the server's reader drops it.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((start, end)) = find_separator(rest) {
        out.push(&rest[..start]);
        rest = &rest[end..];
    }
    out.push(rest);
    if let Some(first) = out.first_mut() {
        *first = first
            .strip_prefix("---\r\n")
            .or_else(|| first.strip_prefix("---\n"))
            .unwrap_or(if *first == "---" || *first == "---\r" {
                ""
            } else {
                first
            });
    }
    out
}

/// The first `\r?\n---\r?\n` in `s`: where it starts and ends.
fn find_separator(s: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = s[from..].find("\n---") {
        let dash = from + i;
        let start = if dash > 0 && s.as_bytes()[dash - 1] == b'\r' {
            dash - 1
        } else {
            dash
        };
        let after = &s[dash + 4..];
        if after.starts_with('\n') {
            return Some((start, dash + 5));
        }
        if after.starts_with("\r\n") {
            return Some((start, dash + 6));
        }
        from = dash + 1;
    }
    None
}

fn read_text(text: &str, argument: &str) -> Result<Vec<Value>, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            argument: argument.to_owned(),
            len: text.len(),
        });
    }
    if let Some((at, c, what)) = text
        .char_indices()
        .find_map(|(i, c)| refused_character(c).map(|w| (i, c, w)))
    {
        return Err(ManifestError::Character {
            argument: argument.to_owned(),
            what,
            code: c as u32,
            at,
        });
    }
    check_markers(text, argument)?;
    check_escapes(text, argument)?;
    let pieces = pieces(text);
    if pieces.len() > MAX_OBJECTS {
        return Err(ManifestError::TooMany {
            argument: argument.to_owned(),
        });
    }
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| read_piece(piece, argument, i + 1))
        .collect()
}

/// Refuses lines the server's splitter and a YAML reader see differently:
/// any line starting with `---` that is not a separator (a whole line of
/// `---` between two line ends, or the first line), `...` and `%`.
fn check_markers(text: &str, argument: &str) -> Result<(), ManifestError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.len() - 1;
    for (n, line) in lines.iter().enumerate() {
        let indentation = &line[..line.len() - line.trim_start_matches([' ', '\t']).len()];
        if indentation.contains('\t') {
            return Err(ManifestError::Tab {
                argument: argument.to_owned(),
                line: n + 1,
            });
        }
        let exact = line.strip_suffix('\r').unwrap_or(line) == "---";
        let marker = if line.starts_with("---") && !(exact && (n == 0 || n < last)) {
            Some("---")
        } else if line.starts_with("...") {
            Some("...")
        } else if line.starts_with('%') {
            Some("%")
        } else {
            None
        };
        if let Some(marker) = marker {
            return Err(ManifestError::Marker {
                argument: argument.to_owned(),
                line: n + 1,
                marker,
            });
        }
    }
    Ok(())
}

/// Refuses the escape `\/`: YAML 1.2 readers take it inside double quotes
/// for `/`, the server's yaml.v2 refuses the whole text. (Written as
/// `\\/`, an escaped backslash before a slash, it is fine.)
fn check_escapes(text: &str, argument: &str) -> Result<(), ManifestError> {
    let bytes = text.as_bytes();
    let mut backslashes = 0;
    for (at, &b) in bytes.iter().enumerate() {
        if b == b'/' && backslashes % 2 == 1 {
            return Err(ManifestError::Escape {
                argument: argument.to_owned(),
                at: at - 1,
            });
        }
        backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
    }
    Ok(())
}

fn read_piece(piece: &str, argument: &str, index: usize) -> Result<Value, ManifestError> {
    let problem = |problem: String| ManifestError::Document {
        argument: argument.to_owned(),
        index,
        problem,
    };
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_anchors: 0,
            max_aliases: 0,
            max_depth: MAX_DEPTH,
            max_documents: 2,
            max_nodes: 200_000,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        merge_keys: serde_saphyr::MergeKeyPolicy::Error,
        reject_unsupported_tags: true,
        legacy_octal_numbers: true,
        with_snippet: false,
    };
    let docs = super::yaml::documents(piece, options).map_err(|e| {
        let e = e.to_string();
        if e.contains("budget breached: Anchors") || e.contains("budget breached: Aliases") {
            problem("uses YAML anchors or aliases (`&`, `*`), which are not accepted in manifests: write the values out".into())
        } else {
            problem(format!("is not valid YAML: {}", first_line(&e)))
        }
    })?;
    match <[Value; 1]>::try_from(docs) {
        Ok([doc]) => Ok(doc),
        Err(docs) if docs.is_empty() => Err(problem(
            "holds no object (it is empty or only comments); remove the extra `---`".into(),
        )),
        Err(_) => Err(problem("holds more than one YAML document".into())),
    }
}

/// Checks one object and drops what the server drops (`status`).
fn object(mut doc: Value, argument: &str, index: usize) -> Result<Value, ManifestError> {
    let problem = |problem: &str| ManifestError::Document {
        argument: argument.to_owned(),
        index,
        problem: problem.to_owned(),
    };
    let Value::Object(map) = &mut doc else {
        return Err(problem("is not an object"));
    };
    let named = |k: &str| {
        map.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !named("apiVersion") || !named("kind") {
        return Err(problem(
            "is not a Kubernetes object: it needs a string apiVersion and kind",
        ));
    }
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if version.is_empty() || group.contains('/') || (api_version.contains('/') && group.is_empty())
    {
        return Err(problem(
            "has an apiVersion that is not `version` or `group/version`",
        ));
    }
    if map
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
    {
        return Err(problem(
            "is a list; send its items as separate documents instead",
        ));
    }
    if let Some(metadata) = map.get("metadata") {
        let Value::Object(m) = metadata else {
            return Err(problem("has a metadata that is not an object"));
        };
        for field in ["name", "namespace", "generateName"] {
            if m.get(field).is_some_and(|v| !v.is_string()) {
                return Err(problem(&format!(
                    "has a metadata.{field} that is not a string"
                )));
            }
        }
    }
    if let Some(bad) = out_of_range(&doc) {
        return Err(problem(&format!(
            "holds the number {bad}, which the Kubernetes API cannot hold exactly"
        )));
    }
    if let Value::Object(map) = &mut doc {
        map.remove("status");
    }
    Ok(doc)
}

/// A number no 64-bit integer or finite double holds exactly as written.
fn out_of_range(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) if n.as_i64().is_none() && n.as_f64().is_none_or(|f| !f.is_finite()) => {
            Some(n.to_string())
        }
        Value::Number(n) if n.is_u64() && n.as_i64().is_none() => Some(n.to_string()),
        Value::Array(items) => items.iter().find_map(out_of_range),
        Value::Object(map) => map.values().find_map(out_of_range),
        _ => None,
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Result<Vec<Value>, String> {
        Manifest::read(&Value::String(text.into()), "resource")
            .map(|m| m.objects().to_vec())
            .map_err(|e| e.to_string())
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";

    #[test]
    fn separators_split_as_the_server_splits() {
        assert_eq!(read(CM).unwrap().len(), 1);
        assert_eq!(
            read(&format!("---\n{CM}")).unwrap().len(),
            1,
            "a leading ---"
        );
        assert_eq!(read(&format!("{CM}---\n{CM}")).unwrap().len(), 2);
        assert_eq!(read(&format!("{CM}---\r\n{CM}")).unwrap().len(), 2, "CRLF");
        for bad in [
            format!("{CM}---\n"),
            format!("{CM}---"),
            format!("---\n---\n{CM}"),
            format!("{CM}--- # next\n{CM}"),
            format!("{CM}...\n"),
            format!("%YAML 1.1\n---\n{CM}"),
            format!("{CM}---\n# only a comment\n---\n{CM}"),
        ] {
            assert!(read(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn constructs_the_readers_disagree_on_are_refused_by_name() {
        let cases = [
            (
                "x: &a {kind: Pod}\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ny: *a\n",
                "anchors or aliases",
            ),
            (
                "base: {k: 1}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  <<: {name: a}\n",
                "merge",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n# c\u{2028}kind: Secret\n",
                "LINE SEPARATOR",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n# c\u{85}kind: Secret\n",
                "NEXT LINE",
            ),
            (
                "\u{feff}apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
                "byte-order mark",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: a\n",
                "tab",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \"a\\/b\"}\n",
                "\\/",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nkind: Secret\nmetadata: {name: a}\n",
                "duplicate",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, off: x}\n",
                "the boolean false",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, 0x10: x}\n",
                "the number 16",
            ),
            ("apiVersion: v1\nkind: List\nitems: []\n", "list"),
            ("apiVersion: v1/\nkind: Pod\n", "apiVersion"),
            (
                "apiVersion: v1\nkind: ConfigMap\ndata: {big: 18446744073709551615}\n",
                "cannot hold exactly",
            ),
        ];
        for (text, why) in cases {
            let err = read(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn yaml_1_1_scalars_read_as_the_server_reads_them() {
        let objects = read(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {'on': yes, 'oct': 010, 'q': \"yes\"}\n",
        )
        .unwrap();
        assert_eq!(
            objects[0]["data"],
            json!({"on": true, "oct": 8, "q": "yes"})
        );
    }

    #[test]
    fn status_is_dropped_as_the_server_drops_it_and_the_text_forwarded_is_the_objects() {
        let text = format!(
            "{CM}status: {{phase: Done}}\n---\n{{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}}\n"
        );
        let m = Manifest::read(&Value::String(text.clone()), "resource").unwrap();
        assert!(m.objects()[0].get("status").is_none());
        let forwarded = m.forwarded(&Value::String(text));
        assert_eq!(
            forwarded,
            json!(
                "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"a\"}}\n---\n{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}"
            )
        );
        // Structured manifests are forwarded as the objects, structured.
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "status": {}});
        let m = Manifest::read(&obj, "resource").unwrap();
        assert_eq!(
            m.forwarded(&obj),
            json!({"apiVersion": "v1", "kind": "Pod"})
        );
    }

    #[test]
    fn size_and_count_are_bounded() {
        let big = format!("{CM}data: {{x: \"{}\"}}\n", "a".repeat(MAX_MANIFEST_BYTES));
        assert!(read(&big).unwrap_err().contains("at most"));
        let many = vec![CM; MAX_OBJECTS + 1].join("---\n");
        assert!(read(&many).unwrap_err().contains("more than"));
        let deep = format!(
            "{CM}data: {}1{}\n",
            "[".repeat(MAX_DEPTH + 2),
            "]".repeat(MAX_DEPTH + 2)
        );
        assert!(read(&deep).is_err());
    }
}
