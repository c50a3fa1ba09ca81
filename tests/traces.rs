//! OpenTelemetry traces, exported to a real OTLP receiver (Jaeger, built
//! from its Go module by scripts/jaeger.sh) and read back from its query
//! API: a span per MCP request carrying the decision, policy, rule and
//! tool, continuing the agent's W3C `traceparent` and named as the parent
//! in the upstream request's. And what must not change: a collector that is
//! down or never answers fails no call, and with traces off the agent's
//! `traceparent` reaches the upstream untouched. The controller's
//! reconcile and push spans, on the real apiserver.

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::cluster::{Cluster, ControllerProc};
use support::jaeger::{Jaeger, tag};
use support::upstream::{Framing, Upstream};
use support::{Proc, call, fresh_id, policy_file, post_json, tollgate_with_env};

const POLICY: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: traced, namespace: mcp}
spec:
  defaultAction: Allow
  rules:
    - name: no-deletes
      action: Deny
      tools: [pods_delete]
"#;

/// `tollgate proxy` in front of `upstream` with `env` set (traces on): the
/// process (killed when dropped) and its listen address.
fn sidecar(policy: &std::path::Path, upstream: &str, env: &[(&str, String)]) -> (Proc, SocketAddr) {
    let policy = policy.to_str().unwrap();
    let (started, ready) = tollgate_with_env(&["--policy", policy, "--upstream", upstream], env);
    assert_eq!(ready["traces"], true, "traces are on: {ready}");
    (started.proc, started.listen)
}

