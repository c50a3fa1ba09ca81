//! `tollgate doctor`: is everything wired? The questions an operator asks
//! before reading logs, answered from the apiserver alone: the CRD, the
//! webhook's CA bundle and Service, the controller's replicas and leader
//! Lease, pods that should have a sidecar and do not, and policies that are
//! refused or not yet enforced everywhere — and whether the apiserver
//! reaches the webhook, by a dry-run pod create.
//!
//! Read-only: it lists and gets, and its one create is a dry run (nothing
//! is stored; RBAC must allow `create pods` in the probe namespace).

use std::fmt;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::object::PolicyObject;
use crate::webhook::inject::{CONTAINER, INJECT_LABEL};

/// The CRD every policy lives in.
const CRD_NAME: &str = "mcptoolpolicies.tollgate.dev";

/// Where tollgate is installed (the chart's names by default).
#[derive(Clone, Debug)]
pub struct DoctorConfig {
    /// The release namespace.
    pub namespace: String,
    /// The controller Deployment and the MutatingWebhookConfiguration.
    pub name: String,
    /// The leader Lease.
    pub lease: String,
    /// Where the dry-run probe pod is created (a namespace the webhook
    /// serves: not the release's, not an excluded one).
    pub probe_namespace: String,
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but something is pending or unusual.
    Warn,
    /// Broken: calls are unprotected, refused, or changes do not arrive.
    Fail,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The check, e.g. `webhook`.
    pub check: &'static str,
    /// Its outcome.
    pub status: Status,
    /// What was found, and for problems what to do.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "[{tag}] {}: {}", self.check, self.message)
    }
}

fn finding(check: &'static str, status: Status, message: impl Into<String>) -> Finding {
    Finding {
        check,
        status,
        message: message.into(),
    }
}

/// The apiserver could not be asked (no finding is made up for it).
#[derive(Debug, thiserror::Error)]
#[error("asking the apiserver: {0}")]
pub struct DiagnoseError(#[from] kube::Error);

/// Runs every check.
pub async fn diagnose(
    client: Client,
    config: &DoctorConfig,
) -> Result<Vec<Finding>, DiagnoseError> {
    let mut out = Vec::new();
    crd(&client, &mut out).await?;
    webhook(&client, config, &mut out).await?;
    if out
        .iter()
        .any(|f| f.check == "webhook" && f.status == Status::Ok)
    {
        admission(&client, config, &mut out).await;
    }
    controller(&client, config, &mut out).await?;
    injection(&client, config, &mut out).await?;
    if out
        .iter()
        .any(|f| f.check == "crd" && f.status == Status::Ok)
    {
        policies(&client, &mut out).await?;
    }
    Ok(out)
}

async fn crd(client: &Client, out: &mut Vec<Finding>) -> Result<(), kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    out.push(match api.get_opt(CRD_NAME).await? {
        None => finding(
            "crd",
            Status::Fail,
            format!(
                "{CRD_NAME} is not installed: kubectl apply --server-side -f charts/tollgate/crds/"
            ),
        ),
        Some(crd) => {
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                finding("crd", Status::Ok, format!("{CRD_NAME} established"))
            } else {
                finding(
                    "crd",
                    Status::Fail,
                    format!("{CRD_NAME} is not established yet"),
                )
            }
        }
    });
    Ok(())
}

