//! A real kube-apiserver + etcd for tests (scripts/cluster/up.sh), one per
//! test binary, with `kubectl` and helpers to create namespaces, pods and
//! pod-bound ServiceAccount tokens. Each test works in its own namespace;
//! the cluster stops when the test process exits (`--parent-pid`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{Proc, repo};

/// The cluster of this test process.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin: PathBuf,
    _dir: tempfile::TempDir,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    /// Starts the cluster on first use (building the binaries the first
    /// time on a machine, which takes minutes; see scripts/cluster/README.md).
    pub fn get() -> &'static Cluster {
        CLUSTER.get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("tollgate-cluster-")
                .tempdir()
                .unwrap();
            let out = Command::new(repo().join("scripts/cluster/build.sh"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "building the control plane failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            let mut last_error = String::new();
            // Ports are picked free and then handed over, so another process
            // can take one in between: try a few times.
            for _ in 0..3 {
                let out = Command::new(repo().join("scripts/cluster/up.sh"))
                    .arg("--data-dir")
                    .arg(dir.path())
                    .args(["--etcd-client-port", &super::free_port().to_string()])
                    .args(["--etcd-peer-port", &super::free_port().to_string()])
                    .args(["--apiserver-port", &super::free_port().to_string()])
                    .args([
                        "--parent-pid",
                        &std::process::id().to_string(),
                        "--lifetime",
                        "60m",
                        // The TempDir is in a static and never dropped: the
                        // watchdog removes it once this process is gone.
                        "--purge-on-exit",
                    ])
                    .output()
                    .unwrap();
                if out.status.success() {
                    let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                    let cluster = Cluster {
                        kubeconfig,
                        bin,
                        _dir: dir,
                    };
                    if let Err(e) =
                        cluster.kubectl(&["apply", "-f", repo().join("crds").to_str().unwrap()])
                    {
                        panic!("the apiserver refused crds/: {e}");
                    }
                    // `kubectl wait` fails at once ("<nil> is of the type
                    // <nil>") on a CRD whose status is not written yet:
                    // ask again, a bounded number of times.
                    let mut waited = Err(String::new());
                    for _ in 0..40 {
                        waited = cluster.kubectl(&[
                            "wait",
                            "--for=condition=Established",
                            "crd/mcptoolpolicies.tollgate.dev",
                            "crd/clustermcptoolpolicies.tollgate.dev",
                            "--timeout=30s",
                        ]);
                        if waited.is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    if let Err(e) = waited {
                        panic!("the CRDs never became Established: {e}");
                    }
                    return cluster;
                }
                last_error = String::from_utf8_lossy(&out.stderr).into_owned();
            }
            panic!("the test control plane did not start:\n{last_error}");
        })
    }

    /// The KubeVirt CRDs (tests/fixtures/kubevirt-crds.yaml), applied once per
    /// cluster — tests of one binary run in parallel — and Established.
    #[allow(dead_code)]
    pub fn kubevirt_crds(&self) {
        static APPLIED: OnceLock<()> = OnceLock::new();
        APPLIED.get_or_init(|| {
            let crds = repo().join("tests/fixtures/kubevirt-crds.yaml");
            self.kubectl(&["apply", "-f", crds.to_str().unwrap()])
                .unwrap();
            self.kubectl(&[
                "wait",
                "--for=condition=Established",
                "crd/virtualmachineclones.clone.kubevirt.io",
                "crd/virtualmachines.kubevirt.io",
                "crd/virtualmachineinstances.kubevirt.io",
                "crd/virtualmachineinstancetypes.instancetype.kubevirt.io",
                "crd/virtualmachineclusterinstancetypes.instancetype.kubevirt.io",
                "crd/datavolumes.cdi.kubevirt.io",
                "--timeout=30s",
            ])
            .unwrap();
        });
    }

    /// kubernetes-mcp-server against the test cluster, as cluster admin.
    pub fn kubernetes_mcp_server(&self) -> (Proc, u16) {
        let port = super::free_port();
        let bin = super::peers().join(
            "node_modules/kubernetes-mcp-server-linux-amd64/bin/kubernetes-mcp-server-linux-amd64",
        );
        let mut cmd = Command::new("sh");
        // It prints nothing on readiness; `echo` gives Proc its first line once
        // the process runs, and the port is polled below.
        cmd.arg("-c").arg(format!(
            "echo started; exec {} --port {port} --bind-address 127.0.0.1 --toolsets core,config,kubevirt --kubeconfig {} >/dev/null 2>&1",
            bin.display(),
            self.kubeconfig.display()
        ));
        let (proc, _) = Proc::spawn(cmd, |l| l == "started");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..300 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return (proc, port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("kubernetes-mcp-server did not listen on {addr}");
    }

    /// Runs kubectl; Ok(stdout) or Err(stderr).
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `stdin`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// `kubectl get ... -o json`.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(
            &self
                .kubectl(&all)
                .unwrap_or_else(|e| panic!("kubectl {all:?}: {e}")),
        )
        .unwrap()
    }

    /// A fresh namespace for one test.
    pub fn namespace(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.kubectl(&["create", "namespace", &ns]).unwrap();
        ns
    }

    /// A ServiceAccount and a Pending pod running a (pretend) tollgate
    /// sidecar, with `labels`; returns the pod's uid.
    pub fn sidecar_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)]) -> String {
        let _ = self.kubectl(&["-n", ns, "create", "serviceaccount", "mcp"]);
        let mut label_lines = String::from("    tollgate.dev/sidecar: \"true\"\n");
        for (k, v) in labels {
            label_lines.push_str(&format!("    {k}: \"{v}\"\n"));
        }
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n{label_lines}spec:\n  serviceAccountName: mcp\n  containers: [{{name: mcp, image: example.invalid/mcp}}]\n"
        );
        self.apply(&pod).unwrap();
        self.get_json(&["-n", ns, "pod", name])["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A token for the pod's ServiceAccount, bound to the pod, for the
    /// tollgate audience — what the injected projected volume holds.
    pub fn pod_token(&self, ns: &str, pod: &str) -> String {
        self.kubectl(&[
            "-n",
            ns,
            "create",
            "token",
            "mcp",
            "--audience",
            "tollgate",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
            "--duration",
            "1h",
        ])
        .unwrap()
        .trim()
        .to_owned()
    }

    /// `kubectl tollgate ARGS --kubeconfig K`: the tollgate binary run as
    /// the kubectl plugin (`kubectl-tollgate` on PATH).
    pub fn kubectl_tollgate(&self, args: &[&str]) -> std::process::Output {
        let plugins = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_tollgate"),
            plugins.path().join("kubectl-tollgate"),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            plugins.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::process::Command::new(self.bin.join("kubectl"))
            .env("PATH", path)
            .arg("tollgate")
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output()
            .unwrap()
    }

    /// A kubeconfig (in `dir`) that authenticates as ServiceAccount
    /// `ns/sa` with a token for the apiserver.
    #[allow(dead_code)]
    pub fn kubeconfig_for(&self, dir: &Path, ns: &str, sa: &str) -> PathBuf {
        let token = self
            .kubectl(&["-n", ns, "create", "token", sa, "--duration", "1h"])
            .unwrap();
        let raw: Value = serde_json::from_str(
            &self
                .kubectl(&["config", "view", "--raw", "--minify", "-o", "json"])
                .unwrap(),
        )
        .unwrap();
        let cluster = &raw["clusters"][0]["cluster"];
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": sa, "user": {"token": token.trim()}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": sa, "namespace": ns}}],
            "current-context": "test",
        });
        let path = dir.join(format!("kubeconfig-{sa}"));
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    /// The policy object as JSON.
    pub fn policy(&self, ns: &str, name: &str) -> Value {
        self.get_json(&["-n", ns, "mcptoolpolicy", name])
    }
}

