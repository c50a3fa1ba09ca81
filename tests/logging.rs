//! A sidecar whose stdout nobody reads (a stuck log collector) keeps serving:
//! log and audit lines beyond the bounded queue are dropped and counted,
//! never waited for.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::upstream::{Framing, Upstream};
use support::{call, metrics, policy_file, post_json, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_stdout_drops_lines_instead_of_stalling_calls() {
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec:\n  defaultAction: Allow\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "--log-format",
            "json",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--policy")
        .arg(&policy)
        .args(["--upstream", &upstream.url()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Read up to the ready line, then never read again: the pipe fills.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let ready: Value = loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "tollgate exited before it was ready"
        );
        if line.contains("tollgate proxy ready") {
            break serde_json::from_str(&line).unwrap();
        }
    };
    let listen = ready["listen"].as_str().unwrap().parse().unwrap();
    let admin = ready["admin"].as_str().unwrap().parse().unwrap();

    // Each call is one audit line (~400 bytes): 10,000 of them are far more
    // than a pipe (64 KiB) and the writer's queue (8192 lines) hold.
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        tasks.push(tokio::spawn(async move {
            for i in 0..1250u64 {
                let resp = post_json(
                    listen,
                    &[],
                    &call(worker * 10_000 + i, "pods_list", json!({})),
                )
                .await;
                assert_eq!(resp.status, 200, "{}", resp.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let dropped = sample(&metrics(admin).await, &["tollgate_log_lines_dropped_total"]).unwrap();
    assert!(dropped > 0.0, "the queue cannot have held 10,000 lines");
    assert_eq!(upstream.calls().len(), 10_000, "every call was served");
    drop(stdout);
    let _ = child.kill();
    let _ = child.wait();
}
