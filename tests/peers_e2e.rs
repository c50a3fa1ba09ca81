//! The tollgate binary between real MCP peers: the official TypeScript SDK
//! as the agent, kubernetes-mcp-server (on a stand-in Kubernetes API that
//! counts what gets created) and the SDK's own legacy HTTP+SSE server as
//! upstreams.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

const CLONE: &str = r#"{"namespace":"vms","name":"golden-fedora","targetName":"copy"}"#;

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("")
}

#[test]
fn kubernetes_mcp_server_behind_tollgate_with_the_vm_clone_cap() {
    let stack = KubeStack::start();
    // The shipped example with its window an hour instead of a minute, so
    // the count of 100 calls cannot depend on their finishing within one.
    let (_dir, example) = example_with("examples/vm-clone-cap.yaml", "window: 1m", "window: 1h");
    let tg = tollgate(&[
        "--policy",
        example.to_str().unwrap(),
        "--upstream",
        &stack.upstream(),
    ]);
    let url = format!("http://{}/mcp", tg.listen);

    // Initialize and list: the SDK does the handshake; hidden tools are gone
    // (configuration_view too: it prints the server's credentials).
    let listed: Vec<String> = serde_json::from_value(agent(&url, &["list"])[0].clone()).unwrap();
    let mut expected = vec![
        "events_list",
        "namespaces_list",
        "nodes_log",
        "nodes_stats_summary",
        "nodes_top",
        "pods_get",
        "pods_list",
        "pods_list_in_namespace",
        "pods_log",
        "pods_top",
        "projects_list",
        "resources_get",
        "resources_list",
        "vm_clone",
        "vm_guest_info",
        "vm_troubleshoot",
    ];
    expected.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, expected);

    // An allowed read reaches the cluster and returns its answer.
    let ns = &agent(&url, &["call", "namespaces_list", "{}"])[0];
    assert!(Answer::of_result(ns).is_allowed(), "{ns}");
    assert!(text(ns).contains("kube-system"), "{ns}");

    // A denied call comes back as a tool error naming policy and reason.
    let del = &agent(
        &url,
        &[
            "call",
            "pods_delete",
            r#"{"namespace":"vms","name":"web-1"}"#,
        ],
    )[0];
    assert_eq!(Answer::of_result(del).reason(), Some("default"), "{del}");
    assert_eq!(
        text(del),
        "Denied by tollgate policy \"vm-clone-cap\": no rule allows tool \"pods_delete\" and the default is Deny."
    );
    assert!(stack.stats()["deletes"].as_object().unwrap().is_empty());

    // 100 clones from a looping agent: exactly 30 reach the Kubernetes API.
    let summary = &agent(
        &url,
        &["repeat", "100", "vm_clone", CLONE, "--concurrency", "8"],
    )[0];
    assert_eq!(
        (summary["ok"].as_u64(), summary["isError"].as_u64()),
        (Some(30), Some(70)),
        "{summary}"
    );
    let denied: Vec<Answer> = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(Answer::of_result)
        .filter(|a| !a.is_allowed())
        .collect();
    assert_eq!(denied.len(), 70);
    assert!(
        denied.iter().all(|a| a.reason() == Some("rate_limit")
            && a.text()
                .contains("rate limit of 30 per 1h reached; retry after")),
        "{denied:?}"
    );
    let stats = stack.stats();
    assert_eq!(
        stats["creates"]["virtualmachineclones.clone.kubevirt.io"], 30,
        "{stats}"
    );

    // Another namespace has its own budget.
    let other = &agent(
        &url,
        &[
            "call",
            "vm_clone",
            r#"{"namespace":"dev","name":"golden-fedora","targetName":"x"}"#,
        ],
    )[0];
    assert!(Answer::of_result(other).is_allowed(), "{other}");

    let m = metrics_blocking(tg.admin);
    assert_eq!(
        sample(
            &m,
            &[
                "tollgate_tool_calls_total{",
                "decision=\"denied\"",
                "reason=\"rate_limit\"",
                "tool=\"vm_clone\""
            ]
        ),
        Some(70.0)
    );
    assert_eq!(
        sample(
            &m,
            &[
                "tollgate_tool_calls_total{",
                "decision=\"allowed\"",
                "rule=\"vm-clone\"",
                "tool=\"vm_clone\""
            ]
        ),
        Some(31.0)
    );

    // The audit log has a line per decision, arguments only as a digest
    // (read once the last of them has had time to come through the pipe).
    let last_audits = tg.proc.count_once_there("tollgate::audit", 103);
    assert_eq!(
        last_audits, 103,
        "101 vm_clone, pods_delete, namespaces_list"
    );
    let lines = tg.proc.lines.lock().unwrap().clone();
    let audits: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "tollgate::audit")
        .collect();
    assert_eq!(
        audits.iter().filter(|a| a["tool"] == "vm_clone").count(),
        101
    );
    let one = audits.iter().find(|a| a["tool"] == "pods_delete").unwrap();
    assert_eq!(
        (one["decision"].as_str(), one["reason"].as_str()),
        (Some("denied"), Some("default"))
    );
    assert_eq!(one["arguments_sha256"].as_str().map(str::len), Some(16));
    assert!(
        !lines.iter().any(|l| l.contains("web-1")),
        "arguments must not be logged in clear"
    );
}

