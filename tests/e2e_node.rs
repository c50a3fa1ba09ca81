//! The product the way users run it, on a real one-node Kubernetes built on
//! this machine (scripts/node: kubelet, containerd, kube-proxy, CoreDNS; every
//! image built here), only through helm, kubectl and HTTP:
//!
//! 1. `helm install` the chart with the local image: the controller runs as a
//!    Deployment of two replicas under the chart's ServiceAccount and RBAC,
//!    and the apiserver calls its webhook through the chart's Service;
//! 2. `kubectl apply -f examples/kubernetes-mcp-server/`: the MCP server pod
//!    starts with the injected native sidecar, both containers become Ready,
//!    and the sidecar reaches the controller by its Service DNS name
//!    (`kubectl get mtp` shows 1/1 synced);
//! 3. an agent (the MCP TypeScript SDK) calls through the MCP server's
//!    Service: 100 `vm_clone` calls make exactly 30 VirtualMachineClones;
//! 4. a real Prometheus (the Debian package), discovering pods with
//!    `kubernetes_sd_configs` the way the chart's PodMonitor selects them,
//!    scrapes the sidecar, and PromQL returns the 70 denials;
//! 5. a stdio MCP server (`examples/stdio/`): the webhook copies tollgate
//!    into its pod and runs the server's command behind it; its own policy
//!    caps its clones;
//! 6. faults: both controller pods deleted, the MCP Deployment restarted,
//!    `helm upgrade`, the policy deleted, `helm uninstall`.
//!
//! It is `make e2e`, part of `make test`; `make demo` runs it with its
//! narration shown. The node comes up (or is reused when `make cluster-up`
//! started it) and, when this test started it, stops with the test process.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{peers, repo, repo_file};

const RELEASE: &str = "tollgate";
const SYSTEM: &str = "tollgate-system";
const MCP: &str = "mcp";
/// Where the agent's clones go.
const VMS: &str = "vms";

/// One line of narration (shown by `make demo`).
fn step(what: &str) {
    eprintln!("[e2e] {what}");
}

/// The node and the tools to drive it.
struct Node {
    kubeconfig: PathBuf,
    bin: PathBuf,
}

impl Node {
    /// Starts the node (or finds it up) and loads the product's images.
    fn up() -> Node {
        step("starting the one-node cluster (the first run builds it: minutes)");
        let out = Command::new(repo().join("scripts/node/up.sh"))
            .args(["--parent-pid", &std::process::id().to_string()])
            .args(["--lifetime", "60m"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/node/up.sh");
        assert!(
            out.status.success(),
            "scripts/node/up.sh failed (it needs root; see scripts/cluster/README.md)"
        );
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let bin = PathBuf::from(
            String::from_utf8_lossy(
                &Command::new(repo().join("scripts/cluster/build.sh"))
                    .output()
                    .expect("scripts/cluster/build.sh")
                    .stdout,
            )
            .trim(),
        );
        step(
            "building the images tollgate:dev and kubernetes-mcp-server:0.0.67 and loading them into the node",
        );
        // The shell's environment, not cargo test's: the variables cargo sets
        // for a test (CARGO_*, ...) would make the script's own cargo build
        // rebuild every crate with a build script.
        let mut images = Command::new(repo().join("scripts/image/product.sh"));
        images.env_clear();
        for (k, v) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            if !k_str.starts_with("CARGO_") && k_str != "CARGO" && !k_str.starts_with("RUST") {
                images.env(&k, v);
            }
        }
        for keep in ["CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN"] {
            if let Some(v) = std::env::var_os(keep) {
                images.env(keep, v);
            }
        }
        let images = images
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/image/product.sh");
        assert!(images.status.success(), "scripts/image/product.sh failed");
        Node { kubeconfig, bin }
    }

    fn tool(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.bin.join(name))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("KUBECACHEDIR", repo().join("target/cluster/.kube-cache"))
            .env("HELM_CACHE_HOME", repo().join("target/cluster/.helm-cache"))
            .env(
                "HELM_CONFIG_HOME",
                repo().join("target/cluster/.helm-config"),
            )
            .env("HELM_DATA_HOME", repo().join("target/cluster/.helm-data"))
            .output()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{name} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.tool("kubectl", args)
    }

