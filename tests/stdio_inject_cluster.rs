//! In-pod tollgate for a stdio MCP server (`tollgate.dev/transport: stdio`)
//! on the real apiserver: the chart installed, the controller run with the
//! chart's own arguments, the apiserver calling its webhook and storing the
//! mutated pod. Then the stored pod spec is run the way a kubelet runs it —
//! volumes as directories, the init container to completion first, then the
//! server container's `command`/`args`/`env` exactly as stored — with the
//! first seed's TrueNAS MCP server (stdio only) as the container's command
//! and the seed's policy applied as an McpToolPolicy: the agent sees the
//! list filtered, reads pass, 30 of 100 clones reach the stand-in TrueNAS.
//!
//! What a kubelet does that this cannot: pull images, and give the pod its
//! own network namespace and cluster DNS. So the images are this build's
//! binary (the tollgate image's entrypoint) and the server on this machine,
//! the listen addresses move to free loopback ports, and the controller's
//! Service name resolves to the local controller. Everything else — paths,
//! the copied binary, the wrapped command, the environment, the projected
//! token's audience — comes from the stored spec. The one-node test
//! (tests/e2e_node.rs) is where a real kubelet runs it.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::chart::{ca_bundle_published, controller_as_chart, helm, push_address};
use support::cluster::Cluster;
use support::truenas::{TrueNas, check, imported_policy, script};
use support::*;

const PATIENCE: Duration = Duration::from_secs(30);

/// A pod whose one container runs the TrueNAS MCP server on stdio.
fn stdio_pod(ns: &str, name: &str, api: &TrueNas, with_command: bool) -> String {
    let server = api.server();
    // `env K=V… server`: the environment goes into the container's env,
    // the server into its command.
    let (env, command): (Vec<&String>, Vec<&String>) =
        server[1..].iter().partition(|a| a.contains('='));
    let env: Vec<String> = env
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            format!("{{name: {k}, value: '{v}'}}")
        })
        .collect();
    let command = if with_command {
        format!("command: {:?}", command)
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app: truenas}}\n  annotations: {{tollgate.dev/transport: stdio}}\nspec:\n  containers:\n    - {{name: server, image: example.invalid/truenas-mcp, {command}{sep}env: [{env}]}}\n",
        sep = if with_command { ", " } else { "" },
        env = env.join(", "),
    )
}

/// The pod's volumes, each a directory here.
struct Volumes {
    _root: tempfile::TempDir,
    dirs: BTreeMap<String, PathBuf>,
}

impl Volumes {
    /// emptyDirs empty; the projected token holds a token the apiserver
    /// issues for this pod with the volume's audience, as the kubelet's
    /// would.
    fn of(cluster: &Cluster, pod: &Value) -> Volumes {
        let root = tempfile::tempdir().unwrap();
        let ns = pod["metadata"]["namespace"].as_str().unwrap();
        let name = pod["metadata"]["name"].as_str().unwrap();
        let mut dirs = BTreeMap::new();
        for v in pod["spec"]["volumes"].as_array().unwrap() {
            let vname = v["name"].as_str().unwrap();
            let dir = root.path().join(vname);
            std::fs::create_dir(&dir).unwrap();
            if let Some(sources) = v["projected"]["sources"].as_array() {
                // Tokens only: the other sources (the ServiceAccount
                // admission's CA and namespace) are not read here.
                for t in sources.iter().map(|s| &s["serviceAccountToken"]) {
                    let Some(path) = t["path"].as_str() else {
                        continue;
                    };
                    let sa = pod["spec"]["serviceAccountName"]
                        .as_str()
                        .unwrap_or("default");
                    let mut args = vec!["-n", ns, "create", "token", sa];
                    args.extend(["--bound-object-kind", "Pod", "--bound-object-name", name]);
                    if let Some(audience) = t["audience"].as_str() {
                        args.extend(["--audience", audience]);
                    }
                    let token = cluster.kubectl(&args).unwrap();
                    std::fs::write(dir.join(path), token.trim()).unwrap();
                }
            } else {
                assert!(v["emptyDir"].is_object(), "a volume this cannot run: {v}");
            }
            dirs.insert(vname.to_owned(), dir);
        }
        Volumes { _root: root, dirs }
    }

