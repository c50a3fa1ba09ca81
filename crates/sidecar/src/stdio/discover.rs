//! The tools of a stdio MCP server, asked first-hand: `tollgate scan --
//! COMMAND` starts the server, initializes a session, reads every page of
//! `tools/list` and stops it — the same questions the HTTP discovery asks,
//! over the server's stdin and stdout.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use tollgate_mcp::tools;

use crate::stdio::child::{self, Child, FromChild};
use crate::stdio::discover_error::StdioDiscoveryError;
use crate::transport::discover::{ListToolsError, PROTOCOL_VERSION, ToolPages};

/// How long the server gets to exit once asked.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The longest line read from the server.
const MAX_LINE: usize = 32 << 20;

/// The tools of the stdio MCP server `command`, every page, within `timeout`.
pub async fn list_tools_of_command(
    command: Vec<OsString>,
    timeout: Duration,
) -> Result<Vec<Value>, ListToolsError> {
    let (child, mut from) = child::spawn(&child::Command {
        argv: command,
        max_line_bytes: MAX_LINE,
    })?;
    let listed = tokio::time::timeout(timeout, session(&child, &mut from)).await;
    child.stop(STOP_GRACE).await;
    match listed {
        Ok(r) => Ok(r?),
        Err(_) => Err(StdioDiscoveryError::Timeout(timeout).into()),
    }
}

async fn session(
    child: &Child,
    from: &mut mpsc::Receiver<FromChild>,
) -> Result<Vec<Value>, StdioDiscoveryError> {
    let init = json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
    });
    ask(child, from, 0, "initialize", Some(init)).await?;
    send(
        child,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await?;
    let mut pages = ToolPages::default();
    while let Some((page, params)) = pages.next() {
        pages.take(&ask(child, from, page as u64, tools::LIST, params).await?);
    }
    Ok(pages.tools())
}

async fn send(child: &Child, message: &Value) -> Result<(), StdioDiscoveryError> {
    child
        .send(message)
        .await
        .map_err(|_| StdioDiscoveryError::StoppedReading)
}

/// Sends request `id` and waits for its result; what else the server says
/// meanwhile (notifications, its own requests, log lines on stdout) is
/// passed over.
async fn ask(
    child: &Child,
    from: &mut mpsc::Receiver<FromChild>,
    id: u64,
    method: &str,
    params: Option<Value>,
) -> Result<Value, StdioDiscoveryError> {
    let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
    if let Some(p) = params {
        request["params"] = p;
    }
    send(child, &request).await?;
    loop {
        match from.recv().await {
            Some(FromChild::Message(m)) if m.get("id") == Some(&json!(id)) => {
                if let Some(result) = m.get("result") {
                    return Ok(result.clone());
                }
                return Err(StdioDiscoveryError::Refused {
                    method: method.to_owned(),
                    error: m["error"].clone(),
                });
            }
            Some(FromChild::Message(_) | FromChild::Unreadable(_) | FromChild::TooLong(_)) => {}
            Some(FromChild::Closed) | None => {
                return Err(StdioDiscoveryError::Closed {
                    method: method.to_owned(),
                    exit: child.exited(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<OsString> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    /// A server in shell: answers initialize, then two pages of tools/list,
    /// with a notification and a log line in between.
    const PAGED: &str = r#"
read -r init
echo 'not json, a log line'
echo '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"sh","version":"1"}}}'
read -r initialized
read -r list1
echo '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}'
echo '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","inputSchema":{"type":"object"}}],"nextCursor":"p2"}}'
read -r list2
case "$list2" in *'"cursor":"p2"'*) ;; *) exit 3 ;; esac
echo '{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"b","inputSchema":{"type":"object"}}]}}'
read -r _
"#;

    #[tokio::test]
    async fn every_page_of_a_stdio_servers_tools_is_read() {
        let tools = list_tools_of_command(sh(PAGED), Duration::from_secs(10))
            .await
            .unwrap();
        let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_server_that_exits_is_an_error_naming_how_it_ended() {
        let err = list_tools_of_command(sh("read -r _; exit 7"), Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("closed its output before answering initialize"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_is_stopped() {
        let err = list_tools_of_command(sh("sleep 30"), Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not list its tools within"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_says_which() {
        let err = list_tools_of_command(
            vec!["/nonexistent/mcp-server".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/mcp-server"), "{err}");
    }
}
