//! The proxy on the wire, against a recording test upstream: what is
//! forwarded, what is refused, what the client gets back.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::upstream::{Framing, Upstream};
use support::*;

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: test}
spec:
  defaultAction: Deny
  hideDenied: true
  rules:
    - name: reads
      tools: [pods_list]
      action: Allow
    - name: clone
      tools: [vm_clone]
      action: Allow
      arguments:
        - {pointer: /namespace, operator: In, values: [vms, dev]}
      rateLimits:
        - {requests: 3, window: 1h}
    - name: no-delete
      tools: [pods_delete]
      action: Deny
      message: Deleting pods is not allowed here.
      denyWith: JsonRpcError
"#;

async fn setup(framing: Framing) -> (Upstream, tollgate_sidecar::Running, tempfile::TempDir) {
    let up = Upstream::start(framing).await;
    let (dir, path) = policy_file(POLICY);
    let proxy = start_proxy(vec![path], &up.url()).await;
    (up, proxy, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_calls_are_forwarded_as_the_proxys_own_serialisation() {
    let (up, proxy, _dir) = setup(Framing::Json).await;
    // Extra whitespace and key order as a client might send them.
    let body = br#"  { "params" : { "arguments" : {"namespace":"vms"} , "name" : "vm_clone" }, "id" : 7, "method":"tools/call", "jsonrpc":"2.0" }  "#;
    let resp = post(proxy.listen, &[], body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["result"]["content"][0]["text"],
        "called \"vm_clone\""
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        std::str::from_utf8(&seen[0].body).unwrap(),
        r#"{"params":{"arguments":{"namespace":"vms"},"name":"vm_clone"},"id":7,"method":"tools/call","jsonrpc":"2.0"}"#
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_never_reach_the_upstream_and_say_why() {
    let (up, proxy, _dir) = setup(Framing::Json).await;

    // Default deny: a tool result the model can read.
    let resp = post_json(proxy.listen, &[], &call(1, "secret_tool", json!({}))).await;
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(
        v["result"]["content"][0]["text"],
        "Denied by tollgate policy \"test\": no rule allows tool \"secret_tool\" and the default is Deny."
    );
    assert_eq!(
        v["result"]["_meta"]["dev.tollgate/denial"]["reason"],
        "default"
    );

    // Argument condition.
    let v = post_json(
        proxy.listen,
        &[],
        &call(2, "vm_clone", json!({"namespace": "kube-system"})),
    )
    .await
    .json();
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("rule \"clone\": argument /namespace must be one of [\"vms\", \"dev\"] (got \"kube-system\")"), "{text}");

    // A rule that asks for JSON-RPC errors.
    let v = post_json(proxy.listen, &[], &call(3, "pods_delete", json!({})))
        .await
        .json();
    assert_eq!(v["error"]["code"], -31001);
    assert_eq!(v["error"]["data"]["rule"], "no-delete");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("Deleting pods is not allowed here.")
    );

    // Rate limit: 3 per hour, then a retry hint.
    for _ in 0..3 {
        let answer = up
            .through(proxy.listen, &[], "vm_clone", json!({"namespace": "vms"}))
            .await;
        assert!(answer.is_allowed(), "{answer:?}");
    }
    let v = post_json(
        proxy.listen,
        &[],
        &call(13, "vm_clone", json!({"namespace": "vms"})),
    )
    .await
    .json();
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("rate limit of 3 per 1h reached; retry after 1h"),
        "{text}"
    );
    assert_eq!(
        v["result"]["_meta"]["dev.tollgate/denial"]["retryAfterSeconds"],
        3600
    );

    assert_eq!(up.calls(), vec!["vm_clone"; 3]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_is_filtered_in_json_and_sse_and_keeps_unknown_fields() {
    for framing in [Framing::Json, Framing::Sse] {
        let (_up, proxy, _dir) = setup(framing).await;
        let list = json!({"jsonrpc": "2.0", "id": "l1", "method": "tools/list"});
        let resp = post_json(proxy.listen, &[], &list).await;
        assert_eq!(resp.status, 200);
        let v = match framing {
            Framing::Json => resp.json(),
            Framing::Sse => {
                let text = resp.text();
                assert!(
                    text.starts_with(": stream start\n\n"),
                    "other events pass untouched: {text:?}"
                );
                let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                serde_json::from_str(data).unwrap()
            }
        };
        let mut expected = support::upstream::tools();
        // pods_delete: unconditional Deny; secret_tool: no Allow rule.
        expected["tools"]
            .as_array_mut()
            .unwrap()
            .retain(|t| t["name"] == "vm_clone" || t["name"] == "pods_list");
        assert_eq!(v["result"], expected, "{framing:?}");
        let m = metrics(proxy.admin).await;
        assert_eq!(sample(&m, &["tollgate_tools_hidden_total"]), Some(2.0));
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_element_of_a_batch_is_decided() {
    for framing in [Framing::Json, Framing::Sse] {
        let (up, proxy, _dir) = setup(framing).await;
        let batch = json!([
            call(1, "pods_list", json!({})),
            call(2, "pods_delete", json!({})),
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
            call(3, "secret_tool", json!({})),
            {"jsonrpc": "2.0", "id": 4, "method": "tools/list"},
        ]);
        let resp = post_json(proxy.listen, &[], &batch).await;
        assert_eq!(resp.status, 200);
        // Only the allowed call, the notification and the list went up.
        let methods: Vec<String> = up
            .messages()
            .iter()
            .map(|m| m["method"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            methods,
            ["tools/call", "notifications/progress", "tools/list"],
            "{framing:?}"
        );
        assert_eq!(up.calls(), ["pods_list"]);
        let responses: Vec<Value> = match framing {
            Framing::Json => resp.json().as_array().unwrap().clone(),
            Framing::Sse => resp
                .text()
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect(),
        };
        let by_id = |id: i64| {
            responses
                .iter()
                .find(|r| r["id"] == id)
                .unwrap_or_else(|| panic!("no response {id}: {responses:?}"))
        };
        assert_eq!(
            by_id(1)["result"]["content"][0]["text"],
            "called \"pods_list\""
        );
        assert_eq!(by_id(2)["error"]["code"], -31001);
        assert_eq!(by_id(3)["result"]["isError"], true);
        assert_eq!(by_id(4)["result"]["tools"].as_array().unwrap().len(), 2);
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_denied_entirely_is_answered_without_the_upstream() {
    let (up, proxy, _dir) = setup(Framing::Json).await;
    let batch = json!([
        call(1, "pods_delete", json!({})),
        call(2, "secret_tool", json!({}))
    ]);
    let v = post_json(proxy.listen, &[], &batch).await.json();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(up.seen().is_empty());
    proxy.shutdown().await;
}

/// Every input a server could read differently from the proxy, or that is
/// not a valid message at all, is refused and never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_and_malformed_messages_are_refused_and_never_forwarded() {
    let (up, proxy, _dir) = setup(Framing::Json).await;
    // What, extra headers, body, expected HTTP status, expected JSON-RPC code.
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Vec<u8>,
        u16,
        i64,
    );
    let cases: Vec<Case> = vec![
        ("invalid JSON", vec![], b"{\"jsonrpc\":".to_vec(), 400, -32700),
        (
            "duplicate method",
            vec![],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"pods_delete"}}"#.to_vec(),
            400,
            -32700,
        ),
        (
            "duplicate tool name",
            vec![],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pods_list","name":"pods_delete"}}"#.to_vec(),
            400,
            -32700,
        ),
        (
            "duplicate argument",
            vec![],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"vm_clone","arguments":{"namespace":"vms","namespace":"kube-system"}}}"#.to_vec(),
            400,
            -32700,
        ),
        (
            "trailing bytes",
            vec![],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pods_list"}}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pods_delete"}}"#.to_vec(),
            400,
            -32700,
        ),
        (
            "byte-order mark",
            vec![],
            [b"\xEF\xBB\xBF".as_slice(), br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#].concat(),
            400,
            -32700,
        ),
        (
            "invalid UTF-8",
            vec![],
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"pods_\xff\"}}".to_vec(),
            400,
            -32700,
        ),
        (
            "lone surrogate",
            vec![],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pods_list\ud800"}}"#.to_vec(),
            400,
            -32700,
        ),
        (
            "tool name not a string",
            vec![],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["pods_list"]}}"#.to_vec(),
            400,
            -32602,
        ),
        (
            "arguments not an object",
            vec![],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pods_list","arguments":"x"}}"#.to_vec(),
            400,
            -32602,
        ),
        (
            "tools/call without id",
            vec![],
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"pods_list"}}"#.to_vec(),
            400,
            -32600,
        ),
        ("not JSON-RPC 2.0", vec![], br#"{"id":1,"method":"tools/list"}"#.to_vec(), 400, -32600),
        ("empty batch", vec![], b"[]".to_vec(), 400, -32600),
        ("deep nesting", vec![], format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(), 400, -32700),
        (
            "UTF-16 charset",
            vec![("Content-Type", "application/json; charset=utf-16")],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec(),
            415,
            -32700,
        ),
        (
            "not JSON",
            vec![("Content-Type", "text/plain")],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec(),
            415,
            -32700,
        ),
        (
            "compressed",
            vec![("Content-Encoding", "gzip")],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec(),
            415,
            -32700,
        ),
        (
            "Mcp-Name disagrees with the body",
            vec![("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call"), ("Mcp-Name", "pods_list")],
            call(1, "pods_delete", json!({})).to_string().into_bytes(),
            400,
            -32020,
        ),
        (
            "Mcp-Method disagrees with the body",
            vec![("Mcp-Method", "tools/list")],
            call(1, "pods_list", json!({})).to_string().into_bytes(),
            400,
            -32020,
        ),
        (
            "2026-07-28 without Mcp-Name",
            vec![("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call")],
            call(1, "pods_list", json!({})).to_string().into_bytes(),
            400,
            -32020,
        ),
        (
            "Mcp-Name twice",
            vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "pods_list"), ("Mcp-Name", "pods_delete")],
            call(1, "pods_list", json!({})).to_string().into_bytes(),
            400,
            -32020,
        ),
        (
            "mirrored headers on a batch",
            vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "pods_list")],
            json!([call(1, "pods_list", json!({}))]).to_string().into_bytes(),
            400,
            -32020,
        ),
    ];
    for (what, headers, body, status, code) in cases {
        let resp = post(proxy.listen, &headers, &body).await;
        assert_eq!(resp.status, status, "{what}: {}", resp.text());
        let v = resp.json();
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    assert!(
        up.seen().is_empty(),
        "nothing may reach the upstream: {:?}",
        up.seen()
    );
    let m = metrics(proxy.admin).await;
    let malformed = sample(
        &m,
        &[
            "tollgate_tool_calls_total{",
            "reason=\"malformed\"",
            "tool=\"(unparsed)\"",
        ],
    )
    .unwrap();
    assert!(malformed >= 20.0, "{m}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_mirrored_headers_pass() {
    let (up, proxy, _dir) = setup(Framing::Json).await;
    let headers = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "pods_list"),
    ];
    let resp = post_json(proxy.listen, &headers, &call(1, "pods_list", json!({}))).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.calls(), ["pods_list"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_slow_and_unknown_requests_get_clear_errors() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(POLICY);
    let proxy = start_proxy_with(vec![path], &up.url(), |c| c.max_body_bytes = 1024).await;

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"pods_list","arguments":{{"x":"{}"}}}}}}"#,
        "a".repeat(4096)
    );
    let resp = post(proxy.listen, &[], big.as_bytes()).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 1024 bytes")
    );

    // A body that never finishes: 408 after the body timeout, not a hang.
    let started = std::time::Instant::now();
    let resp = raw(
        proxy.listen,
        b"POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
    )
    .await;
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert!(started.elapsed() < Duration::from_secs(15));

    // Headers that never finish: the connection is closed.
    let resp = raw(proxy.listen, b"POST /mcp HTTP/1.1\r\nHost: t\r\n").await;
    assert!(resp.status == 0 || resp.status == 408, "{resp:?}");

    // A connection that sends nothing at all is closed too (idle timeout).
    let resp = raw(proxy.listen, b"").await;
    assert_eq!(resp.status, 0, "{resp:?}");

    let resp = raw(
        proxy.listen,
        b"PUT /mcp HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    assert_eq!(resp.status, 405);
    assert!(up.seen().is_empty());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_a_json_rpc_error_with_the_request_id() {
    // Nothing listens on this port (bound, then dropped).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, path) = policy_file(POLICY);
    let proxy = start_proxy(vec![path], &format!("http://127.0.0.1:{port}")).await;
    let resp = post_json(proxy.listen, &[], &call(42, "pods_list", json!({}))).await;
    assert_eq!(resp.status, 502);
    let v = resp.json();
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (json!(42), json!(-31003))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not reach the MCP server")
    );
    let m = metrics(proxy.admin).await;
    assert_eq!(
        sample(&m, &["tollgate_upstream_errors_total{kind=\"connect\"}"]),
        Some(1.0)
    );
    // Denials still work without an upstream.
    let denied = ask(proxy.listen, &[], 43, "secret_tool", json!({})).await;
    assert_eq!(denied.reason(), Some("default"), "{denied:?}");
    proxy.shutdown().await;
}

