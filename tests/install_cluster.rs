//! The Helm chart installed for real on a kube-apiserver, the controller run
//! as a local process with exactly the chart's ServiceAccount permissions
//! (impersonation) and the chart's own arguments, and the apiserver calling
//! its webhook.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::chart::{ca_bundle_published, controller_as_chart, helm, push_address};
use support::cluster::{Cluster, token_file};
use support::*;

const PATIENCE: Duration = Duration::from_secs(30);

/// The cluster's kubeconfig, acting as the chart's ServiceAccount.
fn impersonating(cluster: &Cluster, dir: &Path, ns: &str, sa: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let mut kc: Value = serde_saphyr::from_str(&text).unwrap();
    for user in kc["users"].as_array_mut().unwrap() {
        user["user"]["as"] = json!(format!("system:serviceaccount:{ns}:{sa}"));
        user["user"]["as-groups"] = json!([
            "system:serviceaccounts",
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated"
        ]);
    }
    let path = dir.join("kubeconfig-as-controller.json");
    std::fs::write(&path, kc.to_string()).unwrap();
    path
}

fn create_pod(cluster: &Cluster, ns: &str, name: &str, labels: &str) -> Result<Value, String> {
    let _ = cluster.kubectl(&["-n", ns, "create", "serviceaccount", "default"]);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec:\n  containers: [{{name: server, image: example.invalid/mcp, ports: [{{containerPort: 8081}}]}}]\n"
    ))?;
    Ok(cluster.get_json(&["-n", ns, "pod", name]))
}

/// The leaf certificate (DER) the webhook on `port` serves, verified
/// against `ca_pem` for 127.0.0.1, or why there is none (not listening yet,
/// a handshake the CA does not verify).
async fn served_certificate(port: u16, ca_pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("the CA is PEM"))
            .expect("the CA is a certificate");
    }
    assert!(!roots.is_empty(), "no CA certificate in {ca_pem:?}");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no certificate served".to_owned())
}

/// The first certificate of a PEM text, as DER (panics if there is none).
fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap_or_else(|| panic!("no certificate in {pem:?}"))
        .expect("a PEM certificate")
        .to_vec()
}

/// The `admission` line of `tollgate doctor` for the release in `ns`,
/// dialling the webhook with a dry-run pod in `probe_ns`.
fn admission_line(cluster: &Cluster, ns: &str, probe_ns: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "doctor",
            "-n",
            ns,
            "--probe-namespace",
            probe_ns,
            "--kubeconfig",
        ])
        .arg(&cluster.kubeconfig)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    report
        .lines()
        .find(|l| l.contains("] admission: "))
        .unwrap_or_else(|| panic!("no admission line in:\n{report}"))
        .to_owned()
}

/// The admin address (`host:port`) the controller printed at start.
fn admin_address(controller: &Proc) -> String {
    let lines = controller.lines.lock().unwrap();
    let started = lines
        .iter()
        .find(|l| l.contains("tollgate controller started"))
        .expect("the controller's start line");
    let v: Value = serde_json::from_str(started).unwrap();
    v["admin"].as_str().expect("its admin address").to_owned()
}

