//! `tollgate wrap` between a test playing the agent (raw lines on the
//! binary's stdin and stdout) and a real stdio MCP server on the official
//! TypeScript SDK (tests/peers/stdio-server.mjs) whose tools misbehave on
//! request: the same decisions and list filtering as the HTTP proxy, and
//! every failure of the server answered, never awaited.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: stdio}
spec:
  defaultAction: Deny
  hideDenied: true
  rules:
    - name: echo
      tools: [echo]
      action: Allow
      rateLimits: [{requests: 2, window: 1h}]
    - name: misbehave
      tools: [garbage, hang, exit, big, stderr]
      action: Allow
"#;

/// `tollgate wrap` with piped stdio, killed when dropped.
struct Wrapped {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    _policy: tempfile::TempDir,
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Wrapped {
    fn start(extra: &[&str]) -> Wrapped {
        let (dir, policy) = policy_file(POLICY);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(["--log-format", "json", "wrap", "--policy"])
            .arg(&policy)
            .args(extra)
            .arg("--")
            .arg("node")
            .arg(peers().join("stdio-server.mjs"))
            .args(["--max-lifetime", "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("tollgate wrap starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = collected.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let stdin = child.stdin.take();
        let mut w = Wrapped {
            child,
            stdin,
            lines,
            stderr,
            _policy: dir,
        };
        w.send(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "stdio-test", "version": "1"}}}),
        );
        let init = w.answer(&json!(0));
        assert_eq!(
            init["result"]["serverInfo"]["name"], "tollgate-stdio-test-server",
            "{init}"
        );
        w.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        w
    }

    fn send(&mut self, message: &Value) {
        self.send_raw(&message.to_string());
    }

    fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line tollgate writes that `pick` accepts (15 s at most);
    /// other lines are kept out of the way in `skipped`.
    fn next(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("tollgate wrote a non-JSON line ({e}): {line}"));
                    if pick(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {what} within 15 s; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "tollgate closed stdout before {what}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// The response with `id`.
    fn answer(&mut self, id: &Value) -> Value {
        let id = id.clone();
        self.next(&format!("response {id}"), move |v| v["id"] == id)
    }

    fn call(&mut self, id: u64, name: &str, arguments: Value) -> Value {
        self.send(&call(id, name, arguments));
        self.answer(&json!(id))
    }

    /// Waits (15 s at most) for tollgate to exit; its exit code.
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "tollgate did not exit within 15 s; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
    }
}

#[test]
fn wrap_decides_filters_and_refuses_like_the_http_proxy() {
    let mut w = Wrapped::start(&[]);

    w.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let listed: Vec<String> = w.answer(&json!(1))["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(listed.contains(&"echo".to_owned()), "{listed:?}");
    assert!(
        !listed.contains(&"pid".to_owned()),
        "pid is hidden: {listed:?}"
    );

    // Two echoes pass, the third meets the rate limit.
    for id in 2..=3 {
        let r = w.call(id, "echo", json!({"text": "hi"}));
        assert_eq!(r["result"]["content"][0]["text"], "hi", "{r}");
    }
    let limited = Answer::of_result(&w.call(4, "echo", json!({"text": "hi"}))["result"]);
    assert_eq!(limited.reason(), Some("rate_limit"));
    // A tool no rule allows is denied by default, by the gate.
    let denied = Answer::of_result(&w.call(5, "pid", json!({}))["result"]);
    assert_eq!(denied.reason(), Some("default"));

    // What is not one readable message is refused, not forwarded.
    w.send_raw("{\"jsonrpc\": \"2.0\", \"id\": 6, \"method\": \"tools/call\",");
    let e = w.next("a parse error", |v| v["id"].is_null());
    assert_eq!(e["error"]["code"], -32700, "{e}");
    w.send_raw(r#"{"jsonrpc":"2.0","id":7,"id":8,"method":"tools/call","params":{"name":"echo"}}"#);
    let e = w.next("a duplicate-key refusal", |v| v["id"].is_null());
    assert_eq!(e["error"]["code"], -32700, "{e}");
    w.send(&json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}));
    let e = w.next("a refused notification", |v| v["id"].is_null());
    assert_eq!(e["error"]["code"], -32600, "{e}");
    // tollgate's own request ids are not the agent's to use.
    w.send(
        &call(0, "echo", json!({"text": "x"}))
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("id".into(), json!("tollgate-discovery-1"));
                Value::Object(o)
            })
            .unwrap(),
    );
    let e = w.answer(&json!("tollgate-discovery-1"));
    assert_eq!(e["error"]["code"], -32600, "{e}");

    // A batch is decided element by element.
    w.send(&json!([
        call(9, "pid", json!({})),
        {"jsonrpc": "2.0", "id": 10, "method": "ping"}
    ]));
    let batch = w.next("the batch's answers", |v| v.is_array());
    let batch = batch.as_array().unwrap();
    assert!(
        batch
            .iter()
            .any(|a| a["id"] == 9 && a["result"]["isError"] == true),
        "{batch:?}"
    );

    // The audit log went to stderr, never into the protocol.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.stderr.lock().unwrap().contains("\"tool\":\"pid\"") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(w.stderr.lock().unwrap().contains("\"tool\":\"pid\""));
}

