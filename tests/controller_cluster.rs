//! The controller and real sidecar processes against a real kube-apiserver:
//! `kubectl apply` → enforced; edits, deletes, invalid policies, a lost
//! controller, tokens for the wrong pod, status counts, two replicas.
//!
//! The apiserver has no kubelet: pods stay Pending, which is all the
//! controller needs (their labels and identity). Sidecars run on loopback in
//! front of a recording test upstream.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::{Cluster, ControllerProc, ManagedSidecar};
use support::upstream::{Framing, Upstream};
use support::*;

/// Generous: how long a change may take to show before a test gives up.
/// (How fast it really is is measured by `make bench`, not asserted here.)
const PATIENCE: Duration = Duration::from_secs(20);

fn policy(ns: &str, name: &str, app: &str, allowed: &[&str]) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  defaultAction: Deny\n  rules:\n    - {{name: allowed, tools: {allowed:?}, action: Allow}}\n"
    )
}

struct Sidecar {
    tg: TollgateProc,
    dir: tempfile::TempDir,
    args: Vec<String>,
    up: Upstream,
}

impl Sidecar {
    fn start(
        cluster: &Cluster,
        ns: &str,
        pod: &str,
        controller: &ControllerProc,
        upstream: &Upstream,
    ) -> Sidecar {
        Self::start_with(
            cluster,
            ns,
            pod,
            (controller.push, &controller.ca_file),
            upstream,
            &[],
        )
    }