fn has_sidecar(pod: &Value) -> bool {
    pod["spec"]["initContainers"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["name"] == "tollgate"))
        && pod["metadata"]["labels"]["tollgate.dev/sidecar"] == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn helm_install_rbac_webhook_upgrade_uninstall() {
    let cluster = Cluster::get();
    cluster
        .kubectl(&[
            "apply",
            "-f",
            repo_file("tests/fixtures/kubevirt-crds.yaml")
                .to_str()
                .unwrap(),
        ])
        .unwrap();
    let ns = format!("tollgate-system-{}", std::process::id());
    let webhook_port = free_port();
    let webhook_url = format!("https://127.0.0.1:{webhook_port}");
    let chart = repo_file("charts/tollgate");
    let chart = chart.to_str().unwrap();
    // `helm lint --strict`: warnings fail too, with the default values and
    // with every optional part switched on.
    for extra in [
        &[][..],
        &[
            "--set",
            "redis.enabled=true,networkPolicy.enabled=true,metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,metrics.prometheusRule.enabled=true,webhook.certManager.enabled=true",
        ][..],
    ] {
        let lint = helm(cluster, &[&["lint", "--strict", chart][..], extra].concat());
        assert!(lint.is_ok(), "helm lint {extra:?}: {lint:?}");
    }
    // redis.tls.caCert reaches injected sidecars as TOLLGATE_REDIS_CA_PEM,
    // through the controller's --sidecar-env; without a rediss:// URL the
    // chart refuses to render.
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    let ca = ca_file.path();
    std::fs::write(
        ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ca_arg = format!("redis.tls.caCert={}", ca.display());
    let rendered = helm(
        cluster,
        &[
            "template",
            "t",
            chart,
            "--set",
            "redis.url=rediss://redis.shared:6380/0",
            "--set-file",
            &ca_arg,
        ],
    )
    .unwrap();
    assert!(
        rendered.contains(
            r#"- "--sidecar-env=TOLLGATE_REDIS_CA_PEM=-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n""#
        ),
        "{rendered}"
    );
    let refused = helm(
        cluster,
        &[
            "template",
            "t",
            chart,
            "--set",
            "redis.enabled=true",
            "--set-file",
            &ca_arg,
        ],
    )
    .unwrap_err();
    assert!(
        refused.contains("redis.tls.caCert needs a TLS Redis"),
        "{refused}"
    );
    // sidecar.identity.mode=jwt: every sidecar discovers the issuer's keys.
    let jwt = helm(
        cluster,
        &[
            "template",
            "t",
            chart,
            "--set",
            "sidecar.identity.mode=jwt,sidecar.identity.jwt.issuer=https://idp.example,sidecar.identity.jwt.audience=kms,sidecar.identity.required=true",
        ],
    )
    .unwrap();
    for arg in [
        "--sidecar-arg=--identity=jwt",
        "--sidecar-arg=--jwt-issuer=https://idp.example",
        "--sidecar-arg=--jwt-audience=kms",
        "--sidecar-arg=--require-identity",
    ] {
        assert!(jwt.contains(arg), "{arg} missing from\n{jwt}");
    }
    let refused = helm(
        cluster,
        &["template", "t", chart, "--set", "sidecar.identity.mode=jwt"],
    )
    .unwrap_err();
    assert!(
        refused.contains("sidecar.identity.mode jwt needs"),
        "{refused}"
    );
    // A namespace of MCP servers with approvals: its sidecars, its
    // approvers and its notification Secret are bound from values.
    let apps = format!("{ns}-apps");
    let webhook_set = format!("webhook.url={webhook_url}");
    cluster.kubectl(&["create", "namespace", &apps]).unwrap();
    let approvals = [
        format!("approvals.sidecarServiceAccounts[0].namespace={apps}"),
        "approvals.sidecarServiceAccounts[0].name=mcp".to_owned(),
        format!("approvals.approvers[0].namespace={apps}"),
        "approvals.approvers[0].kind=Group".to_owned(),
        "approvals.approvers[0].name=vm-admins".to_owned(),
        format!("approvals.notifySecrets[0].namespace={apps}"),
        "approvals.notifySecrets[0].name=approval-hook".to_owned(),
    ];
    let mut install = vec![
        "install",
        "tollgate",
        chart,
        "-n",
        &ns,
        "--create-namespace",
        "--set",
        &webhook_set,
        "--set",
        "redis.enabled=true",
        "--wait=false",
    ];
    for a in &approvals {
        install.extend(["--set", a]);
    }
    helm(cluster, &install).expect("helm install");

    // The chart's ServiceAccount may do exactly what the controller needs.
    let as_controller = format!("system:serviceaccount:{ns}:tollgate");
    // `kubectl auth can-i` answers "yes" (exit 0) or "no" (exit 1); anything
    // else is kubectl failing, which must not pass as "no".
    let can_as = |who: &str, args: &[&str]| {
        let mut all = vec!["auth", "can-i", "--as", who];
        all.extend_from_slice(args);
        let out = Command::new(cluster.bin.join("kubectl"))
            .env("KUBECONFIG", &cluster.kubeconfig)
            .args(&all)
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout);
        match (out.status.code(), answer.trim()) {
            (Some(0), "yes") => true,
            (Some(1), "no") => false,
            (code, _) => panic!(
                "kubectl auth can-i {args:?} did not answer (exit {code:?}): {answer}{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    for allowed in [
        vec!["watch", "mcptoolpolicies.tollgate.dev", "-A"],
        vec![
            "patch",
            "mcptoolpolicies.tollgate.dev",
            "--subresource=status",
            "-A",
        ],
        vec!["watch", "clustermcptoolpolicies.tollgate.dev"],
        vec![
            "patch",
            "clustermcptoolpolicies.tollgate.dev",
            "--subresource=status",
        ],
        vec!["watch", "namespaces"],
        vec!["watch", "pods", "-A"],
        vec!["create", "tokenreviews.authentication.k8s.io"],
        vec!["watch", "virtualmachineclones.clone.kubevirt.io", "-A"],
        vec![
            "update",
            "leases.coordination.k8s.io/tollgate-controller",
            "-n",
            &ns,
        ],
        vec!["update", "secrets/tollgate-webhook-tls", "-n", &ns],
        vec![
            "patch",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io/tollgate",
        ],
    ] {
        assert!(
            can_as(&as_controller, &allowed),
            "the controller needs: {allowed:?}"
        );
    }
    // The approval bindings, as the apiserver authorizes them.
    let sidecar = format!("system:serviceaccount:{apps}:mcp");
    for (who, allowed) in [
        (
            &as_controller,
            vec!["get", "secrets/approval-hook", "-n", &apps],
        ),
        (
            &sidecar,
            vec!["create", "mcptoolcallapprovals.tollgate.dev", "-n", &apps],
        ),
        (
            &sidecar,
            vec!["delete", "mcptoolcallapprovals.tollgate.dev", "-n", &apps],
        ),
    ] {
        assert!(can_as(who, &allowed), "{who} needs: {allowed:?}");
    }
    for (who, denied) in [
        (&as_controller, vec!["get", "secrets/other", "-n", &apps]),
        (&as_controller, vec!["list", "secrets", "-n", &apps]),
        (
            &sidecar,
            vec!["create", "mcptoolcallapprovals.tollgate.dev", "-n", &ns],
        ),
    ] {
        assert!(!can_as(who, &denied), "{who} must not: {denied:?}");
    }
    let approver = |namespace: &str| {
        can_as(
            "ann",
            &[
                "approve",
                "mcptoolcallapprovals.tollgate.dev",
                "-n",
                namespace,
                "--as-group",
                "vm-admins",
            ],
        )
    };
    assert!(approver(&apps), "vm-admins approve in {apps}");
    assert!(!approver(&ns), "and only there");

    for denied in [
        vec!["get", "secrets", "-n", "default"],
        vec!["list", "secrets", "-A"],
        vec!["get", "secrets/sh.helm.release.v1.tollgate.v1", "-n", &ns],
        vec!["create", "secrets", "-n", &ns],
        vec!["create", "leases.coordination.k8s.io", "-n", &ns],
        vec!["delete", "pods", "-A"],
        vec!["create", "mcptoolpolicies.tollgate.dev", "-A"],
        vec!["patch", "clustermcptoolpolicies.tollgate.dev"],
        vec!["patch", "namespaces"],
        vec![
            "patch",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io/other",
        ],
        vec!["*", "*"],
    ] {
        assert!(
            !can_as(&as_controller, &denied),
            "the controller must not: {denied:?}"
        );
    }

    // The controller as a local process with exactly those permissions.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = impersonating(cluster, dir.path(), &ns, "tollgate");
    let mut controller = controller_as_chart(cluster, &ns, &kubeconfig, webhook_port);
    assert!(
        ca_bundle_published(cluster).await,
        "the controller never published caBundle"
    );

    // The real apiserver calls the webhook.
    let labelled = format!("mcp-{}", std::process::id());
    cluster
        .kubectl(&["create", "namespace", &labelled])
        .unwrap();
    cluster
        .kubectl(&[
            "label",
            "namespace",
            &labelled,
            "tollgate.dev/inject=enabled",
        ])
        .unwrap();
    let plain = format!("plain-{}", std::process::id());
    cluster.kubectl(&["create", "namespace", &plain]).unwrap();
    let injected = create_pod(cluster, &labelled, "kms-0", "app: kms").unwrap();
    assert!(has_sidecar(&injected), "{injected:#}");
    let sidecar = &injected["spec"]["initContainers"][0];
    assert_eq!(
        sidecar["restartPolicy"], "Always",
        "a native sidecar on Kubernetes 1.35"
    );
    assert_eq!(sidecar["image"], "tollgate:0.1.0");
    // redis.enabled: the chart runs a Redis only sidecars may reach, and
    // every injected sidecar keeps its shared budgets there.
    let redis_url = format!("--redis-url=redis://tollgate-redis.{ns}.svc:6379/0");
    assert!(
        sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == redis_url.as_str()),
        "{:#}",
        sidecar["args"]
    );
    let redis = cluster.get_json(&["-n", &ns, "deployment", "tollgate-redis"]);
    assert_eq!(
        redis["spec"]["template"]["spec"]["containers"][0]["image"],
        "redis:7.2-alpine"
    );
    let netpol = cluster.get_json(&["-n", &ns, "networkpolicy", "tollgate-redis"]);
    assert_eq!(
        netpol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["tollgate.dev/sidecar"],
        "true"
    );
    assert!(!has_sidecar(
        &create_pod(cluster, &plain, "other", "app: other").unwrap()
    ));
    assert!(has_sidecar(
        &create_pod(cluster, &plain, "opted-in", "tollgate.dev/inject: enabled").unwrap()
    ));
    assert!(!has_sidecar(
        &create_pod(
            cluster,
            &labelled,
            "opted-out",
            "tollgate.dev/inject: disabled"
        )
        .unwrap()
    ));

    // `tollgate doctor` dials the webhook (a dry-run pod in `plain` gets the
    // sidecar), and the `helm test` probe passes against this controller:
    // /readyz on its admin port, the webhook's TLS under the release CA.
    let _ = cluster.kubectl(&["-n", &plain, "create", "serviceaccount", "default"]);
    assert!(
        admission_line(cluster, &ns, &plain)
            .starts_with("[ok  ] admission: the apiserver reached the webhook"),
        "{}",
        admission_line(cluster, &ns, &plain)
    );
    // A key of the webhook's Secret, decoded.
    let secret = |key: &str| {
        cluster
            .kubectl(&[
                "-n",
                &ns,
                "get",
                "secret",
                "tollgate-webhook-tls",
                "-o",
                &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
            ])
            .unwrap()
    };
    let ca_pem = secret("ca.crt");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("ca.crt");
    std::fs::write(&ca_path, &ca_pem).unwrap();
    let admin = admin_address(&controller);
    let probe = |ca: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("probe")
            .arg(format!("--ready=http://{admin}/readyz"))
            .arg(format!("--tls={webhook_url}/mutate/pod"))
            .arg("--ca-file")
            .arg(ca)
            .output()
            .unwrap()
    };
    assert!(
        eventually(PATIENCE, async || probe(&ca_path).status.success()).await,
        "tollgate probe: {:?}",
        probe(&ca_path)
    );
    // A CA that did not sign the webhook's certificate fails the probe.
    let other_ca = rcgen::KeyPair::generate()
        .and_then(|k| rcgen::CertificateParams::new(vec!["x".into()])?.self_signed(&k))
        .unwrap()
        .pem();
    let other_path = ca_dir.path().join("other.crt");
    std::fs::write(&other_path, other_ca).unwrap();
    let refused = probe(&other_path);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("[FAIL] tls:"),
        "{refused:?}"
    );

    // Per-pod JWT identity: the apiserver stores the pod with the JWKS
    // ConfigMap mounted into the sidecar; a bad annotation is refused with
    // the webhook's reason.
    let _ = cluster.kubectl(&["-n", &plain, "create", "serviceaccount", "default"]);
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: jwt-0\n  namespace: {plain}\n  labels: {{tollgate.dev/inject: enabled}}\n  annotations: {{tollgate.dev/jwks-configmap: agents-idp, tollgate.dev/jwt-issuer: 'https://idp.example'}}\nspec:\n  containers: [{{name: server, image: example.invalid/mcp}}]\n"
        ))
        .unwrap();
    let jwt_pod = cluster.get_json(&["-n", &plain, "pod", "jwt-0"]);
    let volumes = jwt_pod["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["name"] == "tollgate-jwks" && v["configMap"]["name"] == "agents-idp"),
        "{volumes:#?}"
    );
    let args = jwt_pod["spec"]["initContainers"][0]["args"].to_string();
    assert!(
        args.contains("\"--identity=jwt\"")
            && args.contains("\"--jwks-file=/etc/tollgate/jwks/jwks.json\"")
            && args.contains("\"--jwt-issuer=https://idp.example\""),
        "{args}"
    );
    let refused = cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: jwt-bad\n  namespace: {plain}\n  labels: {{tollgate.dev/inject: enabled}}\n  annotations: {{tollgate.dev/jwt-audience: kms}}\nspec:\n  containers: [{{name: server, image: example.invalid/mcp}}]\n"
        ))
        .expect_err("a JWT annotation without its ConfigMap is refused");
    assert!(
        refused.contains("needs tollgate.dev/jwks-configmap"),
        "{refused}"
    );

    // The shipped example: its pod gets the sidecar, which owns the port the
    // Service targets; the server container keeps only loopback.
    cluster
        .kubectl(&[
            "apply",
            "-f",
            repo_file("examples/kubernetes-mcp-server")
                .to_str()
                .unwrap(),
        ])
        .unwrap();
    let deployment = cluster.get_json(&["-n", "mcp", "deployment", "kubernetes-mcp-server"]);
    let mut pod = deployment["spec"]["template"].clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["name"] = json!("kubernetes-mcp-server-0");
    pod["metadata"]["namespace"] = json!("mcp");
    let _ = cluster.kubectl(&["-n", "mcp", "create", "serviceaccount", "default"]);
    cluster
        .apply(&pod.to_string())
        .expect("the example's pod is admitted");
    let pod = cluster.get_json(&["-n", "mcp", "pod", "kubernetes-mcp-server-0"]);
    assert!(has_sidecar(&pod), "{pod:#}");
    let service = cluster.get_json(&["-n", "mcp", "service", "kubernetes-mcp-server"]);
    let target = service["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    let owner: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["spec"]["containers"].as_array().unwrap())
        .filter(|c| {
            c["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == target))
        })
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        owner,
        ["tollgate"],
        "the Service's target port belongs to the sidecar"
    );
    assert!(
        eventually(PATIENCE, async || {
            let s = cluster.policy("mcp", "clone-guard")["status"].clone();
            s["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Accepted" && c["status"] == "True")
            }) && s["selectedSidecars"] == 1
        })
        .await,
        "{:#}",
        cluster.policy("mcp", "clone-guard")["status"]
    );

    // The injected pod's sidecar connects with its pod-bound token, which the
    // controller reviews with its own (impersonated) permissions.
    let up = support::upstream::Upstream::start(support::upstream::Framing::Json).await;
    let token = token_file(dir.path(), &{
        let _ = cluster.kubectl(&["-n", &labelled, "create", "serviceaccount", "default"]);
        cluster
            .kubectl(&[
                "-n",
                &labelled,
                "create",
                "token",
                "default",
                "--audience",
                "tollgate",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                "kms-0",
            ])
            .unwrap()
            .trim()
            .to_owned()
    });
    let push_addr = push_address(&controller);
    // What the webhook injected: the controller's URL (https) and the CA to
    // verify it by. Here the sidecar dials the local process by address,
    // which the certificate names (the chart's webhook.url host).
    let sidecar = &injected["spec"]["initContainers"][0];
    assert!(
        sidecar["args"].as_array().unwrap().iter().any(|a| a
            .as_str()
            .unwrap()
            .starts_with(&format!("https://tollgate.{ns}.svc:9443"))),
        "{:#}",
        sidecar["args"]
    );
    let controller_ca = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TOLLGATE_CONTROLLER_CA_PEM")
        .and_then(|e| e["value"].as_str())
        .expect("the injected sidecar gets the controller's CA")
        .to_owned();
    let controller_ca_file = dir.path().join("controller-ca.crt");
    std::fs::write(&controller_ca_file, &controller_ca).unwrap();
    let tg = tollgate(&[
        "--controller",
        &format!("https://{push_addr}"),
        "--controller-ca-file",
        controller_ca_file.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
        "--pod-name",
        "kms-0",
        "--pod-namespace",
        &labelled,
        "--upstream",
        &up.url(),
    ]);
    cluster
        .apply(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p, namespace: {labelled}}}\nspec:\n  defaultAction: Deny\n  rules: [{{name: r, tools: [pods_list], action: Allow}}]\n"
        ))
        .unwrap();
    assert!(
        eventually(PATIENCE, async || cluster.policy(&labelled, "p")["status"]
            ["synced"]
            == "1/1")
        .await,
        "status: {:#}",
        cluster.policy(&labelled, "p")["status"]
    );
    assert!(up.allows(tg.listen, "pods_list").await);
    assert!(up.denies(tg.listen, "vm_clone").await);

    // Notification Secrets, read with exactly the chart's RBAC: the one
    // listed in approvals.notifySecrets once it exists, never another.
    cluster
        .apply(&format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {{name: hooks, namespace: {apps}}}
spec:
  defaultAction: Deny
  rules:
    - name: listed
      tools: [vm_clone]
      action: RequireApproval
      approval: {{notify: {{url: "https://hooks.example/a", secretRef: {{name: approval-hook, key: hmac}}}}}}
    - name: unlisted
      tools: [vm_delete]
      action: RequireApproval
      approval: {{notify: {{url: "https://hooks.example/b", secretRef: {{name: other, key: hmac}}}}}}
"#
        ))
        .unwrap();
    let notifications = || {
        cluster.policy(&apps, "hooks")["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "NotificationsReady")
            .cloned()
            .unwrap_or_default()
    };
    let says = |parts: &[&str]| {
        let c = notifications();
        c["status"] == "False"
            && parts
                .iter()
                .all(|p| c["message"].as_str().unwrap_or("").contains(p))
    };
    let missing = format!("Secret {apps}/approval-hook not found");
    let forbidden = format!("may not read Secret {apps}/other");
    assert!(
        eventually(PATIENCE, async || says(&[&missing, &forbidden])).await,
        "{:#}",
        notifications()
    );
    cluster
        .kubectl(&[
            "-n",
            &apps,
            "create",
            "secret",
            "generic",
            "approval-hook",
            "--from-literal=hmac=k",
        ])
        .unwrap();
    // Read again within 30 s (the controller's period): only the unlisted
    // one is left.
    assert!(
        eventually(Duration::from_secs(45), async || says(&[&forbidden])
            && !says(&[&missing]))
        .await,
        "{:#}",
        notifications()
    );
    let log = controller.lines.lock().unwrap().join("\n");
    assert!(
        !log.contains("forbidden"),
        "the chart's RBAC refused something:\n{log}"
    );

    // Renewal: a serving certificate near its end is renewed at start-up
    // under the same CA, so the caBundle the apiserver holds stays valid.
    let (old_cert, old_ca) = (secret("tls.crt"), secret("ca.crt"));
    controller.terminate();
    // No webhook listening: doctor's dry-run pod is refused (failurePolicy Fail).
    let down = admission_line(cluster, &ns, &plain);
    assert!(
        down.starts_with("[FAIL] admission: a dry-run pod in") && down.contains("refused"),
        "{down}"
    );
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    cluster
        .kubectl(&[
            "-n",
            &ns,
            "annotate",
            "secret",
            "tollgate-webhook-tls",
            &format!("tollgate.dev/not-after={soon}"),
            "--overwrite",
        ])
        .unwrap();
    let mut controller = controller_as_chart(cluster, &ns, &kubeconfig, webhook_port);
    assert!(
        eventually(PATIENCE, async || secret("tls.crt") != old_cert).await,
        "the certificate was not renewed"
    );
    assert_eq!(secret("ca.crt"), old_ca, "renewed under the same CA");
    let renewed = cluster.get_json(&["-n", &ns, "secret", "tollgate-webhook-tls"]);
    let not_after: u64 = renewed["metadata"]["annotations"]["tollgate.dev/not-after"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        not_after > soon + 300 * 86_400,
        "a fresh year-long certificate"
    );
    // The webhook serves the new certificate, and the apiserver still trusts it.
    let renewed_der = pem_der(&secret("tls.crt"));
    assert_ne!(renewed_der, pem_der(&old_cert));
    let mut served = Err(String::new());
    assert!(
        eventually(PATIENCE, async || {
            served = served_certificate(webhook_port, &old_ca).await;
            served.as_ref() == Ok(&renewed_der)
        })
        .await,
        "the webhook does not serve the renewed certificate: {served:?}"
    );
    assert!(has_sidecar(
        &create_pod(cluster, &labelled, "after-renewal", "app: kms").unwrap()
    ));

    // Webhook unreachable: failurePolicy Fail refuses pods that need it...
    controller.terminate();
    let err =
        create_pod(cluster, &labelled, "while-down", "app: kms").expect_err("failurePolicy Fail");
    assert!(err.contains("inject.tollgate.dev"), "{err}");
    // ... Ignore admits them without the sidecar; helm upgrade applies it.
    let upgrade = |extra: &[&str]| {
        let url = format!("webhook.url={webhook_url}");
        let base = ["upgrade", "tollgate", chart, "-n", &ns, "--set", &url];
        helm(cluster, &[&base[..], extra].concat())
    };
    upgrade(&["--set", "webhook.failurePolicy=Ignore"]).expect("helm upgrade");
    let admitted =
        create_pod(cluster, &labelled, "while-down-2", "app: kms").expect("failurePolicy Ignore");
    assert!(!has_sidecar(&admitted));

    // A TLS Redis under a private CA: the chart hands the CA to the
    // controller, whose webhook gives it to every injected sidecar.
    upgrade(&[
        "--set",
        "redis.url=rediss://redis.shared:6380/0",
        "--set-file",
        &ca_arg,
    ])
    .expect("helm upgrade with a TLS Redis");
    let mut controller = controller_as_chart(cluster, &ns, &kubeconfig, webhook_port);
    let tls_pod = create_pod(cluster, &labelled, "tls-redis", "app: kms").unwrap();
    let sidecar = &tls_pod["spec"]["initContainers"][0];
    assert!(
        sidecar["env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({
                "name": "TOLLGATE_REDIS_CA_PEM",
                "value": std::fs::read_to_string(ca).unwrap()
            })),
        "{:#}",
        sidecar["env"]
    );
    assert!(
        sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--redis-url=rediss://redis.shared:6380/0"),
        "{:#}",
        sidecar["args"]
    );
    controller.terminate();

    // Uninstall leaves the CRD, nothing else of the release.
    helm(cluster, &["uninstall", "tollgate", "-n", &ns]).expect("helm uninstall");
    let leftovers = cluster
        .kubectl(&[
            "get",
            "all,cm,secret,sa,role,rolebinding,lease,networkpolicy,pdb",
            "-n",
            &ns,
            "-o",
            "name",
        ])
        .unwrap();
    let leftovers: Vec<&str> = leftovers
        .lines()
        .filter(|l| !l.ends_with("/kube-root-ca.crt") && !l.is_empty())
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let cluster_wide = cluster
        .kubectl(&[
            "get",
            "clusterrole,clusterrolebinding,mutatingwebhookconfiguration",
            "-o",
            "name",
        ])
        .unwrap();
    assert!(
        !cluster_wide.contains("tollgate"),
        "left behind: {cluster_wide}"
    );
    assert!(
        cluster
            .kubectl(&["get", "crd", "mcptoolpolicies.tollgate.dev"])
            .is_ok(),
        "the CRD stays"
    );
}
