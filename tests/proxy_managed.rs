//! A controller-managed sidecar without a real controller: it fails closed
//! until its first snapshot (unless told to fail open), takes rules only
//! from a controller whose certificate chains to the CA it was given, never
//! over plain HTTP unless told to be insecure, and refuses a snapshot meant
//! for another pod.
//!
//! The "controllers" here are small TLS servers on loopback speaking the
//! push protocol (`tollgate_policy::snapshot`): one whose certificate the
//! sidecar trusts, and an impostor with a certificate from another CA.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::upstream::{Framing, Upstream};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_policy::snapshot::{Snapshot, SnapshotPolicy};

const PATIENCE: Duration = Duration::from_secs(20);

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, and a serving certificate for 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn ca_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("controller-ca.crt");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}

/// What a fake controller saw.
#[derive(Default)]
struct Seen {
    /// TLS handshakes that completed.
    handshakes: usize,
    /// Versions acknowledged.
    acks: Vec<String>,
}

/// A push server on loopback that streams `events` (SSE bytes) to whoever
/// asks for a snapshot, then holds the stream open; records acks.
struct FakeController {
    url: String,
    seen: Arc<Mutex<Seen>>,
    events: tokio::sync::watch::Sender<Vec<u8>>,
}

impl FakeController {
    async fn start(pki: &Pki) -> FakeController {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (events, events_rx) = tokio::sync::watch::channel(Vec::new());
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, mut events) = (acceptor.clone(), s.clone(), events_rx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    seen.lock().unwrap().handshakes += 1;
                    let mut buf = vec![0u8; 16384];
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if request.starts_with("POST /v1/acks/") {
                        if let Some(body) = request.split("\r\n\r\n").nth(1) {
                            let v: serde_json::Value =
                                serde_json::from_str(body).unwrap_or_default();
                            if let Some(version) = v["version"].as_str() {
                                seen.lock().unwrap().acks.push(version.to_owned());
                            }
                        }
                        let _ = tls
                            .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
                    if tls.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // Every version of `events` as it is set, as chunks.
                    loop {
                        let data = events.borrow_and_update().clone();
                        if !data.is_empty() {
                            let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                            chunk.extend_from_slice(&data);
                            chunk.extend_from_slice(b"\r\n");
                            if tls.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                        if events.changed().await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeController { url, seen, events }
    }

    /// Sends a `snapshot` event for `namespace/pod` allowing `tool`.
    fn send_snapshot(&self, namespace: &str, pod: &str, tool: &str) -> String {
        let spec = tollgate_policy::parse::parse_spec(json!({
            "defaultAction": "Deny",
            "rules": [{"name": "r", "tools": [tool], "action": "Allow"}]
        }))
        .unwrap();
        let snapshot = Snapshot::new(
            namespace,
            pod,
            vec![SnapshotPolicy {
                name: format!("{namespace}/fake"),
                generation: 1,
                spec,
                notify_keys: Default::default(),
            }],
        );
        let data = serde_json::to_string(&snapshot).unwrap();
        self.events.send_replace(
            format!(
                "event: snapshot\nid: {}\ndata: {data}\n\n",
                snapshot.version
            )
            .into_bytes(),
        );
        snapshot.version
    }

    fn handshakes(&self) -> usize {
        self.seen.lock().unwrap().handshakes
    }

    fn acks(&self) -> Vec<String> {
        self.seen.lock().unwrap().acks.clone()
    }
}

fn token(dir: &std::path::Path) -> std::path::PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, "not-a-real-token").unwrap();
    token
}

/// A sidecar for pod `ns/p` following `controller`, with `extra` flags.
fn managed(
    upstream: &Upstream,
    token: &std::path::Path,
    controller: &str,
    extra: &[&str],
) -> TollgateProc {
    let upstream = upstream.url();
    let mut args = vec![
        "--controller",
        controller,
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

/// A sidecar whose (trusted) controller does not answer.
fn unreachable_controller(up: &Upstream, extra: &[&str]) -> (TollgateProc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("tollgate").ca_file(dir.path());
    let controller = format!("https://127.0.0.1:{}", dead_port());
    let mut flags = vec!["--controller-ca-file", ca.to_str().unwrap()];
    flags.extend_from_slice(extra);
    (managed(up, &token(dir.path()), &controller, &flags), dir)
}

async fn allows(sidecar: &TollgateProc, tool: &str) -> bool {
    post_json(sidecar.listen, &[], &call(1, tool, json!({})))
        .await
        .json()["result"]["isError"]
        .is_null()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_snapshot_tool_calls_are_refused() {
    let up = Upstream::start(Framing::Json).await;
    let (sidecar, _dir) = unreachable_controller(&up, &[]);
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
    assert_eq!(
        sample(&m, &["tollgate_sidecar_controller_connected "]),
        Some(0.0)
    );
}

/// Only while no rules have arrived; that they take over once they arrive
/// is `fail_open_lets_calls_through_until_rules_arrive` in controller_cluster.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_lets_calls_through_while_no_controller_answers() {
    let up = Upstream::start(Framing::Json).await;
    let (sidecar, _dir) = unreachable_controller(&up, &["--fail-open"]);
    let answer = up.through(sidecar.listen, &[], "anything", json!({})).await;
    assert!(answer.is_allowed(), "{answer:?}");
    assert_eq!(up.calls(), ["anything"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_come_only_from_a_controller_signed_by_the_given_ca() {
    let up = Upstream::start(Framing::Json).await;
    let dir = tempfile::tempdir().unwrap();
    let ours = Pki::new("tollgate");
    let ca = ours.ca_file(dir.path());
    let ca_flag = ["--controller-ca-file", ca.to_str().unwrap()];

    // An impostor at the controller's address, with a certificate from
    // another CA, offering rules that allow everything the agent asks.
    let impostor = FakeController::start(&Pki::new("impostor")).await;
    impostor.send_snapshot("ns", "p", "pods_delete");
    let fooled = managed(&up, &token(dir.path()), &impostor.url, &ca_flag);
    // The sidecar has tried (and failed) at least twice to connect ...
    let m = eventually(PATIENCE, async || {
        sample(
            &metrics(fooled.admin).await,
            &["tollgate_sidecar_controller_reconnects_total "],
        )
        .is_some_and(|n| n >= 2.0)
    })
    .await;
    assert!(m, "the sidecar never tried the impostor");
    // ... never finished a handshake, and stays fail-closed.
    assert_eq!(
        impostor.handshakes(),
        0,
        "the impostor's certificate was accepted"
    );
    let v = post_json(fooled.listen, &[], &call(1, "pods_delete", json!({})))
        .await
        .json();
    assert_eq!(v["error"]["code"], -31004, "{v}");
    let m = metrics(fooled.admin).await;
    assert_eq!(
        sample(&m, &["tollgate_sidecar_controller_connected "]),
        Some(0.0)
    );
    assert!(impostor.acks().is_empty());

    // The same server with a certificate from the trusted CA is believed:
    // the refusal above was about the certificate, nothing else.
    let genuine = FakeController::start(&ours).await;
    let version = genuine.send_snapshot("ns", "p", "pods_delete");
    let trusting = managed(&up, &token(dir.path()), &genuine.url, &ca_flag);
    assert!(eventually(PATIENCE, async || allows(&trusting, "pods_delete").await).await);
    assert!(eventually(PATIENCE, async || genuine.acks() == [version.clone()]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_for_another_pod_is_refused_and_the_rules_in_force_stay() {
    let up = Upstream::start(Framing::Json).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("tollgate");
    let ca = pki.ca_file(dir.path());
    let controller = FakeController::start(&pki).await;
    let mine = controller.send_snapshot("ns", "p", "pods_list");
    let sidecar = managed(
        &up,
        &token(dir.path()),
        &controller.url,
        &["--controller-ca-file", ca.to_str().unwrap()],
    );
    assert!(eventually(PATIENCE, async || allows(&sidecar, "pods_list").await).await);

    // The controller (or whoever) now sends the rules of pod ns/other.
    let theirs = controller.send_snapshot("ns", "other", "pods_delete");
    let rejected = eventually(PATIENCE, async || {
        sample(
            &metrics(sidecar.admin).await,
            &["tollgate_snapshots_rejected_total{reason=\"other_pod\"}"],
        ) == Some(1.0)
    })
    .await;
    assert!(rejected, "the other pod's snapshot was not refused");
    assert!(allows(&sidecar, "pods_list").await, "its own rules stay");
    assert!(
        !allows(&sidecar, "pods_delete").await,
        "the other pod's rules never apply"
    );
    assert_eq!(
        controller.acks(),
        std::slice::from_ref(&mine),
        "never acknowledged {theirs}"
    );
}

#[test]
fn plain_http_to_the_controller_is_refused_unless_insecure() {
    let run = |extra: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "proxy",
                "--controller",
                "http://127.0.0.1:1",
                "--token-file",
                "/x",
                "--pod-name",
                "p",
                "--pod-namespace",
                "ns",
                "--upstream",
                "http://127.0.0.1:2",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("TOLLGATE_CONTROLLER_CA_PEM")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A sidecar that starts instead of refusing would run forever.
        let deadline = std::time::Instant::now() + PATIENCE;
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the sidecar started instead of refusing {extra:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };
    // No CA at all.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--controller needs the controller's CA"),
        "{stderr}"
    );
    // A CA, but the URL is http://: nothing would be verified.
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("tollgate").ca_file(dir.path());
    let out = run(&["--controller-ca-file", ca.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must be reached over https://")
            && stderr.contains("--controller-insecure"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_allows_plain_http_for_local_tests() {
    let up = Upstream::start(Framing::Json).await;
    let dir = tempfile::tempdir().unwrap();
    let controller = format!("http://127.0.0.1:{}", dead_port());
    let sidecar = managed(
        &up,
        &token(dir.path()),
        &controller,
        &["--controller-insecure"],
    );
    let v = post_json(sidecar.listen, &[], &call(1, "anything", json!({})))
        .await
        .json();
    assert_eq!(v["error"]["code"], -31004, "{v}");
}

#[test]
fn managed_mode_needs_the_pod_identity() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "proxy",
            "--controller",
            "https://127.0.0.1:1",
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

/// The controller-connection metrics are named for the sidecar (the
/// controller's own are `tollgate_controller_*`) and only a managed sidecar
/// has them, so a file-mode sidecar never looks disconnected. Both say which
/// build they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_managed_sidecars_have_controller_metrics_and_every_one_its_build() {
    let up = Upstream::start(Framing::Json).await;
    let build = format!(
        "tollgate_build_info{{commit=\"{}\",version=\"{}\"}} 1",
        env!("TOLLGATE_COMMIT"),
        env!("CARGO_PKG_VERSION")
    );
    let (sidecar, _dir) = unreachable_controller(&up, &[]);
    let m = metrics(sidecar.admin).await;
    for name in [
        "tollgate_sidecar_controller_connected ",
        "tollgate_sidecar_controller_last_contact_timestamp_seconds ",
        "tollgate_sidecar_controller_reconnects_total ",
    ] {
        assert!(sample(&m, &[name]).is_some(), "{name} missing:\n{m}");
    }
    assert!(m.lines().any(|l| l == build), "no `{build}`:\n{m}");

    let (_policy_dir, policy) = policy_file(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec: {defaultAction: Deny}\n",
    );
    let file_mode = tollgate(&[
        "--policy",
        policy.to_str().unwrap(),
        "--upstream",
        &up.url(),
    ]);
    let m = metrics(file_mode.admin).await;
    let about_a_controller: Vec<&str> = m
        .lines()
        .filter(|l| l.contains("controller") || l.contains("snapshots_rejected"))
        .collect();
    assert!(
        about_a_controller.is_empty(),
        "a file-mode sidecar has controller metrics: {about_a_controller:?}"
    );
    assert!(m.lines().any(|l| l == build), "no `{build}`:\n{m}");
}
