//! Shared budgets (`scope: Shared`) across sidecar processes, with a real
//! redis-server on loopback; and per-caller identity from bearer JWTs.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use support::idp::{OidcProvider, SigningKey};
use support::redis::Redis;
use support::upstream::{Framing, Upstream};
use support::{
    Answer, TollgateProc, call, eventually, metrics, policy_file, post_json, sample, tollgate,
};

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

/// One call of `tool` through the sidecar at `addr`, judged at both ends
/// (see [`Upstream::through`]).
async fn admitted(
    upstream: &Upstream,
    addr: SocketAddr,
    tool: &str,
    headers: &[(&str, &str)],
) -> Answer {
    upstream
        .through(
            addr,
            headers,
            tool,
            json!({"name": "vm-1", "namespace": "vms"}),
        )
        .await
}

/// Whether the first `n` of `answers` were let through and the rest refused
/// by a rate limit.
fn first_admitted_then_rate_limited(answers: &[Answer], n: usize) -> bool {
    answers[..n].iter().all(Answer::is_allowed)
        && answers[n..]
            .iter()
            .all(|a| a.reason() == Some("rate_limit"))
}

fn upstream_calls(upstream: &Upstream, tool: &str) -> usize {
    upstream.calls().iter().filter(|c| *c == tool).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_sidecars_share_one_budget_exactly() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    // The shipped example (vm_clone at 30, scope Shared) with its window an
    // hour instead of a minute: 90 calls on 2 cores may take longer than one.
    let (_dir, policy) =
        support::example_with("examples/shared-budget.yaml", "window: 1m", "window: 1h");
    let sidecars: Vec<TollgateProc> = (0..3)
        .map(|_| sidecar(&policy, &upstream, &redis, &[]))
        .collect();

    // 90 simultaneous calls, 30 on each sidecar.
    let mut tasks = Vec::new();
    for i in 0..90 {
        let addr = sidecars[i % 3].listen;
        let upstream = upstream.clone();
        tasks.push(tokio::spawn(async move {
            admitted(&upstream, addr, "vm_clone", &[]).await
        }));
    }
    let mut allowed = 0;
    let mut denied = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Answer::Allowed(_) => allowed += 1,
            d @ Answer::Denied(_) => denied.push(d),
            other => panic!("neither allowed nor denied: {other:?}"),
        }
    }
    assert_eq!(allowed, 30, "a shared limit of 30 admits exactly 30 of 90");
    assert_eq!(
        upstream_calls(&upstream, "vm_clone"),
        30,
        "exactly 30 reached the MCP server"
    );
    for d in &denied {
        assert_eq!(d.reason(), Some("rate_limit"), "{d:?}");
        assert!(d.text().contains("rate limit"), "{d:?}");
        let retry = d.denial()["retryAfterSeconds"].as_u64().unwrap();
        assert!((1..=3600).contains(&retry), "{d:?}");
    }

    // Whichever sidecar admitted the 30, the budget is one for all three:
    // each refuses its next call (with three budgets each would admit it).
    for s in &sidecars {
        let next = admitted(&upstream, s.listen, "vm_clone", &[]).await;
        assert_eq!(next.reason(), Some("rate_limit"), "{next:?}");
    }
    let count = |m: &str, decision: &str| {
        sample(
            m,
            &[
                "tollgate_tool_calls_total{",
                "tool=\"vm_clone\"",
                &format!("decision=\"{decision}\""),
            ],
        )
        .unwrap_or(0.0)
    };
    let (mut admitted_by, mut denied_by) = (Vec::new(), Vec::new());
    for s in &sidecars {
        let m = metrics(s.admin).await;
        admitted_by.push(count(&m, "allowed"));
        denied_by.push(count(&m, "denied"));
        assert_eq!(sample(&m, &["tollgate_ratelimit_store_up"]), Some(1.0));
    }
    assert_eq!(admitted_by.iter().sum::<f64>(), 30.0, "{admitted_by:?}");
    assert_eq!(denied_by.iter().sum::<f64>(), 63.0, "{denied_by:?}");

    // The budget's key expires with its window: nothing outlives it.
    let keys = redis.keys("{tollgate}:rl:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(
        redis.zcard(&keys[0]),
        30,
        "one admission per call let through"
    );
    let ttl = redis.pttl(&keys[0]);
    assert!(ttl > 0 && ttl <= 3_600_000, "ttl {ttl} ms");
}

