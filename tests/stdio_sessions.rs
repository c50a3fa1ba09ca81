//! The session model of `tollgate proxy --upstream-command`: one stdio
//! server process per MCP session, at most `--max-stdio-sessions` of them,
//! ended by DELETE or after `--stdio-idle-timeout` without a request; a
//! server that dies takes its session with it. The server is the SDK's
//! stdio server of tests/peers/stdio-server.mjs; requests are raw HTTP.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: sessions}
spec:
  defaultAction: Allow
  rules:
    - name: no-pid
      tools: [pid]
      action: Deny
"#;

const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");

fn start(extra: &[&str]) -> (TollgateProc, tempfile::TempDir) {
    let (dir, policy) = policy_file(POLICY);
    let server = peers().join("stdio-server.mjs");
    let mut args = vec!["--policy", policy.to_str().unwrap(), "--upstream-command"];
    args.extend_from_slice(extra);
    args.extend([
        "--",
        "node",
        server.to_str().unwrap(),
        "--max-lifetime",
        "120",
    ]);
    (tollgate(&args), dir)
}

/// Initializes a session; its id, or the refusal.
async fn initialize(addr: SocketAddr) -> Result<String, Raw> {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "sessions-test", "version": "1"}}});
    let resp = post_json(addr, &[ACCEPT], &init).await;
    match resp.header("mcp-session-id") {
        Some(id) if resp.status == 200 => Ok(id.to_owned()),
        _ => Err(resp),
    }
}

/// The session's answer to one `tools/call`.
async fn call_in(addr: SocketAddr, session: &str, id: u64, tool: &str, args: Value) -> Raw {
    post_json(
        addr,
        &[ACCEPT, ("mcp-session-id", session)],
        &call(id, tool, args),
    )
    .await
}

async fn servers(admin: SocketAddr) -> Option<f64> {
    sample(&metrics(admin).await, &["tollgate_stdio_servers "])
}

#[tokio::test]
async fn each_session_has_its_own_server_up_to_the_cap() {
    let (tg, _dir) = start(&["--max-stdio-sessions", "2"]);
    // The proxy's own discovery session comes and goes first.
    assert!(
        eventually(Duration::from_secs(20), async || servers(tg.admin).await
            == Some(0.0))
        .await
    );

    let a = initialize(tg.listen).await.expect("first session");
    let b = initialize(tg.listen).await.expect("second session");
    assert_ne!(a, b);
    // Each session's calls reach a server and come back on its stream.
    let ea = Answer::of(&call_in(tg.listen, &a, 2, "echo", json!({"text": "a"})).await);
    let eb = Answer::of(&call_in(tg.listen, &b, 2, "echo", json!({"text": "b"})).await);
    assert_eq!((ea.text(), eb.text()), ("a", "b"));
    assert_eq!(servers(tg.admin).await, Some(2.0));

    // A third is refused while two run, saying what to do.
    let Err(refused) = initialize(tg.listen).await else {
        panic!("a third session over the cap of two was started");
    };
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.header("retry-after").is_some());
    assert!(
        refused.text().contains("--max-stdio-sessions"),
        "{}",
        refused.text()
    );

    // DELETE ends a session and its process; its id is then unknown.
    let del = raw(
        tg.listen,
        format!(
            "DELETE /mcp HTTP/1.1\r\nHost: t\r\nmcp-session-id: {a}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(del.status, 200, "{}", del.text());
    assert!(
        eventually(Duration::from_secs(10), async || servers(tg.admin).await
            == Some(1.0))
        .await
    );
    let gone = call_in(tg.listen, &a, 3, "echo", json!({"text": "a"})).await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    initialize(tg.listen)
        .await
        .expect("room again after the DELETE");

    // The gate decides as for any upstream.
    let denied = Answer::of(&call_in(tg.listen, &b, 4, "pid", json!({})).await);
    assert_eq!(denied.reason(), Some("rule"), "{denied:?}");
}

#[tokio::test]
async fn idle_sessions_end_and_a_dying_server_ends_its_session() {
    let (tg, _dir) = start(&["--stdio-idle-timeout", "1s"]);
    assert!(
        eventually(Duration::from_secs(20), async || servers(tg.admin).await
            == Some(0.0))
        .await
    );

    let idle = initialize(tg.listen).await.expect("session");
    assert_eq!(servers(tg.admin).await, Some(1.0));
    assert!(
        eventually(Duration::from_secs(10), async || servers(tg.admin).await
            == Some(0.0))
        .await
    );
    let gone = call_in(tg.listen, &idle, 2, "echo", json!({"text": "x"})).await;
    assert_eq!(gone.status, 404, "{}", gone.text());

    // A server that exits mid-call: the call is answered with an error.
    let s = initialize(tg.listen).await.expect("session");
    let died = call_in(tg.listen, &s, 3, "exit", json!({"code": 5})).await;
    let text = died.text();
    assert!(
        text.contains("-31003") && text.contains("exited with code 5"),
        "{text}"
    );
    assert!(
        eventually(Duration::from_secs(10), async || servers(tg.admin).await
            == Some(0.0))
        .await
    );
}

/// A server slower to answer `initialize` than the proxy's own discovery
/// waits (5 s): the discovery gives up, and the server it started must not
/// live on until the idle timeout (here 10 minutes) — nobody else knows its
/// session.
#[tokio::test]
async fn a_session_whose_client_left_before_its_initialize_answer_ends() {
    let (dir, policy) = policy_file(POLICY);
    let server = peers().join("stdio-server.mjs");
    let slow = format!(
        "sleep 7; exec node {} --max-lifetime 120",
        server.to_str().unwrap()
    );
    let tg = tollgate(&[
        "--policy",
        policy.to_str().unwrap(),
        "--stdio-idle-timeout",
        "600s",
        "--upstream-command",
        "--",
        "sh",
        "-c",
        &slow,
    ]);
    let started = eventually(Duration::from_secs(20), async || {
        servers(tg.admin).await == Some(1.0)
    })
    .await;
    assert!(started, "{}", metrics(tg.admin).await);
    let ended = eventually(Duration::from_secs(30), async || {
        servers(tg.admin).await == Some(0.0)
    })
    .await;
    assert!(ended, "{}", metrics(tg.admin).await);
    drop(dir);
}