#[test]
fn a_legacy_sse_session_gets_its_denials_on_its_stream() {
    let mut cmd = Command::new("node");
    cmd.arg(peers().join("legacy-sse-server.mjs"))
        .args(["--port", "0", "--max-lifetime", "300"]);
    let (server, line) = Proc::spawn(cmd, |l| l.starts_with('{'));
    let port = serde_json::from_str::<Value>(&line).unwrap()["port"]
        .as_u64()
        .unwrap();
    let (_dir, path) = policy_file(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: legacy}
spec:
  defaultAction: Deny
  hideDenied: true
  rules:
    - {name: echo, tools: [echo], action: Allow}
    - name: clone
      tools: [vm_clone]
      action: Allow
      rateLimits: [{requests: 2, window: 1m, key: {session: true}}]
"#,
    );
    let tg = tollgate(&[
        "--policy",
        path.to_str().unwrap(),
        "--upstream",
        &format!("http://127.0.0.1:{port}"),
    ]);
    let url = format!("http://{}/sse", tg.listen);
    let sse = |args: &[&str]| {
        let mut all = vec!["--transport", "sse"];
        all.extend_from_slice(args);
        agent(&url, &all)
    };

    let mut listed: Vec<String> = serde_json::from_value(sse(&["list"])[0].clone()).unwrap();
    listed.sort();
    assert_eq!(listed, ["echo", "vm_clone"]);

    let echo = &sse(&["call", "echo", r#"{"text":"hi"}"#])[0];
    assert!(
        Answer::of_result(echo).is_allowed() && text(echo).contains("hi"),
        "{echo}"
    );

    let denied = &sse(&["call", "delete_everything", "{}"])[0];
    assert_eq!(
        Answer::of_result(denied).reason(),
        Some("default"),
        "{denied}"
    );
    assert!(text(denied).contains("no rule allows tool \"delete_everything\""));

    // Per-session budgets: each legacy session has its own.
    for _ in 0..2 {
        let s = &sse(&["repeat", "3", "vm_clone", CLONE])[0];
        assert_eq!(
            (s["ok"].as_u64(), s["isError"].as_u64()),
            (Some(2), Some(1)),
            "{s}"
        );
    }

    let stats = http_get_json(port as u16, "/_stats");
    assert_eq!(stats["calls"]["vm_clone"], 4, "{stats}");
    assert!(stats["calls"]["delete_everything"].is_null(), "{stats}");
    drop(server);
}

#[test]
fn tollgate_check_reports_every_problem_and_exits_1() {
    let ok = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check"])
        .arg(repo_file("examples/vm-clone-cap.yaml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: 1 policy, 3 rules, version "));
    assert!(
        ok.stderr.is_empty(),
        "the shipped example warns: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let (_dir, path) = policy_file(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec:\n  defaultAction: Deny\n  rules:\n    - {name: a, tools: [x], action: Allow, rateLimits: [{requests: 0, window: 1 minute}]}\n    - {name: a, tools: ['[x'], action: Allow}\n",
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    for want in [
        "spec.rules[0].rateLimits[0].requests: 0 admits nothing",
        "spec.rules[0].rateLimits[0].window: \"1 minute\" is not a duration",
        "spec.rules[1].name: rule name \"a\" is used twice",
        "spec.rules[1].tools[0]: \"[x\" is not a valid glob",
        "4 problems",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains(path.to_str().unwrap()),
        "problems name the file"
    );
}

fn metrics_blocking(admin: std::net::SocketAddr) -> String {
    http_get_text(admin.port(), "/metrics")
}

fn http_get_text(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn http_get_json(port: u16, path: &str) -> Value {
    let body = http_get_text(port, path);
    // Chunked or not, the JSON object is the part between the outer braces.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    serde_json::from_str(&body[start..end]).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// kubernetes-mcp-server on the Kubernetes API stand-in, behind tollgate
/// with the shipped example `rel`; and the agents' URL.
fn example_behind_tollgate(rel: &str) -> (KubeStack, TollgateProc, String) {
    let stack = KubeStack::start();
    let example = repo_file(rel);
    let tg = tollgate(&[
        "--policy",
        example.to_str().unwrap(),
        "--upstream",
        &stack.upstream(),
    ]);
    let url = format!("http://{}/mcp", tg.listen);
    (stack, tg, url)
}

/// The KubeVirt example in file mode, against the Kubernetes API stand-in:
/// the cap holds whichever tool creates the clones.
#[test]
fn the_kubevirt_example_caps_clones_from_every_tool() {
    let (stack, tg, url) = example_behind_tollgate("examples/kubevirt/clone-guard.yaml");
    let created = |stack: &KubeStack| {
        stack.stats()["creates"]["virtualmachineclones.clone.kubevirt.io"]
            .as_u64()
            .unwrap_or(0)
    };

    // Hidden: what can create nothing allowed. Visible: the two clone routes.
    let listed: Vec<String> = serde_json::from_value(agent(&url, &["list"])[0].clone()).unwrap();
    assert!(
        listed.iter().any(|t| t == "vm_clone")
            && listed.iter().any(|t| t == "resources_create_or_update"),
        "{listed:?}"
    );
    assert!(
        !listed
            .iter()
            .any(|t| t == "pods_delete" || t == "vm_create"),
        "{listed:?}"
    );

    let no = &agent(
        &url,
        &[
            "call",
            "vm_clone",
            r#"{"namespace":"kube-system","name":"golden-fedora","targetName":"x"}"#,
        ],
    )[0];
    assert!(text(no).contains("rule \"no-system-clones\""), "{no}");
    let no = &agent(
        &url,
        &[
            "call",
            "vm_clone",
            r#"{"namespace":"vms","name":"web-1","targetName":"x"}"#,
        ],
    )[0];
    assert!(
        text(no).contains("source VM \"web-1\" must match \"golden-*\""),
        "{no}"
    );

    // A looping agent: 5 in flight per namespace, exactly.
    let summary = &agent(
        &url,
        &[
            "repeat",
            "100",
            "vm_clone",
            CLONE,
            "--concurrency",
            "8",
            "--no-results",
        ],
    )[0];
    assert_eq!(
        (summary["ok"].as_u64(), summary["isError"].as_u64()),
        (Some(5), Some(95)),
        "{summary}"
    );
    assert_eq!(created(&stack), 5);

    // The same clones through the generic tool: 10 documents, both API versions.
    let docs: Vec<String> = (0..10)
        .map(|i| {
            format!(
                "apiVersion: clone.kubevirt.io/{}\nkind: VirtualMachineClone\nmetadata: {{name: bulk-{i}, namespace: vms}}\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: golden-fedora}}\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: bulk-copy-{i}}}\n",
                if i % 2 == 0 { "v1beta1" } else { "v1alpha1" }
            )
        })
        .collect();
    let args = serde_json::json!({ "resource": docs.join("---\n") }).to_string();
    let bulk = &agent(&url, &["call", "resources_create_or_update", &args])[0];
    assert_eq!(
        Answer::of_result(bulk).reason(),
        Some("in_flight"),
        "{bulk}"
    );
    assert!(
        text(bulk).contains("5 VirtualMachineClones in flight per namespace"),
        "{bulk}"
    );
    assert_eq!(created(&stack), 5, "nothing more got through");

    let m = metrics_blocking(tg.admin);
    assert_eq!(
        sample(
            &m,
            &[
                "tollgate_tool_calls_total{",
                "decision=\"denied\"",
                "reason=\"in_flight\"",
                "tool=\"vm_clone\""
            ]
        ),
        Some(95.0)
    );
}

/// The approval example in file mode, with the TypeScript SDK as the agent:
/// golden clones run at once; another clone waits for a person of
/// `vm-admins`, and the agent's retry of the same call then runs, once.
#[test]
fn an_sdk_agent_retries_a_held_clone_that_a_person_approves() {
    let (stack, tg, url) = example_behind_tollgate("examples/kubevirt/approve-clones.yaml");
    let golden = &agent(
        &url,
        &[
            "call",
            "vm_clone",
            r#"{"namespace":"vms","name":"golden-fedora","targetName":"g1"}"#,
        ],
    )[0];
    assert!(Answer::of_result(golden).is_allowed(), "{golden}");

    // One agent session: the held call retried until it runs, then the same
    // call once more.
    let web = serde_json::json!({"namespace": "vms", "name": "web-1", "targetName": "web-copy"});
    let script = serde_json::json!([
        {"op": "retry_until_allowed", "name": "vm_clone", "arguments": web, "intervalMs": 100, "maxTries": 600},
        {"op": "call", "name": "vm_clone", "arguments": web},
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.json");
    std::fs::write(&path, script.to_string()).unwrap();
    let child = Command::new("node")
        .arg(peers().join("agent.mjs"))
        .args(["--url", &url, "script", path.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let mut pending = None;
    for _ in 0..300 {
        let listed = http_get_json(tg.admin.port(), "/approvals");
        if let Some(a) = listed["approvals"].as_array().and_then(|a| a.first()) {
            pending = Some(a.clone());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pending = pending.expect("the agent's clone asked for an approval");
    assert_eq!(
        (
            pending["tool"].as_str(),
            pending["rule"].as_str(),
            pending["arguments"]["name"].as_str()
        ),
        (Some("vm_clone"), Some("other-clones"), Some("web-1")),
        "{pending}"
    );
    let id = pending["id"].as_str().unwrap();
    let admin = format!("http://{}", tg.admin);
    let approve = |by: &str, group: &str| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "approve", "--admin", &admin, "--as", by, "--group", group, id,
            ])
            .output()
            .unwrap()
    };
    let refused = approve("dev", "developers");
    assert!(!refused.status.success(), "only vm-admins approve");
    assert_eq!(
        stack.stats()["creates"]["virtualmachineclones.clone.kubevirt.io"],
        1
    );
    let approved = approve("ann", "vm-admins");
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0]["tries"].as_u64() > Some(1), "{stdout}");
    assert!(
        Answer::of_result(&lines[0]["result"]).is_allowed(),
        "{stdout}"
    );
    let again = &lines[1];
    assert_eq!(again["isError"], true, "{again}");
    let next = again["_meta"]["dev.tollgate/approval"]["id"].as_str();
    assert!(
        next.is_some() && next != Some(id),
        "a new approval for the next clone: {again}"
    );
    assert_eq!(
        stack.stats()["creates"]["virtualmachineclones.clone.kubevirt.io"],
        2,
        "the golden clone and the approved one, not a third"
    );
}
