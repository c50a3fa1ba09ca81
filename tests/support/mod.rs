//! Shared test helpers: an in-process proxy, a raw HTTP/1.1 client (to send
//! exactly the bytes a hostile client would), and child processes that die
//! with the test.
#![allow(dead_code)]

pub mod chart;
pub mod cluster;
pub mod dashboard;
pub mod hooks;
pub mod idp;
pub mod jaeger;
pub mod redis;
pub mod truenas;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_sidecar::{self as proxy, AuditConfig, ProxyConfig, RuleSource, Running};

/// A port nothing listens on right now, on 127.0.0.1 (for servers that
/// must be told their port before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `yaml` to a policy file in a fresh directory.
pub fn policy_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// A proxy on a free port in front of `upstream`, with short timeouts.
pub async fn start_proxy(paths: Vec<PathBuf>, upstream: &str) -> Running {
    start_proxy_with(paths, upstream, |_| {}).await
}

/// Like [`start_proxy`], with settings changed by `tweak`.
pub async fn start_proxy_with(
    paths: Vec<PathBuf>,
    upstream: &str,
    tweak: impl FnOnce(&mut ProxyConfig),
) -> Running {
    let mut config = ProxyConfig::new(
        RuleSource::Files(paths),
        upstream.parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    );
    config.header_read_timeout = Duration::from_secs(2);
    config.body_read_timeout = Duration::from_secs(2);
    config.upstream_connect_timeout = Duration::from_secs(2);
    config.upstream_response_timeout = Duration::from_secs(5);
    config.reload_interval = Duration::from_millis(500);
    config.shutdown_grace = Duration::from_secs(1);
    tweak(&mut config);
    proxy::start(config, AuditConfig::default()).await.unwrap()
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    /// The body as JSON (panics with the body text if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (complete bytes) and reads the response until the
/// server closes the connection.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    raw_on(TcpStream::connect(addr).await.unwrap(), request).await
}

/// [`raw`] over a connection already made (e.g. TLS).
pub async fn raw_on(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: &[u8],
) -> Raw {
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf))
        .await
        .expect("response within 20 s")
        .ok();
    parse_response(&buf)
}

/// A POST with `Connection: close` and the given extra headers.
pub async fn post(addr: SocketAddr, extra_headers: &[(&str, &str)], body: &[u8]) -> Raw {
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !extra_headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes).await
}

/// POSTs a JSON value.
pub async fn post_json(addr: SocketAddr, headers: &[(&str, &str)], body: &Value) -> Raw {
    post(addr, headers, body.to_string().as_bytes()).await
}