/// A `tollgate controller` process scoped to one namespace.
pub struct ControllerProc {
    pub proc: Proc,
    pub push: SocketAddr,
    pub admin: SocketAddr,
    /// Where its admission webhook listens, when started with one.
    pub webhook: Option<SocketAddr>,
    /// The CA its push certificate chains to (from its Secret), as a file.
    pub ca_file: PathBuf,
    _ca_dir: tempfile::TempDir,
}

impl ControllerProc {
    /// Starts a replica named `identity` on free ports.
    pub fn start(cluster: &Cluster, ns: &str, identity: &str) -> ControllerProc {
        Self::start_on(cluster, ns, identity, "127.0.0.1:0")
    }

    /// Starts a replica on a given push address (to restart "the same"
    /// controller where its sidecars expect it).
    pub fn start_on(cluster: &Cluster, ns: &str, identity: &str, push: &str) -> ControllerProc {
        Self::start_with(cluster, ns, identity, push, &cluster.kubeconfig)
    }

    /// Starts a replica with another kubeconfig (e.g. fewer permissions).
    pub fn start_with(
        cluster: &Cluster,
        ns: &str,
        identity: &str,
        push: &str,
        kubeconfig: &Path,
    ) -> ControllerProc {
        Self::spawn(cluster, ns, identity, push, kubeconfig, Some(ns), &[])
    }