/// A limit of N admits exactly N of M > N calls arriving at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_through_the_proxy_admit_exactly_the_limit() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: cap}
spec:
  defaultAction: Deny
  rules:
    - {name: clone, tools: [vm_clone], action: Allow, rateLimits: [{requests: 10, window: 1m}]}
"#,
    );
    let proxy = start_proxy(vec![path], &up.url()).await;
    let listen = proxy.listen;
    let tasks: Vec<_> = (0..60u64)
        .map(|_| {
            let up = up.clone();
            tokio::spawn(async move { up.through(listen, &[], "vm_clone", json!({})).await })
        })
        .collect();
    let (mut allowed, mut denied) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Answer::Allowed(_) => allowed += 1,
            d @ Answer::Denied(_) => {
                assert_eq!(d.reason(), Some("rate_limit"), "{d:?}");
                denied += 1;
            }
            other => panic!("neither allowed nor denied: {other:?}"),
        }
    }
    assert_eq!((allowed, denied), (10, 50));
    assert_eq!(up.calls().len(), 10);
    proxy.shutdown().await;
}

/// A session id counts as a session (with a budget of its own, in
/// `tollgate_sessions`) only once the upstream issued it, and only until it
/// is deleted; ids a client makes up share one budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_count_only_when_the_upstream_issued_them() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: per-session}
spec:
  defaultAction: Allow
  rules:
    - {name: clone, tools: [vm_clone], action: Allow, rateLimits: [{requests: 2, window: 1h, key: {session: true}}]}