/// A `tools/call` request.
pub fn call(id: u64, name: &str, arguments: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

/// A JSON-RPC id no other request of this test process uses, so the MCP
/// server's side of one call can be found by it.
pub fn fresh_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How one `tools/call` was answered, read strictly: a JSON-RPC error, a
/// non-200 status or a tool error that is not tollgate's is neither
/// `Allowed` nor `Denied`, so "allowed" can never mean "failed somehow".
#[derive(Clone, Debug)]
pub enum Answer {
    /// A `result` whose `isError` is false (or absent, which MCP defines as
    /// false), with no `error`, over HTTP 200. Holds the `result`.
    Allowed(Value),
    /// tollgate's own refusal: `result.isError` true with
    /// `_meta["dev.tollgate/denial"]` saying why. Holds the `result`.
    Denied(Value),
    /// Anything else, described.
    Other(String),
}

impl Answer {
    /// Reads an HTTP response to one `tools/call` (JSON, or SSE with the
    /// response as its one message).
    pub fn of(resp: &Raw) -> Answer {
        if resp.status != 200 {
            return Answer::Other(format!("HTTP {}: {}", resp.status, resp.text()));
        }
        let text = resp.text();
        let body = if resp
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"))
        {
            match text.lines().find_map(|l| l.strip_prefix("data: ")) {
                Some(data) => data.to_owned(),
                None => return Answer::Other(format!("an event stream without data: {text}")),
            }
        } else {
            text.clone()
        };
        let Ok(v) = serde_json::from_str::<Value>(&body) else {
            return Answer::Other(format!("not JSON: {text}"));
        };
        if v.get("error").is_some() || v.get("result").is_none() {
            return Answer::Other(format!("not a successful JSON-RPC response: {v}"));
        }
        Answer::of_result(&v["result"])
    }

    /// Reads a `CallToolResult` (as `tests/peers/agent.mjs` prints it).
    pub fn of_result(result: &Value) -> Answer {
        if !result.is_object() || result.get("error").is_some() {
            return Answer::Other(format!("not a tool result: {result}"));
        }
        if !result["content"].is_array() {
            return Answer::Other(format!("a tool result without content: {result}"));
        }
        match result.get("isError") {
            None | Some(Value::Bool(false)) => Answer::Allowed(result.clone()),
            Some(Value::Bool(true))
                if result["_meta"]["dev.tollgate/denial"]["reason"].is_string() =>
            {
                Answer::Denied(result.clone())
            }
            Some(_) => Answer::Other(format!("a tool error that is not tollgate's: {result}")),
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Answer::Allowed(_))
    }

    pub fn is_denied(&self) -> bool {
        matches!(self, Answer::Denied(_))
    }

    /// Why tollgate denied it (`rate_limit`, `default`, ...).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Answer::Denied(r) => r["_meta"]["dev.tollgate/denial"]["reason"].as_str(),
            _ => None,
        }
    }

    /// The denial's details (`_meta["dev.tollgate/denial"]`).
    pub fn denial(&self) -> &Value {
        match self {
            Answer::Denied(r) => &r["_meta"]["dev.tollgate/denial"],
            _ => &Value::Null,
        }
    }

    /// The text of the result's first content block ("" if none).
    pub fn text(&self) -> &str {
        match self {
            Answer::Allowed(r) | Answer::Denied(r) => {
                r["content"][0]["text"].as_str().unwrap_or("")
            }
            Answer::Other(_) => "",
        }
    }
}

/// Sends one `tools/call` with `id` and reads the answer strictly.
pub async fn ask(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    id: u64,
    tool: &str,
    arguments: Value,
) -> Answer {
    Answer::of(&post_json(addr, headers, &call(id, tool, arguments)).await)
}