async fn webhook(
    client: &Client,
    config: &DoctorConfig,
    out: &mut Vec<Finding>,
) -> Result<(), kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mwc) = api.get_opt(&config.name).await? else {
        out.push(finding(
            "webhook",
            Status::Fail,
            format!(
                "MutatingWebhookConfiguration {} is missing: no pod gets a sidecar",
                config.name
            ),
        ));
        return Ok(());
    };
    for hook in mwc.webhooks.unwrap_or_default() {
        let cc = &hook.client_config;
        if cc.ca_bundle.as_ref().is_none_or(|b| b.0.is_empty()) {
            out.push(finding(
                "webhook",
                Status::Fail,
                format!(
                    "{} has no caBundle: the controller writes it when it starts (is it running?), or cert-manager's CA injector does",
                    hook.name
                ),
            ));
            continue;
        }
        match (&cc.service, &cc.url) {
            (Some(svc), _) => {
                let services: Api<Service> = Api::namespaced(client.clone(), &svc.namespace);
                if services.get_opt(&svc.name).await?.is_none() {
                    out.push(finding(
                        "webhook",
                        Status::Fail,
                        format!(
                            "{} calls Service {}/{}, which does not exist",
                            hook.name, svc.namespace, svc.name
                        ),
                    ));
                } else {
                    out.push(finding(
                        "webhook",
                        Status::Ok,
                        format!(
                            "{} has a caBundle and calls Service {}/{}",
                            hook.name, svc.namespace, svc.name
                        ),
                    ));
                }
            }
            (None, Some(url)) => out.push(finding(
                "webhook",
                Status::Ok,
                format!("{} has a caBundle and calls {url}", hook.name),
            )),
            (None, None) => out.push(finding(
                "webhook",
                Status::Fail,
                format!("{} has neither a Service nor a URL", hook.name),
            )),
        }
    }
    Ok(())
}

/// Dials the webhook the way it is used: a dry-run create of a pod that
/// asks for a sidecar. The apiserver calls the webhook (it declares no side
/// effects, so dry runs reach it) and answers with the mutated pod —
/// nothing is stored. A pod back without the sidecar means the webhook was
/// not reached (a `failurePolicy: Ignore` hides that from everyone else).
async fn admission(client: &Client, config: &DoctorConfig, out: &mut Vec<Finding>) {
    let ns = &config.probe_namespace;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let probe: Pod = match serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "tollgate-doctor-probe-",
            "labels": { INJECT_LABEL: "enabled" },
        },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{ "name": "probe", "image": "tollgate-doctor-probe:none" }],
        },
    })) {
        Ok(p) => p,
        Err(e) => {
            out.push(finding(
                "admission",
                Status::Fail,
                format!("building the probe pod: {e}"),
            ));
            return;
        }
    };
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    out.push(match pods.create(&dry_run, &probe).await {
        Ok(pod) if has_sidecar(&pod) => finding(
            "admission",
            Status::Ok,
            format!("the apiserver reached the webhook: a dry-run pod in {ns} got the sidecar"),
        ),
        Ok(_) => finding(
            "admission",
            Status::Fail,
            format!(
                "a dry-run pod labelled {INJECT_LABEL}=enabled in {ns} got no sidecar: the apiserver did not reach the webhook (is the controller's webhook listener up, does its Service have ready endpoints, does a NetworkPolicy block the apiserver?); failurePolicy Ignore lets such pods start unprotected"
            ),
        ),
        // Reached, and it answered: the probe pod is what it refused.
        Err(kube::Error::Api(e)) if e.message.contains("denied the request") => finding(
            "admission",
            Status::Warn,
            format!(
                "the apiserver reached the webhook, which refused the dry-run pod in {ns}: {}",
                e.message
            ),
        ),
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => finding(
            "admission",
            Status::Warn,
            format!(
                "cannot dry-run a pod in {ns} to dial the webhook ({}); pass --probe-namespace with a namespace you may create pods in",
                e.message
            ),
        ),
        Err(e) => finding(
            "admission",
            Status::Fail,
            format!("a dry-run pod in {ns} was refused: {e} (failurePolicy Fail: no injected pod can start)"),
        ),
    });
}