"#,
    );
    let proxy = start_proxy(vec![path], &up.url()).await;
    let sessions = async || sample(&metrics(proxy.admin).await, &["tollgate_sessions "]);
    let clone = async |session: &str| {
        up.through(
            proxy.listen,
            &[("Mcp-Session-Id", session)],
            "vm_clone",
            json!({}),
        )
        .await
    };
    assert_eq!(sessions().await, Some(0.0));
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let resp = post_json(proxy.listen, &[], &init).await;
    assert_eq!(resp.header("mcp-session-id"), Some("session-from-upstream"));
    assert_eq!(sessions().await, Some(1.0), "the upstream issued one");
    let real = "session-from-upstream";
    assert!(clone(real).await.is_allowed(), "1 of the session's 2");

    // Invented ids get no session and no budget of their own: they share
    // one (of 2), apart from the real session's.
    assert!(clone("made-up-1").await.is_allowed());
    assert!(clone("made-up-2").await.is_allowed());
    let third = clone("made-up-3").await;
    assert_eq!(third.reason(), Some("rate_limit"), "{third:?}");
    assert_eq!(sessions().await, Some(1.0), "made-up ids are not sessions");

    // DELETE ends the session upstream and in the proxy.
    let resp = raw(
        proxy.listen,
        b"DELETE /mcp HTTP/1.1\r\nHost: t\r\nConnection: close\r\nMcp-Session-Id: session-from-upstream\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 204);
    assert!(
        up.seen()
            .iter()
            .any(|s| s.method == "DELETE" && s.headers["mcp-session-id"] == real)
    );
    assert_eq!(sessions().await, Some(0.0));
    // The deleted id is now as good as made up: its own budget had one
    // call left, the shared one has none.
    let after = clone(real).await;
    assert_eq!(after.reason(), Some("rate_limit"), "{after:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_decisions_with_bounded_labels() {
    let (_up, proxy, _dir) = setup(Framing::Json).await;
    // Before the upstream listed anything, an unknown name is `(unlisted)`.
    post_json(proxy.listen, &[], &call(1, "random_name_1", json!({}))).await;
    post_json(proxy.listen, &[], &call(2, "random_name_2", json!({}))).await;
    post_json(
        proxy.listen,
        &[],
        &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await;
    // Listed by the upstream (and hidden by policy): its own label.
    post_json(proxy.listen, &[], &call(4, "secret_tool", json!({}))).await;
    post_json(proxy.listen, &[], &call(5, "pods_list", json!({}))).await;
    let m = metrics(proxy.admin).await;
    assert_eq!(
        sample(
            &m,
            &[
                "tollgate_tool_calls_total{",
                "tool=\"(unlisted)\"",
                "decision=\"denied\"",
                "reason=\"default\"",
                "policy=\"test\"",
                "rule=\"(default)\""
            ]
        ),
        Some(2.0),
        "{m}"
    );
    assert!(
        !m.contains("random_name"),
        "made-up names must not become labels"
    );
    assert_eq!(
        sample(
            &m,
            &[
                "tollgate_tool_calls_total{",
                "tool=\"secret_tool\"",
                "decision=\"denied\""
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            &[
                "tollgate_tool_calls_total{",
                "tool=\"pods_list\"",
                "decision=\"allowed\"",
                "rule=\"reads\""
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, &["tollgate_decision_duration_seconds_count"]),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &m,
            &["tollgate_upstream_request_duration_seconds_count{method=\"tools/call\"}"]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&m, &["tollgate_policy_info{"]), Some(1.0));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer() {
    let (_up, proxy, _dir) = setup(Framing::Json).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(
        raw(proxy.admin, get("/healthz").as_bytes()).await.status,
        200
    );
    let ready = raw(proxy.admin, get("/readyz").as_bytes()).await;
    assert_eq!(ready.status, 200);
    assert!(ready.text().starts_with("ok: rules "));
    let m = raw(proxy.admin, get("/metrics").as_bytes()).await;
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(m.text().contains("# TYPE tollgate_policy_rules gauge"));
    proxy.shutdown().await;
}