    /// `arg` with a mount path of `container` replaced by its directory.
    fn map(&self, container: &Value, arg: &str) -> String {
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let mount = m["mountPath"].as_str().unwrap();
            let dir = &self.dirs[m["name"].as_str().unwrap()];
            if let Some(rest) = arg.strip_prefix(&format!("{mount}/")) {
                return dir.join(rest).display().to_string();
            }
        }
        arg.to_owned()
    }
}

impl Volumes {
    /// Makes a volume's directory read-only (a `readOnly` mount).
    fn read_only(&self, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dirs[name], std::fs::Permissions::from_mode(0o555)).unwrap();
    }
}

impl Drop for Volumes {
    /// Writable again, so the directories can be removed.
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        for dir in self.dirs.values() {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// The process a kubelet starts for `container` of `pod`: the stored
/// command (else the image's entrypoint, known only for the tollgate
/// image) and args, mount paths mapped, the stored env resolved.
fn kubelet_command(pod: &Value, container: &Value, volumes: &Volumes, image: &Path) -> Command {
    let mut argv: Vec<String> = match container["command"].as_array() {
        Some(c) => c.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
        None => {
            assert_eq!(container["image"], "tollgate:0.1.0", "{container}");
            vec![image.display().to_string()]
        }
    };
    argv.extend(
        container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let argv: Vec<String> = argv.iter().map(|a| volumes.map(container, a)).collect();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap());
    for e in container["env"].as_array().into_iter().flatten() {
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(path)) => {
                let (_, field) = path.split_once('.').unwrap();
                pod["metadata"][field].as_str().unwrap().to_owned()
            }
            _ => panic!("an env entry this cannot resolve: {e}"),
        };
        cmd.env(e["name"].as_str().unwrap(), value);
    }
    cmd
}

