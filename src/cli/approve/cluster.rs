//! `tollgate approve|reject NAME` against the cluster: writes
//! `status.decision` of the McpToolCallApproval, exactly what `kubectl
//! patch mtca NAME --subresource=status --type=merge -p
//! '{"status":{"decision":{"verdict":"Approve"}}}'` writes. The apiserver
//! authenticates the person and RBAC lets them patch the status; the
//! controller's webhook checks the `approve` verb, the requester and the
//! rule's approvers, and records the vote. Nothing here decides anything.

use std::process::ExitCode;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use tollgate_policy::approval_crd::McpToolCallApproval;

use super::DecideArgs;

/// Why the decision could not be sent or was refused.
#[derive(Debug, thiserror::Error)]
enum DecideError {
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("no Kubernetes configuration: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Build(#[source] kube::Error),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the apiserver could not be asked: {0}")]
    Request(#[source] kube::Error),
}

pub(super) fn decide(args: &DecideArgs, verdict: &str) -> ExitCode {
    super::super::run_async(Some(1), async {
        println!("{}", send(args, verdict).await?);
        Ok::<(), DecideError>(())
    })
}

async fn config(args: &DecideArgs) -> Result<kube::Config, DecideError> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    if let Some(user) = &args.by {
        config.auth_info.impersonate = Some(user.clone());
        if !args.groups.is_empty() {
            config.auth_info.impersonate_groups = Some(args.groups.clone());
        }
    }
    Ok(config)
}

async fn send(args: &DecideArgs, verdict: &str) -> Result<String, DecideError> {
    let config = config(args).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(DecideError::Build)?;
    let api: Api<McpToolCallApproval> = Api::namespaced(client, &namespace);
    let verdict = if verdict == "approve" {
        "Approve"
    } else {
        "Reject"
    };
    let mut decision = json!({ "verdict": verdict });
    if let Some(reason) = &args.reason {
        decision["reason"] = json!(reason);
    }
    let patch = json!({ "status": { "decision": decision } });
    let done = api
        .patch_status(&args.id, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => DecideError::Refused(s.message),
            other => DecideError::Request(other),
        })?;
    let status = done.status.unwrap_or_default();
    Ok(format!(
        "mcptoolcallapproval {namespace}/{} {}: phase {:?}, approvals {}",
        args.id,
        if verdict == "Approve" {
            "approved"
        } else {
            "rejected"
        },
        status.phase,
        status.summary.unwrap_or_default()
    ))
}