    /// Starts a replica with environment variables set (`OTEL_*`, ...).
    pub fn start_with_env(
        cluster: &Cluster,
        ns: &str,
        identity: &str,
        env: &[(&str, String)],
    ) -> ControllerProc {
        Self::spawn(
            cluster,
            ns,
            identity,
            "127.0.0.1:0",
            &cluster.kubeconfig,
            Some(ns),
            env,
        )
    }

    /// Starts a replica that watches every namespace (as the chart's does),
    /// its Lease and Secret in `ns`. One per cluster: it writes the status
    /// of every policy.
    pub fn start_cluster_wide(cluster: &Cluster, ns: &str, identity: &str) -> ControllerProc {
        Self::spawn(
            cluster,
            ns,
            identity,
            "127.0.0.1:0",
            &cluster.kubeconfig,
            None,
            &[],
        )
    }

    /// Starts a replica of `ns` that also serves the admission webhook on
    /// loopback, keeping the caBundle of MutatingWebhookConfiguration
    /// `configuration`.
    #[allow(dead_code)]
    pub fn start_with_webhook(
        cluster: &Cluster,
        ns: &str,
        identity: &str,
        configuration: &str,
    ) -> ControllerProc {
        Self::spawn_with(
            cluster,
            ns,
            identity,
            "127.0.0.1:0",
            &cluster.kubeconfig,
            Some(ns),
            &[
                "--webhook-listen",
                "127.0.0.1:0",
                "--webhook-configuration",
                configuration,
            ],
            &[],
        )
    }

    fn spawn(
        cluster: &Cluster,
        ns: &str,
        identity: &str,
        push: &str,
        kubeconfig: &Path,
        watch: Option<&str>,
        env: &[(&str, String)],
    ) -> ControllerProc {
        Self::spawn_with(cluster, ns, identity, push, kubeconfig, watch, &[], env)
    }

