//! JSON-RPC 2.0 envelopes: what kind of message a parsed value is, and the
//! responses the proxy writes itself.

use serde_json::{Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid JSON-RPC message.
pub const INVALID_REQUEST: i64 = -32600;
/// Invalid method parameters (e.g. a tool name that is not a string).
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// `Mcp-Method`/`Mcp-Name` headers disagree with the body (MCP 2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;
/// A policy denied the call (when a rule asks for JSON-RPC errors).
pub const POLICY_DENIED: i64 = -31001;
/// A rate limit denied the call (when a rule asks for JSON-RPC errors).
pub const RATE_LIMITED: i64 = -31002;
/// The MCP server behind the proxy did not answer.
pub const UPSTREAM_UNAVAILABLE: i64 = -31003;
/// The sidecar has no rules yet and fails closed.
pub const NO_POLICY: i64 = -31004;
/// The caller's bearer token is missing, invalid or cannot be checked.
pub const IDENTITY_REFUSED: i64 = -31005;

/// The three kinds of JSON-RPC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`: expects a response.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result` or `error`.
    Response,
}

/// The envelope fields of one message, borrowed from the parsed value.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    /// Request, notification or response.
    pub kind: Kind,
    /// The id of requests and responses.
    pub id: Option<&'a Value>,
    /// The method of requests and notifications.
    pub method: Option<&'a str>,
}

/// A message that is not valid JSON-RPC; becomes an error response.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// Human-readable reason.
    pub message: String,
    /// The request id, when it could be read; `null` otherwise.
    pub id: Value,
}

impl RpcError {
    /// An error with code and message about the message with `id`.
    pub fn new(code: i64, message: impl Into<String>, id: Option<&Value>) -> Self {
        RpcError {
            code,
            message: message.into(),
            id: id.cloned().unwrap_or(Value::Null),
        }
    }

    /// The error as a JSON-RPC response.
    pub fn to_response(&self) -> Value {
        error_response(&self.id, self.code, &self.message, None)
    }
}

/// Checks the JSON-RPC envelope of `v` and says what kind of message it is.
pub fn inspect(v: &Value) -> Result<Envelope<'_>, RpcError> {
    let Some(obj) = v.as_object() else {
        return Err(RpcError::new(
            INVALID_REQUEST,
            "a JSON-RPC message must be an object",
            None,
        ));
    };
    let id = obj.get("id");
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::new(
            INVALID_REQUEST,
            "\"jsonrpc\" must be \"2.0\"",
            id.filter(|i| valid_id(i)),
        ));
    }
    if let Some(method) = obj.get("method") {
        let Some(method) = method.as_str() else {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "\"method\" must be a string",
                id.filter(|i| valid_id(i)),
            ));
        };
        if obj.contains_key("result") || obj.contains_key("error") {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "a message cannot be both a request and a response",
                id.filter(|i| valid_id(i)),
            ));
        }
        if let Some(params) = obj.get("params")
            && !params.is_object()
            && !params.is_array()
        {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "\"params\" must be an object",
                id.filter(|i| valid_id(i)),
            ));
        }
        return match id {
            None => Ok(Envelope {
                kind: Kind::Notification,
                id: None,
                method: Some(method),
            }),
            Some(id) if valid_id(id) => Ok(Envelope {
                kind: Kind::Request,
                id: Some(id),
                method: Some(method),
            }),
            Some(_) => Err(RpcError::new(
                INVALID_REQUEST,
                "\"id\" must be a string or an integer",
                None,
            )),
        };
    }
    let has_result = obj.contains_key("result");
    let has_error = obj.contains_key("error");
    match id {
        Some(id) if has_result != has_error && (valid_id(id) || (has_error && id.is_null())) => {
            Ok(Envelope {
                kind: Kind::Response,
                id: Some(id),
                method: None,
            })
        }
        _ => Err(RpcError::new(
            INVALID_REQUEST,
            "not a request, notification or response: needs \"method\", or \"id\" with exactly one of \"result\" and \"error\"",
            None,
        )),
    }
}

/// MCP ids are strings or integers (never null, never fractional).
fn valid_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

/// A JSON-RPC error response.
pub fn error_response(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

/// A successful `tools/call` response carrying a tool execution error the
/// model reads (`isError: true`).
pub fn tool_error_result(id: &Value, text: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "content": [{ "type": "text", "text": text }],
            "isError": true
        }
    })
}

/// A JSON-RPC notification.
pub fn notification(method: &str) -> Value {
    json!({ "jsonrpc": "2.0", "method": method })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_three_kinds() {
        let req = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}});
        let e = inspect(&req).unwrap();
        assert_eq!(
            (e.kind, e.method, e.id),
            (Kind::Request, Some("tools/call"), Some(&json!(1)))
        );
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        assert_eq!(inspect(&note).unwrap().kind, Kind::Notification);
        let resp = json!({"jsonrpc":"2.0","id":"a","result":{}});
        assert_eq!(inspect(&resp).unwrap().kind, Kind::Response);
        let err = json!({"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}});
        assert_eq!(inspect(&err).unwrap().kind, Kind::Response);
    }

    #[test]
    fn refuses_invalid_envelopes_with_the_id_when_it_is_readable() {
        let cases = [
            (json!([]), None),
            (json!("x"), None),
            (json!({"id":1,"method":"m"}), Some(json!(1))),
            (json!({"jsonrpc":"1.0","id":1,"method":"m"}), Some(json!(1))),
            (json!({"jsonrpc":"2.0","id":1,"method":5}), Some(json!(1))),
            (json!({"jsonrpc":"2.0","id":1.5,"method":"m"}), None),
            (json!({"jsonrpc":"2.0","id":null,"method":"m"}), None),
            (json!({"jsonrpc":"2.0","id":true,"method":"m"}), None),
            (
                json!({"jsonrpc":"2.0","id":1,"method":"m","params":"x"}),
                Some(json!(1)),
            ),
            (
                json!({"jsonrpc":"2.0","id":1,"method":"m","result":{}}),
                Some(json!(1)),
            ),
            (json!({"jsonrpc":"2.0","id":1}), None),
            (json!({"jsonrpc":"2.0","id":1,"result":{},"error":{}}), None),
        ];
        for (msg, id) in cases {
            let err = inspect(&msg).expect_err(&msg.to_string());
            assert_eq!(err.code, INVALID_REQUEST, "{msg}");
            assert_eq!(err.id, id.unwrap_or(Value::Null), "{msg}");
        }
    }

    #[test]
    fn builds_denials_in_both_shapes() {
        let id = json!(7);
        assert_eq!(
            tool_error_result(&id, "no"),
            json!({"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"no"}],"isError":true}})
        );
        assert_eq!(
            error_response(&id, POLICY_DENIED, "no", Some(json!({"rule":"r"}))),
            json!({"jsonrpc":"2.0","id":7,"error":{"code":-31001,"message":"no","data":{"rule":"r"}}})
        );
    }
}