/// Replaces the value after `flag` in `cmd`'s arguments (what differs
/// between a pod and this machine: its network).
fn with_flag(cmd: Command, flag: &str, value: &str) -> Command {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_str().unwrap().to_owned())
        .collect();
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    let mut out = Command::new(cmd.get_program());
    out.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            out.env(k, v);
        }
    }
    out.args(&args[..=at]).arg(value).args(&args[at + 2..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stdio_pod_is_stored_wrapped_and_runs_the_seed_behind_tollgate() {
    let cluster = Cluster::get();
    let ns = format!("tollgate-system-{}", std::process::id());
    let webhook_port = free_port();
    helm(
        cluster,
        &[
            "install",
            "tollgate",
            repo_file("charts/tollgate").to_str().unwrap(),
            "-n",
            &ns,
            "--create-namespace",
            "--set",
            &format!("webhook.url=https://127.0.0.1:{webhook_port}"),
            "--wait=false",
        ],
    )
    .expect("helm install");
    let controller = controller_as_chart(cluster, &ns, &cluster.kubeconfig, webhook_port);
    assert!(
        ca_bundle_published(cluster).await,
        "the controller never published caBundle"
    );

    let app = cluster.namespace("stdio");
    cluster
        .kubectl(&["label", "namespace", &app, "tollgate.dev/inject=enabled"])
        .unwrap();
    let _ = cluster.kubectl(&["-n", &app, "create", "serviceaccount", "default"]);
    let api = TrueNas::start();

    // Without a command in the spec the apiserver refuses the pod with the
    // webhook's reason, which says what to add.
    let refused = cluster
        .apply(&stdio_pod(&app, "no-command", &api, false))
        .expect_err("a stdio pod without a command is refused");
    assert!(
        refused.contains("set the container's `command` (and `args`) in the pod spec, or the annotation tollgate.dev/stdio-command"),
        "{refused}"
    );

    cluster
        .apply(&stdio_pod(&app, "truenas-0", &api, true))
        .expect("the stdio pod is admitted");
    let pod = cluster.get_json(&["-n", &app, "pod", "truenas-0"]);
    let spec = &pod["spec"];
    assert_eq!(pod["metadata"]["labels"]["tollgate.dev/sidecar"], "true");
    let inits = spec["initContainers"].as_array().unwrap();
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(
        (inits.len(), containers.len()),
        (1, 1),
        "one init container added, no sidecar: {spec:#}"
    );
    let (install, server) = (&inits[0], &containers[0]);
    assert_eq!(install["image"], "tollgate:0.1.0");
    assert_eq!(
        server["image"], "example.invalid/truenas-mcp",
        "the image is unchanged"
    );
    assert_eq!(
        server["command"],
        serde_json::json!(["/var/run/tollgate-bin/tollgate"])
    );
    let args: Vec<&str> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let dash = args.iter().position(|a| *a == "--").unwrap();
    assert_eq!(args[0], "proxy");
    assert_eq!(args[dash - 1], "--upstream-command");
    assert_eq!(
        args[dash + 1..],
        [api.server().last().unwrap().as_str()],
        "the server's own command follows `--`"
    );
    let service_port = server["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mcp")
        .map(|p| p["containerPort"].as_i64().unwrap());
    assert_eq!(service_port, Some(8080), "Services target the mcp port");

    // Run it as a kubelet would: the init container to completion, ...
    let volumes = Volumes::of(cluster, &pod);
    let tollgate_image = PathBuf::from(env!("CARGO_BIN_EXE_tollgate"));
    let status = kubelet_command(&pod, install, &volumes, &tollgate_image)
        .status()
        .unwrap();
    assert!(status.success(), "the install container failed: {status}");
    let copied = volumes.dirs["tollgate-bin"].join("tollgate");
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(&tollgate_image).unwrap(),
        "the binary is copied whole"
    );
    // ... the volume read-only for the server container, as it mounts it, ...
    volumes.read_only("tollgate-bin");
    // ... then the server container: the copied binary, the stored args,
    // its network moved to loopback.
    let (listen, admin) = (free_port(), free_port());
    let push = push_address(&controller);
    let cmd = kubelet_command(&pod, server, &volumes, &tollgate_image);
    assert_eq!(cmd.get_program(), copied.as_os_str(), "it runs the copy");
    let cmd = with_flag(cmd, "--listen", &format!("127.0.0.1:{listen}"));
    let cmd = with_flag(cmd, "--admin-listen", &format!("127.0.0.1:{admin}"));
    let cmd = with_flag(cmd, "--controller", &format!("https://{push}"));
    let _running = Proc::start(cmd);

    // The seed's policy, applied in the pod's namespace.
    let (_dir, policy) = imported_policy();
    cluster
        .kubectl(&["-n", &app, "apply", "-f", policy.to_str().unwrap()])
        .unwrap();
    // Ready (the stored readiness probe) once the rules arrived.
    let probe = &server["readinessProbe"]["httpGet"];
    assert_eq!(probe["port"], 9901);
    let ready_path = probe["path"].as_str().unwrap().to_owned();
    let ready = eventually(PATIENCE, async || {
        let r = raw(
            format!("127.0.0.1:{admin}").parse().unwrap(),
            format!("GET {ready_path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        r.status == 200
    })
    .await;
    assert!(ready, "{:#}", cluster.policy(&app, "truenas")["status"]);
    assert!(
        eventually(PATIENCE, async || cluster.policy(&app, "truenas")["status"]
            ["synced"]
            == "1/1")
        .await,
        "{:#}",
        cluster.policy(&app, "truenas")["status"]
    );

    let dir = tempfile::tempdir().unwrap();
    let script = script(dir.path());
    let lines = tokio::task::spawn_blocking(move || {
        agent(
            &format!("http://127.0.0.1:{listen}/mcp"),
            &["--delete-session", "script", script.to_str().unwrap()],
        )
    })
    .await
    .unwrap();
    check(&lines, &api);
    let _ = helm(cluster, &["uninstall", "tollgate", "-n", &ns]);
}