    // Every caller above names the same few things; a builder for one test
    // helper would be more code than the long list.
    #[allow(clippy::too_many_arguments)]
    fn spawn_with(
        cluster: &Cluster,
        ns: &str,
        identity: &str,
        push: &str,
        kubeconfig: &Path,
        watch: Option<&str>,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> ControllerProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args([
            "--log-format",
            "json",
            "controller",
            "--push-listen",
            push,
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--namespace", ns])
        .args(
            watch
                .map(|w| ["--watch-namespace", w])
                .into_iter()
                .flatten(),
        )
        .args([
            "--identity",
            identity,
            "--heartbeat",
            "1s",
            // Sidecars dial it by address on loopback.
            "--tls-dns-name",
            "127.0.0.1",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(extra);
        let (proc, line) = Proc::spawn(cmd, |l| l.contains("tollgate controller started"));
        let v: Value = serde_json::from_str(&line).unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let ca_file = ca_dir.path().join("ca.crt");
        std::fs::write(&ca_file, cluster.controller_ca(ns)).unwrap();
        ControllerProc {
            proc,
            push: v["push"].as_str().unwrap().parse().unwrap(),
            admin: v["admin"].as_str().unwrap().parse().unwrap(),
            webhook: v["webhook"].as_str().and_then(|w| w.parse().ok()),
            ca_file,
            _ca_dir: ca_dir,
        }
    }

    /// A TLS connection to the push server, verified against its CA.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(&self.ca_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.push).await.unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::IpAddress(self.push.ip().into()),
                tcp,
            )
            .await
            .expect("the push server's certificate verifies against its CA")
    }

    /// [`super::raw`] to the push server over TLS.
    pub async fn raw(&self, request: &[u8]) -> super::Raw {
        super::raw_on(self.connect().await, request).await
    }

    /// A sidecar of pod `pod` (created here) that follows this controller,
    /// in front of `upstream`, with further `tollgate proxy` flags `extra`;
    /// the token directory lives as long as it.
    #[allow(dead_code)]
    pub fn managed_sidecar(
        &self,
        cluster: &Cluster,
        ns: &str,
        pod: &str,
        labels: &[(&str, &str)],
        upstream: &str,
        extra: &[&str],
    ) -> (super::TollgateProc, tempfile::TempDir) {
        cluster.sidecar_pod(ns, pod, labels);
        let dir = tempfile::tempdir().unwrap();
        let token = token_file(dir.path(), &cluster.pod_token(ns, pod));
        let mut args = self.sidecar_args();
        args.extend(
            [
                "--token-file",
                token.to_str().unwrap(),
                "--pod-name",
                pod,
                "--pod-namespace",
                ns,
                "--upstream",
                upstream,
            ]
            .map(str::to_owned),
        );
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let sidecar = super::tollgate(&args.iter().map(String::as_str).collect::<Vec<_>>());
        (sidecar, dir)
    }

    /// `tollgate proxy` flags that follow this controller over TLS.
    pub fn sidecar_args(&self) -> Vec<String> {
        vec![
            "--controller".into(),
            format!("https://{}", self.push),
            "--controller-ca-file".into(),
            self.ca_file.to_str().unwrap().into(),
        ]
    }
}

impl Cluster {
    /// The CA of the controller's serving certificate in `ns` (the Secret it
    /// keeps there; what the injection webhook hands sidecars).
    pub fn controller_ca(&self, ns: &str) -> String {
        self.kubectl(&[
            "-n",
            ns,
            "get",
            "secret",
            "tollgate-tls",
            "-o",
            "go-template={{index .data \"ca.crt\" | base64decode}}",
        ])
        .unwrap()
    }
}

/// A `tollgate proxy` managed by a controller, as the injected sidecar of
/// pod `ns/pod` (its token, the controller's CA), in front of `upstream`.
pub struct ManagedSidecar {
    pub tg: super::TollgateProc,
    _dir: tempfile::TempDir,
}

impl ManagedSidecar {
    pub fn start(
        cluster: &Cluster,
        pod: (&str, &str),
        controller: &ControllerProc,
        upstream: &str,
    ) -> ManagedSidecar {
        let dir = tempfile::tempdir().unwrap();
        let args = Self::args(
            dir.path(),
            cluster,
            pod,
            (controller.push, &controller.ca_file),
            upstream,
        );
        let tg = super::tollgate(&args.iter().map(String::as_str).collect::<Vec<_>>());
        ManagedSidecar { tg, _dir: dir }
    }

    /// Waits until the sidecar's `/readyz` answers 200, that is until it holds
    /// rules from the controller; before that every call is refused with a
    /// JSON-RPC error rather than judged. Panics after `patience`.
    pub async fn until_ready(&self, patience: Duration) {
        let mut last = String::new();
        let ready = super::eventually(patience, async || {
            let r = super::raw(
                self.tg.admin,
                b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .await;
            last = format!("HTTP {}: {}", r.status, r.text());
            r.status == 200
        })
        .await;
        assert!(
            ready,
            "the sidecar never became ready; last /readyz: {last}"
        );
    }

    /// The flags of the sidecar of pod `ns/pod` following the controller at
    /// `push`, with the pod's token and its own copy of the controller's CA
    /// (it may outlive the controller process) written into `dir`.
    pub fn args(
        dir: &Path,
        cluster: &Cluster,
        (ns, pod): (&str, &str),
        (push, ca_file): (SocketAddr, &Path),
        upstream: &str,
    ) -> Vec<String> {
        let token = token_file(dir, &cluster.pod_token(ns, pod));
        let ca = dir.join("controller-ca.crt");
        std::fs::copy(ca_file, &ca).unwrap();
        [
            "--controller",
            &format!("https://{push}"),
            "--controller-ca-file",
            ca.to_str().unwrap(),
            "--token-file",
            token.to_str().unwrap(),
            "--pod-name",
            pod,
            "--pod-namespace",
            ns,
            "--upstream",
            upstream,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// Writes a token to a file for `--token-file`.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, token).unwrap();
    path
}
