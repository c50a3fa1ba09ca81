//! A controller-managed sidecar with no controller in reach: it fails
//! closed until its first snapshot, unless told to fail open.

mod support;

use serde_json::json;
use support::upstream::{Framing, Upstream};
use support::*;

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn managed(upstream: &Upstream, token: &std::path::Path, extra: &[&str]) -> TollgateProc {
    let controller = format!("http://127.0.0.1:{}", dead_port());
    let upstream = upstream.url();
    let mut args = vec![
        "--controller",
        &controller,
        "--token-file",
        token.to_str().unwrap(),
        "--pod-name",
        "p",
        "--pod-namespace",
        "ns",
        "--upstream",
        &upstream,
    ];
    args.extend_from_slice(extra);
    tollgate(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_snapshot_tool_calls_are_refused() {
    let up = Upstream::start(Framing::Json).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "not-a-real-token").unwrap();
    let sidecar = managed(&up, &token, &[]);
    let v = post_json(sidecar.listen, &[], &call(1, "anything", json!({})))
        .await
        .json();
    assert_eq!(v["error"]["code"], -31004, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no policy has been loaded yet")
    );
    // Other methods still pass (the server can be initialised and listed).
    let list = post_json(
        sidecar.listen,
        &[],
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(list.status, 200);
    assert!(up.calls().is_empty());
    let ready = raw(
        sidecar.admin,
        b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ready.status, 503);
    let m = metrics(sidecar.admin).await;
    assert_eq!(sample(&m, &["tollgate_controller_connected "]), Some(0.0));
}

/// Only while no rules have arrived; that they take over once they arrive
/// is `fail_open_lets_calls_through_until_rules_arrive` in controller_cluster.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_lets_calls_through_while_no_controller_answers() {
    let up = Upstream::start(Framing::Json).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let sidecar = managed(&up, &token, &["--fail-open"]);
    let answer = up.through(sidecar.listen, &[], "anything", json!({})).await;
    assert!(answer.is_allowed(), "{answer:?}");
    assert_eq!(up.calls(), ["anything"]);
}

#[test]
fn managed_mode_needs_the_pod_identity() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "proxy",
            "--controller",
            "http://127.0.0.1:1",
            "--token-file",
            "/x",
            "--upstream",
            "http://127.0.0.1:2",
        ])
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--controller needs the pod's namespace"),
        "{stderr}"
    );
}