/// A W3C traceparent with fresh random-looking ids (from the test's ids).
fn traceparent() -> (String, String, String) {
    let n = fresh_id();
    let trace = format!("{:016x}{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15), n);
    let span = format!("{:016x}", n.wrapping_mul(31) | 1);
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// The upstream's `traceparent` on the `tools/call` with `id`.
fn forwarded_traceparent(upstream: &Upstream, id: u64) -> String {
    let seen = upstream
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.json()["id"] == id)
        .unwrap_or_else(|| panic!("the upstream never received call {id}"));
    seen.headers
        .get("traceparent")
        .unwrap_or_else(|| panic!("call {id} reached the upstream without a traceparent"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_a_span_in_the_agents_trace_with_its_decision() {
    let jaeger = Jaeger::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(POLICY);
    let service = format!("tollgate-test-{}", std::process::id());
    let (sidecar_proc, listen) = sidecar(
        &policy,
        &upstream.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint()),
            ("OTEL_SERVICE_NAME", service.clone()),
            // Export every 100 ms rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
    );

    // An allowed call and a denied one, each in its own agent trace.
    let (allowed_parent, allowed_trace, agent_span) = traceparent();
    let allowed_id = fresh_id();
    let resp = post_json(
        listen,
        &[("traceparent", &allowed_parent)],
        &call(allowed_id, "pods_list", json!({})),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (denied_parent, denied_trace, _) = traceparent();
    let denied_id = fresh_id();
    let resp = post_json(
        listen,
        &[("traceparent", &denied_parent)],
        &call(denied_id, "pods_delete", json!({"name": "x"})),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.json()["result"]["isError"] == true || resp.json()["error"].is_object());
    assert!(
        upstream.received(denied_id).is_none(),
        "the denied call was forwarded"
    );

    // The upstream request continues the agent's trace, under tollgate's span.
    let up = forwarded_traceparent(&upstream, allowed_id);
    let parts: Vec<&str> = up.split('-').collect();
    assert_eq!(parts.len(), 4, "{up}");
    assert_eq!(
        parts[1], allowed_trace,
        "the upstream's trace id is the agent's"
    );
    assert_ne!(
        parts[2], agent_span,
        "the upstream's parent is tollgate's span, not the agent's"
    );
    let tollgate_span = parts[2].to_owned();

    let traces = jaeger.traces(&service, |t| t.len() >= 2);
    let span_of = |trace: &str| -> Value {
        traces
            .iter()
            .flat_map(|t| t["spans"].as_array().cloned().unwrap_or_default())
            .find(|s| s["traceID"] == trace)
            .unwrap_or_else(|| panic!("no span of trace {trace} in Jaeger: {traces:#?}"))
    };

    let allowed = span_of(&allowed_trace);
    assert_eq!(allowed["spanID"], tollgate_span.as_str());
    assert_eq!(allowed["operationName"], "mcp tools/call");
    let parent = &allowed["references"][0];
    assert_eq!(parent["refType"], "CHILD_OF");
    assert_eq!(parent["traceID"], allowed_trace.as_str());
    assert_eq!(parent["spanID"], agent_span.as_str());
    assert_eq!(tag(&allowed, "tollgate.decision"), Some(&json!("allowed")));
    assert_eq!(tag(&allowed, "tollgate.tool"), Some(&json!("pods_list")));
    assert_eq!(tag(&allowed, "mcp.method.name"), Some(&json!("tools/call")));
    assert_eq!(
        tag(&allowed, "http.response.status_code"),
        Some(&json!(200))
    );

    let denied = span_of(&denied_trace);
    assert_eq!(tag(&denied, "tollgate.decision"), Some(&json!("denied")));
    assert_eq!(tag(&denied, "tollgate.policy"), Some(&json!("mcp/traced")));
    assert_eq!(tag(&denied, "tollgate.rule"), Some(&json!("no-deletes")));
    assert_eq!(tag(&denied, "tollgate.tool"), Some(&json!("pods_delete")));
    assert_eq!(
        tag(&denied, "jsonrpc.request.id"),
        Some(&json!(denied_id.to_string()))
    );

    drop(sidecar_proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_silent_fails_no_call() {
    // One port nothing listens on, one that accepts and never answers.
    let refused = format!("http://127.0.0.1:{}", support::free_port());
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = silent.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(POLICY);
    for endpoint in [refused, silent_url] {
        let (sidecar_proc, listen) = sidecar(
            &policy,
            &upstream.url(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
                ("OTEL_BSP_SCHEDULE_DELAY", "10".into()),
                // A small queue, so most spans are dropped, not queued.
                ("OTEL_BSP_MAX_QUEUE_SIZE", "8".into()),
            ],
        );
        for _ in 0..200 {
            let (parent, _, _) = traceparent();
            let id = fresh_id();
            let resp = post_json(
                listen,
                &[("traceparent", &parent)],
                &call(id, "pods_list", json!({})),
            )
            .await;
            assert_eq!(resp.status, 200, "collector {endpoint}: {}", resp.text());
            assert_eq!(
                upstream.received(id).as_deref(),
                Some("pods_list"),
                "collector {endpoint}: call {id} did not reach the upstream"
            );
        }
        drop(sidecar_proc);
    }
}

#[tokio::test]
async fn with_traces_off_the_agents_traceparent_passes_untouched() {
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(POLICY);
    let running = support::start_proxy(vec![policy], &upstream.url()).await;
    let (parent, _, _) = traceparent();
    let id = fresh_id();
    let resp = post_json(
        running.listen,
        &[("traceparent", &parent)],
        &call(id, "pods_list", json!({})),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_traceparent(&upstream, id), parent);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_traces_reconciles_and_pushes() {
    let jaeger = Jaeger::start();
    let cluster = Cluster::get();
    let ns = cluster.namespace("traced");
    let service = format!("tollgate-controller-test-{}", std::process::id());
    let controller = ControllerProc::start_with_env(
        cluster,
        &ns,
        "c1",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint()),
            ("OTEL_SERVICE_NAME", service.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
    );
    cluster
        .apply(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: traced, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: kms}}}}\n  defaultAction: Allow\n"
        ))
        .unwrap();
    let upstream = Upstream::start(Framing::Json).await;
    let (_sidecar, _token) = controller.managed_sidecar(
        cluster,
        &ns,
        "kms-0",
        &[("app", "kms")],
        &upstream.url(),
        &[],
    );

    let policy = format!("{ns}/traced");
    let pod = format!("{ns}/kms-0");
    let spans = |traces: &[Value]| -> Vec<Value> {
        traces
            .iter()
            .flat_map(|t| t["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let has = |spans: &[Value], op: &str, key: &str, value: &str| {
        spans
            .iter()
            .any(|s| s["operationName"] == op && tag(s, key) == Some(&json!(value)))
    };
    let traces = jaeger.traces(&service, |t| {
        let s = spans(t);
        has(&s, "reconcile", "tollgate.policy", &policy) && has(&s, "push", "tollgate.pod", &pod)
    });
    let all = spans(&traces);
    let reconcile = all
        .iter()
        .find(|s| {
            s["operationName"] == "reconcile" && tag(s, "tollgate.policy") == Some(&json!(policy))
        })
        .unwrap_or_else(|| panic!("no reconcile span of {policy}: {all:#?}"));
    assert_eq!(tag(reconcile, "tollgate.kind"), Some(&json!("policy")));
    assert_eq!(tag(reconcile, "tollgate.event"), Some(&json!("apply")));
    let push = all
        .iter()
        .find(|s| s["operationName"] == "push" && tag(s, "tollgate.pod") == Some(&json!(pod)))
        .unwrap_or_else(|| panic!("no push span to {pod}: {all:#?}"));
    assert!(
        tag(push, "tollgate.snapshot_version")
            .is_some_and(|v| v.as_str().is_some_and(|v| !v.is_empty())),
        "{push:#}"
    );
    drop(controller);
}