/// A call admitted by the shared budget and then refused by a stricter
/// local one (scope Pod) takes its shared admission back (the RELEASE
/// script), so refused calls never spend the budget every sidecar shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_a_local_limit_refuses_gives_its_shared_admission_back() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: two-tiers, namespace: vms}
spec:
  defaultAction: Deny
  rules:
    - name: clones
      tools: [vm_clone]
      action: Allow
      rateLimits:
        - {requests: 5, window: 2h, scope: Shared}
        - {requests: 2, window: 1h}
"#,
    );
    let sidecars: Vec<TollgateProc> = (0..3)
        .map(|_| sidecar(&policy, &upstream, &redis, &[]))
        .collect();
    let calls = async |s: &TollgateProc, n: usize| {
        let mut answers = Vec::new();
        for _ in 0..n {
            answers.push(admitted(&upstream, s.listen, "vm_clone", &[]).await);
        }
        answers
    };
    let local_refusal = |a: &Answer| {
        a.reason() == Some("rate_limit") && a.text().contains("rate limit of 2 per 1h")
    };

    // The first sidecar: 2 admitted, then its own limit refuses 3 — each of
    // those after Redis had admitted it.
    let first = calls(&sidecars[0], 5).await;
    assert!(first[..2].iter().all(Answer::is_allowed), "{first:?}");
    assert!(first[2..].iter().all(local_refusal), "{first:?}");
    let keys = redis.keys("{tollgate}:rl:*");
    assert_eq!(keys.len(), 1, "one shared bucket: {keys:?}");
    assert_eq!(
        redis.zcard(&keys[0]),
        2,
        "Redis holds only the admissions of calls that went through"
    );

    // So 3 of the shared 5 are left: 2 for the second sidecar (its own
    // limit again stops the third), 1 for the third.
    let second = calls(&sidecars[1], 3).await;
    assert!(second[..2].iter().all(Answer::is_allowed), "{second:?}");
    assert!(local_refusal(&second[2]), "{second:?}");
    let third = calls(&sidecars[2], 2).await;
    assert!(third[0].is_allowed(), "{third:?}");
    assert_eq!(third[1].reason(), Some("rate_limit"), "{third:?}");
    assert!(
        third[1].text().contains("rate limit of 5 per 2h"),
        "the shared budget is spent: {third:?}"
    );
    assert_eq!(redis.zcard(&keys[0]), 5);
    assert_eq!(upstream_calls(&upstream, "vm_clone"), 5);
}

