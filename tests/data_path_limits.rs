//! A data path nobody can starve: hostile clients — silent connections,
//! half-sent headers and bodies, event-stream hogs, bodies built to be
//! expensive — hammer the proxy while an honest MCP client (the official
//! TypeScript SDK, and a plain HTTP client) still gets its `tools/call`
//! through. The tests assert on what the client gets and on the proxy's
//! own account of itself (its metrics), never on how fast: deadlines here
//! only guard against hangs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::upstream::{Framing, Upstream};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: test}
spec:
  defaultAction: Deny
  rules:
    - name: reads
      tools: [pods_list]
      action: Allow
"#;

/// Anything longer is a hang.
const HANG: Duration = Duration::from_secs(60);

/// The value of a metric sample, 0 when absent.
async fn metric(admin: SocketAddr, name_and_labels: &[&str]) -> f64 {
    sample(&metrics(admin).await, name_and_labels).unwrap_or(0.0)
}

/// Waits (bounded) until `f` holds for the proxy's metrics.
async fn wait_metrics(admin: SocketAddr, what: &str, f: impl Fn(&str) -> bool) {
    let held = eventually(HANG, async || f(&metrics(admin).await)).await;
    assert!(held, "{what}; metrics:\n{}", metrics(admin).await);
}

/// How a hostile client misbehaves.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// Connects and sends nothing.
    Silent,
    /// Sends half a request head.
    HalfHeaders,
    /// Sends a request head and part of its body.
    HalfBody,
    /// Opens a server-to-client event stream and holds it.
    StreamHog,
    /// Sends 2 MB bodies of a million JSON values, one after another.
    ComplexBody,
}