#[test]
fn a_server_that_writes_garbage_hangs_or_dies_is_answered_never_awaited() {
    let mut w = Wrapped::start(&["--upstream-timeout", "1s"]);

    // A line that is not JSON-RPC is not passed on; the agent hears why.
    w.send(&call(1, "garbage", json!({})));
    let notice = w.next("the garbage notice", |v| v["id"].is_null());
    assert_eq!(notice["error"]["code"], -31003, "{notice}");
    let text = notice["error"]["message"].as_str().unwrap();
    assert!(text.contains("not JSON"), "{text}");
    assert_eq!(w.answer(&json!(1))["result"]["content"][0]["text"], "ok");

    // A request the server never answers gets an error once the timeout passes.
    let started = Instant::now();
    w.send(&call(2, "hang", json!({})));
    let late = w.answer(&json!(2));
    assert_eq!(late["error"]["code"], -31003, "{late}");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // What the server writes on stderr reaches tollgate's stderr.
    w.call(
        3,
        "stderr",
        json!({"text": "a line from the server's stderr"}),
    );
    assert!(
        w.stderr
            .lock()
            .unwrap()
            .contains("a line from the server's stderr")
    );

    // A server that dies mid-call: the call gets an error, and tollgate
    // ends with the server's exit code.
    w.send(&call(4, "exit", json!({"code": 3})));
    let died = w.answer(&json!(4));
    assert_eq!(died["error"]["code"], -31003, "{died}");
    assert!(
        died["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{died}"
    );
    assert_eq!(w.exit_code(), 3);
}

#[test]
fn lines_over_the_limits_are_refused_both_ways() {
    let mut w = Wrapped::start(&[
        "--max-body-bytes",
        "1000",
        "--max-server-line-bytes",
        "2000",
    ]);

    let long = json!({"text": "x".repeat(2000)});
    w.send(&call(1, "echo", long));
    let e = w.next("a refusal of the long line", |v| v["id"].is_null());
    assert_eq!(e["error"]["code"], -32700, "{e}");
    // The line after it is read as usual.
    assert_eq!(
        w.call(2, "echo", json!({"text": "short"}))["result"]["content"][0]["text"],
        "short"
    );

    // An answer over the server-side limit is lost: its request fails.
    let r = w.call(3, "big", json!({"bytes": 5000}));
    assert_eq!(r["error"]["code"], -31003, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit"),
        "{r}"
    );
}

#[test]
fn signals_reach_the_server_and_its_exit_code_is_tollgates() {
    let mut w = Wrapped::start(&[]);
    let pid = w.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The server's SIGTERM handler exits 42: forwarded, not killed.
    assert_eq!(w.exit_code(), 42);
    assert!(w.stderr.lock().unwrap().contains("stdio-server: SIGTERM"));
}

#[test]
fn the_end_of_the_agents_input_ends_the_server_and_tollgate() {
    let mut w = Wrapped::start(&[]);
    assert_eq!(
        w.call(1, "echo", json!({"text": "x"}))["result"]["content"][0]["text"],
        "x"
    );
    w.stdin.take();
    assert_eq!(w.exit_code(), 0);
}
