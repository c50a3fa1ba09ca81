//! The Helm chart on the test cluster: `helm` itself, and the controller
//! run as a local process with the chart Deployment's own arguments.

use std::path::Path;
use std::process::Command;

use std::time::Duration;

use serde_json::Value;

use super::cluster::Cluster;
use super::{Proc, eventually};

/// `helm` against the test cluster; its stdout, or its stderr.
pub fn helm(cluster: &Cluster, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cluster.bin.join("helm"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("tollgate-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("tollgate-helm-config"),
        )
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Starts the controller with the chart Deployment's own arguments, only
/// the listen addresses moved to loopback.
pub fn controller_as_chart(
    cluster: &Cluster,
    ns: &str,
    kubeconfig: &Path,
    webhook_port: u16,
) -> Proc {
    let deploy = cluster.get_json(&["-n", ns, "deployment", "tollgate"]);
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a.split_once('=') {
                Some(("--push-listen", _)) => "--push-listen=127.0.0.1:0".to_owned(),
                Some(("--admin-listen", _)) => "--admin-listen=127.0.0.1:0".to_owned(),
                Some(("--webhook-listen", _)) => {
                    format!("--webhook-listen=127.0.0.1:{webhook_port}")
                }
                _ => a
                    .replace("$(POD_NAMESPACE)", ns)
                    .replace("$(POD_NAME)", "tollgate-test-0"),
            }
        })
        .collect();
    assert!(
        args.iter()
            .any(|a| a.starts_with("--webhook-configuration=")),
        "{args:?}"
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["--log-format", "json"])
        .args(&args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("POD_NAMESPACE", ns);
    Proc::spawn(cmd, |l| l.contains("tollgate controller started")).0
}

/// The push address (`host:port`) the controller printed at start.
pub fn push_address(controller: &Proc) -> String {
    let started: Value = serde_json::from_str(
        &controller
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("tollgate controller started"))
            .cloned()
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    started["push"]
        .as_str()
        .expect("the controller's push address")
        .to_owned()
}

/// Whether the controller published its CA into every webhook of the
/// chart's MutatingWebhookConfiguration (30 s at most).
pub async fn ca_bundle_published(cluster: &Cluster) -> bool {
    eventually(Duration::from_secs(30), async || {
        let config = cluster.get_json(&["mutatingwebhookconfiguration", "tollgate"]);
        config["webhooks"].as_array().unwrap().iter().all(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .is_some_and(|b| !b.is_empty())
        })
    })
    .await
}
