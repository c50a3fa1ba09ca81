//! Rules that select tools by what the MCP server says they do
//! (`toolSelector`), learned from the server's own `tools/list`: the shipped
//! baseline in front of kubernetes-mcp-server, given as the endpoint URL an
//! MCP client would use; and a server that changes its list and says so.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::upstream::{Framing, Upstream, tools};
use support::{Answer, KubeStack, agent, eventually, example_with, raw, start_proxy, tollgate};

/// `GET /readyz` on the admin listener.
async fn ready(admin: SocketAddr) -> bool {
    raw(
        admin,
        b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .status
        == 200
}

#[test]
fn the_baseline_allows_reads_caps_writes_and_denies_destructive_tools_of_kubernetes_mcp_server() {
    let stack = KubeStack::start();
    // One write a minute, so the second is refused however fast this runs.
    let (dir, policy) = example_with(
        "docs/examples/by-behaviour.yaml",
        "requests: 10",
        "requests: 1",
    );
    // The endpoint as MCP clients write it: no `/mcp/mcp`, and the
    // sidecar's own reading of the tool list finds the server.
    let upstream = format!("{}/mcp", stack.upstream());
    let tg = tollgate(&[
        "--policy",
        policy.to_str().unwrap(),
        "--upstream",
        &upstream,
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(
        runtime.block_on(eventually(Duration::from_secs(20), async || ready(
            tg.admin
        )
        .await)),
        "the proxy never read kubernetes-mcp-server's tools at {upstream}"
    );

    let pod = json!({"namespace": "default", "name": "p", "image": "busybox"});
    let destructive = ["vm_clone", "pods_delete", "resources_create_or_update"];
    let mut steps = vec![json!({"op": "list"})];
    for read in ["namespaces_list", "pods_list"] {
        steps.push(json!({"op": "call", "name": read, "arguments": {}}));
    }
    for tool in destructive.iter().chain(&["configuration_view"]) {
        steps.push(
            json!({"op": "call", "name": tool, "arguments": {"namespace": "vms", "name": "a"}}),
        );
    }
    steps.push(json!({"op": "call", "name": "pods_run", "arguments": pod}));
    steps.push(json!({"op": "call", "name": "pods_run", "arguments": pod}));
    let script = dir.path().join("script.json");
    std::fs::write(&script, Value::Array(steps).to_string()).unwrap();
    let url = format!("http://{}/mcp", tg.listen);
    let out = agent(&url, &["script", script.to_str().unwrap()]);

    let names: Vec<String> = serde_json::from_value(out[0].clone()).unwrap();
    for shown in ["pods_list", "pods_run", "vm_guest_info"] {
        assert!(
            names.iter().any(|n| n == shown),
            "{shown} hidden: {names:?}"
        );
    }
    for hidden in destructive
        .iter()
        .chain(&["pods_exec", "configuration_view"])
    {
        assert!(
            !names.iter().any(|n| n == hidden),
            "{hidden} shown: {names:?}"
        );
    }
    for (i, read) in ["namespaces_list", "pods_list"].iter().enumerate() {
        assert!(
            Answer::of_result(&out[1 + i]).is_allowed(),
            "{read}: {}",
            out[1 + i]
        );
    }
    for (i, (tool, rule)) in destructive
        .iter()
        .map(|t| (*t, "destructive"))
        .chain([("configuration_view", "no-credentials")])
        .enumerate()
    {
        let answer = Answer::of_result(&out[3 + i]);
        assert!(answer.is_denied(), "{tool}: {answer:?}");
        assert_eq!(answer.denial()["rule"], rule, "{tool}: {answer:?}");
    }
    let first = Answer::of_result(&out[7]);
    assert!(
        !first.is_denied(),
        "the first write is not tollgate's to refuse: {first:?}"
    );
    let second = Answer::of_result(&out[8]);
    assert_eq!(second.reason(), Some("rate_limit"), "{second:?}");
}

/// Holds a server-to-client stream open through the proxy and collects
/// what arrives on it.
struct Listener {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn open(proxy: SocketAddr) -> Listener {
        let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(b"GET /mcp HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Listener { text, _task: task }
    }

    fn received(&self, needle: &str) -> bool {
        self.text.lock().unwrap().contains(needle)
    }
}

fn with_tool(result: &Value, tool: Value) -> Value {
    let mut result = result.clone();
    let name = tool["name"].clone();
    let list = result["tools"].as_array_mut().unwrap();
    list.retain(|t| t["name"] != name);
    list.push(tool);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_list_is_read_again_when_the_server_announces_it() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, policy) = support::policy_file(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: by-behaviour}
spec:
  defaultAction: Deny
  rules:
    - {name: destructive, toolSelector: {destructive: true}, action: Deny}
    - {name: reads, toolSelector: {readOnly: true}, action: Allow}
"#,
    );
    let proxy = start_proxy(vec![policy], &up.url()).await;
    assert!(eventually(Duration::from_secs(10), async || ready(proxy.admin).await).await);
    assert!(up.allows(proxy.listen, "pods_list").await);
    // A tool the server does not list is unknown: the Deny rule holds.
    let unknown = up.through(proxy.listen, &[], "nodes_top", json!({})).await;
    assert_eq!(unknown.denial()["rule"], "destructive", "{unknown:?}");

    let client = Listener::open(proxy.listen).await;
    assert!(eventually(Duration::from_secs(10), async || up.open_streams() == 1).await);

    // The server adds a read and makes pods_list destructive.
    let changed = with_tool(
        &with_tool(
            &tools(),
            json!({"name": "nodes_top", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}}),
        ),
        json!({"name": "pods_list", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": false}}),
    );
    up.set_tools(changed);
    // Unannounced, the sidecar keeps what it read.
    assert!(up.denies(proxy.listen, "nodes_top").await);
    assert!(up.allows(proxy.listen, "pods_list").await);

    up.announce_list_changed().await;
    assert!(
        eventually(Duration::from_secs(10), async || client
            .received("notifications/tools/list_changed"))
        .await,
        "the announcement is relayed to the client"
    );
    assert!(
        eventually(Duration::from_secs(10), async || {
            matches!(
                up.through(proxy.listen, &[], "nodes_top", json!({})).await,
                Answer::Allowed(_)
            )
        })
        .await,
        "the new read-only tool is allowed once the list is read again"
    );
    let now_destructive = up.through(proxy.listen, &[], "pods_list", json!({})).await;
    assert_eq!(
        now_destructive.denial()["rule"],
        "destructive",
        "{now_destructive:?}"
    );
    proxy.shutdown().await;
}
