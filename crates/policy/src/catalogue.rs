//! A server's tools as its own `tools/list` answered, read from a file or
//! from the server: what `tollgate check --tools`, `tollgate test` and
//! `tollgate scan` judge policies against, the way the sidecar's catalogue
//! does at run time.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::resources::ToolMeta;

/// The tools of one server, by name.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    tools: BTreeMap<String, (Value, ToolMeta)>,
}

/// Why a tool list cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but no list of tools.
    #[error(
        "no tools in it: expected a tools/list result ({{\"tools\": [...]}}), a JSON-RPC response with one, or a list of tools"
    )]
    Shape,
}

impl Catalogue {
    /// The tools of a `tools/list` result (`{"tools": [...]}`), of a whole
    /// JSON-RPC response carrying one, or of a bare list of tools. Entries
    /// without a string `name` are skipped.
    pub fn from_value(value: &Value) -> Result<Catalogue, CatalogueError> {
        let list = match value {
            Value::Array(items) => items,
            v => v
                .get("tools")
                .or_else(|| v.pointer("/result/tools"))
                .and_then(Value::as_array)
                .ok_or(CatalogueError::Shape)?,
        };
        Ok(Catalogue::from_tools(list))
    }

    /// The tools of a list of `tools/list` entries.
    pub fn from_tools(list: &[Value]) -> Catalogue {
        let tools = list
            .iter()
            .filter_map(|t| {
                let name = t.get("name")?.as_str()?;
                Some((name.to_owned(), (t.clone(), ToolMeta::from_tool(t))))
            })
            .collect();
        Catalogue { tools }
    }

    /// Reads [`from_value`](Self::from_value) from JSON text.
    pub fn from_json(text: &str) -> Result<Catalogue, CatalogueError> {
        let value: Value = serde_json::from_str(text)?;
        Catalogue::from_value(&value)
    }

    /// The tool names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// What the server says about `tool`, if it lists it.
    pub fn meta(&self, tool: &str) -> Option<&ToolMeta> {
        self.tools.get(tool).map(|(_, m)| m)
    }

    /// The `tools/list` entry of `tool` as the server wrote it.
    pub fn entry(&self, tool: &str) -> Option<&Value> {
        self.tools.get(tool).map(|(v, _)| v)
    }

    /// How many tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether it has no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_result_a_response_or_a_list() {
        let tools = json!([{"name": "a"}, {"name": "b", "annotations": {"readOnlyHint": true}}, {"title": "nameless"}]);
        for value in [
            json!({"tools": tools}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}),
            tools.clone(),
        ] {
            let c = Catalogue::from_value(&value).unwrap();
            assert_eq!(c.names().collect::<Vec<_>>(), ["a", "b"]);
            assert!(c.meta("b").unwrap().behaviour().read_only());
        }
        assert!(matches!(
            Catalogue::from_value(&json!({"x": 1})).unwrap_err(),
            CatalogueError::Shape
        ));
        assert!(matches!(
            Catalogue::from_json("{").unwrap_err(),
            CatalogueError::Json(_)
        ));
    }
}