impl Hostile {
    fn bytes(self) -> Vec<u8> {
        match self {
            Hostile::Silent => Vec::new(),
            Hostile::HalfHeaders => b"POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Ty".to_vec(),
            Hostile::HalfBody => b"POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\":".to_vec(),
            Hostile::StreamHog => b"GET /mcp HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n".to_vec(),
            Hostile::ComplexBody => {
                let body = format!("[{}0]", "0,".repeat(1_000_000));
                let mut req = format!(
                    "POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                req.extend_from_slice(body.as_bytes());
                req
            }
        }
    }
}

/// Runs `kind` against `addr` (at most `rounds` times, until aborted):
/// connect, misbehave, read whatever comes until the proxy closes the
/// connection, again.
async fn hammer(addr: SocketAddr, kind: Hostile, rounds: usize) {
    let bytes = kind.bytes();
    let mut sink = vec![0u8; 64 << 10];
    for _ in 0..rounds {
        let Ok(mut conn) = TcpStream::connect(addr).await else {
            continue;
        };
        if conn.write_all(&bytes).await.is_err() {
            continue;
        }
        let _ = tokio::time::timeout(HANG, async {
            while conn.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        })
        .await;
    }
}

/// One `tools/call` through the MCP TypeScript SDK (initialize, the GET
/// stream, the call); the call's result line, or the error it printed.
async fn sdk_call(url: String) -> Value {
    tokio::task::spawn_blocking(move || {
        agent(&url, &["--timeout", "15000", "call", "pods_list", "{}"])
            .pop()
            .unwrap_or(Value::Null)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_sdk_client_gets_its_call_through_while_hostile_clients_hammer() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(POLICY);
    let max_connections = 16;
    let proxy = start_proxy_with(vec![path], &up.url(), |c| {
        c.max_connections = max_connections;
        c.max_streams = 4;
        c.max_streams_per_caller = 2;
    })
    .await;
    let (addr, admin) = (proxy.listen, proxy.admin);

    let mut hostile = JoinSet::new();
    for kind in [
        Hostile::Silent,
        Hostile::HalfHeaders,
        Hostile::HalfBody,
        Hostile::StreamHog,
    ] {
        for _ in 0..6 {
            hostile.spawn(hammer(addr, kind, 100_000));
        }
    }
    hostile.spawn(hammer(addr, Hostile::ComplexBody, 100_000));

    // Every slot is taken, and the proxy is already reclaiming them.
    wait_metrics(admin, "the hostile clients fill every slot", |m| {
        sample(m, &["tollgate_connections "]).unwrap_or(0.0) >= max_connections as f64
            && sample(
                m,
                &["tollgate_connections_reclaimed_total{reason=\"unused\"}"],
            )
            .unwrap_or(0.0)
                > 0.0
    })
    .await;

    // The honest client gets through within a few attempts: its connection
    // may be reclaimed while idle between requests, like any keep-alive
    // connection closed by a server, and the SDK then reports an error.
    let url = format!("http://{addr}/mcp");
    // A plain HTTP client, one connection per call, gets through as well.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let resp = post_json(addr, &[], &call(1, "pods_list", json!({}))).await;
        statuses.push(resp.status);
        if resp.status == 200 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");

    let mut attempts = Vec::new();
    for _ in 0..5 {
        let result = sdk_call(url.clone()).await;
        let ok = result["error"].is_null() && result["isError"].is_null();
        attempts.push(result);
        if ok {
            break;
        }
    }
    let last = attempts.last().unwrap();
    assert!(
        last["error"].is_null() && last["content"][0]["text"] == "called \"pods_list\"",
        "no attempt got through: {attempts:?}"
    );
    assert!(up.calls().contains(&"pods_list".to_owned()));

    // What the proxy did to make room, by its own account.
    let m = metrics(admin).await;
    for reason in ["unused", "half_sent_body"] {
        let labels = format!("tollgate_connections_reclaimed_total{{reason=\"{reason}\"}}");
        assert!(
            sample(&m, &[&labels]).unwrap_or(0.0) > 0.0,
            "{labels}:\n{m}"
        );
    }
    assert!(
        sample(
            &m,
            &["tollgate_requests_rejected_total{reason=\"too_many_streams\"}"]
        )
        .unwrap_or(0.0)
            > 0.0,
        "{m}"
    );
    assert!(
        sample(&m, &["tollgate_table_entries{table=\"streams\"}"]).unwrap_or(0.0) <= 4.0,
        "{m}"
    );
    // The expensive bodies are refused, each after its first 100,000 values.
    wait_metrics(admin, "complex bodies are refused", |m| {
        sample(
            m,
            &["tollgate_requests_rejected_total{reason=\"too_complex\"}"],
        )
        .unwrap_or(0.0)
            > 0.0
    })
    .await;

    hostile.shutdown().await;
    // With the hostile clients gone, every slot comes back.
    wait_metrics(admin, "every connection closes", |m| {
        sample(m, &["tollgate_connections "]) == Some(0.0)
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_proxy_reclaims_a_silent_connection_for_a_new_client() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(POLICY);
    // Timeouts far away: only reclaiming can free a slot.
    let proxy = start_proxy_with(vec![path], &up.url(), |c| {
        c.max_connections = 4;
        c.header_read_timeout = HANG * 2;
        c.body_read_timeout = HANG * 2;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(proxy.listen).await.unwrap());
    }
    wait_metrics(proxy.admin, "four silent connections are open", |m| {
        sample(m, &["tollgate_connections "]) == Some(4.0)
    })
    .await;

    let resp = post_json(proxy.listen, &[], &call(1, "pods_list", json!({}))).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["result"]["content"][0]["text"],
        "called \"pods_list\""
    );
    assert_eq!(
        metric(
            proxy.admin,
            &["tollgate_connections_reclaimed_total{reason=\"unused\"}"]
        )
        .await,
        1.0
    );
    // The one reclaimed was closed; the others are still open.
    let mut closed = 0;
    for conn in &mut silent {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert!(closed <= 1, "only one was reclaimed");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded_per_caller_and_in_total() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(POLICY);
    let proxy = start_proxy_with(vec![path], &up.url(), |c| {
        c.max_streams = 4;
        c.max_streams_per_caller = 2;
    })
    .await;
    // A session the upstream issued.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let resp = post_json(proxy.listen, &[], &init).await;
    let session = resp.header("mcp-session-id").unwrap().to_owned();

    // The session's share: two streams, then 429.
    let addr = proxy.listen;
    let (a, _a) = open_stream(addr, Some(&session)).await;
    let (b, b_conn) = open_stream(addr, Some(&session)).await;
    let (c, _c) = open_stream(addr, Some(&session)).await;
    assert_eq!((a.as_str(), b.as_str(), c.as_str()), ("200", "200", "429"));
    // Not asking for a stream does not get one past the share either.
    let (sneaky, _s) = get_mcp(addr, Some(&session), "").await;
    assert_eq!(sneaky, "429");
    // Callers with no session share half the total: two.
    let (d, _d) = open_stream(addr, None).await;
    let (e, _e) = open_stream(addr, None).await;
    let (f, _f) = open_stream(addr, None).await;
    assert_eq!((d.as_str(), e.as_str(), f.as_str()), ("200", "200", "429"));
    assert_eq!(
        metric(proxy.admin, &["tollgate_table_entries{table=\"streams\"}"]).await,
        4.0
    );
    assert_eq!(
        metric(
            proxy.admin,
            &["tollgate_table_full_total{share=\"caller\",table=\"streams\"}"]
        )
        .await,
        3.0
    );
    // A closed stream gives its place back.
    drop(b_conn);
    wait_metrics(proxy.admin, "the closed stream is given back", |m| {
        sample(m, &["tollgate_table_entries{table=\"streams\"}"]) == Some(3.0)
    })
    .await;
    let (g, _g) = open_stream(addr, Some(&session)).await;
    assert_eq!(g, "200");
    proxy.shutdown().await;
}

/// A GET for the event stream (of `session`, if any): the response status
/// and the connection, left open.
async fn open_stream(addr: SocketAddr, session: Option<&str>) -> (String, TcpStream) {
    get_mcp(addr, session, "Accept: text/event-stream\r\n").await
}

/// A GET of `/mcp` with `extra` headers: the response status and the
/// connection, left open.
async fn get_mcp(addr: SocketAddr, session: Option<&str>, extra: &str) -> (String, TcpStream) {
    let mut req = format!("GET /mcp HTTP/1.1\r\nHost: t\r\n{extra}");
    if let Some(s) = session {
        req.push_str(&format!("Mcp-Session-Id: {s}\r\n"));
    }
    req.push_str("\r\n");
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(HANG, conn.read(&mut byte))
            .await
            .expect("a response head")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head[9..12]).into_owned(), conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_too_many_values_is_refused_and_a_large_honest_one_is_not() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(POLICY);
    let proxy = start_proxy(vec![path], &up.url()).await;

    let zeros: Vec<u8> = format!("[{}0]", "0,".repeat(200_000)).into_bytes();
    let resp = post(proxy.listen, &[], &zeros).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(
        resp.text().contains("more than 100000 values"),
        "{}",
        resp.text()
    );
    assert_eq!(
        metric(
            proxy.admin,
            &["tollgate_requests_rejected_total{reason=\"too_complex\"}"]
        )
        .await,
        1.0
    );

    // A 3 MiB argument is one value: parsed off the I/O thread, forwarded.
    let manifest = "x".repeat(3 << 20);
    let resp = post_json(
        proxy.listen,
        &[],
        &call(2, "pods_list", json!({"labelSelector": manifest})),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.calls(), ["pods_list"]);
    proxy.shutdown().await;
}