    fn must(&self, args: &[&str]) -> String {
        self.kubectl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn helm(&self, args: &[&str]) -> String {
        self.tool("helm", args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.must(&all)).unwrap()
    }

    fn items(&self, args: &[&str]) -> Vec<Value> {
        self.json(args)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Polls `f` until it holds; panics with `what` after `patience`.
fn wait_for(patience: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The MCP TypeScript SDK agent against `url`; its one result line.
fn agent(url: &str, args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(peers().join("agent.mjs"))
        .args(["--url", url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "agent {args:?} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("agent {args:?} printed {stdout}"))
}

/// Waits until an MCP client reaches `url`: a new Service answers only once
/// its endpoints are ready and kube-proxy has programmed them (until then
/// the node refuses connections to it).
fn wait_for_service(url: &str) {
    wait_for(
        Duration::from_secs(60),
        &format!("{url} answers an MCP client"),
        || {
            Command::new("node")
                .arg(peers().join("agent.mjs"))
                .args(["--url", url, "call", "namespaces_list", "{}"])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success())
        },
    );
}

/// An agent `repeat` summary as (answered, tool errors, failures).
fn tally(summary: &Value) -> (Option<u64>, Option<u64>, Option<u64>) {
    (
        summary["ok"].as_u64(),
        summary["isError"].as_u64(),
        summary["errors"].as_u64(),
    )
}

/// A tool result that is tollgate's denial naming `why`.
fn denied(result: &Value, why: &str) {
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        result["isError"] == true && text.starts_with("Denied by tollgate") && text.contains(why),
        "expected tollgate's denial naming {why:?}: {result}"
    );
}

/// A tool result the server produced (not an error).
fn answered(result: &Value) {
    assert!(
        result.get("error").is_none()
            && result.get("content").is_some()
            && result.get("isError").is_none_or(|e| e == false),
        "{result}"
    );
}

/// A Prometheus server on loopback discovering the node's pods the way the
/// chart's PodMonitor selects them: label tollgate.dev/sidecar=true, the
/// container port named tollgate-admin.
struct Prometheus(support::dashboard::Prometheus);

impl Prometheus {
    fn start(kubeconfig: &Path) -> Prometheus {
        Prometheus(support::dashboard::Prometheus::start(&format!(
            r#"global: {{scrape_interval: 2s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: tollgate-sidecars
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: {kubeconfig}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_pod_label_tollgate_dev_sidecar], regex: "true", action: keep}}
      - {{source_labels: [__meta_kubernetes_pod_container_port_name], regex: tollgate-admin, action: keep}}
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
  - job_name: tollgate-controller
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: {kubeconfig}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name], regex: tollgate-controller, action: keep}}
      - {{source_labels: [__meta_kubernetes_pod_container_port_name], regex: admin, action: keep}}
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
"#,
            kubeconfig = kubeconfig.display()
        )))
    }

    /// The value of an instant PromQL query with one series, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let out = Command::new("node")
            .arg("-e")
            .arg(format!(
                "fetch('http://127.0.0.1:{}/api/v1/query?query='+encodeURIComponent(process.argv[1])).then(r=>r.text()).then(t=>process.stdout.write(t)).catch(()=>{{}})",
                self.0.port
            ))
            .arg(promql)
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn helm_install_inject_enforce_scrape_and_survive_faults_on_a_real_node() {
    let node = Node::up();

    step("clearing what an earlier run may have left (a fresh install, CRDs included)");
    let _ = node.tool("helm", &["uninstall", RELEASE, "-n", SYSTEM, "--wait"]);
    for ns in [MCP, VMS, SYSTEM] {
        let _ = node.kubectl(&[
            "delete",
            "namespace",
            ns,
            "--ignore-not-found",
            "--wait=true",
        ]);
    }
    // Helm installs the chart's CRDs only when they are absent and never
    // upgrades them: an earlier run's CRD would be an older schema.
    for crd in node.must(&["get", "crd", "-o", "name"]).lines() {
        if crd.ends_with(".tollgate.dev") {
            node.must(&["delete", crd, "--wait=true"]);
        }
    }
    node.must(&[
        "apply",
        "-f",
        repo_file("tests/fixtures/kubevirt-crds.yaml")
            .to_str()
            .unwrap(),
    ]);
    node.must(&["create", "namespace", VMS]);
    // The chart binds the MCP server's ServiceAccount to keep approvals in
    // its namespace: the RoleBinding needs the namespace to exist.
    node.must(&["create", "namespace", MCP]);

    step(
        "helm install tollgate charts/tollgate --set image.repository=tollgate,image.tag=dev,image.pullPolicy=Never --set approvals.sidecarServiceAccounts[0].namespace=mcp,approvals.sidecarServiceAccounts[0].name=kubernetes-mcp-server",
    );
    node.helm(&[
        "install",
        RELEASE,
        repo_file("charts/tollgate").to_str().unwrap(),
        "-n",
        SYSTEM,
        "--create-namespace",
        "--set",
        "image.repository=tollgate,image.tag=dev,image.pullPolicy=Never",
        "--set",
        &format!(
            "approvals.sidecarServiceAccounts[0].namespace={MCP},approvals.sidecarServiceAccounts[0].name=kubernetes-mcp-server"
        ),
        "--wait",
        "--timeout",
        "600s",
    ]);
    let controllers = node.items(&[
        "-n",
        SYSTEM,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=tollgate-controller",
    ]);
    assert_eq!(controllers.len(), 2, "two controller replicas");
    for p in &controllers {
        assert_eq!(p["status"]["phase"], "Running", "{}", p["metadata"]["name"]);
        assert_eq!(p["spec"]["serviceAccountName"], RELEASE);
    }

    // No --logs: the hook deletes its pod once it succeeds, and helm then
    // fails to fetch logs of a pod that is gone.
    step("helm test tollgate  (the chart's probe Pod: controller /readyz and the webhook's TLS)");
    let tested = node.helm(&["test", RELEASE, "-n", SYSTEM, "--timeout", "600s"]);
    assert!(
        tested
            .lines()
            .any(|l| l.trim_start().starts_with("Phase:") && l.contains("Succeeded")),
        "{tested}"
    );

    step(
        "kubectl apply -f examples/kubernetes-mcp-server/  (namespace labelled for injection, the server, its policy)",
    );
    node.must(&[
        "apply",
        "-f",
        repo_file("examples/kubernetes-mcp-server")
            .to_str()
            .unwrap(),
    ]);
    node.must(&[
        "-n",
        MCP,
        "rollout",
        "status",
        "deployment/kubernetes-mcp-server",
        "--timeout=600s",
    ]);
    let pod = mcp_pod(&node);
    let sidecar = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "tollgate")
        .unwrap_or_else(|| panic!("no injected native sidecar: {}", pod["spec"]));
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert!(
        pod["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .chain(pod["status"]["initContainerStatuses"].as_array().unwrap())
            .all(|c| c["ready"] == true),
        "both containers Ready: {}",
        pod["status"]
    );
    wait_for(
        Duration::from_secs(60),
        "kubectl get mtp: 1/1 synced",
        || {
            let mtp = node.json(&["-n", MCP, "get", "mtp", "clone-guard"]);
            mtp["status"]["synced"] == "1/1"
        },
    );
    step(&format!(
        "kubectl get mtp -n {MCP}:\n{}",
        node.must(&["-n", MCP, "get", "mtp"])
    ));

    let service = node.json(&["-n", MCP, "get", "service", "kubernetes-mcp-server"]);
    let url = format!(
        "http://{}:80/mcp",
        service["spec"]["clusterIP"].as_str().unwrap()
    );
    let prometheus = Prometheus::start(&node.kubeconfig);
    wait_for_service(&url);

    step("an agent (the MCP TypeScript SDK) makes 100 vm_clone calls through the Service");
    let args = json!({"namespace": VMS, "name": "golden-fedora", "targetName": "copy"}).to_string();
    let summary = agent(
        &url,
        &[
            "repeat",
            "100",
            "vm_clone",
            &args,
            "--concurrency",
            "8",
            "--no-results",
        ],
    );
    assert_eq!(tally(&summary), (Some(30), Some(70), Some(0)), "{summary}");
    let clones = node.items(&["-n", VMS, "get", "virtualmachineclones.clone.kubevirt.io"]);
    assert_eq!(clones.len(), 30, "exactly 30 VirtualMachineClones exist");
    step("kubectl get virtualmachineclones: 30");

    step("Prometheus scrapes the sidecar; PromQL counts the denials");
    let denials =
        r#"sum(tollgate_tool_calls_total{tool="vm_clone",decision="denied",reason="rate_limit"})"#;
    wait_for(
        Duration::from_secs(60),
        "PromQL returns the 70 denials",
        || prometheus.query(denials) == Some(70.0),
    );
    step(&format!("{denials} = 70"));

    why_reads_a_denial_through_the_pod_proxy(&node);

    stdio_server_runs_behind_tollgate_in_its_own_container(&node);

    every_dashboard_panel_has_data(&prometheus, &url);

    let approval = a_held_call_is_kept_as_an_approval_its_pod_owns(&node, &url);

    enforcement_survives_faults(&node, &url);

    step("the restarted pod's approval: kube-controller-manager's garbage collector deletes it");
    wait_for(
        Duration::from_secs(120),
        "the approval deleted with the pod that owned it",
        || {
            node.kubectl(&["-n", MCP, "get", "mtca", &approval])
                .is_err_and(|e| e.contains("NotFound"))
        },
    );

    step("helm uninstall: nothing of tollgate is left but the CRDs");
    node.helm(&["uninstall", RELEASE, "-n", SYSTEM, "--wait"]);
    let left = node.must(&[
        "get",
        "deployments,services,serviceaccounts,secrets,configmaps,leases,roles,rolebindings,poddisruptionbudgets,networkpolicies",
        "-A",
        "-l",
        "app.kubernetes.io/instance=tollgate",
        "-o",
        "name",
    ]);
    assert_eq!(left.trim(), "", "namespaced leftovers");
    let cluster_left = node.must(&[
        "get",
        "clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
        "-l",
        "app.kubernetes.io/instance=tollgate",
        "-o",
        "name",
    ]);
    assert_eq!(cluster_left.trim(), "", "cluster-wide leftovers");
    // The controller pods go with their ReplicaSet, and what they created
    // at run time with them (garbage collection runs after helm returns):
    // wait for that, then nothing else may remain.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let in_system = node.must(&[
            "-n",
            SYSTEM,
            "get",
            "all,secrets,configmaps,leases",
            "-o",
            "name",
        ]);
        let left: Vec<&str> = in_system
            .lines()
            .filter(|l| {
                !l.starts_with("configmap/kube-root-ca.crt") && !l.starts_with("secret/sh.helm")
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left in {SYSTEM}: {left:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    node.must(&["get", "crd", "mcptoolpolicies.tollgate.dev"]);
    for ns in [MCP, VMS] {
        let _ = node.kubectl(&["delete", "namespace", ns, "--wait=false"]);
    }
}

/// The running MCP server pod.
/// `tollgate why POD ID` through the apiserver's pod proxy to a sidecar the
/// kubelet runs: the record of one of the clones the rate limit denied,
/// printed as the sidecar keeps it.
fn why_reads_a_denial_through_the_pod_proxy(node: &Node) {
    let pod = mcp_pod(node);
    let name = pod["metadata"]["name"].as_str().unwrap();
    let listing = node.must(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{MCP}/pods/{name}:9901/proxy/decisions/"),
    ]);
    let kept: Value = serde_json::from_str(&listing).unwrap();
    let record = kept["decisions"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|r| r["tool"] == "vm_clone" && r["decision"] == "denied")
        })
        .unwrap_or_else(|| panic!("the sidecar kept no denied vm_clone: {listing}"))
        .clone();
    assert_eq!(record["reason"], "rate_limit", "{record}");
    let id = record["requestId"].as_str().unwrap();
    step(&format!(
        "tollgate why {name} {id} -n {MCP}  (through the apiserver's pod proxy)"
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["why", name, id, "-n", MCP, "--kubeconfig"])
        .arg(&node.kubeconfig)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains(&format!("request {id}: vm_clone denied (rate_limit)")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("policy:  {MCP}/clone-guard"))
            && printed.contains(&format!("rule:    {}", record["rule"].as_str().unwrap())),
        "{printed}"
    );
    step(&printed);
}

