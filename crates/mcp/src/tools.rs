//! The MCP tool methods the proxy looks inside: `tools/call` parameters and
//! `tools/list` results.

use serde_json::Value;

use super::jsonrpc::{INVALID_PARAMS, RpcError};

/// The method that runs a tool.
pub const CALL: &str = "tools/call";
/// The method that lists tools.
pub const LIST: &str = "tools/list";
/// Sent to clients when the visible tool list changes.
pub const LIST_CHANGED: &str = "notifications/tools/list_changed";

/// The parts of a `tools/call` request a policy decides on.
#[derive(Clone, Copy, Debug)]
pub struct CallParams<'a> {
    /// The tool name.
    pub name: &'a str,
    /// The arguments object, or `Value::Null` when absent.
    pub arguments: &'a Value,
}

static NULL: Value = Value::Null;

/// Reads `params` of a `tools/call` request, refusing anything a server
/// could read two ways.
pub fn call_params<'a>(message: &'a Value, id: Option<&Value>) -> Result<CallParams<'a>, RpcError> {
    let invalid = |m: &str| RpcError::new(INVALID_PARAMS, m, id);
    let params = message
        .get("params")
        .ok_or_else(|| invalid("tools/call needs \"params\" with the tool \"name\""))?;
    let params = params
        .as_object()
        .ok_or_else(|| invalid("tools/call \"params\" must be an object"))?;
    let name = match params.get("name") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(invalid("the tool \"name\" must be a string")),
        None => return Err(invalid("tools/call needs the tool \"name\"")),
    };
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &NULL,
        Some(a @ Value::Object(_)) => a,
        Some(_) => return Err(invalid("tool \"arguments\" must be an object")),
    };
    Ok(CallParams { name, arguments })
}

/// The tools of a `tools/list` result, if it has the expected shape.
pub fn listed(result: &Value) -> Option<&Vec<Value>> {
    result.get("tools")?.as_array()
}

/// The name of one listed tool.
pub fn tool_name(tool: &Value) -> Option<&str> {
    tool.get("name")?.as_str()
}

/// Removes tools for which `hide` says so from a `tools/list` result; all
/// other fields, of the result and of the kept tools, stay untouched.
/// Returns how many were removed.
pub fn filter_list(result: &mut Value, hide: impl Fn(&str) -> bool) -> usize {
    let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = tools.len();
    // A tool without a readable name cannot be called by name either;
    // keep it rather than guess.
    tools.retain(|t| tool_name(t).is_none_or(|n| !hide(n)));
    before - tools.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_call_params_strictly() {
        let ok = json!({"params": {"name": "vm_clone", "arguments": {"namespace": "a"}}});
        let p = call_params(&ok, None).unwrap();
        assert_eq!(
            (p.name, p.arguments),
            ("vm_clone", &json!({"namespace": "a"}))
        );
        let no_args = json!({"params": {"name": "x"}});
        assert!(call_params(&no_args, None).unwrap().arguments.is_null());

        for bad in [
            json!({}),
            json!({"params": []}),
            json!({"params": {"name": 5}}),
            json!({"params": {"name": ["vm_clone"]}}),
            json!({"params": {"name": null}}),
            json!({"params": {}}),
            json!({"params": {"name": "x", "arguments": "ns=a"}}),
            json!({"params": {"name": "x", "arguments": [1]}}),
        ] {
            let e = call_params(&bad, Some(&json!(3))).expect_err(&bad.to_string());
            assert_eq!((e.code, e.id.clone()), (INVALID_PARAMS, json!(3)), "{bad}");
        }
    }

    #[test]
    fn filtering_keeps_every_unknown_field() {
        let mut result = json!({
            "tools": [
                {"name": "a", "inputSchema": {}, "_meta": {"x": 1}},
                {"name": "b", "annotations": {"readOnlyHint": true}},
                {"title": "nameless"}
            ],
            "nextCursor": "c2",
            "ttlMs": 5000,
            "_meta": {"k": "v"}
        });
        assert_eq!(filter_list(&mut result, |n| n == "b"), 1);
        assert_eq!(
            result,
            json!({
                "tools": [{"name": "a", "inputSchema": {}, "_meta": {"x": 1}}, {"title": "nameless"}],
                "nextCursor": "c2",
                "ttlMs": 5000,
                "_meta": {"k": "v"}
            })
        );
        let mut odd = json!({"tools": "nope"});
        assert_eq!(filter_list(&mut odd, |_| true), 0);
    }
}