fn parse_response(buf: &[u8]) -> Raw {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Raw {
            status: 0,
            headers: Vec::new(),
            body: buf.to_vec(),
        };
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Reads the proxy's `/metrics`.
pub async fn metrics(admin: SocketAddr) -> String {
    raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .text()
}

/// The value of one sample, e.g. `tollgate_policy_reload_failing`, or
/// one with labels `tollgate_tool_calls_total{...}` matched by substring.
pub fn sample(metrics: &str, name_and_labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| name_and_labels.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` for all of `window`: true if it held every time. For what must
/// *not* happen (a feedback loop, a second log line), which only a window can
/// show; the expectation itself must not depend on the window's length.
pub async fn holds_for(window: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + window;
    loop {
        if !f().await {
            return false;
        }
        if tokio::time::Instant::now() > deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- child processes -------------------------------------------------------

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The MCP test peers, installed by `scripts/test-deps.sh`.
pub fn peers() -> PathBuf {
    let dir = repo().join("tests/peers");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").exists(),
        "the Node test peers are not installed: run scripts/test-deps.sh (make test does)"
    );
    dir
}

/// A child process that is killed when dropped; its stdin is a pipe, so
/// peers that exit on stdin EOF go away even if the test aborts.
pub struct Proc {
    child: Child,
    /// Lines the child printed on stdout after the first one.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// How many lines printed so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// Lines reach [`Proc::lines`] through a pipe and a reader thread, a
    /// moment after the process wrote them: waits (10 s at most) until `n`
    /// lines contain `needle`, then says how many do — so "exactly one"
    /// is checked once the line has had time to arrive, not before.
    pub fn count_once_there(&self, needle: &str, n: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.count(needle) < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.count(needle)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Spawns `cmd` without waiting for anything (its readiness is
    /// checked otherwise); its output goes to the test's.
    pub fn start(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc {
            child,
            lines: Arc::default(),
        }
    }

    /// Spawns `cmd` and returns it with its first stdout line; later lines
    /// are collected in [`Proc::lines`].
    pub fn spawn(
        mut cmd: Command,
        first_line: impl Fn(&str) -> bool + Send + 'static,
    ) -> (Proc, String) {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let collected = lines.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && first_line(&line) {
                    sent = true;
                    let _ = tx.send(line.clone());
                }
                collected.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{cmd:?} printed no start line within 60 s"));
        (Proc { child, lines }, line)
    }
}

/// `tollgate proxy` as a separate process, with its addresses.
pub struct TollgateProc {
    pub proc: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts the tollgate binary with `args` plus loopback listeners on free ports.
pub fn tollgate(args: &[&str]) -> TollgateProc {
    tollgate_with_env(args, &[]).0
}

/// [`tollgate`] with environment variables set; also its ready line.
pub fn tollgate_with_env(args: &[&str], env: &[(&str, String)]) -> (TollgateProc, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args([
        "--log-format",
        "json",
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    cmd.args(args);
    let (proc, line) = Proc::spawn(cmd, |l| l.contains("tollgate proxy ready"));
    let v: Value = serde_json::from_str(&line).unwrap();
    let started = TollgateProc {
        proc,
        listen: v["listen"].as_str().unwrap().parse().unwrap(),
        admin: v["admin"].as_str().unwrap().parse().unwrap(),
    };
    (started, v)
}

/// kubernetes-mcp-server on the fake Kubernetes API (tests/peers/kube-stack.mjs).
pub struct KubeStack {
    pub proc: Proc,
    pub info: Value,
}

impl KubeStack {
    pub fn start() -> KubeStack {
        let mut cmd = Command::new("node");
        cmd.arg(peers().join("kube-stack.mjs"))
            .args(["--max-lifetime", "600"]);
        let (proc, line) = Proc::spawn(cmd, |l| l.starts_with('{'));
        KubeStack {
            proc,
            info: serde_json::from_str(&line).unwrap(),
        }
    }

    /// `http://127.0.0.1:PORT` of kubernetes-mcp-server.
    pub fn upstream(&self) -> String {
        format!("http://127.0.0.1:{}", self.info["mcpPort"])
    }

    /// What the fake Kubernetes API counted.
    pub fn stats(&self) -> Value {
        let url = self.info["stats"].as_str().unwrap();
        let out = Command::new("node")
            .arg("-e")
            .arg(format!(
                "fetch('{url}').then(r=>r.text()).then(t=>process.stdout.write(t))"
            ))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Runs tests/peers/agent.mjs (the MCP TypeScript SDK as the client) and
/// returns every JSON line it printed. The agent must exit 0 and every line
/// must be a result: an `{"error":…}` line (it could not connect, a
/// transport failure, a JSON-RPC error) or a `repeat` summary with errors
/// fails here, so no caller can mistake a failed call for an answer.
pub fn agent(url: &str, args: &[&str]) -> Vec<Value> {
    agent_on(&["--url", url], args, &[])
}

/// [`agent`] over stdio: the SDK's StdioClientTransport spawns `server`
/// (e.g. `tollgate wrap ... -- SERVER`) and speaks to it on its stdio.
pub fn agent_stdio(args: &[&str], server: &[&str]) -> Vec<Value> {
    agent_on(&["--transport", "stdio"], args, server)
}

fn agent_on(transport: &[&str], args: &[&str], server: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new("node");
    cmd.arg(peers().join("agent.mjs"))
        .args(transport)
        .args(args);
    if !server.is_empty() {
        cmd.arg("--").args(server);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "agent.mjs {args:?} exited with {}:\n{stdout}\n{stderr}",
        out.status
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("agent.mjs {args:?} printed a non-JSON line ({e}): {l}"))
        })
        .collect();
    assert!(
        !lines.is_empty(),
        "agent.mjs {args:?} printed nothing; stderr: {stderr}"
    );
    for line in &lines {
        assert!(
            line.get("error").is_none() && line["errors"].as_u64().unwrap_or(0) == 0,
            "agent.mjs {args:?} failed: {line}\n{stderr}"
        );
    }
    lines
}

/// A shipped example with one exact piece of text replaced — e.g. its
/// window made an hour, so that what a test counts cannot depend on how
/// fast the machine runs it. Panics unless `from` occurs exactly once.
pub fn example_with(rel: &str, from: &str, to: &str) -> (tempfile::TempDir, PathBuf) {
    let text = std::fs::read_to_string(repo_file(rel)).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from:?} once in {rel}");
    policy_file(&text.replace(from, to))
}

/// A file under the repository.
pub fn repo_file(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}