fn mcp_pod(node: &Node) -> Value {
    let pods: Vec<Value> = node
        .items(&[
            "-n",
            MCP,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=kubernetes-mcp-server",
        ])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert_eq!(pods.len(), 1, "one MCP server pod");
    pods[0].clone()
}

/// The shipped Grafana dashboard's queries, against what this run's
/// Prometheus scraped from the sidecars and the controllers while an agent
/// keeps calling (rates need traffic between two scrapes). The Redis panels
/// alone may be empty: no policy here uses a Shared budget.
fn every_dashboard_panel_has_data(prometheus: &Prometheus, url: &str) {
    step(
        "every query of the shipped Grafana dashboard returns data (but Redis: no Shared budget here)",
    );
    let delete = json!({"namespace": MCP, "name": "x"}).to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        answered(&agent(url, &["call", "namespaces_list", "{}"]));
        denied(
            &agent(url, &["call", "pods_delete", &delete]),
            "clone-guard",
        );
        let missing: Vec<String> = match support::dashboard::check_over(&prometheus.0.url(), "10m")
        {
            Ok(_) => Vec::new(),
            Err(empty) => empty
                .into_iter()
                .filter(|e| !e.contains("tollgate_ratelimit_store"))
                .collect(),
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard panels without data after 90 s:\n{}",
            missing.join("\n")
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// In-pod stdio: kubernetes-mcp-server without `--port` speaks stdio; the
/// annotation makes the webhook run it under a tollgate copied into the pod
/// by an init container, which the kubelet runs for real here.
fn stdio_server_runs_behind_tollgate_in_its_own_container(node: &Node) {
    let example = repo_file("examples/stdio/kubernetes-mcp-server-stdio.yaml");
    let example = example.to_str().unwrap();
    step(
        "kubectl apply -f examples/stdio/: a stdio MCP server; the webhook puts tollgate in its container",
    );
    node.must(&["apply", "-f", example]);
    node.must(&[
        "-n",
        MCP,
        "rollout",
        "status",
        "deployment/kubernetes-mcp-server-stdio",
        "--timeout=600s",
    ]);
    let pods: Vec<Value> = node
        .items(&[
            "-n",
            MCP,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=kubernetes-mcp-server-stdio",
        ])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert_eq!(pods.len(), 1, "one stdio MCP server pod");
    let pod = &pods[0];
    let install = pod["status"]["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "tollgate-install")
        .unwrap_or_else(|| panic!("no tollgate-install init container: {}", pod["status"]));
    assert_eq!(
        install["state"]["terminated"]["exitCode"], 0,
        "the binary was copied: {install}"
    );
    let server = &pod["spec"]["containers"][0];
    assert_eq!(
        server["command"][0], "/var/run/tollgate-bin/tollgate",
        "the server runs behind the copied tollgate: {server}"
    );
    assert!(
        pod["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ready"] == true),
        "the server container is Ready (tollgate's /readyz): {}",
        pod["status"]
    );
    wait_for(
        Duration::from_secs(60),
        "kubectl get mtp stdio-clone-cap: 1/1 synced",
        || node.json(&["-n", MCP, "get", "mtp", "stdio-clone-cap"])["status"]["synced"] == "1/1",
    );

    let service = node.json(&["-n", MCP, "get", "service", "kubernetes-mcp-server-stdio"]);
    let url = format!(
        "http://{}:80/mcp",
        service["spec"]["clusterIP"].as_str().unwrap()
    );
    wait_for_service(&url);
    let before = node
        .items(&["-n", VMS, "get", "virtualmachineclones.clone.kubevirt.io"])
        .len();
    step("the agent makes 10 vm_clone calls through the stdio server's Service: 5 pass");
    let args =
        json!({"namespace": VMS, "name": "golden-fedora", "targetName": "stdio-copy"}).to_string();
    let summary = agent(
        &url,
        &[
            "repeat",
            "10",
            "vm_clone",
            &args,
            "--concurrency",
            "2",
            "--no-results",
        ],
    );
    assert_eq!(tally(&summary), (Some(5), Some(5), Some(0)), "{summary}");
    let after = node
        .items(&["-n", VMS, "get", "virtualmachineclones.clone.kubevirt.io"])
        .len();
    assert_eq!(
        after - before,
        5,
        "the stdio server created exactly 5 clones"
    );
    // A tool the policy does not allow never reaches the server.
    let denied_call = agent(
        &url,
        &[
            "call",
            "pods_delete",
            &json!({"namespace": MCP, "name": "x"}).to_string(),
        ],
    );
    denied(&denied_call, "stdio-clone-cap");
    answered(&agent(&url, &["call", "namespaces_list", "{}"]));
    node.must(&["delete", "-f", example, "--wait=true"]);
}

/// A second policy holds `events_list` for a person's approval: the call is
/// answered at once with the McpToolCallApproval the sidecar created, owned
/// by the sidecar's pod (its uid from the Downward API, set by the
/// injection webhook). Returns the approval's name; the pod is restarted
/// later, and the approval must go with it.
fn a_held_call_is_kept_as_an_approval_its_pod_owns(node: &Node, url: &str) -> String {
    step("kubectl apply an McpToolPolicy holding events_list for approval; the agent calls it");
    let policy = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: approve-events, namespace: {MCP}}}\nspec:\n  selector: {{matchLabels: {{app.kubernetes.io/name: kubernetes-mcp-server}}}}\n  defaultAction: Allow\n  rules:\n    - name: ask-first\n      tools: [events_list]\n      action: RequireApproval\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("approve-events.yaml");
    std::fs::write(&file, policy).unwrap();
    node.must(&["apply", "-f", file.to_str().unwrap()]);
    wait_for(
        Duration::from_secs(60),
        "approve-events: 1/1 synced",
        || node.json(&["-n", MCP, "get", "mtp", "approve-events"])["status"]["synced"] == "1/1",
    );
    let held = agent(url, &["call", "events_list", "{}"]);
    let text = held["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        held["isError"] == true && text.contains("Approval required"),
        "{held}"
    );
    let pod = mcp_pod(node);
    let approvals = node.items(&["-n", MCP, "get", "mtca"]);
    assert_eq!(approvals.len(), 1, "one approval: {approvals:?}");
    let approval = &approvals[0];
    let name = approval["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(text.contains(&name), "the agent is told its name: {text}");
    assert_eq!(approval["spec"]["tool"], "events_list", "{approval}");
    let owner = &approval["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["uid"]),
        (
            &json!("Pod"),
            &pod["metadata"]["name"],
            &pod["metadata"]["uid"]
        ),
        "owned by the sidecar's pod: {approval}"
    );
    step(&format!(
        "kubectl get mtca -n {MCP}: {name}, owned by pod {}",
        pod["metadata"]["name"].as_str().unwrap()
    ));
    // The steps after this one expect clone-guard alone to select the pod
    // (its deletion must leave the pod unselected, refusing everything).
    node.must(&["-n", MCP, "delete", "mtp", "approve-events", "--wait=true"]);
    name
}

fn enforcement_survives_faults(node: &Node, url: &str) {
    let delete = json!({"namespace": MCP, "name": "x"}).to_string();

    step("fault: both controller pods deleted; the sidecar keeps enforcing");
    node.must(&[
        "-n",
        SYSTEM,
        "delete",
        "pods",
        "-l",
        "app.kubernetes.io/name=tollgate-controller",
        "--wait=false",
    ]);
    denied(
        &agent(url, &["call", "pods_delete", &delete]),
        "clone-guard",
    );
    answered(&agent(url, &["call", "namespaces_list", "{}"]));
    node.must(&[
        "-n",
        SYSTEM,
        "rollout",
        "status",
        "deployment/tollgate",
        "--timeout=600s",
    ]);

    step(
        "fault: kubectl rollout restart the MCP server; the new pod is injected and enforces from its first call",
    );
    let old = mcp_pod(node)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    node.must(&[
        "-n",
        MCP,
        "rollout",
        "restart",
        "deployment/kubernetes-mcp-server",
    ]);
    node.must(&[
        "-n",
        MCP,
        "rollout",
        "status",
        "deployment/kubernetes-mcp-server",
        "--timeout=600s",
    ]);
    wait_for(Duration::from_secs(60), "the old pod gone", || {
        mcp_pod_names(node) == 1 && mcp_pod(node)["metadata"]["name"] != old.as_str()
    });
    // The Service follows the new pod a moment later (EndpointSlice, then
    // kube-proxy): wait until its only endpoint is the new pod and bare TCP
    // connects (no MCP call, so the call below is the new pod's first) keep
    // succeeding.
    let new_ip = mcp_pod(node)["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(
        Duration::from_secs(60),
        "the EndpointSlice listing only the new pod",
        || {
            let endpoints: Vec<Value> = node
                .items(&[
                    "-n",
                    MCP,
                    "get",
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=kubernetes-mcp-server",
                ])
                .iter()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .collect();
            endpoints.len() == 1
                && endpoints[0]["addresses"][0] == new_ip.as_str()
                && endpoints[0]["conditions"]["ready"] == true
        },
    );
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse::<std::net::SocketAddr>()
        .unwrap();
    let mut in_a_row = 0;
    wait_for(
        Duration::from_secs(60),
        "the Service routing to the new pod",
        || {
            if std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
                in_a_row += 1;
            } else {
                in_a_row = 0;
            }
            in_a_row >= 5
        },
    );
    denied(
        &agent(url, &["call", "pods_delete", &delete]),
        "clone-guard",
    );
    answered(&agent(url, &["call", "namespaces_list", "{}"]));

    step("fault: helm upgrade with a changed value; enforcement goes on");
    node.helm(&[
        "upgrade",
        RELEASE,
        repo_file("charts/tollgate").to_str().unwrap(),
        "-n",
        SYSTEM,
        "--reuse-values",
        "--set",
        "controller.logLevel=debug",
        "--wait",
        "--timeout",
        "600s",
    ]);
    denied(
        &agent(url, &["call", "pods_delete", &delete]),
        "clone-guard",
    );
    answered(&agent(url, &["call", "namespaces_list", "{}"]));

    step("the policy deleted: every call is refused");
    node.must(&["-n", MCP, "delete", "mtp", "clone-guard"]);
    wait_for(
        Duration::from_secs(60),
        "reads refused once no policy selects the pod",
        || {
            let r = agent(url, &["call", "namespaces_list", "{}"]);
            r["isError"] == true
                && r["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no McpToolPolicy selects this MCP server")
        },
    );
}

fn mcp_pod_names(node: &Node) -> usize {
    node.items(&[
        "-n",
        MCP,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=kubernetes-mcp-server",
    ])
    .iter()
    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    .count()
}
