//! Shared budgets (`scope: Shared`) across sidecar processes, with a real
//! redis-server on loopback; and per-caller identity from bearer JWTs.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::idp::{OidcProvider, SigningKey};
use support::redis::Redis;
use support::upstream::{Framing, Upstream};
use support::{TollgateProc, call, eventually, metrics, policy_file, post_json, sample, tollgate};

/// vm_clone capped across sidecars; pods_list free; the rest denied.
fn shared_policy(requests: u32, on_store_error: &str) -> String {
    format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {{name: shared-budget, namespace: vms}}
spec:
  defaultAction: Deny
  rules:
    - name: reads
      tools: [pods_list]
      action: Allow
    - name: clones
      tools: [vm_clone]
      action: Allow
      rateLimits:
        - {{requests: {requests}, window: 1m, scope: Shared, onStoreError: {on_store_error}}}
"#
    )
}

fn sidecar(policy: &Path, upstream: &Upstream, redis: &Redis, extra: &[&str]) -> TollgateProc {
    let mut args = vec![
        "--policy",
        policy.to_str().unwrap(),
        "--upstream",
        &upstream.url(),
        "--redis-url",
        &redis.url(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    tollgate(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Sends one call; true if the proxy let it through.
async fn admitted(
    addr: SocketAddr,
    id: u64,
    tool: &str,
    headers: &[(&str, &str)],
) -> (bool, Value) {
    let resp = post_json(
        addr,
        headers,
        &call(id, tool, json!({"name": "vm-1", "namespace": "vms"})),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    (
        v["result"]["isError"].is_null() && v.get("error").is_none(),
        v,
    )
}

fn upstream_calls(upstream: &Upstream, tool: &str) -> usize {
    upstream.calls().iter().filter(|c| *c == tool).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_sidecars_share_one_budget_exactly() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    // The shipped example: vm_clone at 30 per minute, scope Shared.
    let policy = support::repo_file("examples/shared-budget.yaml");
    let sidecars: Vec<TollgateProc> = (0..3)
        .map(|_| sidecar(&policy, &upstream, &redis, &[]))
        .collect();

    // 90 simultaneous calls, 30 on each sidecar.
    let mut tasks = Vec::new();
    for i in 0..90u64 {
        let addr = sidecars[(i % 3) as usize].listen;
        tasks.push(tokio::spawn(async move {
            admitted(addr, i, "vm_clone", &[]).await
        }));
    }
    let mut allowed = 0;
    let mut denied = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (true, _) => allowed += 1,
            (false, v) => denied.push(v),
        }
    }
    assert_eq!(allowed, 30, "a shared limit of 30 admits exactly 30 of 90");
    assert_eq!(
        upstream_calls(&upstream, "vm_clone"),
        30,
        "exactly 30 reached the MCP server"
    );
    let text = denied[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("rate limit"), "{text}");
    assert_eq!(
        denied[0]["result"]["_meta"]["dev.tollgate/denial"]["reason"],
        "rate_limit"
    );
    assert!(
        denied[0]["result"]["_meta"]["dev.tollgate/denial"]["retryAfterSeconds"]
            .as_u64()
            .unwrap()
            <= 60
    );

    // Every sidecar denied some: the budget is one, not three.
    let mut per_sidecar_denials = Vec::new();
    for s in &sidecars {
        let m = metrics(s.admin).await;
        per_sidecar_denials.push(
            sample(
                &m,
                &[
                    "tollgate_tool_calls_total{",
                    "decision=\"denied\"",
                    "reason=\"rate_limit\"",
                ],
            )
            .unwrap_or(0.0),
        );
        assert_eq!(sample(&m, &["tollgate_ratelimit_store_up"]), Some(1.0));
    }
    assert_eq!(
        per_sidecar_denials.iter().sum::<f64>(),
        60.0,
        "{per_sidecar_denials:?}"
    );

    // The budget's key expires with its window: nothing outlives it.
    let keys = redis.keys("{tollgate}:rl:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl = redis.pttl(&keys[0]);
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fails_closed_then_recovers() {
    let mut redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(&shared_policy(1000, "Deny"));
    let s = sidecar(&policy, &upstream, &redis, &["--redis-timeout", "200ms"]);

    assert!(admitted(s.listen, 1, "vm_clone", &[]).await.0);
    redis.kill();
    for id in 2..12 {
        let (ok, v) = admitted(s.listen, id, "vm_clone", &[]).await;
        assert!(!ok, "a shared limit without its store must deny: {v}");
        let text = v["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("cannot be reached"), "{text}");
    }
    // Calls no shared limit covers are not affected.
    assert!(admitted(s.listen, 20, "pods_list", &[]).await.0);
    let m = metrics(s.admin).await;
    assert_eq!(sample(&m, &["tollgate_ratelimit_store_up"]), Some(0.0));
    assert!(sample(&m, &["tollgate_ratelimit_store_errors_total"]).unwrap() >= 1.0);
    assert_eq!(upstream_calls(&upstream, "vm_clone"), 1);

    redis.restart();
    let mut id = 100;
    assert!(
        eventually(Duration::from_secs(15), async || {
            id += 1;
            admitted(s.listen, id, "vm_clone", &[]).await.0
        })
        .await,
        "shared limits admit again once Redis is back"
    );
    let m = metrics(s.admin).await;
    assert_eq!(sample(&m, &["tollgate_ratelimit_store_up"]), Some(1.0));

    // One log line per transition, however many calls failed.
    let lines = s.proc.lines.lock().unwrap().clone();
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("shared rate-limit store is unreachable"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count("shared rate-limit store is reachable again"),
        1,
        "{lines:#?}"
    );
}

/// A sidecar on Redis over TLS (`rediss://`) with `extra` TLS flags.
fn tls_sidecar(policy: &Path, upstream: &Upstream, redis: &Redis, extra: &[&str]) -> TollgateProc {
    let (upstream, url) = (upstream.url(), redis.tls_url());
    let mut args = vec![
        "--policy",
        policy.to_str().unwrap(),
        "--upstream",
        &upstream,
        "--redis-url",
        &url,
        "--redis-timeout",
        "500ms",
    ];
    args.extend_from_slice(extra);
    tollgate(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_budget_over_tls_with_a_client_certificate() {
    let redis = Redis::start_tls(true);
    let tls = redis.tls.as_ref().unwrap();
    let (ca, cert, key) = (tls.ca(), tls.client_cert(), tls.client_key());
    let flags = [
        "--redis-ca-file",
        ca.to_str().unwrap(),
        "--redis-client-cert",
        cert.to_str().unwrap(),
        "--redis-client-key",
        key.to_str().unwrap(),
    ];
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(&shared_policy(4, "Deny"));
    // The second sidecar gets the CA as PEM text, as injected sidecars do
    // (TOLLGATE_REDIS_CA_PEM from the chart's redis.tls.caCert).
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let pem_flags = [
        "--redis-ca-pem",
        &ca_pem,
        "--redis-client-cert",
        cert.to_str().unwrap(),
        "--redis-client-key",
        key.to_str().unwrap(),
    ];
    let sidecars = [
        tls_sidecar(&policy, &upstream, &redis, &flags),
        tls_sidecar(&policy, &upstream, &redis, &pem_flags),
    ];
    let mut allowed = 0;
    for id in 0..10u64 {
        let (ok, v) = admitted(sidecars[(id % 2) as usize].listen, id, "vm_clone", &[]).await;
        if ok {
            allowed += 1;
        } else {
            let text = v["result"]["content"][0]["text"].as_str().unwrap();
            assert!(text.contains("rate limit"), "denied for the budget: {text}");
        }
    }
    assert_eq!(allowed, 4, "one budget of 4 across both sidecars, over TLS");
    assert_eq!(upstream_calls(&upstream, "vm_clone"), 4);
    for s in &sidecars {
        let m = metrics(s.admin).await;
        assert_eq!(sample(&m, &["tollgate_ratelimit_store_up"]), Some(1.0));
    }
    // The budget is in this Redis (read back over its plain port).
    assert_eq!(redis.keys("{tollgate}:rl:*").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_tls_that_cannot_be_verified_fails_closed() {
    let redis = Redis::start_tls(true);
    let tls = redis.tls.as_ref().unwrap();
    let (ca, cert, key) = (tls.ca(), tls.client_cert(), tls.client_key());
    let stranger = support::redis::Tls::generate(0, false);
    let stranger_ca = stranger.ca();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(&shared_policy(1000, "Deny"));
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "a CA that did not sign the server's certificate",
            vec![
                "--redis-ca-file",
                stranger_ca.to_str().unwrap(),
                "--redis-client-cert",
                cert.to_str().unwrap(),
                "--redis-client-key",
                key.to_str().unwrap(),
            ],
        ),
        (
            "the public roots only (a private CA is not among them)",
            vec![
                "--redis-client-cert",
                cert.to_str().unwrap(),
                "--redis-client-key",
                key.to_str().unwrap(),
            ],
        ),
        (
            "no client certificate where Redis requires one",
            vec!["--redis-ca-file", ca.to_str().unwrap()],
        ),
    ];
    for (case, flags) in cases {
        let s = tls_sidecar(&policy, &upstream, &redis, &flags);
        for id in 1..4 {
            let (ok, v) = admitted(s.listen, id, "vm_clone", &[]).await;
            assert!(
                !ok,
                "{case}: a shared limit without its store must deny: {v}"
            );
            let text = v["result"]["content"][0]["text"].as_str().unwrap();
            assert!(text.contains("cannot be reached"), "{case}: {text}");
        }
        let m = metrics(s.admin).await;
        assert_eq!(
            sample(&m, &["tollgate_ratelimit_store_up"]),
            Some(0.0),
            "{case}"
        );
    }
    assert_eq!(
        upstream_calls(&upstream, "vm_clone"),
        0,
        "nothing got through"
    );
    assert!(redis.keys("{tollgate}:rl:*").is_empty());
}

/// Runs `tollgate proxy` with `base` and `args`, expecting it to refuse to start.
fn refused_at_start(base: &[&str], args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(base)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn redis_tls_settings_are_checked_at_start() {
    let (_dir, policy) = policy_file(&shared_policy(3, "Deny"));
    let policy = policy.to_str().unwrap();
    let tls = support::redis::Tls::generate(0, false);
    let (ca, cert) = (tls.ca(), tls.client_cert());
    let (ca, cert) = (ca.to_str().unwrap(), cert.to_str().unwrap());
    let base = ["--policy", policy, "--upstream", "http://127.0.0.1:9"];
    const TLS_URL: &str = "rediss://127.0.0.1:6379/0";
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "--redis-url",
                "redis://127.0.0.1:6379/0",
                "--redis-ca-file",
                ca,
            ],
            "write rediss://",
        ),
        (
            &[
                "--redis-url",
                TLS_URL,
                "--redis-ca-file",
                "/nonexistent/ca.pem",
            ],
            "cannot read --redis-ca-file /nonexistent/ca.pem",
        ),
        (
            &["--redis-url", TLS_URL, "--redis-ca-file", policy],
            "holds no PEM certificate",
        ),
        (
            &[
                "--redis-url",
                TLS_URL,
                "--redis-ca-pem",
                "not a certificate",
            ],
            "--redis-ca-pem holds no PEM certificate",
        ),
        (
            &[
                "--redis-url",
                TLS_URL,
                "--redis-ca-file",
                ca,
                "--redis-ca-pem",
                "x",
            ],
            "cannot be used with",
        ),
        (
            &["--redis-url", TLS_URL, "--redis-client-cert", cert],
            "--redis-client-key",
        ),
        // A password in the URL never shows in the message.
        (
            &[
                "--redis-url",
                "redis://:hunter2@127.0.0.1:6379/0",
                "--redis-ca-file",
                ca,
            ],
            ":***@",
        ),
    ];
    for (args, want) in cases {
        let err = refused_at_start(&base, args);
        assert!(
            err.contains(want) && !err.contains("hunter2"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_fallback_counts_in_the_sidecar_while_redis_is_down() {
    let mut redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(&shared_policy(3, "LocalFallback"));
    let s = sidecar(&policy, &upstream, &redis, &["--redis-timeout", "200ms"]);
    redis.kill();
    let mut results = Vec::new();
    for id in 1..=5 {
        results.push(admitted(s.listen, id, "vm_clone", &[]).await.0);
    }
    assert_eq!(
        results,
        [true, true, true, false, false],
        "3 per minute, counted locally"
    );
    assert_eq!(upstream_calls(&upstream, "vm_clone"), 3);
}

// ----- identity ----------------------------------------------------------------

struct Idp {
    key: EncodingKey,
    jwks: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Idp {
    fn new() -> Idp {
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("test-key".into());
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
        )
        .unwrap();
        Idp {
            key,
            jwks,
            _dir: dir,
        }
    }

    fn token(&self, sub: &str, exp_in: i64) -> String {
        token(&self.key, sub, exp_in)
    }
}

fn token(key: &EncodingKey, sub: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("test-key".into());
    let claims =
        json!({"sub": sub, "iss": "https://idp.test", "aud": "tollgate", "exp": now + exp_in});
    encode(&header, &claims, key).unwrap()
}

const PER_AGENT: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: per-agent, namespace: vms}
spec:
  defaultAction: Deny
  hideDenied: true
  rules:
    - name: clones
      tools: [vm_clone]
      action: Allow
      rateLimits:
        - {requests: 2, window: 1m, scope: Shared, key: {subject: true}}
    - name: deletes-for-ops
      tools: [pods_delete]
      subjects: [ops-*]
      action: Allow
"#;

fn jwt_sidecar(idp: &Idp, policy: &Path, upstream: &Upstream, redis: &Redis) -> TollgateProc {
    sidecar(
        policy,
        upstream,
        redis,
        &[
            "--identity",
            "jwt",
            "--jwks-file",
            idp.jwks.to_str().unwrap(),
            "--jwt-issuer",
            "https://idp.test",
            "--jwt-audience",
            "tollgate",
            "--require-identity",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_with_different_tokens_have_separate_budgets() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let idp = Idp::new();
    let (_dir, policy) = policy_file(PER_AGENT);
    // Two replicas: each agent's budget is shared across them.
    let a = jwt_sidecar(&idp, &policy, &upstream, &redis);
    let b = jwt_sidecar(&idp, &policy, &upstream, &redis);
    let alice = format!("Bearer {}", idp.token("agent-alice", 300));
    let bob = format!("Bearer {}", idp.token("agent-bob", 300));
    let as_alice = [("Authorization", alice.as_str())];
    let as_bob = [("Authorization", bob.as_str())];

    let mut alice_results = Vec::new();
    for (i, s) in [&a, &b, &a].iter().enumerate() {
        alice_results.push(admitted(s.listen, i as u64, "vm_clone", &as_alice).await.0);
    }
    assert_eq!(
        alice_results,
        [true, true, false],
        "alice: 2 per minute across both replicas"
    );
    let mut bob_results = Vec::new();
    for (i, s) in [&b, &a, &b].iter().enumerate() {
        bob_results.push(
            admitted(s.listen, 10 + i as u64, "vm_clone", &as_bob)
                .await
                .0,
        );
    }
    assert_eq!(bob_results, [true, true, false], "bob's budget is his own");
    assert_eq!(upstream_calls(&upstream, "vm_clone"), 4);

    // Rules per caller: only ops-* may delete, and only they see the tool.
    let ops = format!("Bearer {}", idp.token("ops-carol", 300));
    assert!(
        admitted(a.listen, 30, "pods_delete", &[("Authorization", &ops)])
            .await
            .0
    );
    let (ok, v) = admitted(a.listen, 31, "pods_delete", &as_alice).await;
    assert!(!ok);
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("\"agent-alice\" is not one of"),
        "{v}"
    );
    let list = |auth: String| {
        let addr = a.listen;
        async move {
            let v = post_json(
                addr,
                &[("Authorization", &auth)],
                &json!({"jsonrpc": "2.0", "id": 40, "method": "tools/list"}),
            )
            .await
            .json();
            v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(list(ops.clone()).await.contains(&"pods_delete".to_owned()));
    assert!(
        !list(alice.clone())
            .await
            .contains(&"pods_delete".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_expired_and_missing_tokens_are_refused_before_the_upstream() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let idp = Idp::new();
    let (_dir, policy) = policy_file(PER_AGENT);
    let s = jwt_sidecar(&idp, &policy, &upstream, &redis);

    let forger = rcgen::KeyPair::generate().unwrap();
    let forged = token(
        &EncodingKey::from_ec_pem(forger.serialize_pem().as_bytes()).unwrap(),
        "agent-alice",
        300,
    );
    let expired = idp.token("agent-alice", -3600);
    let cases = [
        ("forged", Some(format!("Bearer {forged}")), 401, "invalid"),
        ("expired", Some(format!("Bearer {expired}")), 401, "invalid"),
        (
            "garbage",
            Some("Bearer not-a-jwt".to_owned()),
            401,
            "invalid",
        ),
        ("missing", None, 401, "missing"),
    ];
    for (i, (what, auth, status, reason)) in cases.iter().enumerate() {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let resp = post_json(s.listen, &headers, &call(i as u64, "vm_clone", json!({}))).await;
        assert_eq!(resp.status, *status, "{what}: {}", resp.text());
        assert!(
            resp.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{what}"
        );
        let v = resp.json();
        assert_eq!(v["error"]["code"], -31005, "{what}: {v}");
        let m = metrics(s.admin).await;
        assert!(
            sample(
                &m,
                &[
                    "tollgate_identity_failures_total",
                    &format!("reason=\"{reason}\"")
                ]
            )
            .unwrap()
                >= 1.0,
            "{what}"
        );
    }
    assert!(
        upstream.seen().is_empty(),
        "nothing reached the MCP server: {:?}",
        upstream.calls()
    );
    // The same call with a valid token goes through.
    let ok = format!("Bearer {}", idp.token("agent-alice", 300));
    assert!(
        admitted(s.listen, 9, "vm_clone", &[("Authorization", &ok)])
            .await
            .0
    );
}

/// Writes `keys` as the JWKS of a ConfigMap-style mount: `dir/jwks.json` is
/// a symlink into `..data`, itself a symlink to a versioned directory that
/// the kubelet swaps atomically on every update.
fn configmap_jwks(dir: &Path, version: u32, key: &EncodingKey) {
    let mut jwk = Jwk::from_encoding_key(key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("test-key".into());
    let data = dir.join(format!("..v{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("jwks.json"),
        serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
    )
    .unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("jwks.json");
    if !link.exists() {
        std::os::unix::fs::symlink("..data/jwks.json", &link).unwrap();
    }
}

fn ec_key() -> EncodingKey {
    let pair = rcgen::KeyPair::generate().unwrap();
    EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_jwks_configmap_takes_effect_without_a_restart() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(PER_AGENT);
    let mount = tempfile::tempdir().unwrap();
    let (old_key, new_key) = (ec_key(), ec_key());
    configmap_jwks(mount.path(), 1, &old_key);
    let jwks = mount.path().join("jwks.json");
    let s = sidecar(
        &policy,
        &upstream,
        &redis,
        &[
            "--identity",
            "jwt",
            "--jwks-file",
            jwks.to_str().unwrap(),
            "--require-identity",
            "--reload-interval",
            "100ms",
        ],
    );
    let status = |key: &EncodingKey, id: u64| {
        let auth = format!("Bearer {}", token(key, "agent-alice", 300));
        let addr = s.listen;
        async move {
            post_json(
                addr,
                &[("Authorization", &auth)],
                &call(id, "vm_clone", json!({})),
            )
            .await
            .status
        }
    };
    assert_eq!(status(&old_key, 1).await, 200);
    assert_eq!(status(&new_key, 2).await, 401, "not yet trusted");

    configmap_jwks(mount.path(), 2, &new_key);
    let mut id = 10;
    assert!(
        eventually(Duration::from_secs(10), async || {
            id += 1;
            status(&new_key, id).await == 200
        })
        .await,
        "the rotated key is trusted without a restart"
    );
    assert_eq!(status(&old_key, 100).await, 401, "the old key is not");
    let m = metrics(s.admin).await;
    assert_eq!(sample(&m, &["tollgate_jwks_reload_failing"]), Some(0.0));

    // A broken update keeps the keys in force, loudly.
    let broken = mount.path().join("..v3");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("jwks.json"), "{\"keys\": [").unwrap();
    let tmp = mount.path().join("..data_tmp");
    std::os::unix::fs::symlink("..v3", &tmp).unwrap();
    std::fs::rename(&tmp, mount.path().join("..data")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || {
            sample(&metrics(s.admin).await, &["tollgate_jwks_reload_failing"]) == Some(1.0)
        })
        .await
    );
    assert_eq!(status(&new_key, 200).await, 200, "the last good keys stay");
    assert_eq!(status(&old_key, 201).await, 401);
    let lines = s.proc.lines.lock().unwrap().clone();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("JWKS change refused"))
            .count(),
        1,
        "reported once, not on every check: {lines:#?}"
    );
}

/// A sidecar that learns its JWT keys from `idp` by OpenID discovery.
fn oidc_sidecar(
    idp: &OidcProvider,
    ca: &Path,
    refresh: &str,
    policy: &Path,
    upstream: &Upstream,
    redis: &Redis,
) -> TollgateProc {
    let issuer = idp.issuer();
    sidecar(
        policy,
        upstream,
        redis,
        &[
            "--identity",
            "jwt",
            "--jwt-issuer",
            &issuer,
            "--jwt-audience",
            "tollgate",
            "--jwks-ca-file",
            ca.to_str().unwrap(),
            "--jwks-refresh",
            refresh,
            "--require-identity",
        ],
    )
}

/// Whether calls carrying `token` come to be admitted within 10 s.
async fn admitted_within_10s(addr: SocketAddr, token: &str) -> bool {
    let mut id = 1000;
    eventually(Duration::from_secs(10), async || {
        id += 1;
        status_with(addr, token, id).await == 200
    })
    .await
}

/// The HTTP status of one vm_clone call carrying `token`.
async fn status_with(addr: SocketAddr, token: &str, id: u64) -> u16 {
    let auth = format!("Bearer {token}");
    post_json(
        addr,
        &[("Authorization", &auth)],
        &call(id, "vm_clone", json!({})),
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_keys_are_discovered_from_the_issuer_and_follow_its_rotation() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(PER_AGENT);
    let (a, b) = (SigningKey::new("a"), SigningKey::new("b"));
    let idp = OidcProvider::start(&[&a]).await;
    let issuer = idp.issuer();
    let s = oidc_sidecar(&idp, &idp.ca(), "1s", &policy, &upstream, &redis);

    assert!(
        admitted_within_10s(s.listen, &a.token(&issuer, "agent-a")).await,
        "keys discovered via {issuer}/.well-known/openid-configuration"
    );
    assert_eq!(
        status_with(s.listen, &b.token(&issuer, "agent-b"), 100).await,
        401,
        "b is not published yet"
    );
    assert_eq!(
        status_with(s.listen, &b.token("https://elsewhere", "agent-b"), 101).await,
        401
    );

    // The IdP rotates: b in, a out. The sidecar follows without a restart.
    idp.serve_keys(&[&b]);
    assert!(
        admitted_within_10s(s.listen, &b.token(&issuer, "agent-b")).await,
        "the rotated key is fetched"
    );
    assert_eq!(
        status_with(s.listen, &a.token(&issuer, "agent-a"), 200).await,
        401
    );

    // An outage: the keys in force stay, the metric says so.
    idp.fail();
    assert!(fetch_failed(s.admin).await);
    assert_eq!(
        status_with(s.listen, &b.token(&issuer, "agent-b"), 300).await,
        200
    );
    let lines = s.proc.lines.lock().unwrap().clone();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("cannot fetch the JWKS"))
            .count(),
        1,
        "one line per distinct problem: {lines:#?}"
    );
    assert!(upstream_calls(&upstream, "vm_clone") >= 3);
}

/// Whether the sidecar at `admin` reports a failed JWKS fetch within 10 s.
async fn fetch_failed(admin: SocketAddr) -> bool {
    eventually(Duration::from_secs(10), async || {
        sample(&metrics(admin).await, &["tollgate_jwks_reload_failing"]) == Some(1.0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jwks_that_cannot_be_trusted_refuses_tokens_as_unavailable() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(PER_AGENT);
    let a = SigningKey::new("a");
    let idp = OidcProvider::start(&[&a]).await;
    let issuer = idp.issuer();
    let token = a.token(&issuer, "agent-a");

    // A CA that did not sign the IdP's certificate: the keys are never
    // fetched, so no token can be checked — 503, never let through.
    let stranger = support::redis::Tls::generate(0, false);
    let s = oidc_sidecar(&idp, &stranger.ca(), "1s", &policy, &upstream, &redis);
    assert!(
        fetch_failed(s.admin).await,
        "the fetch was tried and failed"
    );
    assert_eq!(status_with(s.listen, &token, 1).await, 503);
    let m = metrics(s.admin).await;
    assert!(
        sample(
            &m,
            &["tollgate_identity_failures_total", "reason=\"unavailable\""]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        s.proc
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("cannot fetch the JWKS") && l.contains("invalid peer certificate")),
        "the log says why: {:#?}",
        s.proc.lines.lock().unwrap()
    );

    // A discovery document naming another issuer is not believed.
    idp.claim_issuer("https://impostor.example");
    let s2 = oidc_sidecar(&idp, &idp.ca(), "1s", &policy, &upstream, &redis);
    assert!(
        fetch_failed(s2.admin).await,
        "discovery was tried and refused"
    );
    assert!(
        s2.proc
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("names issuer") && l.contains("impostor.example")),
        "{:#?}",
        s2.proc.lines.lock().unwrap()
    );
    assert_eq!(status_with(s2.listen, &token, 2).await, 503);
    assert_eq!(idp.jwks_requests(), 0, "the keys were never fetched");
    assert!(upstream.seen().is_empty(), "nothing reached the MCP server");
}

#[test]
fn jwt_identity_settings_are_checked_at_start() {
    let (_dir, policy) = policy_file(PER_AGENT);
    let policy = policy.to_str().unwrap();
    let base = [
        "--policy",
        policy,
        "--upstream",
        "http://127.0.0.1:9",
        "--identity",
        "jwt",
    ];
    let cases: [(&[&str], &str); 4] = [
        (&[], "--jwks-file, --jwks-url, or --jwt-issuer"),
        (
            &["--jwks-url", "http://idp.example/keys"],
            "must be an https:// URL",
        ),
        (
            &["--jwt-issuer", "http://idp.example"],
            "must be an https:// URL",
        ),
        (
            &[
                "--jwt-issuer",
                "https://idp.example",
                "--jwks-ca-file",
                "/nonexistent.pem",
            ],
            "cannot read --jwks-ca-file /nonexistent.pem",
        ),
    ];
    for (args, want) in cases {
        let err = refused_at_start(&base, args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