/// Whether `answer` is the refusal of a shared limit whose store is down.
fn store_unavailable(answer: &Answer) -> bool {
    answer.is_denied() && answer.text().contains("cannot be reached")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fails_closed_then_recovers() {
    let mut redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(&shared_policy(1000, "Deny"));
    let s = sidecar(&policy, &upstream, &redis, &["--redis-timeout", "200ms"]);
    let store_errors = async || {
        sample(
            &metrics(s.admin).await,
            &["tollgate_ratelimit_store_errors_total"],
        )
        .unwrap_or(0.0)
    };

    assert!(
        admitted(&upstream, s.listen, "vm_clone", &[])
            .await
            .is_allowed()
    );
    redis.kill();
    assert!(!redis.ping(), "redis-server is gone");
    for _ in 0..10 {
        let a = admitted(&upstream, s.listen, "vm_clone", &[]).await;
        assert!(
            store_unavailable(&a),
            "a shared limit without its store must deny: {a:?}"
        );
    }
    // Calls no shared limit covers are not affected.
    assert!(
        admitted(&upstream, s.listen, "pods_list", &[])
            .await
            .is_allowed()
    );
    // Several calls that each found Redis down (not just one, then the
    // back-off): the log below must still say it once.
    let mut last = None;
    assert!(
        eventually(Duration::from_secs(10), async || {
            last = Some(admitted(&upstream, s.listen, "vm_clone", &[]).await);
            store_errors().await >= 3.0
        })
        .await,
        "fewer than 3 store errors; last call: {last:?}"
    );
    assert!(store_unavailable(last.as_ref().unwrap()), "{last:?}");
    let m = metrics(s.admin).await;
    assert_eq!(sample(&m, &["tollgate_ratelimit_store_up"]), Some(0.0));
    assert_eq!(upstream_calls(&upstream, "vm_clone"), 1);

    redis.restart();
    assert!(
        eventually(Duration::from_secs(15), async || admitted(
            &upstream,
            s.listen,
            "vm_clone",
            &[]
        )
        .await
        .is_allowed())
        .await,
        "shared limits admit again once Redis is back"
    );
    let m = metrics(s.admin).await;
    assert_eq!(sample(&m, &["tollgate_ratelimit_store_up"]), Some(1.0));

    // One log line per transition, however many calls failed. The recovery
    // line comes last, so once it is in, every earlier line is too.
    let back = "shared rate-limit store is reachable again";
    let lines = || s.proc.lines.lock().unwrap().clone();
    assert_eq!(s.proc.count_once_there(back, 1), 1, "{:#?}", lines());
    assert_eq!(
        s.proc.count("shared rate-limit store is unreachable"),
        1,
        "{:#?}",
        lines()
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
    for i in 0..10 {
        let a = admitted(&upstream, sidecars[i % 2].listen, "vm_clone", &[]).await;
        if a.is_allowed() {
            allowed += 1;
        } else {
            assert_eq!(
                a.reason(),
                Some("rate_limit"),
                "denied for the budget: {a:?}"
            );
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
        for _ in 1..4 {
            let a = admitted(&upstream, s.listen, "vm_clone", &[]).await;
            assert!(
                store_unavailable(&a),
                "{case}: a shared limit without its store must deny: {a:?}"
            );
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
    let sidecars = [
        sidecar(&policy, &upstream, &redis, &["--redis-timeout", "200ms"]),
        sidecar(&policy, &upstream, &redis, &["--redis-timeout", "200ms"]),
    ];
    redis.kill();
    assert!(!redis.ping(), "redis-server is gone");
    // Each sidecar counts 3 in its own memory. Were Redis still counting,
    // the two together would get 3, not 6.
    for s in &sidecars {
        let mut results = Vec::new();
        for _ in 1..=4 {
            results.push(admitted(&upstream, s.listen, "vm_clone", &[]).await);
        }
        assert!(first_admitted_then_rate_limited(&results, 3), "{results:?}");
        assert!(
            results[3].text().contains("rate limit of 3 per 1m"),
            "{results:?}"
        );
        let m = metrics(s.admin).await;
        assert_eq!(
            sample(&m, &["tollgate_ratelimit_store_up"]),
            Some(0.0),
            "{m}"
        );
        assert!(sample(&m, &["tollgate_ratelimit_store_errors_total"]).unwrap() >= 1.0);
    }
    assert_eq!(upstream_calls(&upstream, "vm_clone"), 6);
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
    for s in [&a, &b, &a] {
        alice_results.push(admitted(&upstream, s.listen, "vm_clone", &as_alice).await);
    }
    assert!(
        first_admitted_then_rate_limited(&alice_results, 2),
        "alice: 2 per minute across both replicas: {alice_results:?}"
    );
    let mut bob_results = Vec::new();
    for s in [&b, &a, &b] {
        bob_results.push(admitted(&upstream, s.listen, "vm_clone", &as_bob).await);
    }
    assert!(
        first_admitted_then_rate_limited(&bob_results, 2),
        "bob's budget is his own: {bob_results:?}"
    );
    assert_eq!(upstream_calls(&upstream, "vm_clone"), 4);

    // Rules per caller: only ops-* may delete, and only they see the tool.
    let ops = format!("Bearer {}", idp.token("ops-carol", 300));
    assert!(
        admitted(
            &upstream,
            a.listen,
            "pods_delete",
            &[("Authorization", &ops)]
        )
        .await
        .is_allowed()
    );
    let v = admitted(&upstream, a.listen, "pods_delete", &as_alice).await;
    assert!(
        v.is_denied() && v.text().contains("\"agent-alice\" is not one of"),
        "{v:?}"
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
        admitted(&upstream, s.listen, "vm_clone", &[("Authorization", &ok)])
            .await
            .is_allowed()
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
    assert_eq!(
        s.proc.count_once_there("JWKS change refused", 1),
        1,
        "reported once, not on every check: {:#?}",
        s.proc.lines.lock().unwrap()
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
    // Another fetch fails (the IdP counts it; the sidecar retries every
    // 10 s) before the log is read: one line for the problem, not one per
    // failed fetch.
    let refused = idp.refused();
    assert!(
        eventually(Duration::from_secs(20), async || idp.refused() > refused).await,
        "the sidecar stopped fetching"
    );
    assert_eq!(
        s.proc.count_once_there("cannot fetch the JWKS", 1),
        1,
        "one line per distinct problem: {:#?}",
        s.proc.lines.lock().unwrap()
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

/// `vm_clone` arguments carrying one DataVolume of `size` (the storage
/// policies below map vm_clone's `resource` argument to manifests).
fn data_volume(size: &str) -> serde_json::Value {
    json!({"resource": format!("apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: d, namespace: vms}}\nspec: {{storage: {{resources: {{requests: {{storage: {size}}}}}}}}}\n")})
}

/// A size budget (`scope: Shared`) is one budget across sidecars, in
/// amounts: 60Gi through one sidecar leaves 40Gi for the other, and the
/// refusal says what was asked and what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_storage_budget_spans_two_sidecars() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: storage, namespace: vms}
spec:
  defaultAction: Deny
  resourceMappings:
    - {tools: [vm_clone], manifest: resource}
  rules:
    - name: disks
      resources: [{group: cdi.kubevirt.io, kind: DataVolume}]
      action: Allow
      budgets:
        - {resource: storage, amount: 100Gi, window: 1h, scope: Shared, key: {namespace: true}}
"#,
    );
    let sidecars: Vec<TollgateProc> = (0..2)
        .map(|_| sidecar(&policy, &upstream, &redis, &[]))
        .collect();
    let ask = |i: usize, size: &str| {
        upstream.through(sidecars[i].listen, &[], "vm_clone", data_volume(size))
    };
    assert!(ask(0, "60Gi").await.is_allowed());
    let refused = ask(1, "60Gi").await;
    assert_eq!(refused.reason(), Some("rate_limit"), "{refused:?}");
    assert!(
        refused.text().contains(
            "this call needs 60Gi of storage; 40Gi of the budget of 100Gi of storage per 1h per namespace remain"
        ),
        "{refused:?}"
    );
    assert!(ask(1, "40Gi").await.is_allowed());
    assert_eq!(ask(0, "1Gi").await.reason(), Some("rate_limit"));
    // Each sidecar counts what it admitted, in bytes.
    for (s, gib) in sidecars.iter().zip([60.0, 40.0]) {
        let m = metrics(s.admin).await;
        assert_eq!(
            sample(
                &m,
                &["tollgate_budget_consumed_total{", "resource=\"storage\""]
            ),
            Some(gib * f64::from(1u32 << 30))
        );
    }
    // One bucket; admissions within a 64th of the window share one entry
    // of the weighted log; it expires with the window.
    let keys = redis.keys("{tollgate}:rl:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(redis.llen(&keys[0]), 1);
    let ttl = redis.pttl(&keys[0]);
    assert!(ttl > 0 && ttl <= 3_600_000, "ttl {ttl} ms");
}

/// A shared size draw is taken back when a local limit then refuses the
/// call (the RELEASE script on the weighted log), so the amount stays
/// available to every sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_call_gives_its_shared_storage_back() {
    let redis = Redis::start();
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: storage, namespace: vms}
spec:
  defaultAction: Deny
  resourceMappings:
    - {tools: [vm_clone], manifest: resource}
  rules:
    - name: disks
      resources: [{group: cdi.kubevirt.io, kind: DataVolume}]
      action: Allow
      rateLimits:
        - {requests: 1, window: 1h}
      budgets:
        - {resource: storage, amount: 100Gi, window: 1h, scope: Shared}
"#,
    );
    let sidecars: Vec<TollgateProc> = (0..2)
        .map(|_| sidecar(&policy, &upstream, &redis, &[]))
        .collect();
    let ask = |i: usize, size: &str| {
        upstream.through(sidecars[i].listen, &[], "vm_clone", data_volume(size))
    };
    assert!(ask(0, "60Gi").await.is_allowed());
    // The shared budget admits 30Gi, the local limit of 1 then refuses:
    // the 30Gi go back.
    let refused = ask(0, "30Gi").await;
    assert_eq!(refused.reason(), Some("rate_limit"), "{refused:?}");
    assert!(
        refused.text().contains("1 DataVolumes per 1h"),
        "{refused:?}"
    );
    // All 40Gi left are there for the other sidecar.
    let other = ask(1, "40Gi").await;
    assert!(other.is_allowed(), "{other:?}");
}