    /// A sidecar of the controller at `push` whose certificate chains to
    /// the CA in `ca_file` (the controller need not run yet).
    fn start_with(
        cluster: &Cluster,
        ns: &str,
        pod: &str,
        (push, ca_file): (SocketAddr, &std::path::Path),
        upstream: &Upstream,
        extra: &[&str],
    ) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("snapshot.json");
        let mut args = ManagedSidecar::args(
            dir.path(),
            cluster,
            (ns, pod),
            (push, ca_file),
            &upstream.url(),
        );
        args.extend([
            "--snapshot-file".to_owned(),
            snapshot.to_str().unwrap().to_owned(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let tg = tollgate(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Sidecar {
            tg,
            dir,
            args,
            up: upstream.clone(),
        }
    }

    /// Kills the sidecar and starts it again with the same files.
    fn restart(&mut self) {
        self.tg.proc.terminate();
        self.tg = tollgate(&self.args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Whether a call of `tool` was let through to the MCP server (a JSON-RPC
    /// error, e.g. before the first snapshot, is not).
    async fn allows(&self, tool: &str) -> bool {
        self.up.allows(self.tg.listen, tool).await
    }

    /// Whether tollgate refused a call of `tool` itself.
    async fn denies(&self, tool: &str) -> bool {
        self.up.denies(self.tg.listen, tool).await
    }

    async fn call(&self, tool: &str) -> Value {
        post_json(self.tg.listen, &[], &call(1, tool, json!({})))
            .await
            .json()
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        sample(&metrics(self.tg.admin).await, &[name])
    }

    fn snapshot_file(&self) -> PathBuf {
        self.dir.path().join("snapshot.json")
    }
}

fn status(cluster: &Cluster, ns: &str, name: &str) -> Value {
    cluster.policy(ns, name)["status"].clone()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

async fn wait_for_status(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let ok = eventually(PATIENCE, async || {
        last = status(cluster, ns, name);
        pred(&last)
    })
    .await;
    assert!(ok, "status of {ns}/{name} never matched; last: {last:#}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_applied_edited_and_deleted_reaches_the_sidecar() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("apply");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    let controller = ControllerProc::start(cluster, &ns, "c1");
    let up = Upstream::start(Framing::Json).await;
    let sidecar = Sidecar::start(cluster, &ns, "kms-0", &controller, &up);

    // Connected, and no policy selects the pod yet: fail closed, and say why.
    assert!(
        eventually(PATIENCE, async || sidecar
            .metric("tollgate_controller_connected ")
            .await
            == Some(1.0))
        .await
    );
    let v = sidecar.call("vm_clone").await;
    assert_eq!(v["result"]["isError"], true);
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("no McpToolPolicy selects this MCP server")
    );

    let applied = Instant::now();
    cluster
        .apply(&policy(&ns, "cap", "kms", &["vm_clone"]))
        .unwrap();
    assert!(eventually(PATIENCE, async || sidecar.allows("vm_clone").await).await);
    eprintln!("apply -> enforced in {:?}", applied.elapsed());
    assert!(sidecar.denies("pods_delete").await);
    assert_eq!(up.calls(), ["vm_clone"]);

    let s = wait_for_status(cluster, &ns, "cap", |s| s["synced"] == "1/1").await;
    assert_eq!(condition(&s, "Accepted")["status"], "True");
    assert_eq!(condition(&s, "Programmed")["status"], "True");
    assert_eq!(
        (s["observedGeneration"].clone(), s["rules"].clone()),
        (json!(1), json!(1))
    );
    let table = cluster.kubectl(&["-n", &ns, "get", "mtp"]).unwrap();
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "MODE", "DEFAULT", "RULES", "SYNCED", "AGE"]),
        "{table}"
    );
    assert!(
        table.contains("cap    Enforce   Deny      1       1/1"),
        "{table}"
    );

    cluster
        .apply(&policy(&ns, "cap", "kms", &["pods_list"]))
        .unwrap();
    assert!(eventually(PATIENCE, async || sidecar.allows("pods_list").await).await);
    assert!(sidecar.denies("vm_clone").await);
    wait_for_status(cluster, &ns, "cap", |s| {
        s["observedGeneration"] == 2 && s["synced"] == "1/1"
    })
    .await;

    cluster
        .kubectl(&["-n", &ns, "delete", "mtp", "cap"])
        .unwrap();
    assert!(eventually(PATIENCE, async || sidecar.denies("pods_list").await).await);
    let v = sidecar.call("pods_list").await;
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("no McpToolPolicy selects")
    );

    let m = metrics(controller.admin).await;
    assert_eq!(sample(&m, &["tollgate_controller_streams "]), Some(1.0));
    assert!(
        sample(&m, &["tollgate_controller_acks_total "]).unwrap() >= 4.0,
        "{m}"
    );
    assert!(sample(&m, &["tollgate_controller_push_seconds_count "]).unwrap() >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_policies_are_refused_and_the_last_good_rules_stay() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("invalid");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    let controller = ControllerProc::start(cluster, &ns, "c1");
    let up = Upstream::start(Framing::Json).await;
    let sidecar = Sidecar::start(cluster, &ns, "kms-0", &controller, &up);
    cluster
        .apply(&policy(&ns, "cap", "kms", &["vm_clone"]))
        .unwrap();
    assert!(eventually(PATIENCE, async || sidecar.allows("vm_clone").await).await);

    // What the CRD schema refuses at `kubectl apply`.
    let head = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: cap, namespace: {ns}}}\nspec:\n  defaultAction: Deny\n  rules:\n"
    );
    for (rules, refusal) in [
        (
            "    - {name: a, tools: [x], action: Allow, rateLimits: [{requests: 0, window: 1m}]}",
            "should be greater than or equal to 1",
        ),
        (
            "    - {name: a, tools: [x], action: Allow, rateLimits: [{requests: 5, window: 1 minute}]}",
            "should match '^([0-9]+[smhd])+$'",
        ),
        (
            "    - {name: a, tools: [x], action: Block}",
            "Unsupported value: \"Block\"",
        ),
        (
            "    - {name: a, tools: [x], action: Allow}\n    - {name: a, tools: [z], action: Deny}",
            "Duplicate value",
        ),
        (
            "    - {name: a, tools: [x], action: Deny, rateLimits: [{requests: 5, window: 1m}]}",
            "rate limits apply to calls a rule allows",
        ),
    ] {
        let err = cluster.apply(&format!("{head}{rules}\n")).expect_err(rules);
        assert!(err.contains(refusal), "{rules}: {err}");
    }
    // What only `compile` catches: accepted by the apiserver, refused by the controller.
    cluster
        .apply(&format!("{head}    - {{name: a, tools: [x], action: Allow, arguments: [{{pointer: /n, operator: Matches, value: '(unclosed'}}]}}\n"))
        .unwrap();
    let s = wait_for_status(cluster, &ns, "cap", |s| {
        condition(s, "Accepted")["status"] == "False"
    })
    .await;
    let accepted = condition(&s, "Accepted");
    assert_eq!(accepted["reason"], "Invalid");
    let message = accepted["message"].as_str().unwrap();
    assert!(message.starts_with("generation 1 stays in force: spec.rules[0].arguments[0].value: \"(unclosed\" is not a valid regex"), "{message}");
    assert_eq!(
        condition(&s, "Programmed")["message"],
        "generation 2 was refused; sidecars keep enforcing generation 1"
    );
    // The previous rules stay in force.
    assert!(sidecar.allows("vm_clone").await);
    assert!(sidecar.denies("x").await);
    // And the refusal is an Event on the policy.
    let events = cluster.get_json(&[
        "-n",
        &ns,
        "events",
        "--field-selector",
        "involvedObject.name=cap",
    ]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "InvalidPolicy" && e["type"] == "Warning"),
        "{events:#}"
    );
    // Other policies keep working next to it.
    cluster
        .apply(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: no-deletes, namespace: {ns}}}\nspec:\n  defaultAction: Allow\n  rules:\n    - {{name: deletes, tools: [\"*_delete\"], action: Deny}}\n"
        ))
        .unwrap();
    // Both in force: one rule each.
    assert!(
        eventually(PATIENCE, async || sidecar
            .metric("tollgate_policy_rules ")
            .await
            == Some(2.0))
        .await
    );
    wait_for_status(cluster, &ns, "no-deletes", |s| s["synced"] == "1/1").await;
    assert!(
        sidecar.allows("vm_clone").await,
        "cap generation 1 still allows vm_clone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sidecars_keep_enforcing_without_the_controller_and_reconnect() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("lost");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    let mut controller = ControllerProc::start(cluster, &ns, "c1");
    let push = controller.push;
    let up = Upstream::start(Framing::Json).await;
    let mut sidecar = Sidecar::start(cluster, &ns, "kms-0", &controller, &up);
    cluster
        .apply(&policy(&ns, "cap", "kms", &["vm_clone"]))
        .unwrap();
    assert!(eventually(PATIENCE, async || sidecar.allows("vm_clone").await).await);
    assert!(sidecar.snapshot_file().exists());

    controller.proc.terminate();
    assert!(
        eventually(PATIENCE, async || sidecar
            .metric("tollgate_controller_connected ")
            .await
            == Some(0.0))
        .await
    );
    assert!(sidecar.allows("vm_clone").await);
    assert!(sidecar.denies("pods_delete").await);

    // A sidecar restarted while the controller is away enforces what it kept.
    sidecar.restart();
    assert!(sidecar.allows("vm_clone").await);
    let denied = sidecar.call("pods_delete").await;
    assert!(
        denied["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("policy \"{ns}/cap\"")),
        "{denied}"
    );

    // The controller returns; the sidecar reconnects and follows changes again.
    let controller = ControllerProc::start_on(cluster, &ns, "c1", &push.to_string());
    assert!(
        eventually(Duration::from_secs(60), async || sidecar
            .metric("tollgate_controller_connected ")
            .await
            == Some(1.0))
        .await
    );
    cluster
        .apply(&policy(&ns, "cap", "kms", &["pods_list"]))
        .unwrap();
    assert!(eventually(PATIENCE, async || sidecar.allows("pods_list").await).await);
    assert!(
        sidecar
            .metric("tollgate_controller_reconnects_total ")
            .await
            .unwrap()
            >= 1.0
    );
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_gets_only_its_own_pods_rules() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("tokens");
    cluster.sidecar_pod(&ns, "a", &[("app", "kms")]);
    cluster.sidecar_pod(&ns, "b", &[("app", "kms")]);
    let controller = ControllerProc::start(cluster, &ns, "c1");
    cluster
        .apply(&policy(&ns, "cap", "kms", &["vm_clone"]))
        .unwrap();
    let token_a = cluster.pod_token(&ns, "a");
    let get = |pod: &str, token: Option<&str>| {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        format!(
            "GET /v1/snapshots/{ns}/{pod} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n"
        )
    };
    // Its own pod: a stream of its snapshots, which carry the policy's rules
    // once the controller has seen it (the first may still be empty).
    let mut stream = controller.connect().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(get("a", Some(&token_a)).as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut snapshot = Value::Null;
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = vec![0u8; 65536];
        while snapshot["policies"].as_array().is_none_or(Vec::is_empty) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            snapshot = last_snapshot(&String::from_utf8_lossy(&seen));
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    assert!(read.is_ok(), "no snapshot with rules: {text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        (snapshot["namespace"].as_str(), snapshot["pod"].as_str()),
        (Some(ns.as_str()), Some("a")),
        "{snapshot:#}"
    );
    let policies = snapshot["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{snapshot:#}");
    assert_eq!(policies[0]["name"], format!("{ns}/cap"));
    assert_eq!(
        policies[0]["spec"]["rules"][0]["tools"],
        json!(["vm_clone"])
    );

    let other = controller.raw(get("b", Some(&token_a)).as_bytes()).await;
    assert_eq!(other.status, 403, "{}", other.text());
    assert!(other.text().contains(&format!(
        "a token bound to pod {ns}/a cannot read the rules of pod {ns}/b"
    )));
    let ack = format!(
        "POST /v1/acks/{ns}/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {token_a}\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{{\"version\":\"x\"}}"
    );
    assert_eq!(controller.raw(ack.as_bytes()).await.status, 403);

    assert_eq!(controller.raw(get("a", None).as_bytes()).await.status, 401);
    let unbound = cluster
        .kubectl(&[
            "-n",
            &ns,
            "create",
            "token",
            "mcp",
            "--audience",
            "tollgate",
        ])
        .unwrap();
    let resp = controller
        .raw(get("a", Some(unbound.trim())).as_bytes())
        .await;
    assert_eq!(resp.status, 401);
    assert!(
        resp.text().contains("not bound to a pod"),
        "{}",
        resp.text()
    );
    let other_audience = cluster
        .kubectl(&[
            "-n",
            &ns,
            "create",
            "token",
            "mcp",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "a",
        ])
        .unwrap();
    let resp = controller
        .raw(get("a", Some(other_audience.trim())).as_bytes())
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    let m = metrics(controller.admin).await;
    assert!(
        sample(
            &m,
            &["tollgate_controller_auth_failures_total{reason=\"forbidden\"}"]
        )
        .unwrap()
            >= 2.0,
        "{m}"
    );
}

/// The data of the last complete `snapshot` event in an SSE text (chunk
/// size lines between events are skipped); `Null` if there is none yet.
fn last_snapshot(sse: &str) -> Value {
    let mut last = Value::Null;
    for event in sse.split("\n\n") {
        let lines: Vec<&str> = event.lines().map(|l| l.trim_end_matches('\r')).collect();
        if lines.contains(&"event: snapshot")
            && let Some(data) = lines.iter().find_map(|l| l.strip_prefix("data: "))
            && let Ok(v) = serde_json::from_str(data)
        {
            last = v;
        }
    }
    last
}

/// Started with `--fail-open` while no controller answers, a sidecar lets
/// calls through; once the controller is up, its rules take over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_open_lets_calls_through_until_rules_arrive() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("failopen");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    cluster
        .apply(&policy(&ns, "cap", "kms", &["pods_list"]))
        .unwrap();
    // The controller's CA exists once a controller has run (it keeps it in a
    // Secret); the sidecar then starts while no controller answers.
    let push: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let first = ControllerProc::start_on(cluster, &ns, "c1", &push.to_string());
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.crt");
    std::fs::copy(&first.ca_file, &ca).unwrap();
    drop(first);
    let up = Upstream::start(Framing::Json).await;
    let sidecar = Sidecar::start_with(cluster, &ns, "kms-0", (push, &ca), &up, &["--fail-open"]);
    assert!(sidecar.allows("vm_clone").await, "no rules yet: fail open");
    assert_eq!(
        sidecar.metric("tollgate_controller_connected ").await,
        Some(0.0)
    );

    let controller = ControllerProc::start_on(cluster, &ns, "c1", &push.to_string());
    assert!(
        eventually(Duration::from_secs(60), async || sidecar
            .denies("vm_clone")
            .await)
        .await,
        "the policy's rules never took over"
    );
    assert!(sidecar.allows("pods_list").await);
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_counts_selected_and_synced_sidecars() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("status");
    for pod in ["kms-0", "kms-1", "kms-2"] {
        cluster.sidecar_pod(&ns, pod, &[("app", "kms")]);
    }
    cluster.sidecar_pod(&ns, "web-0", &[("app", "web")]);
    let controller = ControllerProc::start(cluster, &ns, "c1");
    let up = Upstream::start(Framing::Json).await;
    let _s0 = Sidecar::start(cluster, &ns, "kms-0", &controller, &up);
    let _s1 = Sidecar::start(cluster, &ns, "kms-1", &controller, &up);
    cluster
        .apply(&policy(&ns, "cap", "kms", &["vm_clone"]))
        .unwrap();
    let s = wait_for_status(cluster, &ns, "cap", |s| s["synced"] == "2/3").await;
    let programmed = condition(&s, "Programmed");
    assert_eq!(
        (programmed["status"].as_str(), programmed["reason"].as_str()),
        (Some("False"), Some("Pending"))
    );
    assert_eq!(
        programmed["message"],
        "2 of 3 selected sidecars enforce generation 1"
    );
    let _s2 = Sidecar::start(cluster, &ns, "kms-2", &controller, &up);
    let s = wait_for_status(cluster, &ns, "cap", |s| s["synced"] == "3/3").await;
    assert_eq!(condition(&s, "Programmed")["status"], "True");
    // A selector that matches nothing says so.
    cluster
        .apply(&policy(&ns, "nobody", "none", &["x"]))
        .unwrap();
    let s = wait_for_status(cluster, &ns, "nobody", |s| s["synced"] == "0/0").await;
    assert_eq!(condition(&s, "Programmed")["reason"], "NoSidecars");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_serve_sidecars_and_one_writes_status() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("replicas");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    cluster.sidecar_pod(&ns, "kms-1", &[("app", "kms")]);
    let mut replicas = vec![
        ControllerProc::start(cluster, &ns, "replica-a"),
        ControllerProc::start(cluster, &ns, "replica-b"),
    ];
    let leader_of = async |replicas: &Vec<ControllerProc>| {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if sample(&metrics(r.admin).await, &["tollgate_controller_leader "]) == Some(1.0) {
                leaders.push(i);
            }
        }
        leaders
    };
    let mut leaders = Vec::new();
    assert!(
        eventually(PATIENCE, async || {
            leaders = leader_of(&replicas).await;
            leaders.len() == 1
        })
        .await
    );
    let (leader, follower) = (leaders[0], 1 - leaders[0]);

    // One sidecar on each replica; the follower's acks reach the leader.
    let up = Upstream::start(Framing::Json).await;
    let on_follower = Sidecar::start(cluster, &ns, "kms-0", &replicas[follower], &up);
    let on_leader = Sidecar::start(cluster, &ns, "kms-1", &replicas[leader], &up);
    cluster
        .apply(&policy(&ns, "cap", "kms", &["vm_clone"]))
        .unwrap();
    assert!(
        eventually(PATIENCE, async || on_follower.allows("vm_clone").await
            && on_leader.allows("vm_clone").await)
        .await
    );
    wait_for_status(cluster, &ns, "cap", |s| s["synced"] == "2/2").await;
    let writes = |m: &str| {
        sample(
            m,
            &["tollgate_controller_status_writes_total{result=\"success\"}"],
        )
        .unwrap_or(0.0)
    };
    assert!(writes(&metrics(replicas[leader].admin).await) >= 1.0);
    assert_eq!(
        writes(&metrics(replicas[follower].admin).await),
        0.0,
        "only the leader writes status"
    );

    // The leader leaves; the other replica takes over status.
    replicas[leader].proc.terminate();
    let survivor = replicas.remove(follower);
    assert!(
        eventually(PATIENCE, async || sample(
            &metrics(survivor.admin).await,
            &["tollgate_controller_leader "]
        ) == Some(1.0))
        .await
    );
    cluster
        .apply(&policy(&ns, "cap", "kms", &["pods_list"]))
        .unwrap();
    assert!(eventually(PATIENCE, async || on_follower.allows("pods_list").await).await);
    let s = wait_for_status(cluster, &ns, "cap", |s| {
        s["observedGeneration"] == 2 && s["synced"] == "1/2"
    })
    .await;
    assert_eq!(
        condition(&s, "Programmed")["reason"],
        "Pending",
        "the sidecar of the gone replica has not reconnected yet: {s:#}"
    );
}