async fn controller(
    client: &Client,
    config: &DoctorConfig,
    out: &mut Vec<Finding>,
) -> Result<(), kube::Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &config.namespace);
    out.push(match deployments.get_opt(&config.name).await? {
        None => finding(
            "controller",
            Status::Fail,
            format!("Deployment {}/{} is missing", config.namespace, config.name),
        ),
        Some(d) => {
            let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            let status = match ready {
                0 => Status::Fail,
                r if r < want => Status::Warn,
                _ => Status::Ok,
            };
            finding(
                "controller",
                status,
                format!("{ready} of {want} replicas ready"),
            )
        }
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let lease = leases.get_opt(&config.lease).await?;
    let spec = lease.and_then(|l| l.spec);
    let holder = spec.as_ref().and_then(|s| s.holder_identity.clone());
    let renewed = spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let duration = spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(15);
    out.push(match (holder, renewed) {
        (Some(holder), Some(renewed)) => {
            let age = Timestamp::now().duration_since(renewed).as_secs();
            if age <= i64::from(duration) * 2 {
                finding(
                    "lease",
                    Status::Ok,
                    format!("{holder} leads (renewed {age}s ago) and writes status"),
                )
            } else {
                finding(
                    "lease",
                    Status::Fail,
                    format!("{holder} last renewed the lease {age}s ago: nobody writes status"),
                )
            }
        }
        _ => finding(
            "lease",
            Status::Fail,
            format!(
                "Lease {}/{} has no holder: no replica writes status",
                config.namespace, config.lease
            ),
        ),
    });
    Ok(())
}

/// Whether a pod carries the sidecar, as a native sidecar or a container.
fn has_sidecar(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.iter()).into_iter().flatten();
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten();
    containers.chain(init).any(|c| c.name == CONTAINER)
}

async fn injection(
    client: &Client,
    config: &DoctorConfig,
    out: &mut Vec<Finding>,
) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = namespaces
        .list(&ListParams::default().labels(&format!("{INJECT_LABEL}=enabled")))
        .await?;
    let mut missing = Vec::new();
    let mut checked = 0;
    for ns in labelled.items.iter().map(|n| n.name_any()) {
        if ns == config.namespace || ns == "kube-system" {
            continue;
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let list = pods
            .list(&ListParams::default().labels(&format!("{INJECT_LABEL}!=disabled")))
            .await?;
        for pod in &list.items {
            checked += 1;
            let finished = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
            if !finished && !has_sidecar(pod) {
                missing.push(format!("{ns}/{}", pod.name_any()));
            }
        }
    }
    out.push(if missing.is_empty() {
        finding(
            "injection",
            Status::Ok,
            format!(
                "{checked} pods in {} labelled namespaces, all with a sidecar",
                labelled.items.len()
            ),
        )
    } else {
        finding(
            "injection",
            Status::Fail,
            format!(
                "pods without a sidecar in injected namespaces (created before the label or while the webhook was down; restart them): {}",
                missing.join(", ")
            ),
        )
    });
    Ok(())
}

async fn policies(client: &Client, out: &mut Vec<Finding>) -> Result<(), kube::Error> {
    let api: Api<PolicyObject> = Api::all(client.clone());
    let list = api.list(&ListParams::default()).await?;
    let mut problems = 0;
    for p in &list.items {
        let name = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
        let conditions = p
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or(&[]);
        let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
        match (condition("Accepted"), condition("Programmed")) {
            (None, _) => {
                problems += 1;
                out.push(finding(
                    "policy",
                    Status::Warn,
                    format!("{name} has no status yet: is the controller running?"),
                ));
            }
            (Some(a), _) if a.status != "True" => {
                problems += 1;
                out.push(finding(
                    "policy",
                    Status::Fail,
                    format!("{name} is refused: {}", a.message),
                ));
            }
            (_, Some(p)) if p.status != "True" && p.reason != "NoSidecars" => {
                problems += 1;
                out.push(finding(
                    "policy",
                    Status::Warn,
                    format!("{name} is not enforced everywhere yet: {}", p.message),
                ));
            }
            _ => {}
        }
    }
    if problems == 0 {
        out.push(finding(
            "policy",
            Status::Ok,
            format!(
                "{} policies accepted and enforced by every selected sidecar",
                list.items.len()
            ),
        ));
    }
    Ok(())
}
