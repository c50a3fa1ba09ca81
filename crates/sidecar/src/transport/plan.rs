//! What to do with one client message, whatever carried it (an HTTP POST,
//! an element of a batch, a line on stdin): check its envelope, hand a
//! `tools/call` to the [gate](crate::gate), and say whether to forward it
//! (as the proxy's own re-serialisation of what was judged) or answer it.
//!
//! Every transport plans through here, so the HTTP proxy and `tollgate
//! wrap` cannot drift apart in what they refuse or let through.

use serde_json::Value;

use tollgate_mcp::jsonrpc::{self, Envelope, INVALID_REQUEST, Kind, RpcError};
use tollgate_mcp::tools;

use crate::gate::{Caller, Gate, denial_response};
use crate::metrics::{Metrics, Rejection};

/// The plan for one message.
#[derive(Debug)]
pub(crate) enum Step {
    /// Forward this message (a `tools/call` carries the arguments as judged).
    Forward(Value),
    /// Forward this `tools/list` request; filter the response with this id.
    ForwardList(Value, Value),
    /// Forward this `initialize` request (its response issues a session).
    ForwardInitialize(Value),
    /// Answer the client with this response instead.
    Answer {
        /// The JSON-RPC response.
        response: Value,
        /// Whether it refuses the message itself (malformed) rather than
        /// carrying a policy denial.
        refused: bool,
    },
}

/// Plans one message. `check` runs on a valid envelope before anything
/// else (the HTTP transport compares the `Mcp-Method`/`Mcp-Name` headers);
/// its error refuses the whole request and is returned as is.
pub(crate) async fn plan_message(
    gate: &Gate,
    metrics: &Metrics,
    message: Value,
    caller: Caller<'_>,
    check: impl FnOnce(&Value, &Envelope<'_>) -> Result<(), RpcError>,
) -> Result<Step, RpcError> {
    let envelope = match jsonrpc::inspect(&message) {
        Ok(e) => e,
        Err(e) => {
            metrics.reject(Rejection::InvalidRequest);
            gate.malformed(&e.message, &e.id);
            return Ok(Step::Answer {
                response: e.to_response(),
                refused: true,
            });
        }
    };
    if let Err(e) = check(&message, &envelope) {
        metrics.reject(Rejection::HeaderMismatch);
        gate.malformed(&e.message, &e.id);
        return Err(e);
    }
    let id = envelope.id.cloned().unwrap_or(Value::Null);
    Ok(match (envelope.kind, envelope.method) {
        (Kind::Request, Some(tools::CALL)) => {
            let params = match tools::call_params(&message, envelope.id) {
                Ok(p) => p,
                Err(e) => {
                    gate.malformed(&e.message, &id);
                    return Ok(Step::Answer {
                        response: e.to_response(),
                        refused: true,
                    });
                }
            };
            let decided = gate.decide(&params, caller, &id).await;
            if let Some(span) = caller.span {
                span.decided(&decided.decision, params.name, &id);
            }
            if decided.decision.forwards() {
                Step::Forward(match decided.forward {
                    Some(judged) => with_arguments(message, judged),
                    None => message,
                })
            } else {
                Step::Answer {
                    response: denial_response(&id, &decided.decision, decided.approval.as_ref()),
                    refused: false,
                }
            }
        }
        (Kind::Notification, Some(tools::CALL)) => {
            // A call without an id cannot be answered, and must not run
            // unanswered either.
            let e = RpcError::new(
                INVALID_REQUEST,
                "tools/call must be a request with an \"id\"",
                None,
            );
            gate.malformed(&e.message, &Value::Null);
            Step::Answer {
                response: e.to_response(),
                refused: true,
            }
        }
        (Kind::Request, Some(tools::LIST)) => Step::ForwardList(message, id),
        (Kind::Request, Some("initialize")) => Step::ForwardInitialize(message),
        _ => Step::Forward(message),
    })
}

/// `message` (a `tools/call`) with `arguments` in place of its own: the
/// manifests inside them exactly as they were judged.
fn with_arguments(mut message: Value, arguments: Value) -> Value {
    if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) {
        params.insert("arguments".to_owned(), arguments);
    }
    message
}
