//! MCP-over-HTTP header rules the proxy enforces on client POSTs.
//!
//! From MCP 2026-07-28 every POST mirrors its `method` into `Mcp-Method` and,
//! for `tools/call` and `prompts/get`, `params.name` (for `resources/read`,
//! `params.uri`) into `Mcp-Name`. Intermediaries route on those headers, so a
//! header that disagrees with the body is an attack on whoever trusts it:
//! the proxy decides from the body and refuses the mismatch outright.

use serde_json::Value;

use super::jsonrpc::{Envelope, HEADER_MISMATCH, RpcError};

/// `Mcp-Session-Id`.
pub const SESSION_ID: &str = "mcp-session-id";
/// `MCP-Protocol-Version`.
pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// `Mcp-Method` (2026-07-28).
pub const METHOD: &str = "mcp-method";
/// `Mcp-Name` (2026-07-28).
pub const NAME: &str = "mcp-name";

/// The first protocol version that requires the mirrored headers.
pub(crate) const MIRRORED_HEADERS_SINCE: &str = "2026-07-28";

/// Protocol versions whose transports the proxy speaks.
pub const KNOWN_VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// The mirrored headers of one POST, as sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mirrored<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name`.
    pub name: Option<&'a str>,
}

impl Mirrored<'_> {
    /// Whether the client speaks a version that requires the headers.
    /// Versions are dates, so they order as strings.
    fn required(&self) -> bool {
        self.protocol_version
            .is_some_and(|v| v >= MIRRORED_HEADERS_SINCE)
    }

    /// Whether any mirrored header is present.
    pub fn any(&self) -> bool {
        self.method.is_some() || self.name.is_some()
    }

    /// Checks the headers against one parsed message.
    pub fn check(&self, message: &Value, envelope: &Envelope<'_>) -> Result<(), RpcError> {
        let Some(method) = envelope.method else {
            // Responses carry no method; a method header on one is a lie.
            return match self.method {
                Some(h) => Err(mismatch(
                    format!("Mcp-Method is {h:?} but the body is a response"),
                    envelope.id,
                )),
                None => Ok(()),
            };
        };
        match self.method {
            Some(h) if h != method => {
                return Err(mismatch(
                    format!("Mcp-Method is {h:?} but the body's method is {method:?}"),
                    envelope.id,
                ));
            }
            None if self.required() => {
                return Err(mismatch(
                    format!(
                        "MCP {} requires the Mcp-Method header",
                        MIRRORED_HEADERS_SINCE
                    ),
                    envelope.id,
                ));
            }
            _ => {}
        }
        let field = match method {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" => Some("uri"),
            _ => None,
        };
        let body_name = field.and_then(|f| message.get("params")?.get(f)?.as_str());
        match (self.name, field, body_name) {
            (Some(h), Some(f), Some(b)) if h != b => Err(mismatch(
                format!("Mcp-Name is {h:?} but params.{f} is {b:?}"),
                envelope.id,
            )),
            (Some(h), Some(f), None) => Err(mismatch(
                format!("Mcp-Name is {h:?} but params.{f} is missing or not a string"),
                envelope.id,
            )),
            (Some(h), None, _) => Err(mismatch(
                format!("Mcp-Name {h:?} was sent with {method:?}, which has no name"),
                envelope.id,
            )),
            (None, Some(_), _) if self.required() => Err(mismatch(
                format!("MCP {MIRRORED_HEADERS_SINCE} requires the Mcp-Name header for {method}"),
                envelope.id,
            )),
            _ => Ok(()),
        }
    }
}

fn mismatch(message: String, id: Option<&Value>) -> RpcError {
    RpcError::new(HEADER_MISMATCH, message, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::inspect;
    use serde_json::json;

    fn check(headers: Mirrored<'_>, msg: Value) -> Result<(), String> {
        let env = inspect(&msg).unwrap();
        headers.check(&msg, &env).map_err(|e| e.message)
    }

    fn call(name: &str) -> Value {
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name}})
    }

    #[test]
    fn matching_headers_pass_and_old_versions_need_none() {
        let h = Mirrored {
            protocol_version: Some("2026-07-28"),
            method: Some("tools/call"),
            name: Some("vm_clone"),
        };
        assert_eq!(check(h, call("vm_clone")), Ok(()));
        assert_eq!(
            check(
                Mirrored {
                    protocol_version: Some("2025-06-18"),
                    ..Default::default()
                },
                call("x")
            ),
            Ok(())
        );
        assert_eq!(check(Mirrored::default(), call("x")), Ok(()));
        let read =
            json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}});
        let h = Mirrored {
            protocol_version: Some("2026-07-28"),
            method: Some("resources/read"),
            name: Some("file:///a"),
        };
        assert_eq!(check(h, read), Ok(()));
    }

    #[test]
    fn every_mismatch_is_refused() {
        let v = Some("2026-07-28");
        let cases = [
            (
                Mirrored {
                    protocol_version: v,
                    method: Some("tools/list"),
                    name: Some("pods_list"),
                },
                call("pods_delete"),
                "Mcp-Method is \"tools/list\"",
            ),
            (
                Mirrored {
                    protocol_version: v,
                    method: Some("tools/call"),
                    name: Some("pods_list"),
                },
                call("pods_delete"),
                "Mcp-Name is \"pods_list\" but params.name is \"pods_delete\"",
            ),
            (
                Mirrored {
                    protocol_version: None,
                    method: None,
                    name: Some("pods_list"),
                },
                call("pods_delete"),
                "Mcp-Name",
            ),
            (
                Mirrored {
                    protocol_version: v,
                    method: None,
                    name: Some("x"),
                },
                call("x"),
                "requires the Mcp-Method header",
            ),
            (
                Mirrored {
                    protocol_version: v,
                    method: Some("tools/call"),
                    name: None,
                },
                call("x"),
                "requires the Mcp-Name header",
            ),
            (
                Mirrored {
                    protocol_version: v,
                    method: Some("tools/call"),
                    name: Some("x"),
                },
                json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}),
                "missing or not a string",
            ),
            (
                Mirrored {
                    protocol_version: v,
                    method: Some("tools/list"),
                    name: Some("x"),
                },
                json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
                "which has no name",
            ),
            (
                Mirrored {
                    protocol_version: v,
                    method: Some("tools/call"),
                    name: None,
                },
                json!({"jsonrpc":"2.0","id":1,"result":{}}),
                "body is a response",
            ),
        ];
        for (h, msg, want) in cases {
            let got = check(h, msg.clone()).expect_err(&msg.to_string());
            assert!(got.contains(want), "{got:?} should contain {want:?}");
        }
    }
}
